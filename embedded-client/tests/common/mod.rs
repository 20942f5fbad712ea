//! Shared helpers of the host tests: a tokio clock, test brokers, fault-injecting transports.
#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use embedded_io_adapters::tokio_1::FromTokio;
use roost_client::{
    Client, Clock, ConnectOptions, Error, Event, Protocol, QoS, RamStore, SessionStore,
};
use tokio::net::TcpStream;

/// Bound on every wait in the tests.
pub const WAIT: Duration = Duration::from_secs(5);

/// A [`Clock`] on tokio time (works with `tokio::time::pause`).
#[derive(Clone, Copy)]
pub struct TokioClock(pub tokio::time::Instant);

impl TokioClock {
    pub fn new() -> Self {
        TokioClock(tokio::time::Instant::now())
    }
}

impl Clock for TokioClock {
    fn now_ms(&mut self) -> u64 {
        self.0.elapsed().as_millis() as u64
    }
    fn sleep_until(&mut self, deadline_ms: u64) -> impl Future<Output = ()> {
        tokio::time::sleep_until(self.0 + Duration::from_millis(deadline_ms))
    }
}

/// Both protocol versions this build supports.
pub fn protocols() -> Vec<Protocol> {
    vec![
        Protocol::V311,
        #[cfg(feature = "v5")]
        Protocol::V5,
    ]
}

pub fn tag(p: Protocol) -> &'static str {
    match p {
        Protocol::V311 => "v3",
        #[cfg(feature = "v5")]
        Protocol::V5 => "v5",
    }
}

pub fn opts(id: &str, p: Protocol) -> ConnectOptions<'_> {
    let mut o = ConnectOptions::new(id);
    o.protocol = p;
    o.keep_alive_secs = 30;
    o
}

pub fn persistent(id: &str, p: Protocol) -> ConnectOptions<'_> {
    let mut o = opts(id, p);
    o.clean_session = false;
    #[cfg(feature = "v5")]
    {
        o.session_expiry_secs = 300;
    }
    o
}

// ---- transports --------------------------------------------------------------------------

/// A transport wrapper for fault injection: all bytes read and written draw from a shared
/// budget; once it is spent every call fails. `kill` makes it fail at once.
pub struct Faulty<T> {
    inner: T,
    budget: Arc<AtomicUsize>,
    dead: Arc<AtomicBool>,
}

#[derive(Clone)]
pub struct FaultHandle {
    pub budget: Arc<AtomicUsize>,
    pub dead: Arc<AtomicBool>,
}

impl FaultHandle {
    pub fn kill(&self) {
        self.dead.store(true, Ordering::SeqCst);
    }
}

impl<T> Faulty<T> {
    pub fn new(inner: T, budget: usize) -> (Self, FaultHandle) {
        let budget = Arc::new(AtomicUsize::new(budget));
        let dead = Arc::new(AtomicBool::new(false));
        let h = FaultHandle {
            budget: budget.clone(),
            dead: dead.clone(),
        };
        (
            Faulty {
                inner,
                budget,
                dead,
            },
            h,
        )
    }

    /// How many of `want` bytes may pass; `Err` once the budget is spent.
    fn allow(&self, want: usize) -> Result<usize, std::io::Error> {
        let left = self.budget.load(Ordering::SeqCst);
        if self.dead.load(Ordering::SeqCst) || left == 0 {
            self.dead.store(true, Ordering::SeqCst);
            return Err(std::io::ErrorKind::ConnectionReset.into());
        }
        Ok(want.min(left))
    }
}

impl<T> embedded_io::ErrorType for Faulty<T> {
    type Error = std::io::Error;
}

impl<T: embedded_io_async::Read<Error = std::io::Error>> embedded_io_async::Read for Faulty<T> {
    async fn read(&mut self, buf: &mut [u8]) -> Result<usize, Self::Error> {
        let n = self.allow(buf.len())?;
        let got = self.inner.read(&mut buf[..n]).await?;
        if self.dead.load(Ordering::SeqCst) {
            return Err(std::io::ErrorKind::ConnectionReset.into());
        }
        self.budget.fetch_sub(got, Ordering::SeqCst);
        Ok(got)
    }
}

