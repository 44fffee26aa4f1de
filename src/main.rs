//! `switchboard` — the appliance's command line.
//!
//! * `switchboard run [--config FILE] [--set KEY=VALUE]...` starts the
//!   appliance in the foreground (default config
//!   `firmware-config/default.toml`); SIGTERM or Ctrl-C stops it cleanly.
//! * `switchboard check-config FILE [--set KEY=VALUE]...` validates a config:
//!   exit 0 when valid, else exit 1 with one line per problem (file, line,
//!   key, what was expected).
//! * `switchboard --version`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use std::io::IsTerminal;

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
        Command::CheckConfig { file, set } => match switchboard::config::load(&file, &set) {
            Ok(cfg) => {
                println!(
                    "{}: ok ({} users, {} listen addresses)",
                    file.display(),
                    cfg.users.len(),
                    cfg.sip.listen.len()
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

fn run(config: &std::path::Path, set: &[String]) -> ExitCode {
    let cfg = match switchboard::config::load(config, set) {
        Ok(c) => c,
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
        "switchboard starting"
    );
    let prompts = match switchboard::media::prompts::load(config, &cfg) {
        Ok(p) => p,
        Err(errors) => {
            for p in &errors.0 {
                tracing::error!(problem = %p, "a prompt cannot be used");
            }
            return ExitCode::FAILURE;
        }
    };
    match switchboard::shell::run(cfg, prompts) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "switchboard failed");
            ExitCode::FAILURE
        }
    }
}
