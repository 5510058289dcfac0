//! The event loops: one `Core` per worker thread, control messages, and process start/stop.
