//! The broker under test as a child process: started on an ephemeral loopback port, killed
//! with SIGKILL and restarted on the same data directory and port, stopped with SIGTERM.
//! Every signal goes to the child's own PID.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// Bound on a start or restart (until the broker reports its address).
const START_WAIT: Duration = Duration::from_secs(30);
/// Bound on a graceful stop.
const STOP_WAIT: Duration = Duration::from_secs(20);
/// Log lines kept for the report.
const LOG_TAIL: usize = 200;

/// What the broker's log said, across all its runs.
#[derive(Debug, Default)]
pub struct LogSummary {
    /// WARN lines.
    pub warnings: u64,
    /// ERROR lines.
    pub errors: u64,
    /// Lines that report a panic.
    pub panics: Vec<String>,
    /// The first ERROR lines.
    pub first_errors: Vec<String>,
    /// The last lines.
    pub tail: VecDeque<String>,
}

/// The broker process.
pub struct Broker {
    binary: PathBuf,
    data_dir: PathBuf,
    args: Vec<String>,
    child: Child,
    /// Where it listens for MQTT (the same after every restart).
    pub addr: SocketAddr,
    /// Where its HTTP listener (metrics) is (a new port after every restart).
    pub http: SocketAddr,
    log: Arc<Mutex<LogSummary>>,
}

impl Broker {
    /// Starts `binary` with its default configuration plus an HTTP listener, a store in
    /// `data_dir` (its configuration file goes beside it) and the extra arguments `args`, on
    /// an ephemeral port of 127.0.0.1.
    pub fn start(binary: &Path, data_dir: &Path, args: &[String]) -> Result<Broker, String> {
        let log = Arc::new(Mutex::new(LogSummary::default()));
        let (child, at) = spawn(binary, data_dir, args, 0, &log)?;
        Ok(Broker {
            binary: binary.to_path_buf(),
            data_dir: data_dir.to_path_buf(),
            args: args.to_vec(),
            child,
            addr: at.mqtt,
            http: at.http,
            log,
        })
    }

    /// The PID of the running broker.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL to the broker's PID, then reap it.
    pub fn kill9(&mut self) -> Result<(), String> {
        self.child
            .kill()
            .map_err(|e| format!("SIGKILL to {}: {e}", self.child.id()))?;
        self.child
            .wait()
            .map_err(|e| format!("reaping {}: {e}", self.child.id()))?;
        Ok(())
    }

    /// Starts the broker again on the same data directory and port; a port still held by
    /// the kernel is retried for a while. Returns how long it took to listen.
    pub fn restart(&mut self) -> Result<Duration, String> {
        let started = Instant::now();
        let mut last_error = String::new();
        while started.elapsed() < START_WAIT {
            match spawn(
                &self.binary,
                &self.data_dir,
                &self.args,
                self.addr.port(),
                &self.log,
            ) {
                Ok((child, at)) => {
                    if at.mqtt != self.addr {
                        return Err(format!("restarted on {}, not {}", at.mqtt, self.addr));
                    }
                    self.child = child;
                    self.http = at.http;
                    return Ok(started.elapsed());
                }
                Err(e) => {
                    last_error = e;
                    std::thread::sleep(Duration::from_millis(500));
                }
            }
        }
        Err(format!("no restart within {START_WAIT:?}: {last_error}"))
    }

