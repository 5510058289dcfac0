//! TLS setup: rustls configurations for client-facing listeners and for https upstreams, built
//! from the files the configuration names. No I/O on connections happens here (rustls is
//! sans-io; `runtime::core` moves its bytes); this module reads certificate files and hands out
//! immutable, shareable configurations.
//!
//! Invariants kept here:
//! - Everything loaded is validated before a configuration is made from it: a key that does not
//!   match its certificate, a PEM file without certificates, an unparsable SNI name are errors
//!   with a message naming the file or value, never a panic and never a half-built config.
//! - Listener certificates are chosen by SNI: an exact name first, then a `*.example.com`
//!   wildcard (one label, as RFC 6125 §6.4.3 allows), then the default certificate. Names come
//!   from each certificate's subjectAltName, so the configuration cannot disagree with them.
//! - An upstream's `ClientIdentity` holds everything that makes two upstream TLS connections
//!   interchangeable (SNI, verification, the CA and client certificates themselves, not their
//!   paths); it is part of the pool key, so a connection made for one identity is never handed
//!   to another. An https upstream with `pass_host = "pass"` and no `tls.sni` takes its SNI
//!   from each request's Host: its identity's SNI reads "from the request" (`None`), and the
//!   runtime keeps connections apart by name with the tag `request_sni` computes.
//! - Each `ClientConfig` carries its own session cache (a mutex inside rustls). It is taken once
//!   per handshake, when a ticket is stored or taken, and never per request.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher, RandomState};
use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::Resumption;
use rustls::crypto::{self, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};

use crate::config::types::{CertFiles, ListenTls, PassHost, UpstreamTls};

/// Server names whose sessions an https pool with per-request SNI remembers for resumption.
const REQUEST_SNI_SESSIONS: usize = 256;

/// The only protocol hearth speaks over TLS, offered by ALPN on both sides.
const ALPN_HTTP11: &[u8] = b"http/1.1";

fn provider() -> Arc<CryptoProvider> {
    Arc::new(crypto::ring::default_provider())
}

/// Every certificate in the PEM file at `path`; none is an error.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("cannot read certificates from {}: {e}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("cannot parse certificates in {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{} holds no PEM certificate", path.display()));
    }
    Ok(certs)
}

/// The private key in the PEM file at `path`.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_file(path)
        .map_err(|e| format!("cannot read a private key from {}: {e}", path.display()))
}

fn certified_key(files: &CertFiles) -> Result<Arc<CertifiedKey>, String> {
    let chain = load_certs(&files.cert)?;
    let key = load_key(&files.key)?;
    CertifiedKey::from_der(chain, key, &provider())
        .map(Arc::new)
        .map_err(|e| {
            format!(
                "{} and {} do not make a usable certificate: {e}",
                files.cert.display(),
                files.key.display()
            )
        })
}

// ------------------------------------------------------------------------------------ listeners

/// Picks a listener's certificate from the client's SNI.
#[derive(Debug)]
struct SniResolver {
    /// Lowercase DNS name to certificate.
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// `*.example.com` stored as `example.com`.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    default: Arc<CertifiedKey>,
}

impl SniResolver {
    fn pick(&self, sni: Option<&str>) -> Arc<CertifiedKey> {
        let Some(name) = sni else {
            return self.default.clone();
        };
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        if let Some(k) = self.exact.get(&name) {
            return k.clone();
        }
        if let Some((_, parent)) = name.split_once('.') {
            if let Some(k) = self.wildcard.get(parent) {
                return k.clone();
            }
        }
        self.default.clone()
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.pick(hello.server_name()))
    }
}

fn resolver(tls: &ListenTls) -> Result<SniResolver, String> {
    let mut keys = Vec::with_capacity(tls.certs.len());
    for files in &tls.certs {
        keys.push(certified_key(files)?);
    }
    let Some(default) = keys.first().cloned() else {
        return Err("a TLS listener needs at least one certificate".into());
    };
    let mut r = SniResolver {
        exact: HashMap::new(),
        wildcard: HashMap::new(),
        default,
    };
    for k in &keys {
        let Some(leaf) = k.cert.first() else { continue };
        for name in dns_names(leaf) {
            // The first certificate listed that carries a name keeps it.
            match name.strip_prefix("*.") {
                Some(parent) => r.wildcard.entry(parent.to_owned()),
                None => r.exact.entry(name),
            }
            .or_insert_with(|| k.clone());
        }
    }
    Ok(r)
}

