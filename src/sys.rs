//! The one module allowed `unsafe`: pinning a thread to a CPU core with `sched_setaffinity`.

#![allow(unsafe_code)] // the crate's only unsafe; each block says why it is sound

use std::io;

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
