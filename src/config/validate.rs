//! The typed walk: checks the untyped tree section by section against the
//! schema (types, ranges, unknown keys, cross-key and cross-section rules) and
//! builds a [`Config`], collecting every problem rather than stopping at the
//! first. A value with a problem falls back to its default so the walk can go
//! on; the config is only returned when no problem was found.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::tree::{self, Entry, Kind, Node, Origin};
use super::types::{self, DigestAlgorithm, ListenAddr, PortRange, Transport};
use super::validate_contact;
use super::{
    CallsConfig, Config, ConfigErrors, ConfigProblem, Cores, CrmConfig, CrmLookupConfig,
    CrmWebhookConfig, CtiConfig, CtiScope, CtiToken, DriverChoice, LookupFields, MediaConfig,
    NodeConfig, OVERRIDE_LABEL, PromptConfig, RecordingConfig, RecordingMode, RegistrarConfig,
    ShellConfig, SipConfig, UserConfig,
};

/// Largest CPU id accepted in `node.cores` (glibc's `cpu_set_t` holds 1024).
const MAX_CPU_ID: i64 = 1023;

/// Longest `[prompts]` name.
const MAX_PROMPT_NAME: usize = 32;

/// Collects problems, turning origins into file/line.
pub(super) struct Problems<'a> {
    file: &'a str,
    list: Vec<ConfigProblem>,
}

impl Problems<'_> {
    /// The file label and line a value from `origin` is reported at.
    fn locate(&self, origin: Origin) -> (String, Option<usize>) {
        match origin {
            Origin::File(line) => (self.file.to_owned(), line),
            Origin::Set => (OVERRIDE_LABEL.to_owned(), None),
        }
    }

    pub(super) fn push(&mut self, origin: Origin, key: &str, message: impl Into<String>) {
        let (file, line) = self.locate(origin);
        self.list.push(ConfigProblem {
            file,
            line,
            key: key.to_owned(),
            message: message.into(),
        });
    }

    /// Whether a problem was already found at `key` or inside it; cross-key
    /// rules skip keys whose own value was refused (it fell back to its
    /// default, which would make the rule's message misleading).
    pub(super) fn has(&self, key: &str) -> bool {
        self.list.iter().any(|p| {
            p.key
                .strip_prefix(key)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']))
        })
    }
}

/// Origin of a default value (the key is not written anywhere).
pub(super) const DEFAULTED: Origin = Origin::File(None);

pub(super) fn parse(file: &str, text: &str, overrides: &[String]) -> Result<Config, ConfigErrors> {
    let mut p = Problems {
        file,
        list: Vec::new(),
    };
    let root = match tree::parse_document(text) {
        Ok(root) => Some(root),
        Err((line, message)) => {
            p.push(
                Origin::File(line),
                "",
                format!("TOML syntax error: {message}"),
            );
            None
        }
    };
    let mut parsed = Vec::new();
    let mut set_keys = Vec::new();
    for arg in overrides {
        match tree::parse_override(arg) {
            Ok(ov) => {
                set_keys.push(ov.key.clone());
                parsed.push(ov);
            }
            Err((key, e)) => {
                p.push(Origin::Set, &key, e.to_string());
                set_keys.push(key);
            }
        }
    }
    let Some(mut root) = root else {
        return Err(ConfigErrors(sorted(p.list, &set_keys)));
    };
    for ov in &parsed {
        if let Err(e) = tree::apply_override(&mut root, ov) {
            p.push(Origin::Set, &ov.key, e.to_string());
        }
    }
    let config = build(&mut p, &root);
    if p.list.is_empty() {
        Ok(config)
    } else {
        Err(ConfigErrors(sorted(p.list, &set_keys)))
    }
}

/// File problems in line order, then those at keys not written in the file,
/// then override problems in the order of the `--set` arguments.
fn sorted(mut list: Vec<ConfigProblem>, set_keys: &[String]) -> Vec<ConfigProblem> {
    let set_rank = |key: &str| {
        set_keys
            .iter()
            .position(|k| {
                key.strip_prefix(k.as_str())
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']))
            })
            .unwrap_or(set_keys.len())
    };
    list.sort_by_key(|p| match (p.file == OVERRIDE_LABEL, p.line) {
        (false, Some(line)) => (0, line),
        (false, None) => (1, 0),
        (true, _) => (2, set_rank(&p.key)),
    });
    list
}

fn build(p: &mut Problems, root: &Node) -> Config {
    let mut top = Section::open(
        p,
        "",
        Some(root),
        &[
            "node",
            "shell",
            "sip",
            "registrar",
            "calls",
            "media",
            "recording",
            "cti",
            "crm",
            "users",
            "prompts",
            "acd",
            "agents",
            "queues",
            "ivr",
            "hours",
            "dialplan",
        ],
    );
    let node = node_section(p, top.take("node"));
    let shell = shell_section(p, top.take("shell"));
    let (sip, listen_valid) = sip_section(p, top.take("sip"));
    let registrar = registrar_section(p, top.take("registrar"));
    let calls = calls_section(p, top.take("calls"));
    let media = media_section(p, top.take("media"));
    let recording = recording_section(p, top.take("recording"));
    let cti = cti_section(p, top.take("cti"));
    let crm = crm_section(p, top.take("crm"));
    let users = users_array(p, top.take("users"));
    let prompts = prompts_table(p, top.take("prompts"));
    let contact = validate_contact::read(p, root, &mut top);
    top.finish(p);
    let config = Config {
        node,
        shell,
        sip,
        registrar,
        calls,
        media,
        recording,
        cti,
        crm,
        users,
        prompts,
        contact,
    };
    check_port_clashes(p, root, &config, &listen_valid);
    check_hold_music(p, root, &config);
    config
}

/// A table being read: remembers which keys were taken so the rest can be
/// reported as unknown.
pub(super) struct Section<'n> {
    path: String,
    pub(super) table_origin: Origin,
    entries: &'n [Entry],
    used: Vec<bool>,
    known: &'static [&'static str],
}

impl<'n> Section<'n> {
    /// Opens `node` (absent = all defaults) as the table at `path`.
    pub(super) fn open(
        p: &mut Problems,
        path: &str,
        node: Option<&'n Node>,
        known: &'static [&'static str],
    ) -> Section<'n> {
        let (entries, origin): (&'n [Entry], Origin) = match node {
            None => (&[], DEFAULTED),
            Some(n) => match &n.kind {
                Kind::Table(entries) => (entries, n.origin),
                other => {
                    p.push(
                        n.origin,
                        path,
                        format!("expected a table, found {}", other.describe()),
                    );
                    (&[], n.origin)
                }
            },
        };
        Section {
            path: path.to_owned(),
            table_origin: origin,
            entries,
            used: vec![false; entries.len()],
            known,
        }
    }

    pub(super) fn key(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    pub(super) fn take(&mut self, key: &str) -> Option<&'n Node> {
        let i = self.entries.iter().position(|e| e.key == key)?;
        self.used[i] = true;
        Some(&self.entries[i].node)
    }

    /// Where `key` is written, when it is.
    pub(super) fn origin(&self, key: &str) -> Option<Origin> {
        self.entries
            .iter()
            .find(|e| e.key == key)
            .map(|e| e.node.origin)
    }

    /// Reports every key that was not taken.
    pub(super) fn finish(self, p: &mut Problems) {
        for (entry, used) in self.entries.iter().zip(&self.used) {
            if *used {
                continue;
            }
            let known = self.known.join(", ");
            let message = match closest(&entry.key, self.known) {
                Some(near) => {
                    format!("unknown key, did you mean {near:?}? (expected one of: {known})")
                }
                None => format!("unknown key (expected one of: {known})"),
            };
            p.push(entry.key_origin, &self.key(&entry.key), message);
        }
    }

    pub(super) fn int(&mut self, p: &mut Problems, key: &str, lo: i64, hi: i64) -> Option<i64> {
        let node = self.take(key)?;
        int(p, &self.key(key), node, lo, hi)
    }

    pub(super) fn count<T: TryFrom<i64>>(
        &mut self,
        p: &mut Problems,
        key: &str,
        lo: i64,
        hi: i64,
        default: T,
    ) -> T {
        self.int(p, key, lo, hi)
            .and_then(|v| T::try_from(v).ok())
            .unwrap_or(default)
    }

    pub(super) fn millis(
        &mut self,
        p: &mut Problems,
        key: &str,
        lo: i64,
        hi: i64,
        default: Duration,
    ) -> Duration {
        self.int(p, key, lo, hi)
            .and_then(|v| u64::try_from(v).ok())
            .map_or(default, Duration::from_millis)
    }

    pub(super) fn secs(
        &mut self,
        p: &mut Problems,
        key: &str,
        lo: i64,
        hi: i64,
        default: Duration,
    ) -> Duration {
        self.int(p, key, lo, hi)
            .and_then(|v| u64::try_from(v).ok())
            .map_or(default, Duration::from_secs)
    }

    pub(super) fn boolean(&mut self, p: &mut Problems, key: &str) -> Option<bool> {
        let node = self.take(key)?;
        match node.kind {
            Kind::Bool(b) => Some(b),
            _ => {
                type_error(p, &self.key(key), node, "true or false");
                None
            }
        }
    }

    pub(super) fn string(&mut self, p: &mut Problems, key: &str) -> Option<(&'n str, Origin)> {
        let node = self.take(key)?;
        string(p, &self.key(key), node).map(|s| (s, node.origin))
    }

    /// Requires `self[a] <= self[b]`, blaming whichever of the two is written
    /// (`b` when both are).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn ordered(
        &self,
        p: &mut Problems,
        a: &str,
        av: Duration,
        b: &str,
        bv: Duration,
        rule: &str,
        unit: fn(Duration) -> u128,
    ) {
        if av <= bv || p.has(&self.key(a)) || p.has(&self.key(b)) {
            return;
        }
        let (au, bu) = (unit(av), unit(bv));
        match (self.origin(a), self.origin(b)) {
            (Some(oa), None) => p.push(
                oa,
                &self.key(a),
                format!("{au} is above {b} ({bu}) (expected {rule})"),
            ),
            (_, ob) => p.push(
                ob.unwrap_or(DEFAULTED),
                &self.key(b),
                format!("{bu} is below {a} ({au}) (expected {rule})"),
            ),
        }
    }
}

