//! The idle list's hot operations against a `VecDeque` used the obvious way, on a list the size
//! of one busy node's idle pool (320 connections).
//!
//! - checkout/return: a request takes the most recent connection and gives it back.
//! - push/evict: a connection comes back to a full pool and the oldest one is closed.
//! - remove/replace: the upstream closes an idle connection somewhere in the middle, and a fresh
//!   one is pooled. This is where the baseline must search for the position, and why the pool
//!   keeps handles.

use std::collections::VecDeque;
use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use hearth::lru::{Handle, Lru};

const ENTRIES: u64 = 320;
/// Walks the middle-of-list removals around the list in an order that is not sequential.
const STRIDE: usize = 97;

fn checkout_return(c: &mut Criterion) {
    let mut group = c.benchmark_group("lru/checkout_return");
    group.bench_function("hearth", |b| {
        let mut lru = Lru::with_capacity(ENTRIES as usize);
        for i in 0..ENTRIES {
            lru.push_front(i);
        }
        b.iter(|| {
            if let Some(conn) = lru.pop_front() {
                black_box(lru.push_front(black_box(conn)));
            }
        });
    });
    group.bench_function("vecdeque", |b| {
        let mut deque: VecDeque<u64> = (0..ENTRIES).rev().collect();
        b.iter(|| {
            if let Some(conn) = deque.pop_front() {
                deque.push_front(black_box(conn));
            }
        });
    });
    group.finish();
}

fn push_evict(c: &mut Criterion) {
    let mut group = c.benchmark_group("lru/push_evict");
    group.bench_function("hearth", |b| {
        let mut lru = Lru::with_capacity(ENTRIES as usize + 1);
        for i in 0..ENTRIES {
            lru.push_front(i);
        }
        let mut next = ENTRIES;
        b.iter(|| {
            black_box(lru.push_front(next));
            next += 1;
            black_box(lru.pop_back())
        });
    });
    group.bench_function("vecdeque", |b| {
        let mut deque: VecDeque<u64> = (0..ENTRIES).rev().collect();
        let mut next = ENTRIES;
        b.iter(|| {
            deque.push_front(next);
            next += 1;
            black_box(deque.pop_back())
        });
    });
    group.finish();
}

fn remove_replace(c: &mut Criterion) {
    let mut group = c.benchmark_group("lru/remove_replace");
    group.bench_function("hearth", |b| {
        let mut lru = Lru::with_capacity(ENTRIES as usize);
        let mut handles: Vec<Handle> = (0..ENTRIES).map(|i| lru.push_front(i)).collect();
        let mut at = 0;
        b.iter(|| {
            at = (at + STRIDE) % handles.len();
            if let Some(conn) = lru.remove(handles[at]) {
                handles[at] = lru.push_front(black_box(conn));
            }
        });
    });
    group.bench_function("vecdeque", |b| {
        let mut deque: VecDeque<u64> = (0..ENTRIES).rev().collect();
        let mut at = 0u64;
        b.iter(|| {
            at = (at + STRIDE as u64) % ENTRIES;
            if let Some(pos) = deque.iter().position(|&conn| conn == at) {
                if let Some(conn) = deque.remove(pos) {
                    deque.push_front(black_box(conn));
                }
            }
        });
    });
    group.finish();
}

criterion_group! {
    name = benches;
    // Short runs: the machine is shared, and these operations take nanoseconds.
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20);
    targets = checkout_return, push_evict, remove_replace
}
criterion_main!(benches);
