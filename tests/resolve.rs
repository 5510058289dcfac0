//! Node names followed in DNS (issue 20, part 1), through the real binary: a small DNS server
//! in the test answers A and AAAA from a table the test changes, and hearth, pointed at it with
//! `resolver`, moves requests as the answers move. Mock upstreams listen on 127.0.0.1 and
//! 127.0.0.2 at the same port, so one name can point at either or both.
//!
//! What is checked: requests reach a new address after a change; the kept address keeps its
//! pooled connection (no new connect); the idle connection to a vanished address closes at once;
//! a failed lookup (SERVFAIL, NXDOMAIN, silence) keeps serving the last good address and says
//! so in the log and `/metrics`; `pass_host = "node"` sends the name; an https node is asked
//! with SNI = the name; names in APISIX JSON are followed too; a name that does not resolve is
//! refused at load with its file, line and key.

mod common;
#[path = "common/tls.rs"]
mod tlskit;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use serde_json::json;
use simple_dns::rdata::{RData, A, AAAA};
use simple_dns::{Packet, PacketFlag, ResourceRecord, CLASS, QTYPE, RCODE, TYPE};

use common::*;

const NAME: &str = "backend.test";
const WAIT: Duration = Duration::from_secs(10);

/// What the test DNS server does with a question for a name.
#[derive(Debug, Clone)]
enum Answer {
    /// These addresses (A and AAAA as they fit), with this TTL.
    Addrs(Vec<IpAddr>, u32),
    ServFail,
    NxDomain,
    /// No answer at all.
    Silent,
}

/// A DNS server on 127.0.0.1 (UDP) answering from a table the test changes; names not in the
/// table get NXDOMAIN. Stops when dropped.
struct Dns {
    addr: SocketAddr,
    table: Arc<Mutex<HashMap<String, Answer>>>,
    queries: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Dns {
    fn start() -> Dns {
        let sock = UdpSocket::bind("127.0.0.1:0").expect("binding the DNS server");
        // Short reads so the thread sees `stop`.
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .expect("read timeout");
        let addr = sock.local_addr().expect("local addr");
        let table = Arc::new(Mutex::new(HashMap::new()));
        let queries = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (t, q, s) = (table.clone(), queries.clone(), stop.clone());
        let thread = thread::spawn(move || {
            let mut buf = [0u8; 1500];
            while !s.load(Ordering::SeqCst) {
                let Ok((n, from)) = sock.recv_from(&mut buf) else {
                    continue;
                };
                q.fetch_add(1, Ordering::SeqCst);
                let table = t.lock().unwrap_or_else(|e| e.into_inner()).clone();
                if let Some(reply) = respond(&buf[..n], &table) {
                    let _ = sock.send_to(&reply, from);
                }
            }
        });
        Dns {
            addr,
            table,
            queries,
            stop,
            thread: Some(thread),
        }
    }

    fn set(&self, name: &str, answer: Answer) {
        self.table
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_owned(), answer);
    }

    fn queries(&self) -> usize {
        self.queries.load(Ordering::SeqCst)
    }
}

