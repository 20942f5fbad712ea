//! Host example: a "sensor" publishing readings to a broker over TCP (tokio +
//! embedded-io-adapters), reconnecting with a persistent session when the connection drops.
//!
//! ```text
//! cargo run --release -p roost &     # or: mosquitto -p 1883 &
//! mosquitto_sub -t 'sensors/#' -v &
//! cargo run -p roost-client --example sensor -- 127.0.0.1:1883 [v5] [count]
//! ```

use std::future::Future;
use std::time::Duration;

use embedded_io_adapters::tokio_1::FromTokio;
use roost_client::{Client, Clock, ConnectOptions, Event, Protocol, QoS, RamStore, Subscription};
use tokio::net::TcpStream;

/// The client's clock on tokio time.
struct TokioClock(tokio::time::Instant);

impl Clock for TokioClock {
    fn now_ms(&mut self) -> u64 {
        self.0.elapsed().as_millis() as u64
    }
    fn sleep_until(&mut self, deadline_ms: u64) -> impl Future<Output = ()> {
        tokio::time::sleep_until(self.0 + Duration::from_millis(deadline_ms))
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:1883".into());
    let mut opts = ConnectOptions::new("roost-sensor-example");
    opts.keep_alive_secs = 5;
    opts.clean_session = false;
    let mut count = 10u32;
    for a in args {
        if a == "v5" {
            #[cfg(feature = "v5")]
            {
                opts.protocol = Protocol::V5;
                opts.session_expiry_secs = 3600;
            }
        } else if let Ok(n) = a.parse() {
            count = n;
        }
    }
    if opts.protocol == Protocol::V311 {
        println!("using MQTT 3.1.1");
    }

    let (mut tx, mut rx, mut session) = ([0u8; 512], [0u8; 512], [0u8; 2048]);
    let clock = TokioClock(tokio::time::Instant::now());
    let mut client = Client::new(clock, RamStore::new(&mut session), &mut tx, &mut rx);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut sent = 0u32;
    let mut acked = 0u32;

    while acked < count {
        if !client.is_connected() {
            let stream = match TcpStream::connect(&addr).await {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("connect {addr}: {e}; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            match client.connect(FromTokio::new(stream), &opts).await {
                Ok(ack) => println!(
                    "connected (session present: {}, resent: {})",
                    ack.session_present, ack.resent
                ),
                Err(e) => {
                    eprintln!("MQTT connect failed: {e}");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            }
            let _ = client
                .subscribe(&[Subscription::new("sensors/example/cmd", QoS::AtLeastOnce)])
                .await;
        }
        // poll() is cancel safe, so it can race the timer.
        let polled = tokio::select! {
            _ = tick.tick() => None,
            r = client.poll() => Some(match r {
                Ok(Event::Message(m)) => Ok(format!("command on {}: {:?}", m.topic, m.payload)),
                Ok(Event::PubAck(pid)) => Ok(format!("reading {pid} acknowledged")),
                Ok(other) => Ok(format!("{other:?}")),
                Err(e) => Err(e),
            }),
        };
        match polled {
            Some(Ok(line)) => {
                if line.starts_with("reading") {
                    acked += 1;
                }
                println!("{line}");
            }
            Some(Err(e)) => eprintln!("poll: {e} (connected: {})", client.is_connected()),
            None if sent < count => {
                let reading = format!("{{\"temp\":{:.1}}}", 20.0 + f64::from(sent % 7) * 0.5);
                match client
                    .publish(
                        "sensors/example/temp",
                        reading.as_bytes(),
                        QoS::AtLeastOnce,
                        false,
                    )
                    .await
                {
                    Ok(pid) => {
                        sent += 1;
                        println!("published {reading} (pid {pid})");
                    }
                    Err(e) => eprintln!("publish: {e}"),
                }
            }
            None => {}
        }
    }
    let _ = client.disconnect().await;
    println!("done: {acked} readings acknowledged");
}
