//! Decode, encode, decode: every packet the broker's decoder accepts (in any state) must
//! encode without error and decode again, in the same state, to an equal packet. Input: state byte (server states, or client states with the high
//! bit), stream.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use roost::codec::{Packet, Version, encode};
use roost_fuzz::decoding::{LARGE, State, checked_decode};
use roost_fuzz::input::Input;

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let b = input.byte();
    let state = if b & 0x80 == 0 {
        State::server(b)
    } else {
        State::client(b)
    };
    let mut d = state.decoder(LARGE);
    let mut buf = BytesMut::from(input.rest());
    while let Ok(Some(p)) = checked_decode(&mut d, &mut buf) {
        let version = d.version().expect("a decoded packet locks the version");
        let client = matches!(state, State::Client(_));
        roundtrip(&p, version, client);
    }
});

/// Encodes `p` for `version` and decodes it with a decoder in the state that reads it.
fn roundtrip(p: &Packet, version: Version, client: bool) {
    let first = encoded(p, version);
    let state = match p {
        Packet::Connect(_) => State::Fresh,
        _ if client => State::Client(version),
        _ => State::Server(version),
    };
    let mut buf = first.clone();
    let again = checked_decode(&mut state.decoder(LARGE), &mut buf);
    assert_eq!(
        again.as_ref(),
        Ok(&Some(p.clone())),
        "encoded as {first:02x?}"
    );
    assert!(buf.is_empty(), "{} bytes left over", buf.len());
}

fn encoded(p: &Packet, version: Version) -> BytesMut {
    let mut buf = BytesMut::new();
    let n = encode(p, version, None, &mut buf)
        .unwrap_or_else(|e| panic!("decoded packet does not encode: {e}: {p:?}"));
    assert_eq!(n, buf.len());
    buf
}
