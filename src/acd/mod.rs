//! The ACD: queues, agents and the decisions that join them (see issue #5).
