//! The admin listener: a small blocking HTTP/1.1 server on its own thread, for operators.
//!
//! It never runs on a core. `GET /metrics` asks every core for its counters by control message
//! and answers with their sum in Prometheus text format; `POST /reload` re-reads the
//! configuration file and, if it is valid, applies it as SIGHUP does. `GET /status` is a page in
//! the spirit of HAProxy's stats page: one row per upstream node and charts of requests/s and
//! reuse ratio, drawn by the page itself from `GET /status.json`, which it polls. The page is
//! static (`status_page.html`, no external assets) and puts data into the document only as text
//! nodes, so nothing a configuration names can become markup; the JSON escapes every string per
//! RFC 8259 §7. One request per connection keeps it simple; it is for scrapers and people, not
//! for load.
//!
//! Under `/apisix/admin` it serves the subset of APISIX's admin API (v3 response shapes) that
//! hearth implements: `routes` and `upstreams`, each with PUT/GET/DELETE by id, GET of the
//! collection and POST to it. Objects go to [`crate::dynamic`], which validates them whole
//! before anything changes. With `[config_center]` (a [`Fleet`]) a write is validated the same
//! way, then written to etcd instead of applied, and answered once this instance's watcher has
//! applied it (waiting at most 1 s); reads stay local, and `/metrics` adds the config
//! center's gauges. With `[admin] key` set, every `/apisix/admin` request and
//! `POST /reload` must carry it in `X-API-KEY`; `/metrics` and the status page stay open, as
//! they change nothing. Without a key the listener must be on a loopback address: the config
//! refuses anything else, and [`start`] checks again.

use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use log::{debug, info, warn};
use serde_json::{json, Value};

use crate::config_center::Writer;
use crate::dynamic::{json_error, CenterCounts, ChangeError, Dynamic, Kind};
use crate::metrics::{Counters, NodeCounters, ANSWER_CODES};
use crate::runtime::server::Handle;
use crate::upstream::pool::CloseReason;

/// The status page; it fetches `/status.json` itself.
const STATUS_PAGE: &str = include_str!("status_page.html");

/// Largest request head.
const MAX_REQUEST_BYTES: usize = 8_192;
/// Largest request body: an APISIX route or upstream is a few KiB; this leaves room for large
/// node lists while bounding what one connection can make the admin thread hold.
pub const MAX_BODY_BYTES: usize = 1 << 20;
const IO_TIMEOUT: Duration = Duration::from_secs(5);
const ADMIN_PREFIX: &str = "/apisix/admin/";
/// Longest an admin write in etcd mode waits for this instance to apply it before answering.
const APPLY_WAIT: Duration = Duration::from_secs(1);
const APPLY_POLL: Duration = Duration::from_millis(2);

/// What the admin listener needs when routes and upstreams live in etcd (`[config_center]`):
/// writes are checked against the local store, then go to etcd, and are answered once this
/// instance's watcher has applied them, so a PUT followed by a GET sees the object. Every other
/// instance applies them through its own watcher.
pub struct Fleet {
    pub writer: Writer,
    /// The config center's prefix: answers name objects by their etcd keys.
    pub prefix: String,
    /// The watcher's flag and revision ([`crate::config_center::Watcher`]).
    pub connected: Arc<AtomicBool>,
    pub revision: Arc<AtomicI64>,
    /// What the watcher's sink has applied and skipped.
    pub counts: Arc<CenterCounts>,
}

