//! The Rust samples of the README, as compiled code: each block between `// README: NAME`
//! and `// README END` is, without its indentation, one ```rust block of README.md
//! (`tests/readme.rs` checks that they are the same, so a sample that no longer compiles
//! fails the build). The network, sensor, clock and RNG are stand-ins: this program only
//! shows that the samples build, it does not connect anywhere.
//!
//! For a program that talks to a broker, see `examples/sensor.rs`.

use core::future::Future;

use embassy_futures::select::{Either, select};
use embedded_io::ErrorKind;
use roost_client::{
    Client, Clock, ConnectOptions, Error, Event, Protocol, PublishProperties, QoS, RamStore,
    SessionStore, SubscribeProperties, Subscription, TopicAliasSlot,
};

/// Stand-in for a TCP socket (embassy-net `TcpSocket`, a modem, ...).
struct Socket;

impl embedded_io::ErrorType for Socket {
    type Error = ErrorKind;
}

impl embedded_io_async::Read for Socket {
    async fn read(&mut self, _buf: &mut [u8]) -> Result<usize, ErrorKind> {
        Err(ErrorKind::NotConnected)
    }
}

impl embedded_io_async::Write for Socket {
    async fn write(&mut self, _buf: &[u8]) -> Result<usize, ErrorKind> {
        Err(ErrorKind::NotConnected)
    }
    async fn flush(&mut self) -> Result<(), ErrorKind> {
        Err(ErrorKind::NotConnected)
    }
}

/// Opens a TCP connection to the broker.
async fn open_tcp() -> Socket {
    Socket
}

/// Stand-in for a hardware timer.
struct Ticks;

impl Clock for Ticks {
    fn now_ms(&mut self) -> u64 {
        0
    }
    fn sleep_until(&mut self, _deadline_ms: u64) -> impl Future<Output = ()> {
        core::future::pending()
    }
}

/// Stand-in for a sensor that has a reading every now and then.
struct Sensor;

impl Sensor {
    async fn ready(&mut self) -> [u8; 4] {
        [0, 0, 0xa8, 0x41]
    }
}

fn handle(topic: &str, payload: &[u8]) {
    println!("{topic}: {payload:?}");
}

fn log(e: Error) {
    println!("{e}");
}

fn note(text: &str) {
    println!("{text}");
}

async fn usage(clock: Ticks, mut sensor: Sensor) {
    // README: usage
    let (mut tx, mut rx, mut session) = ([0u8; 512], [0u8; 512], [0u8; 1024]);
    let mut client = Client::new(clock, RamStore::new(&mut session), &mut tx, &mut rx);

    let mut opts = ConnectOptions::new("sensor-17");
    opts.protocol = Protocol::V5; // or Protocol::V311 (the default)
    opts.clean_session = false; // keep QoS 1/2 state across reconnects
    opts.session_expiry_secs = 3600; // v5: needed for the server to keep the session
    let sub = Subscription::new("sensors/17/cmd", QoS::AtLeastOnce);

    loop {
        if !client.is_connected() {
            match client.connect(open_tcp().await, &opts).await {
                // No session on the server (first connect, or it expired): subscribe.
                Ok(ack) if !ack.session_present => {
                    if let Err(e) = client.subscribe(&[sub]).await {
                        log(e);
                    }
                }
                Ok(_) => {} // session resumed: unacknowledged QoS 1/2 messages were resent
                Err(e) => log(e), // wait a little before the next attempt
            }
            continue;
        }
        match select(client.poll(), sensor.ready()).await {
            Either::First(Ok(Event::Message(m))) => handle(m.topic, m.payload),
            Either::First(Ok(_acks)) => {}
            // Fatal (then is_connected() is false) or not, e.g. Error::MessageTooLarge.
            Either::First(Err(e)) => log(e),
            Either::Second(reading) => {
                let r = client.publish("sensors/17/temp", &reading, QoS::AtLeastOnce, false);
                if let Err(e) = r.await {
                    log(e);
                }
            }
        }
    }
    // README END
}

async fn windows<S: SessionStore>(clock: Ticks, store: S) -> Result<(), Error> {
    let (mut tx, mut rx) = ([0u8; 256], [0u8; 256]);
    // README: windows
    // At most 4 outgoing packets unacknowledged (QoS 1/2 PUBLISH, SUBSCRIBE, UNSUBSCRIBE),
    // at most 2 incoming QoS 2 messages waiting for PUBREL (and Receive Maximum 2 with v5).
    let mut client: Client<'_, _, _, _, 4, 2> =
        Client::with_windows(clock, store, &mut tx, &mut rx);
    // README END
    client
        .connect(open_tcp().await, &ConnectOptions::new("w"))
        .await?;
    Ok(())
}

