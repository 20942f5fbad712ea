//! A NATS JetStream cluster of `nats-server` child processes on 127.0.0.1, for tests that
//! need a real one (leader loss, restarts).
//!
//! Ports: client and monitoring ports are ephemeral (`-p -1`, `-m -1`) at the first start and
//! read from the server's log; a restart reuses them. Route ports cannot be ephemeral: a
//! JetStream cluster refuses to start without configured routes ("JetStream cluster requires
//! configured routes"), so the first server could not name a route before knowing the others'
//! ports, and a restarted server would come back on a new port its peers do not know. Every
//! server therefore gets a route port chosen up front (bound on 127.0.0.1:0, held while the
//! others are chosen, then released) and all of them list every route URL in `--routes` (a
//! server ignores the route to itself). The cluster is a full mesh that needs no seed: killing
//! any server leaves the others connected, and a restarted server dials them all again. If a
//! chosen port was taken meanwhile, the server exits at start and [`NatsCluster::start`] tries
//! again with new ports.
//!
//! Tests skip with a notice when `nats-server` is not installed, unless
//! `ROOST_CLUSTER=require` is set (CI sets it), in which case they fail.

use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::WAIT;

/// Bound on waits that include a Raft election: nats-server 2.9 waits 4 to 9 s without a
/// leader's heartbeat before it stands for election, which a [`WAIT`] would not always cover.
pub const ELECTION_WAIT: Duration = Duration::from_secs(25);

/// Whether `nats-server` can be run.
pub fn nats_available() -> bool {
    Command::new("nats-server")
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Whether the environment demands the cluster tests run (`ROOST_CLUSTER=require`).
pub fn require_nats() -> bool {
    std::env::var("ROOST_CLUSTER").as_deref() == Ok("require")
}

/// True if the calling test should return early: `nats-server` is missing (with a notice).
/// Panics instead when `ROOST_CLUSTER=require`.
pub fn skip_without_nats() -> bool {
    if nats_available() {
        return false;
    }
    if require_nats() {
        panic!("nats-server is required (ROOST_CLUSTER=require)");
    }
    eprintln!("skipped: nats-server not installed (set ROOST_CLUSTER=require to fail instead)");
    true
}

/// One `nats-server` process of a [`NatsCluster`], killed with SIGKILL (by its PID) when
/// dropped.
pub struct NatsServer {
    /// The server name (`-n`), as JetStream reports it for leaders and replicas.
    pub name: String,
    pub client_port: u16,
    pub route_port: u16,
    /// The HTTP monitoring port (`/jsz`, `/healthz`).
    pub monitor_port: u16,
    /// Log lines (stderr) after the ones that said the server is ready; replaced on restart.
    pub log: mpsc::Receiver<String>,
    child: Option<Child>,
    store_dir: PathBuf,
    cluster_name: String,
    routes: String,
}

impl NatsServer {
    /// `nats://127.0.0.1:PORT` for clients.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.client_port)
    }

    /// The process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the process is still alive.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// SIGKILL by PID, then reap. Nothing happens if it is already stopped.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            child.wait().expect("nats-server reaped");
        }
    }

    /// Starts the server again with the same name, ports and store directory (killing it first
    /// if it still runs), and waits until it listens for clients and routes. Whether it has
    /// rejoined JetStream is [`NatsCluster::restart`]'s wait.
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn()
            .unwrap_or_else(|e| panic!("{} restarts: {e}", self.name));
    }

    /// Waits (bounded) for a log line containing `text`.
    pub fn wait_log(&self, text: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.log.recv_timeout(left) {
                Ok(line) if line.contains(text) => return line,
                Ok(_) => continue,
                Err(_) => panic!("no log line containing {text:?} from {} in time", self.name),
            }
        }
    }

    fn args(&self) -> Vec<OsString> {
        let port = |p: u16| {
            if p == 0 {
                "-1".to_string()
            } else {
                p.to_string()
            }
        };
        vec![
            "-n".into(),
            self.name.clone().into(),
            "-a".into(),
            "127.0.0.1".into(),
            "-p".into(),
            port(self.client_port).into(),
            "-m".into(),
            port(self.monitor_port).into(),
            "-js".into(),
            "-sd".into(),
            self.store_dir.clone().into(),
            "--cluster_name".into(),
            self.cluster_name.clone().into(),
            "--cluster".into(),
            format!("nats://127.0.0.1:{}", self.route_port).into(),
            "--routes".into(),
            self.routes.clone().into(),
        ]
    }

    /// Spawns the process and waits until it is ready; learns the ephemeral ports on the
    /// first start. On failure the process is gone and the error holds its log.
    fn spawn(&mut self) -> Result<(), String> {
        let mut child = Command::new("nats-server")
            .args(self.args())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("nats-server does not start: {e}"))?;
        let stderr = child.stderr.take().expect("stderr piped");
        let (tx, log) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let deadline = Instant::now() + WAIT;
        let mut seen = Vec::new();
        let failed = |child: &mut Child, seen: &[String], why: &str| {
            let _ = child.kill();
            let _ = child.wait();
            format!("{why}; its log:\n{}", seen.join("\n"))
        };
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = match log.recv_timeout(left) {
                Ok(line) => line,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    return Err(failed(&mut child, &seen, "not ready in time"));
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    return Err(failed(&mut child, &seen, "exited at start"));
                }
            };
            if let Some(p) = port_after(&line, "Listening for client connections on ") {
                self.client_port = p;
            } else if let Some(p) = port_after(&line, "Starting http monitor on ") {
                self.monitor_port = p;
            }
            let ready = line.contains("Server is ready");
            seen.push(line);
            if ready {
                break;
            }
        }
        if self.client_port == 0 || self.monitor_port == 0 {
            return Err(failed(&mut child, &seen, "ports not in the log"));
        }
        self.log = log;
        self.child = Some(child);
        Ok(())
    }

    /// `GET /jsz` on the monitoring port, parsed; `None` if the server does not answer.
    fn jsz(&self) -> Option<serde_json::Value> {
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(2)))
            .build()
            .new_agent();
        let mut response = agent
            .get(format!("http://127.0.0.1:{}/jsz", self.monitor_port))
            .call()
            .ok()?;
        let body = response.body_mut().read_to_string().ok()?;
        serde_json::from_str(&body).ok()
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The port in `...{prefix}127.0.0.1:PORT`.
fn port_after(line: &str, prefix: &str) -> Option<u16> {
    let rest = line.split(prefix).nth(1)?;
    rest.trim().rsplit(':').next()?.parse().ok()
}

