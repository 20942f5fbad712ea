//! How a bridge renames topics between the two brokers: a message matched by a topic line keeps
//! what follows the prefix of the side it came from and gets the other side's prefix in its
//! place (mosquitto's `topic` prefix rules).

use crate::config::BridgeTopic;
use crate::topic::{matches, valid_topic_name};

/// The remote topic of a message this broker delivered to the bridge on `topic`.
/// `subscription_ids` are the Subscription Identifiers the delivery carries: topic line `i`
/// is subscribed with identifier `i + 1`, so the line that matched is known even when several
/// lines overlap. `None`: no outgoing line maps it.
pub(crate) fn to_remote(
    topics: &[BridgeTopic],
    subscription_ids: &[u32],
    topic: &str,
) -> Option<String> {
    let by_id = subscription_ids
        .iter()
        .filter_map(|id| topics.get(usize::try_from(id.checked_sub(1)?).ok()?));
    let any = topics.iter();
    by_id
        .chain(any)
        .filter(|t| t.direction.outgoing())
        .find_map(|t| rename(topic, &t.pattern, &t.local_prefix, &t.remote_prefix))
}

/// The local topic of a message the remote broker delivered to the bridge on `topic`.
pub(crate) fn to_local(topics: &[BridgeTopic], topic: &str) -> Option<String> {
    topics
        .iter()
        .filter(|t| t.direction.incoming())
        .find_map(|t| rename(topic, &t.pattern, &t.remote_prefix, &t.local_prefix))
}

/// `topic` matched against `from + pattern`, with `from` replaced by `to`.
fn rename(topic: &str, pattern: &str, from: &str, to: &str) -> Option<String> {
    if pattern.is_empty() {
        // One topic: the prefixes are the whole names.
        return (topic == from && valid_topic_name(to)).then(|| to.to_string());
    }
    // `#` also matches the parent level (MQTT-4.7.1-2): with prefixes `site/` and `fleet/`,
    // the topic `site` itself is `fleet`.
    if pattern == "#"
        && let (Some(parent), Some(other)) = (from.strip_suffix('/'), to.strip_suffix('/'))
        && topic == parent
    {
        return valid_topic_name(other).then(|| other.to_string());
    }
    let rest = topic.strip_prefix(from)?;
    if !matches(pattern, rest) {
        return None;
    }
    let renamed = format!("{to}{rest}");
    valid_topic_name(&renamed).then_some(renamed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::QoS;
    use crate::config::BridgeDirection::{self, Both, In, Out};

    fn line(pattern: &str, direction: BridgeDirection, local: &str, remote: &str) -> BridgeTopic {
        BridgeTopic {
            pattern: pattern.to_string(),
            direction,
            qos: QoS::AtLeastOnce,
            local_prefix: local.to_string(),
            remote_prefix: remote.to_string(),
        }
    }

    #[test]
    fn prefixes_are_swapped() {
        let t = [line("sensors/#", Out, "site/", "fleet/site1/")];
        assert_eq!(
            to_remote(&t, &[1], "site/sensors/t1").as_deref(),
            Some("fleet/site1/sensors/t1")
        );
        // The parent level matches `#` too.
        assert_eq!(
            to_remote(&t, &[], "site/sensors").as_deref(),
            Some("fleet/site1/sensors")
        );
        assert_eq!(to_remote(&t, &[], "other/sensors/t1"), None);
        assert_eq!(to_local(&t, "fleet/site1/sensors/t1"), None, "out only");
    }

    #[test]
    fn the_parent_level_of_a_prefix_is_mapped_too() {
        let t = [line("#", Both, "site/", "fleet/")];
        assert_eq!(to_remote(&t, &[1], "site").as_deref(), Some("fleet"));
        assert_eq!(to_local(&t, "fleet").as_deref(), Some("site"));
        let t = [line("#", Out, "site/", "")];
        assert_eq!(
            to_remote(&t, &[1], "site"),
            None,
            "no topic on the other side"
        );
    }

    #[test]
    fn incoming_lines_map_back() {
        let t = [
            line("cmd/+", In, "local/", "remote/"),
            line("#", Both, "", ""),
        ];
        assert_eq!(
            to_local(&t, "remote/cmd/reboot").as_deref(),
            Some("local/cmd/reboot")
        );
        assert_eq!(to_local(&t, "a/b").as_deref(), Some("a/b"));
        assert_eq!(to_remote(&t, &[2], "a/b").as_deref(), Some("a/b"));
    }

    #[test]
    fn the_subscription_identifier_picks_the_line() {
        // Both lines match `a/b`; the identifier says which subscription delivered it.
        let t = [line("a/#", Out, "", "one/"), line("#", Out, "", "two/")];
        assert_eq!(to_remote(&t, &[2], "a/b").as_deref(), Some("two/a/b"));
        assert_eq!(to_remote(&t, &[1], "a/b").as_deref(), Some("one/a/b"));
        // Unknown identifiers fall back to the first line that maps it.
        assert_eq!(to_remote(&t, &[9], "a/b").as_deref(), Some("one/a/b"));
    }

    #[test]
    fn an_empty_pattern_maps_one_topic() {
        let t = [line("", Both, "here/status", "there/gateway/status")];
        assert_eq!(
            to_remote(&t, &[], "here/status").as_deref(),
            Some("there/gateway/status")
        );
        assert_eq!(to_remote(&t, &[], "here/status/x"), None);
        assert_eq!(
            to_local(&t, "there/gateway/status").as_deref(),
            Some("here/status")
        );
    }

    #[test]
    fn dollar_topics_are_not_matched_by_a_leading_wildcard() {
        let t = [line("#", Out, "", "")];
        assert_eq!(to_remote(&t, &[], "$SYS/broker/uptime"), None);
        let t = [line("$SYS/broker/#", Out, "", "edge/")];
        assert_eq!(
            to_remote(&t, &[], "$SYS/broker/uptime").as_deref(),
            Some("edge/$SYS/broker/uptime")
        );
    }
}
