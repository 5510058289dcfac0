//! The advisor's place in the process: a thread that every [`ADVISE_EVERY`] asks the cores for
//! their counters and shows them, with each node's settings in the current generation, to
//! `upstream::advice::Advisor`; each advice that appears or clears is one log line. The list in
//! force is kept here for `/status`, `/status.json` and `/metrics`, whose readers also show the
//! advisor what they collected (at most once a second), so a scrape sees fresh advice.
//!
//! The lock is taken for the judging only, never while the cores are asked; no core ever takes
//! it.

use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender};
use log::{info, warn};

use crate::clock::Clock;
use crate::id::NodeId;
use crate::metrics::Counters;
use crate::runtime::generation::Shared;
use crate::runtime::process::Process;
use crate::upstream::advice::{Advice, Advisor, Change, Limits, Observed};

/// How often the advisor thread looks.
pub const ADVISE_EVERY: Duration = Duration::from_secs(10);

/// Readers show the advisor their counters no more often than this.
const READER_EVERY_MS: u64 = 1_000;

struct State {
    advisor: Advisor,
    shared: Arc<Shared>,
    /// When counters were last shown; 0 before the first time.
    at: u64,
}

/// The advice in force, shared by the advisor thread and the admin listener.
#[derive(Clone)]
pub struct Board {
    state: Arc<Mutex<State>>,
    process: Arc<Process>,
    clock: Clock,
}

/// An advice with the names of its node, for the page and the log.
#[derive(Debug, Clone)]
pub struct Named {
    /// `upstream="..",node=".."`, as on every per-node metric.
    pub label: String,
    pub advice: Advice,
}

impl Board {
    pub fn new(process: Arc<Process>, shared: Arc<Shared>) -> Board {
        Board {
            state: Arc::new(Mutex::new(State {
                advisor: Advisor::default(),
                shared,
                at: 0,
            })),
            process,
            clock: Clock,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new generation: advice follows the settings it names.
    pub fn generation(&self, shared: Arc<Shared>) {
        self.lock().shared = shared;
    }

    /// Shows the advisor `stats` (summed over cores), unless a reader did less than a second
    /// ago and `force` is off; logs what changed.
    pub fn observe(&self, stats: &Counters, force: bool) {
        let now = self.clock.now_ms();
        let budgets = self.process.budgets();
        let labels = self.process.labels();
        let mut st = self.lock();
        if !force && st.at != 0 && now < st.at + READER_EVERY_MS {
            return;
        }
        st.at = now.max(1);
        let nodes: Vec<Observed> = stats
            .nodes
            .iter()
            .enumerate()
            .map(|(i, c)| Observed {
                counters: c.clone(),
                limits: st.shared.settings_of_pool(NodeId(i)).map(|s| Limits {
                    pool: s.pool,
                    max_connections: s.max_connections,
                    max_connecting: s.max_connecting,
                }),
                learned_idle_ms: budgets.get(i).and_then(|b| b.learned_idle_ms()),
            })
            .collect();
        for Change { node, kind, text } in st.advisor.observe(now, &nodes) {
            let label = labels.get(node).map_or("", String::as_str);
            match text {
                Some(text) => warn!("{label}: advice {}: {text}", kind.token()),
                None => info!("{label}: advice {} cleared", kind.token()),
            }
        }
    }

    /// The advice in force, by node.
    pub fn list(&self) -> Vec<Named> {
        let labels = self.process.labels();
        self.lock()
            .advisor
            .active()
            .map(|a| Named {
                label: labels.get(a.node).cloned().unwrap_or_default(),
                advice: a.clone(),
            })
            .collect()
    }
}

/// Starts the advisor thread; it stops when the returned sender is dropped or sent to.
pub fn start(board: Board) -> std::io::Result<(Sender<()>, JoinHandle<()>)> {
    let (stop, stopped) = bounded(1);
    let t = std::thread::Builder::new()
        .name("hearth-advisor".into())
        .spawn(move || run(&board, &stopped))?;
    Ok((stop, t))
}

fn run(board: &Board, stopped: &Receiver<()>) {
    loop {
        match stopped.recv_timeout(ADVISE_EVERY) {
            Err(RecvTimeoutError::Timeout) => {}
            Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
        }
        let stats = board.process.stats();
        if stats.nodes.is_empty() && board.list().is_empty() {
            continue;
        }
        board.observe(&stats, true);
    }
}
