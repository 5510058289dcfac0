//! Forwarding behaviour of hearth, end to end: the real binary between the raw test client and a
//! recording mock upstream. Each test starts its own hearth and mocks on 127.0.0.1:0 and checks
//! what actually crossed the wire on both sides: header rewriting, body framing in every form
//! RFC 9112 allows, connection persistence, upgrades, and the canned error answers.

mod common;

use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::mock::response_bytes;
use common::wire::Framing;
use common::*;

const SHORT: Duration = Duration::from_secs(2);

/// Where two byte strings first differ, for assertion messages that must not print megabytes.
fn first_difference(a: &[u8], b: &[u8]) -> Option<usize> {
    a.iter().zip(b).position(|(x, y)| x != y).or_else(|| {
        if a.len() == b.len() {
            None
        } else {
            Some(a.len().min(b.len()))
        }
    })
}

fn assert_same_bytes(got: &[u8], want: &[u8], what: &str) {
    assert!(
        got == want,
        "{what}: got {} bytes, want {}, first difference at {:?}",
        got.len(),
        want.len(),
        first_difference(got, want)
    );
}

/// Fields that must never cross hearth in either direction (besides those named in Connection).
const HOP_BY_HOP: [&str; 5] = ["keep-alive", "proxy-connection", "te", "trailer", "upgrade"];

// 1. Forwarding headers are added and hop-by-hop fields are dropped in both directions
//    (RFC 9110 section 7.6.1).
#[test]
fn get_is_relayed_with_forwarding_headers_and_without_hop_by_hop_fields() {
    let mock = MockUpstream::start(|_, _| {
        Reply::raw(response_bytes(
            "HTTP/1.1 200 OK",
            &[
                ("Content-Length", "5"),
                ("Connection", "keep-alive, X-Bar"),
                ("X-Bar", "1"),
                ("Keep-Alive", "timeout=5"),
                ("Proxy-Connection", "keep-alive"),
                ("TE", "trailers"),
                ("Trailer", "X-T"),
                ("Upgrade", "h2c"),
                ("X-End", "kept"),
            ],
            b"hello",
        ))
    });
    let h = conf(&[mock.addr()]).start();
    let mut c = h.client();
    c.send(
        b"GET /path?q=1 HTTP/1.1\r\n\
          Host: example.test\r\n\
          X-Forwarded-For: 10.0.0.1\r\n\
          Connection: keep-alive, X-Foo\r\n\
          X-Foo: 1\r\n\
          Keep-Alive: timeout=5\r\n\
          Proxy-Connection: keep-alive\r\n\
          TE: trailers\r\n\
          Trailer: X-T\r\n\
          Upgrade: h2c\r\n\
          X-End: kept\r\n\r\n",
    );
    let r = c.read_response();
    assert_eq!(r.status, 200, "status of a relayed GET");
    assert_eq!(r.text(), "hello", "body of a relayed GET");
    assert_eq!(
        r.header("x-end"),
        Some("kept"),
        "end-to-end response header lost"
    );
    for name in ["x-bar"].iter().chain(HOP_BY_HOP.iter()) {
        assert!(
            r.header(name).is_none(),
            "hop-by-hop response header {name} reached the client:\n{}",
            r.head_text()
        );
    }
    assert!(
        !r.has_token("connection", "x-bar"),
        "upstream's Connection options reached the client"
    );

    let rec = &mock.requests()[0];
    assert_eq!(rec.target, "/path?q=1", "request target changed");
    assert_eq!(
        rec.header_all("host"),
        ["example.test"],
        "Host not relayed as sent"
    );
    assert_eq!(
        rec.header_all("x-forwarded-for"),
        ["10.0.0.1, 127.0.0.1"],
        "X-Forwarded-For not appended to the client's value"
    );
    assert_eq!(
        rec.header("x-forwarded-proto"),
        Some("http"),
        "X-Forwarded-Proto"
    );
    assert_eq!(
        rec.header("x-forwarded-host"),
        Some("example.test"),
        "X-Forwarded-Host"
    );
    assert_eq!(
        rec.header("x-end"),
        Some("kept"),
        "end-to-end request header lost"
    );
    for name in ["x-foo"].iter().chain(HOP_BY_HOP.iter()) {
        assert!(
            !rec.has_header(name),
            "hop-by-hop request header {name} reached the upstream:\n{}",
            rec.head_text
        );
    }
    assert!(
        !rec.has_token("connection", "x-foo"),
        "client's Connection options reached the upstream:\n{}",
        rec.head_text
    );

    // Without a client value, the header holds just the client address.
    c.send(b"GET /second HTTP/1.1\r\nHost: example.test\r\n\r\n");
    assert_eq!(
        c.read_response().status,
        200,
        "second request on the connection"
    );
    let rec = &mock.requests_to("/second")[0];
    assert_eq!(
        rec.header_all("x-forwarded-for"),
        ["127.0.0.1"],
        "X-Forwarded-For without a client value"
    );
}

