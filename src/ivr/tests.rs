//! Deterministic tests of the IVR [`Session`]: a virtual clock (one real
//! `Instant` as its base), the demo menus, and the call engine's part
//! played by hand (prompt-done when a prompt would have finished, timers
//! fired when `poll_timeout` says).

use std::time::{Duration, Instant};

use super::*;
use crate::config::contact::{HoursConfig, Window};

const TIMEOUT: Duration = Duration::from_secs(5);
/// Monday 2026-11-02 12:00 UTC.
const MONDAY_NOON: i64 = 1_793_577_600 + 12 * 3600;
/// Sunday 2026-11-01 12:00 UTC.
const SUNDAY_NOON: i64 = MONDAY_NOON - 86_400;

fn queue(name: &str) -> Route {
    Route::to(Target::Queue(name.into()))
}

fn ivr(name: &str) -> Route {
    Route::to(Target::Menu(name.into()))
}

fn hangup() -> Route {
    Route::to(Target::Hangup)
}

/// A choice menu with the defaults the tests share: 5 s timeout, two
/// retries, an `invalid` prompt, hang up on failure, no hours.
fn menu(name: &str, prompt: &str, collect: Collect, options: Vec<(char, Route)>) -> MenuConfig {
    MenuConfig {
        name: name.into(),
        prompt: prompt.into(),
        collect,
        options,
        timeout: TIMEOUT,
        retries: 2,
        invalid_prompt: Some("invalid".into()),
        failure: hangup(),
        hours: None,
        closed: hangup(),
        closed_prompt: None,
    }
}

fn account_digits(min: u8, max: u8, terminator: Option<char>) -> Collect {
    Collect::Digits {
        key: "account".into(),
        min,
        max,
        terminator,
        then: queue("support"),
    }
}

/// The demo: `main` (1 → sales, 2 → support, 9 → `account`), and
/// `account` (4 to 8 digits ended by `#`, then support).
fn demo() -> ContactCenter {
    ContactCenter {
        menus: vec![
            menu(
                "main",
                "welcome",
                Collect::Choice,
                vec![
                    ('1', queue("sales")),
                    ('2', queue("support")),
                    ('9', ivr("account")),
                ],
            ),
            menu(
                "account",
                "enter-account",
                account_digits(4, 8, Some('#')),
                Vec::new(),
            ),
        ],
        ..ContactCenter::default()
    }
}

/// Mon–Fri 08:00–18:00 at UTC.
fn office_hours() -> HoursConfig {
    HoursConfig {
        name: "office".into(),
        utc_offset_min: 0,
        windows: vec![Window {
            days: 0b001_1111,
            open_min: 8 * 60,
            close_min: 18 * 60,
        }],
        closed_dates: Vec::new(),
    }
}

/// The demo with menu `m` open office hours only, `closed_prompt` played
/// outside them.
fn demo_with_hours(m: usize, closed_prompt: Option<&str>) -> ContactCenter {
    let mut cc = demo();
    cc.hours = vec![office_hours()];
    cc.menus[m].hours = Some("office".into());
    cc.menus[m].closed_prompt = closed_prompt.map(str::to_owned);
    cc
}

fn play(prompts: &[&str]) -> IvrOutput {
    IvrOutput::Play(prompts.iter().map(|p| p.to_string()).collect())
}

fn data(key: &str, value: &str) -> IvrOutput {
    IvrOutput::Data {
        key: key.into(),
        value: value.into(),
    }
}

/// What a valid account entry of `value` puts out: the data, then support.
fn account_entered(value: &str) -> [IvrOutput; 2] {
    [data("account", value), IvrOutput::Done(queue("support"))]
}

/// A session on a virtual clock.
struct World {
    menus: Menus,
    s: Session,
    now: Instant,
}

impl World {
    /// Starts at `menu` of `cc` at wall time `wall`; returns the world and
    /// the first outputs.
    fn start(cc: &ContactCenter, menu: &str, wall: i64) -> (World, Vec<IvrOutput>) {
        let menus = Menus::new(cc);
        let now = Instant::now();
        let s = Session::start(&menus, menu, now, wall);
        let mut w = World { menus, s, now };
        let out = w.drain();
        (w, out)
    }