/// `n` distinct free ports on 127.0.0.1 (all held until every one is chosen).
fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("local address").port())
        .collect()
}

/// A JetStream cluster of `nats-server` processes (named `n1`, `n2`, ...) on 127.0.0.1, each
/// with its store under one temporary directory. Dropping it kills every server.
pub struct NatsCluster {
    pub servers: Vec<NatsServer>,
    // Declared after `servers`, so the servers die before their store is removed.
    dir: tempfile::TempDir,
}

impl NatsCluster {
    /// Starts `n` clustered servers with JetStream and waits until the JetStream meta group
    /// has a leader that sees every server as current, so an R`n` stream can be created.
    pub fn start(n: usize) -> NatsCluster {
        assert!(n >= 1, "a cluster has at least one server");
        let mut last = String::new();
        for _ in 0..3 {
            match Self::try_start(n) {
                Ok(cluster) => return cluster,
                Err(e) => last = e,
            }
        }
        panic!("NATS cluster does not start: {last}");
    }

    fn try_start(n: usize) -> Result<NatsCluster, String> {
        let dir = tempfile::tempdir().expect("temporary directory");
        let route_ports = free_ports(n);
        let routes = route_ports
            .iter()
            .map(|p| format!("nats://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut servers = Vec::with_capacity(n);
        for (i, route_port) in route_ports.into_iter().enumerate() {
            let name = format!("n{}", i + 1);
            let store_dir = dir.path().join(&name);
            std::fs::create_dir_all(&store_dir).expect("store directory");
            let mut server = NatsServer {
                name,
                client_port: 0,
                route_port,
                monitor_port: 0,
                log: mpsc::channel().1,
                child: None,
                store_dir,
                cluster_name: "roost-test".to_string(),
                routes: routes.clone(),
            };
            server.spawn()?;
            servers.push(server);
        }
        let mut cluster = NatsCluster { servers, dir };
        cluster.wait_jetstream_ready(WAIT)?;
        cluster.wait_placement(WAIT)?;
        Ok(cluster)
    }

    /// Waits until the cluster places a stream on every server: creates and deletes an
    /// in-memory stream with one replica per server. A meta leader that lists every server
    /// as current may still lack a server's statistics for a moment and answer "no suitable
    /// peers for placement"; on a loaded machine that was seen to last long enough to fail a
    /// node's start. A cluster that cannot place in time is started again by [`Self::start`].
    fn wait_placement(&self, bound: Duration) -> Result<(), String> {
        let urls = self.urls();
        let replicas = self.servers.len();
        // Callers may run inside a runtime, where another cannot block: a thread of its own.
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            runtime.block_on(async move {
                let deadline = tokio::time::Instant::now() + bound;
                let client = tokio::time::timeout(bound, async_nats::connect(urls))
                    .await
                    .map_err(|_| "no NATS connection in time".to_string())?
                    .map_err(|e| e.to_string())?;
                let js = async_nats::jetstream::new(client);
                let config = async_nats::jetstream::stream::Config {
                    name: "PLACEMENT_PROBE".to_string(),
                    subjects: vec!["placement-probe".to_string()],
                    num_replicas: replicas,
                    storage: async_nats::jetstream::stream::StorageType::Memory,
                    ..Default::default()
                };
                loop {
                    match js.create_stream(config.clone()).await {
                        Ok(_) => break,
                        Err(e) if tokio::time::Instant::now() >= deadline => {
                            return Err(format!("no stream placed in time: {e}"));
                        }
                        Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                    }
                }
                js.delete_stream("PLACEMENT_PROBE")
                    .await
                    .map(|_| ())
                    .map_err(|e| format!("probe stream not deleted: {e}"))
            })
        })
        .join()
        .map_err(|_| "placement probe panicked".to_string())?
    }

