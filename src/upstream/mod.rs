//! Upstream side: pool bookkeeping (sans-io) and the process-wide per-node budget.

pub mod pool;
