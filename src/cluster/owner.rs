//! Which node owns each client id: a JetStream key-value bucket written with compare-and-set.
//!
//! A CONNECT claims its client id by writing `{node, connection}` at the revision it read
//! (creating the key if there is none). Two racing claims read the same revision, so exactly
//! one write succeeds; the other CONNECT is refused as busy (5.0 0x89, 3.1.1 0x03) and its
//! client retries. Every node watches the bucket and closes its connection of a client id
//! another node claimed later (5.0: DISCONNECT 0x8E, Session taken over).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use async_nats::jetstream::kv;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use futures_util::StreamExt;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use sha2::Digest;
use tracing::{info, warn};

use crate::broker::{Broker, KickReason};

use super::Cluster;

/// The value of a client id's key.
#[derive(Debug, Serialize, Deserialize)]
struct Owner {
    /// The node.
    node: String,
    /// Its connection.
    conn: u64,
    /// The client id (the key may be a hash of it).
    client_id: String,
    /// The connection asked for a durable Session (it leaves a state when it ends).
    #[serde(default = "durable_by_default")]
    durable: bool,
}

fn durable_by_default() -> bool {
    true
}

/// The claim a new claim replaced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Previous {
    /// Its node.
    pub node: String,
    /// Its revision in the bucket.
    pub revision: u64,
    /// Its connection asked for a durable Session.
    pub durable: bool,
}

/// Why a claim failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ClaimError {
    /// Another node claimed the client id at the same moment.
    Conflict,
    /// The bucket could not be read or written (NATS or JetStream unavailable).
    Unavailable,
}

/// A claim recorded: the one it replaced, if any.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Claimed {
    /// The claim replaced, if any.
    pub previous: Option<Previous>,
    /// This claim's revision.
    pub revision: u64,
}

/// This node's claims by client id.
#[derive(Debug, Default)]
pub(super) struct Claims {
    by_client: Mutex<HashMap<String, LocalClaim>>,
    /// The revision of the last claim made here for each durable Session held here.
    last: Mutex<HashMap<String, u64>>,
    /// The last revision of the bucket the watch handled: a new watch goes on from there,
    /// so that no claim made while it was down is missed.
    seen: std::sync::atomic::AtomicU64,
}

#[derive(Debug, Clone, Copy)]
struct LocalClaim {
    conn: u64,
    revision: u64,
}

impl Claims {
    pub(super) fn lost(&self, client_id: &str, conn: u64) -> bool {
        self.held(client_id) != Some(conn)
    }

    /// The connection holding the claim of `client_id` here, if any.
    pub(super) fn held(&self, client_id: &str) -> Option<u64> {
        self.by_client.lock().get(client_id).map(|c| c.conn)
    }

    /// Remembers the last claim of a durable Session held here.
    pub(super) fn remember(&self, client_id: &str, revision: u64) {
        self.last.lock().insert(client_id.to_string(), revision);
    }

    /// The last claim remembered for `client_id`.
    pub(super) fn last(&self, client_id: &str) -> Option<u64> {
        self.last.lock().get(client_id).copied()
    }

    /// Forgets the last claim of `client_id` if it is `claim`.
    pub(super) fn forget_if(&self, client_id: &str, claim: u64) {
        let mut last = self.last.lock();
        if last.get(client_id) == Some(&claim) {
            last.remove(client_id);
        }
    }

    /// Forgets the last claim of `client_id` (its Session left this node), returning it.
    pub(super) fn forget(&self, client_id: &str) -> Option<u64> {
        self.last.lock().remove(client_id)
    }

    pub(super) fn release(&self, client_id: &str, conn: u64) {
        let mut claims = self.by_client.lock();
        if claims.get(client_id).is_some_and(|c| c.conn == conn) {
            claims.remove(client_id);
        }
    }
}

/// The bucket key of a client id: base64url of it, or of its SHA-256 when that would be long.
pub(super) fn key_of(client_id: &str) -> String {
    if client_id.len() <= 180 {
        format!("c_{}", URL_SAFE_NO_PAD.encode(client_id))
    } else {
        format!(
            "h_{}",
            URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(client_id))
        )
    }
}

