//! The one place hearth reads the time.
//!
//! Everything else is handed a `now` in milliseconds on one process-wide monotonic timeline (from
//! [`Clock::now_ms`]), so policies that depend on time (pool retirement, timers, warnings at most
//! once a second) take it as an argument and are tested on a virtual clock. Every thread reads the
//! same timeline, so an age measured on one core means the same on another (a connection handed
//! over keeps its age). The wall clock is read once, at start: a line's wall time is the start's
//! wall time plus the monotonic time since, so a step of the system clock while hearth runs does
//! not reorder the access log.

use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

#[derive(Debug, Clone, Copy)]
struct Start {
    instant: Instant,
    wall_ms: u64,
}

fn start() -> &'static Start {
    static START: OnceLock<Start> = OnceLock::new();
    START.get_or_init(|| Start {
        instant: Instant::now(),
        wall_ms: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
    })
}

/// The process's clock: a handle on the one timeline, `Copy` and free to hand to every thread.
#[derive(Debug, Clone, Copy, Default)]
pub struct Clock;

impl Clock {
    /// Milliseconds since the process first read its clock; never goes back.
    pub fn now_ms(self) -> u64 {
        u64::try_from(start().instant.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Unix time in milliseconds at monotonic time `now_ms`.
    pub fn wall_ms(self, now_ms: u64) -> u64 {
        start().wall_ms.saturating_add(now_ms)
    }

    /// Unix time in seconds now.
    pub fn unix_secs(self) -> u64 {
        self.wall_ms(self.now_ms()) / 1_000
    }

    /// How long from `now_ms` until `deadline_ms`, for a poll timeout.
    pub fn until(self, deadline_ms: u64) -> Duration {
        Duration::from_millis(deadline_ms.saturating_sub(self.now_ms()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_timeline() {
        let c = Clock;
        let a = c.now_ms();
        let b = Clock.now_ms();
        assert!(b >= a);
        assert_eq!(c.wall_ms(5) + 1, c.wall_ms(6));
        assert!(c.unix_secs() > 1_700_000_000);
        assert!(c.until(0).is_zero());
    }
}
