//! Bridges between Roost and the real mosquitto broker (2.0): Roost is the bridging side,
//! mosquitto the remote one, started per test as a child process on an ephemeral port of
//! 127.0.0.1 with a `mosquitto.conf` written into a temporary directory.
//!
//! Each test checks with real clients on both sides: raw clients on Roost's codec, and raw
//! clients or `mosquitto_sub` on mosquitto's side. Where a remote must close connections
//! that mosquitto would take, a TCP gate of the test stands in front of it ([`Gate`]).
//!
//! Skipped with a notice when mosquitto (the broker, `mosquitto_sub`, `mosquitto_passwd`) is
//! not installed, unless `ROOST_INTEROP=require` is set (CI sets it), in which case its
//! absence fails the test.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering::SeqCst;
use std::sync::atomic::{AtomicU8, AtomicUsize};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use common::bridge::{line, next_message};
use common::*;
use roost::codec::{
    AckKind, Connect, Packet, QoS, ReasonCode, RetainHandling, Subscribe, SubscribeFilter, Version,
};
use roost::config::{BridgeConfig, BridgeDirection, BridgeProtocol, BridgeTls, BridgeTopic};
use roost::{BridgeInfo, BridgeState, BrokerHandle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

/// The pause between two looks at a condition that is polled.
const POLL: Duration = Duration::from_millis(20);

/// A file of the development certificates (`certs/README.md`).
fn cert(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("certs")
        .join(name)
}

/// Whether `program` can be started.
fn runs(program: &Path) -> bool {
    Command::new(program)
        .arg("--help")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// The mosquitto broker binary, if mosquitto and its tools are installed. Without them: a
/// notice and `None`, or a panic when `ROOST_INTEROP=require`.
fn mosquitto_binary() -> Option<PathBuf> {
    // The broker lives in sbin, which is not on every user's PATH.
    let broker = [
        "mosquitto",
        "/usr/sbin/mosquitto",
        "/usr/local/sbin/mosquitto",
    ]
    .map(PathBuf::from)
    .into_iter()
    .find(|p| runs(p));
    let tools = ["mosquitto_sub", "mosquitto_passwd"]
        .iter()
        .all(|t| runs(Path::new(t)));
    match broker {
        Some(broker) if tools => Some(broker),
        _ => {
            if std::env::var("ROOST_INTEROP").as_deref() == Ok("require") {
                panic!(
                    "mosquitto, mosquitto_sub and mosquitto_passwd are required (ROOST_INTEROP=require)"
                );
            }
            eprintln!("NOTICE: mosquitto not installed; bridge interop test skipped");
            None
        }
    }
}

/// A free TCP port on 127.0.0.1: bound, then released for mosquitto to take.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("an ephemeral port on 127.0.0.1")
        .port()
}

/// A plain listener for anonymous clients.
fn plain_listener(port: u16) -> String {
    format!("listener {port} 127.0.0.1\nallow_anonymous true\n")
}

/// A TLS listener with the development server certificate; with `require_certificate`, the
/// client must present a certificate signed by the development CA.
fn tls_listener(port: u16, require_certificate: bool) -> String {
    format!(
        "listener {port} 127.0.0.1\ncafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate {}\n",
        cert("ca.pem").display(),
        cert("server.pem").display(),
        cert("server.key").display(),
        require_certificate,
    )
}

/// Persistence into `dir`, so that sessions and their queued messages survive a restart
/// (saved when mosquitto ends on SIGTERM).
fn persistence(dir: &Path) -> String {
    format!(
        "persistence true\npersistence_location {}/\n",
        dir.display()
    )
}

/// The mosquitto broker as a child process, killed (SIGKILL, by its PID) and reaped when
/// dropped. Its log (stderr) is kept in memory and printed if the test fails.
struct Mosquitto {
    binary: PathBuf,
    conf: PathBuf,
    /// The ports of its listeners; the first is where clients of the tests connect.
    ports: Vec<u16>,
    child: Option<Child>,
    log: Arc<Mutex<Vec<String>>>,
}

impl Mosquitto {
    /// Writes `dir/mosquitto.conf` (logging to stderr, then `body`, which holds the
    /// listeners on `ports`) and starts mosquitto with it.
    async fn start(binary: &Path, dir: &Path, ports: &[u16], body: &str) -> Mosquitto {
        let conf = dir.join("mosquitto.conf");
        // As root, mosquitto switches to the `mosquitto` user, which cannot write into the
        // test's directory nor read its files: it stays root instead.
        // SAFETY: geteuid has no preconditions and cannot fail.
        let user = if unsafe { libc::geteuid() } == 0 {
            "user root\n"
        } else {
            ""
        };
        let text = format!("log_dest stderr\nlog_type all\nconnection_messages true\n{user}{body}");
        std::fs::write(&conf, text).expect("mosquitto.conf written");
        let mut m = Mosquitto {
            binary: binary.to_path_buf(),
            conf,
            ports: ports.to_vec(),
            child: None,
            log: Arc::new(Mutex::new(Vec::new())),
        };
        m.spawn().await;
        m
    }

    /// Starts the process and waits (bounded) until every listener accepts connections.
    async fn spawn(&mut self) {
        assert!(self.child.is_none(), "mosquitto is already running");
        let mut child = Command::new(&self.binary)
            .arg("-c")
            .arg(&self.conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("mosquitto starts");
        let stderr = child.stderr.take().expect("stderr piped");
        let log = Arc::clone(&self.log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { return };
                log.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(line);
            }
        });
        self.child = Some(child);
        let deadline = Instant::now() + WAIT;
        for port in self.ports.clone() {
            loop {
                let exited = self
                    .child
                    .as_mut()
                    .and_then(|c| c.try_wait().expect("mosquitto's status"));
                if let Some(status) = exited {
                    panic!("mosquitto exited ({status}):\n{}", self.log_text());
                }
                if tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .is_ok()
                {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "mosquitto listens on {port} in time:\n{}",
                    self.log_text()
                );
                tokio::time::sleep(POLL).await;
            }
        }
    }

    /// Ends mosquitto with SIGTERM, so that it saves its persistent state, and waits
    /// (bounded) until it has exited.
    async fn stop(&mut self) {
        let mut child = self.child.take().expect("mosquitto is running");
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status()
            .expect("kill runs");
        assert!(status.success(), "SIGTERM delivered to mosquitto");
        let deadline = Instant::now() + WAIT;
        while child.try_wait().expect("mosquitto's status").is_none() {
            assert!(Instant::now() < deadline, "mosquitto ends in time");
            tokio::time::sleep(POLL).await;
        }
    }

    /// Starts mosquitto again, with the same configuration and ports, after [`Self::stop`].
    async fn restart(&mut self) {
        self.spawn().await;
    }

    /// Where clients of the tests connect (the first listener).
    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.ports[0]))
    }

    /// Log lines that contain `text`.
    fn log_count(&self, text: &str) -> usize {
        let log = self.log.lock().unwrap_or_else(PoisonError::into_inner);
        log.iter().filter(|l| l.contains(text)).count()
    }

    /// The last lines of the log.
    fn log_text(&self) -> String {
        let log = self.log.lock().unwrap_or_else(PoisonError::into_inner);
        let skip = log.len().saturating_sub(200);
        log[skip..].join("\n")
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!("mosquitto's log (last lines):\n{}", self.log_text());
        }
    }
}

