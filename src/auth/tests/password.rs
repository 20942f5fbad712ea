//! The password file: argon2 round trips, editing, parse errors, saving.

use std::path::Path;

use crate::auth::{AuthError, PasswordFile};

const BOB_7: &str = "bob:$7$101$8WI/UMPju5MUVm5u$iPW6DCCfnpzeiv5m4rI/N0MAS4h+upQ6f0MzHwC5bakyPs2qiEzqvNou5ib+goUt0lB1u2us24aVJCqXNJRd9w==";

fn parse(text: &str) -> Result<PasswordFile, AuthError> {
    PasswordFile::parse(text, Path::new("/etc/roost/passwd"))
}

fn ok(text: &str) -> PasswordFile {
    parse(text).unwrap_or_else(|e| panic!("parse failed: {e}"))
}

/// Asserts that `text` fails to parse at `line`, with a message containing `needle`.
fn parse_error(text: &str, line: usize, needle: &str) {
    match parse(text) {
        Err(AuthError::Parse {
            path,
            line: l,
            message,
        }) => {
            assert_eq!(path, Path::new("/etc/roost/passwd"));
            assert_eq!(l, line, "wrong line for {text:?}: {message}");
            assert!(message.contains(needle), "{message:?} lacks {needle:?}");
        }
        other => panic!("expected a parse error for {text:?}, got {other:?}"),
    }
}

#[test]
fn argon2_set_verify_round_trip() {
    let mut pw = PasswordFile::new();
    pw.set("alice", b"correct horse")
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(pw.verify("alice", b"correct horse"));
    assert!(!pw.verify("alice", b"correct horsE"));
    assert!(!pw.verify("alice", b""));
    assert!(!pw.verify("bob", b"correct horse"));

    let text = pw.to_text();
    assert!(text.starts_with("alice:$argon2id$v=19$"), "{text}");
    let reloaded = ok(&text);
    assert!(reloaded.verify("alice", b"correct horse"));
    assert!(!reloaded.verify("alice", b"wrong"));
}

#[test]
fn binary_passwords_are_bytes() {
    let mut pw = PasswordFile::new();
    let password = [0u8, 0xff, b':', 0xfe, 0, b'\n'];
    pw.set("dev", &password).unwrap_or_else(|e| panic!("{e}"));
    let reloaded = ok(&pw.to_text());
    assert!(reloaded.verify("dev", &password));
    // Every byte counts, including those after a zero byte.
    assert!(!reloaded.verify("dev", &password[..1]));
    assert!(!reloaded.verify("dev", &password[..5]));
}

#[test]
fn salts_are_random() {
    let mut a = PasswordFile::new();
    let mut b = PasswordFile::new();
    a.set("u", b"same").unwrap_or_else(|e| panic!("{e}"));
    b.set("u", b"same").unwrap_or_else(|e| panic!("{e}"));
    assert_ne!(a.to_text(), b.to_text());
}

#[test]
fn editing_keeps_order_comments_and_untouched_hashes() {
    let text = format!("# Roost users\n{BOB_7}\n\n  # indented comment\n{BOB_7}\n");
    let text = text.replacen("bob:", "carol:", 1);
    let mut pw = ok(&text);
    assert_eq!(pw.users().collect::<Vec<_>>(), ["carol", "bob"]);
    assert_eq!(pw.to_text(), text);

    pw.set("alice", b"pw1").unwrap_or_else(|e| panic!("{e}"));
    pw.set("carol", b"pw2").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(pw.users().collect::<Vec<_>>(), ["carol", "bob", "alice"]);
    let out = pw.to_text();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "# Roost users");
    assert!(lines[1].starts_with("carol:$argon2id$"));
    assert_eq!(lines[2], "");
    assert_eq!(lines[3], "  # indented comment");
    assert_eq!(lines[4], BOB_7);
    assert!(lines[5].starts_with("alice:$argon2id$"));

    assert!(pw.remove("bob"));
    assert!(!pw.remove("bob"));
    assert!(!pw.contains("bob"));
    assert_eq!(pw.users().collect::<Vec<_>>(), ["carol", "alice"]);
    assert_eq!(pw.len(), 2);
    let reloaded = ok(&pw.to_text());
    assert!(reloaded.verify("carol", b"pw2"));
    assert!(reloaded.verify("alice", b"pw1"));
    assert!(!reloaded.verify("bob", b"p:a ss"));
}

