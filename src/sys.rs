//! The one module allowed `unsafe`: pinning a thread to a CPU core with `sched_setaffinity`,
//! socket reads and writes as bare system calls ([`Raw`]), and the pipe and `splice(2)` calls
//! that move body bytes between two sockets without copying them into user space ([`Pipe`]).

#![allow(unsafe_code)] // the crate's only unsafe; each block says why it is sound

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// Pins the calling thread to `core` (0-based, modulo the number of CPUs the process may use).
pub fn pin_current_thread(core: usize) -> io::Result<()> {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let cpu = core % cpus.max(1);
    // SAFETY: `cpu_set_t` is plain data for which all-zero bytes are a valid (empty) set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `cpu` is below CPU_SETSIZE (available_parallelism is far below 1024) and `set` is a
    // valid, exclusively borrowed cpu_set_t.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: pid 0 names the calling thread; the pointer and size describe `set`, which lives
    // for the whole call.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// A socket, by its descriptor, read and written with bare system calls.
///
/// std's `TcpStream` reads and writes through glibc's `recv` and `send`, which are thread
/// cancellation points: once a process has a second thread, glibc wraps each such call in two
/// atomic updates of the calling thread's cancellation state. hearth never cancels threads, and a
/// request costs four of these calls, so on the hot path the wrappers cost more than the code
/// that decides what to send (measured with `perf record`: about 0.12 us per request in
/// `__pthread_enable_asynccancel` and `__pthread_disable_asynccancel`). [`Raw`] issues
/// `recvfrom` and `sendto` through `syscall(2)` instead, which is no cancellation point; what
/// the kernel does is the same, errors included.
pub(crate) struct Raw(RawFd);

impl Raw {
    pub(crate) fn of(sock: &impl AsRawFd) -> Raw {
        Raw(sock.as_raw_fd())
    }
}

/// The result of a system call that returns a length or -1 with errno set.
fn length(rc: libc::c_long) -> io::Result<usize> {
    // usize::try_from fails exactly on the negative values, and -1 is the only one returned.
    usize::try_from(rc).map_err(|_| io::Error::last_os_error())
}

impl Read for Raw {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: the kernel writes at most `buf.len()` bytes to `buf`, which is valid and
        // exclusively borrowed for the call; null address arguments mean "no peer address".
        length(unsafe {
            libc::syscall(
                libc::SYS_recvfrom,
                self.0,
                buf.as_mut_ptr(),
                buf.len(),
                0,
                std::ptr::null_mut::<libc::sockaddr>(),
                std::ptr::null_mut::<libc::socklen_t>(),
            )
        })
    }
}

impl Write for Raw {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // SAFETY: the kernel reads at most `buf.len()` bytes from `buf`, valid for the call.
        // MSG_NOSIGNAL: a peer that has gone away is an EPIPE here, not a SIGPIPE, as with std.
        length(unsafe {
            libc::syscall(
                libc::SYS_sendto,
                self.0,
                buf.as_ptr(),
                buf.len(),
                libc::MSG_NOSIGNAL,
                std::ptr::null::<libc::sockaddr>(),
                0 as libc::socklen_t,
            )
        })
    }

    /// `sendmsg` with the slices as its iovecs: one system call for several buffers.
    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        // SAFETY: all-zero bytes are a valid msghdr (no name, no control data, no iovecs).
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        // IoSlice is guaranteed ABI-compatible with iovec on Unix; the kernel only reads them.
        msg.msg_iov = bufs.as_ptr().cast_mut().cast::<libc::iovec>();
        msg.msg_iovlen = bufs.len() as _;
        // SAFETY: `msg` and the iovecs it points to, and the bytes they point to, are valid for
        // the call and only read by the kernel.
        length(unsafe {
            libc::syscall(
                libc::SYS_sendmsg,
                self.0,
                &msg as *const libc::msghdr,
                libc::MSG_NOSIGNAL,
            )
        })
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A kernel pipe used as the middle of a socket-to-socket `splice(2)`: bytes spliced in from
/// one socket are page references held by the pipe until spliced out to the other, never copied
/// through user space. Both ends are non-blocking and close on exec; dropping the value closes
/// them, and with them whatever the pipe still held.
#[derive(Debug)]
pub(crate) struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    capacity: usize,
}

impl Pipe {
    /// A pipe holding about `size` bytes: the kernel rounds the request up to a power of two
    /// pages and refuses more than `/proc/sys/fs/pipe-max-size` to an unprivileged process, in
    /// which case the pipe keeps its default size. [`Pipe::capacity`] says what it got.
    pub(crate) fn new(size: usize) -> io::Result<Pipe> {
        let mut fds = [0 as libc::c_int; 2];
        // SAFETY: `fds` is a valid array of two ints for the kernel to write the new descriptors
        // into; nothing else is passed.
        let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: pipe2 succeeded, so both descriptors are open and owned by nobody else; each
        // is wrapped exactly once and closed by its OwnedFd.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        let want = libc::c_int::try_from(size).unwrap_or(libc::c_int::MAX);
        // SAFETY: fcntl on a descriptor we own, with an integer argument; no memory is passed.
        let set = unsafe { libc::fcntl(write.as_raw_fd(), libc::F_SETPIPE_SZ, want) };
        let got = if set > 0 {
            set
        } else {
            // Refused (EPERM past pipe-max-size, EBUSY): the default size stands.
            // SAFETY: as above; F_GETPIPE_SZ takes no argument.
            unsafe { libc::fcntl(write.as_raw_fd(), libc::F_GETPIPE_SZ) }
        };
        let capacity = usize::try_from(got).map_err(|_| io::Error::last_os_error())?;
        Ok(Pipe {
            read,
            write,
            capacity,
        })
    }

