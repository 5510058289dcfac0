//! A small blocking client for etcd v3's JSON gateway (`/v3/kv/*`, `/v3/watch`,
//! `/v3/auth/authenticate`), spoken over HTTP/1.1 on a std `TcpStream`, or over TLS on one for
//! `https://` endpoints (rustls driven by the same blocking reads and writes, with the client
//! configuration `[config_center] tls` describes: the CA to trust and, for etcd's
//! `--client-cert-auth`, a client certificate).
//!
//! It serves the config-center thread and the admin API, never a core: every call blocks, for at
//! most the configured timeout per read, write or connect. Each unary call opens its own
//! connection (`Connection: close`), so a client holds no socket between calls and a broken
//! connection can never leak into the next call. Endpoints are tried in turn, starting from the
//! last one that answered; an endpoint that cannot be reached, breaks the connection, answers 5xx
//! or answers gibberish is skipped, while an error etcd itself states (4xx with a gRPC code) is the
//! answer and is returned at once, since every member would say the same.
//!
//! The gateway's JSON carries keys and values in base64 and int64 fields as strings; both are
//! decoded here (base64 by the `base64` crate), so callers see bytes and `i64`s. Answers are read
//! by [`http::read`](crate::http::read), to the rules hearth applies to any upstream's response;
//! the watch stream's payload goes to [`WatchDecoder`], which is sans-io: it takes the payload as
//! it arrives, whatever the read boundaries, and returns messages.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine as _;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, StreamOwned};
use serde::de::{self, Deserializer};
use serde::Deserialize;

use crate::http::head::{Limits, RespBody, ResponseHead};
use crate::http::read::{MessageError, MessageReader, ReadError, ResponseDecoder};

/// Keys fetched per range request; a larger prefix is read in pages at one pinned revision.
const RANGE_PAGE: usize = 1000;
/// Longest response head accepted from the gateway (its heads are a few hundred bytes).
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Most field lines in a response head from the gateway (it sends a handful).
const MAX_HEADERS: usize = 64;
/// Largest response body accepted: well above a page of keys at etcd's 1.5 MiB value limit,
/// small enough that a confused peer cannot exhaust memory.
const MAX_BODY_BYTES: usize = 256 * 1024 * 1024;
/// How long one `Watch::poll` waits for bytes before returning `None`, so the caller can check
/// whether it was asked to stop.
const WATCH_POLL: Duration = Duration::from_millis(200);

/// One etcd client URL, `http://host:port` or `https://host:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
    /// `https://`: TLS, with the client's TLS configuration ([`Client::with_tls`]).
    pub tls: bool,
}

impl Endpoint {
    /// Parses `http://host:port` or `https://host:port` (a trailing `/` is allowed; the port
    /// defaults to 2379).
    pub fn parse(url: &str) -> Result<Endpoint, String> {
        let (tls, rest) = match url.split_once("://") {
            Some(("http", rest)) => (false, rest),
            Some(("https", rest)) => (true, rest),
            _ => {
                return Err(format!(
                    "{url:?}: expected a URL such as \"http://127.0.0.1:2379\" or \
                     \"https://127.0.0.1:2379\""
                ))
            }
        };
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.is_empty() || authority.contains(['/', '?', '#', '@']) {
            return Err(format!(
                "{url:?}: expected only a host and port after the scheme"
            ));
        }
        // A bracketed IPv6 literal keeps its colons inside the brackets.
        let (host, port) = match authority.rfind(':') {
            Some(i) if !authority[i..].contains(']') => {
                (&authority[..i], Some(&authority[i + 1..]))
            }
            _ => (authority, None),
        };
        let port = match port {
            None => 2379,
            Some(p) => p.parse().map_err(|_| format!("{url:?}: bad port {p:?}"))?,
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(format!("{url:?}: the host is empty"));
        }
        Ok(Endpoint {
            host: host.to_owned(),
            port,
            tls,
        })
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "https" } else { "http" };
        if self.host.contains(':') {
            write!(f, "{scheme}://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{scheme}://{}:{}", self.host, self.port)
        }
    }
}

/// etcd user name and password; the password never appears in `Debug` output or logs.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub user: String,
    pub password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .finish()
    }
}

#[derive(Debug)]
pub enum Error {
    /// No endpoint answered: one `(endpoint, cause)` per endpoint tried.
    Unreachable(Vec<(String, String)>),
    /// etcd answered with an error of its own (HTTP status, gRPC code, message).
    Etcd {
        status: u16,
        code: i64,
        message: String,
    },
    /// The revision asked for has been compacted away; only a full range can catch up.
    Compacted { compact_revision: i64 },
    /// A watch stream broke or carried something that is not a watch response.
    Broken(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Unreachable(causes) => {
                let names: Vec<&str> = causes.iter().map(|(e, _)| e.as_str()).collect();
                write!(f, "etcd at {} unreachable: ", names.join(", "))?;
                if let [(_, cause)] = causes.as_slice() {
                    f.write_str(cause)
                } else {
                    let all: Vec<String> = causes.iter().map(|(e, c)| format!("{e}: {c}")).collect();
                    f.write_str(&all.join("; "))
                }
            }
            Error::Etcd {
                status,
                code,
                message,
            } => write!(f, "etcd refused the request (HTTP {status}, code {code}): {message}"),
            Error::Compacted { compact_revision } => write!(
                f,
                "the revision asked for was compacted (etcd keeps revisions from {compact_revision})"
            ),
            Error::Broken(why) => write!(f, "etcd watch broke: {why}"),
        }
    }
}

impl std::error::Error for Error {}

impl Error {
    /// Whether etcd refused the auth token (gRPC Unauthenticated: it expired, or the member
    /// restarted and forgot its simple tokens), which a fresh token fixes.
    pub fn is_bad_token(&self) -> bool {
        matches!(
            self,
            Error::Etcd { code: 16, .. } | Error::Etcd { status: 401, .. }
        )
    }
}

