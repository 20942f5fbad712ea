//! MQTT over WebSocket (MQTT 5.0 and 3.1.1, section 6).
//!
//! [`accept`] performs the server side of the WebSocket opening handshake on any byte stream
//! (plain TCP or TLS) and returns a [`WsStream`], which is again a plain byte stream
//! (`AsyncRead + AsyncWrite`), so the connection code treats it like a socket:
//!
//! - MQTT control packets travel in binary data frames; a packet may span frames and a frame
//!   may hold several packets (MQTT-6.0.0-2), so reads simply concatenate the payloads.
//! - Anything other than binary data (a text frame) is a protocol error that closes the
//!   connection (MQTT-6.0.0-1).
//! - The client must offer the `mqtt` subprotocol (MQTT-6.0.0-3) and the server answers with
//!   it (MQTT-6.0.0-4). Old clients that offer only `mqttv3.1` get that one echoed, as
//!   mosquitto does.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes, BytesMut};
use futures_util::{Sink, Stream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode, header};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, Message};

/// The subprotocols accepted, in order of preference. `mqtt` is the one MQTT 3.1.1 and 5.0
/// define; `mqttv3.1` is what some MQTT 3.1-era clients offer.
const SUBPROTOCOLS: [&str; 2] = ["mqtt", "mqttv3.1"];

/// Bytes of the read buffer of each WebSocket connection (tungstenite allocates it up front;
/// its default of 128 KiB is a lot for a broker holding many idle device connections).
const READ_BUFFER_SIZE: usize = 16 * 1024;

/// Why a WebSocket handshake failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum WsError {
    /// The request was for another path; the client got `404 Not Found`.
    #[error("WebSocket request for unknown path {requested:?} (404)")]
    WrongPath {
        /// The path the client asked for.
        requested: String,
    },
    /// The client did not offer the `mqtt` subprotocol; it got `400 Bad Request`.
    #[error("{}", no_subprotocol_message(offered))]
    NoMqttSubprotocol {
        /// The `Sec-WebSocket-Protocol` values it offered (empty if none).
        offered: String,
    },
    /// The request was not a valid WebSocket upgrade, or the stream failed.
    #[error("WebSocket handshake failed: {0}")]
    Handshake(#[source] tungstenite::Error),
}

fn no_subprotocol_message(offered: &str) -> String {
    if offered.is_empty() {
        "WebSocket client offered no subprotocol, \"mqtt\" is required (400)".to_string()
    } else {
        format!("WebSocket client offered subprotocols {offered:?}, \"mqtt\" is required (400)")
    }
}

/// Performs the server side of the WebSocket handshake for MQTT on `stream`.
///
/// Accepts only a `GET` upgrade request for exactly `path` (e.g. `"/mqtt"`; the query string
/// is ignored), answering `404` for any other path. The client must offer the `mqtt` (or the
/// legacy `mqttv3.1`) subprotocol in `Sec-WebSocket-Protocol`; the chosen one is echoed, and a
/// client offering neither gets `400`. A request that is not a valid WebSocket upgrade fails
/// with [`WsError::Handshake`].
///
/// `max_message_size` bounds both one incoming WebSocket message and one frame; a larger one
/// fails the read with an error. A message may carry many packets (MQTT-6.0.0-2), so this is
/// the listener's `websocket_max_message_bytes`, not the maximum packet size.
///
/// This function does not time out by itself: wrap it in the listener's connect timeout.
pub(crate) async fn accept<S>(
    stream: S,
    path: &str,
    max_message_size: usize,
) -> Result<WsStream<S>, WsError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let config = WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER_SIZE)
        .max_message_size(Some(max_message_size))
        .max_frame_size(Some(max_message_size));

    let mut refused: Option<WsError> = None;
    // The signature is tungstenite's `Callback`; its error type is a whole HTTP response.
    #[allow(clippy::result_large_err)]
    let callback = |request: &Request, mut response: Response| match check_request(request, path) {
        Ok(protocol) => {
            response
                .headers_mut()
                .insert(header::SEC_WEBSOCKET_PROTOCOL, protocol);
            Ok(response)
        }
        Err((status, error)) => {
            let body = error.to_string();
            refused = Some(error);
            Err(error_response(status, body))
        }
    };
    match tokio_tungstenite::accept_hdr_async_with_config(stream, callback, Some(config)).await {
        Ok(inner) => Ok(WsStream::new(inner)),
        Err(e) => Err(refused.take().unwrap_or(WsError::Handshake(e))),
    }
}

