//! Shared helpers for the integration tests: an in-process broker on an ephemeral port,
//! rumqttc clients whose events arrive on a channel, and a raw client built on Roost's codec
//! for the protocol corners a well-behaved library will not produce.

#![allow(dead_code)]

pub mod binary;
pub mod bridge;
pub mod cluster;
pub mod nats;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use roost::codec::{self, Connect, Decoder, Packet, ReasonCode, Version};
use roost::{BrokerHandle, Config};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::timeout;

/// Bound on every wait in the tests.
pub const WAIT: Duration = Duration::from_secs(10);

/// Starts a broker on 127.0.0.1 with an ephemeral port.
pub async fn start_broker() -> BrokerHandle {
    start_broker_with(|_| {}).await
}

/// Starts a broker on an ephemeral port after letting the caller adjust the configuration.
/// It runs in memory unless the caller sets `in_memory = false` and a `data_dir`, and
/// without `$SYS` topics (which are retained messages) unless it sets `sys_interval`.
pub async fn start_broker_with(adjust: impl FnOnce(&mut Config)) -> BrokerHandle {
    let mut config = Config {
        port: 0,
        in_memory: true,
        sys_interval: 0,
        ..Config::default()
    };
    adjust(&mut config);
    roost::start(config).await.expect("broker starts")
}

/// A rumqttc 3.1.1 client whose incoming packets arrive on a channel.
pub struct V4Client {
    pub client: rumqttc::AsyncClient,
    pub events: mpsc::UnboundedReceiver<rumqttc::Packet>,
    task: JoinHandle<()>,
}

impl Drop for V4Client {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// rumqttc 3.1.1 options for `addr`.
pub fn v4_options(id: &str, addr: SocketAddr) -> rumqttc::MqttOptions {
    let mut o = rumqttc::MqttOptions::new(id, addr.ip().to_string(), addr.port());
    o.set_keep_alive(Duration::from_secs(30));
    o
}

/// Connects a rumqttc 3.1.1 client and waits for its CONNACK.
pub async fn v4_connect(options: rumqttc::MqttOptions) -> (V4Client, rumqttc::ConnAck) {
    let (client, mut eventloop) = rumqttc::AsyncClient::new(options, 1000);
    let (tx, mut events) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        while let Ok(event) = eventloop.poll().await {
            if let rumqttc::Event::Incoming(p) = event
                && tx.send(p).is_err()
            {
                return;
            }
        }
    });
    let connack = loop {
        match timeout(WAIT, events.recv()).await.expect("CONNACK in time") {
            Some(rumqttc::Packet::ConnAck(c)) => break c,
            Some(_) => continue,
            None => panic!("connection failed before CONNACK"),
        }
    };
    (
        V4Client {
            client,
            events,
            task,
        },
        connack,
    )
}

impl V4Client {
    /// Waits for the next packet matching `pick`, skipping others.
    pub async fn next<T>(&mut self, mut pick: impl FnMut(rumqttc::Packet) -> Option<T>) -> T {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let p = tokio::time::timeout_at(deadline, self.events.recv())
                .await
                .expect("packet in time")
                .expect("connection open");
            if let Some(t) = pick(p) {
                return t;
            }
        }
    }

    /// Waits for the next PUBLISH.
    pub async fn next_publish(&mut self) -> rumqttc::Publish {
        self.next(|p| match p {
            rumqttc::Packet::Publish(p) => Some(p),
            _ => None,
        })
        .await
    }

    /// Subscribes and waits for the SUBACK.
    pub async fn subscribe(&mut self, filter: &str, qos: rumqttc::QoS) -> rumqttc::SubAck {
        self.client.subscribe(filter, qos).await.expect("queued");
        self.next(|p| match p {
            rumqttc::Packet::SubAck(s) => Some(s),
            _ => None,
        })
        .await
    }
}

/// A rumqttc 5.0 client whose incoming packets arrive on a channel.
pub struct V5Client {
    pub client: rumqttc::v5::AsyncClient,
    pub events: mpsc::UnboundedReceiver<rumqttc::v5::mqttbytes::v5::Packet>,
    task: JoinHandle<()>,
}