// 2. Large bodies stream through unchanged in both directions.
#[test]
fn post_body_of_1_mib_arrives_byte_exact() {
    let mock = MockUpstream::start(|req, _| {
        Reply::ok(format!(
            "len={} sum={:016x}",
            req.body.len(),
            checksum(&req.body)
        ))
    });
    let h = conf(&[mock.addr()]).start();
    let body = payload(1 << 20, 11);
    let mut c = h.client();
    c.send(&request(
        "POST",
        "/upload",
        &[("Content-Type", "application/octet-stream")],
        &body,
    ));
    let r = c.read_response();
    assert_eq!(r.status, 200, "status of a 1 MiB POST");
    assert_eq!(
        r.text(),
        format!("len={} sum={:016x}", body.len(), checksum(&body)),
        "upstream's length and checksum of the 1 MiB body"
    );
    let rec = &mock.requests()[0];
    assert_same_bytes(&rec.body, &body, "1 MiB request body at the upstream");
    assert_eq!(
        rec.header("content-length"),
        Some("1048576"),
        "Content-Length of a relayed POST"
    );
}

#[test]
fn response_body_of_4_mib_arrives_byte_exact() {
    let big = Arc::new(payload(4 << 20, 12));
    let served = Arc::clone(&big);
    let mock = MockUpstream::start(move |_, _| Reply::ok(served.as_slice()));
    let h = conf(&[mock.addr()]).start();
    let mut c = h.client();
    let r = c.get("/big");
    assert_eq!(r.status, 200, "status of a 4 MiB response");
    assert_same_bytes(&r.body, &big, "4 MiB response body at the client");
    // The connection is still in sync after the big body.
    assert_eq!(
        c.get("/again").status,
        200,
        "request after a 4 MiB response"
    );
}

/// Large answers in each framing that is relayed verbatim (length, chunked, close-delimited) to a
/// client with a 4 KiB receive window that waits before reading the first: hearth's send buffer
/// fills (loopback grows it to a few MiB, hence the 6 MiB answer), so sends straight from the
/// upstream buffer come up short and the rest is queued behind them. Every byte arrives, in
/// order, and the connection stays in step between the answers.
#[test]
fn big_answers_to_a_narrow_window_client_arrive_byte_exact() {
    let sized = Arc::new(payload(6 << 20, 21));
    let chunks = Arc::new([
        payload(200_000, 22),
        payload(65_536, 23),
        payload(5_000, 24),
    ]);
    let closing = Arc::new(payload(300_000, 25));
    let (s, c, e) = (
        Arc::clone(&sized),
        Arc::clone(&chunks),
        Arc::clone(&closing),
    );
    let mock = MockUpstream::start(move |req, _| match req.target.as_str() {
        "/sized" => Reply::ok(s.as_slice()),
        "/chunked" => Reply::chunked(&[&c[0], &c[1], &c[2]], &[]),
        _ => Reply::close_delimited(e.as_slice()),
    });
    let h = conf(&[mock.addr()]).start();
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    sock.connect(&h.addr().into()).unwrap();
    let stream: std::net::TcpStream = sock.into();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut wire = common::wire::Wire::new(stream);
    // Asks for `path`, after `wait` reads its head, which must be a 200.
    let ask = |wire: &mut common::wire::Wire, path: &str, wait: Duration| {
        wire.write_all(&get(path)).unwrap();
        thread::sleep(wait);
        let head = wire.read_head(65_536).unwrap();
        let head = head.unwrap_or_else(|| panic!("no head for {path}"));
        let text = String::from_utf8_lossy(&head);
        assert!(text.starts_with("HTTP/1.1 200"), "{path}: {text}");
    };

    ask(&mut wire, "/sized", Duration::from_millis(300));
    let body = wire.take_exact(sized.len()).unwrap();
    assert_same_bytes(&body, &sized, "6 MiB answer with Content-Length");

    ask(&mut wire, "/chunked", Duration::ZERO);
    let got = wire.read_chunked().unwrap();
    assert_same_bytes(
        &got.body,
        &chunks.concat(),
        "chunked answer, relayed chunked",
    );

    ask(&mut wire, "/closing", Duration::ZERO);
    let body = wire.read_to_close().unwrap();
    assert_same_bytes(&body, &closing, "answer delimited by the upstream's close");
}

/// A client that resets while its long answer is still on the way: the send straight from the
/// upstream buffer meets the reset, and the connection is closed then, not left to
/// `send_timeout` (60 s) with no event ever to come for it.
#[test]
fn a_client_reset_before_a_long_answer_arrives_is_closed_at_once() {
    let body = payload(64 * 1024, 26);
    let mock = MockUpstream::start(move |_, _| {
        let mut r = Reply::ok(&body);
        r.actions
            .insert(0, Action::Sleep(Duration::from_millis(300)));
        r
    });
    let h = conf(&[mock.addr()])
        .upstream("keepalive_pool = { idle_timeout = \"1s\" }")
        .start();
    let baseline = common::fault::started_fds(&h);
    let mut c = std::net::TcpStream::connect(h.addr()).unwrap();
    std::io::Write::write_all(&mut c, &get("/slow")).unwrap();
    // Let hearth send the request on, then reset before the answer comes back.
    thread::sleep(Duration::from_millis(100));
    socket2::SockRef::from(&c)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(c);
    // The answer arrives after 300 ms; the pooled upstream connection idles out after 1 s.
    let until = Instant::now() + Duration::from_secs(5);
    let mut fds = common::fault::open_fds(h.pid());
    while fds.is_none_or(|n| n > baseline) && Instant::now() < until {
        thread::sleep(Duration::from_millis(50));
        fds = common::fault::open_fds(h.pid());
    }
    assert!(
        fds.is_some_and(|n| n <= baseline),
        "hearth holds {fds:?} descriptors 5 s after the reset, {baseline} at start:\n{}",
        common::fault::fd_listing(h.pid())
    );
}