#[test]
fn blanks_and_crlf_are_tolerated() {
    let text = format!("  {}  \r\n\r\n", BOB_7.replacen(':', " : ", 1));
    let pw = ok(&text);
    assert!(pw.verify("bob", b"p:a ss"));
    assert_eq!(pw.to_text(), format!("{BOB_7}\n\n"));
}

#[test]
fn malformed_lines_name_the_line() {
    parse_error("# comment\n\njust-a-user\n", 3, "expected `user:hash`");
    parse_error(&format!("{BOB_7}\n:$7$1$abc$def\n"), 2, "invalid username");
    parse_error("alice:\n", 1, "missing password hash");
    parse_error("alice:secret\n", 1, "plain-text passwords are not accepted");
    parse_error(
        "alice:$argon2id$v=19$m=oops$c2FsdHNhbHQ$aGFzaA\n",
        1,
        "invalid argon2 hash",
    );
    parse_error(
        "alice:$argon2id$v=19$m=19456,t=2,p=1\n",
        1,
        "invalid argon2 hash",
    );
    parse_error(
        "alice:$argon2xx$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2g\n",
        1,
        "argon2",
    );
    parse_error(
        &format!("\n\n{}\n", BOB_7.replace("$101$", "$0$")),
        3,
        "iteration",
    );
    parse_error(
        &format!("{BOB_7}\n# x\n{BOB_7}\n"),
        3,
        "duplicate user \"bob\" (first on line 1)",
    );
    parse_error("a\u{1}b:$6$x$y\n", 1, "control characters");
}

#[test]
fn parse_error_display_names_file_and_line() {
    let err = match parse("\nnope\n") {
        Err(e) => e,
        Ok(_) => panic!("accepted"),
    };
    assert_eq!(err.to_string(), "/etc/roost/passwd:2: expected `user:hash`");
}

#[test]
fn set_rejects_bad_usernames_and_empty_passwords() {
    let mut pw = PasswordFile::new();
    for user in ["", "a:b", "#admin", " bob", "bob ", "tab\there", "nl\n"] {
        match pw.set(user, b"pw") {
            Err(AuthError::InvalidUsername { .. }) => {}
            other => panic!("{user:?}: {other:?}"),
        }
    }
    assert!(matches!(pw.set("bob", b""), Err(AuthError::EmptyPassword)));
    assert!(pw.is_empty());
    assert!(pw.set("ok name with spaces", b"pw").is_ok());
}

#[test]
fn unknown_user_in_empty_file_is_refused() {
    let pw = ok("# nobody here\n");
    assert!(pw.is_empty());
    assert!(!pw.verify("anyone", b"anything"));
}

#[test]
fn save_is_atomic_0600_and_round_trips() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("passwd");
    let mut pw = ok(&format!("# keep me\n{BOB_7}\n"));
    pw.set("alice", b"s3cret").unwrap_or_else(|e| panic!("{e}"));
    pw.save(&path).unwrap_or_else(|e| panic!("{e}"));
    // Only the file itself remains: the temporary file was renamed away.
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap_or_else(|e| panic!("{e}"))
        .filter_map(|e| e.ok().map(|e| e.file_name()))
        .collect();
    assert_eq!(names, [std::ffi::OsString::from("passwd")]);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path)
            .unwrap_or_else(|e| panic!("{e}"))
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let loaded = PasswordFile::load(&path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(loaded.to_text(), pw.to_text());
    assert!(loaded.verify("alice", b"s3cret"));
    assert!(loaded.verify("bob", b"p:a ss"));
}

#[test]
fn load_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let missing = dir.path().join("missing");
    match PasswordFile::load(&missing) {
        Err(e @ AuthError::Io { .. }) => assert!(e.to_string().contains("missing")),
        other => panic!("{other:?}"),
    }
    let binary = dir.path().join("binary");
    std::fs::write(&binary, b"# ok\nbob\xff:x\n").unwrap_or_else(|e| panic!("{e}"));
    match PasswordFile::load(&binary) {
        Err(AuthError::Parse { path, line, .. }) => {
            assert_eq!(path, binary);
            assert_eq!(line, 2);
        }
        other => panic!("{other:?}"),
    }
}
