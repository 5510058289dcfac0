//! The one module allowed `unsafe`: pinning a thread to a CPU core with `sched_setaffinity`, and
//! socket reads and writes as bare system calls ([`Raw`]).

#![allow(unsafe_code)] // the crate's only unsafe; each block says why it is sound

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};

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