async fn properties(clock: Ticks, store: RamStore<'_>) -> Result<(), Error> {
    let (mut tx, mut rx) = ([0u8; 256], [0u8; 256]);
    let mut client = Client::new(clock, store, &mut tx, &mut rx);
    let socket = open_tcp().await;
    // README: properties
    let mut opts = ConnectOptions::new("sensor-17");
    opts.protocol = Protocol::V5;
    opts.session_expiry_secs = 3600; // Session Expiry Interval, seconds
    opts.receive_maximum = 4; // 0 = IN window; capped at IN
    opts.maximum_packet_size = 512; // bytes; 0 = rx buffer; capped at the rx buffer
    opts.user_properties = &[("fw", "1.4.2")];

    let mut aliases = [TopicAliasSlot::EMPTY; 4]; // aliases 1..=4 (8 bytes each)
    client.set_topic_aliases(&mut aliases);
    client.connect(socket, &opts).await?;

    let props = PublishProperties {
        payload_utf8: true,             // Payload Format Indicator 1
        message_expiry_secs: Some(600), // Message Expiry Interval, seconds
        content_type: Some("application/json"),
        response_topic: Some("sensors/17/reply"),
        correlation_data: Some(b"req-7"),
        user_properties: &[("unit", "C")],
        topic_alias: Some(1), // first use sends the topic, then an empty one
    };
    let (topic, payload) = ("sensors/17/temp", b"{\"t\":21.5}");
    client
        .publish_with(topic, payload, QoS::AtLeastOnce, false, &props)
        .await?;

    let mut sub = Subscription::new("sensors/17/cmd/#", QoS::AtLeastOnce);
    sub.no_local = true; // not my own messages
    sub.retain_as_published = true; // keep the retain flag as published
    sub.retain_handling = 1; // retained messages only for a new subscription
    let sub_props = SubscribeProperties {
        subscription_id: Some(7),
        user_properties: &[],
    };
    client.subscribe_with(&[sub], &sub_props).await?;

    match client.poll().await {
        Ok(Event::Message(m)) => {
            let from_cmd = m.subscription_ids().any(|id| id == 7);
            if from_cmd && m.content_type() == Some("application/json") {
                handle(m.topic, m.payload);
            }
            if let Some((_, unit)) = m.user_properties().find(|(name, _)| *name == "unit") {
                note(unit);
            }
            // A request: answer on the response topic with the correlation data. Both
            // borrow the receive buffer: copy them before the next call on the client.
            if let (Some(reply_to), Some(id)) = (m.response_topic(), m.correlation_data()) {
                handle(reply_to, id);
            }
        }
        Err(e @ Error::Rejected { .. }) => {
            log(e); // and the server's reason string, if it sent one:
            note(client.reason_string().unwrap_or(""));
        }
        _ => {}
    }
    // README END
    Ok(())
}

async fn inbound_aliases(clock: Ticks, store: RamStore<'_>) -> Result<(), Error> {
    let (mut tx, mut rx) = ([0u8; 256], [0u8; 256]);
    let mut client = Client::new(clock, store, &mut tx, &mut rx);
    // README: inbound-aliases
    let mut alias_storage = [0u8; 8 * (2 + 48)]; // 8 aliases, topics up to 48 bytes
    client.set_inbound_topic_aliases(&mut alias_storage, 48);
    // README END
    let mut opts = ConnectOptions::new("a");
    opts.protocol = Protocol::V5;
    client.connect(open_tcp().await, &opts).await?;
    Ok(())
}

#[cfg(feature = "tls")]
mod tls_sample {
    use super::*;

    /// Stand-in for the chip's hardware RNG.
    pub struct HwRng;

    impl roost_client::tls::RngCore for HwRng {
        fn next_u32(&mut self) -> u32 {
            4
        }
        fn next_u64(&mut self) -> u64 {
            4
        }
        fn fill_bytes(&mut self, dest: &mut [u8]) {
            dest.fill(4);
        }
        fn try_fill_bytes(
            &mut self,
            dest: &mut [u8],
        ) -> Result<(), roost_client::tls::rand_core::Error> {
            dest.fill(4);
            Ok(())
        }
    }

    impl roost_client::tls::CryptoRng for HwRng {}

    /// The CA certificate in DER; a real program has `include_bytes!("ca.der")` here.
    static CA: &[u8] = &[];

    pub async fn tls(mut clock: Ticks, mut hw_rng: HwRng, opts: ConnectOptions<'_>) {
        let (mut tx, mut rx, mut session) = ([0u8; 512], [0u8; 512], [0u8; 1024]);
        // README: tls
        use roost_client::tls::{self, CaVerified};
        let mut record_rx = [0u8; tls::MAX_RECORD]; // 16,640 bytes: the largest TLS record
        let mut record_tx = [0u8; 1024];
        let mut store = RamStore::new(&mut session); // outlives the connections
        loop {
            let socket = open_tcp().await;
            // `&mut hw_rng` and `&mut clock`: both are used again by the next connection
            // (`&mut` of an RNG or a Clock is one too).
            let provider = CaVerified::new(CA, &mut hw_rng);
            let server = "broker.example.com";
            let Ok(stream) =
                tls::connect(socket, &mut record_rx, &mut record_tx, server, provider).await
            else {
                continue; // and wait a little before the next attempt
            };
            // One client per TLS connection (the stream borrows the record buffers); the
            // shared store carries QoS 1/2 state over: the first persistent connect restores
            // it.
            let mut client = Client::new(&mut clock, &mut store, &mut tx, &mut rx);
            if client.connect(stream, &opts).await.is_err() {
                continue;
            }
            while client.is_connected() {
                if let Err(e) = client.poll().await {
                    log(e);
                }
            }
        }
        // README END
    }
}

fn main() {
    // Building this program is the point; the futures are created, never run.
    drop(usage(Ticks, Sensor));
    let mut store = [0u8; 256];
    drop(windows(Ticks, RamStore::new(&mut store)));
    let mut store = [0u8; 256];
    drop(properties(Ticks, RamStore::new(&mut store)));
    let mut store = [0u8; 256];
    drop(inbound_aliases(Ticks, RamStore::new(&mut store)));
    #[cfg(feature = "tls")]
    drop(tls_sample::tls(
        Ticks,
        tls_sample::HwRng,
        ConnectOptions::new("t"),
    ));
    println!("the README samples build");
}