/// A bridge named `name` to mosquitto on 127.0.0.1:`port` that reconnects after the shortest
/// wait the settings allow (1 s, no growth); its client id at mosquitto is `<name>-bridge`.
fn bridge(
    name: &str,
    port: u16,
    protocol: BridgeProtocol,
    topics: Vec<BridgeTopic>,
) -> BridgeConfig {
    let mut b = BridgeConfig::new(name, "127.0.0.1", port, topics);
    b.protocol = protocol;
    b.remote_clientid = Some(format!("{name}-bridge"));
    b.restart_base = Duration::from_secs(1);
    b.restart_cap = None;
    b
}

/// The `out`, `in` and `both` lines of the direction tests: `edge/<dir>/#` here is
/// `fleet/site1/<dir>/#` at mosquitto, up to QoS 2.
fn three_way_lines() -> Vec<BridgeTopic> {
    let (local, remote) = ("edge/", "fleet/site1/");
    vec![
        line(
            "out/#",
            BridgeDirection::Out,
            QoS::ExactlyOnce,
            local,
            remote,
        ),
        line("in/#", BridgeDirection::In, QoS::ExactlyOnce, local, remote),
        line(
            "both/#",
            BridgeDirection::Both,
            QoS::ExactlyOnce,
            local,
            remote,
        ),
    ]
}

/// Bridge `name` of `broker`.
fn bridge_info(broker: &BrokerHandle, name: &str) -> BridgeInfo {
    broker
        .bridges()
        .into_iter()
        .find(|b| b.name == name)
        .expect("the bridge is configured")
}

/// Waits (bounded) until bridge `name` of `broker` satisfies `cond`; returns what it saw.
async fn wait_bridge(
    broker: &BrokerHandle,
    name: &str,
    what: &str,
    cond: impl Fn(&BridgeInfo) -> bool,
) -> BridgeInfo {
    let deadline = Instant::now() + WAIT;
    loop {
        let info = bridge_info(broker, name);
        if cond(&info) {
            return info;
        }
        assert!(Instant::now() < deadline, "bridge {what} in time: {info:?}");
        tokio::time::sleep(POLL).await;
    }
}

/// A 3.1.1 CONNECT with a persistent session (clean session 0).
fn durable_connect(client_id: &str) -> Connect {
    Connect {
        clean_start: false,
        ..connect_packet(Version::V311, client_id)
    }
}

/// Subscribes `c` to `filters` at QoS 2 and checks that all were granted.
async fn subscribe_all(c: &mut RawClient, filters: &[&str]) {
    let subscribe = Subscribe {
        packet_id: 1,
        filters: filters
            .iter()
            .map(|f| SubscribeFilter {
                filter: (*f).to_string(),
                qos: QoS::ExactlyOnce,
                no_local: false,
                retain_as_published: false,
                retain_handling: RetainHandling::OnSubscribe,
            })
            .collect(),
        subscription_identifier: None,
        user_properties: Vec::new(),
    };
    c.send(&Packet::Subscribe(subscribe)).await;
    match c.recv().await {
        Some(Packet::SubAck(s)) => assert!(
            s.codes.iter().all(|code| *code == ReasonCode(2)),
            "QoS 2 granted for {filters:?}: {s:?}"
        ),
        other => panic!("expected SUBACK, got {other:?}"),
    }
}

/// A clean 3.1.1 client at `addr` subscribed to `filters` at QoS 2.
async fn observer(addr: SocketAddr, client_id: &str, filters: &[&str]) -> RawClient {
    let (mut c, ack) = RawClient::connect(addr, connect_packet(Version::V311, client_id)).await;
    assert_eq!(ack.code, ReasonCode::SUCCESS, "{client_id} connected");
    subscribe_all(&mut c, filters).await;
    c
}

/// A clean 3.1.1 client at `addr` that only publishes.
async fn publisher(addr: SocketAddr, client_id: &str) -> RawClient {
    let (c, ack) = RawClient::connect(addr, connect_packet(Version::V311, client_id)).await;
    assert_eq!(ack.code, ReasonCode::SUCCESS, "{client_id} connected");
    c
}

/// Waits for the acknowledgement `kind` of `packet_id`.
async fn expect_ack(c: &mut RawClient, kind: AckKind, packet_id: u16) {
    match c.recv().await {
        Some(Packet::Ack(a)) if a.kind == kind && a.packet_id == packet_id => {
            assert!(
                a.reason.0 < 0x80,
                "{kind:?} {packet_id} is a success: {a:?}"
            );
        }
        other => panic!("expected {kind:?} for {packet_id}, got {other:?}"),
    }
}

