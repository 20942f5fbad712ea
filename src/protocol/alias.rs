//! Topic aliases (MQTT 5.0 section 3.3.2.3.4), both ways. Each direction has its own map,
//! valid for one connection only.
//!
//! - Inbound: the client may give a topic an alias from 1 to our Topic Alias Maximum (sent in
//!   CONNACK) and then send the alias with an empty topic. Over the maximum is 0x94 (MQTT-3.3.2-9);
//!   an empty topic with an alias that was never set is a protocol error (0x82).
//! - Outbound: when the client's CONNECT allows aliases, the broker gives topics aliases up to
//!   that maximum (MQTT-3.3.2-10), least recently used replaced first, and sends a known
//!   topic as its alias with an empty topic name.

use std::collections::HashMap;
use std::sync::Arc;

use crate::codec::ReasonCode;

use super::Close;

/// The topics a client's aliases hold may take at most this many bytes per connection.
const MAX_INBOUND_ALIAS_BYTES: usize = 256 * 1024;

/// The aliases the client set, by alias number.
#[derive(Debug, Default)]
pub(super) struct InboundAliases {
    /// Our Topic Alias Maximum.
    max: u16,
    /// Allocated with the first alias set (most connections never set one).
    topics: Option<Box<InboundTopics>>,
}

/// The topic of each alias set, and the bytes of those topics.
#[derive(Debug, Default)]
struct InboundTopics {
    by_alias: HashMap<u16, Arc<str>>,
    bytes: usize,
}

impl InboundAliases {
    /// Aliases up to `max` (0: none allowed).
    pub(super) fn new(max: u16) -> InboundAliases {
        InboundAliases { max, topics: None }
    }

    /// The topic of a PUBLISH that carries `alias`: an empty `topic` is looked up, a
    /// non-empty one (re)sets the alias.
    pub(super) fn resolve(&mut self, alias: u16, topic: String) -> Result<Arc<str>, Close> {
        if alias == 0 || alias > self.max {
            return Err(Close::Violation {
                reason: ReasonCode::TOPIC_ALIAS_INVALID,
                why: "topic alias over the maximum",
            });
        }
        if topic.is_empty() {
            let known = self.topics.as_ref().and_then(|t| t.by_alias.get(&alias));
            return known.cloned().ok_or(Close::Violation {
                reason: ReasonCode::PROTOCOL_ERROR,
                why: "topic alias used before it was set",
            });
        }
        let topic: Arc<str> = Arc::from(topic);
        let topics = self.topics.get_or_insert_with(Default::default);
        topics.bytes += topic.len();
        if let Some(old) = topics.by_alias.insert(alias, Arc::clone(&topic)) {
            topics.bytes -= old.len();
        }
        if topics.bytes > MAX_INBOUND_ALIAS_BYTES {
            return Err(Close::Violation {
                reason: ReasonCode::QUOTA_EXCEEDED,
                why: "the topics of the topic aliases take too much memory",
            });
        }
        Ok(topic)
    }
}

/// At most this many aliases are used towards a client, whatever it allows: enough for the
/// topics a device is sent, and a bound on the memory and on the search for the least
/// recently used one.
pub(super) const MAX_OUTBOUND_ALIASES: u16 = 256;

/// How a topic goes out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Alias {
    /// No alias: the topic name alone.
    None,
    /// The client knows this alias: an empty topic name and the alias.
    Known(u16),
    /// A new alias: the topic name and the alias, which the client then remembers.
    New(u16),
}

/// The aliases the broker gave topics on this connection.
#[derive(Debug, Default)]
pub(super) struct OutboundAliases {
    /// The client's Topic Alias Maximum (capped at [`MAX_OUTBOUND_ALIASES`]).
    max: u16,
    /// Allocated with the first alias given (most connections are never given one).
    known: Option<Box<KnownAliases>>,
}

/// The aliases given so far.
#[derive(Debug, Default)]
struct KnownAliases {
    /// Topic to alias and when it was last used.
    by_topic: HashMap<Arc<str>, (u16, u64)>,
    /// Alias to topic (index = alias - 1).
    by_alias: Vec<Arc<str>>,
    /// Use counter, for least recently used.
    tick: u64,
}

impl OutboundAliases {
    /// Aliases up to the client's `max` (0: it accepts none).
    pub(super) fn new(max: u16) -> OutboundAliases {
        OutboundAliases {
            max: max.min(MAX_OUTBOUND_ALIASES),
            ..Default::default()
        }
    }

