//! The `roost` command: parse flags, load the configuration, run the broker until Ctrl-C or
//! SIGTERM.

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
    /// Address or host name to bind [default: 127.0.0.1].
    #[arg(long, env = "ROOST_BIND")]
    bind: Option<String>,
    /// Configuration file: TOML, or a mosquitto.conf (recognised by its `key value` lines or
    /// a `.conf` name); flags override its keys.
    #[arg(short, long, env = "ROOST_CONFIG")]
    config: Option<PathBuf>,
    /// A mosquitto.conf, whatever its name.
    #[arg(long, conflicts_with = "config")]
    mosquitto_conf: Option<PathBuf>,
    /// Verbose logging, like mosquitto's -v (the same as --log-level debug).
    #[arg(short, long, conflicts_with = "log_level")]
    verbose: bool,
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
    CheckConfig(CheckConfigArgs),
    #[command(subcommand)]
    Store(StoreCommand),
}

/// Check or repair the durable store (the broker must be stopped).
#[derive(Debug, Subcommand)]
enum StoreCommand {
    /// Read every record of the store (on a copy) and report what is readable and what is
    /// damaged; exits 0 if clean, 1 if damaged, 2 if it cannot be read at all.
    Check(StoreArgs),
    /// Rebuild the store from every readable record; the damaged file is kept beside it as
    /// `roost.redb.damaged-<unix seconds>`.
    Repair(StoreArgs),
}

/// Which store.
#[derive(Debug, clap::Args)]
struct StoreArgs {
    /// The broker's data directory (holding roost.redb).
    #[arg(long, env = "ROOST_DATA_DIR", default_value = "roost-data")]
    data_dir: PathBuf,
}

