//! Topic names and filters: validation, matching, the subscription trie and the retained index.
//!
//! - [`valid_topic_name`] and [`valid_topic_filter`] check the MQTT rules for names and filters.
//! - [`matches`] is the reference matcher: the simplest correct statement of the matching rules.
//! - [`SubscriptionTrie`] finds the subscriptions matching a published topic (the hot path).
//! - [`RetainedIndex`] finds the retained messages matching a new subscription's filter.
//!
//! All three agree exactly (cross-checked by tests). The rules, from MQTT 3.1.1 and 5.0
//! section 4.7: levels are separated by `/` and compared byte for byte, with no normalization
//! (MQTT-4.7.3-4); empty levels are real levels (`a//b` has three levels, `/` has two); `+`
//! matches exactly one level, which may be empty; `#` as the last level matches its parent
//! level and any number of child levels (`a/#` matches `a`, `a/`, `a/b/c`); a filter whose first
//! level is `+` or `#` does not match a topic starting with `$` (MQTT-4.7.2-1).
//!
//! Shared subscriptions (`$share/{ShareName}/{filter}`) are split by [`shared`]; the trie and
//! the matchers see only the filter part.
//!
//! For an invalid filter (see [`valid_topic_filter`]) the behavior is defined but not useful:
//! a level that merely contains `+` or `#` (`a+`) is a literal level, and a `#` level that is
//! not the last level matches nothing. Callers should validate filters first.

mod retained;
mod trie;

pub(crate) use retained::RetainedIndex;
pub(crate) use trie::SubscriptionTrie;

/// True if `name` is a valid topic name for PUBLISH: at least one byte, no wildcard characters
/// and no U+0000 (MQTT-4.7.3-1, MQTT-4.7.3-2, MQTT-3.3.2-2).
pub(crate) fn valid_topic_name(name: &str) -> bool {
    !name.is_empty() && !name.bytes().any(|b| b == b'+' || b == b'#' || b == 0)
}

/// True if `filter` is a valid topic filter: at least one byte, no U+0000, `+` only as a whole
/// level and `#` only as the whole last level (MQTT-4.7.1-2, MQTT-4.7.1-3, MQTT-4.7.3-1).
pub(crate) fn valid_topic_filter(filter: &str) -> bool {
    if filter.is_empty() || filter.as_bytes().contains(&0) {
        return false;
    }
    let mut levels = filter.split('/').peekable();
    while let Some(level) = levels.next() {
        let last = levels.peek().is_none();
        match level {
            "#" if last => {}
            "+" => {}
            _ if level.contains(['+', '#']) => return false,
            _ => {}
        }
    }
    true
}

/// The prefix of a Shared Subscription's Topic Filter (MQTT 5.0 4.8.2).
pub(crate) const SHARE_PREFIX: &str = "$share/";

/// The parts of a Shared Subscription's Topic Filter `$share/{ShareName}/{filter}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SharedFilter<'a> {
    /// The ShareName: the consumer group.
    pub share_name: &'a str,
    /// The Topic Filter that messages are matched against.
    pub filter: &'a str,
}

/// Splits a filter that starts with `$share/`: `None` if it is an ordinary filter,
/// `Some(Err(()))` if it is a Shared Subscription that is not valid: the ShareName must be at
/// least one character without `/`, `+` or `#`, followed by `/` and a valid Topic Filter
/// (MQTT-4.8.2-1, MQTT-4.8.2-2).
#[allow(clippy::result_unit_err)]
pub(crate) fn shared(filter: &str) -> Option<Result<SharedFilter<'_>, ()>> {
    let rest = filter.strip_prefix(SHARE_PREFIX)?;
    let parsed = rest.split_once('/').and_then(|(share_name, filter)| {
        let name_ok = !share_name.is_empty() && !share_name.contains(['+', '#', '\0']);
        (name_ok && valid_topic_filter(filter)).then_some(SharedFilter { share_name, filter })
    });
    Some(parsed.ok_or(()))
}

/// True if the topic filter `filter` matches the topic name `topic`.
///
/// This is the reference matcher; [`SubscriptionTrie`] and [`RetainedIndex`] implement the same
/// rules (see the module documentation). It does not allocate.
pub(crate) fn matches(filter: &str, topic: &str) -> bool {
    let mut filter_levels = filter.split('/');
    let mut topic_levels = topic.split('/');
    // MQTT-4.7.2-1: a filter starting with a wildcard does not match a `$` topic.
    if topic.starts_with('$') && matches!(filter_levels.clone().next(), Some("+" | "#")) {
        return false;
    }
    loop {
        match (filter_levels.next(), topic_levels.next()) {
            // `#` matches the rest, including nothing (the parent level), if it is the last level.
            (Some("#"), _) => return filter_levels.next().is_none(),
            (None, None) => return true,
            (Some("+"), Some(_)) => {}
            (Some(f), Some(t)) if f == t => {}
            _ => return false,
        }
    }
}