    fn demo() -> World {
        let (w, out) = World::start(&demo(), "main", MONDAY_NOON);
        assert_eq!(out, [play(&["welcome"])]);
        w
    }

    /// `menu` of `cc` on Monday, its prompt played: waiting for a digit.
    fn listening(cc: &ContactCenter, menu: &str) -> World {
        let (mut w, _) = World::start(cc, menu, MONDAY_NOON);
        w.prompt_done();
        w
    }

    /// The demo, with 9 pressed and the account prompt played.
    fn at_account() -> World {
        let mut w = World::demo();
        w.digits("9");
        w.prompt_done();
        w
    }

    fn drain(&mut self) -> Vec<IvrOutput> {
        std::iter::from_fn(|| self.s.poll_output()).collect()
    }

    fn digits(&mut self, digits: &str) -> Vec<IvrOutput> {
        for d in digits.chars() {
            self.s.handle_digit(&self.menus, self.now, d);
        }
        self.drain()
    }

    fn prompt_done(&mut self) -> Vec<IvrOutput> {
        self.s.handle_prompt_done(&self.menus, self.now);
        self.drain()
    }

    fn advance(&mut self, by: Duration) {
        self.now += by;
    }

    /// Fires the timer at `now` whether or not it is due.
    fn timeout_now(&mut self) -> Vec<IvrOutput> {
        self.s.handle_timeout(&self.menus, self.now);
        self.drain()
    }

    /// Jumps to the armed deadline and fires it.
    fn fire(&mut self) -> Vec<IvrOutput> {
        let at = self.s.poll_timeout().expect("a timer is armed");
        assert!(at >= self.now);
        self.now = at;
        self.timeout_now()
    }
}

#[test]
fn ivr_demo_1_goes_to_sales() {
    let mut w = World::demo();
    assert_eq!(w.s.menu(), "main");
    assert_eq!(w.s.poll_timeout(), None, "no timer while the prompt plays");
    assert_eq!(w.prompt_done(), []);
    assert_eq!(w.s.poll_timeout(), Some(w.now + TIMEOUT));
    assert_eq!(w.digits("1"), [IvrOutput::Done(queue("sales"))]);
    assert!(w.s.is_done());
    assert_eq!(w.s.poll_timeout(), None);
}

#[test]
fn ivr_demo_2_goes_to_support() {
    let mut w = World::demo();
    w.prompt_done();
    w.advance(Duration::from_secs(2));
    assert_eq!(w.digits("2"), [IvrOutput::Done(queue("support"))]);
    assert!(w.s.is_done());
}

#[test]
fn ivr_demo_9_account_digits_then_support() {
    let mut w = World::demo();
    w.prompt_done();
    assert_eq!(w.digits("9"), [play(&["enter-account"])]);
    assert_eq!(w.s.menu(), "account");
    assert!(!w.s.is_done());
    assert_eq!(w.prompt_done(), []);
    for d in "12345".chars() {
        w.advance(Duration::from_secs(1));
        assert_eq!(w.digits(&d.to_string()), []);
        assert_eq!(w.s.poll_timeout(), Some(w.now + TIMEOUT));
    }
    assert_eq!(w.digits("#"), account_entered("12345"));
    assert!(w.s.is_done());
}

#[test]
fn ivr_menus_contains() {
    let menus = Menus::new(&demo());
    assert!(menus.contains("main"));
    assert!(menus.contains("account"));
    assert!(!menus.contains("nope"));
}

#[test]
fn ivr_unknown_menu_hangs_up() {
    let (w, out) = World::start(&demo(), "nope", MONDAY_NOON);
    assert_eq!(out, [IvrOutput::Done(hangup())]);
    assert!(w.s.is_done());
    assert_eq!(w.s.menu(), "nope");
}

