//! The broker decoder in each state a connection can be in, and a decode loop that checks,
//! after every call, that no byte was lost or invented.

use bytes::BytesMut;
use roost::codec::{Connect, DecodeError, Decoder, Packet, Version, encode};
use roost_wire::FixedHeader;

/// The largest packet accepted when the input does not ask for a small limit.
pub const LARGE: usize = 1 << 20;

/// A decoder state, chosen by the fuzzer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Server role before CONNECT: the version is not known yet.
    Fresh,
    /// Server role after a CONNECT of this version.
    Server(Version),
    /// Client role for this version.
    Client(Version),
}

impl State {
    /// One of the three server states, from the low bits of `b`.
    pub fn server(b: u8) -> State {
        match b % 3 {
            0 => State::Fresh,
            1 => State::Server(Version::V311),
            _ => State::Server(Version::V5),
        }
    }

    /// One of the two client states, from the low bit of `b`.
    pub fn client(b: u8) -> State {
        if b & 1 == 0 {
            State::Client(Version::V311)
        } else {
            State::Client(Version::V5)
        }
    }

    /// A decoder in this state accepting packets of up to `max` bytes.
    pub fn decoder(self, max: usize) -> Decoder {
        match self {
            State::Fresh => Decoder::server(max),
            State::Server(v) => {
                let mut d = Decoder::server(LARGE);
                let mut buf = connect_bytes(v);
                let r = d.decode(&mut buf);
                assert!(matches!(r, Ok(Some(Packet::Connect(_)))), "{r:?}");
                d.set_max_packet_size(max);
                d
            }
            State::Client(v) => Decoder::client(v, max),
        }
    }
}

/// A packet-size limit from one byte: half of the values give [`LARGE`], the others a limit
/// of 2 to 128 bytes, so "too large" is reached at every packet size.
pub fn max_packet_size(b: u8) -> usize {
    if b & 0x80 == 0 {
        LARGE
    } else {
        usize::from(b & 0x7F) + 2
    }
}

/// A minimal CONNECT of `version`, as the broker's own encoder writes it.
pub fn connect_bytes(version: Version) -> BytesMut {
    let mut buf = BytesMut::new();
    let connect = Packet::Connect(Box::new(Connect::new(version, "fuzz")));
    encode(&connect, version, None, &mut buf).expect("CONNECT encodes");
    buf
}

/// Calls [`Decoder::decode`] once and checks what it did to `buf`:
///
/// * need-more leaves `buf` untouched;
/// * a packet removes exactly the bytes its fixed header announces, no more than the limit,
///   and has the type its first byte says;
/// * "too large" removes nothing; any other error removes nothing or one whole frame.
pub fn checked_decode(d: &mut Decoder, buf: &mut BytesMut) -> Result<Option<Packet>, DecodeError> {
    let before = buf.clone();
    let r = d.decode(buf);
    let consumed = before.len() - buf.len();
    assert_eq!(
        &before[consumed..],
        &buf[..],
        "bytes after the packet changed"
    );
    let header = FixedHeader::parse(&before).ok().flatten();
    let frame = header.map(|h| h.packet_len());
    match &r {
        Ok(None) => assert_eq!(consumed, 0, "need-more consumed bytes"),
        Ok(Some(p)) => {
            assert_eq!(Some(consumed), frame, "packet consumed {consumed} bytes");
            assert!(consumed <= d.max_packet_size(), "packet over the limit");
            let kind = header.map(|h| h.packet_type());
            assert_eq!(
                kind,
                Some(packet_type(p)),
                "{p:?} from first byte {:#x}",
                before[0]
            );
        }
        Err(DecodeError::TooLarge { size, max }) => {
            assert_eq!(consumed, 0, "too large consumed bytes");
            assert!(size > max);
            assert_eq!(Some(*size), frame);
        }
        Err(_) => assert!(
            consumed == 0 || Some(consumed) == frame,
            "error consumed {consumed} bytes of a {frame:?}-byte frame"
        ),
    }
    r
}