/// The rustls configuration of a TLS listener: TLS 1.2 and 1.3, rustls' defaults otherwise,
/// ALPN `http/1.1` only, certificates chosen by SNI.
pub fn server_config(tls: &ListenTls) -> Result<Arc<ServerConfig>, String> {
    let resolver = resolver(tls)?;
    let mut cfg = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(resolver));
    cfg.alpn_protocols = vec![ALPN_HTTP11.to_vec()];
    Ok(Arc::new(cfg))
}

// ------------------------------------------------------------------------------------ upstreams

/// What makes upstream TLS connections interchangeable (part of the pool key).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ClientIdentity {
    /// The name sent as SNI and checked against the certificate; None: each request's Host
    /// (see `sni_from_request`), so the pool's connections carry several names.
    pub sni: Option<String>,
    pub verify: bool,
    /// DER of each trusted CA certificate; empty: the webpki roots.
    pub ca: Vec<Vec<u8>>,
    /// DER of the client certificate chain; empty: no client certificate.
    pub client_chain: Vec<Vec<u8>>,
}

impl std::fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientIdentity")
            .field("sni", &self.sni)
            .field("verify", &self.verify)
            .field("ca_certs", &self.ca.len())
            .field("client_certs", &self.client_chain.len())
            .finish()
    }
}

/// An upstream's TLS settings with their files read: the identity plus the client key.
pub struct ClientMaterial {
    pub identity: ClientIdentity,
    key: Option<PrivateKeyDer<'static>>,
}

/// Strips the port from `host:port` or `[v6]:port` (and the brackets), for SNI.
pub fn host_without_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        // More than one colon and no brackets: a bare IPv6 address.
        Some((h, _)) if !h.contains(':') => h,
        _ => host,
    }
}

/// Whether an upstream's SNI is each request's Host: `pass_host = "pass"` without `tls.sni`.
pub fn sni_from_request(tls: &UpstreamTls, pass: &PassHost) -> bool {
    tls.sni.is_none() && matches!(pass, PassHost::Pass)
}

/// The SNI an upstream node's connections carry: `tls.sni` if set, else the Host that
/// `pass_host` sends (the fixed `upstream_host` for `rewrite`; the node's host for `node`). For
/// `pass` (see `sni_from_request`) this is the name of connections made without a request
/// (`min_idle` warm-up) and of requests without a usable Host.
pub fn sni_for(tls: &UpstreamTls, pass: &PassHost, node_host: &str) -> String {
    if let Some(s) = &tls.sni {
        return s.clone();
    }
    match pass {
        PassHost::Rewrite(h) => host_without_port(h).to_owned(),
        PassHost::Node | PassHost::Pass => host_without_port(node_host).to_owned(),
    }
}

/// The tag of an SNI name: a hash of its lowercase form under the process-wide `key`, never 0
/// (0 marks connections of pools whose SNI is fixed). Keyed so that a client cannot craft a
/// Host whose tag collides with another name's.
pub fn sni_tag(key: &RandomState, name: &str) -> u64 {
    let mut h = key.build_hasher();
    for b in name.bytes() {
        h.write_u8(b.to_ascii_lowercase());
    }
    h.finish().max(1)
}

/// The SNI name a request's Host asks for, for an upstream whose SNI comes from the request:
/// the Host without its port, lowercase, written to `out` (whose capacity is reused, so this
/// does not allocate once `out` has grown), and its tag. None when the Host is not a name
/// rustls can send or verify (not UTF-8, empty, not a DNS name or IP address); an IP address
/// is used as rustls uses one: verified against the certificate, not sent as SNI.
pub fn request_sni(key: &RandomState, host: &[u8], out: &mut String) -> Option<u64> {
    let host = std::str::from_utf8(host).ok()?;
    let name = host_without_port(host.trim());
    // Borrowing parse: validates without allocating.
    ServerName::try_from(name).ok()?;
    out.clear();
    out.push_str(name);
    out.make_ascii_lowercase();
    Some(sni_tag(key, out))
}