#[test]
fn ivr_digit_barges_in_prompt() {
    let mut w = World::demo();
    assert_eq!(
        w.digits("9"),
        [IvrOutput::StopPlaying, play(&["enter-account"])]
    );
    // Digits barge in the account prompt too, and the entry goes on with
    // the inter-digit timer running; a late prompt-done changes nothing.
    assert_eq!(w.digits("1"), [IvrOutput::StopPlaying]);
    assert_eq!(w.s.poll_timeout(), Some(w.now + TIMEOUT));
    w.advance(Duration::from_secs(1));
    assert_eq!(w.prompt_done(), []);
    assert_eq!(
        w.s.poll_timeout(),
        Some(w.now - Duration::from_secs(1) + TIMEOUT)
    );
    assert_eq!(w.digits("2345#"), account_entered("12345"));
}

#[test]
fn ivr_invalid_key_then_success() {
    let mut w = World::demo();
    w.prompt_done();
    assert_eq!(w.digits("7"), [play(&["invalid", "welcome"])]);
    assert_eq!(w.s.poll_timeout(), None);
    assert_eq!(w.prompt_done(), []);
    assert_eq!(w.digits("2"), [IvrOutput::Done(queue("support"))]);
}

#[test]
fn ivr_invalid_key_barging_in_stops_then_replays() {
    let mut w = World::demo();
    assert_eq!(
        w.digits("*"),
        [IvrOutput::StopPlaying, play(&["invalid", "welcome"])]
    );
    // Without an invalid prompt, just the prompt again.
    let mut cc = demo();
    cc.menus[0].invalid_prompt = None;
    let mut w = World::listening(&cc, "main");
    assert_eq!(w.digits("5"), [play(&["welcome"])]);
}

#[test]
fn ivr_timeout_retries_then_failure() {
    let mut cc = demo();
    cc.menus[0].failure = queue("operator");
    let (mut w, _) = World::start(&cc, "main", MONDAY_NOON);
    // Two replays (no invalid prompt for no input), then failure.
    for _ in 0..2 {
        w.prompt_done();
        assert_eq!(w.fire(), [play(&["welcome"])]);
        assert!(!w.s.is_done());
    }
    w.prompt_done();
    assert_eq!(w.fire(), [IvrOutput::Done(queue("operator"))]);
    assert!(w.s.is_done());
}

#[test]
fn ivr_invalid_and_timeout_share_the_retries() {
    let mut w = World::demo();
    w.prompt_done();
    assert_eq!(w.digits("7"), [play(&["invalid", "welcome"])]);
    w.prompt_done();
    assert_eq!(w.fire(), [play(&["welcome"])]);
    w.prompt_done();
    assert_eq!(w.digits("8"), [IvrOutput::Done(hangup())]);
}

#[test]
fn ivr_zero_retries_fail_on_first_invalid_entry() {
    let mut cc = demo();
    cc.menus[0].retries = 0;
    let mut w = World::listening(&cc, "main");
    assert_eq!(w.digits("7"), [IvrOutput::Done(hangup())]);
}

#[test]
fn ivr_failure_menu_is_followed() {
    let mut cc = demo();
    cc.menus[0].retries = 0;
    cc.menus[0].failure = Route {
        priority: Some(2),
        ..ivr("account")
    };
    let mut w = World::listening(&cc, "main");
    assert_eq!(w.fire(), [IvrOutput::Priority(2), play(&["enter-account"])]);
    assert_eq!(w.s.menu(), "account");
    assert!(!w.s.is_done());
}

#[test]
fn ivr_retries_count_per_menu() {
    // One retry used in main does not count in account, entered after.
    let mut cc = demo();
    cc.menus[1].retries = 1;
    let mut w = World::listening(&cc, "main");
    w.digits("7");
    w.prompt_done();
    w.digits("9");
    w.prompt_done();
    assert_eq!(w.fire(), [play(&["enter-account"])]);
    w.prompt_done();
    assert_eq!(w.fire(), [IvrOutput::Done(hangup())]);
}

