//! The appliance's typed configuration: one TOML file (by default
//! `firmware-config/default.toml`) plus `--set KEY=VALUE` overrides from the
//! command line, turned into a [`Config`] once at start.
//!
//! Operators edit this file, so a bad one is refused with every problem found,
//! each naming the file, line, dotted key and what was expected
//! ([`ConfigProblem`]). The pipeline is:
//!
//! 1. `tree` parses the text with `toml_edit` (which keeps spans) into a tree
//!    of values tagged with their line, then applies the overrides, tagging
//!    what they replace as coming from `--set`;
//! 2. `validate` walks that tree section by section, checking types, ranges,
//!    unknown keys and cross-key rules (timer order, expiry order, port
//!    clashes), and collects problems instead of stopping at the first.
//!
//! Every key is optional; [`Config::default`] is what an empty file gives (the
//! demo appliance without its users). Nothing here touches the network or the
//! clock; [`load`] is the only function that reads a file.

pub mod contact;
mod tree;
mod types;
mod validate;
mod validate_contact;

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use types::{DigestAlgorithm, ListenAddr, PortRange, Transport, ValueError};

/// Reads the config file at `path` and applies `overrides` (`KEY=VALUE`).
pub fn load(path: &Path, overrides: &[String]) -> Result<Config, ConfigErrors> {
    let label = path.display().to_string();
    match std::fs::read_to_string(path) {
        Ok(text) => parse(&label, &text, overrides),
        Err(e) => Err(ConfigErrors(vec![ConfigProblem {
            file: label,
            line: None,
            key: String::new(),
            message: format!("cannot read: {e}"),
        }])),
    }
}

/// Parses config `text` (named `file_label` in problems) and applies
/// `overrides`, each `KEY=VALUE` with KEY a dotted path (`sip.t1_ms`,
/// `users[0].password`) and VALUE a TOML value.
pub fn parse(file_label: &str, text: &str, overrides: &[String]) -> Result<Config, ConfigErrors> {
    validate::parse(file_label, text, overrides)
}

/// The file label used for problems that come from `--set` overrides.
pub const OVERRIDE_LABEL: &str = "--set";

/// Every problem found in a config; `Display` gives one line per problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigProblem>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// One problem: where (file or `--set`, line, dotted key) and what was wrong
/// and expected.
///
/// Displays as `file:line: key: message`, `file: key: message` when the line
/// is unknown, `file: message` when there is no key (unreadable file, syntax
/// error with a line gives `file:line: message`), and `--set key: message`
/// for overrides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// The file label, or [`OVERRIDE_LABEL`] for a command-line override.
    pub file: String,
    /// 1-based line in the file, when the problem sits at a written key.
    pub line: Option<usize>,
    /// Dotted key such as `sip.listen[1]` or `users[3].id`; empty when the
    /// problem concerns the whole file.
    pub key: String,
    /// What is wrong and what was expected.
    pub message: String,
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.file == OVERRIDE_LABEL {
            return write!(f, "{} {}: {}", self.file, self.key, self.message);
        }
        f.write_str(&self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        f.write_str(": ")?;
        if !self.key.is_empty() {
            write!(f, "{}: ", self.key)?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConfigProblem {}

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Config {
    /// `[node]`: cores, data directory, logging.
    pub node: NodeConfig,
    /// `[shell]`: I/O loop and threads.
    pub shell: ShellConfig,
    /// `[sip]`: transport and transaction layer.
    pub sip: SipConfig,
    /// `[registrar]`: REGISTER handling and digest auth.
    pub registrar: RegistrarConfig,
    /// `[calls]`: the B2BUA's call policy.
    pub calls: CallsConfig,
    /// `[media]`: RTP.
    pub media: MediaConfig,
    /// `[recording]`: which calls are recorded.
    pub recording: RecordingConfig,
    /// `[cti]`: control plane.
    pub cti: CtiConfig,
    /// `[crm.lookup]`, `[crm.webhook]`.
    pub crm: CrmConfig,
    /// `[[users]]`: agents' phones.
    pub users: Vec<UserConfig>,
    /// `[prompts]`: named WAV files (prompts, music), in file order.
    pub prompts: Vec<PromptConfig>,
    /// `[acd]`, `[[agents]]`, `[[queues]]`, `[ivr.*]`, `[hours.*]`,
    /// `[dialplan]`: the contact center.
    pub contact: contact::ContactCenter,
}

/// One `[prompts]` entry: `name = "file.wav"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromptConfig {
    /// The key: how dial plans and `media.hold_music` name it.
    pub name: String,
    /// The file as written; a relative path is relative to the directory
    /// of the config file.
    pub file: PathBuf,
    /// Where it was written (the config file's label or `--set`, and the
    /// line), so problems loading the file name it.
    pub origin_file: String,
    pub line: Option<usize>,
}

/// Which CPUs run shards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cores {
    /// Every CPU the process may run on (its affinity mask at start).
    All,
    /// These CPU ids, one shard each, in this order (no duplicates, non-empty).
    List(Vec<usize>),
}