/// Checks the path and picks the subprotocol of an upgrade request.
fn check_request(request: &Request, path: &str) -> Result<HeaderValue, (StatusCode, WsError)> {
    let requested = request.uri().path();
    if requested != path {
        return Err((
            StatusCode::NOT_FOUND,
            WsError::WrongPath {
                requested: requested.to_owned(),
            },
        ));
    }
    // The header may be repeated, and each value is a comma-separated list of tokens.
    let offered: Vec<&str> = request
        .headers()
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .collect();
    for wanted in SUBPROTOCOLS {
        if let Some(token) = offered.iter().find(|t| t.eq_ignore_ascii_case(wanted)) {
            // Echo the token exactly as offered: clients compare it byte for byte.
            if let Ok(value) = HeaderValue::from_str(token) {
                return Ok(value);
            }
        }
    }
    Err((
        StatusCode::BAD_REQUEST,
        WsError::NoMqttSubprotocol {
            offered: offered.join(", "),
        },
    ))
}

fn error_response(status: StatusCode, body: String) -> ErrorResponse {
    let mut response = ErrorResponse::new(Some(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// A WebSocket connection seen as a plain byte stream, for MQTT over WebSocket.
///
/// Reading returns the payloads of the binary messages received, concatenated. Ping frames
/// are answered with pong (by tungstenite, on the next read or write), a close frame or the
/// end of the stream ends it (a read returns 0 bytes), and a text frame is a protocol error:
/// the connection is closed (close code 1003) and the read fails with
/// [`io::ErrorKind::InvalidData`].
///
/// Each `poll_write` (or `poll_write_vectored`, for all its buffers together) sends its bytes
/// as one binary message and starts writing it to the underlying stream at once. A write
/// waits until the previous message has been fully written, which bounds the buffered data
/// to one message. As with a TLS stream, a write may return before all of its bytes reached
/// the underlying stream (when that stream is busy): call `flush` after writing to be sure
/// they went out. `poll_flush` flushes the WebSocket and the underlying stream;
/// `poll_shutdown` sends a close frame and shuts down the underlying stream.
pub(crate) struct WsStream<S> {
    inner: WebSocketStream<S>,
    /// Unread rest of the last binary message.
    pending: Bytes,
    /// The peer closed the WebSocket, the stream ended, or a text frame arrived.
    read_closed: bool,
}

impl<S> WsStream<S> {
    fn new(inner: WebSocketStream<S>) -> Self {
        Self {
            inner,
            pending: Bytes::new(),
            read_closed: false,
        }
    }
}

impl<S> std::fmt::Debug for WsStream<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WsStream")
            .field("pending", &self.pending.len())
            .field("read_closed", &self.read_closed)
            .finish_non_exhaustive()
    }
}

/// Maps a WebSocket error to the I/O error the connection code expects.
fn io_error(e: tungstenite::Error) -> io::Error {
    use tungstenite::Error as E;
    match e {
        E::Io(e) => e,
        E::ConnectionClosed | E::AlreadyClosed => io::ErrorKind::BrokenPipe.into(),
        E::Protocol(tungstenite::error::ProtocolError::ResetWithoutClosingHandshake) => {
            io::ErrorKind::ConnectionReset.into()
        }
        E::Capacity(_) | E::Protocol(_) | E::Utf8(_) => {
            io::Error::new(io::ErrorKind::InvalidData, e)
        }
        other => io::Error::other(other),
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> WsStream<S> {
    /// Ready when a new message may be sent: the previous one is fully written out. This is
    /// the backpressure of the stream; at most one message is ever buffered.
    fn poll_write_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(Pin::new(&mut self.inner).poll_flush(cx)).map_err(io_error)?;
        Pin::new(&mut self.inner).poll_ready(cx).map_err(io_error)
    }

    /// Queues `data` as one binary message and starts writing it out. Call only after
    /// [`Self::poll_write_ready`] returned `Ready(Ok(()))`.
    fn send(&mut self, cx: &mut Context<'_>, data: Bytes) -> io::Result<usize> {
        let len = data.len();
        Pin::new(&mut self.inner)
            .start_send(Message::Binary(data))
            .map_err(io_error)?;
        // The message is accepted, so the bytes count as written. If the stream is busy, the
        // next write or flush finishes writing it (and the waker is registered meanwhile).
        match Pin::new(&mut self.inner).poll_flush(cx) {
            Poll::Ready(Err(e)) => Err(io_error(e)),
            _ => Ok(len),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for WsStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        loop {
            if !this.pending.is_empty() {
                let n = this.pending.len().min(buf.remaining());
                buf.put_slice(&this.pending[..n]);
                this.pending.advance(n);
                return Poll::Ready(Ok(()));
            }
            if this.read_closed {
                return Poll::Ready(Ok(()));
            }
            match ready!(Pin::new(&mut this.inner).poll_next(cx)) {
                Some(Ok(Message::Binary(data))) => this.pending = data,
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                Some(Ok(Message::Close(_))) => {
                    // tungstenite has queued the close reply. One more read sends it (the
                    // connection code may simply drop the stream on EOF) and then reports
                    // the end. This registers only the read waker: calling poll_flush here
                    // would take the write waker from a writer polled by another task. If
                    // the reply cannot be written yet, shutdown or drop deals with it.
                    this.read_closed = true;
                    let _ = Pin::new(&mut this.inner).poll_next(cx);
                    return Poll::Ready(Ok(()));
                }
                None => {
                    this.read_closed = true;
                    return Poll::Ready(Ok(()));
                }
                Some(Ok(Message::Text(_))) => {
                    // MQTT-6.0.0-1: close the connection on non-binary data. start_send
                    // of a close frame also tries to write it out at once (without
                    // registering any waker); shutdown finishes it if the stream is busy.
                    this.read_closed = true;
                    let close = Message::Close(Some(CloseFrame {
                        code: CloseCode::Unsupported,
                        reason: "MQTT over WebSocket uses binary frames".into(),
                    }));
                    let _ = Pin::new(&mut this.inner).start_send(close);
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "text frame received on an MQTT WebSocket connection (MQTT-6.0.0-1)",
                    )));
                }
                Some(Err(e)) => {
                    this.read_closed = true;
                    return Poll::Ready(Err(io_error(e)));
                }
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for WsStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let this = self.get_mut();
        // Wait for room before copying, so a pending write costs no allocation.
        ready!(this.poll_write_ready(cx))?;
        Poll::Ready(this.send(cx, Bytes::copy_from_slice(buf)))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        if total == 0 {
            return Poll::Ready(Ok(0));
        }
        let this = self.get_mut();
        ready!(this.poll_write_ready(cx))?;
        let mut data = BytesMut::with_capacity(total);
        for b in bufs {
            data.extend_from_slice(b);
        }
        Poll::Ready(this.send(cx, data.freeze()))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner)
            .poll_flush(cx)
            .map_err(io_error)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(Pin::new(&mut this.inner).poll_close(cx)).map_err(io_error)?;
        match ready!(Pin::new(this.inner.get_mut()).poll_shutdown(cx)) {
            Err(e) if e.kind() != io::ErrorKind::NotConnected => Poll::Ready(Err(e)),
            _ => Poll::Ready(Ok(())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::{SinkExt, StreamExt};
    use std::future::Future;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::protocol::frame::Frame;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

    const MAX: usize = 64 * 1024;

    type Client = WebSocketStream<DuplexStream>;
    type ClientResult =
        Result<(Client, tungstenite::handshake::client::Response), tungstenite::Error>;

    /// Every wait in these tests is bounded.
    async fn bounded<F: Future>(f: F) -> F::Output {
        tokio::time::timeout(Duration::from_secs(5), f)
            .await
            .expect("test step timed out")
    }

    /// Runs the server handshake and a client handshake for `path` offering `protocols`
    /// (a `Sec-WebSocket-Protocol` value) over an in-memory duplex.
    async fn handshake(
        server_path: &str,
        client_path: &str,
        protocols: Option<&str>,
        max: usize,
    ) -> (Result<WsStream<DuplexStream>, WsError>, ClientResult) {
        let (c, s) = tokio::io::duplex(256 * 1024);
        let mut request = format!("ws://localhost{client_path}")
            .into_client_request()
            .expect("request");
        if let Some(p) = protocols {
            request.headers_mut().insert(
                header::SEC_WEBSOCKET_PROTOCOL,
                HeaderValue::from_str(p).expect("header"),
            );
        }
        bounded(async {
            tokio::join!(
                accept(s, server_path, max),
                tokio_tungstenite::client_async(request, c)
            )
        })
        .await
    }

    async fn connected() -> (WsStream<DuplexStream>, Client) {
        let (server, client) = handshake("/mqtt", "/mqtt", Some("mqtt"), MAX).await;
        let (client, _) = client.expect("client handshake");
        (server.expect("server handshake"), client)
    }

    fn protocol_of(response: &tungstenite::handshake::client::Response) -> Option<&str> {
        response
            .headers()
            .get(header::SEC_WEBSOCKET_PROTOCOL)
            .and_then(|v| v.to_str().ok())
    }

    #[tokio::test]
    async fn echoes_mqtt_subprotocol() {
        let (server, client) = handshake("/mqtt", "/mqtt", Some("mqtt"), MAX).await;
        assert!(server.is_ok());
        let (_, response) = client.expect("client");
        assert_eq!(protocol_of(&response), Some("mqtt"));
    }

    #[tokio::test]
    async fn picks_mqtt_among_several_and_accepts_legacy_name() {
        let (server, client) = handshake("/mqtt", "/mqtt", Some("wamp, mqttv3.1, mqtt"), MAX).await;
        assert!(server.is_ok());
        assert_eq!(protocol_of(&client.expect("client").1), Some("mqtt"));

        let (server, client) = handshake("/mqtt", "/mqtt?x=1", Some("mqttv3.1"), MAX).await;
        assert!(server.is_ok(), "query string is ignored");
        assert_eq!(protocol_of(&client.expect("client").1), Some("mqttv3.1"));
    }

    #[tokio::test]
    async fn wrong_path_gets_404() {
        let (server, client) = handshake("/mqtt", "/other", Some("mqtt"), MAX).await;
        match server {
            Err(WsError::WrongPath { requested }) => assert_eq!(requested, "/other"),
            other => panic!("expected WrongPath, got {other:?}"),
        }
        match client {
            Err(tungstenite::Error::Http(response)) => {
                assert_eq!(response.status(), StatusCode::NOT_FOUND)
            }
            other => panic!("expected HTTP 404, got {:?}", other.map(|_| ())),
        }
    }

    #[tokio::test]
    async fn missing_subprotocol_gets_400() {
        for offered in [None, Some("wamp, v12.stomp")] {
            let (server, client) = handshake("/mqtt", "/mqtt", offered, MAX).await;
            assert!(
                matches!(server, Err(WsError::NoMqttSubprotocol { .. })),
                "{offered:?}: {server:?}"
            );
            match client {
                Err(tungstenite::Error::Http(response)) => {
                    assert_eq!(response.status(), StatusCode::BAD_REQUEST)
                }
                other => panic!("expected HTTP 400, got {:?}", other.map(|_| ())),
            }
        }
    }

    #[tokio::test]
    async fn plain_http_request_is_a_handshake_error() {
        let (mut c, s) = tokio::io::duplex(4096);
        let (server, _) = bounded(async {
            tokio::join!(accept(s, "/mqtt", MAX), async {
                c.write_all(b"GET /mqtt HTTP/1.1\r\nHost: localhost\r\n\r\n")
                    .await
                    .expect("write");
                c
            })
        })
        .await;
        assert!(matches!(server, Err(WsError::Handshake(_))), "{server:?}");
    }

    #[tokio::test]
    async fn server_write_is_one_binary_message() {
        let (mut server, mut client) = connected().await;
        server.write_all(b"\x20\x02\x00\x00").await.expect("write");
        let msg = bounded(client.next()).await.expect("message").expect("ok");
        assert_eq!(msg, Message::binary(&b"\x20\x02\x00\x00"[..]));

        // A vectored write is one message too.
        let bufs = [io::IoSlice::new(b"\xd0"), io::IoSlice::new(b"\x00")];
        let n = bounded(server.write_vectored(&bufs)).await.expect("write");
        assert_eq!(n, 2);
        let msg = bounded(client.next()).await.expect("message").expect("ok");
        assert_eq!(msg, Message::binary(&b"\xd0\x00"[..]));
    }

    #[tokio::test]
    async fn client_messages_concatenate() {
        let (mut server, mut client) = connected().await;
        // Two packets in one message, and a packet split across two messages.
        bounded(client.send(Message::binary(&b"\xc0\x00\xc0\x00\x30\x05\x00"[..])))
            .await
            .expect("send");
        bounded(client.send(Message::binary(&b"\x01t"[..])))
            .await
            .expect("send");
        bounded(client.send(Message::binary(&b"hi"[..])))
            .await
            .expect("send");
        let mut got = [0u8; 11];
        bounded(server.read_exact(&mut got)).await.expect("read");
        assert_eq!(&got, b"\xc0\x00\xc0\x00\x30\x05\x00\x01thi");

        // Small reads take a message piece by piece.
        bounded(client.send(Message::binary(&b"abcdef"[..])))
            .await
            .expect("send");
        let mut small = [0u8; 4];
        let n = bounded(server.read(&mut small)).await.expect("read");
        assert_eq!(&small[..n], b"abcd");
        let n = bounded(server.read(&mut small)).await.expect("read");
        assert_eq!(&small[..n], b"ef");
    }

    #[tokio::test]
    async fn fragmented_message_reads_whole() {
        let (mut server, mut client) = connected().await;
        let first = Frame::message(&b"\x30\x07\x00\x01t"[..], OpCode::Data(Data::Binary), false);
        let rest = Frame::message(&b"payl"[..], OpCode::Data(Data::Continue), true);
        bounded(client.send(Message::Frame(first)))
            .await
            .expect("send");
        bounded(client.send(Message::Frame(rest)))
            .await
            .expect("send");
        let mut got = [0u8; 9];
        bounded(server.read_exact(&mut got)).await.expect("read");
        assert_eq!(&got, b"\x30\x07\x00\x01tpayl");
    }

    #[tokio::test]
    async fn text_frame_closes_with_error() {
        let (mut server, mut client) = connected().await;
        bounded(client.send(Message::text("hello")))
            .await
            .expect("send");
        let mut buf = [0u8; 16];
        let err = bounded(server.read(&mut buf))
            .await
            .expect_err("text must fail");
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        // The client is told why.
        match bounded(client.next()).await {
            Some(Ok(Message::Close(Some(frame)))) => assert_eq!(frame.code, CloseCode::Unsupported),
            other => panic!("expected a close frame, got {other:?}"),
        }
        // Nothing more is read from this connection.
        assert_eq!(bounded(server.read(&mut buf)).await.expect("eof"), 0);
    }

    #[tokio::test]
    async fn client_close_is_eof() {
        let (mut server, mut client) = connected().await;
        bounded(client.send(Message::binary(&b"\xe0\x00"[..])))
            .await
            .expect("send");
        bounded(client.close(None)).await.expect("close");
        let mut buf = Vec::new();
        bounded(server.read_to_end(&mut buf))
            .await
            .expect("read to end");
        assert_eq!(buf, b"\xe0\x00");
        // The close reply reached the client without any further call on the server...
        match bounded(client.next()).await {
            Some(Ok(Message::Close(_))) => {}
            other => panic!("expected the close reply, got {other:?}"),
        }
        // ...which then closes the transport (RFC 6455: the server closes TCP first).
        drop(server);
        assert!(bounded(client.next()).await.is_none());
    }

    #[tokio::test]
    async fn dropped_transport_is_eof_or_error() {
        let (mut server, client) = connected().await;
        drop(client);
        let mut buf = [0u8; 4];
        match bounded(server.read(&mut buf)).await {
            Ok(0) => {}
            Ok(n) => panic!("read {n} bytes from a dropped client"),
            Err(e) => assert_eq!(e.kind(), io::ErrorKind::ConnectionReset, "{e}"),
        }
    }

    #[tokio::test]
    async fn ping_is_answered_while_reading() {
        let (mut server, mut client) = connected().await;
        let reader = tokio::spawn(async move {
            let mut buf = [0u8; 3];
            server.read_exact(&mut buf).await.map(|_| buf)
        });
        bounded(client.send(Message::Ping(Bytes::from_static(b"p1"))))
            .await
            .expect("ping");
        let pong = bounded(client.next()).await.expect("message").expect("ok");
        assert_eq!(pong, Message::Pong(Bytes::from_static(b"p1")));
        bounded(client.send(Message::binary(&b"abc"[..])))
            .await
            .expect("send");
        let got = bounded(reader).await.expect("join").expect("read");
        assert_eq!(&got, b"abc");
    }

    #[tokio::test]
    async fn oversized_message_is_refused() {
        let (server, client) = handshake("/mqtt", "/mqtt", Some("mqtt"), 1024).await;
        let (mut server, (mut client, _)) = (server.expect("server"), client.expect("client"));
        // Fits.
        bounded(client.send(Message::binary(vec![1u8; 1000])))
            .await
            .expect("send");
        let mut buf = vec![0u8; 1000];
        bounded(server.read_exact(&mut buf)).await.expect("read");
        // Does not fit.
        bounded(client.send(Message::binary(vec![2u8; 2000])))
            .await
            .expect("send");
        let err = bounded(server.read(&mut buf)).await.expect_err("too large");
        assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
    }

    #[tokio::test]
    async fn shutdown_sends_close() {
        let (mut server, mut client) = connected().await;
        server.write_all(b"\xe0\x00").await.expect("write");
        bounded(server.shutdown()).await.expect("shutdown");
        let first = bounded(client.next()).await.expect("message").expect("ok");
        assert_eq!(first, Message::binary(&b"\xe0\x00"[..]));
        match bounded(client.next()).await {
            Some(Ok(Message::Close(_))) => {}
            other => panic!("expected close, got {other:?}"),
        }
        // Writing after shutdown fails instead of vanishing silently.
        assert!(server.write_all(b"x").await.is_err());
    }

    #[tokio::test]
    async fn writes_wait_for_a_slow_reader() {
        // A tiny pipe: the first message cannot be fully written until the client reads.
        let (c, s) = tokio::io::duplex(1024);
        let request = {
            let mut r = "ws://localhost/mqtt"
                .into_client_request()
                .expect("request");
            r.headers_mut().insert(
                header::SEC_WEBSOCKET_PROTOCOL,
                HeaderValue::from_static("mqtt"),
            );
            r
        };
        let (server, client) = bounded(async {
            tokio::join!(
                accept(s, "/mqtt", MAX),
                tokio_tungstenite::client_async(request, c)
            )
        })
        .await;
        let (mut server, (mut client, _)) = (server.expect("server"), client.expect("client"));

        let big = vec![7u8; 16 * 1024];
        // Accepted (buffered) even though the pipe is full...
        let n = bounded(server.write(&big)).await.expect("first write");
        assert_eq!(n, big.len());
        // ...but the next write waits: at most one message is buffered.
        let second = tokio::time::timeout(Duration::from_millis(100), server.write(&big)).await;
        assert!(second.is_err(), "second write should wait for the reader");

        // Once the client reads, everything gets through.
        let writer = tokio::spawn(async move {
            for _ in 0..3 {
                server.write_all(&big).await?;
            }
            server.flush().await?;
            Ok::<_, io::Error>(server)
        });
        let mut total = 0;
        while total < 4 * 16 * 1024 {
            match bounded(client.next()).await {
                Some(Ok(Message::Binary(b))) => total += b.len(),
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(total, 4 * 16 * 1024);
        bounded(writer).await.expect("join").expect("writes");
    }

    #[tokio::test]
    async fn loopback_tcp_round_trip() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await?;
            let mut ws = accept(tcp, "/mqtt", MAX).await.map_err(io::Error::other)?;
            // Echo everything until the client closes.
            let mut buf = [0u8; 1024];
            loop {
                let n = ws.read(&mut buf).await?;
                if n == 0 {
                    break;
                }
                ws.write_all(&buf[..n]).await?;
            }
            ws.shutdown().await
        });
        let tcp = bounded(tokio::net::TcpStream::connect(addr))
            .await
            .expect("connect");
        let mut request = format!("ws://{addr}/mqtt")
            .into_client_request()
            .expect("request");
        request.headers_mut().insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static("mqtt"),
        );
        let (mut client, response) = bounded(tokio_tungstenite::client_async(request, tcp))
            .await
            .expect("client handshake");
        assert_eq!(protocol_of(&response), Some("mqtt"));
        for i in 0..10u8 {
            let packet = vec![i; 1 + usize::from(i) * 50];
            bounded(client.send(Message::binary(packet.clone())))
                .await
                .expect("send");
            match bounded(client.next()).await {
                Some(Ok(Message::Binary(b))) => assert_eq!(b, packet),
                other => panic!("unexpected {other:?}"),
            }
        }
        bounded(client.close(None)).await.expect("close");
        bounded(server).await.expect("join").expect("server");
    }
}
