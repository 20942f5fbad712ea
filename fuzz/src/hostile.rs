//! A hostile server for roost-client: a transport that hands the client the fuzzer's bytes as
//! the server's side of the connection and records what the client writes, and a clock that
//! moves only when told.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::{Future, poll_fn};
use std::rc::Rc;
use std::task::Poll;

use embedded_io::ErrorKind;

/// Reads and writes the client may make per byte of fuzzer input before it counts as a hang.
const CALLS_PER_INPUT_BYTE: usize = 64;

/// One connection as the server side sees it.
#[derive(Debug, Default)]
struct Link {
    /// Bytes the server sent that the client has not read.
    inbound: VecDeque<u8>,
    /// Bytes the client wrote that the harness has not taken.
    outbound: Vec<u8>,
    /// The most bytes one read returns.
    read_max: usize,
    /// Bytes the client may still write before writes wait; `None` for no limit.
    write_room: Option<usize>,
    /// Every call fails (connection reset).
    broken: bool,
    /// Reads return end of stream once `inbound` is empty.
    closed: bool,
    /// Reads and writes made, against `call_limit`.
    calls: usize,
    call_limit: usize,
}

impl Link {
    fn call(&mut self) {
        self.calls += 1;
        assert!(
            self.calls <= self.call_limit,
            "{} transport calls: the client loops",
            self.calls
        );
    }
}

/// The harness's handle on one connection.
#[derive(Debug, Clone)]
pub struct Server(Rc<RefCell<Link>>);

impl Server {
    /// A connection whose reads return at most `read_max` bytes and whose writes have
    /// `write_room` bytes of room (`None`: unlimited). `input_len` bounds the number of calls.
    pub fn new(read_max: usize, write_room: Option<usize>, input_len: usize) -> Server {
        Server(Rc::new(RefCell::new(Link {
            read_max: read_max.max(1),
            write_room,
            call_limit: (input_len + 16) * CALLS_PER_INPUT_BYTE,
            ..Link::default()
        })))
    }

    /// The client's end of the connection.
    pub fn transport(&self) -> Transport {
        Transport(self.0.clone())
    }

    /// The server sends `bytes`.
    pub fn send(&self, bytes: &[u8]) {
        self.0.borrow_mut().inbound.extend(bytes);
    }

    /// The server closes its side: reads see end of stream after the bytes already sent.
    pub fn close(&self) {
        self.0.borrow_mut().closed = true;
    }

    /// The connection breaks: every read, write and flush fails from now on.
    pub fn break_link(&self) {
        self.0.borrow_mut().broken = true;
    }

    /// Lets the client write `n` more bytes (when writes are limited).
    pub fn grant(&self, n: usize) {
        let mut link = self.0.borrow_mut();
        if let Some(room) = &mut link.write_room {
            *room += n;
        }
    }

    /// Takes the bytes the client wrote since the last call.
    pub fn written(&self) -> Vec<u8> {
        std::mem::take(&mut self.0.borrow_mut().outbound)
    }
}

/// The client's end of a [`Server`] connection.
#[derive(Debug)]
pub struct Transport(Rc<RefCell<Link>>);

impl embedded_io::ErrorType for Transport {
    type Error = ErrorKind;
}

impl embedded_io_async::Read for Transport {
    async fn read(&mut self, buf: &mut [u8]) -> Result<usize, ErrorKind> {
        assert!(
            !buf.is_empty(),
            "read into an empty buffer looks like end of stream"
        );
        poll_fn(|_| {
            let mut link = self.0.borrow_mut();
            link.call();
            if link.broken {
                return Poll::Ready(Err(ErrorKind::ConnectionReset));
            }
            if link.inbound.is_empty() {
                return if link.closed {
                    Poll::Ready(Ok(0))
                } else {
                    Poll::Pending
                };
            }
            let n = buf.len().min(link.read_max).min(link.inbound.len());
            for (dst, src) in buf.iter_mut().zip(link.inbound.drain(..n)) {
                *dst = src;
            }
            Poll::Ready(Ok(n))
        })
        .await
    }
}

impl embedded_io_async::Write for Transport {
    async fn write(&mut self, buf: &[u8]) -> Result<usize, ErrorKind> {
        assert!(!buf.is_empty(), "write of nothing");
        poll_fn(|_| {
            let mut link = self.0.borrow_mut();
            link.call();
            if link.broken {
                return Poll::Ready(Err(ErrorKind::ConnectionReset));
            }
            let n = match &mut link.write_room {
                Some(0) => return Poll::Pending,
                Some(room) => {
                    let n = buf.len().min(*room);
                    *room -= n;
                    n
                }
                None => buf.len(),
            };
            link.outbound.extend_from_slice(&buf[..n]);
            Poll::Ready(Ok(n))
        })
        .await
    }

    async fn flush(&mut self) -> Result<(), ErrorKind> {
        if self.0.borrow().broken {
            return Err(ErrorKind::ConnectionReset);
        }
        Ok(())
    }
}

/// A clock that stands still until [`ManualClock::advance`]; `sleep_until` is pending until
/// then.
#[derive(Debug, Clone, Default)]
pub struct ManualClock(Rc<Cell<u64>>);

impl ManualClock {
    /// Moves the clock forward by `ms` milliseconds.
    pub fn advance(&self, ms: u64) {
        self.0.set(self.0.get() + ms);
    }
}

impl roost_client::Clock for ManualClock {
    fn now_ms(&mut self) -> u64 {
        self.0.get()
    }

    fn sleep_until(&mut self, deadline_ms: u64) -> impl Future<Output = ()> {
        let now = self.0.clone();
        poll_fn(move |_| {
            if now.get() >= deadline_ms {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
    }
}