    /// The temporary directory holding the servers' stores.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Client URLs of every server, running or not.
    pub fn urls(&self) -> Vec<String> {
        self.servers.iter().map(NatsServer::url).collect()
    }

    /// The index of the server named `name`.
    pub fn index_of(&self, name: &str) -> usize {
        self.servers
            .iter()
            .position(|s| s.name == name)
            .unwrap_or_else(|| panic!("no server named {name}"))
    }

    /// SIGKILL server `i` (by PID) and reap it.
    pub fn kill9(&mut self, i: usize) {
        self.servers[i].kill9();
    }

    /// Restarts server `i` on its ports and store, then waits (bounded by [`ELECTION_WAIT`],
    /// as the meta group may be electing a leader) until the JetStream meta leader sees every
    /// running server, this one included, as current.
    pub fn restart(&mut self, i: usize) {
        self.servers[i].restart();
        if let Err(e) = self.wait_jetstream_ready(ELECTION_WAIT) {
            panic!("{} does not rejoin: {e}", self.servers[i].name);
        }
    }

    /// The JetStream meta leader's name as the running servers agree on it, if they do.
    pub fn meta_leader(&mut self) -> Option<String> {
        let mut leader: Option<String> = None;
        for s in self.servers.iter_mut() {
            if !s.is_running() {
                continue;
            }
            let jsz = s.jsz()?;
            let l = jsz["meta_cluster"]["leader"].as_str()?.to_string();
            match &leader {
                Some(seen) if *seen != l => return None,
                _ => leader = Some(l),
            }
        }
        leader
    }

    /// Waits until the running servers agree on a meta leader and the leader lists every
    /// other running server as a current peer.
    fn wait_jetstream_ready(&mut self, bound: Duration) -> Result<(), String> {
        let deadline = Instant::now() + bound;
        loop {
            if let Some(leader) = self.meta_leader() {
                let i = self.index_of(&leader);
                let peers: Vec<String> = self.servers[i]
                    .jsz()
                    .and_then(|j| j["meta_cluster"]["replicas"].as_array().cloned())
                    .unwrap_or_default()
                    .iter()
                    .filter(|r| r["current"].as_bool() == Some(true))
                    .filter_map(|r| r["name"].as_str().map(str::to_string))
                    .collect();
                let mut all = true;
                for s in self.servers.iter_mut() {
                    if s.name != leader && s.is_running() && !peers.contains(&s.name) {
                        all = false;
                    }
                }
                if all {
                    return Ok(());
                }
            }
            if Instant::now() >= deadline {
                return Err("JetStream meta group not ready in time".to_string());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Connects an async-nats client to any of `urls` (bounded).
pub async fn connect(urls: &[String]) -> async_nats::Client {
    let options = async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(2))
        .request_timeout(Some(Duration::from_secs(5)));
    tokio::time::timeout(WAIT, options.connect(urls.to_vec()))
        .await
        .expect("NATS connection in time")
        .expect("NATS connection")
}

/// The name of the server leading `stream` (from the stream's info), or `None` if none
/// answers in time or the stream has no leader now.
pub async fn stream_leader(urls: &[String], stream: &str) -> Option<String> {
    tokio::time::timeout(WAIT, async {
        let options = async_nats::ConnectOptions::new().connection_timeout(Duration::from_secs(2));
        let client = options.connect(urls.to_vec()).await.ok()?;
        let js = async_nats::jetstream::new(client);
        let mut s = js.get_stream(stream).await.ok()?;
        let info = s.info().await.ok()?;
        info.cluster.as_ref()?.leader.clone()
    })
    .await
    .ok()
    .flatten()
}
