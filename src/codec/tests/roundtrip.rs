//! Encode then decode with the opposite role, for every packet type in both versions.

use crate::codec::ReasonCode;
use bytes::Bytes;

use super::*;

fn user() -> Vec<UserProperty> {
    vec![("k".into(), "v".into()), ("k".into(), "w".into())]
}

fn publish_props(v: Version) -> PublishProperties {
    match v {
        Version::V311 => PublishProperties::default(),
        Version::V5 => PublishProperties {
            payload_format_indicator: Some(1),
            message_expiry_interval: Some(3600),
            content_type: Some("application/json".into()),
            response_topic: Some("reply/to".into()),
            correlation_data: Some(Bytes::from_static(&[1, 2, 3])),
            user_properties: user(),
        },
    }
}

fn publish(v: Version, qos: QoS, packet_id: u16) -> Publish {
    Publish {
        dup: qos != QoS::AtMostOnce,
        qos,
        retain: true,
        topic: "sensors/é/temp".into(),
        packet_id,
        payload: Bytes::from_static(b"21.5"),
        properties: publish_props(v),
        topic_alias: (v == Version::V5).then_some(3),
        subscription_identifiers: Vec::new(),
    }
}

/// Packets a client sends, with only the fields `v` can carry.
pub(super) fn client_packets(v: Version) -> Vec<Packet> {
    let v5 = v == Version::V5;
    let mut out = vec![
        Packet::Connect(Box::new(Connect {
            version: v,
            client_id: "dev-1".into(),
            clean_start: false,
            keep_alive: 30,
            will: Some(Will {
                topic: "dev/1/status".into(),
                payload: Bytes::from_static(b"offline"),
                qos: QoS::AtLeastOnce,
                retain: true,
                delay_interval: if v5 { 10 } else { 0 },
                properties: publish_props(v),
            }),
            username: Some("user".into()),
            password: Some(Bytes::from_static(&[0, 0xFF, 0x80])),
            session_expiry_interval: if v5 { 600 } else { 0 },
            receive_maximum: if v5 { 100 } else { u16::MAX },
            maximum_packet_size: v5.then_some(65536),
            topic_alias_maximum: if v5 { 8 } else { 0 },
            request_response_information: v5,
            request_problem_information: !v5,
            user_properties: if v5 { user() } else { Vec::new() },
            authentication_method: v5.then(|| "PLAIN".into()),
            authentication_data: v5.then(|| Bytes::from_static(b"secret")),
            mqtt31: false,
            bridge: !v5,
        })),
        Packet::Connect(Box::new(Connect::new(v, ""))),
        Packet::Publish(publish(v, QoS::AtMostOnce, 0)),
        Packet::Publish(publish(v, QoS::AtLeastOnce, 1)),
        Packet::Publish(publish(v, QoS::ExactlyOnce, 65535)),
        Packet::Subscribe(Subscribe {
            packet_id: 7,
            filters: vec![
                SubscribeFilter {
                    filter: "a/+/c".into(),
                    qos: QoS::ExactlyOnce,
                    no_local: v5,
                    retain_as_published: v5,
                    retain_handling: if v5 {
                        RetainHandling::OnNewSubscribe
                    } else {
                        RetainHandling::OnSubscribe
                    },
                },
                SubscribeFilter {
                    filter: "#".into(),
                    qos: QoS::AtMostOnce,
                    no_local: false,
                    retain_as_published: false,
                    retain_handling: if v5 {
                        RetainHandling::Never
                    } else {
                        RetainHandling::OnSubscribe
                    },
                },
            ],
            subscription_identifier: v5.then_some(268_435_455),
            user_properties: if v5 { user() } else { Vec::new() },
        }),
        Packet::Unsubscribe(Unsubscribe {
            packet_id: 8,
            filters: vec!["a/+/c".into(), "#".into()],
            user_properties: if v5 { user() } else { Vec::new() },
        }),
        Packet::PingReq,
        Packet::Disconnect(Disconnect::default()),
    ];
    out.extend(acks(v));
    if v5 {
        out.push(Packet::Disconnect(Disconnect {
            reason: ReasonCode(0x04),
            session_expiry_interval: Some(0),
            reason_string: Some("bye".into()),
            server_reference: None,
        }));
        out.push(Packet::Disconnect(Disconnect {
            reason: ReasonCode(0x80),
            ..Disconnect::default()
        }));
        out.extend(auths());
    }
    out
}

fn acks(v: Version) -> Vec<Packet> {
    let kinds = [
        AckKind::PubAck,
        AckKind::PubRec,
        AckKind::PubRel,
        AckKind::PubComp,
    ];
    let mut out = Vec::new();
    for kind in kinds {
        out.push(Packet::Ack(PubAckLike {
            kind,
            packet_id: 42,
            reason: ReasonCode(0),
            reason_string: None,
        }));
        if v == Version::V5 {
            let reason = match kind {
                AckKind::PubAck | AckKind::PubRec => 0x10,
                AckKind::PubRel | AckKind::PubComp => 0x92,
            };
            out.push(Packet::Ack(PubAckLike {
                kind,
                packet_id: 43,
                reason: ReasonCode(reason),
                reason_string: None,
            }));
            out.push(Packet::Ack(PubAckLike {
                kind,
                packet_id: 44,
                reason: ReasonCode(0),
                reason_string: Some("ok".into()),
            }));
        }
    }
    out
}

