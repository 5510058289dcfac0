//! The recency list behind one upstream node's idle connections on one core.
//!
//! A checkout wants the most recently used connection (its socket is the least likely to have
//! been closed by the upstream); eviction and idle sweeps want the least recently used. Both
//! ends, plus removal of an arbitrary entry (an idle socket the upstream closed), must be O(1)
//! without `unsafe`, so the list is a doubly linked list whose links are indices into one `Vec`.
//!
//! Invariants:
//! - Slots `HEAD` and `TAIL` are sentinels that never hold a value, so linking and unlinking
//!   never branch on "is this the first or last entry".
//! - A slot is either linked between the sentinels and holds `Some(value)`, or sits on the free
//!   list (threaded through `next`) and holds `None`. Freed slots are reused before the `Vec`
//!   grows, so a long-running core's list stays as large as its peak, not its history.
//! - Every time a slot is freed its generation goes up, and a `Handle` carries the generation it
//!   was issued with. A handle whose entry is gone therefore never reaches the slot's next
//!   occupant. The generation is a `u64` because a hot slot is reused on every checkout/return
//!   cycle; a `u32` could wrap within hours at proxy request rates.

use std::fmt;
use std::iter::FusedIterator;

const HEAD: usize = 0;
const TAIL: usize = 1;
/// Marks the end of the free list.
const NIL: usize = usize::MAX;

/// Names one entry of an [`Lru`] for as long as that entry stays in the list.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Handle {
    index: usize,
    generation: u64,
}

struct Node<T> {
    prev: usize,
    /// The following entry while linked; the next free slot while on the free list.
    next: usize,
    generation: u64,
    value: Option<T>,
}

/// A most-recently-used-first list with O(1) push, pop at both ends, touch and removal by handle.
pub struct Lru<T> {
    nodes: Vec<Node<T>>,
    free: usize,
    len: usize,
}

impl<T> Lru<T> {
    pub fn new() -> Self {
        Self::with_capacity(0)
    }