/// `[node]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeConfig {
    /// `cores`: one shard per core.
    pub cores: Cores,
    /// `data_dir`: CDR/outbox database and recordings, relative to the
    /// working directory unless absolute.
    pub data_dir: PathBuf,
    /// `log`: tracing filter for the stderr log.
    pub log: String,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            cores: Cores::All,
            data_dir: PathBuf::from("var"),
            log: "info".to_owned(),
        }
    }
}

/// Which I/O driver the shell uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DriverChoice {
    /// io_uring, falling back to epoll when the ring cannot be set up.
    Auto,
    /// io_uring only; failing to set it up is fatal.
    IoUring,
    /// epoll + recvmmsg/sendmmsg.
    Epoll,
}

/// `[shell]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShellConfig {
    /// `driver`.
    pub driver: DriverChoice,
    /// `batch`: datagrams per receive/send batch (1..=1024).
    pub batch: usize,
    /// `ring_entries`: io_uring submission queue entries (power of two, 16..=32768).
    pub ring_entries: u32,
    /// `mesh_capacity`: slots per shard-to-shard queue (64..=1048576).
    pub mesh_capacity: usize,
    /// `timer_tick_ms`: timer wheel resolution (1..=100 ms).
    pub timer_tick: Duration,
    /// `drain_timeout_s`: longest wait on SIGTERM (0..=300 s).
    pub drain_timeout: Duration,
}

impl Default for ShellConfig {
    fn default() -> Self {
        ShellConfig {
            driver: DriverChoice::Auto,
            batch: 32,
            ring_entries: 256,
            mesh_capacity: 4096,
            timer_tick: Duration::from_millis(5),
            drain_timeout: Duration::from_secs(10),
        }
    }
}

/// `[sip]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SipConfig {
    /// `listen`: non-empty, no two entries on the same socket.
    pub listen: Vec<ListenAddr>,
    /// `domain`: served domain and digest realm.
    pub domain: String,
    /// `user_agent`: Server/User-Agent value; empty = header omitted.
    pub user_agent: String,
    /// `t1_ms`: RFC 3261 T1 (1..=10000 ms).
    pub t1: Duration,
    /// `t2_ms`: RFC 3261 T2 (>= T1, ..=60000 ms).
    pub t2: Duration,
    /// `t4_ms`: RFC 3261 T4 (1..=60000 ms).
    pub t4: Duration,
    /// `max_message_bytes` (1024..=1048576).
    pub max_message_bytes: usize,
    /// `max_headers` (16..=10000).
    pub max_headers: usize,
    /// `tcp_idle_timeout_s` (1..=86400 s).
    pub tcp_idle_timeout: Duration,
    /// `tcp_message_timeout_s` (1..=3600 s).
    pub tcp_message_timeout: Duration,
    /// `tcp_max_connections` per shard (1..=1048576).
    pub tcp_max_connections: usize,
}

impl Default for SipConfig {
    fn default() -> Self {
        let lo = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 5060);
        SipConfig {
            listen: vec![
                ListenAddr {
                    transport: Transport::Udp,
                    addr: lo,
                },
                ListenAddr {
                    transport: Transport::Tcp,
                    addr: lo,
                },
            ],
            domain: "switchboard.local".to_owned(),
            user_agent: "Switchboard".to_owned(),
            t1: Duration::from_millis(500),
            t2: Duration::from_millis(4000),
            t4: Duration::from_millis(5000),
            max_message_bytes: 65535,
            max_headers: 256,
            tcp_idle_timeout: Duration::from_secs(600),
            tcp_message_timeout: Duration::from_secs(30),
            tcp_max_connections: 4096,
        }
    }
}

