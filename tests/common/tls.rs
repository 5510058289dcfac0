//! TLS kit for the integration tests: certificates made at test time with rcgen, a blocking
//! rustls client for talking to hearth's TLS listeners, and `TlsUpstream`, an https origin that
//! counts handshakes by kind and records which client certificate each connection presented.
//!
//! Everything binds 127.0.0.1:0; the upstream's threads stop when it is dropped (a flag, a
//! self-connect to wake the accept loop, and read timeouts on every connection); files live in a
//! per-test temp dir removed on drop. Included with `#[path]` by the tests that need it.

#![allow(dead_code)]

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use hearth::tls::AcceptAnyServer;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{
    ClientConfig, ClientConnection, HandshakeKind, RootCertStore, ServerConfig, ServerConnection,
    StreamOwned,
};

const IO_TIMEOUT: Duration = Duration::from_secs(10);

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A test CA and the files it signs, in a temp dir removed on drop.
pub struct Pki {
    dir: PathBuf,
    ca: CertifiedIssuer<'static, KeyPair>,
}

impl Pki {
    pub fn new(tag: &str) -> Pki {
        static SEQ: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "hearth-tls-{tag}-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&dir).expect("creating the PKI dir");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, format!("hearth test CA {tag}"));
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().expect("CA key"))
            .expect("CA certificate");
        let pki = Pki { dir, ca };
        std::fs::write(pki.ca_path(), pki.ca.pem()).expect("writing the CA");
        pki
    }

    pub fn ca_path(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// Issues a certificate for `sans` (DNS names or IP addresses), written as `FILE.pem` and
    /// `FILE.key`; returns (cert path, key path).
    pub fn issue(&self, file: &str, sans: &[&str]) -> (PathBuf, PathBuf) {
        let names: Vec<String> = sans.iter().map(|s| (*s).to_owned()).collect();
        let mut params = CertificateParams::new(names).expect("leaf params");
        params.distinguished_name.push(DnType::CommonName, file);
        let key = KeyPair::generate().expect("leaf key");
        let cert = params.signed_by(&key, &self.ca).expect("signing a leaf");
        let (c, k) = (
            self.dir.join(format!("{file}.pem")),
            self.dir.join(format!("{file}.key")),
        );
        std::fs::write(&c, cert.pem()).expect("writing a cert");
        std::fs::write(&k, key.serialize_pem()).expect("writing a key");
        (c, k)
    }

    pub fn roots(&self) -> RootCertStore {
        let mut roots = RootCertStore::empty();
        roots.add(self.ca.der().clone()).expect("CA as a root");
        roots
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub fn cert_der(path: &Path) -> Vec<u8> {
    CertificateDer::pem_file_iter(path)
        .expect("reading a cert")
        .next()
        .expect("one cert")
        .expect("parsing a cert")
        .to_vec()
}

fn chain(path: &Path) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_file_iter(path)
        .expect("reading a cert")
        .map(|c| c.expect("parsing a cert"))
        .collect()
}

fn key(path: &Path) -> PrivateKeyDer<'static> {
    PrivateKeyDer::from_pem_file(path).expect("reading a key")
}

/// A blocking TLS client to hearth, accepting any certificate.
pub struct TlsClient {
    pub stream: StreamOwned<ClientConnection, TcpStream>,
}

impl TlsClient {
    /// Connects and completes the handshake; `sni` None sends no SNI (an IP-address name).
    pub fn connect(addr: SocketAddr, sni: Option<&str>) -> TlsClient {
        let mut cfg = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyServer(provider())))
            .with_no_client_auth();
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        let name = match sni {
            Some(s) => ServerName::try_from(s.to_owned()).expect("a DNS name"),
            None => ServerName::IpAddress(addr.ip().into()),
        };
        let conn = ClientConnection::new(Arc::new(cfg), name).expect("client session");
        let sock = TcpStream::connect(addr).expect("connecting to hearth");
        sock.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
        let mut stream = StreamOwned::new(conn, sock);
        while stream.conn.is_handshaking() {
            stream
                .conn
                .complete_io(&mut stream.sock)
                .expect("TLS handshake with hearth");
        }
        TlsClient { stream }
    }

    /// DER of the certificate hearth served.
    pub fn served_cert(&self) -> Vec<u8> {
        self.stream.conn.peer_certificates().expect("a certificate")[0].to_vec()
    }

    pub fn alpn(&self) -> Option<Vec<u8>> {
        self.stream.conn.alpn_protocol().map(<[u8]>::to_vec)
    }

    /// `GET path` with Host `host`; returns (status, head, body). Content-Length bodies only.
    pub fn get(&mut self, host: &str, path: &str) -> (u16, String, Vec<u8>) {
        let req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n");
        self.stream.write_all(req.as_bytes()).expect("sending");
        read_response(&mut self.stream).expect("reading a response over TLS")
    }
}

/// Reads one response with a Content-Length body.
pub fn read_response(r: &mut impl Read) -> io::Result<(u16, String, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        if r.read(&mut byte)? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        buf.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&buf).into_owned();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let len = head
        .lines()
        .find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    let mut body = vec![0; len];
    r.read_exact(&mut body)?;
    Ok((status, head, body))
}

/// What one connection to `TlsUpstream` did.
#[derive(Debug, Clone, Default)]
pub struct TlsConnInfo {
    pub kind: Option<HandshakeKind>,
    /// DER of the client certificate presented, if any.
    pub client_cert: Option<Vec<u8>>,
    /// Request targets, in order.
    pub targets: Vec<String>,
    /// The SNI the client sent, if any.
    pub sni: Option<String>,
    /// The Host header of each request, in order (empty when absent).
    pub hosts: Vec<String>,
    pub closed: bool,
}

