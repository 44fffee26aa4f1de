//! IVR menus: prompts, digit collection and routing (see issue #5).
//!
//! A sans-IO engine, one [`Session`] per call in an IVR. It owns where the
//! call is in the menus (`[ivr.NAME]`, [`MenuConfig`]), the digits typed so
//! far and the retry count; it does not own the call, the media or the
//! clock. The call engine drives it with `now` and three inputs (a DTMF
//! digit, "the prompts finished playing", a timer firing) and, after each,
//! drains [`Session::poll_output`] and executes what comes out: play or stop
//! prompts, attach data, set the caller's priority, and finally route the
//! call ([`IvrOutput::Done`]). [`Session::poll_timeout`] says when it next
//! wants [`Session::handle_timeout`]. Menus are read-only and shared
//! ([`Menus`], built once from the configuration).
//!
//! # The machine
//!
//! ```text
//!            enter menu ──closed, no prompt──▶ follow `closed`
//!                │ │
//!      closed    │ └─open─▶ Play([prompt]) ──▶ PROMPTING ──digit──▶ StopPlaying, handle it
//!  Play([closed_prompt])                         │ prompt done
//!                ▼                               ▼
//!            CLOSING ──prompt done──▶       COLLECTING (deadline = now + timeout)
//!   follow `closed`                          │ digit: handle it
//!                                            │ deadline: no input / end of digits
//! ```
//!
//! * Entering a menu resets its retry count and any digits. A menu with
//!   `hours` that are closed at that moment plays `closed_prompt` (digits
//!   are ignored meanwhile) and then follows `closed`; without a prompt it
//!   follows `closed` at once. The wall clock is the one given to
//!   [`Session::start`] plus the time elapsed since, so a caller who walks
//!   into a menu at 18:00:05 finds it closed even if they called at 17:59.
//! * An open menu plays `prompt` and waits in PROMPTING. A digit barges in
//!   ([`IvrOutput::StopPlaying`], then the digit is handled as below); the
//!   prompts finishing starts the `timeout` for the first digit.
//! * [`Collect::Choice`]: the key is looked up in `options`. A known key's
//!   route is followed; an unknown one is an invalid entry.
//! * [`Collect::Digits`]: each digit but the terminator is kept and
//!   restarts the (inter-digit) `timeout`. The entry ends on the terminator,
//!   on the `max`th digit, or when the timeout fires after at least one
//!   digit. Fewer than `min` digits is an invalid entry; else the digits
//!   come out as [`IvrOutput::Data`] under `key` and `then` is followed.
//!   With `min = 0` an entry of no digits at all (the terminator alone, or
//!   the timeout) is valid and stores an empty value.
//! * No input (the first-digit timeout with nothing typed) and an invalid
//!   entry each use one retry: the menu replays its prompt (after
//!   `invalid_prompt` for an invalid entry) and waits again. With the
//!   retries used up (`retries` replays already made), `failure` is
//!   followed instead.
//! * Following a route: its `set` and `priority` come out first, as
//!   [`IvrOutput::Data`] and [`IvrOutput::Priority`]. A route to a menu
//!   enters that menu inside the session (never output); any other target
//!   ends the session with [`IvrOutput::Done`] carrying the route (its
//!   `set`/`priority` have then already come out). Within one input at most
//!   [`MAX_HOPS`] routes are followed (closed menus without prompts can
//!   send a call round in a loop); past that the call is hung up. An
//!   unknown menu hangs up too.
//!
//! Inputs that do not fit the state are ignored: digits after the session
//! is done or while a closed prompt plays, a prompt-done while no prompt is
//! playing (say, after a barge-in), a timeout before its deadline or with
//! none armed. The call engine should report prompt-done only for a
//! [`IvrOutput::Play`] that ran to its end, not for one stopped or replaced.

mod hours;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use crate::config::contact::{Collect, ContactCenter, HoursConfig, MenuConfig, Route, Target};

pub use hours::{civil_from_days, is_open};

/// The most routes followed within one input before the call is hung up
/// (a loop of menus that route on without waiting for the caller).
pub const MAX_HOPS: usize = 16;

/// Shared, read-only menus (built once at start; Arc-shared across shards).
#[derive(Debug, Clone)]
pub struct Menus {
    menus: Vec<Menu>,
    by_name: HashMap<Arc<str>, usize>,
}

/// One menu with its business hours resolved.
#[derive(Debug, Clone)]
struct Menu {
    name: Arc<str>,
    cfg: MenuConfig,
    /// The `[hours.NAME]` entry `cfg.hours` names; `None` when it names
    /// none (the validator refuses that) or there is none: always open.
    hours: Option<HoursConfig>,
}

