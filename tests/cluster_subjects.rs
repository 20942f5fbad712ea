//! Topic ↔ subject mapping, byte for byte, against nats-server's own MQTT support: a
//! standalone `nats-server` with JetStream and an MQTT listener, and one Roost node in
//! cluster mode on it (replicas 1). A topic published through nats-server's MQTT port and
//! through Roost must give NATS the same subject (Roost's under its `mqtt.` prefix), and a
//! NATS message must reach an MQTT subscriber on `#` with the same topic from either.
//!
//! nats-server 2.9 refuses topics with `.` or white space (it closes the connection), and
//! maps subjects back to topics without knowing the `//` that 2.10 introduced for `.`;
//! Roost maps as 2.10 does. Those cases are checked against 2.10's mapping, and against the
//! running nats-server only when it is 2.10 or later.
//!
//! Skipped when `nats-server` is not installed, unless `ROOST_CLUSTER=require` is set.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::cluster::start_node;
use common::nats;
use common::*;
use futures_util::StreamExt;
use roost::codec::{Packet, QoS, Version};

/// Topics nats-server 2.9 accepts: empty levels, leading and trailing `/`, non-ASCII, and
/// characters that are wildcards in neither protocol where they stand.
const TOPICS: &[&str] = &[
    "a/b",
    "a//b",
    "/a",
    "a/",
    "/",
    "//",
    "a///b",
    "/a/",
    "temp/°C",
    "a*b/c",
    "a>b/c>",
    "x/ü/€/😀",
    "a:b/c\\d/'e'/%f",
    "$x/y",
];

/// Topics with `.`, which nats-server 2.9 refuses, and their subject in 2.10's mapping.
const DOTTED: &[(&str, &str)] = &[
    ("a.b", "a//b"),
    (".", "//"),
    ("a/b.c/d", "a.b//c.d"),
    ("a..b/", "a////b./"),
];

/// Subjects both nats-server 2.9 and 2.10 map back to a topic as Roost does: the subjects of
/// topics, plain NATS subjects, and a `./` inside a token.
const SUBJECTS: &[&str] = &[
    "a.b",
    "a./.b",
    "/.a",
    "a./",
    "/./",
    "/././",
    "a././.b",
    "temp.°C",
    "a*b.c",
    "x",
    "a./b",
    "sensors.t1.°C",
];

/// Subjects with a `/` that is not part of `./` or `/.`: 2.10 (and Roost) read `//` as `.`
/// and drop a lone `/`; 2.9 keeps them. With the topic 2.10 gives.
const SLASHED: &[(&str, &str)] = &[
    ("a//b.c", "a.b/c"),
    ("a/b", "ab"),
    ("a/.b", "a/b"),
    ("a.//", "a/."),
    ("//.a", "./a"),
];

/// A standalone nats-server with JetStream and MQTT on ephemeral ports, killed (by its PID)
/// when dropped.
struct NatsMqtt {
    child: Child,
    client_port: u16,
    mqtt_port: u16,
    /// (major, minor) of the server's version.
    version: (u32, u32),
    _dir: tempfile::TempDir,
}

impl Drop for NatsMqtt {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl NatsMqtt {
    fn start() -> NatsMqtt {
        let dir = tempfile::tempdir().expect("temporary directory");
        let conf = dir.path().join("nats.conf");
        std::fs::write(
            &conf,
            format!(
                "server_name: mqtt-ref\n\
                 listen: \"127.0.0.1:-1\"\n\
                 jetstream {{ store_dir: {:?} }}\n\
                 mqtt {{ listen: \"127.0.0.1:-1\" }}\n",
                dir.path().join("js").display().to_string()
            ),
        )
        .expect("config written");
        let mut child = Command::new("nats-server")
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("nats-server starts");
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
        let port_after = |line: &str, prefix: &str| -> Option<u16> {
            line.split(prefix)
                .nth(1)?
                .trim()
                .rsplit(':')
                .next()?
                .parse()
                .ok()
        };
        let mut server = NatsMqtt {
            child,
            client_port: 0,
            mqtt_port: 0,
            version: (0, 0),
            _dir: dir,
        };
        let mut seen = Vec::new();
        loop {
            let line = log
                .recv_timeout(WAIT)
                .unwrap_or_else(|_| panic!("nats-server not ready; its log:\n{}", seen.join("\n")));
            if let Some(p) = port_after(&line, "Listening for client connections on ") {
                server.client_port = p;
            } else if let Some(p) = port_after(&line, "Listening for MQTT clients on ") {
                server.mqtt_port = p;
            } else if let Some(v) = line.split("Version:").nth(1) {
                let mut parts = v.trim().split('.').map(|n| n.parse().unwrap_or(0));
                server.version = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
            }
            let ready = line.contains("Server is ready");
            seen.push(line);
            if ready {
                break;
            }
        }
        assert!(
            server.client_port != 0 && server.mqtt_port != 0,
            "ports in the log:\n{}",
            seen.join("\n")
        );
        server
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.client_port)
    }

