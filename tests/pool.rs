//! The upstream keep-alive pool, observed from the upstream's side: the mock counts TCP
//! connections, when they open and close and which requests each carried, and these tests check
//! those counts against the pool rules (reuse, size, request and lifetime caps, idle expiry, the
//! upstream's own `Connection`/`Keep-Alive` wishes, stale-connection detection, safe replay, LRU
//! eviction, per-node caps and weighted balancing).

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::Duration;

use common::*;

const SHORT: Duration = Duration::from_secs(2);

/// Requests per upstream connection, by connection id.
fn requests_per_conn(mock: &MockUpstream) -> BTreeMap<usize, usize> {
    let mut m = BTreeMap::new();
    for r in mock.requests() {
        *m.entry(r.conn_id).or_insert(0) += 1;
    }
    m
}

/// `n` GETs at once, each on its own client connection; panics unless all get 200.
fn concurrent_gets(addr: SocketAddr, n: usize, tag: &str) {
    let threads: Vec<_> = (0..n)
        .map(|i| {
            let path = format!("/{tag}/{i}");
            thread::spawn(move || {
                let mut c = Client::connect(addr);
                let r = c.get(&path);
                (r.status, r.text(), path)
            })
        })
        .collect();
    for t in threads {
        let (status, body, path) = t.join().expect("client thread panicked");
        assert_eq!(status, 200, "concurrent GET {path}");
        assert_eq!(body, path, "body of concurrent GET {path}");
    }
}

// P1. Sequential requests reuse one upstream connection, across client connections too.
#[test]
fn sequential_requests_share_one_upstream_connection() {
    let mock = MockUpstream::echo_target();
    let h = conf(&[mock.addr()]).start();
    let mut c = h.client();
    for i in 0..100 {
        let path = format!("/seq/{i}");
        let r = c.get(&path);
        assert_eq!((r.status, r.text()), (200, path), "sequential request {i}");
    }
    assert_eq!(
        mock.connections(),
        1,
        "100 sequential requests on one client connection"
    );
    for i in 0..20 {
        let mut c = h.client();
        for j in 0..5 {
            let path = format!("/conn/{i}/{j}");
            assert_eq!(
                c.get(&path).text(),
                path,
                "client connection {i} request {j}"
            );
        }
    }
    assert_eq!(mock.connections(), 1, "20 client connections x 5 requests");
}

// P2. A pool of size 0 keeps nothing.
#[test]
fn pool_size_zero_opens_a_connection_per_request() {
    let mock = MockUpstream::echo_target();
    let h = conf(&[mock.addr()])
        .upstream("keepalive_pool = { size = 0 }")
        .start();
    let mut c = h.client();
    for i in 0..10 {
        assert_eq!(c.get(&format!("/{i}")).status, 200, "request {i}");
    }
    assert_eq!(mock.connections(), 10, "upstream connections with size = 0");
    assert!(
        requests_per_conn(&mock).values().all(|&n| n == 1),
        "a connection carried more than one request: {:?}",
        requests_per_conn(&mock)
    );
}

// P3. `requests` caps how many requests one upstream connection carries.
#[test]
fn requests_cap_retires_connections() {
    let mock = MockUpstream::echo_target();
    let h = conf(&[mock.addr()])
        .upstream("keepalive_pool = { requests = 10 }")
        .start();
    let mut c = h.client();
    for i in 0..50 {
        assert_eq!(c.get(&format!("/{i}")).status, 200, "request {i}");
    }
    assert_eq!(mock.connections(), 5, "50 requests with requests = 10");
    let per = requests_per_conn(&mock);
    assert!(
        per.values().all(|&n| n == 10),
        "requests per connection: {per:?}"
    );
}

