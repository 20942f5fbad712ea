//! An MQTT load generator for Roost and other brokers.
//!
//! Each client is one tokio task over a raw `TcpStream` speaking MQTT through Roost's codec:
//! many packets per write, every complete packet decoded per read, no client-library event
//! loop in between. Every run is bounded in time, prints progress on stderr when it lasts more
//! than a couple of seconds, and ends with one JSON line on stdout.
//!
//! ```text
//! cargo run --release --example loadgen -- pubsub --pubs 1 --subs 1 --qos 1 --count 200000
//! cargo run --release --example loadgen -- pubsub --pubs 1 --subs 100 --count 10000
//! cargo run --release --example loadgen -- pubsub --qos 1 --rate 10000 --count 100000
//! cargo run --release --example loadgen -- conn --n 5000 --rate 1000 --hold 5
//! cargo run --release --example loadgen -- conn --n 100000 --rate 2000 --sources 8
//! ```
//!
//! `examples/bench.py` runs the whole comparison with mosquitto and rumqttd.

mod client;
mod conn;
mod hist;
mod pubsub;
mod report;

use std::net::{SocketAddr, ToSocketAddrs};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use roost::codec::Version;

/// MQTT load generator.
#[derive(Debug, Parser)]
#[command(about)]
struct Cli {
    #[command(flatten)]
    common: Common,
    #[command(subcommand)]
    scenario: Scenario,
}

/// Options shared by every scenario.
#[derive(Debug, Args)]
pub struct Common {
    /// Broker host.
    #[arg(long, default_value = "127.0.0.1", global = true)]
    host: String,
    /// Broker port.
    #[arg(short, long, default_value_t = 1883, global = true)]
    port: u16,
    /// MQTT protocol version: 3 (3.1.1) or 5.
    #[arg(long, default_value_t = 3, global = true)]
    mqtt: u8,
    /// Hard bound on the whole run, in seconds.
    #[arg(long, default_value_t = 120, global = true)]
    max_secs: u64,
    /// Bound on one TCP connect plus CONNACK, in seconds.
    #[arg(long, default_value_t = 30, global = true)]
    connect_timeout: u64,
    /// Tokio worker threads; 0 runs everything on one thread (current_thread runtime).
    #[arg(long, default_value_t = 0, global = true)]
    threads: usize,
    /// Free text copied into the JSON result (e.g. the broker's name).
    #[arg(long, default_value = "", global = true)]
    label: String,
    /// No progress lines on stderr.
    #[arg(short, long, global = true)]
    quiet: bool,
}

impl Common {
    /// The protocol version from `--mqtt`.
    fn version(&self) -> Result<Version, String> {
        match self.mqtt {
            3 | 4 => Ok(Version::V311),
            5 => Ok(Version::V5),
            v => Err(format!("--mqtt must be 3 (3.1.1) or 5, not {v}")),
        }
    }

    /// The broker address.
    fn addr(&self) -> Result<SocketAddr, String> {
        (self.host.as_str(), self.port)
            .to_socket_addrs()
            .map_err(|e| format!("resolve {}: {e}", self.host))?
            .next()
            .ok_or_else(|| format!("{} has no address", self.host))
    }
}

/// The scenarios.
#[derive(Debug, Subcommand)]
enum Scenario {
    /// Publishers and subscribers: throughput, latency and delivery checks.
    Pubsub(PubSubArgs),
    /// Idle connections: connect times and how many stay open.
    Conn(ConnArgs),
}

/// Options of the `pubsub` scenario.
#[derive(Debug, Args)]
pub struct PubSubArgs {
    /// Number of publishers.
    #[arg(long, default_value_t = 1)]
    pubs: usize,
    /// Number of subscribers (each receives every publisher's messages unless --pairs).
    #[arg(long, default_value_t = 1)]
    subs: usize,
    /// Publisher i sends only to subscriber i (needs --pubs = --subs).
    #[arg(long)]
    pairs: bool,
    /// QoS of the publishes.
    #[arg(long, default_value_t = 0)]
    qos: u8,
    /// QoS of the subscriptions [default: --qos].
    #[arg(long)]
    sub_qos: Option<u8>,
    /// Payload size in bytes (at least 20: send time, publisher id, sequence number).
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// Messages per publisher.
    #[arg(long, default_value_t = 10_000)]
    count: u64,
    /// Total publish rate in msg/s over all publishers; 0 = as fast as possible.
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// QoS 1/2 messages a publisher leaves unacknowledged at most.
    #[arg(long, default_value_t = 100)]
    inflight: u16,
    /// Most PUBLISH packets encoded into one write.
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Subscribers use durable sessions (3.1.1 clean_session=0, 5.0 session expiry 3600),
    /// after wiping any previous session with the same id.
    #[arg(long)]
    persistent_subs: bool,
    /// A subscriber stops after this many seconds without a new message.
    #[arg(long, default_value_t = 5.0)]
    idle_timeout: f64,
    /// Subscribers connect to this port of the same host instead of --port (e.g. the far
    /// side of a bridge).
    #[arg(long)]
    sub_port: Option<u16>,
    /// Subscribers connect to these ports in turn (comma-separated), e.g. one per cluster
    /// node; overrides --sub-port.
    #[arg(long, value_delimiter = ',')]
    sub_ports: Vec<u16>,
    /// Subscribers join the Shared Subscription `$share/{NAME}/...`: each message is
    /// expected once among them all, not once per subscriber.
    #[arg(long, value_name = "NAME")]
    share: Option<String>,
}

/// Options of the `conn` scenario.
#[derive(Debug, Args)]
pub struct ConnArgs {
    /// Number of connections.
    #[arg(long, default_value_t = 1000)]
    n: usize,
    /// Connection attempts per second; 0 = as fast as --concurrency allows.
    #[arg(long, default_value_t = 1000.0)]
    rate: f64,
    /// Connects in progress at most at any time.
    #[arg(long, default_value_t = 200)]
    concurrency: usize,
    /// Seconds to hold the connections once all attempts are answered.
    #[arg(long, default_value_t = 5.0)]
    hold: f64,
    /// Spread source addresses over 127.0.0.2 .. 127.0.0.(K+1) (bound before connecting);
    /// 0 lets the system choose. One address gives about 28k connections (ephemeral ports).
    #[arg(long, default_value_t = 0)]
    sources: usize,
    /// Print every connect slower than this many milliseconds to stderr, with its start time
    /// (seconds since the first) and index: shows whether a tail is spread out or in bursts.
    #[arg(long)]
    show_slow_ms: Option<f64>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = if cli.common.threads == 0 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(cli.common.threads)
            .enable_all()
            .build()
    };
    let runtime = match runtime {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("loadgen: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match &cli.scenario {
            Scenario::Pubsub(args) => pubsub::run(&cli.common, args).await,
            Scenario::Conn(args) => conn::run(&cli.common, args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("loadgen: {e}");
            ExitCode::FAILURE
        }
    }
}