impl<T: embedded_io_async::Write<Error = std::io::Error>> embedded_io_async::Write for Faulty<T> {
    async fn write(&mut self, buf: &[u8]) -> Result<usize, Self::Error> {
        let n = self.allow(buf.len())?;
        let put = self.inner.write(&buf[..n]).await?;
        self.budget.fetch_sub(put, Ordering::SeqCst);
        Ok(put)
    }
    async fn flush(&mut self) -> Result<(), Self::Error> {
        if self.dead.load(Ordering::SeqCst) {
            return Err(std::io::ErrorKind::ConnectionReset.into());
        }
        self.inner.flush().await
    }
}

pub type Tcp = FromTokio<TcpStream>;
pub type FaultyTcp = Faulty<Tcp>;
pub type TestClient<'b, T = Tcp> = Client<'b, T, TokioClock, RamStore<'b>>;

pub async fn tcp(addr: SocketAddr) -> Tcp {
    let s = tokio::time::timeout(WAIT, TcpStream::connect(addr))
        .await
        .expect("connect timed out")
        .expect("connect");
    s.set_nodelay(true).unwrap();
    FromTokio::new(s)
}

pub async fn faulty(addr: SocketAddr, budget: usize) -> (FaultyTcp, FaultHandle) {
    Faulty::new(tcp(addr).await, budget)
}

/// Buffers for one client: tx, rx, store.
pub struct Bufs {
    pub tx: Vec<u8>,
    pub rx: Vec<u8>,
    pub store: Vec<u8>,
}

impl Bufs {
    pub fn new(tx: usize, rx: usize, store: usize) -> Self {
        Bufs {
            tx: vec![0; tx],
            rx: vec![0; rx],
            store: vec![0; store],
        }
    }
    pub fn std() -> Self {
        Self::new(1024, 1024, 4096)
    }
    pub fn client<T>(&mut self) -> TestClient<'_, T>
    where
        T: embedded_io_async::Read + embedded_io_async::Write,
    {
        Client::new(
            TokioClock::new(),
            RamStore::new(&mut self.store),
            &mut self.tx,
            &mut self.rx,
        )
    }
}

// ---- a recording transport ---------------------------------------------------------------

/// What crossed a transport, in order: `true` = read from the broker.
pub type TapLog = Arc<Mutex<Vec<(bool, Vec<u8>)>>>;

/// A transport that records every byte read and written, in order.
pub struct Tap {
    pub inner: Tcp,
    pub log: TapLog,
}

impl embedded_io::ErrorType for Tap {
    type Error = std::io::Error;
}

impl embedded_io_async::Read for Tap {
    async fn read(&mut self, buf: &mut [u8]) -> Result<usize, std::io::Error> {
        let n = self.inner.read(buf).await?;
        self.log.lock().unwrap().push((true, buf[..n].to_vec()));
        Ok(n)
    }
}

impl embedded_io_async::Write for Tap {
    async fn write(&mut self, buf: &[u8]) -> Result<usize, std::io::Error> {
        let n = self.inner.write(buf).await?;
        self.log.lock().unwrap().push((false, buf[..n].to_vec()));
        Ok(n)
    }
    async fn flush(&mut self) -> Result<(), std::io::Error> {
        self.inner.flush().await
    }
}

/// Splits a byte stream into whole packets as they complete.
#[derive(Default)]
pub struct Splitter(Vec<u8>);

impl Splitter {
    /// Adds `bytes`; returns the packets they complete.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<Vec<u8>> {
        self.0.extend_from_slice(bytes);
        let mut packets = Vec::new();
        while let Some(h) = roost_wire::FixedHeader::parse(&self.0).expect("framing") {
            if self.0.len() < h.packet_len() {
                break;
            }
            packets.push(self.0.drain(..h.packet_len()).collect());
        }
        packets
    }
}

// ---- events ------------------------------------------------------------------------------