    fn mqtt(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.mqtt_port))
    }

    /// nats-server 2.10 or later (which knows `//` for `.`).
    fn maps_dots(&self) -> bool {
        self.version >= (2, 10)
    }
}

/// The NATS messages seen, by payload (the tests mark each publish with its own payload).
struct Seen {
    sub: async_nats::Subscriber,
    by_payload: HashMap<Vec<u8>, String>,
}

impl Seen {
    /// The subject of the message with `payload`, waited for (bounded).
    async fn subject_of(&mut self, payload: &str) -> String {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Some(s) = self.by_payload.get(payload.as_bytes()) {
                return s.clone();
            }
            let m = tokio::time::timeout_at(deadline, self.sub.next())
                .await
                .unwrap_or_else(|_| panic!("no NATS message {payload:?} in time"))
                .expect("subscription open");
            self.by_payload
                .insert(m.payload.to_vec(), m.subject.to_string());
        }
    }
}

/// The topic of the next PUBLISH with `payload` on `c` (others skipped), bounded.
async fn topic_of(c: &mut RawClient, payload: &str) -> String {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let p = tokio::time::timeout_at(deadline, c.recv())
            .await
            .unwrap_or_else(|_| panic!("no PUBLISH {payload:?} in time"));
        match p {
            Some(Packet::Publish(p)) if p.payload == payload.as_bytes() => return p.topic,
            Some(Packet::Publish(_)) => {}
            other => panic!("expected PUBLISH {payload:?}, got {other:?}"),
        }
    }
}

/// A 3.1.1 client on `addr` (nats-server's MQTT support speaks 3.1.1 only).
async fn client(addr: SocketAddr, id: &str) -> RawClient {
    let (c, connack) = RawClient::connect(addr, connect_packet(Version::V311, id)).await;
    assert_eq!(connack.code.0, 0, "{id} connected");
    c
}

/// A 3.1.1 client on `addr` subscribed to `#` at QoS 0.
async fn all_topics(addr: SocketAddr, id: &str) -> RawClient {
    let mut c = client(addr, id).await;
    c.send(&subscribe("#", QoS::AtMostOnce)).await;
    // nats-server 2.9 may send its own `$MQTT/sess/...` messages to `#`, even before the
    // SUBACK.
    loop {
        match c.recv().await {
            Some(Packet::SubAck(_)) => break,
            Some(Packet::Publish(p)) if p.topic.starts_with("$MQTT/") => {}
            other => panic!("expected SUBACK, got {other:?}"),
        }
    }
    c
}

