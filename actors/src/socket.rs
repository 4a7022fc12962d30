//! A child's data socket split into a reader registered for readability
//! only and a writer registered for nothing until a write would block.
//!
//! Why: tokio registers a `UnixStream` (and both halves of its
//! `into_split`) for reads and writes, edge-triggered. On a Unix socket
//! every read by the peer frees send space and signals EPOLLOUT, so each
//! call woke the master twice: once when the child read the call (for
//! nothing: there was nothing left to write) and once for the reply.
//! On an idle machine each wake-up of a sleeping core costs tens of
//! microseconds, and a round trip is three such wake-ups at best.
//! `py_roundtrip` counted 1.8 master context switches per call before,
//! 1.0 after.
//!
//! The writer writes straight to the socket (non-blocking, with
//! MSG_NOSIGNAL). Only when the socket is full does it register a dup of
//! its fd for writability and wait. The registration stays while the
//! socket keeps writes waiting (a bulk transfer: every 256 KiB chunk is
//! larger than the socket's buffer), and is dropped at the first flush
//! after a burst that needed no wait (the link is idle again, or carries
//! calls only). Dropping it at every flush cost a `dup`, two `epoll_ctl`
//! and a `close` per bulk frame.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use nix::libc;
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};

/// The read side: readability only.
pub struct SocketReader {
    fd: AsyncFd<OwnedFd>,
}

/// The write side: a plain fd, registered only while writes wait.
pub struct SocketWriter {
    fd: OwnedFd,
    waiting: Option<AsyncFd<OwnedFd>>,
    /// A write found the socket full since the last flush.
    waited: bool,
}

/// Splits a connected Unix socket (non-blocking, as tokio's are). Must be
/// called inside a tokio runtime.
pub fn split(stream: tokio::net::UnixStream) -> io::Result<(SocketReader, SocketWriter)> {
    let std = stream.into_std()?;
    std.set_nonblocking(true)?;
    let read: OwnedFd = std.into();
    let write = read.try_clone()?;
    Ok((
        SocketReader {
            fd: register(read, Interest::READABLE)?,
        },
        SocketWriter {
            fd: write,
            waiting: None,
            waited: false,
        },
    ))
}

fn register(fd: OwnedFd, interest: Interest) -> io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: an OwnedFd is a valid open fd that stays the same until the
    // AsyncFd (its owner) drops it.
    unsafe { AsyncFd::register_with_interest(fd, interest) }.map_err(io::Error::from)
}

fn cvt(n: isize) -> io::Result<usize> {
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

impl AsyncRead for SocketReader {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            let mut guard = ready!(self.fd.poll_read_ready(cx))?;
            // SAFETY: read(2) writes at most `len` bytes into the
            // unfilled part and nothing is read back before assume_init.
            let unfilled = unsafe { buf.unfilled_mut() };
            let res = guard.try_io(|fd| {
                cvt(unsafe {
                    libc::read(fd.as_raw_fd(), unfilled.as_mut_ptr().cast(), unfilled.len())
                })
            });
            match res {
                Ok(Ok(n)) => {
                    // SAFETY: the kernel initialized the first n bytes.
                    unsafe { buf.assume_init(n) };
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                Err(_would_block) => continue,
            }
        }
    }
}

impl SocketWriter {
    fn send(&self, data: &[u8]) -> io::Result<usize> {
        cvt(unsafe {
            libc::send(
                self.fd.as_raw_fd(),
                data.as_ptr().cast(),
                data.len(),
                libc::MSG_NOSIGNAL,
            )
        })
    }
}

impl AsyncWrite for SocketWriter {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        loop {
            if let Some(waiting) = &this.waiting {
                let mut guard = ready!(waiting.poll_write_ready(cx))?;
                match guard.try_io(|_| this.send(data)) {
                    Ok(res) => return Poll::Ready(res),
                    Err(_would_block) => {
                        this.waited = true;
                        continue;
                    }
                }
            }
            match this.send(data) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    // Full: wait for room. Registering reports readiness
                    // that arrived since the failed send, so none is lost.
                    this.waited = true;
                    let dup = this.fd.try_clone()?;
                    this.waiting = Some(register(dup, Interest::WRITABLE)?);
                }
                res => return Poll::Ready(res),
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Everything is in the kernel. Stop listening for room once a
        // burst went through without waiting: each read by the peer
        // would wake us otherwise. While writes keep waiting, the next
        // burst would only register again.
        let this = self.get_mut();
        if !std::mem::take(&mut this.waited) {
            this.waiting = None;
        }
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.waiting = None;
        Poll::Ready(shutdown_write(&this.fd))
    }
}

fn shutdown_write(fd: &OwnedFd) -> io::Result<()> {
    match unsafe { libc::shutdown(fd.as_raw_fd(), libc::SHUT_WR) } {
        0 => Ok(()),
        _ => match io::Error::last_os_error() {
            // The peer is gone already: nothing to tell it.
            e if e.raw_os_error() == Some(libc::ENOTCONN) => Ok(()),
            e => Err(e),
        },
    }
}

impl Drop for SocketWriter {
    /// Like tokio's `OwnedWriteHalf`: dropping the writer sends EOF, even
    /// though the reader still holds the socket open.
    fn drop(&mut self) {
        let _ = shutdown_write(&self.fd);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn a_full_socket_waits_for_room_and_loses_nothing() {
        let (a, b) = tokio::net::UnixStream::pair().unwrap();
        let (mut ar, mut aw) = split(a).unwrap();
        let (mut br, mut bw) = split(b).unwrap();
        // Far more than a socket buffer holds: the writer must wait.
        let data: Vec<u8> = (0..8 << 20).map(|i: u32| ((i * 7) >> 3) as u8).collect();
        let sent = data.clone();
        let writer = tokio::spawn(async move {
            aw.write_all(&sent).await.unwrap();
            aw.flush().await.unwrap();
            drop(aw); // EOF
        });
        let mut got = Vec::new();
        br.read_to_end(&mut got).await.unwrap();
        writer.await.unwrap();
        assert_eq!(got, data);
        // The other direction still works after the first one's EOF.
        bw.write_all(b"back").await.unwrap();
        drop(bw);
        let mut back = Vec::new();
        ar.read_to_end(&mut back).await.unwrap();
        assert_eq!(back, b"back");
    }

    #[tokio::test]
    async fn writing_to_a_closed_peer_is_an_error_not_a_signal() {
        let (a, b) = tokio::net::UnixStream::pair().unwrap();
        let (_ar, mut aw) = split(a).unwrap();
        drop(b);
        let err = aw.write_all(b"x").await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);
    }
}
