//! TLS on both sides: certificates chosen by SNI on hearth's listeners, https upstreams with
//! verification, client certificates and a pool key that keeps identities apart, pooled and
//! resumed upstream sessions, the handshake bounded by `client.header_timeout`, and
//! certificates that reload with the configuration. Certificates are made at test time (rcgen).

mod common;
#[path = "common/tls.rs"]
mod tlskit;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use tlskit::{cert_der, Pki, TlsClient, TlsUpstream};

fn p(path: &Path) -> String {
    path.display().to_string()
}

/// `conf`'s TOML with TLS on its (first) listener: `tls` plus `certs`.
fn with_listener_tls(toml: &str, default: (&Path, &Path), certs: &[(&Path, &Path)]) -> String {
    let mut tls = format!(
        "addr = \"127.0.0.1:0\"\ntls = {{ cert = \"{}\", key = \"{}\" }}\n",
        p(default.0),
        p(default.1)
    );
    if !certs.is_empty() {
        let list: Vec<String> = certs
            .iter()
            .map(|(c, k)| format!("{{ cert = \"{}\", key = \"{}\" }}", p(c), p(k)))
            .collect();
        tls.push_str(&format!("certs = [{}]\n", list.join(", ")));
    }
    toml.replacen("addr = \"127.0.0.1:0\"\n", &tls, 1)
}

fn series(name: &str, node: std::net::SocketAddr) -> String {
    format!("hearth_upstream_{name}{{upstream=\"backend\",node=\"{node}\"}}")
}

/// hearth's TLS handshake counters for `node`: (full, resumed, failed).
fn handshakes(h: &Hearth, node: std::net::SocketAddr) -> (f64, f64, f64) {
    let m = h.metrics();
    let count = |name| metric(&m, &series(name, node));
    (
        count("tls_full_handshakes_total"),
        count("tls_resumed_handshakes_total"),
        count("tls_handshake_failures_total"),
    )
}

#[test]
fn listener_serves_the_certificate_sni_picks_and_forwards_proto_https() {
    let pki = Pki::new("sni");
    let default = pki.issue("default", &["default.test"]);
    let a = pki.issue("a", &["a.test"]);
    let wild = pki.issue("wild", &["*.w.test"]);
    let mock = MockUpstream::echo_target();
    let toml = with_listener_tls(
        &conf(&[mock.addr()]).toml(),
        (&default.0, &default.1),
        &[(&a.0, &a.1), (&wild.0, &wild.1)],
    );
    let h = Hearth::start(&toml);
    let cases: [(Option<&str>, &Path); 5] = [
        (Some("a.test"), &a.0),
        (Some("x.w.test"), &wild.0),
        (Some("deeper.x.w.test"), &default.0),
        (Some("other.test"), &default.0),
        (None, &default.0),
    ];
    for (sni, want) in cases {
        let mut c = TlsClient::connect(h.addr(), sni);
        assert_eq!(
            c.served_cert(),
            cert_der(want),
            "certificate for SNI {sni:?}"
        );
        assert_eq!(c.alpn().as_deref(), Some(&b"http/1.1"[..]), "ALPN");
        let (status, _, body) = c.get("a.test", "/sni");
        assert_eq!((status, body.as_slice()), (200, &b"/sni"[..]), "{sni:?}");
    }
    let seen = mock.requests();
    assert_eq!(seen.len(), cases.len());
    for r in &seen {
        assert_eq!(
            r.header("x-forwarded-proto"),
            Some("https"),
            "{}",
            r.head_text
        );
    }
    // A plain-HTTP listener still says http.
    let plain = conf(&[mock.addr()]).start();
    assert_eq!(plain.client().get("/plain").status, 200);
    let last = mock.requests_to("/plain");
    assert_eq!(last[0].header("x-forwarded-proto"), Some("http"));
}

/// An https upstream at `127.0.0.1:PORT` whose certificate names 127.0.0.1 and `up.test`.
fn https_conf(up: &TlsUpstream, tls: &str) -> Conf {
    conf(&[up.addr()])
        .upstream("scheme = \"https\"")
        .upstream(&format!("tls = {{ {tls} }}"))
        .admin()
}

/// An upstream with a certificate from `pki` for `names`, and hearth in front of it trusting
/// `pki`'s CA, with the request caps raised so that idleness (1 s), not a request count, closes
/// pooled connections.
fn long_lived_https(pki: &Pki, names: &[&str]) -> (TlsUpstream, Hearth) {
    let (cert, key) = pki.issue("up", names);
    let up = TlsUpstream::start(&cert, &key, None);
    let h = https_conf(&up, &format!("ca = \"{}\"", p(&pki.ca_path())))
        .upstream("keepalive_pool = { idle_timeout = \"1s\", requests = 5000 }")
        .client("max_requests = 2000")
        .start();
    (up, h)
}

