//! Bodies moved with splice(2) (`runtime::splice`): byte for byte what was sent, in both
//! directions, for sizes around the buffer (32 KiB), the splice threshold (64 KiB) and the pipe
//! (256 KiB); and nothing of one exchange's body reaching another when the exchange ends with
//! bytes still in the core's pipe (a client that aborts, an upstream that resets), or when a
//! pooled connection carries the next request after a spliced body.
//!
//! Each test also checks `hearth_spliced_bytes_total`, so it fails if the bodies went through the
//! copying path instead and the splice path went untested.

mod common;

use std::io::Write;
use std::net::Shutdown;
use std::thread;
use std::time::Duration;

use common::mock::response_bytes;
use common::*;

const LONG: Duration = Duration::from_secs(10);

/// Sizes that land on either side of hearth's 32 KiB buffers, the 64 KiB threshold below which
/// a body is copied, and the 256 KiB pipe.
const SIZES: [usize; 8] = [
    65_535,
    98_305,
    262_143,
    262_144,
    262_145,
    524_289,
    1 << 20,
    (3 << 20) + 7,
];

fn spliced(h: &Hearth, direction: &str) -> f64 {
    metric(
        &h.metrics(),
        &format!("hearth_spliced_bytes_total{{direction=\"{direction}\"}}"),
    )
}

fn same_bytes(got: &[u8], want: &[u8], what: &str) {
    let first = got.iter().zip(want).position(|(a, b)| a != b);
    assert!(
        got == want,
        "{what}: got {} bytes, want {}, first difference at {first:?}",
        got.len(),
        want.len()
    );
}

/// A mock answering `/len/N` with N bytes of `payload(N, N)` under Content-Length, and anything
/// else with the FNV checksum of the request body it received.
fn sized_origin() -> MockUpstream {
    MockUpstream::start(|req, _| {
        if let Some(n) = req.target.strip_prefix("/len/") {
            let n: usize = n.parse().expect("test bug: /len/N");
            let body = payload(n, n as u64);
            return Reply::raw(response_bytes(
                "HTTP/1.1 200 OK",
                &[("Content-Length", &n.to_string())],
                &body,
            ));
        }
        Reply::ok(format!("{:x} {}", checksum(&req.body), req.body.len()))
    })
}

#[test]
fn response_bodies_arrive_byte_identical_and_the_connection_is_reused() {
    let mock = sized_origin();
    let h = conf(&[mock.addr()]).admin().start();
    let mut c = h.client();
    c.set_timeout(LONG);
    for n in SIZES {
        c.send(&get(&format!("/len/{n}")));
        let r = c.read_response();
        assert_eq!(r.status, 200, "status of a {n}-byte answer");
        same_bytes(&r.body, &payload(n, n as u64), &format!("{n}-byte answer"));
        // The next request on the same pooled connection gets its own answer, nothing of the
        // last one's body.
        c.send(&get("/len/5"));
        let r = c.read_response();
        same_bytes(&r.body, &payload(5, 5), "small answer after a large one");
    }
    assert_eq!(
        mock.connections(),
        1,
        "every answer came over one pooled upstream connection"
    );
    assert!(
        spliced(&h, "response") > 0.0,
        "no response byte was spliced"
    );
}

#[test]
fn request_bodies_arrive_byte_identical_and_the_connection_is_reused() {
    let mock = sized_origin();
    let h = conf(&[mock.addr()]).admin().start();
    let mut c = h.client();
    c.set_timeout(LONG);
    for n in SIZES {
        let body = payload(n, 7 + n as u64);
        c.send(&request("POST", "/sum", &[], &body));
        let r = c.read_response();
        assert_eq!(r.status, 200, "status of a {n}-byte upload");
        assert_eq!(
            r.text(),
            format!("{:x} {n}", checksum(&body)),
            "what the upstream received of a {n}-byte upload"
        );
        c.send(&get("/len/3"));
        same_bytes(
            &c.read_response().body,
            &payload(3, 3),
            "answer after an upload",
        );
    }
    assert_eq!(mock.connections(), 1, "one pooled upstream connection");
    let recorded = mock.requests_to("/sum");
    assert_eq!(recorded.len(), SIZES.len());
    assert!(spliced(&h, "request") > 0.0, "no request byte was spliced");
}

