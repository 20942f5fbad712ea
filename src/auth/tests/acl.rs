//! ACL file semantics (mosquitto acl_file syntax) and subscription coverage.

use std::path::Path;

use crate::auth::acl_match::{Substitution, covers, substitute};
use crate::auth::{Access, Acl, AuthError};
use crate::topic;

use Access::{Read, Write};

fn acl(text: &str) -> Acl {
    Acl::parse(text, Path::new("/etc/roost/acl")).unwrap_or_else(|e| panic!("parse failed: {e}"))
}

fn parse_error(text: &str, line: usize, needle: &str) {
    match Acl::parse(text, Path::new("/etc/roost/acl")) {
        Err(e @ AuthError::Parse { .. }) => {
            let shown = e.to_string();
            assert!(
                shown.starts_with(&format!("/etc/roost/acl:{line}: ")),
                "{text:?}: {shown}"
            );
            assert!(shown.contains(needle), "{shown:?} lacks {needle:?}");
        }
        other => panic!("expected a parse error for {text:?}, got {other:?}"),
    }
}

const FILE: &str = "\
# Anonymous clients: lines before the first `user`.
topic read public/#
topic write public/anon-inbox

user alice
topic readwrite alice/#
topic deny alice/secret
topic read shared/+/status
topic write cmd/alice
topic sensors/#

user bob
topic read shared/#
# A deny before the grant still wins.
topic deny shared/private/#
topic read shared/private/notice
";

#[test]
fn sections_apply_to_their_clients_only() {
    let a = acl(FILE);
    // Anonymous section.
    assert!(a.check(None, "c1", "public/news", Read));
    assert!(!a.check(None, "c1", "public/news", Write));
    assert!(a.check(None, "c1", "public/anon-inbox", Write));
    assert!(!a.check(None, "c1", "alice/x", Read));
    // Named users never get the anonymous rules (mosquitto: a NULL-username ACL list).
    assert!(!a.check(Some("alice"), "c2", "public/news", Read));
    assert!(!a.check(Some("bob"), "c3", "public/news", Read));
    // A user's section is theirs alone.
    assert!(a.check(Some("alice"), "c2", "alice/notes", Write));
    assert!(!a.check(Some("bob"), "c3", "alice/notes", Write));
    assert!(!a.check(None, "c1", "alice/notes", Write));
    // A user without a section, and the empty username, get nothing.
    assert!(!a.check(Some("carol"), "c4", "public/news", Read));
    assert!(!a.check(Some(""), "c4", "public/news", Read));
}

#[test]
fn read_write_readwrite_and_default() {
    let a = acl(FILE);
    let alice = |t: &str, access| a.check(Some("alice"), "c", t, access);
    // readwrite
    assert!(alice("alice/a/b", Read) && alice("alice/a/b", Write));
    assert!(
        alice("alice", Write),
        "`alice/#` also matches its parent `alice`"
    );
    // read only
    assert!(alice("shared/x/status", Read));
    assert!(!alice("shared/x/status", Write));
    // write only
    assert!(alice("cmd/alice", Write));
    assert!(!alice("cmd/alice", Read));
    // no keyword: readwrite
    assert!(alice("sensors/t1", Read) && alice("sensors/t1", Write));
}

#[test]
fn deny_beats_grants_in_the_same_section() {
    let a = acl(FILE);
    assert!(!a.check(Some("alice"), "c", "alice/secret", Read));
    assert!(!a.check(Some("alice"), "c", "alice/secret", Write));
    assert!(
        a.check(Some("alice"), "c", "alice/secret/sub", Read),
        "deny is exact here"
    );
    assert!(a.check(Some("bob"), "c", "shared/public", Read));
    assert!(!a.check(Some("bob"), "c", "shared/private/x", Read));
    // A grant of a denied topic, even a more specific one, does not help (deny first).
    assert!(!a.check(Some("bob"), "c", "shared/private/notice", Read));
}

#[test]
fn denied_by_default() {
    let empty = acl("# nothing\n\n");
    assert!(!empty.check(None, "c", "a", Read));
    assert!(!empty.check(Some("u"), "c", "a", Write));
    assert!(empty.client(Some("u"), "c").is_empty());
    let a = acl(FILE);
    assert!(!a.check(Some("alice"), "c", "elsewhere", Read));
    assert!(!a.check(Some("alice"), "c", "elsewhere", Write));
}

#[test]
fn user_sections_merge_and_names_may_have_spaces() {
    let a = acl(
        "user John Smith\ntopic read a\nuser x\ntopic read b\nuser John Smith\ntopic write c\n",
    );
    assert!(a.check(Some("John Smith"), "c", "a", Read));
    assert!(a.check(Some("John Smith"), "c", "c", Write));
    assert!(!a.check(Some("John Smith"), "c", "b", Read));
    assert!(!a.check(Some("John"), "c", "a", Read));
}

