//! Who may connect and what they may do: the password and ACL files as currently loaded,
//! the anonymous-access rule, and the failed-login throttle. SIGHUP reloads the files.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use tracing::{info, warn};

use crate::auth::{
    Acl, AuthError, AuthThrottle, ClientAcl, PasswordFile, anonymous_allowed, peer_key,
};
use crate::clock::Clock;
use crate::config::Config;

/// The files as loaded at one moment.
#[derive(Debug, Default)]
pub(crate) struct Files {
    /// The password file, if configured.
    pub passwords: Option<Arc<PasswordFile>>,
    /// The ACL file, if configured.
    pub acl: Option<Arc<Acl>>,
}

/// The outcome of checking a CONNECT's credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Accepted, with the username the client is known by (ACLs use it).
    Accepted(Option<String>),
    /// A username was given and the password did not match (3.1.1: 0x04, 5.0: 0x86).
    BadCredentials,
    /// No acceptable identity (3.1.1: 0x05, 5.0: 0x87).
    NotAuthorized,
}

/// Authentication and authorization state shared by all connections.
#[derive(Debug)]
pub(crate) struct AccessControl {
    files: RwLock<Arc<Files>>,
    generation: AtomicU64,
    anonymous: bool,
    throttle: Mutex<AuthThrottle>,
    password_file: Option<std::path::PathBuf>,
    acl_file: Option<std::path::PathBuf>,
    /// Bounds concurrent password verifications (each argon2 check takes ~19 MiB and a CPU).
    verifiers: Arc<tokio::sync::Semaphore>,
    /// The one verification at a time open to addresses with recent failures, so that
    /// guessing cannot take the capacity that clean addresses log in with.
    suspect_verifier: Arc<tokio::sync::Semaphore>,
    /// Password checks in progress or waiting per address (IPv4, IPv6 /64), at most
    /// [`CHECKS_PER_ADDRESS`] at a time: a burst of guesses from one address is checked a
    /// few at a time, so its failures are counted (and their delay applies) before the rest
    /// of the burst is checked.
    per_address: Arc<Mutex<HashMap<IpAddr, Arc<tokio::sync::Semaphore>>>>,
    /// The clock failures are timed by.
    clock: Clock,
}

impl AccessControl {
    /// Loads the files named in `config`; an unreadable or malformed file is an error naming
    /// it (and the line).
    pub(crate) fn load(config: &Config) -> Result<AccessControl, AuthError> {
        let mut addrs: Vec<IpAddr> = vec![config.bind];
        addrs.extend(config.listeners.iter().map(|l| l.bind));
        let access = AccessControl {
            files: RwLock::new(Arc::new(Files::default())),
            generation: AtomicU64::new(1),
            anonymous: anonymous_allowed(config.allow_anonymous, &addrs),
            throttle: Mutex::new(AuthThrottle::default()),
            password_file: config.password_file.clone(),
            acl_file: config.acl_file.clone(),
            verifiers: Arc::new(tokio::sync::Semaphore::new(
                std::thread::available_parallelism().map_or(2, |n| n.get()),
            )),
            suspect_verifier: Arc::new(tokio::sync::Semaphore::new(1)),
            per_address: Arc::new(Mutex::new(HashMap::new())),
            clock: config.clock.clone(),
        };
        *access.files.write() = Arc::new(access.read_files()?);
        if !access.anonymous {
            info!("anonymous access is disabled");
        }
        Ok(access)
    }

    fn read_files(&self) -> Result<Files, AuthError> {
        Ok(Files {
            passwords: self
                .password_file
                .as_deref()
                .map(PasswordFile::load)
                .transpose()?
                .map(Arc::new),
            acl: self
                .acl_file
                .as_deref()
                .map(Acl::load)
                .transpose()?
                .map(Arc::new),
        })
    }

    /// Re-reads both files. On error the previous ones stay in force.
    pub(crate) fn reload(&self) -> Result<(), AuthError> {
        match self.read_files() {
            Ok(files) => {
                *self.files.write() = Arc::new(files);
                self.generation.fetch_add(1, Relaxed);
                info!("password and ACL files reloaded");
                Ok(())
            }
            Err(e) => {
                warn!(error = %e, "reload failed; keeping the previous password and ACL files");
                Err(e)
            }
        }
    }

