//! How a connection ends: the will on each way of ending (MQTT-3.1.2-8, MQTT-3.1.2-10,
//! MQTT-3.14.4-3) and the DISCONNECT a v5 client reads.

use crate::broker::KickReason;

use super::*;

fn with_will(version: Version) -> Connect {
    let mut c = connect(version, "w");
    c.will = Some(codec::Will {
        topic: "wills/w".into(),
        payload: Bytes::from_static(b"gone"),
        qos: QoS::AtLeastOnce,
        retain: false,
        delay_interval: 0,
        properties: PublishProperties::default(),
    });
    c
}

#[test]
fn the_will_goes_out_on_every_end_but_a_normal_disconnect_and_shutdown() {
    let cases = [
        (Close::ClientDisconnect { will: false }, false, None),
        (Close::ClientDisconnect { will: true }, true, None),
        (Close::Io, true, None),
        (Close::KeepAlive, true, Some(ReasonCode::KEEP_ALIVE_TIMEOUT)),
        (
            Close::Kicked(KickReason::TakenOver),
            true,
            Some(ReasonCode::SESSION_TAKEN_OVER),
        ),
        (
            Close::Kicked(KickReason::Shutdown),
            false,
            Some(ReasonCode::SERVER_SHUTTING_DOWN),
        ),
        (
            Close::Violation {
                reason: ReasonCode::PROTOCOL_ERROR,
                why: "test",
            },
            true,
            Some(ReasonCode::PROTOCOL_ERROR),
        ),
        (
            Close::StorageFailure,
            true,
            Some(ReasonCode::UNSPECIFIED_ERROR),
        ),
        (Close::PausedWithAcksUnread, true, None),
    ];
    for (close, will, disconnect) in cases {
        for version in [Version::V311, Version::V5] {
            let mut w = World::memory();
            let c = w.connect(with_will(version));
            let (got_will, last) = c.close(&w, close);
            assert_eq!(got_will.is_some(), will, "{close:?} {version:?}");
            let reasons: Vec<ReasonCode> = last
                .iter()
                .map(|p| match p {
                    Packet::Disconnect(d) => {
                        assert!(d.reason_string.is_some(), "says why");
                        d.reason
                    }
                    other => panic!("{other:?}"),
                })
                .collect();
            let expected: Vec<ReasonCode> = match (disconnect, version) {
                (Some(reason), Version::V5) => vec![reason],
                _ => Vec::new(),
            };
            assert_eq!(reasons, expected, "{close:?} {version:?}");
        }
    }
}

#[test]
fn a_failed_last_commit_does_not_change_a_clients_own_disconnect() {
    // MQTT-3.14.4-3: after a normal DISCONNECT the will is discarded, whatever happens next.
    let failure = Close::StorageFailure;
    let normal = Close::ClientDisconnect { will: false };
    assert_eq!(normal.then(failure), normal);
    let shutdown = Close::Kicked(KickReason::Shutdown);
    assert_eq!(shutdown.then(failure), shutdown);
    assert_eq!(Close::Io.then(failure), failure);
    assert_eq!(Close::KeepAlive.then(failure), failure);
}

#[test]
fn disconnect_reason_decides_the_will() {
    let mut w = World::memory();
    let mut c = w.connect(with_will(Version::V5));
    let normal = Packet::Disconnect(codec::Disconnect::default());
    assert_eq!(
        c.send(&[normal], w.now).expect_err("ends"),
        Close::ClientDisconnect { will: false }
    );
    let mut c = w.connect(with_will(Version::V5));
    let with_will = Packet::Disconnect(codec::Disconnect {
        reason: ReasonCode::DISCONNECT_WITH_WILL,
        ..Default::default()
    });
    assert_eq!(
        c.send(&[with_will], w.now).expect_err("ends"),
        Close::ClientDisconnect { will: true }
    );
}

#[test]
fn disconnect_may_shorten_the_session_expiry_but_not_raise_it_from_zero() {
    // MQTT-3.14.2-2.
    let mut w = World::memory();
    let mut c = w.connect(connect(Version::V5, "z"));
    let raise = Packet::Disconnect(codec::Disconnect {
        session_expiry_interval: Some(60),
        ..Default::default()
    });
    let close = c.send(&[raise], w.now).expect_err("ends");
    assert!(
        matches!(close, Close::Violation { reason, .. } if reason == ReasonCode::PROTOCOL_ERROR)
    );
    let mut d = w.connect(durable(Version::V5, "d"));
    let shorten = Packet::Disconnect(codec::Disconnect {
        session_expiry_interval: Some(5),
        ..Default::default()
    });
    d.send(&[shorten], w.now).expect_err("ends");
    assert_eq!(d.core.session().slot.lock().session.expiry_interval, 5);
}
