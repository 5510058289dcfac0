//! The one module allowed `unsafe`: pinning a thread to a CPU core with `sched_setaffinity`,
//! socket reads and writes as bare system calls ([`Raw`]), and what a binary upgrade needs of a
//! unix socket: passing file descriptors ([`send_with_fds`], [`recv_with_fds`], SCM_RIGHTS) and
//! asking who is at the other end ([`peer_cred`], SO_PEERCRED).

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
