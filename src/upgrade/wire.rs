//! The messages of a binary upgrade and how they travel on the upgrade socket.
//!
//! A frame is a 4-byte big-endian length, a 2-byte big-endian count of descriptors, then that
//! many bytes of JSON (one [`Msg`]). The frame's descriptors go as SCM_RIGHTS in the same
//! `sendmsg` as its first bytes, at most [`MAX_FDS_PER_FRAME`] of them; a message that carries
//! more is followed by [`Msg::More`] frames with the rest. On a stream socket the kernel may cut
//! or join frames on the way, but a frame's descriptors always arrive with its first byte, so
//! the receiver keeps every descriptor that arrives in a queue and gives each complete frame as
//! many as it counts, in order.
//!
//! The conversation (N the new hearth, O the running one):
//! 1. N -> O `Hello`; O -> N `Listeners` with every listening socket (or `Refused`).
//! 2. N starts its cores on them, then N -> O `Ready`.
//! 3. O -> N `Conns` with the idle plain upstream connections its clients cannot use now, then
//!    `Settle`; N files them with its cores, then N -> O `Taken`. From here O has handed over:
//!    it stops accepting and drains.
//! 4. O -> N `Conns`, in batches, as its cores give up more; then `Done` when every core has
//!    finished. EOF before `Taken` (N died) leaves O serving; EOF before `Done` (O died) leaves
//!    N serving with what it got.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

use serde::{Deserialize, Serialize};

use crate::sys;

/// Bumped when the messages change, so that two hearths that do not speak alike refuse
/// cleanly instead of misreading each other.
pub const VERSION: u32 = 1;

/// Descriptors one frame carries at most (the kernel takes up to 253 in one message).
pub const MAX_FDS_PER_FRAME: usize = 200;

/// A frame longer than this is a broken peer, not a message.
const MAX_FRAME_BYTES: usize = 16 << 20;

const HEADER: usize = 6;

/// An address as configured and as bound (they differ for port 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Addrs {
    pub addr: SocketAddr,
    pub bound: SocketAddr,
}

/// One `[[listen]]` entry's sockets: `sockets` descriptors, in the order of the entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListenInfo {
    pub addrs: Addrs,
    pub sockets: usize,
}

/// One idle upstream connection: its pool key (the node's address; plain http, no TLS
/// identity), and what the pool knows of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnInfo {
    pub addr: SocketAddr,
    pub scheme: String,
    pub age_ms: u64,
    pub served: u64,
    /// The upstream's `Keep-Alive: timeout=N, max=M`, if it said so.
    pub keepalive_timeout: Option<u32>,
    pub keepalive_max: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Msg {
    /// N introduces itself.
    Hello { version: u32, pid: u32 },
    /// O will not hand over, and says why.
    Refused { reason: String },
    /// O's listening sockets: each entry's, in order, then the admin listener's, if any.
    Listeners {
        pid: u32,
        listen: Vec<ListenInfo>,
        admin: Option<Addrs>,
    },
    /// More descriptors for the message before.
    More,
    /// N serves on the sockets.
    Ready { pid: u32 },
    /// Idle upstream connections, one descriptor each, in order.
    Conns { conns: Vec<ConnInfo> },
    /// O: those were the connections idle at the hand-over; say when they are filed.
    Settle,
    /// N: filed; O may stop accepting and send clients this way.
    Taken,
    /// Nothing more will come.
    Done,
}

/// One end of the upgrade socket, speaking in frames.
pub struct Channel {
    sock: UnixStream,
    buf: Vec<u8>,
    fds: VecDeque<OwnedFd>,
}

impl Channel {
    pub fn new(sock: UnixStream) -> Channel {
        Channel {
            sock,
            buf: Vec::new(),
            fds: VecDeque::new(),
        }
    }

    pub fn sock(&self) -> &UnixStream {
        &self.sock
    }

    /// Sends `msg` with `fds`, in as many frames as they need (`Msg::More` after the first).
    pub fn send(&mut self, msg: &Msg, fds: &[RawFd]) -> io::Result<()> {
        let mut chunks = fds.chunks(MAX_FDS_PER_FRAME);
        self.frame(msg, chunks.next().unwrap_or(&[]))?;
        for more in chunks {
            self.frame(&Msg::More, more)?;
        }
        Ok(())
    }

    fn frame(&mut self, msg: &Msg, fds: &[RawFd]) -> io::Result<()> {
        let json = serde_json::to_vec(msg).map_err(io::Error::other)?;
        let mut frame = Vec::with_capacity(HEADER + json.len());
        frame.extend_from_slice(
            &u32::try_from(json.len())
                .map_err(io::Error::other)?
                .to_be_bytes(),
        );
        frame.extend_from_slice(
            &u16::try_from(fds.len())
                .map_err(io::Error::other)?
                .to_be_bytes(),
        );
        frame.extend_from_slice(&json);
        let sent = sys::send_with_fds(&self.sock, &frame, fds)?;
        // A stream socket may take less at once; the descriptors went with the first bytes.
        self.sock.write_all(&frame[sent..])
    }

