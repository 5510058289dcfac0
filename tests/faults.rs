//! Faults under load (issue 3): the real hearth binary between several client threads and a
//! hashing upstream (`common::fault::HashUpstream`) that misbehaves on cue. Every answer is
//! checked end to end: the upstream echoes a hash of the request it received and of the body it
//! sends, and the client compares both with what it sent and what it expected, so one wrong or
//! misrouted byte anywhere fails the test.
//!
//! Each test states, next to its faults, what hearth owes the clients. Two rules hold in all of
//! them: no client ever receives a wrong byte, and no client is left hanging (every read is
//! bounded by `CLIENT_READ_TIMEOUT`, well above every timeout hearth is given here). Load is
//! bounded by a request count per thread and by wall time; the whole file runs in well under a
//! minute on two cores.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::fault::*;
use common::*;

/// hearth's upstream read timeout in these tests: the 504 deadline under test.
const READ_TIMEOUT: Duration = Duration::from_secs(1);
/// Idle connections hearth keeps per node per core.
const POOL_SIZE: usize = 4;
const WORKERS: usize = 2;

fn start_hearth(upstream: SocketAddr) -> Hearth {
    conf(&[upstream])
        .workers(WORKERS)
        .client("idle_timeout = \"5s\"")
        .upstream("timeout = { connect = \"1s\", send = \"5s\", read = \"1s\" }")
        .upstream(&format!(
            "keepalive_pool = {{ size = {POOL_SIZE}, idle_timeout = \"30s\" }}"
        ))
        .start()
}

/// Fails with the whole tally unless `cond`.
fn check(cond: bool, what: &str, tally: &Tally) {
    assert!(cond, "{what}\n{tally}");
}

/// The rules every test keeps: no wrong byte, no hang, nothing the upstream could not parse.
fn check_common(tally: &Tally, mock_errors: &[String]) {
    check(
        tally.wrong_bytes() == 0,
        "a client received a wrong or misrouted byte",
        tally,
    );
    check(
        tally.count(None, None, |l| l == "stalled") == 0,
        "hearth left a client without an answer or a close",
        tally,
    );
    assert!(
        mock_errors.is_empty(),
        "the upstream could not parse what hearth sent: {mock_errors:?}\n{tally}"
    );
}

fn check_only(tally: &Tally, kind: Kind, phase: Option<usize>, allowed: &[&str]) {
    let bad = tally.unexpected(kind, phase, allowed);
    check(
        bad.is_empty(),
        &format!("{kind}: outcomes other than {allowed:?}: {bad:?}"),
        tally,
    );
}

// F1. The upstream resets in the middle of a body, or before answering at all.
//     hearth owes: a reset after some of the answer went out cuts that client's connection (the
//     bytes before the cut are right; hearth cannot take them back); a reset before any byte of
//     the answer is a 502 (a POST is never replayed; a GET may be replayed once and meets the
//     same reset again). The reset connection is never pooled, so every other request, on this
//     client connection or any other, gets its whole, right answer.
#[test]
fn upstream_reset_mid_body_cuts_only_that_answer() {
    let mock = HashUpstream::start();
    let h = start_hearth(mock.addr());
    let mut spec = LoadSpec::new(
        h.addr(),
        4,
        &[
            (Kind::Get, 5),
            (Kind::Post, 2),
            (Kind::ResetMid, 2),
            (Kind::ResetFirst, 1),
        ],
    );
    spec.duration = Duration::from_secs(4);
    spec.max_per_thread = 400;
    spec.seed = 11;
    let tally = Load::start(&spec).join();
    say(&format!("F1 reset mid-body:\n{tally}"));
    check_common(&tally, &mock.errors());
    check_only(&tally, Kind::Get, None, &["ok"]);
    check_only(&tally, Kind::Post, None, &["ok"]);
    check_only(
        &tally,
        Kind::ResetMid,
        None,
        &["cut-mid-body", "answered-502"],
    );
    check_only(&tally, Kind::ResetFirst, None, &["answered-502"]);
    check(
        tally.count(Some(Kind::ResetMid), None, |l| l == "cut-mid-body") > 0,
        "no reset ever landed mid-body: the fault was not exercised",
        &tally,
    );
}

