//! The rack-agent daemon: parse flags, load config, set up logging, run.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use rack_agent::config::Config;
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(
    name = "rack-agent",
    version,
    about = "Power-controls the servers of one rack through their BMCs"
)]
struct Cli {
    /// Config file.
    #[arg(
        long,
        short,
        global = true,
        default_value = "/etc/rack-agent/rack-agent.toml",
        env = "RACK_AGENT_CONFIG"
    )]
    config: PathBuf,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon (the default).
    Run,
    /// Validate a config file and exit: 0 when valid, 1 with the reason when not.
    CheckConfig {
        /// The file to check (default: --config).
        file: Option<PathBuf>,
    },
}

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut msg = err.to_string();
    let mut src = err.source();
    while let Some(s) = src {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        src = s.source();
    }
    msg
}

/// Under systemd (stderr is the journal stream systemd named in
/// `JOURNAL_STREAM`) logs go to journald with their fields (`SERVER_ID`,
/// `ACTION_ID`, `BMC`, ...) and a syslog `PRIORITY`; otherwise to stderr as text.
fn init_logging(level: &str) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    if stderr_is_journal() {
        if let Ok(journald) = tracing_journald::layer() {
            use tracing_journald::{Priority, PriorityMappings};
            let journald = journald
                .with_field_prefix(None)
                .with_syslog_identifier("rack-agent".into())
                .with_priority_mappings(PriorityMappings {
                    error: Priority::Error,
                    warn: Priority::Warning,
                    info: Priority::Informational,
                    debug: Priority::Debug,
                    trace: Priority::Debug,
                });
            tracing_subscriber::registry()
                .with(filter)
                .with(journald)
                .init();
            return;
        }
    }
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

/// systemd's own test: `JOURNAL_STREAM` is `DEVICE:INODE` of stderr.
fn stderr_is_journal() -> bool {
    use std::os::unix::fs::MetadataExt;
    let Some(v) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let v = v.to_string_lossy();
    let Some((dev, ino)) = v.split_once(':') else {
        return false;
    };
    match (
        dev.parse::<u64>(),
        ino.parse::<u64>(),
        std::fs::metadata("/proc/self/fd/2"),
    ) {
        (Ok(d), Ok(i), Ok(m)) => m.dev() == d && m.ino() == i,
        _ => false,
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Run) {
        Command::CheckConfig { file } => {
            let path = file.unwrap_or(cli.config);
            match Config::load(&path) {
                Ok(c) => {
                    println!(
                        "{}: ok ({} servers in the static inventory{})",
                        path.display(),
                        c.servers.len(),
                        if c.fake().is_some() {
                            ", FAKE BMCs"
                        } else {
                            ""
                        }
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("rack-agent: {}", error_chain(&e));
                    ExitCode::FAILURE
                }
            }
        }
        Command::Run => {
            let config = match Config::load(&cli.config) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("rack-agent: {}", error_chain(&e));
                    return ExitCode::FAILURE;
                }
            };
            init_logging(&config.log_level);
            let runtime = match tokio::runtime::Runtime::new() {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("rack-agent: cannot start the async runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            // The signal handlers first, inside the runtime, before anything
            // can take time: a SIGTERM during start-up is then honoured.
            let stop = {
                let _in_runtime = runtime.enter();
                rack_agent::daemon::shutdown_signal()
            };
            let result = runtime.block_on(rack_agent::daemon::run(config, stop));
            // A start-up stopped early may leave a blocking task (opening the
            // database) that need not be waited for.
            runtime.shutdown_timeout(std::time::Duration::from_secs(2));
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = %error_chain(&e), "rack-agent failed");
                    eprintln!("rack-agent: {}", error_chain(&e));
                    ExitCode::FAILURE
                }
            }
        }
    }
}
