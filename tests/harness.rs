//! Tests of the test harness itself: the client against the mock upstream with no hearth in
//! between, the process wrapper against a shell script, and the config builder against the TOML
//! parser. If these fail, failures in the other suites say nothing about hearth.

mod common;

use std::net::TcpStream;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::wire::Framing;
use common::*;

const SHORT: Duration = Duration::from_secs(2);

#[test]
fn client_and_mock_exchange_keep_alive_requests() {
    let mock = MockUpstream::echo_target();
    let mut c = Client::connect(mock.addr());
    let r1 = c.get("/one");
    let r2 = c.get("/two?x=1");
    assert_eq!(r1.status, 200, "first status");
    assert_eq!(r1.text(), "/one", "first body is the echoed target");
    assert_eq!(r1.framing, Framing::Length(4), "framing of a CL response");
    assert_eq!(r2.text(), "/two?x=1", "second body");
    assert_eq!(mock.connections(), 1, "two requests on one connection");
    let reqs = mock.requests();
    assert_eq!(reqs.len(), 2, "mock recorded both requests");
    assert_eq!(
        (reqs[0].index, reqs[1].index),
        (0, 1),
        "indexes on the connection"
    );
    assert_eq!(reqs[0].method, "GET", "method recorded");
    assert_eq!(reqs[0].header("host"), Some(HOST), "host header recorded");
    assert!(
        reqs[0].head_text.starts_with("GET /one HTTP/1.1\r\n"),
        "head text kept verbatim"
    );
    assert!(mock.errors().is_empty(), "mock errors: {:?}", mock.errors());
}

#[test]
fn mock_decodes_length_and_chunked_bodies() {
    let mock = MockUpstream::start(|req, _| {
        Reply::ok(format!("{} {}", req.body.len(), checksum(&req.body)))
    });
    let mut c = Client::connect(mock.addr());
    let big = payload(300_000, 7);
    c.send(&request("POST", "/cl", &[], &big));
    let r = c.read_response();
    assert_eq!(
        r.text(),
        format!("{} {}", big.len(), checksum(&big)),
        "CL body reached the mock intact"
    );

    let mut req = request("POST", "/ch", &[("Transfer-Encoding", "chunked")], b"");
    req.extend_from_slice(&chunked_body(
        &[b"abc", &big[..70_000], b"Z"],
        &[("X-Sum", "1")],
    ));
    c.send(&req);
    let r = c.read_response();
    let mut want = b"abc".to_vec();
    want.extend_from_slice(&big[..70_000]);
    want.push(b'Z');
    assert_eq!(
        r.text(),
        format!("{} {}", want.len(), checksum(&want)),
        "chunked body decoded"
    );
    let rec = &mock.requests()[1];
    assert!(rec.chunked, "mock noted chunked framing");
    assert_eq!(rec.body, want, "decoded chunked body");
    assert_eq!(
        rec.trailers,
        vec![("X-Sum".to_string(), "1".to_string())],
        "request trailers kept"
    );
}

#[test]
fn client_parses_chunked_responses_with_trailers() {
    let mock = MockUpstream::start(|_, _| {
        Reply::chunked(
            &[b"hello ", b"world"],
            &[("X-Checksum", "abc"), ("X-Two", "2")],
        )
    });
    let mut c = Client::connect(mock.addr());
    let r = c.get("/");
    assert_eq!(r.framing, Framing::Chunked, "framing");
    assert_eq!(r.text(), "hello world", "decoded body");
    assert_eq!(r.trailer("x-checksum"), Some("abc"), "trailer kept");
    assert_eq!(r.trailers.len(), 2, "both trailers");
    assert!(
        r.raw.ends_with(b"0\r\nX-Checksum: abc\r\nX-Two: 2\r\n\r\n"),
        "raw keeps the framing"
    );
    // The connection is still usable: chunked framing was consumed exactly.
    assert_eq!(c.get("/").text(), "hello world", "second chunked response");
}

#[test]
fn client_reads_pipelined_responses_in_order() {
    let mock = MockUpstream::echo_target();
    let mut c = Client::connect(mock.addr());
    let mut all = get("/a");
    all.extend_from_slice(&get("/b"));
    all.extend_from_slice(&get("/c"));
    c.send(&all);
    let bodies: Vec<String> = (0..3).map(|_| c.read_response().text()).collect();
    assert_eq!(bodies, ["/a", "/b", "/c"], "pipelined responses in order");
    assert!(
        c.pending().is_empty(),
        "no stray bytes after three responses"
    );
}

