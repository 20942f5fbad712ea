//! TLS for listeners: a rustls [`ServerConfig`](rustls::ServerConfig) built from PEM files,
//! and the client certificate's common name for `use_identity_as_username`.
//!
//! The crypto provider is always *ring*, chosen explicitly, so no process-wide default
//! provider has to be installed and aws-lc is never needed. TLS 1.2 and 1.3 are offered; no
//! ALPN protocol is required (MQTT clients rarely send one).

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::version::{TLS12, TLS13};
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// TLS settings of one listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TlsSettings {
    /// PEM file with the server certificate, optionally followed by its intermediate
    /// certificates (leaf first).
    pub cert_file: PathBuf,
    /// PEM file with the server's private key (PKCS#8, PKCS#1/RSA or SEC1/EC).
    pub key_file: PathBuf,
    /// PEM file with the CA certificate(s) that client certificates are verified against.
    /// Without it, clients are not asked for a certificate.
    pub ca_file: Option<PathBuf>,
    /// Refuse clients that do not present a certificate signed by a CA of `ca_file`.
    /// Without it, a client may connect without a certificate, but a certificate it does
    /// present must still verify.
    pub require_certificate: bool,
}

/// Why a TLS configuration could not be built. Every variant that concerns a file names it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// The file could not be read (missing, unreadable, ...).
    #[error("cannot read {}: {source}", file.display())]
    Read {
        /// The file.
        file: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The file is not valid PEM (broken section markers, bad base64, ...).
    #[error("{}: not a valid PEM file: {source}", file.display())]
    BadPem {
        /// The file.
        file: PathBuf,
        /// What the PEM parser reported.
        #[source]
        source: pem::Error,
    },
    /// The file holds no `CERTIFICATE` section.
    #[error(
        "{}: no certificate found (expected a PEM '-----BEGIN CERTIFICATE-----' section)",
        file.display()
    )]
    NoCertificate {
        /// The file.
        file: PathBuf,
    },
    /// The file holds no private key section.
    #[error(
        "{}: no private key found (expected a PEM 'BEGIN PRIVATE KEY', \
         'BEGIN EC PRIVATE KEY' or 'BEGIN RSA PRIVATE KEY' section)",
        file.display()
    )]
    NoPrivateKey {
        /// The file.
        file: PathBuf,
    },
    /// The private key does not belong to the certificate.
    #[error(
        "{}: private key does not match the certificate in {}",
        key_file.display(),
        cert_file.display()
    )]
    KeyMismatch {
        /// The certificate file.
        cert_file: PathBuf,
        /// The key file.
        key_file: PathBuf,
    },
    /// rustls refused the certificate or key (unsupported key type, malformed DER, ...).
    #[error(
        "certificate {} / key {} not usable: {source}",
        cert_file.display(),
        key_file.display()
    )]
    BadCertOrKey {
        /// The certificate file.
        cert_file: PathBuf,
        /// The key file.
        key_file: PathBuf,
        /// The rustls error.
        #[source]
        source: rustls::Error,
    },
    /// A CA certificate could not be used as a trust anchor.
    #[error("{}: bad CA certificate: {source}", file.display())]
    BadCa {
        /// The CA file.
        file: PathBuf,
        /// What rustls reported.
        #[source]
        source: rustls::Error,
    },
    /// No client certificate verifier could be built from the CA file.
    #[error("{}: bad CA certificate: {source}", file.display())]
    BadVerifier {
        /// The CA file.
        file: PathBuf,
        /// What rustls reported.
        #[source]
        source: rustls::server::VerifierBuilderError,
    },
    /// `require_certificate` is set, but there is no `ca_file` to verify certificates with.
    #[error("require_certificate is set but no ca_file is given to verify client certificates")]
    RequireCertificateWithoutCa,
    /// rustls rejected the configuration itself (should not happen with the ring provider).
    #[error("TLS configuration rejected: {0}")]
    Config(#[source] rustls::Error),
}

