//! Why a connection ends, and what each way of ending means for the will and the last
//! MQTT 5.0 DISCONNECT.

use crate::broker::KickReason;
use crate::codec::{DecodeError, ReasonCode};

/// Why a connection ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Close {
    /// The client sent DISCONNECT; `will` is true for MQTT 5.0 reason 0x04.
    ClientDisconnect {
        /// Publish the will anyway (reason 0x04).
        will: bool,
    },
    /// The peer closed the socket or it failed.
    Io,
    /// The CONNECT was refused with a CONNACK already written.
    Refused,
    /// A malformed packet or a protocol error (MQTT 5.0 reason code).
    Violation {
        /// Reason code for the v5 DISCONNECT.
        reason: ReasonCode,
        /// What went wrong, for the log.
        why: &'static str,
    },
    /// Nothing received within 1.5 times the keep alive (MQTT-3.1.2-24).
    KeepAlive,
    /// Closed from outside: takeover or shutdown.
    Kicked(KickReason),
    /// The store could not commit: nothing of the batch was acknowledged (v5: 0x80).
    StorageFailure,
    /// A paused 3.1.1 connection could not read the acknowledgements its own queue waits for.
    PausedWithAcksUnread,
}

impl Close {
    /// True if the broker, not the client, ends the connection while the client may still
    /// be sending (at shutdown the process is about to close every socket anyway).
    pub(crate) fn server_initiated(self) -> bool {
        !matches!(
            self,
            Close::ClientDisconnect { .. } | Close::Io | Close::Kicked(KickReason::Shutdown)
        )
    }

    /// The v5 DISCONNECT reason to send, if any, and whether the will is published
    /// (MQTT-3.1.2-8: on every end but a normal DISCONNECT, a refused CONNECT and shutdown).
    pub(crate) fn outcome(self) -> (Option<ReasonCode>, bool) {
        match self {
            Close::ClientDisconnect { will } => (None, will),
            Close::Io => (None, true),
            Close::Refused => (None, false),
            Close::Violation { reason, .. } => (Some(reason), true),
            Close::KeepAlive => (Some(ReasonCode::KEEP_ALIVE_TIMEOUT), true),
            Close::Kicked(KickReason::TakenOver) => (Some(ReasonCode::SESSION_TAKEN_OVER), true),
            Close::Kicked(KickReason::Shutdown) => (Some(ReasonCode::SERVER_SHUTTING_DOWN), false),
            Close::Kicked(KickReason::Admin) => (Some(ReasonCode::ADMINISTRATIVE_ACTION), true),
            Close::StorageFailure => (Some(ReasonCode::UNSPECIFIED_ERROR), true),
            Close::PausedWithAcksUnread => (None, true),
        }
    }

    /// How the connection ends when `later` (the failure of the last commit) happens after it
    /// was already ending for `self`. The client's own DISCONNECT keeps deciding the will
    /// (MQTT-3.14.4-3) and gets no DISCONNECT back; a refusal and shutdown stay what they
    /// were; anything else becomes `later`.
    pub(crate) fn then(self, later: Close) -> Close {
        match self {
            Close::ClientDisconnect { .. }
            | Close::Refused
            | Close::Kicked(KickReason::Shutdown) => self,
            _ => later,
        }
    }

    /// Why the connection ended, for the log.
    pub(crate) fn describe(self) -> &'static str {
        match self {
            Close::ClientDisconnect { will: false } => "DISCONNECT from the client",
            Close::ClientDisconnect { will: true } => {
                "DISCONNECT from the client, asking that a will (if any) be kept"
            }
            Close::Io => "connection closed by the client or lost",
            Close::Refused => "CONNECT refused",
            Close::Violation { why, .. } => why,
            Close::KeepAlive => "keep alive expired",
            Close::Kicked(KickReason::TakenOver) => "session taken over",
            Close::Kicked(KickReason::Shutdown) => "server shutting down",
            Close::Kicked(KickReason::Admin) => "disconnected by an operator",
            Close::StorageFailure => "store failure",
            Close::PausedWithAcksUnread => "paused with acknowledgements unread",
        }
    }

    /// The Reason String of the DISCONNECT this close sends.
    pub(crate) fn explain(self) -> Option<&'static str> {
        Some(match self {
            Close::Violation { why, .. } => why,
            Close::KeepAlive => "nothing received within 1.5 times the keep alive",
            Close::Kicked(KickReason::TakenOver) => "another connection took the session over",
            Close::Kicked(KickReason::Shutdown) => "the server is shutting down",
            Close::Kicked(KickReason::Admin) => "disconnected by an operator",
            Close::StorageFailure => "the server could not store the session's state",
            _ => return None,
        })
    }

    /// The close a decoding error calls for, with its MQTT 5.0 reason code.
    pub(crate) fn from_decode(e: &DecodeError) -> Close {
        let why = match e {
            DecodeError::TooLarge { .. } => "packet too large",
            DecodeError::TopicNameInvalid => "invalid topic name",
            DecodeError::UnsupportedProtocol { .. } => "unexpected CONNECT",
            DecodeError::Protocol(why) | DecodeError::Malformed(why) => why,
        };
        Close::Violation {
            reason: e.reason_code(),
            why,
        }
    }
}