// F2. The upstream hangs: before the head (`hang`), or after half the body (`hangmid`), for
//     longer than `timeout.read`.
//     hearth owes: a 504 about `timeout.read` after the upstream went quiet when nothing was sent
//     yet; a cut connection after the same time when the answer had started; the hung upstream
//     connection closed, not pooled; the other clients served normally all along.
#[test]
fn upstream_hang_is_a_504_after_the_read_timeout() {
    let mock = HashUpstream::start();
    let h = start_hearth(mock.addr());
    let mut normal = LoadSpec::new(h.addr(), 3, &[(Kind::Get, 3), (Kind::Post, 1)]);
    normal.duration = Duration::from_secs(4);
    normal.max_per_thread = 400;
    normal.seed = 21;
    let mut hanging = LoadSpec::new(h.addr(), 2, &[(Kind::Hang, 1), (Kind::HangMid, 1)]);
    hanging.duration = Duration::from_secs(4);
    hanging.max_per_thread = 3;
    hanging.hang_ms = 2_500;
    hanging.seed = 22;
    let normal = Load::start(&normal);
    let hanging = Load::start(&hanging);
    let mut tally = hanging.join();
    tally.merge(normal.join());
    say(&format!("F2 hangs:\n{tally}"));
    check_common(&tally, &mock.errors());
    check_only(&tally, Kind::Get, None, &["ok"]);
    check_only(&tally, Kind::Post, None, &["ok"]);
    check_only(&tally, Kind::Hang, None, &["answered-504"]);
    check_only(&tally, Kind::HangMid, None, &["cut-mid-body"]);
    check(
        tally.count(Some(Kind::Hang), None, |_| true) > 0
            && tally.count(Some(Kind::HangMid), None, |_| true) > 0,
        "no hang was exercised",
        &tally,
    );
    // The timeout under test: not before `timeout.read` (less a tick of rounding in hearth's
    // clock), and not long after it (the upstream itself would answer at 2.5 s).
    for (kind, label) in [
        (Kind::Hang, "answered-504"),
        (Kind::HangMid, "cut-mid-body"),
    ] {
        let (lo, hi) = tally.latency[&(kind, label.to_string())];
        check(
            lo >= READ_TIMEOUT - Duration::from_millis(50) && hi < Duration::from_millis(2_400),
            &format!("{kind}: {label} after {lo:?}..{hi:?}, want about {READ_TIMEOUT:?}"),
            &tally,
        );
    }
}

// F3. The upstream closes idle pooled connections at random moments (from outside, at random
//     intervals), and closes 10% of connections right after a reply without having said
//     `Connection: close`.
//     hearth owes: not one 5xx or cut for a GET. An idle connection that closes is noticed (it
//     turns readable) and dropped; one that closes as hearth reuses it loses the request before
//     any answer byte, and hearth replays it once on a fresh connection, which the closer never
//     touches. A keyed POST whose body hearth still holds is replayed the same way. A plain
//     POST lost that way may get a 502, never a wrong answer.
#[test]
fn idle_connections_closed_at_random_never_cost_a_get() {
    let mock = Arc::new(HashUpstream::start());
    mock.set_close_after_reply(10);
    let h = start_hearth(mock.addr());
    let stop = Arc::new(AtomicBool::new(false));
    let closer = {
        let (mock, stop) = (Arc::clone(&mock), Arc::clone(&stop));
        thread::spawn(move || {
            let mut rng = Rng::new(31);
            let deadline = Instant::now() + Duration::from_secs(20);
            while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
                thread::sleep(Duration::from_micros(rng.below(8_000) as u64));
                mock.close_idle(1 + rng.below(2));
            }
        })
    };
    let mut spec = LoadSpec::new(
        h.addr(),
        6,
        &[(Kind::Get, 6), (Kind::PostKeyed, 2), (Kind::Post, 2)],
    );
    spec.duration = Duration::from_secs(5);
    spec.max_per_thread = 600;
    // Keyed POST bodies stay within one hearth buffer so they are still held whole for a
    // replay; a larger body is streamed and cannot be sent twice.
    spec.max_len = 4_000;
    spec.seed = 31;
    let tally = Load::start(&spec).join();
    stop.store(true, Ordering::SeqCst);
    let _ = closer.join();
    let stats = mock.stats();
    say(&format!("F3 idle closes: {stats:?}\n{tally}"));
    check_common(&tally, &mock.errors());
    check_only(&tally, Kind::Get, None, &["ok"]);
    check_only(&tally, Kind::PostKeyed, None, &["ok"]);
    check_only(&tally, Kind::Post, None, &["ok", "answered-502"]);
    check(
        stats.closed_idle + stats.closed_after_reply >= 50,
        &format!("too few idle connections closed to mean anything: {stats:?}"),
        &tally,
    );
}

