//! `roost passwd`: edit a password file from the command line, like `mosquitto_passwd`.
//!
//! ```text
//! roost passwd FILE USER              # prompt for the password twice, add or update USER
//! roost passwd -c FILE USER           # same, but create (or overwrite) FILE
//! roost passwd -b FILE USER PASSWORD  # batch: the password on the command line
//! roost passwd -D FILE USER           # delete USER
//! ```
//!
//! When standard input is not a terminal the password is read as one line from it, once
//! (`echo secret | roost passwd FILE USER`). The file is replaced atomically, mode 0600.
//! Without `-c` the file must exist and parse: a file the broker would refuse is never
//! overwritten. Deleting a user that is not there is an error (mosquitto_passwd 2.0 also exits
//! with status 1 in that case).

use std::io::{BufRead, IsTerminal};
use std::path::{Path, PathBuf};

use super::AuthError;
use super::password::{PasswordFile, check_username};

// A clap `Args` struct: use it as a subcommand's arguments (`Passwd(PasswdArgs)`). Its doc
// comment is the subcommand's help text.
/// Add, update or delete a user in a password file (like mosquitto_passwd).
#[derive(Clone, Debug, PartialEq, Eq, clap::Args)]
pub struct PasswdArgs {
    /// Batch mode: take the password from the command line instead of prompting.
    #[arg(short = 'b', long = "batch")]
    pub batch: bool,
    /// Create a new password file, overwriting an existing one.
    #[arg(short = 'c', long = "create", conflicts_with = "delete")]
    pub create: bool,
    /// Delete the user instead of setting their password.
    #[arg(short = 'D', long = "delete", conflicts_with = "batch")]
    pub delete: bool,
    /// The password file.
    pub file: PathBuf,
    /// The username (must not contain ':').
    pub username: String,
    /// The password, with -b only.
    #[arg(requires = "batch", required_if_eq("batch", "true"))]
    pub password: Option<String>,
}

/// Runs `roost passwd`: prompts for the password when needed (see the module documentation),
/// then updates and saves the file.
pub fn passwd_command(args: PasswdArgs) -> Result<(), AuthError> {
    passwd_with(&args, read_password)
}

/// The logic of [`passwd_command`], with the interactive password source passed in (tests).
pub(crate) fn passwd_with(
    args: &PasswdArgs,
    read_password: impl FnOnce() -> Result<Vec<u8>, AuthError>,
) -> Result<(), AuthError> {
    check_args(args)?;
    check_username(&args.username)?;
    let path = args.file.as_path();
    if args.delete {
        let mut file = PasswordFile::load(path)?;
        if !file.remove(&args.username) {
            return Err(AuthError::UserNotFound {
                path: path.to_owned(),
                user: args.username.clone(),
            });
        }
        return file.save(path);
    }
    // Load before prompting, so that a missing or broken file is reported straight away.
    let mut file = if args.create {
        PasswordFile::new()
    } else {
        PasswordFile::load(path)?
    };
    let password = match &args.password {
        Some(p) => p.clone().into_bytes(),
        None => read_password()?,
    };
    file.set(&args.username, &password)?;
    file.save(path)
}

/// The combinations clap also refuses, checked again for callers that build `PasswdArgs`
/// themselves.
fn check_args(args: &PasswdArgs) -> Result<(), AuthError> {
    let usage = |m: &str| Err(AuthError::Usage(m.to_owned()));
    match args {
        PasswdArgs {
            create: true,
            delete: true,
            ..
        } => usage("-c and -D cannot be used together"),
        PasswdArgs {
            batch: true,
            delete: true,
            ..
        } => usage("-b and -D cannot be used together"),
        PasswdArgs {
            batch: true,
            password: None,
            ..
        } => usage("-b needs a password argument"),
        PasswdArgs {
            batch: false,
            password: Some(_),
            ..
        } => usage("a password argument needs -b"),
        _ => Ok(()),
    }
}

/// Reads the password: twice with echo off on a terminal, else one line of standard input.
fn read_password() -> Result<Vec<u8>, AuthError> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        let tty = Path::new("<terminal>");
        let first = rpassword::prompt_password("Password: ").map_err(|e| AuthError::io(tty, e))?;
        let again =
            rpassword::prompt_password("Reenter password: ").map_err(|e| AuthError::io(tty, e))?;
        if first != again {
            return Err(AuthError::PasswordMismatch);
        }
        Ok(first.into_bytes())
    } else {
        let mut line = Vec::new();
        stdin
            .lock()
            .read_until(b'\n', &mut line)
            .map_err(|e| AuthError::io("<stdin>", e))?;
        Ok(strip_newline(line))
    }
}

/// Removes one trailing `\n` or `\r\n`.
pub(crate) fn strip_newline(mut line: Vec<u8>) -> Vec<u8> {
    if line.last() == Some(&b'\n') {
        line.pop();
        if line.last() == Some(&b'\r') {
            line.pop();
        }
    }
    line
}
