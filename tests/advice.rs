//! Issue 20 part 4: advice per node, from hearth's own counters, with the setting to change and
//! the figure that shows it. Each rule appears and clears on a virtual clock in
//! `upstream::advice`; these tests make advice appear end to end: on `/metrics`, in
//! `/status.json` and as one log line.

mod common;

use std::net::SocketAddr;
use std::thread;
use std::time::Duration;

use common::*;

const SHORT: Duration = Duration::from_secs(3);

fn advice_series(node: SocketAddr, kind: &str) -> String {
    format!("hearth_upstream_advice{{upstream=\"backend\",node=\"{node}\",kind=\"{kind}\"}}")
}

/// Waits until `/metrics` shows advice `kind` for `node` (each scrape shows the advisor fresh
/// counters, at most once a second).
fn wait_advice(h: &Hearth, node: SocketAddr, kind: &str) {
    let series = advice_series(node, kind);
    assert!(
        wait_until(Duration::from_secs(5), || metric(&h.metrics(), &series)
            == 1.0),
        "no {kind} advice on /metrics:\n{}",
        h.metrics()
    );
}

/// `n` GETs at once, each on its own client connection; their statuses.
fn at_once(addr: SocketAddr, n: usize, tag: &str) -> Vec<u16> {
    let threads: Vec<_> = (0..n)
        .map(|i| {
            let path = format!("/{tag}/{i}");
            thread::spawn(move || Client::connect(addr).get(&path).status)
        })
        .collect();
    threads
        .into_iter()
        .map(|t| t.join().expect("client thread"))
        .collect()
}

// A pool too small for the load: a purge closes connections the load used, and the next wave
// opens them again in its requests' path.
#[test]
fn a_pool_too_small_is_advised_with_the_size_to_set() {
    let mock = MockUpstream::start(|req, _| {
        Reply::ok(req.target.as_bytes()).after(Duration::from_millis(300))
    });
    let h = conf(&[mock.addr()])
        .admin()
        .upstream("keepalive_pool = { size = 2, purge_interval = \"2s\" }")
        .start();
    assert_eq!(at_once(h.addr(), 4, "first"), [200; 4]);
    // The purge after the wave closes the two beyond size; the next wave opens them again.
    assert!(
        wait_until(Duration::from_secs(5), || mock
            .conns()
            .iter()
            .filter(|c| c.end == Some(ConnEnd::PeerClosed))
            .count()
            >= 2),
        "no purge closed the connections beyond size"
    );
    assert_eq!(at_once(h.addr(), 4, "second"), [200; 4]);
    wait_advice(&h, mock.addr(), "pool_too_small");
    assert!(
        h.wait_log(
            &[
                "advice pool_too_small",
                "raise keepalive_pool.size to at least 4"
            ],
            SHORT
        ),
        "no advice line naming the size"
    );
    let status = h.admin_get("/status.json");
    assert!(
        status.contains("\"kind\":\"pool_too_small\""),
        "/status.json lists no advice: {status}"
    );
    // The other rules stay quiet for this node.
    let text = h.metrics();
    for kind in [
        "cap_stalls",
        "stale_reuse",
        "connect_storm",
        "tls_resumption",
    ] {
        assert_eq!(
            metric(&text, &advice_series(mock.addr(), kind)),
            0.0,
            "{kind}"
        );
    }
}

// A cap that makes requests wait more than a second.
#[test]
fn a_cap_that_stalls_is_advised_naming_the_cap() {
    let mock = MockUpstream::start(|req, _| {
        Reply::ok(req.target.as_bytes()).after(Duration::from_millis(1_200))
    });
    let h = conf(&[mock.addr()])
        .admin()
        .upstream("max_connections = 1")
        .upstream("queue = { size = 8, timeout = \"5s\" }")
        .start();
    assert_eq!(at_once(h.addr(), 2, "capped"), [200; 2]);
    wait_advice(&h, mock.addr(), "cap_stalls");
    assert!(
        h.wait_log(
            &[
                "advice cap_stalls",
                "max_connections = 1 made 1 requests wait more than 1.0 s"
            ],
            SHORT
        ),
        "no advice line naming the cap"
    );
}

// Requests that meet a pooled connection the upstream closed as they were sent.
#[test]
fn stale_reuse_is_advised() {
    // The second request reaches its pooled connection only for the upstream to close it
    // without an answer: a GET, it is replayed on a fresh connection.
    let mock = MockUpstream::start(|req, i| {
        if i == 1 {
            Reply::close()
        } else {
            Reply::ok(req.target.as_bytes())
        }
    });
    let h = conf(&[mock.addr()]).admin().start();
    let mut c = h.client();
    for i in 0..3 {
        assert_eq!(c.get(&format!("/{i}")).status, 200);
    }
    wait_advice(&h, mock.addr(), "stale_reuse");
    assert!(h.wait_log(&["advice stale_reuse", "replayed"], SHORT));
}