/// One key as read by a range or carried by a watch event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub mod_revision: i64,
}

/// The keys under a prefix at one revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Range {
    /// The store's revision the keys were read at.
    pub revision: i64,
    pub kvs: Vec<KeyValue>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Put,
    Delete,
}

/// One change seen by a watch. A delete carries an empty value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub kind: EventKind,
    pub kv: KeyValue,
}

/// One message of a watch stream, as the config center needs to tell them apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchMsg {
    /// The watch is registered; `revision` is the store's revision at that moment.
    Created { revision: i64 },
    /// Changes, in revision order.
    Events { events: Vec<Event> },
    /// Nothing changed (progress notification or an empty response).
    Progress { revision: i64 },
    /// The start revision was compacted: etcd cancelled the watch.
    Compacted { compact_revision: i64 },
    /// etcd cancelled the watch for another reason (permission, auth, shutdown).
    Canceled { reason: String },
}

/// A blocking etcd client. It holds no connection between calls, only which endpoint answered
/// last and, with credentials, the auth token.
#[derive(Debug)]
pub struct Client {
    endpoints: Vec<Endpoint>,
    credentials: Option<Credentials>,
    timeout: Duration,
    /// For `https://` endpoints; one without it is skipped, saying so.
    tls: Option<Arc<ClientConfig>>,
    /// The endpoint to try first: the last one that answered.
    current: usize,
    token: Option<String>,
}

impl Client {
    /// `timeout` bounds each connect, read and write. `endpoints` must not be empty.
    pub fn new(
        endpoints: Vec<Endpoint>,
        credentials: Option<Credentials>,
        timeout: Duration,
    ) -> Client {
        Client {
            endpoints,
            credentials,
            timeout,
            tls: None,
            current: 0,
            token: None,
        }
    }

    /// Speaks TLS with this configuration to the `https://` endpoints.
    pub fn with_tls(mut self, tls: Option<Arc<ClientConfig>>) -> Client {
        self.tls = tls;
        self
    }

    /// Drops the auth token so the next call fetches a new one; for when a watch stream says
    /// the token is no longer valid.
    pub fn forget_token(&mut self) {
        self.token = None;
    }

    /// The configured endpoints as URLs, for messages.
    pub fn endpoint_names(&self) -> String {
        let names: Vec<String> = self.endpoints.iter().map(Endpoint::to_string).collect();
        names.join(", ")
    }

    /// Every key starting with `prefix`, read at one revision (in pages when there are many).
    pub fn range_prefix(&mut self, prefix: &[u8]) -> Result<Range, Error> {
        self.range_prefix_at(prefix, 0)
    }

    /// Like [`Client::range_prefix`], at `revision` (0: the current one). Fails with
    /// [`Error::Compacted`] when that revision is gone.
    pub fn range_prefix_at(&mut self, prefix: &[u8], revision: i64) -> Result<Range, Error> {
        let end = prefix_end(prefix);
        let mut start = prefix.to_vec();
        let mut pinned = revision;
        let mut kvs = Vec::new();
        loop {
            let mut body = serde_json::json!({
                "key": base64_encode(&start),
                "range_end": base64_encode(&end),
                "limit": RANGE_PAGE,
            });
            if pinned > 0 {
                body["revision"] = pinned.into();
            }
            let answer = self.call("/v3/kv/range", &body)?;
            let page: RangeResponse = parse_json(&answer)?;
            // The first page fixes the revision, so later pages see the same snapshot.
            if pinned == 0 {
                pinned = page.header.revision;
            }
            for kv in page.kvs {
                kvs.push(kv.decode()?);
            }
            match kvs.last() {
                Some(last) if page.more => {
                    start = last.key.clone();
                    start.push(0);
                }
                _ => break,
            }
        }
        Ok(Range {
            revision: pinned,
            kvs,
        })
    }

    /// Stores `value` at `key`; returns the new revision.
    pub fn put(&mut self, key: &[u8], value: &[u8]) -> Result<i64, Error> {
        let body = serde_json::json!({"key": base64_encode(key), "value": base64_encode(value)});
        let answer = self.call("/v3/kv/put", &body)?;
        let answer: HeaderOnly = parse_json(&answer)?;
        Ok(answer.header.revision)
    }

    /// Removes `key`; returns the new revision and whether the key existed.
    pub fn delete(&mut self, key: &[u8]) -> Result<(i64, bool), Error> {
        let body = serde_json::json!({"key": base64_encode(key)});
        let answer = self.call("/v3/kv/deleterange", &body)?;
        let answer: DeleteResponse = parse_json(&answer)?;
        Ok((answer.header.revision, answer.deleted > 0))
    }

    /// Discards history up to `revision` (what `etcdctl compaction` does).
    pub fn compact(&mut self, revision: i64) -> Result<(), Error> {
        let body = serde_json::json!({"revision": revision, "physical": true});
        self.call("/v3/kv/compaction", &body).map(drop)
    }

