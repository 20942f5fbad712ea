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
    let provider = CaVerified::new(ca, rand_core::OsRng);
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

/// An RNG that is neither `Copy` nor `Clone`, like a chip's TRNG driver.
struct Trng(rand_core::OsRng);

impl tls::RngCore for Trng {
    fn next_u32(&mut self) -> u32 {
        self.0.next_u32()
    }
    fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        self.0.fill_bytes(dest)
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), tls::rand_core::Error> {
        self.0.try_fill_bytes(dest)
    }
}

impl tls::CryptoRng for Trng {}

/// A clock that is neither `Copy` nor `Clone`.
struct OwnClock(TokioClock);

impl roost_client::Clock for OwnClock {
    fn now_ms(&mut self) -> u64 {
        self.0.now_ms()
    }
    fn sleep_until(&mut self, deadline_ms: u64) -> impl std::future::Future<Output = ()> {
        self.0.sleep_until(deadline_ms)
    }
}

/// The README's reconnect loop: a provider and a client per TLS connection, `CaVerified::new`
/// inferred inside the `tls::connect` call, the RNG and the clock lent with `&mut` to each,
/// one session store for all; a QoS 1 message published on the first connection and cut off
/// is resent on the second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_client_per_connection_with_a_lent_rng_and_clock() {
    let broker = roost_tls().await;
    let addr = broker.addr_of(ListenerKind::Tls).expect("TLS listener");
    let ca = der("ca.pem");
    let mut rng = Trng(rand_core::OsRng);
    let mut clock = OwnClock(TokioClock::new());
    let (mut tx, mut rx, mut session) = ([0u8; 512], [0u8; 512], [0u8; 1024]);
    let mut store = RamStore::new(&mut session);
    let (mut record_rx, mut record_tx) = (vec![0u8; MAX_RECORD], vec![0u8; 2048]);
    let o = persistent("tls-loop", Protocol::V5);
    for round in 0..2 {
        let socket = tcp(addr).await;
        let stream = tls::connect(
            socket,
            &mut record_rx,
            &mut record_tx,
            "localhost",
            CaVerified::new(&ca, &mut rng),
        )
        .await
        .expect("handshake");
        let mut client = Client::new(&mut clock, &mut store, &mut tx, &mut rx);
        let ack = client.connect(stream, &o).await.expect("connect");
        if round == 0 {
            client
                .publish("tls/loop", b"kept", QoS::AtLeastOnce, false)
                .await
                .unwrap();
            // Cut before the PUBACK is read: the message stays in the store.
            assert_eq!(client.inflight(), 1);
        } else {
            assert!(ack.session_present);
            assert_eq!(ack.resent, 1, "{ack:?}");
            let ev = tokio::time::timeout(WAIT, client.poll())
                .await
                .expect("PUBACK in time")
                .expect("poll");
            assert!(matches!(ev, roost_client::Event::PubAck(_)), "{ev:?}");
            assert_eq!(client.inflight(), 0);
        }
    }
    assert!(store.is_empty());
}

/// The certificate capacity: a chain larger than it fails the handshake; a larger capacity
/// accepts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_certificate_capacity_bounds_the_chain() {
    let broker = roost_tls().await;
    let addr = broker.addr_of(ListenerKind::Tls).expect("TLS listener");
    let ca = der("ca.pem");
    let mut records = Records::new();
    let provider = CaVerified::new(&ca, rand_core::OsRng).with_cert_capacity::<64>();
    let r = tls::connect(
        tcp(addr).await,
        &mut records.rx,
        &mut records.tx,
        "localhost",
        provider,
    )
    .await;
    assert!(r.is_err(), "a chain above 64 bytes was kept");
    let mut records = Records::new();
    let provider = CaVerified::new(&ca, rand_core::OsRng).with_cert_capacity::<4096>();
    let r = tls::connect(
        tcp(addr).await,
        &mut records.rx,
        &mut records.tx,
        "localhost",
        provider,
    )
    .await;
    assert!(r.is_ok(), "{:?}", r.err());
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

