//! Interoperability with the mosquitto command-line clients, 3.1.1 and `-V 5`.
//!
//! Skipped with a notice when `mosquitto_pub`/`mosquitto_sub` are not installed, unless
//! `ROOST_INTEROP=require` is set (CI sets it), in which case their absence fails the test.

mod common;

use std::net::SocketAddr;
use std::process::Stdio;

use common::*;
use tokio::process::{Child, Command};

fn available() -> bool {
    let found = ["mosquitto_pub", "mosquitto_sub"].iter().all(|tool| {
        std::process::Command::new(tool)
            .arg("--help")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok()
    });
    if !found {
        if std::env::var("ROOST_INTEROP").as_deref() == Ok("require") {
            panic!("mosquitto_pub/mosquitto_sub are required (ROOST_INTEROP=require)");
        }
        eprintln!("NOTICE: mosquitto clients not installed; interop test skipped");
    }
    found
}

fn base(tool: &str, addr: SocketAddr, v5: bool) -> Command {
    let mut c = Command::new(tool);
    c.args(["-h", &addr.ip().to_string(), "-p", &addr.port().to_string()]);
    if v5 {
        c.args(["-V", "5"]);
    }
    c.kill_on_drop(true)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

/// Starts `mosquitto_sub` printing `topic payload` lines; it exits after `count` messages.
fn sub(addr: SocketAddr, v5: bool, args: &[&str], count: u32) -> Child {
    let mut c = base("mosquitto_sub", addr, v5);
    c.args(["-v", "-W", "10", "-C", &count.to_string()])
        .args(args);
    c.spawn().expect("mosquitto_sub starts")
}

async fn publish(addr: SocketAddr, v5: bool, args: &[&str]) {
    let out = tokio::time::timeout(WAIT, base("mosquitto_pub", addr, v5).args(args).output())
        .await
        .expect("mosquitto_pub finishes")
        .expect("mosquitto_pub runs");
    assert!(out.status.success(), "mosquitto_pub: {out:?}");
}

async fn output(child: Child) -> String {
    let out = tokio::time::timeout(WAIT, child.wait_with_output())
        .await
        .expect("mosquitto_sub finishes")
        .expect("mosquitto_sub output");
    assert!(out.status.success(), "mosquitto_sub: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pub_sub_all_qos_both_versions() {
    if !available() {
        return;
    }
    let broker = start_broker().await;
    let addr = broker.local_addr();
    for v5 in [false, true] {
        for qos in ["0", "1", "2"] {
            let topic = format!("interop/{}/{qos}", if v5 { "v5" } else { "v311" });
            let before = broker.subscription_count();
            let child = sub(addr, v5, &["-t", &topic, "-q", qos], 1);
            wait_until(|| broker.subscription_count() > before).await;
            publish(addr, v5, &["-t", &topic, "-q", qos, "-m", "hello"]).await;
            assert_eq!(output(child).await, format!("{topic} hello\n"));
            wait_until(|| broker.subscription_count() == before).await;
        }
    }
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_message_with_r() {
    if !available() {
        return;
    }
    let broker = start_broker().await;
    let addr = broker.local_addr();
    for v5 in [false, true] {
        publish(
            addr,
            v5,
            &["-t", "interop/retained", "-q", "1", "-r", "-m", "kept"],
        )
        .await;
        let child = sub(addr, v5, &["-t", "interop/#", "-q", "1"], 1);
        assert_eq!(output(child).await, "interop/retained kept\n");
    }
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn will_from_a_killed_client() {
    if !available() {
        return;
    }
    let broker = start_broker().await;
    let addr = broker.local_addr();
    for v5 in [false, true] {
        let watcher = sub(addr, v5, &["-t", "interop/will", "-q", "1"], 1);
        wait_until(|| broker.subscription_count() == 1).await;
        let mut victim = base("mosquitto_sub", addr, v5);
        victim.args([
            "-t",
            "interop/none",
            "-i",
            "victim",
            "--will-topic",
            "interop/will",
            "--will-payload",
            "victim died",
            "--will-qos",
            "1",
        ]);
        let mut victim = victim.spawn().expect("victim starts");
        wait_until(|| broker.subscription_count() == 2).await;
        victim.start_kill().expect("kill the victim by its pid");
        let _ = victim.wait().await;
        assert_eq!(output(watcher).await, "interop/will victim died\n");
        wait_until(|| broker.subscription_count() == 0).await;
    }
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_session_with_c() {
    if !available() {
        return;
    }
    let broker = start_broker().await;
    let addr = broker.local_addr();
    for (v5, id) in [(false, "durable-v311"), (true, "durable-v5")] {
        let topic = format!("interop/{id}");
        // -E exits right after the SUBACK; -c keeps the session (v5: -x sets its expiry).
        let mut args = vec!["-c", "-i", id, "-q", "1", "-t", topic.as_str(), "-E"];
        if v5 {
            args.extend(["-x", "600"]);
        }
        let first = base("mosquitto_sub", addr, v5)
            .args(&args)
            .output()
            .await
            .expect("subscribe once");
        assert!(first.status.success(), "{first:?}");
        wait_detached(&broker, id).await;
        publish(addr, v5, &["-t", &topic, "-q", "1", "-m", "while away"]).await;
        let mut args = vec!["-c", "-i", id, "-q", "1", "-t", topic.as_str()];
        if v5 {
            args.extend(["-x", "600"]);
        }
        let child = sub(addr, v5, &args, 1);
        assert_eq!(output(child).await, format!("{topic} while away\n"));
    }
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_3_1_clients_publish_and_subscribe_at_every_qos() {
    // MQTT 3.1 ("MQIsdp", level 3), as old devices and gateways still speak it.
    if !available() {
        return;
    }
    let broker = start_broker().await;
    let addr = broker.local_addr();
    for qos in ["0", "1", "2"] {
        let topic = format!("interop/v31/{qos}");
        let before = broker.subscription_count();
        let child = sub(addr, false, &["-V", "mqttv31", "-t", &topic, "-q", qos], 1);
        wait_until(|| broker.subscription_count() > before).await;
        let args = ["-V", "mqttv31", "-t", &topic, "-q", qos, "-m", "old"];
        publish(addr, false, &args).await;
        assert_eq!(output(child).await, format!("{topic} old\n"));
        wait_until(|| broker.subscription_count() == before).await;
    }
    // A durable 3.1 session keeps what was published while it was away.
    let durable = [
        "-V",
        "mqttv31",
        "-i",
        "old-device",
        "-c",
        "-t",
        "interop/v31/q",
        "-q",
        "1",
    ];
    let child = sub(addr, false, &[&durable[..], &["-E"]].concat(), 1);
    let out = tokio::time::timeout(WAIT, child.wait_with_output()).await;
    assert!(out.expect("in time").expect("runs").status.success());
    wait_detached(&broker, "old-device").await;
    let args = [
        "-V",
        "mqttv31",
        "-t",
        "interop/v31/q",
        "-q",
        "1",
        "-m",
        "kept",
    ];
    publish(addr, false, &args).await;
    let child = sub(addr, false, &durable, 1);
    assert_eq!(output(child).await, "interop/v31/q kept\n");
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_subscription_members_share_the_messages() {
    // MQTT 5.0 4.8.2, with `mosquitto_sub -t '$share/{group}/{filter}'` in 5.0, in 3.1.1 and
    // both in one group: each message reaches exactly one member, taking turns.
    if !available() {
        return;
    }
    let broker = start_broker().await;
    let addr = broker.local_addr();
    for (i, (a_v5, b_v5)) in [(true, true), (false, false), (true, false)]
        .into_iter()
        .enumerate()
    {
        let topic = format!("interop/shared/{i}");
        let filter = format!("$share/workers/{topic}");
        let before = broker.subscription_count();
        let a = sub(addr, a_v5, &["-t", &filter, "-q", "1"], 5);
        let b = sub(addr, b_v5, &["-t", &filter, "-q", "1"], 5);
        wait_until(|| broker.subscription_count() == before + 2).await;
        let mut expected = Vec::new();
        for n in 0..10 {
            let payload = format!("job-{n}");
            publish(addr, true, &["-t", &topic, "-q", "1", "-m", &payload]).await;
            expected.push(format!("{topic} {payload}"));
        }
        let (a, b) = (output(a).await, output(b).await);
        let mut got: Vec<String> = a.lines().chain(b.lines()).map(str::to_string).collect();
        got.sort();
        expected.sort();
        assert_eq!(got, expected, "a: {a}\nb: {b}");
        wait_until(|| broker.subscription_count() == before).await;
    }
    assert!(
        broker.shared_subscriptions().is_empty(),
        "groups end with their last member"
    );
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sys_topics_with_mosquitto_sub() {
    if !available() {
        return;
    }
    let broker = start_broker_with(|c| c.sys_interval = 10).await;
    let addr = broker.local_addr();
    for v5 in [false, true] {
        let child = sub(addr, v5, &["-t", "$SYS/broker/version"], 1);
        let version = format!("$SYS/broker/version roost {}\n", env!("CARGO_PKG_VERSION"));
        assert_eq!(output(child).await, version);
        let child = sub(addr, v5, &["-t", "$SYS/broker/clients/connected"], 1);
        assert_eq!(output(child).await, "$SYS/broker/clients/connected 0\n");
    }
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_certificates_are_reloaded_without_a_restart() {
    // What SIGHUP does: new connections get the new certificate, the broker keeps running.
    if !available() {
        return;
    }
    let certs = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("certs");
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("server.pem"), dir.path().join("server.key"));
    let install = |pem: &str, k: &str| {
        std::fs::copy(certs.join(pem), &cert).unwrap();
        std::fs::copy(certs.join(k), &key).unwrap();
    };
    install("server.pem", "server.key");
    let broker = start_broker_with(|c| {
        let mut l = roost::config::ListenerConfig::new(
            roost::config::ListenerKind::Tls,
            [127, 0, 0, 1].into(),
            0,
        );
        l.cert_file = Some(cert.clone());
        l.key_file = Some(key.clone());
        c.listeners.push(l);
    })
    .await;
    let tls = broker
        .addr_of(roost::config::ListenerKind::Tls)
        .expect("TLS listener");
    let cafile = certs.join("ca.pem");
    let try_publish = || async {
        base("mosquitto_pub", tls, false)
            .args(["--cafile", cafile.to_str().unwrap(), "-t", "t", "-m", "x"])
            .output()
            .await
            .map(|o| o.status.success())
            .unwrap_or(false)
    };
    assert!(
        try_publish().await,
        "the development certificate is trusted"
    );
    // A certificate from a CA the client does not trust.
    install("untrusted-client.pem", "untrusted-client.key");
    assert_eq!(broker.reload_tls().expect("reloads"), 1);
    assert!(!try_publish().await, "the new certificate is in use");
    // A broken file is refused; the certificate in use stays.
    std::fs::write(&cert, "not a certificate").unwrap();
    assert!(broker.reload_tls().is_err());
    assert!(!try_publish().await);
    install("server.pem", "server.key");
    assert_eq!(broker.reload_tls().expect("reloads"), 1);
    assert!(try_publish().await, "rotated back");
    broker.shutdown().await;
}