#[test]
fn topics_may_contain_spaces_after_an_access_keyword() {
    let a = acl("topic read my topic/with spaces\n");
    assert!(a.check(None, "c", "my topic/with spaces", Read));
}

#[test]
fn patterns_substitute_username_and_client_id() {
    let a = acl("pattern readwrite users/%u/#\n\
         pattern write devices/%c/status\n\
         pattern read both/%u/%c\n\
         pattern read fleet/dev-%c\n\
         pattern read literal/%x/100%\n");
    assert!(a.check(Some("alice"), "d1", "users/alice/inbox", Read));
    assert!(a.check(Some("alice"), "d1", "users/alice/inbox", Write));
    assert!(!a.check(Some("alice"), "d1", "users/bob/inbox", Read));
    assert!(a.check(Some("alice"), "d1", "devices/d1/status", Write));
    assert!(!a.check(Some("alice"), "d1", "devices/d2/status", Write));
    assert!(!a.check(Some("alice"), "d1", "devices/d1/status", Read));
    assert!(a.check(Some("alice"), "d1", "both/alice/d1", Read));
    assert!(!a.check(Some("alice"), "d1", "both/d1/alice", Read));
    // Substituted inside a level too (mosquitto 2.0 replaces %c/%u anywhere).
    assert!(a.check(Some("alice"), "d1", "fleet/dev-d1", Read));
    // Other `%` sequences are literal.
    assert!(a.check(Some("alice"), "d1", "literal/%x/100%", Read));
    // Patterns apply to every client, anonymous ones included, except those using %u.
    assert!(a.check(None, "d9", "devices/d9/status", Write));
    assert!(!a.check(None, "d9", "users/d9/inbox", Read));
    assert!(!a.check(None, "d9", "both//d9", Read));
}

#[test]
fn section_decides_before_patterns() {
    // mosquitto checks the client's own section first (denials, then grants), then the
    // patterns: a section grant is not undone by a pattern denial, and vice versa.
    let a = acl(
        "pattern deny users/%u/locked\npattern read users/%u/#\nuser alice\ntopic read users/alice/locked\ntopic deny users/alice/hidden\n",
    );
    assert!(a.check(Some("alice"), "c", "users/alice/locked", Read));
    assert!(!a.check(Some("alice"), "c", "users/alice/hidden", Read));
    assert!(a.check(Some("alice"), "c", "users/alice/other", Read));
    assert!(!a.check(Some("bob"), "c", "users/bob/locked", Read));
    assert!(a.check(Some("bob"), "c", "users/bob/other", Read));
}

#[test]
fn wildcards_in_username_or_client_id_cannot_widen_patterns() {
    let a = acl(
        "pattern readwrite users/%u/#\npattern read devices/%c/#\nuser +\ntopic read plus/own\n",
    );
    // `+` or `#` in either value: no pattern access at all (mosquitto 2.0).
    for (user, cid) in [
        ("+", "c"),
        ("#", "c"),
        ("a+b", "c"),
        ("alice", "+"),
        ("alice", "#"),
    ] {
        for topic in [
            "users/alice/x",
            "users/+/x",
            "users/#",
            "devices/c/x",
            "devices/alice/x",
        ] {
            assert!(
                !a.check(Some(user), cid, topic, Read),
                "{user} {cid} {topic}"
            );
        }
    }
    assert!(!a.check(Some("+"), "c", "users/+/#", Read));
    assert!(!a.check(Some("alice"), "#", "devices/#", Read));
    // The client's own section still applies (mosquitto checks it before the patterns).
    assert!(a.check(Some("+"), "c", "plus/own", Read));
    // An honest client is unaffected.
    assert!(a.check(Some("alice"), "c", "users/alice/x", Read));
    assert!(a.check(Some("alice"), "c", "devices/c/x", Read));
}