// 3. A chunked request body stays chunked and decodes to the same bytes.
#[test]
fn chunked_request_body_is_relayed_chunked_and_exact() {
    let mock = MockUpstream::start(|req, _| Reply::ok(format!("{}", req.body.len())));
    let h = conf(&[mock.addr()]).start();
    let data = payload(1 + 100 + 4096 + 65536 + 7, 13);
    let (a, rest) = data.split_at(1);
    let (b, rest) = rest.split_at(100);
    let (d, rest) = rest.split_at(4096);
    let (e, f) = rest.split_at(65536);
    let mut req = request("POST", "/chunked", &[("Transfer-Encoding", "chunked")], b"");
    req.extend_from_slice(&chunked_body(&[a, b, d, e, f], &[]));
    let mut c = h.client();
    c.send(&req);
    let r = c.read_response();
    assert_eq!(r.status, 200, "status of a chunked POST");
    assert_eq!(
        r.text(),
        data.len().to_string(),
        "upstream's view of the length"
    );
    let rec = &mock.requests()[0];
    assert!(
        rec.chunked,
        "upstream did not receive the body chunked:\n{}",
        rec.head_text
    );
    assert!(
        !rec.has_header("content-length"),
        "Content-Length next to chunked at the upstream:\n{}",
        rec.head_text
    );
    assert_same_bytes(&rec.body, &data, "decoded chunked body at the upstream");
}

// 4. Chunked responses with trailers: kept for HTTP/1.1, de-chunked for HTTP/1.0 (which cannot
//    parse chunked, RFC 9112 section 7).
#[test]
fn chunked_response_with_trailers_reaches_http11_client_chunked() {
    let mock = MockUpstream::start(|_, _| {
        Reply::chunked(&[b"hello ", b"world"], &[("X-Checksum", "abc")])
    });
    let h = conf(&[mock.addr()]).start();
    let mut c = h.client();
    let r = c.get("/t");
    assert_eq!(r.status, 200, "status");
    assert_eq!(
        r.framing,
        Framing::Chunked,
        "response to a 1.1 client is not chunked"
    );
    assert_eq!(r.text(), "hello world", "decoded body");
    assert_eq!(
        r.trailer("x-checksum"),
        Some("abc"),
        "trailer lost: {:?}",
        r.trailers
    );
    assert_eq!(
        c.get("/again").text(),
        "hello world",
        "connection usable after trailers"
    );
}

#[test]
fn chunked_response_is_dechunked_for_http10_client() {
    let mock = MockUpstream::start(|_, _| {
        Reply::chunked(&[b"hello ", b"world"], &[("X-Checksum", "abc")])
    });
    let h = conf(&[mock.addr()]).start();
    let mut c = h.client();
    c.send(b"GET /t HTTP/1.0\r\nHost: hearth.test\r\n\r\n");
    let r = c.read_response();
    assert_eq!(r.status, 200, "status");
    assert!(
        r.header("transfer-encoding").is_none(),
        "Transfer-Encoding sent to an HTTP/1.0 client:\n{}",
        r.head_text()
    );
    assert_eq!(r.text(), "hello world", "de-chunked body for HTTP/1.0");
    assert!(
        c.is_closed(SHORT),
        "HTTP/1.0 connection left open after the response"
    );
}

// 5. HTTP/1.0 persistence only on request (RFC 9112 section 9.3).
#[test]
fn http10_client_connection_closes_without_keep_alive() {
    let mock = MockUpstream::echo_target();
    let h = conf(&[mock.addr()]).start();
    let mut c = h.client();
    c.send(b"GET /old HTTP/1.0\r\nHost: hearth.test\r\n\r\n");
    let r = c.read_response();
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, "/old"),
        "HTTP/1.0 response"
    );
    assert!(
        c.is_closed(SHORT),
        "HTTP/1.0 connection without keep-alive left open"
    );
}

#[test]
fn http10_client_with_keep_alive_gets_two_responses() {
    let mock = MockUpstream::echo_target();
    let h = conf(&[mock.addr()]).start();
    let mut c = h.client();
    for path in ["/one", "/two"] {
        c.send(
            format!("GET {path} HTTP/1.0\r\nHost: hearth.test\r\nConnection: keep-alive\r\n\r\n")
                .as_bytes(),
        );
        let r = c.read_response();
        assert_eq!(
            (r.status, r.text().as_str()),
            (200, path),
            "keep-alive HTTP/1.0 response"
        );
        assert!(
            r.has_token("connection", "keep-alive"),
            "response to HTTP/1.0 keep-alive lacks Connection: keep-alive:\n{}",
            r.head_text()
        );
        assert!(
            matches!(r.framing, Framing::Length(_)),
            "keep-alive HTTP/1.0 response must be length-delimited, got {:?}",
            r.framing
        );
    }
}

