//! The admin listener: a small blocking HTTP/1.1 server on its own thread, for operators.
//!
//! It never runs on a core. `GET /metrics` asks every core for its counters by control message
//! and answers with their sum in Prometheus text format; `POST /reload` re-reads the
//! configuration file and, if it is valid, applies it as SIGHUP does. One request per connection keeps it
//! simple; it is for scrapers and people, not for load.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::thread::JoinHandle;
use std::time::Duration;

use log::{debug, info, warn};

use crate::runtime::server::Handle;

const MAX_REQUEST_BYTES: usize = 8_192;
const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// Re-reads and validates the configuration file, then applies it; Err says why nothing changed.
pub type ReloadFn = Box<dyn Fn() -> Result<(), String> + Send + Sync>;

/// Binds `addr` and serves it on a new thread for the life of the process.
pub fn start(
    addr: SocketAddr,
    stats: Handle,
    reload: ReloadFn,
) -> io::Result<(SocketAddr, JoinHandle<()>)> {
    if !addr.ip().is_loopback() {
        warn!(
            "admin listener on {addr} is reachable from other hosts; it has no authentication yet"
        );
    }
    let listener = TcpListener::bind(addr).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot listen on admin address {addr}: {e}"),
        )
    })?;
    let bound = listener.local_addr()?;
    info!("admin listening on {bound}");
    let handle = std::thread::Builder::new()
        .name("hearth-admin".into())
        .spawn(move || {
            for conn in listener.incoming() {
                match conn {
                    Ok(s) => {
                        if let Err(e) = serve(s, &stats, &reload) {
                            debug!("admin connection: {e}");
                        }
                    }
                    Err(e) => {
                        warn!("admin accept: {e}");
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
            }
        })?;
    Ok((bound, handle))
}

fn serve(mut s: TcpStream, stats: &Handle, reload: &ReloadFn) -> io::Result<()> {
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut buf = vec![0u8; MAX_REQUEST_BYTES];
    let mut len = 0;
    let (method, path) = loop {
        let n = s.read(&mut buf[len..])?;
        if n == 0 {
            return Ok(());
        }
        len += n;
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&buf[..len]) {
            Ok(httparse::Status::Complete(_)) => {
                break (
                    req.method.unwrap_or("").to_string(),
                    req.path.unwrap_or("").to_string(),
                );
            }
            Ok(httparse::Status::Partial) if len < buf.len() => continue,
            _ => return respond(&mut s, "400 Bad Request", "text/plain", "bad request\n"),
        }
    };
    let path = path.split('?').next().unwrap_or("");
    match (method.as_str(), path) {
        ("GET", "/metrics") => respond(
            &mut s,
            "200 OK",
            "text/plain; version=0.0.4",
            &stats.metrics_text(),
        ),
        ("POST", "/reload") => match reload() {
            Ok(()) => respond(&mut s, "200 OK", "text/plain", "reloaded\n"),
            Err(e) => respond(
                &mut s,
                "400 Bad Request",
                "text/plain",
                &format!("not reloaded: {e}\n"),
            ),
        },
        ("GET", _) => respond(
            &mut s,
            "404 Not Found",
            "text/plain",
            "not found; try /metrics\n",
        ),
        _ => respond(&mut s, "405 Method Not Allowed", "text/plain", "only GET\n"),
    }
}

fn respond(s: &mut TcpStream, status: &str, content_type: &str, body: &str) -> io::Result<()> {
    let head = format!("HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
    s.write_all(head.as_bytes())?;
    s.write_all(body.as_bytes())
}
