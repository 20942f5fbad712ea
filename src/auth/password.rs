//! The password file: one `user:hash` line per user.
//!
//! Accepted hashes: argon2 PHC strings (`$argon2id$v=19$m=...,t=...,p=...$salt$hash`, also
//! `$argon2i$` and `$argon2d$`), and mosquitto's `$7$` (PBKDF2-SHA512) and `$6$` (salted
//! SHA-512) lines, so an existing mosquitto password file works unchanged (see
//! [`super::mosquitto_hash`]). New passwords are always stored as argon2id with the `argon2`
//! crate's default parameters (19 MiB, 2 passes, 1 lane: OWASP's recommendation).
//!
//! Lines whose first non-blank character is `#`, and blank lines, are ignored but kept, so that
//! [`PasswordFile::to_text`] writes an edited file with the operator's comments in place.
//! Surrounding blanks around the user and the hash are ignored (as mosquitto does). Anything
//! else is an error naming the file and line: a line without `:`, an empty user, a duplicate
//! user, or a hash that is missing, malformed, or of an unknown kind. Unlike mosquitto, which
//! skips such lines with a warning, the broker refuses the file, so a typo never silently
//! locks a user out (or, on reload, replaces a good file).

use std::collections::HashMap;
use std::path::Path;

use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::{Algorithm, Argon2, Params, PasswordHash, Version};

use super::AuthError;
use super::file::{read_text, write_atomic};
use super::mosquitto_hash::MosquittoHash;

/// Longest username accepted (the MQTT string limit).
const MAX_USERNAME_LEN: usize = 65535;

/// A password file held in memory: users and their password hashes, in file order.
///
/// Verifying a password is slow by design (tens of milliseconds for argon2id): the broker
/// should call [`PasswordFile::verify`] from a blocking thread (`tokio::task::spawn_blocking`),
/// never on the async runtime.
#[derive(Clone, Debug, Default)]
pub struct PasswordFile {
    lines: Vec<Line>,
    /// Username to index in `lines`.
    index: HashMap<String, usize>,
}

/// One line of the file.
#[derive(Clone, Debug)]
enum Line {
    /// A comment or blank line, kept verbatim.
    Other(String),
    /// A user and their hash.
    Entry(Entry),
}

#[derive(Clone, Debug)]
struct Entry {
    user: String,
    /// The hash exactly as it appears in the file (written back unchanged).
    text: String,
    hash: StoredHash,
}

#[derive(Clone, Debug)]
enum StoredHash {
    Argon2(Box<PasswordHash>),
    Mosquitto(MosquittoHash),
}

impl StoredHash {
    fn parse(text: &str) -> Result<StoredHash, String> {
        if text.starts_with("$argon2") {
            parse_argon2(text).map(|h| StoredHash::Argon2(Box::new(h)))
        } else if MosquittoHash::is_mosquitto_format(text) {
            MosquittoHash::parse(text).map(StoredHash::Mosquitto)
        } else {
            Err(
                "unsupported password hash (expected $argon2id$..., or mosquitto's $7$ or $6$; \
                 plain-text passwords are not accepted: set one with `roost passwd`)"
                    .into(),
            )
        }
    }

    fn verify(&self, password: &[u8]) -> bool {
        match self {
            // The parameters (algorithm, version, cost) come from the stored hash.
            StoredHash::Argon2(hash) => Argon2::default()
                .verify_password(password, hash.as_ref())
                .is_ok(),
            StoredHash::Mosquitto(hash) => hash.verify(password),
        }
    }
}

/// Parses and checks an argon2 PHC string, so that a bad parameter is reported at load time
/// rather than as a failed login.
fn parse_argon2(text: &str) -> Result<PasswordHash, String> {
    let bad = |e: &dyn std::fmt::Display| format!("invalid argon2 hash: {e}");
    let hash = PasswordHash::new(text).map_err(|e| bad(&e))?;
    Algorithm::try_from(hash.algorithm.as_str()).map_err(|e| bad(&e))?;
    if let Some(version) = hash.version {
        Version::try_from(version).map_err(|e| bad(&e))?;
    }
    Params::try_from(&hash).map_err(|e| bad(&e))?;
    if hash.salt.is_none() || hash.hash.is_none() {
        return Err("invalid argon2 hash: the salt or the hash is missing".into());
    }
    Ok(hash)
}