// 6. Responses without a body (RFC 9112 section 6.3 rules 1 and 2) leave the connection in sync.
#[test]
fn head_204_and_304_have_no_body_and_keep_the_connection_in_sync() {
    let mock = MockUpstream::start(|req, _| match req.target.as_str() {
        "/head" => Reply::raw("HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n"),
        "/204" => Reply::raw("HTTP/1.1 204 No Content\r\nX-A: b\r\n\r\n"),
        "/304" => {
            Reply::raw("HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\nContent-Length: 10\r\n\r\n")
        }
        other => Reply::ok(other.as_bytes()),
    });
    let h = conf(&[mock.addr()]).start();
    let mut c = h.client();
    c.send(&request("HEAD", "/head", &[], b""));
    let r = c.read_head_response();
    assert_eq!(r.status, 200, "HEAD status");
    assert_eq!(
        r.header("content-length"),
        Some("1234"),
        "HEAD keeps the upstream's length"
    );
    assert_eq!(
        c.get("/after-head").text(),
        "/after-head",
        "request after HEAD"
    );

    let r = c.get("/204");
    assert_eq!(r.status, 204, "204 status");
    assert_eq!(
        c.get("/after-204").text(),
        "/after-204",
        "request after 204"
    );

    let r = c.get("/304");
    assert_eq!(r.status, 304, "304 status");
    assert_eq!(r.header("etag"), Some("\"v1\""), "304 validator");
    assert_eq!(
        c.get("/after-304").text(),
        "/after-304",
        "request after 304"
    );
    assert!(
        c.pending().is_empty(),
        "stray bytes after the bodiless responses"
    );
    assert_eq!(
        mock.connections(),
        1,
        "bodiless responses broke upstream reuse"
    );
}

// 7. The upstream's 100 Continue reaches the client before the body is sent.
#[test]
fn expect_100_continue_is_relayed_from_the_upstream() {
    let mock = MockUpstream::start(|req, _| Reply::ok(req.body.clone()));
    let h = conf(&[mock.addr()]).start();
    let mut c = h.client();
    c.send(
        b"POST /expect HTTP/1.1\r\nHost: hearth.test\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n",
    );
    let interim = c
        .try_read_response(false)
        .unwrap_or_else(|e| panic!("no 100 Continue before the body was sent: {e}"));
    assert_eq!(interim.status, 100, "interim status");
    c.send(b"hello");
    let r = c.read_response();
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, "hello"),
        "final response"
    );
    assert!(
        mock.requests()[0].continued,
        "upstream never saw Expect: 100-continue"
    );
}

// 8. Pipelined requests are answered in order (RFC 9112 section 9.3.2).
#[test]
fn pipelined_requests_are_answered_in_order() {
    let mock = MockUpstream::echo_target();
    let h = conf(&[mock.addr()]).start();
    let mut c = h.client();
    let mut all = get("/a");
    all.extend_from_slice(&get("/b"));
    all.extend_from_slice(&get("/c"));
    c.send(&all);
    let got: Vec<String> = (0..3).map(|_| c.read_response().text()).collect();
    assert_eq!(got, ["/a", "/b", "/c"], "pipelined responses out of order");
}

// 9. Every split point of a request is survivable.
#[test]
fn request_written_one_byte_at_a_time_works() {
    let mock = MockUpstream::start(|req, _| Reply::ok(req.body.clone()));
    let h = conf(&[mock.addr()]).start();
    let mut c = h.client();
    c.send_bytewise(
        &request("POST", "/slow", &[], b"hello"),
        Duration::from_millis(2),
    );
    let r = c.read_response();
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, "hello"),
        "bytewise request"
    );
    assert_eq!(mock.requests()[0].body, b"hello", "body at the upstream");
}

// 10. A close-delimited upstream body is relayed whole, then both connections end.
#[test]
fn close_delimited_response_is_relayed_and_not_reused() {
    let body = Arc::new(payload(100_000, 14));
    let served = Arc::clone(&body);
    let mock = MockUpstream::start(move |req, _| match req.target.as_str() {
        "/cd" => Reply::close_delimited(served.as_slice()),
        other => Reply::ok(other.as_bytes()),
    });
    let h = conf(&[mock.addr()]).start();
    let mut c = h.client();
    let r = c.get("/cd");
    assert_eq!(r.status, 200, "status");
    assert_same_bytes(&r.body, &body, "close-delimited body");
    assert!(
        c.is_closed(SHORT),
        "client connection open after a close-delimited body"
    );

    let mut c = h.client();
    assert_eq!(
        c.get("/next").text(),
        "/next",
        "request after close-delimited"
    );
    let first = mock.requests_to("/cd")[0].conn_id;
    let next = mock.requests_to("/next")[0].conn_id;
    assert_ne!(
        first, next,
        "close-delimited upstream connection was reused"
    );
    assert_eq!(mock.connections(), 2, "upstream connections");
}