/// An owned copy of an [`Event`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ev {
    Msg {
        topic: String,
        payload: Vec<u8>,
        qos: u8,
        retain: bool,
        dup: bool,
    },
    PubAck(u16),
    PubRec(u16),
    PubComp(u16),
    SubAck(u16, Vec<u8>),
    UnsubAck(u16),
}

impl Ev {
    pub fn from(e: &Event<'_>) -> Ev {
        match *e {
            Event::Message(m) => Ev::Msg {
                topic: m.topic.into(),
                payload: m.payload.into(),
                qos: m.qos as u8,
                retain: m.retain,
                dup: m.dup,
            },
            Event::PubAck(p) => Ev::PubAck(p),
            #[cfg(feature = "qos2")]
            Event::PubRec(p) => Ev::PubRec(p),
            #[cfg(feature = "qos2")]
            Event::PubComp(p) => Ev::PubComp(p),
            Event::SubAck { pid, codes } => Ev::SubAck(pid, codes.into()),
            Event::UnsubAck { pid } => Ev::UnsubAck(pid),
        }
    }

    pub fn msg(topic: &str, payload: &[u8], qos: u8) -> Ev {
        Ev::Msg {
            topic: topic.into(),
            payload: payload.into(),
            qos,
            retain: false,
            dup: false,
        }
    }

    /// The message with the retain and dup flags cleared (for comparisons).
    pub fn plain(&self) -> Ev {
        match self {
            Ev::Msg {
                topic,
                payload,
                qos,
                ..
            } => Ev::msg(topic, payload, *qos),
            e => e.clone(),
        }
    }
}

/// The next event, failing the test after [`WAIT`].
pub async fn next<T, S: SessionStore, const O: usize, const I: usize>(
    c: &mut Client<'_, T, TokioClock, S, O, I>,
) -> Result<Ev, Error>
where
    T: embedded_io_async::Read + embedded_io_async::Write,
{
    match tokio::time::timeout(WAIT, c.poll()).await {
        Ok(r) => r.map(|e| Ev::from(&e)),
        Err(_) => panic!("no event within {WAIT:?}"),
    }
}

/// Polls until `want` arrives (other events are returned in order in the Vec).
pub async fn until<T, S: SessionStore, const O: usize, const I: usize>(
    c: &mut Client<'_, T, TokioClock, S, O, I>,
    want: &Ev,
) -> Vec<Ev>
where
    T: embedded_io_async::Read + embedded_io_async::Write,
{
    let mut seen = Vec::new();
    loop {
        let e = next(c).await.expect("poll");
        if &e == want {
            return seen;
        }
        seen.push(e);
    }
}

/// Subscribes and waits for the SUBACK; returns its codes.
pub async fn subscribe<T, S: SessionStore, const O: usize, const I: usize>(
    c: &mut Client<'_, T, TokioClock, S, O, I>,
    filter: &str,
    qos: QoS,
) -> Vec<u8>
where
    T: embedded_io_async::Read + embedded_io_async::Write,
{
    let pid = c
        .subscribe(&[roost_client::Subscription::new(filter, qos)])
        .await
        .expect("subscribe");
    loop {
        if let Ev::SubAck(p, codes) = next(c).await.expect("poll") {
            assert_eq!(p, pid);
            return codes;
        }
    }
}

/// Collects messages until `marker` (a message payload) arrives; returns the others.
pub async fn messages_until<T, S: SessionStore, const O: usize, const I: usize>(
    c: &mut Client<'_, T, TokioClock, S, O, I>,
    marker: &[u8],
) -> Vec<Ev>
where
    T: embedded_io_async::Read + embedded_io_async::Write,
{
    let mut out = Vec::new();
    loop {
        match next(c).await.expect("poll") {
            Ev::Msg { payload, .. } if payload == marker => return out,
            e @ Ev::Msg { .. } => out.push(e),
            _ => {}
        }
    }
}

// ---- brokers -----------------------------------------------------------------------------

