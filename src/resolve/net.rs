//! The blocking side of resolving: a whole lookup while the caller waits, as the configuration
//! loader needs it (`resolver` servers through [`dns::Lookup`](super::dns::Lookup), or the system
//! resolver through std's `ToSocketAddrs`), and the pieces the resolver thread shares with it:
//! the TCP exchange for truncated answers, fresh UDP sockets and random query ids.
//!
//! Everything here blocks, at most about `timeout` per server try (the system resolver: as long
//! as its own configuration says), so it runs on the loader's thread or the resolver's, never on
//! a core.

use std::hash::{BuildHasher, Hasher, RandomState};
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, ToSocketAddrs, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::dns::{Lookup, LookupError, Resolved, Step, MAX_DATAGRAM};
use crate::config::types::Resolve;

/// Two query ids nobody can guess (RFC 5452 §9.2), from std's randomly keyed hasher.
pub fn query_ids() -> [u16; 2] {
    static COUNT: AtomicU64 = AtomicU64::new(0);
    let mut h = RandomState::new().build_hasher();
    h.write_u64(COUNT.fetch_add(1, Ordering::Relaxed));
    let x = h.finish();
    [x as u16, (x >> 16) as u16]
}

/// The unspecified address of `server`'s family, port 0: the kernel picks a random source port.
pub fn local_for(server: SocketAddr) -> SocketAddr {
    match server {
        SocketAddr::V4(_) => SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
        SocketAddr::V6(_) => SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0),
    }
}

/// One query and its answer over TCP (RFC 1035 §4.2.2: each message after a two-byte length),
/// each step bounded by `timeout`.
pub fn tcp_exchange(
    server: SocketAddr,
    packet: &[u8],
    timeout: Duration,
) -> Result<Vec<u8>, String> {
    let io = || -> io::Result<Vec<u8>> {
        let mut s = TcpStream::connect_timeout(&server, timeout)?;
        s.set_read_timeout(Some(timeout))?;
        s.set_write_timeout(Some(timeout))?;
        let len = u16::try_from(packet.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "query too long"))?;
        let mut msg = Vec::with_capacity(packet.len() + 2);
        msg.extend_from_slice(&len.to_be_bytes());
        msg.extend_from_slice(packet);
        s.write_all(&msg)?;
        let mut len = [0u8; 2];
        s.read_exact(&mut len)?;
        let mut answer = vec![0u8; usize::from(u16::from_be_bytes(len))];
        s.read_exact(&mut answer)?;
        Ok(answer)
    };
    io().map_err(|e| e.to_string())
}

/// Looks `host` (a name, without port) up now: by the `resolver` servers when any is
/// configured, else by the system resolver.
pub fn lookup(settings: &Resolve, host: &str) -> Result<Resolved, LookupError> {
    if settings.servers.is_empty() {
        system_lookup(host)
    } else {
        dns_lookup(host, &settings.servers, settings.timeout)
    }
}

/// Every address `host_port` stands for, sorted: the address itself when it is one, else those
/// its name has now. The message of an error says what went wrong, not where.
pub fn addresses(settings: &Resolve, host_port: &str) -> Result<Vec<SocketAddr>, String> {
    if let Ok(addr) = host_port.parse::<SocketAddr>() {
        return Ok(vec![addr]);
    }
    let (host, port) = host_port
        .rsplit_once(':')
        .and_then(|(h, p)| Some((h, p.parse::<u16>().ok()?)))
        .ok_or_else(|| format!("expected \"host:port\", found {host_port:?}"))?;
    if !settings.servers.is_empty() {
        super::dns::check_name(host)?;
    }
    let via = if settings.servers.is_empty() {
        String::new()
    } else {
        format!(" (asked {})", join(&settings.servers))
    };
    match lookup(settings, host) {
        Ok(r) => Ok(r
            .addrs
            .into_iter()
            .map(|ip| SocketAddr::new(ip, port))
            .collect()),
        Err(e) => Err(format!("cannot resolve {host_port:?}: {e}{via}")),
    }
}

fn join(servers: &[SocketAddr]) -> String {
    let list: Vec<String> = servers.iter().map(ToString::to_string).collect();
    list.join(", ")
}

/// The system resolver (`getaddrinfo`), which gives no TTL.
pub fn system_lookup(host: &str) -> Result<Resolved, LookupError> {
    match (host, 0u16).to_socket_addrs() {
        Ok(found) => {
            let mut addrs: Vec<IpAddr> = found.map(|a| a.ip()).collect();
            addrs.sort_unstable();
            addrs.dedup();
            if addrs.is_empty() {
                return Err(LookupError::NoAddress);
            }
            Ok(Resolved { addrs, ttl: None })
        }
        Err(e) => Err(LookupError::Failed(e.to_string())),
    }
}

