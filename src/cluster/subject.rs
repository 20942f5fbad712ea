//! MQTT Topic Names and Topic Filters as NATS subjects, mapped the way nats-server's own MQTT
//! support maps them, so that NATS applications see the same subjects from Roost as from
//! nats-server:
//!
//! - `/` separates levels and becomes `.`; a leading `/` becomes `/.`, and a `/` before
//!   another `/` or at the end becomes `./`, so that an empty level is the token `/`
//!   (`a//b` is `a./.b`, `/a` is `/.a`, `a/` is `a./`);
//! - `.` inside a level becomes `//`;
//! - in a filter `+` becomes `*` and `#` becomes `>`, and `a/#` also needs `a` (MQTT's `#`
//!   matches the parent level, MQTT-4.7.1-2; NATS's `>` does not);
//! - white space (space, tab, CR, LF, FF) and DEL cannot be carried: such a topic is refused.
//!
//! Roost refuses two more cases: a level that is exactly `*` or `>` would be a NATS wildcard,
//! and a subject longer than [`MAX_MAPPED`] bytes would not fit nats-server's protocol line
//! (`max_control_line`, 4096 bytes by default), which closes the connection that sends it.

use std::fmt;

/// Why a topic or filter has no NATS subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unmappable {
    /// White space or DEL, which NATS subjects cannot carry.
    Character,
    /// A level `*` or `>`, which would be a NATS wildcard.
    WildcardLevel,
    /// A subject longer than NATS servers take in one protocol line.
    TooLong,
}

/// The longest topic or filter as a subject, prefix not counted (up to 256 bytes of prefix
/// and the rest of a protocol line fit in nats-server's default `max_control_line` of 4096).
pub(crate) const MAX_MAPPED: usize = 3328;

impl fmt::Display for Unmappable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Unmappable::Character => "white space or DEL cannot be carried by a NATS subject",
            Unmappable::WildcardLevel => "a level `*` or `>` would be a NATS wildcard",
            Unmappable::TooLong => "longer than a NATS subject may be (3,328 bytes once mapped)",
        })
    }
}

/// `Ok` if a Topic Name or Filter has a subject (without building it).
pub(crate) fn check(mqtt: &str) -> Result<(), Unmappable> {
    if mqtt.split('/').any(|level| level == "*" || level == ">") {
        return Err(Unmappable::WildcardLevel);
    }
    let mut mapped = 1;
    for b in mqtt.bytes() {
        match b {
            b' ' | b'\t' | b'\n' | b'\r' | 0x0c | 0x7f => return Err(Unmappable::Character),
            // `.` becomes `//`; a `/` may take a `/` token beside its `.`.
            b'.' | b'/' => mapped += 2,
            _ => mapped += 1,
        }
    }
    if mapped > MAX_MAPPED {
        return Err(Unmappable::TooLong);
    }
    Ok(())
}

/// The subject of Topic Name `topic` under `prefix`.
pub(crate) fn topic_subject(prefix: &str, topic: &str) -> Result<String, Unmappable> {
    check(topic)?;
    convert(prefix, topic)
}

/// The subjects a node subscribes to for Topic Filter `filter` (a Shared Subscription's
/// filter without its `$share/{group}/`): one, or two for a filter ending in `/#`.
pub(crate) fn filter_subjects(prefix: &str, filter: &str) -> Result<Vec<String>, Unmappable> {
    check(filter)?;
    let subject = convert(prefix, filter)?;
    let mut subjects = Vec::with_capacity(2);
    // `a/#` matches `a` too: subscribe to its subject as well (more than one token before
    // `>`, the prefix's not counted).
    if let Some(parent) = subject.strip_suffix(".>")
        && parent.len() > prefix.len()
    {
        subjects.push(parent.to_string());
    }
    subjects.insert(0, subject);
    Ok(subjects)
}

/// The Topic Name of `subject` (under `prefix.`), or `None` if it is not under it.
pub(crate) fn subject_topic(prefix: &str, subject: &str) -> Option<String> {
    let mapped = subject.strip_prefix(prefix)?.strip_prefix('.')?;
    let bytes = mapped.as_bytes();
    let mut topic = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'/' => match bytes.get(i + 1) {
                Some(b'.') => {
                    topic.push(b'/');
                    i += 1;
                }
                Some(b'/') => {
                    topic.push(b'.');
                    i += 1;
                }
                _ => {}
            },
            b'.' => topic.push(b'/'),
            b => topic.push(b),
        }
        i += 1;
    }
    // Only ASCII bytes were replaced by ASCII bytes: still UTF-8.
    String::from_utf8(topic).ok()
}

