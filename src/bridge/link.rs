//! One MQTT client connection of a bridge, as framed reads and buffered writes that can go on
//! at the same time (each side may be waiting to write to the other).

use std::io;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};

use crate::codec::{Decoder, Packet, Version, encode};

/// Bytes waiting to be written to one side above which the bridge stops reading from the
/// other side until they drain.
pub(crate) const HIGH_WATER: usize = 1024 * 1024;

/// A byte stream a bridge connection runs over (TCP, TLS, or the in-process local side).
pub(crate) trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<S: AsyncRead + AsyncWrite + Unpin + Send> Stream for S {}

/// Why a link's connection failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LinkError {
    /// Reading or writing failed.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The peer closed the connection.
    #[error("connection closed by the peer")]
    Closed,
    /// The peer sent something that is not MQTT of the agreed version.
    #[error("malformed packet: {0}")]
    Malformed(#[from] crate::codec::DecodeError),
    /// A packet could not be encoded within the peer's limits.
    #[error("cannot send: {0}")]
    Encode(#[from] crate::codec::EncodeError),
}

/// The reading half: bytes in, packets out.
pub(crate) struct Reader {
    half: ReadHalf<Box<dyn Stream>>,
    buf: BytesMut,
    decoder: Decoder,
}

impl Reader {
    /// The next packet already read, if a whole one is.
    pub(crate) fn buffered(&mut self) -> Result<Option<Packet>, LinkError> {
        Ok(self.decoder.decode(&mut self.buf)?)
    }

    /// The next packet. Cancel safe: bytes read are kept for the next call.
    pub(crate) async fn recv(&mut self) -> Result<Packet, LinkError> {
        loop {
            if let Some(packet) = self.decoder.decode(&mut self.buf)? {
                return Ok(packet);
            }
            self.buf.reserve(4096);
            if self.half.read_buf(&mut self.buf).await? == 0 {
                return Err(LinkError::Closed);
            }
        }
    }
}

/// The writing half: packets in, bytes out.
pub(crate) struct Writer {
    half: WriteHalf<Box<dyn Stream>>,
    buf: BytesMut,
    version: Version,
    /// The peer's Maximum Packet Size (MQTT 5.0), if it set one.
    max_size: Option<u32>,
    /// Bytes were written since the last flush (TLS may hold them in its own buffer).
    unflushed: bool,
}

impl Writer {
    /// Adds `packet` to what is to be written.
    pub(crate) fn queue(&mut self, packet: &Packet) -> Result<(), LinkError> {
        encode(packet, self.version, self.max_size, &mut self.buf)?;
        Ok(())
    }

    /// Bytes waiting to be written (at least 1 while a flush is owed).
    pub(crate) fn pending(&self) -> usize {
        self.buf.len() + usize::from(self.unflushed)
    }

    /// Writes some of what is waiting, and flushes once all is written. Cancel safe: what
    /// was written is gone from the buffer, and a flush cut short is owed until done.
    pub(crate) async fn write_some(&mut self) -> Result<(), LinkError> {
        if !self.buf.is_empty() {
            let n = self.half.write(&self.buf).await?;
            if n == 0 {
                return Err(LinkError::Closed);
            }
            self.buf.advance(n);
            self.unflushed = true;
        }
        if self.buf.is_empty() && self.unflushed {
            self.half.flush().await?;
            self.unflushed = false;
        }
        Ok(())
    }

    /// Writes everything waiting.
    pub(crate) async fn flush(&mut self) -> Result<(), LinkError> {
        while self.pending() > 0 {
            self.write_some().await?;
        }
        Ok(())
    }

    /// Sets the peer's Maximum Packet Size.
    pub(crate) fn set_max_size(&mut self, max_size: Option<u32>) {
        self.max_size = max_size;
    }

    /// Closes the writing side.
    pub(crate) async fn shutdown(&mut self) {
        let _ = self.half.shutdown().await;
    }
}

/// Splits `stream` into the halves of a client connection speaking `version`; packets larger
/// than `max_in` are refused.
pub(crate) fn split(stream: Box<dyn Stream>, version: Version, max_in: usize) -> (Reader, Writer) {
    let (read, write) = tokio::io::split(stream);
    (
        Reader {
            half: read,
            buf: BytesMut::new(),
            decoder: Decoder::client(version, max_in),
        },
        Writer {
            half: write,
            buf: BytesMut::new(),
            version,
            max_size: None,
            unflushed: false,
        },
    )
}