/// A whole [`Lookup`] on blocking sockets.
pub fn dns_lookup(
    host: &str,
    servers: &[SocketAddr],
    timeout: Duration,
) -> Result<Resolved, LookupError> {
    let clock = crate::clock::Clock;
    let mut l = Lookup::new(host, servers, timeout, query_ids());
    let mut step = l.start(clock.now_ms());
    let mut sock: Option<UdpSocket> = None;
    let mut buf = [0u8; MAX_DATAGRAM];
    loop {
        match step {
            Step::Done(result) => return result,
            Step::Send { server, packets } => {
                // A socket that cannot be made or a datagram that cannot leave ends this try at
                // its deadline like silence would; the next server may do better.
                sock = UdpSocket::bind(local_for(server)).ok();
                if let Some(s) = &sock {
                    for p in &packets {
                        let _ = s.send_to(p, server);
                    }
                }
            }
            Step::Tcp {
                server,
                family,
                packet,
            } => {
                let answer = tcp_exchange(server, &packet, timeout);
                step = l.tcp_reply(family, answer, clock.now_ms());
                continue;
            }
            Step::Wait => {}
        }
        let now = clock.now_ms();
        let left = l.deadline().saturating_sub(now);
        step = match &sock {
            Some(s) if left > 0 => {
                let _ = s.set_read_timeout(Some(Duration::from_millis(left)));
                match s.recv_from(&mut buf) {
                    Ok((n, from)) => l.datagram(from, &buf[..n], clock.now_ms()),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => Step::Wait,
                    // Timed out, or an error that waiting longer would not mend.
                    Err(_) => l.expire(l.deadline()),
                }
            }
            _ => l.expire(l.deadline()),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::super::dns::testing::{answer, Rec};
    use super::super::dns::Family;
    use super::*;
    use simple_dns::RCODE;

    /// A DNS server on a thread answering `n` queries from `table` (name -> A answer), with
    /// truncation when asked; returns its address.
    fn server(n: usize, truncate: bool) -> SocketAddr {
        // The TCP side needs the UDP side's port, which TCP may have in use: try a few.
        let (sock, tcp) = (0..20)
            .find_map(|_| {
                let sock = UdpSocket::bind("127.0.0.1:0").ok()?;
                let tcp = std::net::TcpListener::bind(sock.local_addr().ok()?).ok()?;
                Some((sock, tcp))
            })
            .expect("a port free for both UDP and TCP");
        let addr = sock.local_addr().unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            for _ in 0..n {
                let Ok((len, from)) = sock.recv_from(&mut buf) else {
                    return;
                };
                let q = &buf[..len];
                let recs = match super::super::dns::testing::family_of(q) {
                    Family::V4 => vec![Rec::Ip("db.test", 42, "127.0.0.9".parse().unwrap())],
                    Family::V6 => vec![],
                };
                let _ = sock.send_to(&answer(q, &recs, RCODE::NoError, truncate), from);
            }
            // Truncated answers are asked again over TCP, one connection per question.
            for _ in 0..if truncate { 2 } else { 0 } {
                let Ok((mut s, _)) = tcp.accept() else { return };
                let mut len = [0u8; 2];
                s.read_exact(&mut len).unwrap();
                let mut q = vec![0u8; usize::from(u16::from_be_bytes(len))];
                s.read_exact(&mut q).unwrap();
                let recs = match super::super::dns::testing::family_of(&q) {
                    Family::V4 => vec![Rec::Ip("db.test", 42, "127.0.0.9".parse().unwrap())],
                    Family::V6 => vec![Rec::Ip("db.test", 40, "::9".parse().unwrap())],
                };
                let a = answer(&q, &recs, RCODE::NoError, false);
                s.write_all(&(a.len() as u16).to_be_bytes()).unwrap();
                s.write_all(&a).unwrap();
            }
        });
        addr
    }

    #[test]
    fn blocking_lookups_use_the_servers() {
        let s = server(2, false);
        let got = dns_lookup("db.test", &[s], Duration::from_secs(2)).unwrap();
        assert_eq!(got.addrs, ["127.0.0.9".parse::<IpAddr>().unwrap()]);
        assert_eq!(got.ttl, Some(Duration::from_secs(42)));
        let settings = Resolve {
            servers: vec![server(2, false)],
            ..Resolve::default()
        };
        assert_eq!(
            addresses(&settings, "db.test:8080").unwrap(),
            ["127.0.0.9:8080".parse::<SocketAddr>().unwrap()]
        );
        assert_eq!(
            addresses(&settings, "127.0.0.1:1").unwrap(),
            ["127.0.0.1:1".parse::<SocketAddr>().unwrap()],
            "an address is not looked up"
        );
    }

    #[test]
    fn truncated_answers_are_read_over_tcp() {
        // Over UDP the server sends only truncated answers (the AAAA one empty); what counts
        // is what it says over TCP.
        let s = server(2, true);
        let got = dns_lookup("db.test", &[s], Duration::from_secs(2)).unwrap();
        let want: Vec<IpAddr> = vec!["127.0.0.9".parse().unwrap(), "::9".parse().unwrap()];
        assert_eq!(got.addrs, want);
        assert_eq!(got.ttl, Some(Duration::from_secs(40)));
    }

    #[test]
    fn silence_fails_within_the_tries() {
        // A bound socket that never answers.
        let quiet = UdpSocket::bind("127.0.0.1:0").unwrap();
        let r = dns_lookup(
            "db.test",
            &[quiet.local_addr().unwrap()],
            Duration::from_millis(50),
        );
        let Err(LookupError::Failed(why)) = r else {
            panic!("{r:?}")
        };
        assert!(why.contains("no A answer in time"), "{why}");
        let ids = query_ids();
        assert_ne!(ids, query_ids(), "fresh ids each time");
    }
}