/// Publishes and completes the QoS flow as the sender: PUBACK for QoS 1; PUBREC, PUBREL,
/// PUBCOMP for QoS 2.
async fn publish_acked(
    c: &mut RawClient,
    topic: &str,
    qos: QoS,
    packet_id: u16,
    payload: &[u8],
    retain: bool,
) {
    c.send(&publish_with(topic, qos, packet_id, payload, retain))
        .await;
    match qos {
        QoS::AtMostOnce => {}
        QoS::AtLeastOnce => expect_ack(c, AckKind::PubAck, packet_id).await,
        QoS::ExactlyOnce => {
            expect_ack(c, AckKind::PubRec, packet_id).await;
            c.send(&ack(AckKind::PubRel, packet_id)).await;
            expect_ack(c, AckKind::PubComp, packet_id).await;
        }
    }
}

/// Checks that the next message on `c` is `payload` on `topic` at `qos`, with `retain`.
async fn expect_message(c: &mut RawClient, topic: &str, qos: QoS, payload: &[u8], retain: bool) {
    let p = next_message(c).await;
    assert_eq!(
        (p.topic.as_str(), p.qos, &p.payload[..], p.retain),
        (topic, qos, payload, retain),
        "expected {:?} on {topic}, got {p:?}",
        String::from_utf8_lossy(payload)
    );
}

/// The retained message of `topic` at mosquitto, as a new `mosquitto_sub` sees it:
/// `"<retain flag> <qos> <topic> <payload>"`.
async fn retained_at_mosquitto(addr: SocketAddr, topic: &str) -> String {
    let out = tokio::process::Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &addr.port().to_string()])
        .args(["-t", topic, "-q", "1", "-C", "1", "-W", "10"])
        .args(["-F", "%r %q %t %p"])
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(WAIT, out)
        .await
        .expect("mosquitto_sub finishes in time")
        .expect("mosquitto_sub runs");
    assert!(out.status.success(), "mosquitto_sub: {out:?}");
    String::from_utf8_lossy(&out.stdout).trim_end().to_string()
}

/// The `both` line carries a message each way, and each is seen once on each side: not sent
/// back by the broker that received it from the bridge. Then one message each way on the
/// `in` and `out` lines (counted by the bridge: 2 out, 2 in). The observers are subscribed
/// to `fleet/site1/out/#` and `fleet/site1/both/#` at mosquitto, `edge/in/#` and
/// `edge/both/#` at Roost.
async fn one_copy_each_side(
    at_fleet: &mut RawClient,
    at_edge: &mut RawClient,
    edge_pub: &mut RawClient,
    fleet_pub: &mut RawClient,
) {
    // Both ways: one copy on each side. Mosquitto does not send the bridge's own messages
    // back to it (the bridge bit in 3.1.1; No Local in 5.0, MQTT-3.8.3-3), nor does Roost.
    publish_acked(
        edge_pub,
        "edge/both/from-edge",
        QoS::AtLeastOnce,
        30,
        b"e",
        false,
    )
    .await;
    expect_message(
        at_fleet,
        "fleet/site1/both/from-edge",
        QoS::AtLeastOnce,
        b"e",
        false,
    )
    .await;
    expect_message(
        at_edge,
        "edge/both/from-edge",
        QoS::AtLeastOnce,
        b"e",
        false,
    )
    .await;
    publish_acked(
        fleet_pub,
        "fleet/site1/both/from-fleet",
        QoS::ExactlyOnce,
        30,
        b"f",
        false,
    )
    .await;
    expect_message(
        at_edge,
        "edge/both/from-fleet",
        QoS::ExactlyOnce,
        b"f",
        false,
    )
    .await;
    expect_message(
        at_fleet,
        "fleet/site1/both/from-fleet",
        QoS::ExactlyOnce,
        b"f",
        false,
    )
    .await;
    // A copy sent back would be ahead of these markers on the same link (each topic is an
    // ordered topic, MQTT-4.6.0-6, and each link keeps its order): the next message on
    // each side is the marker.
    publish_acked(
        fleet_pub,
        "fleet/site1/in/marker",
        QoS::AtLeastOnce,
        40,
        b"m",
        false,
    )
    .await;
    expect_message(at_edge, "edge/in/marker", QoS::AtLeastOnce, b"m", false).await;
    publish_acked(
        edge_pub,
        "edge/out/marker",
        QoS::AtLeastOnce,
        40,
        b"m",
        false,
    )
    .await;
    expect_message(
        at_fleet,
        "fleet/site1/out/marker",
        QoS::AtLeastOnce,
        b"m",
        false,
    )
    .await;
}