    /// The next message and the descriptors its frame carries; None at EOF between frames.
    pub fn recv(&mut self) -> io::Result<Option<(Msg, Vec<OwnedFd>)>> {
        self.frame_in()
    }

    /// Reads `More` frames into `fds` until it holds `want` descriptors: the rest of those of the
    /// message just received.
    pub fn recv_more(&mut self, fds: &mut Vec<OwnedFd>, want: usize) -> io::Result<()> {
        while fds.len() < want {
            match self.frame_in()?.ok_or_else(cut_short)? {
                (Msg::More, more) => fds.extend(more),
                (other, _) => {
                    return Err(io::Error::other(format!(
                        "expected more descriptors, got {other:?}"
                    )))
                }
            }
        }
        Ok(())
    }

    fn frame_in(&mut self) -> io::Result<Option<(Msg, Vec<OwnedFd>)>> {
        loop {
            if self.buf.len() >= HEADER {
                let len = u32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]])
                    as usize;
                let nfds = usize::from(u16::from_be_bytes([self.buf[4], self.buf[5]]));
                if len > MAX_FRAME_BYTES {
                    return Err(io::Error::other(format!("a frame of {len} bytes")));
                }
                if self.buf.len() >= HEADER + len {
                    if self.fds.len() < nfds {
                        return Err(io::Error::other(format!(
                            "a frame counts {nfds} descriptors, {} arrived",
                            self.fds.len()
                        )));
                    }
                    let msg = serde_json::from_slice(&self.buf[HEADER..HEADER + len])
                        .map_err(|e| io::Error::other(format!("unreadable message: {e}")))?;
                    self.buf.drain(..HEADER + len);
                    return Ok(Some((msg, self.fds.drain(..nfds).collect())));
                }
            }
            let mut chunk = [0u8; 16 * 1024];
            let n = sys::recv_with_fds(&self.sock, &mut chunk, &mut self.fds)?;
            if n == 0 {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(cut_short())
                };
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

impl AsRawFd for Channel {
    fn as_raw_fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }
}

fn cut_short() -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "the other hearth closed the upgrade socket",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn messages_and_descriptors_arrive_in_order_across_frames() {
        let (a, b) = UnixStream::pair().unwrap();
        let (mut tx, mut rx) = (Channel::new(a), Channel::new(b));
        // 450 descriptors: three frames, the message and two More.
        let pairs: Vec<(UnixStream, UnixStream)> =
            (0..225).map(|_| UnixStream::pair().unwrap()).collect();
        let fds: Vec<RawFd> = pairs
            .iter()
            .flat_map(|(x, y)| [x.as_raw_fd(), y.as_raw_fd()])
            .collect();
        let msg = Msg::Listeners {
            pid: 7,
            listen: vec![ListenInfo {
                addrs: Addrs {
                    addr: "127.0.0.1:0".parse().unwrap(),
                    bound: "127.0.0.1:8080".parse().unwrap(),
                },
                sockets: 450,
            }],
            admin: None,
        };
        let sender = std::thread::spawn(move || {
            tx.send(&msg, &fds).unwrap();
            tx.send(&Msg::Done, &[]).unwrap();
            drop(pairs);
        });
        let (got, mut passed) = rx.recv().unwrap().unwrap();
        assert_eq!(passed.len(), MAX_FDS_PER_FRAME, "the first frame's share");
        rx.recv_more(&mut passed, 450).unwrap();
        sender.join().unwrap();
        assert!(matches!(got, Msg::Listeners { pid: 7, .. }), "{got:?}");
        assert_eq!(passed.len(), 450);
        // Each received descriptor is a socket of its pair, in order: x's then y's.
        let mut it = passed.iter();
        while let (Some(x), Some(y)) = (it.next(), it.next()) {
            let x = UnixStream::from(x.as_fd().try_clone_to_owned().unwrap());
            let y = UnixStream::from(y.as_fd().try_clone_to_owned().unwrap());
            (&x).write_all(b"!").unwrap();
            let mut one = [0u8; 1];
            std::io::Read::read_exact(&mut &y, &mut one).unwrap();
            assert_eq!(&one, b"!");
        }
        assert_eq!(rx.recv().unwrap().map(|(m, _)| m), Some(Msg::Done));
        assert!(rx.recv().unwrap().is_none(), "EOF between frames");
    }

    #[test]
    fn a_frame_cut_short_is_an_error() {
        let (mut a, b) = UnixStream::pair().unwrap();
        a.write_all(&[0, 0, 0, 9, 0, 0, b'{']).unwrap();
        drop(a);
        let e = Channel::new(b).recv().unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
    }
}
