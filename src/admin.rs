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
use crate::http::head::{HeadError, Limits, ReqBody};
use crate::http::read::{self, MessageError, MessageReader, RequestDecoder};
use crate::metrics::{family, Counters, NodeCounters, ANSWER_CODES};
use crate::runtime::advisor::Named;
use crate::runtime::server::Handle;
use crate::upstream::pool::CloseReason;

/// The status page; it fetches `/status.json` itself.
const STATUS_PAGE: &str = include_str!("status_page.html");

/// Largest request head.
const MAX_REQUEST_BYTES: usize = 8_192;
/// Most field lines in a request head; the tools operators use send a handful.
const MAX_REQUEST_FIELDS: usize = 32;
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
        family(
            &mut s,
            "config_center_connected",
            "gauge",
            "1 while the etcd watch is connected, else 0.",
        );
        let _ = writeln!(s, "config_center_connected {connected}");
        family(
            &mut s,
            "config_center_revision",
            "gauge",
            "The etcd revision applied last.",
        );
        let _ = writeln!(s, "config_center_revision {revision}");
        family(
            &mut s,
            "config_center_changes_total",
            "counter",
            "Values read from etcd, by whether they were applied or skipped as invalid.",
        );
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

/// Binds the admin listener on `addr`.
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    TcpListener::bind(addr).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot listen on admin address {addr}: {e}"),
        )
    })
}

/// Serves `listener` (from [`bind`], or taken over from the hearth that a binary upgrade
/// replaces) on a new thread for the life of the process. With `fleet`, admin API writes go to
/// etcd (see [`Fleet`]).
pub fn start(
    listener: TcpListener,
    stats: Handle,
    dynamic: Arc<Dynamic>,
    mut fleet: Option<Fleet>,
) -> io::Result<(SocketAddr, JoinHandle<()>)> {
    let addr = listener.local_addr()?;
    if !addr.ip().is_loopback() && dynamic.admin_key().is_none() {
        // The config loader refuses this already; checked again because an open admin API on
        // the network would let anyone rewrite the routes.
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("admin listener on {addr} is not loopback and [admin] has no key; refusing to start"),
        ));
    }
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

/// Reads one request head and its body (RFC 9112 §6.3) through [`MessageReader`], within
/// [`MAX_REQUEST_BYTES`] and [`MAX_BODY_BYTES`].
fn read_request(s: impl Read) -> Result<AdminRequest, ReadError> {
    let limits = Limits {
        max_head_bytes: MAX_REQUEST_BYTES,
        max_headers: MAX_REQUEST_FIELDS,
        // Nothing read here is passed on, which is what makes a lone LF safe to take as a line
        // end (RFC 9112 §2.2); operators typing requests by hand send them.
        accept_bare_lf: true,
        ..Limits::default()
    };
    let decoder = RequestDecoder::new(limits, MAX_BODY_BYTES as u64);
    let mut reader = MessageReader::new(s, decoder);
    let head = reader.read_head().map_err(refusal)?;
    if head.body == ReqBody::Chunked {
        return Err(length_required());
    }
    let d = reader.decoder();
    let req = AdminRequest {
        method: String::from_utf8_lossy(d.bytes(head.method_span)).into_owned(),
        path: String::from_utf8_lossy(d.bytes(head.target)).into_owned(),
        // The last of several, as the admin listener has always taken it.
        api_key: d.fields("x-api-key").last().map(<[u8]>::to_vec),
        body: Vec::new(),
    };
    let body = reader.read_body().map_err(refusal)?;
    Ok(AdminRequest { body, ..req })
}

/// The answer to a request body not framed by Content-Length, which is all the admin API takes.
fn length_required() -> ReadError {
    ReadError::Answer(
        "411 Length Required",
        "send the body with Content-Length".into(),
    )
}

