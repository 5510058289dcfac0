//! The deadlines of one core: header, idle and read timeouts of its connections and the idle
//! deadlines of its pooled upstream connections, kept in a hierarchical timer wheel.
//!
//! Time is `u64` milliseconds on the core's own clock and one tick is one millisecond, so a
//! deadline is already a whole number of ticks and "rounding up to the tick" changes nothing.
//! The wheel never reads a clock: the caller passes `now` to [`TimerWheel::poll`].
//!
//! Layout: `LEVELS` levels of `SLOTS` slots. A slot at level `L` spans `64^L` ms, so level 0
//! resolves single milliseconds and the top level turns once every `64^6` ms (about 795 days).
//! Each level keeps an `occupied` bitmap, so the next non-empty slot is one rotate and one
//! `trailing_zeros`. Entries live in a slab (a `Vec` plus a free list) and each slot is a doubly
//! linked list of slab indices, so insert and cancel are O(1).
//!
//! Invariants, with `elapsed` the time of the last poll:
//! - An entry whose deadline is at or before `elapsed` sits on the `pending` list and fires at
//!   the next poll.
//! - Any other entry sits at the level of the highest bit in which its deadline differs from
//!   `elapsed`, in the slot its deadline selects there. So a level-`L` entry lies inside the
//!   current level-`L+1` slot, and every occupied slot (except on the top level, below) starts
//!   after `elapsed`. Entries only move downwards, when `poll` reaches the start of their slot
//!   and either fires them or re-files them against the new `elapsed` (a cascade).
//! - Deadlines more than one turn of the top level away are filed on the top level anyway, in
//!   the slot their own bits select; the top level then acts as a ring, its slots at or behind
//!   the current one meaning "next turn". Such an entry is reached early, at a slot start before
//!   its deadline, and re-filed; it is never reached late.
//! - Every slot start used as an expiration is at or before the deadline of each entry in the
//!   slot, which is why [`TimerWheel::next_deadline`] may be early but never late.
//! - Freeing a slab slot bumps its generation; a `TimerId` carries the generation it was issued
//!   with, so an id whose timer already fired or was cancelled never cancels the slot's next
//!   occupant. The generation is a `u64` because an insert/cancel pair on every request reuses
//!   the same slot, and a `u32` could wrap within hours.

use std::fmt;

/// Bits of the deadline consumed by one level.
const LEVEL_BITS: u32 = 6;
const SLOTS: usize = 1 << LEVEL_BITS;
const SLOT_MASK: u64 = (SLOTS as u64) - 1;
const LEVELS: usize = 6;
/// One turn of the top level, in ticks: the furthest the wheel files a deadline exactly.
const MAX_SPAN: u64 = 1 << (LEVEL_BITS * LEVELS as u32);
/// The `level` of an entry that is on the pending list rather than in a slot.
const PENDING: u8 = LEVELS as u8;
/// Ends a list.
const NIL: usize = usize::MAX;

/// Names one armed timer until it fires or is cancelled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimerId {
    index: usize,
    generation: u64,
}

struct Entry<T> {
    deadline: u64,
    prev: usize,
    /// The following entry in its slot while armed; the next free slab slot while free.
    next: usize,
    generation: u64,
    /// Where the entry is filed, so cancel can unlink it and clear the slot's bit.
    level: u8,
    slot: u8,
    value: Option<T>,
}

struct Level {
    occupied: u64,
    heads: [usize; SLOTS],
}

/// When and where the wheel next has work: the start of the earliest occupied slot.
struct Expiration {
    at: u64,
    level: usize,
    slot: usize,
}

/// A hierarchical timer wheel holding values of type `T` until their deadlines pass.
pub struct TimerWheel<T> {
    elapsed: u64,
    levels: [Level; LEVELS],
    pending: usize,
    /// At or before the earliest deadline on `pending` (cancels can leave it early, never late).
    pending_earliest: u64,
    entries: Vec<Entry<T>>,
    free: usize,
    len: usize,
}