#[derive(Default)]
struct UpState {
    conns: Vec<TlsConnInfo>,
    handshake_errors: Vec<String>,
}

/// An https origin: answers every request `200` with body `conn=N target=T`, keeps
/// connections alive, and records handshakes and client certificates per connection.
pub struct TlsUpstream {
    addr: SocketAddr,
    state: Arc<Mutex<UpState>>,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl TlsUpstream {
    /// Serves `cert`/`key`; with `client_ca`, requires a client certificate issued by it.
    pub fn start(cert: &Path, key_path: &Path, client_ca: Option<&Pki>) -> TlsUpstream {
        let builder = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("protocol versions");
        let builder = match client_ca {
            Some(pki) => builder.with_client_cert_verifier(
                WebPkiClientVerifier::builder_with_provider(Arc::new(pki.roots()), provider())
                    .build()
                    .expect("client verifier"),
            ),
            None => builder.with_no_client_auth(),
        };
        let cfg = Arc::new(
            builder
                .with_single_cert(chain(cert), key(key_path))
                .expect("server cert"),
        );
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding the TLS upstream");
        let addr = listener.local_addr().expect("local addr");
        let state = Arc::new(Mutex::new(UpState::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (st, sp) = (state.clone(), stop.clone());
        let accept = thread::spawn(move || {
            for sock in listener.incoming() {
                if sp.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(sock) = sock else { continue };
                let id = {
                    let mut s = st.lock().unwrap_or_else(|e| e.into_inner());
                    s.conns.push(TlsConnInfo::default());
                    s.conns.len() - 1
                };
                let (cfg, st, sp) = (cfg.clone(), st.clone(), sp.clone());
                thread::spawn(move || serve(sock, cfg, id, &st, &sp));
            }
        });
        TlsUpstream {
            addr,
            state,
            stop,
            accept: Some(accept),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn conns(&self) -> Vec<TlsConnInfo> {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .conns
            .clone()
    }

    pub fn handshake_errors(&self) -> Vec<String> {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .handshake_errors
            .clone()
    }

    /// Completed handshakes of each kind: (full, resumed).
    pub fn handshakes(&self) -> (usize, usize) {
        let conns = self.conns();
        let full = conns
            .iter()
            .filter(|c| {
                matches!(
                    c.kind,
                    Some(HandshakeKind::Full | HandshakeKind::FullWithHelloRetryRequest)
                )
            })
            .count();
        let resumed = conns
            .iter()
            .filter(|c| c.kind == Some(HandshakeKind::Resumed))
            .count();
        (full, resumed)
    }
}

impl Drop for TlsUpstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

fn serve(
    sock: TcpStream,
    cfg: Arc<ServerConfig>,
    id: usize,
    state: &Mutex<UpState>,
    stop: &AtomicBool,
) {
    // Short read timeouts let the thread notice `stop`; a real peer's silence just loops.
    let _ = sock.set_read_timeout(Some(Duration::from_millis(200)));
    let Ok(conn) = ServerConnection::new(cfg) else {
        return;
    };
    let mut s = StreamOwned::new(conn, sock);
    let mut waited = Duration::ZERO;
    while s.conn.is_handshaking() {
        match s.conn.complete_io(&mut s.sock) {
            Ok(_) => {}
            Err(e) if is_timeout(&e) && !stop.load(Ordering::SeqCst) && waited < IO_TIMEOUT => {
                waited += Duration::from_millis(200);
            }
            Err(e) => {
                let mut st = state.lock().unwrap_or_else(|e| e.into_inner());
                st.handshake_errors.push(e.to_string());
                st.conns[id].closed = true;
                return;
            }
        }
    }
    {
        let mut st = state.lock().unwrap_or_else(|e| e.into_inner());
        st.conns[id].kind = s.conn.handshake_kind();
        st.conns[id].sni = s.conn.server_name().map(str::to_owned);
        st.conns[id].client_cert = s
            .conn
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.to_vec());
    }
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !stop.load(Ordering::SeqCst) {
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if is_timeout(&e) => continue,
            Err(_) => break,
        }
        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            buf.drain(..end + 4);
            let target = head.split(' ').nth(1).unwrap_or("").to_owned();
            let host = head
                .lines()
                .filter_map(|l| l.split_once(':'))
                .find(|(n, _)| n.trim().eq_ignore_ascii_case("host"))
                .map_or(String::new(), |(_, v)| v.trim().to_owned());
            // `/big/N` asks for N bytes, to push records through hearth's back-pressure.
            let body = match target.strip_prefix("/big/").and_then(|n| n.parse().ok()) {
                Some(n) => crate::common::payload(n, 7)
                    .iter()
                    .map(|b| b'a' + b % 26)
                    .map(char::from)
                    .collect(),
                None => format!("conn={id} target={target}"),
            };
            let resp = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            {
                let mut st = state.lock().unwrap_or_else(|e| e.into_inner());
                st.conns[id].targets.push(target);
                st.conns[id].hosts.push(host);
            }
            if s.write_all(resp.as_bytes())
                .and_then(|()| s.flush())
                .is_err()
            {
                break;
            }
        }
    }
    state.lock().unwrap_or_else(|e| e.into_inner()).conns[id].closed = true;
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}