/// The known key that `key` most likely meant: the same name with its unit
/// suffix (`t1` for `t1_ms`), else one within edit distance 2.
fn closest(key: &str, known: &[&'static str]) -> Option<&'static str> {
    let with_unit = known.iter().find(|k| {
        k.strip_prefix(key)
            .is_some_and(|rest| rest.starts_with('_') && !rest[1..].contains('_'))
    });
    if let Some(k) = with_unit {
        return Some(k);
    }
    known
        .iter()
        .map(|k| (edit_distance(key, k), *k))
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

pub(super) fn type_error(p: &mut Problems, key: &str, node: &Node, expected: &str) {
    p.push(
        node.origin,
        key,
        format!("expected {expected}, found {}", node.kind.describe()),
    );
}

pub(super) fn int(p: &mut Problems, key: &str, node: &Node, lo: i64, hi: i64) -> Option<i64> {
    let Kind::Int(v) = node.kind else {
        type_error(p, key, node, "an integer");
        return None;
    };
    if !(lo..=hi).contains(&v) {
        p.push(
            node.origin,
            key,
            format!("{v} is out of range (expected {lo}..={hi})"),
        );
        return None;
    }
    Some(v)
}

pub(super) fn string<'n>(p: &mut Problems, key: &str, node: &'n Node) -> Option<&'n str> {
    match &node.kind {
        Kind::Str(s) => Some(s),
        _ => {
            type_error(p, key, node, "a string");
            None
        }
    }
}

/// The elements of an array of strings, each with its dotted key.
pub(super) fn strings<'n>(
    p: &mut Problems,
    key: &str,
    node: &'n Node,
) -> Option<Vec<(String, &'n str, Origin)>> {
    let Kind::Array(items) = &node.kind else {
        type_error(p, key, node, "an array of strings");
        return None;
    };
    let mut out = Vec::with_capacity(items.len());
    let mut ok = true;
    for (i, item) in items.iter().enumerate() {
        let item_key = format!("{key}[{i}]");
        match string(p, &item_key, item) {
            Some(s) => out.push((item_key, s, item.origin)),
            None => ok = false,
        }
    }
    ok.then_some(out)
}

fn node_section(p: &mut Problems, node: Option<&Node>) -> NodeConfig {
    let d = NodeConfig::default();
    let mut s = Section::open(p, "node", node, &["cores", "data_dir", "log"]);
    let cores = s
        .take("cores")
        .and_then(|n| cores(p, &s.key("cores"), n))
        .unwrap_or(d.cores);
    let data_dir = match s.string(p, "data_dir") {
        Some(("", origin)) => {
            p.push(
                origin,
                "node.data_dir",
                "empty path (expected a directory such as \"var\" or \"/var/lib/switchboard\")",
            );
            d.data_dir
        }
        Some((dir, _)) => PathBuf::from(dir),
        None => d.data_dir,
    };
    let log = match s.string(p, "log") {
        Some(("", origin)) => {
            p.push(
                origin,
                "node.log",
                "empty filter (expected a tracing filter such as \"info\" or \"debug,switchboard::sip=trace\")",
            );
            d.log
        }
        Some((log, _)) => log.to_owned(),
        None => d.log,
    };
    s.finish(p);
    NodeConfig {
        cores,
        data_dir,
        log,
    }
}

fn cores(p: &mut Problems, key: &str, node: &Node) -> Option<Cores> {
    const EXPECTED: &str = "\"all\" or an array of CPU ids like [0, 1]";
    match &node.kind {
        Kind::Str(s) if s == "all" => Some(Cores::All),
        Kind::Array(items) => {
            if items.is_empty() {
                p.push(
                    node.origin,
                    key,
                    format!("empty array (expected {EXPECTED})"),
                );
                return None;
            }
            let mut ids = Vec::with_capacity(items.len());
            let mut ok = true;
            for (i, item) in items.iter().enumerate() {
                let item_key = format!("{key}[{i}]");
                match int(p, &item_key, item, 0, MAX_CPU_ID).and_then(|v| usize::try_from(v).ok()) {
                    Some(id) if ids.contains(&id) => {
                        p.push(
                            item.origin,
                            &item_key,
                            format!("CPU {id} is listed twice (expected each CPU once)"),
                        );
                        ok = false;
                    }
                    Some(id) => ids.push(id),
                    None => ok = false,
                }
            }
            ok.then_some(Cores::List(ids))
        }
        _ => {
            type_error(p, key, node, EXPECTED);
            None
        }
    }
}

fn shell_section(p: &mut Problems, node: Option<&Node>) -> ShellConfig {
    let d = ShellConfig::default();
    let mut s = Section::open(
        p,
        "shell",
        node,
        &[
            "driver",
            "batch",
            "ring_entries",
            "mesh_capacity",
            "timer_tick_ms",
            "drain_timeout_s",
        ],
    );
    let driver = match s.string(p, "driver") {
        Some(("auto", _)) => DriverChoice::Auto,
        Some(("io_uring", _)) => DriverChoice::IoUring,
        Some(("epoll", _)) => DriverChoice::Epoll,
        Some((other, origin)) => {
            p.push(
                origin,
                "shell.driver",
                format!("{other:?} is not a driver (expected \"auto\", \"io_uring\" or \"epoll\")"),
            );
            d.driver
        }
        None => d.driver,
    };
    let batch = s.count(p, "batch", 1, 1024, d.batch);
    let ring_origin = s.origin("ring_entries");
    let ring_entries = s.count(p, "ring_entries", 16, 32768, d.ring_entries);
    if !ring_entries.is_power_of_two() {
        p.push(
            ring_origin.unwrap_or(DEFAULTED),
            "shell.ring_entries",
            format!("{ring_entries} is not a power of two (expected 16, 32, 64, ... 32768)"),
        );
    }
    let mesh_capacity = s.count(p, "mesh_capacity", 64, 1 << 20, d.mesh_capacity);
    let timer_tick = s.millis(p, "timer_tick_ms", 1, 100, d.timer_tick);
    let drain_timeout = s.secs(p, "drain_timeout_s", 0, 300, d.drain_timeout);
    s.finish(p);
    ShellConfig {
        driver,
        batch,
        ring_entries,
        mesh_capacity,
        timer_tick,
        drain_timeout,
    }
}

/// `[sip]`, plus the valid `sip.listen` entries with their indices (for the
/// port clash checks, which still run when some entries were refused).
fn sip_section(p: &mut Problems, node: Option<&Node>) -> (SipConfig, Vec<(usize, ListenAddr)>) {
    let d = SipConfig::default();
    let mut s = Section::open(
        p,
        "sip",
        node,
        &[
            "listen",
            "domain",
            "user_agent",
            "t1_ms",
            "t2_ms",
            "t4_ms",
            "max_message_bytes",
            "max_headers",
            "tcp_idle_timeout_s",
            "tcp_message_timeout_s",
            "tcp_max_connections",
        ],
    );
    let (listen, listen_valid) = match s.take("listen") {
        None => (
            d.listen.clone(),
            d.listen.iter().copied().enumerate().collect(),
        ),
        Some(n) => match listen(p, "sip.listen", n) {
            Some(valid) => (valid.iter().map(|(_, a)| *a).collect(), valid),
            None => (d.listen.clone(), Vec::new()),
        },
    };
    let domain = match s.string(p, "domain") {
        Some((domain, origin)) => match types::check_host_name(domain) {
            Ok(()) => domain.to_owned(),
            Err(e) => {
                p.push(origin, "sip.domain", e.to_string());
                d.domain
            }
        },
        None => d.domain,
    };
    let user_agent = match s.string(p, "user_agent") {
        Some((ua, origin)) if ua.chars().any(char::is_control) => {
            p.push(
                origin,
                "sip.user_agent",
                format!("{ua:?} contains a control character (expected printable text: it is sent as a header value)"),
            );
            d.user_agent
        }
        Some((ua, _)) => ua.to_owned(),
        None => d.user_agent,
    };
    let t1 = s.millis(p, "t1_ms", 1, 10_000, d.t1);
    let t2 = s.millis(p, "t2_ms", 1, 60_000, d.t2);
    let t4 = s.millis(p, "t4_ms", 1, 60_000, d.t4);
    s.ordered(p, "t1_ms", t1, "t2_ms", t2, "t1_ms <= t2_ms", |d| {
        d.as_millis()
    });
    let max_message_bytes = s.count(p, "max_message_bytes", 1024, 1 << 20, d.max_message_bytes);
    let max_headers = s.count(p, "max_headers", 16, 10_000, d.max_headers);
    let tcp_idle_timeout = s.secs(p, "tcp_idle_timeout_s", 1, 86_400, d.tcp_idle_timeout);
    let tcp_message_timeout = s.secs(p, "tcp_message_timeout_s", 1, 3600, d.tcp_message_timeout);
    let tcp_max_connections = s.count(p, "tcp_max_connections", 1, 1 << 20, d.tcp_max_connections);
    s.finish(p);
    let sip = SipConfig {
        listen,
        domain,
        user_agent,
        t1,
        t2,
        t4,
        max_message_bytes,
        max_headers,
        tcp_idle_timeout,
        tcp_message_timeout,
        tcp_max_connections,
    };
    (sip, listen_valid)
}

