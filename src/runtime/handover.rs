//! A core's part in a binary upgrade (`crate::upgrade`): on the old hearth, giving up its idle
//! plain upstream connections (`export_early` before the hand-over, `export_surplus` as its
//! remaining clients stop needing them, `export_up` for one) and draining (`begin_upgrade`); on
//! the new one, holding requests back for a while for the connections that come
//! (`expect_until`, `stop_expecting`, `last_call`). Kept out of the event loop's file: nothing
//! here runs outside an upgrade.

use std::time::Duration;

use log::info;

use crate::id::{NodeId, UpId};
use crate::runtime::control::{Control, Export, PassedConn};
use crate::runtime::core::{Core, Phase};
use crate::upstream::pool::CloseReason;

impl Core {
    /// A new hearth took over the listening sockets: drain as for a shutdown, but keep idle
    /// clients for their next request (`step_head`), and export idle upstream connections as
    /// the remaining clients stop needing them (`export_surplus`).
    pub(super) fn begin_upgrade(
        &mut self,
        grace: Duration,
        export: crossbeam_channel::Sender<Export>,
    ) {
        if self.shutdown_at.is_some() {
            // Already stopping: its connections close with it.
            let _ = export.send(Export::Finished {
                core: self.id,
                closed: 0,
            });
            return;
        }
        self.export = Some(export);
        self.export_due = true;
        self.begin_shutdown(grace);
    }

    /// The window for connections from the hearth this one replaced has closed: requests that
    /// still wait connect (`connect` no longer holds them back), saying so.
    pub(super) fn stop_expecting(&mut self) {
        if self.expect_until == 0 {
            return;
        }
        self.expect_until = 0;
        for node in (0..self.ups.nodes()).map(NodeId) {
            if self.ups.has_waiters(node) {
                info!(
                    "core {}: upgrade: requests waited for a handed-over connection \
                     to node {} in vain; they connect",
                    self.id,
                    node.index(),
                );
                self.serve_waiters(node);
            }
        }
    }

    /// The hearth this one replaced has handed over everything: requests still waiting for a
    /// connection ask the other cores once more (each has filed all it was given by now, and
    /// one with more than its clients use has one idle); they connect if none comes before the
    /// window closes. The window stays open: the old hearth's last clients may still arrive
    /// here on a core that was given fewer connections than they need, while another core has
    /// more.
    pub(super) fn last_call(&mut self) {
        for node in (0..self.ups.nodes()).map(NodeId) {
            if self.ups.has_waiters(node) {
                for (i, p) in self.process.peers.iter().enumerate() {
                    if i != self.id {
                        let _ = p.send(Control::ShedIdle {
                            node,
                            from: self.id,
                        });
                    }
                }
            }
        }
    }

    /// A new hearth is about to take over: it gets the idle plain connections that this core's
    /// clients cannot use now, while this core serves on as before.
    pub(super) fn export_early(&mut self, export: crossbeam_channel::Sender<Export>) {
        let core = self.id;
        if self.shutdown_at.is_some() {
            // Stopping already: nothing to give.
            let _ = export.send(Export::Flushed { core });
            return;
        }
        self.export = Some(export);
        self.export_surplus(false);
        if let Some(export) = self.export.take() {
            let _ = export.send(Export::Flushed { core });
        }
    }

    /// In an upgrade: gives up the idle connections beyond what this core's remaining clients
    /// may still ask for, oldest first: plain ones to the new hearth, TLS ones (with `tls`)
    /// closed. A client may still ask while it waits for a request head, or while its answer
    /// goes out on a connection that it keeps.
    pub(super) fn export_surplus(&mut self, tls: bool) {
        self.export_due = false;
        if self.export.is_none() {
            return;
        }
        let may_ask = self
            .clients
            .iter()
            .filter(|(_, c)| match &c.phase {
                Phase::Head => true,
                Phase::Exchange(ex) => ex.keep_client,
                _ => false,
            })
            .count();
        for node in (0..self.ups.nodes()).map(NodeId) {
            if !tls && self.shared.pool(node).is_some_and(|p| p.https) {
                continue;
            }
            while self.ups.node(node).is_some_and(|n| n.idle() > may_ask) {
                let Some(uid) = self.ups.pop_oldest_idle(node) else {
                    break;
                };
                self.export_up(uid);
            }
        }
    }

    /// Gives up idle connection `id` in a binary upgrade: a plain one goes to the new hearth
    /// (out of this core's epoll and books; its place in this process's caps is given back),
    /// a TLS one closes, its session state being this process's.
    pub(super) fn export_up(&mut self, id: UpId) {
        let plain = self.ups.conn(id).is_some_and(|c| c.io.tls.is_none());
        if !plain || self.export.is_none() {
            self.upgrade_closed += 1;
            self.close_up(id, CloseReason::Upgrade);
            return;
        }
        let Some(mut h) = self.ups.export(id, self.now) else {
            return;
        };
        // Out of this epoll before anything else: the new hearth will hold the same socket.
        let _ = self.poll.registry().deregister(&mut h.io.sock);
        let node = h.node;
        let freed = h.reservation.capped();
        let passed = PassedConn {
            sock: h.io.sock.into(),
            addr: h.addr,
            age_ms: h.age_ms,
            served: h.served,
            hint: h.hint,
        };
        drop(h.reservation);
        if let Some(export) = &self.export {
            // A closed channel drops the connection: the new hearth is gone.
            let _ = export.send(Export::Conn(passed));
        }
        if freed {
            self.budget_freed(node);
        }
    }
}
