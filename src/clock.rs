//! The one place hearth reads the time.
//!
//! Everything else is handed a `now` in milliseconds on one process-wide monotonic timeline (from
//! [`Clock::now_ms`]), so policies that depend on time (pool retirement, timers, warnings at most
//! once a second) take it as an argument and are tested on a virtual clock. Every thread reads the
//! same timeline, so an age measured on one core means the same on another (a connection handed
//! over keeps its age). The wall clock is read once, at start: a line's wall time is the start's
//! wall time plus the monotonic time since, so a step of the system clock while hearth runs does
//! not reorder the access log.
//!
//! The timeline starts at [`ORIGIN_MS`], not at 0: a connection handed over by the process this
//! one upgrades is older than this process, and its opening must still fit on the timeline
//! (`now - age`) for `max_lifetime` to retire it when it would have retired in the old process.

use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Where the timeline starts: about 35 years of milliseconds, more than any connection can have
/// been open. Every `now` is at least this, so a time before the process started is still a
/// plain `u64`, and 0 stays free to mean "never" or "unset".
pub const ORIGIN_MS: u64 = 1 << 40;

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
    /// [`ORIGIN_MS`] plus the milliseconds since the process first read its clock; never goes
    /// back.
    pub fn now_ms(self) -> u64 {
        let since = u64::try_from(start().instant.elapsed().as_millis()).unwrap_or(u64::MAX);
        ORIGIN_MS.saturating_add(since)
    }

    /// Unix time in milliseconds at monotonic time `now_ms`.
    pub fn wall_ms(self, now_ms: u64) -> u64 {
        start()
            .wall_ms
            .saturating_add(now_ms)
            .saturating_sub(ORIGIN_MS)
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
        assert_eq!(c.wall_ms(ORIGIN_MS + 5) + 1, c.wall_ms(ORIGIN_MS + 6));
        assert!(c.unix_secs() > 1_700_000_000);
        assert!(c.until(0).is_zero());
    }

    /// A process that just started can still place the opening of a connection opened a year
    /// before it (handed over by the process it upgrades) on its timeline.
    #[test]
    fn the_timeline_reaches_back_before_the_start() {
        let year_ms = 365 * 24 * 3_600_000;
        let now = Clock.now_ms();
        assert!(now.checked_sub(year_ms).is_some_and(|t| t > 0));
        assert_eq!(Clock.wall_ms(now - year_ms) + year_ms, Clock.wall_ms(now));
    }
}