/// `[calls]`: how the B2BUA treats calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallsConfig {
    /// `no_answer_timeout_s`: ringing longer than this ends the attempt;
    /// the caller gets 480 and the ringing phones a CANCEL.
    pub no_answer_timeout: Duration,
    /// `max_duration_s`: an answered call longer than this is hung up
    /// (BYE to both legs).
    pub max_duration: Duration,
    /// `session_expires_s`: RFC 4028 session interval we ask for.
    pub session_expires: Duration,
    /// `min_se_s`: RFC 4028 smallest session interval we accept (422 below).
    pub min_se: Duration,
}

impl Default for CallsConfig {
    fn default() -> Self {
        CallsConfig {
            no_answer_timeout: Duration::from_secs(30),
            max_duration: Duration::from_secs(4 * 3600),
            session_expires: Duration::from_secs(1800),
            min_se: Duration::from_secs(90),
        }
    }
}

/// `[registrar]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistrarConfig {
    /// `min_expires_s`: shorter requests get 423 with Min-Expires.
    pub min_expires: Duration,
    /// `max_expires_s`: longer requests are shortened to this.
    pub max_expires: Duration,
    /// `default_expires_s`: when the request names no expiry.
    pub default_expires: Duration,
    /// `max_contacts`: bindings per user (1..=100).
    pub max_contacts: usize,
    /// `nonce_lifetime_s`: older nonces are answered with stale=true.
    pub nonce_lifetime: Duration,
    /// `digest_algorithms`: challenge order, non-empty, no duplicates.
    pub digest_algorithms: Vec<DigestAlgorithm>,
    /// `md5_only_user_agents`: User-Agent fragments (case-insensitive) of
    /// clients that fail when any challenge names an algorithm they lack,
    /// instead of skipping it; they are challenged with MD5 alone.
    pub md5_only_user_agents: Vec<String>,
}

impl Default for RegistrarConfig {
    fn default() -> Self {
        RegistrarConfig {
            min_expires: Duration::from_secs(60),
            max_expires: Duration::from_secs(7200),
            default_expires: Duration::from_secs(3600),
            max_contacts: 10,
            nonce_lifetime: Duration::from_secs(300),
            digest_algorithms: vec![DigestAlgorithm::Sha256, DigestAlgorithm::Md5],
            md5_only_user_agents: vec!["baresip v0.".into(), "baresip v1.".into()],
        }
    }
}

/// `[media]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaConfig {
    /// `rtp_ports`: RTP/RTCP port range.
    pub rtp_ports: PortRange,
    /// `ip`: address RTP sockets bind to and SDP names; None = the IP of
    /// the first `sip.listen` entry.
    pub ip: Option<IpAddr>,
    /// `rtp_timeout_s`: an answered call whose party sends no RTP this
    /// long is ended.
    pub rtp_timeout: Duration,
    /// `hold_timeout_s`: the same while the call is on hold.
    pub hold_timeout: Duration,
    /// `transcode`: offer callees the codecs we can transcode.
    pub transcode: bool,
    /// `inband_dtmf`: detect DTMF tones in the audio of legs without
    /// telephone-event.
    pub inband_dtmf: bool,
    /// `hold_music`: the `[prompts]` entry a party hears, looped, while the
    /// other holds the call; None (`""`) = silence.
    pub hold_music: Option<String>,
}

impl Default for MediaConfig {
    fn default() -> Self {
        MediaConfig {
            rtp_ports: PortRange {
                low: 20000,
                high: 29999,
            },
            ip: None,
            rtp_timeout: Duration::from_secs(60),
            hold_timeout: Duration::from_secs(3600),
            transcode: true,
            inband_dtmf: false,
            hold_music: None,
        }
    }
}

/// `recording.mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordingMode {
    /// Every answered call.
    All,
    /// None.
    None,
    /// Calls to the numbers in `recording.routes`.
    Routes,
}