#[test]
fn slash_or_empty_values_cannot_reach_other_subtrees() {
    let a = acl("pattern readwrite users/%u/#\npattern read devices/%c/#\n");
    // Username `bob/x` would turn `users/%u/#` into `users/bob/x/#`, inside bob's subtree.
    assert!(!a.check(Some("bob/x"), "c", "users/bob/x/inbox", Read));
    assert!(!a.check(Some("bob/x"), "c", "users/bob/x/inbox", Write));
    assert!(!a.check(Some(""), "c", "users//inbox", Read));
    assert!(!a.check(Some("eve"), "bob/x", "devices/bob/x/1", Read));
    // Only the patterns that need the bad value are dropped.
    assert!(a.check(Some("bob/x"), "c", "devices/c/1", Read));
    assert!(a.check(Some("eve"), "bob/x", "users/eve/1", Read));

    // A denial that cannot be applied safely denies every pattern-based access (fail closed).
    let d = acl("pattern deny devices/%c/secret\npattern read devices/#\n");
    assert!(d.check(Some("eve"), "c1", "devices/c2/secret", Read));
    assert!(!d.check(Some("eve"), "c1", "devices/c1/secret", Read));
    assert!(!d.check(Some("eve"), "a/b", "devices/a/b/secret", Read));
    assert!(!d.check(Some("eve"), "a/b", "devices/x", Read));
    assert!(d.client(Some("eve"), "a/b").has_deny_rules());
}

#[test]
fn substitution_outcomes() {
    let topic = |s: &str| Substitution::Topic(s.to_owned());
    assert_eq!(substitute("a/%u/%c", Some("u"), "c"), topic("a/u/c"));
    assert_eq!(substitute("%%u", Some("u"), "c"), topic("%u"));
    assert_eq!(substitute("a/%u", None, "c"), Substitution::NoUsername);
    assert_eq!(substitute("a/%c/%u", None, "x/y"), Substitution::NoUsername);
    assert_eq!(substitute("a/%c", None, "x/y"), Substitution::Unsafe);
    assert_eq!(substitute("a/%c", None, ""), Substitution::Unsafe);
    assert_eq!(substitute("a/%c", None, "nul\0"), Substitution::Unsafe);
    assert_eq!(substitute("a/%c", None, "ok"), topic("a/ok"));
    assert_eq!(substitute("100%", None, "ok"), topic("100%"));
}

#[test]
fn dollar_topics_need_dollar_rules() {
    let a = acl("topic readwrite #\ntopic read +/status\nuser admin\ntopic read $SYS/#\n");
    assert!(a.check(None, "c", "anything/at/all", Write));
    assert!(!a.check(None, "c", "$SYS/broker/uptime", Read));
    assert!(!a.check(None, "c", "$SYS/broker/uptime", Write));
    assert!(!a.check(None, "c", "$SYS/status", Read));
    assert!(!a.check(None, "c", "$SYS/#", Read));
    assert!(a.check(None, "c", "#", Read));
    assert!(a.check(Some("admin"), "c", "$SYS/broker/uptime", Read));
    assert!(a.check(Some("admin"), "c", "$SYS/#", Read));
    assert!(a.check(Some("admin"), "c", "$SYS", Read));
    assert!(!a.check(Some("admin"), "c", "$SYS/broker/uptime", Write));
}

#[test]
fn subscriptions_need_a_covering_rule() {
    let a = acl("topic read a/#\ntopic read b/c\ntopic read d/+\ntopic read e/+/f/#\n");
    let sub = |f: &str| a.check(None, "c", f, Read);
    assert!(sub("a/#") && sub("a/b") && sub("a/+") && sub("a/+/x/#") && sub("a"));
    assert!(sub("b/c"));
    assert!(!sub("b/#") && !sub("b/+") && !sub("#") && !sub("+/c"));
    assert!(sub("d/x") && sub("d/+") && sub("d/"));
    assert!(!sub("d/#") && !sub("d/+/x") && !sub("d"));
    assert!(sub("e/x/f") && sub("e/+/f/#") && sub("e/+/f/+/g"));
    assert!(!sub("e/#") && !sub("e/+/#") && !sub("e/x"));
    // Invalid filters are refused outright.
    assert!(!sub("a/b#") && !sub("a/#/b") && !sub("") && !sub("a/b+"));
}

