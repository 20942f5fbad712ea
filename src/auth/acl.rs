//! Topic access control lists in mosquitto's `acl_file` syntax.
//!
//! ```text
//! # Lines before the first `user` line apply to anonymous clients only.
//! topic read public/#
//!
//! user alice
//! topic readwrite alice/#
//! topic deny alice/secret
//! # No access keyword: readwrite.
//! topic sensors/+/temp
//!
//! # Patterns apply to every client; %u is the username, %c the client id.
//! pattern write devices/%c/status
//! pattern read users/%u/#
//! ```
//!
//! Semantics, as in mosquitto 2.0.11's `security_default.c` (verified in its source):
//! - `topic [read|write|readwrite|deny] TOPIC`: without a keyword, `readwrite`. `deny` refuses
//!   both kinds of access and beats any grant in the same section. `TOPIC` is the rest of the
//!   line (it may contain spaces) and must be a valid topic filter.
//! - `user NAME` starts the section of that user (the rest of the line is the name); a name
//!   may have several sections, which are merged. `topic` lines before any `user` line form the
//!   anonymous section: they apply only to clients without a username, never to named users.
//! - `pattern [read|write|readwrite|deny] TOPIC` applies to all clients, with `%u` replaced by
//!   the username and `%c` by the client id. A pattern using `%u` does not apply to an
//!   anonymous client.
//! - A check looks first at the client's section (the anonymous one when it has no username):
//!   a matching `deny` refuses, else a matching grant of the wanted access allows. If the section
//!   decides nothing, the patterns are looked at the same way. Nothing matching means denied:
//!   once an ACL file is in use, access is denied by default.
//! - `#` lines (first non-blank character `#`) and blank lines are ignored. Anything else is an
//!   error naming the file and line: an unknown keyword, `user` without a name, an unknown
//!   access keyword, a missing or invalid topic. Two deliberate departures from mosquitto,
//!   both refusing a file mosquitto would accept: `topic read` (an access keyword and no topic)
//!   is an error, where mosquitto reads a topic named `read` with readwrite access; and a
//!   comment must be on its own line, as in mosquitto (`topic a # b` is the topic `a # b`,
//!   which is invalid).
//!
//! Injection through `%u`/`%c`: mosquitto 2.0 denies every pattern-based access to a client
//! whose username or client id contains `+` or `#` (they would act as wildcards after
//! substitution). We do the same, and also treat a value containing `/` (which would reach
//! into another client's subtree, e.g. username `bob/x` in `users/%u/#`), U+0000, or an empty
//! value as unsafe: a granting pattern that needs it is skipped, and a `deny` pattern that needs
//! it denies everything at the pattern stage (fail closed). mosquitto's develop branch likewise
//! never lets a `%u`/`%c` value containing `/` match.
//!
//! Subscriptions: see [`ClientAcl::check`] for how a filter with wildcards is judged and when
//! the broker must also check each delivered message.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use super::AuthError;
use super::acl_match::{Substitution, applies, substitute};
use super::file::read_text;
use crate::topic;

/// The kind of access a client asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Access {
    /// Subscribe with a filter, or receive a message published to a topic.
    Read,
    /// Publish to a topic (also the topic of a will message).
    Write,
}

/// What an ACL line grants.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Permission {
    Read,
    Write,
    ReadWrite,
    Deny,
}

impl Permission {
    fn from_keyword(word: &str) -> Option<Permission> {
        match word {
            "read" => Some(Permission::Read),
            "write" => Some(Permission::Write),
            "readwrite" => Some(Permission::ReadWrite),
            "deny" => Some(Permission::Deny),
            _ => None,
        }
    }

    fn grants(self, access: Access) -> bool {
        matches!(
            (self, access),
            (Permission::ReadWrite, _)
                | (Permission::Read, Access::Read)
                | (Permission::Write, Access::Write)
        )
    }
}

/// The rules of one section (a user, the anonymous clients, or the patterns resolved for one
/// client): denials are checked before grants.
#[derive(Clone, Debug, Default)]
struct RuleSet {
    deny: Vec<String>,
    allow: Vec<(Permission, String)>,
}

impl RuleSet {
    fn add(&mut self, permission: Permission, topic: String) {
        match permission {
            Permission::Deny => self.deny.push(topic),
            _ => self.allow.push((permission, topic)),
        }
    }