    /// How `topic` would go out next. Nothing changes until [`OutboundAliases::sent`] says the
    /// packet was written (one that was not, e.g. too large for the client, must not teach it
    /// an alias it never saw).
    pub(super) fn choose(&self, topic: &Arc<str>) -> Alias {
        if self.max == 0 {
            return Alias::None;
        }
        let Some(known) = &self.known else {
            return Alias::New(1);
        };
        if let Some(&(alias, _)) = known.by_topic.get(topic) {
            return Alias::Known(alias);
        }
        if known.by_alias.len() < usize::from(self.max) {
            return Alias::New(known.by_alias.len() as u16 + 1);
        }
        let oldest = known
            .by_topic
            .values()
            .min_by_key(|(_, used)| *used)
            .map_or(1, |(alias, _)| *alias);
        Alias::New(oldest)
    }

    /// Records that `topic` went out as `alias` chose.
    pub(super) fn sent(&mut self, topic: &Arc<str>, alias: Alias) {
        if alias == Alias::None {
            return;
        }
        let known = self.known.get_or_insert_with(Default::default);
        known.tick += 1;
        match alias {
            Alias::None => {}
            Alias::Known(a) => {
                if let Some(entry) = known.by_topic.get_mut(topic) {
                    *entry = (a, known.tick);
                }
            }
            Alias::New(a) => {
                let i = usize::from(a - 1);
                if i < known.by_alias.len() {
                    let old = std::mem::replace(&mut known.by_alias[i], Arc::clone(topic));
                    known.by_topic.remove(&old);
                } else {
                    known.by_alias.push(Arc::clone(topic));
                }
                known.by_topic.insert(Arc::clone(topic), (a, known.tick));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Arc<str> {
        Arc::from(s)
    }

    #[test]
    fn outbound_aliases_are_reused_and_the_least_recently_used_is_replaced() {
        let mut a = OutboundAliases::new(2);
        let (x, y, z) = (t("x"), t("y"), t("z"));
        assert_eq!(a.choose(&x), Alias::New(1));
        a.sent(&x, Alias::New(1));
        assert_eq!(a.choose(&y), Alias::New(2));
        a.sent(&y, Alias::New(2));
        assert_eq!(a.choose(&x), Alias::Known(1));
        a.sent(&x, Alias::Known(1));
        // Full: z takes the alias of y, used least recently.
        assert_eq!(a.choose(&z), Alias::New(2));
        a.sent(&z, Alias::New(2));
        assert_eq!(
            a.choose(&y),
            Alias::New(1),
            "y was forgotten; x is now the oldest"
        );
        assert_eq!(a.choose(&z), Alias::Known(2));
    }

    #[test]
    fn nothing_is_learnt_from_a_packet_not_sent() {
        let a = OutboundAliases::new(4);
        let x = t("x");
        assert_eq!(a.choose(&x), Alias::New(1));
        assert_eq!(a.choose(&x), Alias::New(1), "still unknown");
    }

    #[test]
    fn no_aliases_without_the_clients_leave() {
        assert_eq!(OutboundAliases::new(0).choose(&t("x")), Alias::None);
    }

    #[test]
    fn outbound_aliases_stay_within_the_cap() {
        let mut a = OutboundAliases::new(u16::MAX);
        for i in 0..1000 {
            let topic = t(&format!("t/{i}"));
            let alias = a.choose(&topic);
            let (Alias::New(n) | Alias::Known(n)) = alias else {
                panic!("an alias")
            };
            assert!((1..=MAX_OUTBOUND_ALIASES).contains(&n));
            a.sent(&topic, alias);
        }
    }

    #[test]
    fn inbound_aliases_are_set_then_used() {
        // MQTT-3.3.2-9 (over the maximum: 0x94); an unset alias is a protocol error.
        let mut a = InboundAliases::new(3);
        assert_eq!(&*a.resolve(1, "a/b".into()).unwrap(), "a/b");
        assert_eq!(&*a.resolve(1, String::new()).unwrap(), "a/b");
        assert_eq!(&*a.resolve(1, "c".into()).unwrap(), "c", "reset");
        assert_eq!(&*a.resolve(1, String::new()).unwrap(), "c");
        let unset = a.resolve(2, String::new()).unwrap_err();
        assert!(
            matches!(unset, Close::Violation { reason, .. } if reason == ReasonCode::PROTOCOL_ERROR)
        );
        let over = a.resolve(4, "x".into()).unwrap_err();
        assert!(
            matches!(over, Close::Violation { reason, .. } if reason == ReasonCode::TOPIC_ALIAS_INVALID)
        );
    }
}
