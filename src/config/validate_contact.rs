//! The typed walk of the contact-center sections: `[acd]`, `[[agents]]`,
//! `[[queues]]`, `[ivr.NAME]`, `[hours.NAME]` and `[dialplan]`, into a
//! [`ContactCenter`].
//!
//! Driven by `validate::build` with the same problem list and `Section`
//! reader as the other sections, so types, ranges and unknown keys are
//! reported the same way. Every name a value refers to (an agent, queue,
//! menu, user, hours or prompt) is remembered with where it is written and
//! checked once everything is read, so a reference may point forwards in
//! the file.

use std::collections::HashMap;
use std::time::Duration;

use super::contact::{
    AcdConfig, AgentConfig, Collect, ContactCenter, FeatureCodes, HoursConfig, MenuConfig,
    QueueConfig, RelaxStep, Route, Skill, Strategy, Target, Window,
};
use super::tree::{Entry, Kind, Node, Origin};
use super::types;
use super::validate::{self, Problems, Section};

const ACD_KEYS: &[&str] = &[
    "auto_login",
    "ring_timeout_s",
    "max_no_answer",
    "sticky_days",
    "feature_codes",
];
const FEATURE_KEYS: &[&str] = &["login", "logout", "ready", "not_ready"];
const AGENT_KEYS: &[&str] = &["id", "skills"];
const QUEUE_KEYS: &[&str] = &[
    "name",
    "strategy",
    "members",
    "skills",
    "relax",
    "wrap_up_s",
    "wrap_up_max_s",
    "priority",
    "service_level_s",
    "max_wait_s",
    "max_length",
    "exit",
    "overflow_after_s",
    "overflow",
    "join_empty",
    "leave_when_empty",
    "sticky_wait_s",
    "entry_prompt",
    "music",
    "announce_every_s",
    "callback_key",
];
const RELAX_KEYS: &[&str] = &["after_s", "skills"];
const ROUTE_KEYS: &[&str] = &["target", "priority", "set"];
const MENU_KEYS: &[&str] = &[
    "prompt",
    "options",
    "collect",
    "timeout_s",
    "retries",
    "invalid_prompt",
    "failure",
    "hours",
    "closed",
    "closed_prompt",
];
const COLLECT_KEYS: &[&str] = &["key", "min", "max", "terminator", "then"];
const HOURS_KEYS: &[&str] = &["utc_offset", "open", "closed_dates"];

/// The keys a DTMF key may be.
const DTMF: &str = "0123456789*#";
/// Longest feature code.
const MAX_FEATURE_CODE: usize = 16;
/// Most digits a menu collects.
const MAX_DIGITS: i64 = 32;
/// Largest `utc_offset`, in minutes (UTC+14:00, Kiribati).
const MAX_UTC_OFFSET_MIN: i32 = 14 * 60;
const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

const NAME_RULE: &str = "1 to 32 ASCII letters, digits, '_' or '-'";
const SKILLS_EXPECTED: &str = "a table of skill = level (1..=5), e.g. { sales = 3 }";
const ROUTE_EXPECTED: &str = "a target string such as \"queue:sales\", or a table { target = \"...\", priority = N, set = { key = \"value\" } }";
const WINDOW_EXPECTED: &str =
    "expected \"DAYS HH:MM-HH:MM\" such as \"mon-fri 08:00-18:00\" or \"sat,sun 10:00-14:00\"";

/// What a name written in the file refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Space {
    Agent,
    Queue,
    Menu,
    User,
    Hours,
    Prompt,
}

impl Space {
    fn noun(self) -> &'static str {
        match self {
            Space::Agent => "agent",
            Space::Queue => "queue",
            Space::Menu => "menu",
            Space::User => "user",
            Space::Hours => "hours",
            Space::Prompt => "prompt",
        }
    }

    fn expected(self) -> &'static str {
        match self {
            Space::Agent => "the id of an [[agents]] entry",
            Space::Queue => "the name of a [[queues]] entry",
            Space::Menu => "an [ivr.NAME] menu",
            Space::User => "the id of a [[users]] entry",
            Space::Hours => "an [hours.NAME] entry",
            Space::Prompt => "a [prompts] entry",
        }
    }
}

/// A name written at `key`, checked once every section is read.
struct Ref {
    space: Space,
    name: String,
    origin: Origin,
    key: String,
}

struct Reader<'p, 'f> {
    p: &'p mut Problems<'f>,
    refs: Vec<Ref>,
}

/// Reads the contact-center sections of `root` (taking them from `top`) and
/// checks every cross reference, against `[[users]]` and `[prompts]` too.
pub(super) fn read<'n>(p: &mut Problems, root: &'n Node, top: &mut Section<'n>) -> ContactCenter {
    let mut r = Reader {
        p,
        refs: Vec::new(),
    };
    let acd = r.acd(top.take("acd"));
    let agents = r.agents(top.take("agents"));
    let queues = r.queues(top.take("queues"));
    let menus = r.menus(top.take("ivr"));
    let hours = r.hours(top.take("hours"));
    let dialplan = r.dialplan(top.take("dialplan"));
    let cc = ContactCenter {
        acd,
        agents,
        queues,
        menus,
        hours,
        dialplan,
    };
    r.check_refs(root, &cc);
    r.check_numbers(root, &cc);
    cc
}

/// The `[[users]]` ids written in the file (also those of entries refused
/// for another reason); `None` when `users` is not an array (reported).
fn user_ids(root: &Node) -> Option<Vec<&str>> {
    let Some(node) = root.get("users") else {
        return Some(Vec::new());
    };
    let Kind::Array(items) = &node.kind else {
        return None;
    };
    Some(
        items
            .iter()
            .filter_map(|item| match &item.get("id")?.kind {
                Kind::Str(id) => Some(id.as_str()),
                _ => None,
            })
            .collect(),
    )
}

/// The `[prompts]` names written in the file; `None` when `prompts` is not
/// a table (reported).
fn prompt_names(root: &Node) -> Option<Vec<&str>> {
    match root.get("prompts") {
        None => Some(Vec::new()),
        Some(node) => node
            .entries()
            .map(|entries| entries.iter().map(|e| e.key.as_str()).collect()),
    }
}

fn missing(p: &mut Problems, s: &Section, key: &str, expected: &str) {
    if s.origin(key).is_none() {
        p.push(
            s.table_origin,
            &s.key(key),
            format!("missing (expected {expected})"),
        );
    }
}

fn is_name(name: &str) -> bool {
    validate::is_prompt_name(name)
}

/// One DTMF key out of `allowed`.
fn dtmf_key(text: &str, allowed: &str) -> Option<char> {
    let mut chars = text.chars();
    match (chars.next(), chars.next()) {
        (Some(c), None) if allowed.contains(c) => Some(c),
        _ => None,
    }
}

impl Reader<'_, '_> {
    fn refer(&mut self, space: Space, name: &str, origin: Origin, key: &str) {
        self.refs.push(Ref {
            space,
            name: name.to_owned(),
            origin,
            key: key.to_owned(),
        });
    }