    /// The exit status, if the broker ended.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// SIGTERM to the broker's PID and a bounded wait for it to exit; SIGKILL after that.
    pub fn stop(&mut self) -> Result<ExitStatus, String> {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .map_err(|e| format!("kill -TERM {pid}: {e}"))?;
        if !sent.success() {
            return Err(format!("kill -TERM {pid} failed"));
        }
        let deadline = Instant::now() + STOP_WAIT;
        while Instant::now() < deadline {
            if let Some(status) = self.exited() {
                return Ok(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.kill9();
        Err(format!("no exit within {STOP_WAIT:?} of SIGTERM; killed"))
    }

    /// The broker's log so far.
    pub fn log(&self) -> parking_lot::MutexGuard<'_, LogSummary> {
        self.log.lock()
    }

    /// Bytes of the store file.
    pub fn store_bytes(&self) -> u64 {
        std::fs::metadata(self.data_dir.join("roost.redb")).map_or(0, |m| m.len())
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if self.exited().is_none() {
            let _ = self.kill9();
        }
    }
}

/// Resident set size of `pid` in KiB (`VmRSS` of `/proc/PID/status`).
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Where a started broker listens.
struct Listening {
    mqtt: SocketAddr,
    http: SocketAddr,
}

/// The address a "listening" log line names, and whether it is the HTTP listener's.
fn listening(line: &str) -> Option<(bool, String)> {
    if !line.contains("listening") {
        return None;
    }
    let addr = line
        .split("local_addr=")
        .nth(1)?
        .split_whitespace()
        .next()?;
    Some((
        line.contains("kind=http") || line.contains("kind=\"http\""),
        addr.to_string(),
    ))
}

/// Starts one broker process and waits for the log lines that name its MQTT and HTTP
/// addresses.
fn spawn(
    binary: &Path,
    data_dir: &Path,
    args: &[String],
    port: u16,
    log: &Arc<Mutex<LogSummary>>,
) -> Result<(Child, Listening), String> {
    let config = data_dir.with_file_name("roost.toml");
    std::fs::write(&config, "[http]\nport = 0\n")
        .map_err(|e| format!("writing {}: {e}", config.display()))?;
    let mut child = Command::new(binary)
        .arg("--bind")
        .arg("127.0.0.1")
        .arg("--port")
        .arg(port.to_string())
        .arg("--data-dir")
        .arg(data_dir)
        .arg("--config")
        .arg(&config)
        .arg("--log-level")
        .arg("info")
        .args(args)
        .env_remove("ROOST_CONFIG")
        .env_remove("ROOST_LOG_FORMAT")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
    let stderr = child.stderr.take().expect("stderr is piped");
    let (addr_tx, addr_rx) = mpsc::channel();
    let sink = Arc::clone(log);
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { return };
            if let Some(found) = listening(&line) {
                let _ = addr_tx.send(found);
            }
            note(&sink, line);
        }
    });
    let deadline = Instant::now() + START_WAIT;
    let (mut mqtt, mut http) = (None, None);
    while mqtt.is_none() || http.is_none() {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok((is_http, addr)) = addr_rx.recv_timeout(left) else {
            let _ = child.kill();
            let status = child.wait().ok();
            let tail = log
                .lock()
                .tail
                .iter()
                .rev()
                .take(5)
                .cloned()
                .collect::<Vec<_>>();
            return Err(format!(
                "broker did not report its addresses (exit {status:?}); last lines: {tail:?}"
            ));
        };
        let addr: SocketAddr = addr
            .parse()
            .map_err(|e| format!("broker reported address {addr:?}: {e}"))?;
        if is_http {
            http = Some(addr);
        } else {
            mqtt = Some(addr);
        }
    }
    Ok((
        child,
        Listening {
            mqtt: mqtt.expect("set"),
            http: http.expect("set"),
        },
    ))
}

/// Counts one log line.
fn note(log: &Mutex<LogSummary>, line: String) {
    let mut log = log.lock();
    if line.contains(" ERROR ") {
        log.errors += 1;
        if log.first_errors.len() < 10 {
            log.first_errors.push(line.clone());
        }
    } else if line.contains(" WARN ") {
        log.warnings += 1;
    }
    if line.contains("panicked") && log.panics.len() < 10 {
        log.panics.push(line.clone());
    }
    if log.tail.len() == LOG_TAIL {
        log.tail.pop_front();
    }
    log.tail.push_back(line);
}
