//! TLS 1.3 under the client, with [`embedded-tls`](embedded_tls) (feature `tls`).
//!
//! [`connect`] runs the TLS handshake over any `embedded-io-async` transport (an embassy-net
//! `TcpSocket`, a tokio stream through `embedded-io-adapters`, ...) and returns a [`Tls`]
//! stream, which is itself an `embedded-io-async` transport: pass it to
//! [`Client::connect`](crate::Client::connect) as any other.
//!
//! ```no_run
//! use roost_client::tls::{self, CaVerified};
//! # use embedded_io_adapters::tokio_1::FromTokio;
//! # use roost_client::{Client, Clock, ConnectOptions, Error, RamStore};
//! # async fn demo(clock: impl Clock, rng: rand_core::OsRng, opts: ConnectOptions<'_>)
//! # -> Result<(), Error> {
//! # let (mut tx, mut rx, mut session) = ([0u8; 512], [0u8; 512], [0u8; 1024]);
//! # let mut client = Client::new(clock, RamStore::new(&mut session), &mut tx, &mut rx);
//! # static CA: &[u8] = &[];
//! // The CA certificate in DER (`openssl x509 -in ca.pem -outform der -out ca.der`):
//! // static CA: &[u8] = include_bytes!("ca.der");
//! let mut rx_record = [0u8; tls::MAX_RECORD]; // 16,640 bytes: the largest TLS record
//! let mut tx_record = [0u8; 2_048];
//! let tcp = tokio::net::TcpStream::connect("broker.example.com:8883").await.unwrap();
//! let socket = FromTokio::new(tcp); // or an embassy-net TcpSocket, ...
//! let stream = tls::connect(socket, &mut rx_record, &mut tx_record, "broker.example.com",
//!                           CaVerified::new(CA, rng)).await?;
//! client.connect(stream, &opts).await?;
//! # Ok(())
//! # }
//! ```
//!
//! A TLS error converts into [`Error::Transport`](crate::Error::Transport) with `?`; match
//! on the [`TlsError`] itself to tell a refused certificate from a network failure.
//!
//! `CaVerified::new` uses the defaults (no validity check, certificate chains up to 2,048
//! bytes); [`CaVerified::with_clock`] and [`CaVerified::with_cert_capacity`] change them. The
//! RNG is taken by value: pass `&mut rng` to keep using one across connections (rand_core
//! implements `RngCore` and `CryptoRng` for `&mut R`). On a host, `rand_core::OsRng` needs
//! rand_core's `getrandom` feature in your own `Cargo.toml`:
//! `rand_core = { version = "0.6", features = ["getrandom"] }`.
//!
//! # What is verified
//!
//! [`CaVerified`] uses embedded-tls's `rustpki` verifier, held to a stricter chain rule:
//! * the server's certificate is signed by the CA given itself (ECDSA P-256 with SHA-256;
//!   more with embedded-tls's features `p384`, `ed25519` and `rsa`, the last one needs
//!   `alloc`). After its own certificate the server may send only copies of the CA
//!   certificate: a chain with an intermediate certificate is refused
//!   ([`TlsError::InvalidCertificate`]), even one the CA signed;
//! * the server's CertificateVerify signature over the handshake (proof of the private key),
//!   and that the server sent both messages: [`connect`] fails otherwise (embedded-tls alone
//!   accepts a handshake without them, see [`VerifiesServer`]);
//! * the server name given to [`connect`] against the leaf's DNS subject alternative names
//!   and its common name (the common name is matched even when the certificate has DNS
//!   names); IP address names are not matched, so connect by a DNS name;
//! * the validity period, only when the clock type `Clk` returns the time
//!   ([`NoClock`], the default, does not: a device without a calendar clock cannot check
//!   expiry).
//!
//! Why no intermediates: embedded-tls's chain walk lets any certificate of a chain sign the
//! next without checking that it may (basic constraints, key usage), so with an intermediate
//! allowed, a device's client certificate from the same CA could sign a server certificate
//! for any name. Issue the server certificate from the CA the devices trust directly.
//!
//! It does not check the leaf's key usage or extended key usage (so any certificate the CA
//! issued directly, also a client certificate, passes as a server certificate for the
//! names it carries), nor revocation. embedded-tls keeps the first 3 DNS names of a
//! certificate and names of at most 64 bytes; the common name is matched too. Treat the CA
//! given as the trust decision.
//!
//! # Limits
//!
//! * TLS 1.3 only, cipher suite TLS_AES_128_GCM_SHA256, key exchange secp256r1.
//! * The read record buffer must hold the largest record the server sends: 16,640 bytes
//!   ([`MAX_RECORD`]) unless the server honours a smaller maximum fragment length
//!   (`TlsConfig::with_max_fragment_length`; rustls-based servers such as Roost do not). The
//!   write record buffer can be smaller (at least [`TLS_RECORD_OVERHEAD`] plus the largest
//!   packet you want in one record).
//! * **Cancel safety**: embedded-tls 0.19 keeps a record header being read in the read
//!   future, so a read dropped in the middle of a record loses that header. The client
//!   drops a read only when a keepalive deadline comes while a record is arriving, or when
//!   the application drops a [`Client::poll`](crate::Client::poll) future; the next record
//!   then fails authentication, `poll` returns [`Error::Transport`](crate::Error::Transport)
//!   and the client is disconnected (never wrong data: records are authenticated). Reconnect
//!   as after any transport error; a persistent session loses nothing. Over TLS, prefer not
//!   to race `poll` against other futures.