/// `[recording]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordingConfig {
    pub mode: RecordingMode,
    /// Dialled numbers (dial-plan routes) recorded in `Routes` mode.
    pub routes: Vec<String>,
}

impl Default for RecordingConfig {
    fn default() -> Self {
        RecordingConfig {
            mode: RecordingMode::All,
            routes: Vec::new(),
        }
    }
}

impl RecordingConfig {
    /// Whether a call to `dialled` is recorded.
    pub fn records(&self, dialled: &str) -> bool {
        match self.mode {
            RecordingMode::All => true,
            RecordingMode::None => false,
            RecordingMode::Routes => self.routes.iter().any(|r| r == dialled),
        }
    }
}

/// `[cti]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CtiConfig {
    /// `listen`: HTTP/WebSocket control plane address.
    pub listen: SocketAddr,
    /// `tls_cert`, `tls_key`: PEM certificate chain and private key; both
    /// set = the control plane speaks HTTPS/WSS only. Relative to the
    /// config file's directory unless absolute.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// `max_message_bytes`: largest CTI message or REST body taken
    /// (1024..=1048576); a bigger one gets an error reply.
    pub max_message_bytes: usize,
    /// `[[cti.tokens]]`: who may use the control plane's `/v1` API.
    pub tokens: Vec<CtiToken>,
}

impl Default for CtiConfig {
    fn default() -> Self {
        CtiConfig {
            listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8080),
            tls: None,
            max_message_bytes: 64 * 1024,
            tokens: Vec::new(),
        }
    }
}

/// One `[[cti.tokens]]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CtiToken {
    /// `token`: the bearer token (`Authorization: Bearer <token>`).
    pub token: String,
    /// `scope`: what it may see and command.
    pub scope: CtiScope,
}

/// A token's scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CtiScope {
    /// Everything, including other tokens' agents and the outbox.
    Admin,
    /// Every agent, queue and call (supervisors, wallboards, CRM servers).
    Supervisor,
    /// One agent: its own state and the calls it is on.
    Agent(String),
}

impl CtiScope {
    /// `admin`, `supervisor` or `agent:<id>`.
    pub fn parse(text: &str) -> Option<CtiScope> {
        match text {
            "admin" => Some(CtiScope::Admin),
            "supervisor" => Some(CtiScope::Supervisor),
            _ => text
                .strip_prefix("agent:")
                .filter(|id| !id.is_empty())
                .map(|id| CtiScope::Agent(id.to_owned())),
        }
    }
}

/// `[crm]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrmConfig {
    /// `directory`: the built-in screen-pop directory (CSV), relative to
    /// the config file's directory unless absolute; empty = none.
    pub directory: PathBuf,
    /// `[crm.lookup]`.
    pub lookup: CrmLookupConfig,
    /// `[crm.webhook]`.
    pub webhook: CrmWebhookConfig,
}

impl Default for CrmConfig {
    fn default() -> Self {
        CrmConfig {
            directory: PathBuf::from("contacts.csv"),
            lookup: CrmLookupConfig {
                url: String::new(),
                timeout: Duration::from_millis(300),
                cache_ttl: Duration::from_secs(300),
                fields: LookupFields::default(),
            },
            webhook: CrmWebhookConfig {
                url: String::new(),
                secret: "demo-secret".to_owned(),
                max_attempts: 12,
                timeout: Duration::from_secs(10),
            },
        }
    }
}

/// `[crm.lookup]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrmLookupConfig {
    /// `url`: screen-pop lookup URL template (`{number}` = the caller's
    /// E.164 number, `{account}` = the IVR-entered account, both
    /// URL-encoded); empty = built-in directory.
    pub url: String,
    /// `timeout_ms`: how long a lookup may take (10..=5000); a call never
    /// waits longer for its screen pop.
    pub timeout: Duration,
    /// `cache_ttl_s`: how long answers (found or not) are kept (0..=86400).
    pub cache_ttl: Duration,
    /// `[crm.lookup.fields]`: the CRM's JSON field names.
    pub fields: LookupFields,
}

