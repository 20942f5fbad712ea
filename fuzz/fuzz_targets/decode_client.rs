//! The broker's decoder in the client role (what the load generator and tests read from a
//! server), for 3.1.1 and 5.0, with large and tiny packet-size limits. Input: version byte,
//! limit byte, piece count byte, piece sizes, stream.
#![no_main]

use libfuzzer_sys::fuzz_target;
use roost_fuzz::decoding::{State, one_piece_equals_pieces};
use roost_fuzz::input::Input;

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let state = State::client(input.byte());
    one_piece_equals_pieces(state, &mut input);
});
