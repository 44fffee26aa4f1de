//! The contact-center part of the configuration: the ACD's policy
//! (`[acd]`), agents (`[[agents]]`), queues (`[[queues]]`), IVR menus
//! (`[ivr.NAME]`), business hours (`[hours.NAME]`) and the dial plan
//! (`[dialplan]`).
//!
//! Plain values: `validate` fills them from the file (checking every name
//! a target, member or prompt refers to), the ACD engine (`crate::acd`)
//! and the IVR engine (`crate::ivr`) read them.

use std::time::Duration;

/// Where a call goes: a queue, a user's phones, an IVR menu, or away.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    /// `"queue:NAME"`: a `[[queues]]` entry.
    Queue(String),
    /// `"user:ID"`: a `[[users]]` entry's registered phones.
    User(String),
    /// `"ivr:NAME"`: an `[ivr.NAME]` menu.
    Menu(String),
    /// `"hangup"`: the appliance ends the call (after any prompt).
    Hangup,
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Queue(q) => write!(f, "queue:{q}"),
            Target::User(u) => write!(f, "user:{u}"),
            Target::Menu(m) => write!(f, "ivr:{m}"),
            Target::Hangup => f.write_str("hangup"),
        }
    }
}

impl Target {
    /// Parses a target as the file writes it: `queue:NAME`, `user:ID`,
    /// `ivr:NAME` or `hangup`. Whether the name exists is checked by the
    /// config reader, not here.
    pub fn parse(text: &str) -> Result<Target, String> {
        const EXPECTED: &str = "expected \"queue:NAME\", \"user:ID\", \"ivr:NAME\" or \"hangup\"";
        if text == "hangup" {
            return Ok(Target::Hangup);
        }
        let Some((kind, name)) = text.split_once(':') else {
            return Err(format!("{text:?} is not a target ({EXPECTED})"));
        };
        let make: fn(String) -> Target = match kind {
            "queue" => Target::Queue,
            "user" => Target::User,
            "ivr" => Target::Menu,
            _ => return Err(format!("{text:?} is not a target ({EXPECTED})")),
        };
        if name.is_empty() || name.contains(char::is_whitespace) {
            return Err(format!("{text:?} names no {kind} ({EXPECTED})"));
        }
        Ok(make(name.to_owned()))
    }
}

/// A route: a target plus what entering it sets on the call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub target: Target,
    /// Caller priority in queues from here on (higher is served first);
    /// `None` keeps the call's current one.
    pub priority: Option<u8>,
    /// Key/value data attached to the call.
    pub set: Vec<(String, String)>,
}

impl Route {
    pub fn to(target: Target) -> Route {
        Route {
            target,
            priority: None,
            set: Vec::new(),
        }
    }
}

/// How a queue picks among the agents free for a caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Strategy {
    /// `"longest-idle"`: the agent ready the longest since their last call.
    #[default]
    LongestIdle,
    /// `"round-robin"`: the next member after the last one offered.
    RoundRobin,
    /// `"fewest-calls"`: fewest answered calls today.
    FewestCalls,
    /// `"least-talk-time"`: least talk time today.
    LeastTalkTime,
    /// `"ring-all"`: every free member at once; the first to answer wins.
    RingAll,
    /// `"random"`: any free member (seeded; deterministic in tests).
    Random,
    /// `"linear"`: members in the order listed, always from the first.
    Linear,
}

/// A skill requirement or an agent's skill: name and level 1..=5.
pub type Skill = (String, u8);

/// One relaxation step: after `after` in the queue, a caller needs only
/// `skills` (minimum levels; an empty list = any member).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelaxStep {
    pub after: Duration,
    pub skills: Vec<Skill>,
}

/// `[acd]`: policy shared by every queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcdConfig {
    /// `auto_login`: an agent whose phone registers is logged in and ready,
    /// and logged out when the last registration goes.
    pub auto_login: bool,
    /// `ring_timeout_s`: how long an agent's phone rings before the offer
    /// counts as not answered and the caller goes back to the queue head.
    pub ring_timeout: Duration,
    /// `max_no_answer`: consecutive unanswered offers after which the agent
    /// is made not-ready (reason `no-answer`); 0 = never.
    pub max_no_answer: u32,
    /// `sticky_days`: how long a caller's last agent is remembered (0 =
    /// no sticky routing).
    pub sticky_days: u32,
    /// `feature_codes`: dialled from an agent's phone.
    pub features: FeatureCodes,
}

impl Default for AcdConfig {
    fn default() -> Self {
        AcdConfig {
            auto_login: true,
            ring_timeout: Duration::from_secs(15),
            max_no_answer: 3,
            sticky_days: 30,
            features: FeatureCodes::default(),
        }
    }
}