// F4. The upstream is killed while hearth's pool is full, stays down a moment, and a new one
//     starts on the same address.
//     hearth owes: before the kill, all answers right; while it is down, a 502 (connect refused)
//     or, for answers under way at the kill, a cut, never a hang; after the restart, every
//     request answered right, GET and POST alike: the dead pooled connections were noticed when
//     they closed and none of them is handed a request.
#[test]
fn upstream_killed_and_restarted_with_a_full_pool() {
    let mock = HashUpstream::start();
    let addr = mock.addr();
    let h = start_hearth(addr);
    let mut spec = LoadSpec::new(h.addr(), 8, &[(Kind::Get, 4), (Kind::Post, 1)]);
    spec.duration = Duration::from_secs(20);
    spec.max_per_thread = 5_000;
    spec.seed = 41;
    let load = Load::start(&spec);

    // Phase 0: eight clients at once fill both cores' pools (four idle connections each).
    assert!(
        load.wait_more(300, Duration::from_secs(10)),
        "load did not get going"
    );
    let open_before = mock.open_now();
    load.set_phase(1);
    let (before, errors_before) = mock.kill();
    assert!(
        load.wait_more(50, Duration::from_secs(5)),
        "no request finished while the upstream was down"
    );
    thread::sleep(Duration::from_millis(200));

    // Phase 2: a new upstream on the same port.
    let mock = HashUpstream::start_on(addr, Duration::from_secs(5));
    load.set_phase(2);
    let more = load.wait_more(500, Duration::from_secs(10));
    let tally = load.finish();
    let after = mock.stats();
    say(&format!(
        "F4 kill and restart: {open_before} upstream connections open at the kill; \
         before {before:?}; after {after:?}\n{tally}"
    ));
    assert!(more, "too few requests after the restart\n{tally}");
    let mut errors = errors_before;
    errors.extend(mock.errors());
    check_common(&tally, &errors);
    check(
        open_before >= POOL_SIZE,
        &format!("the pool was not full at the kill: {open_before} connections"),
        &tally,
    );
    for kind in [Kind::Get, Kind::Post] {
        check_only(&tally, kind, Some(0), &["ok"]);
        check_only(&tally, kind, Some(2), &["ok"]);
        for phase in [1, ACROSS_PHASES] {
            check_only(
                &tally,
                kind,
                Some(phase),
                &["ok", "answered-502", "cut-mid-body", "cut-before-head"],
            );
        }
    }
    check(
        tally.count(None, Some(1), |l| l == "answered-502") > 0,
        "no 502 while the upstream was down: the kill was not exercised",
        &tally,
    );
}