// 11. Upgrade: after 101 hearth is a byte tunnel; the upstream connection is never pooled.
#[test]
fn upgrade_tunnels_bytes_both_ways_and_is_not_pooled() {
    let mock = MockUpstream::start(|req, _| match req.target.as_str() {
        "/ws" => Reply::raw(
            "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
        )
        .then_echo(),
        other => Reply::ok(other.as_bytes()),
    });
    let h = conf(&[mock.addr()]).start();
    let mut c = h.client();
    c.send(b"GET /ws HTTP/1.1\r\nHost: hearth.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n");
    let r = c.read_response();
    assert_eq!(r.status, 101, "upgrade status");
    assert_eq!(
        r.header("upgrade"),
        Some("websocket"),
        "101 lacks Upgrade:\n{}",
        r.head_text()
    );
    let rec = &mock.requests_to("/ws")[0];
    assert_eq!(
        rec.header("upgrade"),
        Some("websocket"),
        "Upgrade not sent upstream"
    );
    assert!(
        rec.has_token("connection", "upgrade"),
        "Connection: Upgrade not sent upstream"
    );

    c.send(b"ping-1");
    assert_eq!(c.read_exact(6), b"ping-1", "tunnelled bytes");
    let blob = payload(64 * 1024, 15);
    c.send(&blob);
    assert_same_bytes(
        &c.read_exact(blob.len()),
        &blob,
        "64 KiB through the tunnel",
    );
    drop(c);
    let ws_conn = rec.conn_id;
    assert!(
        mock.wait_conn_end(ws_conn, Duration::from_secs(3)),
        "upstream tunnel still open after the client closed"
    );

    let mut c = h.client();
    assert_eq!(c.get("/after").text(), "/after", "request after the tunnel");
    let after = mock.requests_to("/after")[0].conn_id;
    assert_ne!(after, ws_conn, "upgraded upstream connection was reused");
}

// 12. Answer codes hearth makes itself.
#[test]
fn unrouted_requests_get_404() {
    let mock = MockUpstream::echo_target();
    let h = conf(&[mock.addr()])
        .routes(
            "[[routes]]\nuris = [\"/api/*\", \"/health\"]\nupstream = \"backend\"\n\n\
             [[routes]]\nuris = [\"/h/*\"]\nhosts = [\"example.com\"]\nupstream = \"backend\"\n",
        )
        .start();
    let table = [
        ("/api/users", "example.org", 200),
        ("/health", "example.org", 200),
        ("/healthz", "example.org", 404),
        ("/other", "example.org", 404),
        ("/h/x", "example.com", 200),
        ("/h/x", "other.com", 404),
    ];
    for (path, host, want) in table {
        let mut c = h.client();
        c.send(format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes());
        let r = c.read_response();
        assert_eq!(r.status, want, "GET {path} with Host {host}");
    }
    assert_eq!(
        mock.request_count(),
        3,
        "requests that reached the upstream"
    );
}

#[test]
fn malformed_requests_get_400_and_the_connection_closes() {
    let mock = MockUpstream::echo_target();
    let h = conf(&[mock.addr()]).start();
    let table: [&[u8]; 3] = [
        b"this is not http\r\n\r\n",
        b"GET /x HTTP/1.1 junk\r\nHost: a\r\n\r\n",
        b"GET /x HTTP/1.1\r\nHost: a\r\nNoColonHere\r\n\r\n",
    ];
    for raw in table {
        let mut c = h.client();
        c.send(raw);
        let r = c.read_response();
        assert_eq!(
            r.status,
            400,
            "answer to {:?}",
            String::from_utf8_lossy(raw)
        );
        assert!(
            c.is_closed(SHORT),
            "connection open after 400 for {:?}",
            String::from_utf8_lossy(raw)
        );
    }
    assert_eq!(
        mock.request_count(),
        0,
        "malformed requests reached the upstream"
    );
}

#[test]
fn content_length_with_transfer_encoding_gets_400() {
    // RFC 9112 section 6.1: the combination is a smuggling vector; reject and close.
    let mock = MockUpstream::echo_target();
    let h = conf(&[mock.addr()]).start();
    let mut c = h.client();
    c.send(b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n");
    let r = c.read_response();
    assert_eq!(r.status, 400, "CL + TE");
    assert!(c.is_closed(SHORT), "connection open after CL + TE");
    assert_eq!(
        mock.request_count(),
        0,
        "CL + TE request reached the upstream"
    );
}

#[test]
fn head_trickling_past_header_timeout_gets_408() {
    let mock = MockUpstream::echo_target();
    let h = conf(&[mock.addr()])
        .client("header_timeout = \"1s\"")
        .start();
    let mut c = h.client();
    let start = Instant::now();
    c.send(b"GET / HTTP/1.1\r\nHost: a\r\n");
    // Keep the head alive with a field every 100 ms: the timeout bounds the whole head, so
    // progress must not extend it. Stop as soon as hearth says anything.
    for i in 0..40 {
        if c.wait_readable(Duration::from_millis(100)) || start.elapsed() > Duration::from_secs(3) {
            break;
        }
        let _ = c.try_send(format!("X-Slow-{i}: y\r\n").as_bytes());
    }
    let r = c.read_response();
    let took = start.elapsed();
    assert_eq!(r.status, 408, "trickling head");
    assert!(
        took >= Duration::from_millis(900) && took <= Duration::from_millis(2500),
        "408 after {took:?}, want about 1 s"
    );
    assert!(c.is_closed(SHORT), "connection open after 408");
}

#[test]
fn body_over_max_body_bytes_gets_413() {
    let mock = MockUpstream::start(|req, _| Reply::ok(req.body.clone()));
    let h = conf(&[mock.addr()])
        .client("max_body_bytes = \"10\"")
        .start();
    let mut c = h.client();
    c.send(&request("POST", "/eleven", &[], b"01234567890"));
    assert_eq!(
        c.read_response().status,
        413,
        "11-byte body with a 10-byte limit"
    );
    let mut c = h.client();
    c.send(&request("POST", "/ten", &[], b"0123456789"));
    let r = c.read_response();
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, "0123456789"),
        "10-byte body at the limit"
    );
    assert_eq!(
        mock.request_count(),
        1,
        "only the body within the limit reaches the upstream"
    );
}