// P4. Idle pooled connections are closed by hearth after `idle_timeout`.
#[test]
fn idle_pooled_connection_expires() {
    let mock = MockUpstream::echo_target();
    let h = conf(&[mock.addr()])
        .upstream("keepalive_pool = { idle_timeout = \"1s\" }")
        .start();
    let mut c = h.client();
    assert_eq!(c.get("/first").status, 200, "first request");
    assert!(
        mock.wait_conn_end(0, Duration::from_secs(3)),
        "idle upstream connection still open 3 s after its last request"
    );
    let info = mock.conn(0).expect("connection 0 was recorded");
    assert_eq!(
        info.end,
        Some(ConnEnd::PeerClosed),
        "how the idle connection ended"
    );
    // When exactly is the pool's rule, tested on a virtual clock (upstream::tests); here only
    // that it was not before the timeout, which no load on the machine can make flaky.
    let idle = info.closed_at.expect("ended") - info.last_reply_at.expect("replied");
    assert!(
        idle >= Duration::from_millis(900),
        "idle connection closed after {idle:?}, before its 1 s"
    );
    assert_eq!(
        c.get("/second").status,
        200,
        "request after the idle expiry"
    );
    assert_eq!(mock.connections(), 2, "connections after idle expiry");
}

// P5. `max_lifetime` retires a connection even while it is busy, without failing requests.
#[test]
fn max_lifetime_retires_busy_connections_without_failures() {
    let mock = MockUpstream::echo_target();
    let h = conf(&[mock.addr()])
        .upstream("keepalive_pool = { max_lifetime = \"1s\" }")
        .start();
    let mut c = h.client();
    for i in 0..10 {
        let path = format!("/{i}");
        let r = c.get(&path);
        assert_eq!(
            (r.status, r.text()),
            (200, path),
            "request {i} under max_lifetime"
        );
        thread::sleep(Duration::from_millis(200));
    }
    assert!(
        mock.connections() >= 2,
        "2 s of traffic stayed on one connection with max_lifetime = 1s"
    );
    // Which request goes on which connection by age is the pool's rule, tested on a virtual
    // clock (upstream::tests); a window on the upstream's clock here would only measure the
    // machine's load.
}

/// The upstream asks for the connection to end but leaves the socket open, so a hearth that
/// ignored the request and reused it would be caught sending a second request on it.
fn assert_not_reused_after(first_reply: &'static [u8], what: &str) {
    let mock = MockUpstream::start(move |req, _| match req.target.as_str() {
        "/first" => Reply::raw(first_reply),
        other => Reply::ok(other.as_bytes()),
    });
    let h = conf(&[mock.addr()]).start();
    let mut c = h.client();
    let r = c.get("/first");
    assert_eq!(r.status, 200, "{what}: first response");
    assert!(
        !r.has_token("connection", "close"),
        "{what}: the upstream's close leaked to the client:\n{}",
        r.head_text()
    );
    assert_eq!(
        c.get("/next").text(),
        "/next",
        "{what}: next request on the same client conn"
    );
    let first = mock.requests_to("/first")[0].conn_id;
    let next = mock.requests_to("/next")[0].conn_id;
    assert_ne!(first, next, "{what}: upstream connection reused");
    assert!(
        mock.wait_conn_end(first, SHORT),
        "{what}: hearth kept the upstream connection open"
    );
    assert_eq!(
        mock.conn(first).and_then(|c| c.end),
        Some(ConnEnd::PeerClosed),
        "{what}: how the connection ended"
    );
}

// P6.
#[test]
fn upstream_connection_close_is_honoured() {
    assert_not_reused_after(
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok",
        "Connection: close",
    );
}

// P7. HTTP/1.0 is not persistent without keep-alive (RFC 9112 section 9.3).
#[test]
fn http10_upstream_without_keep_alive_is_not_reused() {
    assert_not_reused_after(
        b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
        "HTTP/1.0 response",
    );
}

// P8. The upstream's Keep-Alive parameters tighten the pool's own limits.
#[test]
fn keep_alive_timeout_from_upstream_shortens_idle_expiry() {
    let mock =
        MockUpstream::start(|req, _| Reply::keep_alive(req.target.as_bytes(), Some(2), None));
    let h = conf(&[mock.addr()])
        .upstream("keepalive_pool = { idle_timeout = \"60s\" }")
        .start();
    let mut c = h.client();
    assert_eq!(c.get("/a").text(), "/a", "first request");
    assert_eq!(c.get("/b").text(), "/b", "second request");
    let a = mock.requests_to("/a")[0].conn_id;
    assert_eq!(
        mock.requests_to("/b")[0].conn_id,
        a,
        "connection not reused at all"
    );
    // The idle deadline is min(60 s, 2 s - 1 s of margin) = 1 s: hearth closes the connection
    // itself, a second before the upstream would.
    assert!(
        mock.wait_conn_end(a, Duration::from_secs(5)),
        "the connection outlived the upstream's Keep-Alive timeout"
    );
    assert_eq!(
        mock.conn(a).and_then(|i| i.end),
        Some(ConnEnd::PeerClosed),
        "how the connection ended"
    );
    assert_eq!(c.get("/c").text(), "/c", "request after the idle close");
    assert_ne!(
        mock.requests_to("/c")[0].conn_id,
        a,
        "connection reused past the upstream's Keep-Alive timeout minus margin"
    );
}