/// Check a configuration file (TOML or mosquitto.conf) and print the settings it gives.
#[derive(Debug, clap::Args)]
struct CheckConfigArgs {
    /// The file (also accepted as `-c FILE`, as for the broker).
    #[arg(required_unless_present = "config")]
    file: Option<PathBuf>,
    /// The file, as `roost -c FILE` takes it.
    #[arg(short = 'c', long = "config", conflicts_with = "file")]
    config: Option<PathBuf>,
    /// Read it as a mosquitto.conf whatever its name.
    #[arg(long)]
    mosquitto: bool,
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
        Some(Command::CheckConfig(args)) => return check_config(&args),
        Some(Command::Store(command)) => return store_command(&command),
        None => {}
    }
    let settings = match settings(&cli) {
        Ok(settings) => settings,
        Err(message) => {
            eprintln!("roost: {message}");
            return ExitCode::from(2);
        }
    };
    let config = settings.config;
    if let Err(e) = init_logging(settings.log_level.as_deref(), settings.log_format) {
        match (&cli.config, settings.level_from_file) {
            (Some(path), true) => eprintln!(
                "roost: configuration error: {}: invalid value for `log_level`: {e}",
                path.display()
            ),
            _ => eprintln!("roost: invalid value for --log-level: {e}"),
        }
        return ExitCode::from(2);
    }
    for warning in &settings.warnings {
        tracing::warn!("{warning}");
    }
    // Before the runtime's threads start (see the module's notes).
    let fds = roost::fds::prepare(config.max_connections);
    if fds.limit != fds.limit_before {
        tracing::info!(
            "open-file limit raised from {} to {}",
            fds.limit_before,
            fds.limit
        );
    }
    tracing::debug!("descriptor table sized for {} descriptors", fds.table);
    // A limit of 0: not known on this system (see `fds::prepare`).
    if fds.limit == 0 {
        // Nothing to compare against.
    } else if config.max_connections == 0 && fds.limit < 4096 {
        // Each connection holds a descriptor; the store, listeners and logs need some too.
        tracing::warn!(
            "the open-file limit is {}: the broker can hold no more than about {} connections (raise `ulimit -n` or LimitNOFILE)",
            fds.limit,
            fds.limit.saturating_sub(32)
        );
    } else if config.max_connections as u64 > fds.limit {
        tracing::warn!(
            "max_connections is {} but the open-file limit is {}: connections beyond it are refused (raise `ulimit -n` or LimitNOFILE)",
            config.max_connections,
            fds.limit
        );
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

/// Everything the broker runs with, from the defaults, the file and the flags.
struct Settings {
    config: Config,
    log_level: Option<String>,
    /// The log level came from the file, not a flag.
    level_from_file: bool,
    log_format: LogFormat,
    /// Keys of a mosquitto.conf that were ignored.
    warnings: Vec<String>,
}

/// Reads the configuration file (TOML or mosquitto.conf) and applies the flags; the error is
/// the message to print, naming the key and the file.
fn settings(cli: &Cli) -> Result<Settings, String> {
    let mut config = Config::default();
    let (mut log_level, mut log_format, mut warnings) = (None, None, Vec::new());
    let file = cli.mosquitto_conf.as_ref().or(cli.config.as_ref());
    if let Some(path) = file {
        let (loaded, ignored) = FileConfig::load_any(path, cli.mosquitto_conf.is_some())
            .map_err(|e| format!("configuration error: {e}"))?;
        log_level = loaded.log_level.clone();
        log_format = loaded.log_format;
        loaded.apply(&mut config, Some(path));
        warnings = ignored;
    }
    // Keys the flags set: a problem with any other key is in the file, if there is one.
    let from_flags = [
        ("port", cli.port.is_some()),
        ("bind", cli.bind.is_some()),
        ("data_dir", cli.data_dir.is_some()),
    ];
    if let Some(port) = cli.port {
        config.port = port;
    }
    if let Some(bind) = &cli.bind {
        config.bind = roost::config::resolve(bind)
            .ok_or_else(|| format!("invalid value for --bind: cannot resolve `{bind}`"))?;
    }
    if let Some(dir) = &cli.data_dir {
        config.data_dir = dir.clone();
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
        let e = match file {
            Some(path) if !flagged => e.in_file(path),
            _ => e,
        };
        return Err(format!("configuration error: {e}"));
    }
    let level_from_file = cli.log_level.is_none() && !cli.verbose;
    let log_level = if cli.verbose {
        Some("debug".to_string())
    } else {
        cli.log_level.clone().or(log_level)
    };
    Ok(Settings {
        config,
        log_level,
        level_from_file,
        log_format: cli.log_format.or(log_format).unwrap_or_default(),
        warnings,
    })
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

/// `roost check-config FILE`: exit 0 and print the effective settings, or exit 2 with the
/// error. Ignored mosquitto keys are listed as warnings.
fn check_config(args: &CheckConfigArgs) -> ExitCode {
    let mut config = Config::default();
    // clap requires one of the two.
    let Some(path) = args.file.as_ref().or(args.config.as_ref()) else {
        return ExitCode::from(2);
    };
    let result = FileConfig::load_any(path, args.mosquitto).and_then(|(file, warnings)| {
        file.apply(&mut config, Some(path));
        config.validate().map_err(|e| e.in_file(path))?;
        Ok(warnings)
    });
    match result {
        Ok(warnings) => {
            for w in &warnings {
                eprintln!("warning: {w}");
            }
            print!("{}", config.describe());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("roost: configuration error: {e}");
            ExitCode::from(2)
        }
    }
}

/// `roost store check|repair`.
fn store_command(command: &StoreCommand) -> ExitCode {
    use roost::store::repair;
    let refused = |e: roost::StoreError| {
        eprintln!("roost store: {e}");
        ExitCode::from(2)
    };
    match command {
        StoreCommand::Check(args) => match repair::check(&args.data_dir) {
            Ok(report) => {
                print!("{}", report.render());
                if report.clean() {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                }
            }
            Err(e) => refused(e),
        },
        StoreCommand::Repair(args) => match repair::repair(&args.data_dir) {
            Ok(done) => {
                print!("{}", done.check.render());
                println!(
                    "repaired: the readable records are in {}; the damaged file is now {}",
                    args.data_dir.join(roost::store::DB_FILE).display(),
                    done.damaged_copy.display()
                );
                ExitCode::SUCCESS
            }
            Err(e) => refused(e),
        },
    }
}

async fn run(config: Config) -> ExitCode {
    // A file size limit (`ulimit -f`) reached by the store must fail the write (EFBIG), which
    // the store handles like a full disk, instead of killing the process with SIGXFSZ. The
    // handler stays installed for the life of the process.
    #[cfg(unix)]
    let _xfsz =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::from_raw(libc::SIGXFSZ));
    let handle = match roost::start(config).await {
        Ok(handle) => handle,
        Err(e) => {
            // Once, through the log (stderr, in the chosen format).
            tracing::error!("cannot start: {e}");
            // A damaged store or a configuration error: starting again will not help (exit
            // status 2, which the systemd unit does not restart on).
            let hopeless = matches!(
                e,
                roost::StartError::Config(_)
                    | roost::StartError::Store(
                        roost::StoreError::Damaged { .. }
                            | roost::StoreError::Corrupt { .. }
                            | roost::StoreError::MissingMessage { .. }
                            | roost::StoreError::Schema { .. }
                    )
            );
            return if hopeless {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            };
        }
    };
    // The handlers are in place before systemd hears READY=1: a SIGHUP sent right after it
    // must reload, not end the process by default action.
    let signals = Signals::install();
    // Under systemd (Type=notify), the unit is active from here on.
    notify_systemd(&[sd_notify::NotifyState::Ready]);
    signals.wait(&handle).await;
    tracing::info!("shutting down");
    notify_systemd(&[sd_notify::NotifyState::Stopping]);
    handle.shutdown().await;
    ExitCode::SUCCESS
}

/// Tells systemd (when it started us with `NOTIFY_SOCKET`) how the service stands.
fn notify_systemd(states: &[sd_notify::NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "could not notify systemd");
    }
}

/// The signals the running broker answers: Ctrl-C and SIGTERM stop it, SIGHUP reloads the
/// password and ACL files and the TLS certificates.
struct Signals {
    #[cfg(unix)]
    streams: Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>,
}

impl Signals {
    /// Installs the handlers; from here on these signals are queued, never fatal.
    fn install() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let streams = match (
                signal(SignalKind::terminate()),
                signal(SignalKind::hangup()),
            ) {
                (Ok(term), Ok(hup)) => Some((term, hup)),
                _ => None,
            };
            Signals { streams }
        }
        #[cfg(not(unix))]
        Signals {}
    }

    /// Waits for Ctrl-C or SIGTERM, reloading on each SIGHUP meanwhile.
    async fn wait(self, handle: &roost::BrokerHandle) {
        #[cfg(unix)]
        {
            let Some((mut term, mut hup)) = self.streams else {
                let _ = tokio::signal::ctrl_c().await;
                return;
            };
            loop {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => return,
                    _ = term.recv() => return,
                    _ = hup.recv() => {
                        let mut reloading = vec![sd_notify::NotifyState::Reloading];
                        reloading.extend(sd_notify::NotifyState::monotonic_usec_now().ok());
                        notify_systemd(&reloading);
                        tracing::info!("SIGHUP: reloading password and ACL files and TLS certificates");
                        // Failures are logged inside; the previous files stay in force.
                        let _ = handle.reload_auth();
                        let _ = handle.reload_tls();
                        notify_systemd(&[sd_notify::NotifyState::Ready]);
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
}
