//! Firmware-style example, used to measure flash and RAM on `thumbv7em-none-eabihf`.
//!
//! It is generic over the transport (no network stack needed): `Link` stands for a modem or
//! TCP/TLS socket driver, `Ticks` for a hardware timer. `core::hint::black_box` keeps the
//! optimizer from seeing through them, so all of the client is linked in.
//!
//! Build and measure (see README.md "Size report"; `.ci/size` measures every feature set):
//! ```text
//! cargo build -p roost-client --release --example firmware --target thumbv7em-none-eabihf
//! llvm-size target/thumbv7em-none-eabihf/release/examples/firmware
//! ```
//! With the `tls` feature the node connects through TLS 1.3 (embedded-tls, server
//! certificate verified against a CA) and creates one client per TLS connection.
//! On the host it builds as an ordinary program that runs a few rounds against the fake link.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

use core::future::Future;
use core::hint::black_box;
use core::pin::pin;
use core::task::{Context, Poll, Waker};

use embedded_io::ErrorKind;
use roost_client::{
    Client, Clock, ConnectOptions, Event, Protocol, QoS, RamStore, Subscription, Will,
};

/// Stand-in for a network driver (embassy-net TcpSocket, embedded-tls, a modem...).
struct Link;

impl embedded_io::ErrorType for Link {
    type Error = ErrorKind;
}

impl embedded_io_async::Read for Link {
    async fn read(&mut self, buf: &mut [u8]) -> Result<usize, ErrorKind> {
        let n = black_box(buf.len()).min(buf.len());
        for b in buf[..n].iter_mut() {
            *b = black_box(0);
        }
        if black_box(false) {
            return Err(ErrorKind::ConnectionReset);
        }
        Ok(n)
    }
}

impl embedded_io_async::Write for Link {
    async fn write(&mut self, buf: &[u8]) -> Result<usize, ErrorKind> {
        black_box(buf);
        Ok(black_box(buf.len()))
    }
    async fn flush(&mut self) -> Result<(), ErrorKind> {
        Ok(())
    }
}

/// Stand-in for a hardware timer.
struct Ticks;

