//! Running from a mosquitto.conf: the real binary started with `-c mosquitto.conf` gets its
//! listeners, authentication, limits and store from it, warns once per ignored key, and
//! `roost check-config` validates either format.

mod common;

use std::path::Path;

use bytes::Bytes;
use common::binary::BrokerProcess;
use common::*;
use roost::auth::PasswordFile;
use roost::codec::{Packet, Version};

/// A port that was free a moment ago.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn certs() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("certs").leak()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_broker_runs_from_a_mosquitto_conf() {
    let dir = tempfile::tempdir().unwrap();
    let passwd = dir.path().join("passwd");
    let mut file = PasswordFile::new();
    file.set("alice", b"a-secret").unwrap();
    file.save(&passwd).unwrap();
    let (ws_port, tls_port) = (free_port(), free_port());
    let included = dir.path().join("conf.d");
    std::fs::create_dir(&included).unwrap();
    std::fs::write(
        included.join("limits.conf"),
        "max_keepalive 60\nautosave_interval 1800\n",
    )
    .unwrap();
    let conf = dir.path().join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!(
            "# written for mosquitto 2.0\n\
             per_listener_settings false\n\
             listener 1883 127.0.0.1\n\
             listener {ws_port} 127.0.0.1\n\
             protocol websockets\n\
             listener {tls_port} localhost\n\
             certfile {certs}/server.pem\n\
             keyfile {certs}/server.key\n\
             allow_anonymous false\n\
             password_file {passwd}\n\
             persistence true\n\
             persistence_location {data}\n\
             log_dest stdout\n\
             include_dir conf.d\n",
            certs = certs().display(),
            passwd = passwd.display(),
            data = dir.path().join("data").display(),
        ),
    )
    .unwrap();
    // The main listener's port from the flag, so that the test does not need 1883.
    let broker = BrokerProcess::spawn(&[
        "--port".into(),
        "0".into(),
        "-c".into(),
        conf.clone().into(),
    ]);
    let warning = broker.wait_log("`per_listener_settings` ignored");
    assert!(warning.contains("mosquitto.conf:2"), "{warning}");
    broker.wait_log("`log_dest` ignored");
    broker.wait_log("limits.conf:2: `autosave_interval` ignored");
    broker.wait_log(&format!("local_addr=127.0.0.1:{ws_port}"));
    broker.wait_log(&format!("local_addr=127.0.0.1:{tls_port}"));
    assert!(
        dir.path().join("data").join("roost.redb").exists(),
        "persistence_location"
    );

    let mut alice = connect_packet(Version::V5, "alice-1");
    alice.username = Some("alice".into());
    alice.password = Some(Bytes::from_static(b"a-secret"));
    alice.keep_alive = 0;
    let (_, connack) = RawClient::connect(broker.addr, alice).await;
    assert_eq!(connack.code, 0, "password_file");
    assert_eq!(
        connack.properties.server_keep_alive,
        Some(60),
        "max_keepalive from conf.d"
    );
    let (_, connack) = RawClient::connect(broker.addr, connect_packet(Version::V311, "anon")).await;
    assert_eq!(connack.code, 0x05, "allow_anonymous false");
    let mut ping = RawClient::open(broker.addr, Version::V311).await;
    ping.send(&Packet::PingReq).await;
    assert!(ping.until_closed().await.is_empty(), "CONNECT first");
}

