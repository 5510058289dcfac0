//! The floor row of bench/run.sh: about the least a user-space HTTP/1.1 proxy can spend per
//! request on the machine the benchmark runs on.
//!
//! One mio event loop on one thread, one upstream connection per client connection, opened when
//! the client connects, and bytes relayed both ways without being looked at: no parsing, no
//! routing, no pool, no timers, no logging, no headers added. It reads and writes the way hearth
//! does (one read per readiness edge, readiness cleared by a short read), so its system calls per
//! request are comparable. What hearth costs beyond this row is what its features cost; what
//! this row costs is the kernel's share, which no proxy avoids.
//!
//! `cargo run --release --example floor -- LISTEN_ADDR UPSTREAM_ADDR`. Not a proxy to deploy: it
//! does not even know where one request ends.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::process::ExitCode;

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};

const LISTENER: Token = Token(usize::MAX);
// Large enough that a 16 KiB answer and its head arrive in one read, as in hearth.
const BUF: usize = 64 * 1024;

/// One socket and what the last events said of it.
struct Side {
    sock: TcpStream,
    readable: bool,
    writable: bool,
}

/// Bytes read from one side and not yet written to the other.
struct Pending {
    data: Box<[u8]>,
    start: usize,
    end: usize,
}

struct Pair {
    client: Side,
    up: Side,
    to_up: Pending,
    to_client: Pending,
}

/// The peer closed or failed: the pair is done.
struct Done;

/// Moves what `from` has to `to` through `pending` until one of them would block.
fn relay(from: &mut Side, pending: &mut Pending, to: &mut Side) -> Result<(), Done> {
    loop {
        while pending.start < pending.end {
            if !to.writable {
                return Ok(());
            }
            match to.sock.write(&pending.data[pending.start..pending.end]) {
                Ok(0) => return Err(Done),
                Ok(n) => pending.start += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => to.writable = false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Err(Done),
            }
        }
        if !from.readable {
            return Ok(());
        }
        match from.sock.read(&mut pending.data) {
            Ok(0) => return Err(Done),
            Ok(n) => {
                // A short read drained the socket; the next arrival raises a new edge.
                from.readable = n == pending.data.len();
                pending.start = 0;
                pending.end = n;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => from.readable = false,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Err(Done),
        }
    }
}

fn pending() -> Pending {
    Pending {
        data: vec![0; BUF].into_boxed_slice(),
        start: 0,
        end: 0,
    }
}

fn run(listen: SocketAddr, upstream: SocketAddr) -> io::Result<()> {
    let mut poll = Poll::new()?;
    let mut listener = TcpListener::bind(listen)?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    let mut pairs: Vec<Option<Pair>> = Vec::new();
    let mut free: Vec<usize> = Vec::new();
    let mut events = Events::with_capacity(1024);
    loop {
        match poll.poll(&mut events, None) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        for event in events.iter() {
            if event.token() == LISTENER {
                loop {
                    let (client, _) = match listener.accept() {
                        Ok(c) => c,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) => {
                            eprintln!("floor: accept: {e}");
                            break;
                        }
                    };
                    let up = match TcpStream::connect(upstream) {
                        Ok(up) => up,
                        Err(e) => {
                            eprintln!("floor: connect {upstream}: {e}");
                            continue;
                        }
                    };
                    let slot = free.pop().unwrap_or_else(|| {
                        pairs.push(None);
                        pairs.len() - 1
                    });
                    let mut pair = Pair {
                        // Until its first event says so, neither socket is known ready; the
                        // upstream one is still connecting.
                        client: Side {
                            sock: client,
                            readable: false,
                            writable: false,
                        },
                        up: Side {
                            sock: up,
                            readable: false,
                            writable: false,
                        },
                        to_up: pending(),
                        to_client: pending(),
                    };
                    let both = Interest::READABLE | Interest::WRITABLE;
                    let registered = pair
                        .client
                        .sock
                        .set_nodelay(true)
                        .and_then(|()| pair.up.sock.set_nodelay(true))
                        .and_then(|()| {
                            poll.registry()
                                .register(&mut pair.client.sock, Token(slot * 2), both)
                        })
                        .and_then(|()| {
                            poll.registry()
                                .register(&mut pair.up.sock, Token(slot * 2 + 1), both)
                        });
                    match registered {
                        Ok(()) => pairs[slot] = Some(pair),
                        Err(e) => {
                            eprintln!("floor: setting up a connection: {e}");
                            free.push(slot);
                        }
                    }
                }
                continue;
            }
            let slot = event.token().0 / 2;
            let Some(pair) = pairs.get_mut(slot).and_then(Option::as_mut) else {
                continue;
            };
            let side = if event.token().0 % 2 == 0 {
                &mut pair.client
            } else {
                &mut pair.up
            };
            // A close or error is read as such by the next read or write.
            side.readable |= event.is_readable() || event.is_read_closed() || event.is_error();
            side.writable |= event.is_writable() || event.is_write_closed() || event.is_error();
            let moved = relay(&mut pair.client, &mut pair.to_up, &mut pair.up)
                .and_then(|()| relay(&mut pair.up, &mut pair.to_client, &mut pair.client));
            if moved.is_err() {
                // Dropping the sockets closes them, which also takes them out of the poll.
                pairs[slot] = None;
                free.push(slot);
            }
        }
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let parsed = match args.as_slice() {
        [listen, upstream] => listen
            .parse()
            .and_then(|l| upstream.parse().map(|u| (l, u))),
        _ => {
            eprintln!("usage: floor LISTEN_ADDR UPSTREAM_ADDR");
            return ExitCode::from(2);
        }
    };
    let Ok((listen, upstream)) = parsed else {
        eprintln!("floor: addresses are IP:PORT, e.g. 127.0.0.1:8080");
        return ExitCode::from(2);
    };
    match run(listen, upstream) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("floor: {e}");
            ExitCode::FAILURE
        }
    }
}
