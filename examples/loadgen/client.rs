//! A lean MQTT client connection over a raw `TcpStream`, built on Roost's codec.
//!
//! Writes are batched: callers queue any number of packets into one buffer and flush them
//! with a single `write_all`. Reads go into a large buffer and every complete packet in it is
//! decoded. Incoming PUBLISH packets take a zero-allocation path that reads only the fields
//! the load generator needs (QoS, packet id, the 20-byte stamp at the start of the payload);
//! everything else goes through [`roost::codec::Decoder`].

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use roost::codec::{
    self, AckKind, Connect, Decoder, Packet, PubAckLike, PublishProperties, PublishView, QoS,
    Version,
};
use roost_wire::{FixedHeader, Reader};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Largest packet the load generator accepts from a broker.
const MAX_PACKET: usize = 16 << 20;
/// How much free space is made available before each read.
const READ_CHUNK: usize = 64 << 10;

/// The stamp every load-generator payload starts with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// Send time in nanoseconds since the run's base instant.
    pub sent_ns: u64,
    /// Publisher index.
    pub publisher: u32,
    /// Sequence number within that publisher, from 0.
    pub seq: u64,
}

impl Stamp {
    /// Encoded size of a stamp at the start of a payload.
    pub const LEN: usize = 20;

    /// Writes the stamp into the first [`Stamp::LEN`] bytes of `out`.
    pub fn write(&self, out: &mut [u8]) {
        out[0..8].copy_from_slice(&self.sent_ns.to_be_bytes());
        out[8..12].copy_from_slice(&self.publisher.to_be_bytes());
        out[12..20].copy_from_slice(&self.seq.to_be_bytes());
    }

    /// Reads a stamp from the start of a payload, if it is long enough.
    pub fn read(payload: &[u8]) -> Option<Stamp> {
        let b = payload.get(..Stamp::LEN)?;
        let mut ts = [0u8; 8];
        let mut id = [0u8; 4];
        let mut seq = [0u8; 8];
        ts.copy_from_slice(&b[0..8]);
        id.copy_from_slice(&b[8..12]);
        seq.copy_from_slice(&b[12..20]);
        Some(Stamp {
            sent_ns: u64::from_be_bytes(ts),
            publisher: u32::from_be_bytes(id),
            seq: u64::from_be_bytes(seq),
        })
    }
}

/// What the fast path extracts from an incoming PUBLISH.
#[derive(Debug, Clone, Copy)]
pub struct PublishInfo {
    /// QoS of the delivery.
    pub qos: QoS,
    /// Packet id (0 for QoS 0).
    pub packet_id: u16,
    /// DUP flag.
    pub dup: bool,
    /// The payload stamp, when the payload is long enough to hold one.
    pub stamp: Option<Stamp>,
}

/// One incoming packet.
#[derive(Debug)]
pub enum Incoming {
    /// A PUBLISH, read by the fast path.
    Publish(PublishInfo),
    /// Any other packet, decoded by Roost's codec.
    Packet(Packet),
}

/// Options for opening a connection.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// Broker address.
    pub addr: SocketAddr,
    /// Protocol version.
    pub version: Version,
    /// Client identifier.
    pub client_id: String,
    /// Clean session (3.1.1) / clean start (5.0).
    pub clean_start: bool,
    /// Session expiry interval (5.0 only).
    pub session_expiry: u32,
    /// Keep alive in seconds.
    pub keep_alive: u16,
    /// Bound on TCP connect plus CONNACK.
    pub timeout: Duration,
}

/// A connected MQTT client: a socket, a read buffer, a write buffer and a decoder.
#[derive(Debug)]
pub struct Conn {
    stream: TcpStream,
    version: Version,
    decoder: Decoder,
    rbuf: BytesMut,
    /// Packets queued for the next [`Conn::flush`].
    pub wbuf: BytesMut,
}

/// The CONNECT packet for `o`.
fn connect_packet(o: &ConnectOptions) -> Connect {
    Connect {
        clean_start: o.clean_start,
        keep_alive: o.keep_alive,
        session_expiry_interval: o.session_expiry,
        ..Connect::new(o.version, &o.client_id)
    }
}

impl Conn {
    /// Opens a TCP connection, sends CONNECT and waits for a successful CONNACK.
    /// Returns the connection and whether the broker reported a present session.
    pub async fn connect(o: &ConnectOptions) -> Result<(Conn, bool), String> {
        tokio::time::timeout(o.timeout, Conn::connect_inner(o))
            .await
            .map_err(|_| format!("{}: no CONNACK within {:?}", o.client_id, o.timeout))?
    }