/// Builds the rustls server configuration of a listener.
///
/// Uses the ring provider, TLS 1.2 and 1.3, no required ALPN. With `ca_file`, client
/// certificates are verified against it (and optional unless `require_certificate`);
/// `require_certificate` without `ca_file` is an error. The files are read once, here.
pub(crate) fn server_config(s: &TlsSettings) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());

    let certs = load_certs(&s.cert_file)?;
    let key = load_key(&s.key_file)?;

    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&TLS12, &TLS13])
        .map_err(TlsError::Config)?;

    let builder = match &s.ca_file {
        Some(ca_file) => builder.with_client_cert_verifier(client_verifier(
            ca_file,
            s.require_certificate,
            provider,
        )?),
        None if s.require_certificate => return Err(TlsError::RequireCertificateWithoutCa),
        None => builder.with_no_client_auth(),
    };

    let config = builder.with_single_cert(certs, key).map_err(|e| match e {
        rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch) => {
            TlsError::KeyMismatch {
                cert_file: s.cert_file.clone(),
                key_file: s.key_file.clone(),
            }
        }
        other => TlsError::BadCertOrKey {
            cert_file: s.cert_file.clone(),
            key_file: s.key_file.clone(),
            source: other,
        },
    })?;
    Ok(Arc::new(config))
}

/// The common name (CN) of the client certificate of an established server connection.
///
/// `None` when the client presented no certificate (a listener without `ca_file` never asks
/// for one), when the subject has no CN, or when the CN is not a string. A certificate is only
/// present after it was verified against the listener's CA, so the CN can be trusted as an
/// identity. With several CNs, the first one is returned (as mosquitto does).
pub(crate) fn peer_common_name(conn: &rustls::ServerConnection) -> Option<String> {
    let leaf = conn.peer_certificates()?.first()?;
    common_name(leaf.as_ref())
}

/// The first CN of the subject of a DER certificate.
fn common_name(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let cn = cert.subject().iter_common_name().next()?;
    cn.as_str().ok().map(str::to_owned)
}

fn client_verifier(
    ca_file: &Path,
    require_certificate: bool,
    provider: Arc<CryptoProvider>,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, TlsError> {
    let cas = load_certs(ca_file)?;
    let mut roots = RootCertStore::empty();
    for ca in cas {
        roots.add(ca).map_err(|source| TlsError::BadCa {
            file: ca_file.to_path_buf(),
            source,
        })?;
    }
    let mut builder = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
    if !require_certificate {
        builder = builder.allow_unauthenticated();
    }
    builder.build().map_err(|source| TlsError::BadVerifier {
        file: ca_file.to_path_buf(),
        source,
    })
}

/// Every certificate of a PEM file, in file order; at least one.
pub(crate) fn load_certs(file: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(file)
        .map_err(|e| pem_error(file, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(file, e))?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            file: file.to_path_buf(),
        });
    }
    Ok(certs)
}

/// The first private key of a PEM file.
pub(crate) fn load_key(file: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(file).map_err(|e| match e {
        pem::Error::NoItemsFound => TlsError::NoPrivateKey {
            file: file.to_path_buf(),
        },
        other => pem_error(file, other),
    })
}