#[test]
fn ten_kib_uri_gets_414() {
    let mock = MockUpstream::echo_target();
    let h = conf(&[mock.addr()]).start();
    let mut c = h.client();
    let uri = format!("/{}", "a".repeat(10 * 1024));
    let _ = c.try_send(&get(&uri));
    assert_eq!(c.read_response().status, 414, "10 KiB URI");
    assert_eq!(mock.request_count(), 0, "long URI reached the upstream");
}

#[test]
fn twenty_kib_header_gets_431() {
    let mock = MockUpstream::echo_target();
    let h = conf(&[mock.addr()])
        .client("max_head_bytes = \"16k\"")
        .start();
    let mut c = h.client();
    let big = "b".repeat(20 * 1024);
    let _ = c.try_send(&request("GET", "/", &[("X-Big", &big)], b""));
    assert_eq!(
        c.read_response().status,
        431,
        "20 KiB header with a 16k head limit"
    );
    assert_eq!(
        mock.request_count(),
        0,
        "oversized head reached the upstream"
    );
}

#[test]
fn unknown_transfer_coding_gets_501() {
    // RFC 9112 section 6.1: a server that does not understand a coding answers 501.
    let mock = MockUpstream::echo_target();
    let h = conf(&[mock.addr()]).start();
    let mut c = h.client();
    c.send(b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n");
    assert_eq!(
        c.read_response().status,
        501,
        "Transfer-Encoding: gzip, chunked"
    );
    assert_eq!(
        mock.request_count(),
        0,
        "gzip-coded request reached the upstream"
    );
}

#[test]
fn refused_upstream_connection_gets_502() {
    let h = conf(&[dead_addr()]).start();
    let mut c = h.client();
    assert_eq!(
        c.get("/").status,
        502,
        "node whose port refuses connections"
    );
}

#[test]
fn garbage_from_upstream_gets_502() {
    let mock = MockUpstream::start(|_, _| Reply::raw("garbage\r\n\r\n").then_close());
    let h = conf(&[mock.addr()]).start();
    let mut c = h.client();
    assert_eq!(
        c.get("/").status,
        502,
        "upstream sent garbage instead of a status line"
    );
}

#[test]
fn upstream_reset_before_answering_gets_502() {
    let mock = MockUpstream::start(|_, _| Reply::reset());
    let h = conf(&[mock.addr()]).start();
    let mut c = h.client();
    assert_eq!(c.get("/").status, 502, "upstream reset before answering");
    assert!(
        mock.request_count() >= 1,
        "request never reached the upstream"
    );
}

/// Sends one GET on its own connection from a thread; returns the status and how long it took.
fn timed_get(
    addr: std::net::SocketAddr,
    path: &'static str,
) -> thread::JoinHandle<(u16, Duration)> {
    thread::spawn(move || {
        let mut c = Client::connect(addr);
        let t = Instant::now();
        let status = c.get(path).status;
        (status, t.elapsed())
    })
}

#[test]
fn busy_node_with_no_queue_gets_503_at_once() {
    let mock = MockUpstream::start(|_, _| Reply::ok("slow").after(Duration::from_secs(1)));
    let h = conf(&[mock.addr()])
        .upstream("max_connections = 1")
        .upstream("queue = { size = 0, timeout = \"1s\" }")
        .start();
    let first = timed_get(h.addr(), "/first");
    assert!(
        mock.wait_requests(1, SHORT),
        "first request never reached the upstream"
    );
    let second = timed_get(h.addr(), "/second")
        .join()
        .expect("second client panicked");
    assert_eq!(
        second.0, 503,
        "request while the only connection is busy and no queue"
    );
    // At once: while the first request still holds the connection, not when it frees (the
    // queue's rules themselves are tested on a virtual clock in upstream::tests).
    assert!(
        !first.is_finished(),
        "the 503 came only after the connection freed ({:?})",
        second.1
    );
    let first = first.join().expect("first client panicked");
    assert_eq!(first.0, 200, "the request holding the connection");
    assert_eq!(
        mock.request_count(),
        1,
        "the refused request reached the upstream"
    );
    assert_eq!(mock.max_open(), 1, "max_connections = 1 exceeded");
}

#[test]
fn queued_request_times_out_with_503_and_full_queue_refuses_at_once() {
    let mock = MockUpstream::start(|_, _| Reply::ok("slow").after(Duration::from_millis(1500)));
    let h = conf(&[mock.addr()])
        .upstream("max_connections = 1")
        .upstream("queue = { size = 1, timeout = \"300ms\" }")
        .start();
    let first = timed_get(h.addr(), "/first");
    assert!(
        mock.wait_requests(1, SHORT),
        "first request never reached the upstream"
    );
    let queued = timed_get(h.addr(), "/queued");
    thread::sleep(Duration::from_millis(50));
    let overflow = timed_get(h.addr(), "/overflow");
    let mut waits = [
        queued.join().expect("queued client panicked"),
        overflow.join().expect("overflow client panicked"),
    ];
    assert_eq!(
        (waits[0].0, waits[1].0),
        (503, 503),
        "queued and overflowing requests"
    );
    // Whichever got in the queue waited its 300 ms and no less; both were answered while the
    // first request still held the connection (the queue's deadlines themselves are tested on a
    // virtual clock in runtime::deadline).
    waits.sort_by_key(|w| w.1);
    assert!(
        waits[1].1 >= Duration::from_millis(250),
        "queue timeout fired after {:?}, before its 300 ms",
        waits[1].1
    );
    assert!(
        !first.is_finished(),
        "the queued request was answered only after the connection freed ({:?})",
        waits[1].1
    );
    assert_eq!(
        first.join().expect("first client panicked").0,
        200,
        "request in flight"
    );
    assert_eq!(
        mock.request_count(),
        1,
        "a 503'd request reached the upstream"
    );
}

/// A queued request whose client stops sending its body is timed out by the body clock, as 408,
/// and not taken for a queue timeout (before, any timer of a queued request was a 503 from the
/// queue, here 9 s early).
#[test]
fn a_queued_request_that_stalls_its_body_gets_408_not_a_queue_timeout() {
    let mock = MockUpstream::start(|_, _| Reply::ok("slow").after(Duration::from_secs(3)));
    let h = conf(&[mock.addr()])
        .client("body_timeout = \"1s\"")
        .upstream("max_connections = 1")
        .upstream("queue = { size = 1, timeout = \"10s\" }")
        .start();
    let first = timed_get(h.addr(), "/first");
    assert!(
        mock.wait_requests(1, SHORT),
        "first request never reached the upstream"
    );
    let mut c = h.client();
    // The head alone: hearth holds no unread body bytes, so the client is the one awaited.
    c.send(b"POST /queued HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\n");
    let r = c.read_response();
    assert_eq!(r.status, 408, "{}", r.head_text());
    assert!(
        !first.is_finished(),
        "answered only after the connection freed"
    );
    assert_eq!(first.join().expect("first client panicked").0, 200);
    assert_eq!(
        mock.request_count(),
        1,
        "the stalled request reached the upstream"
    );
}

#[test]
fn queued_request_is_served_when_the_connection_frees() {
    let mock = MockUpstream::start(|_, _| Reply::ok("slow").after(Duration::from_millis(500)));
    let h = conf(&[mock.addr()])
        .upstream("max_connections = 1")
        .upstream("queue = { size = 1, timeout = \"2s\" }")
        .start();
    let first = timed_get(h.addr(), "/first");
    assert!(
        mock.wait_requests(1, SHORT),
        "first request never reached the upstream"
    );
    let queued = timed_get(h.addr(), "/queued")
        .join()
        .expect("queued client panicked");
    assert_eq!(queued.0, 200, "queued request once the connection freed");
    assert_eq!(
        first.join().expect("first client panicked").0,
        200,
        "first request"
    );
    assert_eq!(mock.max_open(), 1, "max_connections = 1 exceeded");
}

#[test]
fn upstream_read_timeout_gets_504() {
    let mock = MockUpstream::start(|_, _| Reply::hang(Duration::from_secs(3)));
    let h = conf(&[mock.addr()])
        .upstream("timeout = { read = \"1s\" }")
        .start();
    let mut c = h.client();
    let t = Instant::now();
    let r = c.get("/");
    let took = t.elapsed();
    assert_eq!(r.status, 504, "upstream hangs past the read timeout");
    assert!(
        took >= Duration::from_millis(900) && took <= Duration::from_millis(2500),
        "504 after {took:?}, want about 1 s"
    );
}

// 13. Client keep-alive limits.
#[test]
fn max_requests_closes_the_client_connection() {
    let mock = MockUpstream::echo_target();
    let h = conf(&[mock.addr()]).client("max_requests = 2").start();
    let mut c = h.client();
    let r = c.get("/1");
    assert_eq!(r.status, 200, "first request");
    assert!(
        !r.has_token("connection", "close"),
        "first response already closes"
    );
    let r = c.get("/2");
    assert_eq!(r.status, 200, "second request");
    assert!(
        r.has_token("connection", "close"),
        "last allowed response lacks Connection: close:\n{}",
        r.head_text()
    );
    assert!(c.is_closed(SHORT), "connection open after max_requests");
}

#[test]
fn idle_client_connection_is_closed_after_idle_timeout() {
    let mock = MockUpstream::echo_target();
    let h = conf(&[mock.addr()]).client("idle_timeout = \"1s\"").start();
    let mut c = h.client();
    assert_eq!(c.get("/").status, 200, "request before idling");
    let t = Instant::now();
    assert!(
        c.is_closed(Duration::from_secs(3)),
        "idle connection never closed"
    );
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took <= Duration::from_millis(2500),
        "idle close after {took:?}, want about 1 s"
    );
}