    /// A required name (`queues[i].name`, `agents[i].id`): present, a
    /// plain word (or a valid user id for agents).
    fn required_name(&mut self, s: &mut Section, key: &str, example: &str) -> Option<String> {
        match s.string(self.p, key) {
            Some((name, origin)) => {
                if !is_name(name) {
                    self.p.push(
                        origin,
                        &s.key(key),
                        format!("{name:?} is not a name (expected {NAME_RULE})"),
                    );
                    return None;
                }
                Some(name.to_owned())
            }
            None => {
                missing(self.p, s, key, example);
                None
            }
        }
    }

    /// An optional `[prompts]` name; `""` = none.
    fn prompt(&mut self, s: &mut Section, key: &str) -> Option<String> {
        let (name, origin) = s.string(self.p, key)?;
        if name.is_empty() {
            return None;
        }
        self.refer(Space::Prompt, name, origin, &s.key(key));
        Some(name.to_owned())
    }

    /// A target string, its name remembered for the cross-reference check.
    fn target(&mut self, key: &str, text: &str, origin: Origin) -> Option<Target> {
        match Target::parse(text) {
            Ok(target) => {
                let named = match &target {
                    Target::Queue(name) => Some((Space::Queue, name)),
                    Target::User(id) => Some((Space::User, id)),
                    Target::Menu(name) => Some((Space::Menu, name)),
                    Target::Hangup => None,
                };
                if let Some((space, name)) = named {
                    self.refer(space, name, origin, key);
                }
                Some(target)
            }
            Err(e) => {
                self.p.push(origin, key, e);
                None
            }
        }
    }

    /// A route: a target string, or `{ target, priority, set }`.
    fn route(&mut self, key: &str, node: &Node) -> Option<Route> {
        match &node.kind {
            Kind::Str(text) => self.target(key, text, node.origin).map(Route::to),
            Kind::Table(_) => {
                let mut s = Section::open(self.p, key, Some(node), ROUTE_KEYS);
                let target = match s.string(self.p, "target") {
                    Some((text, origin)) => self.target(&s.key("target"), text, origin),
                    None => {
                        missing(self.p, &s, "target", "a target such as \"queue:sales\"");
                        None
                    }
                };
                let priority = s
                    .int(self.p, "priority", 0, 255)
                    .and_then(|v| u8::try_from(v).ok());
                let set = match s.take("set") {
                    Some(n) => self.call_data(&s.key("set"), n),
                    None => Vec::new(),
                };
                s.finish(self.p);
                Some(Route {
                    target: target?,
                    priority,
                    set,
                })
            }
            _ => {
                validate::type_error(self.p, key, node, ROUTE_EXPECTED);
                None
            }
        }
    }

    /// An optional route at `key` of `s`, else `default`.
    fn route_or(&mut self, s: &mut Section, key: &str, default: Route) -> Route {
        match s.take(key) {
            Some(node) => self.route(&s.key(key), node).unwrap_or(default),
            None => default,
        }
    }

    /// `set = { account = "A-1001" }`: data attached to the call.
    fn call_data(&mut self, key: &str, node: &Node) -> Vec<(String, String)> {
        let Some(entries) = node.entries() else {
            validate::type_error(self.p, key, node, "a table of key = \"value\" strings");
            return Vec::new();
        };
        let mut out = Vec::with_capacity(entries.len());
        for entry in entries {
            let entry_key = format!("{key}.{}", entry.key);
            if !is_name(&entry.key) {
                self.p.push(
                    entry.key_origin,
                    &entry_key,
                    format!("{:?} is not a data key (expected {NAME_RULE})", entry.key),
                );
                continue;
            }
            if let Some(value) = validate::string(self.p, &entry_key, &entry.node) {
                out.push((entry.key.clone(), value.to_owned()));
            }
        }
        out
    }

    /// `skills = { sales = 3 }`: name → level 1..=5.
    fn skills(&mut self, key: &str, node: &Node) -> Vec<Skill> {
        let Some(entries) = node.entries() else {
            validate::type_error(self.p, key, node, SKILLS_EXPECTED);
            return Vec::new();
        };
        let mut out = Vec::with_capacity(entries.len());
        for entry in entries {
            let entry_key = format!("{key}.{}", entry.key);
            if !is_name(&entry.key) {
                self.p.push(
                    entry.key_origin,
                    &entry_key,
                    format!("{:?} is not a skill name (expected {NAME_RULE})", entry.key),
                );
                continue;
            }
            if let Some(level) = validate::int(self.p, &entry_key, &entry.node, 1, 5)
                .and_then(|v| u8::try_from(v).ok())
            {
                out.push((entry.key.clone(), level));
            }
        }
        out
    }

    fn skills_at(&mut self, s: &mut Section, key: &str) -> Vec<Skill> {
        match s.take(key) {
            Some(node) => self.skills(&s.key(key), node),
            None => Vec::new(),
        }
    }

    fn acd(&mut self, node: Option<&Node>) -> AcdConfig {
        let d = AcdConfig::default();
        let mut s = Section::open(self.p, "acd", node, ACD_KEYS);
        let auto_login = s.boolean(self.p, "auto_login").unwrap_or(d.auto_login);
        let ring_timeout = s.secs(self.p, "ring_timeout_s", 1, 600, d.ring_timeout);
        let max_no_answer = s.count(self.p, "max_no_answer", 0, 100, d.max_no_answer);
        let sticky_days = s.count(self.p, "sticky_days", 0, 3650, d.sticky_days);
        let features = self.feature_codes(s.take("feature_codes"));
        s.finish(self.p);
        AcdConfig {
            auto_login,
            ring_timeout,
            max_no_answer,
            sticky_days,
            features,
        }
    }