// F5. Clients read part of a 1 MiB answer and close (half of them with a reset).
//     hearth owes: the aborted exchange's upstream connection is closed, not pooled half-read
//     (a reuse would hand the rest of that body to the next request, which the hashes catch);
//     the other clients see nothing of it; nothing leaks: the upstream connections and hearth's
//     descriptors come back down to what the pool keeps.
#[test]
fn clients_aborting_mid_answer_harm_nobody_else() {
    let mock = HashUpstream::start();
    let h = start_hearth(mock.addr());
    let fds_before = started_fds(&h);
    let mut aborting = LoadSpec::new(h.addr(), 3, &[(Kind::ClientAbort, 1)]);
    aborting.duration = Duration::from_secs(4);
    aborting.max_per_thread = 150;
    aborting.seed = 51;
    let mut normal = LoadSpec::new(h.addr(), 3, &[(Kind::Get, 3), (Kind::Post, 1)]);
    normal.duration = Duration::from_secs(4);
    normal.max_per_thread = 400;
    normal.seed = 52;
    let aborting = Load::start(&aborting);
    let normal = Load::start(&normal);
    let mut tally = aborting.join();
    tally.merge(normal.join());
    say(&format!("F5 client aborts:\n{tally}"));
    check_common(&tally, &mock.errors());
    check_only(&tally, Kind::ClientAbort, None, &["aborted-by-client"]);
    check_only(&tally, Kind::Get, None, &["ok"]);
    check_only(&tally, Kind::Post, None, &["ok"]);
    check(
        tally.count(Some(Kind::ClientAbort), None, |_| true) >= 10,
        "too few aborts to mean anything",
        &tally,
    );
    let kept = WORKERS * POOL_SIZE;
    let settled = wait_until(Duration::from_secs(5), || mock.open_now() <= kept);
    assert!(
        settled,
        "{} upstream connections still open after the load, the pools keep at most {kept}",
        mock.open_now()
    );
    // Every client connection is closed now; the pooled upstream connections are all hearth
    // may still hold, besides each core's splice pipe (two descriptors, made on first use and
    // kept; an exchange cut with bytes inside closes it and the next use makes a new one).
    let pipes = 2 * WORKERS;
    let fds_ok = wait_until(Duration::from_secs(5), || {
        open_fds(h.pid()).is_some_and(|n| n <= fds_before + kept + pipes)
    });
    assert!(
        fds_ok,
        "hearth holds {:?} descriptors, {fds_before} before the load plus at most {kept} pooled \
         and {pipes} for the splice pipes:\n{}",
        open_fds(h.pid()),
        fd_listing(h.pid())
    );
}

/// Four requests of every framing, tagged with `tag` so their answers cannot be confused.
fn pipeline(tag: &str) -> Vec<Probe> {
    vec![
        Probe::new("GET", "ok", &format!("{tag}a"), 100),
        Probe::new("POST", "ok", &format!("{tag}b"), 300)
            .chunked_answer()
            .with_body(payload(50, 7), BodyFraming::Length),
        Probe::new("POST", "ok", &format!("{tag}c"), 0)
            .with_body(payload(40, 8), BodyFraming::Chunked(7)),
        Probe::new("GET", "ok", &format!("{tag}d"), 20).chunked_answer(),
    ]
}