    /// Opens a watch on every key under `prefix`, from `start_revision` on (0: from now).
    pub fn watch(&mut self, prefix: &[u8], start_revision: i64) -> Result<Watch, Error> {
        let body = serde_json::json!({"create_request": {
            "key": base64_encode(prefix),
            "range_end": base64_encode(&prefix_end(prefix)),
            "start_revision": start_revision,
        }});
        let body = body.to_string();
        let opened = self.with_endpoints("/v3/watch", body.as_bytes(), |s, r| {
            let mut reader = MessageReader::new(r.send(s)?, answer_decoder());
            let head = reader.read_head()?;
            if head.status >= 500 {
                return Err(Failure::Skip(format!("HTTP {}", head.status)));
            }
            if head.status != 200 {
                let answer = reader.read_body()?;
                return Err(Failure::Fatal(etcd_error(head.status, &answer)));
            }
            Ok((reader, head))
        });
        let (mut reader, head) = match opened {
            Ok(opened) => opened,
            Err(e) => {
                // The next attempt fetches a fresh token.
                if e.is_bad_token() {
                    self.token = None;
                }
                return Err(e);
            }
        };
        // The body of a watch never ends, so its total is not bounded; what the decoder keeps of
        // it, a message not yet complete, is (MAX_BODY_BYTES).
        reader.decoder_mut().set_max_body(u64::MAX);
        let mut watch = Watch {
            reader,
            decoder: WatchDecoder::default(),
            pending: std::collections::VecDeque::new(),
            payload: Vec::new(),
            close_delimited: head.body == RespBody::Close,
            over: false,
        };
        // etcd may have cancelled the watch in the very bytes that came with the head.
        if let Err(e) = watch.take_buffered() {
            if e.is_bad_token() {
                self.token = None;
            }
            return Err(e);
        }
        // The stream is idle whenever nothing changes: short reads let the caller check for a
        // stop request, and TCP keep-alive notices a peer that vanished without a FIN.
        let stream = watch.reader.io().tcp();
        stream
            .set_read_timeout(Some(WATCH_POLL))
            .map_err(|e| Error::Broken(e.to_string()))?;
        let sock = socket2::SockRef::from(stream);
        let keepalive = socket2::TcpKeepalive::new()
            .with_time(Duration::from_secs(10))
            .with_interval(Duration::from_secs(5));
        // Best effort: without keep-alive a silent peer is only noticed on the next reconnect.
        let _ = sock.set_tcp_keepalive(&keepalive);
        Ok(watch)
    }

    /// POSTs `body` to `path` on the first endpoint that answers and returns a 200 answer's body.
    /// Re-authenticates once when etcd says the token is no longer valid.
    fn call(&mut self, path: &str, body: &serde_json::Value) -> Result<Vec<u8>, Error> {
        let body = body.to_string();
        let mut reauthenticated = false;
        loop {
            let (status, answer) = self.with_endpoints(path, body.as_bytes(), |s, r| {
                let (status, answer) = read_answer(r.send(s)?)?;
                if status >= 500 {
                    return Err(Failure::Skip(format!(
                        "HTTP {status}: {}",
                        String::from_utf8_lossy(&answer).trim()
                    )));
                }
                Ok((status, answer))
            })?;
            if status == 200 {
                return Ok(answer);
            }
            let err = etcd_error(status, &answer);
            if err.is_bad_token() && self.credentials.is_some() && !reauthenticated {
                self.token = None;
                reauthenticated = true;
                continue;
            }
            return Err(err);
        }
    }

    /// Runs `exchange` against each endpoint in turn from the current one until one does not
    /// fail with [`Failure::Skip`]; fetches an auth token first when credentials are set.
    fn with_endpoints<T>(
        &mut self,
        path: &str,
        body: &[u8],
        mut exchange: impl FnMut(&Endpoint, Request<'_>) -> Result<T, Failure>,
    ) -> Result<T, Error> {
        let mut causes = Vec::new();
        for i in 0..self.endpoints.len() {
            let at = (self.current + i) % self.endpoints.len();
            let endpoint = &self.endpoints[at];
            if self.token.is_none() {
                if let Some(c) = &self.credentials {
                    match authenticate(endpoint, c, self.timeout, self.tls.as_ref()) {
                        Ok(token) => self.token = Some(token),
                        Err(Failure::Skip(why)) => {
                            causes.push((endpoint.to_string(), why));
                            continue;
                        }
                        Err(Failure::Fatal(e)) => return Err(e),
                    }
                }
            }
            let request = Request {
                path,
                body,
                token: self.token.as_deref(),
                timeout: self.timeout,
                tls: self.tls.as_ref(),
            };
            match exchange(endpoint, request) {
                Ok(t) => {
                    self.current = at;
                    return Ok(t);
                }
                Err(Failure::Skip(why)) => causes.push((endpoint.to_string(), why)),
                Err(Failure::Fatal(e)) => return Err(e),
            }
        }
        Err(Error::Unreachable(causes))
    }
}

/// Why one endpoint did not serve a call: `Skip` tries the next one, `Fatal` is the answer.
enum Failure {
    Skip(String),
    Fatal(Error),
}

impl From<io::Error> for Failure {
    fn from(e: io::Error) -> Failure {
        // rustls reports through io errors; say that it was TLS (a certificate, an alert).
        if let Some(tls) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
            return Failure::Skip(format!("TLS: {tls}"));
        }
        Failure::Skip(match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => "timed out".to_owned(),
            io::ErrorKind::UnexpectedEof => "the connection closed before the answer".to_owned(),
            _ => e.to_string(),
        })
    }
}

impl From<ReadError> for Failure {
    fn from(e: ReadError) -> Failure {
        let e = match e {
            ReadError::Io(e) => return Failure::from(e),
            ReadError::Message(e) => e,
        };
        Failure::Skip(match e {
            MessageError::Closed => "the connection closed before a response".to_owned(),
            MessageError::HeadCut => "the connection closed inside the response head".to_owned(),
            MessageError::BodyCut => "the connection closed inside the body".to_owned(),
            MessageError::BodyTooLarge => "response body too large".to_owned(),
            e => format!("bad response: {e}"),
        })
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Failure {
        Failure::Skip(e.to_string())
    }
}

/// One POST to send.
struct Request<'a> {
    path: &'a str,
    body: &'a [u8],
    token: Option<&'a str>,
    timeout: Duration,
    tls: Option<&'a Arc<ClientConfig>>,
}

