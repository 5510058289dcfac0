//! The timer wheel against a `BTreeMap<(deadline, sequence), T>`, the usual std stand-in, with
//! 10,000 timers armed, about what one core holds under load.
//!
//! - insert/cancel: the common case, a timeout armed and then cleared because the read came.
//! - insert/poll: a steady state where one timer expires for every one armed.
//! - next_deadline: asked on every turn of the event loop for the poll timeout.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use hearth::timer::TimerWheel;

const LIVE: u64 = 10_000;
/// The timeout armed in the insert/cancel case.
const TIMEOUT_MS: u64 = 30_000;

/// Deadlines spread over a minute, with a fixed seed so runs compare.
fn spread() -> impl Iterator<Item = u64> {
    let mut state = 0x2545_F491_4F6C_DD1D_u64;
    (0..LIVE).map(move |_| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        1 + state % 60_000
    })
}

fn insert_cancel(c: &mut Criterion) {
    let mut group = c.benchmark_group("timer/insert_cancel");
    group.bench_function("hearth", |b| {
        let mut wheel = TimerWheel::new(0);
        for d in spread() {
            wheel.insert(d, d);
        }
        let mut n = 0u64;
        b.iter(|| {
            n += 1;
            let id = wheel.insert(black_box(TIMEOUT_MS + n % 1_000), n);
            black_box(wheel.cancel(id))
        });
    });
    group.bench_function("btreemap", |b| {
        let mut map: BTreeMap<(u64, u64), u64> =
            spread().zip(0..).map(|(d, s)| ((d, s), d)).collect();
        let mut n = LIVE;
        b.iter(|| {
            n += 1;
            let key = (black_box(TIMEOUT_MS + n % 1_000), n);
            map.insert(key, n);
            black_box(map.remove(&key))
        });
    });
    group.finish();
}

fn insert_poll(c: &mut Criterion) {
    let mut group = c.benchmark_group("timer/insert_poll");
    group.bench_function("hearth", |b| {
        // One deadline per millisecond ahead, so each tick expires one and arms one.
        let mut wheel = TimerWheel::new(0);
        for d in 1..=LIVE {
            wheel.insert(d, d);
        }
        let mut now = 0u64;
        let mut out = Vec::with_capacity(4);
        b.iter(|| {
            now += 1;
            wheel.insert(now + LIVE, now);
            wheel.poll(now, &mut out);
            black_box(&out);
            out.clear();
        });
    });
    group.bench_function("btreemap", |b| {
        let mut map: BTreeMap<(u64, u64), u64> = (1..=LIVE).map(|d| ((d, d), d)).collect();
        let mut now = 0u64;
        let mut out = Vec::with_capacity(4);
        b.iter(|| {
            now += 1;
            // The sequence only breaks ties; the deadline is unique here, so reuse it.
            map.insert((now + LIVE, now + LIVE), now);
            while let Some(entry) = map.first_entry() {
                if entry.key().0 > now {
                    break;
                }
                out.push(entry.remove());
            }
            black_box(&out);
            out.clear();
        });
    });
    group.finish();
}

fn next_deadline(c: &mut Criterion) {
    let mut group = c.benchmark_group("timer/next_deadline");
    group.bench_function("hearth", |b| {
        let mut wheel = TimerWheel::new(0);
        for d in spread() {
            wheel.insert(d, d);
        }
        b.iter(|| black_box(&wheel).next_deadline());
    });
    group.bench_function("btreemap", |b| {
        let map: BTreeMap<(u64, u64), u64> = spread().zip(0..).map(|(d, s)| ((d, s), d)).collect();
        b.iter(|| black_box(&map).first_key_value().map(|(k, _)| k.0));
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
    targets = insert_cancel, insert_poll, next_deadline
}
criterion_main!(benches);
