//! Retained messages shared by every node: a stream that keeps the last message of each
//! subject (an empty payload deletes, MQTT-3.3.1-10). Each node loads it at start and then
//! follows it, applying every update in the stream's order (its own included), so that all
//! nodes end with the same retained message per topic.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::{self, pull};
use futures_util::StreamExt;
use tokio::sync::oneshot;
use tracing::{debug, info, warn};

use crate::broker::Broker;
use crate::codec::QoS;

use super::{subject, wire};

/// Follows the retained stream for ever; `loaded` is told once what the stream held at
/// start has been applied.
pub(super) async fn follow(broker: Arc<Broker>, loaded: oneshot::Sender<()>) {
    let shutdown = broker.shutdown.clone();
    let mut loaded = Some(loaded);
    let mut delay = Duration::from_millis(100);
    loop {
        tokio::select! {
            r = follow_once(&broker, &mut loaded) => if let Err(e) = r {
                warn!(error = %e, "cluster: following retained messages failed; retrying");
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

type Error = Box<dyn std::error::Error + Send + Sync>;

async fn follow_once(
    broker: &Arc<Broker>,
    loaded: &mut Option<oneshot::Sender<()>>,
) -> Result<(), Error> {
    let Some(cluster) = broker.cluster.as_ref() else {
        return Ok(());
    };
    let c = &cluster.config;
    let mut stream = cluster.jetstream().get_stream(&c.retained_stream).await?;
    let last = stream.info().await?.state.last_sequence;
    let consumer = stream
        .create_consumer(pull::OrderedConfig {
            filter_subject: format!("{}.>", c.retained_subject),
            deliver_policy: consumer::DeliverPolicy::LastPerSubject,
            ..Default::default()
        })
        .await?;
    let mut messages = consumer.messages().await?;
    let mut count = 0usize;
    let done = |count: usize, loaded: &mut Option<oneshot::Sender<()>>| {
        if let Some(tx) = loaded.take() {
            info!(retained = count, "cluster: retained messages loaded");
            let _ = tx.send(());
        }
    };
    if last == 0 {
        done(0, loaded);
    }
    while let Some(m) = messages.next().await {
        let m = m?;
        let sequence = m.info().map(|i| i.stream_sequence).unwrap_or(0);
        let topic = subject::subject_topic(&c.retained_subject, &m.subject)
            .filter(|t| crate::topic::valid_topic_name(t));
        let received = topic.and_then(|topic| {
            wire::read(
                topic,
                m.headers.as_ref(),
                m.payload.clone(),
                QoS::AtMostOnce,
                QoS::ExactlyOnce,
                broker.clock.now(),
                super::stored_for(broker, &m),
            )
        });
        match received {
            Some(r) => {
                let mut message = r.message;
                Arc::make_mut(&mut message).retain = true;
                broker.router.retain(&message, None);
                count += 1;
            }
            None => debug!(subject = %m.subject, "cluster: retained stream message ignored"),
        }
        if sequence >= last {
            done(count, loaded);
        }
    }
    Err("the retained stream's consumer ended".into())
}