#[test]
fn keep_alive_max_from_upstream_caps_requests_per_connection() {
    // Pins the reading of `max=N` as "N requests on this connection", sent on every response.
    let mock =
        MockUpstream::start(|req, _| Reply::keep_alive(req.target.as_bytes(), Some(60), Some(3)));
    let h = conf(&[mock.addr()]).start();
    let mut c = h.client();
    for i in 0..9 {
        assert_eq!(c.get(&format!("/{i}")).status, 200, "request {i}");
    }
    assert_eq!(mock.connections(), 3, "9 requests with Keep-Alive: max=3");
    let per = requests_per_conn(&mock);
    assert!(
        per.values().all(|&n| n == 3),
        "requests per connection: {per:?}"
    );
}

// P9. A pooled connection the upstream closed is noticed before it is used.
#[test]
fn upstream_close_of_idle_connection_is_noticed() {
    let mock = MockUpstream::start(|req, _| {
        Reply::ok(req.target.as_bytes())
            .then_sleep(Duration::from_millis(100))
            .then_close()
    });
    let h = conf(&[mock.addr()]).start();
    let mut c = h.client();
    for i in 0..10 {
        // POST, so a hearth that wrote into the dead connection cannot hide it by replaying.
        let path = format!("/{i}");
        c.send(&request("POST", &path, &[], b"data"));
        let r = c.read_response();
        assert_eq!(
            (r.status, r.text()),
            (200, path),
            "round {i} after the upstream closed"
        );
        // The upstream closes 100 ms after answering; the next round starts once it has.
        let conn = mock.requests_to(&format!("/{i}"))[0].conn_id;
        assert!(
            mock.wait_conn_end(conn, Duration::from_secs(5)),
            "round {i}: the upstream did not close"
        );
    }
    assert_eq!(mock.request_count(), 10, "requests seen by the upstream");
    assert_eq!(mock.connections(), 10, "upstream connections");
}

// P10. A request lost to a close race on a reused connection is replayed only when safe
//      (RFC 9110 section 9.2.2).
fn racing_mock() -> MockUpstream {
    MockUpstream::start(|req, i| {
        if i == 1 {
            Reply::close()
        } else {
            Reply::ok(format!("{} {}", req.target, req.text()))
        }
    })
}

#[test]
fn get_lost_on_reused_connection_is_replayed() {
    let mock = racing_mock();
    let h = conf(&[mock.addr()]).start();
    let mut c = h.client();
    assert_eq!(c.get("/warm").status, 200, "warming request");
    let r = c.get("/x");
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, "/x "),
        "GET after the race"
    );
    let seen = mock.requests_to("/x");
    assert_eq!(
        seen.len(),
        2,
        "upstream should see the GET twice (lost, replayed)"
    );
    assert_ne!(
        seen[0].conn_id, seen[1].conn_id,
        "replay went on the dead connection"
    );
}

#[test]
fn post_lost_on_reused_connection_is_not_replayed() {
    let mock = racing_mock();
    let h = conf(&[mock.addr()]).start();
    let mut c = h.client();
    assert_eq!(c.get("/warm").status, 200, "warming request");
    c.send(&request("POST", "/p", &[], b"body"));
    assert_eq!(
        c.read_response().status,
        502,
        "non-idempotent POST lost in the race"
    );
    assert_eq!(
        mock.requests_to("/p").len(),
        1,
        "POST without Idempotency-Key was replayed"
    );
}

