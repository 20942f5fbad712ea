//! CONNECT and CONNACK: acceptance, refusals, assigned ids, resume.

use super::*;
use crate::broker::Verdict;

#[test]
fn v311_connect_is_accepted_with_a_fresh_session() {
    let mut w = World::memory();
    let (_c, connack) = w.try_connect(connect(Version::V311, "a"));
    let Packet::ConnAck(c) = connack else {
        panic!("CONNACK")
    };
    assert_eq!(c.code, ReasonCode::SUCCESS);
    assert!(!c.session_present);
}

#[test]
fn v5_connack_announces_the_server_limits() {
    let mut w = World::new(false, |c| {
        c.receive_maximum = 7;
        c.max_packet_size = 4096;
        c.topic_alias_maximum = 3;
    });
    let (_c, connack) = w.try_connect(connect(Version::V5, "a"));
    let Packet::ConnAck(c) = connack else {
        panic!("CONNACK")
    };
    let p = c.properties;
    assert_eq!(p.receive_maximum, Some(7));
    assert_eq!(p.maximum_packet_size, Some(4096));
    assert_eq!(p.topic_alias_maximum, Some(3));
    assert_eq!(p.shared_subscription_available, Some(true));
    assert_eq!(p.assigned_client_identifier, None);
}

#[test]
fn v5_empty_client_id_gets_one_assigned() {
    // MQTT-3.1.3-6 / MQTT 5.0 3.2.2.3.7: the assigned id is returned in CONNACK.
    let mut w = World::memory();
    let (c, connack) = w.try_connect(connect(Version::V5, ""));
    let Packet::ConnAck(ack) = connack else {
        panic!("CONNACK")
    };
    let assigned = ack.properties.assigned_client_identifier.expect("assigned");
    assert_eq!(&*c.core.session().client_id, assigned.as_str());
    assert!(w.broker.registry.get(&assigned).is_some());
}

#[test]
fn v311_empty_client_id_without_clean_session_is_refused() {
    // MQTT-3.1.3-8: CONNACK 0x02, then close.
    let w = World::memory();
    let mut awaiting =
        AwaitingConnect::new(Arc::clone(&w.broker), peer(), QueueFullPolicy::Backpressure);
    let c = durable(Version::V311, "");
    let code = awaiting.plan(&c).expect_err("refused");
    assert_eq!(code, ReasonCode::V3_IDENTIFIER_REJECTED);
    assert_eq!(awaiting.refuse(&c, code), Close::Refused);
    assert_eq!(&awaiting.output()[..], &[0x20, 0x02, 0x00, 0x02]);
}

#[test]
fn enhanced_authentication_is_refused() {
    let w = World::memory();
    let awaiting =
        AwaitingConnect::new(Arc::clone(&w.broker), peer(), QueueFullPolicy::Backpressure);
    let mut c = connect(Version::V5, "a");
    c.authentication_method = Some("SCRAM-SHA-1".into());
    assert_eq!(
        awaiting.plan(&c).expect_err("refused"),
        ReasonCode::BAD_AUTHENTICATION_METHOD
    );
}

#[test]
fn authentication_verdicts_map_to_connack_codes() {
    use super::super::refusal;
    let bad = Verdict::BadCredentials;
    let denied = Verdict::NotAuthorized;
    assert_eq!(refusal(&Verdict::Accepted(None), Version::V5), None);
    assert_eq!(refusal(&bad, Version::V311), Some(ReasonCode(0x04)));
    assert_eq!(refusal(&denied, Version::V311), Some(ReasonCode(0x05)));
    assert_eq!(refusal(&bad, Version::V5), Some(ReasonCode(0x86)));
    assert_eq!(refusal(&denied, Version::V5), Some(ReasonCode(0x87)));
}

