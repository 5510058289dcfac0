//! Retries and passive health through the real binary: a dead node is skipped by a retry and
//! then left alone for `fail_timeout`; `retries = 0` answers 502; what was sent is resent only
//! under the replay rules; a replayed failure on a reused connection does not count against
//! the node.
//!
//! Nodes are told apart by what they answer or by the per-node series in `/metrics`, and the
//! dead node is a port nothing listens on (`dead_addr`).

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;

fn node_metric(text: &str, name: &str, node: SocketAddr) -> f64 {
    metric(
        text,
        &format!("hearth_upstream_{name}{{upstream=\"backend\",node=\"{node}\"}}"),
    )
}

/// `n` requests, each on its own connection (so a canned 502 that closes costs nothing), and
/// their statuses.
fn statuses(h: &Hearth, n: usize) -> Vec<u16> {
    (0..n)
        .map(|i| h.client().get(&format!("/r/{i}")).status)
        .collect()
}

// A connect failure moves the request to the next node: every request succeeds although half
// the picks land on a port nothing listens on.
#[test]
fn a_dead_node_is_skipped_by_a_retry() {
    let live = MockUpstream::echo_target();
    let dead = dead_addr();
    // max_fails 0: the dead node stays in the rotation, so every other pick needs the retry.
    let h = conf(&[dead, live.addr()])
        .admin()
        .upstream("max_fails = 0")
        .start();
    let mut c = h.client();
    for i in 0..20 {
        let path = format!("/r/{i}");
        let r = c.get(&path);
        assert_eq!((r.status, r.text()), (200, path));
    }
    let text = h.metrics();
    assert_eq!(node_metric(&text, "retries_total", live.addr()), 10.0);
    assert_eq!(node_metric(&text, "connect_failures_total", dead), 10.0);
    assert_eq!(
        node_metric(&text, "marked_down_total", dead),
        0.0,
        "max_fails = 0"
    );
    assert_eq!(live.request_count(), 20);
}

// `retries = 0`: the request that lands on the dead node gets 502.
#[test]
fn no_retries_means_502_from_a_dead_node() {
    let live = MockUpstream::echo_target();
    let dead = dead_addr();
    let h = conf(&[dead, live.addr()])
        .upstream("retries = 0")
        .upstream("max_fails = 0")
        .start();
    let got = statuses(&h, 6);
    assert_eq!(got.iter().filter(|&&s| s == 502).count(), 3, "{got:?}");
    assert_eq!(got.iter().filter(|&&s| s == 200).count(), 3, "{got:?}");
}

// Passive health: with max_fails 1 the dead node fails once, is then skipped without a connect
// attempt for fail_timeout, and is tried again once that has passed.
#[test]
fn a_failed_node_is_not_tried_again_within_fail_timeout() {
    let live = MockUpstream::echo_target();
    let dead = dead_addr();
    let h = conf(&[dead, live.addr()])
        .admin()
        .upstream("max_fails = 1")
        .upstream("fail_timeout = \"1s\"")
        .start();
    let mut c = h.client();
    for i in 0..30 {
        assert_eq!(c.get(&format!("/r/{i}")).status, 200);
    }
    let text = h.metrics();
    assert_eq!(
        node_metric(&text, "connect_failures_total", dead),
        1.0,
        "the dead node was tried again within fail_timeout:\n{text}"
    );
    assert_eq!(node_metric(&text, "failures_total", dead), 1.0);
    assert_eq!(node_metric(&text, "marked_down_total", dead), 1.0);
    assert_eq!(node_metric(&text, "failures_total", live.addr()), 0.0);
    // Once fail_timeout has run out the node gets its next chance: requests go on (the live node
    // answers each) until one of them tries it.
    let mut i = 0;
    assert!(
        wait_until(Duration::from_secs(5), || {
            i += 1;
            assert_eq!(c.get(&format!("/again/{i}")).status, 200);
            node_metric(&h.metrics(), "connect_failures_total", dead) >= 2.0
        }),
        "the dead node was not tried again after fail_timeout"
    );
    let text = h.metrics();
    assert_eq!(node_metric(&text, "connect_failures_total", dead), 2.0);
    assert_eq!(node_metric(&text, "marked_down_total", dead), 2.0);
}