/// Why `user` cannot be a password file username, if it cannot.
fn username_problem(user: &str) -> Option<&'static str> {
    if user.is_empty() {
        Some("it is empty")
    } else if user.contains(':') {
        Some("it must not contain ':'")
    } else if user.chars().any(char::is_control) {
        Some("it must not contain control characters")
    } else if user.starts_with('#') {
        Some("it must not start with '#' (the line would read as a comment)")
    } else if user.trim() != user {
        Some("it must not start or end with blanks")
    } else if user.len() > MAX_USERNAME_LEN {
        Some("it is longer than 65535 bytes")
    } else {
        None
    }
}

/// Checks that `user` can be stored in a password file (see [`PasswordFile::set`]).
pub(crate) fn check_username(user: &str) -> Result<(), AuthError> {
    match username_problem(user) {
        Some(reason) => Err(AuthError::InvalidUsername {
            user: user.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}

impl PasswordFile {
    /// An empty password file.
    pub fn new() -> PasswordFile {
        PasswordFile::default()
    }

    /// Reads and parses the password file at `path`.
    pub fn load(path: &Path) -> Result<PasswordFile, AuthError> {
        PasswordFile::parse(&read_text(path)?, path)
    }

    /// Parses password file text; `origin` names the file in errors.
    pub fn parse(text: &str, origin: &Path) -> Result<PasswordFile, AuthError> {
        let mut file = PasswordFile::new();
        let mut first_line: HashMap<String, usize> = HashMap::new();
        for (i, raw) in text.lines().enumerate() {
            let number = i + 1;
            let err = |message: String| AuthError::parse(origin, number, message);
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                file.lines.push(Line::Other(raw.trim_end().to_owned()));
                continue;
            }
            let Some((user, hash_text)) = line.split_once(':') else {
                return Err(err("expected `user:hash`".into()));
            };
            let (user, hash_text) = (user.trim(), hash_text.trim());
            if let Some(reason) = username_problem(user) {
                return Err(err(format!("invalid username {user:?}: {reason}")));
            }
            if hash_text.is_empty() {
                return Err(err(format!("missing password hash for user {user:?}")));
            }
            let hash =
                StoredHash::parse(hash_text).map_err(|m| err(format!("user {user:?}: {m}")))?;
            if let Some(first) = first_line.insert(user.to_owned(), number) {
                return Err(err(format!(
                    "duplicate user {user:?} (first on line {first})"
                )));
            }
            file.index.insert(user.to_owned(), file.lines.len());
            file.lines.push(Line::Entry(Entry {
                user: user.to_owned(),
                text: hash_text.to_owned(),
                hash,
            }));
        }
        Ok(file)
    }

    /// True if `password` is the password of `user`.
    ///
    /// Slow by design (argon2): call it from a blocking thread. Hash comparisons are
    /// constant-time. For an unknown user the password is checked against a hash of the kind
    /// most users have and the result thrown away, so that the time taken does not tell
    /// whether a user exists (fully so when the file uses one kind of hash: a `$7$` check
    /// takes well under a millisecond, an argon2 one tens of milliseconds). The password is bytes: MQTT 3.1.1 and
    /// 5.0 passwords are binary data.
    pub fn verify(&self, user: &str, password: &[u8]) -> bool {
        match self.entry(user) {
            Some(entry) => entry.hash.verify(password),
            None => {
                if let Some(decoy) = self.decoy() {
                    std::hint::black_box(decoy.hash.verify(password));
                }
                false
            }
        }
    }

    /// The entry an unknown user's password is checked against: one of the hash class most
    /// users have (the algorithm with its cost parameters: `$argon2id$v=19$m=19456,t=2,p=1`,
    /// `$7$101`, `$6`), so that in a file mixing kinds an unknown user takes as long as most
    /// known ones.
    fn decoy(&self) -> Option<&Entry> {
        let mut classes: HashMap<&str, (usize, &Entry)> = HashMap::new();
        for entry in self.entries() {
            classes
                .entry(hash_class(&entry.text))
                .or_insert((0, entry))
                .0 += 1;
        }
        // Ties go to the class that comes first in the file, for a stable choice.
        classes
            .into_values()
            .max_by_key(|(count, entry)| (*count, std::cmp::Reverse(self.index.get(&entry.user))))
            .map(|(_, entry)| entry)
    }

    /// Sets the password of `user` (adding the user at the end if new) to a fresh argon2id
    /// hash with a random salt. Slow by design, like [`PasswordFile::verify`].
    ///
    /// Errors: an invalid username (empty, containing `:` or control characters, starting with
    /// `#`, surrounded by blanks, longer than 65535 bytes), an empty password, or a failure of
    /// the system random generator.
    pub fn set(&mut self, user: &str, password: &[u8]) -> Result<(), AuthError> {
        check_username(user)?;
        if password.is_empty() {
            return Err(AuthError::EmptyPassword);
        }
        let hash = Argon2::default()
            .hash_password(password)
            .map_err(AuthError::Hash)?;
        let entry = Entry {
            user: user.to_owned(),
            text: hash.to_string(),
            hash: StoredHash::Argon2(Box::new(hash)),
        };
        match self.index.get(user) {
            Some(&i) => self.lines[i] = Line::Entry(entry),
            None => {
                self.index.insert(user.to_owned(), self.lines.len());
                self.lines.push(Line::Entry(entry));
            }
        }
        Ok(())
    }

    /// Removes `user`; returns false if there was no such user.
    pub fn remove(&mut self, user: &str) -> bool {
        let Some(i) = self.index.remove(user) else {
            return false;
        };
        self.lines.remove(i);
        for slot in self.index.values_mut() {
            if *slot > i {
                *slot -= 1;
            }
        }
        true
    }

    /// True if `user` has an entry.
    pub fn contains(&self, user: &str) -> bool {
        self.index.contains_key(user)
    }

    /// The users, in file order.
    pub fn users(&self) -> impl Iterator<Item = &str> {
        self.entries().map(|e| e.user.as_str())
    }

    /// The number of users.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// True if there are no users.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// The file's text: users in their original order (new users last), comments and blank
    /// lines kept, hashes of untouched users written back exactly as read, one line each.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        for line in &self.lines {
            match line {
                Line::Other(text) => out.push_str(text),
                Line::Entry(e) => {
                    out.push_str(&e.user);
                    out.push(':');
                    out.push_str(&e.text);
                }
            }
            out.push('\n');
        }
        out
    }

    /// Writes the file atomically (temporary file in the same directory, then rename), with
    /// mode 0600 on Unix.
    pub fn save(&self, path: &Path) -> Result<(), AuthError> {
        write_atomic(path, &self.to_text())
    }

    fn entry(&self, user: &str) -> Option<&Entry> {
        match self.lines.get(*self.index.get(user)?) {
            Some(Line::Entry(e)) => Some(e),
            _ => None,
        }
    }

    fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.lines.iter().filter_map(|l| match l {
            Line::Entry(e) => Some(e),
            Line::Other(_) => None,
        })
    }
}

