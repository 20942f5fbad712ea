//! The HTTP listener: Prometheus `/metrics`, the admin API, its authentication, and
//! `roost ctl`, against a broker with real MQTT clients.

mod common;

use std::net::SocketAddr;

use common::*;
use roost::auth::PasswordFile;
use roost::codec::{Packet, QoS, ReasonCode, Version};
use roost::config::HttpConfig;
use serde_json::Value;

fn loopback_http() -> Option<HttpConfig> {
    Some(HttpConfig::new([127, 0, 0, 1].into(), 0))
}

fn url(broker: &roost::BrokerHandle, path: &str) -> String {
    format!(
        "http://{}{path}",
        broker.http_addr().expect("http listener")
    )
}

async fn get_json(broker: &roost::BrokerHandle, path: &str) -> Value {
    let (status, body) = http("GET", &url(broker, path), None).await;
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).expect("JSON")
}

/// A connected raw client subscribed to `filter`.
async fn subscriber(addr: SocketAddr, version: Version, id: &str, filter: &str) -> RawClient {
    let (mut c, _) = RawClient::connect(addr, connect_packet(version, id)).await;
    c.send(&subscribe(filter, QoS::AtLeastOnce)).await;
    assert!(matches!(c.recv().await, Some(Packet::SubAck(_))));
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_served_in_prometheus_text_format() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker_with(|c| {
        c.in_memory = false;
        c.data_dir = dir.path().to_path_buf();
        c.http = loopback_http();
    })
    .await;
    let addr = broker.local_addr();
    let _sub = subscriber(addr, Version::V5, "s", "m/#").await;
    let _member = subscriber(addr, Version::V5, "worker", "$share/g/m/#").await;
    let (mut p, _) = RawClient::connect(addr, connect_packet(Version::V311, "p")).await;
    // Retained: the store commits it.
    p.send(&publish_with("m/1", QoS::AtLeastOnce, 1, b"x", true))
        .await;
    assert!(matches!(p.recv().await, Some(Packet::Ack(_))));
    let (status, text) = http("GET", &url(&broker, "/metrics"), None).await;
    assert_eq!(status, 200);
    for line in [
        "roost_publish_received_total 1",
        "roost_clients_connected 3",
        "roost_subscriptions 2",
        "roost_shared_subscription_members{share=\"g\",filter=\"m/#\"} 1",
        "roost_shared_subscription_delivered_total{share=\"g\",filter=\"m/#\"} 1",
        "roost_retained_messages 1",
        "# TYPE roost_store_commit_seconds histogram",
        "# TYPE roost_store_commit_batch_requests histogram",
        &format!("roost_listener_connections_accepted_total{{listener=\"tcp {addr}\"}} 3"),
        &format!("roost_listener_clients_connected{{listener=\"tcp {addr}\"}} 3"),
    ] {
        assert!(text.lines().any(|l| l == line), "{line:?} in\n{text}");
    }
    assert!(
        text.lines()
            .any(|l| l.starts_with("roost_store_commit_seconds_count ") && !l.ends_with(" 0")),
        "commits timed:\n{text}"
    );
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_api_lists_shows_and_kicks_clients() {
    let broker = start_broker_with(|c| c.http = loopback_http()).await;
    let addr = broker.local_addr();
    let mut with_will = connect_packet(Version::V5, "sensor-1");
    with_will.will = Some(roost::codec::Will {
        topic: "status/sensor-1".into(),
        payload: bytes::Bytes::from_static(b"offline"),
        qos: QoS::AtLeastOnce,
        retain: true,
        delay_interval: 5,
        properties: Default::default(),
    });
    let (mut v5, _) = RawClient::connect(addr, with_will).await;
    v5.send(&subscribe("cmd/sensor-1", QoS::AtLeastOnce)).await;
    assert!(matches!(v5.recv().await, Some(Packet::SubAck(_))));
    let _v3 = subscriber(addr, Version::V311, "sensor-2", "cmd/#").await;
    let _other = subscriber(addr, Version::V311, "backend", "data/#").await;

    let list = get_json(&broker, "/api/v1/clients?prefix=sensor-&per_page=1").await;
    assert_eq!(list["total"], 2);
    assert_eq!(list["clients"].as_array().map(Vec::len), Some(1));
    assert_eq!(list["clients"][0]["client_id"], "sensor-1");
    let page2 = get_json(&broker, "/api/v1/clients?prefix=sensor-&per_page=1&page=2").await;
    assert_eq!(page2["clients"][0]["client_id"], "sensor-2");

    let one = get_json(&broker, "/api/v1/clients/sensor-1").await;
    assert_eq!(one["connected"], true);
    assert_eq!(one["connection"]["protocol"], "5.0");
    assert_eq!(one["subscriptions"][0]["filter"], "cmd/sensor-1");
    assert_eq!(one["subscriptions"][0]["qos"], 1);
    assert_eq!(one["connection"]["will"]["topic"], "status/sensor-1");
    assert_eq!(one["connection"]["will"]["delay_interval"], 5);
    let (status, _) = http("GET", &url(&broker, "/api/v1/clients/nobody"), None).await;
    assert_eq!(status, 404);

    let subs = get_json(&broker, "/api/v1/subscriptions?prefix=cmd/").await;
    assert_eq!(subs["total"], 2);

    // Kicked: a 5.0 client reads DISCONNECT 0x98 (administrative action).
    let (status, body) = http("DELETE", &url(&broker, "/api/v1/clients/sensor-1"), None).await;
    assert_eq!(status, 200, "{body}");
    match v5.recv().await {
        Some(Packet::Disconnect(d)) => assert_eq!(d.reason, ReasonCode::ADMINISTRATIVE_ACTION),
        other => panic!("expected DISCONNECT 0x98, got {other:?}"),
    }
    // A durable session outlives a kick unless asked to end it.
    let mut durable = connect_packet(Version::V311, "keeper");
    durable.clean_start = false;
    let _keeper = RawClient::connect(addr, durable).await;
    http("DELETE", &url(&broker, "/api/v1/clients/keeper"), None).await;
    wait_detached(&broker, "keeper").await;
    let (_, body) = http(
        "DELETE",
        &url(&broker, "/api/v1/clients/keeper?end_session=true"),
        None,
    )
    .await;
    let answer: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["session_ended"], true);
    assert!(broker.session_info("keeper").is_none());

    let stats = get_json(&broker, "/api/v1/stats").await;
    assert_eq!(stats["sessions"]["connected"], 2);
    assert!(stats["metrics"]["connections_accepted"].as_u64() >= Some(4));
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_messages_are_listed_shown_and_deleted_for_good() {
    let dir = tempfile::tempdir().unwrap();
    let config = |c: &mut roost::Config| {
        c.in_memory = false;
        c.data_dir = dir.path().to_path_buf();
        c.http = loopback_http();
    };
    let broker = start_broker_with(config).await;
    let addr = broker.local_addr();
    let (mut p, _) = RawClient::connect(addr, connect_packet(Version::V311, "p")).await;
    for (i, topic) in ["site/a/temp", "site/b/temp"].iter().enumerate() {
        let id = i as u16 + 1;
        p.send(&publish_with(topic, QoS::AtLeastOnce, id, b"21.5", true))
            .await;
        assert!(matches!(p.recv().await, Some(Packet::Ack(_))));
    }
    let list = get_json(&broker, "/api/v1/retained?filter=site/%2B/temp").await;
    assert_eq!(list["total"], 2);
    let one = get_json(&broker, "/api/v1/retained/site/a/temp").await;
    assert_eq!(one["payload"], "21.5");
    assert_eq!(one["payload_base64"], "MjEuNQ==");
    let (status, _) = http(
        "DELETE",
        &url(&broker, "/api/v1/retained/site/a/temp"),
        None,
    )
    .await;
    assert_eq!(status, 204);
    let (status, _) = http("GET", &url(&broker, "/api/v1/retained/site/a/temp"), None).await;
    assert_eq!(status, 404);
    let (status, _) = http(
        "GET",
        &url(&broker, "/api/v1/retained?filter=a/%23/b"),
        None,
    )
    .await;
    assert_eq!(status, 400, "an invalid filter is refused");
    broker.shutdown().await;

    let broker = start_broker_with(config).await;
    assert_eq!(broker.retained_count(), 1, "deleted from the store too");
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_need_the_token_or_an_admin_password_when_configured() {
    let dir = tempfile::tempdir().unwrap();
    let passwd = dir.path().join("passwd");
    let mut file = PasswordFile::new();
    file.set("admin", b"admin-secret").unwrap();
    file.set("device", b"device-secret").unwrap();
    file.save(&passwd).unwrap();
    let broker = start_broker_with(|c| {
        c.password_file = Some(passwd.clone());
        c.http = Some(HttpConfig {
            token: Some("0123456789abcdef-token".into()),
            admin_users: vec!["admin".into()],
            ..HttpConfig::new([127, 0, 0, 1].into(), 0)
        });
    })
    .await;
    let stats = url(&broker, "/api/v1/stats");
    let basic = |user: &str, password: &str| {
        use base64::Engine;
        let raw = format!("{user}:{password}");
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    };
    for (authorization, expected) in [
        (None, 401),
        (Some("Bearer wrong-token-wrong-token".to_string()), 401),
        (Some("Bearer 0123456789abcdef-token".to_string()), 200),
        (Some(basic("admin", "admin-secret")), 200),
        (Some(basic("admin", "admin-secret")), 200),
        (Some(basic("admin", "wrong")), 401),
        (Some(basic("device", "device-secret")), 401),
    ] {
        let (status, _) = http("GET", &stats, authorization.as_deref()).await;
        assert_eq!(status, expected, "{authorization:?}");
    }
    let (status, _) = http("GET", &url(&broker, "/metrics"), None).await;
    assert_eq!(status, 401, "metrics too");
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roost_ctl_lists_kicks_and_deletes() {
    let broker = start_broker_with(|c| c.http = loopback_http()).await;
    let addr = broker.local_addr();
    let _a = subscriber(addr, Version::V311, "ctl-client", "x").await;
    let (mut p, _) = RawClient::connect(addr, connect_packet(Version::V311, "p")).await;
    p.send(&publish_with("kept/topic", QoS::AtLeastOnce, 1, b"v", true))
        .await;
    assert!(matches!(p.recv().await, Some(Packet::Ack(_))));
    let base = format!("http://{}", broker.http_addr().unwrap());
    let ctl = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_roost"))
            .args(["ctl", "--url", &base])
            .args(args)
            .output()
            .expect("roost ctl runs");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, out, err) = tokio::task::block_in_place(|| ctl(&["clients", "--prefix", "ctl-"]));
    assert!(ok, "{err}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("ctl-client") && l.contains("yes")),
        "{out}"
    );
    let (ok, out, _) = tokio::task::block_in_place(|| ctl(&["retained", "list"]));
    assert!(ok && out.contains("kept/topic"), "{out}");
    let (ok, _, err) = tokio::task::block_in_place(|| ctl(&["retained", "delete", "kept/topic"]));
    assert!(ok, "{err}");
    assert_eq!(broker.retained_count(), 0);
    let (ok, _, err) =
        tokio::task::block_in_place(|| ctl(&["kick", "ctl-client", "--end-session"]));
    assert!(ok, "{err}");
    assert!(broker.session_info("ctl-client").is_none());
    let (ok, _, err) = tokio::task::block_in_place(|| ctl(&["client", "ctl-client"]));
    assert!(!ok && err.contains("404"), "a clear error: {err}");
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_listener_answers_only_to_a_loopback_host() {
    // Against DNS rebinding: a page served from another name must not reach the admin API.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let broker = start_broker_with(|c| c.http = loopback_http()).await;
    let addr = broker.http_addr().unwrap();
    for (host, expected) in [
        ("attacker.example", "403"),
        ("localhost", "200"),
        (&*addr.to_string(), "200"),
    ] {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request =
            format!("GET /api/v1/stats HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        s.write_all(request.as_bytes()).await.unwrap();
        let mut answer = String::new();
        tokio::time::timeout(WAIT, s.read_to_string(&mut answer))
            .await
            .expect("answer in time")
            .unwrap();
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {expected}")),
            "{host}: {answer}"
        );
    }
    broker.shutdown().await;
}