/// Whether sockets bound on `a` and `b` (same port) would collide: the same
/// IP, or a wildcard of the same family, or `::` (dual-stack) against anything.
fn ips_overlap(a: IpAddr, b: IpAddr) -> bool {
    let dual = |ip: IpAddr| matches!(ip, IpAddr::V6(v6) if v6.is_unspecified());
    a == b
        || dual(a)
        || dual(b)
        || (a.is_ipv4() == b.is_ipv4() && (a.is_unspecified() || b.is_unspecified()))
}

/// The valid entries of `sip.listen` with their indices, after reporting the
/// bad ones; `None` when the value is unusable as a whole.
fn listen(p: &mut Problems, key: &str, node: &Node) -> Option<Vec<(usize, ListenAddr)>> {
    let Kind::Array(items) = &node.kind else {
        type_error(p, key, node, "an array of strings");
        return None;
    };
    if items.is_empty() {
        p.push(
            node.origin,
            key,
            "empty array (expected at least one \"udp:IP:PORT\" or \"tcp:IP:PORT\")",
        );
        return None;
    }
    let mut seen: Vec<(usize, ListenAddr)> = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let item_key = format!("{key}[{i}]");
        let Some(text) = string(p, &item_key, item) else {
            continue;
        };
        let addr: ListenAddr = match text.parse() {
            Ok(addr) => addr,
            Err(e) => {
                p.push(item.origin, &item_key, e.to_string());
                continue;
            }
        };
        let clash = seen.iter().find(|(_, other)| {
            other.transport == addr.transport
                && other.addr.port() == addr.addr.port()
                && ips_overlap(other.addr.ip(), addr.addr.ip())
        });
        if let Some((j, other)) = clash {
            let what = if *other == addr {
                "duplicates"
            } else {
                "overlaps"
            };
            p.push(
                item.origin,
                &item_key,
                format!("\"{addr}\" {what} {key}[{j}] (\"{other}\") (expected each socket once)"),
            );
            continue;
        }
        seen.push((i, addr));
    }
    Some(seen)
}

fn registrar_section(p: &mut Problems, node: Option<&Node>) -> RegistrarConfig {
    let d = RegistrarConfig::default();
    let mut s = Section::open(
        p,
        "registrar",
        node,
        &[
            "min_expires_s",
            "max_expires_s",
            "default_expires_s",
            "max_contacts",
            "nonce_lifetime_s",
            "digest_algorithms",
            "md5_only_user_agents",
        ],
    );
    let min_expires = s.secs(p, "min_expires_s", 1, 86_400, d.min_expires);
    let max_expires = s.secs(p, "max_expires_s", 1, 604_800, d.max_expires);
    let default_expires = s.secs(p, "default_expires_s", 1, 604_800, d.default_expires);
    let rule = "min_expires_s <= default_expires_s <= max_expires_s";
    let secs = |d: Duration| u128::from(d.as_secs());
    s.ordered(
        p,
        "min_expires_s",
        min_expires,
        "default_expires_s",
        default_expires,
        rule,
        secs,
    );
    s.ordered(
        p,
        "default_expires_s",
        default_expires,
        "max_expires_s",
        max_expires,
        rule,
        secs,
    );
    let max_contacts = s.count(p, "max_contacts", 1, 100, d.max_contacts);
    let nonce_lifetime = s.secs(p, "nonce_lifetime_s", 1, 86_400, d.nonce_lifetime);
    let digest_algorithms = s
        .take("digest_algorithms")
        .and_then(|n| digest_algorithms(p, "registrar.digest_algorithms", n))
        .unwrap_or(d.digest_algorithms);
    let md5_only_user_agents = s
        .take("md5_only_user_agents")
        .and_then(|n| user_agent_patterns(p, "registrar.md5_only_user_agents", n))
        .unwrap_or(d.md5_only_user_agents);
    s.finish(p);
    RegistrarConfig {
        min_expires,
        max_expires,
        default_expires,
        max_contacts,
        nonce_lifetime,
        digest_algorithms,
        md5_only_user_agents,
    }
}

fn user_agent_patterns(p: &mut Problems, key: &str, node: &Node) -> Option<Vec<String>> {
    let items = strings(p, key, node)?;
    let mut ok = true;
    let mut out = Vec::with_capacity(items.len());
    for (item_key, text, origin) in items {
        if text.trim().is_empty() || text.chars().any(char::is_control) {
            p.push(
                origin,
                &item_key,
                "expected a non-empty User-Agent fragment without control characters",
            );
            ok = false;
        } else {
            out.push(text.to_string());
        }
    }
    ok.then_some(out)
}

fn digest_algorithms(p: &mut Problems, key: &str, node: &Node) -> Option<Vec<DigestAlgorithm>> {
    let items = strings(p, key, node)?;
    if items.is_empty() {
        p.push(
            node.origin,
            key,
            "empty array (expected one or more of \"SHA-256\", \"MD5\")",
        );
        return None;
    }
    let mut ok = true;
    let mut out = Vec::with_capacity(items.len());
    for (item_key, text, origin) in items {
        match text.parse::<DigestAlgorithm>() {
            Ok(alg) if out.contains(&alg) => {
                p.push(
                    origin,
                    &item_key,
                    format!("{alg} is listed twice (expected each algorithm once)"),
                );
                ok = false;
            }
            Ok(alg) => out.push(alg),
            Err(e) => {
                p.push(origin, &item_key, e.to_string());
                ok = false;
            }
        }
    }
    ok.then_some(out)
}

fn calls_section(p: &mut Problems, node: Option<&Node>) -> CallsConfig {
    let d = CallsConfig::default();
    let mut s = Section::open(
        p,
        "calls",
        node,
        &[
            "no_answer_timeout_s",
            "max_duration_s",
            "session_expires_s",
            "min_se_s",
        ],
    );
    let no_answer_timeout = s.secs(p, "no_answer_timeout_s", 1, 3_600, d.no_answer_timeout);
    let max_duration = s.secs(p, "max_duration_s", 60, 7 * 86_400, d.max_duration);
    // RFC 4028 §4: Min-SE is at least 90 s.
    let min_se = s.secs(p, "min_se_s", 90, 86_400, d.min_se);
    let session_expires = s.secs(p, "session_expires_s", 90, 86_400, d.session_expires);
    s.ordered(
        p,
        "min_se_s",
        min_se,
        "session_expires_s",
        session_expires,
        "min_se_s <= session_expires_s",
        |d: Duration| u128::from(d.as_secs()),
    );
    s.finish(p);
    CallsConfig {
        no_answer_timeout,
        max_duration,
        session_expires,
        min_se,
    }
}

fn media_section(p: &mut Problems, node: Option<&Node>) -> MediaConfig {
    let d = MediaConfig::default();
    let mut s = Section::open(
        p,
        "media",
        node,
        &[
            "rtp_ports",
            "ip",
            "rtp_timeout_s",
            "hold_timeout_s",
            "transcode",
            "inband_dtmf",
            "hold_music",
        ],
    );
    let rtp_ports = match s.string(p, "rtp_ports") {
        Some((text, origin)) => text.parse::<PortRange>().unwrap_or_else(|e| {
            p.push(origin, "media.rtp_ports", e.to_string());
            d.rtp_ports
        }),
        None => d.rtp_ports,
    };
    let ip = match s.string(p, "ip") {
        Some(("", _)) | None => None,
        Some((text, origin)) => {
            match text.parse::<IpAddr>() {
                Ok(ip) if ip.is_unspecified() || ip.is_multicast() => {
                    p.push(origin, "media.ip", format!("{ip} cannot be sent to (expected the address peers reach the appliance at)"));
                    None
                }
                Ok(ip) => Some(ip),
                Err(_) => {
                    p.push(origin, "media.ip", format!("{text:?} is not an IP address (expected e.g. \"192.0.2.10\", or \"\" for the SIP address)"));
                    None
                }
            }
        }
    };
    let rtp_timeout = s.secs(p, "rtp_timeout_s", 5, 86_400, d.rtp_timeout);
    let hold_timeout = s.secs(p, "hold_timeout_s", 5, 7 * 86_400, d.hold_timeout);
    let transcode = s.boolean(p, "transcode").unwrap_or(d.transcode);
    let inband_dtmf = s.boolean(p, "inband_dtmf").unwrap_or(d.inband_dtmf);
    // Whether it names a `[prompts]` entry is checked once both are read
    // (`check_hold_music`).
    let hold_music = match s.string(p, "hold_music") {
        Some(("", _)) | None => d.hold_music,
        Some((name, _)) => Some(name.to_owned()),
    };
    s.finish(p);
    MediaConfig {
        rtp_ports,
        ip,
        rtp_timeout,
        hold_timeout,
        transcode,
        inband_dtmf,
        hold_music,
    }
}