/// A connection to one endpoint, plain or TLS; either way a blocking `TcpStream` underneath,
/// whose timeouts bound every read and write.
enum Stream {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl Stream {
    fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(s) => &s.sock,
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}

impl Request<'_> {
    /// Connects to `endpoint` (with a TLS handshake for `https://`) and writes the request.
    fn send(&self, endpoint: &Endpoint) -> Result<Stream, Failure> {
        let addrs = (endpoint.host.as_str(), endpoint.port)
            .to_socket_addrs()
            .map_err(|e| Failure::Skip(format!("cannot resolve {}: {e}", endpoint.host)))?;
        let mut last = Failure::Skip(format!("{} resolves to no address", endpoint.host));
        for addr in addrs {
            match TcpStream::connect_timeout(&addr, self.timeout) {
                Ok(tcp) => {
                    tcp.set_read_timeout(Some(self.timeout))?;
                    tcp.set_write_timeout(Some(self.timeout))?;
                    tcp.set_nodelay(true)?;
                    let mut stream = self.secure(endpoint, tcp)?;
                    let mut head = format!(
                        "POST {} HTTP/1.1\r\nHost: {}:{}\r\nContent-Type: application/json\r\n\
                         Content-Length: {}\r\nConnection: close\r\n",
                        self.path,
                        endpoint.host,
                        endpoint.port,
                        self.body.len()
                    );
                    if let Some(token) = self.token {
                        head.push_str("Authorization: ");
                        head.push_str(token);
                        head.push_str("\r\n");
                    }
                    head.push_str("\r\n");
                    let written = stream
                        .write_all(head.as_bytes())
                        .and_then(|()| stream.write_all(self.body))
                        .and_then(|()| stream.flush());
                    return match written {
                        Ok(()) => Ok(stream),
                        Err(e) => Err(refused_after_handshake(stream, e)),
                    };
                }
                Err(e) => last = Failure::from(e),
            }
        }
        Err(last)
    }
}

impl Request<'_> {
    /// For an `https://` endpoint, completes the TLS handshake on `tcp`, so a certificate
    /// problem is reported as such; a plain endpoint's stream is `tcp` itself.
    fn secure(&self, endpoint: &Endpoint, tcp: TcpStream) -> Result<Stream, Failure> {
        if !endpoint.tls {
            return Ok(Stream::Plain(tcp));
        }
        let Some(config) = self.tls else {
            return Err(Failure::Skip(
                "an https endpoint, and no TLS settings to reach it with".to_owned(),
            ));
        };
        let name = ServerName::try_from(endpoint.host.clone())
            .map_err(|_| Failure::Skip(format!("{:?} is not a TLS server name", endpoint.host)))?;
        let conn = ClientConnection::new(Arc::clone(config), name)
            .map_err(|e| Failure::Skip(format!("TLS: {e}")))?;
        let mut tls = StreamOwned::new(conn, tcp);
        while tls.conn.is_handshaking() {
            tls.conn.complete_io(&mut tls.sock)?;
        }
        Ok(Stream::Tls(Box::new(tls)))
    }
}

/// Why writing a request failed. Under TLS 1.3 a server checks the client's certificate after
/// the client has finished its handshake, so a refusal (a missing or unknown certificate) first
/// shows as a broken pipe or a reset on the request: the alert that says why is read if it
/// arrived, and otherwise the error still says that the TLS server closed the connection.
fn refused_after_handshake(stream: Stream, e: io::Error) -> Failure {
    let Stream::Tls(mut tls) = stream else {
        return Failure::from(e);
    };
    let _ = tls.sock.set_read_timeout(Some(Duration::from_millis(200)));
    let mut alert = None;
    for _ in 0..4 {
        match tls.conn.read_tls(&mut tls.sock) {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                if let Err(err) = tls.conn.process_new_packets() {
                    alert = Some(err);
                    break;
                }
            }
        }
    }
    match alert {
        Some(err) => Failure::Skip(format!("TLS: {err}")),
        None => Failure::Skip(format!(
            "TLS: the server closed the connection after the handshake ({e}); \
             it may want a client certificate (tls.cert and tls.key)"
        )),
    }
}

fn authenticate(
    endpoint: &Endpoint,
    c: &Credentials,
    timeout: Duration,
    tls: Option<&Arc<ClientConfig>>,
) -> Result<String, Failure> {
    let body = serde_json::json!({"name": c.user, "password": c.password}).to_string();
    let request = Request {
        path: "/v3/auth/authenticate",
        body: body.as_bytes(),
        token: None,
        timeout,
        tls,
    };
    let (status, answer) = read_answer(request.send(endpoint)?)?;
    if status >= 500 {
        return Err(Failure::Skip(format!("authentication: HTTP {status}")));
    }
    if status != 200 {
        return Err(Failure::Fatal(etcd_error(status, &answer)));
    }
    #[derive(Deserialize)]
    struct Auth {
        #[serde(default)]
        token: String,
    }
    let auth: Auth = parse_json(&answer)?;
    if auth.token.is_empty() {
        return Err(Failure::Fatal(Error::Etcd {
            status: 200,
            code: 0,
            message: "authentication returned no token (is auth enabled in etcd?)".to_owned(),
        }));
    }
    Ok(auth.token)
}

/// A reader of one answer from the gateway, within this client's bounds.
fn answer_decoder() -> ResponseDecoder {
    let limits = Limits {
        max_head_bytes: MAX_HEAD_BYTES,
        max_headers: MAX_HEADERS,
        ..Limits::default()
    };
    ResponseDecoder::new(limits, MAX_BODY_BYTES as u64)
}

/// Reads one answer whole: its status and its body, however framed (RFC 9112 §6.3).
fn read_answer(stream: impl Read) -> Result<(u16, Vec<u8>), Failure> {
    let mut reader = MessageReader::new(stream, answer_decoder());
    let head = reader.read_head()?;
    let body = reader.read_body()?;
    Ok((head.status, body))
}

