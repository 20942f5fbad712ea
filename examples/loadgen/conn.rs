//! The `conn` scenario: open N idle connections at a rate, hold them, report connect times
//! and how many the broker kept open.
//!
//! Each connection is as lean as a socket can be on this side (no buffers kept while idle),
//! so that a hundred thousand of them fit in the load generator. With `--sources K`, source
//! addresses are spread over 127.0.0.2 .. 127.0.0.(K+1) (bound before connecting): one source
//! address gives only as many connections as there are ephemeral ports (about 28k).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use roost::codec::{self, Connect, Decoder, Packet, Version};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{mpsc, watch};

use crate::hist::Histogram;
use crate::report::Json;
use crate::{Common, ConnArgs};

/// What one connection needs to know.
struct Idle {
    addr: SocketAddr,
    source: Option<IpAddr>,
    connect: BytesMut,
    version: Version,
}

impl Idle {
    /// TCP connect, CONNECT, CONNACK; returns the open stream.
    async fn open(&self) -> Result<TcpStream, String> {
        let socket = match self.addr {
            SocketAddr::V4(_) => TcpSocket::new_v4(),
            SocketAddr::V6(_) => TcpSocket::new_v6(),
        }
        .map_err(|e| format!("socket: {e}"))?;
        if let Some(source) = self.source {
            // Lets the port search of bind() pass over ports in TIME_WAIT.
            socket
                .set_reuseaddr(true)
                .map_err(|e| format!("SO_REUSEADDR: {e}"))?;
            socket
                .bind(SocketAddr::new(source, 0))
                .map_err(|e| format!("bind {source}: {e}"))?;
        }
        let mut stream = socket
            .connect(self.addr)
            .await
            .map_err(|e| format!("connect to {}: {e}", self.addr))?;
        stream
            .set_nodelay(true)
            .map_err(|e| format!("set TCP_NODELAY: {e}"))?;
        stream
            .write_all(&self.connect)
            .await
            .map_err(|e| format!("write CONNECT: {e}"))?;
        let mut decoder = Decoder::client(self.version, 1 << 16);
        let mut buf = BytesMut::with_capacity(64);
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(Packet::ConnAck(ack))) if ack.code.0 == 0 => return Ok(stream),
                Ok(Some(Packet::ConnAck(ack))) => {
                    return Err(format!("CONNACK refused with code {}", ack.code));
                }
                Ok(Some(other)) => return Err(format!("expected CONNACK, got {other:?}")),
                Ok(None) => {}
                Err(e) => return Err(format!("bad CONNACK: {e}")),
            }
            buf.reserve(64);
            match stream.read_buf(&mut buf).await {
                Ok(0) => return Err("closed before CONNACK".into()),
                Ok(_) => {}
                Err(e) => return Err(format!("read CONNACK: {e}")),
            }
        }
    }
}

/// Waits until the broker closes `stream` (true) or `release` is set (false).
async fn hold(stream: &mut TcpStream, release: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        _ = release.wait_for(|r| *r) => false,
        _ = async {
            loop {
                if stream.readable().await.is_err() {
                    return;
                }
                let mut byte = [0u8; 1];
                match stream.try_read(&mut byte) {
                    // A PINGRESP or the like would be read here; idle clients get none.
                    Ok(n) if n > 0 => {}
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    _ => return,
                }
            }
        } => true,
    }
}

