//! The `roost` command: parse flags, load the configuration, run the broker until Ctrl-C or
//! SIGTERM.

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use roost::auth::{PasswdArgs, passwd_command};
use roost::config::{Config, FileConfig, LogFormat};
use roost::ctl::{CtlArgs, ctl_command};
use tracing_subscriber::EnvFilter;

/// Roost: an MQTT 3.1.1 and 5.0 broker.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// TCP port to listen on [default: 1883].
    #[arg(short, long, env = "ROOST_PORT")]
    port: Option<u16>,
    /// Address to bind [default: 127.0.0.1].
    #[arg(long, env = "ROOST_BIND")]
    bind: Option<IpAddr>,
    /// TOML configuration file; flags override its keys.
    #[arg(short, long, env = "ROOST_CONFIG")]
    config: Option<PathBuf>,
    /// Log filter such as `info` or `roost=debug` [default: info]. RUST_LOG also works.
    #[arg(long, env = "ROOST_LOG_LEVEL")]
    log_level: Option<String>,
    /// Log line format: `text` or `json` (one object per line) [default: text].
    #[arg(long, env = "ROOST_LOG_FORMAT", value_enum)]
    log_format: Option<LogFormat>,
    /// Directory for durable state [default: roost-data].
    #[arg(long, env = "ROOST_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Keep all state in memory: no store, nothing survives a restart.
    #[arg(long)]
    in_memory: bool,
    /// When commits reach the disk: `fsync` (default) or `buffered`.
    #[arg(long, value_parser = parse_durability)]
    durability: Option<roost::store::Durability>,
}

#[derive(Debug, Subcommand)]
enum Command {
    Passwd(PasswdArgs),
    Ctl(CtlArgs),
}

fn parse_durability(s: &str) -> Result<roost::store::Durability, String> {
    match s {
        "fsync" => Ok(roost::store::Durability::Fsync),
        "buffered" => Ok(roost::store::Durability::Buffered),
        _ => Err(format!("`{s}` is not one of: fsync, buffered")),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Passwd(args)) => {
            return match passwd_command(args) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("roost passwd: {e}");
                    ExitCode::FAILURE
                }
            };
        }
        Some(Command::Ctl(args)) => {
            return match ctl_command(&args, &mut std::io::stdout().lock()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("roost ctl: {e}");
                    ExitCode::FAILURE
                }
            };
        }
        None => {}
    }
    let mut config = Config::default();
    let mut log_level = None;
    let mut log_format = None;
    // Keys the flags set: a problem with any other key is in the file, if there is one.
    let from_flags = [
        ("port", cli.port.is_some()),
        ("bind", cli.bind.is_some()),
        ("data_dir", cli.data_dir.is_some()),
    ];
    if let Some(path) = &cli.config {
        match FileConfig::load(path) {
            Ok(file) => {
                log_level = file.log_level.clone();
                log_format = file.log_format;
                file.apply(&mut config, Some(path));
            }
            Err(e) => {
                eprintln!("roost: configuration error: {e}");
                return ExitCode::from(2);
            }
        }
    }
    if let Some(port) = cli.port {
        config.port = port;
    }
    if let Some(bind) = cli.bind {
        config.bind = bind;
    }
    if let Some(dir) = cli.data_dir {
        config.data_dir = dir;
    }
    if cli.in_memory {
        config.in_memory = true;
    }
    if let Some(durability) = cli.durability {
        config.durability = durability;
    }
    if let Err(e) = config.validate() {
        let flagged = from_flags
            .iter()
            .any(|(key, set)| *set && e.key() == Some(*key));
        let e = match &cli.config {
            Some(path) if !flagged => e.in_file(path),
            _ => e,
        };
        eprintln!("roost: configuration error: {e}");
        return ExitCode::from(2);
    }
    let (log_level, from_file) = match (cli.log_level, log_level) {
        (Some(flag), _) => (Some(flag), false),
        (None, file) => (file, true),
    };
    let log_format = cli.log_format.or(log_format).unwrap_or_default();
    if let Err(e) = init_logging(log_level.as_deref(), log_format) {
        match (&cli.config, from_file) {
            (Some(path), true) => eprintln!(
                "roost: configuration error: {}: invalid value for `log_level`: {e}",
                path.display()
            ),
            _ => eprintln!("roost: invalid value for --log-level: {e}"),
        }
        return ExitCode::from(2);
    }

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("roost: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(config))
}

/// `--log-level` (or the file's `log_level`) wins; otherwise RUST_LOG; otherwise `info`.
/// Lines go to stderr, as text or as one JSON object each.
fn init_logging(level: Option<&str>, format: LogFormat) -> Result<(), String> {
    let filter = match level {
        Some(level) => EnvFilter::try_new(level).map_err(|e| format!("{level}: {e}"))?,
        None => EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| EnvFilter::new("info,rustls=error")),
    };
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
    Ok(())
}

async fn run(config: Config) -> ExitCode {
    let handle = match roost::start(config).await {
        Ok(handle) => handle,
        Err(e) => {
            // Once, through the log (stderr, in the chosen format).
            tracing::error!("cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    wait_for_signal(&handle).await;
    tracing::info!("shutting down");
    handle.shutdown().await;
    ExitCode::SUCCESS
}

/// Waits for Ctrl-C or SIGTERM; SIGHUP reloads the password and ACL files meanwhile.
async fn wait_for_signal(handle: &roost::BrokerHandle) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut hup)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::hangup()),
        ) else {
            let _ = tokio::signal::ctrl_c().await;
            return;
        };
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => return,
                _ = term.recv() => return,
                _ = hup.recv() => {
                    tracing::info!("SIGHUP: reloading password and ACL files");
                    // A failure is logged inside; the previous files stay in force.
                    let _ = handle.reload_auth();
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = handle;
        let _ = tokio::signal::ctrl_c().await;
    }
}