/// `[acd.feature_codes]`: numbers an agent dials from their phone.
/// `not_ready` may be followed by a reason code in digits (`*742`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeatureCodes {
    pub login: String,
    pub logout: String,
    pub ready: String,
    pub not_ready: String,
}

impl Default for FeatureCodes {
    fn default() -> Self {
        FeatureCodes {
            login: "*71".into(),
            logout: "*72".into(),
            ready: "*73".into(),
            not_ready: "*74".into(),
        }
    }
}

/// One `[[agents]]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentConfig {
    /// `id`: a `[[users]]` id: the agent's phone.
    pub id: String,
    /// `skills = { sales = 3 }`: name → level 1..=5.
    pub skills: Vec<Skill>,
}

/// One `[[queues]]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueConfig {
    /// `name`: how targets name it (`queue:NAME`).
    pub name: String,
    pub strategy: Strategy,
    /// `members`: agent ids that may take its calls; empty = every agent
    /// (then `skills` decide).
    pub members: Vec<String>,
    /// `skills`: minimum levels a caller needs on entry.
    pub skills: Vec<Skill>,
    /// `relax`: later steps, in increasing `after`.
    pub relax: Vec<RelaxStep>,
    /// `wrap_up_s`: after-call work before the agent is ready again.
    pub wrap_up: Duration,
    /// `wrap_up_max_s`: the longest an agent may extend wrap-up to.
    pub wrap_up_max: Duration,
    /// `priority`: the caller priority of calls entering without one.
    pub priority: u8,
    /// `service_level_s`: answered within this counts as in service level.
    pub service_level: Duration,
    /// `max_wait_s` (None = no limit): then the caller goes to `exit`.
    pub max_wait: Option<Duration>,
    /// `max_length` (None = no limit): a caller finding this many waiting
    /// goes to `exit` at once.
    pub max_length: Option<u32>,
    /// `exit`: where max wait, max length and the empty rules send a
    /// caller.
    pub exit: Route,
    /// `overflow_after_s` and `overflow`: a caller waiting that long moves
    /// to `overflow`.
    pub overflow: Option<(Duration, Route)>,
    /// `join_empty`: whether a caller may join while no member is logged
    /// in (else `exit`).
    pub join_empty: bool,
    /// `leave_when_empty`: waiting callers go to `exit` when the last
    /// member logs out.
    pub leave_when_empty: bool,
    /// `sticky_wait_s`: how long a returning caller waits for their last
    /// agent before any agent will do (0 = off).
    pub sticky_wait: Duration,
    /// `entry_prompt`: a `[prompts]` entry played on entry.
    pub entry_prompt: Option<String>,
    /// `music`: a `[prompts]` entry looped while waiting (None = silence).
    pub music: Option<String>,
    /// `announce_every_s` (None = never): position and estimated wait.
    pub announce_every: Option<Duration>,
    /// `callback_key`: the DTMF key that asks for a callback (None = off).
    pub callback_key: Option<char>,
}

impl QueueConfig {
    /// A queue with the defaults the file's keys document.
    pub fn named(name: &str) -> QueueConfig {
        QueueConfig {
            name: name.to_owned(),
            strategy: Strategy::LongestIdle,
            members: Vec::new(),
            skills: Vec::new(),
            relax: Vec::new(),
            wrap_up: Duration::from_secs(10),
            wrap_up_max: Duration::from_secs(300),
            priority: 0,
            service_level: Duration::from_secs(20),
            max_wait: None,
            max_length: None,
            exit: Route::to(Target::Hangup),
            overflow: None,
            join_empty: true,
            leave_when_empty: false,
            sticky_wait: Duration::ZERO,
            entry_prompt: None,
            music: None,
            announce_every: None,
            callback_key: None,
        }
    }
}

/// What a menu collects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Collect {
    /// One key, looked up in `options`.
    Choice,
    /// Up to `max` digits, ended by `terminator` (if any), by reaching
    /// `max`, or by the inter-digit timeout; at least `min` of them. Stored
    /// under `key` in the call's data, then the call goes to `then`.
    Digits {
        key: String,
        min: u8,
        max: u8,
        terminator: Option<char>,
        then: Route,
    },
}

/// One `[ivr.NAME]` menu.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MenuConfig {
    pub name: String,
    /// `prompt`: a `[prompts]` entry played on entry and each retry.
    pub prompt: String,
    pub collect: Collect,
    /// `options = { "1" = "queue:sales", "2" = { target = ..., priority = 5 } }`
    /// (for `Collect::Choice`).
    pub options: Vec<(char, Route)>,
    /// `timeout_s`: wait for the first (and each next) digit after the prompt.
    pub timeout: Duration,
    /// `retries`: prompts replayed after a timeout or invalid entry.
    pub retries: u32,
    /// `invalid_prompt`: played on an invalid entry before the retry.
    pub invalid_prompt: Option<String>,
    /// `failure`: where the call goes once retries are used up.
    pub failure: Route,
    /// `hours`: an `[hours.NAME]` entry; outside it the call goes to
    /// `closed` (after `closed_prompt`).
    pub hours: Option<String>,
    pub closed: Route,
    pub closed_prompt: Option<String>,
}

