//! mosquitto `$7$` / `$6$` hashes: real lines from mosquitto_passwd, and a live interop check.

use std::path::Path;
use std::process::Command;

use crate::auth::PasswordFile;
use crate::auth::mosquitto_hash::MosquittoHash;

/// Produced by Debian's mosquitto_passwd 2.0.11: `mosquitto_passwd -b -c /tmp/x user secret`.
const USER_SECRET_7: &str = "user:$7$101$oK9VB2I9UdBZtrOM$iX/MnRWJCFUx7x0yVhNJcNiXW4HefMrl502Q0ppI+G4TNlagsuFqXI5BdyXGni74aVNs8EK/caZ5QOxCyZO1zg==";
/// `mosquitto_passwd -b /tmp/x bob 'p:a ss'` (a password with ':' and a space).
const BOB_7: &str = "bob:$7$101$8WI/UMPju5MUVm5u$iPW6DCCfnpzeiv5m4rI/N0MAS4h+upQ6f0MzHwC5bakyPs2qiEzqvNou5ib+goUt0lB1u2us24aVJCqXNJRd9w==";
/// `mosquitto_passwd -b -c /tmp/z 'jürgen' 'pässwörd'` (UTF-8 user and password).
const JURGEN_7: &str = "jürgen:$7$101$JapjU9iCwdAOmRwp$WA8lVxKSnCutg0ZrrOjuCZH0bC5cet3cUeGOMkC1f5MIq8gGUfxm5UZaGR1+NfCgJUTeWB4DIySmo5Veglrzgg==";
/// `mosquitto_passwd -H sha512 -b /tmp/x old secret`: the mosquitto 1.x format.
const OLD_6: &str = "old:$6$4MgAFjabN5Vnqe8P$/eoMU35Q8SsEHYpvzDOroApDvd4NvH2w9RyAzV6vLa7/hagdsjyEtrmms81sghG+huBhP4bC1qqjyRwehI0Izg==";

fn file(text: &str) -> PasswordFile {
    match PasswordFile::parse(text, Path::new("test.pw")) {
        Ok(f) => f,
        Err(e) => panic!("parse failed: {e}"),
    }
}

#[test]
fn real_mosquitto_2_pbkdf2_lines_verify() {
    let pw = file(&format!("{USER_SECRET_7}\n{BOB_7}\n{JURGEN_7}\n"));
    assert!(pw.verify("user", b"secret"));
    assert!(!pw.verify("user", b"Secret"));
    assert!(!pw.verify("user", b"secret\n"));
    assert!(!pw.verify("user", b""));
    assert!(pw.verify("bob", b"p:a ss"));
    assert!(!pw.verify("bob", b"p:a"));
    assert!(pw.verify("jürgen", "pässwörd".as_bytes()));
    assert!(!pw.verify("jurgen", "pässwörd".as_bytes()));
    assert!(!pw.verify("nobody", b"secret"));
}

#[test]
fn real_mosquitto_1_sha512_line_verifies() {
    let pw = file(OLD_6);
    assert!(pw.verify("old", b"secret"));
    assert!(!pw.verify("old", b"secreT"));
}

#[test]
fn mosquitto_2_format_details() {
    // What mosquitto 2.0 writes: 101 iterations, 12-byte salt, 64-byte SHA-512 output.
    let hash = USER_SECRET_7.split_once(':').map(|(_, h)| h).unwrap_or("");
    match MosquittoHash::parse(hash) {
        Ok(MosquittoHash::Pbkdf2Sha512 { iterations, .. }) => assert_eq!(iterations, 101),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn malformed_mosquitto_hashes_are_rejected() {
    let salt = "oK9VB2I9UdBZtrOM";
    let hash =
        "iX/MnRWJCFUx7x0yVhNJcNiXW4HefMrl502Q0ppI+G4TNlagsuFqXI5BdyXGni74aVNs8EK/caZ5QOxCyZO1zg==";
    let bad = [
        format!("$7$0${salt}${hash}"),             // zero iterations
        format!("$7$x${salt}${hash}"),             // non-numeric iterations
        format!("$7$-5${salt}${hash}"),            // negative iterations
        format!("$7$101${hash}"),                  // missing salt
        format!("$7$101${salt}"),                  // missing hash
        format!("$7$101$oK9VB2I9UdBZ${hash}"),     // 9-byte salt
        format!("$7$101${salt}$iX/MnRWJ"),         // short hash
        format!("$7$101${salt}${hash}$extra"),     // trailing field
        format!("$7$101$!!!!!!!!!!!!!!!!${hash}"), // not base64
        format!("$5${salt}${hash}"),               // unknown type
        format!("$6$101${salt}${hash}"),           // $6$ has no iteration count
    ];
    for text in &bad {
        assert!(MosquittoHash::parse(text).is_err(), "{text} accepted");
    }
}

/// Runs Debian's `mosquitto_passwd` (package `mosquitto`) to make a fresh `$7$` line and checks
/// that we verify it. Skipped with a notice when the tool is missing, unless
/// `ROOST_INTEROP=require`.
#[test]
fn fresh_line_from_mosquitto_passwd() {
    let dir = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => panic!("tempdir: {e}"),
    };
    let path = dir.path().join("pw");
    let password = "fr€sh pass:word";
    let status = Command::new("mosquitto_passwd")
        .args(["-b", "-c"])
        .arg(&path)
        .args(["alice", password])
        .status();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => panic!("mosquitto_passwd failed: {s}"),
        Err(e) => {
            if std::env::var("ROOST_INTEROP").as_deref() == Ok("require") {
                panic!("mosquitto_passwd not runnable ({e}) and ROOST_INTEROP=require");
            }
            eprintln!("SKIPPED fresh_line_from_mosquitto_passwd: mosquitto_passwd not found ({e})");
            return;
        }
    }
    let pw = match PasswordFile::load(&path) {
        Ok(f) => f,
        Err(e) => panic!("{e}"),
    };
    assert!(pw.text_starts_with_7("alice"));
    assert!(pw.verify("alice", password.as_bytes()));
    assert!(!pw.verify("alice", b"fresh pass:word"));
}

impl PasswordFile {
    /// Test helper: true if `user`'s line in the file text uses the `$7$` format.
    fn text_starts_with_7(&self, user: &str) -> bool {
        self.to_text()
            .lines()
            .any(|l| l.starts_with(&format!("{user}:$7$101$")))
    }
}