/// What to do about a request that could not be read.
fn refusal(e: read::ReadError) -> ReadError {
    let e = match e {
        read::ReadError::Io(e) => return ReadError::Io(e),
        read::ReadError::Message(e) => e,
    };
    let too_large = "431 Request Header Fields Too Large";
    match e {
        // Nobody is left to answer.
        MessageError::Closed | MessageError::HeadCut => ReadError::Closed,
        MessageError::BodyCut => ReadError::Io(io::ErrorKind::UnexpectedEof.into()),
        MessageError::BodyTooLarge => ReadError::Answer(
            "413 Content Too Large",
            format!("the body may be at most {MAX_BODY_BYTES} bytes"),
        ),
        MessageError::Head(HeadError::HeadTooLarge) => {
            ReadError::Answer(too_large, "request head too large".into())
        }
        MessageError::Head(HeadError::TooManyHeaders) => ReadError::Answer(
            too_large,
            format!("request head has more than {MAX_REQUEST_FIELDS} header fields"),
        ),
        MessageError::Head(HeadError::UriTooLong) => {
            ReadError::Answer("414 URI Too Long", "request-target too long".into())
        }
        MessageError::Head(HeadError::UnsupportedCoding) => length_required(),
        MessageError::Head(HeadError::Malformed) | MessageError::Body(_) => {
            ReadError::Answer("400 Bad Request", format!("bad request: {e}"))
        }
    }
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
        ("GET", "/status.json") => respond(&mut s, "200 OK", "application/json", &{
            let counters = stats.stats();
            let advice = stats.advice(&counters);
            status_json(&counters, &stats.pools(), &advice, unix_ms())
        }),
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
        // As when etcd does not take a change: nothing changed, and trying again may work.
        ChangeError::Unavailable(m) => ("503 Service Unavailable", json!({ "error_msg": m })),
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
/// (with its upstream, node and learned idle timeout from `pools`, and the advice in force
/// for it), and the reading's time.
fn status_json(
    c: &Counters,
    pools: &[(String, Option<u64>)],
    advice: &[Named],
    now_ms: u64,
) -> String {
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
        s.push_str(",\"advice\":[");
        for (i, a) in advice.iter().filter(|a| a.advice.node == id).enumerate() {
            let sep = if i == 0 { "" } else { "," };
            let _ = write!(s, "{sep}{{\"kind\":\"{}\",\"text\":", a.advice.kind.token());
            json_str(&mut s, &a.advice.text);
            s.push('}');
        }
        s.push_str("]}");
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

    /// What `read_request` made of a request: the method, path, key and body it read, or the
    /// status it answers with.
    type Outcome = Result<(String, String, Option<Vec<u8>>, Vec<u8>), String>;

    fn read(wire: &[u8]) -> Outcome {
        match read_request(wire) {
            Ok(r) => Ok((r.method, r.path, r.api_key, r.body)),
            Err(ReadError::Answer(status, message)) => Err(format!("{status}: {message}")),
            Err(ReadError::Closed) => Err("closed".into()),
            Err(ReadError::Io(e)) => Err(format!("io: {e:?}")),
        }
    }

    #[test]
    fn requests_are_read_or_answered() {
        let ok = |m: &str, p: &str, k: Option<&[u8]>, b: &[u8]| {
            Ok((
                m.to_owned(),
                p.to_owned(),
                k.map(<[u8]>::to_vec),
                b.to_vec(),
            ))
        };
        let big = format!(
            "PUT /apisix/admin/routes/1 HTTP/1.1\r\nHost: h\r\nContent-Length: {}\r\n\r\n",
            MAX_BODY_BYTES + 1
        );
        let many: String = (0..MAX_REQUEST_FIELDS)
            .map(|i| format!("X-{i}: 1\r\n"))
            .collect();
        let many = format!("GET / HTTP/1.1\r\nHost: h\r\n{many}\r\n");
        let long = format!(
            "GET /{} HTTP/1.1\r\nHost: h\r\n\r\n",
            "a".repeat(MAX_REQUEST_BYTES)
        );
        type Case<'a> = (&'a [u8], Outcome);
        let table: &[Case] = &[
            (b"GET /metrics HTTP/1.1\r\nHost: h\r\n\r\n", ok("GET", "/metrics", None, b"")),
            (
                b"PUT /apisix/admin/routes/1?x=1 HTTP/1.1\r\nHost: h\r\nX-API-KEY: a\r\nx-api-key: k\r\nContent-Length: 2\r\n\r\n{}extra",
                ok("PUT", "/apisix/admin/routes/1?x=1", Some(b"k"), b"{}"),
            ),
            (b"POST /reload HTTP/1.0\nContent-Length: 0\n\n", ok("POST", "/reload", None, b"")),
            (
                b"PUT /apisix/admin/routes/1 HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
                Err("411 Length Required: send the body with Content-Length".into()),
            ),
            (
                big.as_bytes(),
                Err(format!("413 Content Too Large: the body may be at most {MAX_BODY_BYTES} bytes")),
            ),
            (
                many.as_bytes(),
                Err(format!("431 Request Header Fields Too Large: request head has more than {MAX_REQUEST_FIELDS} header fields")),
            ),
            (
                long.as_bytes(),
                Err("431 Request Header Fields Too Large: request head too large".into()),
            ),
            (
                b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                Err("400 Bad Request: bad request: malformed head".into()),
            ),
            (b"GET / HTTP/1.1\r\n\r\n", Err("400 Bad Request: bad request: malformed head".into())),
            (b"", Err("closed".into())),
            (b"GET / HTTP/1.1\r\nHo", Err("closed".into())),
            (
                b"PUT / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nab",
                Err("io: Kind(UnexpectedEof)".into()),
            ),
        ];
        for (wire, want) in table {
            let shown = String::from_utf8_lossy(&wire[..wire.len().min(80)]);
            assert_eq!(read(wire), *want, "{shown}");
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
        let advice = [Named {
            label: pools[0].0.clone(),
            advice: crate::upstream::advice::Advice {
                node: 0,
                kind: crate::upstream::advice::Kind::StaleReuse,
                text: "2 \"requests\" met".to_owned(),
            },
        }];
        let j = status_json(&c, &pools, &advice, 42);
        for want in [
            "\"time_ms\":42",
            "\"requests\":7}",
            "\"502\":1",
            "{\"id\":0,\"upstream\":\"api \\\"v1\\\"\",\"node\":\"127.0.0.1:1\",\"requests\":20,",
            "\"reuses\":19,",
            "\"idle_now\":1,",
            "\"stale\":1,",
            "\"learned_idle_timeout_ms\":1500,\"advice\":[{\"kind\":\"stale_reuse\",\"text\":\"2 \\\"requests\\\" met\"}]}",
            "{\"id\":1,\"upstream\":\"api\",\"node\":\"127.0.0.1:2\",\"requests\":0,",
            "\"learned_idle_timeout_ms\":null,\"advice\":[]}]}",
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
        let j = status_json(&Counters::default(), &[], &[], 0);
        assert!(j.ends_with("\"nodes\":[]}"), "{j}");
    }
}