/// The MQTT packet type number of `p`.
pub fn packet_type(p: &Packet) -> u8 {
    use roost::codec::AckKind;
    use roost_wire::packet_type::*;
    match p {
        Packet::Connect(_) => CONNECT,
        Packet::ConnAck(_) => CONNACK,
        Packet::Publish(_) => PUBLISH,
        Packet::Ack(a) => match a.kind {
            AckKind::PubAck => PUBACK,
            AckKind::PubRec => PUBREC,
            AckKind::PubRel => PUBREL,
            AckKind::PubComp => PUBCOMP,
        },
        Packet::Subscribe(_) => SUBSCRIBE,
        Packet::SubAck(_) => SUBACK,
        Packet::Unsubscribe(_) => UNSUBSCRIBE,
        Packet::UnsubAck(_) => UNSUBACK,
        Packet::PingReq => PINGREQ,
        Packet::PingResp => PINGRESP,
        Packet::Disconnect(_) => DISCONNECT,
        Packet::Auth(_) => AUTH,
        _ => unreachable!("a packet type this target does not know: {p:?}"),
    }
}

/// Everything a connection's decoder made of a byte stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The packets, in order.
    pub packets: Vec<Packet>,
    /// How the stream ended.
    pub end: End,
    /// The version the decoder was locked to at the end.
    pub version: Option<Version>,
}

/// How a decoded stream ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// More bytes are needed; these were left in the buffer.
    NeedMore(Vec<u8>),
    /// The decoder failed; the connection would be closed.
    Failed(DecodeError),
}

/// Decodes packets from `buf` until more bytes are needed or an error, appending the packets
/// to `packets`. Each packet consumes bytes, so the loop ends.
pub fn drain(d: &mut Decoder, buf: &mut BytesMut, packets: &mut Vec<Packet>) -> Option<End> {
    loop {
        match checked_decode(d, buf) {
            Ok(Some(p)) => packets.push(p),
            Ok(None) => return None,
            Err(e) => return Some(End::Failed(e)),
        }
    }
}

/// Decodes `data` arriving in one piece.
pub fn whole(mut d: Decoder, data: &[u8]) -> Outcome {
    let mut buf = BytesMut::from(data);
    let mut packets = Vec::new();
    let end = drain(&mut d, &mut buf, &mut packets).unwrap_or(End::NeedMore(buf.to_vec()));
    Outcome {
        packets,
        end,
        version: d.version(),
    }
}

/// Decodes `data` arriving in pieces: `sizes` are the piece lengths, used in turn and again
/// from the start until the data runs out (0 is a read that brought nothing). With no sizes,
/// or only zeros, the data is one piece.
pub fn chunked(mut d: Decoder, data: &[u8], sizes: &[u8]) -> Outcome {
    let one_piece = sizes.iter().all(|&s| s == 0);
    let mut sizes = sizes.iter().map(|&s| usize::from(s)).cycle();
    let mut buf = BytesMut::new();
    let mut packets = Vec::new();
    let mut rest = data;
    let end = loop {
        let n = match sizes.next() {
            Some(n) if !one_piece => n,
            _ => rest.len(),
        };
        let (piece, tail) = rest.split_at(n.min(rest.len()));
        rest = tail;
        buf.extend_from_slice(piece);
        if let Some(end) = drain(&mut d, &mut buf, &mut packets) {
            break end;
        }
        if rest.is_empty() {
            break End::NeedMore(buf.to_vec());
        }
    };
    Outcome {
        packets,
        end,
        version: d.version(),
    }
}

/// The decoder target: a packet-size limit and piece sizes from the input, then the rest of
/// the input decoded in one piece and in pieces by a decoder in `state`; both must agree.
pub fn one_piece_equals_pieces(state: State, input: &mut crate::input::Input<'_>) {
    let max = max_packet_size(input.byte());
    let n = usize::from(input.byte() % 8);
    let sizes = input.take(n);
    let stream = input.rest();
    let d = state.decoder(max);
    let one = whole(d.clone(), stream);
    let pieces = chunked(d, stream, sizes);
    assert_eq!(one, pieces, "pieces of {sizes:?} bytes");
}