    /// A list that holds `n` entries before its storage has to grow.
    pub fn with_capacity(n: usize) -> Self {
        let mut nodes = Vec::with_capacity(n.saturating_add(2));
        nodes.push(Node {
            prev: NIL,
            next: TAIL,
            generation: 0,
            value: None,
        });
        nodes.push(Node {
            prev: HEAD,
            next: NIL,
            generation: 0,
            value: None,
        });
        Lru {
            nodes,
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

    /// Adds `value` as the most recently used entry.
    pub fn push_front(&mut self, value: T) -> Handle {
        let index = if self.free == NIL {
            self.nodes.push(Node {
                prev: NIL,
                next: NIL,
                generation: 0,
                value: Some(value),
            });
            self.nodes.len() - 1
        } else {
            let index = self.free;
            let node = &mut self.nodes[index];
            self.free = node.next;
            node.value = Some(value);
            index
        };
        self.link_front(index);
        self.len += 1;
        Handle {
            index,
            generation: self.nodes[index].generation,
        }
    }

    /// Removes and returns the most recently used entry.
    pub fn pop_front(&mut self) -> Option<T> {
        let index = self.nodes[HEAD].next;
        if index == TAIL {
            return None;
        }
        self.remove_at(index)
    }

    /// Removes and returns the least recently used entry.
    pub fn pop_back(&mut self) -> Option<T> {
        let index = self.nodes[TAIL].prev;
        if index == HEAD {
            return None;
        }
        self.remove_at(index)
    }

    /// The most recently used entry. When empty this reads `TAIL`, whose value is always `None`.
    pub fn front(&self) -> Option<&T> {
        self.nodes[self.nodes[HEAD].next].value.as_ref()
    }

    /// Removes and returns the most recently used entry that `pred` accepts, looking at no more
    /// than `limit` entries from the front. O(1) when the front entry matches, which is the
    /// common case; the limit bounds the walk when most entries belong to someone else.
    pub fn pop_front_where(&mut self, limit: usize, mut pred: impl FnMut(&T) -> bool) -> Option<T> {
        let mut index = self.nodes[HEAD].next;
        for _ in 0..limit {
            if index == TAIL {
                return None;
            }
            if self.nodes[index].value.as_ref().is_some_and(&mut pred) {
                return self.remove_at(index);
            }
            index = self.nodes[index].next;
        }
        None
    }

    /// The least recently used entry. When empty this reads `HEAD`, whose value is always `None`.
    pub fn back(&self) -> Option<&T> {
        self.nodes[self.nodes[TAIL].prev].value.as_ref()
    }

    pub fn front_handle(&self) -> Option<Handle> {
        self.handle_at(self.nodes[HEAD].next)
    }

    /// The handle of the least recently used entry, so a sweep can inspect it before removing it.
    pub fn back_handle(&self) -> Option<Handle> {
        self.handle_at(self.nodes[TAIL].prev)
    }

    pub fn get(&self, h: Handle) -> Option<&T> {
        if !self.is_live(h) {
            return None;
        }
        self.nodes[h.index].value.as_ref()
    }

    pub fn get_mut(&mut self, h: Handle) -> Option<&mut T> {
        if !self.is_live(h) {
            return None;
        }
        self.nodes[h.index].value.as_mut()
    }

    /// Takes the entry out of the list; `None` if the handle is stale.
    pub fn remove(&mut self, h: Handle) -> Option<T> {
        if !self.is_live(h) {
            return None;
        }
        self.remove_at(h.index)
    }

    /// Makes the entry the most recently used; `false` if the handle is stale.
    pub fn touch(&mut self, h: Handle) -> bool {
        if !self.is_live(h) {
            return false;
        }
        self.unlink(h.index);
        self.link_front(h.index);
        true
    }

    pub fn contains(&self, h: Handle) -> bool {
        self.is_live(h)
    }

    /// Walks from the most recently used entry to the least recently used one.
    pub fn iter(&self) -> Iter<'_, T> {
        Iter {
            nodes: &self.nodes,
            at: self.nodes[HEAD].next,
            remaining: self.len,
        }
    }

    /// Sentinels and free slots hold `None`, and freeing bumps the generation, so a matching
    /// generation on a slot holding a value means the handle still names the entry it was made for.
    fn is_live(&self, h: Handle) -> bool {
        self.nodes
            .get(h.index)
            .is_some_and(|node| node.generation == h.generation && node.value.is_some())
    }

    fn handle_at(&self, index: usize) -> Option<Handle> {
        if index == HEAD || index == TAIL {
            return None;
        }
        Some(Handle {
            index,
            generation: self.nodes[index].generation,
        })
    }

    fn link_front(&mut self, index: usize) {
        let first = self.nodes[HEAD].next;
        let node = &mut self.nodes[index];
        node.prev = HEAD;
        node.next = first;
        self.nodes[first].prev = index;
        self.nodes[HEAD].next = index;
    }

    fn unlink(&mut self, index: usize) {
        let (prev, next) = (self.nodes[index].prev, self.nodes[index].next);
        self.nodes[prev].next = next;
        self.nodes[next].prev = prev;
    }

    /// Unlinks a live, non-sentinel slot and puts it on the free list.
    fn remove_at(&mut self, index: usize) -> Option<T> {
        self.unlink(index);
        let node = &mut self.nodes[index];
        let value = node.value.take();
        node.generation = node.generation.wrapping_add(1);
        node.prev = NIL;
        node.next = self.free;
        self.free = index;
        self.len -= 1;
        value
    }
}

impl<T> Default for Lru<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: fmt::Debug> fmt::Debug for Lru<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// Iterator over an [`Lru`] from most to least recently used.
pub struct Iter<'a, T> {
    nodes: &'a [Node<T>],
    at: usize,
    remaining: usize,
}

impl<'a, T> Iterator for Iter<'a, T> {
    type Item = &'a T;

    fn next(&mut self) -> Option<&'a T> {
        // Reaching `TAIL` yields `None` because sentinels never hold a value.
        let node = &self.nodes[self.at];
        let value = node.value.as_ref()?;
        self.at = node.next;
        self.remaining -= 1;
        Some(value)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining, Some(self.remaining))
    }
}

impl<T> ExactSizeIterator for Iter<'_, T> {}
impl<T> FusedIterator for Iter<'_, T> {}