impl Drop for Dns {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The answer to one query, or None to stay silent.
fn respond(query: &[u8], table: &HashMap<String, Answer>) -> Option<Vec<u8>> {
    let q = Packet::parse(query).ok()?;
    let question = q.questions.first()?.clone();
    let name = question.qname.to_string();
    let mut p = Packet::new_reply(q.id());
    p.set_flags(PacketFlag::RECURSION_AVAILABLE);
    p.questions.push(question.clone());
    match table.get(&name) {
        None | Some(Answer::NxDomain) => *p.rcode_mut() = RCODE::NameError,
        Some(Answer::ServFail) => *p.rcode_mut() = RCODE::ServerFailure,
        Some(Answer::Silent) => return None,
        Some(Answer::Addrs(addrs, ttl)) => {
            for ip in addrs {
                let rdata = match (ip, question.qtype) {
                    (IpAddr::V4(a), QTYPE::TYPE(TYPE::A)) => RData::A(A::from(*a)),
                    (IpAddr::V6(a), QTYPE::TYPE(TYPE::AAAA)) => RData::AAAA(AAAA::from(*a)),
                    _ => continue,
                };
                p.answers.push(ResourceRecord::new(
                    question.qname.clone(),
                    CLASS::IN,
                    *ttl,
                    rdata,
                ));
            }
        }
    }
    p.build_bytes_vec().ok()
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("an address")
}

/// Two mock upstreams on one port, at 127.0.0.1 and 127.0.0.2, answering `a` and `b`.
fn pair() -> (MockUpstream, MockUpstream) {
    for _ in 0..20 {
        let a = MockUpstream::start(|_, _| Reply::ok("a"));
        let at = SocketAddr::new(ip("127.0.0.2"), a.addr().port());
        if let Ok(b) = MockUpstream::start_at(at, |_, _| Reply::ok("b")) {
            return (a, b);
        }
    }
    panic!("no port free on both 127.0.0.1 and 127.0.0.2");
}

/// A configuration: one worker (one pool per node), `resolver` at `dns`, short `[resolve]`
/// times, the admin listener, and an upstream whose node is `NAME:port` with `extra` lines.
fn toml(dns: SocketAddr, port: u16, extra: &str) -> String {
    format!(
        r#"workers = 1
resolver = ["{dns}"]

[resolve]
min = "100ms"
max = "1s"
timeout = "200ms"

[[listen]]
addr = "127.0.0.1:0"

[admin]
addr = "127.0.0.1:0"

[upstreams.backend]
nodes = {{ "{NAME}:{port}" = 1 }}
{extra}

[[routes]]
uris = ["/*"]
upstream = "backend"
"#
    )
}

/// Sends requests on one client connection until one is answered by `want`; false if none is
/// within the deadline. Bounded by count and time.
fn until_served_by(h: &Hearth, want: &str) -> bool {
    let mut c = h.client();
    for _ in 0..400 {
        let r = c.get("/x");
        assert_eq!(r.status, 200, "{}", h.logs_text());
        if r.text() == want {
            return true;
        }
        thread::sleep(Duration::from_millis(25));
    }
    false
}

/// The value of one series in `/metrics`, or None when absent.
fn metric(h: &Hearth, series: &str) -> Option<f64> {
    h.metrics()
        .lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

#[test]
fn requests_follow_the_answers_and_pools_of_kept_addresses_stay() {
    let (a, b) = pair();
    let port = a.addr().port();
    let dns = Dns::start();
    dns.set(NAME, Answer::Addrs(vec![ip("127.0.0.1")], 0));
    let h = Hearth::start(&toml(dns.addr, port, "pass_host = \"node\""));

    // Served by 127.0.0.1, with the name as Host.
    let mut c = h.client();
    let r = c.get("/first");
    assert_eq!(
        (r.status, r.text()),
        (200, "a".to_owned()),
        "{}",
        h.logs_text()
    );
    let host = a.requests()[0].header("host").map(str::to_owned);
    assert_eq!(host.as_deref(), Some(format!("{NAME}:{port}").as_str()));

    // The name gains 127.0.0.2: requests reach it, and 127.0.0.1 keeps its pooled connection.
    dns.set(
        NAME,
        Answer::Addrs(vec![ip("127.0.0.1"), ip("127.0.0.2")], 0),
    );
    assert!(
        until_served_by(&h, "b"),
        "never reached 127.0.0.2\n{}",
        h.logs_text()
    );
    assert!(h.wait_log(
        &["resolve: backend.test changed: 127.0.0.1 -> 127.0.0.1, 127.0.0.2"],
        WAIT
    ));
    for _ in 0..6 {
        assert_eq!(c.get("/again").status, 200);
    }
    assert!(a.request_count() > 1, "127.0.0.1 still gets requests");
    assert_eq!(
        a.connections(),
        1,
        "the kept address kept its pool: no new connect"
    );
    assert_eq!(b.connections(), 1);
    let host = b.requests()[0].header("host").map(str::to_owned);
    assert_eq!(
        host.as_deref(),
        Some(format!("{NAME}:{port}").as_str()),
        "the name, not the address"
    );

    // 127.0.0.1 goes: its idle connection closes at once, and everything goes to 127.0.0.2.
    dns.set(NAME, Answer::Addrs(vec![ip("127.0.0.2")], 0));
    assert!(
        a.wait_conn_end(0, WAIT),
        "the idle connection to the vanished address stayed open\n{}",
        h.logs_text()
    );
    assert_eq!(a.conn(0).and_then(|c| c.end), Some(ConnEnd::PeerClosed));
    let before = a.request_count();
    let mut c = h.client();
    for _ in 0..6 {
        assert_eq!(c.get("/after").text(), "b");
    }
    assert_eq!(a.request_count(), before);

    let changes = format!("hearth_resolve_changes_total{{host=\"{NAME}\"}}");
    assert_eq!(metric(&h, &changes), Some(2.0), "{}", h.metrics());
    let addresses = format!("hearth_resolve_addresses{{host=\"{NAME}\"}}");
    assert_eq!(metric(&h, &addresses), Some(1.0));
    let text = h.metrics();
    assert!(
        text.contains("# TYPE hearth_resolve_failures_total counter"),
        "{text}"
    );
    assert!(text.contains("# HELP hearth_resolve_addresses "), "{text}");
    // Per-node series name the address beside the name.
    let node = format!("node=\"{NAME}:{port} (127.0.0.2)\"");
    assert!(text.contains(&node), "{text}");
}

#[test]
fn a_failed_lookup_keeps_the_last_good_address() {
    let (a, b) = pair();
    let port = a.addr().port();
    let dns = Dns::start();
    dns.set(NAME, Answer::Addrs(vec![ip("127.0.0.1")], 0));
    let h = Hearth::start(&toml(dns.addr, port, ""));
    assert_eq!(h.client().get("/").text(), "a");
    let failures = format!("hearth_resolve_failures_total{{host=\"{NAME}\"}}");
    let count = |needle: &str| h.logs().iter().filter(|l| l.contains(needle)).count();
    for (round, (answer, why)) in [
        (Answer::ServFail, "ServerFailure"),
        (Answer::NxDomain, "NXDOMAIN"),
        (Answer::Silent, "no A answer in time"),
    ]
    .into_iter()
    .enumerate()
    {
        let before = metric(&h, &failures).unwrap_or(0.0);
        dns.set(NAME, answer);
        assert!(
            wait_until(WAIT, || metric(&h, &failures).unwrap_or(0.0) > before),
            "no failure counted for {why}\n{}",
            h.logs_text()
        );
        let mut c = h.client();
        for _ in 0..4 {
            assert_eq!(c.get("/").text(), "a", "the last good address serves");
        }
        dns.set(NAME, Answer::Addrs(vec![ip("127.0.0.1")], 0));
        assert!(
            h.wait_log(
                &[
                    "resolve: backend.test",
                    why,
                    "keeping its 1 last good address(es) (127.0.0.1)"
                ],
                WAIT
            ),
            "{}",
            h.logs_text()
        );
        assert!(
            wait_until(WAIT, || count("resolve: backend.test resolves again")
                > round),
            "{}",
            h.logs_text()
        );
    }
    // It still follows changes afterwards.
    dns.set(NAME, Answer::Addrs(vec![ip("127.0.0.2")], 0));
    assert!(until_served_by(&h, "b"), "{}", h.logs_text());
    assert_eq!(b.connections(), 1);
}

#[test]
fn an_https_node_is_asked_with_its_name_as_sni() {
    let pki = tlskit::Pki::new("resolve");
    let (cert, key) = pki.issue("backend", &[NAME]);
    let up = tlskit::TlsUpstream::start(&cert, &key, None);
    let dns = Dns::start();
    dns.set(NAME, Answer::Addrs(vec![up.addr().ip()], 0));
    let extra = format!(
        "scheme = \"https\"\npass_host = \"node\"\ntls = {{ ca = \"{}\" }}",
        pki.ca_path().display()
    );
    let h = Hearth::start(&toml(dns.addr, up.addr().port(), &extra));
    let r = h.client().get("/tls");
    assert_eq!(
        r.status,
        200,
        "{}\n{:?}",
        h.logs_text(),
        up.handshake_errors()
    );
    let conns = up.conns();
    assert_eq!(
        conns[0].sni.as_deref(),
        Some(NAME),
        "SNI is the name, not the address"
    );
    assert_eq!(conns[0].hosts[0], format!("{NAME}:{}", up.addr().port()));
}

#[test]
fn names_in_apisix_json_are_followed_too() {
    let (a, b) = pair();
    let port = a.addr().port();
    let dns = Dns::start();
    dns.set(NAME, Answer::Addrs(vec![ip("127.0.0.1")], 0));
    dns.set("other.test", Answer::Addrs(vec![ip("127.0.0.1")], 0));
    // The file's own upstream points at another name; the API adds one with NAME.
    let h =
        Hearth::start(&toml(dns.addr, port, "").replace(&format!("\"{NAME}:"), "\"other.test:"));
    let admin = |path: &str, body: serde_json::Value| {
        let mut c = Client::connect(h.admin_addr());
        c.send(&request(
            "PUT",
            path,
            &[("Content-Type", "application/json")],
            body.to_string().as_bytes(),
        ));
        c.read_response()
    };
    // The list form in an upstream object, the map form inline in a route.
    let r = admin(
        "/apisix/admin/upstreams/list",
        json!({"nodes": [{"host": NAME, "port": port, "weight": 1}]}),
    );
    assert!(r.status < 300, "{}", r.text());
    let r = admin(
        "/apisix/admin/routes/1",
        json!({"uri": "/api/*", "upstream_id": "list"}),
    );
    assert!(r.status < 300, "{}", r.text());
    let r = admin(
        "/apisix/admin/routes/2",
        json!({"uri": "/map/*", "upstream": {"nodes": {format!("{NAME}:{port}"): 1}}}),
    );
    assert!(r.status < 300, "{}", r.text());
    let mut c = h.client();
    assert_eq!(c.get("/api/x").text(), "a");
    assert_eq!(c.get("/map/x").text(), "a");
    dns.set(NAME, Answer::Addrs(vec![ip("127.0.0.2")], 0));
    assert!(
        wait_until(WAIT, || c.get("/api/x").text() == "b"
            && c.get("/map/x").text() == "b"),
        "{}",
        h.logs_text()
    );
    assert!(b.request_count() >= 2);
    // A name that does not resolve is refused with its path.
    let r = admin(
        "/apisix/admin/upstreams/bad",
        json!({"nodes": {format!("missing.test:{port}"): 1}}),
    );
    assert_eq!(r.status, 400);
    assert!(
        r.text().contains("nodes.\\\"missing.test:") && r.text().contains("NXDOMAIN"),
        "{}",
        r.text()
    );
    assert!(dns.queries() > 0);
}

#[test]
fn a_name_that_does_not_resolve_is_refused_at_load() {
    let dns = Dns::start();
    let text = toml(dns.addr, 8080, "");
    let e = hearth::config::Config::parse(&text, "t.toml").expect_err("NXDOMAIN at load");
    let shown = e.to_string();
    assert!(
        shown.starts_with(
            "t.toml:16: upstreams.backend.nodes.\"backend.test:8080\": cannot resolve"
        ),
        "{shown}"
    );
    assert!(
        shown.contains("NXDOMAIN") && shown.contains(&dns.addr.to_string()),
        "{shown}"
    );
    // With the name in the table, it loads, with one node per address.
    dns.set(
        NAME,
        Answer::Addrs(vec![ip("127.0.0.3"), ip("::3"), ip("127.0.0.4")], 30),
    );
    let (cfg, _) = hearth::config::Config::parse(&text, "t.toml").expect("loads");
    let nodes: Vec<String> = cfg.upstreams[0]
        .nodes
        .iter()
        .map(|n| n.addr.to_string())
        .collect();
    assert_eq!(nodes, ["127.0.0.3:8080", "127.0.0.4:8080", "[::3]:8080"]);
    assert!(cfg.upstreams[0]
        .nodes
        .iter()
        .all(|n| n.host == "backend.test:8080" && n.weight == 1));
}