    fn feature_codes(&mut self, node: Option<&Node>) -> FeatureCodes {
        let d = FeatureCodes::default();
        let mut s = Section::open(self.p, "acd.feature_codes", node, FEATURE_KEYS);
        let mut first_by_code: HashMap<String, &str> = HashMap::new();
        let mut code = |r: &mut Self, key: &'static str, default: String| {
            let Some((text, origin)) = s.string(r.p, key) else {
                first_by_code.entry(default.clone()).or_insert(key);
                return default;
            };
            let ok = (1..=MAX_FEATURE_CODE).contains(&text.len())
                && text.chars().all(|c| DTMF.contains(c));
            if !ok {
                r.p.push(
                    origin,
                    &s.key(key),
                    format!("{text:?} is not a feature code (expected 1 to {MAX_FEATURE_CODE} of 0-9, * and #, e.g. \"*71\")"),
                );
                return default;
            }
            if let Some(first) = first_by_code.get(text) {
                r.p.push(
                    origin,
                    &s.key(key),
                    format!("{text:?} is also acd.feature_codes.{first} (expected a different code for each)"),
                );
                return default;
            }
            first_by_code.insert(text.to_owned(), key);
            text.to_owned()
        };
        let features = FeatureCodes {
            login: code(self, "login", d.login),
            logout: code(self, "logout", d.logout),
            ready: code(self, "ready", d.ready),
            not_ready: code(self, "not_ready", d.not_ready),
        };
        s.finish(self.p);
        features
    }

    fn agents(&mut self, node: Option<&Node>) -> Vec<AgentConfig> {
        let Some(items) = self.array_of_tables("agents", node) else {
            return Vec::new();
        };
        let mut agents: Vec<AgentConfig> = Vec::with_capacity(items.len());
        let mut first_by_id: HashMap<String, String> = HashMap::new();
        for (i, item) in items.iter().enumerate() {
            let path = format!("agents[{i}]");
            let mut s = Section::open(self.p, &path, Some(item), AGENT_KEYS);
            let id = match s.string(self.p, "id") {
                Some((id, origin)) => {
                    if let Some(first) = first_by_id.get(id) {
                        self.p.push(
                            origin,
                            &s.key("id"),
                            format!("agent {id:?} is already {first} (expected each agent once)"),
                        );
                    } else {
                        first_by_id.insert(id.to_owned(), path.clone());
                        self.refer(Space::User, id, origin, &s.key("id"));
                    }
                    Some(id.to_owned())
                }
                None => {
                    missing(
                        self.p,
                        &s,
                        "id",
                        "the id of a [[users]] entry, e.g. \"1001\"",
                    );
                    None
                }
            };
            let skills = self.skills_at(&mut s, "skills");
            s.finish(self.p);
            if let Some(id) = id {
                agents.push(AgentConfig { id, skills });
            }
        }
        agents
    }

    /// The tables of an array of tables (`[[agents]]`, `[[queues]]`).
    fn array_of_tables<'n>(&mut self, key: &str, node: Option<&'n Node>) -> Option<&'n [Node]> {
        let node = node?;
        match &node.kind {
            Kind::Array(items) => Some(items),
            _ => {
                let expected = format!("an array of tables ([[{key}]] sections)");
                validate::type_error(self.p, key, node, &expected);
                None
            }
        }
    }

    fn queues(&mut self, node: Option<&Node>) -> Vec<QueueConfig> {
        let Some(items) = self.array_of_tables("queues", node) else {
            return Vec::new();
        };
        let mut queues = Vec::with_capacity(items.len());
        let mut first_by_name: HashMap<String, String> = HashMap::new();
        for (i, item) in items.iter().enumerate() {
            let path = format!("queues[{i}]");
            let mut s = Section::open(self.p, &path, Some(item), QUEUE_KEYS);
            let name = self.required_name(&mut s, "name", "a queue name such as \"support\"");
            if let Some(name) = &name {
                if let Some(first) = first_by_name.get(name) {
                    let origin = s.origin("name").unwrap_or(s.table_origin);
                    self.p.push(
                        origin,
                        &s.key("name"),
                        format!(
                            "queue name {name:?} is already used by {first} (expected unique names)"
                        ),
                    );
                } else {
                    first_by_name.insert(name.clone(), path.clone());
                }
            }
            let queue = self.queue(&mut s, name.as_deref().unwrap_or_default());
            s.finish(self.p);
            if name.is_some() {
                queues.push(queue);
            }
        }
        queues
    }

    fn queue(&mut self, s: &mut Section, name: &str) -> QueueConfig {
        let d = QueueConfig::named(name);
        let strategy = match s.string(self.p, "strategy") {
            Some((text, origin)) => strategy(text).unwrap_or_else(|| {
                self.p.push(
                    origin,
                    &s.key("strategy"),
                    format!("{text:?} is not a strategy (expected \"longest-idle\", \"round-robin\", \"fewest-calls\", \"least-talk-time\", \"ring-all\", \"random\" or \"linear\")"),
                );
                d.strategy
            }),
            None => d.strategy,
        };
        let members = match s.take("members") {
            Some(node) => self.members(&s.key("members"), node),
            None => d.members,
        };
        let skills = self.skills_at(s, "skills");
        let relax = match s.take("relax") {
            Some(node) => self.relax(&s.key("relax"), node),
            None => d.relax,
        };
        let wrap_up = s.secs(self.p, "wrap_up_s", 0, 3600, d.wrap_up);
        let wrap_up_max = s.secs(self.p, "wrap_up_max_s", 0, 3600, d.wrap_up_max);
        s.ordered(
            self.p,
            "wrap_up_s",
            wrap_up,
            "wrap_up_max_s",
            wrap_up_max,
            "wrap_up_s <= wrap_up_max_s",
            |d: Duration| u128::from(d.as_secs()),
        );
        let priority = s.count(self.p, "priority", 0, 255, d.priority);
        let service_level = s.secs(self.p, "service_level_s", 1, 3600, d.service_level);
        let max_wait =
            Some(s.secs(self.p, "max_wait_s", 0, 86_400, Duration::ZERO)).filter(|w| !w.is_zero());
        let max_length = Some(s.count(self.p, "max_length", 0, 100_000, 0u32)).filter(|&n| n > 0);
        let exit = self.route_or(s, "exit", d.exit);
        let overflow_after = s.int(self.p, "overflow_after_s", 1, 86_400);
        let overflow_route = s
            .take("overflow")
            .and_then(|node| self.route(&s.key("overflow"), node));
        let overflow = match (s.origin("overflow_after_s"), s.origin("overflow")) {
            (Some(origin), None) => {
                self.p.push(
                    origin,
                    &s.key("overflow_after_s"),
                    "set without overflow (expected both or neither)",
                );
                None
            }
            (None, Some(origin)) => {
                self.p.push(
                    origin,
                    &s.key("overflow"),
                    "set without overflow_after_s (expected both or neither)",
                );
                None
            }
            _ => overflow_after
                .and_then(|v| u64::try_from(v).ok())
                .zip(overflow_route)
                .map(|(after, route)| (Duration::from_secs(after), route)),
        };
        let join_empty = s.boolean(self.p, "join_empty").unwrap_or(d.join_empty);
        let leave_when_empty = s
            .boolean(self.p, "leave_when_empty")
            .unwrap_or(d.leave_when_empty);
        let sticky_wait = s.secs(self.p, "sticky_wait_s", 0, 3600, d.sticky_wait);
        let entry_prompt = self.prompt(s, "entry_prompt");
        let music = self.prompt(s, "music");
        let announce_every = Some(s.secs(self.p, "announce_every_s", 0, 3600, Duration::ZERO))
            .filter(|a| !a.is_zero());
        let callback_key = match s.string(self.p, "callback_key") {
            Some(("", _)) | None => None,
            Some((text, origin)) => {
                let key = dtmf_key(text, DTMF);
                if key.is_none() {
                    self.p.push(
                        origin,
                        &s.key("callback_key"),
                        format!("{text:?} is not a DTMF key (expected one of 0-9, * or #, or \"\" for no callbacks)"),
                    );
                }
                key
            }
        };
        QueueConfig {
            name: name.to_owned(),
            strategy,
            members,
            skills,
            relax,
            wrap_up,
            wrap_up_max,
            priority,
            service_level,
            max_wait,
            max_length,
            exit,
            overflow,
            join_empty,
            leave_when_empty,
            sticky_wait,
            entry_prompt,
            music,
            announce_every,
            callback_key,
        }
    }

    fn members(&mut self, key: &str, node: &Node) -> Vec<String> {
        let Some(items) = validate::strings(self.p, key, node) else {
            return Vec::new();
        };
        let mut members: Vec<String> = Vec::with_capacity(items.len());
        for (item_key, id, origin) in items {
            if let Some(j) = members.iter().position(|m| m == id) {
                self.p.push(
                    origin,
                    &item_key,
                    format!("agent {id:?} is already {key}[{j}] (expected each member once)"),
                );
                continue;
            }
            self.refer(Space::Agent, id, origin, &item_key);
            members.push(id.to_owned());
        }
        members
    }

    /// `relax = [{ after_s = 30, skills = { support = 1 } }, ...]`.
    fn relax(&mut self, key: &str, node: &Node) -> Vec<RelaxStep> {
        let Kind::Array(items) = &node.kind else {
            validate::type_error(
                self.p,
                key,
                node,
                "an array of { after_s = N, skills = { ... } } tables",
            );
            return Vec::new();
        };
        let mut steps: Vec<RelaxStep> = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let mut s = Section::open(self.p, &format!("{key}[{i}]"), Some(item), RELAX_KEYS);
            let after = s.int(self.p, "after_s", 1, 86_400);
            if after.is_none() {
                missing(self.p, &s, "after_s", "seconds in the queue, 1..=86400");
            }
            let skills = self.skills_at(&mut s, "skills");
            let after = after
                .and_then(|v| u64::try_from(v).ok())
                .map(Duration::from_secs);
            if let (Some(after), Some(last)) = (after, steps.last())
                && after <= last.after
            {
                self.p.push(
                    s.origin("after_s").unwrap_or(s.table_origin),
                    &s.key("after_s"),
                    format!(
                        "{} is not after {key}[{}].after_s ({}) (expected increasing after_s)",
                        after.as_secs(),
                        i - 1,
                        last.after.as_secs()
                    ),
                );
            }
            s.finish(self.p);
            if let Some(after) = after {
                steps.push(RelaxStep { after, skills });
            }
        }
        steps
    }

    /// The `[SECTION.NAME]` entries of `node` with their key paths; a
    /// section that is not a table, and a NAME that is not a name, are
    /// problems (`noun` names what the entries are, with its article).
    fn named_tables<'n>(
        &mut self,
        node: Option<&'n Node>,
        section: &str,
        noun: &str,
    ) -> Vec<(String, &'n Entry)> {
        let Some(node) = node else {
            return Vec::new();
        };
        let Some(entries) = node.entries() else {
            let what = format!("a table of [{section}.NAME] entries");
            validate::type_error(self.p, section, node, &what);
            return Vec::new();
        };
        let mut out = Vec::with_capacity(entries.len());
        for entry in entries {
            let path = format!("{section}.{}", entry.key);
            if !is_name(&entry.key) {
                self.p.push(
                    entry.key_origin,
                    &path,
                    format!("{:?} is not {noun} name (expected {NAME_RULE})", entry.key),
                );
            }
            out.push((path, entry));
        }
        out
    }

    /// `[ivr.NAME]` tables.
    fn menus(&mut self, node: Option<&Node>) -> Vec<MenuConfig> {
        let entries = self.named_tables(node, "ivr", "a menu");
        let mut menus = Vec::with_capacity(entries.len());
        for (path, entry) in entries {
            let mut s = Section::open(self.p, &path, Some(&entry.node), MENU_KEYS);
            let menu = self.menu(&mut s, &entry.key);
            s.finish(self.p);
            menus.push(menu);
        }
        menus
    }

    fn menu(&mut self, s: &mut Section, name: &str) -> MenuConfig {
        let prompt = match s.string(self.p, "prompt") {
            Some((prompt, origin)) => {
                self.refer(Space::Prompt, prompt, origin, &s.key("prompt"));
                prompt
            }
            None => {
                missing(self.p, s, "prompt", "a [prompts] entry played on entry");
                ""
            }
        };
        let d = MenuConfig::new(name, prompt);
        let options = match s.take("options") {
            Some(node) => self.options(&s.key("options"), node),
            None => d.options,
        };
        let collect = match s.take("collect") {
            Some(node) => self.collect(&s.key("collect"), node),
            None => d.collect,
        };
        match (s.origin("options"), s.origin("collect")) {
            (None, None) => {
                let key = s.key("options");
                self.p.push(
                    s.table_origin,
                    &key,
                    "missing (expected options = { \"1\" = \"queue:NAME\", ... }, or collect = { ... } to collect digits)",
                );
            }
            (Some(_), Some(origin)) => self.p.push(
                origin,
                &s.key("collect"),
                "set together with options (expected options for a one-key choice, or collect for digits, not both)",
            ),
            _ => {}
        }
        let timeout = s.secs(self.p, "timeout_s", 1, 60, d.timeout);
        let retries = s.count(self.p, "retries", 0, 10, d.retries);
        let invalid_prompt = self.prompt(s, "invalid_prompt");
        let failure = self.route_or(s, "failure", d.failure);
        let hours = match s.string(self.p, "hours") {
            Some(("", _)) | None => None,
            Some((hours, origin)) => {
                self.refer(Space::Hours, hours, origin, &s.key("hours"));
                Some(hours.to_owned())
            }
        };
        let closed = self.route_or(s, "closed", d.closed);
        let closed_prompt = self.prompt(s, "closed_prompt");
        if hours.is_none() {
            for key in ["closed", "closed_prompt"] {
                if let Some(origin) = s.origin(key) {
                    self.p.push(
                        origin,
                        &s.key(key),
                        "set without hours (expected hours = \"NAME\" too: the menu is never closed without it)",
                    );
                }
            }
        }
        MenuConfig {
            options,
            collect,
            timeout,
            retries,
            invalid_prompt,
            failure,
            hours,
            closed,
            closed_prompt,
            ..d
        }
    }

    /// `options = { "1" = "queue:sales", "9" = "ivr:account" }`.
    fn options(&mut self, key: &str, node: &Node) -> Vec<(char, Route)> {
        let Some(entries) = node.entries() else {
            validate::type_error(self.p, key, node, "a table of \"KEY\" = target entries");
            return Vec::new();
        };
        if entries.is_empty() {
            self.p.push(
                node.origin,
                key,
                "no options (expected at least one \"KEY\" = target)",
            );
        }
        let mut options = Vec::with_capacity(entries.len());
        for entry in entries {
            let entry_key = format!("{key}.{}", entry.key);
            let Some(digit) = dtmf_key(&entry.key, DTMF) else {
                self.p.push(
                    entry.key_origin,
                    &entry_key,
                    format!(
                        "{:?} is not a DTMF key (expected one of 0-9, * or #)",
                        entry.key
                    ),
                );
                continue;
            };
            if let Some(route) = self.route(&entry_key, &entry.node) {
                options.push((digit, route));
            }
        }
        options
    }

    /// `collect = { key = "account", min = 1, max = 12, terminator = "#", then = "..." }`.
    fn collect(&mut self, key: &str, node: &Node) -> Collect {
        let mut s = Section::open(self.p, key, Some(node), COLLECT_KEYS);
        let data_key = match s.string(self.p, "key") {
            Some((k, origin)) if !is_name(k) => {
                self.p.push(
                    origin,
                    &s.key("key"),
                    format!("{k:?} is not a data key (expected {NAME_RULE})"),
                );
                String::new()
            }
            Some((k, _)) => k.to_owned(),
            None => {
                missing(
                    self.p,
                    &s,
                    "key",
                    "the call data key the digits are stored under",
                );
                String::new()
            }
        };
        let min = s.count(self.p, "min", 0, MAX_DIGITS, 1u8);
        let max = s.count(self.p, "max", 1, MAX_DIGITS, 16u8);
        s.ordered(
            self.p,
            "min",
            Duration::from_secs(min.into()),
            "max",
            Duration::from_secs(max.into()),
            "min <= max",
            |d: Duration| u128::from(d.as_secs()),
        );
        let terminator = match s.string(self.p, "terminator") {
            None => Some('#'),
            Some(("", _)) => None,
            Some((text, origin)) => {
                let t = dtmf_key(text, "*#");
                if t.is_none() {
                    self.p.push(
                        origin,
                        &s.key("terminator"),
                        format!(
                            "{text:?} is not a terminator (expected \"#\", \"*\" or \"\" for none)"
                        ),
                    );
                }
                t
            }
        };
        let then = match s.take("then") {
            Some(node) => self.route(&s.key("then"), node),
            None => {
                missing(self.p, &s, "then", "a target such as \"queue:support\"");
                None
            }
        };
        s.finish(self.p);
        Collect::Digits {
            key: data_key,
            min,
            max,
            terminator,
            then: then.unwrap_or(Route::to(Target::Hangup)),
        }
    }

    /// `[hours.NAME]` tables.
    fn hours(&mut self, node: Option<&Node>) -> Vec<HoursConfig> {
        let entries = self.named_tables(node, "hours", "an hours");
        let mut all = Vec::with_capacity(entries.len());
        for (path, entry) in entries {
            let mut s = Section::open(self.p, &path, Some(&entry.node), HOURS_KEYS);
            let utc_offset_min = match s.string(self.p, "utc_offset") {
                Some((text, origin)) => utc_offset(text).unwrap_or_else(|| {
                    self.p.push(
                        origin,
                        &s.key("utc_offset"),
                        format!("{text:?} is not a UTC offset (expected \"+HH:MM\" or \"-HH:MM\" within 14 hours, e.g. \"+09:00\")"),
                    );
                    0
                }),
                None => 0,
            };
            let windows = match s.take("open") {
                Some(node) => validate::strings(self.p, &s.key("open"), node)
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|(key, text, origin)| {
                        window(text).map_err(|e| self.p.push(origin, &key, e)).ok()
                    })
                    .collect(),
                None => Vec::new(),
            };
            let closed_dates = match s.take("closed_dates") {
                Some(node) => self.dates(&s.key("closed_dates"), node),
                None => Vec::new(),
            };
            s.finish(self.p);
            all.push(HoursConfig {
                name: entry.key.clone(),
                utc_offset_min,
                windows,
                closed_dates,
            });
        }
        all
    }

    /// `closed_dates = ["2026-12-25"]` (quoted, or TOML dates).
    fn dates(&mut self, key: &str, node: &Node) -> Vec<(i32, u8, u8)> {
        let Kind::Array(items) = &node.kind else {
            validate::type_error(self.p, key, node, "an array of \"YYYY-MM-DD\" dates");
            return Vec::new();
        };
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let item_key = format!("{key}[{i}]");
            let text = match &item.kind {
                Kind::Str(text) | Kind::Datetime(text) => text,
                _ => {
                    validate::type_error(self.p, &item_key, item, "a \"YYYY-MM-DD\" date");
                    continue;
                }
            };
            match date(text) {
                Some(d) => out.push(d),
                None => self.p.push(
                    item.origin,
                    &item_key,
                    format!(
                        "{text:?} is not a date (expected \"YYYY-MM-DD\", e.g. \"2026-12-25\")"
                    ),
                ),
            }
        }
        out
    }

    /// `[dialplan]`: `"200" = "queue:support"`.
    fn dialplan(&mut self, node: Option<&Node>) -> Vec<(String, Route)> {
        let Some(node) = node else {
            return Vec::new();
        };
        let Some(entries) = node.entries() else {
            validate::type_error(
                self.p,
                "dialplan",
                node,
                "a table of \"NUMBER\" = target entries",
            );
            return Vec::new();
        };
        let mut plan = Vec::with_capacity(entries.len());
        for entry in entries {
            let key = format!("dialplan.{}", entry.key);
            if let Err(e) = types::check_user_id(&entry.key) {
                self.p.push(entry.key_origin, &key, e.to_string());
                continue;
            }
            if let Some(route) = self.route(&key, &entry.node) {
                plan.push((entry.key.clone(), route));
            }
        }
        plan
    }

    /// Every remembered name must exist.
    fn check_refs(&mut self, root: &Node, cc: &ContactCenter) {
        let users = user_ids(root);
        let prompts = prompt_names(root);
        for r in std::mem::take(&mut self.refs) {
            let known = match r.space {
                Space::Agent => Some(cc.agent(&r.name).is_some()),
                Space::Queue => Some(cc.queue(&r.name).is_some()),
                Space::Menu => Some(cc.menu(&r.name).is_some()),
                Space::Hours => Some(cc.hours_named(&r.name).is_some()),
                Space::User => users.as_ref().map(|u| u.contains(&r.name.as_str())),
                Space::Prompt => prompts.as_ref().map(|p| p.contains(&r.name.as_str())),
            };
            // `None`: the section itself is malformed, already reported.
            if known == Some(false) {
                self.p.push(
                    r.origin,
                    &r.key,
                    format!(
                        "no {} {:?} (expected {})",
                        r.space.noun(),
                        r.name,
                        r.space.expected()
                    ),
                );
            }
        }
    }

    /// A dial-plan number must not be a user's id (which rings that user's
    /// phones) nor a feature code.
    fn check_numbers(&mut self, root: &Node, cc: &ContactCenter) {
        let users = user_ids(root).unwrap_or_default();
        let f = &cc.acd.features;
        let codes = [
            ("login", &f.login),
            ("logout", &f.logout),
            ("ready", &f.ready),
            ("not_ready", &f.not_ready),
        ];
        let Some(entries) = root.get("dialplan").and_then(Node::entries) else {
            return;
        };
        for entry in entries {
            let key = format!("dialplan.{}", entry.key);
            let number = entry.key.as_str();
            if users.contains(&number) {
                self.p.push(
                    entry.key_origin,
                    &key,
                    format!("{number:?} is a [[users]] id (expected a number no user has: dialling a user's id rings their phones)"),
                );
            } else if let Some((name, _)) = codes.iter().find(|(_, code)| code.as_str() == number) {
                self.p.push(
                    entry.key_origin,
                    &key,
                    format!("{number:?} is acd.feature_codes.{name} (expected a number that is not a feature code)"),
                );
            }
        }
    }
}

