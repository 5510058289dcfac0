//! Steady keep-alive load for tests that change the configuration while requests flow: a few
//! client threads, each on one connection, sending `GET /load/{thread}` to an echo upstream and
//! checking every answer, until told to stop or a time bound passes.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::client::Client;
use super::wait_until;

pub struct Load {
    stop: Arc<AtomicBool>,
    done: Arc<AtomicUsize>,
    threads: Vec<JoinHandle<()>>,
}

impl Load {
    /// Starts `threads` clients against `addr`; each stops by itself after `bound`. `during`
    /// names the change under test in a failed assertion.
    pub fn start(addr: SocketAddr, threads: usize, bound: Duration, during: &'static str) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicUsize::new(0));
        let threads = (0..threads)
            .map(|t| {
                let (stop, done) = (stop.clone(), done.clone());
                thread::spawn(move || {
                    let mut c = Client::connect(addr);
                    let deadline = Instant::now() + bound;
                    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                        let path = format!("/load/{t}");
                        let r = c.get(&path);
                        assert_eq!((r.status, r.text()), (200, path), "request during {during}");
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        Load {
            stop,
            done,
            threads,
        }
    }

    /// Requests answered so far.
    pub fn done(&self) -> usize {
        self.done.load(Ordering::Relaxed)
    }

    /// Waits up to `within` for `n` more answers than `from`; false if the load stalled.
    pub fn advances(&self, from: usize, n: usize, within: Duration) -> bool {
        wait_until(within, || self.done() > from + n)
    }

    /// Stops the clients and returns the requests answered; panics if any saw a bad answer.
    pub fn finish(mut self) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            t.join().expect("a load thread saw a failed request");
        }
        self.done()
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        // A test that failed before finish() still stops its clients.
        self.stop.store(true, Ordering::Relaxed);
    }
}