#[test]
fn coverage_matches_mosquitto_unit_tests() {
    // (ACL, subscription, covered) from mosquitto's test/unit/libcommon/topic_test.c
    // (TEST_sub_match_acl and TEST_acl_pattern_wildcard_wildcard, develop branch).
    let cases = [
        ("foo/+/bar", "foo/#", false),
        ("foo/+/ba℞/#", "foo/baz/ba℞", true),
        ("foo/+/ba℞/#", "foo/baz/ba℞/+", true),
        ("foo/+/ba℞/#", "foo/baz/ba℞/#", true),
        ("foo/+/ba℞/#", "foo/baz/+/#", false),
        ("/+//#", "/foo///#", true),
        ("#", "$SYS/uptime", false),
        ("$SYS/#", "$SYS/uptime", true),
        ("$SYS/+/#", "$SYS/uptime", true),
        ("$SYS/+/#", "$SYS/broker/uptime", true),
        ("#", "#", true),
        ("#", "+", true),
        ("/#", "+", false),
        ("/#", "/+", true),
        ("/+", "#", false),
        ("/+", "+", false),
        ("+/+", "topic/topic", true),
        ("+/+", "topic/topic/", false),
        ("+", "#", false),
        ("+", "+", true),
        ("a/b/c/d/e", "a/b/c/d/e", true),
        ("a/b/ /d/e", "a/b/c/d/e", false),
        ("a/b/c/d/e", "a/b/c/d/+", false),
        ("a/b/c/d/+", "a/b/c/d/e", true),
        ("a/b/c/d/", "a/b/c/d/+", false),
        ("a/b/c/d/+", "a/b/c/d/", true),
        ("$SYS/#", "$SYS/broker/#", true),
        ("$SYS/#", "$SYS/+/#", true),
        ("$SYS/#", "$SYS", true),
        ("$SYS/+", "$SYS/#", false),
        ("$SYS/+/a", "$SYS/a/+", false),
        ("$SYS/+", "$SYS/+/a", false),
        ("$SYS/broker/uptime", "$SYS/broker/#", false),
        ("#", "$SYS/broker/#", false),
    ];
    for (rule, filter, expected) in cases {
        assert_eq!(
            covers(rule, filter),
            expected,
            "ACL {rule} / subscription {filter}"
        );
        let a = acl(&format!("topic read {rule}\n"));
        assert_eq!(
            a.check(None, "c", filter, Read),
            expected,
            "{rule} / {filter}"
        );
    }
}

#[test]
fn coverage_of_a_topic_name_is_ordinary_matching() {
    let rules = [
        "#", "+", "a/#", "a/+", "+/b", "a/b", "/#", "+/+", "$SYS/#", "a//#", "+/#",
    ];
    let topics = [
        "a", "a/b", "a/b/c", "/", "/a", "a/", "a//b", "$SYS/x", "$SYS", "b", "",
    ];
    for rule in rules {
        for t in topics {
            assert_eq!(covers(rule, t), topic::matches(rule, t), "{rule} vs {t}");
        }
    }
}

#[test]
fn write_needs_a_topic_name() {
    let a = acl("topic readwrite #\n");
    assert!(a.check(None, "c", "a/b", Write));
    assert!(!a.check(None, "c", "a/+", Write));
    assert!(!a.check(None, "c", "a/#", Write));
    assert!(!a.check(None, "c", "", Write));
}

#[test]
fn deny_rules_inside_a_granted_subscription() {
    let a = acl(
        "user bob\ntopic read shared/#\ntopic deny shared/private\nuser alice\ntopic read shared/#\n",
    );
    let bob = a.client(Some("bob"), "c");
    assert!(
        bob.check("shared/#", Read),
        "granted: the deny covers only part of it"
    );
    assert!(
        !bob.check("shared/private", Read),
        "delivery of the denied topic"
    );
    assert!(
        bob.has_deny_rules(),
        "so the broker must check each delivery"
    );
    let alice = a.client(Some("alice"), "c");
    assert!(alice.check("shared/#", Read));
    assert!(!alice.has_deny_rules());
}

#[test]
fn malformed_lines_name_the_line() {
    parse_error("# c\n\nfoo bar\n", 3, "unknown keyword \"foo\"");
    parse_error("user\n", 1, "`user` needs a username");
    parse_error("user   \n", 1, "`user` needs a username");
    parse_error("topic\n", 1, "missing topic");
    parse_error("topic read\n", 1, "missing topic after \"read\"");
    parse_error("user a\ntopic rw a/b\n", 2, "unknown access \"rw\"");
    parse_error("topic read a/#/b\n", 1, "invalid topic filter");
    parse_error("pattern read a/%u+\n", 1, "invalid topic filter");
    parse_error(
        "topic read a # trailing comment\n",
        1,
        "invalid topic filter",
    );
    parse_error("Topic read a\n", 1, "unknown keyword");
}

#[test]
fn comments_blank_lines_and_crlf() {
    let a = acl("# c\r\n   # indented\r\n\r\n\ttopic read x/y \r\n");
    assert!(a.check(None, "c", "x/y", Read));
}

#[test]
fn load_reads_the_file() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("acl");
    std::fs::write(&path, FILE).unwrap_or_else(|e| panic!("{e}"));
    let a = Acl::load(&path).unwrap_or_else(|e| panic!("{e}"));
    assert!(a.check(Some("alice"), "c", "alice/x", Write));
    std::fs::write(&path, "topic read ok\nbad line\n").unwrap_or_else(|e| panic!("{e}"));
    match Acl::load(&path) {
        Err(AuthError::Parse {
            path: p, line: 2, ..
        }) => assert_eq!(p, path),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        Acl::load(&dir.path().join("missing")),
        Err(AuthError::Io { .. })
    ));
}