// F6. A client pipelines four requests (GET, POST with Content-Length, POST chunked, GET) and
//     splits them into two writes at every byte boundary in turn; once more one byte per write.
//     Meanwhile other clients keep hearth busy.
//     hearth owes: the four right answers, in order, on the same connection, whatever the split.
#[test]
fn pipelined_requests_split_at_every_byte_boundary() {
    let mock = HashUpstream::start();
    let h = start_hearth(mock.addr());
    let mut background = LoadSpec::new(h.addr(), 2, &[(Kind::Get, 3), (Kind::Post, 1)]);
    background.duration = Duration::from_secs(30);
    background.seed = 61;
    let background = Load::start(&background);

    let len = pipeline("x").iter().map(|p| p.bytes().len()).sum::<usize>();
    let splitters: usize = 3;
    let addr = h.addr();
    let workers: Vec<_> = (0..splitters)
        .map(|w| {
            thread::spawn(move || {
                let mut failures = Vec::new();
                let deadline = Instant::now() + Duration::from_secs(30);
                for at in (1..len).filter(|at| at % splitters == w) {
                    if Instant::now() >= deadline {
                        failures.push(format!("ran out of time before split {at}"));
                        break;
                    }
                    let probes = pipeline(&format!("split{at}"));
                    let bytes: Vec<u8> = probes.iter().flat_map(|p| p.bytes()).collect();
                    let outcomes = match dial(addr) {
                        Ok(mut wire) => {
                            pipelined_round(
                                &mut wire,
                                &probes,
                                &bytes,
                                at,
                                Duration::from_millis(1),
                            )
                            .0
                        }
                        Err(e) => vec![Outcome::Corrupt(format!("connect: {e}"))],
                    };
                    if outcomes.len() != probes.len() || outcomes.iter().any(|o| *o != Outcome::Ok)
                    {
                        failures.push(format!("split at byte {at} of {len}: {outcomes:?}"));
                    }
                }
                failures
            })
        })
        .collect();

    // One byte per write, with a pause, so hearth sees every boundary on one connection.
    let probes = pipeline("bytewise");
    let bytes: Vec<u8> = probes.iter().flat_map(|p| p.bytes()).collect();
    let mut wire = dial(addr).expect("connect for the bytewise pipeline");
    for b in &bytes {
        wire.write_all(std::slice::from_ref(b))
            .expect("bytewise write");
        thread::sleep(Duration::from_micros(300));
    }
    let bytewise: Vec<Outcome> = probes
        .iter()
        .map(|p| read_checked(&mut wire, p, None).outcome)
        .collect();

    let mut failures: Vec<String> = workers
        .into_iter()
        .flat_map(|w| w.join().expect("splitter thread panicked"))
        .collect();
    if bytewise.iter().any(|o| *o != Outcome::Ok) {
        failures.push(format!("one byte per write: {bytewise:?}"));
    }
    let tally = background.finish();
    say(&format!(
        "F6 pipelined splits: {} split points of {len} bytes, {} failures; background:\n{tally}",
        len - 1,
        failures.len()
    ));
    assert!(
        failures.is_empty(),
        "pipelined requests answered wrongly ({} cases), first ones: {:#?}",
        failures.len(),
        &failures[..failures.len().min(10)]
    );
    check_common(&tally, &mock.errors());
    check_only(&tally, Kind::Get, None, &["ok"]);
    check_only(&tally, Kind::Post, None, &["ok"]);
}

// F7. A pipeline whose first request fails before any byte of its answer (the upstream resets:
//     a POST, so no replay), followed by ordinary requests, split at every byte boundary.
//     hearth owes: a 502 for the first, kept alive since its request was read whole, and then
//     the right answers to the rest, in order: the failure must not swallow or shift the
//     pipelined bytes behind it.
#[test]
fn pipelined_requests_behind_a_failed_one_are_answered() {
    let mock = HashUpstream::start();
    let h = start_hearth(mock.addr());
    let probes = |tag: &str| {
        vec![
            Probe::new("POST", "resetfirst", &format!("{tag}a"), 10)
                .with_body(payload(30, 9), BodyFraming::Length),
            Probe::new("GET", "ok", &format!("{tag}b"), 200),
            Probe::new("POST", "ok", &format!("{tag}c"), 50)
                .with_body(payload(20, 10), BodyFraming::Chunked(6)),
        ]
    };
    let len: usize = probes("x").iter().map(|p| p.bytes().len()).sum();
    let mut failures = Vec::new();
    for at in 1..len {
        let probes = probes(&format!("f7s{at}"));
        let bytes: Vec<u8> = probes.iter().flat_map(|p| p.bytes()).collect();
        let mut wire = dial(h.addr()).expect("connect");
        let (outcomes, _) =
            pipelined_round(&mut wire, &probes, &bytes, at, Duration::from_micros(500));
        let want = [Outcome::Answered(502), Outcome::Ok, Outcome::Ok];
        if outcomes != want {
            failures.push(format!("split at byte {at} of {len}: {outcomes:?}"));
        }
    }
    assert!(
        failures.is_empty(),
        "pipelined requests behind a 502 answered wrongly ({} of {} splits), first ones: {:#?}",
        failures.len(),
        len - 1,
        &failures[..failures.len().min(10)]
    );
    assert!(mock.errors().is_empty(), "{:?}", mock.errors());
}