/// An open watch stream.
pub struct Watch {
    reader: MessageReader<Stream, ResponseHead>,
    decoder: WatchDecoder,
    pending: std::collections::VecDeque<WatchMsg>,
    /// Payload of the last read, on its way to `decoder`.
    payload: Vec<u8>,
    /// The body runs until etcd closes the connection, so its end is a break, not the end of
    /// the watch.
    close_delimited: bool,
    /// The body has ended: once `pending` is empty, there is nothing more.
    over: bool,
}

impl Watch {
    /// The next message, or `None` when none arrived within a short poll interval. Any error
    /// means the stream is finished; open a new one.
    pub fn poll(&mut self) -> Result<Option<WatchMsg>, Error> {
        loop {
            if let Some(msg) = self.pending.pop_front() {
                return Ok(Some(msg));
            }
            if self.over {
                return Err(Error::Broken("etcd closed the stream".to_owned()));
            }
            self.payload.clear();
            let ended = match self.reader.read_payload(&mut self.payload) {
                Ok(ended) => ended,
                Err(ReadError::Io(e))
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return Ok(None)
                }
                Err(ReadError::Io(e)) => return Err(Error::Broken(e.to_string())),
                Err(ReadError::Message(MessageError::BodyCut)) => {
                    return Err(Error::Broken("etcd closed the stream".to_owned()))
                }
                Err(ReadError::Message(e)) => {
                    return Err(Error::Broken(format!("bad watch stream: {e}")))
                }
            };
            self.deliver(ended)?;
        }
    }

    /// Decodes what came with the head, without reading.
    fn take_buffered(&mut self) -> Result<(), Error> {
        let ended = self
            .reader
            .decoder_mut()
            .decode_payload(&mut self.payload)
            .map_err(|e| Error::Broken(format!("bad watch stream: {e}")))?;
        self.deliver(ended)
    }

    /// Hands `payload` to the message decoder and queues what it completes.
    fn deliver(&mut self, ended: bool) -> Result<(), Error> {
        let msgs = self
            .decoder
            .feed(&self.payload, ended && !self.close_delimited)?;
        self.payload.clear();
        self.pending.extend(msgs);
        self.over = ended;
        Ok(())
    }
}

/// Turns the payload of a watch response into messages, whatever the read boundaries: the
/// gateway writes one JSON object per message (`{"result":{...}}` or `{"error":{...}}`).
#[derive(Default)]
pub struct WatchDecoder {
    /// Payload not yet parsed: the start of a message still arriving.
    body: Vec<u8>,
}

impl WatchDecoder {
    /// Feeds the next payload bytes; returns the messages they complete. `ended`: the body
    /// ended here (etcd ended the stream), which is reported as a cancelled watch after them.
    pub fn feed(&mut self, payload: &[u8], ended: bool) -> Result<Vec<WatchMsg>, Error> {
        self.body.extend_from_slice(payload);
        let mut msgs = Vec::new();
        let mut stream =
            serde_json::Deserializer::from_slice(&self.body).into_iter::<WatchEnvelope>();
        let mut used = 0;
        loop {
            match stream.next() {
                None => {
                    used = self.body.len();
                    break;
                }
                Some(Ok(envelope)) => {
                    used = stream.byte_offset();
                    msgs.push(envelope.into_msg()?);
                }
                Some(Err(e)) if e.is_eof() => break,
                Some(Err(e)) => return Err(Error::Broken(format!("bad watch message: {e}"))),
            }
        }
        self.body.drain(..used);
        if self.body.len() > MAX_BODY_BYTES {
            return Err(Error::Broken("watch message too large".to_owned()));
        }
        if ended {
            // Said once the messages before the end have been handed out.
            msgs.push(WatchMsg::Canceled {
                reason: "etcd ended the watch stream".to_owned(),
            });
        }
        Ok(msgs)
    }
}

/// The key just past every key that starts with `prefix`: the prefix with its last byte below
/// 0xff incremented and what follows dropped. A prefix of only 0xff bytes (or none) has no such
/// key; etcd reads `range_end = "\0"` as "to the end of the keyspace".
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// Standard base64 (RFC 4648 §4) with padding, as the gateway writes bytes fields (Go's
/// `StdEncoding`). Decoding allows non-zero trailing bits, as Go's non-strict decoder does.
const PADDED: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_encode_padding(true)
        .with_decode_padding_mode(DecodePaddingMode::RequireCanonical)
        .with_decode_allow_trailing_bits(true),
);
/// The same alphabet without padding. The decoder this crate replaced took unpadded text too,
/// and a cache file may have been edited by hand, so text whose length is not a multiple of four
/// is read as unpadded rather than refused; partial padding (`Zg=`) stays an error.
const UNPADDED: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::RequireNone)
        .with_decode_allow_trailing_bits(true),
);

/// Encodes bytes as the gateway expects them.
pub fn base64_encode(input: &[u8]) -> String {
    PADDED.encode(input)
}

/// Decodes a bytes field; padding is optional, anything outside the alphabet is an error.
pub fn base64_decode(input: &str) -> Result<Vec<u8>, String> {
    let engine = if input.len() % 4 == 0 {
        &PADDED
    } else {
        &UNPADDED
    };
    engine
        .decode(input)
        .map_err(|e| format!("bad base64 in {input:?}: {e}"))
}

// The gateway's JSON. int64 fields arrive as strings ("revision":"12"); fields at their zero
// value are left out, hence `default` everywhere.

fn int64<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Int {
        Text(String),
        Number(i64),
    }
    match Int::deserialize(d)? {
        Int::Number(n) => Ok(n),
        Int::Text(s) => s
            .parse()
            .map_err(|_| de::Error::custom(format!("expected an integer, found {s:?}"))),
    }
}

#[derive(Deserialize, Default)]
struct ResponseHeader {
    #[serde(default, deserialize_with = "int64")]
    revision: i64,
}