#[test]
fn client_handles_bodiless_responses() {
    let mock = MockUpstream::start(|req, _| match req.target.as_str() {
        "/head" => Reply::raw("HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n"),
        "/204" => Reply::raw("HTTP/1.1 204 No Content\r\nX-A: b\r\n\r\n"),
        "/304" => Reply::raw("HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n"),
        _ => Reply::ok("next"),
    });
    let mut c = Client::connect(mock.addr());
    c.send(&request("HEAD", "/head", &[], b""));
    let r = c.read_head_response();
    assert_eq!(
        (r.status, r.body.len()),
        (200, 0),
        "HEAD answer has no body"
    );
    assert_eq!(
        r.header("content-length"),
        Some("1234"),
        "HEAD keeps the length header"
    );
    assert_eq!(c.get("/204").status, 204, "204");
    assert_eq!(
        c.get("/304").status,
        304,
        "304 with a Content-Length has no body"
    );
    assert_eq!(c.get("/x").text(), "next", "connection still in sync");
}

#[test]
fn mock_answers_100_continue_before_reading_the_body() {
    let mock = MockUpstream::start(|req, _| Reply::ok(req.body.clone()));
    let mut c = Client::connect(mock.addr());
    c.send(b"POST /e HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n");
    let interim = c.read_response();
    assert_eq!(interim.status, 100, "interim answer");
    c.send(b"hello");
    let r = c.read_response();
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, "hello"),
        "final answer after the body"
    );
    assert!(mock.requests()[0].continued, "mock noted that it sent 100");
}

#[test]
fn close_delimited_body_and_is_closed() {
    let mock = MockUpstream::start(|_, _| Reply::close_delimited("until the end"));
    let mut c = Client::connect(mock.addr());
    let r = c.get("/");
    assert_eq!(r.framing, Framing::Close, "framing");
    assert_eq!(r.text(), "until the end", "body read to the close");
    assert!(c.is_closed(SHORT), "closed after a close-delimited body");
    assert!(mock.wait_conn_end(0, SHORT), "mock conn ended");
    assert_eq!(
        mock.conn(0).and_then(|c| c.end),
        Some(ConnEnd::MockClosed),
        "mock closed it"
    );
}

#[test]
fn is_closed_distinguishes_open_closed_and_data() {
    let mock = MockUpstream::start(|req, _| match req.target.as_str() {
        "/hang" => Reply::hang(Duration::from_millis(300)),
        "/late" => Reply::ok("late").after(Duration::from_millis(100)),
        _ => Reply::ok("x"),
    });
    let mut c = Client::connect(mock.addr());
    c.send(&get("/hang"));
    let t = Instant::now();
    assert!(
        !c.is_closed(Duration::from_millis(50)),
        "open connection reported closed"
    );
    assert!(c.is_closed(SHORT), "hang then close not seen as closed");
    assert!(
        t.elapsed() >= Duration::from_millis(250),
        "closed too early: {:?}",
        t.elapsed()
    );

    let mut c = Client::connect(mock.addr());
    c.send(&get("/late"));
    assert!(!c.is_closed(SHORT), "arriving data counted as a close");
    assert_eq!(
        c.read_response().text(),
        "late",
        "data seen by is_closed is still readable"
    );
}

#[test]
fn close_and_reset_without_answer_fail_the_read() {
    let mock = MockUpstream::start(|req, _| match req.target.as_str() {
        "/close" => Reply::close(),
        "/reset" => Reply::reset(),
        "/partial" => Reply::raw("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc").then_reset(),
        _ => Reply::ok("x"),
    });
    for path in ["/close", "/reset", "/partial"] {
        let mut c = Client::connect(mock.addr());
        c.send(&get(path));
        assert!(
            c.try_read_response(false).is_err(),
            "{path}: read should fail"
        );
    }
    assert!(
        wait_until(SHORT, || mock.open_now() == 0),
        "mock connections still open"
    );
}

#[test]
fn mock_echoes_after_101() {
    let mock = MockUpstream::start(|_, _| {
        Reply::raw(
            "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
        )
        .then_echo()
    });
    let mut c = Client::connect(mock.addr());
    let mut req =
        b"GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
            .to_vec();
    // Bytes sent right behind the head must be echoed too.
    req.extend_from_slice(b"early");
    c.send(&req);
    let r = c.read_response();
    assert_eq!(r.status, 101, "switching protocols");
    assert_eq!(c.read_exact(5), b"early", "bytes behind the head echoed");
    let blob = payload(100_000, 3);
    c.send(&blob);
    assert_eq!(
        c.read_exact(blob.len()),
        blob,
        "tunnelled bytes echoed exactly"
    );
    c.shutdown_write();
    assert!(c.is_closed(SHORT), "echo ends when the client closes");
    assert!(mock.wait_conn_end(0, SHORT), "mock echo thread ended");
    assert_eq!(
        mock.conn(0).and_then(|c| c.end),
        Some(ConnEnd::PeerClosed),
        "end kind"
    );
}

