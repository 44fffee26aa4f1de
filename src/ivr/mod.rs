//! IVR menus: prompts, digit collection, routing (see issue #5).
