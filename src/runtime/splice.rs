//! The body relay's zero-copy path: large bodies between a plain client and a plain upstream
//! move through the core's pipe with `splice(2)` (`io::SplicePipe`, `io::splice_through`)
//! instead of being read into a buffer and written out again.
//!
//! A body takes this path only when all of it that remains can: it is framed by Content-Length
//! (or, for an answer, by the upstream's close), at least `SPLICE_MIN` of it is still to come,
//! neither side speaks TLS, the client's `[client] splice` allows it, and nothing of it waits in
//! hearth's buffers (those bytes go out first, by the copying path). Chunked bodies are re-framed
//! on the way, so they are always copied. While an exchange has bytes in the pipe
//! (`Exchange::piped`), its body moves through the pipe alone; every other exchange of the core
//! copies until the pipe is empty. Failures are the same faults the copying path reports for the
//! same socket errors.

use crate::cause::Cause;
use crate::id::{ClientId, UpId};
use crate::runtime::core::Core;
use crate::runtime::exchange::{BodyIn, BodyOut, Exchange, Fault, Leg, Piped, Resp};
use crate::runtime::io::{splice_through, PlainEnd, SpliceEnd, SPLICE_MIN};
use crate::upstream::ConnState;

/// How the request body moves on this pass (`Core::pump_request`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Route {
    /// Through the buffers, reading the client as needed.
    Copy,
    /// Through the buffers, but only what they already hold: the rest will be spliced once
    /// `to_up` has gone out, so the client is not read into them.
    CopyThenSplice,
    /// Through the pipe, to this connection.
    Splice(UpId),
}

impl Core {
    /// Whether the request body is (or may now start being) spliced.
    pub(super) fn request_route(&mut self, cid: ClientId, ex: &Exchange) -> Route {
        if ex.piped == Piped::Request {
            // Bytes in the pipe must reach the upstream before anything else of the body.
            return match ex.leg.up() {
                Some(uid) => Route::Splice(uid),
                None => Route::Copy,
            };
        }
        let BodyIn::Length(rem) = ex.req else {
            return Route::Copy;
        };
        let Leg::Attached(uid) = ex.leg else {
            return Route::Copy;
        };
        if !self.shared.cfg.client.splice
            || rem < SPLICE_MIN
            || ex.send_failed
            || ex.piped != Piped::Nothing
            || self.pipe.held() > 0
            || self.ups.state(uid) != Some(ConnState::Active)
        {
            return Route::Copy;
        }
        let Some(c) = self.clients.get(cid.index()) else {
            return Route::Copy;
        };
        let plain_up = self.ups.conn(uid).is_some_and(|u| u.io.tls.is_none());
        if c.tls.is_some() || !plain_up {
            return Route::Copy;
        }
        let buffered = c.rbuf.as_ref().is_some_and(|b| !b.is_empty());
        if buffered || ex.sent < ex.to_up.len() {
            return Route::CopyThenSplice;
        }
        if !self.pipe.usable() {
            return Route::Copy;
        }
        Route::Splice(uid)
    }