/// nats-server's conversion of a topic or filter (wildcards allowed; a Topic Name has none).
fn convert(prefix: &str, mqtt: &str) -> Result<String, Unmappable> {
    let bytes = mqtt.as_bytes();
    let mut out = String::with_capacity(prefix.len() + 1 + bytes.len() + 8);
    out.push_str(prefix);
    out.push('.');
    let start = out.len();
    let end = bytes.len().saturating_sub(1);
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b'/' => {
                if i == 0 || out.len() > start && out.ends_with('.') {
                    out.push_str("/.");
                } else if i == end || bytes[i + 1] == b'/' {
                    out.push_str("./");
                } else {
                    out.push('.');
                }
            }
            b' ' | b'\t' | b'\n' | b'\r' | 0x0c | 0x7f => return Err(Unmappable::Character),
            b'.' => out.push_str("//"),
            b'+' => out.push('*'),
            b'#' => out.push('>'),
            _ => {
                // Push the whole UTF-8 sequence at its first byte.
                if b.is_ascii() {
                    out.push(char::from(b));
                } else if mqtt.is_char_boundary(i)
                    && let Some(c) = mqtt[i..].chars().next()
                {
                    out.push(c);
                }
            }
        }
    }
    if out.len() > start && out.ends_with('.') {
        out.push('/');
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(topic: &str) -> String {
        topic_subject("p", topic).expect("mappable")
    }

    #[test]
    fn topics_map_as_nats_server_maps_them() {
        assert_eq!(t("foo"), "p.foo");
        assert_eq!(t("foo/bar"), "p.foo.bar");
        assert_eq!(t("foo//bar"), "p.foo./.bar");
        assert_eq!(t("/foo"), "p./.foo");
        assert_eq!(t("foo/"), "p.foo./");
        assert_eq!(t("/"), "p././");
        assert_eq!(t("//"), "p./././");
        assert_eq!(t("a///b"), "p.a././.b");
        assert_eq!(t("a.b/c"), "p.a//b.c");
        assert_eq!(t("temp/°C/ü"), "p.temp.°C.ü");
        assert_eq!(t("a*b/c>"), "p.a*b.c>");
    }

    #[test]
    fn filters_add_the_parent_of_a_trailing_hash() {
        let f = |filter: &str| filter_subjects("p", filter).expect("mappable");
        assert_eq!(f("a/+/c"), ["p.a.*.c"]);
        assert_eq!(f("a/#"), ["p.a.>", "p.a"]);
        assert_eq!(f("#"), ["p.>"]);
        assert_eq!(f("+"), ["p.*"]);
        assert_eq!(f("/#"), ["p./.>", "p./"]);
        assert_eq!(f("a//#"), ["p.a./.>", "p.a./"]);
    }

    #[test]
    fn what_nats_cannot_carry_is_refused() {
        assert_eq!(topic_subject("p", "a b"), Err(Unmappable::Character));
        assert_eq!(topic_subject("p", "a\tb"), Err(Unmappable::Character));
        assert_eq!(topic_subject("p", "a\u{7f}"), Err(Unmappable::Character));
        assert_eq!(topic_subject("p", "a/*/b"), Err(Unmappable::WildcardLevel));
        assert_eq!(topic_subject("p", ">"), Err(Unmappable::WildcardLevel));
        assert_eq!(
            filter_subjects("p", "a/>/#"),
            Err(Unmappable::WildcardLevel)
        );
        // What fits nats-server's protocol line (the bound counts `.` and `/` twice).
        let long = "x".repeat(MAX_MAPPED - 1);
        assert!(topic_subject("p", &long).is_ok());
        assert_eq!(
            topic_subject("p", &format!("{long}xx")),
            Err(Unmappable::TooLong)
        );
        let dots = ".".repeat(MAX_MAPPED / 2);
        assert_eq!(topic_subject("p", &dots), Err(Unmappable::TooLong));
        assert!(topic_subject("p", &".".repeat(MAX_MAPPED / 2 - 1)).is_ok());
    }

    #[test]
    fn subjects_map_back_to_their_topics() {
        for topic in [
            "foo", "foo/bar", "foo//bar", "/foo", "foo/", "/", "//", "a///b", "a.b/c", "a..b", ".",
            "./.", "temp/°C", "$SYS/x", "a*b",
        ] {
            assert_eq!(
                subject_topic("p", &t(topic)).as_deref(),
                Some(topic),
                "{topic}"
            );
        }
        assert_eq!(subject_topic("p", "q.foo"), None);
        assert_eq!(subject_topic("p", "pfoo"), None);
        // A NATS application's subject.
        assert_eq!(
            subject_topic("mqtt", "mqtt.sensors.t1").as_deref(),
            Some("sensors/t1")
        );
    }
}