#[test]
fn unsupported_protocol_level_gets_connack_0x01() {
    // MQTT-3.1.2-2.
    let w = World::memory();
    let mut awaiting =
        AwaitingConnect::new(Arc::clone(&w.broker), peer(), QueueFullPolicy::Backpressure);
    let mut input = BytesMut::from(
        &[
            0x10, 0x0d, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x06, 0x02, 0x00, 0x3c, 0x00, 0x01,
            b'x',
        ][..],
    );
    assert_eq!(
        awaiting.read_connect(&mut input).err(),
        Some(Close::Refused)
    );
    assert_eq!(&awaiting.output()[..], &[0x20, 0x02, 0x00, 0x01]);
}

#[test]
fn first_packet_other_than_connect_closes_without_an_answer() {
    // MQTT-3.1.0-1.
    let w = World::memory();
    let mut awaiting =
        AwaitingConnect::new(Arc::clone(&w.broker), peer(), QueueFullPolicy::Backpressure);
    let mut input = BytesMut::from(&[0xc0, 0x00][..]);
    assert_eq!(awaiting.read_connect(&mut input).err(), Some(Close::Io));
    assert!(awaiting.output().is_empty());
}

#[test]
fn a_partial_connect_waits_for_more_bytes() {
    let w = World::memory();
    let mut awaiting =
        AwaitingConnect::new(Arc::clone(&w.broker), peer(), QueueFullPolicy::Backpressure);
    let mut bytes = BytesMut::new();
    let c = Packet::Connect(Box::new(connect(Version::V311, "a")));
    codec::encode(&c, Version::V311, None, &mut bytes).expect("encodes");
    let mut input = bytes.split_to(5);
    assert!(
        awaiting
            .read_connect(&mut input)
            .expect("no error")
            .is_none()
    );
    input.extend_from_slice(&bytes);
    assert!(
        awaiting
            .read_connect(&mut input)
            .expect("no error")
            .is_some()
    );
}

#[test]
fn durable_connack_waits_for_the_session_record() {
    // Promise 1: CONNACK that creates durable state goes out only once it is committed.
    let mut w = World::durable();
    let mut core = w.accept(durable(Version::V5, "d"));
    assert!(core.output().is_none(), "CONNACK held");
    let commit = core.poll_commit().expect("the session record");
    assert!(commit.must_wait);
    assert!(matches!(commit.ops[..], [Op::PutSession { .. }]));
    assert!(core.output().is_none(), "held until the commit returns");
    core.committed(true).expect("committed");
    assert!(core.output().is_some_and(|o| o[0] == 0x20));
    w.advance(Duration::from_secs(1));
}

#[test]
fn a_failed_commit_of_the_session_record_refuses_with_a_connack() {
    // MQTT-3.2.0-1: the first packet the client reads is a CONNACK, here a refusal (0x80 in
    // MQTT 5.0, 0x03 "server unavailable" in 3.1.1), and no DISCONNECT follows.
    for (version, code) in [
        (Version::V5, ReasonCode::UNSPECIFIED_ERROR),
        (Version::V311, ReasonCode::V3_SERVER_UNAVAILABLE),
    ] {
        let mut w = World::durable();
        let mut core = w.accept(durable(version, "d"));
        core.poll_commit().expect("the session record");
        assert_eq!(core.committed(false), Err(Close::Refused));
        let ending = core.end(Close::Refused);
        assert!(ending.will.is_none());
        let mut out = core.output().map(std::mem::take).expect("the refusal");
        let mut decoder = Decoder::client(version, usize::MAX);
        let Some(Packet::ConnAck(ack)) = decoder.decode(&mut out).unwrap() else {
            panic!("CONNACK first")
        };
        assert_eq!(ack.code, code);
        assert!(out.is_empty(), "nothing after it");
    }
}

