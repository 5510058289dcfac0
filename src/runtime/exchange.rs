//! A request's exchange with its upstream: the record of one request in flight.
//!
//! The exchange's upstream leg is a closed enum, [`Leg`]: queued, connecting, attached to a
//! connection, or draining the rest of the request body after a complete answer. The leg names
//! the connection, so "where is this request" is read off the exchange, never rebuilt from the
//! pool's tables. The answer's progress is [`Resp`]: nothing yet, a head arriving, the body, done.
//! The steps that move an exchange are the core's, in `relay`.

use crate::balance::Tried;
use crate::buf::Buf;
use crate::cause::Cause;
use crate::http::body::ChunkedDecoder;
use crate::http::head::Version;
use crate::http::rewrite::Offer;
use crate::id::{NodeId, UpId};
use crate::route::QueueRank;
use crate::runtime::generation::UpSettings;
use crate::upstream::pool::KeepAliveHint;
use crate::upstream::QueueKey;

/// How a request body arrives from the client.
#[derive(Debug)]
pub(super) enum BodyIn {
    Done,
    Length(u64),
    Chunked(ChunkedDecoder),
}

/// How a response body arrives from the upstream, and what the client gets of it.
#[derive(Debug)]
pub(super) enum BodyOut {
    Length(u64),
    Chunked {
        dec: ChunkedDecoder,
        dechunk: bool,
        /// The upstream ends lines in LF alone: the body is framed afresh for the client.
        reframe: bool,
    },
    /// Delimited by the upstream closing.
    Close,
}

/// How far the answer got.
#[derive(Debug)]
pub(super) enum Resp {
    /// Not a byte of it yet: the request may still be sent again elsewhere.
    Waiting,
    /// Bytes of a head arrived (or interim answers went to the client); no final head yet.
    Head,
    /// A final head went to the client; its body follows. From here a failure can only cut the
    /// client connection.
    Body(BodyOut),
    Done,
}

/// Where a request stands with the upstream side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Leg {
    /// Not on a connection: before its first try, and between tries.
    Unattached,
    /// Waiting in its node's queue for a connection, since then.
    Queued { since: u64 },
    /// A connection is being opened for it (TCP, then TLS where the node has it).
    Connecting(UpId),
    /// On a connection: the request going up, the answer coming back.
    Attached(UpId),
    /// The answer is complete, and the rest of the request body goes on so that the connection
    /// can be pooled: until `until`, for at most `left` more bytes (see `keeps_draining`).
    Draining { up: UpId, until: u64, left: u64 },
}

impl Leg {
    /// The connection, if the leg has one.
    pub(super) fn up(self) -> Option<UpId> {
        match self {
            Leg::Connecting(up) | Leg::Attached(up) | Leg::Draining { up, .. } => Some(up),
            Leg::Unattached | Leg::Queued { .. } => None,
        }
    }

    /// Takes the connection off the leg, leaving it unattached.
    pub(super) fn take_up(&mut self) -> Option<UpId> {
        let up = self.up();
        if up.is_some() {
            *self = Leg::Unattached;
        }
        up
    }
}

/// Which of an exchange's bodies has bytes in the core's splice pipe (`io::SplicePipe`). At
/// most one exchange of a core holds any, in one direction, and while it does, that body moves
/// through the pipe alone: nothing of it is read into a buffer behind bytes still in the pipe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Piped {
    Nothing,
    /// Request body bytes taken from the client, not yet written to the upstream.
    Request,
    /// Response body bytes taken from the upstream, not yet written to the client.
    Response,
}