#[derive(Deserialize)]
struct HeaderOnly {
    #[serde(default)]
    header: ResponseHeader,
}

#[derive(Deserialize)]
struct DeleteResponse {
    #[serde(default)]
    header: ResponseHeader,
    #[serde(default, deserialize_with = "int64")]
    deleted: i64,
}

#[derive(Deserialize)]
struct RangeResponse {
    #[serde(default)]
    header: ResponseHeader,
    #[serde(default)]
    kvs: Vec<RawKv>,
    #[serde(default)]
    more: bool,
}

#[derive(Deserialize)]
struct RawKv {
    #[serde(default)]
    key: String,
    #[serde(default)]
    value: String,
    #[serde(default, deserialize_with = "int64")]
    mod_revision: i64,
}

impl RawKv {
    fn decode(self) -> Result<KeyValue, Error> {
        let bad = |e: String| Error::Broken(format!("etcd sent a bad key or value: {e}"));
        Ok(KeyValue {
            key: base64_decode(&self.key).map_err(bad)?,
            value: base64_decode(&self.value).map_err(bad)?,
            mod_revision: self.mod_revision,
        })
    }
}

#[derive(Deserialize)]
struct WatchEnvelope {
    result: Option<WatchResult>,
    error: Option<ErrorBody>,
}

#[derive(Deserialize)]
struct WatchResult {
    #[serde(default)]
    header: ResponseHeader,
    #[serde(default)]
    created: bool,
    #[serde(default)]
    canceled: bool,
    #[serde(default, deserialize_with = "int64")]
    compact_revision: i64,
    #[serde(default)]
    cancel_reason: String,
    #[serde(default)]
    events: Vec<RawEvent>,
}

#[derive(Deserialize)]
struct RawEvent {
    #[serde(rename = "type", default)]
    kind: Option<String>,
    kv: RawKv,
}

#[derive(Deserialize, Default)]
struct ErrorBody {
    #[serde(default)]
    code: i64,
    #[serde(default)]
    message: String,
    #[serde(default)]
    error: String,
    #[serde(default)]
    http_code: u16,
}

impl WatchEnvelope {
    fn into_msg(self) -> Result<WatchMsg, Error> {
        let Some(r) = self.result else {
            let e = self.error.unwrap_or_default();
            let message = if e.message.is_empty() {
                e.error
            } else {
                e.message
            };
            return Err(Error::Etcd {
                status: e.http_code,
                code: e.code,
                message,
            });
        };
        if r.compact_revision > 0 {
            return Ok(WatchMsg::Compacted {
                compact_revision: r.compact_revision,
            });
        }
        // A watch opened with an expired or unknown token is answered 200 and cancelled at
        // once, the gRPC status only in the reason: surface it as the auth error it is, so the
        // caller fetches a new token instead of retrying the dead one.
        if r.canceled && r.cancel_reason.contains("invalid auth token") {
            return Err(Error::Etcd {
                status: 401,
                code: 16,
                message: r.cancel_reason,
            });
        }
        if r.canceled {
            let reason = if r.cancel_reason.is_empty() {
                "etcd cancelled the watch".to_owned()
            } else {
                r.cancel_reason
            };
            return Ok(WatchMsg::Canceled { reason });
        }
        if r.created {
            return Ok(WatchMsg::Created {
                revision: r.header.revision,
            });
        }
        if r.events.is_empty() {
            return Ok(WatchMsg::Progress {
                revision: r.header.revision,
            });
        }
        let mut events = Vec::with_capacity(r.events.len());
        for e in r.events {
            let kind = match e.kind.as_deref() {
                None | Some("PUT") => EventKind::Put,
                Some("DELETE") => EventKind::Delete,
                Some(other) => {
                    return Err(Error::Broken(format!("unknown watch event type {other:?}")))
                }
            };
            events.push(Event {
                kind,
                kv: e.kv.decode()?,
            });
        }
        Ok(WatchMsg::Events { events })
    }
}

fn parse_json<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, Error> {
    serde_json::from_slice(body).map_err(|e| {
        Error::Broken(format!(
            "etcd's answer is not what was expected ({e}): {}",
            String::from_utf8_lossy(&body[..body.len().min(200)])
        ))
    })
}

