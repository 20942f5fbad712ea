//! Promise 1 and 2: an acknowledgement leaves only after the state it promises is committed,
//! and a failed commit acknowledges nothing.

use super::*;

/// A durable subscriber of `t` at `qos` and a publisher whose commits the test carries out.
fn durable_pair(w: &mut World, qos: QoS) -> (Client, Client) {
    let s = subscriber(w, durable(Version::V5, "s"), "t", qos);
    let mut p = w.connect(connect(Version::V5, "p"));
    p.auto_commit = false;
    (p, s)
}

#[test]
fn puback_waits_for_the_commit_of_the_queued_message() {
    let mut w = World::durable();
    let (mut p, mut s) = durable_pair(&mut w, QoS::AtLeastOnce);
    assert!(
        p.send(&[publish("t", QoS::AtLeastOnce, 5, b"m")], w.now)
            .unwrap()
            .is_empty()
    );
    assert!(
        s.step(w.now).unwrap().is_empty(),
        "not delivered before the commit"
    );
    let commit = p
        .core
        .poll_commit()
        .expect("the message for the durable session");
    assert!(commit.must_wait);
    assert!(commit.ops.iter().any(|op| matches!(op, Op::Enqueue { .. })));
    assert!(p.core.output().is_none(), "PUBACK held while committing");
    p.core.committed(true).unwrap();
    let a = as_ack(only(p.output()));
    assert_eq!((a.kind, a.packet_id), (AckKind::PubAck, 5));
    let m = as_publish(only(s.step(w.now).unwrap()));
    assert_eq!(&m.payload[..], b"m", "delivered once committed");
}

#[test]
fn a_failed_commit_acknowledges_nothing_and_delivers_nothing() {
    let mut w = World::durable();
    let (mut p, mut s) = durable_pair(&mut w, QoS::AtLeastOnce);
    p.send(&[publish("t", QoS::AtLeastOnce, 5, b"m")], w.now)
        .unwrap();
    p.core.poll_commit().expect("a commit");
    assert_eq!(p.core.committed(false), Err(Close::StorageFailure));
    assert!(p.core.output().is_none(), "no PUBACK");
    assert!(s.step(w.now).unwrap().is_empty(), "no delivery");
    // The v5 client reads why (0x80).
    let (will, last) = p.close(&w, Close::StorageFailure);
    assert!(will.is_none());
    let Packet::Disconnect(d) = only(last) else {
        panic!("DISCONNECT")
    };
    assert_eq!(d.reason, ReasonCode::UNSPECIFIED_ERROR);
}

#[test]
fn pubrec_waits_for_the_inbound_packet_id_and_a_failure_forgets_it() {
    // The id must be durable before PUBREC, so that a retry after a crash is recognised.
    let mut w = World::durable();
    let mut p = w.connect(durable(Version::V311, "p"));
    p.auto_commit = false;
    p.send(&[publish("t", QoS::ExactlyOnce, 7, b"m")], w.now)
        .unwrap();
    let commit = p.core.poll_commit().expect("the id");
    assert!(matches!(
        commit.ops[..],
        [Op::PutIncoming { packet_id: 7, .. }]
    ));
    assert!(p.core.output().is_none());
    assert_eq!(p.core.committed(false), Err(Close::StorageFailure));
    let inbound = &p.core.session().slot.lock().session.inbound;
    assert!(
        !inbound.is_pending(7),
        "forgotten: the retry is a new message"
    );
}

#[test]
fn pubcomp_waits_for_the_release_of_the_inbound_id() {
    let mut w = World::durable();
    let mut p = w.connect(durable(Version::V311, "p"));
    p.send(&[publish("t", QoS::ExactlyOnce, 7, b"m")], w.now)
        .unwrap();
    p.auto_commit = false;
    p.send(&[ack(AckKind::PubRel, 7)], w.now).unwrap();
    let commit = p.core.poll_commit().expect("the release");
    assert!(commit.must_wait);
    assert!(matches!(
        commit.ops[..],
        [Op::DeleteIncoming { packet_id: 7, .. }]
    ));
    assert!(p.core.output().is_none(), "PUBCOMP held");
    p.core.committed(true).unwrap();
    assert_eq!(as_ack(only(p.output())).kind, AckKind::PubComp);
}

#[test]
fn pubrel_waits_for_the_released_state_of_the_outbound_message() {
    // A restart must resend PUBREL, not the PUBLISH the client already received.
    let mut w = World::durable();
    let (mut p, mut s) = durable_pair(&mut w, QoS::ExactlyOnce);
    p.auto_commit = true;
    p.send(&[publish("t", QoS::ExactlyOnce, 1, b"m")], w.now)
        .unwrap();
    let m = as_publish(only(s.step(w.now).unwrap()));
    s.auto_commit = false;
    s.send(&[ack(AckKind::PubRec, m.packet_id)], w.now).unwrap();
    let commit = s.core.poll_commit().expect("the released state");
    assert!(commit.must_wait);
    assert!(matches!(
        commit.ops[..],
        [Op::UpdateEntry {
            state: crate::store::EntryState::Released,
            ..
        }]
    ));
    assert!(s.core.output().is_none(), "PUBREL held");
    s.core.committed(true).unwrap();
    assert_eq!(as_ack(only(s.output())).kind, AckKind::PubRel);
}

#[test]
fn puback_from_the_client_deletes_the_entry_without_holding_output() {
    let mut w = World::durable();
    let (mut p, mut s) = durable_pair(&mut w, QoS::AtLeastOnce);
    p.auto_commit = true;
    p.send(&[publish("t", QoS::AtLeastOnce, 1, b"m")], w.now)
        .unwrap();
    let m = as_publish(only(s.step(w.now).unwrap()));
    s.auto_commit = false;
    s.send(&[ack(AckKind::PubAck, m.packet_id), Packet::PingReq], w.now)
        .unwrap();
    let commit = s.core.poll_commit().expect("the delete");
    assert!(!commit.must_wait, "nothing waits on a delete");
    assert!(matches!(commit.ops[..], [Op::DeleteEntry { .. }]));
    s.core.committed(true).unwrap();
    assert_eq!(only(s.output()), Packet::PingResp);
}

#[test]
fn acks_of_one_batch_keep_their_order() {
    let mut w = World::durable();
    let (mut p, _s) = durable_pair(&mut w, QoS::AtLeastOnce);
    p.auto_commit = true;
    let got = p
        .send(
            &[
                publish("t", QoS::AtLeastOnce, 1, b"a"),
                publish("other", QoS::AtLeastOnce, 2, b"b"),
                publish("t", QoS::AtLeastOnce, 3, b"c"),
            ],
            w.now,
        )
        .unwrap();
    let ids: Vec<u16> = got.into_iter().map(|p| as_ack(p).packet_id).collect();
    assert_eq!(ids, vec![1, 2, 3]);
    assert_eq!(p.commits.len(), 1, "one commit for the batch");
}