/// The scenario of the direction tests, with `protocol` towards mosquitto: messages at QoS
/// 0, 1 and 2 cross each way with their topics renamed, retained messages stay retained on
/// the far side, and a `both` message is seen once on each side.
async fn directions(protocol: BridgeProtocol) {
    let Some(binary) = mosquitto_binary() else {
        return;
    };
    let dir = tempfile::tempdir().expect("temporary directory");
    let port = free_port();
    let mosquitto = Mosquitto::start(&binary, dir.path(), &[port], &plain_listener(port)).await;
    let roost = start_broker_with(|c| {
        c.bridges = vec![bridge("edge", port, protocol, three_way_lines())];
    })
    .await;
    let info = wait_bridge(&roost, "edge", "connected", |b| {
        b.state == BridgeState::Connected
    })
    .await;
    // The version spoken: mosquitto logs its protocol number (2: 3.1.1, 5: 5.0).
    let p = match protocol {
        BridgeProtocol::Mqtt5 => 5,
        _ => 2,
    };
    assert_eq!(
        mosquitto.log_count(&format!("as edge-bridge (p{p},")),
        1,
        "the bridge connected once with protocol {protocol:?}"
    );
    // Mosquitto tells a bridge (the bridge bit of 3.1.1) from a client.
    let kind = match protocol {
        BridgeProtocol::Mqtt5 => "New client connected",
        _ => "New bridge connected",
    };
    assert_eq!(mosquitto.log_count(kind), 1, "{kind}");
    assert_eq!(info.remote_addr, Some(format!("127.0.0.1:{port}")));

    let mut at_fleet = observer(
        mosquitto.addr(),
        "fleet-observer",
        &["fleet/site1/out/#", "fleet/site1/both/#"],
    )
    .await;
    let mut at_edge = observer(
        roost.local_addr(),
        "edge-observer",
        &["edge/in/#", "edge/both/#"],
    )
    .await;
    let mut edge_pub = publisher(roost.local_addr(), "edge-publisher").await;
    let mut fleet_pub = publisher(mosquitto.addr(), "fleet-publisher").await;

    // Out, at each QoS: the topic gets mosquitto's prefix; the QoS is the publisher's (both
    // subscriptions allow QoS 2); the payload is untouched.
    let levels = [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce];
    for (i, qos) in levels.into_iter().enumerate() {
        let payload = format!("out at QoS {i}");
        publish_acked(
            &mut edge_pub,
            &format!("edge/out/q{i}"),
            qos,
            10 + i as u16,
            payload.as_bytes(),
            false,
        )
        .await;
        let topic = format!("fleet/site1/out/q{i}");
        expect_message(&mut at_fleet, &topic, qos, payload.as_bytes(), false).await;
    }
    // In, at each QoS.
    for (i, qos) in levels.into_iter().enumerate() {
        let payload = format!("in at QoS {i}");
        publish_acked(
            &mut fleet_pub,
            &format!("fleet/site1/in/q{i}"),
            qos,
            10 + i as u16,
            payload.as_bytes(),
            false,
        )
        .await;
        let topic = format!("edge/in/q{i}");
        expect_message(&mut at_edge, &topic, qos, payload.as_bytes(), false).await;
    }

    // Retained, out: stored by mosquitto (MQTT-3.3.1-5), so a later subscriber there gets it
    // with RETAIN 1 (MQTT-3.3.1-6 / 3.1.1's MQTT-3.3.1-8); the established subscription gets
    // it with RETAIN 0 (3.1.1's MQTT-3.3.1-9).
    publish_acked(
        &mut edge_pub,
        "edge/out/retained",
        QoS::AtLeastOnce,
        20,
        b"kept at fleet",
        true,
    )
    .await;
    expect_message(
        &mut at_fleet,
        "fleet/site1/out/retained",
        QoS::AtLeastOnce,
        b"kept at fleet",
        false,
    )
    .await;
    assert_eq!(
        retained_at_mosquitto(mosquitto.addr(), "fleet/site1/out/retained").await,
        "1 1 fleet/site1/out/retained kept at fleet"
    );
    // Retained, in: the bridge's subscription at mosquitto is Retain As Published (the
    // bridge bit in 3.1.1, the option in 5.0: MQTT-3.3.1-12 / MQTT-3.3.1-13), so Roost
    // stores it too.
    publish_acked(
        &mut fleet_pub,
        "fleet/site1/in/retained",
        QoS::AtLeastOnce,
        20,
        b"kept at edge",
        true,
    )
    .await;
    expect_message(
        &mut at_edge,
        "edge/in/retained",
        QoS::AtLeastOnce,
        b"kept at edge",
        false,
    )
    .await;
    let mut late = observer(roost.local_addr(), "edge-late", &["edge/in/retained"]).await;
    expect_message(
        &mut late,
        "edge/in/retained",
        QoS::AtLeastOnce,
        b"kept at edge",
        true,
    )
    .await;

    one_copy_each_side(&mut at_fleet, &mut at_edge, &mut edge_pub, &mut fleet_pub).await;

    // Out: 3 levels, retained, both, marker; in: the same. Nothing refused, nothing left,
    // one connection, no error (a refused bridge bit would show as a reconnection).
    let info = wait_bridge(&roost, "edge", "counted everything", |b| {
        b.forwarded_out >= 6 && b.forwarded_in >= 6
    })
    .await;
    assert_eq!(
        (
            info.forwarded_out,
            info.forwarded_in,
            info.refused,
            info.queued,
            info.connects
        ),
        (6, 6, 0, 0, 1),
        "{info:?}"
    );
    assert_eq!(info.last_error, None);
    roost.shutdown().await;
    drop(mosquitto);
}

#[tokio::test]
async fn out_in_and_both_with_prefixes_at_every_qos_over_mqtt_3_1_1_with_the_bridge_bit() {
    directions(BridgeProtocol::Mqtt311).await;
}

#[tokio::test]
async fn out_in_and_both_with_prefixes_at_every_qos_over_mqtt_5() {
    directions(BridgeProtocol::Mqtt5).await;
}

