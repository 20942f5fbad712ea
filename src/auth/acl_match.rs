//! Matching ACL topics against published topics and subscription filters, and `%u`/`%c`
//! substitution in ACL patterns.

use crate::topic;

/// True if the ACL topic filter `rule` applies to `subject`: a topic name (publish, delivery)
/// or a subscription filter.
///
/// - A topic name (no `+` or `#`) uses ordinary MQTT matching ([`topic::matches`]), including
///   MQTT-4.7.2-1: `#` and `+/...` never match a topic starting with `$`.
/// - A filter with wildcards is matched by *coverage*: the rule applies only if every topic the
///   filter can match is matched by the rule (see [`covers`]).
pub(crate) fn applies(rule: &str, subject: &str) -> bool {
    if subject.contains(['+', '#']) {
        covers(rule, subject)
    } else {
        topic::matches(rule, subject)
    }
}

/// True if every topic matched by the subscription filter `filter` is also matched by the ACL
/// topic filter `rule`, i.e. the rule grants (or denies) the whole subscription.
///
/// This is the rule mosquitto adopted for subscriptions in its `mosquitto_sub_matches_acl`
/// (mosquitto's develop branch, with unit tests such as: ACL `foo/+/bar` does not cover
/// `foo/#`; `#` covers `+` and `#`; `/#` does not cover `+`; `$SYS/#` covers `$SYS/broker/#`
/// and `$SYS`; `$SYS/+` does not cover `$SYS/#`; `#` does not cover `$SYS/broker/#`). Level by
/// level: a literal rule level covers only the same literal; `+` covers any single level,
/// literal or `+`, but not `#`; a final `#` covers whatever remains, including nothing (the
/// parent level) and wildcards. A filter whose first level starts with `$` is covered only by
/// a rule whose first level is not a wildcard (MQTT-4.7.2-1, and mosquitto's rule that a `$`
/// subscription needs a `$` ACL).
///
/// Both arguments are assumed to be valid topic filters.
pub(crate) fn covers(rule: &str, filter: &str) -> bool {
    let mut rule_levels = rule.split('/');
    let mut filter_levels = filter.split('/');
    if filter.starts_with('$') && matches!(rule_levels.clone().next(), Some("+" | "#")) {
        return false;
    }
    loop {
        match (rule_levels.next(), filter_levels.next()) {
            // A final `#` covers the rest, whatever it is (or nothing).
            (Some("#"), _) => return rule_levels.next().is_none(),
            (None, None) => return true,
            // `+` covers one level of any kind except `#` (which can be many levels).
            (Some("+"), Some(level)) if level != "#" => {}
            // A literal covers only itself (never a wildcard level).
            (Some(r), Some(f)) if r == f && r != "+" => {}
            _ => return false,
        }
    }
}

/// The outcome of substituting `%u` and `%c` in an ACL pattern for one client.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Substitution {
    /// The pattern with the substitutions made.
    Topic(String),
    /// The pattern uses `%u` but the client is anonymous: the pattern does not apply to it
    /// (mosquitto skips such patterns).
    NoUsername,
    /// A value to substitute could widen the pattern (it contains `/`, `+`, `#` or U+0000, or
    /// is empty): the pattern must not be used as written.
    Unsafe,
}

/// True if `pattern` contains `%` followed by `which` (`u` or `c`).
pub(crate) fn uses_placeholder(pattern: &str, which: u8) -> bool {
    pattern.as_bytes().windows(2).any(|w| w == [b'%', which])
}

/// True if substituting `value` into a topic level can only ever produce that one literal
/// level: no level separator, no wildcard, no U+0000, not empty.
fn safe_value(value: &str) -> bool {
    !value.is_empty() && !value.contains(['/', '+', '#', '\0'])
}

/// Replaces each `%u` in `pattern` with `username` and each `%c` with `client_id`. Any other
/// `%` is literal. As in mosquitto 2.0's acl_file, the placeholders are replaced wherever they
/// appear, also inside a level (`dev-%c`).
pub(crate) fn substitute(pattern: &str, username: Option<&str>, client_id: &str) -> Substitution {
    if username.is_none() && uses_placeholder(pattern, b'u') {
        return Substitution::NoUsername;
    }
    let mut out = String::with_capacity(pattern.len() + 16);
    let mut rest = pattern;
    while let Some(i) = rest.find('%') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let value = match after.as_bytes().first() {
            Some(b'u') => match username {
                Some(u) => u,
                None => return Substitution::NoUsername,
            },
            Some(b'c') => client_id,
            _ => {
                out.push('%');
                rest = after;
                continue;
            }
        };
        if !safe_value(value) {
            return Substitution::Unsafe;
        }
        out.push_str(value);
        rest = &after[1..];
    }
    out.push_str(rest);
    Substitution::Topic(out)
}
