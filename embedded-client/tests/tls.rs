//! roost-client over TLS 1.3 (feature `tls`, embedded-tls) against Roost's TLS listener
//! (in-process) and mosquitto with a TLS 1.3 listener, both with the development
//! certificates of `certs/` (EC P-256, signed by the development CA).
//!
//! Run with `cargo test -p roost-client --features tls --test tls`.

mod common;

use std::net::SocketAddr;

use common::*;
use roost::config::{ListenerConfig, ListenerKind};
use roost_client::tls::{self, CaVerified, MAX_RECORD, Tls, TlsError};
use roost_client::{Client, Protocol, QoS, RamStore};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

/// The DER of a PEM certificate in `certs/`.
fn der(name: &str) -> Vec<u8> {
    CertificateDer::from_pem_file(certs().join(name))
        .expect("certificate")
        .to_vec()
}

/// Record buffers of one TLS stream.
struct Records {
    rx: Vec<u8>,
    tx: Vec<u8>,
}

impl Records {
    fn new() -> Self {
        Records {
            rx: vec![0; MAX_RECORD],
            tx: vec![0; 4096],
        }
    }
}

/// A TLS stream to `addr`, verified against the CA certificate `ca` for `server_name`.
async fn open<'a>(
    addr: SocketAddr,
    records: &'a mut Records,
    ca: &'a [u8],
    server_name: &str,
) -> Result<Tls<'a, Tcp>, TlsError> {
    let socket = tcp(addr).await;
    let provider: CaVerified<'_, _> = CaVerified::new(ca, rand_core::OsRng);
    tokio::time::timeout(
        WAIT,
        tls::connect(
            socket,
            &mut records.rx,
            &mut records.tx,
            server_name,
            provider,
        ),
    )
    .await
    .expect("TLS handshake timed out")
}

/// Connects over TLS with `protocol`, subscribes, publishes QoS 0/1(/2) to itself and
/// receives each message back through the broker.
async fn round_trip(addr: SocketAddr, protocol: Protocol) {
    let ca = der("ca.pem");
    let mut records = Records::new();
    let stream = open(addr, &mut records, &ca, "localhost")
        .await
        .expect("handshake");
    let mut b = Bufs::std();
    let mut c: Client<'_, Tls<'_, Tcp>, _, RamStore<'_>> = b.client();
    let ack = tokio::time::timeout(WAIT, c.connect(stream, &opts("tls-rt", protocol)))
        .await
        .expect("CONNACK in time")
        .expect("connect");
    assert!(!ack.session_present);
    let topic = format!("tls/{}", tag(protocol));
    assert_eq!(
        subscribe(&mut c, &topic, QoS::AtLeastOnce).await,
        vec![1],
        "granted QoS 1"
    );
    let mut qos = vec![QoS::AtMostOnce, QoS::AtLeastOnce];
    if cfg!(feature = "qos2") {
        qos.push(QoS::from_u8(2).unwrap());
    }
    for (i, q) in qos.into_iter().enumerate() {
        let payload = format!("m{i}");
        c.publish(&topic, payload.as_bytes(), q, false)
            .await
            .expect("publish");
        let seen = messages_until(&mut c, payload.as_bytes()).await;
        assert!(seen.is_empty(), "{seen:?}");
    }
    c.disconnect().await.expect("disconnect");
}

async fn roost_tls() -> roost::BrokerHandle {
    roost_tls_with(certs().join("server.pem"), certs().join("server.key")).await
}