fn strategy(text: &str) -> Option<Strategy> {
    Some(match text {
        "longest-idle" => Strategy::LongestIdle,
        "round-robin" => Strategy::RoundRobin,
        "fewest-calls" => Strategy::FewestCalls,
        "least-talk-time" => Strategy::LeastTalkTime,
        "ring-all" => Strategy::RingAll,
        "random" => Strategy::Random,
        "linear" => Strategy::Linear,
        _ => return None,
    })
}

/// `"+09:00"` → 540.
fn utc_offset(text: &str) -> Option<i32> {
    let (sign, rest) = match text.as_bytes().first()? {
        b'+' => (1, &text[1..]),
        b'-' => (-1, &text[1..]),
        _ => return None,
    };
    let (h, m) = rest.split_once(':')?;
    let minutes = i32::from(two_digits(h)?) * 60 + i32::from(two_digits(m)?);
    (two_digits(m)? < 60 && minutes <= MAX_UTC_OFFSET_MIN).then_some(sign * minutes)
}

fn two_digits(text: &str) -> Option<u16> {
    (text.len() == 2 && text.bytes().all(|b| b.is_ascii_digit()))
        .then(|| text.parse().ok())
        .flatten()
}

/// `"HH:MM"` → minutes after midnight; `24:00` only when `end`.
fn clock(text: &str, end: bool) -> Option<u16> {
    let (h, m) = text.split_once(':')?;
    let (h, m) = (two_digits(h)?, two_digits(m)?);
    match (h, m) {
        (0..=23, 0..=59) => Some(h * 60 + m),
        (24, 0) if end => Some(1440),
        _ => None,
    }
}

