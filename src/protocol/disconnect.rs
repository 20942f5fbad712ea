//! DISCONNECT from a client: reason 0x00 is a normal end that discards the will; any other
//! MQTT 5.0 reason (0x04 "with will message", or an error) keeps it (MQTT-3.1.2-8,
//! MQTT-3.14.4-3). MQTT 5.0 may also update the session expiry interval.

use crate::codec::{Disconnect, ReasonCode};

use super::{Close, Connected};

impl Connected {
    pub(super) fn handle_disconnect(&mut self, disconnect: Disconnect) -> Result<(), Close> {
        if let Some(expiry) = disconnect.session_expiry_interval {
            if self.expiry_at_connect == 0 && expiry != 0 {
                // MQTT-3.14.2-2: a session that was to end cannot be extended at DISCONNECT.
                return Err(Close::Violation {
                    reason: ReasonCode::PROTOCOL_ERROR,
                    why: "session expiry raised from 0 at DISCONNECT",
                });
            }
            self.session.slot.lock().session.expiry_interval = expiry;
        }
        Err(Close::ClientDisconnect {
            will: disconnect.reason != ReasonCode::SUCCESS,
        })
    }
}