#[test]
fn upstream_https_is_verified_against_the_configured_ca() {
    let pki = Pki::new("verify");
    let (cert, key) = pki.issue("up", &["127.0.0.1", "up.test", HOST]);
    let up = TlsUpstream::start(&cert, &key, None);
    let ca = p(&pki.ca_path());
    // SNI defaults to the Host the request carries (pass_host = "pass"); then an explicit name.
    for tls in [
        format!("ca = \"{ca}\""),
        format!("ca = \"{ca}\", sni = \"up.test\""),
    ] {
        let h = https_conf(&up, &tls).start();
        let r = h.client().get("/v");
        assert_eq!(r.status, 200, "{tls}: {}", h.logs_text());
        assert!(r.text().ends_with("target=/v"), "{}", r.text());
        assert_eq!(handshakes(&h, up.addr()), (1.0, 0.0, 0.0), "{tls}");
    }
}

#[test]
fn upstream_https_fails_with_502_and_a_reason_for_a_wrong_name_or_an_unknown_ca() {
    let pki = Pki::new("fail");
    let stranger = Pki::new("stranger");
    let (cert, key) = pki.issue("up", &["other.test"]);
    let up = TlsUpstream::start(&cert, &key, None);
    let cases = [
        (
            format!("ca = \"{}\", sni = \"up.test\"", p(&pki.ca_path())),
            "not valid for name",
        ),
        (
            format!("ca = \"{}\", sni = \"other.test\"", p(&stranger.ca_path())),
            "UnknownIssuer",
        ),
    ];
    for (tls, reason) in cases {
        let h = https_conf(&up, &tls).start();
        let r = h.client().get("/f");
        assert_eq!(r.status, 502, "{tls}");
        assert!(
            h.wait_log(
                &["TLS handshake with upstream", reason],
                Duration::from_secs(5)
            ),
            "no log line naming {reason:?}:\n{}",
            h.logs_text()
        );
        if let Some(line) = h.logs().iter().find(|l| l.contains("TLS handshake with")) {
            eprintln!("{line}");
        }
        let m = h.metrics();
        assert_eq!(
            metric(&m, &series("tls_handshake_failures_total", up.addr())),
            1.0
        );
    }
    // verify = false accepts the same certificate, and says so at start.
    let h = https_conf(&up, "verify = false, sni = \"up.test\"").start();
    assert_eq!(h.client().get("/nv").status, 200);
    assert!(h.logs_text().contains("tls.verify"), "{}", h.logs_text());
}

#[test]
fn client_certificates_reach_the_upstream_and_separate_pools() {
    let pki = Pki::new("mtls");
    let (cert, key) = pki.issue("up", &["127.0.0.1", HOST]);
    let up = TlsUpstream::start(&cert, &key, Some(&pki));
    let ca = p(&pki.ca_path());
    let ca_line = format!("ca = \"{ca}\"");
    let (ca_cert, ca_key) = pki.issue("client-a", &["client-a.test"]);
    let (cb_cert, cb_key) = pki.issue("client-b", &["client-b.test"]);
    // Without a client certificate the upstream refuses the handshake.
    let h = https_conf(&up, &ca_line).start();
    assert_eq!(h.client().get("/none").status, 502);
    drop(h);
    // Two upstreams, one address, two client certificates.
    let node = up.addr();
    let toml = format!(
        "workers = 1\n[[listen]]\naddr = \"127.0.0.1:0\"\n\
         [upstreams.a]\nnodes = {{ \"{node}\" = 1 }}\nscheme = \"https\"\n\
         tls = {{ {ca_line}, client_cert = \"{}\", client_key = \"{}\" }}\n\
         [upstreams.b]\nnodes = {{ \"{node}\" = 1 }}\nscheme = \"https\"\n\
         tls = {{ {ca_line}, client_cert = \"{}\", client_key = \"{}\" }}\n\
         [[routes]]\nuris = [\"/a/*\"]\nupstream = \"a\"\n\
         [[routes]]\nuris = [\"/b/*\"]\nupstream = \"b\"\n",
        p(&ca_cert),
        p(&ca_key),
        p(&cb_cert),
        p(&cb_key)
    );
    let h = Hearth::start(&toml);
    let mut c = h.client();
    for i in 0..20 {
        let path = if i % 2 == 0 { "/a/x" } else { "/b/x" };
        assert_eq!(c.get(path).status, 200, "{path}: {}", h.logs_text());
    }
    let (a_der, b_der) = (cert_der(&ca_cert), cert_der(&cb_cert));
    let conns: Vec<_> = up
        .conns()
        .into_iter()
        .filter(|c| c.kind.is_some())
        .collect();
    assert_eq!(
        conns.len(),
        2,
        "one pooled connection per identity: {conns:?}"
    );
    for conn in &conns {
        let who = conn.client_cert.as_ref().expect("a client certificate");
        let want = if *who == a_der {
            "/a/x"
        } else {
            assert_eq!(*who, b_der, "an unknown client certificate");
            "/b/x"
        };
        assert_eq!(conn.targets.len(), 10, "{conn:?}");
        assert!(
            conn.targets.iter().all(|t| t == want),
            "a connection made for one identity served another: {conn:?}"
        );
    }
}