/// `"mon-fri 08:00-18:00"`, `"sat,sun 10:00-14:00"`, `"fri-mon 22:00-06:00"`
/// (a range may wrap past Sunday; a close before the open runs overnight).
fn window(text: &str) -> Result<Window, String> {
    let bad = || format!("{text:?} is not an opening window ({WINDOW_EXPECTED})");
    let (day_list, times) = text.trim().split_once(' ').ok_or_else(bad)?;
    let day = |name: &str| DAYS.iter().position(|d| *d == name);
    let mut days = 0u8;
    for part in day_list.split(',') {
        let (from, to) = part.split_once('-').unwrap_or((part, part));
        let (from, to) = (day(from).ok_or_else(bad)?, day(to).ok_or_else(bad)?);
        let mut d = from;
        loop {
            days |= 1 << d;
            if d == to {
                break;
            }
            d = (d + 1) % 7;
        }
    }
    let (open, close) = times.trim().split_once('-').ok_or_else(bad)?;
    let open_min = clock(open, false).ok_or_else(bad)?;
    let close_min = clock(close, true).ok_or_else(bad)?;
    if open_min == close_min {
        return Err(format!(
            "{text:?} opens and closes at the same minute (expected a close after the open, or before it for overnight)"
        ));
    }
    Ok(Window {
        days,
        open_min,
        close_min,
    })
}

