//! `switchboard` — the appliance's command line.
//!
//! * `switchboard run [--config FILE] [--set KEY=VALUE]...` starts the
//!   appliance in the foreground (default config
//!   `firmware-config/default.toml`); SIGTERM or Ctrl-C stops it cleanly.
//! * `switchboard check-config FILE [--set KEY=VALUE]...` validates a config
//!   and the `[prompts]` files it names: exit 0 when valid, else exit 1 with
//!   one line per problem (file, line, key, what was expected).
//! * `switchboard --version`.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use switchboard::config::{Config, ConfigErrors, ConfigProblem};
use switchboard::crm::Directory;
use switchboard::media::prompts::{self, Prompts};

#[derive(Parser)]
#[command(
    name = "switchboard",
    version,
    about = "Contact-center telephony appliance"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start the appliance in the foreground.
    Run {
        /// Config file.
        #[arg(long, default_value = "firmware-config/default.toml")]
        config: PathBuf,
        /// Override a config key: dotted.key=TOML value (repeatable), e.g.
        /// --set 'sip.listen=["udp:127.0.0.1:15060"]'.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
    },
    /// Validate a config file without starting anything.
    CheckConfig {
        file: PathBuf,
        /// Overrides to apply before checking, as for `run`.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig { file, set } => match load(&file, &set) {
            Ok((cfg, prompts, directory)) => {
                println!(
                    "{}: ok ({} users, {} listen addresses, {} prompts, {} queues, {} menus, {} contacts)",
                    file.display(),
                    cfg.users.len(),
                    cfg.sip.listen.len(),
                    prompts.len(),
                    cfg.contact.queues.len(),
                    cfg.contact.menus.len(),
                    directory.as_ref().map_or(0, |d| d.len())
                );
                ExitCode::SUCCESS
            }
            Err(errors) => {
                for p in &errors.0 {
                    eprintln!("{p}");
                }
                ExitCode::FAILURE
            }
        },
        Command::Run { config, set } => run(&config, &set),
    }
}

/// The config at `file` with the overrides `set`, the `[prompts]` it names
/// decoded and its CRM directory read: what `check-config` checks and
/// `run` starts from.
fn load(
    file: &Path,
    set: &[String],
) -> Result<(Config, Prompts, Option<Arc<Directory>>), ConfigErrors> {
    let mut cfg = switchboard::config::load(file, set)?;
    // Files the config names are relative to its directory.
    if let Some((cert, key)) = cfg.cti.tls.as_mut() {
        let dir = file.parent().unwrap_or(Path::new(""));
        *cert = dir.join(&*cert);
        *key = dir.join(&*key);
    }
    let prompts = prompts::load(file, &cfg)?;
    let directory = load_directory(file, &cfg)?;
    Ok((cfg, prompts, directory))
}

/// `crm.directory`, relative to the config file's directory, when the
/// screen pops come from it (`crm.lookup.url` empty).
fn load_directory(file: &Path, cfg: &Config) -> Result<Option<Arc<Directory>>, ConfigErrors> {
    let path = &cfg.crm.directory;
    if path.as_os_str().is_empty() || !cfg.crm.lookup.url.is_empty() {
        return Ok(None);
    }
    let path = file.parent().unwrap_or(Path::new("")).join(path);
    Directory::load(&path)
        .map(|d| Some(Arc::new(d)))
        .map_err(|e| {
            ConfigErrors(vec![ConfigProblem {
                file: file.display().to_string(),
                line: None,
                key: "crm.directory".into(),
                message: e.to_string(),
            }])
        })
}

fn run(config: &Path, set: &[String]) -> ExitCode {
    // Refused before logging is set up or anything is created, with the
    // same lines as `check-config`.
    let (cfg, prompts, directory) = match load(config, set) {
        Ok(loaded) => loaded,
        Err(errors) => {
            eprintln!("switchboard: refusing to start, the config has problems:");
            for p in &errors.0 {
                eprintln!("{p}");
            }
            return ExitCode::FAILURE;
        }
    };
    let filter = match tracing_subscriber::EnvFilter::try_new(&cfg.node.log) {
        Ok(f) => f,
        Err(e) => {
            eprintln!(
                "{}: node.log: {:?} is not a log filter: {e}",
                config.display(),
                cfg.node.log
            );
            return ExitCode::FAILURE;
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    if let Err(e) = std::fs::create_dir_all(&cfg.node.data_dir) {
        tracing::error!(dir = %cfg.node.data_dir.display(), error = %e, "node.data_dir: cannot create the data directory");
        return ExitCode::FAILURE;
    }
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        config = %config.display(),
        prompts = prompts.len(),
        "switchboard starting"
    );
    match switchboard::shell::run(cfg, prompts, directory) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "switchboard failed");
            ExitCode::FAILURE
        }
    }
}