fn auths() -> Vec<Packet> {
    vec![
        Packet::Auth(Auth::default()),
        Packet::Auth(Auth {
            reason: ReasonCode(0x18),
            method: Some("SCRAM-SHA-1".into()),
            data: Some(Bytes::from_static(b"nonce")),
        }),
    ]
}

/// Packets a server sends, with only the fields `v` can carry.
pub(super) fn server_packets(v: Version) -> Vec<Packet> {
    let v5 = v == Version::V5;
    let mut p = publish(v, QoS::AtLeastOnce, 9);
    if v5 {
        p.subscription_identifiers = vec![1, 128, 268_435_455];
    }
    let mut out = vec![
        Packet::ConnAck(ConnAck {
            session_present: true,
            code: ReasonCode(0),
            properties: ConnAckProperties::default(),
        }),
        Packet::ConnAck(ConnAck {
            session_present: false,
            code: ReasonCode(if v5 { 0x86 } else { 5 }),
            properties: if v5 {
                ConnAckProperties {
                    session_expiry_interval: Some(60),
                    receive_maximum: Some(20),
                    maximum_qos: Some(1),
                    retain_available: Some(false),
                    maximum_packet_size: Some(1024),
                    assigned_client_identifier: Some("auto-1".into()),
                    topic_alias_maximum: Some(10),
                    reason_string: Some("nope".into()),
                    wildcard_subscription_available: Some(true),
                    subscription_identifiers_available: Some(true),
                    shared_subscription_available: Some(false),
                    server_keep_alive: Some(120),
                    response_information: Some("response/auto-1/".into()),
                }
            } else {
                ConnAckProperties::default()
            },
        }),
        Packet::Publish(p),
        Packet::Publish(publish(v, QoS::AtMostOnce, 0)),
        Packet::SubAck(SubAck {
            packet_id: 7,
            codes: vec![
                ReasonCode(0),
                ReasonCode(1),
                ReasonCode(2),
                ReasonCode(0x80),
            ],
        }),
        Packet::UnsubAck(UnsubAck {
            packet_id: 8,
            codes: if v5 {
                vec![ReasonCode::SUCCESS, ReasonCode(0x11)]
            } else {
                Vec::new()
            },
        }),
        Packet::PingResp,
        Packet::Disconnect(Disconnect::default()),
    ];
    out.extend(acks(v));
    if v5 {
        out.push(Packet::Disconnect(Disconnect {
            reason: ReasonCode(0x9C),
            session_expiry_interval: None,
            reason_string: Some("moved".into()),
            server_reference: Some("other:1883".into()),
        }));
        out.extend(auths());
    }
    out
}

/// Encodes `p` for `v` and checks the returned size.
pub(super) fn encoded(p: &Packet, v: Version) -> Vec<u8> {
    let mut buf = BytesMut::from(&b"prefix"[..]);
    let n = encode(p, v, None, &mut buf).unwrap_or_else(|e| panic!("{p:?}: {e}"));
    assert_eq!(n, buf.len() - 6);
    buf[6..].to_vec()
}

#[test]
fn client_packets_roundtrip_through_the_server_decoder() {
    for v in VERSIONS {
        for p in client_packets(v) {
            let bytes = encoded(&p, v);
            let mut d = match p {
                Packet::Connect(_) => Decoder::server(MAX),
                _ => server(v),
            };
            assert_eq!(decode_all(&mut d, &bytes), Ok(Some(p.clone())), "{v:?}");
        }
    }
}

#[test]
fn server_packets_roundtrip_through_the_client_decoder() {
    for v in VERSIONS {
        for p in server_packets(v) {
            let bytes = encoded(&p, v);
            let mut d = Decoder::client(v, MAX);
            assert_eq!(decode_all(&mut d, &bytes), Ok(Some(p.clone())), "{v:?}");
        }
    }
}

/// Encoding for 3.1.1 drops what 3.1.1 cannot carry.
#[test]
fn v5_fields_are_dropped_for_v311() {
    let rich = publish(Version::V5, QoS::AtLeastOnce, 5);
    let bytes = encoded(&Packet::Publish(rich.clone()), Version::V311);
    match from_client(Version::V311, &bytes) {
        Ok(Some(Packet::Publish(p))) => {
            assert_eq!(p.properties, PublishProperties::default());
            assert_eq!(p.topic_alias, None);
            assert_eq!((p.topic, p.payload), (rich.topic, rich.payload));
        }
        other => panic!("{other:?}"),
    }
    let v5_connect = &client_packets(Version::V5)[0];
    let bytes = encoded(v5_connect, Version::V311);
    match decode_all(&mut Decoder::server(MAX), &bytes) {
        Ok(Some(Packet::Connect(c))) => {
            assert_eq!(c.version, Version::V311);
            assert_eq!(c.session_expiry_interval, 0);
            assert_eq!(c.will.expect("will").delay_interval, 0);
        }
        other => panic!("{other:?}"),
    }
}

/// Our 3.1.1 encodings are also what mqttbytes (the reference for 3.1.1 bodies) reads back.
#[test]
fn mqttbytes_reads_our_v311_encodings() {
    for p in client_packets(Version::V311) {
        let bytes = encoded(&p, Version::V311);
        let mut buf = BytesMut::from(&bytes[..]);
        let r = mqttbytes::v4::read(&mut buf, MAX);
        // mqttbytes rejects binary passwords; everything else must parse.
        if let Packet::Connect(c) = &p
            && c.password.is_some()
        {
            continue;
        }
        assert!(r.is_ok(), "{p:?}: {r:?}");
        assert!(buf.is_empty());
    }
}