/// Messages published at Roost while mosquitto is down wait in the bridge's durable local
/// Session, acknowledged to their publishers, and reach a durable subscriber at mosquitto
/// once it is back: none lost, in order per topic, no QoS 2 message twice.
#[tokio::test]
async fn messages_published_while_mosquitto_is_down_arrive_once_it_is_back() {
    let Some(binary) = mosquitto_binary() else {
        return;
    };
    const COUNT: u16 = 200;
    let dir = tempfile::tempdir().expect("temporary directory");
    let port = free_port();
    let body = format!("{}{}", plain_listener(port), persistence(dir.path()));
    let mut mosquitto = Mosquitto::start(&binary, dir.path(), &[port], &body).await;
    let roost = start_broker_with(|c| {
        c.bridges = vec![bridge(
            "edge",
            port,
            BridgeProtocol::Mqtt311,
            vec![line(
                "data/#",
                BridgeDirection::Out,
                QoS::ExactlyOnce,
                "",
                "edge/",
            )],
        )];
    })
    .await;
    wait_bridge(&roost, "edge", "connected", |b| {
        b.state == BridgeState::Connected
    })
    .await;
    // The durable subscriber: clean session 0, so mosquitto keeps its session and queues
    // its QoS 1/2 messages while it is away (MQTT-3.1.2-4 / MQTT-3.1.2-5), across the
    // restart thanks to persistence.
    let (mut durable, ack) = RawClient::connect(mosquitto.addr(), durable_connect("durable")).await;
    assert_eq!(ack.code, ReasonCode::SUCCESS);
    subscribe_all(&mut durable, &["edge/data/#"]).await;
    let mut edge_pub = publisher(roost.local_addr(), "edge-publisher").await;
    publish_acked(
        &mut edge_pub,
        "data/hello",
        QoS::AtLeastOnce,
        1,
        b"before",
        false,
    )
    .await;
    expect_message(
        &mut durable,
        "edge/data/hello",
        QoS::AtLeastOnce,
        b"before",
        false,
    )
    .await;

    mosquitto.stop().await;
    assert_eq!(
        durable.recv().await,
        None,
        "mosquitto closed the connection"
    );
    drop(durable);
    wait_bridge(&roost, "edge", "disconnected", |b| {
        b.state != BridgeState::Connected
    })
    .await;

    // Roost acknowledges each message (PUBACK, PUBREC/PUBCOMP) though the remote is down:
    // the bridge's local Session holds them.
    for i in 0..COUNT {
        let payload = i.to_string();
        publish_acked(
            &mut edge_pub,
            "data/q1",
            QoS::AtLeastOnce,
            i + 1,
            payload.as_bytes(),
            false,
        )
        .await;
    }
    let info = wait_bridge(&roost, "edge", "queued the QoS 1 messages", |b| {
        b.queued == usize::from(COUNT)
    })
    .await;
    assert_ne!(info.state, BridgeState::Connected, "{info:?}");
    for i in 0..COUNT {
        let payload = i.to_string();
        publish_acked(
            &mut edge_pub,
            "data/q2",
            QoS::ExactlyOnce,
            i + 1,
            payload.as_bytes(),
            false,
        )
        .await;
    }
    let info = wait_bridge(&roost, "edge", "queued every message", |b| {
        b.queued == 2 * usize::from(COUNT)
    })
    .await;
    assert_ne!(info.state, BridgeState::Connected, "{info:?}");
    assert_eq!((info.forwarded_out, info.connects), (1, 1), "{info:?}");
    assert!(
        info.last_error.is_some(),
        "the lost link is reported: {info:?}"
    );

    // Back on the same port, with the sessions it saved.
    mosquitto.restart().await;
    let (mut durable, ack) = RawClient::connect(mosquitto.addr(), durable_connect("durable")).await;
    assert_eq!(ack.code, ReasonCode::SUCCESS);
    assert!(
        ack.session_present,
        "mosquitto kept the durable session (MQTT-3.2.2-2)"
    );
    let (mut q1, mut q2) = (Vec::new(), Vec::new());
    while q1.len() + q2.len() < 2 * usize::from(COUNT) {
        let p = next_message(&mut durable).await;
        let n: u16 = std::str::from_utf8(&p.payload)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("a numbered payload: {p:?}"));
        match (p.topic.as_str(), p.qos) {
            ("edge/data/q1", QoS::AtLeastOnce) => q1.push(n),
            ("edge/data/q2", QoS::ExactlyOnce) => q2.push(n),
            _ => panic!("unexpected message {p:?}"),
        }
    }
    let all: Vec<u16> = (0..COUNT).collect();
    // QoS 1 allows a duplicate (at least once), but the first copies are all there, in the
    // order published (MQTT-4.6.0-6).
    let mut first_q1 = Vec::new();
    for n in &q1 {
        if !first_q1.contains(n) {
            first_q1.push(*n);
        }
    }
    assert_eq!(first_q1, all, "QoS 1 messages, in order: {q1:?}");
    // QoS 2: each exactly once (MQTT-4.3.3-2), in order.
    assert_eq!(q2, all, "QoS 2 messages, once each, in order");
    // Nothing else is on its way: a later marker is the next message.
    publish_acked(
        &mut edge_pub,
        "data/end",
        QoS::ExactlyOnce,
        1,
        b"end",
        false,
    )
    .await;
    expect_message(
        &mut durable,
        "edge/data/end",
        QoS::ExactlyOnce,
        b"end",
        false,
    )
    .await;
    let info = wait_bridge(&roost, "edge", "delivered everything", |b| {
        b.queued == 0 && b.forwarded_out == 2 + 2 * u64::from(COUNT)
    })
    .await;
    assert_eq!(
        (info.state, info.connects, info.refused),
        (BridgeState::Connected, 2, 0)
    );
    roost.shutdown().await;
    drop(mosquitto);
}

/// The `out` and `in` lines of the TLS and login tests: `edge/<dir>/#` here is
/// `fleet/site1/<dir>/#` at mosquitto, up to QoS 2.
fn two_way_lines() -> Vec<BridgeTopic> {
    let (local, remote) = ("edge/", "fleet/site1/");
    vec![
        line(
            "out/#",
            BridgeDirection::Out,
            QoS::ExactlyOnce,
            local,
            remote,
        ),
        line("in/#", BridgeDirection::In, QoS::ExactlyOnce, local, remote),
    ]
}

/// TLS towards mosquitto, verified against `ca_file`; with a client certificate when
/// `client_certificate`.
fn bridge_tls(ca_file: &str, client_certificate: bool) -> BridgeTls {
    BridgeTls {
        ca_file: cert(ca_file),
        cert_file: client_certificate.then(|| cert("client.pem")),
        key_file: client_certificate.then(|| cert("client.key")),
        insecure: false,
    }
}

/// Messages cross bridge `edge` of `roost` each way at QoS 1 and 2 (observed through
/// mosquitto's plain listener).
async fn messages_cross(roost: &BrokerHandle, mosquitto: &Mosquitto) {
    let mut at_fleet = observer(mosquitto.addr(), "fleet-observer", &["fleet/site1/out/#"]).await;
    let mut at_edge = observer(roost.local_addr(), "edge-observer", &["edge/in/#"]).await;
    let mut edge_pub = publisher(roost.local_addr(), "edge-publisher").await;
    let mut fleet_pub = publisher(mosquitto.addr(), "fleet-publisher").await;
    for qos in [QoS::AtLeastOnce, QoS::ExactlyOnce] {
        let level = qos as u8;
        let payload = format!("out at QoS {level}");
        let topic = format!("edge/out/q{level}");
        publish_acked(&mut edge_pub, &topic, qos, 1, payload.as_bytes(), false).await;
        let topic = format!("fleet/site1/out/q{level}");
        expect_message(&mut at_fleet, &topic, qos, payload.as_bytes(), false).await;
        let payload = format!("in at QoS {level}");
        let topic = format!("fleet/site1/in/q{level}");
        publish_acked(&mut fleet_pub, &topic, qos, 1, payload.as_bytes(), false).await;
        let topic = format!("edge/in/q{level}");
        expect_message(&mut at_edge, &topic, qos, payload.as_bytes(), false).await;
    }
    let info = wait_bridge(roost, "edge", "counted both ways", |b| {
        b.forwarded_out >= 2 && b.forwarded_in >= 2
    })
    .await;
    assert_eq!(
        (info.forwarded_out, info.forwarded_in, info.queued),
        (2, 2, 0)
    );
}