    /// Changes every time the files are reloaded.
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Relaxed)
    }

    /// The files currently in force.
    pub(crate) fn files(&self) -> Arc<Files> {
        Arc::clone(&self.files.read())
    }

    /// Judges a CONNECT. `identity` is the certificate name when the listener uses it as the
    /// username; otherwise the CONNECT's username and password are checked. Password
    /// verification is slow by design, so it runs off the async threads.
    pub(crate) async fn authenticate(
        &self,
        identity: Option<String>,
        username: Option<String>,
        password: Option<bytes::Bytes>,
        peer: Option<IpAddr>,
    ) -> Verdict {
        if identity.is_some() {
            return Verdict::Accepted(identity);
        }
        let files = self.files();
        match (username, &files.passwords) {
            (Some(user), Some(passwords)) => {
                let turn = match peer {
                    Some(ip) => Some(self.address_turn(ip).await),
                    None => None,
                };
                // An address with recent failures waits the delay it has earned before its
                // password is checked (so parallel guesses are slowed, not just answered
                // late), and then uses a verifier of its own.
                let earned = peer.map_or(Duration::ZERO, |ip| {
                    self.throttle.lock().current_delay(ip, self.clock.now())
                });
                let suspect = !earned.is_zero();
                if suspect {
                    // Real time, like the delay after a failure (see `failure_delay`).
                    tokio::time::sleep(earned).await;
                }
                let semaphore = if suspect {
                    &self.suspect_verifier
                } else {
                    &self.verifiers
                };
                let Ok(permit) = Arc::clone(semaphore).acquire_owned().await else {
                    return Verdict::NotAuthorized;
                };
                let passwords = Arc::clone(passwords);
                let check_user = user.clone();
                // The permits go with the check: a caller that stops waiting (a timeout) does
                // not free them while the hash still runs.
                let ok = tokio::task::spawn_blocking(move || {
                    let _held = (permit, turn);
                    passwords.verify(&check_user, password.as_deref().unwrap_or_default())
                })
                .await
                .unwrap_or(false);
                if ok {
                    Verdict::Accepted(Some(user))
                } else {
                    Verdict::BadCredentials
                }
            }
            // Without a password file a username is only a label, accepted where anonymous
            // clients are.
            (user, _) if self.anonymous => Verdict::Accepted(user),
            _ => Verdict::NotAuthorized,
        }
    }

    /// Waits until `peer`'s address may have one more password check in progress.
    async fn address_turn(&self, peer: IpAddr) -> AddressTurn {
        let key = peer_key(peer);
        let slots = Arc::clone(
            self.per_address
                .lock()
                .entry(key)
                .or_insert_with(|| Arc::new(tokio::sync::Semaphore::new(CHECKS_PER_ADDRESS))),
        );
        let permit = Arc::clone(&slots).acquire_owned().await.ok();
        AddressTurn {
            map: Arc::clone(&self.per_address),
            key,
            slots: Some(slots),
            permit,
        }
    }

    /// Records a failed login from `peer` and returns the delay before answering it, growing
    /// with repeated failures so that passwords cannot be guessed at line rate. Wait it with
    /// the broker's clock: `broker.clock.sleep(delay)`.
    pub(crate) fn failure_delay(&self, peer: IpAddr) -> Duration {
        self.throttle.lock().record_failure(peer, self.clock.now())
    }

    /// Forgets the failures of `peer` after a successful login.
    pub(crate) fn succeeded(&self, peer: IpAddr) {
        self.throttle.lock().record_success(peer);
    }

    /// The ACL rules of one client, or `None` when no ACL file is set (everything allowed).
    pub(crate) fn client_acl(
        &self,
        username: Option<&str>,
        client_id: &str,
    ) -> Option<Arc<ClientAcl>> {
        self.files()
            .acl
            .as_ref()
            .map(|acl| Arc::new(acl.client(username, client_id)))
    }
}

/// Password checks one address may have in progress at once.
const CHECKS_PER_ADDRESS: usize = 2;

/// One password check's turn for its address; the address is forgotten with its last turn.
struct AddressTurn {
    map: Arc<Mutex<HashMap<IpAddr, Arc<tokio::sync::Semaphore>>>>,
    key: IpAddr,
    slots: Option<Arc<tokio::sync::Semaphore>>,
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl Drop for AddressTurn {
    fn drop(&mut self) {
        self.permit.take();
        let Some(slots) = self.slots.take() else {
            return;
        };
        let mut map = self.map.lock();
        // Ours and the map's: nobody else holds or waits for this address.
        if Arc::strong_count(&slots) == 2 {
            map.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_address_has_at_most_two_checks_at_a_time_and_is_forgotten_after() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("passwd");
        let mut file = PasswordFile::new();
        file.set("alice", b"right").unwrap();
        file.save(&path).unwrap();
        let config = Config {
            password_file: Some(path),
            ..Config::default()
        };
        let access = Arc::new(AccessControl::load(&config).unwrap());
        let ip: IpAddr = "127.0.0.9".parse().unwrap();
        let guesses: Vec<_> = (0..6)
            .map(|i| {
                let access = Arc::clone(&access);
                tokio::spawn(async move {
                    let password = bytes::Bytes::from(format!("guess-{i}"));
                    access
                        .authenticate(None, Some("alice".into()), Some(password), Some(ip))
                        .await
                })
            })
            .collect();
        // While the burst runs, its address never has more than two checks going.
        let mut seen_busy = false;
        while !guesses.iter().all(|g| g.is_finished()) {
            if let Some(slots) = access.per_address.lock().get(&ip) {
                assert!(slots.available_permits() <= CHECKS_PER_ADDRESS);
                seen_busy |= slots.available_permits() == 0;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        for g in guesses {
            assert!(matches!(g.await.unwrap(), Verdict::BadCredentials));
        }
        assert!(seen_busy, "the burst queued behind its address's two turns");
        assert!(access.per_address.lock().is_empty(), "forgotten once idle");
    }
}