impl<T> TimerWheel<T> {
    pub fn new(now_ms: u64) -> Self {
        TimerWheel {
            elapsed: now_ms,
            levels: std::array::from_fn(|_| Level {
                occupied: 0,
                heads: [NIL; SLOTS],
            }),
            pending: NIL,
            pending_earliest: u64::MAX,
            entries: Vec::new(),
            free: NIL,
            len: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Arms a timer that `poll` hands back once its clock reaches `deadline_ms`. A deadline at
    /// or before the last polled time fires at the next poll.
    pub fn insert(&mut self, deadline_ms: u64, value: T) -> TimerId {
        let index = if self.free == NIL {
            self.entries.push(Entry {
                deadline: deadline_ms,
                prev: NIL,
                next: NIL,
                generation: 0,
                level: PENDING,
                slot: 0,
                value: Some(value),
            });
            self.entries.len() - 1
        } else {
            let index = self.free;
            let entry = &mut self.entries[index];
            self.free = entry.next;
            entry.deadline = deadline_ms;
            entry.value = Some(value);
            index
        };
        self.len += 1;
        self.file(index);
        TimerId {
            index,
            generation: self.entries[index].generation,
        }
    }

    /// Disarms a timer and returns its value; `None` if it already fired or was cancelled.
    pub fn cancel(&mut self, id: TimerId) -> Option<T> {
        let live = self
            .entries
            .get(id.index)
            .is_some_and(|e| e.generation == id.generation && e.value.is_some());
        if !live {
            return None;
        }
        self.unlink(id.index);
        self.release(id.index)
    }

    /// Moves the wheel's time to `now_ms` and appends to `out` the value of every timer whose
    /// deadline is at or before it.
    ///
    /// Values come out in deadline order, except that those already due at the previous poll
    /// come first, in no particular order. A `now_ms` behind the previous poll does nothing.
    pub fn poll(&mut self, now_ms: u64, out: &mut Vec<T>) {
        if now_ms < self.elapsed {
            return;
        }
        self.fire_pending(out);
        while let Some(exp) = self.next_expiration() {
            if exp.at > now_ms {
                break;
            }
            // Moving `elapsed` to the slot start before re-filing is what makes entries cascade
            // to lower levels instead of landing back in the slot being emptied.
            self.elapsed = exp.at;
            self.process_slot(exp.level, exp.slot, out);
        }
        self.elapsed = now_ms;
    }

    /// When the event loop should next call `poll`, for its poll timeout; `None` when empty.
    ///
    /// Never later than the earliest deadline, since a late answer means a timeout fires late.
    /// It may be earlier: the start of a higher-level slot, where `poll` only cascades entries
    /// down and returns nothing. Costs one bitmap scan per level, however many timers are armed.
    pub fn next_deadline(&self) -> Option<u64> {
        if self.pending != NIL {
            // Pending deadlines are at or before `elapsed`, so they precede every slot start.
            return Some(self.pending_earliest);
        }
        self.next_expiration().map(|exp| exp.at)
    }

    /// The start of the earliest occupied slot. The lowest occupied level always holds it:
    /// a level-`L` slot lies inside the current level-`L+1` slot, and occupied slots of higher
    /// levels start after that one ends.
    fn next_expiration(&self) -> Option<Expiration> {
        let (level, state) = self
            .levels
            .iter()
            .enumerate()
            .find(|(_, l)| l.occupied != 0)?;
        let shift = LEVEL_BITS * level as u32;
        let slot_span = 1u64 << shift;
        let level_span = slot_span << LEVEL_BITS;
        let now_slot = (self.elapsed >> shift) & SLOT_MASK;
        // The search starts one past the current slot: below the top level the current slot is
        // always empty (its start has passed), and on the top level an entry in it belongs to the
        // next turn, so it is the farthest, not the nearest. Rotating puts the first slot to look
        // at on bit 0, so the trailing zeros count the slots skipped.
        let first = (now_slot + 1) & SLOT_MASK;
        let skipped = u64::from(state.occupied.rotate_right(first as u32).trailing_zeros());
        // Counting from the start of the current turn of this level, without reducing modulo
        // the slot count, so a slot at or behind the current one lands on the next turn (only
        // the top level wraps, see the module invariants).
        let turn_start = self.elapsed & !(level_span - 1);
        let ahead = now_slot + 1 + skipped;
        let at = turn_start.saturating_add(ahead.saturating_mul(slot_span));
        let slot = (ahead & SLOT_MASK) as usize;
        Some(Expiration { at, level, slot })
    }

    /// Empties one slot whose start `elapsed` has just reached: due entries fire, the rest are
    /// filed again against the new `elapsed`, which puts them on a lower level.
    fn process_slot(&mut self, level: usize, slot: usize, out: &mut Vec<T>) {
        let mut at = std::mem::replace(&mut self.levels[level].heads[slot], NIL);
        self.levels[level].occupied &= !(1u64 << slot);
        while at != NIL {
            // Read the link before `file` or `release` rewrite it.
            let next = self.entries[at].next;
            if self.entries[at].deadline <= self.elapsed {
                out.extend(self.release(at));
            } else {
                self.file(at);
            }
            at = next;
        }
    }

    fn fire_pending(&mut self, out: &mut Vec<T>) {
        let mut at = std::mem::replace(&mut self.pending, NIL);
        self.pending_earliest = u64::MAX;
        while at != NIL {
            let next = self.entries[at].next;
            out.extend(self.release(at));
            at = next;
        }
    }

    /// Links an unlinked entry at the head of the list its deadline belongs to.
    fn file(&mut self, index: usize) {
        let deadline = self.entries[index].deadline;
        let (level, slot) = if deadline <= self.elapsed {
            self.pending_earliest = self.pending_earliest.min(deadline);
            (PENDING, 0)
        } else {
            let level = level_for(self.elapsed, deadline);
            (level as u8, slot_for(deadline, level) as u8)
        };
        let head = self.head_mut(level, slot);
        let old = std::mem::replace(head, index);
        if old != NIL {
            self.entries[old].prev = index;
        }
        let entry = &mut self.entries[index];
        entry.prev = NIL;
        entry.next = old;
        entry.level = level;
        entry.slot = slot;
        if level != PENDING {
            self.levels[level as usize].occupied |= 1u64 << slot;
        }
    }

    /// Takes an armed entry out of its list, clearing the slot's bit if the list empties.
    fn unlink(&mut self, index: usize) {
        let Entry {
            prev,
            next,
            level,
            slot,
            ..
        } = self.entries[index];
        if prev == NIL {
            *self.head_mut(level, slot) = next;
        } else {
            self.entries[prev].next = next;
        }
        if next != NIL {
            self.entries[next].prev = prev;
        }
        if prev == NIL && next == NIL {
            if level == PENDING {
                self.pending_earliest = u64::MAX;
            } else {
                self.levels[level as usize].occupied &= !(1u64 << slot);
            }
        }
    }

    /// Returns an unlinked entry's slab slot to the free list and hands back its value.
    fn release(&mut self, index: usize) -> Option<T> {
        let entry = &mut self.entries[index];
        let value = entry.value.take();
        entry.generation = entry.generation.wrapping_add(1);
        entry.prev = NIL;
        entry.next = self.free;
        self.free = index;
        self.len -= 1;
        value
    }

    fn head_mut(&mut self, level: u8, slot: u8) -> &mut usize {
        if level == PENDING {
            &mut self.pending
        } else {
            &mut self.levels[level as usize].heads[slot as usize]
        }
    }
}

impl<T> fmt::Debug for TimerWheel<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TimerWheel")
            .field("elapsed", &self.elapsed)
            .field("len", &self.len)
            .field("next_deadline", &self.next_deadline())
            .finish_non_exhaustive()
    }
}