/// Bridge over TLS to a mosquitto listener with the development server certificate
/// (verified against `certs/ca.pem`, for the address 127.0.0.1 it names): messages cross.
#[tokio::test]
async fn over_tls_verified_against_the_ca() {
    let Some(binary) = mosquitto_binary() else {
        return;
    };
    let dir = tempfile::tempdir().expect("temporary directory");
    let (plain, tls) = (free_port(), free_port());
    let body = format!("{}{}", plain_listener(plain), tls_listener(tls, false));
    let mosquitto = Mosquitto::start(&binary, dir.path(), &[plain, tls], &body).await;
    let roost = start_broker_with(|c| {
        let mut b = bridge("edge", tls, BridgeProtocol::Mqtt311, two_way_lines());
        b.tls = Some(bridge_tls("ca.pem", false));
        c.bridges = vec![b];
    })
    .await;
    let info = wait_bridge(&roost, "edge", "connected", |b| {
        b.state == BridgeState::Connected
    })
    .await;
    // Connected to the TLS listener, which speaks nothing but TLS.
    assert_eq!(info.remote_addr, Some(format!("127.0.0.1:{tls}")));
    messages_cross(&roost, &mosquitto).await;
    roost.shutdown().await;
    drop(mosquitto);
}

/// With `require_certificate true`, the bridge that presents `certs/client.pem` connects and
/// carries messages; one configured without a client certificate is kept out.
#[tokio::test]
async fn over_tls_with_a_client_certificate_when_mosquitto_requires_one() {
    let Some(binary) = mosquitto_binary() else {
        return;
    };
    let dir = tempfile::tempdir().expect("temporary directory");
    let (plain, tls) = (free_port(), free_port());
    let body = format!("{}{}", plain_listener(plain), tls_listener(tls, true));
    let mosquitto = Mosquitto::start(&binary, dir.path(), &[plain, tls], &body).await;
    let roost = start_broker_with(|c| {
        let mut with_cert = bridge("edge", tls, BridgeProtocol::Mqtt311, two_way_lines());
        with_cert.tls = Some(bridge_tls("ca.pem", true));
        let mut without = bridge(
            "nocert",
            tls,
            BridgeProtocol::Mqtt311,
            vec![line(
                "nocert/#",
                BridgeDirection::Out,
                QoS::AtLeastOnce,
                "",
                "",
            )],
        );
        without.tls = Some(bridge_tls("ca.pem", false));
        c.bridges = vec![with_cert, without];
    })
    .await;
    wait_bridge(&roost, "edge", "connected", |b| {
        b.state == BridgeState::Connected
    })
    .await;
    messages_cross(&roost, &mosquitto).await;
    // The other bridge is refused by mosquitto, again and again, and says why.
    let refused = "certificate";
    let info = wait_bridge(
        &roost,
        "nocert",
        "refused for its missing certificate",
        |b| {
            b.last_error
                .as_deref()
                .is_some_and(|e| e.to_lowercase().contains(refused))
        },
    )
    .await;
    assert_ne!(info.state, BridgeState::Connected, "{info:?}");
    assert_eq!(info.connects, 0, "{info:?}");
    assert_eq!(mosquitto.log_count("as nocert-bridge"), 0);
    roost.shutdown().await;
    drop(mosquitto);
}

/// A bridge that trusts another CA (`certs/other-ca.pem`) does not accept mosquitto's
/// certificate: it stays unconnected, says the certificate is the problem, and loses nothing
/// published meanwhile (queued in its local Session, acknowledged to the publisher).
#[tokio::test]
async fn over_tls_with_the_wrong_ca_stays_unconnected_and_keeps_the_messages() {
    let Some(binary) = mosquitto_binary() else {
        return;
    };
    let dir = tempfile::tempdir().expect("temporary directory");
    let (plain, tls) = (free_port(), free_port());
    let body = format!("{}{}", plain_listener(plain), tls_listener(tls, false));
    let mosquitto = Mosquitto::start(&binary, dir.path(), &[plain, tls], &body).await;
    let roost = start_broker_with(|c| {
        let mut b = bridge("edge", tls, BridgeProtocol::Mqtt311, two_way_lines());
        b.tls = Some(bridge_tls("other-ca.pem", false));
        c.bridges = vec![b];
    })
    .await;
    let info = wait_bridge(&roost, "edge", "failed", |b| b.last_error.is_some()).await;
    let error = info.last_error.clone().unwrap_or_default();
    assert!(error.contains("certificate"), "{info:?}");
    assert_ne!(info.state, BridgeState::Connected, "{info:?}");
    let mut edge_pub = publisher(roost.local_addr(), "edge-publisher").await;
    for i in 0..5u16 {
        let payload = i.to_string();
        publish_acked(
            &mut edge_pub,
            "edge/out/t",
            QoS::AtLeastOnce,
            i + 1,
            payload.as_bytes(),
            false,
        )
        .await;
    }
    let info = wait_bridge(&roost, "edge", "queued the messages", |b| b.queued == 5).await;
    assert_eq!((info.connects, info.forwarded_out), (0, 0), "{info:?}");
    assert_ne!(info.state, BridgeState::Connected, "{info:?}");
    assert_eq!(mosquitto.log_count("as edge-bridge"), 0);
    roost.shutdown().await;
    drop(mosquitto);
}