#[test]
fn ivr_digits_max_length_without_terminator() {
    let mut w = World::at_account();
    assert_eq!(w.digits("1234567"), []);
    assert_eq!(w.digits("8"), account_entered("12345678"));
    // Digits after the end are ignored.
    assert_eq!(w.digits("9#"), []);
}

#[test]
fn ivr_digits_inter_digit_timeout_ends_entry() {
    let mut w = World::at_account();
    // Each digit restarts the timer: 4 s gaps never reach the 5 s timeout.
    for d in "12345".chars() {
        w.advance(Duration::from_secs(4));
        assert_eq!(w.timeout_now(), []);
        assert_eq!(w.digits(&d.to_string()), []);
    }
    w.advance(TIMEOUT - Duration::from_millis(1));
    assert_eq!(w.timeout_now(), []);
    w.advance(Duration::from_millis(1));
    assert_eq!(w.timeout_now(), account_entered("12345"));
}

#[test]
fn ivr_digits_fewer_than_min_is_invalid() {
    let mut w = World::at_account();
    // Ended by the terminator.
    assert_eq!(w.digits("12#"), [play(&["invalid", "enter-account"])]);
    w.prompt_done();
    // Ended by the inter-digit timeout.
    assert_eq!(w.digits("123"), []);
    assert_eq!(w.fire(), [play(&["invalid", "enter-account"])]);
    w.prompt_done();
    // Retries used up.
    assert_eq!(w.digits("#"), [IvrOutput::Done(hangup())]);
}

#[test]
fn ivr_digits_no_input_replays_without_invalid_prompt() {
    let mut w = World::at_account();
    assert_eq!(w.fire(), [play(&["enter-account"])]);
    w.prompt_done();
    assert_eq!(w.digits("4321#"), account_entered("4321"));
}

#[test]
fn ivr_digits_min_zero_accepts_empty_entry() {
    let mut cc = demo();
    cc.menus[1].collect = account_digits(0, 4, Some('#'));
    let mut w = World::listening(&cc, "account");
    assert_eq!(w.digits("#"), account_entered(""));
    let mut w = World::listening(&cc, "account");
    assert_eq!(w.fire(), account_entered(""));
}

#[test]
fn ivr_digits_other_keys_are_kept_and_dtmf_letters_folded() {
    // '*' is an ordinary digit when '#' terminates; 'a' is DTMF A; 'x' is
    // not DTMF and ignored.
    let mut w = World::at_account();
    assert_eq!(w.digits("1*ax2#"), account_entered("1*A2"));
}

#[test]
fn ivr_closed_hours_plays_closed_prompt_then_routes() {
    let mut cc = demo_with_hours(0, Some("closed"));
    cc.menus[0].closed = queue("voicemail");
    let (mut w, out) = World::start(&cc, "main", SUNDAY_NOON);
    assert_eq!(out, [play(&["closed"])]);
    assert_eq!(w.s.poll_timeout(), None);
    // Digits do not barge in the closed prompt.
    assert_eq!(w.digits("1"), []);
    assert_eq!(w.prompt_done(), [IvrOutput::Done(queue("voicemail"))]);
    assert!(w.s.is_done());
    // Open on Monday.
    let (_, out) = World::start(&cc, "main", MONDAY_NOON);
    assert_eq!(out, [play(&["welcome"])]);
}

#[test]
fn ivr_closed_hours_without_prompt_routes_at_once() {
    let mut cc = demo_with_hours(0, None);
    cc.menus[0].closed = Route {
        set: vec![("closed".into(), "yes".into())],
        ..ivr("account")
    };
    let (w, out) = World::start(&cc, "main", SUNDAY_NOON);
    assert_eq!(out, [data("closed", "yes"), play(&["enter-account"])]);
    assert_eq!(w.s.menu(), "account");
}

#[test]
fn ivr_hours_checked_when_the_menu_is_entered() {
    // The caller starts at 17:59:30 in an always-open main menu and
    // reaches the office-hours account menu 40 s later: closed by then.
    let cc = demo_with_hours(1, Some("closed"));
    let (mut w, _) = World::start(&cc, "main", MONDAY_NOON + 6 * 3600 - 30);
    w.advance(Duration::from_secs(40));
    w.prompt_done();
    assert_eq!(w.digits("9"), [play(&["closed"])]);
    assert_eq!(w.prompt_done(), [IvrOutput::Done(hangup())]);
}

