//! [`Stream`]: one SMTP connection, plain TCP or TLS over TCP, on either side: the relay's
//! inbound sessions (server side, after STARTTLS) and its deliveries to next hops (client
//! side) read and write through the same type.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// A connection, plaintext or TLS (client or server side, as `tokio_rustls::TlsStream` says).
pub(crate) enum Stream {
    /// Plain TCP, before STARTTLS or without it.
    Plain(TcpStream),
    /// TLS over TCP. Boxed: a TLS stream is some hundred times the size of a `TcpStream`.
    Tls(Box<tokio_rustls::TlsStream<TcpStream>>),
    /// No connection: the TCP stream was moved out for the TLS handshake (and the session
    /// ends if the handshake fails). Reads see the end, writes fail.
    Closed,
}

impl Stream {
    /// The TLS state (version, cipher suite, peer certificates) when TLS is active.
    pub(crate) fn tls(&self) -> Option<&rustls::CommonState> {
        match self {
            Stream::Tls(s) => Some(s.get_ref().1),
            Stream::Plain(_) | Stream::Closed => None,
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Stream::Closed => Poll::Ready(Ok(())),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Stream::Closed => Poll::Ready(Err(io::ErrorKind::NotConnected.into())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Stream::Closed => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Stream::Closed => Poll::Ready(Ok(())),
        }
    }
}