/// `"2026-12-25"` → (2026, 12, 25), checking the day exists.
fn date(text: &str) -> Option<(i32, u8, u8)> {
    let mut parts = text.splitn(3, '-');
    let (y, m, d) = (parts.next()?, parts.next()?, parts.next()?);
    if y.len() != 4 || !y.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let year: i32 = y.parse().ok()?;
    let month = u8::try_from(two_digits(m)?).ok()?;
    let day = u8::try_from(two_digits(d)?).ok()?;
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let days_in_month = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return None,
    };
    (1..=days_in_month)
        .contains(&day)
        .then_some((year, month, day))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, parse};

    /// 11 lines: two prompts and two users. Lines of the text appended
    /// start at 12.
    const BASE: &str = "[prompts]\nhello = \"h.wav\"\nmusic = \"m.wav\"\n\n[[users]]\nid = \"1001\"\npassword = \"pw\"\n\n[[users]]\nid = \"1002\"\npassword = \"pw\"\n";

    fn problems(extra: &str) -> Vec<String> {
        match parse("cc.toml", &format!("{BASE}{extra}"), &[]) {
            Ok(_) => Vec::new(),
            Err(e) => e.0.iter().map(ToString::to_string).collect(),
        }
    }

    fn ok(extra: &str) -> Config {
        parse("cc.toml", &format!("{BASE}{extra}"), &[]).unwrap_or_else(|e| panic!("{e}"))
    }

    const GOOD: &str = r##"
[acd]
auto_login = false
ring_timeout_s = 20
max_no_answer = 0
sticky_days = 7
feature_codes = { login = "*81", logout = "*82", ready = "*83", not_ready = "*84" }

[[agents]]
id = "1001"
skills = { sales = 3, english = 5 }

[[agents]]
id = "1002"

[[queues]]
name = "sales"
strategy = "ring-all"
members = ["1001", "1002"]
skills = { sales = 2 }
relax = [{ after_s = 30, skills = { sales = 1 } }, { after_s = 60, skills = {} }]
wrap_up_s = 5
wrap_up_max_s = 60
priority = 7
service_level_s = 30
max_wait_s = 600
max_length = 20
exit = { target = "ivr:main", priority = 9, set = { reason = "timeout" } }
overflow_after_s = 120
overflow = "queue:spill"
join_empty = false
leave_when_empty = true
sticky_wait_s = 10
entry_prompt = "hello"
music = "music"
announce_every_s = 45
callback_key = "#"

[[queues]]
name = "spill"

[ivr.main]
prompt = "hello"
options = { "1" = "queue:sales", "*" = { target = "user:1002", priority = 3 }, "0" = "hangup" }
timeout_s = 7
retries = 1
invalid_prompt = "hello"
failure = "queue:spill"
hours = "office"
closed = "hangup"
closed_prompt = "hello"

[ivr.acct]
prompt = "hello"
collect = { key = "account", min = 4, max = 8, terminator = "", then = "queue:sales" }

[hours.office]
utc_offset = "-05:30"
open = ["mon-fri 08:00-18:00", "sat,sun 10:00-14:00", "fri-mon 22:00-06:00", "sun 00:00-24:00"]
closed_dates = ["2028-02-29", 2026-12-25]

