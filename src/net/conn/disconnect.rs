//! DISCONNECT from a client: a normal end that discards the will, unless MQTT 5.0 reason 0x04
//! asks for it; MQTT 5.0 may also update the session expiry interval.

use tokio::io::{AsyncRead, AsyncWrite};

use crate::codec::Disconnect;

use super::{Close, Connection};

/// MQTT 5.0 reason code: disconnect with will message.
const WITH_WILL: u8 = 0x04;

impl<S: AsyncRead + AsyncWrite + Unpin> Connection<S> {
    pub(super) fn handle_disconnect(&mut self, disconnect: Disconnect) -> Result<(), Close> {
        let Some(attached) = &self.state else {
            return Err(Close::Io);
        };
        if let Some(expiry) = disconnect.session_expiry_interval {
            if attached.expiry_at_connect == 0 && expiry != 0 {
                // MQTT-3.14.2-2: a session that was to end cannot be extended at DISCONNECT.
                return Err(Close::Violation {
                    reason: 0x82,
                    why: "session expiry raised from 0 at DISCONNECT",
                });
            }
            attached.session.slot.lock().session.expiry_interval = expiry;
        }
        Err(Close::ClientDisconnect {
            will: disconnect.reason == WITH_WILL,
        })
    }
}
