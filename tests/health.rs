//! Active health checks against the real binary: a failing node is taken out on every core and
//! its pooled connections closed, traffic moves to the other node, the node comes back after
//! enough good probes; a node that stops accepting goes down by tcp failures; nodes without
//! checks are never probed, also after a reload takes checks away.
//!
//! Probes run every 100 ms here, so every wait below is for a handful of probes and is bounded
//! by a deadline many times longer; nothing asserts on how fast a probe is.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;

/// Long enough for dozens of 100 ms probes on a loaded machine.
const WITHIN: Duration = Duration::from_secs(10);

const CHECKS: &str = "checks.active = { http_path = \"/health\", interval = \"100ms\", \
     timeout = \"500ms\", healthy = { successes = 2 }, unhealthy = { failures = 2 } }";

/// A node answering `GET /health` with the status in the returned cell (counting the 200s it
/// gave), and anything else `200` with its name.
struct Node {
    mock: MockUpstream,
    status: Arc<AtomicU16>,
    oks: Arc<AtomicUsize>,
}

impl Node {
    fn start(name: &'static str) -> Node {
        let status = Arc::new(AtomicU16::new(200));
        let oks = Arc::new(AtomicUsize::new(0));
        let (s, o) = (status.clone(), oks.clone());
        let mock = MockUpstream::start(move |req, _| {
            if req.target == "/health" {
                let code = s.load(Ordering::SeqCst);
                if code == 200 {
                    o.fetch_add(1, Ordering::SeqCst);
                }
                Reply::status(code, "")
            } else {
                Reply::ok(name)
            }
        });
        Node { mock, status, oks }
    }

    fn addr(&self) -> SocketAddr {
        self.mock.addr()
    }

    fn probes(&self) -> usize {
        self.mock.requests_to("/health").len()
    }

    /// Requests that were not probes.
    fn traffic(&self) -> usize {
        self.mock.request_count() - self.probes()
    }
}

fn series(name: &str, upstream: &str, node: SocketAddr) -> String {
    format!("{name}{{upstream=\"{upstream}\",node=\"{node}\"}}")
}

fn healthy(h: &Hearth, upstream: &str, node: SocketAddr) -> f64 {
    metric(
        &h.metrics(),
        &series("hearth_upstream_node_healthy", upstream, node),
    )
}

fn probes(h: &Hearth, upstream: &str, node: SocketAddr, result: &str) -> f64 {
    metric(
        &h.metrics(),
        &format!(
            "hearth_upstream_health_probes_total{{upstream=\"{upstream}\",node=\"{node}\",result=\"{result}\"}}"
        ),
    )
}

/// Sends `n` requests over a few keep-alive connections; returns the answering node names.
fn spread(h: &Hearth, n: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut clients: Vec<Client> = (0..4).map(|_| h.client()).collect();
    for i in 0..n {
        let k = i % clients.len();
        let r = clients[k].get("/x");
        assert_eq!(r.status, 200, "{}", r.text());
        out.push(r.text());
    }
    out
}

#[test]
fn a_failing_node_is_taken_out_with_its_pooled_connections_and_comes_back() {
    let (a, b) = (Node::start("a"), Node::start("b"));
    let h = conf(&[a.addr(), b.addr()])
        .workers(2)
        .upstream(CHECKS)
        .admin()
        .start();
    // Pooled connections to both nodes, spread over the cores by the kernel.
    let names = spread(&h, 32);
    assert!(names.iter().any(|n| n == "a") && names.iter().any(|n| n == "b"));
    let pooled: Vec<usize> = a
        .mock
        .requests()
        .iter()
        .filter(|r| r.target == "/x")
        .map(|r| r.conn_id)
        .collect();
    assert!(!pooled.is_empty());
    assert!(
        wait_until(WITHIN, || a.probes() >= 2),
        "node a is never probed"
    );
    assert_eq!(healthy(&h, "backend", a.addr()), 1.0);

    a.status.store(500, Ordering::SeqCst);
    assert!(
        wait_until(WITHIN, || healthy(&h, "backend", a.addr()) == 0.0),
        "node a answering 500 was never marked down"
    );
    assert!(h.wait_log(
        &["is down", &a.addr().to_string(), "answered 500", "backend"],
        WITHIN
    ));
    // Every connection that carried traffic to a is closed by hearth, on every core.
    for id in &pooled {
        assert!(
            a.mock.wait_conn_end(*id, WITHIN),
            "pooled connection {id} to the down node stayed open"
        );
    }
    let text = h.metrics();
    assert!(
        metric(
            &text,
            &format!(
                "hearth_upstream_closes_total{{upstream=\"backend\",node=\"{}\",reason=\"health\"}}",
                a.addr()
            )
        ) >= 1.0,
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            &series("hearth_upstream_idle_connections", "backend", a.addr())
        ),
        0.0
    );
    assert!(probes(&h, "backend", a.addr(), "http_failure") >= 2.0);

    // Traffic goes to b only.
    let before = a.traffic();
    let names = spread(&h, 20);
    assert!(names.iter().all(|n| n == "b"), "{names:?}");
    assert_eq!(a.traffic(), before, "the down node got requests");

    // Recovery: back after `successes` (2) good probes.
    let oks_before = a.oks.load(Ordering::SeqCst);
    a.status.store(200, Ordering::SeqCst);
    assert!(
        wait_until(WITHIN, || healthy(&h, "backend", a.addr()) == 1.0),
        "node a never came back"
    );
    assert!(
        a.oks.load(Ordering::SeqCst) - oks_before >= 2,
        "back before two good probes"
    );
    assert!(h.wait_log(
        &["is up", &a.addr().to_string(), "2 probe(s)", "answered 200"],
        WITHIN
    ));
    let names = spread(&h, 20);
    assert!(names.iter().any(|n| n == "a"), "{names:?}");
}

