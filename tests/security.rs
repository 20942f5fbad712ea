//! TLS, mutual TLS, WebSocket, passwords, ACLs, limits and reload, with real clients:
//! mosquitto_pub/mosquitto_sub (3.1.1 and `-V 5`) and rumqttc over ws and wss.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use roost::auth::PasswordFile;
use roost::codec::{AckKind, Packet, QoS, Version};
use roost::config::{ListenerConfig, ListenerKind};
use tokio::process::Command;

fn certs() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("certs")
}

fn have_mosquitto_clients() -> bool {
    let found = std::process::Command::new("mosquitto_sub")
        .arg("--help")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !found {
        if std::env::var("ROOST_INTEROP").as_deref() == Ok("require") {
            panic!("mosquitto clients required (ROOST_INTEROP=require)");
        }
        eprintln!("NOTICE: mosquitto clients not installed; test skipped");
    }
    found
}

fn tls_listener(kind: ListenerKind) -> ListenerConfig {
    let mut l = ListenerConfig::new(kind, [127, 0, 0, 1].into(), 0);
    l.cert_file = Some(certs().join("server.pem"));
    l.key_file = Some(certs().join("server.key"));
    l
}

fn mtls_listener(identity_as_username: bool) -> ListenerConfig {
    let mut l = tls_listener(ListenerKind::Tls);
    l.ca_file = Some(certs().join("ca.pem"));
    l.require_certificate = true;
    l.use_identity_as_username = identity_as_username;
    l
}

