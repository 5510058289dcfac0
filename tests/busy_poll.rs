//! `busy_poll = true`: a worker that never sleeps in `epoll_wait` must still do all a sleeping
//! one does: serve requests on pooled connections, fire its timers when they come due, and answer
//! the control messages `/metrics` sends it, and stop spinning when a reload turns the option
//! off. `hearth_busy_polls_total` shows the spinning, so the test fails if the option were read
//! but the worker still blocked.

mod common;

use std::time::{Duration, Instant};

use common::*;

fn busy_polls(h: &Hearth) -> (f64, f64) {
    let m = h.metrics();
    (
        metric(&m, "hearth_busy_polls_total{result=\"events\"}"),
        metric(&m, "hearth_busy_polls_total{result=\"empty\"}"),
    )
}

#[test]
fn a_busy_polling_worker_serves_fires_its_timers_and_answers_control_messages() {
    let mock = MockUpstream::echo_target();
    let base = conf(&[mock.addr()])
        .client("header_timeout = \"1s\"")
        .admin()
        .toml();
    let h = Hearth::start(&format!("busy_poll = true\n{base}"));

    let mut c = h.client();
    for i in 0..50 {
        let r = c.get(&format!("/r{i}"));
        assert_eq!((r.status, r.text()), (200, format!("/r{i}")), "request {i}");
    }
    assert_eq!(
        mock.conns().len(),
        1,
        "50 requests in a row used one upstream connection"
    );

    // The header clock is a timer like every other: an unfinished head gets its 408 although the
    // worker never blocks with a timeout.
    let mut slow = h.client();
    slow.set_timeout(Duration::from_secs(10));
    let start = Instant::now();
    slow.send(b"GET / HTTP/1.1\r\nHost: a\r\n");
    let r = slow.read_response();
    assert_eq!(r.status, 408, "unfinished head");
    assert!(
        start.elapsed() >= Duration::from_millis(900),
        "408 after {:?}, before the 1 s header timeout",
        start.elapsed()
    );

    // /metrics asks the core for its counters by control message; an answer means the spinning
    // worker saw the waker.
    let (events, empty) = busy_polls(&h);
    assert!(events >= 50.0, "polls that found events: {events}");
    assert!(empty > 0.0, "polls that found nothing: {empty}");
    // Idle, the worker goes on spinning: that is the cost the README states.
    assert!(
        wait_until(Duration::from_secs(5), || busy_polls(&h).1 > empty),
        "an idle busy-polling worker stopped polling"
    );

    // The option follows a reload: without it the worker blocks again and the counters stop.
    h.reload_with(&base);
    assert!(
        wait_until(Duration::from_secs(5), || {
            let before = busy_polls(&h);
            assert_eq!(h.client().get("/after-reload").status, 200);
            busy_polls(&h) == before
        }),
        "busy polling went on after a reload turned it off"
    );

    // Without the option the worker blocks, and the counters stay at zero.
    let quiet = Hearth::start(&base);
    let mut c = quiet.client();
    assert_eq!(c.get("/x").status, 200);
    assert_eq!(busy_polls(&quiet), (0.0, 0.0), "busy_poll off");
}