impl Drop for V5Client {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// rumqttc 5.0 options for `addr`.
pub fn v5_options(id: &str, addr: SocketAddr) -> rumqttc::v5::MqttOptions {
    let mut o = rumqttc::v5::MqttOptions::new(id, addr.ip().to_string(), addr.port());
    o.set_keep_alive(Duration::from_secs(30));
    o
}

/// Connects a rumqttc 5.0 client and waits for its CONNACK.
pub async fn v5_connect(
    options: rumqttc::v5::MqttOptions,
) -> (V5Client, rumqttc::v5::mqttbytes::v5::ConnAck) {
    use rumqttc::v5::mqttbytes::v5::Packet as P;
    let (client, mut eventloop) = rumqttc::v5::AsyncClient::new(options, 1000);
    let (tx, mut events) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        while let Ok(event) = eventloop.poll().await {
            if let rumqttc::v5::Event::Incoming(p) = event
                && tx.send(p).is_err()
            {
                return;
            }
        }
    });
    let connack = loop {
        match timeout(WAIT, events.recv()).await.expect("CONNACK in time") {
            Some(P::ConnAck(c)) => break c,
            Some(_) => continue,
            None => panic!("connection failed before CONNACK"),
        }
    };
    (
        V5Client {
            client,
            events,
            task,
        },
        connack,
    )
}

impl V5Client {
    /// Waits for the next packet matching `pick`, skipping others.
    pub async fn next<T>(
        &mut self,
        mut pick: impl FnMut(rumqttc::v5::mqttbytes::v5::Packet) -> Option<T>,
    ) -> T {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let p = tokio::time::timeout_at(deadline, self.events.recv())
                .await
                .expect("packet in time")
                .expect("connection open");
            if let Some(t) = pick(p) {
                return t;
            }
        }
    }

    /// Waits for the next PUBLISH.
    pub async fn next_publish(&mut self) -> rumqttc::v5::mqttbytes::v5::Publish {
        use rumqttc::v5::mqttbytes::v5::Packet as P;
        self.next(|p| match p {
            P::Publish(p) => Some(p),
            _ => None,
        })
        .await
    }

    /// Subscribes and waits for the SUBACK.
    pub async fn subscribe(
        &mut self,
        filter: &str,
        qos: rumqttc::v5::mqttbytes::QoS,
    ) -> rumqttc::v5::mqttbytes::v5::SubAck {
        use rumqttc::v5::mqttbytes::v5::Packet as P;
        self.client.subscribe(filter, qos).await.expect("queued");
        self.next(|p| match p {
            P::SubAck(s) => Some(s),
            _ => None,
        })
        .await
    }
}

/// A client speaking raw packets through Roost's own codec.
pub struct RawClient {
    pub stream: TcpStream,
    pub version: Version,
    rbuf: BytesMut,
    decoder: Decoder,
}

/// A CONNECT with defaults: clean start, keep alive 30 s, no will.
pub fn connect_packet(version: Version, client_id: &str) -> Connect {
    Connect {
        keep_alive: 30,
        ..Connect::new(version, client_id)
    }
}

impl RawClient {
    /// Opens a TCP connection without sending anything.
    pub async fn open(addr: SocketAddr, version: Version) -> RawClient {
        let stream = timeout(WAIT, TcpStream::connect(addr))
            .await
            .expect("connect in time")
            .expect("connect");
        RawClient {
            stream,
            version,
            rbuf: BytesMut::new(),
            decoder: Decoder::client(version, 1 << 28),
        }
    }

