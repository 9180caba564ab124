//! A connection's stream with a cap on what an unauthenticated client may
//! send. pgwire buffers a message until it is whole, up to 1 GiB for a
//! query; before logging in a client has nothing to send but its startup
//! packet and password messages, a few KiB, so past the cap the connection
//! ends instead of the server buffering what it sends.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use pgwire::tokio::server::MaybeTls;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Bytes a client may send before it has logged in: the startup packet
/// (at most 10,000 bytes to pgwire) and the SCRAM exchange, with room.
pub(crate) const PRE_AUTH_BYTES: usize = 64 << 10;

pub(crate) struct Capped {
    inner: MaybeTls,
    /// Bytes still allowed before login, or `None` once logged in.
    allowance: Option<usize>,
}

impl Capped {
    pub fn new(inner: MaybeTls, logged_in: bool) -> Capped {
        Capped {
            inner,
            allowance: (!logged_in).then_some(PRE_AUTH_BYTES),
        }
    }

    /// The client has logged in: no cap from now on.
    pub fn lift(&mut self) {
        self.allowance = None;
    }

    pub fn get_ref(&self) -> &MaybeTls {
        &self.inner
    }

    pub fn into_inner(self) -> MaybeTls {
        self.inner
    }
}

impl AsyncRead for Capped {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let Some(left) = self.allowance else {
            return Pin::new(&mut self.inner).poll_read(cx, buf);
        };
        if left == 0 {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "the client sent more than a login needs before logging in",
            )));
        }
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        let read = buf.filled().len() - before;
        self.allowance = Some(left.saturating_sub(read));
        polled
    }
}

impl AsyncWrite for Capped {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