/// A stored hash without its salt and digest (the last two `$` fields): the algorithm and
/// its cost, which decide how long a check takes.
fn hash_class(text: &str) -> &str {
    let mut end = text.len();
    for _ in 0..2 {
        match text[..end].rfind('$') {
            Some(i) => end = i,
            None => break,
        }
    }
    &text[..end]
}

#[cfg(test)]
mod decoy_tests {
    use super::*;

    const A_7: &str = "a:$7$101$oK9VB2I9UdBZtrOM$iX/MnRWJCFUx7x0yVhNJcNiXW4HefMrl502Q0ppI+G4TNlagsuFqXI5BdyXGni74aVNs8EK/caZ5QOxCyZO1zg==";
    const B_6: &str = "b:$6$4MgAFjabN5Vnqe8P$/eoMU35Q8SsEHYpvzDOroApDvd4NvH2w9RyAzV6vLa7/hagdsjyEtrmms81sghG+huBhP4bC1qqjyRwehI0Izg==";
    const C_6: &str = "c:$6$4MgAFjabN5Vnqe8P$/eoMU35Q8SsEHYpvzDOroApDvd4NvH2w9RyAzV6vLa7/hagdsjyEtrmms81sghG+huBhP4bC1qqjyRwehI0Izg==";

    #[test]
    fn hash_class_is_the_algorithm_and_cost() {
        assert_eq!(hash_class("$7$101$salt$hash"), "$7$101");
        assert_eq!(hash_class("$6$salt$hash"), "$6");
        assert_eq!(
            hash_class("$argon2id$v=19$m=19456,t=2,p=1$salt$hash"),
            "$argon2id$v=19$m=19456,t=2,p=1"
        );
        assert_eq!(hash_class("nodollar"), "nodollar");
    }

    #[test]
    fn unknown_users_are_checked_against_the_most_common_class() {
        let file = |text: String| PasswordFile::parse(&text, Path::new("t.pw")).unwrap();
        // A `$7$` user first, two `$6$` users after: the decoy is a `$6$` one.
        let pw = file(format!("{A_7}\n{B_6}\n{C_6}\n"));
        assert_eq!(pw.decoy().map(|e| e.user.as_str()), Some("b"));
        // A tie goes to the first line's class.
        let pw = file(format!("{A_7}\n{B_6}\n"));
        assert_eq!(pw.decoy().map(|e| e.user.as_str()), Some("a"));
        assert!(!pw.verify("nobody", b"x"));
    }
}
