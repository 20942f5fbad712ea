//! The clients of a soak run: which publishers and subscribers, with which protocol
//! version, session kind, QoS and reconnect habits.

use super::ledger::PublisherInfo;
use super::publisher::PublisherSpec;
use super::subscriber::SubscriberSpec;
use super::wire::Version;

/// Version, QoS, durable session, seconds between voluntary disconnects.
type PublisherRow = (Version, u8, bool, Option<(f64, f64)>);

/// The publishers: QoS 0, 1 and 2 in both versions; the QoS 1/2 ones durable except one
/// clean QoS 1 publisher that gives up its in-flight messages when it disconnects.
pub fn publishers(rate: f64, window: usize) -> Vec<PublisherSpec> {
    let table: [PublisherRow; 7] = [
        (Version::V4, 0, false, Some((20.0, 40.0))),
        (Version::V5, 0, false, None),
        (Version::V4, 1, true, Some((15.0, 30.0))),
        (Version::V5, 1, true, None),
        (Version::V5, 1, false, Some((10.0, 20.0))),
        (Version::V4, 2, true, Some((15.0, 30.0))),
        (Version::V5, 2, true, None),
    ];
    table
        .iter()
        .enumerate()
        .map(|(id, &(version, qos, durable, reconnect_every))| {
            let kind = if durable { "durable" } else { "clean" };
            let v = if version == Version::V4 { 4 } else { 5 };
            PublisherSpec {
                id: id as u32,
                name: format!("soak-pub{id}-q{qos}-v{v}-{kind}"),
                version,
                qos,
                durable,
                topic: format!("soak/q{qos}/p{id}"),
                rate,
                window,
                reconnect_every,
                payload: (24, 600),
            }
        })
        .collect()
}

/// The publishers as the ledger knows them.
pub fn ledger_view(specs: &[PublisherSpec]) -> Vec<PublisherInfo> {
    specs
        .iter()
        .map(|p| PublisherInfo {
            id: p.id,
            name: p.name.clone(),
            qos: p.qos,
            topic: p.topic.clone(),
        })
        .collect()
}

/// Name, version, durable session, filters with their QoS, seconds between voluntary
/// disconnects, seconds offline after one.
type SubscriberRow = (
    &'static str,
    Version,
    bool,
    &'static [(&'static str, u8)],
    (f64, f64),
    (f64, f64),
);

/// The subscribers: durable ones that stay (mostly), ones that are often away, in both
/// versions, one with overlapping filters, and one away long enough for its backlog to
/// outgrow the in-memory bound (2 MiB) and be read back from the store; and clean ones that
/// come and go.
pub fn subscribers() -> Vec<SubscriberSpec> {
    use Version::{V4, V5};
    const ALL_2: &[(&str, u8)] = &[("soak/#", 2)];
    const STEADY: (f64, f64) = (40.0, 80.0);
    const OFTEN: (f64, f64) = (5.0, 15.0);
    const RARELY: (f64, f64) = (10.0, 30.0);
    const BRIEF: (f64, f64) = (0.2, 2.0);
    const AWHILE: (f64, f64) = (1.0, 6.0);
    const LONG: (f64, f64) = (10.0, 30.0);
    let table: [SubscriberRow; 7] = [
        ("v4-durable-steady", V4, true, ALL_2, STEADY, BRIEF),
        ("v5-durable-steady", V5, true, ALL_2, STEADY, BRIEF),
        (
            "v4-durable-away",
            V4,
            true,
            &[("soak/+/+", 1)],
            OFTEN,
            AWHILE,
        ),
        (
            "v5-durable-away",
            V5,
            true,
            &[("soak/#", 1), ("soak/q2/+", 2)],
            OFTEN,
            AWHILE,
        ),
        (
            "v4-durable-long-away",
            V4,
            true,
            &[("soak/q1/+", 1), ("soak/q2/+", 2)],
            RARELY,
            LONG,
        ),
        ("v4-clean", V4, false, ALL_2, OFTEN, BRIEF),
        ("v5-clean", V5, false, &[("soak/#", 1)], OFTEN, BRIEF),
    ];
    table
        .iter()
        .map(
            |&(name, version, durable, filters, every, offline)| SubscriberSpec {
                name: format!("soak-sub-{name}"),
                version,
                durable,
                filters: filters.iter().map(|(f, q)| (f.to_string(), *q)).collect(),
                reconnect_every: Some(every),
                offline,
            },
        )
        .collect()
}