[dialplan]
"200" = "queue:sales"
"300" = { target = "ivr:main", set = { lang = "en" } }
"##;

    #[test]
    fn good_file_fills_every_section() {
        let cc = ok(GOOD).contact;
        assert!(!cc.acd.auto_login);
        assert_eq!(cc.acd.ring_timeout, Duration::from_secs(20));
        assert_eq!(cc.acd.max_no_answer, 0);
        assert_eq!(cc.acd.sticky_days, 7);
        assert_eq!(cc.acd.features.not_ready, "*84");
        assert_eq!(cc.agents.len(), 2);
        assert_eq!(
            cc.agent("1001").unwrap().skills,
            [("sales".into(), 3), ("english".into(), 5)]
        );
        assert!(cc.agent("1002").unwrap().skills.is_empty());

        let q = cc.queue("sales").unwrap();
        assert_eq!(q.strategy, Strategy::RingAll);
        assert_eq!(q.members, ["1001", "1002"]);
        assert_eq!(q.skills, [("sales".into(), 2)]);
        assert_eq!(
            q.relax,
            [
                RelaxStep {
                    after: Duration::from_secs(30),
                    skills: vec![("sales".into(), 1)]
                },
                RelaxStep {
                    after: Duration::from_secs(60),
                    skills: vec![]
                },
            ]
        );
        assert_eq!(q.wrap_up, Duration::from_secs(5));
        assert_eq!(q.wrap_up_max, Duration::from_secs(60));
        assert_eq!(q.priority, 7);
        assert_eq!(q.service_level, Duration::from_secs(30));
        assert_eq!(q.max_wait, Some(Duration::from_secs(600)));
        assert_eq!(q.max_length, Some(20));
        assert_eq!(
            q.exit,
            Route {
                target: Target::Menu("main".into()),
                priority: Some(9),
                set: vec![("reason".into(), "timeout".into())],
            }
        );
        assert_eq!(
            q.overflow,
            Some((
                Duration::from_secs(120),
                Route::to(Target::Queue("spill".into()))
            ))
        );
        assert!(!q.join_empty);
        assert!(q.leave_when_empty);
        assert_eq!(q.sticky_wait, Duration::from_secs(10));
        assert_eq!(q.entry_prompt.as_deref(), Some("hello"));
        assert_eq!(q.music.as_deref(), Some("music"));
        assert_eq!(q.announce_every, Some(Duration::from_secs(45)));
        assert_eq!(q.callback_key, Some('#'));
        assert_eq!(cc.queue("spill"), Some(&QueueConfig::named("spill")));

        let main = cc.menu("main").unwrap();
        assert_eq!(main.collect, Collect::Choice);
        assert_eq!(
            main.options,
            [
                ('1', Route::to(Target::Queue("sales".into()))),
                (
                    '*',
                    Route {
                        target: Target::User("1002".into()),
                        priority: Some(3),
                        set: vec![],
                    }
                ),
                ('0', Route::to(Target::Hangup)),
            ]
        );
        assert_eq!(main.timeout, Duration::from_secs(7));
        assert_eq!(main.retries, 1);
        assert_eq!(main.invalid_prompt.as_deref(), Some("hello"));
        assert_eq!(main.failure, Route::to(Target::Queue("spill".into())));
        assert_eq!(main.hours.as_deref(), Some("office"));
        assert_eq!(main.closed_prompt.as_deref(), Some("hello"));
        assert_eq!(
            cc.menu("acct").unwrap().collect,
            Collect::Digits {
                key: "account".into(),
                min: 4,
                max: 8,
                terminator: None,
                then: Route::to(Target::Queue("sales".into())),
            }
        );

        let h = cc.hours_named("office").unwrap();
        assert_eq!(h.utc_offset_min, -330);
        assert_eq!(
            h.windows,
            [
                Window {
                    days: 0b001_1111,
                    open_min: 480,
                    close_min: 1080
                },
                Window {
                    days: 0b110_0000,
                    open_min: 600,
                    close_min: 840
                },
                Window {
                    days: 0b111_0001,
                    open_min: 1320,
                    close_min: 360
                },
                Window {
                    days: 0b100_0000,
                    open_min: 0,
                    close_min: 1440
                },
            ]
        );
        assert_eq!(h.closed_dates, [(2028, 2, 29), (2026, 12, 25)]);
        assert_eq!(
            cc.route("300").unwrap().set,
            [("lang".to_owned(), "en".to_owned())]
        );
    }

    #[test]
    fn absent_sections_give_the_defaults() {
        let cc = ok("").contact;
        assert_eq!(cc, ContactCenter::default());
        let menu = ok("[ivr.m]\nprompt = \"hello\"\noptions = { \"1\" = \"hangup\" }\n")
            .contact
            .menus;
        assert_eq!(
            menu,
            [MenuConfig {
                options: vec![('1', Route::to(Target::Hangup))],
                ..MenuConfig::new("m", "hello")
            }]
        );
    }

    #[test]
    fn unknown_names_are_refused_where_they_are_written() {
        let text = "[[agents]]\nid = \"1003\"\n\n[[agents]]\nid = \"1001\"\n\n[[queues]]\nname = \"q\"\nmembers = [\"1001\", \"1099\"]\nexit = \"queue:nope\"\nentry_prompt = \"welcome\"\n\n[ivr.m]\nprompt = \"hello\"\noptions = { \"1\" = \"ivr:other\", \"2\" = { target = \"user:1005\" } }\nhours = \"office\"\n\n[dialplan]\n\"200\" = \"queue:q\"\n";
        assert_eq!(
            problems(text),
            [
                "cc.toml:13: agents[0].id: no user \"1003\" (expected the id of a [[users]] entry)",
                "cc.toml:20: queues[0].members[1]: no agent \"1099\" (expected the id of an [[agents]] entry)",
                "cc.toml:21: queues[0].exit: no queue \"nope\" (expected the name of a [[queues]] entry)",
                "cc.toml:22: queues[0].entry_prompt: no prompt \"welcome\" (expected a [prompts] entry)",
                "cc.toml:26: ivr.m.options.1: no menu \"other\" (expected an [ivr.NAME] menu)",
                "cc.toml:26: ivr.m.options.2.target: no user \"1005\" (expected the id of a [[users]] entry)",
                "cc.toml:27: ivr.m.hours: no hours \"office\" (expected an [hours.NAME] entry)",
            ]
        );
    }

    #[test]
    fn queue_values_are_checked() {
        let text = "[[agents]]\nid = \"1001\"\n\n[[queues]]\nname = \"q\"\nstrategy = \"fastest\"\nmembers = [\"1001\", \"1001\"]\nskills = { sales = 6 }\nrelax = [{ after_s = 30 }, { after_s = 30 }]\nwrap_up_s = 60\nwrap_up_max_s = 30\npriority = 256\ncallback_key = \"**\"\noverflow_after_s = 10\ncolour = \"red\"\n\n[[queues]]\nname = \"q\"\noverflow = \"hangup\"\n\n[[queues]]\nstrategy = \"linear\"\n";
        assert_eq!(
            problems(text),
            [
                "cc.toml:17: queues[0].strategy: \"fastest\" is not a strategy (expected \"longest-idle\", \"round-robin\", \"fewest-calls\", \"least-talk-time\", \"ring-all\", \"random\" or \"linear\")",
                "cc.toml:18: queues[0].members[1]: agent \"1001\" is already queues[0].members[0] (expected each member once)",
                "cc.toml:19: queues[0].skills.sales: 6 is out of range (expected 1..=5)",
                "cc.toml:20: queues[0].relax[1].after_s: 30 is not after queues[0].relax[0].after_s (30) (expected increasing after_s)",
                "cc.toml:22: queues[0].wrap_up_max_s: 30 is below wrap_up_s (60) (expected wrap_up_s <= wrap_up_max_s)",
                "cc.toml:23: queues[0].priority: 256 is out of range (expected 0..=255)",
                "cc.toml:24: queues[0].callback_key: \"**\" is not a DTMF key (expected one of 0-9, * or #, or \"\" for no callbacks)",
                "cc.toml:25: queues[0].overflow_after_s: set without overflow (expected both or neither)",
                "cc.toml:26: queues[0].colour: unknown key (expected one of: name, strategy, members, skills, relax, wrap_up_s, wrap_up_max_s, priority, service_level_s, max_wait_s, max_length, exit, overflow_after_s, overflow, join_empty, leave_when_empty, sticky_wait_s, entry_prompt, music, announce_every_s, callback_key)",
                "cc.toml:29: queues[1].name: queue name \"q\" is already used by queues[0] (expected unique names)",
                "cc.toml:30: queues[1].overflow: set without overflow_after_s (expected both or neither)",
                "cc.toml:32: queues[2].name: missing (expected a queue name such as \"support\")",
            ]
        );
    }

    #[test]
    fn agents_are_unique_users_with_skill_levels() {
        let text = "[[agents]]\nid = \"1001\"\nskills = { sales = 0, \"two words\" = 2 }\n\n[[agents]]\nid = \"1001\"\n\n[[agents]]\nskills = \"all\"\n";
        assert_eq!(
            problems(text),
            [
                "cc.toml:14: agents[0].skills.sales: 0 is out of range (expected 1..=5)",
                "cc.toml:14: agents[0].skills.two words: \"two words\" is not a skill name (expected 1 to 32 ASCII letters, digits, '_' or '-')",
                "cc.toml:17: agents[1].id: agent \"1001\" is already agents[0] (expected each agent once)",
                "cc.toml:19: agents[2].id: missing (expected the id of a [[users]] entry, e.g. \"1001\")",
                "cc.toml:20: agents[2].skills: expected a table of skill = level (1..=5), e.g. { sales = 3 }, found a string (\"all\")",
            ]
        );
    }

    #[test]
    fn menus_need_a_prompt_and_options_or_collect() {
        let text = "[ivr.a]\noptions = { \"12\" = \"hangup\", \"3\" = \"voicemail\" }\ncollect = { key = \"x\", then = \"hangup\" }\n\n[ivr.b]\nprompt = \"hello\"\nclosed_prompt = \"hello\"\n\n[ivr.c]\nprompt = \"hello\"\ncollect = { key = \"acc ount\", min = 9, max = 4, terminator = \"1\" }\n";
        assert_eq!(
            problems(text),
            [
                "cc.toml:12: ivr.a.prompt: missing (expected a [prompts] entry played on entry)",
                "cc.toml:13: ivr.a.options.12: \"12\" is not a DTMF key (expected one of 0-9, * or #)",
                "cc.toml:13: ivr.a.options.3: \"voicemail\" is not a target (expected \"queue:NAME\", \"user:ID\", \"ivr:NAME\" or \"hangup\")",
                "cc.toml:14: ivr.a.collect: set together with options (expected options for a one-key choice, or collect for digits, not both)",
                "cc.toml:16: ivr.b.options: missing (expected options = { \"1\" = \"queue:NAME\", ... }, or collect = { ... } to collect digits)",
                "cc.toml:18: ivr.b.closed_prompt: set without hours (expected hours = \"NAME\" too: the menu is never closed without it)",
                "cc.toml:22: ivr.c.collect.key: \"acc ount\" is not a data key (expected 1 to 32 ASCII letters, digits, '_' or '-')",
                "cc.toml:22: ivr.c.collect.max: 4 is below min (9) (expected min <= max)",
                "cc.toml:22: ivr.c.collect.terminator: \"1\" is not a terminator (expected \"#\", \"*\" or \"\" for none)",
                "cc.toml:22: ivr.c.collect.then: missing (expected a target such as \"queue:support\")",
            ]
        );
    }

    #[test]
    fn hours_values_are_checked() {
        let text = "[hours.h]\nutc_offset = \"+15:00\"\nopen = [\"mon-fri 8:00-18:00\", \"xyz 08:00-09:00\", \"sat 09:00-09:00\", \"sun 00:00-24:00\"]\nclosed_dates = [\"2027-02-29\", \"2026-13-01\", 5]\n";
        assert_eq!(
            problems(text),
            [
                "cc.toml:13: hours.h.utc_offset: \"+15:00\" is not a UTC offset (expected \"+HH:MM\" or \"-HH:MM\" within 14 hours, e.g. \"+09:00\")",
                format!("cc.toml:14: hours.h.open[0]: \"mon-fri 8:00-18:00\" is not an opening window ({WINDOW_EXPECTED})").as_str(),
                format!("cc.toml:14: hours.h.open[1]: \"xyz 08:00-09:00\" is not an opening window ({WINDOW_EXPECTED})").as_str(),
                "cc.toml:14: hours.h.open[2]: \"sat 09:00-09:00\" opens and closes at the same minute (expected a close after the open, or before it for overnight)",
                "cc.toml:15: hours.h.closed_dates[0]: \"2027-02-29\" is not a date (expected \"YYYY-MM-DD\", e.g. \"2026-12-25\")",
                "cc.toml:15: hours.h.closed_dates[1]: \"2026-13-01\" is not a date (expected \"YYYY-MM-DD\", e.g. \"2026-12-25\")",
                "cc.toml:15: hours.h.closed_dates[2]: expected a \"YYYY-MM-DD\" date, found an integer (5)",
            ]
        );
    }

    #[test]
    fn dialplan_numbers_must_not_be_users_or_feature_codes() {
        let text = "[acd.feature_codes]\nlogin = \"*71\"\nlogout = \"*71\"\nready = \"73a\"\n\n[dialplan]\n\"1001\" = \"hangup\"\n\"*74\" = \"hangup\"\n\"2 0\" = \"hangup\"\n\"201\" = 5\n";
        let got = problems(text);
        assert_eq!(
            got[..3],
            [
                "cc.toml:14: acd.feature_codes.logout: \"*71\" is also acd.feature_codes.login (expected a different code for each)",
                "cc.toml:15: acd.feature_codes.ready: \"73a\" is not a feature code (expected 1 to 16 of 0-9, * and #, e.g. \"*71\")",
                "cc.toml:18: dialplan.1001: \"1001\" is a [[users]] id (expected a number no user has: dialling a user's id rings their phones)",
            ]
        );
        assert_eq!(
            got[3],
            "cc.toml:19: dialplan.*74: \"*74\" is acd.feature_codes.not_ready (expected a number that is not a feature code)"
        );
        assert!(got[4].starts_with("cc.toml:20: dialplan.2 0: "), "{got:?}");
        assert_eq!(
            got[5],
            format!("cc.toml:21: dialplan.201: expected {ROUTE_EXPECTED}, found an integer (5)")
        );
        assert_eq!(got.len(), 6, "{got:?}");
    }

    #[test]
    fn sections_of_the_wrong_shape_are_refused() {
        let text = "agents = 1\nqueues = { name = \"q\" }\nivr = []\nhours = \"x\"\ndialplan = []\nacd = 2\n";
        let got: Vec<String> = match parse("cc.toml", text, &[]) {
            Ok(_) => Vec::new(),
            Err(e) => e.0.iter().map(ToString::to_string).collect(),
        };
        assert_eq!(
            got,
            [
                "cc.toml:1: agents: expected an array of tables ([[agents]] sections), found an integer (1)",
                "cc.toml:2: queues: expected an array of tables ([[queues]] sections), found a table",
                "cc.toml:3: ivr: expected a table of [ivr.NAME] entries, found an array",
                "cc.toml:4: hours: expected a table of [hours.NAME] entries, found a string (\"x\")",
                "cc.toml:5: dialplan: expected a table of \"NUMBER\" = target entries, found an array",
                "cc.toml:6: acd: expected a table, found an integer (2)",
            ]
        );
    }

    #[test]
    fn window_and_date_parsers() {
        assert_eq!(
            window("sat-sun 09:30-13:15"),
            Ok(Window {
                days: 0b110_0000,
                open_min: 570,
                close_min: 795
            })
        );
        assert!(window("mon 24:00-01:00").is_err());
        assert!(window("mon 09:00-10:60").is_err());
        assert!(window("mon,  09:00-10:00").is_err());
        assert_eq!(date("2000-02-29"), Some((2000, 2, 29)));
        assert_eq!(date("1900-02-29"), None);
        assert_eq!(date("2026-04-31"), None);
        assert_eq!(utc_offset("+00:00"), Some(0));
        assert_eq!(utc_offset("+14:00"), Some(840));
        assert_eq!(utc_offset("09:00"), None);
        assert_eq!(utc_offset("+09:60"), None);
    }
}
