//! Fixed-size byte buffers from a per-core pool.
//!
//! A `Buf` is a window `start..end` over a boxed slice whose size never changes: bytes are read
//! from a socket into the spare tail and consumed from the front. Buffers belong to connections
//! only while they have bytes in flight; an idle keep-alive connection holds none, which is what
//! keeps idle client connections under a kilobyte each. Running out of buffers is reported to the
//! caller (`None`), who answers 503 or stops accepting; it is never a panic.

/// A fixed-capacity byte window.
#[derive(Debug)]
pub struct Buf {
    bytes: Box<[u8]>,
    start: usize,
    end: usize,
}

impl Buf {
    fn new(size: usize) -> Buf {
        Buf {
            bytes: vec![0; size].into_boxed_slice(),
            start: 0,
            end: 0,
        }
    }

    /// A buffer of no bytes, which allocates nothing: a placeholder for one given back.
    pub fn empty() -> Buf {
        Buf {
            bytes: Box::default(),
            start: 0,
            end: 0,
        }
    }

    /// The bytes held and not yet consumed.
    pub fn filled(&self) -> &[u8] {
        &self.bytes[self.start..self.end]
    }

    pub fn len(&self) -> usize {
        self.end - self.start
    }

    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    pub fn capacity(&self) -> usize {
        self.bytes.len()
    }

    /// Room at the tail, after moving held bytes to the front if that makes more.
    pub fn spare_mut(&mut self) -> &mut [u8] {
        if self.start > 0 && self.end == self.bytes.len() {
            self.compact();
        }
        &mut self.bytes[self.end..]
    }

    /// Room at the tail without moving anything.
    pub fn tail_room(&self) -> usize {
        self.bytes.len() - self.end
    }

    /// Room there would be after a compaction.
    pub fn free(&self) -> usize {
        self.bytes.len() - self.len()
    }

    /// Marks `n` bytes written into `spare_mut()` as held.
    pub fn fill(&mut self, n: usize) {
        debug_assert!(self.end + n <= self.bytes.len());
        self.end += n;
    }

    /// Drops `n` bytes from the front.
    pub fn consume(&mut self, n: usize) {
        debug_assert!(n <= self.len());
        self.start += n;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Appends as much of `data` as fits; returns how much did.
    pub fn push(&mut self, data: &[u8]) -> usize {
        if self.tail_room() < data.len() && self.start > 0 {
            self.compact();
        }
        let n = data.len().min(self.tail_room());
        self.bytes[self.end..self.end + n].copy_from_slice(&data[..n]);
        self.end += n;
        n
    }

    /// Moves the held bytes to the front. Invalidates positions taken before it.
    pub fn compact(&mut self) {
        self.bytes.copy_within(self.start..self.end, 0);
        self.end -= self.start;
        self.start = 0;
    }

    pub fn clear(&mut self) {
        self.start = 0;
        self.end = 0;
    }
}

/// A per-core free list of equally sized buffers.
#[derive(Debug)]
pub struct BufPool {
    free: Vec<Buf>,
    size: usize,
    out: usize,
    max_out: usize,
}

impl BufPool {
    /// `size`: bytes per buffer; `max_out`: buffers that may be checked out at once.
    pub fn new(size: usize, max_out: usize) -> BufPool {
        BufPool {
            free: Vec::new(),
            size,
            out: 0,
            max_out,
        }
    }

    pub fn buf_size(&self) -> usize {
        self.size
    }

    pub fn checkout(&mut self) -> Option<Buf> {
        if self.out >= self.max_out {
            return None;
        }
        self.out += 1;
        Some(self.free.pop().unwrap_or_else(|| Buf::new(self.size)))
    }

    pub fn give_back(&mut self, mut buf: Buf) {
        buf.clear();
        self.out -= 1;
        // Keep a bounded reserve so a burst does not pin its peak memory forever.
        if self.free.len() < 1024 {
            self.free.push(buf);
        }
    }

    pub fn checked_out(&self) -> usize {
        self.out
    }

    /// Returns `slot`'s buffer to the pool if it holds one and is empty.
    pub fn release_if_empty(&mut self, slot: &mut Option<Buf>) {
        if slot.as_ref().is_some_and(Buf::is_empty) {
            if let Some(b) = slot.take() {
                self.give_back(b);
            }
        }
    }

    /// Returns `slot`'s buffer to the pool whatever it holds.
    pub fn release(&mut self, slot: &mut Option<Buf>) {
        if let Some(b) = slot.take() {
            self.give_back(b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_consume_compact() {
        let mut pool = BufPool::new(8, 2);
        let mut b = pool.checkout().unwrap();
        assert_eq!(b.push(b"abcdef"), 6);
        b.consume(4);
        assert_eq!(b.filled(), b"ef");
        // Needs compaction to fit.
        assert_eq!(b.push(b"ghijkl"), 6);
        assert_eq!(b.filled(), b"efghijkl");
        assert_eq!(b.push(b"x"), 0);
        b.consume(8);
        assert!(b.is_empty());
        assert_eq!(b.spare_mut().len(), 8);
        pool.give_back(b);
        assert_eq!(pool.checked_out(), 0);
    }

    #[test]
    fn pool_limit_is_reported_not_panicked() {
        let mut pool = BufPool::new(4, 1);
        let a = pool.checkout();
        assert!(a.is_some());
        assert!(pool.checkout().is_none());
        pool.give_back(a.unwrap());
        assert!(pool.checkout().is_some());
    }
}