/// A broker the interop tests can run against. Add a variant (and an arm in [`start`]) to
/// run every interop test against another broker, e.g. Roost in-process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Mosquitto,
    /// The Roost broker, started in-process on an ephemeral port.
    Roost,
}

/// A running broker; stopped on drop.
pub struct RunningBroker {
    pub addr: SocketAddr,
    pub backend: Backend,
    _guard: Box<dyn Send>,
}

/// Every backend available here (a missing one prints a notice and is skipped, unless
/// `ROOST_INTEROP=require`, which makes it a failure).
pub fn backends() -> Vec<Backend> {
    vec![Backend::Roost, Backend::Mosquitto]
}

/// Starts `backend`, or `None` (with a notice) when it is not installed.
pub async fn start(backend: Backend) -> Option<RunningBroker> {
    match backend {
        Backend::Mosquitto => start_mosquitto().await,
        Backend::Roost => Some(start_roost().await),
    }
}

async fn start_roost() -> RunningBroker {
    let config = roost::Config {
        port: 0,
        in_memory: true,
        ..roost::Config::default()
    };
    let handle = roost::start(config).await.expect("roost starts");
    RunningBroker {
        addr: handle.local_addr(),
        backend: Backend::Roost,
        _guard: Box::new(handle),
    }
}

/// Starts every available backend.
pub async fn brokers() -> Vec<RunningBroker> {
    let mut v = Vec::new();
    for b in backends() {
        if let Some(r) = start(b).await {
            v.push(r);
        }
    }
    v
}

struct Mosquitto {
    child: Child,
    dir: std::path::PathBuf,
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        // Child::kill signals this child's own PID.
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The mosquitto binary: `$MOSQUITTO_BIN` if set (`none` = pretend it is missing), else
/// searched in `$PATH` and the usual sbin directories.
fn find_mosquitto() -> Option<std::path::PathBuf> {
    if let Some(b) = std::env::var_os("MOSQUITTO_BIN") {
        return (b != "none").then(|| b.into());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    let extra = ["/usr/sbin", "/usr/local/sbin", "/sbin"].map(std::path::PathBuf::from);
    std::env::split_paths(&path)
        .chain(extra)
        .map(|d| d.join("mosquitto"))
        .find(|p| p.is_file())
}

fn required() -> bool {
    std::env::var("ROOST_INTEROP").as_deref() == Ok("require")
}

static SEQ: AtomicUsize = AtomicUsize::new(0);

async fn start_mosquitto() -> Option<RunningBroker> {
    start_mosquitto_with("").await
}

/// The development certificates of the repository (`certs/`).
pub fn certs() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("certs")
}

/// Starts mosquitto with `listener_extra` appended to its listener (e.g. TLS settings), or
/// `None` (with a notice) when it is not installed.
pub async fn start_mosquitto_with(listener_extra: &str) -> Option<RunningBroker> {
    let Some(bin) = find_mosquitto() else {
        if required() {
            panic!("mosquitto not found and ROOST_INTEROP=require");
        }
        // Straight to the process's stderr, so the notice shows even with captured output.
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "NOTICE: mosquitto binary not found; skipping mosquitto interop test \
             (set ROOST_INTEROP=require to fail instead)"
        );
        return None;
    };
    for _attempt in 0..5 {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let dir = std::env::temp_dir().join(format!(
            "roost-client-mosq-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let conf = dir.join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\n{listener_extra}allow_anonymous true\n\
                 persistence false\nlog_dest none\nmax_inflight_messages 10\n"
            ),
        )
        .unwrap();
        let child = Command::new(&bin)
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn mosquitto");
        let mut guard = Mosquitto { child, dir };
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        // Bounded wait until it accepts connections (or exits, e.g. port taken).
        for _ in 0..250 {
            if let Ok(Some(_)) = guard.child.try_wait() {
                break;
            }
            if TcpStream::connect(addr).await.is_ok() {
                return Some(RunningBroker {
                    addr,
                    backend: Backend::Mosquitto,
                    _guard: Box::new(guard),
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        drop(guard);
    }
    panic!("mosquitto did not start");
}