impl<'a, T> IntoIterator for &'a Lru<T> {
    type Item = &'a T;
    type IntoIter = Iter<'a, T>;

    fn into_iter(self) -> Iter<'a, T> {
        self.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    use crate::testutil::Rng;

    #[test]
    fn empty_list_has_nothing_at_either_end() {
        let mut lru: Lru<u32> = Lru::default();
        assert!(lru.is_empty());
        assert_eq!(lru.len(), 0);
        assert_eq!(lru.front(), None);
        assert_eq!(lru.back(), None);
        assert_eq!(lru.front_handle(), None);
        assert_eq!(lru.back_handle(), None);
        assert_eq!(lru.pop_front(), None);
        assert_eq!(lru.pop_back(), None);
        assert_eq!(lru.iter().next(), None);
    }

    #[test]
    fn pop_front_where_takes_the_most_recent_match_within_the_limit() {
        // Front to back: 5 4 3 2 1.
        type Case = (
            &'static str,
            usize,
            fn(&u32) -> bool,
            Option<u32>,
            &'static [u32],
        );
        let cases: &[Case] = &[
            ("front matches", 8, |_| true, Some(5), &[4, 3, 2, 1]),
            ("first even", 8, |v| v % 2 == 0, Some(4), &[5, 3, 2, 1]),
            ("deep match", 8, |v| *v == 1, Some(1), &[5, 4, 3, 2]),
            ("beyond the limit", 2, |v| *v == 3, None, &[5, 4, 3, 2, 1]),
            ("at the limit", 3, |v| *v == 3, Some(3), &[5, 4, 2, 1]),
            ("no match", 8, |_| false, None, &[5, 4, 3, 2, 1]),
            ("zero limit", 0, |_| true, None, &[5, 4, 3, 2, 1]),
        ];
        for (name, limit, pred, want, left) in cases {
            let mut lru = Lru::new();
            let handles: Vec<Handle> = (1..=5u32).map(|v| lru.push_front(v)).collect();
            assert_eq!(lru.pop_front_where(*limit, pred), *want, "{name}");
            assert_eq!(lru.iter().copied().collect::<Vec<_>>(), *left, "{name}");
            assert_eq!(lru.len(), left.len(), "{name}");
            if let Some(w) = want {
                // The taken entry's handle is stale; the others still work.
                assert!(!lru.contains(handles[*w as usize - 1]), "{name}");
            }
            assert_eq!(lru.pop_back(), Some(left[left.len() - 1]), "{name}");
        }
    }

    #[test]
    fn front_is_most_recent_and_back_least_recent() {
        let mut lru = Lru::new();
        let a = lru.push_front("a");
        lru.push_front("b");
        lru.push_front("c");
        assert_eq!(lru.iter().copied().collect::<Vec<_>>(), ["c", "b", "a"]);
        assert_eq!(lru.front(), Some(&"c"));
        assert_eq!(lru.back(), Some(&"a"));
        assert_eq!(lru.back_handle(), Some(a));
        assert!(lru.touch(a));
        assert_eq!(lru.iter().copied().collect::<Vec<_>>(), ["a", "c", "b"]);
        assert_eq!(lru.pop_back(), Some("b"));
        assert_eq!(lru.pop_front(), Some("a"));
        assert_eq!(lru.len(), 1);
    }

    #[test]
    fn stale_handle_never_reaches_the_slots_next_occupant() {
        let mut lru = Lru::new();
        let old = lru.push_front(1);
        assert_eq!(lru.remove(old), Some(1));
        let new = lru.push_front(2);
        // The freed slot is reused, so only the generation tells the two handles apart.
        assert_eq!(old.index, new.index);
        assert_ne!(old, new);
        assert_eq!(lru.get(old), None);
        assert_eq!(lru.get_mut(old), None);
        assert!(!lru.touch(old));
        assert!(!lru.contains(old));
        assert_eq!(lru.remove(old), None);
        assert_eq!(lru.get(new), Some(&2));
        assert_eq!(lru.len(), 1);
    }