use embedded_io_async::{Read, Write};
use embedded_tls::pki::CertVerifier;

pub use embedded_tls;
pub use embedded_tls::{
    Aes128GcmSha256, Certificate, CryptoProvider, NoClock, TLS_RECORD_OVERHEAD, TlsClock,
    TlsConfig, TlsConnection, TlsContext, TlsError, TlsVerifier,
};
/// The random number generator traits a [`CaVerified`] needs (rand_core 0.6): implement
/// `RngCore` and `CryptoRng` for the hardware RNG of your chip.
pub use rand_core::{self, CryptoRng, RngCore};

/// The largest TLS record (16 KiB of plaintext plus the most expansion TLS 1.3 allows):
/// the read record buffer size that works with every server.
pub const MAX_RECORD: usize = 16_640;

/// A TLS 1.3 stream over transport `S`, as [`connect`] returns it.
pub type Tls<'a, S> = TlsConnection<'a, S, Aes128GcmSha256>;

/// A crypto provider for embedded-tls that verifies the server's certificate chain against
/// one CA certificate (DER) and takes its randomness from `R`.
///
/// `Clk` supplies the time for the validity check ([`NoClock`] skips it); `CERT` is the
/// largest server certificate chain in bytes the handshake keeps (a P-256 leaf is about
/// 500-700 bytes).
pub struct CaVerified<'a, R, Clk: TlsClock = NoClock, const CERT: usize = 2048> {
    rng: R,
    verifier: SignedByCa<'a, Clk, CERT>,
}

/// embedded-tls's verifier, held to chains of the server's certificate signed by the CA
/// itself: the leaf, then nothing but copies of the CA certificate. embedded-tls treats
/// every certificate of a chain as a signer without checking that it may sign (basic
/// constraints, key usage), so an intermediate would let any certificate the CA issued, a
/// device's client certificate too, sign a server certificate for any name.
///
/// It also keeps track of what the handshake proved: embedded-tls 0.19 accepts a server's
/// Finished whether or not Certificate and CertificateVerify came before it, so a server
/// that sends neither, or a copy of the genuine (public) certificate without proving it holds
/// the key, would pass. [`connect`] checks [`VerifiesServer::server_authenticated`] after
/// the handshake.
struct SignedByCa<'a, Clk: TlsClock, const CERT: usize> {
    ca: &'a [u8],
    inner: CertVerifier<'a, Aes128GcmSha256, Clk, CERT>,
    /// A Certificate message verified (chain, name, dates).
    certified: bool,
    /// A CertificateVerify verified against that certificate's key after it.
    proven: bool,
}

impl<Clk: TlsClock, const CERT: usize> TlsVerifier<Aes128GcmSha256> for SignedByCa<'_, Clk, CERT> {
    fn set_hostname_verification(&mut self, hostname: &str) -> Result<(), TlsError> {
        self.inner.set_hostname_verification(hostname)
    }

    fn verify_certificate(
        &mut self,
        transcript: &<Aes128GcmSha256 as embedded_tls::TlsCipherSuite>::Hash,
        cert: embedded_tls::CertificateRef,
    ) -> Result<(), TlsError> {
        // A new Certificate voids whatever an earlier one proved.
        self.certified = false;
        self.proven = false;
        let mut entries = cert.entries.iter();
        if !matches!(
            entries.next(),
            Some(embedded_tls::CertificateEntryRef::X509(_))
        ) {
            return Err(TlsError::InvalidCertificate);
        }
        let only_ca = entries
            .all(|e| matches!(e, embedded_tls::CertificateEntryRef::X509(der) if *der == self.ca));
        if !only_ca {
            return Err(TlsError::InvalidCertificate);
        }
        self.inner.verify_certificate(transcript, cert)?;
        self.certified = true;
        Ok(())
    }

    fn verify_signature(
        &mut self,
        verify: embedded_tls::CertificateVerifyRef,
    ) -> Result<(), TlsError> {
        // Only once, right after a verified certificate: embedded-tls panics on a
        // CertificateVerify without a Certificate before it (or a second one).
        if !self.certified || self.proven {
            return Err(TlsError::InvalidHandshake);
        }
        self.inner.verify_signature(verify)?;
        self.proven = true;
        Ok(())
    }
}

