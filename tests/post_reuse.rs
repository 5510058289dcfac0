//! POSTs answered before their body is in (auth failures, redirects, fixed answers: handlers that
//! answer without reading the body) keep their upstream connection: hearth sends the rest of the
//! body on after the answer, within a bound, and pools the connection when both directions are
//! complete. Before, every such answer condemned the connection (410 upstream connections for
//! 720 POSTs where GETs needed 5).

mod common;

use std::thread;
use std::time::{Duration, Instant};

use common::*;

const SHORT: Duration = Duration::from_secs(3);

/// A mock that answers each request as soon as its head is in and reads the body afterwards.
fn answers_early() -> MockUpstream {
    MockUpstream::early(|req, _| Reply::ok(format!("early {}", req.target)))
}

fn closes(h: &Hearth, reason: &str) -> f64 {
    let text = h.metrics();
    text.lines()
        .filter(|l| {
            l.starts_with("hearth_upstream_closes_total{")
                && l.contains(&format!("reason=\"{reason}\""))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// 100 POSTs on one client connection, answered before their bodies, in each way a client sends
/// a body: with the head, in a later write, chunked with the head, chunked later. One upstream
/// connection carries all of them, and the upstream reads every body whole.
#[test]
fn posts_answered_early_keep_one_upstream_connection() {
    let shapes: [(&str, bool, bool); 4] = [
        ("length, with the head", false, false),
        ("length, later write", false, true),
        ("chunked, with the head", true, false),
        ("chunked, later write", true, true),
    ];
    for (what, chunked, split) in shapes {
        let mock = answers_early();
        let h = conf(&[mock.addr()]).admin().start();
        let mut c = h.client();
        for i in 0..100 {
            let body = payload(200, i);
            let framed = if chunked {
                chunked_body(&[&body[..50], &body[50..]], &[])
            } else {
                body.clone()
            };
            let head = if chunked {
                format!("POST /p{i} HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n")
            } else {
                format!(
                    "POST /p{i} HTTP/1.1\r\nHost: h\r\nContent-Length: {}\r\n\r\n",
                    body.len()
                )
            };
            if split {
                c.send(head.as_bytes());
                // The answer comes back before the body is even sent.
                let r = c.read_response();
                assert_eq!(r.text(), format!("early /p{i}"), "{what}, request {i}");
                c.send(&framed);
            } else {
                c.send(&[head.as_bytes(), &framed].concat());
                let r = c.read_response();
                assert_eq!(r.text(), format!("early /p{i}"), "{what}, request {i}");
            }
        }
        assert!(
            mock.wait_requests(100, SHORT),
            "{what}: {} bodies read",
            mock.request_count()
        );
        assert_eq!(mock.connections(), 1, "{what}: upstream connections");
        for (i, rec) in mock.requests().iter().enumerate() {
            assert_eq!(rec.body, payload(200, i as u64), "{what}: body {i}");
        }
        assert_eq!(closes(&h, "request_unfinished"), 0.0, "{what}");
        assert_eq!(closes(&h, "not_reusable"), 0.0, "{what}");
    }
}

/// More than the bound (64 KiB) left after the answer: the upstream connection closes, as
/// before, and says why; the client gets its answer all the same and its connection closes
/// after it, since the rest of its body will not be read.
#[test]
fn a_remainder_over_the_bound_closes_the_connection_and_counts_it() {
    let mock = answers_early();
    let h = conf(&[mock.addr()]).admin().start();
    let mut c = h.client();
    let body = payload(256 << 10, 3);
    c.send(
        format!(
            "POST /big HTTP/1.1\r\nHost: h\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    let r = c.read_response();
    assert_eq!(r.text(), "early /big");
    assert!(r.has_token("connection", "close"), "{}", r.head_text());
    assert!(
        wait_until(SHORT, || closes(&h, "request_unfinished") == 1.0),
        "{}",
        h.metrics()
    );
    // A chunked body that keeps coming past the bound goes the same way.
    let mut c = h.client();
    c.send(b"POST /stream HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n");
    let r = c.read_response();
    assert_eq!(r.text(), "early /stream");
    let chunk = chunked_body(&[&payload(16 << 10, 4)], &[]);
    let piece = &chunk[..chunk.len() - 5]; // one 16 KiB chunk, without the last chunk
    for _ in 0..8 {
        if c.try_send(piece).is_err() {
            break;
        }
    }
    assert!(
        wait_until(SHORT, || closes(&h, "request_unfinished") == 2.0),
        "{}",
        h.metrics()
    );
    assert!(c.is_closed(SHORT), "the client connection stayed open");
}

/// A body that stops coming after the answer: the connection is given up at the drain deadline
/// (2 s), not at the client's body timeout (60 s).
#[test]
fn a_remainder_that_stalls_is_given_up_at_the_deadline() {
    let mock = answers_early();
    let h = conf(&[mock.addr()]).admin().start();
    let mut c = h.client();
    c.send(b"POST /stall HTTP/1.1\r\nHost: h\r\nContent-Length: 100\r\n\r\n0123456789");
    let started = Instant::now();
    let r = c.read_response();
    assert_eq!(r.text(), "early /stall");
    assert!(
        wait_until(Duration::from_secs(5), || closes(&h, "request_unfinished")
            == 1.0),
        "{}",
        h.metrics()
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(c.is_closed(SHORT), "the client connection stayed open");
}

/// The client reads its answer while its body is still being sent on: the drain never holds the
/// answer back.
#[test]
fn the_answer_is_not_held_back_by_the_drain() {
    let mock = MockUpstream::early(|_, _| Reply::ok("early"));
    let h = conf(&[mock.addr()]).start();
    let mut c = h.client();
    c.send(b"POST /slow-body HTTP/1.1\r\nHost: h\r\nContent-Length: 20\r\n\r\n0123456789");
    // Half the body is out and the rest is not: the answer arrives anyway.
    let r = c.read_response();
    assert_eq!(r.text(), "early");
    thread::sleep(Duration::from_millis(200));
    c.send(b"abcdefghij");
    // The connection carries on with the next request, on the same upstream connection.
    c.send(b"GET /next HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(c.read_response().text(), "early");
    assert!(mock.wait_requests(2, SHORT));
    assert_eq!(mock.connections(), 1);
    assert_eq!(mock.requests()[0].body, b"0123456789abcdefghij");
}

/// An upstream that says `Connection: close` with its early answer is not drained: its
/// connection closes as before.
#[test]
fn an_early_answer_with_connection_close_is_not_drained() {
    let mock = MockUpstream::early(|_, _| Reply::ok_close("bye"));
    let h = conf(&[mock.addr()]).admin().start();
    let mut c = h.client();
    c.send(b"POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\n01234");
    let r = c.read_response();
    assert_eq!(r.text(), "bye");
    assert!(
        wait_until(SHORT, || closes(&h, "upstream_close") == 1.0),
        "{}",
        h.metrics()
    );
}