/// One request/response exchange between a client and an upstream node.
#[derive(Debug)]
pub(super) struct Exchange {
    pub(super) node: NodeId,
    /// The tag of the SNI name its upstream connection must have been made for (see
    /// `Core::sni_names`); 0 where every connection of the pool fits.
    pub(super) sni: u64,
    /// The upstream's settings as they were when the request arrived; a reload does not change
    /// a request in flight.
    pub(super) set: UpSettings,
    /// Its route's rank in a capped node's queue.
    pub(super) rank: QueueRank,
    pub(super) leg: Leg,
    /// The connection served earlier exchanges (taken from the pool or handed to a waiter).
    pub(super) reused: bool,
    pub(super) replayed: bool,
    /// Bytes for the upstream: the rewritten head, then body bytes. The first `sent` were written.
    pub(super) to_up: Buf,
    pub(super) sent: usize,
    /// Nothing has been dropped from the front of `to_up` since the head went in, so the request
    /// can be sent again from the start.
    pub(super) intact: bool,
    pub(super) replay_safe: bool,
    pub(super) from_up: Option<Buf>,
    pub(super) req: BodyIn,
    pub(super) resp: Resp,
    pub(super) up_eof: bool,
    pub(super) head_request: bool,
    pub(super) client_version: Version,
    pub(super) req_keep_alive: bool,
    /// The protocols an Upgrade offered the upstream; a 101 for any other is refused.
    pub(super) offer: Offer,
    pub(super) keep_client: bool,
    /// The upstream keeps its connection after this answer (not `Connection: close`, not
    /// HTTP/1.0 without keep-alive, not a close-delimited body).
    pub(super) up_keeps: bool,
    /// Stray bytes after the response: never reuse that connection.
    pub(super) up_dirty: bool,
    pub(super) hint: KeepAliveHint,
    /// When the request head was parsed.
    pub(super) started: u64,
    /// The final response status, and response body bytes relayed, for the access log.
    pub(super) status: u16,
    pub(super) sent_body: u64,
    /// Last time the upstream made progress (connect started, bytes read or written).
    pub(super) up_progress: u64,
    /// Bytes written to the upstream in this try, and how many of them the head takes, so a
    /// failure can say how much of the body had gone.
    pub(super) wrote: u64,
    pub(super) head_len: u64,
    /// The upstream stopped taking the request (reset or closed while it was being sent). Its
    /// answer, if it sent one first, still goes to the client.
    pub(super) send_failed: bool,
    /// Bytes of this exchange wait in the core's splice pipe.
    pub(super) piped: Piped,
}

impl Exchange {
    /// A byte of the answer arrived.
    pub(super) fn started(&self) -> bool {
        !matches!(self.resp, Resp::Waiting)
    }

    /// A final answer head went to the client.
    pub(super) fn answered(&self) -> bool {
        matches!(self.resp, Resp::Body(_) | Resp::Done)
    }

    /// The request body has not all come in from the client yet.
    pub(super) fn body_pending(&self) -> bool {
        !matches!(self.req, BodyIn::Done)
    }

    /// Its place in the node's queue, for a request that queued at `since`.
    pub(super) fn queue_key(&self, since: u64) -> QueueKey {
        QueueKey {
            class: self.rank.class,
            at: since.saturating_add(u64::from(self.rank.offset_ms)),
        }
    }
}

/// What a request needs to move to another node of its upstream. Kept by client id in the
/// core rather than in `Exchange`, which every client slot makes room for, so an idle client
/// stays small; written when the request starts, so a stale entry is never read.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Tries {
    /// The upstream's index in the generation the request started in (`generation`); a reload
    /// renumbers upstreams, so a request from an older generation is not moved.
    pub(super) upstream: usize,
    pub(super) generation: u64,
    /// The request's key on the hash ring (chash only), so a retry walks on from the same point.
    pub(super) hash: u64,
    pub(super) tried: Tried,
    /// Further nodes that may still be tried.
    pub(super) left: u32,
    /// No new try starts at or after this time (from `retry_timeout`); 0: no limit.
    pub(super) until: u64,
    /// When the try on the current node began, for the node's latency average.
    pub(super) tried_at: u64,
}

#[derive(Debug, Clone, Copy)]
pub(super) enum Fault {
    /// The client went away, broke the connection or stopped reading.
    ClientGone(Cause),
    /// The client sent something we answer for with the cause's status.
    ClientBad(Cause),
    /// The upstream connection failed before or while answering.
    UpstreamGone(Cause),
    /// The upstream sent something invalid.
    UpstreamBad(Cause),
}

impl Fault {
    pub(super) fn cause(self) -> Cause {
        match self {
            Fault::ClientGone(c)
            | Fault::ClientBad(c)
            | Fault::UpstreamGone(c)
            | Fault::UpstreamBad(c) => c,
        }
    }
}
