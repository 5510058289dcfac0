//! Why hearth answered a request itself, or cut it: one small `Copy` value per failure, carried
//! from where the failure is seen to where the answer is made, so that every answer hearth makes
//! names its cause twice: as a short token on the access log line (`cause=upstream_reset`), and
//! in a warning that says it in words, at most once a second per node and cause.
//!
//! A cause knows its side (the client's doing, the upstream's, or hearth's own), the status it is
//! answered with, and its token. The words need the circumstances (which node, how much of the
//! body had gone), which [`Cause::describe`] takes from a [`Context`].

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    // ---- the client's doing
    /// The request head is malformed (400).
    BadRequest,
    /// The request head is larger than `client.max_head_bytes` (431).
    HeadTooLarge,
    /// The request target is too long (414).
    UriTooLong,
    /// A transfer coding hearth cannot frame (501).
    UnsupportedCoding,
    /// The chunked request body is malformed (400).
    BadRequestBody,
    /// The request body is larger than `client.max_body_bytes` (413).
    BodyTooLarge,
    /// The request head did not arrive within `client.header_timeout` (408).
    HeaderTimeout,
    /// The request body stalled for `client.body_timeout` (408).
    BodyTimeout,
    /// No route matches the request (404).
    NoRoute,
    /// CONNECT: a reverse proxy opens no tunnels (405).
    ConnectMethod,
    /// The client went away before its answer was complete (logged as 499).
    ClientAbort,
    /// The client stopped reading the answer for `client.send_timeout`.
    SendTimeout,
    // ---- hearth's own
    /// The core ran out of buffers (503).
    NoBuffer,
    // ---- the upstream's
    /// The route's upstream has no node that can take requests (502).
    NoNode,
    /// The node refused the connection (502).
    ConnectRefused,
    /// Connecting failed otherwise (502).
    ConnectFailed,
    /// The node did not accept the connection within `timeout.connect` (504).
    ConnectTimeout,
    /// The TLS handshake with the node failed (502).
    TlsHandshake,
    /// The node reset the connection (502, or a cut answer).
    UpstreamReset,
    /// The node closed the connection before its answer was complete (502, or a cut answer).
    UpstreamClosed,
    /// The response head is invalid (502).
    BadResponse,
    /// The response body's framing is invalid (502, or a cut answer).
    BadResponseBody,
    /// A 101 for a protocol the request did not offer (502).
    UnexpectedUpgrade,
    /// The node sent nothing for `timeout.read` (504, or a cut answer).
    ReadTimeout,
    /// The queue for a node at `max_connections` is full (503).
    QueueFull,
    /// A request waited `queue.timeout` for a connection (503).
    QueueTimeout,
    /// A reload removed the node while the request waited for it (502).
    NodeRemoved,
}

/// The circumstances of a failure, for its warning.
#[derive(Debug, Clone, Copy, Default)]
pub struct Context {
    /// The node, when the failure concerns one.
    pub node: Option<SocketAddr>,
    /// The client's address.
    pub client: Option<std::net::IpAddr>,
    /// Bytes of the request body sent to the node before the failure.
    pub body_sent: u64,
    /// Whether the node had begun its answer.
    pub answered: bool,
    /// The limit that ran out, in milliseconds, for timeouts.
    pub limit_ms: u64,
}

impl Cause {
    pub const ALL: [Cause; 27] = [
        Cause::BadRequest,
        Cause::HeadTooLarge,
        Cause::UriTooLong,
        Cause::UnsupportedCoding,
        Cause::BadRequestBody,
        Cause::BodyTooLarge,
        Cause::HeaderTimeout,
        Cause::BodyTimeout,
        Cause::NoRoute,
        Cause::ConnectMethod,
        Cause::ClientAbort,
        Cause::SendTimeout,
        Cause::NoBuffer,
        Cause::NoNode,
        Cause::ConnectRefused,
        Cause::ConnectFailed,
        Cause::ConnectTimeout,
        Cause::TlsHandshake,
        Cause::UpstreamReset,
        Cause::UpstreamClosed,
        Cause::BadResponse,
        Cause::BadResponseBody,
        Cause::UnexpectedUpgrade,
        Cause::ReadTimeout,
        Cause::QueueFull,
        Cause::QueueTimeout,
        Cause::NodeRemoved,
    ];