#[test]
fn bytewise_sending_reaches_the_mock() {
    let mock = MockUpstream::start(|req, _| Reply::ok(req.body.clone()));
    let mut c = Client::connect(mock.addr());
    c.send_bytewise(
        &request("POST", "/b", &[], b"hello"),
        Duration::from_micros(200),
    );
    assert_eq!(
        c.read_response().text(),
        "hello",
        "body sent a byte at a time"
    );
}

#[test]
fn mock_counts_simultaneous_connections_and_peer_closes() {
    let mock = MockUpstream::start(|_, _| Reply::ok("slow").after(Duration::from_millis(200)));
    let addr = mock.addr();
    let workers: Vec<_> = (0..3)
        .map(|_| {
            thread::spawn(move || {
                let mut c = Client::connect(addr);
                c.get("/").status
            })
        })
        .collect();
    for w in workers {
        assert_eq!(
            w.join().expect("client thread panicked"),
            200,
            "concurrent status"
        );
    }
    assert_eq!(mock.connections(), 3, "three connections accepted");
    assert_eq!(mock.max_open(), 3, "all three were open together");
    assert!(
        wait_until(SHORT, || mock.open_now() == 0),
        "clients closed, mock still open"
    );
    for c in mock.conns() {
        assert_eq!(c.end, Some(ConnEnd::PeerClosed), "conn {} end", c.id);
        let (reply, closed) = (
            c.last_reply_at.expect("replied"),
            c.closed_at.expect("closed"),
        );
        assert!(closed >= reply, "close time after the reply");
    }
}

#[test]
fn handler_sees_request_index_per_connection() {
    let mock = MockUpstream::start(|req, i| Reply::ok(format!("{}:{i}", req.conn_id)));
    let mut a = Client::connect(mock.addr());
    assert_eq!(a.get("/").text(), "0:0", "first conn, first request");
    assert_eq!(a.get("/").text(), "0:1", "first conn, second request");
    let mut b = Client::connect(mock.addr());
    assert_eq!(b.get("/").text(), "1:0", "second conn, first request");
}

#[test]
fn mock_drop_stops_promptly_even_while_hanging() {
    let mock = MockUpstream::start(|_, _| Reply::hang(Duration::from_secs(30)));
    let addr = mock.addr();
    let mut c = Client::connect(addr);
    c.send(&get("/"));
    assert!(mock.wait_requests(1, SHORT), "request reached the mock");
    let t = Instant::now();
    drop(mock);
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "drop took {:?}",
        t.elapsed()
    );
    assert!(c.is_closed(SHORT), "client connection closed by the drop");
    assert!(
        TcpStream::connect(addr).is_err(),
        "listener still accepting after drop"
    );
}

#[test]
fn reply_helpers_write_what_they_say() {
    let mock = MockUpstream::start(|req, _| match req.target.as_str() {
        "/ka" => Reply::keep_alive("k", Some(2), Some(3)),
        "/10" => Reply::http10("old"),
        "/close" => Reply::ok_close("bye"),
        _ => Reply::status(404, "no"),
    });
    let mut c = Client::connect(mock.addr());
    let r = c.get("/ka");
    assert_eq!(
        r.header("keep-alive"),
        Some("timeout=2, max=3"),
        "Keep-Alive params"
    );
    assert!(
        r.has_token("connection", "keep-alive"),
        "Connection: keep-alive"
    );
    let r = c.get("/nope");
    assert_eq!(
        (r.status, r.reason.as_str()),
        (404, "Not Found"),
        "status helper"
    );
    let r = c.get("/10");
    assert_eq!(
        (r.version, r.text().as_str()),
        (0, "old"),
        "HTTP/1.0 helper"
    );
    assert!(c.is_closed(SHORT), "HTTP/1.0 helper closes");
    let mut c = Client::connect(mock.addr());
    let r = c.get("/close");
    assert!(
        r.has_token("connection", "close"),
        "Connection: close helper"
    );
    assert!(c.is_closed(SHORT), "ok_close closes");
}

#[test]
fn parse_listening_finds_the_address() {
    let table = [
        (
            "[INFO hearth] listening on 127.0.0.1:8080",
            Some("127.0.0.1:8080"),
        ),
        (
            "core 0: listening on 127.0.0.1:41234 (reuseport)",
            Some("127.0.0.1:41234"),
        ),
        ("listening on \"127.0.0.1:9\".", Some("127.0.0.1:9")),
        ("listening on [::1]:80, workers=2", Some("[::1]:80")),
        ("listening soon", None),
        ("listening on nothing", None),
    ];
    for (line, want) in table {
        let got = parse_listening(line).map(|a| a.to_string());
        assert_eq!(got.as_deref(), want, "line {line:?}");
    }
}