/// An answer: status line and JSON body.
type Answer = (&'static str, Value);

impl Fleet {
    /// The config center's series for `/metrics`. They keep the name the fleet requirement gives
    /// (`config_center_connected`) rather than taking the `hearth_` prefix.
    fn metrics(&self) -> String {
        let mut s = String::with_capacity(512);
        let connected = u8::from(self.connected.load(Ordering::Relaxed));
        let revision = self.revision.load(Ordering::Acquire);
        let applied = self.counts.applied.load(Ordering::Relaxed);
        let skipped = self.counts.skipped.load(Ordering::Relaxed);
        let _ = writeln!(s, "# TYPE config_center_connected gauge");
        let _ = writeln!(s, "config_center_connected {connected}");
        let _ = writeln!(s, "# TYPE config_center_revision gauge");
        let _ = writeln!(s, "config_center_revision {revision}");
        let _ = writeln!(s, "# TYPE config_center_changes_total counter");
        let _ = writeln!(
            s,
            "config_center_changes_total{{result=\"applied\"}} {applied}"
        );
        let _ = writeln!(
            s,
            "config_center_changes_total{{result=\"skipped\"}} {skipped}"
        );
        s
    }

    fn put(&mut self, kind: Kind, id: &str, value: &Value) -> Result<(), Answer> {
        let rev = self
            .writer
            .put(kind, id, value.to_string().as_bytes())
            .map_err(etcd_error)?;
        self.wait_applied(kind, id, rev);
        Ok(())
    }

    fn delete(&mut self, kind: Kind, id: &str) -> Result<(), Answer> {
        let (rev, existed) = self.writer.delete_at(kind, id).map_err(etcd_error)?;
        if !existed {
            // This instance held it, etcd did not: someone deleted it a moment ago.
            return Err((
                "404 Not Found",
                json!({ "error_msg": format!("{}/{}/{id} is not in etcd", self.prefix, kind.segment()) }),
            ));
        }
        self.wait_applied(kind, id, rev);
        Ok(())
    }

    /// Waits, up to [`APPLY_WAIT`], until the watcher has handed etcd revision `rev` to the
    /// store. A write it does not see in time is in etcd all the same and arrives when the
    /// watch catches up, so the answer is still a success; the log says why it was slow.
    fn wait_applied(&self, kind: Kind, id: &str, rev: i64) {
        let clock = crate::clock::Clock;
        let deadline = clock.now_ms() + APPLY_WAIT.as_millis() as u64;
        while self.revision.load(Ordering::Acquire) < rev {
            if clock.now_ms() >= deadline {
                warn!(
                    "admin: {}/{}/{id} is in etcd at revision {rev}, not applied here within \
                     {APPLY_WAIT:?} (the watch is at {}); it will be once the watch catches up",
                    self.prefix,
                    kind.segment(),
                    self.revision.load(Ordering::Acquire)
                );
                return;
            }
            std::thread::sleep(APPLY_POLL);
        }
    }
}

fn etcd_error(e: crate::etcd::Error) -> Answer {
    (
        "503 Service Unavailable",
        json!({ "error_msg": format!("etcd did not take the change: {e}") }),
    )
}

/// Binds `addr` and serves it on a new thread for the life of the process. With `fleet`,
/// admin API writes go to etcd (see [`Fleet`]).
pub fn start(
    addr: SocketAddr,
    stats: Handle,
    dynamic: Arc<Dynamic>,
    mut fleet: Option<Fleet>,
) -> io::Result<(SocketAddr, JoinHandle<()>)> {
    if !addr.ip().is_loopback() && dynamic.admin_key().is_none() {
        // The config loader refuses this already; checked again because an open admin API on
        // the network would let anyone rewrite the routes.
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("admin listener on {addr} is not loopback and [admin] has no key; refusing to start"),
        ));
    }
    let listener = TcpListener::bind(addr).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot listen on admin address {addr}: {e}"),
        )
    })?;
    let bound = listener.local_addr()?;
    info!("admin listening on {bound}");
    let handle = std::thread::Builder::new()
        .name("hearth-admin".into())
        .spawn(move || {
            for conn in listener.incoming() {
                match conn {
                    Ok(s) => {
                        if let Err(e) = serve(s, &stats, &dynamic, fleet.as_mut()) {
                            debug!("admin connection: {e}");
                        }
                    }
                    Err(e) => {
                        warn!("admin accept: {e}");
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
            }
        })?;
    Ok((bound, handle))
}

/// One request as the admin listener reads it.
struct AdminRequest {
    method: String,
    path: String,
    api_key: Option<Vec<u8>>,
    body: Vec<u8>,
}

/// What went wrong reading a request, as the status to answer with.
enum ReadError {
    Closed,
    Io(io::Error),
    Answer(&'static str, String),
}

impl From<io::Error> for ReadError {
    fn from(e: io::Error) -> ReadError {
        ReadError::Io(e)
    }
}

/// Reads one request head and its Content-Length body (RFC 9112 section 6.2).
fn read_request(s: &mut TcpStream) -> Result<AdminRequest, ReadError> {
    let mut buf = vec![0u8; MAX_REQUEST_BYTES];
    let mut len = 0;
    let bad = |m: &str| ReadError::Answer("400 Bad Request", m.to_owned());
    let (mut req, head_len, content_length) = loop {
        let n = s.read(&mut buf[len..])?;
        if n == 0 {
            return Err(ReadError::Closed);
        }
        len += n;
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut parsed = httparse::Request::new(&mut headers);
        match parsed.parse(&buf[..len]) {
            Ok(httparse::Status::Complete(head_len)) => {
                let mut api_key = None;
                let mut content_length: Option<usize> = None;
                for h in parsed.headers.iter() {
                    if h.name.eq_ignore_ascii_case("x-api-key") {
                        api_key = Some(h.value.to_vec());
                    } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                        return Err(ReadError::Answer(
                            "411 Length Required",
                            "send the body with Content-Length".into(),
                        ));
                    } else if h.name.eq_ignore_ascii_case("content-length") {
                        let n = std::str::from_utf8(h.value)
                            .ok()
                            .and_then(|v| v.trim().parse::<usize>().ok())
                            .ok_or_else(|| bad("invalid Content-Length"))?;
                        if content_length.is_some_and(|c| c != n) {
                            return Err(bad("conflicting Content-Length headers"));
                        }
                        content_length = Some(n);
                    }
                }
                let req = AdminRequest {
                    method: parsed.method.unwrap_or("").to_owned(),
                    path: parsed.path.unwrap_or("").to_owned(),
                    api_key,
                    body: Vec::new(),
                };
                break (req, head_len, content_length.unwrap_or(0));
            }
            Ok(httparse::Status::Partial) if len < buf.len() => continue,
            Ok(httparse::Status::Partial) => {
                return Err(ReadError::Answer(
                    "431 Request Header Fields Too Large",
                    "request head too large".into(),
                ))
            }
            Err(_) => return Err(bad("bad request")),
        }
    };
    if content_length > MAX_BODY_BYTES {
        return Err(ReadError::Answer(
            "413 Content Too Large",
            format!("the body may be at most {MAX_BODY_BYTES} bytes"),
        ));
    }
    let mut body = buf[head_len..len].to_vec();
    body.truncate(content_length);
    if body.len() < content_length {
        let start = body.len();
        body.resize(content_length, 0);
        s.read_exact(&mut body[start..])?;
    }
    req.body = body;
    Ok(req)
}

fn serve(
    mut s: TcpStream,
    stats: &Handle,
    dynamic: &Dynamic,
    fleet: Option<&mut Fleet>,
) -> io::Result<()> {
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_write_timeout(Some(IO_TIMEOUT))?;
    let req = match read_request(&mut s) {
        Ok(r) => r,
        Err(ReadError::Closed) => return Ok(()),
        Err(ReadError::Io(e)) => return Err(e),
        Err(ReadError::Answer(status, message)) => {
            return respond(&mut s, status, "text/plain", &format!("{message}\n"))
        }
    };
    let path = req.path.split('?').next().unwrap_or("");
    let needs_key = path.starts_with(ADMIN_PREFIX) || path == "/reload";
    if needs_key && !key_matches(dynamic.admin_key().as_deref(), req.api_key.as_deref()) {
        return respond_json(
            &mut s,
            "401 Unauthorized",
            &json!({"error_msg": "missing or wrong X-API-KEY"}),
        );
    }
    if let Some(rest) = path.strip_prefix(ADMIN_PREFIX) {
        let (status, body) = apisix_admin(dynamic, fleet, &req.method, rest, &req.body);
        return respond_json(&mut s, status, &body);
    }
    match (req.method.as_str(), path) {
        ("GET", "/metrics") => {
            let mut text = stats.metrics_text();
            if let Some(f) = &fleet {
                text.push_str(&f.metrics());
            }
            respond(&mut s, "200 OK", "text/plain; version=0.0.4", &text)
        }
        ("GET", "/status") => respond(&mut s, "200 OK", "text/html; charset=utf-8", STATUS_PAGE),
        ("GET", "/status.json") => respond(
            &mut s,
            "200 OK",
            "application/json",
            &status_json(&stats.stats(), &stats.pools(), unix_ms()),
        ),
        ("POST", "/reload") => match dynamic.reload_file() {
            Ok(()) => respond(&mut s, "200 OK", "text/plain", "reloaded\n"),
            Err(e) => respond(
                &mut s,
                "400 Bad Request",
                "text/plain",
                &format!("not reloaded: {e}\n"),
            ),
        },
        ("GET", _) => respond(
            &mut s,
            "404 Not Found",
            "text/plain",
            "not found; try /metrics or /status\n",
        ),
        _ => respond(&mut s, "405 Method Not Allowed", "text/plain", "only GET\n"),
    }
}

/// Whether the request may use the admin API: no key configured, or the same key sent. The
/// comparison takes the same time wherever the first difference is, so timing does not tell an
/// attacker how much of a guess was right.
fn key_matches(want: Option<&str>, got: Option<&[u8]>) -> bool {
    let Some(want) = want else { return true };
    let Some(got) = got else { return false };
    let want = want.as_bytes();
    want.len() == got.len() && want.iter().zip(got).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}

/// Serves `/apisix/admin/{rest}`: the status line and JSON body to answer with. Reads come from
/// the local store; writes are applied to it, or with `fleet` checked against it and written to
/// etcd.
fn apisix_admin(
    dynamic: &Dynamic,
    mut fleet: Option<&mut Fleet>,
    method: &str,
    rest: &str,
    body: &[u8],
) -> Answer {
    let error = |status, message: String| (status, json!({ "error_msg": message }));
    let rest = rest.trim_end_matches('/');
    let (collection, id) = match rest.split_once('/') {
        Some((c, id)) => (c, Some(id)),
        None => (rest, None),
    };
    let kind = match collection {
        "routes" => Kind::Route,
        "upstreams" => Kind::Upstream,
        other => {
            return error(
                "404 Not Found",
                format!(
                    "/apisix/admin/{other} is not supported; hearth serves routes and upstreams"
                ),
            )
        }
    };
    let prefix = fleet
        .as_ref()
        .map_or_else(|| "/apisix".to_owned(), |f| f.prefix.clone());
    let key = |id: &str| format!("{prefix}/{}/{id}", kind.segment());
    let parse = || -> Result<Value, Answer> {
        serde_json::from_slice(body).map_err(|e| error("400 Bad Request", json_error(&e)))
    };
    match (method, id) {
        ("GET", None) => {
            let list: Vec<Value> = dynamic
                .list(kind)
                .into_iter()
                .map(|(id, value)| json!({ "key": key(&id), "value": value }))
                .collect();
            ("200 OK", json!({ "total": list.len(), "list": list }))
        }
        ("POST", None) => {
            let v = match parse() {
                Ok(v) => v,
                Err(answer) => return answer,
            };
            let made = match fleet.as_deref_mut() {
                None => dynamic.create(kind, v).map_err(change_answer),
                Some(f) => dynamic
                    .check_create(kind, v)
                    .map_err(change_answer)
                    .and_then(|(id, value)| f.put(kind, &id, &value).map(|()| (id, value))),
            };
            match made {
                Ok((id, value)) => ("201 Created", json!({ "key": key(&id), "value": value })),
                Err(answer) => answer,
            }
        }
        // APISIX also takes the id from the body of a PUT to the collection.
        ("PUT", None) => match parse() {
            Err(answer) => answer,
            Ok(v) => match v.get("id").map(|i| match i {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            }) {
                None => error(
                    "400 Bad Request",
                    format!(
                        "id: give it in the path, PUT /apisix/admin/{}/ID",
                        kind.segment()
                    ),
                ),
                Some(id) => put(dynamic, fleet, kind, &id, v, &key(&id)),
            },
        },
        ("GET", Some(id)) => match dynamic.get(kind, id) {
            Some(value) => ("200 OK", json!({ "key": key(id), "value": value })),
            None => error(
                "404 Not Found",
                format!("{} {id} not found", kind.segment()),
            ),
        },
        ("PUT", Some(id)) => match parse() {
            Err(answer) => answer,
            Ok(v) => put(dynamic, fleet, kind, id, v, &key(id)),
        },
        ("DELETE", Some(id)) => {
            let deleted = match fleet {
                None => dynamic.delete(kind, id).map_err(change_answer),
                Some(f) => dynamic
                    .check_delete(kind, id)
                    .map_err(change_answer)
                    .and_then(|()| f.delete(kind, id)),
            };
            match deleted {
                Ok(()) => ("200 OK", json!({ "deleted": "1", "key": key(id) })),
                Err(answer) => answer,
            }
        }
        (m, _) => error(
            "405 Method Not Allowed",
            format!(
                "{m} is not supported here; use GET or POST on /apisix/admin/{c}, and PUT, GET \
                 or DELETE on /apisix/admin/{c}/ID",
                c = kind.segment()
            ),
        ),
    }
}

fn put(
    dynamic: &Dynamic,
    fleet: Option<&mut Fleet>,
    kind: Kind,
    id: &str,
    v: Value,
    key: &str,
) -> Answer {
    let done = match fleet {
        None => dynamic.put(kind, id, v).map_err(change_answer),
        Some(f) => dynamic
            .check_put(kind, id, v)
            .map_err(change_answer)
            .and_then(|(value, created)| f.put(kind, id, &value).map(|()| (value, created))),
    };
    match done {
        Ok((value, created)) => (
            if created { "201 Created" } else { "200 OK" },
            json!({ "key": key, "value": value }),
        ),
        Err(answer) => answer,
    }
}

fn change_answer(e: ChangeError) -> Answer {
    match e {
        ChangeError::Invalid(m) => ("400 Bad Request", json!({ "error_msg": m })),
        ChangeError::NotFound(m) => ("404 Not Found", json!({ "error_msg": m })),
    }
}

fn respond_json(s: &mut TcpStream, status: &str, body: &Value) -> io::Result<()> {
    respond(s, status, "application/json", &body.to_string())
}

fn respond(s: &mut TcpStream, status: &str, content_type: &str, body: &str) -> io::Result<()> {
    // no-store: every answer is a snapshot, and a cached one would hide a stalled hearth.
    let head = format!("HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n", body.len());
    s.write_all(head.as_bytes())?;
    s.write_all(body.as_bytes())
}

fn unix_ms() -> u64 {
    let clock = crate::clock::Clock;
    clock.wall_ms(clock.now_ms())
}

/// Splits a metric label `upstream="NAME",node="HOST"` (as the pool registry writes it) into
/// its two values. The split is on the last `",node="` because the upstream name is free text
/// while the node is a validated `host:port`. Anything else is shown whole as the upstream.
fn split_label(label: &str) -> (&str, &str) {
    label
        .strip_prefix("upstream=\"")
        .and_then(|rest| rest.strip_suffix('"'))
        .and_then(|inner| inner.rsplit_once("\",node=\""))
        .unwrap_or((label, ""))
}

/// Undoes the Prometheus label escaping the registry applies (`\\`, `\"`, `\n`).
fn label_unescape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    let mut chars = v.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    out
}