// 14. Connections are independent.
#[test]
fn malformed_request_does_not_disturb_another_in_flight() {
    let body = Arc::new(payload(64 * 1024, 16));
    let served = Arc::clone(&body);
    let mock = MockUpstream::start(move |req, _| match req.target.as_str() {
        "/slow" => Reply::ok(served.as_slice()).after(Duration::from_millis(500)),
        other => Reply::ok(other.as_bytes()),
    });
    let h = conf(&[mock.addr()]).start();
    let mut a = h.client();
    a.send(&get("/slow"));
    assert!(
        mock.wait_requests(1, SHORT),
        "slow request never reached the upstream"
    );
    let mut b = h.client();
    b.send(b"\x00\x01 definitely not http\r\n\r\n");
    assert_eq!(b.read_response().status, 400, "malformed request");
    let r = a.read_response();
    assert_eq!(r.status, 200, "request in flight beside a malformed one");
    assert_same_bytes(&r.body, &body, "body of the request in flight");
    assert_eq!(
        h.client().get("/fine").text(),
        "/fine",
        "request after the malformed one"
    );
}

// 15. Graceful shutdown lets requests in flight finish.
#[test]
fn sigterm_lets_the_request_in_flight_finish_and_exits_0() {
    let mock = MockUpstream::start(|_, _| Reply::ok("done").after(Duration::from_millis(500)));
    let mut h = conf(&[mock.addr()]).start();
    let mut c = h.client();
    c.send(&get("/slow"));
    assert!(
        mock.wait_requests(1, SHORT),
        "request never reached the upstream"
    );
    h.sigterm();
    let r = c
        .try_read_response(false)
        .unwrap_or_else(|e| panic!("request in flight lost on SIGTERM: {e}"));
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, "done"),
        "response in flight at SIGTERM"
    );
    let status = h
        .wait_exit(Duration::from_secs(5))
        .unwrap_or_else(|| panic!("hearth still running 5 s after SIGTERM"));
    assert!(status.success(), "exit status after SIGTERM: {status}");
}