#[test]
fn launch_reads_logs_and_terminates_with_sigterm() {
    // A stand-in for hearth: logs the line, exits 0 on SIGTERM.
    let script = "trap 'echo stopping >&2; exit 0' TERM; \
                  echo 'INFO listening on 127.0.0.1:4321' >&2; echo to-stdout; \
                  i=0; while [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done; exit 3";
    let mut cmd = Command::new("sh");
    cmd.arg("-c").arg(script);
    let mut h = Hearth::launch(cmd, ConfigFile::new("x = 1"), "x = 1");
    assert_eq!(
        h.addr().to_string(),
        "127.0.0.1:4321",
        "address parsed from the log"
    );
    assert!(
        h.wait_log(&["to-stdout"], SHORT),
        "stdout collected: {:?}",
        h.logs()
    );
    assert!(h.exited().is_none(), "script exited early");
    let status = h.terminate().expect("script did not exit after SIGTERM");
    assert_eq!(status.code(), Some(0), "exit status after SIGTERM");
    assert!(
        h.wait_log(&["stopping"], SHORT),
        "stderr after SIGTERM collected: {:?}",
        h.logs()
    );
}

#[test]
fn config_file_is_removed_on_drop() {
    let f = ConfigFile::new("workers = 1\n");
    let path = f.path().to_path_buf();
    assert_eq!(
        std::fs::read_to_string(&path).expect("config readable"),
        "workers = 1\n",
        "content"
    );
    drop(f);
    assert!(!path.exists(), "config file left behind");
}

#[test]
fn conf_builder_writes_valid_toml() {
    let [a, b] = dead_addrs();
    let toml = conf(&[a])
        .weighted(&[(a, 1), (b, 2)])
        .workers(2)
        .client("max_requests = 2")
        .upstream("keepalive_pool = { size = 0 }")
        .toml();
    let v: toml::Table = toml::from_str(&toml).unwrap_or_else(|e| panic!("bad TOML {e}:\n{toml}"));
    assert_eq!(v["workers"].as_integer(), Some(2), "workers");
    assert_eq!(
        v["client"]["max_requests"].as_integer(),
        Some(2),
        "client line"
    );
    let up = &v["upstreams"]["backend"];
    assert_eq!(
        up["nodes"][&a.to_string()].as_integer(),
        Some(1),
        "weight of a"
    );
    assert_eq!(
        up["nodes"][&b.to_string()].as_integer(),
        Some(2),
        "weight of b"
    );
    assert_eq!(
        up["keepalive_pool"]["size"].as_integer(),
        Some(0),
        "upstream line"
    );
    assert_eq!(
        v["routes"][0]["upstream"].as_str(),
        Some("backend"),
        "default route"
    );
    assert_eq!(
        v["listen"][0]["addr"].as_str(),
        Some("127.0.0.1:0"),
        "listener"
    );
}

#[test]
fn dead_addr_refuses_connections() {
    let a = dead_addr();
    assert!(
        TcpStream::connect(a).is_err(),
        "something listens on the dead port {a}"
    );
}

#[test]
fn payload_is_deterministic_and_checksum_sensitive() {
    assert_eq!(payload(1000, 1), payload(1000, 1), "same seed, same bytes");
    assert_ne!(payload(1000, 1), payload(1000, 2), "different seeds differ");
    let mut p = payload(1000, 1);
    let before = checksum(&p);
    p[500] ^= 1;
    assert_ne!(checksum(&p), before, "one flipped bit changes the checksum");
}

#[test]
fn wait_until_times_out_and_succeeds() {
    let t = Instant::now();
    assert!(
        !wait_until(Duration::from_millis(30), || false),
        "false condition reported true"
    );
    assert!(
        t.elapsed() >= Duration::from_millis(30),
        "returned before the deadline"
    );
    let n = Arc::new(AtomicUsize::new(0));
    let m = Arc::clone(&n);
    assert!(
        wait_until(SHORT, move || m.fetch_add(1, Ordering::SeqCst) >= 3),
        "counter condition"
    );
}

#[test]
fn wait_readable_sees_data_and_times_out() {
    let mock = MockUpstream::start(|_, _| Reply::ok("x").after(Duration::from_millis(100)));
    let mut c = Client::connect(mock.addr());
    assert!(
        !c.wait_readable(Duration::from_millis(30)),
        "nothing sent yet, nothing readable"
    );
    c.send(&get("/"));
    assert!(c.wait_readable(SHORT), "answer not seen as readable");
    assert_eq!(
        c.read_response().text(),
        "x",
        "buffered answer still parsed"
    );
}
