//! The transport to the remote broker: TCP, or TLS verified against the bridge's CA file.

use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio::net::TcpStream;

use crate::config::{BridgeAddress, BridgeTls};
use crate::net::tls::{TlsError, load_certs, load_key};

use super::link::Stream;

/// Time allowed for the TCP connect and the TLS handshake.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Builds the TLS client configuration of a bridge.
pub(crate) fn client_config(tls: &BridgeTls) -> Result<Arc<ClientConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    for ca in load_certs(&tls.ca_file)? {
        roots.add(ca).map_err(|source| TlsError::BadCa {
            file: tls.ca_file.clone(),
            source,
        })?;
    }
    let roots = Arc::new(roots);
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|source| TlsError::BadCertOrKey {
            cert_file: tls.ca_file.clone(),
            key_file: tls.ca_file.clone(),
            source,
        })?;
    let builder = if tls.insecure {
        let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(roots, provider)
            .build()
            .map_err(|source| TlsError::BadVerifier {
                file: tls.ca_file.clone(),
                source,
            })?;
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyName(inner)))
    } else {
        builder.with_root_certificates(roots)
    };
    let config = match (&tls.cert_file, &tls.key_file) {
        (Some(cert_file), Some(key_file)) => {
            let certs = load_certs(cert_file)?;
            let key = load_key(key_file)?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|source| TlsError::BadCertOrKey {
                    cert_file: cert_file.clone(),
                    key_file: key_file.clone(),
                    source,
                })?
        }
        _ => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// Connects to `address`, with TLS when `tls` is given.
pub(crate) async fn connect(
    address: &BridgeAddress,
    tls: Option<&Arc<ClientConfig>>,
) -> Result<Box<dyn Stream>, String> {
    let work = async {
        let tcp = TcpStream::connect((address.host.as_str(), address.port))
            .await
            .map_err(|e| format!("connect to {address}: {e}"))?;
        let _ = tcp.set_nodelay(true);
        let Some(tls) = tls else {
            return Ok(Box::new(tcp) as Box<dyn Stream>);
        };
        let host = address.host.trim_start_matches('[').trim_end_matches(']');
        let name = ServerName::try_from(host.to_string())
            .map_err(|e| format!("{host} is not a valid TLS server name: {e}"))?;
        let stream = tokio_rustls::TlsConnector::from(Arc::clone(tls))
            .connect(name, tcp)
            .await
            .map_err(|e| {
                // A plain listener answers a ClientHello with garbage or a reset.
                let plain = matches!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::UnexpectedEof
                ) || e.to_string().contains("InvalidContentType")
                    || e.to_string().contains("corrupt message");
                let hint = if plain {
                    " (is the remote port a TLS listener?)"
                } else {
                    ""
                };
                format!("TLS handshake with {address}: {e}{hint}")
            })?;
        Ok(Box::new(stream) as Box<dyn Stream>)
    };
    tokio::time::timeout(CONNECT_TIMEOUT, work)
        .await
        .unwrap_or_else(|_| Err(format!("connect to {address}: timed out")))
}

/// `bridge_insecure`: the certificate chain is verified as usual, the host name is not.
#[derive(Debug)]
struct AnyName(Arc<rustls::client::WebPkiServerVerifier>);

impl ServerCertVerifier for AnyName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}
