//! The supervisor's end of the control socket, made async: one `SOCK_SEQPACKET` frame per
//! send/recv, frames larger than the protocol allows detected (never silently truncated).

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

use nix::sys::socket::{recv, send, MsgFlags};
use sandbox::protocol::MAX_FRAME;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

#[derive(Debug)]
pub struct Link {
    fd: AsyncFd<OwnedFd>,
    buf: Vec<u8>,
}

/// One received frame.
#[derive(Debug, PartialEq, Eq)]
pub enum Received<'a> {
    Frame(&'a [u8]),
    /// The frame was larger than MAX_FRAME (its size as the kernel reported it).
    Oversized(usize),
    /// The worker closed its end.
    Closed,
}

impl Link {
    pub fn new(fd: OwnedFd) -> io::Result<Link> {
        let flags = nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_GETFL)?;
        let flags = nix::fcntl::OFlag::from_bits_truncate(flags) | nix::fcntl::OFlag::O_NONBLOCK;
        nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_SETFL(flags))?;
        // `AsyncFd::new` is deprecated because a registered descriptor must stay open and keep
        // its number while registered; an `OwnedFd` moved into the `AsyncFd` guarantees exactly
        // that (nothing else can close it), so the safe constructor is sound here.
        #[allow(deprecated)]
        let fd = AsyncFd::new(fd)?;
        Ok(Link {
            fd,
            buf: vec![0; MAX_FRAME + 1],
        })
    }

    pub async fn recv(&mut self) -> io::Result<Received<'_>> {
        let n = loop {
            let mut guard = self.fd.readable().await?;
            let raw = guard.get_inner().as_raw_fd();
            match guard.try_io(|_| {
                recv(
                    raw,
                    &mut self.buf,
                    MsgFlags::MSG_TRUNC | MsgFlags::MSG_DONTWAIT,
                )
                .map_err(io::Error::from)
            }) {
                Ok(r) => break r?,
                Err(_would_block) => continue,
            }
        };
        Ok(match n {
            0 => Received::Closed,
            n if n > MAX_FRAME => Received::Oversized(n),
            n => Received::Frame(&self.buf[..n]),
        })
    }

    pub async fn send(&self, frame: &[u8]) -> io::Result<()> {
        loop {
            let mut guard = self.fd.ready(Interest::WRITABLE).await?;
            let raw = guard.get_inner().as_raw_fd();
            match guard.try_io(|_| {
                send(raw, frame, MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL)
                    .map_err(io::Error::from)
            }) {
                Ok(r) => return r.map(drop),
                Err(_would_block) => continue,
            }
        }
    }
}
