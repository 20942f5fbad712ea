//! AUTH (MQTT 5.0 only): decoded and encoded by hand; mqttbytes 0.6.0 has no AUTH.

use super::error::{DecodeError, EncodeError};
use super::frame::Frame;
use super::packet::{Auth, Packet};
use super::properties::{self as prop, Context};
use super::writer::{self, Encode};
use roost_wire::packet_type::AUTH;
use roost_wire::{ReasonCode, Sink};

/// Decodes an AUTH. Remaining length 0 means reason 0x00 without properties.
pub(crate) fn decode(f: &Frame) -> Result<Packet, DecodeError> {
    let mut r = f.body();
    let mut auth = Auth::default();
    if !r.is_empty() {
        auth.reason = ReasonCode(r.u8()?);
        // Success, continue authentication, re-authenticate (MQTT 5.0 3.15.2.1).
        if !auth.reason.is_valid_v5(AUTH) {
            return Err(DecodeError::Malformed("invalid reason code"));
        }
        if !r.is_empty() {
            let p = prop::parse(&mut r, Context::Auth, false)?;
            if p.authentication_data.is_some() && p.authentication_method.is_none() {
                return Err(DecodeError::Protocol("authentication data without method"));
            }
            auth.method = p.authentication_method;
            auth.data = p.authentication_data;
        }
    }
    r.finish()?;
    Ok(Packet::Auth(auth))
}

/// Encodes an AUTH body: empty for reason 0x00 without properties.
pub(crate) struct AuthBody<'a>(pub &'a Auth);

impl Encode for AuthBody<'_> {
    fn put<S: Sink>(&self, s: &mut S) -> Result<(), EncodeError> {
        let a = self.0;
        if a.reason == ReasonCode::SUCCESS && a.method.is_none() && a.data.is_none() {
            return Ok(());
        }
        s.u8(a.reason.0)?;
        writer::put_props(s, &AuthProps(a))
    }
}

struct AuthProps<'a>(&'a Auth);

impl Encode for AuthProps<'_> {
    fn put<S: Sink>(&self, s: &mut S) -> Result<(), EncodeError> {
        writer::prop_str(s, prop::AUTHENTICATION_METHOD, self.0.method.as_deref())?;
        writer::prop_bin(s, prop::AUTHENTICATION_DATA, self.0.data.as_deref())
    }
}