impl Clock for Ticks {
    fn now_ms(&mut self) -> u64 {
        black_box(0)
    }
    fn sleep_until(&mut self, deadline_ms: u64) -> impl Future<Output = ()> {
        core::future::poll_fn(move |_| {
            if black_box(deadline_ms) == 0 {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
    }
}

#[cfg(feature = "v5")]
const PROTOCOL: Protocol = Protocol::V5;
#[cfg(not(feature = "v5"))]
const PROTOCOL: Protocol = Protocol::V311;

#[cfg(feature = "qos2")]
const TOP_QOS: QoS = QoS::ExactlyOnce;
#[cfg(not(feature = "qos2"))]
const TOP_QOS: QoS = QoS::AtLeastOnce;

/// Size of the client state on this target (readable with `llvm-nm -S` / `llvm-objdump -s`).
#[unsafe(no_mangle)]
#[used]
pub static ROOST_CLIENT_SIZE: usize =
    core::mem::size_of::<Client<'static, Link, Ticks, RamStore<'static>>>();

/// The development CA in DER would go here (`include_bytes!`); opaque to the optimizer.
#[cfg(feature = "tls")]
static CA_DER: [u8; 420] = [0x30; 420];

/// Stand-in for the chip's hardware RNG.
#[cfg(feature = "tls")]
struct HwRng;

#[cfg(feature = "tls")]
impl roost_client::tls::RngCore for HwRng {
    fn next_u32(&mut self) -> u32 {
        black_box(4)
    }
    fn next_u64(&mut self) -> u64 {
        black_box(4)
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        for b in dest.iter_mut() {
            *b = black_box(4);
        }
    }
    fn try_fill_bytes(
        &mut self,
        dest: &mut [u8],
    ) -> Result<(), roost_client::tls::rand_core::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}

#[cfg(feature = "tls")]
impl roost_client::tls::CryptoRng for HwRng {}

/// The sensor node over TLS 1.3: one client per TLS connection (the TLS stream borrows its
/// record buffers), one session store shared by all of them, so QoS 1/2 state survives the
/// reconnects.
#[cfg(feature = "tls")]
async fn app(rounds: u32) {
    use roost_client::tls::{self, CaVerified};
    let mut tx = [0u8; 256];
    let mut rx = [0u8; 256];
    let mut session = [0u8; 512];
    // TLS record buffers: the largest record a server may send, and one outgoing record.
    let mut record_rx = [0u8; tls::MAX_RECORD];
    let mut record_tx = [0u8; 1024];
    let mut store = RamStore::new(&mut session);
    let opts = options();
    let mut round = 0;
    while round < rounds {
        let provider = CaVerified::new(black_box(&CA_DER[..]), HwRng);
        let stream = match tls::connect(
            Link,
            &mut record_rx,
            &mut record_tx,
            "broker.local",
            provider,
        )
        .await
        {
            Ok(s) => s,
            Err(e) => {
                black_box(e);
                round += 1;
                continue;
            }
        };
        let mut client = Client::new(Ticks, &mut store, &mut tx, &mut rx);
        if client.connect(stream, &opts).await.is_err() {
            round += 1;
            continue;
        }
        let _ = client
            .subscribe(&[Subscription::new("sensors/17/cmd", TOP_QOS)])
            .await;
        while client.is_connected() && round < rounds {
            work(&mut client, round).await;
            round += 1;
        }
    }
}

/// The connect options of the sensor node.
fn options() -> ConnectOptions<'static> {
    let mut opts = ConnectOptions::new("sensor-17");
    opts.protocol = PROTOCOL;
    opts.keep_alive_secs = 30;
    opts.clean_session = false;
    opts.will = Some(Will {
        topic: "sensors/17/status",
        payload: b"offline",
        qos: QoS::AtLeastOnce,
        retain: true,
    });
    opts
}

/// One round of the sensor node: publish readings at every QoS, handle one event.
async fn work<T, S>(client: &mut Client<'_, T, Ticks, S>, round: u32)
where
    T: embedded_io_async::Read + embedded_io_async::Write,
    S: roost_client::SessionStore,
{
    let mut reading = [0u8; 8];
    reading[0] = black_box(round as u8);
    let _ = client
        .publish("sensors/17/temp", &reading, QoS::AtMostOnce, false)
        .await;
    let _ = client
        .publish("sensors/17/temp", &reading, QoS::AtLeastOnce, false)
        .await;
    let _ = client
        .publish("sensors/17/alarm", &reading, TOP_QOS, true)
        .await;
    match client.poll().await {
        Ok(Event::Message(m)) => {
            black_box(m.topic);
            black_box(m.payload);
        }
        Ok(other) => {
            black_box(other);
        }
        Err(e) => {
            black_box(e);
        }
    }
    if black_box(round) == 1000 {
        let _ = client.unsubscribe(&["sensors/17/cmd"]).await;
        let _ = client.disconnect().await;
    }
}

/// A sensor node: publish readings, accept commands, reconnect on failure.
#[cfg(not(feature = "tls"))]
async fn app(rounds: u32) {
    let mut tx = [0u8; 256];
    let mut rx = [0u8; 256];
    let mut session = [0u8; 512];
    let mut client = Client::new(Ticks, RamStore::new(&mut session), &mut tx, &mut rx);
    let opts = options();
    for round in 0..rounds {
        if !client.is_connected() {
            if client.connect(Link, &opts).await.is_err() {
                continue;
            }
            let _ = client
                .subscribe(&[Subscription::new("sensors/17/cmd", TOP_QOS)])
                .await;
        }
        work(&mut client, round).await;
    }
}

/// A minimal executor: polls the future with a no-op waker until it completes.
fn block_on<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
    }
}

#[cfg(target_os = "none")]
#[unsafe(no_mangle)]
pub extern "C" fn _start() -> ! {
    block_on(app(black_box(u32::MAX)));
    loop {
        core::hint::spin_loop();
    }
}

#[cfg(target_os = "none")]
#[panic_handler]
fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
    loop {
        core::hint::spin_loop();
    }
}

#[cfg(not(target_os = "none"))]
fn main() {
    let fut = app(3);
    println!(
        "client state: {} bytes, whole app future (incl. 1 KiB of buffers): {} bytes (host, 64-bit)",
        ROOST_CLIENT_SIZE,
        core::mem::size_of_val(&fut)
    );
    block_on(fut);
}