#[test]
fn a_node_that_stops_accepting_goes_down_by_tcp_failures() {
    let (a, b) = (Node::start("a"), Node::start("b"));
    let a_addr = a.addr();
    let h = conf(&[a_addr, b.addr()]).upstream(CHECKS).admin().start();
    assert!(
        wait_until(WITHIN, || probes(&h, "backend", a_addr, "success") >= 1.0),
        "node a is never probed"
    );
    // Its listener closes: connects are refused from now on.
    drop(a);
    assert!(
        wait_until(WITHIN, || healthy(&h, "backend", a_addr) == 0.0),
        "a node refusing connections was never marked down"
    );
    assert!(probes(&h, "backend", a_addr, "tcp_failure") >= 2.0);
    assert!(h.wait_log(&["is down", &a_addr.to_string(), "tcp failure"], WITHIN));
    let names = spread(&h, 10);
    assert!(names.iter().all(|n| n == "b"), "{names:?}");
}

fn two_upstreams(checked: &[SocketAddr], plain: &[SocketAddr]) -> String {
    let nodes = |n: &[SocketAddr]| {
        n.iter()
            .map(|a| format!("\"{a}\" = 1"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        "workers = 1\n[[listen]]\naddr = \"127.0.0.1:0\"\n\
         [upstreams.checked]\nnodes = {{ {} }}\n{CHECKS}\n\
         [upstreams.plain]\nnodes = {{ {} }}\n\
         [[routes]]\nuris = [\"/*\"]\nupstream = \"checked\"\n\
         [[routes]]\nuris = [\"/plain/*\"]\nupstream = \"plain\"\n\
         [admin]\naddr = \"127.0.0.1:0\"\n",
        nodes(checked),
        nodes(plain)
    )
}

#[test]
fn only_nodes_with_checks_are_probed_also_after_a_reload() {
    let (a, b, c) = (Node::start("a"), Node::start("b"), Node::start("c"));
    let h = Hearth::start(&two_upstreams(&[a.addr()], &[b.addr()]));
    // The checker runs (a is probed) and never touches b, which has no checks.
    assert!(wait_until(WITHIN, || a.probes() >= 3), "a is never probed");
    assert_eq!(b.mock.connections(), 0, "b has no checks but was probed");
    assert_eq!(probes(&h, "plain", b.addr(), "success"), 0.0);
    assert_eq!(healthy(&h, "plain", b.addr()), 1.0);

    // a moves to the upstream without checks; c takes its place in the checked one.
    h.reload_with(&two_upstreams(&[c.addr()], &[a.addr(), b.addr()]));
    assert!(
        h.wait_log(&["health: checking 1 node(s)"], WITHIN)
            && wait_until(WITHIN, || h
                .logs()
                .iter()
                .filter(|l| l.contains("health: checking 1 node(s)"))
                .count()
                >= 2),
        "the checker never took the new configuration"
    );
    let a_then = a.probes();
    // While c is probed a few times, a (no longer checked) gets at most a probe that was
    // already in flight at the reload.
    assert!(wait_until(WITHIN, || c.probes() >= 4), "c is never probed");
    assert!(
        a.probes() <= a_then + 1,
        "a is still probed after the reload"
    );
    assert_eq!(b.mock.connections(), 0);
}

#[test]
fn a_config_without_checks_starts_no_probes() {
    let a = Node::start("a");
    let h = conf(&[a.addr()]).admin().start();
    assert_eq!(h.client().get("/x").text(), "a");
    let text = h.metrics();
    assert!(
        text.contains(&format!(
            "hearth_upstream_health_probes_total{{upstream=\"backend\",node=\"{}\",result=\"success\"}} 0",
            a.addr()
        )),
        "{text}"
    );
    assert!(!h.logs_text().contains("health: checking"));
    assert_eq!(a.probes(), 0);
}

// Probes run side by side: while a stalled node's probes wait out their timeouts, a healthy
// node keeps being probed at its own interval. Were probes taken one after another, the healthy
// node could get at most one probe per timeout of the stalled one, three before it goes down.
#[test]
fn a_stalled_node_does_not_hold_up_probes_of_others() {
    let a = Node::start("a");
    let stalled = MockUpstream::start(|req, _| {
        if req.target == "/health" {
            Reply::default().then_sleep(Duration::from_secs(3))
        } else {
            Reply::ok("s")
        }
    });
    let h = conf(&[a.addr(), stalled.addr()])
        .upstream(CHECKS)
        .admin()
        .start();
    assert!(
        wait_until(WITHIN, || healthy(&h, "backend", stalled.addr()) == 0.0),
        "a node that never answers its probes was never marked down"
    );
    assert!(probes(&h, "backend", stalled.addr(), "timeout") >= 2.0);
    assert!(h.wait_log(&["is down", "timed out after 500ms"], WITHIN));
    let a_probes = a.probes();
    assert!(
        a_probes >= 4,
        "only {a_probes} probes of the healthy node while the stalled one timed out twice"
    );
}
