//! The error type of the auth module.

use std::path::PathBuf;

/// Everything that can go wrong while loading, checking or editing password and ACL files.
///
/// File errors name the file, and parse errors also the line (1-based), so that the broker can
/// refuse to start, or keep the previous file on reload, with a message an operator can act on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A line of a password or ACL file is malformed.
    #[error("{}:{line}: {message}", path.display())]
    Parse {
        /// The file (or the origin given to `parse`).
        path: PathBuf,
        /// The line number, counting from 1.
        line: usize,
        /// What is wrong with the line.
        message: String,
    },
    /// A username that cannot be stored in a password file.
    #[error("invalid username {user:?}: {reason}")]
    InvalidUsername {
        /// The rejected username.
        user: String,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// An empty password was given where one is required.
    #[error("the password must not be empty")]
    EmptyPassword,
    /// The two passwords typed at the prompt differ.
    #[error("the passwords do not match")]
    PasswordMismatch,
    /// A user to delete is not in the password file.
    #[error("{}: user {user:?} not found", path.display())]
    UserNotFound {
        /// The password file.
        path: PathBuf,
        /// The missing user.
        user: String,
    },
    /// Hashing a new password failed (for example the system random generator failed).
    #[error("hashing the password failed: {0}")]
    Hash(#[source] argon2::password_hash::Error),
    /// The arguments of `roost passwd` do not fit together.
    #[error("{0}")]
    Usage(String),
}

impl AuthError {
    /// Builds an [`AuthError::Io`].
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        AuthError::Io {
            path: path.into(),
            source,
        }
    }

    /// Builds an [`AuthError::Parse`].
    pub(crate) fn parse(path: impl Into<PathBuf>, line: usize, message: impl Into<String>) -> Self {
        AuthError::Parse {
            path: path.into(),
            line,
            message: message.into(),
        }
    }
}