// Issue 3: an interim response followed by nothing is a 502, not a hang and not a cut
// connection: the 100 does not commit hearth to the exchange (RFC 9110 §15.2).
#[test]
fn interim_response_then_upstream_close_gets_502() {
    let mock = MockUpstream::start(|_, _| Reply::raw("HTTP/1.1 100 Continue\r\n\r\n").then_close());
    let h = conf(&[mock.addr()]).start();
    let mut c = h.client();
    c.send(&get("/silent"));
    let interim = c.read_response();
    assert_eq!(interim.status, 100, "the interim response is relayed");
    assert_eq!(
        c.read_response().status,
        502,
        "a final 502 follows when the upstream goes away"
    );
}

// Issue 3: at `max_client_connections` hearth stops accepting instead of failing anyone; the
// waiting connection is served once the count falls below 90% of the cap.
#[test]
fn client_connection_cap_pauses_accepting_and_resumes() {
    let mock = MockUpstream::echo_target();
    let toml = conf(&[mock.addr()]).toml().replacen(
        "workers = 1",
        "workers = 1\nmax_client_connections = 4",
        1,
    );
    let h = Hearth::start(&toml);
    let mut held: Vec<Client> = (0..4).map(|_| h.client()).collect();
    for (i, c) in held.iter_mut().enumerate() {
        assert_eq!(
            c.get(&format!("/held/{i}")).status,
            200,
            "connection {i} under the cap"
        );
    }
    // The fifth connection completes in the kernel's backlog but is not accepted.
    let mut extra = h.client();
    extra.send(&get("/extra"));
    assert!(
        !extra.wait_readable(Duration::from_millis(400)),
        "a connection past the cap was served"
    );
    // Connections already open keep working at the cap.
    assert_eq!(
        held[0].get("/still").status,
        200,
        "request on an open connection at the cap"
    );
    // 4 -> 3 open is below 90% of 4: accepting resumes and the waiting request is answered.
    drop(held.pop());
    extra.set_timeout(Duration::from_secs(3));
    let r = extra.read_response();
    assert_eq!(
        (r.status, r.text()),
        (200, "/extra".to_string()),
        "the waiting connection after resuming"
    );
}

// An HTTP/1.0 request without Host goes upstream as HTTP/1.1, which needs a Host: hearth sends
// the node's address (found by fuzzing: it used to send none, and upstreams answer that with 400).
#[test]
fn http10_request_without_host_gets_the_nodes_address_upstream() {
    let mock = MockUpstream::echo_target();
    let h = conf(&[mock.addr()]).start();
    let mut c = h.client();
    c.send(b"GET /old HTTP/1.0\r\n\r\n");
    assert_eq!(c.read_response().status, 200);
    let seen = &mock.requests_to("/old")[0];
    assert_eq!(
        seen.header("host"),
        Some(mock.addr().to_string().as_str()),
        "Host sent upstream"
    );
}
