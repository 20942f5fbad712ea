//! Firmware-style example, used to measure flash and RAM on `thumbv7em-none-eabihf`.
//!
//! It is generic over the transport (no network stack needed): `Link` stands for a modem or
//! TCP/TLS socket driver, `Ticks` for a hardware timer. `core::hint::black_box` keeps the
//! optimizer from seeing through them, so all of the client is linked in.
//!
//! Build and measure (see README.md "Size report"):
//! ```text
//! cargo build -p roost-client --release --example firmware --target thumbv7em-none-eabihf
//! llvm-size target/thumbv7em-none-eabihf/release/examples/firmware
//! ```
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

/// A sensor node: publish readings, accept commands, reconnect on failure.
async fn app(rounds: u32) {
    let mut tx = [0u8; 256];
    let mut rx = [0u8; 256];
    let mut session = [0u8; 512];
    let mut client = Client::new(Ticks, RamStore::new(&mut session), &mut tx, &mut rx);
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
    let mut reading = [0u8; 8];
    for round in 0..rounds {
        if !client.is_connected() {
            if client.connect(Link, &opts).await.is_err() {
                continue;
            }
            let _ = client
                .subscribe(&[Subscription::new("sensors/17/cmd", TOP_QOS)])
                .await;
        }
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
