//! Signals to the real binary: SIGHUP reloads the password and ACL files without dropping
//! connections (a broken file is refused and the old one kept); SIGTERM shuts down cleanly.

mod common;

use bytes::Bytes;
use common::binary::BrokerProcess;
use common::*;
use roost::auth::PasswordFile;
use roost::codec::{Packet, Version};

fn write_passwords(path: &std::path::Path, users: &[(&str, &str)]) {
    let mut file = PasswordFile::new();
    for (user, password) in users {
        file.set(user, password.as_bytes()).unwrap();
    }
    file.save(path).unwrap();
}

fn login(user: &str, password: &'static [u8]) -> roost::codec::Connect {
    let mut c = connect_packet(Version::V5, user);
    c.username = Some(user.to_string());
    c.password = Some(Bytes::from_static(password));
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_password_file_and_keeps_connections() {
    let dir = tempfile::tempdir().unwrap();
    let passwd = dir.path().join("passwd");
    write_passwords(&passwd, &[("alice", "a-secret")]);
    let broker = BrokerProcess::start_with(
        dir.path(),
        &format!("password_file = {:?}\nallow_anonymous = false\n", passwd),
    );
    let (mut alice, connack) = RawClient::connect(broker.addr, login("alice", b"a-secret")).await;
    assert_eq!(connack.code, 0);
    let (_, connack) = RawClient::connect(broker.addr, login("carol", b"c-secret")).await;
    assert_eq!(connack.code, 0x86, "carol is not in the file yet");

    write_passwords(&passwd, &[("alice", "a-secret"), ("carol", "c-secret")]);
    broker.signal("HUP");
    broker.wait_log("password and ACL files reloaded");
    let (_, connack) = RawClient::connect(broker.addr, login("carol", b"c-secret")).await;
    assert_eq!(connack.code, 0, "carol accepted after SIGHUP");

    std::fs::write(&passwd, "this line has no colon\n").unwrap();
    broker.signal("HUP");
    let line = broker.wait_log("reload failed");
    assert!(line.contains("passwd"), "the error names the file: {line}");
    let (_, connack) = RawClient::connect(broker.addr, login("carol", b"c-secret")).await;
    assert_eq!(connack.code, 0, "the previous file is still in force");

    // Alice's connection lived through both reloads.
    alice.send(&Packet::PingReq).await;
    assert_eq!(alice.recv().await, Some(Packet::PingResp));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_shuts_down_cleanly_and_tells_v5_clients() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = BrokerProcess::start(dir.path());
    let (mut c, _) = RawClient::connect(broker.addr, connect_packet(Version::V5, "c")).await;
    broker.signal("TERM");
    let seen = c.until_closed().await;
    assert!(
        matches!(seen.as_slice(), [Packet::Disconnect(d)] if d.reason == 0x8B),
        "{seen:?}"
    );
    let deadline = std::time::Instant::now() + WAIT;
    let status = loop {
        if let Some(status) = broker.child.try_wait().unwrap() {
            break status;
        }
        assert!(std::time::Instant::now() < deadline, "broker exits in time");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    };
    assert!(status.success(), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn systemd_hears_ready_reloading_and_stopping() {
    // Type=notify: READY=1 once serving, RELOADING=1 then READY=1 around SIGHUP, STOPPING=1.
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify.sock");
    let socket = std::os::unix::net::UnixDatagram::bind(&socket_path).unwrap();
    socket.set_read_timeout(Some(WAIT)).unwrap();
    let next = || {
        let mut buf = [0u8; 512];
        let n = socket.recv(&mut buf).expect("a notification in time");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let data = dir.path().join("data");
    let broker = BrokerProcess::spawn_env(
        &[
            "--port".into(),
            "0".into(),
            "--data-dir".into(),
            data.into(),
        ],
        &[("NOTIFY_SOCKET", &socket_path)],
    );
    assert_eq!(next(), "READY=1\n");
    broker.signal("HUP");
    let reloading = next();
    assert!(
        reloading.starts_with("RELOADING=1\nMONOTONIC_USEC="),
        "{reloading}"
    );
    assert_eq!(next(), "READY=1\n");
    broker.signal("TERM");
    assert_eq!(next(), "STOPPING=1\n");
}
