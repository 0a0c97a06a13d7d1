//! The worker's end of the control socket: a reader thread turns frames into requests on a
//! channel (so the engine can poll between decode steps), and [`Outbox`] sends events. A frame
//! that does not decode ends the worker: the supervisor is trusted, so a bad frame means a bug.

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::mpsc::{self, Receiver};
use std::sync::Arc;

use nix::sys::socket::{recv, send, MsgFlags};
use sandbox::protocol::{Event, FrameError, Request, MAX_FRAME};

#[derive(Debug, thiserror::Error)]
pub enum IoError {
    #[error("sending a frame to the supervisor")]
    Send(#[source] nix::Error),
    #[error("encoding a frame")]
    Encode(#[source] FrameError),
}

/// What the reader thread delivers.
#[derive(Debug)]
pub enum Incoming {
    Request(Request),
    /// The supervisor closed the socket or sent garbage: stop.
    Closed(String),
}

/// Sends events to the supervisor.
#[derive(Debug, Clone)]
pub struct Outbox {
    socket: Arc<OwnedFd>,
}

impl Outbox {
    pub fn send(&self, event: &Event) -> Result<(), IoError> {
        let frame = event.encode().map_err(IoError::Encode)?;
        send(self.socket.as_raw_fd(), &frame, MsgFlags::empty()).map_err(IoError::Send)?;
        Ok(())
    }
}

/// Splits the control socket into an outbox and a channel of incoming requests.
pub fn split(socket: OwnedFd) -> (Outbox, Receiver<Incoming>) {
    let socket = Arc::new(socket);
    let (tx, rx) = mpsc::channel();
    let reader = Arc::clone(&socket);
    std::thread::Builder::new()
        .name("control-in".into())
        .spawn(move || {
            let mut buf = vec![0u8; MAX_FRAME + 1];
            loop {
                let incoming = match recv(reader.as_raw_fd(), &mut buf, MsgFlags::MSG_TRUNC) {
                    Ok(0) => Incoming::Closed("the supervisor closed the control socket".into()),
                    Ok(n) if n > MAX_FRAME => Incoming::Closed(format!("frame of {n} bytes")),
                    Ok(n) => match Request::decode(&buf[..n]) {
                        Ok(r) => Incoming::Request(r),
                        Err(e) => Incoming::Closed(format!("bad frame from the supervisor: {e}")),
                    },
                    Err(nix::errno::Errno::EINTR) => continue,
                    Err(e) => Incoming::Closed(format!("control socket: {e}")),
                };
                let stop = matches!(incoming, Incoming::Closed(_));
                if tx.send(incoming).is_err() || stop {
                    return;
                }
            }
        })
        .expect("spawning the control reader thread");
    (Outbox { socket }, rx)
}