#[test]
fn post_with_idempotency_key_is_replayed() {
    let mock = racing_mock();
    let h = conf(&[mock.addr()]).start();
    let mut c = h.client();
    assert_eq!(c.get("/warm").status, 200, "warming request");
    c.send(&request(
        "POST",
        "/p",
        &[("Idempotency-Key", "k1")],
        b"body",
    ));
    let r = c.read_response();
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, "/p body"),
        "keyed POST after the race"
    );
    let seen = mock.requests_to("/p");
    assert_eq!(seen.len(), 2, "upstream should see the keyed POST twice");
    for s in &seen {
        assert_eq!(s.body, b"body", "replayed body");
        assert_eq!(s.header("idempotency-key"), Some("k1"), "key on the replay");
    }
}

// P10b. The upstream closed a pooled connection, and the event that says so came in the same
//       batch as a new request, behind it. hearth records the readiness of the whole batch
//       before acting on any of it, so the request does not take the closed connection. Before,
//       it did: a GET survived by replay, but a POST, which may not be replayed, got a 502.
#[test]
fn post_does_not_take_a_pooled_connection_closed_in_the_same_batch() {
    let mock = MockUpstream::start(|req, _| {
        if req.target == "/warm" {
            // Long enough for the test to stop hearth and send the POST first.
            Reply::ok("warm")
                .then_sleep(Duration::from_millis(500))
                .then_close()
        } else {
            Reply::ok(format!("{} {}", req.target, req.text()))
        }
    });
    let h = conf(&[mock.addr()]).start();
    let mut c = h.client();
    assert_eq!(c.get("/warm").status, 200, "warming request");
    let warm_conn = mock.requests_to("/warm")[0].conn_id;
    {
        let _frozen = h.freeze();
        // While hearth is stopped the POST reaches its client connection first, then the
        // upstream's FIN reaches the pooled one: one pass of the loop gets both, in that order.
        c.send(&request("POST", "/p", &[], b"body"));
        assert!(
            mock.wait_conn_end(warm_conn, Duration::from_secs(5)),
            "the upstream did not close the pooled connection"
        );
        thread::sleep(Duration::from_millis(50));
    }
    let r = c.read_response();
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, "/p body"),
        "POST after the upstream closed the pooled connection"
    );
    let seen = mock.requests_to("/p");
    assert_eq!(seen.len(), 1, "the upstream should see the POST once");
    assert_ne!(
        seen[0].conn_id, warm_conn,
        "the POST went on the closed connection"
    );
}

// P11. `size` bounds what the pool keeps across purge intervals: after a wave of 4 with
//      `size = 2`, the next purge closes the 2 beyond size (evicted: the load had used them), and
//      the one after closes the rest (purged: the load is gone). The log names the advice later;
//      here the reasons are counted.
#[test]
fn pool_size_limits_what_is_kept_across_purges() {
    let mock = MockUpstream::start(|req, _| {
        Reply::ok(req.target.as_bytes()).after(Duration::from_millis(300))
    });
    let h = conf(&[mock.addr()])
        .admin()
        .upstream("keepalive_pool = { size = 2, purge_interval = \"200ms\" }")
        .start();
    concurrent_gets(h.addr(), 4, "wave1");
    assert_eq!(mock.connections(), 4, "4 concurrent slow requests");
    let closed = || {
        mock.conns()
            .iter()
            .filter(|c| c.end == Some(ConnEnd::PeerClosed))
            .count()
    };
    assert!(
        wait_until(SHORT, || closed() == 4),
        "hearth kept {} idle connections after the load had gone",
        4 - closed()
    );
    let text = h.metrics();
    let reason = |r: &str| {
        metric(
            &text,
            &format!(
                "hearth_upstream_closes_total{{upstream=\"backend\",node=\"{}\",reason=\"{r}\"}}",
                mock.addr()
            ),
        )
    };
    assert_eq!(
        (reason("evicted"), reason("purged")),
        (2.0, 2.0),
        "two beyond size at the first purge after the wave, then the rest"
    );
}