/// The error a non-200 answer states: `{"error":..,"message":..,"code":N}` from the gateway.
fn etcd_error(status: u16, body: &[u8]) -> Error {
    let e: ErrorBody = serde_json::from_slice(body).unwrap_or_else(|_| ErrorBody {
        message: String::from_utf8_lossy(body).trim().to_owned(),
        ..ErrorBody::default()
    });
    let message = if e.message.is_empty() {
        e.error
    } else {
        e.message
    };
    // gRPC OutOfRange is how a read at a compacted revision is refused.
    if e.code == 11 && message.contains("compacted") {
        return Error::Compacted {
            compact_revision: 0,
        };
    }
    Error::Etcd {
        status,
        code: e.code,
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips_and_matches_rfc4648_vectors() {
        // RFC 4648 §10.
        let table = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
            ("/apisix/routes/1", "L2FwaXNpeC9yb3V0ZXMvMQ=="),
        ];
        for (plain, encoded) in table {
            assert_eq!(base64_encode(plain.as_bytes()), encoded, "{plain:?}");
            assert_eq!(
                base64_decode(encoded).unwrap(),
                plain.as_bytes(),
                "{encoded:?}"
            );
        }
        let all: Vec<u8> = (0..=255).collect();
        for len in 0..all.len() {
            let encoded = base64_encode(&all[..len]);
            assert_eq!(base64_decode(&encoded).unwrap(), &all[..len]);
            // Unpadded input decodes the same.
            assert_eq!(
                base64_decode(encoded.trim_end_matches('=')).unwrap(),
                &all[..len]
            );
        }
    }

    #[test]
    fn base64_takes_trailing_bits_as_go_does() {
        // "Zh==" carries a set bit past the last byte; Go's StdEncoding and the old decoder
        // both read it as "f".
        assert_eq!(base64_decode("Zh==").unwrap(), b"f");
        assert_eq!(base64_decode("Zh").unwrap(), b"f");
    }

    #[test]
    fn base64_refuses_what_is_not_base64() {
        for bad in ["Zg=", "Z", "Zg===", "Zm9v!", "Zm 9v", "Z===", "=Zm9"] {
            assert!(base64_decode(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn prefix_end_is_the_first_key_past_the_prefix() {
        let table: [(&[u8], &[u8]); 5] = [
            (b"/apisix/", b"/apisix0"),
            (b"a", b"b"),
            (b"a\xff", b"b"),
            (b"\xff\xff", b"\0"),
            (b"", b"\0"),
        ];
        for (prefix, end) in table {
            assert_eq!(prefix_end(prefix), end, "{prefix:?}");
        }
    }

    #[test]
    fn endpoints_parse_from_urls() {
        let ok = [
            ("http://127.0.0.1:2379", "127.0.0.1", 2379, false),
            ("http://etcd.local:2379/", "etcd.local", 2379, false),
            ("http://etcd", "etcd", 2379, false),
            ("http://[::1]:23790", "::1", 23790, false),
            ("https://127.0.0.1:2379", "127.0.0.1", 2379, true),
            ("https://etcd.local", "etcd.local", 2379, true),
        ];
        for (url, host, port, tls) in ok {
            let e = Endpoint::parse(url).unwrap();
            assert_eq!((e.host.as_str(), e.port, e.tls), (host, port, tls), "{url}");
        }
        for url in ["http://[::1]:1", "https://[::1]:1", "https://a.test:2379"] {
            assert_eq!(Endpoint::parse(url).unwrap().to_string(), url);
        }
        for (url, why) in [
            ("127.0.0.1:2379", "expected a URL"),
            ("ftp://127.0.0.1:2379", "expected a URL"),
            ("http://127.0.0.1:x", "bad port"),
            ("http://127.0.0.1:2379/v3", "only a host and port"),
            ("https://", "only a host and port"),
            ("http://:2379", "host is empty"),
        ] {
            let e = Endpoint::parse(url).unwrap_err();
            assert!(e.contains(why), "{url}: {e}");
        }
    }

    #[test]
    fn credentials_keep_the_password_out_of_debug() {
        let c = Credentials {
            user: "root".into(),
            password: "s3cret".into(),
        };
        let shown = format!("{c:?}");
        assert!(
            shown.contains("root") && !shown.contains("s3cret"),
            "{shown}"
        );
    }

    /// A watch stream as etcd 3.4's gateway sends it (captured with curl --raw), chunked.
    fn watch_wire() -> Vec<u8> {
        let messages = [
            r#"{"result":{"header":{"cluster_id":"1","member_id":"2","revision":"6","raft_term":"2"},"created":true}}"#,
            r#"{"result":{"header":{"revision":"7"},"events":[{"kv":{"key":"L2FwaXNpeC9yb3V0ZXMvMQ==","create_revision":"7","mod_revision":"7","version":"1","value":"e30="}}]}}"#,
            r#"{"result":{"header":{"revision":"8"},"events":[{"type":"DELETE","kv":{"key":"L2FwaXNpeC9yb3V0ZXMvMQ==","mod_revision":"8"}}]}}"#,
            r#"{"result":{"header":{"revision":"8"}}}"#,
            r#"{"result":{"header":{"raft_term":"2"},"canceled":true,"compact_revision":"5"}}"#,
        ];
        let mut wire = Vec::new();
        for m in messages {
            let line = format!("{m}\n");
            wire.extend_from_slice(format!("{:x}\r\n{line}\r\n", line.len()).as_bytes());
        }
        wire
    }

    fn expected_watch() -> Vec<WatchMsg> {
        let key = b"/apisix/routes/1".to_vec();
        vec![
            WatchMsg::Created { revision: 6 },
            WatchMsg::Events {
                events: vec![Event {
                    kind: EventKind::Put,
                    kv: KeyValue {
                        key: key.clone(),
                        value: b"{}".to_vec(),
                        mod_revision: 7,
                    },
                }],
            },
            WatchMsg::Events {
                events: vec![Event {
                    kind: EventKind::Delete,
                    kv: KeyValue {
                        key,
                        value: Vec::new(),
                        mod_revision: 8,
                    },
                }],
            },
            WatchMsg::Progress { revision: 8 },
            WatchMsg::Compacted {
                compact_revision: 5,
            },
        ]
    }

    /// The head etcd's gateway sends before a watch stream.
    const WATCH_HEAD: &[u8] =
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n";

    /// What a watch makes of `parts`, read in turn: the response decoder's payload, handed to
    /// the watch decoder after each part, as `Watch::poll` does after each read.
    fn watch_messages(parts: &[&[u8]]) -> Result<Vec<WatchMsg>, Error> {
        let mut http = answer_decoder();
        http.set_max_body(u64::MAX);
        let mut watch = WatchDecoder::default();
        let mut msgs = Vec::new();
        for part in parts {
            http.feed(part);
            let mut payload = Vec::new();
            let ended = http
                .decode_payload(&mut payload)
                .map_err(|e| Error::Broken(e.to_string()))?;
            msgs.extend(watch.feed(&payload, ended)?);
        }
        Ok(msgs)
    }

    #[test]
    fn watch_streams_decode_whatever_the_split() {
        let wire = [WATCH_HEAD, &watch_wire()].concat();
        for split in 0..wire.len() {
            let msgs = watch_messages(&[&wire[..split], &wire[split..]]).unwrap();
            assert_eq!(msgs, expected_watch(), "split {split}");
        }
        let bytes: Vec<&[u8]> = wire.chunks(1).collect();
        assert_eq!(watch_messages(&bytes).unwrap(), expected_watch());
    }

    #[test]
    fn watch_stream_end_and_errors_are_reported() {
        let msgs = watch_messages(&[WATCH_HEAD, b"0\r\n\r\n"]).unwrap();
        assert!(
            matches!(msgs.as_slice(), [WatchMsg::Canceled { .. }]),
            "{msgs:?}"
        );
        // Bad framing, and a bad message in good framing.
        let e = watch_messages(&[WATCH_HEAD, b"zz\r\n"]);
        assert!(matches!(e, Err(Error::Broken(_))), "{e:?}");
        let e = watch_messages(&[WATCH_HEAD, b"5\r\nabc\r\n\r\n"]);
        assert!(matches!(e, Err(Error::Broken(_))), "{e:?}");

        let mut d = WatchDecoder::default();
        let e = d.feed(br#"{"error":{"grpc_code":16,"http_code":401,"message":"etcdserver: invalid auth token","http_status":"Unauthorized"}}"#, false);
        assert!(matches!(e, Err(Error::Etcd { status: 401, .. })), "{e:?}");

        // Captured from etcd 3.4 with a token it does not know.
        let mut d = WatchDecoder::default();
        let e = d.feed(br#"{"result":{"header":{"revision":"1"},"watch_id":"-1","created":true,"canceled":true,"cancel_reason":"rpc error: code = Unauthenticated desc = etcdserver: invalid auth token"}}"#, false);
        assert!(e.as_ref().is_err_and(Error::is_bad_token), "{e:?}");

        let mut d = WatchDecoder::default();
        assert!(matches!(
            d.feed(b"{\"result\":{}} nonsense", false),
            Err(Error::Broken(_))
        ));

        let mut d = WatchDecoder::default();
        let e = d.feed(
            br#"{"result":{"events":[{"type":"WEIRD","kv":{}}]}}"#,
            false,
        );
        assert!(matches!(e, Err(Error::Broken(_))), "{e:?}");
    }

    /// What `read_answer` made of an answer: its status and body, or why the endpoint is skipped.
    type Answer = Result<(u16, Vec<u8>), String>;

    fn answer(wire: &[u8]) -> Answer {
        read_answer(io::Cursor::new(wire)).map_err(|f| match f {
            Failure::Skip(why) => why,
            Failure::Fatal(e) => panic!("fatal: {e}"),
        })
    }

    #[test]
    fn answers_are_read_by_their_framing() {
        let ok = |status: u16, body: &[u8]| Ok((status, body.to_vec()));
        let table: &[(&[u8], Answer)] = &[
            (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello, extra", ok(200, b"hello")),
            (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhe\r\n3\r\nllo\r\n0\r\n\r\n", ok(200, b"hello")),
            (b"HTTP/1.1 200 OK\r\n\r\nhello", ok(200, b"hello")),
            (b"HTTP/1.1 400 Bad Request\r\nContent-Length: 11\r\n\r\n{\"code\":11}", ok(400, b"{\"code\":11}")),
            (b"HTTP/1.1 400 Bad Request\r\nContent-Length: 12\r\n\r\n{\"code\":11}", Err("the connection closed inside the body".into())),
            (b"", Err("the connection closed before a response".into())),
            (b"HTTP/1.1 200 OK\r\nContent-", Err("the connection closed inside the response head".into())),
            (b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", Err("bad response: malformed head".into())),
            (b"SSH-2.0-OpenSSH\r\n\r\n", Err("bad response: malformed head".into())),
            (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", Err("bad response: malformed chunked framing".into())),
            (b"HTTP/1.1 200 OK\r\nContent-Length: 268435457\r\n\r\n", Err("response body too large".into())),
        ];
        for (wire, want) in table {
            assert_eq!(answer(wire), *want, "{}", String::from_utf8_lossy(wire));
        }
    }

    #[test]
    fn etcd_errors_are_classified() {
        let compacted = br#"{"error":"etcdserver: mvcc: required revision has been compacted","message":"etcdserver: mvcc: required revision has been compacted","code":11}"#;
        assert!(matches!(
            etcd_error(400, compacted),
            Error::Compacted { .. }
        ));
        let token = br#"{"error":"etcdserver: invalid auth token","message":"etcdserver: invalid auth token","code":16}"#;
        assert!(etcd_error(401, token).is_bad_token());
        let denied = br#"{"error":"etcdserver: permission denied","code":7}"#;
        let e = etcd_error(403, denied);
        assert!(!e.is_bad_token());
        assert!(e.to_string().contains("permission denied"), "{e}");
        assert!(etcd_error(404, b"Not Found\n")
            .to_string()
            .contains("Not Found"));
    }

    #[test]
    fn unreachable_names_every_endpoint() {
        let one = Error::Unreachable(vec![(
            "http://127.0.0.1:2379".into(),
            "Connection refused".into(),
        )]);
        assert_eq!(
            one.to_string(),
            "etcd at http://127.0.0.1:2379 unreachable: Connection refused"
        );
        let two = Error::Unreachable(vec![
            ("http://a:1".into(), "x".into()),
            ("http://b:2".into(), "y".into()),
        ]);
        assert_eq!(
            two.to_string(),
            "etcd at http://a:1, http://b:2 unreachable: http://a:1: x; http://b:2: y"
        );
    }

    #[test]
    fn int64_fields_accept_strings_and_numbers() {
        let r: RangeResponse = serde_json::from_str(
            r#"{"header":{"revision":"42"},"kvs":[{"key":"eA==","mod_revision":7}],"count":"1"}"#,
        )
        .unwrap();
        assert_eq!(r.header.revision, 42);
        assert_eq!(r.kvs[0].mod_revision, 7);
        assert!(serde_json::from_str::<RangeResponse>(r#"{"header":{"revision":"x"}}"#).is_err());
    }
}