    async fn connect_inner(o: &ConnectOptions) -> Result<(Conn, bool), String> {
        let stream = TcpStream::connect(o.addr)
            .await
            .map_err(|e| format!("{}: connect to {}: {e}", o.client_id, o.addr))?;
        stream
            .set_nodelay(true)
            .map_err(|e| format!("set TCP_NODELAY: {e}"))?;
        let mut conn = Conn {
            stream,
            version: o.version,
            decoder: Decoder::client(o.version, MAX_PACKET),
            rbuf: BytesMut::with_capacity(4096),
            wbuf: BytesMut::with_capacity(4096),
        };
        conn.queue(&Packet::Connect(Box::new(connect_packet(o))))?;
        conn.flush().await?;
        match conn.next_packet().await? {
            Packet::ConnAck(ack) if ack.code == 0 => Ok((conn, ack.session_present)),
            Packet::ConnAck(ack) => Err(format!(
                "{}: CONNACK refused with code {}",
                o.client_id, ack.code
            )),
            other => Err(format!("{}: expected CONNACK, got {other:?}", o.client_id)),
        }
    }

    /// Appends the encoding of `packet` to the write buffer.
    pub fn queue(&mut self, packet: &Packet) -> Result<(), String> {
        codec::encode(packet, self.version, None, &mut self.wbuf)
            .map(|_| ())
            .map_err(|e| format!("encode: {e}"))
    }

    /// Appends a PUBACK, PUBREC, PUBREL or PUBCOMP to the write buffer.
    pub fn queue_ack(&mut self, kind: AckKind, packet_id: u16) -> Result<(), String> {
        self.queue(&Packet::Ack(PubAckLike {
            kind,
            packet_id,
            reason: roost::codec::ReasonCode::SUCCESS,
            reason_string: None,
        }))
    }

    /// Appends a PUBLISH to the write buffer.
    pub fn queue_publish(
        &mut self,
        topic: &str,
        qos: QoS,
        packet_id: u16,
        payload: &[u8],
    ) -> Result<(), String> {
        static NO_PROPS: std::sync::OnceLock<PublishProperties> = std::sync::OnceLock::new();
        let view = PublishView {
            dup: false,
            qos,
            retain: false,
            topic,
            packet_id,
            payload,
            properties: NO_PROPS.get_or_init(PublishProperties::default),
            topic_alias: None,
            subscription_identifiers: &[],
        };
        codec::encode_publish(&view, self.version, None, &mut self.wbuf)
            .map(|_| ())
            .map_err(|e| format!("encode PUBLISH: {e}"))
    }

    /// Writes everything queued with one `write_all` and clears the buffer.
    pub async fn flush(&mut self) -> Result<(), String> {
        if self.wbuf.is_empty() {
            return Ok(());
        }
        self.stream
            .write_all(&self.wbuf)
            .await
            .map_err(|e| format!("write: {e}"))?;
        self.wbuf.clear();
        Ok(())
    }

    /// Reads more bytes (waiting for at least one). `Ok(0)` means the broker closed.
    /// Cancel safe: nothing is lost if the future is dropped before it completes.
    pub async fn read_more(&mut self) -> Result<usize, String> {
        self.rbuf.reserve(READ_CHUNK);
        self.stream
            .read_buf(&mut self.rbuf)
            .await
            .map_err(|e| format!("read: {e}"))
    }

    /// Reads whatever is available without waiting. `Ok(None)`: nothing available;
    /// `Ok(Some(0))`: the broker closed.
    pub fn try_read_more(&mut self) -> Result<Option<usize>, String> {
        self.rbuf.reserve(READ_CHUNK);
        match self.stream.try_read_buf(&mut self.rbuf) {
            Ok(n) => Ok(Some(n)),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(format!("read: {e}")),
        }
    }

    /// The next complete packet already in the read buffer, if any.
    pub fn next_buffered(&mut self) -> Result<Option<Incoming>, String> {
        if self.rbuf.first().map(|b| b >> 4) == Some(3) {
            return match parse_publish(&self.rbuf, self.version)? {
                Some((len, info)) => {
                    self.rbuf.advance(len);
                    Ok(Some(Incoming::Publish(info)))
                }
                None => Ok(None),
            };
        }
        self.decoder
            .decode(&mut self.rbuf)
            .map(|p| p.map(Incoming::Packet))
            .map_err(|e| format!("undecodable packet from the broker: {e}"))
    }

