//! The `roost` binary as a child process, for crash and signal tests.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;

use super::WAIT;

/// The broker binary as a child process, killed with SIGKILL (by its PID) when dropped.
pub struct BrokerProcess {
    pub child: Child,
    pub addr: SocketAddr,
    /// Log lines after the one that gave the address.
    pub log: mpsc::Receiver<String>,
}

impl BrokerProcess {
    /// Starts the broker on an ephemeral port with `data_dir` and a config file holding
    /// `max_queued_messages = 100000` plus `extra_config`.
    pub fn start(data_dir: &Path) -> BrokerProcess {
        Self::start_with(data_dir, "")
    }

    /// As [`BrokerProcess::start`], with more configuration lines.
    pub fn start_with(data_dir: &Path, extra_config: &str) -> BrokerProcess {
        let config = data_dir.join("roost.toml");
        std::fs::write(
            &config,
            format!("max_queued_messages = 100000\n{extra_config}"),
        )
        .expect("config written");
        let mut args: Vec<std::ffi::OsString> =
            ["--port", "0", "--log-level", "info", "--data-dir"]
                .map(Into::into)
                .to_vec();
        args.push(data_dir.into());
        args.push("--config".into());
        args.push(config.into());
        Self::spawn(&args)
    }

    /// Starts the broker with exactly `args`; its log must name the address it listens on.
    pub fn spawn(args: &[std::ffi::OsString]) -> BrokerProcess {
        Self::spawn_env(args, &[])
    }

    /// As [`BrokerProcess::spawn`], with environment variables.
    pub fn spawn_env(args: &[std::ffi::OsString], env: &[(&str, &Path)]) -> BrokerProcess {
        let mut command = Command::new(env!("CARGO_BIN_EXE_roost"));
        command.args(args).envs(env.iter().map(|(k, v)| (*k, *v)));
        Self::spawn_command(command)
    }

    /// As [`BrokerProcess::spawn`], started with the open-file limit at `soft` (and `hard`):
    /// util-linux's `prlimit` sets it and then becomes the broker (same PID).
    pub fn spawn_with_nofile(soft: u64, hard: u64, args: &[std::ffi::OsString]) -> BrokerProcess {
        let mut command = Command::new("prlimit");
        command
            .arg(format!("--nofile={soft}:{hard}"))
            .arg(env!("CARGO_BIN_EXE_roost"))
            .args(args);
        Self::spawn_command(command)
    }

    fn spawn_command(mut command: Command) -> BrokerProcess {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("broker binary starts");
        let stderr = child.stderr.take().expect("stderr piped");
        let (addr_tx, addr_rx) = mpsc::channel();
        let (log_tx, log) = mpsc::channel();
        std::thread::spawn(move || {
            let mut addr_tx = Some(addr_tx);
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { return };
                // `local_addr=...` in text lines, `"local_addr":"..."` in JSON ones.
                let addr = line
                    .split("local_addr=")
                    .nth(1)
                    .and_then(|rest| rest.split_whitespace().next())
                    .or_else(|| {
                        let rest = line.split("\"local_addr\":\"").nth(1)?;
                        rest.split('"').next()
                    });
                if let Some(addr) = addr
                    && let Some(tx) = addr_tx.take()
                {
                    let _ = tx.send(addr.to_string());
                    continue;
                }
                let _ = log_tx.send(line);
            }
        });
        let addr = addr_rx
            .recv_timeout(WAIT)
            .expect("broker reports its address")
            .parse()
            .expect("a socket address");
        BrokerProcess { child, addr, log }
    }

    /// Waits (bounded) for a log line containing `text`.
    pub fn wait_log(&self, text: &str) -> String {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.log.recv_timeout(left) {
                Ok(line) if line.contains(text) => return line,
                Ok(_) => continue,
                Err(_) => panic!("no log line containing {text:?} in time"),
            }
        }
    }

    /// Sends a signal to the broker's own PID.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("kill runs");
        assert!(status.success());
    }

    /// SIGKILL, then reap.
    pub fn kill9(mut self) {
        self.child.kill().expect("SIGKILL delivered");
        self.child.wait().expect("reaped");
    }
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