#[test]
fn a_thousand_requests_cost_one_handshake_and_the_next_connection_resumes() {
    let pki = Pki::new("resume");
    let (up, h) = long_lived_https(&pki, &["127.0.0.1", HOST]);
    let mut c = h.client();
    for i in 0..1000 {
        let r = c.get("/r");
        assert_eq!(r.status, 200, "request {i}");
    }
    assert_eq!(up.handshakes(), (1, 0), "{:?}", up.conns());
    assert_eq!(up.conns()[0].targets.len(), 1000);
    // hearth's idle timeout closes the pooled connection; the next one resumes the session.
    assert!(
        wait_until(Duration::from_secs(10), || up.conns()[0].closed),
        "the pooled connection was never closed for idleness"
    );
    let m = h.metrics();
    let idle_closes = format!(
        "hearth_upstream_closes_total{{upstream=\"backend\",node=\"{}\",reason=\"idle_timeout\"}}",
        up.addr()
    );
    assert_eq!(metric(&m, &idle_closes), 1.0, "{m}");
    assert_eq!(c.get("/after").status, 200);
    assert_eq!(up.handshakes(), (1, 1), "{:?}", up.handshake_errors());
    assert_eq!(handshakes(&h, up.addr()), (1.0, 1.0, 0.0));
}

#[test]
fn a_stalled_client_handshake_is_closed_at_header_timeout() {
    let pki = Pki::new("stall");
    let (cert, key) = pki.issue("site", &["site.test"]);
    let mock = MockUpstream::echo_target();
    let toml = with_listener_tls(
        &conf(&[mock.addr()])
            .client("header_timeout = \"1s\"")
            .toml(),
        (&cert, &key),
        &[],
    );
    let h = Hearth::start(&toml);
    // Half a ClientHello record header, then silence.
    let mut c = Client::connect(h.addr());
    c.send(&[0x16, 0x03, 0x01]);
    let started = Instant::now();
    assert!(c.is_closed(Duration::from_secs(10)), "still open");
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "closed before header_timeout: {:?}",
        started.elapsed()
    );
    // A plain-HTTP request on the TLS port gets no plain-text answer.
    let mut c = Client::connect(h.addr());
    c.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    let got = c.read_until_close(Duration::from_secs(10));
    assert!(
        !got.starts_with(b"HTTP/"),
        "{}",
        String::from_utf8_lossy(&got)
    );
}

#[test]
fn reloaded_certificates_serve_new_connections_while_open_ones_keep_working() {
    let pki = Pki::new("reload");
    let (cert, key) = pki.issue("site", &["site.test"]);
    let old = cert_der(&cert);
    let mock = MockUpstream::echo_target();
    let toml = with_listener_tls(&conf(&[mock.addr()]).toml(), (&cert, &key), &[]);
    let h = Hearth::start(&toml);
    let mut open = TlsClient::connect(h.addr(), Some("site.test"));
    assert_eq!(open.get("site.test", "/1").0, 200);
    assert_eq!(open.served_cert(), old);
    // New files at the same paths, as a renewal leaves them.
    let renewed = pki.issue("site", &["site.test"]);
    assert_eq!(renewed.0, cert);
    let new = cert_der(&cert);
    assert_ne!(new, old);
    h.reload_with(&toml);
    assert!(
        h.wait_log(&["configuration reloaded"], Duration::from_secs(5)),
        "{}",
        h.logs_text()
    );
    let mut fresh = TlsClient::connect(h.addr(), Some("site.test"));
    assert_eq!(
        fresh.served_cert(),
        new,
        "a new connection after the reload"
    );
    assert_eq!(fresh.get("site.test", "/2").0, 200);
    assert_eq!(open.get("site.test", "/3").0, 200, "the open connection");
}

