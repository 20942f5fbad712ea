//! Cluster mode: a Shared Subscription spans the nodes, so each message reaches one member of
//! the group in the whole cluster (MQTT 5.0 4.8.2), QoS 0, 1 and 2 alike. Skipped when
//! `nats-server` is not installed, unless `ROOST_CLUSTER=require`.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use common::bridge::next_within;
use common::cluster::{start_node, start_three};
use common::nats::{self, NatsCluster};
use common::{RawClient, WAIT, ack, connect_packet, publish, subscribe};
use parking_lot::Mutex;
use roost::BrokerHandle;
use roost::codec::{AckKind, Connect, Packet, QoS, ReasonCode, Version};
use tokio_util::sync::CancellationToken;

fn start_nats() -> Option<NatsCluster> {
    if nats::skip_without_nats() {
        return None;
    }
    Some(NatsCluster::start(3))
}

async fn connect(node: &BrokerHandle, connect: Connect) -> (RawClient, bool) {
    let id = connect.client_id.clone();
    let (c, ack) = RawClient::connect(node.local_addr(), connect).await;
    assert_eq!(ack.code, ReasonCode::SUCCESS, "{id}");
    (c, ack.session_present)
}

async fn member(node: &BrokerHandle, version: Version, id: &str, filter: &str) -> RawClient {
    let (mut c, _) = connect(node, connect_packet(version, id)).await;
    subscribe_to(&mut c, filter, QoS::ExactlyOnce).await;
    c
}

async fn subscribe_to(c: &mut RawClient, filter: &str, qos: QoS) {
    c.send(&subscribe(filter, qos)).await;
    match c.recv().await {
        Some(Packet::SubAck(s)) => assert!(s.codes[0].0 < 0x80, "{filter} granted"),
        other => panic!("expected SUBACK, got {other:?}"),
    }
}

/// Sends a QoS 1/2 PUBLISH and completes its handshake; the reason code must be success.
async fn publish_acked(c: &mut RawClient, topic: &str, qos: QoS, pid: u16, payload: &str) {
    c.send(&publish(topic, qos, pid, payload.as_bytes())).await;
    match c.recv().await {
        Some(Packet::Ack(a)) if a.packet_id == pid => assert_eq!(a.reason.0, 0, "{payload}"),
        other => panic!("expected the acknowledgement of {pid}, got {other:?}"),
    }
    if qos == QoS::ExactlyOnce {
        c.send(&ack(AckKind::PubRel, pid)).await;
        match c.recv().await {
            Some(Packet::Ack(a)) if a.kind == AckKind::PubComp => {}
            other => panic!("expected PUBCOMP, got {other:?}"),
        }
    }
}

/// How long the messages of a test may take to arrive: a message handed to a node whose pull
/// request then failed (a NATS reconnect on a loaded machine) comes back once the group's
/// consumer's acknowledgement wait (30 s) has passed.
const DELIVERY_WAIT: Duration = Duration::from_secs(60);

/// What each client received (payloads, probes left out), gathered in the background.
struct Receivers {
    got: Vec<Arc<Mutex<Vec<String>>>>,
    stop: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<RawClient>>,
}

impl Receivers {
    /// Starts receiving (and acknowledging) on every client.
    fn start(clients: Vec<RawClient>) -> Receivers {
        let stop = CancellationToken::new();
        let mut got = Vec::new();
        let mut tasks = Vec::new();
        for mut c in clients {
            let list = Arc::new(Mutex::new(Vec::new()));
            got.push(Arc::clone(&list));
            let stop = stop.clone();
            tasks.push(tokio::spawn(async move {
                while !stop.is_cancelled() {
                    if let Some(p) = next_within(&mut c, Duration::from_millis(100)).await {
                        list.lock()
                            .push(String::from_utf8_lossy(&p.payload).into_owned());
                    }
                }
                c
            }));
        }
        Receivers { got, stop, tasks }
    }

    /// Messages the client `i` received, probes left out.
    fn messages(&self, i: usize) -> Vec<String> {
        let got = self.got[i].lock();
        got.iter().filter(|p| *p != PROBE).cloned().collect()
    }

    fn total(&self, of: &[usize]) -> usize {
        of.iter().map(|&i| self.messages(i).len()).sum()
    }

    /// True once one of the clients `of` received a probe.
    fn probed(&self, of: &[usize]) -> bool {
        of.iter()
            .any(|&i| self.got[i].lock().iter().any(|p| p == PROBE))
    }