/// Appends `s` as a JSON string literal (RFC 8259 §7): quotes, backslashes and control
/// characters escaped; `<`, `>` and `&` too, so the text stays inert even if someone pastes it
/// into HTML.
fn json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c < ' ' || matches!(c, '<' | '>' | '&' | '\u{2028}' | '\u{2029}') => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// A per-node figure of `/status.json`: key and how to read it (the same as `/metrics`).
type Field = (&'static str, fn(&NodeCounters) -> u64);

const NODE_FIELDS: [Field; 10] = [
    ("requests", |n| n.requests),
    ("connects", |n| n.connects),
    ("connect_failures", |n| n.connect_failures),
    ("reuses", |n| n.reuses),
    ("replays", |n| n.replays),
    ("handed_over", |n| n.handed_over),
    ("queued", |n| n.queued),
    ("queue_timeouts", |n| n.queue_timeouts),
    ("idle_now", |n| n.idle_now),
    ("open_now", |n| n.open_now),
];

/// The document `/status.json` answers: the counters summed over cores, one entry per pool id
/// (with its upstream, node and learned idle timeout from `pools`), and the reading's time.
fn status_json(c: &Counters, pools: &[(String, Option<u64>)], now_ms: u64) -> String {
    let mut s = String::with_capacity(512 + 640 * pools.len().max(c.nodes.len()));
    let _ = write!(s, "{{\"version\":");
    json_str(&mut s, env!("CARGO_PKG_VERSION"));
    let _ = write!(
        s,
        ",\"time_ms\":{now_ms},\"client\":{{\"accepted\":{},\"open_now\":{},\"requests\":{}}},\"answers\":{{",
        c.accepted, c.client_open_now, c.requests
    );
    for (i, (code, n)) in ANSWER_CODES.iter().zip(c.answers.iter()).enumerate() {
        let sep = if i == 0 { "" } else { "," };
        let _ = write!(s, "{sep}\"{code}\":{n}");
    }
    s.push_str("},\"nodes\":[");
    let empty = NodeCounters::default();
    // The registry and the cores' counters may disagree in length for a moment after a reload
    // adds nodes; show every pool either side knows, zeros where counters are missing.
    for id in 0..pools.len().max(c.nodes.len()) {
        let n = c.nodes.get(id).unwrap_or(&empty);
        let (label, learned) = pools
            .get(id)
            .map_or(("", None), |(l, ms)| (l.as_str(), *ms));
        let (upstream, node) = split_label(label);
        let (upstream, node) = (label_unescape(upstream), label_unescape(node));
        let sep = if id == 0 { "" } else { "," };
        let _ = write!(s, "{sep}{{\"id\":{id},\"upstream\":");
        json_str(&mut s, &upstream);
        s.push_str(",\"node\":");
        json_str(&mut s, &node);
        for (key, f) in NODE_FIELDS {
            let _ = write!(s, ",\"{key}\":{}", f(n));
        }
        s.push_str(",\"closes\":{");
        for (i, why) in CloseReason::ALL.into_iter().enumerate() {
            let sep = if i == 0 { "" } else { "," };
            let _ = write!(s, "{sep}\"{}\":{}", why.name(), n.closes[why.index()]);
        }
        s.push_str("},\"learned_idle_timeout_ms\":");
        match learned {
            Some(ms) => {
                let _ = write!(s, "{ms}");
            }
            None => s.push_str("null"),
        }
        s.push('}');
    }
    s.push_str("]}");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_must_match_exactly() {
        type Case<'a> = (Option<&'a str>, Option<&'a [u8]>, bool);
        let cases: &[Case] = &[
            (None, None, true),
            (None, Some(b"anything"), true),
            (Some("k1"), None, false),
            (Some("k1"), Some(b"k1"), true),
            (Some("k1"), Some(b"k2"), false),
            (Some("k1"), Some(b"k"), false),
            (Some("k1"), Some(b"k1 "), false),
            (Some("k1"), Some(b""), false),
        ];
        for (want, got, ok) in cases {
            assert_eq!(key_matches(*want, *got), *ok, "{want:?} vs {got:?}");
        }
    }

    /// The admin paths and methods, against a store whose changes go nowhere.
    #[test]
    fn admin_paths_and_methods() {
        let text = "[[listen]]\naddr = \"127.0.0.1:0\"\n[upstreams.f]\nnodes = { \"127.0.0.1:1\" = 1 }\n[[routes]]\nuris = [\"/f\"]\nupstream = \"f\"\n";
        let cfg = crate::config::Config::parse(text, "t.toml").unwrap().0;
        let d = Dynamic::new("t.toml".into(), cfg, Box::new(|_| {}));
        let up = br#"{"nodes": {"127.0.0.1:2": 1}}"#;
        let cases: &[(&str, &str, &[u8], &str, &str)] = &[
            ("GET", "routes", b"", "200 OK", r#"{"list":[],"total":0}"#),
            (
                "PUT",
                "upstreams/u1",
                up,
                "201 Created",
                r#""key":"/apisix/upstreams/u1""#,
            ),
            ("PUT", "upstreams/u1/", up, "200 OK", r#""id":"u1""#),
            (
                "PUT",
                "upstreams",
                br#"{"id": 7, "nodes": {"127.0.0.1:2": 1}}"#,
                "201 Created",
                r#""key":"/apisix/upstreams/7""#,
            ),
            (
                "PUT",
                "upstreams",
                up,
                "400 Bad Request",
                "give it in the path",
            ),
            (
                "GET",
                "upstreams/u1",
                b"",
                "200 OK",
                r#""nodes":{"127.0.0.1:2":1}"#,
            ),
            ("GET", "upstreams/zz", b"", "404 Not Found", "not found"),
            (
                "GET",
                "services",
                b"",
                "404 Not Found",
                "routes and upstreams",
            ),
            (
                "PATCH",
                "upstreams/u1",
                up,
                "405 Method Not Allowed",
                "PATCH is not supported",
            ),
            (
                "DELETE",
                "upstreams",
                b"",
                "405 Method Not Allowed",
                "not supported",
            ),
            (
                "PUT",
                "routes/r1",
                b"{",
                "400 Bad Request",
                "invalid JSON at line 1, column 1",
            ),
            (
                "DELETE",
                "upstreams/7",
                b"",
                "200 OK",
                r#"{"deleted":"1","key":"/apisix/upstreams/7"}"#,
            ),
        ];
        for (method, rest, body, status, want) in cases {
            let (got_status, got) = apisix_admin(&d, None, method, rest, body);
            let got = got.to_string();
            assert_eq!(got_status, *status, "{method} {rest}: {got}");
            assert!(got.contains(want), "{method} {rest}: {got}");
        }
    }

    #[test]
    fn labels_split_into_upstream_and_node() {
        let cases = [
            (
                "upstream=\"backend\",node=\"127.0.0.1:9001\"",
                ("backend", "127.0.0.1:9001"),
            ),
            // Upstream names are free text; the node is the part after the last separator.
            (
                "upstream=\"a\",node=\"b\",node=\"h:1\"",
                ("a\",node=\"b", "h:1"),
            ),
            ("upstream=\"<b>\",node=\"\"", ("<b>", "")),
            ("something else", ("something else", "")),
            ("", ("", "")),
        ];
        for (label, want) in cases {
            assert_eq!(split_label(label), want, "{label}");
        }
    }

    #[test]
    fn json_strings_escape_quotes_controls_and_markup() {
        let cases = [
            ("plain", "\"plain\""),
            ("a\"b\\c", "\"a\\\"b\\\\c\""),
            ("line\nnext\ttab\r", "\"line\\nnext\\ttab\\r\""),
            ("\u{1}\u{1f}", "\"\\u0001\\u001f\""),
            (
                "</script><b>&",
                "\"\\u003c/script\\u003e\\u003cb\\u003e\\u0026\"",
            ),
            ("é ✓", "\"é ✓\""),
            ("\u{2028}", "\"\\u2028\""),
        ];
        for (input, want) in cases {
            let mut out = String::new();
            json_str(&mut out, input);
            assert_eq!(out, want, "{input:?}");
        }
    }

    #[test]
    fn status_json_lists_every_pool_with_its_figures() {
        let mut c = Counters::with_nodes(1);
        c.requests = 7;
        c.answered(502);
        c.nodes[0].requests = 20;
        c.nodes[0].reuses = 19;
        c.nodes[0].idle_now = 1;
        c.nodes[0].closed(CloseReason::Stale);
        let pools = vec![
            (
                "upstream=\"api \\\"v1\\\"\",node=\"127.0.0.1:1\"".to_string(),
                Some(1_500),
            ),
            // Known to the registry, not yet to the counters: shown with zeros.
            ("upstream=\"api\",node=\"127.0.0.1:2\"".to_string(), None),
        ];
        let j = status_json(&c, &pools, 42);
        for want in [
            "\"time_ms\":42",
            "\"requests\":7}",
            "\"502\":1",
            "{\"id\":0,\"upstream\":\"api \\\"v1\\\"\",\"node\":\"127.0.0.1:1\",\"requests\":20,",
            "\"reuses\":19,",
            "\"idle_now\":1,",
            "\"stale\":1,",
            "\"learned_idle_timeout_ms\":1500}",
            "{\"id\":1,\"upstream\":\"api\",\"node\":\"127.0.0.1:2\",\"requests\":0,",
            "\"learned_idle_timeout_ms\":null}]}",
        ] {
            assert!(j.contains(want), "{want} not in {j}");
        }
        assert_eq!(
            j.matches('{').count(),
            j.matches('}').count(),
            "balanced: {j}"
        );
    }

    #[test]
    fn status_json_without_nodes_is_an_empty_list() {
        let j = status_json(&Counters::default(), &[], 0);
        assert!(j.ends_with("\"nodes\":[]}"), "{j}");
    }
}