/// A TLS 1.3 server written out by hand (TLS_AES_128_GCM_SHA256, secp256r1), so a test can
/// leave out or reorder the messages that authenticate the server: a man in the middle knows
/// the server's certificate (it is public) but not its key.
mod handwritten_server {
    use super::*;
    use aes_gcm::aead::{AeadInPlace, KeyInit};
    use aes_gcm::{Aes128Gcm, Nonce};
    use embedded_io_adapters::tokio_1::FromTokio;
    use hkdf::Hkdf;
    use hmac::{Hmac, Mac};
    use p256::ecdsa::{Signature, SigningKey, signature::Signer};
    use rustls_pki_types::PrivateKeyDer;
    use sha2::{Digest, Sha256};
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

    /// Which authentication messages the server sends after EncryptedExtensions.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Auth {
        /// Certificate and CertificateVerify, signed with the certificate's key: a real server.
        Genuine,
        /// Neither: straight to Finished.
        Nothing,
        /// The genuine Certificate, no CertificateVerify.
        CertificateOnly,
        /// A CertificateVerify (signed with some key) and no Certificate.
        VerifyOnly,
        /// The genuine Certificate and a CertificateVerify signed with another key.
        WrongKey,
    }

    fn expand_label(secret: &[u8], label: &str, context: &[u8], len: usize) -> Vec<u8> {
        let hk = Hkdf::<Sha256>::from_prk(secret).expect("prk");
        let full = format!("tls13 {label}");
        let mut info = (len as u16).to_be_bytes().to_vec();
        info.push(full.len() as u8);
        info.extend_from_slice(full.as_bytes());
        info.push(context.len() as u8);
        info.extend_from_slice(context);
        let mut out = vec![0; len];
        hk.expand(&info, &mut out).expect("expand");
        out
    }

    fn handshake_msg(kind: u8, body: &[u8]) -> Vec<u8> {
        let mut m = vec![kind];
        m.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
        m.extend_from_slice(body);
        m
    }

    /// The raw P-256 private scalar of a PKCS#8 PEM key.
    fn scalar(pem: &std::path::Path) -> SigningKey {
        let der = PrivateKeyDer::from_pem_file(pem).expect("key");
        let bytes = der.secret_der();
        let at = bytes
            .windows(5)
            .position(|w| w == [0x02, 0x01, 0x01, 0x04, 0x20])
            .expect("EC private key")
            + 5;
        SigningKey::from_slice(&bytes[at..at + 32]).expect("P-256 key")
    }

    async fn read_record(s: &mut DuplexStream) -> Option<(u8, Vec<u8>)> {
        let mut h = [0u8; 5];
        s.read_exact(&mut h).await.ok()?;
        let mut body = vec![0; usize::from(u16::from_be_bytes([h[3], h[4]]))];
        s.read_exact(&mut body).await.ok()?;
        Some((h[0], body))
    }

    /// Serves one handshake on `s` with the certificate `cert` (DER) and its key `key`.
    /// Returns the stream once the client has answered (or gone), to keep it open.
    pub async fn serve(
        mut s: DuplexStream,
        auth: Auth,
        cert: &[u8],
        key: &SigningKey,
    ) -> DuplexStream {
        let (kind, ch) = read_record(&mut s).await.expect("ClientHello");
        assert_eq!(kind, 0x16);
        // ClientHello: type, length, version, random, session id, suites, compression,
        // extensions; find the secp256r1 key share.
        let mut at = 4 + 2 + 32;
        let sid = ch[at + 1..at + 1 + usize::from(ch[at])].to_vec();
        at += 1 + sid.len();
        at += 2 + usize::from(u16::from_be_bytes([ch[at], ch[at + 1]]));
        at += 1 + usize::from(ch[at]);
        at += 2;
        let mut client_key = None;
        while at + 4 <= ch.len() {
            let ty = u16::from_be_bytes([ch[at], ch[at + 1]]);
            let len = usize::from(u16::from_be_bytes([ch[at + 2], ch[at + 3]]));
            let data = &ch[at + 4..at + 4 + len];
            if ty == 0x0033 {
                let mut i = 2;
                while i + 4 <= data.len() {
                    let group = u16::from_be_bytes([data[i], data[i + 1]]);
                    let klen = usize::from(u16::from_be_bytes([data[i + 2], data[i + 3]]));
                    if group == 0x0017 {
                        client_key = Some(data[i + 4..i + 4 + klen].to_vec());
                    }
                    i += 4 + klen;
                }
            }
            at += 4 + len;
        }
        let client_key =
            p256::PublicKey::from_sec1_bytes(&client_key.expect("P-256 key share")).unwrap();
        let eph = p256::ecdh::EphemeralSecret::random(&mut rand_core::OsRng);
        let shared = eph.diffie_hellman(&client_key);
        let point = p256::EncodedPoint::from(eph.public_key());

        let mut sh = vec![3, 3];
        sh.extend_from_slice(&[7u8; 32]);
        sh.push(sid.len() as u8);
        sh.extend_from_slice(&sid);
        sh.extend_from_slice(&[0x13, 0x01, 0]);
        let mut ext = vec![0, 0x2b, 0, 2, 3, 4, 0, 0x33];
        ext.extend_from_slice(&((4 + point.len()) as u16).to_be_bytes());
        ext.extend_from_slice(&[0, 0x17]);
        ext.extend_from_slice(&(point.len() as u16).to_be_bytes());
        ext.extend_from_slice(point.as_bytes());
        sh.extend_from_slice(&(ext.len() as u16).to_be_bytes());
        sh.extend_from_slice(&ext);
        let sh = handshake_msg(2, &sh);
        let mut record = vec![0x16, 3, 3];
        record.extend_from_slice(&(sh.len() as u16).to_be_bytes());
        record.extend_from_slice(&sh);
        s.write_all(&record).await.unwrap();

        let mut transcript = Sha256::new();
        transcript.update(&ch);
        transcript.update(&sh);
        let (early, _) = Hkdf::<Sha256>::extract(Some(&[0u8; 32]), &[0u8; 32]);
        let derived = expand_label(&early, "derived", &Sha256::digest([]), 32);
        let (hs, _) = Hkdf::<Sha256>::extract(Some(&derived), shared.raw_secret_bytes());
        let s_hs = expand_label(&hs, "s hs traffic", &transcript.clone().finalize(), 32);
        let aead = Aes128Gcm::new_from_slice(&expand_label(&s_hs, "key", &[], 16)).unwrap();
        let iv = expand_label(&s_hs, "iv", &[], 12);

        let mut messages = vec![handshake_msg(8, &[0, 0])];
        let certificate = {
            let mut list = (cert.len() as u32).to_be_bytes()[1..].to_vec();
            list.extend_from_slice(cert);
            list.extend_from_slice(&[0, 0]);
            let mut body = vec![0];
            body.extend_from_slice(&(list.len() as u32).to_be_bytes()[1..]);
            body.extend_from_slice(&list);
            handshake_msg(11, &body)
        };
        let verify = |transcript: &Sha256, key: &SigningKey| {
            let mut content = vec![0x20; 64];
            content.extend_from_slice(b"TLS 1.3, server CertificateVerify\0");
            content.extend_from_slice(&transcript.clone().finalize());
            let sig: Signature = key.sign(&content);
            let der = sig.to_der();
            let mut body = vec![4, 3];
            body.extend_from_slice(&(der.as_bytes().len() as u16).to_be_bytes());
            body.extend_from_slice(der.as_bytes());
            handshake_msg(15, &body)
        };
        let other = SigningKey::random(&mut rand_core::OsRng);
        transcript.update(&messages[0]);
        let mut add = |m: Vec<u8>, transcript: &mut Sha256| {
            transcript.update(&m);
            messages.push(m);
        };
        match auth {
            Auth::Genuine | Auth::WrongKey => {
                add(certificate, &mut transcript);
                let k = if auth == Auth::Genuine { key } else { &other };
                let v = verify(&transcript, k);
                add(v, &mut transcript);
            }
            Auth::CertificateOnly => add(certificate, &mut transcript),
            Auth::VerifyOnly => {
                let v = verify(&transcript, &other);
                add(v, &mut transcript);
            }
            Auth::Nothing => {}
        }
        let finished_key = expand_label(&s_hs, "finished", &[], 32);
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&finished_key).unwrap();
        mac.update(&transcript.clone().finalize());
        let fin = handshake_msg(20, &mac.finalize().into_bytes());
        messages.push(fin);

        for (seq, m) in (0u64..).zip(messages) {
            let mut inner = m;
            inner.push(0x16);
            let len = (inner.len() + 16) as u16;
            let aad = [0x17, 3, 3, (len >> 8) as u8, len as u8];
            let mut nonce = iv.clone();
            for (n, b) in nonce[4..].iter_mut().zip(seq.to_be_bytes()) {
                *n ^= b;
            }
            let tag = aead
                .encrypt_in_place_detached(Nonce::from_slice(&nonce), &aad, &mut inner)
                .unwrap();
            let mut record = aad.to_vec();
            record.extend_from_slice(&inner);
            record.extend_from_slice(&tag);
            s.write_all(&record).await.unwrap();
        }
        // Wait for the client's Finished (an encrypted record) or for it to go away.
        while let Some((kind, _)) = read_record(&mut s).await {
            if kind == 0x17 {
                break;
            }
        }
        s
    }

    /// Runs a handshake against [`serve`] with `auth`; the client's result.
    async fn attempt(auth: Auth) -> Result<(), TlsError> {
        let cert = der("server.pem");
        let key = scalar(&certs().join("server.key"));
        attempt_with::<tls::NoClock>(auth, &cert, &key).await
    }

    /// The wall clock, for the validity period.
    struct SystemClock;

    impl tls::TlsClock for SystemClock {
        fn now() -> Option<u64> {
            let now = std::time::SystemTime::now();
            Some(now.duration_since(std::time::UNIX_EPOCH).ok()?.as_secs())
        }
    }

    /// A handshake against [`serve`] presenting `cert` signed with `key`, verified for
    /// "localhost" against the development CA with the clock `Clk`.
    async fn attempt_with<Clk: tls::TlsClock>(
        auth: Auth,
        cert: &[u8],
        key: &SigningKey,
    ) -> Result<(), TlsError> {
        let ca = der("ca.pem");
        let (a, b) = tokio::io::duplex(1 << 16);
        let mut records = Records::new();
        let provider = CaVerified::new(&ca, rand_core::OsRng).with_clock::<Clk>();
        let client = tls::connect(
            FromTokio::new(a),
            &mut records.rx,
            &mut records.tx,
            "localhost",
            provider,
        );
        let (r, _server) = tokio::time::timeout(WAIT, async {
            tokio::join!(client, serve(b, auth, cert, key))
        })
        .await
        .expect("handshake in time");
        r.map(|_| ())
    }

    /// The handwritten server is a correct TLS 1.3 server: with the genuine certificate and
    /// its key, the handshake succeeds; signed with another key it fails.
    #[tokio::test]
    async fn a_genuine_handshake_succeeds_and_a_wrong_key_fails() {
        let r = attempt(Auth::Genuine).await;
        assert!(r.is_ok(), "{r:?}");
        assert!(attempt(Auth::WrongKey).await.is_err());
    }

    /// A server that sends no certificate at all, or the genuine (public) certificate
    /// without proving it holds the key (no CertificateVerify), is not authenticated: the
    /// handshake must fail.
    #[tokio::test]
    async fn a_server_that_skips_authentication_is_refused() {
        for auth in [Auth::Nothing, Auth::CertificateOnly] {
            let r = attempt(auth).await;
            assert!(r.is_err(), "{auth:?}: handshake accepted");
        }
    }

    /// CertificateVerify without a Certificate before it: an error, not a panic.
    #[tokio::test]
    async fn a_certificate_verify_without_a_certificate_is_an_error() {
        let r = tokio::spawn(attempt(Auth::VerifyOnly)).await;
        let r = r.expect("the client panicked");
        assert!(r.is_err(), "handshake accepted");
    }

    /// A certificate made with openssl in `dir`: P-256, subject CN `cn`, the extensions
    /// `ext` (one per line), valid for `days` from now (negative: already expired), signed by
    /// the development CA or, with `ca = false`, by its own key. DER and key.
    fn forge(
        dir: &std::path::Path,
        cn: &str,
        ext: &str,
        days: i32,
        ca: bool,
    ) -> (Vec<u8>, SigningKey) {
        std::fs::write(
            dir.join("ext"),
            format!("basicConstraints=CA:FALSE\n{ext}\n"),
        )
        .unwrap();
        openssl(
            dir,
            &[
                "ecparam",
                "-name",
                "prime256v1",
                "-genkey",
                "-noout",
                "-out",
                "f.key",
            ],
        );
        let subj = format!("/CN={cn}");
        openssl(
            dir,
            &[
                "req", "-new", "-key", "f.key", "-subj", &subj, "-out", "f.csr",
            ],
        );
        let days = days.to_string();
        let (ca_pem, ca_key) = (certs().join("ca.pem"), certs().join("ca.key"));
        let mut args = vec![
            "x509", "-req", "-in", "f.csr", "-days", &days, "-extfile", "ext",
        ];
        if ca {
            args.extend_from_slice(&[
                "-CA",
                ca_pem.to_str().unwrap(),
                "-CAkey",
                ca_key.to_str().unwrap(),
                "-CAserial",
                "f.srl",
                "-CAcreateserial",
            ]);
        } else {
            args.extend_from_slice(&["-signkey", "f.key"]);
        }
        args.extend_from_slice(&["-out", "f.pem"]);
        openssl(dir, &args);
        let der = CertificateDer::from_pem_file(dir.join("f.pem"))
            .unwrap()
            .to_vec();
        (der, scalar(&dir.join("f.key")))
    }

    /// A self-signed certificate for the right name, not from the CA: refused.
    #[tokio::test]
    async fn a_self_signed_certificate_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = forge(
            dir.path(),
            "localhost",
            "subjectAltName=DNS:localhost",
            30,
            false,
        );
        let r = attempt_with::<tls::NoClock>(Auth::Genuine, &cert, &key).await;
        assert!(matches!(r, Err(TlsError::InvalidCertificate)), "{r:?}");
    }

    /// An expired certificate from the CA: refused with a clock; accepted with `NoClock`,
    /// which cannot tell (documented: a device without a calendar clock skips the dates).
    #[tokio::test]
    async fn an_expired_certificate_is_refused_only_with_a_clock() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = forge(
            dir.path(),
            "localhost",
            "subjectAltName=DNS:localhost",
            -1,
            true,
        );
        let r = attempt_with::<SystemClock>(Auth::Genuine, &cert, &key).await;
        assert!(matches!(r, Err(TlsError::InvalidCertificate)), "{r:?}");
        let r = attempt_with::<tls::NoClock>(Auth::Genuine, &cert, &key).await;
        assert!(r.is_ok(), "{r:?}");
        // The same certificate, still valid: accepted with the clock.
        let (cert, key) = forge(
            dir.path(),
            "localhost",
            "subjectAltName=DNS:localhost",
            30,
            true,
        );
        let r = attempt_with::<SystemClock>(Auth::Genuine, &cert, &key).await;
        assert!(r.is_ok(), "{r:?}");
    }

    /// Names: a certificate from the CA for another DNS name is refused; the common name is
    /// matched as well, even when the certificate has DNS names (embedded-tls, unlike
    /// RFC 6125 section 6.4.4), as the module documentation says.
    #[tokio::test]
    async fn names_are_matched_against_dns_names_and_the_common_name() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = forge(
            dir.path(),
            "other",
            "subjectAltName=DNS:other.example",
            30,
            true,
        );
        let r = attempt_with::<tls::NoClock>(Auth::Genuine, &cert, &key).await;
        assert!(matches!(r, Err(TlsError::InvalidCertificate)), "{r:?}");
        let (cert, key) = forge(
            dir.path(),
            "localhost",
            "subjectAltName=DNS:other.example",
            30,
            true,
        );
        let r = attempt_with::<tls::NoClock>(Auth::Genuine, &cert, &key).await;
        assert!(r.is_ok(), "{r:?}");
    }
}