    /// Waits (bounded) until the clients `of` together hold `count` messages, then a little
    /// longer for copies that should not come.
    async fn wait_for(&self, of: &[usize], count: usize) {
        let deadline = tokio::time::Instant::now() + DELIVERY_WAIT;
        while self.total(of) < count {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{count} messages in time; got {:?}",
                of.iter()
                    .map(|&i| self.messages(i).len())
                    .collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    /// Waits (bounded) until the clients `of` together received each of `names`.
    async fn wait_for_all(&self, of: &[usize], names: &[String]) {
        let deadline = tokio::time::Instant::now() + DELIVERY_WAIT;
        loop {
            let counts = self.counts(of);
            let missing: Vec<&String> = names.iter().filter(|n| !counts.contains_key(*n)).collect();
            if missing.is_empty() {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "every message in time; missing {missing:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Every payload the clients `of` received, with how many times.
    fn counts(&self, of: &[usize]) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for &i in of {
            for p in self.messages(i) {
                *counts.entry(p).or_insert(0) += 1;
            }
        }
        counts
    }

    async fn finish(self) -> Vec<RawClient> {
        self.stop.cancel();
        let mut clients = Vec::new();
        for t in self.tasks {
            clients.push(t.await.expect("receiver task"));
        }
        clients
    }
}

const PROBE: &str = "probe";

/// Publishes QoS 0 probes until one of the clients `of` has one: NATS spreads the interest
/// of a new (queue) subscription to the other servers asynchronously.
async fn await_interest(
    publisher: &mut RawClient,
    receivers: &Receivers,
    of: &[usize],
    topic: &str,
) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !receivers.probed(of) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the interest of {of:?} reached the publisher's node in time"
        );
        publisher
            .send(&publish(topic, QoS::AtMostOnce, 0, PROBE.as_bytes()))
            .await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn expected(names: &[String]) -> BTreeMap<String, usize> {
    names.iter().map(|n| (n.clone(), 1)).collect()
}

/// Three nodes, a group with members on each (5.0 and 3.1.1, two on one node): each QoS 0, 1
/// and 2 message goes to exactly one member of the group, while another group and an
/// ordinary subscription each get every message once.
#[tokio::test(flavor = "multi_thread")]
async fn a_shared_subscription_spans_the_nodes() {
    let Some(cluster) = start_nats() else { return };
    let urls = cluster.urls();
    let (n1, n2, n3) = start_three(&urls).await;
    let g = "$share/g/jobs/#";
    let clients = vec![
        member(&n1, Version::V5, "g1", g).await,
        member(&n2, Version::V311, "g2", g).await,
        member(&n3, Version::V5, "g3", g).await,
        member(&n3, Version::V5, "g4", g).await,
        member(&n1, Version::V5, "h1", "$share/h/jobs/+").await,
        member(&n2, Version::V5, "plain", "jobs/#").await,
    ];
    let group = [0, 1, 2, 3];
    let receivers = Receivers::start(clients);
    let (mut p, _) = connect(&n1, connect_packet(Version::V5, "p")).await;
    for of in [&group[..], &[4], &[5]] {
        await_interest(&mut p, &receivers, of, "jobs/probe").await;
    }

    let mut names = Vec::new();
    for i in 0..150u16 {
        let name = format!("q1-{i}");
        publish_acked(&mut p, &format!("jobs/{i}"), QoS::AtLeastOnce, i + 1, &name).await;
        names.push(name);
    }
    for i in 0..50u16 {
        let name = format!("q2-{i}");
        publish_acked(&mut p, "jobs/two", QoS::ExactlyOnce, i + 1000, &name).await;
        names.push(name);
    }
    for i in 0..50u16 {
        let name = format!("q0-{i}");
        p.send(&publish("jobs/zero", QoS::AtMostOnce, 0, name.as_bytes()))
            .await;
        names.push(name);
    }
    receivers.wait_for(&group, names.len()).await;
    receivers.wait_for(&[4], names.len()).await;
    receivers.wait_for(&[5], names.len()).await;
    assert_eq!(
        receivers.counts(&group),
        expected(&names),
        "group g: once each"
    );
    assert_eq!(
        receivers.counts(&[4]),
        expected(&names),
        "group h: once each"
    );
    assert_eq!(
        receivers.counts(&[5]),
        expected(&names),
        "ordinary: once each"
    );
    let per_member: Vec<usize> = group.iter().map(|&i| receivers.messages(i).len()).collect();
    eprintln!("messages per member of g: {per_member:?}");
    receivers.finish().await;
}

/// A CONNECT that keeps its Session for an hour.
fn durable(version: Version, id: &str) -> Connect {
    Connect {
        clean_start: false,
        session_expiry_interval: 3600,
        ..connect_packet(version, id)
    }
}

/// Publishes `count` QoS 1 messages `{prefix}-{i}` to `topic/{i}`; returns their payloads.
async fn publish_many(p: &mut RawClient, topic: &str, prefix: &str, count: u16) -> Vec<String> {
    let mut names = Vec::new();
    for i in 0..count {
        let name = format!("{prefix}-{i}");
        publish_acked(p, &format!("{topic}/{i}"), QoS::AtLeastOnce, i + 1, &name).await;
        names.push(name);
    }
    names
}

/// A group whose only member is away keeps its messages until a member is back, on any node:
/// the durable member's Session moves to another node with its Shared Subscription and
/// takes the backlog there. With a second member, each message goes to one of them; when
/// the durable member is away, the other takes everything.
#[tokio::test(flavor = "multi_thread")]
async fn a_group_keeps_its_messages_while_its_members_are_away() {
    let Some(cluster) = start_nats() else { return };
    let urls = cluster.urls();
    let (n1, n2, n3) = start_three(&urls).await;
    let w = "$share/w/work/#";
    let (mut d, _) = connect(&n1, durable(Version::V5, "d")).await;
    subscribe_to(&mut d, w, QoS::AtLeastOnce).await;
    let (mut p, _) = connect(&n2, connect_packet(Version::V5, "p")).await;
    let receivers = Receivers::start(vec![d]);
    await_interest(&mut p, &receivers, &[0], "work/probe").await;
    let mut d = receivers.finish().await.remove(0);
    d.send(&Packet::Disconnect(Default::default())).await;
    drop(d);

    // Away: the group's messages wait for a member.
    let away = publish_many(&mut p, "work", "away", 100).await;
    let (d, present) = connect(&n3, durable(Version::V5, "d")).await;
    assert!(present, "the Session moved to n3");
    let receivers = Receivers::start(vec![d]);
    receivers.wait_for(&[0], away.len()).await;
    assert_eq!(
        receivers.counts(&[0]),
        expected(&away),
        "the backlog once each"
    );
    let d = receivers.finish().await.remove(0);

    // With a second member on n1, each message to one of them.
    let e = member(&n1, Version::V311, "e", w).await;
    let receivers = Receivers::start(vec![d, e]);
    await_interest(&mut p, &receivers, &[1], "work/probe").await;
    let both = publish_many(&mut p, "work", "both", 100).await;
    receivers.wait_for(&[0, 1], both.len()).await;
    assert_eq!(receivers.counts(&[0, 1]), expected(&both), "once each");
    let mut clients = receivers.finish().await;
    let e = clients.remove(1);
    let mut d = clients.remove(0);
    d.send(&Packet::Disconnect(Default::default())).await;
    drop(d);

    // The durable member away again: the other takes everything.
    let receivers = Receivers::start(vec![e]);
    let alone = publish_many(&mut p, "work", "alone", 50).await;
    receivers.wait_for(&[0], alone.len()).await;
    assert_eq!(
        receivers.counts(&[0]),
        expected(&alone),
        "all to the member connected"
    );
    receivers.finish().await;
}

/// The unacknowledged QoS 1 messages of a member whose Session ends go to the group's other
/// members (MQTT 5.0 4.8.2), on another node when none is left on its own: written to the
/// stream again for that group only, so an ordinary subscriber does not get them twice.
async fn ended_member_messages_go_to_another_node(with_store: bool) {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let Some(cluster) = start_nats() else { return };
    let urls = cluster.urls();
    let dir = tempfile::tempdir().expect("temp dir");
    let n1 = common::cluster::start_node_with(&urls, "n1", |c| {
        if with_store {
            c.in_memory = false;
            c.data_dir = dir.path().to_path_buf();
        }
    })
    .await;
    let (n2, n3) = (start_node(&urls, "n2").await, start_node(&urls, "n3").await);
    let k = "$share/k/tasks/#";
    let mut m1 = member(&n1, Version::V5, "m1", k).await;
    let plain = member(&n3, Version::V5, "plain", "tasks/#").await;
    let (mut p, _) = connect(&n3, connect_packet(Version::V5, "p")).await;
    let receivers = Receivers::start(vec![plain]);
    await_interest(&mut p, &receivers, &[0], "tasks/probe").await;
    // m1 is the only member: it takes them all, and acknowledges none.
    let names = publish_many(&mut p, "tasks", "t", 20).await;
    let mut unacked = Vec::new();
    while unacked.len() < 5 {
        match tokio::time::timeout(WAIT, m1.recv()).await {
            Ok(Some(Packet::Publish(m))) => {
                let payload = String::from_utf8_lossy(&m.payload).into_owned();
                if payload != PROBE {
                    unacked.push(payload);
                }
            }
            other => panic!("expected a PUBLISH, got {other:?}"),
        }
    }
    // A second member on n2, then m1's Session ends with its connection.
    let m2 = member(&n2, Version::V5, "m2", k).await;
    drop(m1);
    let receivers2 = Receivers::start(vec![m2]);
    // Every one of them (QoS 1: nats-server 2.9 was seen, rarely, to hand a message already
    // acknowledged to another node once more, so a second copy is reported, not failed).
    receivers2.wait_for_all(&[0], &names).await;
    let counts = receivers2.counts(&[0]);
    let twice: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    if !twice.is_empty() {
        eprintln!("delivered more than once: {twice:?}");
    }
    receivers.wait_for(&[0], names.len()).await;
    assert_eq!(
        receivers.counts(&[0]),
        expected(&names),
        "the ordinary subscriber: once"
    );
    receivers2.finish().await;
    receivers.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_ended_member_s_messages_go_to_a_member_on_another_node() {
    ended_member_messages_go_to_another_node(false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_ended_member_s_stored_messages_go_to_a_member_on_another_node() {
    ended_member_messages_go_to_another_node(true).await;
}

/// A durable member that held unacknowledged messages of its group (in flight and queued)
/// reconnects to another node: its Session moves, and the group's messages it held are given
/// back to the group there, none lost (MQTT 5.0 4.8.2).
#[tokio::test(flavor = "multi_thread")]
async fn a_moving_member_s_group_messages_are_not_lost() {
    let Some(cluster) = start_nats() else { return };
    let urls = cluster.urls();
    let (n1, n2, n3) = start_three(&urls).await;
    let w = "$share/m/moving/#";
    let (mut d, _) = connect(&n1, durable(Version::V5, "d")).await;
    subscribe_to(&mut d, w, QoS::AtLeastOnce).await;
    let (mut p, _) = connect(&n2, connect_packet(Version::V5, "p")).await;
    let receivers = Receivers::start(vec![d]);
    await_interest(&mut p, &receivers, &[0], "moving/probe").await;
    let mut d = receivers.finish().await.remove(0);
    // d takes messages and acknowledges none, then its connection drops.
    let names = publish_many(&mut p, "moving", "m", 60).await;
    let mut held = 0;
    while held < 10 {
        match tokio::time::timeout(WAIT, d.recv()).await {
            Ok(Some(Packet::Publish(m))) if &m.payload[..] != PROBE.as_bytes() => held += 1,
            Ok(Some(Packet::Publish(_))) => {}
            other => panic!("expected a PUBLISH, got {other:?}"),
        }
    }
    drop(d);
    let (d, present) = connect(&n3, durable(Version::V5, "d")).await;
    assert!(present, "the Session moved to n3");
    let receivers = Receivers::start(vec![d]);
    receivers.wait_for(&[0], names.len()).await;
    let counts = receivers.counts(&[0]);
    for name in &names {
        assert!(counts.contains_key(name), "{name} arrived");
    }
    receivers.finish().await;
}

/// The SUBACK code of a SUBSCRIBE to `filter`.
async fn code(c: &mut RawClient, filter: &str) -> u8 {
    c.send(&subscribe(filter, QoS::AtLeastOnce)).await;
    match c.recv().await {
        Some(Packet::SubAck(s)) => s.codes[0].0,
        other => panic!("expected SUBACK, got {other:?}"),
    }
}

/// Each group costs the cluster JetStream consumers, so a node bounds the groups its clients
/// are members of (`cluster.max_shared_groups`): one more is refused with 0x97 (3.1.1: 0x80)
/// while joining a group with members already, or after one emptied, works.
#[tokio::test(flavor = "multi_thread")]
async fn a_node_bounds_the_groups_its_clients_join() {
    let Some(cluster) = start_nats() else { return };
    let urls = cluster.urls();
    let n1 = common::cluster::start_node_with(&urls, "n1", |c| {
        if let Some(cluster) = c.cluster.as_mut() {
            cluster.max_shared_groups = 2;
        }
    })
    .await;
    let (mut a, _) = connect(&n1, connect_packet(Version::V5, "a")).await;
    let (mut b, _) = connect(&n1, connect_packet(Version::V311, "b")).await;
    assert_eq!(code(&mut a, "$share/one/x").await, 1);
    assert_eq!(code(&mut a, "$share/two/x").await, 1);
    assert_eq!(code(&mut a, "$share/three/x").await, 0x97, "a third group");
    assert_eq!(code(&mut b, "$share/three/x").await, 0x80, "3.1.1");
    assert_eq!(
        code(&mut a, "$share/sys/$SYS/broker/#").await,
        1,
        "a group of `$SYS` topics stays on its node and is not counted"
    );
    assert_eq!(
        code(&mut b, "$share/one/x").await,
        1,
        "a group with members"
    );
    assert_eq!(
        code(&mut a, "x/#").await,
        1,
        "ordinary subscriptions are not counted"
    );
    // Group `two` empties: room for another.
    a.send(&Packet::Unsubscribe(roost::codec::Unsubscribe {
        packet_id: 2,
        filters: vec!["$share/two/x".into()],
        user_properties: Vec::new(),
    }))
    .await;
    assert!(matches!(a.recv().await, Some(Packet::UnsubAck(_))));
    assert_eq!(code(&mut b, "$share/three/x").await, 1);
}

/// A member whose queue is full on its node: the group's messages go to the member of another
/// node, whatever `queue_full` says, and each arrives once.
async fn a_full_member_passes_messages_on(policy: roost::config::QueueFullPolicy) {
    let Some(cluster) = start_nats() else { return };
    let urls = cluster.urls();
    let n1 = common::cluster::start_node_with(&urls, "n1", |c| {
        c.max_queued_messages = 3;
        c.queue_full = policy;
    })
    .await;
    let (n2, n3) = (start_node(&urls, "n2").await, start_node(&urls, "n3").await);
    let g = "$share/full/full/#";
    // Takes one message and never acknowledges it: its queue fills.
    let (mut slow, _) = connect(
        &n1,
        Connect {
            receive_maximum: 1,
            ..connect_packet(Version::V5, "slow")
        },
    )
    .await;
    subscribe_to(&mut slow, g, QoS::AtLeastOnce).await;
    let fast = member(&n2, Version::V5, "fast", g).await;
    let receivers = Receivers::start(vec![fast]);
    let (mut p, _) = connect(&n3, connect_packet(Version::V5, "p")).await;
    await_interest(&mut p, &receivers, &[0], "full/probe").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let names = publish_many(&mut p, "full", "m", 60).await;
    // The slow member holds at most 3 (1 in flight, 2 queued); the other member gets the rest.
    receivers.wait_for(&[0], names.len() - 3).await;
    let mut counts = receivers.counts(&[0]);
    // QoS 1: nats-server 2.9 was seen, rarely and only on a loaded machine, to hand a message
    // already taken once more (see `an_ended_member_s_*`): a second copy is reported, and the
    // messages it stood in for are still waited for.
    let second_copies: usize = counts.values().map(|&n| n.saturating_sub(1)).sum();
    if second_copies > 0 {
        eprintln!("{policy:?}: {second_copies} second copies (nats-server redelivery): {counts:?}");
        receivers
            .wait_for(&[0], names.len() - 3 + second_copies)
            .await;
        counts = receivers.counts(&[0]);
    }
    assert!(
        counts.len() >= names.len() - 3,
        "{policy:?}: every message the slow member cannot hold reaches the other: {counts:?}"
    );
    receivers.finish().await;
    drop(slow);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_member_passes_messages_on_under_backpressure() {
    a_full_member_passes_messages_on(roost::config::QueueFullPolicy::Backpressure).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_member_passes_messages_on_under_drop_new() {
    a_full_member_passes_messages_on(roost::config::QueueFullPolicy::DropNew).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_member_passes_messages_on_under_drop_oldest() {
    a_full_member_passes_messages_on(roost::config::QueueFullPolicy::DropOldest).await;
}

/// Groups whose ShareName is as long as allowed (the whole filter 512 bytes), in non-ASCII
/// letters with spaces and NATS wildcard characters, work across nodes: the name is part of
/// no NATS name (consumers and queue groups are named after its hash).
#[tokio::test(flavor = "multi_thread")]
async fn an_odd_share_name_spans_the_nodes() {
    let Some(cluster) = start_nats() else { return };
    let urls = cluster.urls();
    let (n1, n2) = (start_node(&urls, "n1").await, start_node(&urls, "n2").await);
    let odd = "é .*>$\u{1F600}";
    let mut name = String::new();
    while format!("$share/{name}{odd}/odd/#").len() <= 512 {
        name.push_str(odd);
    }
    while format!("$share/{name}/odd/#").len() < 512 {
        name.push('x');
    }
    let g = format!("$share/{name}/odd/#");
    assert_eq!(g.len(), 512);
    let clients = vec![
        member(&n1, Version::V5, "a", &g).await,
        member(&n2, Version::V311, "b", &g).await,
    ];
    let receivers = Receivers::start(clients);
    let (mut p, _) = connect(&n2, connect_packet(Version::V5, "p")).await;
    await_interest(&mut p, &receivers, &[0, 1], "odd/probe").await;
    let names = publish_many(&mut p, "odd", "odd", 40).await;
    receivers.wait_for(&[0, 1], names.len()).await;
    assert_eq!(receivers.counts(&[0, 1]), expected(&names));
    receivers.finish().await;
}

/// Reads `c` for `wait`, acknowledging each PUBLISH as a receiver; returns the payloads and
/// whether a SUBACK or UNSUBACK came.
async fn drain(c: &mut RawClient, wait: Duration, got: &Mutex<Vec<String>>) -> bool {
    let deadline = tokio::time::Instant::now() + wait;
    let mut acked = false;
    loop {
        match tokio::time::timeout_at(deadline, c.recv()).await {
            Err(_) => return acked,
            Ok(Some(Packet::Publish(p))) => {
                match p.qos {
                    QoS::AtMostOnce => {}
                    QoS::AtLeastOnce => c.send(&ack(AckKind::PubAck, p.packet_id)).await,
                    QoS::ExactlyOnce => c.send(&ack(AckKind::PubRec, p.packet_id)).await,
                }
                got.lock()
                    .push(String::from_utf8_lossy(&p.payload).into_owned());
            }
            Ok(Some(Packet::Ack(a))) if a.kind == AckKind::PubRel => {
                c.send(&ack(AckKind::PubComp, a.packet_id)).await;
            }
            Ok(Some(Packet::SubAck(_) | Packet::UnsubAck(_))) => acked = true,
            Ok(Some(other)) => panic!("unexpected {other:?}"),
            Ok(None) => panic!("connection closed"),
        }
    }
}

/// Members on two nodes leave the group (UNSUBSCRIBE) and join it again over and over while
/// QoS 1 and 2 messages flow, beside a member that stays on a third node: each message
/// reaches exactly one member (a member that left still gets what was queued for it).
#[tokio::test(flavor = "multi_thread")]
async fn members_leaving_and_joining_lose_and_double_nothing() {
    let Some(cluster) = start_nats() else { return };
    let urls = cluster.urls();
    let (n1, n2, n3) = start_three(&urls).await;
    let g = "$share/churn/churn/#";
    let stable = member(&n3, Version::V5, "stable", g).await;
    let receivers = Receivers::start(vec![stable]);
    let stop = CancellationToken::new();
    let mut churners = Vec::new();
    for (node, id) in [(&n1, "c1"), (&n2, "c2"), (&n1, "c3")] {
        let mut c = member(node, Version::V5, id, g).await;
        let got = Arc::new(Mutex::new(Vec::new()));
        let (stop, list) = (stop.clone(), Arc::clone(&got));
        churners.push((
            got,
            tokio::spawn(async move {
                let mut round = 0u64;
                while !stop.is_cancelled() {
                    round += 1;
                    drain(
                        &mut c,
                        Duration::from_millis(50 + (round * 37) % 300),
                        &list,
                    )
                    .await;
                    c.send(&Packet::Unsubscribe(roost::codec::Unsubscribe {
                        packet_id: 2,
                        filters: vec![g.to_string()],
                        user_properties: Vec::new(),
                    }))
                    .await;
                    drain(&mut c, Duration::from_millis((round * 53) % 200), &list).await;
                    c.send(&subscribe(g, QoS::ExactlyOnce)).await;
                }
                // Whatever is still queued for it.
                drain(&mut c, Duration::from_secs(3), &list).await;
                c
            }),
        ));
    }
    let (mut p, _) = connect(&n2, connect_packet(Version::V5, "p")).await;
    let mut names = Vec::new();
    for i in 0..300u16 {
        let (qos, name) = if i % 3 == 0 {
            (QoS::ExactlyOnce, format!("two-{i}"))
        } else {
            (QoS::AtLeastOnce, format!("one-{i}"))
        };
        publish_acked(&mut p, &format!("churn/{}", i % 7), qos, i + 1, &name).await;
        names.push(name);
        if i % 20 == 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    // Let the redelivered ones (given back by a node whose members left) arrive.
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.cancel();
    let mut counts = receivers.counts(&[0]);
    for (got, task) in churners {
        task.await.expect("churner");
        for p in got.lock().iter() {
            *counts.entry(p.clone()).or_insert(0) += 1;
        }
    }
    let stable_count = receivers.messages(0).len();
    receivers.finish().await;
    let doubled: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    let missing: Vec<_> = names.iter().filter(|n| !counts.contains_key(*n)).collect();
    eprintln!("stable member took {stable_count}");
    assert!(doubled.is_empty(), "copies twice: {doubled:?}");
    assert!(missing.is_empty(), "lost: {missing:?}");
}

/// A client that is a member of a group and has an ordinary subscription to the same filter
/// gets every message once through its own subscription, and the group's copy of each
/// message goes to exactly one member (it or a member on another node).
#[tokio::test(flavor = "multi_thread")]
async fn a_member_with_its_own_subscription_gets_both_copies() {
    let Some(cluster) = start_nats() else { return };
    let urls = cluster.urls();
    let (n1, n2) = (start_node(&urls, "n1").await, start_node(&urls, "n2").await);
    let g = "$share/both/both/#";
    let mut c = member(&n1, Version::V5, "c", g).await;
    subscribe_to(&mut c, "both/#", QoS::ExactlyOnce).await;
    let e = member(&n2, Version::V5, "e", g).await;
    let receivers = Receivers::start(vec![c, e]);
    let (mut p, _) = connect(&n1, connect_packet(Version::V5, "p")).await;
    await_interest(&mut p, &receivers, &[1], "both/probe").await;
    let mut names = publish_many(&mut p, "both", "q1", 40).await;
    for i in 0..20u16 {
        let name = format!("q2-{i}");
        publish_acked(&mut p, "both/two", QoS::ExactlyOnce, i + 100, &name).await;
        names.push(name);
    }
    receivers.wait_for(&[0, 1], names.len() * 2).await;
    let (mine, other) = (receivers.counts(&[0]), receivers.counts(&[1]));
    for n in &names {
        let (a, b) = (
            mine.get(n).copied().unwrap_or(0),
            other.get(n).copied().unwrap_or(0),
        );
        assert!(a >= 1 && a + b == 2, "{n}: {a} to c, {b} to e");
    }
    receivers.finish().await;
}

/// A filter whose NATS subject would not fit nats-server's protocol line (4 KiB) is refused
/// (SUBACK 0x8F) rather than sent, which would close the node's link to NATS: a group on the
/// same node goes on getting its messages.
#[tokio::test(flavor = "multi_thread")]
async fn a_long_filter_does_not_disturb_other_groups() {
    let Some(cluster) = start_nats() else { return };
    let urls = cluster.urls();
    let (n1, n2) = (start_node(&urls, "n1").await, start_node(&urls, "n2").await);
    let ok = member(&n1, Version::V5, "ok", "$share/ok/ok/#").await;
    let receivers = Receivers::start(vec![ok]);
    let (mut p, _) = connect(&n2, connect_packet(Version::V5, "p")).await;
    await_interest(&mut p, &receivers, &[0], "ok/probe").await;
    let (mut long, _) = connect(&n1, connect_packet(Version::V5, "long")).await;
    let filter = format!("lf/{}/#", "x".repeat(5000));
    long.send(&subscribe(&filter, QoS::AtLeastOnce)).await;
    match long.recv().await {
        // Topic Filter invalid: it has no NATS subject a server would take.
        Some(Packet::SubAck(s)) => assert_eq!(s.codes[0].0, 0x8F, "the long filter refused"),
        other => panic!("expected SUBACK, got {other:?}"),
    }
    // A PUBLISH to such a topic too: 5.0 PUBACK 0x90 (Topic Name invalid).
    let topic = format!("lf/{}", "x".repeat(5000));
    p.send(&publish(&topic, QoS::AtLeastOnce, 9, b"long")).await;
    match p.recv().await {
        Some(Packet::Ack(a)) => assert_eq!(a.reason.0, 0x90, "the long topic refused"),
        other => panic!("expected PUBACK, got {other:?}"),
    }
    let names = publish_many(&mut p, "ok", "ok", 20).await;
    receivers.wait_for(&[0], names.len()).await;
    assert_eq!(receivers.counts(&[0]), expected(&names));
    receivers.finish().await;
}

/// The group consumers of the stream `ROOST_MESSAGES`: name and inactive threshold (asked
/// again until JetStream answers in time).
async fn share_consumers(urls: &[String]) -> Vec<(String, Duration)> {
    use futures_util::StreamExt;
    let js = async_nats::jetstream::new(nats::connect(urls).await);
    let deadline = tokio::time::Instant::now() + WAIT;
    'ask: loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "JetStream lists the consumers in time"
        );
        let Ok(stream) = js.get_stream("ROOST_MESSAGES").await else {
            continue;
        };
        let mut consumers = stream.consumers();
        let mut out = Vec::new();
        while let Some(info) = consumers.next().await {
            let Ok(info) = info else {
                continue 'ask;
            };
            if info.name.contains("_SHARE_") {
                out.push((info.name, info.config.inactive_threshold));
            }
        }
        return out;
    }
}

/// nats-server removes a group's consumers once no node has pulled from them for the stream's
/// `max_age` (a durable consumer with an inactive threshold, which 2.9 accepts), and the group
/// goes on when a member connects again, whenever that is: a consumer removed just after the
/// node found it is noticed and made again.
#[tokio::test(flavor = "multi_thread")]
async fn a_group_nobody_served_for_max_age_starts_afresh() {
    let Some(cluster) = start_nats() else { return };
    let urls = cluster.urls();
    let n1 = common::cluster::start_node_with(&urls, "n1", |c| {
        if let Some(cluster) = c.cluster.as_mut() {
            cluster.stream_max_age = 3;
        }
    })
    .await;
    let (mut p, _) = connect(&n1, connect_packet(Version::V5, "p")).await;
    let (mut d, _) = connect(&n1, durable(Version::V5, "d")).await;
    subscribe_to(&mut d, "$share/idle/idle/#", QoS::AtLeastOnce).await;
    for round in 0..2 {
        // Made again within seconds, though nats-server 2.9 may take a while to make a
        // consumer it has just removed.
        let deadline = tokio::time::Instant::now() + WAIT * 4;
        let consumers = loop {
            let c = share_consumers(&urls).await;
            if c.len() == 2 || tokio::time::Instant::now() > deadline {
                break c;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_eq!(consumers.len(), 2, "{consumers:?}");
        assert!(
            consumers
                .iter()
                .all(|(_, idle)| *idle == Duration::from_secs(3)),
            "{consumers:?}"
        );
        let receivers = Receivers::start(vec![d]);
        await_interest(&mut p, &receivers, &[0], "idle/probe").await;
        let names = publish_many(&mut p, "idle", &format!("idle{round}"), 10).await;
        receivers.wait_for(&[0], names.len()).await;
        assert_eq!(receivers.counts(&[0]), expected(&names), "round {round}");
        let mut gone = receivers.finish().await.remove(0);
        gone.send(&Packet::Disconnect(Default::default())).await;
        drop(gone);
        // Nobody pulls: JetStream removes the consumers after 3 s.
        let deadline = tokio::time::Instant::now() + WAIT * 2;
        while !share_consumers(&urls).await.is_empty() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the group's consumers removed in time"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let (back, present) = connect(&n1, durable(Version::V5, "d")).await;
        assert!(present);
        d = back;
    }
}

/// Deletes the group consumer of the stream whose name ends with `suffix`; true if there was
/// one.
async fn delete_share_consumer(urls: &[String], suffix: &str) -> bool {
    let js = async_nats::jetstream::new(nats::connect(urls).await);
    let stream = js.get_stream("ROOST_MESSAGES").await.expect("the stream");
    for (name, _) in share_consumers(urls).await {
        if name.ends_with(suffix) {
            return stream.delete_consumer(&name).await.is_ok();
        }
    }
    false
}

/// A group whose filter has two subjects (`cx/#`: `cx.>` and `cx`) reads them through two
/// consumers. When reading one of them fails (here: it was deleted) while the other is
/// handing messages to a durable member on a node with a store, the member still gets every
/// message once: no delivery is left waiting for a commit that was abandoned.
#[tokio::test(flavor = "multi_thread")]
async fn a_failing_consumer_does_not_stall_the_other_subject() {
    let Some(cluster) = start_nats() else { return };
    let urls = cluster.urls();
    let dir = tempfile::tempdir().expect("temp dir");
    let n1 = common::cluster::start_node_with(&urls, "n1", |c| {
        c.in_memory = false;
        c.data_dir = dir.path().to_path_buf();
    })
    .await;
    let n2 = start_node(&urls, "n2").await;
    let (mut d, _) = connect(
        &n1,
        Connect {
            keep_alive: 0,
            ..durable(Version::V5, "d")
        },
    )
    .await;
    subscribe_to(&mut d, "$share/cx/cx/#", QoS::AtLeastOnce).await;
    let receivers = Receivers::start(vec![d]);
    let (mut p, _) = connect(&n2, connect_packet(Version::V5, "p")).await;
    await_interest(&mut p, &receivers, &[0], "cx/probe").await;
    let publishing = tokio::spawn(async move {
        let mut names = Vec::new();
        for round in 0..8u16 {
            for i in 0..60u16 {
                let name = format!("cx-{round}-{i}");
                publish_acked(&mut p, "cx/x", QoS::AtLeastOnce, i + 1, &name).await;
                names.push(name);
            }
        }
        names
    });
    let mut deleted = 0;
    while !publishing.is_finished() {
        tokio::time::sleep(Duration::from_millis(700)).await;
        // The consumer of `cx` itself (no message goes there).
        if delete_share_consumer(&urls, "_1").await {
            deleted += 1;
        }
    }
    let names = publishing.await.expect("publisher");
    eprintln!("deleted the consumer of `cx` {deleted} times");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(45);
    while receivers.total(&[0]) < names.len() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let counts = receivers.counts(&[0]);
    let missing = names.iter().filter(|n| !counts.contains_key(*n)).count();
    let doubled = counts.values().filter(|n| **n > 1).count();
    assert_eq!(
        (missing, doubled),
        (0, 0),
        "missing, doubled of {}; the member on n1: {:?}",
        names.len(),
        n1.session_info("d")
    );
    receivers.finish().await;
}

/// A group's consumer removed while a node serves the group (here by hand) is made again:
/// the group's messages go on reaching its member. (Made again, it starts where the group
/// started on the node that makes it: the messages before come again.)
#[tokio::test(flavor = "multi_thread")]
async fn a_consumer_removed_while_served_is_made_again() {
    let Some(cluster) = start_nats() else { return };
    let urls = cluster.urls();
    let (n1, n2) = (start_node(&urls, "n1").await, start_node(&urls, "n2").await);
    let d = member(&n1, Version::V5, "d", "$share/rm/rm/#").await;
    let receivers = Receivers::start(vec![d]);
    let (mut p, _) = connect(&n2, connect_packet(Version::V5, "p")).await;
    await_interest(&mut p, &receivers, &[0], "rm/probe").await;
    let mut names = publish_many(&mut p, "rm", "before", 10).await;
    receivers.wait_for(&[0], names.len()).await;
    assert!(delete_share_consumer(&urls, "_0").await, "deleted");
    let after = publish_many(&mut p, "rm", "after", 10).await;
    receivers.wait_for(&[0], names.len() + after.len()).await;
    let counts = receivers.counts(&[0]);
    for n in &after {
        assert_eq!(counts.get(n), Some(&1), "{n}: {counts:?}");
    }
    names.retain(|n| counts.contains_key(n));
    assert_eq!(names.len(), 10, "{counts:?}");
    receivers.finish().await;
}

/// A node with a store restarts with the durable member of a group it held: the membership
/// is restored at start, and the messages the group got meanwhile reach the member when it
/// connects there again.
#[tokio::test(flavor = "multi_thread")]
async fn a_membership_restored_at_start_takes_the_backlog() {
    let Some(cluster) = start_nats() else { return };
    let urls = cluster.urls();
    let dir = tempfile::tempdir().expect("temp dir");
    let with_store = |c: &mut roost::Config| {
        c.in_memory = false;
        c.data_dir = dir.path().to_path_buf();
    };
    let n1 = common::cluster::start_node_with(&urls, "n1", with_store).await;
    let n2 = start_node(&urls, "n2").await;
    let (mut d, _) = connect(&n1, durable(Version::V5, "d")).await;
    subscribe_to(&mut d, "$share/rs/rs/#", QoS::ExactlyOnce).await;
    let receivers = Receivers::start(vec![d]);
    let (mut p, _) = connect(&n2, connect_packet(Version::V5, "p")).await;
    await_interest(&mut p, &receivers, &[0], "rs/probe").await;
    let before = publish_many(&mut p, "rs", "before", 10).await;
    receivers.wait_for(&[0], before.len()).await;
    let mut d = receivers.finish().await.remove(0);
    d.send(&Packet::Disconnect(Default::default())).await;
    drop(d);
    n1.shutdown().await;

    let away = publish_many(&mut p, "rs", "away", 20).await;
    let n1 = common::cluster::start_node_with(&urls, "n1", with_store).await;
    let (d, present) = connect(&n1, durable(Version::V5, "d")).await;
    assert!(present, "the Session was restored");
    let receivers = Receivers::start(vec![d]);
    receivers.wait_for(&[0], away.len()).await;
    assert_eq!(receivers.counts(&[0]), expected(&away));
    receivers.finish().await;
}

/// A message no member on one node may read (its ACL denies the topic) goes to a member on
/// another node that may, as on a single node where such a member is passed over.
#[tokio::test(flavor = "multi_thread")]
async fn a_member_the_acl_denies_passes_the_message_on() {
    let Some(cluster) = start_nats() else { return };
    let urls = cluster.urls();
    let dir = tempfile::tempdir().expect("temp dir");
    let acl = dir.path().join("acl");
    std::fs::write(
        &acl,
        "user alice\ntopic read acl/#\ntopic deny acl/secret/#\ntopic write acl/#\n\n\
         user bob\ntopic readwrite acl/#\n",
    )
    .expect("ACL written");
    let with_acl = |c: &mut roost::Config| c.acl_file = Some(acl.clone());
    let n1 = common::cluster::start_node_with(&urls, "n1", with_acl).await;
    let n2 = common::cluster::start_node_with(&urls, "n2", with_acl).await;
    let login = |id: &str, user: &str| Connect {
        username: Some(user.to_string()),
        ..connect_packet(Version::V5, id)
    };
    let g = "$share/acl/acl/#";
    let (mut alice, _) = connect(&n1, login("alice", "alice")).await;
    subscribe_to(&mut alice, g, QoS::AtLeastOnce).await;
    let (mut bob, _) = connect(&n2, login("bob", "bob")).await;
    subscribe_to(&mut bob, g, QoS::AtLeastOnce).await;
    let receivers = Receivers::start(vec![alice, bob]);
    let (mut p, _) = connect(&n2, login("p", "bob")).await;
    await_interest(&mut p, &receivers, &[1], "acl/probe").await;
    let names = publish_many(&mut p, "acl/secret", "secret", 40).await;
    receivers.wait_for(&[1], names.len()).await;
    assert_eq!(receivers.counts(&[1]), expected(&names));
    assert!(receivers.messages(0).is_empty());
    receivers.finish().await;
}

/// A group on `#` and a group on `pa/#` (two subjects: `pa` and `pa.>`), with members on two
/// nodes: messages to `pa` itself, below it, with empty levels, at QoS 0, 1 and 2 reach each
/// group once.
#[tokio::test(flavor = "multi_thread")]
async fn groups_on_hash_and_on_a_parent_level_get_each_message_once() {
    let Some(cluster) = start_nats() else { return };
    let urls = cluster.urls();
    let (n1, n2) = (start_node(&urls, "n1").await, start_node(&urls, "n2").await);
    let clients = vec![
        member(&n1, Version::V5, "all1", "$share/all/#").await,
        member(&n2, Version::V311, "all2", "$share/all/#").await,
        member(&n1, Version::V5, "pa1", "$share/pa/pa/#").await,
        member(&n2, Version::V5, "pa2", "$share/pa/pa/#").await,
    ];
    let receivers = Receivers::start(clients);
    let (mut p, _) = connect(&n1, connect_packet(Version::V5, "p")).await;
    await_interest(&mut p, &receivers, &[0, 1], "pa/probe").await;
    await_interest(&mut p, &receivers, &[2, 3], "pa/probe").await;
    // Probes still on their way.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut names = Vec::new();
    let topics = ["pa", "pa/x", "pa/x/y", "pa/", "pa//x"];
    let mut pid = 0u16;
    for round in 0..6 {
        for topic in topics {
            pid += 1;
            let name = format!("{topic}-{round}");
            match round % 3 {
                0 => {
                    p.send(&publish(topic, QoS::AtMostOnce, 0, name.as_bytes()))
                        .await
                }
                1 => publish_acked(&mut p, topic, QoS::AtLeastOnce, pid, &name).await,
                _ => publish_acked(&mut p, topic, QoS::ExactlyOnce, pid, &name).await,
            }
            names.push(name);
        }
    }
    receivers.wait_for(&[0, 1], names.len()).await;
    receivers.wait_for(&[2, 3], names.len()).await;
    assert_eq!(receivers.counts(&[0, 1]), expected(&names), "$share/all/#");
    assert_eq!(
        receivers.counts(&[2, 3]),
        expected(&names),
        "$share/pa/pa/#"
    );
    receivers.finish().await;
}

/// Payloads a client received, each with its DUP flag.
type Collected = Arc<Mutex<Vec<(String, bool)>>>;

/// Reads `c` until its connection closes or `stop`, acknowledging as a receiver; records each
/// payload with its DUP flag.
fn collect(mut c: RawClient, stop: CancellationToken) -> (Collected, tokio::task::JoinHandle<()>) {
    let got = Arc::new(Mutex::new(Vec::new()));
    let list = Arc::clone(&got);
    let task = tokio::spawn(async move {
        while !stop.is_cancelled() {
            let next = tokio::time::timeout(Duration::from_millis(100), c.recv()).await;
            match next {
                Err(_) => {}
                Ok(None) => return,
                Ok(Some(Packet::Publish(p))) => {
                    match p.qos {
                        QoS::AtMostOnce => {}
                        QoS::AtLeastOnce => c.send(&ack(AckKind::PubAck, p.packet_id)).await,
                        QoS::ExactlyOnce => c.send(&ack(AckKind::PubRec, p.packet_id)).await,
                    }
                    list.lock()
                        .push((String::from_utf8_lossy(&p.payload).into_owned(), p.dup));
                }
                Ok(Some(Packet::Ack(a))) if a.kind == AckKind::PubRel => {
                    c.send(&ack(AckKind::PubComp, a.packet_id)).await;
                }
                Ok(Some(_)) => {}
            }
        }
    });
    (got, task)
}

/// The node (the real binary, with a store) of a durable member is killed with SIGKILL while
/// the group's QoS 1 messages flow, then started again and the member connects there again:
/// no message is lost for the group (what the killed node had taken without committing comes
/// again after JetStream's acknowledgement wait, to the other member). Copies that come twice
/// without DUP are counted.
#[tokio::test(flavor = "multi_thread")]
async fn a_node_killed_while_it_takes_a_group_s_messages_loses_none() {
    use common::binary::BrokerProcess;
    let Some(cluster) = start_nats() else { return };
    let urls = cluster.urls();
    let dir = tempfile::tempdir().expect("temp dir");
    let start_doomed = |urls: &[String]| {
        let toml = common::cluster::cluster_toml(urls, "doomed");
        let path = dir.path().to_path_buf();
        tokio::task::spawn_blocking(move || {
            let p = BrokerProcess::start_with(&path, &toml);
            p.wait_log("cluster: reading the stream");
            p
        })
    };
    let doomed = start_doomed(&urls).await.expect("node started");
    let n2 = start_node(&urls, "n2").await;
    let g = "$share/k/k/#";
    let (mut d, _) = RawClient::connect(doomed.addr, durable(Version::V5, "d")).await;
    d.send(&subscribe(g, QoS::AtLeastOnce)).await;
    assert!(matches!(d.recv().await, Some(Packet::SubAck(_))));
    let e = member(&n2, Version::V5, "e", g).await;
    let stop = CancellationToken::new();
    let (got_d, task_d) = collect(d, stop.clone());
    let (got_e, task_e) = collect(e, stop.clone());
    // Both nodes pull from the group's consumer.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (mut p, _) = connect(&n2, connect_packet(Version::V5, "p")).await;
    let publishing = tokio::spawn(async move {
        let mut names = Vec::new();
        for i in 0..400u16 {
            let name = format!("k-{i}");
            publish_acked(
                &mut p,
                &format!("k/{}", i % 5),
                QoS::AtLeastOnce,
                i + 1,
                &name,
            )
            .await;
            names.push(name);
        }
        names
    });
    // Kill once the node has taken some.
    let deadline = tokio::time::Instant::now() + WAIT;
    while got_d.lock().len() < 50 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::task::spawn_blocking(move || doomed.kill9())
        .await
        .expect("killed");
    let names = publishing.await.expect("publisher");
    task_d.await.expect("d's reader");
    let doomed = start_doomed(&urls).await.expect("node started again");
    let (d, ack) = RawClient::connect(doomed.addr, durable(Version::V5, "d")).await;
    assert!(ack.session_present, "the Session was kept in the store");

    let (got_d2, task_d2) = collect(d, stop.clone());
    let all = || {
        let mut counts: BTreeMap<String, (usize, usize)> = BTreeMap::new();
        for list in [&got_d, &got_d2, &got_e] {
            for (p, dup) in list.lock().iter() {
                let c = counts.entry(p.clone()).or_default();
                if *dup { c.1 += 1 } else { c.0 += 1 }
            }
        }
        counts
    };
    // JetStream hands again what the killed node had not acknowledged after 30 s.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(50);
    while names.iter().any(|n| !all().contains_key(n)) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.cancel();
    let _ = (task_d2.await, task_e.await);
    let counts = all();
    let missing: Vec<_> = names.iter().filter(|n| !counts.contains_key(*n)).collect();
    let holders = |name: &str| {
        [("d", &got_d), ("d again", &got_d2), ("e", &got_e)]
            .iter()
            .filter(|(_, l)| l.lock().iter().any(|(p, _)| p == name))
            .map(|(who, _)| *who)
            .collect::<Vec<_>>()
    };
    let twice: Vec<_> = counts
        .iter()
        .filter(|(_, (fresh, _))| *fresh > 1)
        .map(|(name, _)| (name.clone(), holders(name)))
        .collect();
    eprintln!(
        "before the kill d took {}, after {}; e took {}; fresh copies twice: {twice:?}",
        got_d.lock().len(),
        got_d2.lock().len(),
        got_e.lock().len()
    );
    assert!(missing.is_empty(), "lost: {missing:?}");
    drop(doomed);
}

/// A durable member holds a QoS 2 message of its group sent without a PUBREC yet, and
/// reconnects to another node: its Session moves, and the delivery is completed there, to the
/// same client (MQTT-4.8.2-4), not lost and not given to another member (MQTT-4.8.2-5).
#[tokio::test(flavor = "multi_thread")]
async fn a_moving_member_s_qos2_message_in_flight_is_completed_on_the_new_node() {
    let Some(cluster) = start_nats() else { return };
    let urls = cluster.urls();
    let (n1, n2, n3) = start_three(&urls).await;
    let g = "$share/q2/qtwo/#";
    let (mut d, _) = connect(&n1, durable(Version::V5, "d")).await;
    subscribe_to(&mut d, g, QoS::ExactlyOnce).await;
    let (mut p, _) = connect(&n2, connect_packet(Version::V5, "p")).await;
    let receivers = Receivers::start(vec![d]);
    await_interest(&mut p, &receivers, &[0], "qtwo/probe").await;
    let mut d = receivers.finish().await.remove(0);
    publish_acked(&mut p, "qtwo/x", QoS::ExactlyOnce, 1, "exactly").await;
    // d gets the PUBLISH and answers nothing: the delivery is incomplete.
    let first = loop {
        match tokio::time::timeout(WAIT, d.recv()).await {
            Ok(Some(Packet::Publish(m))) if &m.payload[..] == b"exactly" => break m,
            Ok(Some(Packet::Publish(_))) => {}
            other => panic!("expected the PUBLISH, got {other:?}"),
        }
    };
    assert_eq!(first.qos, QoS::ExactlyOnce);
    drop(d);
    let (mut d, present) = connect(&n3, durable(Version::V5, "d")).await;
    assert!(present, "the Session moved to n3");
    let again = loop {
        match next_within(&mut d, Duration::from_secs(8)).await {
            Some(m) if &m.payload[..] == b"exactly" => break m,
            Some(_) => {}
            None => panic!("the QoS 2 message in flight was not sent again"),
        }
    };
    assert!(again.dup, "sent again with DUP");
    assert_eq!(
        again.packet_id, first.packet_id,
        "with its Packet Identifier"
    );
}

/// Sets the soft file size limit of process `pid` (`None`: no limit); false if `prlimit` is
/// not installed.
fn limit_file_size(pid: u32, soft: Option<u64>) -> bool {
    let soft = soft.map_or_else(|| "unlimited".to_owned(), |n| n.to_string());
    match std::process::Command::new("prlimit")
        .arg("--pid")
        .arg(pid.to_string())
        .arg(format!("--fsize={soft}:unlimited"))
        .status()
    {
        Ok(status) => {
            assert!(status.success(), "prlimit failed");
            true
        }
        Err(_) => false,
    }
}

/// A member's Session ends on a node (the real binary, with a store) whose store cannot
/// write for a while: its unacknowledged messages are given back to the group once, however
/// often the commit that deletes them from the ended Session is tried again.
#[tokio::test(flavor = "multi_thread")]
async fn a_failing_store_commit_does_not_give_messages_back_twice() {
    use common::binary::BrokerProcess;
    let Some(cluster) = start_nats() else { return };
    let urls = cluster.urls();
    let dir = tempfile::tempdir().expect("temp dir");
    let toml = common::cluster::cluster_toml(&urls, "doomed");
    let path = dir.path().to_path_buf();
    let doomed = tokio::task::spawn_blocking(move || {
        let p = BrokerProcess::start_with(&path, &toml);
        p.wait_log("cluster: reading the stream");
        p
    })
    .await
    .expect("node started");
    let pid = doomed.child.id();
    let n2 = start_node(&urls, "n2").await;
    let g = "$share/gb/gb/#";
    // d takes one message at a time and acknowledges none: the rest wait in its queue.
    let (mut d, _) = RawClient::connect(
        doomed.addr,
        Connect {
            receive_maximum: 1,
            ..durable(Version::V5, "d")
        },
    )
    .await;
    subscribe_to(&mut d, g, QoS::AtLeastOnce).await;
    let (mut p, _) = connect(&n2, connect_packet(Version::V5, "p")).await;
    let receivers = Receivers::start(vec![d]);
    await_interest(&mut p, &receivers, &[0], "gb/probe").await;
    let mut d = receivers.finish().await.remove(0);
    let mut names = publish_many(&mut p, "gb", "gb", 10).await;
    loop {
        match d.recv().await {
            Some(Packet::Publish(m)) if &m.payload[..] == b"gb-0" => break,
            Some(Packet::Publish(m)) if m.qos == QoS::AtMostOnce => {}
            other => panic!("expected gb-0, got {other:?}"),
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;

    // The store's file may not grow: the group's next messages fail its commits.
    let size = std::fs::metadata(dir.path().join("roost.redb"))
        .expect("store file")
        .len();
    if !limit_file_size(pid, Some(size)) {
        eprintln!("prlimit not installed: test skipped");
        return;
    }
    let big = "x".repeat(64 * 1024);
    let mut failed = false;
    for i in 0..200u16 {
        let name = format!("big-{i}-{big}");
        publish_acked(
            &mut p,
            &format!("gb/big/{i}"),
            QoS::AtLeastOnce,
            100 + i,
            &name,
        )
        .await;
        names.push(name);
        while let Ok(line) = doomed.log.try_recv() {
            failed |= line.contains("store commit failed");
        }
        if failed {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(failed, "the file size limit never failed a commit");
    // Another member, on n2; d's Session ends while the store still fails.
    let e = member(&n2, Version::V5, "e", g).await;
    let receivers = Receivers::start(vec![e]);
    d.send(&Packet::Disconnect(roost::codec::Disconnect {
        session_expiry_interval: Some(0),
        ..Default::default()
    }))
    .await;
    drop(d);
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(limit_file_size(pid, None));
    receivers.wait_for(&[0], names.len()).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let counts = receivers.counts(&[0]);
    let short = |n: &String| n.chars().take(12).collect::<String>();
    let twice: Vec<_> = counts
        .iter()
        .filter(|(_, c)| **c > 1)
        .map(|(n, c)| (short(n), *c))
        .collect();
    let missing: Vec<_> = names
        .iter()
        .filter(|n| !counts.contains_key(*n))
        .map(short)
        .collect();
    assert!(
        missing.is_empty() && twice.is_empty(),
        "lost: {missing:?}; given back more than once: {twice:?}"
    );
    receivers.finish().await;
    drop(doomed);
}

/// A member's Session ends on a node without a store while JetStream has no quorum: its
/// unacknowledged messages, held nowhere else, are given back to the group once JetStream
/// takes writes again, not dropped after one failed try.
#[tokio::test(flavor = "multi_thread")]
async fn messages_given_back_during_a_jetstream_outage_are_not_lost() {
    let Some(mut cluster) = start_nats() else {
        return;
    };
    let urls = cluster.urls();
    let quick = |c: &mut roost::Config| {
        if let Some(cluster) = c.cluster.as_mut() {
            cluster.ack_timeout = 1;
        }
    };
    let n1 = common::cluster::start_node_with(&urls, "n1", quick).await;
    let n2 = common::cluster::start_node_with(&urls, "n2", quick).await;
    let g = "$share/out/out/#";
    let mut m1 = member(&n1, Version::V5, "m1", g).await;
    let (mut p, _) = connect(&n2, connect_packet(Version::V5, "p")).await;
    let receivers = Receivers::start(vec![m1]);
    await_interest(&mut p, &receivers, &[0], "out/probe").await;
    m1 = receivers.finish().await.remove(0);
    // m1 takes them all and acknowledges none.
    let names = publish_many(&mut p, "out", "o", 10).await;
    let mut held = 0;
    while held < names.len() {
        match m1.recv().await {
            Some(Packet::Publish(m)) if m.qos != QoS::AtMostOnce => held += 1,
            Some(Packet::Publish(_)) => {}
            other => panic!("expected a PUBLISH, got {other:?}"),
        }
    }
    let m2 = member(&n2, Version::V5, "m2", g).await;
    let receivers = Receivers::start(vec![m2]);
    tokio::time::sleep(Duration::from_secs(1)).await;
    // No quorum: m1's Session ends, and its messages cannot be written for a while.
    tokio::task::block_in_place(|| {
        cluster.kill9(1);
        cluster.kill9(2);
    });
    drop(m1);
    tokio::time::sleep(Duration::from_secs(4)).await;
    tokio::task::block_in_place(|| {
        cluster.restart(1);
        cluster.restart(2);
    });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
    while receivers.total(&[0]) < names.len() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        receivers.counts(&[0]),
        expected(&names),
        "m1's messages, once each"
    );
    receivers.finish().await;
}

/// Clients subscribing to new groups at the same moment on a node at its
/// `cluster.max_shared_groups`: no more groups than the limit are granted.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_subscribes_do_not_exceed_max_shared_groups() {
    let Some(cluster) = start_nats() else { return };
    let urls = cluster.urls();
    let max = 3;
    let n1 = common::cluster::start_node_with(&urls, "n1", |c| {
        if let Some(cluster) = c.cluster.as_mut() {
            cluster.max_shared_groups = max;
        }
    })
    .await;
    for round in 0..20 {
        let mut clients = Vec::new();
        for i in 0..12 {
            let (c, _) = connect(&n1, connect_packet(Version::V5, &format!("c{round}-{i}"))).await;
            clients.push(c);
        }
        let start = Arc::new(tokio::sync::Barrier::new(clients.len()));
        let tasks: Vec<_> = clients
            .into_iter()
            .enumerate()
            .map(|(i, mut c)| {
                let start = Arc::clone(&start);
                tokio::spawn(async move {
                    let filter = format!("$share/r{round}g{i}/x");
                    start.wait().await;
                    let granted = code(&mut c, &filter).await < 0x80;
                    (c, granted)
                })
            })
            .collect();
        let mut granted = 0;
        let mut clients = Vec::new();
        for t in tasks {
            let (c, ok) = t.await.expect("subscriber");
            granted += usize::from(ok);
            clients.push(c);
        }
        assert!(
            granted <= max,
            "round {round}: {granted} groups granted, at most {max}"
        );
        // Every group empties again.
        drop(clients);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}