    /// Bytes the pipe holds when full of whole pages. A splice from a socket may stop short of
    /// it, since each slot of the pipe holds one piece of a packet, however small.
    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    /// Moves up to `len` bytes from socket `from` into the pipe. Ok(0) is the socket's EOF;
    /// WouldBlock means the socket had nothing (the pipe is never full when this is called).
    pub(crate) fn fill_from(&self, from: &impl AsRawFd, len: usize) -> io::Result<usize> {
        splice(from.as_raw_fd(), self.write.as_raw_fd(), len)
    }

    /// Moves up to `len` bytes from the pipe to socket `to`. WouldBlock: the socket's send
    /// buffer is full.
    pub(crate) fn drain_to(&self, to: &impl AsRawFd, len: usize) -> io::Result<usize> {
        splice(self.read.as_raw_fd(), to.as_raw_fd(), len)
    }
}

/// `splice(2)` between two descriptors at their current positions (sockets and pipes have no
/// offsets). SPLICE_F_MOVE asks for page moves rather than copies where the kernel can;
/// SPLICE_F_NONBLOCK keeps the pipe side from blocking (the sockets are non-blocking already).
fn splice(from: RawFd, to: RawFd, len: usize) -> io::Result<usize> {
    // SAFETY: both descriptors are open for the call (the caller holds them); null offsets mean
    // "the descriptor's own position", which is what sockets and pipes require; no memory of
    // ours is read or written by the kernel.
    let rc = unsafe {
        libc::splice(
            from,
            std::ptr::null_mut(),
            to,
            std::ptr::null_mut(),
            len,
            libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
        )
    };
    usize::try_from(rc).map_err(|_| io::Error::last_os_error())
}

#[cfg(test)]
mod tests {
    #[test]
    fn pinning_to_core_zero_succeeds() {
        // Run on a scratch thread so the test runner's own thread keeps its affinity.
        let r = std::thread::spawn(|| super::pin_current_thread(0))
            .join()
            .unwrap();
        assert!(r.is_ok(), "sched_setaffinity failed: {r:?}");
    }
}

#[cfg(test)]
mod raw_tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};

    #[test]
    fn reads_writes_and_reports_errors_like_std() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let a = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (b, _) = listener.accept().unwrap();
        // Loopback delivers at once, but do not rely on one read taking all five bytes.
        let read5 = || {
            let mut got = [0u8; 5];
            let mut n = 0;
            for _ in 0..100 {
                n += Raw::of(&b).read(&mut got[n..]).unwrap();
                if n == 5 {
                    break;
                }
            }
            got[..n].to_vec()
        };
        assert_eq!(Raw::of(&a).write(b"hello").unwrap(), 5);
        assert_eq!(read5(), b"hello");

        // Several buffers in one call, in order.
        let parts = [
            io::IoSlice::new(b"ab"),
            io::IoSlice::new(b""),
            io::IoSlice::new(b"cde"),
        ];
        assert_eq!(Raw::of(&a).write_vectored(&parts).unwrap(), 5);
        assert_eq!(read5(), b"abcde");
        let mut got = [0u8; 16];

        // Nothing to read on a non-blocking socket: WouldBlock, from errno.
        b.set_nonblocking(true).unwrap();
        let e = Raw::of(&b).read(&mut got).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);

        // The peer closed: a read sees EOF; writing to a reset peer is an error, not a signal.
        drop(a);
        assert_eq!(Raw::of(&b).read(&mut got).unwrap(), 0);
        let mut failed = false;
        for _ in 0..100 {
            if Raw::of(&b).write(b"x").is_err() {
                failed = true;
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert!(failed, "writing to a closed peer kept succeeding");
    }
}

#[cfg(test)]
mod pipe_tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};

    #[test]
    fn splices_socket_to_socket_and_reports_eof_and_would_block() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let a = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (b, _) = listener.accept().unwrap();
        let c = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (d, _) = listener.accept().unwrap();
        b.set_nonblocking(true).unwrap();
        let pipe = Pipe::new(256 * 1024).unwrap();
        assert!(pipe.capacity() >= 64 * 1024, "capacity {}", pipe.capacity());

        // Nothing sent yet: the source would block.
        let e = pipe.fill_from(&b, 4096).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);

        // a -> b, spliced into the pipe, out to c -> read at d, byte for byte.
        let sent: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        (&a).write_all(&sent).unwrap();
        drop(a);
        let mut got = Vec::new();
        let mut held = 0;
        let mut eof = false;
        d.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        for _ in 0..10_000 {
            if held == 0 && !eof {
                match pipe.fill_from(&b, pipe.capacity()) {
                    Ok(0) => eof = true,
                    Ok(n) => held += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => panic!("fill: {e}"),
                }
            }
            if held > 0 {
                held -= pipe.drain_to(&c, held).unwrap();
            }
            if eof && held == 0 {
                break;
            }
        }
        assert!(eof, "the source's EOF was never seen");
        drop(c);
        (&d).read_to_end(&mut got).unwrap();
        assert!(got == sent, "spliced {} bytes of {}", got.len(), sent.len());
    }
}
