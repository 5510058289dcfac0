//! The one module allowed `unsafe`: pinning a thread to a CPU core with `sched_setaffinity`,
//! socket reads and writes as bare system calls ([`Raw`]), the pipe and `splice(2)` calls that
//! move body bytes between two sockets without copying them into user space ([`Pipe`]), and
//! what a binary upgrade needs of a unix socket: passing file descriptors ([`send_with_fds`],
//! [`recv_with_fds`], SCM_RIGHTS) and asking who is at the other end ([`peer_cred`],
//! SO_PEERCRED).

#![allow(unsafe_code)] // the crate's only unsafe; each block says why it is sound

use std::collections::VecDeque;
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

/// The most descriptors one [`send_with_fds`] may carry. The kernel takes up to 253
/// (`SCM_MAX_FD`); [`recv_with_fds`] makes room for that many.
pub const MAX_FDS: usize = 253;

/// Control-message room for `MAX_FDS` descriptors, as `u64`s so that it is aligned for the
/// `cmsghdr` the kernel writes at its start.
const CONTROL_WORDS: usize = (MAX_FDS * std::mem::size_of::<RawFd>()) / 8 + 8;

/// One `sendmsg` of `data` on the unix socket `sock`, with `fds` (at most [`MAX_FDS`]) attached
/// as SCM_RIGHTS: the peer receives copies of them with the first byte it reads of `data`.
/// Returns the bytes sent, which on a stream socket may be fewer than `data.len()` (the rest
/// then goes without descriptors); `data` must not be empty when `fds` is not.
pub fn send_with_fds(sock: &impl AsRawFd, data: &[u8], fds: &[RawFd]) -> io::Result<usize> {
    if fds.len() > MAX_FDS || (data.is_empty() && !fds.is_empty()) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "descriptors need data to travel with, and at most MAX_FDS of them",
        ));
    }
    let mut control = [0u64; CONTROL_WORDS];
    let mut iov = libc::iovec {
        iov_base: data.as_ptr().cast_mut().cast(),
        iov_len: data.len(),
    };
    // SAFETY: all-zero bytes are a valid msghdr (no name, no control data, no iovecs).
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if !fds.is_empty() {
        let bytes = std::mem::size_of_val(fds);
        // SAFETY: CMSG_SPACE and CMSG_LEN are arithmetic on the length only. `bytes` is at most
        // MAX_FDS * 4, so the space fits `control` (CONTROL_WORDS leaves room for the header).
        let (space, len) = unsafe {
            (
                libc::CMSG_SPACE(bytes as libc::c_uint),
                libc::CMSG_LEN(bytes as libc::c_uint),
            )
        };
        debug_assert!(space as usize <= std::mem::size_of_val(&control));
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = space as _;
        // SAFETY: `msg` points at `control`, which is aligned (u64) and at least `space` bytes
        // long, so CMSG_FIRSTHDR returns a valid, writable header inside it, and CMSG_DATA a
        // pointer with room for `bytes` bytes after that header. The descriptors are copied
        // unaligned, as the kernel's layout does not promise alignment for the data.
        unsafe {
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = len as _;
            let data = libc::CMSG_DATA(cmsg).cast::<RawFd>();
            for (i, fd) in fds.iter().enumerate() {
                data.add(i).write_unaligned(*fd);
            }
        }
    }
    loop {
        // SAFETY: `msg`, its iovec, the bytes of `data` and `control` are valid for the call and
        // only read by the kernel. MSG_NOSIGNAL: a peer gone is EPIPE, not SIGPIPE.
        let rc = unsafe { libc::sendmsg(sock.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
        match usize::try_from(rc) {
            Ok(n) => return Ok(n),
            Err(_) => {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
        }
    }
}

/// One `recvmsg` on the unix socket `sock` into `buf`; descriptors that came with the bytes
/// (SCM_RIGHTS) are appended to `fds`, in order, close-on-exec. Returns the bytes read (0 at
/// EOF). A control message the kernel had to cut (more than [`MAX_FDS`] descriptors at once)
/// is an error, after the descriptors that did arrive were kept.
pub fn recv_with_fds(
    sock: &impl AsRawFd,
    buf: &mut [u8],
    fds: &mut VecDeque<OwnedFd>,
) -> io::Result<usize> {
    let mut control = [0u64; CONTROL_WORDS];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: all-zero bytes are a valid msghdr.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control) as _;
    let n = loop {
        // SAFETY: the kernel writes at most `buf.len()` bytes into `buf` and at most
        // `msg_controllen` bytes into `control`, both valid and exclusively borrowed for the
        // call. MSG_CMSG_CLOEXEC: descriptors received are not inherited by programs we start.
        let rc = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
        match usize::try_from(rc) {
            Ok(n) => break n,
            Err(_) => {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
        }
    };
    // SAFETY: after a successful recvmsg, `msg` describes the control messages the kernel wrote
    // into `control`; CMSG_FIRSTHDR and CMSG_NXTHDR walk them within `msg_controllen`, and each
    // SCM_RIGHTS message holds `(cmsg_len - CMSG_LEN(0)) / 4` descriptors that are now ours
    // (installed in this process for us alone), so each becomes an OwnedFd exactly once.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let bytes = (*cmsg).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                let data = libc::CMSG_DATA(cmsg).cast::<RawFd>();
                for i in 0..bytes / std::mem::size_of::<RawFd>() {
                    fds.push_back(OwnedFd::from_raw_fd(data.add(i).read_unaligned()));
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    if msg.msg_flags & libc::MSG_CTRUNC != 0 {
        return Err(io::Error::other(
            "descriptors were lost: more arrived at once than there was room for",
        ));
    }
    Ok(n)
}

/// Who is at the other end of a unix socket, as the kernel recorded it at connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerCred {
    pub pid: u32,
    pub uid: u32,
}

/// The peer of the connected unix socket `sock` (SO_PEERCRED).
pub fn peer_cred(sock: &impl AsRawFd) -> io::Result<PeerCred> {
    // SAFETY: all-zero bytes are a valid ucred.
    let mut cred: libc::ucred = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: the kernel writes at most `len` bytes into `cred`, valid and exclusively borrowed
    // for the call, and sets `len` to what it wrote.
    let rc = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(PeerCred {
        pid: u32::try_from(cred.pid).unwrap_or(0),
        uid: cred.uid,
    })
}

/// The real user id of this process.
pub fn uid() -> u32 {
    // SAFETY: getuid takes nothing, touches no memory of ours and cannot fail.
    unsafe { libc::getuid() }
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
mod fd_tests {
    use super::*;
    use std::io::Read;
    use std::os::unix::net::UnixStream;

    /// Descriptors sent with a message arrive with it, usable, and the peer is ourselves.
    #[test]
    fn descriptors_travel_and_the_peer_is_known() {
        let (a, b) = UnixStream::pair().unwrap();
        let (mut r1, w1) = UnixStream::pair().unwrap();
        let (mut r2, w2) = UnixStream::pair().unwrap();
        let n = send_with_fds(&a, b"two", &[w1.as_raw_fd(), w2.as_raw_fd()]).unwrap();
        assert_eq!(n, 3);
        drop((w1, w2));
        let mut fds = VecDeque::new();
        let mut buf = [0u8; 16];
        assert_eq!(recv_with_fds(&b, &mut buf, &mut fds).unwrap(), 3);
        assert_eq!(&buf[..3], b"two");
        assert_eq!(fds.len(), 2);
        // Each received descriptor is the write end of its pair: what goes in comes out.
        for (fd, r) in fds.drain(..).zip([&mut r1, &mut r2]) {
            let mut w = UnixStream::from(fd);
            w.write_all(b"x").unwrap();
            let mut got = [0u8; 1];
            r.read_exact(&mut got).unwrap();
            assert_eq!(&got, b"x");
        }
        // A message without descriptors adds none; EOF reads 0.
        assert_eq!(send_with_fds(&a, b"plain", &[]).unwrap(), 5);
        assert_eq!(recv_with_fds(&b, &mut buf, &mut fds).unwrap(), 5);
        assert!(fds.is_empty());
        let me = peer_cred(&b).unwrap();
        assert_eq!((me.uid, me.pid), (uid(), std::process::id()));
        drop(a);
        assert_eq!(recv_with_fds(&b, &mut buf, &mut fds).unwrap(), 0);
        assert!(
            send_with_fds(&b, b"", &[0]).is_err(),
            "descriptors need data"
        );
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