/// Splits off the first level of `rest`: returns the level and what follows the separator, or
/// `None` if this was the last level. `"a/b"` gives `("a", Some("b"))`, `"a/"` gives
/// `("a", Some(""))`, `"a"` gives `("a", None)`.
fn split_level(rest: &str) -> (&str, Option<&str>) {
    match rest.find('/') {
        Some(i) => (&rest[..i], Some(&rest[i + 1..])),
        None => (rest, None),
    }
}

#[cfg(test)]
mod test_support;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_name_validation() {
        // MQTT-4.7.3-1: at least one character.
        assert!(!valid_topic_name(""));
        // MQTT-4.7.1-1, MQTT-3.3.2-2: no wildcards in a topic name.
        assert!(!valid_topic_name("a/+"));
        assert!(!valid_topic_name("a/#"));
        assert!(!valid_topic_name("a+b"));
        assert!(!valid_topic_name("#"));
        // MQTT-4.7.3-2: no U+0000.
        assert!(!valid_topic_name("a\0b"));
        assert!(valid_topic_name("/"));
        assert!(valid_topic_name("a//b"));
        assert!(valid_topic_name("$SYS/broker"));
        assert!(valid_topic_name("ünïcödé/日本"));
        assert!(valid_topic_name(" "));
    }

    #[test]
    fn shared_subscription_filters() {
        fn ok(f: &str) -> Option<SharedFilter<'_>> {
            shared(f).and_then(Result::ok)
        }
        assert_eq!(shared("a/b"), None);
        assert_eq!(shared("$share"), None, "no slash: an ordinary filter");
        assert_eq!(shared("$SHARE/g/t"), None, "case matters");
        assert_eq!(
            ok("$share/g/a/+"),
            Some(SharedFilter {
                share_name: "g",
                filter: "a/+"
            })
        );
        assert_eq!(ok("$share/g/#").map(|s| s.filter), Some("#"));
        assert_eq!(ok("$share/g//").map(|s| s.filter), Some("/"));
        // MQTT-4.8.2-1: a ShareName of at least one character.
        assert_eq!(shared("$share//t"), Some(Err(())));
        // MQTT-4.8.2-2: no `/`, `+` or `#` in it, and a Topic Filter after it.
        assert_eq!(shared("$share/g+/t"), Some(Err(())));
        assert_eq!(shared("$share/#"), Some(Err(())));
        assert_eq!(shared("$share/+/t"), Some(Err(())));
        assert_eq!(shared("$share/g"), Some(Err(())));
        assert_eq!(shared("$share/g/"), Some(Err(())));
        assert_eq!(shared("$share/g/a/#/b"), Some(Err(())));
    }

    #[test]
    fn topic_filter_validation() {
        // MQTT-4.7.3-1: at least one character.
        assert!(!valid_topic_filter(""));
        // MQTT-4.7.3-2: no U+0000.
        assert!(!valid_topic_filter("a/\0"));
        assert!(!valid_topic_filter("\0"));
        // MQTT-4.7.1-3: `+` must occupy an entire level.
        assert!(!valid_topic_filter("a+/b"));
        assert!(!valid_topic_filter("sport+"));
        assert!(!valid_topic_filter("a/+b"));
        assert!(!valid_topic_filter("++"));
        assert!(valid_topic_filter("+"));
        assert!(valid_topic_filter("+/tennis/#"));
        assert!(valid_topic_filter("sport/+/player1"));
        assert!(valid_topic_filter("+/+"));
        assert!(valid_topic_filter("/+"));
        // MQTT-4.7.1-2: `#` alone or after a separator, and only as the last level.
        assert!(!valid_topic_filter("sport/tennis#"));
        assert!(!valid_topic_filter("sport/tennis/#/ranking"));
        assert!(!valid_topic_filter("#/a"));
        assert!(!valid_topic_filter("##"));
        assert!(!valid_topic_filter("a/#/"));
        assert!(valid_topic_filter("#"));
        assert!(valid_topic_filter("a/#"));
        assert!(valid_topic_filter("/#"));
        assert!(valid_topic_filter("+/#"));
        // Empty levels are allowed.
        assert!(valid_topic_filter("/"));
        assert!(valid_topic_filter("a//b"));
        assert!(valid_topic_filter("ü/日本/+"));
        assert!(valid_topic_filter("$SYS/#"));
        assert!(valid_topic_filter("$share/group/a/+"));
    }

    #[test]
    fn spec_matching_examples() {
        // Section 4.7.1.2 (multi-level wildcard), MQTT-4.7.1-2.
        assert!(matches("sport/tennis/player1/#", "sport/tennis/player1"));
        assert!(matches(
            "sport/tennis/player1/#",
            "sport/tennis/player1/ranking"
        ));
        assert!(matches(
            "sport/tennis/player1/#",
            "sport/tennis/player1/score/wimbledon"
        ));
        assert!(matches("sport/#", "sport"));
        assert!(!matches("sport/tennis/player1/#", "sport/tennis/player2"));
        // Section 4.7.1.3 (single-level wildcard), MQTT-4.7.1-3.
        assert!(matches("sport/tennis/+", "sport/tennis/player1"));
        assert!(matches("sport/tennis/+", "sport/tennis/player2"));
        assert!(!matches("sport/tennis/+", "sport/tennis/player1/ranking"));
        assert!(matches("sport/+", "sport/"));
        assert!(!matches("sport/+", "sport"));
        assert!(!matches("+", "/finance"));
        assert!(matches("+/+", "/finance"));
        assert!(matches("/+", "/finance"));
        // Section 4.7.2, MQTT-4.7.2-1: wildcards at the start do not match `$` topics.
        assert!(!matches("#", "$SYS/monitor/Clients"));
        assert!(!matches("+/monitor/Clients", "$SYS/monitor/Clients"));
        assert!(matches("$SYS/#", "$SYS/monitor/Clients"));
        assert!(matches("$SYS/#", "$SYS/x"));
        assert!(matches("$SYS/#", "$SYS"));
        assert!(matches("$SYS/monitor/+", "$SYS/monitor/Clients"));
        assert!(!matches("+", "$"));
        assert!(!matches("#", "$"));
        assert!(!matches("+/#", "$SYS"));
        // `$` only matters as the first character of the topic.
        assert!(matches("#", "a/$SYS"));
        assert!(matches("+/+", "a/$x"));
        assert!(matches("a/+", "a/$"));
    }

    #[test]
    fn empty_levels_are_levels() {
        assert!(matches("a//b", "a//b"));
        assert!(!matches("a/b", "a//b"));
        assert!(matches("a/+/b", "a//b"));
        assert!(matches("+/+", "/x"));
        assert!(matches("+/+", "a/"));
        assert!(matches("+/+", "/"));
        assert!(!matches("+/+", "a"));
        assert!(matches("#", "/"));
        assert!(matches("/#", "/"));
        assert!(matches("/#", "/a/b"));
        assert!(!matches("/#", "a"));
        assert!(matches("a/#", "a"));
        assert!(matches("a/#", "a/"));
        assert!(matches("a/#", "a//"));
        assert!(!matches("a/#", "ab"));
        assert!(!matches("a/#", "b/a"));
        assert!(matches("+", ""));
        assert!(matches("/", "/"));
        assert!(!matches("/", "a"));
        assert!(!matches("+", "/"));
        assert!(matches("+/#", "a"));
        assert!(matches("a/+/#", "a/b"));
        assert!(!matches("a/+/#", "a"));
    }

    #[test]
    fn byte_exact_comparison() {
        // MQTT-4.7.3-4: no normalization, no case folding.
        assert!(!matches("Sport", "sport"));
        assert!(!matches("café", "cafe\u{301}"));
        assert!(matches("café/+", "café/x"));
        assert!(matches("+/日本", "ü/日本"));
        assert!(matches("#", "日本"));
        assert!(!matches("a ", "a"));
        // Multi-byte first characters must not panic (the mqttbytes matcher does).
        assert!(!matches("ü", "日"));
        assert!(matches("ü/#", "ü"));
    }

    #[test]
    fn invalid_filters_have_defined_behavior() {
        // Not valid filters, but the matcher, the trie and the retained index agree on them.
        assert!(!matches("#/a", "x/a"));
        assert!(!matches("a/#/b", "a/x/b"));
        assert!(matches("a+", "a+"));
        assert!(!matches("a+", "ab"));
        assert!(matches("", ""));
        assert!(!matches("", "a"));
    }

    #[test]
    fn split_level_cases() {
        assert_eq!(split_level("a/b"), ("a", Some("b")));
        assert_eq!(split_level("a/"), ("a", Some("")));
        assert_eq!(split_level("/"), ("", Some("")));
        assert_eq!(split_level("a"), ("a", None));
        assert_eq!(split_level(""), ("", None));
        assert_eq!(split_level("日/本"), ("日", Some("本")));
    }
}
