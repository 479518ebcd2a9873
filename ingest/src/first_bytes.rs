//! A deadline for a connection's first bytes.
//!
//! Servers that tell HTTP/1 from HTTP/2 by a connection's first bytes
//! (hyper-util's auto builder, behind the HTTP listener) or wait for the
//! HTTP/2 preface (tonic, behind the gRPC listeners) read them without a
//! limit, before any timeout of hyper's or tonic's starts: a client that
//! connects and sends nothing holds its connection — a file descriptor and
//! a slot of the listener's cap — until it goes away.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The HTTP/2 connection preface: hyper-util reads a connection's first
/// bytes until they differ from it (HTTP/1) or it is complete (HTTP/2),
/// and an HTTP/2-only server (tonic) waits for it whole.
pub const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// A connection whose first bytes must arrive within a deadline: until they
/// tell HTTP/1 (a byte that differs from the HTTP/2 preface) from HTTP/2
/// (the whole preface), a read still waiting at the deadline fails with
/// `TimedOut` and the connection ends. From then on it is the stream
/// itself, and the server's own timeouts govern.
pub struct FirstBytesWithin<S> {
    inner: S,
    /// `None` once the protocol is told.
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Bytes of the preface matched so far.
    matched: usize,
}

impl<S> FirstBytesWithin<S> {
    pub fn new(inner: S, within: Duration) -> Self {
        Self {
            inner,
            deadline: Some(Box::pin(tokio::time::sleep(within))),
            matched: 0,
        }
    }

    /// The stream inside.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Follows the preface through `bytes`; the deadline ends once the
    /// protocol is told.
    fn saw(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if b != H2_PREFACE[self.matched] {
                self.deadline = None;
                return;
            }
            self.matched += 1;
            if self.matched == H2_PREFACE.len() {
                self.deadline = None;
                return;
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for FirstBytesWithin<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        let Some(deadline) = this.deadline.as_mut() else {
            return polled;
        };
        match polled {
            Poll::Ready(Ok(())) => {
                let new = &buf.filled()[before..];
                if new.is_empty() {
                    // End of stream: nothing left to wait for.
                    this.deadline = None;
                } else {
                    this.saw(new);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending if deadline.as_mut().poll(cx).is_ready() => {
                Poll::Ready(Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "no request within the time allowed for a connection's first bytes",
                )))
            }
            other => other,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for FirstBytesWithin<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test]
    async fn the_first_bytes_deadline_ends_once_the_protocol_is_told() {
        let within = Duration::from_millis(100);
        // HTTP/1: the first byte differs from the preface.
        let (client, server) = tokio::io::duplex(64);
        let mut wrapped = FirstBytesWithin::new(server, within);
        let mut client = client;
        client.write_all(b"G").await.unwrap();
        let mut byte = [0u8; 1];
        wrapped.read_exact(&mut byte).await.unwrap();
        tokio::time::sleep(within * 2).await;
        client.write_all(b"ET").await.unwrap();
        let mut two = [0u8; 2];
        wrapped.read_exact(&mut two).await.unwrap();
        assert_eq!(&two, b"ET");
        // HTTP/2: the whole preface, then a pause, then frames.
        let (mut client, server) = tokio::io::duplex(64);
        let mut wrapped = FirstBytesWithin::new(server, within);
        client.write_all(H2_PREFACE).await.unwrap();
        let mut preface = [0u8; 24];
        wrapped.read_exact(&mut preface).await.unwrap();
        tokio::time::sleep(within * 2).await;
        client.write_all(b"x").await.unwrap();
        wrapped.read_exact(&mut byte).await.unwrap();
        // Still within the preface: the deadline holds.
        let (mut client, server) = tokio::io::duplex(64);
        let mut wrapped = FirstBytesWithin::new(server, within);
        client.write_all(b"PRI * ").await.unwrap();
        let mut six = [0u8; 6];
        wrapped.read_exact(&mut six).await.unwrap();
        let err = wrapped.read_exact(&mut byte).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
    }
}
