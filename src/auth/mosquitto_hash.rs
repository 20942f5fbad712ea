//! Password hashes written by mosquitto's `mosquitto_passwd`, accepted read-only.
//!
//! Formats, verified against mosquitto 2.0.11 (`src/password_mosq.[ch]`,
//! `src/security_default.c`) and against lines produced by Debian's `mosquitto_passwd` 2.0.11:
//!
//! - `$7$<iterations>$<salt>$<hash>`: the default since mosquitto 2.0 (`-H sha512-pbkdf2`).
//!   `hash` = PBKDF2-HMAC-SHA512(password, salt, iterations), 64 bytes. mosquitto_passwd writes
//!   101 iterations and a 12-byte random salt; the broker accepts any iteration count >= 1.
//! - `$6$<salt>$<hash>`: mosquitto 1.x (`-H sha512`). `hash` = SHA-512(password ‖ salt).
//!
//! Salt and hash are standard base64 (`+/`, `=` padding). mosquitto's broker drops an entry
//! whose salt does not decode to exactly 12 bytes or whose hash is not 64 bytes; we reject it
//! the same way (as a parse error). New passwords are never written in these formats: `set`
//! always writes argon2id.
//!
//! One difference: mosquitto hashes the password as a C string, so it stops at the first zero
//! byte; we hash every byte of the (possibly binary) MQTT password.

use base64::Engine;
use base64::engine::general_purpose::STANDARD_PAD_INDIFFERENT as BASE64;
use sha2::{Digest, Sha512};
use subtle::ConstantTimeEq;

/// Length of the salt mosquitto uses for both formats.
const SALT_LEN: usize = 12;
/// Length of a SHA-512 output.
const HASH_LEN: usize = 64;

/// A parsed mosquitto password hash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum MosquittoHash {
    /// `$6$`: one round of SHA-512 over the password followed by the salt.
    Sha512 {
        /// The random salt.
        salt: [u8; SALT_LEN],
        /// The expected digest.
        hash: [u8; HASH_LEN],
    },
    /// `$7$`: PBKDF2 with HMAC-SHA512.
    Pbkdf2Sha512 {
        /// The PBKDF2 iteration count (101 from mosquitto_passwd).
        iterations: u32,
        /// The random salt.
        salt: [u8; SALT_LEN],
        /// The expected derived key.
        hash: [u8; HASH_LEN],
    },
}

impl MosquittoHash {
    /// True if `text` claims to be a mosquitto hash (`$6$...` or `$7$...`).
    pub(crate) fn is_mosquitto_format(text: &str) -> bool {
        text.starts_with("$6$") || text.starts_with("$7$")
    }

    /// Parses the hash part of a password file line. The error says what is wrong.
    pub(crate) fn parse(text: &str) -> Result<MosquittoHash, String> {
        let mut fields = text.split('$');
        // The text starts with '$', so the first field is empty.
        if fields.next() != Some("") {
            return Err("a mosquitto hash must start with '$'".into());
        }
        let kind = fields.next();
        let iterations = match kind {
            Some("6") => None,
            Some("7") => {
                let field = fields.next().unwrap_or("");
                let n: u32 = field
                    .parse()
                    .map_err(|_| format!("invalid iteration count {field:?} in $7$ hash"))?;
                if n == 0 {
                    return Err("the iteration count of a $7$ hash must be at least 1".into());
                }
                Some(n)
            }
            _ => return Err("unknown mosquitto hash type (expected $6$ or $7$)".into()),
        };
        let salt: [u8; SALT_LEN] = decode_fixed(fields.next(), "salt")?;
        let hash: [u8; HASH_LEN] = decode_fixed(fields.next(), "hash")?;
        if fields.next().is_some() {
            return Err("too many '$' fields in mosquitto hash".into());
        }
        Ok(match iterations {
            None => MosquittoHash::Sha512 { salt, hash },
            Some(iterations) => MosquittoHash::Pbkdf2Sha512 {
                iterations,
                salt,
                hash,
            },
        })
    }

    /// True if `password` hashes to the stored value. The comparison is constant-time.
    pub(crate) fn verify(&self, password: &[u8]) -> bool {
        let mut computed = [0u8; HASH_LEN];
        let expected = match self {
            MosquittoHash::Sha512 { salt, hash } => {
                let mut digest = Sha512::new();
                digest.update(password);
                digest.update(salt);
                computed.copy_from_slice(&digest.finalize());
                hash
            }
            MosquittoHash::Pbkdf2Sha512 {
                iterations,
                salt,
                hash,
            } => {
                pbkdf2::pbkdf2_hmac::<Sha512>(password, salt, *iterations, &mut computed);
                hash
            }
        };
        bool::from(computed.ct_eq(expected))
    }
}

/// Decodes a base64 field that must hold exactly `N` bytes.
fn decode_fixed<const N: usize>(field: Option<&str>, what: &str) -> Result<[u8; N], String> {
    let field = field.filter(|f| !f.is_empty());
    let field = field.ok_or_else(|| format!("missing {what} in mosquitto hash"))?;
    let bytes = BASE64
        .decode(field)
        .map_err(|e| format!("invalid base64 {what} in mosquitto hash: {e}"))?;
    bytes.try_into().map_err(|b: Vec<u8>| {
        format!(
            "the {what} of a mosquitto hash must be {N} bytes, found {}",
            b.len()
        )
    })
}