    /// Splices request body bytes from the client to upstream connection `uid`: what the pipe
    /// holds first, then more while both sides keep up.
    pub(super) fn splice_request(
        &mut self,
        cid: ClientId,
        uid: UpId,
        ex: &mut Exchange,
    ) -> Result<bool, Fault> {
        let gone = Fault::ClientGone(Cause::ClientAbort);
        let now = self.now;
        let c = self.clients.get_mut(cid.index()).ok_or(gone)?;
        let u = &mut self
            .ups
            .conn_mut(uid)
            .ok_or(Fault::UpstreamGone(Cause::UpstreamReset))?
            .io;
        let mut left = match ex.req {
            BodyIn::Length(rem) => rem,
            _ => 0,
        };
        if let Leg::Draining { left: bound, .. } = ex.leg {
            // After an early answer, only what the drain bound still allows.
            left = left.min(bound);
        }
        let s = splice_through(
            &mut self.pipe,
            PlainEnd {
                sock: &c.sock,
                ready: &mut c.readable,
            },
            PlainEnd {
                sock: &u.sock,
                ready: &mut u.writable,
            },
            left,
        );
        if s.taken > 0 {
            c.last_active = now;
            // The body no longer passes through `to_up`, so the request cannot be sent again
            // from it; the head it still holds has gone out.
            ex.intact = false;
            ex.to_up.consume(ex.sent);
            ex.sent = 0;
            if let BodyIn::Length(rem) = &mut ex.req {
                *rem -= s.taken;
                if *rem == 0 {
                    ex.req = BodyIn::Done;
                }
            }
            if let Leg::Draining { left, .. } = &mut ex.leg {
                *left = left.saturating_sub(s.taken);
            }
        }
        if s.given > 0 {
            ex.wrote += s.given;
            ex.up_progress = now;
            self.counters.spliced_request_bytes += s.given;
        }
        ex.piped = if self.pipe.held() > 0 {
            Piped::Request
        } else {
            Piped::Nothing
        };
        let progress = s.taken > 0 || s.given > 0;
        match s.end {
            SpliceEnd::Paused => Ok(progress),
            SpliceEnd::Eof => {
                c.eof = true;
                Err(gone)
            }
            SpliceEnd::SourceFailed => Err(gone),
            SpliceEnd::SinkFailed => {
                // As when a buffered write fails: the upstream stopped taking the request,
                // perhaps after answering it; what it answered is still read. The bytes in the
                // pipe can go nowhere now.
                ex.send_failed = true;
                u.readable = true;
                self.pipe.discard();
                ex.piped = Piped::Nothing;
                Ok(true)
            }
        }
    }

    /// Splices the rest of a large response body from upstream connection `uid` to the client,
    /// when it may (see the module docs); Ok(false) leaves it to the copying path.
    pub(super) fn splice_response(
        &mut self,
        cid: ClientId,
        uid: UpId,
        ex: &mut Exchange,
    ) -> Result<bool, Fault> {
        let left = match ex.resp {
            Resp::Body(BodyOut::Length(n)) => n,
            Resp::Body(BodyOut::Close) => u64::MAX,
            _ => return Ok(false),
        };
        let now = self.now;
        let c = self
            .clients
            .get_mut(cid.index())
            .ok_or(Fault::ClientGone(Cause::ClientAbort))?;
        let u = &mut self
            .ups
            .conn_mut(uid)
            .ok_or(Fault::UpstreamGone(Cause::UpstreamClosed))?
            .io;
        if ex.piped != Piped::Response {
            let buffered = ex.from_up.as_ref().is_some_and(|b| !b.is_empty())
                || c.wbuf.as_ref().is_some_and(|w| !w.is_empty());
            if ex.piped != Piped::Nothing
                || !self.shared.cfg.client.splice
                || left < SPLICE_MIN
                || buffered
                || ex.up_eof
                || c.tls.is_some()
                || u.tls.is_some()
                || self.pipe.held() > 0
                || !self.pipe.usable()
            {
                return Ok(false);
            }
        }
        let s = splice_through(
            &mut self.pipe,
            PlainEnd {
                sock: &u.sock,
                ready: &mut u.readable,
            },
            PlainEnd {
                sock: &c.sock,
                ready: &mut c.writable,
            },
            left,
        );
        if s.taken > 0 {
            ex.up_progress = now;
            if let Resp::Body(BodyOut::Length(rem)) = &mut ex.resp {
                *rem -= s.taken;
            }
        }
        if s.given > 0 {
            c.last_write = now;
            // The client took answer bytes: hearth did not read the upstream while it waited for
            // them, so the wait for the upstream counts from here (as `step_exchange` does for
            // bytes taken from `wbuf`).
            ex.up_progress = now;
            ex.sent_body += s.given;
            self.counters.spliced_response_bytes += s.given;
        }
        ex.piped = if self.pipe.held() > 0 {
            Piped::Response
        } else {
            Piped::Nothing
        };
        match s.end {
            SpliceEnd::Paused => {}
            // Ends a close-delimited body, or cuts a short one, once the pipe is empty
            // (`step_exchange` looks at the EOF).
            SpliceEnd::Eof => ex.up_eof = true,
            SpliceEnd::SourceFailed => return Err(Fault::UpstreamGone(Cause::UpstreamReset)),
            SpliceEnd::SinkFailed => return Err(Fault::ClientGone(Cause::ClientAbort)),
        }
        if ex.piped == Piped::Nothing && matches!(ex.resp, Resp::Body(BodyOut::Length(0))) {
            ex.resp = Resp::Done;
        }
        Ok(s.taken > 0 || s.given > 0)
    }
}