impl MenuConfig {
    /// A menu playing `prompt` with the defaults the file's keys document:
    /// a one-key choice with no options yet, 5 s timeout, 2 retries, no
    /// invalid prompt, no hours, hang up on failure (and when closed).
    pub fn new(name: &str, prompt: &str) -> MenuConfig {
        MenuConfig {
            name: name.to_owned(),
            prompt: prompt.to_owned(),
            collect: Collect::Choice,
            options: Vec::new(),
            timeout: Duration::from_secs(5),
            retries: 2,
            invalid_prompt: None,
            failure: Route::to(Target::Hangup),
            hours: None,
            closed: Route::to(Target::Hangup),
            closed_prompt: None,
        }
    }
}

/// A weekly opening window, minutes after local midnight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Bit 0 = Monday … bit 6 = Sunday.
    pub days: u8,
    pub open_min: u16,
    pub close_min: u16,
}

/// One `[hours.NAME]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HoursConfig {
    pub name: String,
    /// `utc_offset = "+09:00"`, in minutes.
    pub utc_offset_min: i32,
    /// `open = ["mon-fri 08:00-18:00", "sat 09:00-13:00"]`.
    pub windows: Vec<Window>,
    /// `closed_dates = ["2026-12-25"]`: (year, month, day) closed all day.
    pub closed_dates: Vec<(i32, u8, u8)>,
}

/// The contact-center sections together.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ContactCenter {
    pub acd: AcdConfig,
    pub agents: Vec<AgentConfig>,
    pub queues: Vec<QueueConfig>,
    pub menus: Vec<MenuConfig>,
    pub hours: Vec<HoursConfig>,
    /// `[dialplan]`: dialled number → route, besides the users' own ids.
    pub dialplan: Vec<(String, Route)>,
}

impl ContactCenter {
    pub fn agent(&self, id: &str) -> Option<&AgentConfig> {
        self.agents.iter().find(|a| a.id == id)
    }

    pub fn queue(&self, name: &str) -> Option<&QueueConfig> {
        self.queues.iter().find(|q| q.name == name)
    }

    pub fn menu(&self, name: &str) -> Option<&MenuConfig> {
        self.menus.iter().find(|m| m.name == name)
    }

    pub fn hours_named(&self, name: &str) -> Option<&HoursConfig> {
        self.hours.iter().find(|h| h.name == name)
    }

    pub fn route(&self, number: &str) -> Option<&Route> {
        self.dialplan
            .iter()
            .find(|(n, _)| n == number)
            .map(|(_, r)| r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_and_display_round_trip() {
        for text in ["queue:sales", "user:1001", "ivr:main", "hangup"] {
            assert_eq!(Target::parse(text).unwrap().to_string(), text);
        }
        assert_eq!(
            Target::parse("queue:support"),
            Ok(Target::Queue("support".into()))
        );
        assert_eq!(Target::parse("ivr:main"), Ok(Target::Menu("main".into())));
    }

    #[test]
    fn bad_targets_say_what_is_expected() {
        let expected = "(expected \"queue:NAME\", \"user:ID\", \"ivr:NAME\" or \"hangup\")";
        assert_eq!(
            Target::parse("menu:main"),
            Err(format!("\"menu:main\" is not a target {expected}"))
        );
        assert_eq!(
            Target::parse("sales"),
            Err(format!("\"sales\" is not a target {expected}"))
        );
        assert_eq!(
            Target::parse("queue:"),
            Err(format!("\"queue:\" names no queue {expected}"))
        );
        assert!(Target::parse("Hangup").is_err());
    }

    #[test]
    fn lookups_find_by_name() {
        let mut cc = ContactCenter::default();
        cc.agents.push(AgentConfig {
            id: "1001".into(),
            skills: vec![("sales".into(), 3)],
        });
        cc.queues.push(QueueConfig::named("sales"));
        cc.menus.push(MenuConfig::new("main", "main_menu"));
        cc.dialplan
            .push(("201".into(), Route::to(Target::Queue("sales".into()))));
        assert_eq!(cc.agent("1001").map(|a| a.skills.len()), Some(1));
        assert!(cc.agent("1002").is_none());
        assert!(cc.queue("sales").is_some());
        assert_eq!(
            cc.menu("main").map(|m| m.prompt.as_str()),
            Some("main_menu")
        );
        assert_eq!(
            cc.route("201").map(|r| &r.target),
            Some(&Target::Queue("sales".into()))
        );
        assert!(cc.route("202").is_none());
    }
}
