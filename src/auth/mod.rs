//! Authentication and authorization: password file, ACL file, anonymous access, and slowing
//! down password guessing.
//!
//! Sans-IO apart from reading and writing the two files: no sockets, no async runtime. The
//! broker wires it in:
//! - at CONNECT: `anonymous_allowed` for clients without a username, else
//!   [`PasswordFile::verify`] (slow by design: run it in `spawn_blocking`), and on failure
//!   `AuthThrottle::record_failure` gives the delay to wait before refusing;
//! - then `Acl::client` resolves the client's ACL rules once, and `ClientAcl::check` judges
//!   each PUBLISH (write access), SUBSCRIBE filter and delivery (read access). Without an ACL
//!   file the broker allows every topic; with one, everything not granted is denied.
//! - `roost passwd` ([`PasswdArgs`], [`passwd_command`]) edits a password file.
//!
//! Both files use mosquitto's formats, so existing mosquitto password and ACL files work
//! (each file's documentation lists the mosquitto behaviour that was checked).

mod acl;
mod acl_match;
mod anonymous;
mod error;
mod file;
mod mosquitto_hash;
mod passwd_cmd;
mod password;
mod throttle;

pub(crate) use acl::{Access, Acl, ClientAcl};
pub(crate) use anonymous::anonymous_allowed;
pub use error::AuthError;
pub use passwd_cmd::{PasswdArgs, passwd_command};
pub use password::PasswordFile;
#[cfg(test)]
pub(crate) use throttle::ThrottleConfig;
pub(crate) use throttle::{AuthThrottle, peer_key};

#[cfg(test)]
mod tests;