impl Menus {
    /// The menus of `cc`, each with the hours it names. Should two menus
    /// share a name (the validator refuses that), the first wins.
    pub fn new(cc: &ContactCenter) -> Menus {
        let mut menus = Vec::with_capacity(cc.menus.len());
        let mut by_name = HashMap::with_capacity(cc.menus.len());
        for cfg in &cc.menus {
            let name: Arc<str> = Arc::from(cfg.name.as_str());
            if by_name.contains_key(&name) {
                continue;
            }
            by_name.insert(name.clone(), menus.len());
            menus.push(Menu {
                name,
                hours: cfg
                    .hours
                    .as_deref()
                    .and_then(|h| cc.hours_named(h))
                    .cloned(),
                cfg: cfg.clone(),
            });
        }
        Menus { menus, by_name }
    }

    pub fn contains(&self, menu: &str) -> bool {
        self.by_name.contains_key(menu)
    }

    fn index(&self, menu: &str) -> Option<usize> {
        self.by_name.get(menu).copied()
    }
}

/// What the call engine is to do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IvrOutput {
    /// Play these prompts in order (`[prompts]` names), replacing anything
    /// playing. The caller's prompt-done event comes once, after the last.
    Play(Vec<String>),
    /// Stop any prompt (a digit barged in).
    StopPlaying,
    /// Attach key/value data to the call.
    Data { key: String, value: String },
    /// Set the caller's queue priority.
    Priority(u8),
    /// The IVR is finished with the call: route it (a queue, a user,
    /// `Target::Hangup`). A route to another menu is followed inside the
    /// session (never output), including its `set`/`priority`, which come
    /// out as Data/Priority outputs first. The route's own `set` and
    /// `priority` have likewise come out just before it.
    Done(Route),
}

/// One call's way through the menus.
#[derive(Debug)]
pub struct Session {
    /// The current menu's name (the one asked for, if it is unknown).
    menu: Arc<str>,
    /// Its index in [`Menus`]; `None` for an unknown menu.
    idx: Option<usize>,
    phase: Phase,
    /// Replays made in the current menu (after no input or invalid entry).
    replays: u32,
    /// Digits of a [`Collect::Digits`] entry so far.
    digits: String,
    /// When the session started and the wall clock then (Unix seconds).
    started: Instant,
    wall_at_start: i64,
    out: VecDeque<IvrOutput>,
}

#[derive(Debug)]
enum Phase {
    /// The menu's prompt (maybe after `invalid_prompt`) is playing; a digit
    /// barges in.
    Prompting,
    /// The closed prompt is playing; then the route is followed.
    Closing(Route),
    /// Waiting for a digit until `deadline`.
    Collecting { deadline: Instant },
    /// The session has routed the call.
    Done,
}

impl Session {
    /// Enters `menu` at `now`; `wall_unix_s` is the wall clock (seconds
    /// since the epoch, UTC) for business hours. Unknown menu →
    /// Done(hangup) output.
    pub fn start(menus: &Menus, menu: &str, now: Instant, wall_unix_s: i64) -> Session {
        let mut s = Session {
            menu: Arc::from(menu),
            idx: None,
            phase: Phase::Done,
            replays: 0,
            digits: String::new(),
            started: now,
            wall_at_start: wall_unix_s,
            out: VecDeque::new(),
        };
        s.follow(menus, now, Route::to(Target::Menu(menu.to_owned())));
        s
    }

    /// A DTMF digit: '0'-'9', '*', '#', 'A'-'D' ('a'-'d' are taken as
    /// upper case; anything else is ignored).
    pub fn handle_digit(&mut self, menus: &Menus, now: Instant, digit: char) {
        let digit = digit.to_ascii_uppercase();
        if !matches!(digit, '0'..='9' | '*' | '#' | 'A'..='D') {
            return;
        }
        let Some(menu) = self.current(menus) else {
            return;
        };
        match self.phase {
            Phase::Prompting => self.out.push_back(IvrOutput::StopPlaying),
            Phase::Collecting { .. } => {}
            Phase::Closing(_) | Phase::Done => return,
        }
        let cfg = &menu.cfg;
        match &cfg.collect {
            Collect::Choice => match cfg.options.iter().find(|(k, _)| *k == digit) {
                Some((_, route)) => self.follow(menus, now, route.clone()),
                None => self.retry(menus, now, cfg, true),
            },
            Collect::Digits {
                terminator, max, ..
            } => {
                if *terminator == Some(digit) {
                    return self.end_digits(menus, now, cfg);
                }
                self.digits.push(digit);
                if self.digits.len() >= usize::from(*max) {
                    self.end_digits(menus, now, cfg);
                } else {
                    self.phase = Phase::Collecting {
                        deadline: now + cfg.timeout,
                    };
                }
            }
        }
    }

    /// The prompts of the last [`IvrOutput::Play`] finished.
    pub fn handle_prompt_done(&mut self, menus: &Menus, now: Instant) {
        match std::mem::replace(&mut self.phase, Phase::Done) {
            Phase::Prompting => match self.current(menus) {
                Some(menu) => {
                    self.phase = Phase::Collecting {
                        deadline: now + menu.cfg.timeout,
                    }
                }
                // invariant: PROMPTING is entered only in a known menu;
                // should it not be, the call is not left hanging.
                None => self.finish(Route::to(Target::Hangup)),
            },
            Phase::Closing(route) => self.follow(menus, now, route),
            other => self.phase = other,
        }
    }