#[test]
fn close_delimited_answers_are_spliced_whole() {
    let n = (1 << 20) + 3;
    let body = payload(n, 99);
    let b = body.clone();
    let mock = MockUpstream::start(move |_, _| Reply::close_delimited(&b));
    let h = conf(&[mock.addr()]).admin().start();
    let mut c = h.client();
    c.set_timeout(LONG);
    c.send(&get("/"));
    let r = c.read_response();
    assert_eq!(r.status, 200);
    same_bytes(&r.body, &body, "close-delimited answer");
    assert!(
        spliced(&h, "response") > 0.0,
        "no response byte was spliced"
    );
}

/// A second client's large answer after a first client went away in the middle of its own:
/// whatever the first left in the pipe must not reach the second.
#[test]
fn a_client_abort_mid_answer_leaves_nothing_for_the_next_exchange() {
    let mock = sized_origin();
    let h = conf(&[mock.addr()]).admin().start();
    for round in 0..3 {
        let mut a = h.client();
        a.send(&get(&format!("/len/{}", 8 << 20)));
        // Read a little, so the answer is under way and spliced, then stop reading: the
        // client's socket fills, then hearth's pipe holds what the client did not take.
        let _ = a.read_exact(1024);
        assert!(
            wait_until(LONG, || spliced(&h, "response") > 0.0),
            "round {round}: the answer was never spliced"
        );
        thread::sleep(Duration::from_millis(50));
        let _ = a.stream().shutdown(Shutdown::Both);
        drop(a);

        let mut b = h.client();
        b.set_timeout(LONG);
        let n = 600_001 + round;
        b.send(&get(&format!("/len/{n}")));
        let r = b.read_response();
        assert_eq!(r.status, 200, "round {round}: status after an abort");
        same_bytes(&r.body, &payload(n, n as u64), "answer after an abort");
        // The pipe serves the next exchange again once the aborted one is gone.
        let before = spliced(&h, "response");
        b.send(&get(&format!("/len/{n}")));
        same_bytes(
            &b.read_response().body,
            &payload(n, n as u64),
            "second answer",
        );
        assert!(
            spliced(&h, "response") > before,
            "round {round}: the pipe was not used again after the abort"
        );
    }
}

#[test]
fn a_client_abort_mid_upload_leaves_nothing_for_the_next_exchange() {
    let mock = sized_origin();
    let h = conf(&[mock.addr()]).admin().start();
    for round in 0..3 {
        let mut a = h.client();
        let head = format!(
            "POST /sum HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: {}\r\n\r\n",
            8 << 20
        );
        a.send(head.as_bytes());
        a.send(&payload(1 << 20, round));
        assert!(
            wait_until(LONG, || spliced(&h, "request") > 0.0),
            "round {round}: the upload was never spliced"
        );
        let _ = a.stream().shutdown(Shutdown::Both);
        drop(a);

        let mut b = h.client();
        b.set_timeout(LONG);
        let body = payload(700_000, 50 + round);
        let before = spliced(&h, "request");
        b.send(&request("POST", "/sum", &[], &body));
        let r = b.read_response();
        assert_eq!(r.status, 200, "round {round}: status after an abort");
        assert_eq!(
            r.text(),
            format!("{:x} {}", checksum(&body), body.len()),
            "round {round}: the upstream got the second upload alone"
        );
        assert!(
            spliced(&h, "request") > before,
            "round {round}: the pipe was not used again after the abort"
        );
    }
}