    /// Waits for the next packet (decoded in full, PUBLISH included). For the setup phase.
    pub async fn next_packet(&mut self) -> Result<Packet, String> {
        loop {
            if let Some(p) = self
                .decoder
                .decode(&mut self.rbuf)
                .map_err(|e| format!("undecodable packet from the broker: {e}"))?
            {
                return Ok(p);
            }
            if self.read_more().await? == 0 {
                return Err("connection closed by the broker".into());
            }
        }
    }

    /// Sends DISCONNECT (best effort) and shuts the socket down.
    pub async fn disconnect(mut self) {
        self.wbuf.clear();
        if self
            .queue(&Packet::Disconnect(codec::Disconnect::default()))
            .is_ok()
        {
            let _ = tokio::time::timeout(Duration::from_secs(1), self.flush()).await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), self.stream.shutdown()).await;
    }
}

/// The fast path for a PUBLISH at the start of `buf`: `Ok(None)` when incomplete, else the
/// frame length and the fields the load generator uses. Framing, flag checks and bounds come
/// from `roost_wire`; bad input is an error, never a panic.
fn parse_publish(buf: &[u8], version: Version) -> Result<Option<(usize, PublishInfo)>, String> {
    let bad = |e: roost_wire::DecodeError| format!("malformed PUBLISH from the broker: {e}");
    let Some(header) = FixedHeader::parse(buf).map_err(bad)? else {
        return Ok(None);
    };
    let total = header.packet_len();
    if total > MAX_PACKET {
        return Err(format!("PUBLISH of {total} bytes is too large"));
    }
    let Some(body) = header.body(buf) else {
        return Ok(None);
    };
    roost_wire::check_flags(header.byte1).map_err(bad)?;
    let qos = QoS::from_publish_byte(header.byte1)
        .ok_or_else(|| bad(roost_wire::DecodeError::InvalidQoS))?;
    let mut r = Reader::new(body);
    r.binary().map_err(bad)?; // the topic, not needed here
    let packet_id = match qos {
        QoS::AtMostOnce => 0,
        _ => r.packet_id().map_err(bad)?,
    };
    if version == Version::V5 {
        r.properties().map_err(bad)?;
    }
    Ok(Some((
        total,
        PublishInfo {
            qos,
            packet_id,
            dup: header.byte1 & roost_wire::flags::DUP != 0,
            stamp: Stamp::read(r.rest()),
        },
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_path_reads_what_the_codec_writes() {
        for version in [Version::V311, Version::V5] {
            for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
                let mut payload = vec![0u8; 64];
                let stamp = Stamp {
                    sent_ns: 123_456_789,
                    publisher: 7,
                    seq: 42,
                };
                stamp.write(&mut payload);
                let props = PublishProperties::default();
                let view = PublishView {
                    dup: false,
                    qos,
                    retain: false,
                    topic: "lg/x/7",
                    packet_id: if qos == QoS::AtMostOnce { 0 } else { 9 },
                    payload: &payload,
                    properties: &props,
                    topic_alias: None,
                    subscription_identifiers: &[3],
                };
                let mut buf = BytesMut::new();
                let n = codec::encode_publish(&view, version, None, &mut buf).unwrap();
                for cut in 0..n {
                    assert!(
                        parse_publish(&buf[..cut.max(1)], version)
                            .unwrap()
                            .is_none()
                    );
                }
                let (len, info) = parse_publish(&buf, version).unwrap().unwrap();
                assert_eq!(len, n);
                assert_eq!(info.qos, qos);
                assert_eq!(info.stamp, Some(stamp));
            }
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(parse_publish(&[0x32, 0x01, 0x00], Version::V311).is_err());
        assert!(parse_publish(&[0x36, 0x00], Version::V311).is_err());
        assert!(parse_publish(&[0x30, 0xFF, 0xFF, 0xFF, 0xFF], Version::V311).is_err());
        assert!(parse_publish(&[0x38, 0x03, 0x00, 0x01, b't'], Version::V311).is_err()); // DUP, QoS 0
        assert!(parse_publish(&[0x32, 0x05, 0x00, 0x01, b't', 0, 0], Version::V311).is_err()); // id 0
        assert!(parse_publish(&[0x30, 0x04, 0x00, 0x01, b't', 9], Version::V5).is_err()); // props
    }
}