    /// When [`Session::handle_timeout`] is next wanted.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.phase {
            Phase::Collecting { deadline } => Some(deadline),
            _ => None,
        }
    }

    /// A timer fired. It may be early or stale: nothing happens before the
    /// deadline [`Session::poll_timeout`] gives.
    pub fn handle_timeout(&mut self, menus: &Menus, now: Instant) {
        let Phase::Collecting { deadline } = self.phase else {
            return;
        };
        if now < deadline {
            return;
        }
        let Some(menu) = self.current(menus) else {
            return self.finish(Route::to(Target::Hangup));
        };
        match &menu.cfg.collect {
            Collect::Digits { min, .. } if !self.digits.is_empty() || *min == 0 => {
                self.end_digits(menus, now, &menu.cfg)
            }
            _ => self.retry(menus, now, &menu.cfg, false),
        }
    }

    pub fn poll_output(&mut self) -> Option<IvrOutput> {
        self.out.pop_front()
    }

    /// The current menu's name.
    pub fn menu(&self) -> &str {
        &self.menu
    }

    pub fn is_done(&self) -> bool {
        matches!(self.phase, Phase::Done)
    }

    fn current<'m>(&self, menus: &'m Menus) -> Option<&'m Menu> {
        self.idx.and_then(|i| menus.menus.get(i))
    }

    /// The wall clock at `now`.
    fn wall(&self, now: Instant) -> i64 {
        let elapsed = now.saturating_duration_since(self.started).as_secs();
        self.wall_at_start
            .saturating_add(i64::try_from(elapsed).unwrap_or(i64::MAX))
    }

    /// A [`Collect::Digits`] entry ended: store it and go on, or count an
    /// invalid entry.
    fn end_digits(&mut self, menus: &Menus, now: Instant, cfg: &MenuConfig) {
        let Collect::Digits { key, min, then, .. } = &cfg.collect else {
            return;
        };
        if self.digits.len() < usize::from(*min) {
            return self.retry(menus, now, cfg, true);
        }
        let value = std::mem::take(&mut self.digits);
        self.out.push_back(IvrOutput::Data {
            key: key.clone(),
            value,
        });
        self.follow(menus, now, then.clone());
    }

    /// No input (`invalid` false) or an invalid entry: replay the prompt,
    /// or follow `failure` once the retries are used up.
    fn retry(&mut self, menus: &Menus, now: Instant, cfg: &MenuConfig, invalid: bool) {
        self.digits.clear();
        if self.replays >= cfg.retries {
            return self.follow(menus, now, cfg.failure.clone());
        }
        self.replays += 1;
        let mut prompts = Vec::with_capacity(2);
        if invalid && let Some(p) = &cfg.invalid_prompt {
            prompts.push(p.clone());
        }
        prompts.push(cfg.prompt.clone());
        self.out.push_back(IvrOutput::Play(prompts));
        self.phase = Phase::Prompting;
    }

    /// Follows `route` and the routes it leads to, at most [`MAX_HOPS`].
    fn follow(&mut self, menus: &Menus, now: Instant, mut route: Route) {
        for _ in 0..MAX_HOPS {
            for (key, value) in &route.set {
                self.out.push_back(IvrOutput::Data {
                    key: key.clone(),
                    value: value.clone(),
                });
            }
            if let Some(p) = route.priority {
                self.out.push_back(IvrOutput::Priority(p));
            }
            let Target::Menu(name) = &route.target else {
                return self.finish(route);
            };
            match self.enter(menus, now, name) {
                Some(next) => route = next,
                None => return,
            }
        }
        self.finish(Route::to(Target::Hangup));
    }

    /// Enters menu `name`: plays its prompt (or its closed prompt) and
    /// returns `None`, or returns where it sends the call straight on.
    fn enter(&mut self, menus: &Menus, now: Instant, name: &str) -> Option<Route> {
        self.replays = 0;
        self.digits.clear();
        let Some(idx) = menus.index(name) else {
            self.idx = None;
            self.menu = Arc::from(name);
            return Some(Route::to(Target::Hangup));
        };
        let menu = &menus.menus[idx];
        self.idx = Some(idx);
        self.menu = menu.name.clone();
        let cfg = &menu.cfg;
        if let Some(hours) = &menu.hours
            && !is_open(hours, self.wall(now))
        {
            let Some(prompt) = &cfg.closed_prompt else {
                return Some(cfg.closed.clone());
            };
            self.out.push_back(IvrOutput::Play(vec![prompt.clone()]));
            self.phase = Phase::Closing(cfg.closed.clone());
            return None;
        }
        self.out
            .push_back(IvrOutput::Play(vec![cfg.prompt.clone()]));
        self.phase = Phase::Prompting;
        None
    }

    fn finish(&mut self, route: Route) {
        self.digits.clear();
        self.out.push_back(IvrOutput::Done(route));
        self.phase = Phase::Done;
    }
}
