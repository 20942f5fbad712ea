//! The broker's decoder in the server role: before CONNECT, after a 3.1.1 CONNECT and after a
//! 5.0 CONNECT, with large and tiny packet-size limits. Input: state byte, limit byte, piece
//! count byte, piece sizes, stream.
#![no_main]

use libfuzzer_sys::fuzz_target;
use roost_fuzz::decoding::{State, one_piece_equals_pieces};
use roost_fuzz::input::Input;

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let state = State::server(input.byte());
    one_piece_equals_pieces(state, &mut input);
});
