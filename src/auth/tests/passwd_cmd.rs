//! `roost passwd`: argument parsing and file editing.

use std::path::Path;

use clap::Parser;

use crate::auth::passwd_cmd::{passwd_with, strip_newline};
use crate::auth::{AuthError, PasswdArgs, PasswordFile};

const BOB_7: &str = "bob:$7$101$8WI/UMPju5MUVm5u$iPW6DCCfnpzeiv5m4rI/N0MAS4h+upQ6f0MzHwC5bakyPs2qiEzqvNou5ib+goUt0lB1u2us24aVJCqXNJRd9w==";

/// Stands in for the broker's CLI: `roost passwd ...`.
#[derive(Debug, Parser)]
struct Cli {
    #[command(flatten)]
    passwd: PasswdArgs,
}

fn cli(args: &[&str]) -> Result<PasswdArgs, clap::Error> {
    Cli::try_parse_from(std::iter::once("passwd").chain(args.iter().copied())).map(|c| c.passwd)
}

fn args(args: &[&str]) -> PasswdArgs {
    cli(args).unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

fn no_prompt() -> Result<Vec<u8>, AuthError> {
    panic!("must not prompt")
}

fn load(path: &Path) -> PasswordFile {
    PasswordFile::load(path).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn cli_definition_is_consistent() {
    use clap::CommandFactory;
    Cli::command().debug_assert();
}

#[test]
fn cli_accepts_the_mosquitto_passwd_forms() {
    let a = args(&["-b", "f", "u", "p"]);
    assert!(a.batch && !a.create && !a.delete);
    assert_eq!(
        (a.file.as_path(), a.username.as_str(), a.password.as_deref()),
        (Path::new("f"), "u", Some("p"))
    );
    let a = args(&["-c", "f", "u"]);
    assert!(a.create && a.password.is_none());
    let a = args(&["-c", "-b", "f", "u", "p"]);
    assert!(a.create && a.batch);
    let a = args(&["-D", "f", "u"]);
    assert!(a.delete);
    let a = args(&["f", "u"]);
    assert!(!a.batch && !a.create && !a.delete);
}

#[test]
fn cli_refuses_bad_combinations() {
    for bad in [
        &["-c", "-D", "f", "u"][..],
        &["-b", "-D", "f", "u", "p"],
        &["-b", "f", "u"],
        &["f", "u", "p"],
        &["f"],
    ] {
        assert!(cli(bad).is_err(), "{bad:?} accepted");
    }
}

#[test]
fn batch_create_then_update_then_delete() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("pw");
    let p = path.to_str().unwrap_or_else(|| panic!("path"));

    passwd_with(&args(&["-c", "-b", p, "alice", "one"]), no_prompt)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(load(&path).verify("alice", b"one"));

    // Update keeps the other users' lines exactly (a mosquitto line stays as it was).
    let text = format!("{BOB_7}\n{}", load(&path).to_text());
    std::fs::write(&path, &text).unwrap_or_else(|e| panic!("{e}"));
    passwd_with(&args(&["-b", p, "alice", "two"]), no_prompt).unwrap_or_else(|e| panic!("{e}"));
    passwd_with(&args(&["-b", p, "carol", "three"]), no_prompt).unwrap_or_else(|e| panic!("{e}"));
    let pw = load(&path);
    assert_eq!(pw.users().collect::<Vec<_>>(), ["bob", "alice", "carol"]);
    assert!(pw.verify("alice", b"two") && !pw.verify("alice", b"one"));
    assert!(pw.verify("carol", b"three"));
    assert!(pw.to_text().starts_with(&format!("{BOB_7}\n")));

    passwd_with(&args(&["-D", p, "bob"]), no_prompt).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(load(&path).users().collect::<Vec<_>>(), ["alice", "carol"]);
    match passwd_with(&args(&["-D", p, "bob"]), no_prompt) {
        Err(e @ AuthError::UserNotFound { .. }) => assert!(e.to_string().contains("\"bob\"")),
        other => panic!("{other:?}"),
    }

    // -c replaces the whole file.
    passwd_with(&args(&["-c", "-b", p, "dave", "four"]), no_prompt)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(load(&path).users().collect::<Vec<_>>(), ["dave"]);
}

#[test]
fn prompts_when_not_in_batch_mode() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("pw");
    let p = path.to_str().unwrap_or_else(|| panic!("path"));
    passwd_with(&args(&["-c", p, "alice"]), || Ok(b"typed".to_vec()))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(load(&path).verify("alice", b"typed"));
    // A failed prompt (e.g. the two entries differ) leaves the file alone.
    let before = std::fs::read(&path).unwrap_or_else(|e| panic!("{e}"));
    let r = passwd_with(&args(&[p, "alice"]), || Err(AuthError::PasswordMismatch));
    assert!(matches!(r, Err(AuthError::PasswordMismatch)));
    let r = passwd_with(&args(&[p, "alice"]), || Ok(Vec::new()));
    assert!(matches!(r, Err(AuthError::EmptyPassword)));
    assert_eq!(
        std::fs::read(&path).unwrap_or_else(|e| panic!("{e}")),
        before
    );
}

#[test]
fn refuses_bad_usernames_missing_and_broken_files() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("pw");
    let p = path.to_str().unwrap_or_else(|| panic!("path"));

    let r = passwd_with(&args(&["-c", "-b", p, "a:b", "pw"]), no_prompt);
    assert!(matches!(r, Err(AuthError::InvalidUsername { .. })), "{r:?}");
    assert!(!path.exists());

    // Without -c the file must exist; it is not created.
    let r = passwd_with(&args(&["-b", p, "alice", "pw"]), no_prompt);
    assert!(matches!(r, Err(AuthError::Io { .. })), "{r:?}");
    assert!(!path.exists());

    // A file the broker would refuse is not overwritten.
    std::fs::write(&path, "alice:plaintext\n").unwrap_or_else(|e| panic!("{e}"));
    let r = passwd_with(&args(&["-b", p, "bob", "pw"]), no_prompt);
    assert!(matches!(r, Err(AuthError::Parse { line: 1, .. })), "{r:?}");
    assert_eq!(
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{e}")),
        "alice:plaintext\n"
    );
}

#[test]
fn hand_built_args_are_checked_too() {
    let mut a = args(&["-D", "f", "u"]);
    a.create = true;
    assert!(matches!(
        passwd_with(&a, no_prompt),
        Err(AuthError::Usage(_))
    ));
    let mut a = args(&["f", "u"]);
    a.batch = true;
    assert!(matches!(
        passwd_with(&a, no_prompt),
        Err(AuthError::Usage(_))
    ));
}

#[test]
fn stdin_lines_lose_their_newline_only() {
    assert_eq!(strip_newline(b"pw\n".to_vec()), b"pw");
    assert_eq!(strip_newline(b"pw\r\n".to_vec()), b"pw");
    assert_eq!(strip_newline(b"pw".to_vec()), b"pw");
    assert_eq!(strip_newline(b" pw \n\n".to_vec()), b" pw \n");
}