// A reused connection that the node closes as the request arrives is replayed on a fresh one;
// that is the pool's race, not the node's failure, and passive health must not count it.
#[test]
fn a_replayed_failure_on_a_reused_connection_does_not_mark_the_node() {
    // The second request on every connection is met with a close and no answer.
    let mock = MockUpstream::start(|req, index| {
        if index == 0 {
            Reply::ok(req.target.as_bytes())
        } else {
            Reply::close()
        }
    });
    let other = MockUpstream::echo_target();
    let h = conf(&[mock.addr(), other.addr()])
        .weighted(&[(mock.addr(), 1000), (other.addr(), 1)])
        .admin()
        .upstream("max_fails = 1")
        .start();
    let mut c = h.client();
    for i in 0..6 {
        let path = format!("/r/{i}");
        let r = c.get(&path);
        assert_eq!((r.status, r.text()), (200, path));
    }
    let text = h.metrics();
    assert!(
        node_metric(&text, "replays_total", mock.addr()) >= 5.0,
        "{text}"
    );
    assert_eq!(node_metric(&text, "failures_total", mock.addr()), 0.0);
    assert_eq!(node_metric(&text, "marked_down_total", mock.addr()), 0.0);
    assert_eq!(other.request_count(), 0, "nothing moved to the other node");
}

// Once sent on a fresh connection, a request is resent to the next node only when the replay
// rules allow it: a GET is, a POST gets 502 and never reaches the second node.
#[test]
fn only_replay_safe_requests_move_on_after_being_sent() {
    let swallow = MockUpstream::start(|_, _| Reply::close());
    let live = MockUpstream::echo_target();
    let h = conf(&[swallow.addr(), live.addr()])
        .weighted(&[(swallow.addr(), 1000), (live.addr(), 1)])
        .upstream("max_fails = 0")
        .start();
    let post = request("POST", "/post", &[], b"body");
    let r = h.client().exchange(&post).expect("an answer to the POST");
    assert_eq!(r.status, 502);
    assert!(swallow.wait_requests(1, Duration::from_secs(5)));
    assert_eq!(live.request_count(), 0, "the POST was resent");
    let r = h.client().get("/get");
    assert_eq!((r.status, r.text()), (200, "/get".to_string()));
    assert_eq!(
        swallow.request_count(),
        2,
        "the GET went to the first node first"
    );
}

// `pass_host = "node"`: a retry carries the Host of the node it goes to, not of the first.
#[test]
fn a_retry_sends_the_host_of_its_own_node() {
    let live = MockUpstream::echo_target();
    let dead = dead_addr();
    let h = conf(&[dead, live.addr()])
        .upstream("pass_host = \"node\"")
        .upstream("max_fails = 0")
        .start();
    assert_eq!(h.client().get("/first").status, 200);
    let got = live.requests();
    assert_eq!(got.len(), 1);
    assert_eq!(
        got[0].header("host"),
        Some(live.addr().to_string().as_str())
    );
}

// `retry_timeout` caps the time for all tries: past it, no new try starts. Each of the first
// two nodes takes 300 ms to fail, so a 500 ms budget allows the second try but not the third.
#[test]
fn retries_stop_at_retry_timeout() {
    let slow_fail: Vec<MockUpstream> = (0..2)
        .map(|_| MockUpstream::start(|_, _| Reply::hang(Duration::from_millis(300))))
        .collect();
    let live = MockUpstream::echo_target();
    let nodes = [slow_fail[0].addr(), slow_fail[1].addr(), live.addr()];
    let h = conf(&nodes).upstream("max_fails = 0").start();
    assert_eq!(
        h.client().get("/a").status,
        200,
        "without a budget the retries reach it"
    );
    assert_eq!(live.request_count(), 1);
    let h = conf(&nodes)
        .upstream("max_fails = 0")
        .upstream("retry_timeout = \"500ms\"")
        .start();
    assert_eq!(h.client().get("/b").status, 502);
    assert_eq!(
        slow_fail[1].requests_to("/b").len(),
        1,
        "the second try ran"
    );
    assert_eq!(
        live.request_count(),
        1,
        "a third try started past retry_timeout"
    );
}