    #[test]
    fn handle_from_another_list_beyond_its_storage_is_stale() {
        let mut big = Lru::new();
        let far = (0..10).map(|i| big.push_front(i)).last().unwrap(); // ten pushes: Some
        let mut small = Lru::new();
        small.push_front(0);
        assert_eq!(small.get(far), None);
        assert_eq!(small.remove(far), None);
    }

    #[test]
    fn freed_slots_are_reused_before_storage_grows() {
        let mut lru = Lru::with_capacity(4);
        for round in 0..1000 {
            for i in 0..4 {
                lru.push_front(round * 4 + i);
            }
            while lru.pop_back().is_some() {}
        }
        assert_eq!(lru.nodes.len(), 2 + 4);
    }

    #[test]
    fn get_mut_changes_the_value_in_place() {
        let mut lru = Lru::new();
        let h = lru.push_front(String::from("idle"));
        lru.push_front(String::from("other"));
        lru.get_mut(h).unwrap().push_str("-checked"); // h was just pushed and not removed
        assert_eq!(lru.back().map(String::as_str), Some("idle-checked"));
    }

    /// Runs random operations against a `VecDeque` whose front is the most recently used entry,
    /// checking every answer and the whole order after each step.
    fn run_model(seed: u64, steps: usize) {
        let mut rng = Rng::new(seed);
        let mut lru: Lru<u64> = Lru::new();
        let mut model: VecDeque<u64> = VecDeque::new();
        // Every handle ever issued, with the value it was issued for; most become stale.
        let mut handles: Vec<(Handle, u64)> = Vec::new();
        let mut next_value = 0u64;
        let mut peak = 0usize;

        for step in 0..steps {
            // Only push while small so the list reaches a useful length; after that pushes and
            // removals roughly balance.
            let op = rng.below(if model.len() < 8 { 3 } else { 9 });
            match op {
                0..=2 => {
                    let h = lru.push_front(next_value);
                    model.push_front(next_value);
                    handles.push((h, next_value));
                    next_value += 1;
                }
                3 => assert_eq!(
                    lru.pop_front(),
                    model.pop_front(),
                    "seed {seed} step {step}"
                ),
                4 => assert_eq!(lru.pop_back(), model.pop_back(), "seed {seed} step {step}"),
                _ => {
                    // Half the picks come from recent handles, which are mostly live; the rest
                    // from all of history, which are mostly stale.
                    let span = if rng.below(2) == 0 {
                        handles.len().min(2 * model.len() + 1)
                    } else {
                        handles.len()
                    };
                    let pick = handles.len() - 1 - rng.below(span as u64) as usize;
                    let (h, v) = handles[pick];
                    let pos = model.iter().position(|&m| m == v);
                    match op {
                        5 => {
                            let got = lru.remove(h);
                            let want = pos.and_then(|p| model.remove(p));
                            assert_eq!(got, want, "seed {seed} step {step} remove");
                        }
                        6 => {
                            let got = lru.touch(h);
                            if let Some(p) = pos {
                                model.remove(p);
                                model.push_front(v);
                            }
                            assert_eq!(got, pos.is_some(), "seed {seed} step {step} touch");
                        }
                        _ => {
                            let want = pos.map(|_| v);
                            assert_eq!(lru.get(h).copied(), want, "seed {seed} step {step} get");
                            assert_eq!(lru.contains(h), pos.is_some());
                        }
                    }
                }
            }

            assert_eq!(lru.len(), model.len());
            assert_eq!(lru.is_empty(), model.is_empty());
            assert_eq!(lru.front(), model.front());
            assert_eq!(lru.back(), model.back());
            assert_eq!(lru.back_handle().and_then(|h| lru.get(h)), model.back());
            assert_eq!(lru.front_handle().and_then(|h| lru.get(h)), model.front());
            assert_eq!(lru.iter().len(), model.len());
            assert!(
                lru.iter().eq(model.iter()),
                "seed {seed} step {step}: order differs"
            );
            peak = peak.max(model.len());
            assert!(lru.nodes.len() <= peak + 2, "storage grew past the peak");
        }
    }

    #[test]
    fn matches_a_vecdeque_model() {
        for seed in 1..=8 {
            run_model(seed, 4000);
        }
    }
}