/// `[crm.lookup.fields]`: which field of the CRM's JSON answer holds what
/// (a dotted path such as `contact.name` reaches into objects).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LookupFields {
    pub name: String,
    pub account: String,
    pub tier: String,
    pub last_agent: String,
    pub phone: String,
}

impl Default for LookupFields {
    fn default() -> Self {
        LookupFields {
            name: "name".to_owned(),
            account: "account".to_owned(),
            tier: "tier".to_owned(),
            last_agent: "last_agent".to_owned(),
            phone: "phone".to_owned(),
        }
    }
}

/// `[crm.webhook]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrmWebhookConfig {
    /// `url`: where call records are POSTed; empty = none.
    pub url: String,
    /// `secret`: HMAC-SHA256 key for `X-Switchboard-Signature`.
    pub secret: String,
    /// `max_attempts`: deliveries tried before a record moves to the dead
    /// letters (1..=100).
    pub max_attempts: u32,
    /// `timeout_ms`: how long one POST may take (100..=60000).
    pub timeout: Duration,
}

/// One `[[users]]` entry: an agent's phone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserConfig {
    /// `id`: SIP user part, unique.
    pub id: String,
    /// `password`: digest password, non-empty.
    pub password: String,
    /// `name`: display name, may be empty.
    pub name: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEMO: &str = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/firmware-config/default.toml"
    ));

    #[test]
    fn demo_config_parses_with_ten_users() {
        let config = parse("firmware-config/default.toml", DEMO, &[]).unwrap();
        assert_eq!(config.users.len(), 10);
        for (i, user) in config.users.iter().enumerate() {
            let n = 1001 + i;
            assert_eq!(user.id, n.to_string());
            assert_eq!(user.password, format!("pw{n}"));
            assert_eq!(user.name, format!("Agent {n}"));
        }
    }

    #[test]
    fn demo_config_spells_out_the_defaults() {
        let mut config = parse("default.toml", DEMO, &[]).unwrap();
        // What the demo adds to the defaults: its users, its prompts and
        // hold music, its contact center (whose [acd] is the default) and
        // its CTI token.
        config.users.clear();
        assert_eq!(
            config.prompts.first(),
            Some(&PromptConfig {
                name: "music".into(),
                file: PathBuf::from("prompts/music.wav"),
                origin_file: "default.toml".into(),
                line: config.prompts.first().and_then(|p| p.line),
            })
        );
        for p in &config.prompts {
            assert_eq!(p.file, PathBuf::from(format!("prompts/{}.wav", p.name)));
        }
        assert_eq!(config.media.hold_music.as_deref(), Some("music"));
        assert_eq!(config.contact.acd, contact::AcdConfig::default());
        // And the CONTRACT's demo token.
        assert_eq!(
            config.cti.tokens,
            vec![CtiToken {
                token: "demo-token".into(),
                scope: CtiScope::Admin
            }]
        );
        config.prompts.clear();
        config.media.hold_music = None;
        config.contact = Default::default();
        config.cti.tokens.clear();
        assert_eq!(config, Config::default());
    }

    #[test]
    fn demo_contact_center_is_the_contract() {
        use contact::{Collect, Route, Strategy, Target};
        use std::time::Duration;
        let cc = parse("default.toml", DEMO, &[]).unwrap().contact;
        assert!(cc.acd.auto_login);
        let ids = |r: std::ops::RangeInclusive<u32>| -> Vec<String> {
            r.map(|n| n.to_string()).collect()
        };
        let agents: Vec<String> = cc.agents.iter().map(|a| a.id.clone()).collect();
        assert_eq!(agents, ids(1001..=1010));
        let support = cc.queue("support").unwrap();
        assert_eq!(support.members, ids(1001..=1010));
        assert_eq!(support.strategy, Strategy::LongestIdle);
        assert_eq!(support.callback_key, Some('*'));
        assert_eq!(support.announce_every, Some(Duration::from_secs(30)));
        let sales = cc.queue("sales").unwrap();
        assert_eq!(sales.members, ids(1001..=1005));
        for q in [support, sales] {
            assert!(q.wrap_up_max <= Duration::from_secs(2), "{}", q.name);
            assert!(q.join_empty);
        }
        let q = |n: &str| Route::to(Target::Queue(n.into()));
        assert_eq!(cc.route("200"), Some(&q("support")));
        assert_eq!(cc.route("201"), Some(&q("sales")));
        assert_eq!(
            cc.route("300"),
            Some(&Route::to(Target::Menu("main".into())))
        );
        let main = cc.menu("main").unwrap();
        assert_eq!(main.hours, None, "the demo IVR is always open");
        assert_eq!(
            main.options,
            [
                ('1', q("sales")),
                ('2', q("support")),
                ('9', Route::to(Target::Menu("account".into()))),
            ]
        );
        assert_eq!(
            cc.menu("account").unwrap().collect,
            Collect::Digits {
                key: "account".into(),
                min: 1,
                max: 12,
                terminator: Some('#'),
                then: q("support"),
            }
        );
    }

    #[test]
    fn demo_config_names_every_prompt_the_appliance_plays() {
        let config = parse("default.toml", DEMO, &[]).unwrap();
        let mut needed: Vec<String> = [
            "goodbye",
            "callback_ok",
            "agent_logged_in",
            "agent_logged_out",
            "agent_ready",
            "agent_not_ready",
            "position",
            "wait",
            "less_than_a_minute",
            "minutes",
            "music",
        ]
        .map(String::from)
        .to_vec();
        needed.extend((0..=10).map(|n| format!("n{n}")));
        for name in needed {
            assert!(
                config.prompts.iter().any(|p| p.name == name),
                "[prompts] has no {name:?}"
            );
        }
    }

    #[test]
    fn demo_config_loads_from_disk() {
        let path = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/firmware-config/default.toml"
        ));
        let config = load(path, &[]).unwrap();
        assert_eq!(config.users.len(), 10);
    }

    #[test]
    fn default_equals_empty_text() {
        assert_eq!(parse("empty.toml", "", &[]).unwrap(), Config::default());
        assert_eq!(
            parse("comments.toml", "# nothing here\n\n", &[]).unwrap(),
            Config::default()
        );
    }

    #[test]
    fn default_values_match_the_schema() {
        let c = Config::default();
        assert_eq!(c.node.cores, Cores::All);
        assert_eq!(c.shell.driver, DriverChoice::Auto);
        assert_eq!(c.sip.listen[0].to_string(), "udp:127.0.0.1:5060");
        assert_eq!(c.sip.listen[1].to_string(), "tcp:127.0.0.1:5060");
        assert_eq!(c.sip.t1, Duration::from_millis(500));
        assert_eq!(c.cti.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.media.rtp_ports.to_string(), "20000-29999");
        assert_eq!(c.crm.webhook.secret, "demo-secret");
        assert!(c.users.is_empty());
    }

    #[test]
    fn every_prefix_of_the_demo_is_parsed_or_refused_without_panic() {
        for end in (0..DEMO.len()).filter(|&i| DEMO.is_char_boundary(i)) {
            if let Err(e) = parse("demo", &DEMO[..end], &[]) {
                assert!(!e.0.is_empty());
                assert!(e.0.iter().all(|p| !p.to_string().contains('\n')));
            }
        }
    }

    #[test]
    fn missing_file_cannot_be_read() {
        let err = load(Path::new("no/such/x.toml"), &[]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "no/such/x.toml: cannot read: No such file or directory (os error 2)"
        );
    }

    #[test]
    fn problem_display_forms() {
        let p = |file: &str, line, key: &str| ConfigProblem {
            file: file.into(),
            line,
            key: key.into(),
            message: "m".into(),
        };
        assert_eq!(
            p("a.toml", Some(3), "sip.t1_ms").to_string(),
            "a.toml:3: sip.t1_ms: m"
        );
        assert_eq!(
            p("a.toml", None, "sip.t1_ms").to_string(),
            "a.toml: sip.t1_ms: m"
        );
        assert_eq!(p("a.toml", Some(3), "").to_string(), "a.toml:3: m");
        assert_eq!(
            p("--set", None, "sip.t1_ms").to_string(),
            "--set sip.t1_ms: m"
        );
        let all = ConfigErrors(vec![p("a", Some(1), "k"), p("b", Some(2), "k")]);
        assert_eq!(all.to_string(), "a:1: k: m\nb:2: k: m");
    }
}
