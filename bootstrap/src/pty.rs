//! A pty for answering password prompts: the child gets the slave as its
//! controlling terminal (so ssh, sudo and su find a `/dev/tty` to prompt
//! on) while its data stays on stdin and stdout.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use nix::fcntl::{fcntl, FcntlArg, FdFlag, OFlag};
use nix::sys::termios::{tcgetattr, tcsetattr, LocalFlags, SetArg};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, ReadBuf};

/// Both ends of a fresh pty. Both are close-on-exec: the child gets the
/// slave only as its controlling terminal, through [`make_controlling`].
pub struct Pty {
    pub master: OwnedFd,
    pub slave: OwnedFd,
}

/// Opens a pty with echo off, so a password written to it is never
/// echoed back into what we read and log.
pub fn open() -> io::Result<Pty> {
    let r = nix::pty::openpty(None, None).map_err(io::Error::from)?;
    for fd in [&r.master, &r.slave] {
        fcntl(fd.as_raw_fd(), FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)).map_err(io::Error::from)?;
    }
    let mut t = tcgetattr(&r.slave).map_err(io::Error::from)?;
    t.local_flags
        .remove(LocalFlags::ECHO | LocalFlags::ECHONL | LocalFlags::ECHOE | LocalFlags::ECHOK);
    tcsetattr(&r.slave, SetArg::TCSANOW, &t).map_err(io::Error::from)?;
    let fl = fcntl(r.master.as_raw_fd(), FcntlArg::F_GETFL).map_err(io::Error::from)?;
    fcntl(
        r.master.as_raw_fd(),
        FcntlArg::F_SETFL(OFlag::from_bits_truncate(fl) | OFlag::O_NONBLOCK),
    )
    .map_err(io::Error::from)?;
    Ok(Pty {
        master: r.master,
        slave: r.slave,
    })
}

/// For `pre_exec`, in the forked child: a new session whose controlling
/// terminal is `slave`. Only async-signal-safe calls.
pub fn make_controlling(slave: RawFd) -> io::Result<()> {
    // SAFETY: plain syscalls on an fd we own, between fork and exec.
    unsafe {
        if libc::setsid() < 0 {
            return Err(io::Error::last_os_error());
        }
        if libc::ioctl(slave, libc::TIOCSCTTY as _, 0) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The master end, readable as an async stream (EOF once no process has
/// the slave open) and writable for answers.
pub struct PtyMaster {
    fd: AsyncFd<OwnedFd>,
}

impl PtyMaster {
    /// `fd` must be non-blocking (as [`open`] makes it).
    pub fn new(fd: OwnedFd) -> io::Result<Self> {
        // SAFETY: the OwnedFd is moved in, so the fd stays open and the
        // same until the AsyncFd drops it.
        let fd = unsafe { AsyncFd::register(fd) }.map_err(io::Error::from)?;
        Ok(PtyMaster { fd })
    }

    /// Another handle on the same master (it stays open until both close:
    /// closing the last one hangs up the child's terminal).
    pub fn try_clone_fd(&self) -> io::Result<OwnedFd> {
        self.fd.get_ref().try_clone()
    }

    pub async fn write_all(&self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            let mut guard = self.fd.writable().await?;
            match guard.try_io(|fd| nix::unistd::write(fd.get_ref(), data).map_err(io::Error::from))
            {
                Ok(Ok(n)) => data = &data[n..],
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
        Ok(())
    }

    pub async fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let mut guard = self.fd.readable().await?;
            match guard.try_io(|fd| read_master(fd.get_ref().as_raw_fd(), buf)) {
                Ok(r) => return r,
                Err(_would_block) => continue,
            }
        }
    }
}

/// A read where EIO (no slave left) is EOF.
fn read_master(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    match nix::unistd::read(fd, buf) {
        Ok(n) => Ok(n),
        Err(nix::errno::Errno::EIO) => Ok(0),
        Err(e) => Err(io::Error::from(e)),
    }
}

impl AsyncRead for PtyMaster {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            let mut guard = ready!(self.fd.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            match guard.try_io(|fd| read_master(fd.get_ref().as_raw_fd(), unfilled)) {
                Ok(Ok(n)) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                Err(_would_block) => continue,
            }
        }
    }
}