#[test]
fn ivr_route_set_and_priority_come_first() {
    let vip = Route {
        target: Target::Queue("vip".into()),
        priority: Some(7),
        set: vec![("lang".into(), "en".into()), ("tier".into(), "gold".into())],
    };
    let mut cc = demo();
    cc.menus[0].options.push(('3', vip.clone()));
    cc.menus[0].options.push((
        '4',
        Route {
            priority: Some(3),
            set: vec![("via".into(), "main".into())],
            ..ivr("account")
        },
    ));
    let mut w = World::listening(&cc, "main");
    assert_eq!(
        w.digits("3"),
        [
            data("lang", "en"),
            data("tier", "gold"),
            IvrOutput::Priority(7),
            IvrOutput::Done(vip),
        ]
    );
    let mut w = World::listening(&cc, "main");
    assert_eq!(
        w.digits("4"),
        [
            data("via", "main"),
            IvrOutput::Priority(3),
            play(&["enter-account"])
        ]
    );
    assert_eq!(w.s.menu(), "account");
}

#[test]
fn ivr_digits_then_route_sets_after_the_entry() {
    let mut cc = demo();
    cc.menus[1].collect = Collect::Digits {
        key: "account".into(),
        min: 1,
        max: 2,
        terminator: None,
        then: Route {
            priority: Some(9),
            ..queue("support")
        },
    };
    let mut w = World::listening(&cc, "account");
    assert_eq!(
        w.digits("42"),
        [
            data("account", "42"),
            IvrOutput::Priority(9),
            IvrOutput::Done(Route {
                priority: Some(9),
                ..queue("support")
            }),
        ]
    );
}

#[test]
fn ivr_menu_loop_is_bounded() {
    // Two closed menus without prompts send the call to each other.
    let mut cc = demo_with_hours(0, None);
    cc.menus[1].hours = Some("office".into());
    for (m, other) in [(0, "account"), (1, "main")] {
        cc.menus[m].closed = Route {
            set: vec![("hop".into(), other.into())],
            ..ivr(other)
        };
    }
    let (w, out) = World::start(&cc, "main", SUNDAY_NOON);
    assert_eq!(out.last(), Some(&IvrOutput::Done(hangup())));
    assert_eq!(out.len(), MAX_HOPS, "{out:?}");
    assert!(w.s.is_done());
    // A menu routing to itself on a key waits for the caller each time.
    let mut cc = demo();
    cc.menus[0].options.push(('0', ivr("main")));
    let (mut w, _) = World::start(&cc, "main", MONDAY_NOON);
    for _ in 0..100 {
        w.prompt_done();
        assert_eq!(w.digits("0"), [play(&["welcome"])]);
    }
}

#[test]
fn ivr_stale_timeouts_ignored() {
    let mut w = World::demo();
    // None armed while the prompt plays.
    w.advance(TIMEOUT * 2);
    assert_eq!(w.timeout_now(), []);
    w.prompt_done();
    let deadline = w.s.poll_timeout().unwrap();
    // Early.
    w.advance(TIMEOUT - Duration::from_millis(1));
    assert_eq!(w.timeout_now(), []);
    assert_eq!(w.s.poll_timeout(), Some(deadline));
    // After a digit restarted the timer, the old deadline is stale.
    w.digits("9");
    w.prompt_done();
    w.digits("1");
    let deadline = w.s.poll_timeout().unwrap();
    w.now = deadline - Duration::from_secs(1);
    w.digits("2");
    w.now = deadline;
    assert_eq!(w.timeout_now(), []);
    // After the session is done, nothing fires.
    w.digits("345#");
    assert!(w.s.is_done());
    w.advance(TIMEOUT * 10);
    assert_eq!(w.timeout_now(), []);
    assert_eq!(w.prompt_done(), []);
}
