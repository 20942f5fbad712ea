//! The log at the default level, as an operator reads it: one line per connect, disconnect
//! and refused login, in text or in JSON (`log_format`), from the real binary.

mod common;

use bytes::Bytes;
use common::binary::BrokerProcess;
use common::*;
use roost::auth::PasswordFile;
use roost::codec::{Packet, Version};

fn with_passwords(dir: &std::path::Path, extra: &str) -> BrokerProcess {
    let passwd = dir.join("passwd");
    let mut file = PasswordFile::new();
    file.set("alice", b"a-secret").unwrap();
    file.save(&passwd).unwrap();
    BrokerProcess::start_with(
        dir,
        &format!("password_file = {passwd:?}\nallow_anonymous = false\n{extra}"),
    )
}

fn login(id: &str, user: &str, password: &'static [u8]) -> roost::codec::Connect {
    let mut c = connect_packet(Version::V5, id);
    c.username = Some(user.to_string());
    c.password = Some(Bytes::from_static(password));
    c
}

/// Connects as alice, fails as mallory, disconnects alice.
async fn session(broker: &BrokerProcess) {
    let (mut alice, connack) =
        RawClient::connect(broker.addr, login("dev-1", "alice", b"a-secret")).await;
    assert_eq!(connack.code, 0);
    let (_, connack) = RawClient::connect(broker.addr, login("dev-2", "mallory", b"guess")).await;
    assert_eq!(connack.code, 0x86);
    alice.send(&Packet::Disconnect(Default::default())).await;
    assert!(alice.until_closed().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_lines_for_connect_refused_login_and_disconnect() {
    let dir = tempfile::tempdir().unwrap();
    let broker = with_passwords(dir.path(), "");
    let started = broker.wait_log("roost started");
    assert!(
        started.contains(&format!("tcp {}", broker.addr)),
        "{started}"
    );
    assert!(started.contains(env!("CARGO_PKG_VERSION")), "{started}");
    session(&broker).await;
    let connected = broker.wait_log("client connected");
    for part in [
        "client_id=\"dev-1\"",
        &format!("listener=tcp {}", broker.addr),
        "protocol=\"5.0\"",
        "clean_start=true",
        "keep_alive=30",
        "username=\"alice\"",
        "session_present=false",
    ] {
        assert!(connected.contains(part), "{part:?} in {connected}");
    }
    let refused = broker.wait_log("login refused");
    assert!(refused.contains("username=\"mallory\""), "{refused}");
    assert!(refused.contains("client_id=\"dev-2\""), "{refused}");
    let gone = broker.wait_log("client disconnected");
    assert!(gone.contains("client_id=\"dev-1\""), "{gone}");
    assert!(gone.contains("DISCONNECT from the client"), "{gone}");
    assert!(gone.contains("duration="), "{gone}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_lines_carry_the_same_fields() {
    let dir = tempfile::tempdir().unwrap();
    let broker = with_passwords(dir.path(), "log_format = \"json\"\n");
    session(&broker).await;
    let line = broker.wait_log("client connected");
    let event: serde_json::Value = serde_json::from_str(&line).expect("one JSON object per line");
    assert_eq!(event["level"], "INFO");
    assert_eq!(event["message"], "client connected");
    assert_eq!(event["client_id"], "dev-1");
    assert_eq!(event["protocol"], "5.0");
    assert_eq!(event["username"], "alice");
    assert_eq!(event["keep_alive"], 30);
    assert!(event["timestamp"].is_string());
    let line = broker.wait_log("login refused");
    let event: serde_json::Value = serde_json::from_str(&line).expect("JSON");
    assert_eq!(event["username"], "mallory");
}