pub fn server_name(sni: &str) -> Result<ServerName<'static>, String> {
    ServerName::try_from(sni.to_owned())
        .map_err(|_| format!("{sni:?} is not a DNS name or IP address usable as SNI"))
}

/// Reads the CA and client certificate files of `tls`, for the node whose SNI is `sni`.
pub fn load_client(tls: &UpstreamTls, sni: String) -> Result<ClientMaterial, String> {
    server_name(&sni)?;
    let der = |certs: Vec<CertificateDer<'static>>| certs.into_iter().map(|c| c.to_vec()).collect();
    let ca = match &tls.ca {
        Some(p) => der(load_certs(p)?),
        None => Vec::new(),
    };
    let (client_chain, key) = match (&tls.client_cert, &tls.client_key) {
        (Some(c), Some(k)) => (der(load_certs(c)?), Some(load_key(k)?)),
        (None, None) => (Vec::new(), None),
        _ => return Err("client_cert and client_key go together".into()),
    };
    Ok(ClientMaterial {
        identity: ClientIdentity {
            sni: Some(sni),
            verify: tls.verify,
            ca,
            client_chain,
        },
        key,
    })
}

/// Accepts any server certificate (`verify = false`), while still checking the handshake
/// signatures, so the session is at least bound to the key the server presented. Public for the
/// tests' TLS client, which looks at which certificate hearth served, not whether it fits.
#[derive(Debug)]
pub struct AcceptAnyServer(pub Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyServer {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// One upstream pool key's rustls configuration. `sessions` sizes the resumption cache (server
/// names remembered, each with a few TLS 1.3 tickets); it is shared by every core, which takes
/// its lock once per handshake.
pub fn client_config(m: &ClientMaterial, sessions: usize) -> Result<Arc<ClientConfig>, String> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = if !m.identity.verify {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyServer(provider)))
    } else if m.identity.ca.is_empty() {
        let roots = RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        builder.with_root_certificates(roots)
    } else {
        let mut roots = RootCertStore::empty();
        for der in &m.identity.ca {
            roots
                .add(CertificateDer::from(der.clone()))
                .map_err(|e| format!("unusable CA certificate: {e}"))?;
        }
        builder.with_root_certificates(roots)
    };
    let mut cfg = match &m.key {
        Some(key) => {
            let chain = m
                .identity
                .client_chain
                .iter()
                .map(|d| CertificateDer::from(d.clone()))
                .collect();
            builder
                .with_client_auth_cert(chain, key.clone_key())
                .map_err(|e| format!("unusable client certificate or key: {e}"))?
        }
        None => builder.with_no_client_auth(),
    };
    // Names come from requests when the identity has no fixed one: remember that many.
    let sessions = match m.identity.sni {
        Some(_) => sessions.max(1),
        None => sessions.max(REQUEST_SNI_SESSIONS),
    };
    cfg.resumption = Resumption::in_memory_sessions(sessions);
    cfg.alpn_protocols = vec![ALPN_HTTP11.to_vec()];
    Ok(Arc::new(cfg))
}

// ------------------------------------------------------------------------------------ etcd

/// The rustls configuration of the etcd client (`[config_center] tls`): `ca` the certificates to
/// trust (None: the webpki roots), `client` a certificate chain and its key for etcd's
/// `--client-cert-auth`, `verify` false to accept any certificate etcd shows (the handshake
/// signatures are still checked). No ALPN is offered: etcd picks HTTP/1.1 for a client that
/// names no protocol, while one offering only `http/1.1` may be refused by a server that lists
/// `h2` alone.
pub fn etcd_client_config(
    ca: Option<Vec<CertificateDer<'static>>>,
    client: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
    verify: bool,
) -> Result<Arc<ClientConfig>, String> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = if !verify {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyServer(provider)))
    } else {
        let mut roots = RootCertStore::empty();
        match ca {
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
            Some(certs) => {
                for c in certs {
                    roots
                        .add(c)
                        .map_err(|e| format!("unusable CA certificate: {e}"))?;
                }
            }
        }
        builder.with_root_certificates(roots)
    };
    let cfg = match client {
        Some((chain, key)) => builder
            .with_client_auth_cert(chain, key)
            .map_err(|e| format!("the certificate and key do not go together: {e}"))?,
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(cfg))
}