pub(super) async fn claim(
    cluster: &Cluster,
    client_id: &str,
    conn: u64,
    durable: bool,
) -> Result<Claimed, ClaimError> {
    let key = key_of(client_id);
    let value = serde_json::to_vec(&Owner {
        node: cluster.config.node.clone(),
        conn,
        client_id: client_id.to_string(),
        durable,
    })
    .map_err(|_| ClaimError::Unavailable)?;
    let limit = Duration::from_secs(cluster.config.ack_timeout);
    let write = async {
        let current = cluster
            .owners
            .entry(key.clone())
            .await
            .map_err(|_| ClaimError::Unavailable)?;
        let previous = current.as_ref().and_then(|e| {
            let owner = serde_json::from_slice::<Owner>(&e.value).ok()?;
            Some(Previous {
                node: owner.node,
                revision: e.revision,
                durable: owner.durable,
            })
        });
        let written = match current {
            None => cluster
                .owners
                .create(&key, value.into())
                .await
                .map_err(|e| match e.kind() {
                    kv::CreateErrorKind::AlreadyExists => ClaimError::Conflict,
                    _ => ClaimError::Unavailable,
                }),
            Some(entry) => cluster
                .owners
                .update(&key, value.into(), entry.revision)
                .await
                .map_err(|e| match e.kind() {
                    kv::UpdateErrorKind::WrongLastRevision => ClaimError::Conflict,
                    _ => ClaimError::Unavailable,
                }),
        };
        written.map(|revision| (previous, revision))
    };
    let (previous, revision) = tokio::time::timeout(limit, write)
        .await
        .map_err(|_| ClaimError::Unavailable)??;
    cluster
        .claims
        .by_client
        .lock()
        .insert(client_id.to_string(), LocalClaim { conn, revision });
    // A claim written after ours may have been seen by the watch before ours was recorded:
    // read the key again, now that the watch knows of ours.
    match cluster.owners.entry(key).await {
        Ok(Some(entry)) if entry.revision > revision => {
            cluster.claims.release(client_id, conn);
            Err(ClaimError::Conflict)
        }
        _ => Ok(Claimed { previous, revision }),
    }
}

/// At start: durable Sessions this node's store brought back whose client was claimed by
/// another node meanwhile (while this one was down) moved there, and end here.
pub(super) async fn drop_moved(broker: Arc<Broker>) {
    let Some(cluster) = broker.cluster.as_ref() else {
        return;
    };
    for handle in broker.registry.handles() {
        if !handle.follows_stream() || handle.slot.lock().conn.is_some() {
            continue;
        }
        let Ok(Some(entry)) = cluster.owners.entry(key_of(&handle.client_id)).await else {
            continue;
        };
        let Ok(owner) = serde_json::from_slice::<Owner>(&entry.value) else {
            continue;
        };
        if owner.node != cluster.config.node {
            info!(
                client_id = &*handle.client_id,
                node = owner.node.as_str(),
                "cluster: Session moved to another node while this one was away; ended here"
            );
            broker.end_session_if(&handle, |slot| slot.conn.is_none());
        }
    }
}

/// Watches the bucket for ever: a claim by another node closes this node's connection of
/// that client id (if it was claimed earlier).
pub(super) async fn watch(broker: Arc<Broker>) {
    let shutdown = broker.shutdown.clone();
    let mut delay = Duration::from_millis(100);
    loop {
        tokio::select! {
            r = watch_once(&broker) => if let Err(e) = r {
                warn!(error = %e, "cluster: watching session owners failed; retrying");
            },
            _ = shutdown.cancelled() => return,
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.cancelled() => return,
        }
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

async fn watch_once(broker: &Arc<Broker>) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let Some(cluster) = broker.cluster.as_ref() else {
        return Ok(());
    };
    let seen = &cluster.claims.seen;
    let mut updates = match seen.load(Relaxed) {
        0 => cluster.owners.watch_all().await?,
        last => cluster.owners.watch_all_from_revision(last + 1).await?,
    };
    while let Some(entry) = updates.next().await {
        let entry = entry?;
        seen.fetch_max(entry.revision, Relaxed);
        if entry.operation != kv::Operation::Put {
            continue;
        }
        let Ok(owner) = serde_json::from_slice::<Owner>(&entry.value) else {
            continue;
        };
        if owner.node == cluster.config.node {
            continue;
        }
        // A durable Session held here without a connection goes on at that node.
        super::follow::claimed_elsewhere(broker, &owner.client_id, entry.revision);
        let lost = {
            let mut claims = cluster.claims.by_client.lock();
            match claims.get(&owner.client_id) {
                Some(c) if c.revision < entry.revision => claims.remove(&owner.client_id),
                _ => None,
            }
        };
        let Some(lost) = lost else {
            continue;
        };
        if let Some(session) = broker.registry.get(&owner.client_id) {
            let link = session.slot.lock().conn.clone();
            if let Some(link) = link.filter(|l| l.id == lost.conn) {
                cluster.stats.taken_over.fetch_add(1, Relaxed);
                info!(
                    client_id = owner.client_id.as_str(),
                    node = owner.node.as_str(),
                    "cluster: session taken over by another node"
                );
                link.kick(KickReason::TakenOver);
            }
        }
    }
    Err("the watch ended".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_valid_bucket_keys() {
        for id in ["", "a", "sensor/17", "ü.x y", &"x".repeat(65535)] {
            let key = key_of(id);
            assert!(key.len() <= 250, "{}", key.len());
            assert!(
                key.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
                "{key}"
            );
        }
        assert_ne!(key_of("a"), key_of("b"));
    }
}