    /// `Some(false)` if a denial matches, `Some(true)` if a grant of `access` matches, `None`
    /// if this set decides nothing.
    fn decide(&self, subject: &str, access: Access) -> Option<bool> {
        if self.deny.iter().any(|rule| applies(rule, subject)) {
            return Some(false);
        }
        let granted = self
            .allow
            .iter()
            .any(|(permission, rule)| permission.grants(access) && applies(rule, subject));
        granted.then_some(true)
    }

    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.deny.is_empty() && self.allow.is_empty()
    }
}

/// A parsed ACL file. Cheap to share (`Arc<Acl>`); immutable once built.
#[derive(Clone, Debug, Default)]
pub(crate) struct Acl {
    anonymous: Arc<RuleSet>,
    users: HashMap<String, Arc<RuleSet>>,
    /// Patterns in file order, not yet substituted.
    patterns: Vec<(Permission, String)>,
}

impl Acl {
    /// Reads and parses the ACL file at `path`.
    pub(crate) fn load(path: &Path) -> Result<Acl, AuthError> {
        Acl::parse(&read_text(path)?, path)
    }

    /// Parses ACL text; `origin` names the file in errors.
    pub(crate) fn parse(text: &str, origin: &Path) -> Result<Acl, AuthError> {
        let mut anonymous = RuleSet::default();
        let mut users: HashMap<String, RuleSet> = HashMap::new();
        let mut patterns = Vec::new();
        let mut current_user: Option<String> = None;
        for (i, raw) in text.lines().enumerate() {
            let err = |message: String| AuthError::parse(origin, i + 1, message);
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (keyword, rest) = split_word(line);
            match keyword {
                "user" => {
                    if rest.is_empty() {
                        return Err(err("`user` needs a username".into()));
                    }
                    current_user = Some(rest.to_owned());
                }
                "topic" | "pattern" => {
                    let (permission, topic) = parse_rule(rest).map_err(err)?;
                    if keyword == "pattern" {
                        patterns.push((permission, topic));
                    } else if let Some(user) = &current_user {
                        users
                            .entry(user.clone())
                            .or_default()
                            .add(permission, topic);
                    } else {
                        anonymous.add(permission, topic);
                    }
                }
                _ => {
                    return Err(err(format!(
                        "unknown keyword {keyword:?} (expected `user`, `topic` or `pattern`)"
                    )));
                }
            }
        }
        Ok(Acl {
            anonymous: Arc::new(anonymous),
            users: users.into_iter().map(|(u, r)| (u, Arc::new(r))).collect(),
            patterns,
        })
    }

    /// May the client `username` (`None`: anonymous) with client id `client_id` have `access`
    /// to `topic_or_filter`? See [`ClientAcl::check`]. For many checks by one client, resolve
    /// its rules once with [`Acl::client`].
    #[cfg(test)]
    pub(crate) fn check(
        &self,
        username: Option<&str>,
        client_id: &str,
        topic_or_filter: &str,
        access: Access,
    ) -> bool {
        self.client(username, client_id)
            .check(topic_or_filter, access)
    }

    /// The rules that apply to one client, with patterns substituted: build it once at
    /// CONNECT and check every PUBLISH and SUBSCRIBE of the connection against it (rebuild it
    /// when the ACL file is reloaded).
    pub(crate) fn client(&self, username: Option<&str>, client_id: &str) -> ClientAcl {
        let section = match username {
            None => Some(Arc::clone(&self.anonymous)),
            Some(user) => self.users.get(user).cloned(),
        };
        ClientAcl {
            section,
            patterns: self.resolve_patterns(username, client_id),
        }
    }

    fn resolve_patterns(&self, username: Option<&str>, client_id: &str) -> PatternStage {
        if self.patterns.is_empty() {
            return PatternStage::Rules(RuleSet::default());
        }
        // mosquitto 2.0: with patterns in use, a username or client id containing a wildcard
        // gets no pattern-based access at all.
        let wild = |s: &str| s.contains(['+', '#']);
        if username.is_some_and(wild) || wild(client_id) {
            return PatternStage::DenyAll;
        }
        let mut rules = RuleSet::default();
        for (permission, pattern) in &self.patterns {
            match substitute(pattern, username, client_id) {
                Substitution::Topic(topic) => rules.add(*permission, topic),
                Substitution::NoUsername => {}
                // A denial we cannot apply safely denies everything; a grant is just dropped.
                Substitution::Unsafe if *permission == Permission::Deny => {
                    return PatternStage::DenyAll;
                }
                Substitution::Unsafe => {}
            }
        }
        PatternStage::Rules(rules)
    }
}

/// The patterns of an ACL resolved for one client.
#[derive(Clone, Debug)]
enum PatternStage {
    Rules(RuleSet),
    /// The client's username or client id cannot be used safely: patterns deny everything.
    DenyAll,
}