fn recording_section(p: &mut Problems, node: Option<&Node>) -> RecordingConfig {
    let d = RecordingConfig::default();
    let mut s = Section::open(p, "recording", node, &["mode", "routes"]);
    let mode = match s.string(p, "mode") {
        Some(("all", _)) => RecordingMode::All,
        Some(("none", _)) => RecordingMode::None,
        Some(("routes", _)) => RecordingMode::Routes,
        Some((other, origin)) => {
            p.push(
                origin,
                "recording.mode",
                format!("{other:?} is not a mode (expected \"all\", \"none\" or \"routes\")"),
            );
            d.mode
        }
        None => d.mode,
    };
    let routes = s
        .take("routes")
        .and_then(|n| strings(p, "recording.routes", n))
        .map(|v| v.into_iter().map(|(_, r, _)| r.to_owned()).collect())
        .unwrap_or(d.routes);
    s.finish(p);
    RecordingConfig { mode, routes }
}

fn cti_section(p: &mut Problems, node: Option<&Node>) -> CtiConfig {
    let d = CtiConfig::default();
    let mut s = Section::open(
        p,
        "cti",
        node,
        &[
            "listen",
            "tls_cert",
            "tls_key",
            "max_message_bytes",
            "tokens",
        ],
    );
    let listen = match s.string(p, "listen") {
        Some((text, origin)) => types::parse_socket_addr(text).unwrap_or_else(|e| {
            p.push(origin, "cti.listen", e.to_string());
            d.listen
        }),
        None => d.listen,
    };
    let cert = s.string(p, "tls_cert");
    let key = s.string(p, "tls_key");
    let tls = match (cert, key) {
        (Some(("", _)) | None, Some(("", _)) | None) => None,
        (Some((c, _)), Some((k, _))) if !c.is_empty() && !k.is_empty() => {
            Some((PathBuf::from(c), PathBuf::from(k)))
        }
        (Some((_, origin)), _) | (_, Some((_, origin))) => {
            p.push(
                origin,
                "cti.tls_cert",
                "cti.tls_cert and cti.tls_key go together (expected both PEM file paths, or neither for plain HTTP)",
            );
            None
        }
    };
    let max_message_bytes = s.count(p, "max_message_bytes", 1024, 1 << 20, d.max_message_bytes);
    let tokens = cti_tokens(p, s.take("tokens"));
    s.finish(p);
    CtiConfig {
        listen,
        tls,
        max_message_bytes,
        tokens,
    }
}

fn cti_tokens(p: &mut Problems, node: Option<&Node>) -> Vec<CtiToken> {
    let Some(node) = node else {
        return Vec::new();
    };
    let Kind::Array(items) = &node.kind else {
        type_error(
            p,
            "cti.tokens",
            node,
            "an array of tables ([[cti.tokens]] sections)",
        );
        return Vec::new();
    };
    let mut tokens: Vec<CtiToken> = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let path = format!("cti.tokens[{i}]");
        let mut s = Section::open(p, &path, Some(item), &["token", "scope"]);
        let token = match s.string(p, "token") {
            Some((t, origin)) if t.len() < 8 || t.bytes().any(|b| !b.is_ascii_graphic()) => {
                p.push(
                    origin,
                    &s.key("token"),
                    "expected at least 8 printable characters without spaces",
                );
                None
            }
            Some((t, origin)) if tokens.iter().any(|k| k.token == t) => {
                p.push(
                    origin,
                    &s.key("token"),
                    "used by an earlier [[cti.tokens]] entry (expected unique tokens)",
                );
                None
            }
            Some((t, _)) => Some(t.to_owned()),
            None => {
                if s.origin("token").is_none() {
                    p.push(
                        s.table_origin,
                        &s.key("token"),
                        "missing (expected the bearer token)",
                    );
                }
                None
            }
        };
        let scope = match s.string(p, "scope") {
            Some((text, origin)) => {
                let scope = CtiScope::parse(text);
                if scope.is_none() {
                    p.push(
                        origin,
                        &s.key("scope"),
                        format!("{text:?} is not a scope (expected \"admin\", \"supervisor\" or \"agent:<agent id>\")"),
                    );
                }
                scope
            }
            None => {
                if s.origin("scope").is_none() {
                    p.push(
                        s.table_origin,
                        &s.key("scope"),
                        "missing (expected \"admin\", \"supervisor\" or \"agent:<agent id>\")",
                    );
                }
                None
            }
        };
        s.finish(p);
        if let (Some(token), Some(scope)) = (token, scope) {
            tokens.push(CtiToken { token, scope });
        }
    }
    tokens
}

fn http_url(p: &mut Problems, s: &mut Section, key: &str) -> Option<(String, Origin)> {
    let (url, origin) = s.string(p, key)?;
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"));
    if !url.is_empty() && rest.is_none_or(str::is_empty) {
        p.push(
            origin,
            &s.key(key),
            format!(
                "{url:?} is not an HTTP URL (expected \"\" or \"http://...\" / \"https://...\")"
            ),
        );
        return None;
    }
    Some((url.to_owned(), origin))
}

fn crm_section(p: &mut Problems, node: Option<&Node>) -> CrmConfig {
    let d = CrmConfig::default();
    let mut s = Section::open(p, "crm", node, &["directory", "lookup", "webhook"]);
    let directory = s
        .string(p, "directory")
        .map_or(d.directory, |(f, _)| PathBuf::from(f));

    let mut lookup = Section::open(
        p,
        "crm.lookup",
        s.take("lookup"),
        &["url", "timeout_ms", "cache_ttl_s", "fields"],
    );
    let lookup_url = http_url(p, &mut lookup, "url").map_or(d.lookup.url, |(u, _)| u);
    let timeout = lookup.millis(p, "timeout_ms", 10, 5000, d.lookup.timeout);
    let cache_ttl = lookup.secs(p, "cache_ttl_s", 0, 86_400, d.lookup.cache_ttl);
    let mut f = Section::open(
        p,
        "crm.lookup.fields",
        lookup.take("fields"),
        &["name", "account", "tier", "last_agent", "phone"],
    );
    let df = LookupFields::default();
    let mut field = |p: &mut Problems, key: &str, default: String| match f.string(p, key) {
        Some(("", origin)) => {
            p.push(
                origin,
                &format!("crm.lookup.fields.{key}"),
                "empty (expected a JSON field name such as \"name\" or \"contact.name\")",
            );
            default
        }
        Some((name, _)) => name.to_owned(),
        None => default,
    };
    let fields = LookupFields {
        name: field(p, "name", df.name),
        account: field(p, "account", df.account),
        tier: field(p, "tier", df.tier),
        last_agent: field(p, "last_agent", df.last_agent),
        phone: field(p, "phone", df.phone),
    };
    f.finish(p);
    lookup.finish(p);

    let mut hook = Section::open(
        p,
        "crm.webhook",
        s.take("webhook"),
        &["url", "secret", "max_attempts", "timeout_ms"],
    );
    let hook_url = http_url(p, &mut hook, "url").map_or(d.webhook.url, |(u, _)| u);
    let secret = match hook.string(p, "secret") {
        Some((secret, origin)) => {
            if secret.is_empty() && !hook_url.is_empty() {
                p.push(
                    origin,
                    "crm.webhook.secret",
                    "empty while crm.webhook.url is set (expected a non-empty HMAC-SHA256 key; the CRM checks X-Switchboard-Signature with it)",
                );
            }
            secret.to_owned()
        }
        None => d.webhook.secret,
    };
    let max_attempts = hook.count(p, "max_attempts", 1, 100, d.webhook.max_attempts);
    let hook_timeout = hook.millis(p, "timeout_ms", 100, 60_000, d.webhook.timeout);
    hook.finish(p);
    s.finish(p);
    CrmConfig {
        directory,
        lookup: CrmLookupConfig {
            url: lookup_url,
            timeout,
            cache_ttl,
            fields,
        },
        webhook: CrmWebhookConfig {
            url: hook_url,
            secret,
            max_attempts,
            timeout: hook_timeout,
        },
    }
}