// Megabytes each way through TLS on both sides: records split across reads, buffers that fill,
// and rustls holding plaintext while the socket has nothing more (the readiness rule for TLS).
#[test]
fn large_bodies_cross_tls_on_both_sides() {
    let pki = Pki::new("bulk");
    let (site_cert, site_key) = pki.issue("site", &["site.test"]);
    let (up_cert, up_key) = pki.issue("up", &["127.0.0.1", HOST, "site.test"]);
    let up = TlsUpstream::start(&up_cert, &up_key, None);
    let toml = with_listener_tls(
        &https_conf(&up, &format!("ca = \"{}\"", p(&pki.ca_path()))).toml(),
        (&site_cert, &site_key),
        &[],
    );
    let h = Hearth::start(&toml);
    let mut c = TlsClient::connect(h.addr(), Some("site.test"));
    for n in [1, 16_383, 16_385, 100_000, 3 << 20] {
        let (status, _, body) = c.get("site.test", &format!("/big/{n}"));
        assert_eq!((status, body.len()), (200, n));
        let want: Vec<u8> = payload(n, 7).iter().map(|b| b'a' + b % 26).collect();
        assert!(body == want, "body of {n} bytes differs");
    }
    // A large request body from a TLS client to a plain upstream.
    let mock = MockUpstream::start(|r: &Recorded, _| Reply::ok(format!("{}", checksum(&r.body))));
    let toml = with_listener_tls(&conf(&[mock.addr()]).toml(), (&site_cert, &site_key), &[]);
    let h = Hearth::start(&toml);
    let mut c = TlsClient::connect(h.addr(), Some("site.test"));
    let body = payload(2 << 20, 9);
    let req = request(
        "POST",
        "/up",
        &[("Content-Length", &body.len().to_string())],
        &body,
    );
    std::io::Write::write_all(&mut c.stream, &req).expect("sending a large body");
    let (status, _, answer) = tlskit::read_response(&mut c.stream).expect("response");
    assert_eq!(status, 200);
    assert_eq!(
        String::from_utf8_lossy(&answer),
        checksum(&body).to_string()
    );
}

/// Under `max_connections`, a core with waiting requests is handed another core's idle https
/// connection together with its TLS session, so the single connection serves both cores without
/// a new handshake.
#[test]
fn https_connections_move_between_cores_with_their_session() {
    let pki = Pki::new("handover");
    let (cert, key) = pki.issue("up", &["127.0.0.1", HOST]);
    let up = TlsUpstream::start(&cert, &key, None);
    let h = https_conf(&up, &format!("ca = \"{}\"", p(&pki.ca_path())))
        .workers(2)
        .upstream("max_connections = 1")
        .upstream("queue = { size = 256, timeout = \"10s\" }")
        .upstream("keepalive_pool = { requests = 100000 }")
        .start();
    let addr = h.addr();
    // Enough client connections that SO_REUSEPORT gives both cores some; each sends a few
    // requests so the one upstream connection is released while the other core waits.
    let clients: Vec<_> = (0..16)
        .map(|i| {
            std::thread::spawn(move || {
                let mut c = Client::connect(addr);
                for j in 0..20 {
                    let r = c.get(&format!("/c{i}/{j}"));
                    assert_eq!(r.status, 200, "client {i} request {j}");
                }
            })
        })
        .collect();
    for c in clients {
        c.join().expect("a client saw a failed request");
    }
    let m = h.metrics();
    let handed = metric(&m, &series("handed_over_total", up.addr()));
    assert!(
        handed >= 1.0,
        "no hand-over between the cores (both cores may not have had clients): {m}"
    );
    assert_eq!(
        up.handshakes(),
        (1, 0),
        "the connection moved rather than being reopened: {:?}",
        up.handshake_errors()
    );
    assert_eq!(up.conns()[0].targets.len(), 320);
}

/// `GET path` with Host `host`.
fn get_as(host: &str, path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n").into_bytes()
}