    /// The access log's token.
    pub fn token(self) -> &'static str {
        match self {
            Cause::BadRequest => "bad_request",
            Cause::HeadTooLarge => "head_too_large",
            Cause::UriTooLong => "uri_too_long",
            Cause::UnsupportedCoding => "unsupported_coding",
            Cause::BadRequestBody => "bad_request_body",
            Cause::BodyTooLarge => "body_too_large",
            Cause::HeaderTimeout => "header_timeout",
            Cause::BodyTimeout => "body_timeout",
            Cause::NoRoute => "no_route",
            Cause::ConnectMethod => "connect_method",
            Cause::ClientAbort => "client_abort",
            Cause::SendTimeout => "send_timeout",
            Cause::NoBuffer => "no_buffer",
            Cause::NoNode => "no_node",
            Cause::ConnectRefused => "connect_refused",
            Cause::ConnectFailed => "connect_failed",
            Cause::ConnectTimeout => "connect_timeout",
            Cause::TlsHandshake => "tls_handshake",
            Cause::UpstreamReset => "upstream_reset",
            Cause::UpstreamClosed => "upstream_closed",
            Cause::BadResponse => "bad_response",
            Cause::BadResponseBody => "bad_response_framing",
            Cause::UnexpectedUpgrade => "unexpected_upgrade",
            Cause::ReadTimeout => "read_timeout",
            Cause::QueueFull => "queue_full",
            Cause::QueueTimeout => "queue_timeout",
            Cause::NodeRemoved => "node_removed",
        }
    }

    /// The status hearth answers with when nothing of the upstream's answer has gone out.
    pub fn status(self) -> u16 {
        match self {
            Cause::BadRequest | Cause::BadRequestBody => 400,
            Cause::HeadTooLarge => 431,
            Cause::UriTooLong => 414,
            Cause::UnsupportedCoding => 501,
            Cause::BodyTooLarge => 413,
            Cause::HeaderTimeout | Cause::BodyTimeout => 408,
            Cause::NoRoute => 404,
            Cause::ConnectMethod => 405,
            Cause::ClientAbort | Cause::SendTimeout => 499,
            Cause::NoBuffer | Cause::QueueFull | Cause::QueueTimeout => 503,
            Cause::ConnectTimeout | Cause::ReadTimeout => 504,
            Cause::NoNode
            | Cause::ConnectRefused
            | Cause::ConnectFailed
            | Cause::TlsHandshake
            | Cause::UpstreamReset
            | Cause::UpstreamClosed
            | Cause::BadResponse
            | Cause::BadResponseBody
            | Cause::UnexpectedUpgrade
            | Cause::NodeRemoved => 502,
        }
    }

    /// The cause of refusing a request head the parser could not accept.
    pub fn of_head_error(e: crate::http::head::HeadError) -> Cause {
        use crate::http::head::HeadError;
        match e {
            HeadError::Malformed => Cause::BadRequest,
            HeadError::HeadTooLarge | HeadError::TooManyHeaders => Cause::HeadTooLarge,
            HeadError::UriTooLong => Cause::UriTooLong,
            HeadError::UnsupportedCoding => Cause::UnsupportedCoding,
        }
    }

    /// Whether the upstream (rather than the client or hearth) is at fault.
    pub fn upstream(self) -> bool {
        matches!(
            self,
            Cause::NoNode
                | Cause::ConnectRefused
                | Cause::ConnectFailed
                | Cause::ConnectTimeout
                | Cause::TlsHandshake
                | Cause::UpstreamReset
                | Cause::UpstreamClosed
                | Cause::BadResponse
                | Cause::BadResponseBody
                | Cause::UnexpectedUpgrade
                | Cause::ReadTimeout
                | Cause::QueueFull
                | Cause::QueueTimeout
                | Cause::NodeRemoved
        )
    }

    /// The cause in words, for the log.
    pub fn describe(self, cx: &Context) -> String {
        let mut s = String::new();
        let node = |s: &mut String| match cx.node {
            Some(a) => {
                let _ = write!(s, "upstream {a}");
            }
            None => s.push_str("the upstream"),
        };
        let client = |s: &mut String| match cx.client {
            Some(ip) => {
                let _ = write!(s, "client {ip}");
            }
            None => s.push_str("a client"),
        };
        let body = |s: &mut String| {
            if cx.body_sent > 0 {
                let _ = write!(s, " after {} of the request body", size(cx.body_sent));
            }
        };
        let before = |s: &mut String| {
            s.push_str(if cx.answered {
                " before its answer was complete"
            } else {
                " before answering"
            })
        };
        match self {
            Cause::BadRequest => {
                client(&mut s);
                s.push_str(" sent a malformed request head (400)");
            }
            Cause::HeadTooLarge => {
                client(&mut s);
                s.push_str(" sent a request head over client.max_head_bytes (431)");
            }
            Cause::UriTooLong => {
                client(&mut s);
                s.push_str(" sent a request target that is too long (414)");
            }
            Cause::UnsupportedCoding => {
                client(&mut s);
                s.push_str(" sent a transfer coding other than chunked (501)");
            }
            Cause::BadRequestBody => {
                client(&mut s);
                s.push_str(" sent a malformed chunked body (400)");
            }
            Cause::BodyTooLarge => {
                client(&mut s);
                s.push_str(" sent a body over client.max_body_bytes (413)");
            }
            Cause::HeaderTimeout => {
                client(&mut s);
                let _ = write!(
                    s,
                    " did not send a whole request head within {} (client.header_timeout, 408)",
                    ms(cx.limit_ms)
                );
            }
            Cause::BodyTimeout => {
                client(&mut s);
                let _ = write!(
                    s,
                    " sent no request body bytes for {} (client.body_timeout, 408)",
                    ms(cx.limit_ms)
                );
            }
            Cause::NoRoute => {
                client(&mut s);
                s.push_str(" asked for what no route matches (404)");
            }
            Cause::ConnectMethod => {
                client(&mut s);
                s.push_str(" sent CONNECT, which a reverse proxy does not tunnel (405)");
            }
            Cause::ClientAbort => {
                client(&mut s);
                s.push_str(" closed its connection before its answer (499)");
            }
            Cause::SendTimeout => {
                client(&mut s);
                let _ = write!(
                    s,
                    " read none of its answer for {} (client.send_timeout)",
                    ms(cx.limit_ms)
                );
            }
            Cause::NoBuffer => s.push_str("the core ran out of buffers (503)"),
            Cause::NoNode => s.push_str("no node of the upstream can take requests (502)"),
            Cause::ConnectRefused => {
                node(&mut s);
                s.push_str(" refused the connection (502)");
            }
            Cause::ConnectFailed => {
                s.push_str("connecting to ");
                node(&mut s);
                s.push_str(" failed (502)");
            }
            Cause::ConnectTimeout => {
                node(&mut s);
                let _ = write!(
                    s,
                    " did not accept the connection within {} (timeout.connect, 504)",
                    ms(cx.limit_ms)
                );
            }
            Cause::TlsHandshake => {
                s.push_str("the TLS handshake with ");
                node(&mut s);
                s.push_str(" failed (502)");
            }
            Cause::UpstreamReset => {
                node(&mut s);
                s.push_str(" reset the connection");
                body(&mut s);
                before(&mut s);
            }
            Cause::UpstreamClosed => {
                node(&mut s);
                s.push_str(" closed the connection");
                body(&mut s);
                before(&mut s);
            }
            Cause::BadResponse => {
                node(&mut s);
                s.push_str(" sent an invalid response head (502)");
            }
            Cause::BadResponseBody => {
                node(&mut s);
                s.push_str(" sent a response body with invalid framing");
            }
            Cause::UnexpectedUpgrade => {
                node(&mut s);
                s.push_str(" switched protocols (101) to one the request did not offer (502)");
            }
            Cause::ReadTimeout => {
                node(&mut s);
                let _ = write!(s, " sent nothing for {} (timeout.read)", ms(cx.limit_ms));
            }
            Cause::QueueFull => {
                s.push_str("the queue for ");
                node(&mut s);
                s.push_str(" is full (queue.size, 503)");
            }
            Cause::QueueTimeout => {
                s.push_str("a request waited ");
                let _ = write!(s, "{} for a connection to ", ms(cx.limit_ms));
                node(&mut s);
                s.push_str(" at max_connections (queue.timeout, 503)");
            }
            Cause::NodeRemoved => {
                node(&mut s);
                s.push_str(" left the configuration while a request waited for it (502)");
            }
        }
        s
    }
}