fn users_array(p: &mut Problems, node: Option<&Node>) -> Vec<UserConfig> {
    let Some(node) = node else {
        return Vec::new();
    };
    let Kind::Array(items) = &node.kind else {
        type_error(p, "users", node, "an array of tables ([[users]] sections)");
        return Vec::new();
    };
    let mut users = Vec::with_capacity(items.len());
    let mut first_by_id: HashMap<String, String> = HashMap::new();
    for (i, item) in items.iter().enumerate() {
        let path = format!("users[{i}]");
        let mut s = Section::open(p, &path, Some(item), &["id", "password", "name"]);
        let id = match s.string(p, "id") {
            Some((id, origin)) => {
                if let Err(e) = types::check_user_id(id) {
                    p.push(origin, &s.key("id"), e.to_string());
                } else if let Some(first) = first_by_id.get(id) {
                    p.push(
                        origin,
                        &s.key("id"),
                        format!("user id {id:?} is already used by {first} (expected unique ids)"),
                    );
                } else {
                    first_by_id.insert(id.to_owned(), path.clone());
                }
                Some(id.to_owned())
            }
            None => {
                if s.origin("id").is_none() {
                    p.push(
                        s.table_origin,
                        &s.key("id"),
                        "missing (expected a SIP user id such as \"1001\")",
                    );
                }
                None
            }
        };
        let password = match s.string(p, "password") {
            Some(("", origin)) => {
                p.push(
                    origin,
                    &s.key("password"),
                    "empty password (expected a non-empty digest password)",
                );
                None
            }
            Some((pw, _)) => Some(pw.to_owned()),
            None => {
                if s.origin("password").is_none() {
                    p.push(
                        s.table_origin,
                        &s.key("password"),
                        "missing (expected a non-empty digest password)",
                    );
                }
                None
            }
        };
        let name = s
            .string(p, "name")
            .map(|(n, _)| n.to_owned())
            .unwrap_or_default();
        s.finish(p);
        if let (Some(id), Some(password)) = (id, password) {
            users.push(UserConfig { id, password, name });
        }
    }
    users
}

/// `[prompts]`: `name = "file.wav"` entries, in file order. The files are
/// read later (`media::prompts::load`); here only names and paths are checked.
fn prompts_table(p: &mut Problems, node: Option<&Node>) -> Vec<PromptConfig> {
    let Some(node) = node else {
        return Vec::new();
    };
    let Kind::Table(entries) = &node.kind else {
        type_error(p, "prompts", node, "a table of name = \"file.wav\" entries");
        return Vec::new();
    };
    let mut prompts = Vec::with_capacity(entries.len());
    for entry in entries {
        let key = format!("prompts.{}", entry.key);
        let name_ok = is_prompt_name(&entry.key);
        if !name_ok {
            p.push(
                entry.key_origin,
                &key,
                format!(
                    "{:?} is not a prompt name (expected 1 to {MAX_PROMPT_NAME} ASCII letters, digits, '_' or '-')",
                    entry.key
                ),
            );
        }
        let file = match &entry.node.kind {
            Kind::Str(file) if file.is_empty() => {
                p.push(
                    entry.node.origin,
                    &key,
                    "empty path (expected a WAV file such as \"prompts/welcome.wav\")",
                );
                continue;
            }
            Kind::Str(file) => file,
            _ => {
                type_error(p, &key, &entry.node, "a string naming a WAV file");
                continue;
            }
        };
        if name_ok {
            let (origin_file, line) = p.locate(entry.node.origin);
            prompts.push(PromptConfig {
                name: entry.key.clone(),
                file: PathBuf::from(file),
                origin_file,
                line,
            });
        }
    }
    prompts
}