/// Runs a mosquitto tool to completion (bounded) and returns (success, stdout, stderr).
async fn run(tool: &str, addr: SocketAddr, args: &[&str]) -> (bool, String, String) {
    let mut c = Command::new(tool);
    c.args(["-h", &addr.ip().to_string(), "-p", &addr.port().to_string()])
        .args(args)
        .kill_on_drop(true)
        .stdin(Stdio::null());
    let out = tokio::time::timeout(WAIT, c.output())
        .await
        .expect("mosquitto tool finishes")
        .expect("mosquitto tool runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Subscribes with mosquitto_sub (waiting for one message) and publishes with mosquitto_pub,
/// both with `extra` arguments; returns what the subscriber printed. Expects no other
/// subscription on the broker.
async fn roundtrip(
    broker: &roost::BrokerHandle,
    addr: SocketAddr,
    extra: &[&str],
    topic: &str,
) -> String {
    // The previous round's subscriber may still be leaving.
    wait_until(|| broker.subscription_count() == 0).await;
    let before = 0;
    let mut sub = Command::new("mosquitto_sub");
    sub.args(["-h", &addr.ip().to_string(), "-p", &addr.port().to_string()])
        .args(["-t", topic, "-C", "1", "-W", "10", "-q", "1"])
        .args(extra)
        .kill_on_drop(true)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let sub = sub.spawn().expect("mosquitto_sub starts");
    wait_until(|| broker.subscription_count() > before).await;
    let mut pub_args = vec!["-t", topic, "-q", "1", "-m", "hello"];
    pub_args.extend_from_slice(extra);
    let (ok, _, err) = run("mosquitto_pub", addr, &pub_args).await;
    assert!(ok, "mosquitto_pub {extra:?}: {err}");
    let out = tokio::time::timeout(WAIT, sub.wait_with_output())
        .await
        .expect("mosquitto_sub finishes")
        .expect("mosquitto_sub output");
    assert!(out.status.success(), "mosquitto_sub: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn ca() -> String {
    certs().join("ca.pem").display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_mosquitto_clients_both_versions() {
    if !have_mosquitto_clients() {
        return;
    }
    let broker = start_broker_with(|c| c.listeners.push(tls_listener(ListenerKind::Tls))).await;
    let addr = broker.addr_of(ListenerKind::Tls).unwrap();
    let ca = ca();
    for v in ["311", "5"] {
        let got = roundtrip(&broker, addr, &["--cafile", &ca, "-V", v], "tls/t").await;
        assert_eq!(got, "hello\n");
    }
    // A client that does not trust the server's CA fails the handshake.
    let other = certs().join("other-ca.pem").display().to_string();
    let (ok, _, _) = run(
        "mosquitto_pub",
        addr,
        &["--cafile", &other, "-t", "x", "-m", "y"],
    )
    .await;
    assert!(!ok);
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_requires_a_trusted_client_certificate() {
    if !have_mosquitto_clients() {
        return;
    }
    let broker = start_broker_with(|c| c.listeners.push(mtls_listener(false))).await;
    let addr = broker.addr_of(ListenerKind::Tls).unwrap();
    let ca = ca();
    let cert = certs().join("client.pem").display().to_string();
    let key = certs().join("client.key").display().to_string();
    for v in ["311", "5"] {
        let extra = ["--cafile", &ca, "--cert", &cert, "--key", &key, "-V", v];
        assert_eq!(roundtrip(&broker, addr, &extra, "mtls/t").await, "hello\n");
    }
    // No certificate: refused.
    let (ok, _, _) = run(
        "mosquitto_pub",
        addr,
        &["--cafile", &ca, "-t", "x", "-m", "y"],
    )
    .await;
    assert!(!ok, "a client without a certificate is refused");
    // A certificate from another CA: refused.
    let bad_cert = certs().join("untrusted-client.pem").display().to_string();
    let bad_key = certs().join("untrusted-client.key").display().to_string();
    let (ok, _, _) = run(
        "mosquitto_pub",
        addr,
        &[
            "--cafile", &ca, "--cert", &bad_cert, "--key", &bad_key, "-t", "x", "-m", "y",
        ],
    )
    .await;
    assert!(!ok, "an untrusted certificate is refused");
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_common_name_is_the_username_for_acls() {
    if !have_mosquitto_clients() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let acl = dir.path().join("acl");
    std::fs::write(&acl, "user device-1\ntopic readwrite devices/device-1/#\n").unwrap();
    let broker = start_broker_with(|c| {
        c.listeners.push(mtls_listener(true));
        c.acl_file = Some(acl.clone());
    })
    .await;
    let addr = broker.addr_of(ListenerKind::Tls).unwrap();
    let ca = ca();
    let cert = certs().join("client.pem").display().to_string();
    let key = certs().join("client.key").display().to_string();
    let extra = ["--cafile", &ca, "--cert", &cert, "--key", &key, "-V", "5"];
    assert_eq!(
        roundtrip(&broker, addr, &extra, "devices/device-1/temp").await,
        "hello\n"
    );
    // Outside its tree the same identity is refused: SUBACK 0x87, which mosquitto_sub reports.
    let mut args = vec!["-t", "devices/device-2/temp", "-C", "1", "-W", "5"];
    args.extend_from_slice(&extra);
    let (_, out, err) = run("mosquitto_sub", addr, &args).await;
    assert!(
        format!("{out}{err}").contains("denied"),
        "subscription outside the ACL refused: {out}{err}"
    );
    broker.shutdown().await;
}

/// A broker that checks `passwd` and refuses anonymous clients.
async fn password_broker(passwd: &Path) -> roost::BrokerHandle {
    let passwd = passwd.to_path_buf();
    start_broker_with(move |c| {
        c.password_file = Some(passwd);
        c.allow_anonymous = Some(false);
    })
    .await
}

fn password_file(dir: &Path, users: &[(&str, &str)]) -> PathBuf {
    let path = dir.join("passwd");
    let mut file = PasswordFile::new();
    for (user, password) in users {
        file.set(user, password.as_bytes()).unwrap();
    }
    file.save(&path).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn username_and_password_with_mosquitto_clients() {
    if !have_mosquitto_clients() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let passwd = password_file(dir.path(), &[("alice", "wonderland")]);
    // A line written by mosquitto_passwd itself ($7$ PBKDF2-SHA512) works unchanged.
    let mosq = dir.path().join("mosq");
    let status = std::process::Command::new("mosquitto_passwd")
        .args(["-b", "-c"])
        .arg(&mosq)
        .args(["bob", "builder"])
        .status();
    let have_mosquitto_passwd = matches!(status, Ok(s) if s.success());
    if have_mosquitto_passwd {
        let mut text = std::fs::read_to_string(&passwd).unwrap();
        text.push_str(&std::fs::read_to_string(&mosq).unwrap());
        std::fs::write(&passwd, text).unwrap();
    }
    let broker = password_broker(&passwd).await;
    let addr = broker.local_addr();
    for v in ["311", "5"] {
        let extra = ["-u", "alice", "-P", "wonderland", "-V", v];
        assert_eq!(roundtrip(&broker, addr, &extra, "auth/t").await, "hello\n");
        if have_mosquitto_passwd {
            let extra = ["-u", "bob", "-P", "builder", "-V", v];
            assert_eq!(roundtrip(&broker, addr, &extra, "auth/t").await, "hello\n");
        }
        let (ok, _, err) = run(
            "mosquitto_pub",
            addr,
            &["-u", "alice", "-P", "wrong", "-V", v, "-t", "x", "-m", "y"],
        )
        .await;
        assert!(!ok, "wrong password refused");
        assert!(
            err.to_lowercase().contains("bad user name or password")
                || err.to_lowercase().contains("not authori"),
            "{err}"
        );
        let (ok, _, _) = run("mosquitto_pub", addr, &["-V", v, "-t", "x", "-m", "y"]).await;
        assert!(!ok, "anonymous refused when allow_anonymous = false");
    }
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connack_codes_for_refused_logins() {
    let dir = tempfile::tempdir().unwrap();
    let passwd = password_file(dir.path(), &[("alice", "wonderland")]);
    let broker = password_broker(&passwd).await;
    let addr = broker.local_addr();
    for (version, bad, anonymous) in [(Version::V311, 0x04, 0x05), (Version::V5, 0x86, 0x87)] {
        let mut c = connect_packet(version, "x");
        c.username = Some("alice".into());
        c.password = Some(bytes::Bytes::from_static(b"nope"));
        let (_, connack) = RawClient::connect(addr, c.clone()).await;
        assert_eq!(connack.code, bad);
        c.username = None;
        c.password = None;
        let (_, connack) = RawClient::connect(addr, c.clone()).await;
        assert_eq!(connack.code, anonymous);
        c.username = Some("alice".into());
        c.password = Some(bytes::Bytes::from_static(b"wonderland"));
        let (_, connack) = RawClient::connect(addr, c).await;
        assert_eq!(connack.code, 0);
    }
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_failed_logins_are_slowed_down() {
    let dir = tempfile::tempdir().unwrap();
    let passwd = password_file(dir.path(), &[("alice", "wonderland")]);
    let broker = start_broker_with(|c| c.password_file = Some(passwd.clone())).await;
    let mut c = connect_packet(Version::V311, "guess");
    c.username = Some("alice".into());
    c.password = Some(bytes::Bytes::from_static(b"guess"));
    let mut last = Duration::ZERO;
    for _ in 0..3 {
        let started = std::time::Instant::now();
        let (_, connack) = RawClient::connect(broker.local_addr(), c.clone()).await;
        assert_eq!(connack.code, 0x04);
        last = started.elapsed();
    }
    // The third failure in a row waits at least the base delay doubled twice (1 s).
    assert!(last >= Duration::from_millis(900), "{last:?}");
    broker.shutdown().await;
}

async fn login(addr: SocketAddr, version: Version, id: &str, user: Option<&str>) -> RawClient {
    let mut c = connect_packet(version, id);
    c.username = user.map(str::to_string);
    let (client, connack) = RawClient::connect(addr, c).await;
    assert_eq!(connack.code, 0);
    client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acl_denies_by_default_and_grants_per_user_and_pattern() {
    let dir = tempfile::tempdir().unwrap();
    let acl = dir.path().join("acl");
    std::fs::write(
        &acl,
        "# anonymous clients\ntopic read public/#\n\n\
         user alice\ntopic readwrite alice/#\ntopic write inbox/bob\n\n\
         user bob\ntopic read inbox/bob\n\n\
         pattern readwrite clients/%c/#\npattern read users/%u/#\n",
    )
    .unwrap();
    let broker = start_broker_with(|c| c.acl_file = Some(acl.clone())).await;
    let addr = broker.local_addr();

    // SUBSCRIBE: granted or refused per filter (3.1.1: 0x80, 5.0: 0x87).
    for (version, refused) in [(Version::V311, 0x80u8), (Version::V5, 0x87u8)] {
        let mut c = login(addr, version, "c1", Some("alice")).await;
        c.send(&subscribe("alice/x", QoS::AtLeastOnce)).await;
        assert!(matches!(c.recv().await, Some(Packet::SubAck(s)) if s.codes == vec![1]));
        c.send(&subscribe("inbox/bob", QoS::AtLeastOnce)).await;
        assert!(
            matches!(c.recv().await, Some(Packet::SubAck(s)) if s.codes == vec![refused]),
            "write-only topic cannot be read"
        );
        c.send(&subscribe("#", QoS::AtLeastOnce)).await;
        assert!(matches!(c.recv().await, Some(Packet::SubAck(s)) if s.codes == vec![refused]));
        c.send(&subscribe("clients/c1/#", QoS::AtLeastOnce)).await;
        assert!(
            matches!(c.recv().await, Some(Packet::SubAck(s)) if s.codes == vec![1]),
            "%c"
        );
        c.send(&subscribe("users/alice/inbox", QoS::AtLeastOnce))
            .await;
        assert!(
            matches!(c.recv().await, Some(Packet::SubAck(s)) if s.codes == vec![1]),
            "%u"
        );
        c.send(&subscribe("users/bob/inbox", QoS::AtLeastOnce))
            .await;
        assert!(matches!(c.recv().await, Some(Packet::SubAck(s)) if s.codes == vec![refused]));
    }

    // PUBLISH: a denied message is not routed; 5.0 says 0x87, 3.1.1 acks as usual.
    let mut bob = login(addr, Version::V5, "bob-c", Some("bob")).await;
    bob.send(&subscribe("inbox/bob", QoS::AtLeastOnce)).await;
    assert!(matches!(bob.recv().await, Some(Packet::SubAck(s)) if s.codes == vec![1]));
    let mut anon = login(addr, Version::V5, "anon", None).await;
    anon.send(&publish("inbox/bob", QoS::AtLeastOnce, 1, b"anon5"))
        .await;
    match anon.recv().await {
        Some(Packet::Ack(a)) => {
            assert_eq!(
                (a.kind, a.packet_id, a.reason.0),
                (AckKind::PubAck, 1, 0x87)
            );
            assert!(a.reason_string.is_some(), "says why");
        }
        other => panic!("expected PUBACK 0x87, got {other:?}"),
    }
    let mut anon3 = login(addr, Version::V311, "anon3", None).await;
    anon3
        .send(&publish("inbox/bob", QoS::AtLeastOnce, 1, b"anon3"))
        .await;
    assert_eq!(anon3.recv().await, Some(ack_with(AckKind::PubAck, 1, 0)));
    let mut alice = login(addr, Version::V5, "alice-c", Some("alice")).await;
    alice
        .send(&publish("inbox/bob", QoS::AtLeastOnce, 9, b"alice"))
        .await;
    assert_eq!(alice.recv().await, Some(ack_with(AckKind::PubAck, 9, 0)));
    match bob.recv().await {
        Some(Packet::Publish(p)) => {
            assert_eq!(
                &p.payload[..],
                b"alice",
                "the denied messages were not routed"
            )
        }
        other => panic!("{other:?}"),
    }
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_picks_up_new_users_and_keeps_old_files_when_broken() {
    let dir = tempfile::tempdir().unwrap();
    let passwd = password_file(dir.path(), &[("alice", "wonderland")]);
    let broker = password_broker(&passwd).await;
    let addr = broker.local_addr();
    let mut carol = connect_packet(Version::V5, "carol");
    carol.username = Some("carol".into());
    carol.password = Some(bytes::Bytes::from_static(b"secret"));
    let (_, connack) = RawClient::connect(addr, carol.clone()).await;
    assert_eq!(connack.code, 0x86);

    password_file(dir.path(), &[("alice", "wonderland"), ("carol", "secret")]);
    broker.reload_auth().unwrap();
    let (_, connack) = RawClient::connect(addr, carol.clone()).await;
    assert_eq!(connack.code, 0, "new user accepted after reload");

    std::fs::write(&passwd, "carol has no colon\n").unwrap();
    let err = broker.reload_auth().unwrap_err();
    assert!(err.to_string().contains("passwd"), "{err}");
    let (_, connack) = RawClient::connect(addr, carol).await;
    assert_eq!(connack.code, 0, "the previous file stays in force");
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_limit_refuses_extra_connections() {
    let broker = start_broker_with(|c| c.max_connections = 2).await;
    let addr = broker.local_addr();
    let _a = login(addr, Version::V311, "a", None).await;
    let _b = login(addr, Version::V311, "b", None).await;
    let mut c = RawClient::open(addr, Version::V311).await;
    c.send(&Packet::Connect(Box::new(connect_packet(
        Version::V311,
        "c",
    ))))
    .await;
    assert_eq!(c.recv().await, None, "closed without CONNACK");
    assert_eq!(broker.metrics().connections_refused, 1);
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_limit_holds_under_a_burst() {
    let broker = start_broker_with(|c| c.max_connections = 10).await;
    let addr = broker.local_addr();
    let mut held = Vec::new();
    for _ in 0..60 {
        held.push(tokio::net::TcpStream::connect(addr).await.unwrap());
    }
    wait_until(|| {
        let m = broker.metrics();
        m.connections_open + m.connections_refused == 60
    })
    .await;
    let m = broker.metrics();
    assert_eq!(m.connections_open, 10, "{m:?}");
    assert_eq!(m.connections_refused, 50);
    drop(held);
    broker.shutdown().await;
}

fn rustls_client_config() -> Arc<rustls::ClientConfig> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(certs().join("ca.pem")).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_and_secure_websocket_with_rumqttc() {
    let broker = start_broker_with(|c| {
        c.listeners.push(ListenerConfig::new(
            ListenerKind::Ws,
            [127, 0, 0, 1].into(),
            0,
        ));
        c.listeners.push(tls_listener(ListenerKind::Wss));
    })
    .await;
    let ws = broker.addr_of(ListenerKind::Ws).unwrap();
    let wss = broker.addr_of(ListenerKind::Wss).unwrap();
    let (tcp_sub_addr, _) = (broker.local_addr(), ());
    let (mut sub, _) = v4_connect(v4_options("tcp-sub", tcp_sub_addr)).await;
    sub.subscribe("ws/#", rumqttc::QoS::AtLeastOnce).await;

    let mut o = rumqttc::MqttOptions::new(
        "ws-pub",
        format!("ws://127.0.0.1:{}/mqtt", ws.port()),
        ws.port(),
    );
    o.set_transport(rumqttc::Transport::Ws);
    let (ws_pub, _) = v4_connect(o).await;
    ws_pub
        .client
        .publish("ws/plain", rumqttc::QoS::AtLeastOnce, false, "over ws")
        .await
        .unwrap();
    assert_eq!(&sub.next_publish().await.payload[..], b"over ws");

    let mut o = rumqttc::MqttOptions::new(
        "wss-pub",
        format!("wss://localhost:{}/mqtt", wss.port()),
        wss.port(),
    );
    o.set_transport(rumqttc::Transport::Wss(rumqttc::TlsConfiguration::Rustls(
        rustls_client_config(),
    )));
    let (mut wss_client, _) = v4_connect(o).await;
    wss_client
        .subscribe("ws/#", rumqttc::QoS::AtLeastOnce)
        .await;
    wss_client
        .client
        .publish("ws/secure", rumqttc::QoS::AtLeastOnce, false, "over wss")
        .await
        .unwrap();
    assert_eq!(&sub.next_publish().await.payload[..], b"over wss");
    assert_eq!(&wss_client.next_publish().await.payload[..], b"over wss");
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_certificate_file_stops_startup_naming_it() {
    let config = roost::Config {
        port: 0,
        in_memory: true,
        listeners: vec![{
            let mut l = tls_listener(ListenerKind::Tls);
            l.cert_file = Some(PathBuf::from("/nonexistent/server.pem"));
            l
        }],
        ..roost::Config::default()
    };
    let err = roost::start(config).await.expect_err("refused");
    assert!(err.to_string().contains("/nonexistent/server.pem"), "{err}");
    assert!(err.to_string().contains("listener[0].cert_file"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_config_built_in_code_is_refused_by_start() {
    let config = roost::Config {
        port: 0,
        in_memory: true,
        receive_maximum: 0,
        ..roost::Config::default()
    };
    let err = roost::start(config).await.expect_err("refused");
    assert!(
        matches!(&err, roost::StartError::Config(e) if e.key() == Some("receive_maximum")),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "configuration error: invalid value for `receive_maximum`: must be at least 1"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resumed_session_gets_only_what_the_new_user_may_read() {
    let dir = tempfile::tempdir().unwrap();
    let acl = dir.path().join("acl");
    std::fs::write(
        &acl,
        "user alice\ntopic readwrite secret/#\ntopic write bob/#\n\nuser bob\ntopic read bob/#\n",
    )
    .unwrap();
    // With session_owner_check off (mosquitto's behaviour) another user may take it over.
    let broker = start_broker_with(|c| {
        c.acl_file = Some(acl.clone());
        c.session_owner_check = false;
    })
    .await;
    let addr = broker.local_addr();
    let mut shared = connect_packet(Version::V311, "shared-id");
    shared.clean_start = false;
    shared.username = Some("alice".into());
    let (mut a, _) = RawClient::connect(addr, shared.clone()).await;
    a.send(&subscribe("secret/#", QoS::AtLeastOnce)).await;
    assert!(matches!(a.recv().await, Some(Packet::SubAck(s)) if s.codes == vec![1]));
    drop(a);
    wait_detached(&broker, "shared-id").await;
    let mut alice = login(addr, Version::V311, "alice-pub", Some("alice")).await;
    alice
        .send(&publish("secret/plan", QoS::AtLeastOnce, 1, b"secret"))
        .await;
    assert!(matches!(alice.recv().await, Some(Packet::Ack(_))));

    // Bob takes the session over: the queued secret must not reach him.
    shared.username = Some("bob".into());
    let (mut b, connack) = RawClient::connect(addr, shared).await;
    assert!(connack.session_present);
    b.send(&subscribe("bob/#", QoS::AtLeastOnce)).await;
    assert!(matches!(b.recv().await, Some(Packet::SubAck(s)) if s.codes == vec![1]));
    alice
        .send(&publish("bob/note", QoS::AtLeastOnce, 2, b"for bob"))
        .await;
    assert!(matches!(alice.recv().await, Some(Packet::Ack(_))));
    match b.recv().await {
        Some(Packet::Publish(p)) => assert_eq!(&p.payload[..], b"for bob"),
        other => panic!("{other:?}"),
    }
    broker.shutdown().await;
}

/// Opens a raw MQTT-over-WebSocket connection to `addr` (path `/mqtt`, subprotocol `mqtt`).
async fn raw_websocket(
    addr: SocketAddr,
) -> tokio_tungstenite::WebSocketStream<tokio::net::TcpStream> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut request = format!("ws://127.0.0.1:{}/mqtt", addr.port())
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("Sec-WebSocket-Protocol", "mqtt".parse().unwrap());
    let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .max_message_size(Some(64 << 20))
        .max_frame_size(Some(64 << 20));
    let (ws, _) = tokio::time::timeout(
        WAIT,
        tokio_tungstenite::client_async_with_config(request, tcp, Some(config)),
    )
    .await
    .expect("handshake in time")
    .expect("handshake");
    ws
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_websocket_message_may_carry_thousands_of_packets() {
    // MQTT-6.0.0-2: packets are not aligned with WebSocket messages; a 1.2 MiB message of
    // 200-byte PUBLISH packets is read whole (the limit is websocket_max_message_bytes, not
    // max_packet_size), and a message over that limit closes only that connection.
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let broker = start_broker_with(|c| {
        c.websocket_max_message_bytes = 2 << 20;
        c.listeners.push(ListenerConfig::new(
            ListenerKind::Ws,
            [127, 0, 0, 1].into(),
            0,
        ));
    })
    .await;
    let ws_addr = broker.addr_of(ListenerKind::Ws).unwrap();
    let (mut sub, _) =
        RawClient::connect(broker.local_addr(), connect_packet(Version::V311, "sub")).await;
    sub.send(&subscribe("many/#", QoS::AtMostOnce)).await;
    assert!(matches!(sub.recv().await, Some(Packet::SubAck(_))));

    let mut ws = raw_websocket(ws_addr).await;
    let mut bytes = bytes::BytesMut::new();
    let connect = Packet::Connect(Box::new(connect_packet(Version::V311, "ws-batch")));
    roost::codec::encode(&connect, Version::V311, None, &mut bytes).unwrap();
    const COUNT: usize = 6000;
    for _ in 0..COUNT {
        let p = publish("many/t", QoS::AtMostOnce, 0, &[b'x'; 190][..]);
        roost::codec::encode(&p, Version::V311, None, &mut bytes).unwrap();
    }
    assert!(bytes.len() > 1_200_000, "{} bytes", bytes.len());
    ws.send(Message::Binary(bytes.freeze())).await.unwrap();
    let mut got = 0;
    while got < COUNT {
        match sub.recv().await {
            Some(Packet::Publish(p)) => {
                assert_eq!(p.payload.len(), 190);
                got += 1;
            }
            other => panic!("after {got}: {other:?}"),
        }
    }
    // Over the WebSocket limit: that connection ends, the broker goes on.
    let mut big = raw_websocket(ws_addr).await;
    let _ = big.send(Message::Binary(vec![0u8; 3 << 20].into())).await;
    let end = tokio::time::timeout(WAIT, async {
        loop {
            match big.next().await {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => break,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(end.is_ok(), "closed");
    sub.send(&Packet::PingReq).await;
    assert_eq!(sub.recv().await, Some(Packet::PingResp));
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_user_cannot_take_a_session_over() {
    // session_owner_check (on by default): alice's durable session is hers.
    let dir = tempfile::tempdir().unwrap();
    let passwd = dir.path().join("passwd");
    let mut file = PasswordFile::new();
    file.set("alice", b"a-secret").unwrap();
    file.set("bob", b"b-secret").unwrap();
    file.save(&passwd).unwrap();
    for check in [true, false] {
        let broker = start_broker_with(|c| {
            c.password_file = Some(passwd.clone());
            c.session_owner_check = check;
        })
        .await;
        let addr = broker.local_addr();
        let as_user = |user: &str, password: &'static [u8], version| {
            let mut c = connect_packet(version, "shared-id");
            c.clean_start = false;
            c.session_expiry_interval = 3600;
            c.username = Some(user.to_string());
            c.password = Some(bytes::Bytes::from_static(password));
            c
        };
        let (mut alice, connack) =
            RawClient::connect(addr, as_user("alice", b"a-secret", Version::V5)).await;
        assert_eq!(connack.code, 0);
        for (version, refused) in [(Version::V5, 0x87), (Version::V311, 0x05)] {
            let (_, connack) = RawClient::connect(addr, as_user("bob", b"b-secret", version)).await;
            if check {
                assert_eq!(connack.code, refused, "{version:?}");
                assert!(!connack.session_present);
            } else {
                assert_eq!(connack.code, 0, "without the check bob takes it over");
                break;
            }
        }
        if check {
            alice.send(&Packet::PingReq).await;
            assert_eq!(
                alice.recv().await,
                Some(Packet::PingResp),
                "alice stays connected"
            );
        }
        broker.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unverified_username_owns_nothing() {
    // Without a password file a username is only a label: it does not lock the session.
    let broker = start_broker().await;
    let addr = broker.local_addr();
    let mut labelled = connect_packet(Version::V5, "dev1");
    labelled.clean_start = false;
    labelled.session_expiry_interval = 3600;
    labelled.username = Some("label-a".into());
    let (mut first, connack) = RawClient::connect(addr, labelled.clone()).await;
    assert_eq!(connack.code, 0);
    first.send(&Packet::Disconnect(Default::default())).await;
    assert!(first.until_closed().await.is_empty());
    labelled.username = None;
    let (_, connack) = RawClient::connect(addr, labelled).await;
    assert_eq!(connack.code, 0);
    assert!(connack.session_present);
    broker.shutdown().await;
}