// ------------------------------------------------------------------------------------ DER

/// One DER element of `input`: its tag, its contents and what follows it.
fn der_next(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let (bytes, rest) = rest.split_at(n);
        (
            bytes.iter().fold(0, |a, &b| (a << 8) | usize::from(b)),
            rest,
        )
    };
    if rest.len() < len {
        return None;
    }
    let (body, rest) = rest.split_at(len);
    Some((tag, body, rest))
}

/// The DNS names of a certificate's subjectAltName extension (RFC 5280 §4.2.1.6), lowercase.
/// A certificate that does not parse has none (rustls rejects it when it is loaded anyway).
pub fn dns_names(cert: &[u8]) -> Vec<String> {
    const SEQUENCE: u8 = 0x30;
    const SUBJECT_ALT_NAME: [u8; 3] = [0x55, 0x1d, 0x11]; // 2.5.29.17
    fn walk(cert: &[u8]) -> Option<Vec<String>> {
        let (SEQUENCE, cert, _) = der_next(cert)? else {
            return None;
        };
        let (SEQUENCE, tbs, _) = der_next(cert)? else {
            return None;
        };
        let mut rest = tbs;
        // version [0] EXPLICIT is absent from v1 certificates.
        let (tag, _, after) = der_next(rest)?;
        if tag == 0xa0 {
            rest = after;
        }
        // serialNumber, signature, issuer, validity, subject, subjectPublicKeyInfo.
        for _ in 0..6 {
            rest = der_next(rest)?.2;
        }
        while !rest.is_empty() {
            let (tag, body, after) = der_next(rest)?;
            rest = after;
            if tag != 0xa3 {
                continue; // issuerUniqueID [1], subjectUniqueID [2]
            }
            let (SEQUENCE, mut exts, _) = der_next(body)? else {
                return None;
            };
            while !exts.is_empty() {
                let (_, ext, after) = der_next(exts)?;
                exts = after;
                let (0x06, oid, value) = der_next(ext)? else {
                    return None;
                };
                if oid != SUBJECT_ALT_NAME {
                    continue;
                }
                let (mut tag, mut octets, after) = der_next(value)?;
                if tag == 0x01 {
                    // critical BOOLEAN
                    (tag, octets, _) = der_next(after)?;
                }
                if tag != 0x04 {
                    return None;
                }
                let (SEQUENCE, mut names, _) = der_next(octets)? else {
                    return None;
                };
                let mut out = Vec::new();
                while !names.is_empty() {
                    let (tag, v, after) = der_next(names)?;
                    names = after;
                    // dNSName [2] IMPLICIT IA5String
                    if tag == 0x82 {
                        if let Ok(s) = std::str::from_utf8(v) {
                            out.push(s.to_ascii_lowercase());
                        }
                    }
                }
                return Some(out);
            }
        }
        Some(Vec::new())
    }
    walk(cert).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// DER, PEM and key PEM of a fresh self-signed certificate for `names`.
    fn self_signed(names: &[&str]) -> (Vec<u8>, String, String) {
        let names: Vec<String> = names.iter().map(|s| (*s).to_owned()).collect();
        let c = rcgen::generate_simple_self_signed(names).expect("rcgen");
        (
            c.cert.der().to_vec(),
            c.cert.pem(),
            c.signing_key.serialize_pem(),
        )
    }

    #[test]
    fn dns_names_come_from_the_subject_alt_name() {
        let (der, _, _) = self_signed(&["a.example.com", "*.Wild.example.com", "127.0.0.1"]);
        // rcgen writes an IP-looking name as an iPAddress entry, which is not a DNS name.
        assert_eq!(dns_names(&der), vec!["a.example.com", "*.wild.example.com"]);
    }

    #[test]
    fn dns_names_of_garbage_are_none() {
        let (der, _, _) = self_signed(&["x.test"]);
        for cut in [0, 1, 2, 10, der.len() / 2, der.len() - 1] {
            let _ = dns_names(&der[..cut]); // must not panic
        }
        assert!(dns_names(b"\x30\x84\xff\xff\xff\xff").is_empty());
        assert!(dns_names(&[]).is_empty());
    }

    #[test]
    fn host_without_port_table() {
        for (input, want) in [
            ("example.com:443", "example.com"),
            ("example.com", "example.com"),
            ("127.0.0.1:8443", "127.0.0.1"),
            ("[::1]:443", "::1"),
            ("::1", "::1"),
        ] {
            assert_eq!(host_without_port(input), want, "{input}");
        }
    }

    #[test]
    fn request_sni_table() {
        let key = RandomState::new();
        let mut out = String::new();
        for (host, want) in [
            (&b"a.test"[..], Some("a.test")),
            (b"A.Test:8443", Some("a.test")),
            (b" b.test ", Some("b.test")),
            (b"127.0.0.1:443", Some("127.0.0.1")),
            (b"[::1]:443", Some("::1")),
            (b"", None),
            (b":443", None),
            (b"bad host", None),
            (b"a..test", None),
            (b"\xff.test", None),
        ] {
            let tag = request_sni(&key, host, &mut out);
            let label = String::from_utf8_lossy(host);
            match want {
                Some(name) => {
                    assert_eq!(out, name, "{label}");
                    assert_eq!(tag, Some(sni_tag(&key, name)), "{label}");
                    assert_ne!(tag, Some(0), "{label}");
                }
                None => assert_eq!(tag, None, "{label}"),
            }
        }
        // Case does not matter; names do.
        assert_eq!(sni_tag(&key, "A.TEST"), sni_tag(&key, "a.test"));
        assert_ne!(sni_tag(&key, "a.test"), sni_tag(&key, "b.test"));
    }

    #[test]
    fn sni_from_request_only_for_pass_without_sni() {
        let fixed = UpstreamTls {
            sni: Some("x.test".into()),
            ..UpstreamTls::default()
        };
        let open = UpstreamTls::default();
        assert!(sni_from_request(&open, &PassHost::Pass));
        assert!(!sni_from_request(&fixed, &PassHost::Pass));
        assert!(!sni_from_request(&open, &PassHost::Node));
        assert!(!sni_from_request(
            &open,
            &PassHost::Rewrite("h.test".into())
        ));
    }

    #[test]
    fn sni_picks_exact_then_wildcard_then_default() {
        let dir = std::env::temp_dir().join(format!("hearth-tls-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let mut certs = Vec::new();
        for (i, names) in [
            vec!["default.test"],
            vec!["a.test"],
            vec!["*.w.test", "exact.w.test"],
        ]
        .iter()
        .enumerate()
        {
            let (_, pem, key) = self_signed(names);
            let (c, k) = (dir.join(format!("{i}.pem")), dir.join(format!("{i}.key")));
            std::fs::write(&c, pem).expect("write cert");
            std::fs::write(&k, key).expect("write key");
            certs.push(CertFiles { cert: c, key: k });
        }
        let r = resolver(&ListenTls { certs }).expect("resolver");
        let name_of = |sni: Option<&str>| dns_names(&r.pick(sni).cert[0])[0].clone();
        assert_eq!(name_of(Some("A.test")), "a.test");
        assert_eq!(name_of(Some("x.w.test")), "*.w.test");
        assert_eq!(name_of(Some("exact.w.test")), "*.w.test");
        assert_eq!(
            name_of(Some("deep.x.w.test")),
            "default.test",
            "one label only"
        );
        assert_eq!(name_of(Some("other.test")), "default.test");
        assert_eq!(name_of(None), "default.test");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