/// A [`CryptoProvider`] that can tell, after the handshake, whether the server authenticated
/// itself: [`connect`] fails unless it did. [`CaVerified`] is one.
pub trait VerifiesServer: CryptoProvider<CipherSuite = Aes128GcmSha256> {
    /// `true` when the server sent a certificate that verified and then proved, with a
    /// CertificateVerify that verified, that it holds the certificate's private key.
    fn server_authenticated(&self) -> bool;
}

impl<R, Clk: TlsClock, const CERT: usize> VerifiesServer for CaVerified<'_, R, Clk, CERT>
where
    R: RngCore + CryptoRng,
{
    fn server_authenticated(&self) -> bool {
        self.verifier.certified && self.verifier.proven
    }
}

impl<'a, R> CaVerified<'a, R>
where
    R: RngCore + CryptoRng,
{
    /// Trusts `ca_der` (an X.509 certificate in DER) for the server's certificate, with the
    /// defaults: no validity check ([`NoClock`]) and server certificate chains of up to
    /// 2,048 bytes. [`with_clock`](CaVerified::with_clock) and
    /// [`with_cert_capacity`](CaVerified::with_cert_capacity) change them.
    ///
    /// `rng` is taken by value; pass `&mut rng` to keep it for the next connection.
    pub fn new(ca_der: &'a [u8], rng: R) -> Self {
        Self::build(ca_der, rng)
    }
}

impl<'a, R, Clk: TlsClock, const CERT: usize> CaVerified<'a, R, Clk, CERT>
where
    R: RngCore + CryptoRng,
{
    fn build(ca_der: &'a [u8], rng: R) -> Self {
        CaVerified {
            rng,
            verifier: SignedByCa {
                ca: ca_der,
                inner: CertVerifier::new(Certificate::X509(ca_der)),
                certified: false,
                proven: false,
            },
        }
    }

    /// The same provider checking the validity period with `Clk2`, a [`TlsClock`] that
    /// returns the current Unix time in seconds:
    /// `CaVerified::new(CA, rng).with_clock::<MyClock>()`.
    pub fn with_clock<Clk2: TlsClock>(self) -> CaVerified<'a, R, Clk2, CERT> {
        CaVerified::build(self.verifier.ca, self.rng)
    }

    /// The same provider keeping server certificate chains of up to `N` bytes (the default,
    /// 2,048, holds a P-256 leaf of 500-700 bytes and a copy of the CA):
    /// `CaVerified::new(CA, rng).with_cert_capacity::<4096>()`.
    pub fn with_cert_capacity<const N: usize>(self) -> CaVerified<'a, R, Clk, N> {
        CaVerified::build(self.verifier.ca, self.rng)
    }
}

impl<R, Clk: TlsClock, const CERT: usize> CryptoProvider for CaVerified<'_, R, Clk, CERT>
where
    R: RngCore + CryptoRng,
{
    type CipherSuite = Aes128GcmSha256;
    type Signature = &'static [u8];

    fn rng(&mut self) -> impl embedded_tls::CryptoRngCore {
        &mut self.rng
    }

    fn verifier(
        &mut self,
    ) -> Result<&mut impl TlsVerifier<Self::CipherSuite>, embedded_tls::TlsError> {
        Ok(&mut self.verifier)
    }
}

/// Runs a TLS 1.3 handshake over `socket` with `server_name` (sent as SNI and matched
/// against the certificate), verifying the server with `provider` (usually [`CaVerified`]).
/// A handshake in which the server did not present a certificate that verified and prove it
/// holds its key fails with [`TlsError::InvalidCertificate`] (embedded-tls alone would
/// accept it: use this function rather than `TlsConnection::open`).
///
/// `read_record` holds one received TLS record ([`MAX_RECORD`] bytes is always enough),
/// `write_record` one record to send. On error, close the socket and start again.
pub async fn connect<'a, S, P>(
    socket: S,
    read_record: &'a mut [u8],
    write_record: &'a mut [u8],
    server_name: &str,
    mut provider: P,
) -> Result<Tls<'a, S>, TlsError>
where
    S: Read + Write + 'a,
    P: VerifiesServer,
{
    let config = TlsConfig::new().with_server_name(server_name);
    let mut tls = TlsConnection::new(socket, read_record, write_record);
    tls.open(TlsContext::new(&config, &mut provider)).await?;
    if !provider.server_authenticated() {
        return Err(TlsError::InvalidCertificate);
    }
    Ok(tls)
}