/// `1.2 MB`, `512 B`: how much of a body went, in the units a person reads.
fn size(bytes: u64) -> String {
    const UNITS: [(u64, &str); 3] = [(1 << 30, "GB"), (1 << 20, "MB"), (1 << 10, "KB")];
    for (unit, name) in UNITS {
        if bytes >= unit {
            return format!("{:.1} {name}", bytes as f64 / unit as f64);
        }
    }
    format!("{bytes} B")
}

fn ms(ms: u64) -> String {
    if ms >= 1_000 && ms % 100 == 0 {
        format!("{:.1} s", ms as f64 / 1_000.0)
    } else {
        format!("{ms} ms")
    }
}

/// When each cause was last logged as a warning, per node or for the clients, so that a storm of
/// one failure is one line a second, not one per request. Shared by the cores (a failure path
/// touches it, never a request that succeeds); the first core to claim a second logs it.
#[derive(Debug)]
pub struct WarnClock {
    last: [AtomicU64; Cause::ALL.len()],
}

impl Default for WarnClock {
    fn default() -> Self {
        WarnClock {
            last: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

impl WarnClock {
    /// True at most once per second of `now_ms` (any clock that only moves forward) per cause.
    pub fn may_warn(&self, cause: Cause, now_ms: u64) -> bool {
        let slot = &self.last[cause as usize];
        let last = slot.load(Ordering::Acquire);
        (last == 0 || now_ms >= last + 1_000)
            && slot
                .compare_exchange(last, now_ms.max(1), Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_distinct_and_short() {
        let mut seen = std::collections::HashSet::new();
        for (i, c) in Cause::ALL.iter().enumerate() {
            assert_eq!(*c as usize, i, "ALL is in declaration order");
            let t = c.token();
            assert!(seen.insert(t), "{t} twice");
            assert!(
                t.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{t}"
            );
            assert!(c.describe(&Context::default()).len() > 10);
        }
    }

    #[test]
    fn the_words_say_what_happened() {
        let cx = Context {
            node: Some("127.0.0.1:9001".parse().unwrap()),
            body_sent: 1_258_291,
            ..Context::default()
        };
        assert_eq!(
            Cause::UpstreamReset.describe(&cx),
            "upstream 127.0.0.1:9001 reset the connection after 1.2 MB of the request body \
             before answering"
        );
        let cx = Context {
            limit_ms: 2_000,
            ..cx
        };
        assert_eq!(
            Cause::ReadTimeout.describe(&cx),
            "upstream 127.0.0.1:9001 sent nothing for 2.0 s (timeout.read)"
        );
        assert_eq!(size(512), "512 B");
        assert_eq!(size(1536), "1.5 KB");
    }

    #[test]
    fn statuses_follow_the_side() {
        for c in Cause::ALL {
            let s = c.status();
            if c.upstream() {
                assert!(matches!(s, 502..=504), "{c:?}");
            } else {
                assert!(!matches!(s, 502 | 504), "{c:?}");
            }
        }
    }

    #[test]
    fn a_warning_a_second_per_cause() {
        let w = WarnClock::default();
        assert!(w.may_warn(Cause::UpstreamReset, 5));
        assert!(!w.may_warn(Cause::UpstreamReset, 900));
        assert!(w.may_warn(Cause::ReadTimeout, 900));
        assert!(w.may_warn(Cause::UpstreamReset, 1_005));
        assert!(!w.may_warn(Cause::UpstreamReset, 1_006));
    }
}
