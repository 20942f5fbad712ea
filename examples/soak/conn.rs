//! One MQTT connection of a soak client: a TCP stream, a read buffer and a write buffer.
//!
//! Packets are queued into the write buffer and sent by [`Conn::flush`]; [`Conn::recv`] is
//! cancel-safe, so it can sit in a `select!` beside timers. Every wait is bounded.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

use super::wire::{self, AckKind, ConnectSpec, Incoming, Publish, Version};

/// Bound on a TCP connect plus CONNACK, on a SUBACK, and on one flush.
pub const IO_WAIT: Duration = Duration::from_secs(15);

/// Why a connection ended or could not be made.
#[derive(Debug)]
pub enum ConnError {
    /// The socket failed or the broker closed it.
    Io(io::Error),
    /// The broker did not answer in time.
    Timeout(&'static str),
    /// The broker sent something the codec cannot read.
    Wire(wire::WireError),
    /// The broker refused the CONNECT or SUBSCRIBE, or sent DISCONNECT.
    Refused(String),
}

impl std::fmt::Display for ConnError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnError::Io(e) => write!(f, "connection lost: {e}"),
            ConnError::Timeout(what) => write!(f, "no {what} in time"),
            ConnError::Wire(e) => write!(f, "{e}"),
            ConnError::Refused(why) => write!(f, "{why}"),
        }
    }
}

impl ConnError {
    /// True for errors a broker restart explains (the socket closed or could not connect).
    pub fn is_io(&self) -> bool {
        matches!(self, ConnError::Io(_))
    }
}

/// An open MQTT connection.
pub struct Conn {
    stream: TcpStream,
    version: Version,
    rbuf: BytesMut,
    wbuf: BytesMut,
}

impl Conn {
    /// Connects, sends CONNECT and waits for CONNACK; returns the connection and the
    /// Session Present flag. A CONNACK with a non-zero code is an error.
    pub async fn open(
        addr: SocketAddr,
        version: Version,
        spec: &ConnectSpec,
    ) -> Result<(Conn, bool), ConnError> {
        let stream = timeout(IO_WAIT, TcpStream::connect(addr))
            .await
            .map_err(|_| ConnError::Timeout("TCP connect"))?
            .map_err(ConnError::Io)?;
        stream.set_nodelay(true).map_err(ConnError::Io)?;
        let mut conn = Conn {
            stream,
            version,
            rbuf: BytesMut::with_capacity(16 << 10),
            wbuf: BytesMut::new(),
        };
        wire::connect(version, spec, &mut conn.wbuf);
        conn.flush().await?;
        match timeout(IO_WAIT, conn.recv()).await {
            Err(_) => Err(ConnError::Timeout("CONNACK")),
            Ok(Err(e)) => Err(e),
            Ok(Ok(Incoming::ConnAck {
                session_present,
                code: 0,
            })) => Ok((conn, session_present)),
            Ok(Ok(Incoming::ConnAck { code, .. })) => Err(ConnError::Refused(format!(
                "CONNACK 0x{code:02x} for {}",
                spec.client_id
            ))),
            Ok(Ok(other)) => Err(ConnError::Refused(format!(
                "{other:?} before CONNACK for {}",
                spec.client_id
            ))),
        }
    }

    /// Queues a PUBLISH.
    pub fn queue_publish(&mut self, p: &Publish) {
        wire::publish(self.version, p, &mut self.wbuf);
    }

    /// Queues an acknowledgement.
    pub fn queue_ack(&mut self, kind: AckKind, packet_id: u16) {
        wire::ack(kind, packet_id, &mut self.wbuf);
    }

    /// Queues a PINGREQ.
    pub fn queue_ping(&mut self) {
        wire::pingreq(&mut self.wbuf);
    }

    /// Writes everything queued (bounded by [`IO_WAIT`]).
    pub async fn flush(&mut self) -> Result<(), ConnError> {
        if self.wbuf.is_empty() {
            return Ok(());
        }
        let res = timeout(IO_WAIT, self.stream.write_all(&self.wbuf)).await;
        self.wbuf.clear();
        match res {
            Err(_) => Err(ConnError::Timeout("write progress")),
            Ok(r) => r.map_err(ConnError::Io),
        }
    }

    /// The next packet (cancel-safe). A DISCONNECT from the broker is returned as a packet.
    pub async fn recv(&mut self) -> Result<Incoming, ConnError> {
        loop {
            if let Some(p) = wire::decode(self.version, &mut self.rbuf).map_err(ConnError::Wire)? {
                return Ok(p);
            }
            self.rbuf.reserve(16 << 10);
            let n = self
                .stream
                .read_buf(&mut self.rbuf)
                .await
                .map_err(ConnError::Io)?;
            if n == 0 {
                return Err(ConnError::Io(io::ErrorKind::UnexpectedEof.into()));
            }
        }
    }

    /// Subscribes and waits for the SUBACK; returns the granted codes and the packets that
    /// arrived before it, for the caller to handle.
    pub async fn subscribe(
        &mut self,
        filters: &[(String, u8)],
    ) -> Result<(Vec<u8>, Vec<Incoming>), ConnError> {
        wire::subscribe(self.version, 1, filters, &mut self.wbuf);
        self.flush().await?;
        let deadline = tokio::time::Instant::now() + IO_WAIT;
        let mut early = Vec::new();
        loop {
            match tokio::time::timeout_at(deadline, self.recv()).await {
                Err(_) => return Err(ConnError::Timeout("SUBACK")),
                Ok(Err(e)) => return Err(e),
                Ok(Ok(Incoming::SubAck { codes, .. })) => return Ok((codes, early)),
                Ok(Ok(other)) => early.push(other),
            }
        }
    }

    /// Sends DISCONNECT and closes the socket (best effort).
    pub async fn close(mut self) {
        wire::disconnect(&mut self.wbuf);
        let _ = self.flush().await;
        let _ = timeout(IO_WAIT, self.stream.shutdown()).await;
    }
}