#[test]
fn pass_host_upstreams_send_each_request_host_as_sni_and_pool_per_name() {
    let pki = Pki::new("sni");
    let (up, h) = long_lived_https(&pki, &["a.test", "b.test"]);
    let mut c = h.client();
    // Alternating names on one client connection: one upstream connection per name.
    for i in 0..100 {
        let host = if i % 2 == 0 { "a.test:8443" } else { "B.test" };
        let r = c.exchange(&get_as(host, "/s")).expect("answer");
        assert_eq!(r.status, 200, "request {i} ({host}): {}", h.logs_text());
    }
    let conns = up.conns();
    assert_eq!(conns.len(), 2, "{conns:?}");
    let mut snis: Vec<&str> = conns.iter().filter_map(|c| c.sni.as_deref()).collect();
    snis.sort_unstable();
    assert_eq!(snis, ["a.test", "b.test"], "{conns:?}");
    for conn in &conns {
        let sni = conn.sni.as_deref().unwrap_or("");
        assert_eq!(conn.hosts.len(), 50, "{conn:?}");
        // Never crossed: every request on a connection is for the name it was made for.
        for host in &conn.hosts {
            assert_eq!(tlskit_host(host), sni, "{conn:?}");
        }
    }
    assert_eq!(up.handshakes(), (2, 0));
    // After hearth's idle timeout closes both, the next connection for a.test resumes.
    assert!(
        wait_until(Duration::from_secs(10), || up
            .conns()
            .iter()
            .all(|c| c.closed)),
        "the pooled connections were never closed for idleness"
    );
    let r = c.exchange(&get_as("a.test", "/again")).expect("answer");
    assert_eq!(r.status, 200, "{}", h.logs_text());
    let conns = up.conns();
    assert_eq!(conns.len(), 3, "{conns:?}");
    assert_eq!(conns[2].sni.as_deref(), Some("a.test"));
    assert_eq!(up.handshakes(), (2, 1), "{:?}", up.handshake_errors());
    let m = h.metrics();
    assert_eq!(
        metric(&m, &series("tls_resumed_handshakes_total", up.addr())),
        1.0
    );
}

/// The name part of a Host value, lowercase.
fn tlskit_host(host: &str) -> String {
    host.split(':').next().unwrap_or("").to_ascii_lowercase()
}

#[test]
fn a_host_the_upstream_certificate_does_not_cover_gets_502_and_a_log_line() {
    let pki = Pki::new("sni-miss");
    let (cert, key) = pki.issue("up", &["a.test"]);
    let up = TlsUpstream::start(&cert, &key, None);
    let h = https_conf(&up, &format!("ca = \"{}\"", p(&pki.ca_path()))).start();
    let mut c = h.client();
    let r = c.exchange(&get_as("c.test", "/miss")).expect("answer");
    assert_eq!(r.status, 502);
    assert!(
        h.wait_log(
            &[
                "TLS handshake with upstream",
                "SNI c.test",
                "not valid for name"
            ],
            Duration::from_secs(5)
        ),
        "no log line naming the name and reason:\n{}",
        h.logs_text()
    );
    // The covered name still works, on a connection of its own.
    let mut c = h.client();
    let r = c.exchange(&get_as("a.test", "/hit")).expect("answer");
    assert_eq!(r.status, 200, "{}", h.logs_text());
    let conns = up.conns();
    assert_eq!(conns.last().and_then(|c| c.sni.as_deref()), Some("a.test"));
}

#[test]
fn a_fixed_sni_and_per_request_sni_on_one_address_are_separate_pools() {
    let pki = Pki::new("sni-key");
    let (cert, key) = pki.issue("up", &["a.test", "fixed.test"]);
    let up = TlsUpstream::start(&cert, &key, None);
    let ca = p(&pki.ca_path());
    let h = https_conf(&up, &format!("ca = \"{ca}\""))
        .routes(&format!(
            "[[routes]]\nuris = [\"/f/*\"]\nupstream = \"fixed\"\n\n\
             [[routes]]\nuris = [\"/p/*\"]\nupstream = \"backend\"\n\n\
             [upstreams.fixed]\nscheme = \"https\"\nnodes = {{ \"{}\" = 1 }}\n\
             tls = {{ ca = \"{ca}\", sni = \"fixed.test\" }}\n",
            up.addr()
        ))
        .start();
    let mut c = h.client();
    for path in ["/p/1", "/f/1", "/p/2", "/f/2"] {
        let r = c.exchange(&get_as("a.test", path)).expect("answer");
        assert_eq!(r.status, 200, "{path}: {}", h.logs_text());
    }
    // Host a.test under pass, fixed.test under the fixed name: two connections, each reused.
    let conns = up.conns();
    assert_eq!(conns.len(), 2, "{conns:?}");
    for conn in &conns {
        let want = match conn.sni.as_deref() {
            Some("a.test") => ["/p/1", "/p/2"],
            Some("fixed.test") => ["/f/1", "/f/2"],
            other => panic!("unexpected SNI {other:?}"),
        };
        assert_eq!(conn.targets, want, "{conn:?}");
    }
}