fn check_config(args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_roost"))
        .arg("check-config")
        .args(args)
        .output()
        .expect("roost check-config runs");
    (
        out.status.code() == Some(0),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_config_prints_the_settings_or_the_error() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("broker.cfg");
    std::fs::write(
        &conf,
        "listener 1884 0.0.0.0\nallow_anonymous true\nmax_queued_messages 500\nwibble 1\n",
    )
    .unwrap();
    let (ok, out, err) = check_config(&[conf.to_str().unwrap(), "--mosquitto"]);
    assert!(ok, "{err}");
    assert!(
        out.contains("port = 1884") && out.contains("bind = \"0.0.0.0\""),
        "{out}"
    );
    assert!(out.contains("max_queued_messages = 500"), "{out}");
    assert!(err.contains("broker.cfg:4: `wibble` ignored"), "{err}");

    std::fs::write(&conf, "listener 1884\nmax_keepalive soon\n").unwrap();
    let (ok, _, err) = check_config(&[conf.to_str().unwrap(), "--mosquitto"]);
    assert!(
        !ok && err.contains("broker.cfg:2: `max_keepalive`"),
        "{err}"
    );

    let toml = dir.path().join("roost.toml");
    std::fs::write(&toml, "port = 1885\n[http]\nport = 9090\n").unwrap();
    let (ok, out, err) = check_config(&[toml.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(
        out.contains("port = 1885") && out.contains("[http]"),
        "{out}"
    );
    std::fs::write(&toml, "port = 1885\n[http]\nbind = \"0.0.0.0\"\n").unwrap();
    let (ok, _, err) = check_config(&[toml.to_str().unwrap()]);
    assert!(
        !ok && err.contains("http.bind"),
        "a network-facing API without authentication: {err}"
    );
}

/// Every file key the broker reads is printed, and the output reads back to the same settings.
#[test]
fn check_config_prints_the_admission_keys_and_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let toml = dir.path().join("roost.toml");
    std::fs::write(
        &toml,
        "max_connections_per_address = 7\nmax_connect_packet_size = 4096\n\
         max_pending_connect_bytes = 123456\nsession_owner_check = false\n",
    )
    .unwrap();
    let (ok, out, err) = check_config(&[toml.to_str().unwrap()]);
    assert!(ok, "{err}");
    for line in [
        "max_connections_per_address = 7\n",
        "max_connect_packet_size = 4096\n",
        "max_pending_connect_bytes = 123456\n",
        "session_owner_check = false\n",
    ] {
        assert!(out.contains(line), "{line:?} missing from:\n{out}");
    }
    let again = dir.path().join("again.toml");
    std::fs::write(&again, &out).unwrap();
    let (ok, out_again, err) = check_config(&[again.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert_eq!(out, out_again);
}

#[test]
fn the_annotated_example_configuration_is_valid() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/roost.toml");
    let (ok, out, err) = check_config(&[example]);
    assert!(ok, "{err}");
    assert!(out.contains("port = 1883"), "{out}");
}

#[test]
fn check_config_reads_bridges() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!(
            "listener 1884 127.0.0.1\n\
             allow_anonymous true\n\
             connection cloud\n\
             address broker.example:8883\n\
             bridge_cafile {certs}/ca.pem\n\
             bridge_certfile {certs}/client.pem\n\
             bridge_keyfile {certs}/client.key\n\
             remote_password s3cret\n\
             topic sensors/# out 1 edge/ site-1/\n\
             topic cmd/# in 2\n\
             notifications false\n\
             connection backup\n\
             address 127.0.0.1:1885\n\
             topic # out\n",
            certs = certs().display(),
        ),
    )
    .unwrap();
    let (ok, out, err) = check_config(&[conf.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(
        out.contains(
            "\n[[bridge]]\nname = \"cloud\"\naddress = [\"broker.example:8883\"]\n\
             protocol_version = \"mqttv311\"\ncleansession = false\n"
        ),
        "{out}"
    );
    assert!(out.contains("topic = [  # 2 topics\n"), "{out}");
    assert!(
        out.contains("{ pattern = \"sensors/#\", direction = \"out\", qos = 1, local_prefix = \"edge/\", remote_prefix = \"site-1/\" }"),
        "{out}"
    );
    assert!(out.contains("restart_timeout = [5, 30]"), "{out}");
    assert!(
        out.contains(&format!("keyfile = \"{}/client.key\"", certs().display())),
        "{out}"
    );
    assert!(!out.contains("s3cret"), "{out}");
    assert!(
        out.contains("name = \"backup\"\naddress = [\"127.0.0.1:1885\"]"),
        "{out}"
    );
    assert!(
        err.contains("mosquitto.conf:11: `notifications` ignored"),
        "{err}"
    );

    // What check-config prints reads back as roost.toml.
    let toml = dir.path().join("roost.toml");
    std::fs::write(&toml, &out).unwrap();
    let (ok, again, err) = check_config(&[toml.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(again.contains("name = \"backup\""), "{again}");

    std::fs::write(&conf, "listener 1884\ntopic sensors/# out 1\n").unwrap();
    let (ok, _, err) = check_config(&[conf.to_str().unwrap()]);
    assert!(
        !ok && err.contains("mosquitto.conf:2: `topic`") && err.contains("connection"),
        "{err}"
    );
}