/// Runs the scenario and prints the JSON result line.
pub async fn run(common: &Common, args: &ConnArgs) -> Result<(), String> {
    if args.n == 0 {
        return Err("--n must be at least 1".into());
    }
    let version = common.version()?;
    let addr = common.addr()?;
    if args.sources > 0 && !addr.ip().is_loopback() {
        return Err("--sources spreads over 127.0.0.x: only for a broker on loopback".into());
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(common.max_secs);
    let (result_tx, mut result_rx) =
        mpsc::unbounded_channel::<Result<(usize, Duration, Duration), String>>();
    let (release_tx, release_rx) = watch::channel(false);
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(args.n);
    let keep_alive = u16::try_from(common.max_secs.max(60)).unwrap_or(u16::MAX);
    // Connection starts are paced at --rate; --concurrency bounds unanswered CONNECTs.
    let gate = std::sync::Arc::new(tokio::sync::Semaphore::new(args.concurrency.max(1)));
    for i in 0..args.n {
        if args.rate > 0.0 {
            let at = start + Duration::from_secs_f64(i as f64 / args.rate);
            tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await;
        }
        if tokio::time::Instant::now() >= deadline {
            break;
        }
        let permit = std::sync::Arc::clone(&gate)
            .acquire_owned()
            .await
            .map_err(|e| format!("semaphore: {e}"))?;
        let connect = Connect {
            clean_start: true,
            keep_alive,
            ..Connect::new(version, &format!("lg-idle-{}-{i}", std::process::id()))
        };
        let mut bytes = BytesMut::new();
        codec::encode(
            &Packet::Connect(Box::new(connect)),
            version,
            None,
            &mut bytes,
        )
        .map_err(|e| format!("encode CONNECT: {e}"))?;
        let idle = Idle {
            addr,
            source: (args.sources > 0).then(|| {
                let k = (i % args.sources) as u32 + 2;
                IpAddr::V4(Ipv4Addr::from(0x7f00_0000 | k))
            }),
            connect: bytes,
            version,
        };
        let tx = result_tx.clone();
        let mut release = release_rx.clone();
        let connect_timeout = Duration::from_secs(common.connect_timeout);
        tasks.push(tokio::spawn(async move {
            let t0 = Instant::now();
            let opened = tokio::time::timeout(connect_timeout, idle.open()).await;
            drop(permit);
            let mut stream = match opened {
                Ok(Ok(stream)) => {
                    let _ = tx.send(Ok((i, t0 - start, t0.elapsed())));
                    stream
                }
                Ok(Err(e)) => {
                    let _ = tx.send(Err(e));
                    return false;
                }
                Err(_) => {
                    let _ = tx.send(Err(format!("no CONNACK within {connect_timeout:?}")));
                    return false;
                }
            };
            drop(idle);
            // Held until released, unless the broker closes it first.
            if hold(&mut stream, &mut release).await {
                return false;
            }
            let _ = stream.write_all(&[0xE0, 0x00]).await;
            // Closed with a reset: no TIME_WAIT left behind to hold this side's ports for the
            // next run. (Deprecated because a non-zero linger blocks on drop; zero does not.)
            #[allow(deprecated)]
            let _ = stream.set_linger(Some(Duration::ZERO));
            true
        }));
    }
    drop(result_tx);
    let attempted = tasks.len();

    let mut hist = Histogram::default();
    let mut errors = Vec::new();
    let mut done = 0usize;
    let mut last_print = Instant::now();
    while done < attempted {
        match tokio::time::timeout_at(deadline, result_rx.recv()).await {
            Ok(Some(Ok((i, at, d)))) => {
                hist.record(d.as_nanos() as u64);
                if args
                    .show_slow_ms
                    .is_some_and(|ms| d.as_secs_f64() * 1e3 > ms)
                {
                    eprintln!(
                        "loadgen: slow connect {i} at {:.4} s took {:.2} ms",
                        at.as_secs_f64(),
                        d.as_secs_f64() * 1e3
                    );
                }
            }
            Ok(Some(Err(e))) => errors.push(e),
            Ok(None) | Err(_) => break,
        }
        done += 1;
        if !common.quiet && last_print.elapsed() >= Duration::from_secs(1) {
            last_print = Instant::now();
            eprintln!(
                "loadgen: {:5.1}s connected {} failed {} of {}",
                start.elapsed().as_secs_f64(),
                hist.len(),
                errors.len(),
                args.n
            );
        }
    }
    let connect_secs = start.elapsed().as_secs_f64();
    // The bench script samples the broker's memory while this line's connections are held.
    eprintln!(
        "loadgen: holding {} connections for {} s",
        hist.len(),
        args.hold
    );
    let hold_until =
        (tokio::time::Instant::now() + Duration::from_secs_f64(args.hold)).min(deadline);
    tokio::time::sleep_until(hold_until).await;
    let _ = release_tx.send(true);
    let mut held = 0usize;
    for t in tasks {
        if let Ok(Ok(true)) = tokio::time::timeout(Duration::from_secs(5), t).await {
            held += 1;
        }
    }

    let ms = |ns: u64| ns as f64 / 1e6;
    let mut j = Json::new();
    j.str("scenario", "conn")
        .str("label", &common.label)
        .num("n", args.n as f64)
        .num("rate", args.rate)
        .num("hold_secs", args.hold)
        .num("sources", args.sources as f64)
        .num("attempted", attempted as f64)
        .num("connected", hist.len() as f64)
        .num("failed", errors.len() as f64)
        .num("held", held as f64)
        .num("connect_phase_secs", connect_secs)
        .num("connect_p50_ms", ms(hist.percentile(50.0)))
        .num("connect_p99_ms", ms(hist.percentile(99.0)))
        .num("connect_max_ms", ms(hist.max()))
        .bool("timed_out", tokio::time::Instant::now() >= deadline);
    let first: Vec<String> = errors.iter().take(5).cloned().collect();
    j.str_list("errors", &first);
    println!("{}", j.finish());
    Ok(())
}