/// The level of the highest bit in which `when` differs from `elapsed`. The low slot bits are
/// forced on so the answer is at least level 0, and differences beyond one turn of the top
/// level are capped to the top level.
fn level_for(elapsed: u64, when: u64) -> usize {
    let masked = ((elapsed ^ when) | SLOT_MASK).min(MAX_SPAN - 1);
    let highest_bit = u64::BITS - 1 - masked.leading_zeros();
    (highest_bit / LEVEL_BITS) as usize
}

fn slot_for(when: u64, level: usize) -> usize {
    ((when >> (LEVEL_BITS * level as u32)) & SLOT_MASK) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::testutil::Rng;

    fn polled<T>(wheel: &mut TimerWheel<T>, now: u64) -> Vec<T> {
        let mut out = Vec::new();
        wheel.poll(now, &mut out);
        out
    }

    #[test]
    fn level_and_slot_follow_the_highest_differing_bit() {
        // (elapsed, deadline, level)
        let cases = [
            (0, 1, 0),
            (0, 63, 0),
            (0, 64, 1),
            (0, 4095, 1),
            (0, 4096, 2),
            (0, 262_143, 2),
            (0, 262_144, 3),
            (0, MAX_SPAN - 1, 5),
            (0, MAX_SPAN, 5),
            (0, u64::MAX, 5),
            (63, 64, 1),
            (64, 127, 0),
            (4095, 4096, 2),
        ];
        for (elapsed, when, level) in cases {
            assert_eq!(level_for(elapsed, when), level, "{elapsed} -> {when}");
        }
        assert_eq!(slot_for(64, 1), 1);
        assert_eq!(slot_for(4096 + 5 * 64, 1), 5);
        assert_eq!(slot_for(MAX_SPAN, 5), 0);
    }

    #[test]
    fn empty_wheel_has_no_deadline_and_polls_nothing() {
        let mut wheel: TimerWheel<u8> = TimerWheel::new(1_000);
        assert!(wheel.is_empty());
        assert_eq!(wheel.next_deadline(), None);
        assert!(polled(&mut wheel, 1_000_000).is_empty());
        assert_eq!(wheel.next_deadline(), None);
    }

    #[test]
    fn deadline_at_or_before_now_fires_at_next_poll() {
        let mut wheel = TimerWheel::new(500);
        wheel.insert(500, "now");
        wheel.insert(0, "past");
        assert_eq!(wheel.next_deadline(), Some(0));
        let mut fired = polled(&mut wheel, 500);
        fired.sort();
        assert_eq!(fired, ["now", "past"]);
        assert!(wheel.is_empty());
    }

    #[test]
    fn fires_exactly_at_deadline_not_a_tick_before() {
        let mut wheel = TimerWheel::new(0);
        for deadline in [1, 63, 64, 65, 4096, 262_144, 3_600_000] {
            wheel.insert(deadline, deadline);
            assert!(
                polled(&mut wheel, deadline - 1).is_empty(),
                "{deadline} early"
            );
            assert_eq!(polled(&mut wheel, deadline), [deadline]);
        }
    }

    #[test]
    fn poll_fires_in_deadline_order() {
        let mut wheel = TimerWheel::new(0);
        for deadline in [70_000, 5, 4_100, 64, 300_000, 1] {
            wheel.insert(deadline, deadline);
        }
        assert_eq!(
            polled(&mut wheel, 1_000_000),
            [1, 5, 64, 4_100, 70_000, 300_000]
        );
    }

    #[test]
    fn poll_behind_the_last_poll_does_nothing() {
        let mut wheel = TimerWheel::new(1_000);
        wheel.insert(1_010, 'a');
        wheel.insert(900, 'b');
        assert!(polled(&mut wheel, 10).is_empty());
        assert_eq!(wheel.len(), 2);
        assert_eq!(polled(&mut wheel, 1_000), ['b']);
        assert_eq!(polled(&mut wheel, 1_010), ['a']);
    }

    #[test]
    fn cancel_returns_the_value_once_and_stale_ids_do_nothing() {
        let mut wheel = TimerWheel::new(0);
        let id = wheel.insert(100, 1);
        assert_eq!(wheel.cancel(id), Some(1));
        assert_eq!(wheel.cancel(id), None);
        assert_eq!(wheel.next_deadline(), None);
        // The slab slot is reused; only the generation keeps the old id away from it.
        let reused = wheel.insert(200, 2);
        assert_eq!(reused.index, id.index);
        assert_eq!(wheel.cancel(id), None);
        assert_eq!(wheel.len(), 1);
        assert_eq!(polled(&mut wheel, 200), [2]);
        assert_eq!(wheel.cancel(reused), None, "fired ids are stale too");
    }

    #[test]
    fn cancel_from_pending_and_from_a_shared_slot() {
        let mut wheel = TimerWheel::new(1_000);
        let past = wheel.insert(10, 'p');
        let a = wheel.insert(2_000, 'a');
        let b = wheel.insert(2_000, 'b');
        let c = wheel.insert(2_000, 'c');
        assert_eq!(wheel.cancel(past), Some('p'));
        assert_eq!(wheel.cancel(b), Some('b'));
        assert_eq!(wheel.cancel(a), Some('a'));
        assert_eq!(polled(&mut wheel, 1_999), []);
        assert_eq!(polled(&mut wheel, 2_000), ['c']);
        assert_eq!(wheel.cancel(c), None);
    }

    #[test]
    fn slab_slots_are_reused() {
        let mut wheel = TimerWheel::new(0);
        for i in 0..10_000u64 {
            let id = wheel.insert(i + 30_000, i);
            wheel.cancel(id);
        }
        assert_eq!(wheel.entries.len(), 1);
    }

    #[test]
    fn deadlines_beyond_one_turn_of_the_top_level_fire_on_time() {
        let mut wheel = TimerWheel::new(7);
        let far = [MAX_SPAN + 3, 3 * MAX_SPAN - 1, 5 * MAX_SPAN + 12_345];
        for deadline in far {
            wheel.insert(deadline, deadline);
        }
        let mut now = 7;
        for deadline in far {
            // Walk the clock along next_deadline: each stop is a cascade point or the deadline.
            let mut stops = 0;
            loop {
                let next = wheel.next_deadline().unwrap(); // entries remain until the loop ends
                assert!(next <= deadline);
                now = next.max(now);
                let fired = polled(&mut wheel, now);
                if !fired.is_empty() {
                    assert_eq!((fired, now), (vec![deadline], deadline));
                    break;
                }
                stops += 1;
                assert!(stops < 64, "no progress towards {deadline}");
            }
        }
    }

    #[test]
    fn deadline_next_to_a_top_level_boundary() {
        // Elapsed and deadline differ in bit 36, so the entry is capped to the top level, where
        // its slot lies behind the current one and has to be read as the next turn.
        let start = MAX_SPAN - 1;
        let mut wheel = TimerWheel::new(start);
        wheel.insert(MAX_SPAN, ());
        assert_eq!(wheel.next_deadline(), Some(MAX_SPAN));
        assert_eq!(polled(&mut wheel, MAX_SPAN).len(), 1);
    }

    /// Regression: the search for the next top-level slot used to start at the current slot, so
    /// an entry there (which belongs to the next turn) hid an occupied slot later in this turn,
    /// and next_deadline answered a whole turn (about 795 days) late.
    #[test]
    fn top_level_current_slot_does_not_hide_a_later_slot_this_turn() {
        let mut wheel = TimerWheel::new(7);
        // Bits 30..36 of MAX_SPAN + 3 select slot 0, the current one, so it waits a turn.
        wheel.insert(MAX_SPAN + 3, "next turn");
        // Slot 63 of this turn.
        wheel.insert(3 * MAX_SPAN - 1, "this turn");
        assert_eq!(wheel.next_deadline(), Some(63 << 30));
    }

    #[test]
    fn deadline_at_the_end_of_time_waits_without_overflow() {
        let mut wheel = TimerWheel::new(0);
        let id = wheel.insert(u64::MAX, ());
        assert!(polled(&mut wheel, 10 * 3_600_000).is_empty());
        assert!(wheel.next_deadline().is_some_and(|at| at > 10 * 3_600_000));
        assert_eq!(wheel.cancel(id), Some(()));
    }

    /// A naive model: every armed timer in a `Vec`, expired by a linear scan.
    struct Model {
        armed: Vec<(u64, TimerId, u64)>,
    }

    impl Model {
        fn expire(&mut self, now: u64) -> Vec<u64> {
            let mut fired: Vec<u64> = self
                .armed
                .iter()
                .filter(|&&(d, _, _)| d <= now)
                .map(|&(_, _, v)| v)
                .collect();
            self.armed.retain(|&(d, _, _)| d > now);
            fired.sort_unstable();
            fired
        }
        fn earliest(&self) -> Option<u64> {
            self.armed.iter().map(|&(d, _, _)| d).min()
        }
    }

    const HOUR: u64 = 3_600_000;

    /// A deadline relative to `now` drawn to hit the interesting places: the past, `now`
    /// itself, level boundaries (relative and absolute), near futures and hours ahead.
    fn deadline(rng: &mut Rng, now: u64, far: u64) -> u64 {
        const EDGES: [u64; 8] = [1, 63, 64, 65, 4_095, 4_096, 262_144, 16_777_216];
        match rng.below(8) {
            0 => now.saturating_sub(rng.below(5_000)),
            1 => now,
            2 => now + EDGES[rng.below(EDGES.len() as u64) as usize],
            3 => {
                // The next multiple of a level's span: a slot boundary seen from `now`.
                let span = 1u64 << (LEVEL_BITS * (1 + rng.below(4) as u32));
                (now / span + 1) * span
            }
            4 => now + rng.below(64),
            5 => now + rng.below(10_000),
            _ => now + rng.below(far),
        }
    }

    /// Random inserts, cancels and clock moves, checked against the model after every step.
    fn run_model(seed: u64, steps: usize, far: u64, big_jump: u64) {
        let mut rng = Rng::new(seed);
        let mut clock = rng.below(1 << 40);
        let mut wheel = TimerWheel::new(clock);
        let mut model = Model { armed: Vec::new() };
        let mut ids: Vec<TimerId> = Vec::new();
        let mut next_value = 0u64;
        // The clock only moves forward, so the last poll was at the clock value it was given.
        let mut last_poll = clock;

        for step in 0..steps {
            let ctx = format!("seed {seed} step {step} clock {clock}");
            match rng.below(16) {
                0..=5 => {
                    let d = deadline(&mut rng, clock, far);
                    let id = wheel.insert(d, next_value);
                    model.armed.push((d, id, next_value));
                    ids.push(id);
                    next_value += 1;
                }
                6..=7 if !ids.is_empty() => {
                    let id = ids[rng.below(ids.len() as u64) as usize];
                    let want = model
                        .armed
                        .iter()
                        .position(|&(_, i, _)| i == id)
                        .map(|p| model.armed.swap_remove(p).2);
                    assert_eq!(wheel.cancel(id), want, "{ctx}: cancel");
                }
                8 => {
                    // The caller's clock moves on without a poll; inserts are relative to it.
                    clock += rng.below(200);
                }
                9 => {
                    // Polls behind the last poll: a no-op that must not disturb anything.
                    let past = last_poll.saturating_sub(1 + rng.below(100));
                    assert!(
                        polled(&mut wheel, past).is_empty(),
                        "{ctx}: past poll fired"
                    );
                }
                10..=11 if !model.armed.is_empty() => {
                    // Follow next_deadline as an event loop would, until the earliest fires.
                    let earliest = model.earliest().expect("guarded: the model is not empty");
                    let start = clock;
                    // One stop per level on the way down, plus one per turn of the top level for
                    // deadlines filed beyond it; more means the wheel wakes the loop for nothing.
                    let max_stops = LEVELS + 2 + (far / MAX_SPAN) as usize;
                    let mut stops = 0;
                    loop {
                        // The model holds `earliest`, and the sets fired so far matched it.
                        let next = wheel.next_deadline().expect("model has an entry");
                        assert!(next <= earliest, "{ctx}: next_deadline {next} > {earliest}");
                        clock = clock.max(next);
                        let fired = sorted(polled(&mut wheel, clock));
                        last_poll = clock;
                        assert_eq!(fired, model.expire(clock), "{ctx}: stepping");
                        if !fired.is_empty() {
                            // Exactly at its deadline, or at once if that had already passed.
                            assert_eq!(clock, earliest.max(start), "{ctx}: fired off time");
                            break;
                        }
                        stops += 1;
                        assert!(stops <= max_stops, "{ctx}: {stops} stops before {earliest}");
                    }
                }
                12..=14 => {
                    clock += rng.below(100);
                    let fired = sorted(polled(&mut wheel, clock));
                    last_poll = clock;
                    assert_eq!(fired, model.expire(clock), "{ctx}: small step");
                }
                _ => {
                    clock += rng.below(big_jump);
                    let fired = sorted(polled(&mut wheel, clock));
                    last_poll = clock;
                    assert_eq!(fired, model.expire(clock), "{ctx}: big jump");
                }
            }
            assert_eq!(wheel.len(), model.armed.len(), "{ctx}: len");
            match (wheel.next_deadline(), model.earliest()) {
                (None, None) => {}
                (Some(next), Some(earliest)) => {
                    assert!(next <= earliest, "{ctx}: next_deadline {next} > {earliest}")
                }
                (got, want) => panic!("{ctx}: next_deadline {got:?}, model {want:?}"),
            }
        }
        // Drain: everything left fires by the time the clock passes the last deadline.
        if let Some(last) = model.armed.iter().map(|&(d, _, _)| d).max() {
            clock = clock.max(last);
            assert_eq!(sorted(polled(&mut wheel, clock)), model.expire(clock));
        }
        assert!(wheel.is_empty());
        assert_eq!(wheel.next_deadline(), None);
    }

    fn sorted(mut v: Vec<u64>) -> Vec<u64> {
        v.sort_unstable();
        v
    }

    #[test]
    fn matches_a_naive_model_over_hours() {
        for seed in 1..=6 {
            run_model(seed, 5_000, 6 * HOUR, 2 * HOUR);
        }
    }

    #[test]
    fn matches_a_naive_model_with_short_timeouts() {
        for seed in 100..=103 {
            run_model(seed, 5_000, 5_000, 20_000);
        }
    }

    #[test]
    fn matches_a_naive_model_beyond_the_top_level() {
        for seed in 200..=202 {
            run_model(seed, 1_500, 4 * MAX_SPAN, 2 * MAX_SPAN);
        }
    }
}