/// The ACL rules that apply to one client (its section and its substituted patterns); built by
/// [`Acl::client`].
#[derive(Clone, Debug)]
pub(crate) struct ClientAcl {
    /// The user's (or the anonymous) section; `None` if the file has none for this user.
    section: Option<Arc<RuleSet>>,
    patterns: PatternStage,
}

impl ClientAcl {
    /// May this client have `access` to `topic_or_filter`?
    ///
    /// - [`Access::Write`] with a topic name: may it publish there? A name with wildcards, or
    ///   otherwise invalid, is refused.
    /// - [`Access::Read`] with a topic name: may it receive a message published there?
    /// - [`Access::Read`] with a filter containing wildcards: may it subscribe? A rule applies
    ///   to a filter only if it matches every topic the filter can match (coverage, the rule
    ///   of mosquitto's `mosquitto_sub_matches_acl`): ACL `a/#` allows the filters `a/#`,
    ///   `a/+/b` and `a/b`; ACL `a/b` or `a/+` does not allow `a/#`; ACL `#` does not allow
    ///   `$SYS/#`. This is stricter than mosquitto 2.0's acl_file, which does not check
    ///   SUBSCRIBE at all and only filters deliveries (a `#` subscription is accepted and
    ///   receives just the permitted topics); here such a subscription is refused (SUBACK
    ///   0x80 / 0x87) and the client must subscribe to what it may read.
    ///
    /// For a shared subscription pass the filter without its `$share/GROUP/` prefix.
    ///
    /// A `deny` rule inside a granted subscription (ACL `read a/#` and `deny a/secret`,
    /// filter `a/#`) does not refuse the subscription: the broker must then check
    /// [`Access::Read`] for each message delivered (and each retained message sent) on it.
    /// When [`ClientAcl::has_deny_rules`] is false, a granted subscription implies that every
    /// matching topic is readable, and those per-message checks can be skipped.
    pub(crate) fn check(&self, topic_or_filter: &str, access: Access) -> bool {
        let valid = match access {
            Access::Write => topic::valid_topic_name(topic_or_filter),
            Access::Read => topic::valid_topic_filter(topic_or_filter),
        };
        if !valid {
            return false;
        }
        if let Some(decision) = self
            .section
            .as_ref()
            .and_then(|s| s.decide(topic_or_filter, access))
        {
            return decision;
        }
        match &self.patterns {
            PatternStage::DenyAll => false,
            PatternStage::Rules(rules) => rules.decide(topic_or_filter, access).unwrap_or(false),
        }
    }

    /// True if some `deny` rule (or an unsafe username or client id) can refuse a topic inside
    /// a subscription that [`ClientAcl::check`] granted; see there.
    #[cfg(test)]
    pub(crate) fn has_deny_rules(&self) -> bool {
        let section = self.section.as_ref().is_some_and(|s| !s.deny.is_empty());
        let patterns = match &self.patterns {
            PatternStage::DenyAll => true,
            PatternStage::Rules(rules) => !rules.deny.is_empty(),
        };
        section || patterns
    }

    /// True if no rule at all applies to this client: every check is refused.
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        let section = self.section.as_ref().is_none_or(|s| s.is_empty());
        let patterns = match &self.patterns {
            PatternStage::DenyAll => true,
            PatternStage::Rules(rules) => rules.is_empty(),
        };
        section && patterns
    }
}

/// Splits off the first blank-separated word of `line` (already trimmed); the rest is trimmed.
fn split_word(line: &str) -> (&str, &str) {
    match line.split_once(|c: char| c.is_ascii_whitespace()) {
        Some((word, rest)) => (word, rest.trim()),
        None => (line, ""),
    }
}

/// Parses what follows `topic` or `pattern`: `[ACCESS] TOPIC`.
fn parse_rule(rest: &str) -> Result<(Permission, String), String> {
    let (first, after) = split_word(rest);
    let (permission, topic) = if first.is_empty() {
        return Err("missing topic".into());
    } else if after.is_empty() {
        if Permission::from_keyword(first).is_some() {
            return Err(format!("missing topic after {first:?}"));
        }
        (Permission::ReadWrite, first)
    } else {
        let permission = Permission::from_keyword(first).ok_or_else(|| {
            format!("unknown access {first:?} (expected read, write, readwrite or deny)")
        })?;
        (permission, after)
    };
    if !topic::valid_topic_filter(topic) {
        return Err(format!("invalid topic filter {topic:?}"));
    }
    Ok((permission, topic.to_owned()))
}