// P11b. With a pool of size 320 (APISIX's default, and hearth's before 1024) and more clients
//       than that in lockstep waves, every wave leaves all its connections idle at once. Before,
//       the surplus over 320 was closed at that instant and the next wave, a moment later,
//       connected again; now the purge keeps what the load used, and no wave after the first
//       opens a connection.
#[test]
fn waves_larger_than_size_reuse_every_connection() {
    const CLIENTS: usize = 340;
    const WAVES: usize = 4;
    let mock = MockUpstream::start(|req, _| {
        Reply::ok(req.target.as_bytes()).after(Duration::from_millis(100))
    });
    let h = conf(&[mock.addr()])
        .upstream("keepalive_pool = { size = 320 }")
        .start();
    let addr = h.addr();
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(CLIENTS));
    let threads: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let barrier = barrier.clone();
            thread::spawn(move || {
                let mut c = Client::connect(addr);
                for w in 0..WAVES {
                    barrier.wait();
                    let path = format!("/w{w}/{i}");
                    let r = c.get(&path);
                    assert_eq!((r.status, r.text()), (200, path));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("client thread panicked");
    }
    assert_eq!(mock.request_count(), CLIENTS * WAVES);
    assert_eq!(
        mock.connections(),
        CLIENTS,
        "waves after the first opened upstream connections"
    );
}

// P12. `max_connections` holds across cores; waiting requests are queued, not failed.
#[test]
fn max_connections_is_a_process_wide_cap() {
    let mock = MockUpstream::start(|req, _| {
        Reply::ok(req.target.as_bytes()).after(Duration::from_millis(200))
    });
    let h = conf(&[mock.addr()])
        .workers(2)
        .upstream("max_connections = 2")
        .upstream("queue = { size = 64, timeout = \"5s\" }")
        .start();
    concurrent_gets(h.addr(), 10, "capped");
    assert_eq!(mock.request_count(), 10, "requests served");
    assert!(
        mock.max_open() <= 2,
        "upstream saw {} connections open at once",
        mock.max_open()
    );
}

// P13. Smooth weighted round robin.
#[test]
fn weighted_round_robin_is_exact_and_smooth() {
    let light = MockUpstream::start(|_, _| Reply::ok("L"));
    let heavy = MockUpstream::start(|_, _| Reply::ok("H"));
    let h = conf(&[])
        .weighted(&[(light.addr(), 1), (heavy.addr(), 2)])
        .start();
    let mut c = h.client();
    let mut order = String::new();
    for i in 0..300 {
        let r = c.get(&format!("/{i}"));
        assert_eq!(r.status, 200, "request {i}");
        order.push_str(&r.text());
    }
    let lights = order.matches('L').count();
    assert_eq!(
        (lights, order.len() - lights),
        (100, 200),
        "split over weights 1 and 2"
    );
    assert!(
        !order.contains("HHH"),
        "heavier node 3 times in a row: {order}"
    );
    assert!(
        !order.contains("LL"),
        "lighter node twice in a row: {order}"
    );
}

// P14. Two cores serve concurrent clients correctly.
#[test]
fn two_workers_serve_many_connections() {
    let mock = MockUpstream::echo_target();
    let h = conf(&[mock.addr()]).workers(2).start();
    let addr = h.addr();
    let threads: Vec<_> = (0..20)
        .map(|t| {
            thread::spawn(move || {
                let mut c = Client::connect(addr);
                for i in 0..10 {
                    let path = format!("/{t}/{i}");
                    let r = c.get(&path);
                    assert_eq!((r.status, r.text()), (200, path.clone()), "GET {path}");
                }
            })
        })
        .collect();
    for t in threads {
        t.join()
            .expect("a client thread failed; see its panic above");
    }
    assert_eq!(
        mock.request_count(),
        200,
        "requests that reached the upstream"
    );
}

/// A counter from /metrics, as an integer.
fn count(text: &str, series: &str) -> u64 {
    metric(text, series) as u64
}

// The per-core counters, summed on demand through /metrics, account for a known sequence
// exactly: a connect, a reuse that finds the connection dead, its replay on a second connect.
#[test]
fn metrics_count_connects_reuses_and_replays_exactly() {
    let mock = racing_mock();
    let h = conf(&[mock.addr()]).admin().start();
    let mut c = h.client();
    assert_eq!(c.get("/warm").status, 200, "warming request");
    assert_eq!(c.get("/x").status, 200, "replayed GET");
    let text = h.metrics();
    let node = format!("{{upstream=\"backend\",node=\"{}\"}}", mock.addr());
    assert_eq!(
        count(&text, &format!("hearth_upstream_requests_total{node}")),
        2,
        "requests"
    );
    assert_eq!(
        count(&text, &format!("hearth_upstream_connects_total{node}")),
        2,
        "connects"
    );
    assert_eq!(
        count(&text, &format!("hearth_upstream_reuses_total{node}")),
        1,
        "reuses"
    );
    assert_eq!(
        count(&text, &format!("hearth_upstream_replays_total{node}")),
        1,
        "replays"
    );
    let stale = format!(
        "hearth_upstream_closes_total{{upstream=\"backend\",node=\"{}\",reason=\"stale\"}}",
        mock.addr()
    );
    assert_eq!(
        count(&text, &stale),
        1,
        "the dead reused connection is counted as stale"
    );
    assert_eq!(
        count(&text, &format!("hearth_upstream_idle_connections{node}")),
        1,
        "idle now"
    );
    let class = format!(
        "hearth_upstream_responses_total{{upstream=\"backend\",node=\"{}\",class=\"2xx\"}}",
        mock.addr()
    );
    assert_eq!(count(&text, &class), 2, "2xx responses");
    assert_eq!(
        count(&text, &format!("hearth_upstream_active_connections{node}")),
        0,
        "active now"
    );
    assert_eq!(
        count(&text, &format!("hearth_upstream_waiters{node}")),
        0,
        "waiters now"
    );
}

// `max_connecting = 1`: a burst of requests on a cold pool queues behind one connect at a time
// instead of opening one connection each at once, and every request is still served. The burst
// is sent while hearth is stopped, so that its next pass reads all of it before any connect
// completes: on loopback a connect completes at once, and requests that trickled in one by one
// (as concurrent client threads on a busy machine send them) would never find one in flight.
#[test]
fn max_connecting_queues_a_burst_behind_one_connect() {
    const BURST: usize = 8;
    let mock = MockUpstream::start(|req, _| {
        Reply::ok(req.target.as_bytes()).after(Duration::from_millis(50))
    });
    let h = conf(&[mock.addr()])
        .admin()
        .upstream("max_connecting = 1")
        .upstream("queue = { size = 64, timeout = \"5s\" }")
        .start();
    let mut clients: Vec<Client> = (0..BURST).map(|_| Client::connect(h.addr())).collect();
    let frozen = h.freeze();
    for (i, c) in clients.iter_mut().enumerate() {
        c.send(&get(&format!("/burst/{i}")));
    }
    drop(frozen);
    for (i, c) in clients.iter_mut().enumerate() {
        let r = c.read_response();
        assert_eq!((r.status, r.text()), (200, format!("/burst/{i}")));
    }
    let text = h.metrics();
    let node = format!("{{upstream=\"backend\",node=\"{}\"}}", mock.addr());
    assert!(
        count(&text, &format!("hearth_upstream_queued_total{node}")) > 0,
        "no request waited for the connect cap:\n{text}"
    );
    assert_eq!(
        count(
            &text,
            &format!("hearth_upstream_queue_timeouts_total{node}")
        ),
        0,
        "a queued request timed out"
    );
    assert_eq!(mock.request_count(), BURST, "requests served");
}

// An answer that ends on the last byte of hearth's 32 KiB read buffer leaves the connection
// marked readable, as a full read says nothing of what follows. It used to be taken for stray
// bytes and closed as stale, so one large answer in about thirty cost a connect (issue 21's
// large shape). Each answer here is exactly one buffer, written at once.
#[test]
fn an_answer_that_fills_the_read_buffer_exactly_keeps_its_connection() {
    const BUFFER: usize = 32 * 1024;
    let head = |len: usize| format!("HTTP/1.1 200 OK\r\nContent-Length: {len:05}\r\n\r\n");
    let body = BUFFER - head(0).len();
    let mock = MockUpstream::start(move |_, _| {
        let mut answer = head(body).into_bytes();
        answer.resize(BUFFER, b'x');
        Reply::raw(answer)
    });
    let h = conf(&[mock.addr()]).admin().start();
    let mut c = h.client();
    for i in 0..20 {
        let r = c.get(&format!("/exact/{i}"));
        assert_eq!((r.status, r.body.len()), (200, body), "request {i}");
    }
    let text = h.metrics();
    let stale = format!(
        "hearth_upstream_closes_total{{upstream=\"backend\",node=\"{}\",reason=\"stale\"}}",
        mock.addr()
    );
    assert_eq!(count(&text, &stale), 0, "closed as stale:\n{text}");
    assert_eq!(mock.connections(), 1, "upstream connections for 20 answers");
}

// A capped node's queue follows the routes' ranks: a lower `queue_class` is served first, and
// `queue_offset` counts a request as queued that much later. With every rank at its default the
// queue is first come first served (the other queue tests).
#[test]
fn queued_requests_are_served_by_their_routes_rank() {
    let gate = Arc::new((Mutex::new(false), Condvar::new()));
    let held = Arc::clone(&gate);
    let mock = MockUpstream::start(move |req, _| {
        if req.target == "/hold" {
            let (open, cv) = &*held;
            let shut = open.lock().unwrap();
            let (shut, _) = cv
                .wait_timeout_while(shut, Duration::from_secs(10), |o| !*o)
                .unwrap();
            drop(shut);
        }
        Reply::ok(req.target.as_bytes())
    });
    let h = conf(&[mock.addr()])
        .admin()
        .upstream("max_connections = 1")
        .upstream("queue = { size = 64, timeout = \"10s\" }")
        .routes(
            "[[routes]]\nuris = [\"/low/*\"]\nupstream = \"backend\"\nqueue_class = 1\n\n\
             [[routes]]\nuris = [\"/late/*\"]\nupstream = \"backend\"\nqueue_offset = \"30s\"\n\n\
             [[routes]]\nuris = [\"/*\"]\nupstream = \"backend\"\n",
        )
        .start();
    let node = format!("{{upstream=\"backend\",node=\"{}\"}}", mock.addr());
    let queued = || count(&h.metrics(), &format!("hearth_upstream_queued_total{node}"));
    let mut holder = h.client();
    holder.send(&get("/hold"));
    assert!(
        wait_until(Duration::from_secs(5), || mock.request_count() == 1),
        "the first request never reached the upstream"
    );
    // Queued one at a time, in this order of arrival.
    let arrivals = ["/low/1", "/late/1", "/low/2", "/now/1", "/late/2", "/now/2"];
    let mut clients = Vec::new();
    for (i, path) in arrivals.iter().enumerate() {
        let mut c = h.client();
        c.send(&get(path));
        assert!(
            wait_until(Duration::from_secs(5), || queued() == i as u64 + 1),
            "{path} was not queued"
        );
        clients.push((path, c));
    }
    {
        let (open, cv) = &*gate;
        *open.lock().unwrap() = true;
        cv.notify_all();
    }
    assert_eq!(holder.read_response().status, 200);
    for (path, c) in &mut clients {
        let r = c.read_response();
        assert_eq!((r.status, r.text()), (200, path.to_string()));
    }
    let order: Vec<String> = mock.requests().into_iter().map(|r| r.target).collect();
    assert_eq!(
        order,
        ["/hold", "/now/1", "/now/2", "/late/1", "/late/2", "/low/1", "/low/2"],
        "class 0 before class 1; within class 0, 30 s of offset puts /late behind /now"
    );
}

// pass_host: "node" sends the node's address as Host, "rewrite" sends upstream_host; the
// client's Host still reaches the upstream as X-Forwarded-Host.
#[test]
fn pass_host_node_and_rewrite_set_the_upstream_host() {
    let mock = MockUpstream::echo_target();
    let node = conf(&[mock.addr()])
        .upstream("pass_host = \"node\"")
        .start();
    assert_eq!(node.client().get("/n").status, 200);
    let rewrite = conf(&[mock.addr()])
        .upstream("pass_host = \"rewrite\"")
        .upstream("upstream_host = \"api.internal\"")
        .start();
    assert_eq!(rewrite.client().get("/r").status, 200);
    let n = &mock.requests_to("/n")[0];
    let r = &mock.requests_to("/r")[0];
    let host = |rec: &common::Recorded| {
        rec.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("host"))
            .map(|(_, v)| v.clone())
    };
    assert_eq!(host(n), Some(mock.addr().to_string()), "pass_host = node");
    assert_eq!(
        host(r),
        Some("api.internal".to_string()),
        "pass_host = rewrite"
    );
    let xfh = r
        .headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("x-forwarded-host"))
        .map(|(_, v)| v.clone());
    assert!(
        xfh.is_some_and(|v| v != "api.internal"),
        "X-Forwarded-Host should carry the client's Host"
    );
}