/// An upstream that resets after part of a Content-Length answer: the client gets a short
/// answer and a closed connection (never a complete-looking one), and the next exchange gets
/// its own bytes.
#[test]
fn an_upstream_reset_mid_answer_cuts_the_client_and_nothing_leaks() {
    let total = 4 << 20;
    let sent = 1 << 20;
    let mock = MockUpstream::start(move |req, _| {
        if req.target == "/cut" {
            let head = response_bytes(
                "HTTP/1.1 200 OK",
                &[("Content-Length", &total.to_string())],
                &payload(sent, 1),
            );
            return Reply::raw(head)
                .then_sleep(Duration::from_millis(50))
                .then_reset();
        }
        let n = 400_000;
        Reply::raw(response_bytes(
            "HTTP/1.1 200 OK",
            &[("Content-Length", &n.to_string())],
            &payload(n, 2),
        ))
    });
    let h = conf(&[mock.addr()]).admin().start();
    let mut a = h.client();
    a.send(&get("/cut"));
    let got = a.read_until_close(LONG);
    let head_end = got
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("the answer's head arrived")
        + 4;
    let body = &got[head_end..];
    assert!(
        body.len() < total,
        "a cut answer arrived whole ({} bytes)",
        body.len()
    );
    same_bytes(
        body,
        &payload(sent, 1)[..body.len()],
        "the part that arrived",
    );
    assert!(
        spliced(&h, "response") > 0.0,
        "no response byte was spliced"
    );

    let mut b = h.client();
    b.set_timeout(LONG);
    let before = spliced(&h, "response");
    b.send(&get("/next"));
    let r = b.read_response();
    assert_eq!(r.status, 200);
    same_bytes(&r.body, &payload(400_000, 2), "answer after a reset");
    assert!(
        spliced(&h, "response") > before,
        "the pipe was not used again after the reset"
    );
}

/// An upstream that reads part of an upload and resets: the client is answered (502) or cut,
/// never left hanging, and the next upload reaches a fresh connection whole.
#[test]
fn an_upstream_reset_mid_upload_fails_that_request_only() {
    let mock = MockUpstream::early(|req, _| {
        if req.target == "/cut" {
            return Reply::default().after_reading(512 * 1024).then_reset();
        }
        Reply::ok("fine")
    });
    let sums = sized_origin();
    let h = conf(&[mock.addr()])
        .admin()
        .routes(&format!(
            "[[routes]]\nuris = [\"/cut\"]\nupstream = \"backend\"\n\n\
             [[routes]]\nuris = [\"/*\"]\nupstream = \"sums\"\n\n\
             [upstreams.sums]\nnodes = {{ \"{}\" = 1 }}\n",
            sums.addr()
        ))
        .start();
    let mut a = h.client();
    a.set_timeout(LONG);
    let total = 4 << 20;
    let head = format!("POST /cut HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: {total}\r\n\r\n");
    a.send(head.as_bytes());
    // The body from another thread: hearth stops reading it once the upstream is gone.
    let mut w = a.stream().try_clone().expect("clone the client socket");
    let writer = thread::spawn(move || {
        let _ = w.set_write_timeout(Some(LONG));
        let _ = w.write_all(&payload(total, 3));
    });
    let got = a.read_until_close(LONG);
    let _ = a.stream().shutdown(Shutdown::Both);
    let _ = writer.join();
    let text = String::from_utf8_lossy(&got);
    assert!(
        got.is_empty() || text.starts_with("HTTP/1.1 502"),
        "answer to an upload the upstream reset: {text:?}"
    );
    assert!(spliced(&h, "request") > 0.0, "no request byte was spliced");

    let mut b = h.client();
    b.set_timeout(LONG);
    let body = payload(300_000, 4);
    let before = spliced(&h, "request");
    b.send(&request("POST", "/sum", &[], &body));
    let r = b.read_response();
    assert_eq!(
        r.text(),
        format!("{:x} {}", checksum(&body), body.len()),
        "the next upload"
    );
    assert!(
        spliced(&h, "request") > before,
        "the pipe was not used again after the reset"
    );
}

#[test]
fn splice_off_copies_the_same_bytes() {
    let mock = sized_origin();
    let h = conf(&[mock.addr()])
        .admin()
        .client("splice = false")
        .start();
    let mut c = h.client();
    c.set_timeout(LONG);
    let n = 1 << 20;
    c.send(&get(&format!("/len/{n}")));
    same_bytes(
        &c.read_response().body,
        &payload(n, n as u64),
        "copied answer",
    );
    let body = payload(n, 5);
    c.send(&request("POST", "/sum", &[], &body));
    assert_eq!(
        c.read_response().text(),
        format!("{:x} {n}", checksum(&body))
    );
    assert_eq!(spliced(&h, "response"), 0.0);
    assert_eq!(spliced(&h, "request"), 0.0);
}