#[test]
fn resumed_session_is_present() {
    let mut w = World::durable();
    let c = w.connect(durable(Version::V311, "d"));
    c.close(&w, Close::Io);
    let (c, connack) = w.try_connect(durable(Version::V311, "d"));
    let Packet::ConnAck(ack) = connack else {
        panic!("CONNACK")
    };
    assert!(ack.session_present, "MQTT-3.2.2-2");
    c.close(&w, Close::Io);
    // A clean start on the same id discards it (MQTT-3.2.2-1).
    let (_c, connack) = w.try_connect(connect(Version::V311, "d"));
    let Packet::ConnAck(ack) = connack else {
        panic!("CONNACK")
    };
    assert!(!ack.session_present);
}

#[test]
fn max_keepalive_holds_a_v5_client_to_the_limit_and_says_so() {
    // MQTT 5.0 3.2.2.3.14: Server Keep Alive in CONNACK; the client must use it.
    for asked in [0u16, 31, 600] {
        let mut w = World::new(false, |c| c.max_keepalive = 30);
        let mut c = connect(Version::V5, "k");
        c.keep_alive = asked;
        let (k, connack) = w.try_connect(c);
        let Packet::ConnAck(ack) = connack else {
            panic!("CONNACK")
        };
        assert_eq!(ack.code, ReasonCode::SUCCESS);
        assert_eq!(ack.properties.server_keep_alive, Some(30), "asked {asked}");
        assert_eq!(k.core.poll_timeout(), Some(w.now + Duration::from_secs(45)));
    }
    // Within the limit: the client's own keep alive, no Server Keep Alive.
    let mut w = World::new(false, |c| c.max_keepalive = 30);
    let mut c = connect(Version::V5, "k");
    c.keep_alive = 20;
    let (_k, connack) = w.try_connect(c);
    let Packet::ConnAck(ack) = connack else {
        panic!("CONNACK")
    };
    assert_eq!(ack.properties.server_keep_alive, None);
}

#[test]
fn max_keepalive_refuses_a_v311_client_asking_for_more_or_none() {
    // 3.1.1 has no Server Keep Alive: CONNACK 0x02, as mosquitto does.
    let w = World::new(false, |c| c.max_keepalive = 30);
    let awaiting =
        AwaitingConnect::new(Arc::clone(&w.broker), peer(), QueueFullPolicy::Backpressure);
    for asked in [0u16, 31] {
        let mut c = connect(Version::V311, "k");
        c.keep_alive = asked;
        assert_eq!(
            awaiting.plan(&c).expect_err("refused"),
            ReasonCode::V3_IDENTIFIER_REJECTED,
            "asked {asked}"
        );
    }
    let mut c = connect(Version::V311, "k");
    c.keep_alive = 30;
    assert_eq!(awaiting.plan(&c).expect("accepted").keep_alive, 30);
}

#[test]
fn response_information_is_given_to_a_client_that_asks() {
    // MQTT 5.0 3.1.2.11.6 / 4.10: Request Response Information 1 -> Response Information.
    let mut w = World::new(false, |c| c.response_topic_prefix = "replies/".into());
    let mut c = connect(Version::V5, "dev-7");
    c.request_response_information = true;
    let (_c, connack) = w.try_connect(c);
    let Packet::ConnAck(ack) = connack else {
        panic!("CONNACK")
    };
    assert_eq!(
        ack.properties.response_information.as_deref(),
        Some("replies/dev-7/")
    );
    let (_c, connack) = w.try_connect(connect(Version::V5, "dev-8"));
    let Packet::ConnAck(ack) = connack else {
        panic!("CONNACK")
    };
    assert_eq!(ack.properties.response_information, None, "not asked");
}

#[test]
fn no_response_information_for_an_id_that_is_not_one_topic_level() {
    let mut w = World::memory();
    let mut c = connect(Version::V5, "site/dev");
    c.request_response_information = true;
    let (_c, connack) = w.try_connect(c);
    let Packet::ConnAck(ack) = connack else {
        panic!("CONNACK")
    };
    assert_eq!(ack.properties.response_information, None);
}