pub(super) fn is_prompt_name(name: &str) -> bool {
    (1..=MAX_PROMPT_NAME).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// `media.hold_music`, when set, must name a `[prompts]` entry. An entry
/// whose own name or file was refused still counts as named: its problem is
/// already reported.
fn check_hold_music(p: &mut Problems, root: &Node, config: &Config) {
    let Some(name) = &config.media.hold_music else {
        return;
    };
    let entries = match root.get("prompts") {
        None => &[][..],
        Some(node) => match node.entries() {
            Some(entries) => entries,
            None => return, // not a table: already reported
        },
    };
    if entries.iter().any(|e| e.key == *name) {
        return;
    }
    let expected = if entries.is_empty() {
        "expected \"\" while [prompts] has no entries".to_owned()
    } else {
        let names: Vec<&str> = entries.iter().map(|e| e.key.as_str()).collect();
        format!("expected one of: {}, or \"\"", names.join(", "))
    };
    p.push(
        written(root, &["media", "hold_music"], None).unwrap_or(DEFAULTED),
        "media.hold_music",
        format!("{name:?} names no [prompts] entry ({expected})"),
    );
}

/// Origin of the written value at `path`, or of element `index` of it.
fn written(root: &Node, path: &[&str], index: Option<usize>) -> Option<Origin> {
    let node = root.lookup(path)?;
    match (index, &node.kind) {
        (None, _) => Some(node.origin),
        (Some(i), Kind::Array(items)) => items.get(i).map(|n| n.origin),
        (Some(_), _) => None,
    }
}

/// RTP ports are bound on the SIP listen IPs, so the RTP range must hold no
/// SIP listen port, nor the CTI port when CTI shares an IP with SIP; and CTI
/// must not take the port of a TCP SIP listener on an overlapping IP.
fn check_port_clashes(
    p: &mut Problems,
    root: &Node,
    config: &Config,
    listen: &[(usize, ListenAddr)],
) {
    let rtp = config.media.rtp_ports;
    let rtp_written = written(root, &["media", "rtp_ports"], None);
    let cti = config.cti.listen;
    let cti_written = written(root, &["cti", "listen"], None);
    // A refused value fell back to its default: checking it would mislead.
    let rtp_ok = !p.has("media.rtp_ports");
    let cti_ok = !p.has("cti.listen");
    const APART: &str = "expected media.rtp_ports apart from the SIP and CTI ports";

    for (i, l) in listen {
        let listen_key = format!("sip.listen[{i}]");
        let listen_written = written(root, &["sip", "listen"], Some(*i));
        if rtp_ok && rtp.contains(l.addr.port()) {
            match (rtp_written, listen_written) {
                (Some(origin), _) => p.push(
                    origin,
                    "media.rtp_ports",
                    format!(
                        "\"{rtp}\" contains port {} of {listen_key} (\"{l}\") ({APART})",
                        l.addr.port()
                    ),
                ),
                (None, origin) => p.push(
                    origin.unwrap_or(DEFAULTED),
                    &listen_key,
                    format!(
                        "port {} lies in media.rtp_ports \"{rtp}\" ({APART})",
                        l.addr.port()
                    ),
                ),
            }
        }
        if cti_ok
            && l.transport == Transport::Tcp
            && l.addr.port() == cti.port()
            && ips_overlap(l.addr.ip(), cti.ip())
        {
            match (cti_written, listen_written) {
                (Some(origin), _) => p.push(
                    origin,
                    "cti.listen",
                    format!("\"{cti}\" takes the port of {listen_key} (\"{l}\") (expected a TCP port not used by SIP)"),
                ),
                (None, origin) => p.push(
                    origin.unwrap_or(DEFAULTED),
                    &listen_key,
                    format!("\"{l}\" takes the port of cti.listen (\"{cti}\") (expected a TCP port not used by CTI)"),
                ),
            }
        }
    }

    let cti_near_sip = listen
        .iter()
        .any(|(_, l)| ips_overlap(l.addr.ip(), cti.ip()));
    if rtp_ok && cti_ok && rtp.contains(cti.port()) && cti_near_sip {
        match (rtp_written, cti_written) {
            (Some(origin), _) => p.push(
                origin,
                "media.rtp_ports",
                format!("\"{rtp}\" contains the port of cti.listen (\"{cti}\") ({APART})"),
            ),
            (None, origin) => p.push(
                origin.unwrap_or(DEFAULTED),
                "cti.listen",
                format!(
                    "port {} lies in media.rtp_ports \"{rtp}\" ({APART})",
                    cti.port()
                ),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "firmware-config/x.toml";

    fn problems(text: &str, overrides: &[&str]) -> Vec<String> {
        let overrides: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
        match parse(FILE, text, &overrides) {
            Ok(_) => Vec::new(),
            Err(e) => e.0.iter().map(ToString::to_string).collect(),
        }
    }

    fn ok(text: &str, overrides: &[&str]) -> Config {
        let overrides: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
        parse(FILE, text, &overrides).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn cti_tokens_and_tls_are_checked() {
        let c = ok(
            "[cti]\ntls_cert = \"c.pem\"\ntls_key = \"k.pem\"\n[[cti.tokens]]\ntoken = \"tok-agent-1002\"\nscope = \"agent:1002\"\n[[cti.tokens]]\ntoken = \"supervisor-1\"\nscope = \"supervisor\"\n",
            &[],
        );
        assert_eq!(
            c.cti.tls,
            Some((PathBuf::from("c.pem"), PathBuf::from("k.pem")))
        );
        assert_eq!(c.cti.tokens[0].scope, CtiScope::Agent("1002".into()));
        assert_eq!(c.cti.tokens[1].scope, CtiScope::Supervisor);
        assert_eq!(
            problems(
                "[cti]\ntls_cert = \"c.pem\"\n[[cti.tokens]]\ntoken = \"short\"\nscope = \"root\"\n[[cti.tokens]]\ntoken = \"long-enough\"\n",
                &[]
            ),
            [
                "firmware-config/x.toml:2: cti.tls_cert: cti.tls_cert and cti.tls_key go together (expected both PEM file paths, or neither for plain HTTP)",
                "firmware-config/x.toml:4: cti.tokens[0].token: expected at least 8 printable characters without spaces",
                "firmware-config/x.toml:5: cti.tokens[0].scope: \"root\" is not a scope (expected \"admin\", \"supervisor\" or \"agent:<agent id>\")",
                "firmware-config/x.toml:6: cti.tokens[1].scope: missing (expected \"admin\", \"supervisor\" or \"agent:<agent id>\")",
            ]
        );
    }

    #[test]
    fn crm_lookup_and_webhook_keys() {
        let c = ok(
            "[crm.lookup]\nurl = \"http://crm/{number}\"\ntimeout_ms = 250\n[crm.lookup.fields]\nname = \"contact.name\"\n[crm.webhook]\nmax_attempts = 3\n",
            &[],
        );
        assert_eq!(c.crm.lookup.timeout, Duration::from_millis(250));
        assert_eq!(c.crm.lookup.fields.name, "contact.name");
        assert_eq!(c.crm.lookup.fields.tier, "tier");
        assert_eq!(c.crm.webhook.max_attempts, 3);
        assert_eq!(
            problems("[crm.lookup]\ntimeout_ms = 9000\n", &[]),
            [
                "firmware-config/x.toml:2: crm.lookup.timeout_ms: 9000 is out of range (expected 10..=5000)"
            ]
        );
    }

    #[test]
    fn bad_listen_address_names_line_and_index() {
        let text = "[sip]\nlisten = [\n  \"udp:127.0.0.1:5060\",\n  \"udp:1.2.3:5060\",\n]\n";
        assert_eq!(
            problems(text, &[]),
            [
                "firmware-config/x.toml:4: sip.listen[1]: \"udp:1.2.3:5060\" is not a listen address (expected \"udp:IP:PORT\" or \"tcp:IP:PORT\")"
            ]
        );
    }

    #[test]
    fn unknown_keys_are_all_listed() {
        let text = "bogus = 1\n[node]\ncors = \"all\"\n[sip]\nt1 = 500\n[crm.webhook]\nsecrett = \"x\"\n[[users]]\nid = \"1\"\npassword = \"p\"\nmail = \"a@b\"\n[extra]\n";
        assert_eq!(
            problems(text, &[]),
            [
                "firmware-config/x.toml:1: bogus: unknown key (expected one of: node, shell, sip, registrar, calls, media, recording, cti, crm, users, prompts, acd, agents, queues, ivr, hours, dialplan)",
                "firmware-config/x.toml:3: node.cors: unknown key, did you mean \"cores\"? (expected one of: cores, data_dir, log)",
                "firmware-config/x.toml:5: sip.t1: unknown key, did you mean \"t1_ms\"? (expected one of: listen, domain, user_agent, t1_ms, t2_ms, t4_ms, max_message_bytes, max_headers, tcp_idle_timeout_s, tcp_message_timeout_s, tcp_max_connections)",
                "firmware-config/x.toml:7: crm.webhook.secrett: unknown key, did you mean \"secret\"? (expected one of: url, secret, max_attempts, timeout_ms)",
                "firmware-config/x.toml:11: users[0].mail: unknown key (expected one of: id, password, name)",
                "firmware-config/x.toml:12: extra: unknown key (expected one of: node, shell, sip, registrar, calls, media, recording, cti, crm, users, prompts, acd, agents, queues, ivr, hours, dialplan)",
            ]
        );
    }

    #[test]
    fn wrong_types_say_what_was_expected() {
        let text = "[sip]\nt1_ms = \"500\"\nlisten = \"udp:127.0.0.1:5060\"\ndomain = 5\n[shell]\nbatch = 1.5\n[registrar]\ndigest_algorithms = [\"MD5\", 5]\n[node]\ncores = true\n";
        assert_eq!(
            problems(text, &[]),
            [
                "firmware-config/x.toml:2: sip.t1_ms: expected an integer, found a string (\"500\")",
                "firmware-config/x.toml:3: sip.listen: expected an array of strings, found a string (\"udp:127.0.0.1:5060\")",
                "firmware-config/x.toml:4: sip.domain: expected a string, found an integer (5)",
                "firmware-config/x.toml:6: shell.batch: expected an integer, found a float (1.5)",
                "firmware-config/x.toml:8: registrar.digest_algorithms[1]: expected a string, found an integer (5)",
                "firmware-config/x.toml:10: node.cores: expected \"all\" or an array of CPU ids like [0, 1], found a boolean (true)",
            ]
        );
    }

    #[test]
    fn section_that_is_not_a_table_is_refused() {
        assert_eq!(
            problems("sip = 5\nusers = { id = \"1\" }\n", &[]),
            [
                "firmware-config/x.toml:1: sip: expected a table, found an integer (5)",
                "firmware-config/x.toml:2: users: expected an array of tables ([[users]] sections), found a table",
            ]
        );
    }

    #[test]
    fn out_of_range_values_name_the_range() {
        let text = "[shell]\nbatch = 0\nring_entries = 300\nmesh_capacity = 10\ntimer_tick_ms = 101\ndrain_timeout_s = -1\n[sip]\nmax_message_bytes = 70000000\nmax_headers = 15\n";
        assert_eq!(
            problems(text, &[]),
            [
                "firmware-config/x.toml:2: shell.batch: 0 is out of range (expected 1..=1024)",
                "firmware-config/x.toml:3: shell.ring_entries: 300 is not a power of two (expected 16, 32, 64, ... 32768)",
                "firmware-config/x.toml:4: shell.mesh_capacity: 10 is out of range (expected 64..=1048576)",
                "firmware-config/x.toml:5: shell.timer_tick_ms: 101 is out of range (expected 1..=100)",
                "firmware-config/x.toml:6: shell.drain_timeout_s: -1 is out of range (expected 0..=300)",
                "firmware-config/x.toml:8: sip.max_message_bytes: 70000000 is out of range (expected 1024..=1048576)",
                "firmware-config/x.toml:9: sip.max_headers: 15 is out of range (expected 16..=10000)",
            ]
        );
    }

    #[test]
    fn t2_below_t1_is_refused_at_the_written_key() {
        assert_eq!(
            problems("[sip]\nt1_ms = 500\nt2_ms = 400\n", &[]),
            [
                "firmware-config/x.toml:3: sip.t2_ms: 400 is below t1_ms (500) (expected t1_ms <= t2_ms)"
            ]
        );
        assert_eq!(
            problems("[sip]\nt1_ms = 5000\n", &[]),
            [
                "firmware-config/x.toml:2: sip.t1_ms: 5000 is above t2_ms (4000) (expected t1_ms <= t2_ms)"
            ]
        );
    }

    #[test]
    fn expires_must_be_ordered_min_default_max() {
        assert_eq!(
            problems("[registrar]\nmin_expires_s = 4000\n", &[]),
            [
                "firmware-config/x.toml:2: registrar.min_expires_s: 4000 is above default_expires_s (3600) (expected min_expires_s <= default_expires_s <= max_expires_s)"
            ]
        );
        assert_eq!(
            problems("[registrar]\nmax_expires_s = 100\n", &[]),
            [
                "firmware-config/x.toml:2: registrar.max_expires_s: 100 is below default_expires_s (3600) (expected min_expires_s <= default_expires_s <= max_expires_s)"
            ]
        );
        assert_eq!(
            problems("[registrar]\ndefault_expires_s = 30\n", &[]),
            [
                "firmware-config/x.toml:2: registrar.default_expires_s: 30 is below min_expires_s (60) (expected min_expires_s <= default_expires_s <= max_expires_s)"
            ]
        );
    }

    #[test]
    fn duplicate_and_overlapping_listen_entries_are_refused() {
        let text = "[sip]\nlisten = [\"udp:127.0.0.1:5060\", \"tcp:127.0.0.1:5060\", \"udp:127.0.0.1:5060\", \"udp:0.0.0.0:5060\"]\n";
        assert_eq!(
            problems(text, &[]),
            [
                "firmware-config/x.toml:2: sip.listen[2]: \"udp:127.0.0.1:5060\" duplicates sip.listen[0] (\"udp:127.0.0.1:5060\") (expected each socket once)",
                "firmware-config/x.toml:2: sip.listen[3]: \"udp:0.0.0.0:5060\" overlaps sip.listen[0] (\"udp:127.0.0.1:5060\") (expected each socket once)",
            ]
        );
        assert_eq!(
            problems("[sip]\nlisten = []\n", &[]),
            [
                "firmware-config/x.toml:2: sip.listen: empty array (expected at least one \"udp:IP:PORT\" or \"tcp:IP:PORT\")"
            ]
        );
    }

    #[test]
    fn bad_cti_address_is_refused() {
        assert_eq!(
            problems("[cti]\nlisten = \"localhost:8080\"\n", &[]),
            [
                "firmware-config/x.toml:2: cti.listen: \"localhost:8080\" is not a socket address (expected \"IP:PORT\", e.g. \"127.0.0.1:8080\" or \"[::1]:8080\")"
            ]
        );
        assert_eq!(
            problems("[cti]\nlisten = \"127.0.0.1:0\"\n", &[]),
            [
                "firmware-config/x.toml:2: cti.listen: \"127.0.0.1:0\" has port 0 (expected a port 1..=65535)"
            ]
        );
    }

    #[test]
    fn rtp_range_holding_a_sip_port_is_refused() {
        assert_eq!(
            problems(
                "[sip]\nlisten = [\"udp:127.0.0.1:25060\"]\n[media]\nrtp_ports = \"20000-29999\"\n",
                &[]
            ),
            [
                "firmware-config/x.toml:4: media.rtp_ports: \"20000-29999\" contains port 25060 of sip.listen[0] (\"udp:127.0.0.1:25060\") (expected media.rtp_ports apart from the SIP and CTI ports)"
            ]
        );
        // With rtp_ports left at its default, the written listen entry is blamed.
        assert_eq!(
            problems("[sip]\nlisten = [\"udp:0.0.0.0:25060\"]\n", &[]),
            [
                "firmware-config/x.toml:2: sip.listen[0]: port 25060 lies in media.rtp_ports \"20000-29999\" (expected media.rtp_ports apart from the SIP and CTI ports)"
            ]
        );
    }

    #[test]
    fn rtp_range_holding_the_cti_port_is_refused_when_ips_meet() {
        assert_eq!(
            problems("[cti]\nlisten = \"0.0.0.0:20002\"\n", &[]),
            [
                "firmware-config/x.toml:2: cti.listen: port 20002 lies in media.rtp_ports \"20000-29999\" (expected media.rtp_ports apart from the SIP and CTI ports)"
            ]
        );
        // CTI on an IP that no SIP listener (and so no RTP socket) uses.
        ok("[cti]\nlisten = \"127.0.0.2:20002\"\n", &[]);
    }

    #[test]
    fn cti_port_shared_with_tcp_sip_is_refused() {
        assert_eq!(
            problems("[cti]\nlisten = \"127.0.0.1:5060\"\n", &[]),
            [
                "firmware-config/x.toml:2: cti.listen: \"127.0.0.1:5060\" takes the port of sip.listen[1] (\"tcp:127.0.0.1:5060\") (expected a TCP port not used by SIP)"
            ]
        );
        // UDP SIP on the CTI port does not clash, nor TCP on another IP.
        ok(
            "[sip]\nlisten = [\"udp:127.0.0.1:8080\", \"tcp:127.0.0.2:8080\"]\n",
            &[],
        );
        assert_eq!(
            problems("[sip]\nlisten = [\"tcp:[::]:8080\"]\n", &[]).len(),
            1
        );
    }

    #[test]
    fn users_need_unique_valid_ids_and_passwords() {
        let text = "[[users]]\nid = \"1001\"\npassword = \"a\"\n[[users]]\nid = \"1001\"\npassword = \"b\"\n[[users]]\nid = \"bob smith\"\npassword = \"\"\n[[users]]\nname = \"x\"\n";
        assert_eq!(
            problems(text, &[]),
            [
                "firmware-config/x.toml:5: users[1].id: user id \"1001\" is already used by users[0] (expected unique ids)",
                "firmware-config/x.toml:8: users[2].id: \"bob smith\" contains ' ', which is not allowed in a SIP user part (expected letters, digits and -_.!~*'()&=+$,;?/)",
                "firmware-config/x.toml:9: users[2].password: empty password (expected a non-empty digest password)",
                "firmware-config/x.toml:10: users[3].id: missing (expected a SIP user id such as \"1001\")",
                "firmware-config/x.toml:10: users[3].password: missing (expected a non-empty digest password)",
            ]
        );
    }

    #[test]
    fn digest_algorithms_must_be_known_unique_and_present() {
        assert_eq!(
            problems(
                "[registrar]\ndigest_algorithms = [\"SHA-256\", \"SHA-512\", \"sha-256\"]\n",
                &[]
            ),
            [
                "firmware-config/x.toml:2: registrar.digest_algorithms[1]: \"SHA-512\" is not a supported digest algorithm (expected \"SHA-256\" or \"MD5\")",
                "firmware-config/x.toml:2: registrar.digest_algorithms[2]: SHA-256 is listed twice (expected each algorithm once)",
            ]
        );
        assert_eq!(
            problems("[registrar]\ndigest_algorithms = []\n", &[]),
            [
                "firmware-config/x.toml:2: registrar.digest_algorithms: empty array (expected one or more of \"SHA-256\", \"MD5\")"
            ]
        );
        let c = ok("[registrar]\ndigest_algorithms = [\"MD5\"]\n", &[]);
        assert_eq!(c.registrar.digest_algorithms, [DigestAlgorithm::Md5]);
    }

    #[test]
    fn syntax_error_names_its_line() {
        let found = problems("[sip]\nt1_ms = 500\nt2_ms = = 4\n", &[]);
        assert_eq!(found.len(), 1);
        assert!(
            found[0].starts_with("firmware-config/x.toml:3: TOML syntax error: "),
            "{found:?}"
        );
        let found = problems("[sip]\nt1_ms = 1\nt1_ms = 2\n", &[]);
        assert!(
            found[0].starts_with("firmware-config/x.toml:3: TOML syntax error: "),
            "{found:?}"
        );
    }

    #[test]
    fn overrides_replace_file_values() {
        let text = "[sip]\nt1_ms = 250\n[node]\ndata_dir = \"var\"\n";
        let c = ok(
            text,
            &[
                "sip.t1_ms=300",
                "node.data_dir=\"/tmp/sb1\"",
                "sip.listen=[\"udp:127.0.0.1:15060\",\"tcp:127.0.0.1:15060\"]",
                "node.cores=[0, 1]",
                "crm.webhook.url=\"http://127.0.0.1:9000/hook\"",
            ],
        );
        assert_eq!(c.sip.t1, Duration::from_millis(300));
        assert_eq!(c.node.data_dir, PathBuf::from("/tmp/sb1"));
        assert_eq!(c.sip.listen[1].to_string(), "tcp:127.0.0.1:15060");
        assert_eq!(c.node.cores, Cores::List(vec![0, 1]));
        assert_eq!(c.crm.webhook.url, "http://127.0.0.1:9000/hook");
    }

    #[test]
    fn override_whose_shell_quotes_were_stripped_is_a_string() {
        // `--set node.data_dir="/tmp/sb1"` typed in a shell arrives without quotes.
        let c = ok(
            "",
            &["node.data_dir=/tmp/sb1", "sip.domain=pbx.example.com"],
        );
        assert_eq!(c.node.data_dir, PathBuf::from("/tmp/sb1"));
        assert_eq!(c.sip.domain, "pbx.example.com");
    }

    #[test]
    fn override_errors_say_set() {
        assert_eq!(
            problems(
                "[sip]\nt1_ms = 250\n",
                &["sip.t1=5", "sip.t1_ms=0", "sip.t2_ms=\"x\""]
            ),
            [
                "--set sip.t1: unknown key, did you mean \"t1_ms\"? (expected one of: listen, domain, user_agent, t1_ms, t2_ms, t4_ms, max_message_bytes, max_headers, tcp_idle_timeout_s, tcp_message_timeout_s, tcp_max_connections)",
                "--set sip.t1_ms: 0 is out of range (expected 1..=10000)",
                "--set sip.t2_ms: expected an integer, found a string (\"x\")",
            ]
        );
    }

    #[test]
    fn malformed_override_is_a_problem_naming_set() {
        assert_eq!(
            problems(
                "",
                &[
                    "sip.t1_ms",
                    "sip.listen=[\"udp:127.0.0.1:5060\"",
                    "sip.domain=a b"
                ]
            ),
            [
                "--set sip.t1_ms: expected KEY=VALUE, e.g. --set sip.t1_ms=250",
                "--set sip.listen: \"[\\\"udp:127.0.0.1:5060\\\"\" is not a TOML value (unclosed array, expected `]`); write VALUE as TOML: quote strings (--set 'sip.domain=\"pbx.example.com\"'), arrays as [\"a\", \"b\"]",
                "--set sip.domain: \"a b\" is not a TOML value (string values must be quoted, expected literal string); write VALUE as TOML: quote strings (--set 'sip.domain=\"pbx.example.com\"'), arrays as [\"a\", \"b\"]",
            ]
        );
        assert_eq!(
            problems(
                "[sip]\nlisten = [\"udp:127.0.0.1:5060\"]\n",
                &["sip.listen.x=1"]
            ),
            [
                "--set sip.listen.x: cannot set a key inside sip.listen, which is an array, not a table"
            ]
        );
    }

    #[test]
    fn file_problems_and_override_problems_are_reported_together() {
        let found = problems("[sip]\nt1_ms = 0\n", &["sip.t4_ms=0"]);
        assert_eq!(
            found,
            [
                "firmware-config/x.toml:2: sip.t1_ms: 0 is out of range (expected 1..=10000)",
                "--set sip.t4_ms: 0 is out of range (expected 1..=60000)",
            ]
        );
    }

    #[test]
    fn port_range_and_urls_and_driver_are_checked() {
        let text = "[media]\nrtp_ports = \"20001-20000\"\n[crm.lookup]\nurl = \"ftp://x\"\n[crm.webhook]\nurl = \"https://crm.example/hook\"\nsecret = \"\"\n[shell]\ndriver = \"uring\"\n";
        assert_eq!(
            problems(text, &[]),
            [
                "firmware-config/x.toml:2: media.rtp_ports: \"20001-20000\" is not a usable RTP port range (expected 1024 <= LOW < HIGH <= 65535 with LOW even)",
                "firmware-config/x.toml:4: crm.lookup.url: \"ftp://x\" is not an HTTP URL (expected \"\" or \"http://...\" / \"https://...\")",
                "firmware-config/x.toml:7: crm.webhook.secret: empty while crm.webhook.url is set (expected a non-empty HMAC-SHA256 key; the CRM checks X-Switchboard-Signature with it)",
                "firmware-config/x.toml:9: shell.driver: \"uring\" is not a driver (expected \"auto\", \"io_uring\" or \"epoll\")",
            ]
        );
    }

    #[test]
    fn cores_list_is_checked() {
        assert_eq!(
            problems("[node]\ncores = [0, 0, 5000]\n", &[]),
            [
                "firmware-config/x.toml:2: node.cores[1]: CPU 0 is listed twice (expected each CPU once)",
                "firmware-config/x.toml:2: node.cores[2]: 5000 is out of range (expected 0..=1023)",
            ]
        );
        assert_eq!(
            problems("[node]\ncores = \"some\"\n", &[]),
            [
                "firmware-config/x.toml:2: node.cores: expected \"all\" or an array of CPU ids like [0, 1], found a string (\"some\")"
            ]
        );
    }

    #[test]
    fn dotted_and_inline_forms_are_accepted() {
        let c = ok(
            "crm.webhook.url = \"http://h/x\"\nsip = { t1_ms = 250, listen = [\"udp:[::1]:5070\"] }\nusers = [{ id = \"7\", password = \"p\" }]\n",
            &[],
        );
        assert_eq!(c.crm.webhook.url, "http://h/x");
        assert_eq!(c.sip.t1, Duration::from_millis(250));
        assert_eq!(c.sip.listen[0].to_string(), "udp:[::1]:5070");
        assert_eq!(c.users[0].name, "");
    }

    #[test]
    fn cross_key_rules_skip_values_already_refused() {
        assert_eq!(
            problems("[sip]\nt1_ms = 99999\nt2_ms = 300\n", &[]),
            ["firmware-config/x.toml:2: sip.t1_ms: 99999 is out of range (expected 1..=10000)"]
        );
        assert_eq!(
            problems(
                "[sip]\nlisten = [\"udp:1.2.3:5060\"]\n[media]\nrtp_ports = \"5000-6000\"\n",
                &[]
            )
            .len(),
            1
        );
    }

    #[test]
    fn prompts_keep_file_order_names_and_lines() {
        let c = ok(
            "[media]\nhold_music = \"music\"\n[prompts]\nwelcome = \"prompts/welcome.wav\"\nmusic = \"/srv/moh.wav\"\nq-2_B = \"x.wav\"\n",
            &[],
        );
        let entry = |name: &str, file: &str, line| PromptConfig {
            name: name.into(),
            file: PathBuf::from(file),
            origin_file: FILE.into(),
            line: Some(line),
        };
        assert_eq!(
            c.prompts,
            [
                entry("welcome", "prompts/welcome.wav", 4),
                entry("music", "/srv/moh.wav", 5),
                entry("q-2_B", "x.wav", 6),
            ]
        );
        assert_eq!(c.media.hold_music.as_deref(), Some("music"));
        // "" is silence, the default.
        let c = ok("[media]\nhold_music = \"\"\n", &[]);
        assert_eq!(c.media.hold_music, None);
        assert!(c.prompts.is_empty());
    }

    #[test]
    fn prompt_names_must_be_short_plain_words() {
        let long = "a".repeat(33);
        let text = format!(
            "[prompts]\n\"mu sic\" = \"a.wav\"\n\"\" = \"b.wav\"\n{long} = \"c.wav\"\n\"é\" = \"d.wav\"\n{} = \"e.wav\"\n",
            "b".repeat(32)
        );
        assert_eq!(
            problems(&text, &[]),
            [
                "firmware-config/x.toml:2: prompts.mu sic: \"mu sic\" is not a prompt name (expected 1 to 32 ASCII letters, digits, '_' or '-')",
                "firmware-config/x.toml:3: prompts.: \"\" is not a prompt name (expected 1 to 32 ASCII letters, digits, '_' or '-')",
                format!(
                    "firmware-config/x.toml:4: prompts.{long}: \"{long}\" is not a prompt name (expected 1 to 32 ASCII letters, digits, '_' or '-')"
                )
                .as_str(),
                "firmware-config/x.toml:5: prompts.é: \"é\" is not a prompt name (expected 1 to 32 ASCII letters, digits, '_' or '-')",
            ]
        );
    }

    #[test]
    fn prompt_files_must_be_non_empty_strings() {
        assert_eq!(
            problems(
                "[prompts]\nmusic = 5\nwelcome = \"\"\nbye = [\"a.wav\"]\n[prompts.menu]\nfile = \"m.wav\"\n",
                &[]
            ),
            [
                "firmware-config/x.toml:2: prompts.music: expected a string naming a WAV file, found an integer (5)",
                "firmware-config/x.toml:3: prompts.welcome: empty path (expected a WAV file such as \"prompts/welcome.wav\")",
                "firmware-config/x.toml:4: prompts.bye: expected a string naming a WAV file, found an array",
                "firmware-config/x.toml:5: prompts.menu: expected a string naming a WAV file, found a table",
            ]
        );
        assert_eq!(
            problems("prompts = \"music.wav\"\n", &[]),
            [
                "firmware-config/x.toml:1: prompts: expected a table of name = \"file.wav\" entries, found a string (\"music.wav\")"
            ]
        );
    }

    #[test]
    fn hold_music_must_name_a_prompt() {
        assert_eq!(
            problems(
                "[media]\nhold_music = \"musik\"\n[prompts]\nmusic = \"m.wav\"\nwelcome = \"w.wav\"\n",
                &[]
            ),
            [
                "firmware-config/x.toml:2: media.hold_music: \"musik\" names no [prompts] entry (expected one of: music, welcome, or \"\")"
            ]
        );
        assert_eq!(
            problems("[media]\nhold_music = \"music\"\n", &[]),
            [
                "firmware-config/x.toml:2: media.hold_music: \"music\" names no [prompts] entry (expected \"\" while [prompts] has no entries)"
            ]
        );
        assert_eq!(
            problems("[media]\nhold_music = 1\n", &[]),
            ["firmware-config/x.toml:2: media.hold_music: expected a string, found an integer (1)"]
        );
        // An entry refused for its own reasons is not reported twice.
        assert_eq!(
            problems(
                "[media]\nhold_music = \"music\"\n[prompts]\nmusic = \"\"\n",
                &[]
            ),
            [
                "firmware-config/x.toml:4: prompts.music: empty path (expected a WAV file such as \"prompts/welcome.wav\")"
            ]
        );
    }

    #[test]
    fn prompts_set_on_the_command_line_say_set() {
        let c = ok(
            "[prompts]\nmusic = \"m.wav\"\n",
            &["prompts.hold=\"/tmp/hold.wav\"", "media.hold_music=hold"],
        );
        assert_eq!(
            c.prompts,
            [
                PromptConfig {
                    name: "music".into(),
                    file: PathBuf::from("m.wav"),
                    origin_file: FILE.into(),
                    line: Some(2),
                },
                PromptConfig {
                    name: "hold".into(),
                    file: PathBuf::from("/tmp/hold.wav"),
                    origin_file: OVERRIDE_LABEL.into(),
                    line: None,
                },
            ]
        );
        assert_eq!(c.media.hold_music.as_deref(), Some("hold"));
        assert_eq!(
            problems(
                "[prompts]\nmusic = \"m.wav\"\n",
                &["prompts.music=\"\"", "media.hold_music=moh"]
            ),
            [
                "--set prompts.music: empty path (expected a WAV file such as \"prompts/welcome.wav\")",
                "--set media.hold_music: \"moh\" names no [prompts] entry (expected one of: music, or \"\")",
            ]
        );
    }

    #[test]
    fn edit_distance_counts_single_edits() {
        assert_eq!(edit_distance("t1", "t1_ms"), 3);
        assert_eq!(edit_distance("cors", "cores"), 1);
        assert_eq!(edit_distance("abc", "abc"), 0);
        assert_eq!(closest("t1", &["t1_ms", "t2_ms"]), Some("t1_ms"));
        assert_eq!(
            closest("drain_timeout", &["drain_timeout_s"]),
            Some("drain_timeout_s")
        );
        assert_eq!(closest("tcp", &["tcp_idle_timeout_s"]), None);
    }
}