/// Mosquitto refuses the bridge's login (a password file; the bridge has the wrong
/// password): the bridge keeps trying with backoff, never connected, its `last_error` naming
/// the refusal, and the messages published meanwhile wait in its local Session.
#[tokio::test]
async fn a_refused_login_keeps_the_bridge_in_backoff_with_its_messages() {
    let Some(binary) = mosquitto_binary() else {
        return;
    };
    let dir = tempfile::tempdir().expect("temporary directory");
    let passwords = dir.path().join("passwords");
    let out = tokio::process::Command::new("mosquitto_passwd")
        .arg("-c")
        .arg("-b")
        .arg(&passwords)
        .args(["edge", "right password"])
        .stdin(Stdio::null())
        .output();
    let out = tokio::time::timeout(WAIT, out)
        .await
        .expect("mosquitto_passwd finishes in time")
        .expect("mosquitto_passwd runs");
    assert!(out.status.success(), "mosquitto_passwd: {out:?}");
    const REFUSED: &str = "disconnected, not authorised";
    let port = free_port();
    let body = format!(
        "listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {}\n",
        passwords.display()
    );
    let mosquitto = Mosquitto::start(&binary, dir.path(), &[port], &body).await;
    let roost = start_broker_with(|c| {
        let mut b = bridge("edge", port, BridgeProtocol::Mqtt311, two_way_lines());
        b.remote_username = Some("edge".into());
        b.remote_password = Some("wrong password".into());
        c.bridges = vec![b];
    })
    .await;
    // Several refused attempts: mosquitto logs each (the client id is not logged then), and the bridge reports the CONNACK
    // that refused it (3.1.1: 0x05 not authorized, or 0x04 bad user name or password).
    let deadline = Instant::now() + WAIT;
    while mosquitto.log_count(REFUSED) < 3 {
        assert!(
            Instant::now() < deadline,
            "three login attempts in time: {:?}",
            roost.bridges()
        );
        tokio::time::sleep(POLL).await;
    }
    let info = bridge_info(&roost, "edge");
    let error = info.last_error.clone().unwrap_or_default();
    assert!(
        error.contains("refused the connection: CONNACK 0x05")
            || error.contains("refused the connection: CONNACK 0x04"),
        "{info:?}"
    );
    assert!(
        matches!(info.state, BridgeState::Backoff | BridgeState::Connecting),
        "{info:?}"
    );
    assert_eq!(info.connects, 0, "{info:?}");
    // Still running, and still holding what is published for the remote.
    let mut edge_pub = publisher(roost.local_addr(), "edge-publisher").await;
    for i in 0..5u16 {
        let payload = i.to_string();
        publish_acked(
            &mut edge_pub,
            "edge/out/t",
            QoS::ExactlyOnce,
            i + 1,
            payload.as_bytes(),
            false,
        )
        .await;
    }
    wait_bridge(&roost, "edge", "queued the messages", |b| b.queued == 5).await;
    // Kept through a further refused attempt.
    let attempts = mosquitto.log_count(REFUSED);
    let deadline = Instant::now() + WAIT;
    while mosquitto.log_count(REFUSED) <= attempts {
        assert!(Instant::now() < deadline, "another attempt in time");
        tokio::time::sleep(POLL).await;
    }
    let later = bridge_info(&roost, "edge");
    assert_eq!(
        (later.queued, later.connects, later.forwarded_out),
        (5, 0, 0),
        "{later:?}"
    );
    assert!(
        matches!(later.state, BridgeState::Backoff | BridgeState::Connecting),
        "{later:?}"
    );
    roost.shutdown().await;
    drop(mosquitto);
}

/// A bridge that has not reached mosquitto yet since Roost started still keeps what is
/// published for it, and delivers it once mosquitto is there.
#[tokio::test]
async fn messages_published_before_the_first_connection_are_delivered() {
    let Some(binary) = mosquitto_binary() else {
        return;
    };
    let dir = tempfile::tempdir().expect("temporary directory");
    let port = free_port();
    let body = format!("{}{}", plain_listener(port), persistence(dir.path()));
    // A durable subscriber's session at mosquitto, saved, before any bridge exists.
    let mut mosquitto = Mosquitto::start(&binary, dir.path(), &[port], &body).await;
    let (mut durable, _) = RawClient::connect(mosquitto.addr(), durable_connect("durable")).await;
    subscribe_all(&mut durable, &["fleet/site1/out/#"]).await;
    mosquitto.stop().await;
    drop(durable);

    let roost = start_broker_with(|c| {
        c.bridges = vec![bridge(
            "edge",
            port,
            BridgeProtocol::Mqtt311,
            two_way_lines(),
        )];
    })
    .await;
    let info = wait_bridge(&roost, "edge", "failed to connect", |b| {
        b.last_error.is_some()
    })
    .await;
    assert_eq!(info.connects, 0, "{info:?}");
    let mut edge_pub = publisher(roost.local_addr(), "edge-publisher").await;
    let levels = [QoS::AtLeastOnce, QoS::ExactlyOnce];
    for (i, qos) in levels.into_iter().enumerate() {
        let payload = format!("early {i}");
        publish_acked(
            &mut edge_pub,
            "edge/out/early",
            qos,
            1,
            payload.as_bytes(),
            false,
        )
        .await;
    }
    wait_bridge(&roost, "edge", "queued the messages", |b| b.queued == 2).await;

    mosquitto.restart().await;
    let (mut durable, ack) = RawClient::connect(mosquitto.addr(), durable_connect("durable")).await;
    assert!(ack.session_present, "MQTT-3.2.2-2");
    for (i, qos) in levels.into_iter().enumerate() {
        let payload = format!("early {i}");
        let topic = "fleet/site1/out/early";
        expect_message(&mut durable, topic, qos, payload.as_bytes(), false).await;
    }
    let info = wait_bridge(&roost, "edge", "delivered", |b| b.forwarded_out == 2).await;
    assert_eq!((info.queued, info.connects), (0, 1), "{info:?}");
    roost.shutdown().await;
    drop(mosquitto);
}

/// Which new connections a [`Gate`] closes after their first packet.
const LET_IN: u8 = 0;
/// Every new connection is closed, as a full or restarting broker, or a load balancer
/// without a backend, does.
const TURN_AWAY: u8 = 1;
/// Connections whose CONNECT has the bridge bit are closed, as a broker that does not know
/// the bit may do.
const TURN_AWAY_BRIDGES: u8 = 2;