/// A topic published at QoS 0 through nats-server's MQTT port and through Roost reaches NATS
/// on the same subject, Roost's under `mqtt.`; for topics with `.` (refused by nats-server
/// 2.9) Roost's subject is 2.10's. MQTT-4.7.3-1 (Topic Names of at least one character,
/// empty levels allowed) and MQTT-4.7.3-2 (any UTF-8 but U+0000) bound what is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_map_to_the_subjects_nats_server_gives_them() {
    if nats::skip_without_nats() {
        return;
    }
    let server = NatsMqtt::start();
    let url = server.url();
    eprintln!("nats-server {:?}", server.version);
    let node = start_node(std::slice::from_ref(&url), "solo").await;
    let nc = nats::connect(std::slice::from_ref(&url)).await;
    let mut seen = Seen {
        sub: nc.subscribe(">").await.expect("subscribed to >"),
        by_payload: HashMap::new(),
    };
    nc.flush().await.expect("flushed");
    let mut via_nats = client(server.mqtt(), "ref-pub").await;
    let mut via_roost = client(node.local_addr(), "roost-pub").await;

    let mut table = Vec::new();
    for (i, topic) in TOPICS.iter().enumerate() {
        let (ns, roost) = (format!("ns-{i}"), format!("roost-{i}"));
        via_nats
            .send(&publish(topic, QoS::AtMostOnce, 0, ns.as_bytes()))
            .await;
        via_roost
            .send(&publish(topic, QoS::AtMostOnce, 0, roost.as_bytes()))
            .await;
        let from_nats = seen.subject_of(&ns).await;
        let from_roost = seen.subject_of(&roost).await;
        table.push(format!("{topic:?} -> {from_nats:?} / {from_roost:?}"));
        assert_eq!(
            from_roost,
            format!("mqtt.{from_nats}"),
            "topic {topic:?}: nats-server's subject, under Roost's prefix"
        );
    }
    for (i, (topic, subject)) in DOTTED.iter().enumerate() {
        let roost = format!("roost-dotted-{i}");
        via_roost
            .send(&publish(topic, QoS::AtMostOnce, 0, roost.as_bytes()))
            .await;
        let from_roost = seen.subject_of(&roost).await;
        table.push(format!("{topic:?} -> (2.10) {subject:?} / {from_roost:?}"));
        assert_eq!(from_roost, format!("mqtt.{subject}"), "topic {topic:?}");
        if server.maps_dots() {
            let ns = format!("ns-dotted-{i}");
            via_nats
                .send(&publish(topic, QoS::AtMostOnce, 0, ns.as_bytes()))
                .await;
            assert_eq!(&seen.subject_of(&ns).await, subject, "topic {topic:?}");
        }
    }
    eprintln!("{}", table.join("\n"));
    // nats-server 2.9 closes the connection of a client publishing to a topic with a `.`.
    if !server.maps_dots() {
        via_nats
            .send(&publish("a.b", QoS::AtMostOnce, 0, b"refused"))
            .await;
        assert!(via_nats.until_closed().await.is_empty());
    }
}

/// A NATS message on subject `S` reaches nats-server's MQTT subscriber on `#` with the topic
/// that a NATS message on `mqtt.S` has at Roost's subscriber on `#` (MQTT-4.7.1-2: `#`
/// matches every topic not starting with `$`). For subjects with a lone `/` or a `//`,
/// Roost's topic is 2.10's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subjects_map_to_the_topics_nats_server_gives_them() {
    if nats::skip_without_nats() {
        return;
    }
    let server = NatsMqtt::start();
    let url = server.url();
    let node = start_node(std::slice::from_ref(&url), "solo").await;
    let nc = nats::connect(std::slice::from_ref(&url)).await;
    let mut at_nats = all_topics(server.mqtt(), "ref-sub").await;
    let mut at_roost = all_topics(node.local_addr(), "roost-sub").await;
    // Roost subscribes to `mqtt.>` once its client subscribed: wait until it is in place.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        nc.publish("mqtt.warm", "warm".into())
            .await
            .expect("published");
        nc.flush().await.expect("flushed");
        if let Ok(Some(Packet::Publish(p))) =
            tokio::time::timeout(Duration::from_millis(200), at_roost.recv()).await
        {
            assert_eq!(p.topic, "warm");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "Roost's NATS subscription in time"
        );
    }

    let mut table = Vec::new();
    for (i, subject) in SUBJECTS.iter().enumerate() {
        let (ns, roost) = (format!("ns-{i}"), format!("roost-{i}"));
        nc.publish(subject.to_string(), ns.clone().into())
            .await
            .expect("published");
        nc.publish(format!("mqtt.{subject}"), roost.clone().into())
            .await
            .expect("published");
        nc.flush().await.expect("flushed");
        let from_nats = topic_of(&mut at_nats, &ns).await;
        let from_roost = topic_of(&mut at_roost, &roost).await;
        table.push(format!("{subject:?} -> {from_nats:?} / {from_roost:?}"));
        assert_eq!(from_roost, from_nats, "subject {subject:?}");
    }
    for (i, (subject, topic)) in SLASHED.iter().enumerate() {
        let (ns, roost) = (format!("ns-slashed-{i}"), format!("roost-slashed-{i}"));
        nc.publish(subject.to_string(), ns.clone().into())
            .await
            .expect("published");
        nc.publish(format!("mqtt.{subject}"), roost.clone().into())
            .await
            .expect("published");
        nc.flush().await.expect("flushed");
        let from_nats = topic_of(&mut at_nats, &ns).await;
        let from_roost = topic_of(&mut at_roost, &roost).await;
        table.push(format!(
            "{subject:?} -> {from_nats:?} / {from_roost:?} (2.10: {topic:?})"
        ));
        assert_eq!(&from_roost, topic, "subject {subject:?}: 2.10's topic");
        if server.maps_dots() {
            assert_eq!(from_nats, from_roost, "subject {subject:?}");
        }
    }
    eprintln!("{}", table.join("\n"));
}
