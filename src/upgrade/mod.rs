//! Binary upgrade: a new hearth takes over from a running one without refusing a connection,
//! and with its idle upstream connections (issue 22, item 1).
//!
//! The running hearth listens on a unix socket of its own (`socket`: where, who may connect).
//! `hearth --upgrade -c FILE`, started by hand or by the running hearth on SIGUSR2, validates
//! FILE, connects, and takes the listening sockets (`new`); the running hearth answers on a
//! thread of its own, never on a core (`old`). The messages and how descriptors travel with them
//! are `wire`'s. The order of events is what makes it lossless: the new hearth serves on the
//! same sockets before the old one stops accepting on them, so no connection finds nobody
//! listening and none waiting in an accept queue is dropped; the old one then drains without
//! closing a client between requests under its feet, and hands over idle plain upstream
//! connections as its remaining clients stop needing them. TLS upstream connections close:
//! their session state cannot move between processes.

pub mod new;
pub mod old;
pub mod socket;
pub mod wire;