fn pem_error(file: &Path, e: pem::Error) -> TlsError {
    match e {
        pem::Error::Io(source) => TlsError::Read {
            file: file.to_path_buf(),
            source,
        },
        source => TlsError::BadPem {
            file: file.to_path_buf(),
            source,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::ServerName;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_rustls::{TlsAcceptor, TlsConnector};

    /// `certs/` of the Roost repository (also from a scratch crate that links this file).
    fn certs_dir() -> PathBuf {
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
        let candidates = [manifest.join("certs"), manifest.join("../../main/certs")];
        for dir in &candidates {
            if dir.join("ca.pem").is_file() {
                return dir.clone();
            }
        }
        panic!("no certs/ca.pem found in {candidates:?}");
    }

    fn cert(name: &str) -> PathBuf {
        certs_dir().join(name)
    }

    fn settings(ca: bool, require: bool) -> TlsSettings {
        TlsSettings {
            cert_file: cert("server.pem"),
            key_file: cert("server.key"),
            ca_file: ca.then(|| cert("ca.pem")),
            require_certificate: require,
        }
    }

    fn scratch_file(name: &str, contents: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("roost-tls-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        let path = dir.join(name);
        std::fs::write(&path, contents).expect("write temp file");
        path
    }

    /// A client config trusting the dev CA, optionally presenting `client` (`"client"` or
    /// `"untrusted-client"`), optionally limited to TLS 1.2.
    fn client_config(client: Option<&str>, tls12_only: bool) -> Arc<rustls::ClientConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = RootCertStore::empty();
        for ca in load_certs(&cert("ca.pem")).expect("ca.pem") {
            roots.add(ca).expect("add root");
        }
        let versions: &[&rustls::SupportedProtocolVersion] = if tls12_only {
            &[&TLS12]
        } else {
            &[&TLS12, &TLS13]
        };
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .expect("versions")
            .with_root_certificates(roots);
        let config = match client {
            Some(name) => builder
                .with_client_auth_cert(
                    load_certs(&cert(&format!("{name}.pem"))).expect("client cert"),
                    load_key(&cert(&format!("{name}.key"))).expect("client key"),
                )
                .expect("client auth"),
            None => builder.with_no_client_auth(),
        };
        Arc::new(config)
    }

    /// Outcome of one in-memory handshake plus a one-byte round trip.
    struct Outcome {
        server_ok: bool,
        client_ok: bool,
        cn: Option<String>,
    }

    async fn handshake(server: Arc<ServerConfig>, client: Arc<rustls::ClientConfig>) -> Outcome {
        let (c, s) = tokio::io::duplex(64 * 1024);
        let server_side = async move {
            let mut tls = TlsAcceptor::from(server).accept(s).await.ok()?;
            let cn = peer_common_name(tls.get_ref().1);
            let mut b = [0u8; 1];
            tls.read_exact(&mut b).await.ok()?;
            tls.write_all(&b).await.ok()?;
            tls.flush().await.ok()?;
            Some(cn)
        };
        let client_side = async move {
            let name = ServerName::try_from("localhost").expect("server name");
            let mut tls = TlsConnector::from(client).connect(name, c).await.ok()?;
            tls.write_all(b"x").await.ok()?;
            tls.flush().await.ok()?;
            let mut b = [0u8; 1];
            tls.read_exact(&mut b).await.ok()?;
            Some(b[0] == b'x')
        };
        let (srv, cli) = tokio::time::timeout(Duration::from_secs(10), async {
            tokio::join!(server_side, client_side)
        })
        .await
        .expect("handshake timed out");
        Outcome {
            server_ok: srv.is_some(),
            client_ok: cli == Some(true),
            cn: srv.flatten(),
        }
    }

    #[test]
    fn builds_from_dev_certs() {
        server_config(&settings(false, false)).expect("no client auth");
        server_config(&settings(true, false)).expect("optional client auth");
        server_config(&settings(true, true)).expect("required client auth");
    }

    #[test]
    fn require_certificate_needs_ca() {
        let err = server_config(&settings(false, true)).unwrap_err();
        assert!(
            matches!(err, TlsError::RequireCertificateWithoutCa),
            "{err}"
        );
        assert!(err.to_string().contains("ca_file"), "{err}");
    }

    #[test]
    fn missing_cert_file_is_named() {
        let mut s = settings(false, false);
        s.cert_file = cert("does-not-exist.pem");
        let err = server_config(&s).unwrap_err();
        assert!(matches!(err, TlsError::Read { .. }), "{err}");
        assert!(err.to_string().contains("does-not-exist.pem"), "{err}");
    }

    #[test]
    fn missing_ca_file_is_named() {
        let mut s = settings(true, true);
        s.ca_file = Some(cert("no-such-ca.pem"));
        let err = server_config(&s).unwrap_err();
        assert!(err.to_string().contains("no-such-ca.pem"), "{err}");
    }

    #[test]
    fn key_file_without_key_is_named() {
        // A certificate where the key should be.
        let mut s = settings(false, false);
        s.key_file = cert("ca.pem");
        let err = server_config(&s).unwrap_err();
        assert!(matches!(err, TlsError::NoPrivateKey { .. }), "{err}");
        let msg = err.to_string();
        assert!(
            msg.contains("ca.pem") && msg.contains("no private key"),
            "{msg}"
        );
    }

    #[test]
    fn cert_file_without_cert_is_named() {
        let mut s = settings(false, false);
        s.cert_file = cert("server.key");
        let err = server_config(&s).unwrap_err();
        assert!(matches!(err, TlsError::NoCertificate { .. }), "{err}");
        assert!(err.to_string().contains("server.key"), "{err}");
    }

    #[test]
    fn garbage_pem_is_named() {
        let garbage = scratch_file(
            "garbage.pem",
            "-----BEGIN CERTIFICATE-----\n!!!! not base64 !!!!\n-----END CERTIFICATE-----\n",
        );
        let mut s = settings(false, false);
        s.cert_file = garbage.clone();
        let err = server_config(&s).unwrap_err();
        assert!(matches!(err, TlsError::BadPem { .. }), "{err}");
        assert!(err.to_string().contains("garbage.pem"), "{err}");

        // Plain text without any PEM section: no certificate.
        let text = scratch_file("text.pem", "hello, this is not a certificate\n");
        s.cert_file = text;
        let err = server_config(&s).unwrap_err();
        assert!(matches!(err, TlsError::NoCertificate { .. }), "{err}");
        assert!(err.to_string().contains("text.pem"), "{err}");

        // Garbage as a CA file.
        let mut s = settings(true, false);
        s.ca_file = Some(garbage.clone());
        let err = server_config(&s).unwrap_err();
        assert!(err.to_string().contains("garbage.pem"), "{err}");

        if let Some(dir) = garbage.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }

    #[test]
    fn key_of_another_cert_is_a_mismatch() {
        let mut s = settings(false, false);
        s.key_file = cert("client.key");
        let err = server_config(&s).unwrap_err();
        assert!(matches!(err, TlsError::KeyMismatch { .. }), "{err}");
        let msg = err.to_string();
        assert!(
            msg.contains("client.key") && msg.contains("server.pem"),
            "{msg}"
        );
    }

    #[test]
    fn leaf_cert_as_ca_is_refused_or_useless() {
        // A CA file whose "CA" is a plain certificate: rustls accepts it as a trust anchor,
        // but the real client certificate then does not verify.
        let mut s = settings(true, true);
        s.ca_file = Some(cert("server.pem"));
        if let Ok(config) = server_config(&s) {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            let out = rt.block_on(handshake(config, client_config(Some("client"), false)));
            assert!(!out.server_ok);
        }
    }

    #[tokio::test]
    async fn handshake_without_client_auth() {
        let config = server_config(&settings(false, false)).expect("config");
        let out = handshake(config.clone(), client_config(None, false)).await;
        assert!(out.server_ok && out.client_ok);
        assert_eq!(out.cn, None);
        // TLS 1.2 is offered too.
        let out = handshake(config.clone(), client_config(None, true)).await;
        assert!(out.server_ok && out.client_ok);
        // A client certificate is not asked for, so none is seen even if the client has one.
        let out = handshake(config, client_config(Some("client"), false)).await;
        assert!(out.server_ok && out.client_ok);
        assert_eq!(out.cn, None);
    }

    #[tokio::test]
    async fn optional_client_cert() {
        let config = server_config(&settings(true, false)).expect("config");
        let out = handshake(config.clone(), client_config(None, false)).await;
        assert!(out.server_ok && out.client_ok);
        assert_eq!(out.cn, None);

        let out = handshake(config.clone(), client_config(Some("client"), false)).await;
        assert!(out.server_ok && out.client_ok);
        assert_eq!(out.cn.as_deref(), Some("device-1"));

        // A certificate that is presented must verify, even when optional.
        let out = handshake(config, client_config(Some("untrusted-client"), false)).await;
        assert!(!out.server_ok && !out.client_ok);
    }

    #[tokio::test]
    async fn required_client_cert() {
        let config = server_config(&settings(true, true)).expect("config");

        let out = handshake(config.clone(), client_config(Some("client"), false)).await;
        assert!(out.server_ok && out.client_ok);
        assert_eq!(out.cn.as_deref(), Some("device-1"));

        let out = handshake(config.clone(), client_config(Some("client"), true)).await;
        assert!(out.server_ok && out.client_ok, "TLS 1.2 with client cert");
        assert_eq!(out.cn.as_deref(), Some("device-1"));

        let out = handshake(config.clone(), client_config(None, false)).await;
        assert!(
            !out.server_ok && !out.client_ok,
            "client without certificate"
        );
        let out = handshake(config.clone(), client_config(None, true)).await;
        assert!(
            !out.server_ok && !out.client_ok,
            "TLS 1.2 client without cert"
        );

        let out = handshake(config, client_config(Some("untrusted-client"), false)).await;
        assert!(
            !out.server_ok && !out.client_ok,
            "untrusted client certificate"
        );
    }

    #[test]
    fn common_name_of_dev_certs() {
        let cn = |f: &str| common_name(load_certs(&cert(f)).expect("cert")[0].as_ref());
        assert_eq!(cn("client.pem").as_deref(), Some("device-1"));
        assert_eq!(cn("server.pem").as_deref(), Some("localhost"));
        assert_eq!(common_name(b"\x30\x03garbage"), None);
        assert_eq!(common_name(b""), None);
    }
}