    /// Opens a connection, sends `connect` and returns the CONNACK.
    pub async fn connect(addr: SocketAddr, connect: Connect) -> (RawClient, codec::ConnAck) {
        let mut c = RawClient::open(addr, connect.version).await;
        c.send(&Packet::Connect(Box::new(connect))).await;
        match c.recv().await {
            Some(Packet::ConnAck(ack)) => (c, ack),
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }

    /// [`RawClient::connect`] to a broker that may go away meanwhile: `None` if the
    /// connection is refused or closed before CONNACK.
    #[allow(dead_code)]
    pub async fn try_connect(
        addr: SocketAddr,
        connect: Connect,
    ) -> Option<(RawClient, codec::ConnAck)> {
        let stream = timeout(WAIT, TcpStream::connect(addr)).await.ok()?.ok()?;
        let mut c = RawClient {
            stream,
            version: connect.version,
            rbuf: BytesMut::new(),
            decoder: Decoder::client(connect.version, 1 << 28),
        };
        c.send(&Packet::Connect(Box::new(connect))).await;
        match c.recv().await? {
            Packet::ConnAck(ack) => Some((c, ack)),
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }

    /// Encodes and writes one packet.
    pub async fn send(&mut self, packet: &Packet) {
        let mut buf = BytesMut::new();
        codec::encode(packet, self.version, None, &mut buf).expect("encodable");
        self.send_raw(&buf).await;
    }

    /// Writes raw bytes (they may fail if the broker already closed).
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        let _ = timeout(WAIT, self.stream.write_all(bytes)).await;
    }

    /// The next packet, or `None` once the broker closed the connection.
    pub async fn recv(&mut self) -> Option<Packet> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match self.decoder.decode(&mut self.rbuf) {
                Ok(Some(p)) => return Some(p),
                Ok(None) => {}
                Err(e) => panic!("broker sent an undecodable packet: {e:?}"),
            }
            let n = tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.rbuf))
                .await
                .expect("packet or close in time");
            match n {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    }

    /// Reads until the broker closes the connection; returns the packets seen before that.
    pub async fn until_closed(&mut self) -> Vec<Packet> {
        let mut seen = Vec::new();
        while let Some(p) = self.recv().await {
            seen.push(p);
        }
        seen
    }

    /// Raw bytes until close (for responses the codec would reject, e.g. a 3.1.1 CONNACK to
    /// an unknown level).
    pub async fn raw_until_closed(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        let _ = timeout(WAIT, self.stream.read_to_end(&mut out)).await;
        out
    }
}

/// Polls a broker-side condition with a bounded number of yields to the runtime.
pub async fn wait_until(mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not reached in time"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// PUBLISH built for a raw client.
pub fn publish_with(
    topic: &str,
    qos: roost::codec::QoS,
    packet_id: u16,
    payload: &[u8],
    retain: bool,
) -> Packet {
    Packet::Publish(roost::codec::Publish {
        dup: false,
        qos,
        retain,
        topic: topic.to_string(),
        packet_id,
        payload: bytes::Bytes::copy_from_slice(payload),
        properties: Default::default(),
        topic_alias: None,
        subscription_identifiers: Vec::new(),
    })
}

/// A non-retained PUBLISH built for a raw client.
pub fn publish(topic: &str, qos: roost::codec::QoS, packet_id: u16, payload: &[u8]) -> Packet {
    publish_with(topic, qos, packet_id, payload, false)
}

/// SUBSCRIBE (packet id 1) to one filter with default options.
pub fn subscribe(filter: &str, qos: roost::codec::QoS) -> Packet {
    Packet::Subscribe(roost::codec::Subscribe::single(1, filter, qos))
}

/// PUBACK, PUBREC, PUBREL or PUBCOMP with a reason code.
pub fn ack_with(kind: roost::codec::AckKind, packet_id: u16, reason: u8) -> Packet {
    Packet::Ack(roost::codec::PubAckLike {
        kind,
        packet_id,
        reason: ReasonCode(reason),
        reason_string: None,
    })
}

/// PUBACK, PUBREC, PUBREL or PUBCOMP with reason 0.
pub fn ack(kind: roost::codec::AckKind, packet_id: u16) -> Packet {
    ack_with(kind, packet_id, 0)
}

/// Waits until the session of `client_id` exists and has no connection attached.
pub async fn wait_detached(broker: &roost::BrokerHandle, client_id: &str) {
    wait_until(|| broker.session_info(client_id).is_some_and(|s| !s.connected)).await;
}

/// An HTTP request to the broker's HTTP listener (bounded); returns status and body.
pub async fn http(method: &str, url: &str, authorization: Option<&str>) -> (u16, String) {
    let (method, url) = (method.to_string(), url.to_string());
    let authorization = authorization.map(str::to_string);
    tokio::task::spawn_blocking(move || {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(WAIT))
            .build()
            .new_agent();
        let mut request = match method.as_str() {
            "DELETE" => agent.delete(&url),
            _ => agent.get(&url),
        };
        if let Some(a) = &authorization {
            request = request.header("Authorization", a);
        }
        let mut response = request.call().expect("HTTP answer");
        let status = response.status().as_u16();
        let body = response.body_mut().read_to_string().expect("HTTP body");
        (status, body)
    })
    .await
    .expect("HTTP task")
}
