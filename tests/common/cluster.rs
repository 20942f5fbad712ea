//! Roost nodes in cluster mode on a NATS cluster from [`super::nats`].

use roost::config::ClusterConfig;
use roost::{BrokerHandle, Config};

/// The `[cluster]` settings of node `node` on the NATS servers `urls` (replicas 3 when there
/// are three servers or more, else 1).
pub fn cluster_config(urls: &[String], node: &str) -> ClusterConfig {
    let mut c = ClusterConfig::new(urls.to_vec(), node);
    c.replicas = if urls.len() >= 3 { 3 } else { 1 };
    c
}

/// The same settings as a `[cluster]` table for a configuration file.
pub fn cluster_toml(urls: &[String], node: &str) -> String {
    let c = cluster_config(urls, node);
    format!(
        "[cluster]\nnats = {:?}\nnode = {:?}\nreplicas = {}\n",
        c.nats, c.node, c.replicas
    )
}

/// Starts an in-memory node `node` on an ephemeral port, after letting the caller adjust the
/// configuration.
pub async fn start_node_with(
    urls: &[String],
    node: &str,
    adjust: impl FnOnce(&mut Config),
) -> BrokerHandle {
    let config_node = cluster_config(urls, node);
    super::start_broker_with(|c| {
        c.cluster = Some(config_node);
        adjust(c);
    })
    .await
}

/// Starts an in-memory node `node` on an ephemeral port.
pub async fn start_node(urls: &[String], node: &str) -> BrokerHandle {
    start_node_with(urls, node, |_| {}).await
}

/// Waits (bounded) until the durable Session state of `client_id` that the nodes keep in
/// the `ROOST_SESSIONS_STATE` bucket satisfies `done` (given its JSON), and returns it.
#[allow(dead_code)]
pub async fn wait_state(
    urls: &[String],
    client_id: &str,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    use base64::Engine;
    let client = super::nats::connect(urls).await;
    let bucket = async_nats::jetstream::new(client)
        .get_key_value("ROOST_SESSIONS_STATE")
        .await
        .expect("the state bucket");
    let key = format!(
        "c_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(client_id)
    );
    let deadline = tokio::time::Instant::now() + super::WAIT;
    loop {
        if let Ok(Some(value)) = bucket.get(&key).await
            && let Ok(state) = serde_json::from_slice::<serde_json::Value>(&value)
            && done(&state)
        {
            return state;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the state of {client_id} in time"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Starts three in-memory nodes `n1`, `n2` and `n3`.
#[allow(dead_code)]
pub async fn start_three(urls: &[String]) -> (BrokerHandle, BrokerHandle, BrokerHandle) {
    (
        start_node(urls, "n1").await,
        start_node(urls, "n2").await,
        start_node(urls, "n3").await,
    )
}