/// Roost with a TLS listener serving the certificate chain `cert` (PEM) with key `key`.
async fn roost_tls_with(cert: std::path::PathBuf, key: std::path::PathBuf) -> roost::BrokerHandle {
    let mut listener = ListenerConfig::new(ListenerKind::Tls, [127, 0, 0, 1].into(), 0);
    listener.cert_file = Some(cert);
    listener.key_file = Some(key);
    let config = roost::Config {
        port: 0,
        in_memory: true,
        listeners: vec![listener],
        ..roost::Config::default()
    };
    roost::start(config).await.expect("roost starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roost_tls_listener_both_versions() {
    let broker = roost_tls().await;
    let addr = broker.addr_of(ListenerKind::Tls).expect("TLS listener");
    for p in protocols() {
        round_trip(addr, p).await;
    }
}

/// Runs `openssl` with `args` in `dir`; panics with its output if it fails.
fn openssl(dir: &std::path::Path, args: &[&str]) {
    let out = std::process::Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl runs (apt-get install openssl)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A server certificate for `broker.example.com` signed not by the CA but by the device
/// certificate `client.pem` (which the CA issued: CA:FALSE, client authentication only),
/// sent with `client.pem` as its intermediate. embedded-tls alone would accept the chain
/// (it does not check that an intermediate may sign); roost-client takes only certificates
/// the CA signed itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_through_a_certificate_that_may_not_sign_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let (client_cert, client_key) = (certs().join("client.pem"), certs().join("client.key"));
    std::fs::write(d.join("ext"), "subjectAltName=DNS:broker.example.com\n").expect("ext");
    openssl(
        d,
        &[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            "forged.key",
        ],
    );
    openssl(
        d,
        &[
            "req",
            "-new",
            "-key",
            "forged.key",
            "-subj",
            "/CN=broker.example.com",
            "-out",
            "forged.csr",
        ],
    );
    openssl(
        d,
        &[
            "x509",
            "-req",
            "-in",
            "forged.csr",
            "-CA",
            client_cert.to_str().expect("path"),
            "-CAkey",
            client_key.to_str().expect("path"),
            "-CAserial",
            "forged.srl",
            "-CAcreateserial",
            "-days",
            "30",
            "-extfile",
            "ext",
            "-out",
            "forged.pem",
        ],
    );
    let chain = [
        std::fs::read_to_string(d.join("forged.pem")).expect("forged"),
        std::fs::read_to_string(&client_cert).expect("client"),
    ]
    .concat();
    std::fs::write(d.join("chain.pem"), chain).expect("chain");
    let broker = roost_tls_with(d.join("chain.pem"), d.join("forged.key")).await;
    let addr = broker.addr_of(ListenerKind::Tls).expect("TLS listener");
    let ca = der("ca.pem");
    let mut records = Records::new();
    let r = open(addr, &mut records, &ca, "broker.example.com").await;
    assert!(
        matches!(r, Err(TlsError::InvalidCertificate)),
        "a forged chain: {:?}",
        r.err()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untrusted_ca_and_wrong_name_are_refused() {
    let broker = roost_tls().await;
    let addr = broker.addr_of(ListenerKind::Tls).expect("TLS listener");
    // A CA that did not sign the server certificate: the chain does not verify.
    let other = der("other-ca.pem");
    let mut records = Records::new();
    let r = open(addr, &mut records, &other, "localhost").await;
    assert!(
        matches!(r, Err(TlsError::InvalidCertificate)),
        "{:?}",
        r.err()
    );
    // The right CA, but a name the certificate does not carry.
    let ca = der("ca.pem");
    let mut records = Records::new();
    let r = open(addr, &mut records, &ca, "broker.example.com").await;
    assert!(
        matches!(r, Err(TlsError::InvalidCertificate)),
        "{:?}",
        r.err()
    );
    // The right CA and name still work after those attempts.
    let mut records = Records::new();
    assert!(open(addr, &mut records, &ca, "localhost").await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_tls13_listener_both_versions() {
    let tls = format!(
        "certfile {}\nkeyfile {}\ntls_version tlsv1.3\n",
        certs().join("server.pem").display(),
        certs().join("server.key").display()
    );
    let Some(broker) = start_mosquitto_with(&tls).await else {
        return;
    };
    for p in protocols() {
        round_trip(broker.addr, p).await;
    }
    // mosquitto's certificate is checked as well.
    let other = der("other-ca.pem");
    let mut records = Records::new();
    let r = open(broker.addr, &mut records, &other, "localhost").await;
    assert!(
        matches!(r, Err(TlsError::InvalidCertificate)),
        "{:?}",
        r.err()
    );
}