/// A TCP relay on 127.0.0.1 in front of mosquitto that reads each new connection's first
/// packet (its CONNECT) and, depending on `mode`, closes the connection or relays it.
struct Gate {
    port: u16,
    mode: Arc<AtomicU8>,
    turned_away: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Gate {
    async fn start(to: SocketAddr, mode: u8) -> Gate {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("the gate listens");
        let port = listener.local_addr().expect("the gate's address").port();
        let mode = Arc::new(AtomicU8::new(mode));
        let turned_away = Arc::new(AtomicUsize::new(0));
        let (current, counted) = (Arc::clone(&mode), Arc::clone(&turned_away));
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (mode, counted) = (Arc::clone(&current), Arc::clone(&counted));
                tokio::spawn(Gate::serve(client, to, mode, counted));
            }
        });
        Gate {
            port,
            mode,
            turned_away,
            task,
        }
    }

    async fn serve(
        mut client: tokio::net::TcpStream,
        to: SocketAddr,
        mode: Arc<AtomicU8>,
        turned_away: Arc<AtomicUsize>,
    ) {
        // Enough of the CONNECT for its protocol level: fixed header, remaining length,
        // protocol name ("MQTT"), level.
        let mut first = Vec::new();
        let read = async {
            while first.len() < 10 {
                let mut chunk = [0u8; 512];
                match client.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => first.extend_from_slice(&chunk[..n]),
                }
            }
        };
        let _ = tokio::time::timeout(WAIT, read).await;
        let bridge_bit = first
            .windows(5)
            .find(|w| &w[..4] == b"MQTT")
            .is_some_and(|w| w[4] & 0x80 != 0);
        let away = match mode.load(SeqCst) {
            TURN_AWAY => true,
            TURN_AWAY_BRIDGES => bridge_bit,
            _ => false,
        };
        if away {
            turned_away.fetch_add(1, SeqCst);
            return;
        }
        if let Ok(mut server) = tokio::net::TcpStream::connect(to).await
            && server.write_all(&first).await.is_ok()
        {
            let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
        }
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The remote closes the bridge's first connections right after their CONNECT; once it
/// lets the bridge in, the bridge still sets the bridge bit. A connection closed for some
/// other reason is not taken for a refusal of the bit, whose loss would have mosquitto send
/// the bridge's own messages back and drop their RETAIN flag.
#[tokio::test]
async fn connections_closed_after_connect_do_not_cost_the_bridge_bit() {
    let Some(binary) = mosquitto_binary() else {
        return;
    };
    let dir = tempfile::tempdir().expect("temporary directory");
    let port = free_port();
    let mosquitto = Mosquitto::start(&binary, dir.path(), &[port], &plain_listener(port)).await;
    let gate = Gate::start(mosquitto.addr(), TURN_AWAY).await;
    let roost = start_broker_with(|c| {
        c.bridges = vec![bridge(
            "edge",
            gate.port,
            BridgeProtocol::Mqtt311,
            three_way_lines(),
        )];
    })
    .await;
    // Two attempts turned away, then a wait before the next: the gate opens meanwhile.
    let deadline = Instant::now() + WAIT;
    while gate.turned_away.load(SeqCst) < 2
        || bridge_info(&roost, "edge").state != BridgeState::Backoff
    {
        assert!(
            Instant::now() < deadline,
            "the bridge is turned away in time: {:?}",
            roost.bridges()
        );
        tokio::time::sleep(POLL).await;
    }
    gate.mode.store(LET_IN, SeqCst);
    let info = wait_bridge(&roost, "edge", "connected", |b| {
        b.state == BridgeState::Connected
    })
    .await;
    assert_eq!(info.connects, 1, "{info:?}");
    assert_eq!(
        (
            mosquitto.log_count("New bridge connected"),
            mosquitto.log_count("New client connected")
        ),
        (1, 0),
        "mosquitto sees a bridge"
    );

    let mut at_fleet = observer(
        mosquitto.addr(),
        "fleet-observer",
        &["fleet/site1/out/#", "fleet/site1/both/#"],
    )
    .await;
    let mut at_edge = observer(
        roost.local_addr(),
        "edge-observer",
        &["edge/in/#", "edge/both/#"],
    )
    .await;
    let mut edge_pub = publisher(roost.local_addr(), "edge-publisher").await;
    let mut fleet_pub = publisher(mosquitto.addr(), "fleet-publisher").await;
    one_copy_each_side(&mut at_fleet, &mut at_edge, &mut edge_pub, &mut fleet_pub).await;
    let info = wait_bridge(&roost, "edge", "counted everything", |b| {
        b.forwarded_out >= 2 && b.forwarded_in >= 2
    })
    .await;
    assert_eq!((info.forwarded_out, info.forwarded_in), (2, 2), "{info:?}");
    roost.shutdown().await;
    drop(gate);
    drop(mosquitto);
}

/// A remote that closes connections whose CONNECT has the bridge bit (a broker that does not
/// know it) gets the bridge without it: plain MQTT 3.1.1, and messages cross.
#[tokio::test]
async fn a_remote_that_closes_on_the_bridge_bit_gets_plain_mqtt() {
    let Some(binary) = mosquitto_binary() else {
        return;
    };
    let dir = tempfile::tempdir().expect("temporary directory");
    let port = free_port();
    let mosquitto = Mosquitto::start(&binary, dir.path(), &[port], &plain_listener(port)).await;
    let gate = Gate::start(mosquitto.addr(), TURN_AWAY_BRIDGES).await;
    let roost = start_broker_with(|c| {
        c.bridges = vec![bridge(
            "edge",
            gate.port,
            BridgeProtocol::Mqtt311,
            two_way_lines(),
        )];
    })
    .await;
    let info = wait_bridge(&roost, "edge", "connected", |b| {
        b.state == BridgeState::Connected
    })
    .await;
    assert_eq!(info.connects, 1, "{info:?}");
    assert_eq!(gate.turned_away.load(SeqCst), 1);
    assert_eq!(
        (
            mosquitto.log_count("New bridge connected"),
            mosquitto.log_count("New client connected from 127.0.0.1")
        ),
        (0, 1),
        "mosquitto sees a plain client"
    );
    messages_cross(&roost, &mosquitto).await;
    assert_eq!(gate.turned_away.load(SeqCst), 1, "no other attempt");
    roost.shutdown().await;
    drop(gate);
    drop(mosquitto);
}
