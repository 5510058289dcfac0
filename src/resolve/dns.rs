//! hearth's own DNS queries, without I/O: the A and AAAA questions for a name (RFC 1035 §4.1,
//! RFC 3596), what an answer says ([`read_reply`]), and [`Lookup`], the machine that asks the
//! configured servers in turn, each within a timeout, and says what to send where and when it is
//! done. The wire format is `simple_dns`'s; the sockets belong to the caller (`net` blocks on
//! them for the configuration loader, `thread` polls them with `mio`), so every rule here is
//! tested with plain bytes on a virtual clock.
//!
//! Rules:
//! - Both questions go to one server at a time, in the order configured, each server at most
//!   [`ROUNDS`] times in all. A server that does not answer within the timeout, or answers with a
//!   failure (SERVFAIL, REFUSED, ...), hands the questions it left open to the next.
//! - A datagram counts only if it comes from the server asked, carries the query's id, is a
//!   response and repeats the question (RFC 5452 §4.2: what makes a forged answer hard to slip
//!   in); anything else is ignored, and the wait goes on.
//! - A truncated answer (TC) is asked again over TCP (RFC 7766 §5) of the same server.
//! - The answer's CNAME chain is followed from the name asked (RFC 1034 §3.6.2), at most
//!   [`MAX_CHAIN`] links, within the answer as a recursive resolver sends it; a chain that leaves
//!   the answer counts as no address.
//! - The TTL of a result is the smallest of the records it used, CNAMEs included.
//! - NXDOMAIN settles the name at once. A lookup in which either question failed on every try is
//!   a failure, even when the other found addresses: acting on half an answer would drop every
//!   address of the other family until the next lookup.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use simple_dns::rdata::RData;
use simple_dns::{Name, Packet, PacketFlag, Question, CLASS, QCLASS, QTYPE, RCODE, TYPE};

/// How many times each server is asked, at most, in one lookup.
pub const ROUNDS: usize = 2;
/// Longest CNAME chain followed.
pub const MAX_CHAIN: usize = 8;
/// Receive buffer for one datagram: hearth sends no EDNS, so servers answer in 512 bytes and
/// set TC beyond; this leaves room for those that do not.
pub const MAX_DATAGRAM: usize = 4096;

/// Which question: A (IPv4) or AAAA (IPv6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub const BOTH: [Family; 2] = [Family::V4, Family::V6];

    fn index(self) -> usize {
        match self {
            Family::V4 => 0,
            Family::V6 => 1,
        }
    }

    fn qtype(self) -> TYPE {
        match self {
            Family::V4 => TYPE::A,
            Family::V6 => TYPE::AAAA,
        }
    }

    pub fn record(self) -> &'static str {
        match self {
            Family::V4 => "A",
            Family::V6 => "AAAA",
        }
    }
}

/// Longest name, in its text form without the final dot (RFC 1035 §2.3.4: 255 octets on the
/// wire).
const MAX_NAME: usize = 253;

/// The name as the wire carries it, or why it cannot be asked for. Labels are 1 to 63 letters,
/// digits, `-` or `_` (RFC 1123 §2.1 host names, plus the underscore that service names and
/// many internal zones use).
fn name(host: &str) -> Result<Name<'_>, String> {
    let text = host.strip_suffix('.').unwrap_or(host);
    let label_ok = |l: &str| {
        (1..=63).contains(&l.len())
            && l.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if text.is_empty() || text.len() > MAX_NAME || !text.split('.').all(label_ok) {
        return Err(format!(
            "{host:?} is not a DNS name (labels of 1 to 63 letters, digits, '-' or '_')"
        ));
    }
    Name::new(text).map_err(|e| format!("{host:?}: {e}"))
}

/// Checks that `host` can be asked for: what the configuration loader refuses early.
pub fn check_name(host: &str) -> Result<(), String> {
    name(host).map(|_| ())
}

/// A query for `host`'s records of `family`, with recursion desired.
pub fn query(id: u16, host: &str, family: Family) -> Result<Vec<u8>, String> {
    let mut p = Packet::new_query(id);
    p.set_flags(PacketFlag::RECURSION_DESIRED);
    p.questions.push(Question::new(
        name(host)?,
        QTYPE::TYPE(family.qtype()),
        QCLASS::CLASS(CLASS::IN),
        false,
    ));
    p.build_bytes_vec().map_err(|e| format!("{host:?}: {e}"))
}

/// What an answer to one question says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// The addresses found (none: the name has no record of this family) and the smallest TTL
    /// of the records used, in seconds (None when none was).
    Addrs {
        addrs: Vec<IpAddr>,
        ttl: Option<u32>,
    },
    /// The name does not exist.
    NxDomain,
    /// TC set: ask again over TCP.
    Truncated,
    /// The server could not answer (its RCODE); another may.
    Failed(String),
}

/// Reads a datagram (or a TCP message without its length) as the answer to query `id` for
/// `host`'s `family` records; None when it is not that answer and should be ignored.
pub fn read_reply(bytes: &[u8], id: u16, host: &str, family: Family) -> Option<Reply> {
    // The header alone says whose answer this is and whether it was cut, also when the rest
    // does not parse (a truncated answer may end mid-record).
    if bytes.len() < 12 || u16::from_be_bytes([bytes[0], bytes[1]]) != id {
        return None;
    }
    let flags = u16::from_be_bytes([bytes[2], bytes[3]]);
    let response = flags & 0x8000 != 0;
    let truncated = flags & 0x0200 != 0;
    if !response {
        return None;
    }
    let packet = match Packet::parse(bytes) {
        Ok(p) => p,
        Err(_) if truncated => return Some(Reply::Truncated),
        Err(_) => return None,
    };
    let asked = name(host).ok()?;
    let echoes = packet.questions.len() == 1
        && packet.questions[0].qname == asked
        && packet.questions[0].qtype == QTYPE::TYPE(family.qtype());
    if !echoes {
        return None;
    }
    if truncated {
        return Some(Reply::Truncated);
    }
    match packet.rcode() {
        RCODE::NoError => {}
        RCODE::NameError => return Some(Reply::NxDomain),
        other => return Some(Reply::Failed(format!("{other:?}"))),
    }
    Some(follow_chain(&packet, asked, family))
}

/// The addresses of `asked` in the answer section, through its CNAME chain.
fn follow_chain(packet: &Packet<'_>, asked: Name<'_>, family: Family) -> Reply {
    let mut current = asked;
    let mut ttl: Option<u32> = None;
    let min_ttl = |t: u32, ttl: &mut Option<u32>| *ttl = Some(ttl.map_or(t, |m| m.min(t)));
    for _ in 0..=MAX_CHAIN {
        let mut addrs = Vec::new();
        let mut next = None;
        for rr in packet.answers.iter().filter(|rr| rr.name == current) {
            match (&rr.rdata, family) {
                (RData::A(a), Family::V4) => {
                    addrs.push(IpAddr::V4(Ipv4Addr::from(a.address)));
                    min_ttl(rr.ttl, &mut ttl);
                }
                (RData::AAAA(a), Family::V6) => {
                    addrs.push(IpAddr::V6(Ipv6Addr::from(a.address)));
                    min_ttl(rr.ttl, &mut ttl);
                }
                (RData::CNAME(c), _) if next.is_none() => next = Some((c.0.clone(), rr.ttl)),
                _ => {}
            }
        }
        if !addrs.is_empty() {
            return Reply::Addrs { addrs, ttl };
        }
        match next {
            Some((target, t)) => {
                min_ttl(t, &mut ttl);
                current = target;
            }
            None => break,
        }
    }
    Reply::Addrs {
        addrs: Vec::new(),
        ttl: None,
    }
}

/// A lookup that found addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// Sorted, without repeats, never empty.
    pub addrs: Vec<IpAddr>,
    /// The smallest TTL of the records used; None when the source gives none (the system
    /// resolver).
    pub ttl: Option<Duration>,
}

/// Why a lookup found no address. The schedule keeps the last good addresses on any of these.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LookupError {
    /// NXDOMAIN: the name does not exist.
    NotFound,
    /// The name exists but has neither A nor AAAA records.
    NoAddress,
    /// No server answered both questions: timeouts, failures, sockets that would not open.
    Failed(String),
}

impl std::fmt::Display for LookupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LookupError::NotFound => f.write_str("no such name (NXDOMAIN)"),
            LookupError::NoAddress => f.write_str("the name has no A or AAAA record"),
            LookupError::Failed(why) => f.write_str(why),
        }
    }
}

/// Where one question stands in a lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Waiting,
    /// The server asked could not answer; the next one will be, if any is left.
    Retry(String),
    Answered(Reply),
}

/// What the caller does next for a lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Send each datagram to `server` from a fresh socket (a new source port per server), then
    /// wait for datagrams until [`Lookup::deadline`].
    Send {
        server: SocketAddr,
        packets: Vec<Vec<u8>>,
    },
    /// Ask `server` again over TCP (`packet` without its length prefix), then hand the answer
    /// to [`Lookup::tcp_reply`].
    Tcp {
        server: SocketAddr,
        family: Family,
        packet: Vec<u8>,
    },
    /// Keep waiting.
    Wait,
    Done(Result<Resolved, LookupError>),
}

/// One name being looked up: both questions, the server being asked, and the deadline.
#[derive(Debug)]
pub struct Lookup {
    host: String,
    servers: Vec<SocketAddr>,
    timeout_ms: u64,
    ids: [u16; 2],
    parts: [Part; 2],
    /// Index into the servers, round after round: server `attempt % servers.len()`.
    attempt: usize,
    deadline: u64,
    /// Why earlier servers failed, for the message of a failed lookup.
    notes: Vec<String>,
}

impl Lookup {
    /// A lookup of `host` over `servers` (never empty), each try waiting `timeout`; `ids` are
    /// the query ids of the A and AAAA questions, which the caller draws at random.
    pub fn new(host: &str, servers: &[SocketAddr], timeout: Duration, ids: [u16; 2]) -> Lookup {
        Lookup {
            host: host.to_owned(),
            servers: servers.to_vec(),
            timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
            ids,
            parts: [Part::Waiting, Part::Waiting],
            attempt: 0,
            deadline: 0,
            notes: Vec::new(),
        }
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    /// The server asked now.
    pub fn server(&self) -> SocketAddr {
        self.servers[self.attempt % self.servers.len()]
    }

    /// When the server asked now has waited long enough (ms on the caller's clock).
    pub fn deadline(&self) -> u64 {
        self.deadline
    }

    /// The first step: both questions to the first server.
    pub fn start(&mut self, now: u64) -> Step {
        if self.servers.is_empty() {
            return Step::Done(Err(LookupError::Failed("no resolver configured".into())));
        }
        self.send_open(now)
    }

    /// A datagram arrived from `from`.
    pub fn datagram(&mut self, from: SocketAddr, bytes: &[u8], now: u64) -> Step {
        if from != self.server() {
            return Step::Wait;
        }
        for family in Family::BOTH {
            let i = family.index();
            if self.parts[i] != Part::Waiting {
                continue;
            }
            let Some(reply) = read_reply(bytes, self.ids[i], &self.host, family) else {
                continue;
            };
            return match reply {
                Reply::Truncated => match query(self.ids[i], &self.host, family) {
                    Ok(packet) => Step::Tcp {
                        server: self.server(),
                        family,
                        packet,
                    },
                    Err(e) => self.settle_part(family, Part::Retry(e), now),
                },
                Reply::Failed(rcode) => {
                    let why = format!(
                        "{} answered {} with {rcode}",
                        self.server(),
                        family.record()
                    );
                    self.settle_part(family, Part::Retry(why), now)
                }
                reply => self.settle_part(family, Part::Answered(reply), now),
            };
        }
        Step::Wait
    }

    /// The answer to a [`Step::Tcp`] (or why the exchange failed).
    pub fn tcp_reply(&mut self, family: Family, answer: Result<Vec<u8>, String>, now: u64) -> Step {
        let i = family.index();
        let server = self.server();
        let part = match answer {
            Err(e) => Part::Retry(format!("{server} over TCP: {e}")),
            Ok(bytes) => match read_reply(&bytes, self.ids[i], &self.host, family) {
                Some(Reply::Truncated) | None => {
                    Part::Retry(format!("{server} over TCP: not an answer to the question"))
                }
                Some(Reply::Failed(rcode)) => Part::Retry(format!(
                    "{server} answered {} with {rcode}",
                    family.record()
                )),
                Some(reply) => Part::Answered(reply),
            },
        };
        self.settle_part(family, part, now)
    }

    /// The clock moved; past the deadline, the questions still open go to the next server.
    pub fn expire(&mut self, now: u64) -> Step {
        if now < self.deadline {
            return Step::Wait;
        }
        let server = self.server();
        for family in Family::BOTH {
            let part = &mut self.parts[family.index()];
            if *part == Part::Waiting {
                *part = Part::Retry(format!("{server}: no {} answer in time", family.record()));
            }
        }
        self.next(now)
    }

    fn settle_part(&mut self, family: Family, part: Part, now: u64) -> Step {
        self.parts[family.index()] = part;
        if self.parts.contains(&Part::Waiting) {
            return Step::Wait;
        }
        self.next(now)
    }

    /// Every question is settled for this server: retry those that failed elsewhere, or finish.
    fn next(&mut self, now: u64) -> Step {
        let retry = self.parts.iter().any(|p| matches!(p, Part::Retry(_)));
        if retry && self.attempt + 1 < self.servers.len() * ROUNDS {
            for p in &mut self.parts {
                if let Part::Retry(why) = p {
                    self.notes.push(std::mem::take(why));
                    *p = Part::Waiting;
                }
            }
            self.attempt += 1;
            return self.send_open(now);
        }
        Step::Done(self.result())
    }

    /// Both questions still open, to the server of this attempt.
    fn send_open(&mut self, now: u64) -> Step {
        self.deadline = now.saturating_add(self.timeout_ms);
        let mut packets = Vec::with_capacity(2);
        for family in Family::BOTH {
            let i = family.index();
            if self.parts[i] != Part::Waiting {
                continue;
            }
            match query(self.ids[i], &self.host, family) {
                Ok(p) => packets.push(p),
                Err(e) => return Step::Done(Err(LookupError::Failed(e))),
            }
        }
        Step::Send {
            server: self.server(),
            packets,
        }
    }

    fn result(&mut self) -> Result<Resolved, LookupError> {
        let mut addrs = Vec::new();
        let mut ttl: Option<u32> = None;
        let mut failures = Vec::new();
        let mut nxdomain = false;
        for p in &self.parts {
            match p {
                Part::Retry(why) => failures.push(why.clone()),
                Part::Answered(Reply::NxDomain) => nxdomain = true,
                Part::Answered(Reply::Addrs { addrs: a, ttl: t }) => {
                    addrs.extend_from_slice(a);
                    if let Some(t) = *t {
                        ttl = Some(ttl.map_or(t, |m| m.min(t)));
                    }
                }
                Part::Answered(_) | Part::Waiting => {}
            }
        }
        if nxdomain {
            return Err(LookupError::NotFound);
        }
        if !failures.is_empty() {
            let mut all: Vec<String> = Vec::new();
            // A server asked twice usually fails twice the same way: say it once.
            for why in std::mem::take(&mut self.notes).into_iter().chain(failures) {
                if !all.contains(&why) {
                    all.push(why);
                }
            }
            return Err(LookupError::Failed(all.join("; ")));
        }
        addrs.sort_unstable();
        addrs.dedup();
        if addrs.is_empty() {
            return Err(LookupError::NoAddress);
        }
        Ok(Resolved {
            addrs,
            ttl: ttl.map(|s| Duration::from_secs(u64::from(s))),
        })
    }
}

/// Builders of answers, for the tests here and of `net` and `thread`: what a DNS server would
/// send.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;
    use simple_dns::rdata::{A, AAAA, CNAME};
    use simple_dns::ResourceRecord;

    /// A record of an answer: the owner name, TTL and data.
    pub(crate) enum Rec<'a> {
        Ip(&'a str, u32, IpAddr),
        Cname(&'a str, u32, &'a str),
    }

    /// The answer to `query` (as hearth sent it) with `records` and `rcode`; `truncated` sets TC.
    pub(crate) fn answer(
        query: &[u8],
        records: &[Rec<'_>],
        rcode: RCODE,
        truncated: bool,
    ) -> Vec<u8> {
        let q = Packet::parse(query).expect("a query hearth made");
        let mut p = Packet::new_reply(q.id());
        p.questions = q.questions.clone();
        *p.rcode_mut() = rcode;
        if truncated {
            p.set_flags(PacketFlag::TRUNCATION);
        }
        for r in records {
            let rr = match r {
                Rec::Ip(owner, ttl, IpAddr::V4(a)) => ResourceRecord::new(
                    Name::new_unchecked(owner),
                    CLASS::IN,
                    *ttl,
                    RData::A(A::from(*a)),
                ),
                Rec::Ip(owner, ttl, IpAddr::V6(a)) => ResourceRecord::new(
                    Name::new_unchecked(owner),
                    CLASS::IN,
                    *ttl,
                    RData::AAAA(AAAA::from(*a)),
                ),
                Rec::Cname(owner, ttl, target) => ResourceRecord::new(
                    Name::new_unchecked(owner),
                    CLASS::IN,
                    *ttl,
                    RData::CNAME(CNAME(Name::new_unchecked(target))),
                ),
            };
            p.answers.push(rr);
        }
        p.build_bytes_vec().expect("an answer")
    }

    /// Which family `query` asks for.
    pub(crate) fn family_of(query: &[u8]) -> Family {
        let q = Packet::parse(query).expect("a query hearth made");
        if q.questions[0].qtype == QTYPE::TYPE(TYPE::AAAA) {
            Family::V6
        } else {
            Family::V4
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{answer, family_of, Rec};
    use super::*;

    const HOST: &str = "api.internal";

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn queries_ask_one_question_with_recursion() {
        let q = query(7, HOST, Family::V6).unwrap();
        let p = Packet::parse(&q).unwrap();
        assert_eq!(p.id(), 7);
        assert!(p.has_flags(PacketFlag::RECURSION_DESIRED));
        assert_eq!(p.questions.len(), 1);
        assert_eq!(p.questions[0].qname.to_string(), HOST);
        assert_eq!(p.questions[0].qtype, QTYPE::TYPE(TYPE::AAAA));
        // A trailing dot is the same name; a name with a space is not one.
        assert_eq!(query(7, "api.internal.", Family::V6).unwrap(), q);
        assert!(query(7, "a b", Family::V4).is_err());
        assert!(check_name(&"x".repeat(64)).is_err(), "label over 63 octets");
    }

    #[test]
    fn replies_are_read_and_foreign_ones_ignored() {
        let q = query(9, HOST, Family::V4).unwrap();
        let ok = answer(
            &q,
            &[
                Rec::Ip(HOST, 30, ip("10.0.0.5")),
                Rec::Ip(HOST, 20, ip("10.0.0.6")),
            ],
            RCODE::NoError,
            false,
        );
        assert_eq!(
            read_reply(&ok, 9, HOST, Family::V4),
            Some(Reply::Addrs {
                addrs: vec![ip("10.0.0.5"), ip("10.0.0.6")],
                ttl: Some(20)
            })
        );
        // Another id, another question, another family, a query instead of a response.
        assert_eq!(read_reply(&ok, 10, HOST, Family::V4), None);
        assert_eq!(read_reply(&ok, 9, "other.internal", Family::V4), None);
        assert_eq!(read_reply(&ok, 9, HOST, Family::V6), None);
        assert_eq!(read_reply(&q, 9, HOST, Family::V4), None);
        assert_eq!(read_reply(&ok[..5], 9, HOST, Family::V4), None);
        // Case does not matter in names (RFC 4343).
        assert!(read_reply(&ok, 9, "API.Internal", Family::V4).is_some());
        let nx = answer(&q, &[], RCODE::NameError, false);
        assert_eq!(read_reply(&nx, 9, HOST, Family::V4), Some(Reply::NxDomain));
        let fail = answer(&q, &[], RCODE::ServerFailure, false);
        assert!(matches!(
            read_reply(&fail, 9, HOST, Family::V4),
            Some(Reply::Failed(_))
        ));
        let tc = answer(
            &q,
            &[Rec::Ip(HOST, 30, ip("10.0.0.5"))],
            RCODE::NoError,
            true,
        );
        assert_eq!(read_reply(&tc, 9, HOST, Family::V4), Some(Reply::Truncated));
        // Cut mid-record, the header still says truncated.
        assert_eq!(
            read_reply(&tc[..tc.len() - 3], 9, HOST, Family::V4),
            Some(Reply::Truncated)
        );
        let nodata = answer(&q, &[], RCODE::NoError, false);
        assert_eq!(
            read_reply(&nodata, 9, HOST, Family::V4),
            Some(Reply::Addrs {
                addrs: vec![],
                ttl: None
            })
        );
    }

    #[test]
    fn cname_chains_are_followed_and_their_ttls_count() {
        let q = query(1, HOST, Family::V4).unwrap();
        let chain = answer(
            &q,
            &[
                Rec::Cname(HOST, 300, "lb.internal"),
                Rec::Cname("lb.internal", 5, "node.internal"),
                Rec::Ip("node.internal", 60, ip("10.0.0.7")),
                // A record of a name not on the chain is not used.
                Rec::Ip("elsewhere.internal", 1, ip("10.9.9.9")),
            ],
            RCODE::NoError,
            false,
        );
        assert_eq!(
            read_reply(&chain, 1, HOST, Family::V4),
            Some(Reply::Addrs {
                addrs: vec![ip("10.0.0.7")],
                ttl: Some(5)
            })
        );
        // A loop ends as no address rather than spinning.
        let looped = answer(
            &q,
            &[
                Rec::Cname(HOST, 9, "b.internal"),
                Rec::Cname("b.internal", 9, HOST),
            ],
            RCODE::NoError,
            false,
        );
        assert_eq!(
            read_reply(&looped, 1, HOST, Family::V4),
            Some(Reply::Addrs {
                addrs: vec![],
                ttl: None
            })
        );
    }

    /// Drives a lookup against a table of what each server does with each question.
    fn answer_all(
        l: &mut Lookup,
        step: Step,
        now: u64,
        respond: impl Fn(SocketAddr, &[u8]) -> Option<Vec<u8>>,
    ) -> Step {
        let Step::Send { server, packets } = step else {
            return step;
        };
        let mut last = Step::Wait;
        for p in packets {
            if let Some(a) = respond(server, &p) {
                last = l.datagram(server, &a, now);
            }
        }
        last
    }

    #[test]
    fn both_families_make_one_sorted_result_with_the_smallest_ttl() {
        let mut l = Lookup::new(
            HOST,
            &[sa("127.0.0.1:53")],
            Duration::from_millis(100),
            [1, 2],
        );
        let step = l.start(0);
        let done = answer_all(&mut l, step, 10, |_, q| {
            Some(match family_of(q) {
                Family::V4 => answer(
                    q,
                    &[
                        Rec::Ip(HOST, 40, ip("10.0.0.9")),
                        Rec::Ip(HOST, 40, ip("10.0.0.1")),
                    ],
                    RCODE::NoError,
                    false,
                ),
                Family::V6 => answer(q, &[Rec::Ip(HOST, 7, ip("fd00::1"))], RCODE::NoError, false),
            })
        });
        assert_eq!(
            done,
            Step::Done(Ok(Resolved {
                addrs: vec![ip("10.0.0.1"), ip("10.0.0.9"), ip("fd00::1")],
                ttl: Some(Duration::from_secs(7)),
            }))
        );
    }

    #[test]
    fn silence_and_failures_move_to_the_next_server_then_give_up() {
        let (a, b) = (sa("127.0.0.1:53"), sa("127.0.0.2:53"));
        let mut l = Lookup::new(HOST, &[a, b], Duration::from_millis(100), [1, 2]);
        let Step::Send { server, packets } = l.start(0) else {
            panic!()
        };
        assert_eq!((server, packets.len(), l.deadline()), (a, 2, 100));
        // A forged answer from elsewhere is ignored; so is the right server a moment early.
        let v4 = answer(
            &packets[0],
            &[Rec::Ip(HOST, 30, ip("10.0.0.5"))],
            RCODE::NoError,
            false,
        );
        assert_eq!(l.datagram(b, &v4, 5), Step::Wait);
        assert_eq!(l.expire(99), Step::Wait);
        assert_eq!(l.datagram(a, &v4, 10), Step::Wait, "AAAA still open");
        // Server a never answers AAAA: only AAAA goes to b.
        let Step::Send { server, packets } = l.expire(100) else {
            panic!()
        };
        assert_eq!((server, packets.len(), l.deadline()), (b, 1, 200));
        assert_eq!(family_of(&packets[0]), Family::V6);
        // b fails it, a (second round) is silent, b fails again: the lookup fails, naming why.
        let fail = answer(&packets[0], &[], RCODE::ServerFailure, false);
        let Step::Send { server, .. } = l.datagram(b, &fail, 150) else {
            panic!()
        };
        assert_eq!(server, a);
        let Step::Send { server, packets } = l.expire(250) else {
            panic!()
        };
        assert_eq!(server, b);
        let fail = answer(&packets[0], &[], RCODE::Refused, false);
        let Step::Done(Err(LookupError::Failed(why))) = l.datagram(b, &fail, 260) else {
            panic!()
        };
        assert!(
            why.contains("127.0.0.1:53: no AAAA answer in time"),
            "{why}"
        );
        assert!(why.contains("127.0.0.2:53 answered AAAA with"), "{why}");
    }

    #[test]
    fn nxdomain_and_nodata_settle_without_asking_further() {
        let servers = [sa("127.0.0.1:53"), sa("127.0.0.2:53")];
        let mut l = Lookup::new(HOST, &servers, Duration::from_millis(100), [1, 2]);
        let step = l.start(0);
        let done = answer_all(&mut l, step, 1, |_, q| {
            Some(answer(q, &[], RCODE::NameError, false))
        });
        assert_eq!(done, Step::Done(Err(LookupError::NotFound)));
        let mut l = Lookup::new(HOST, &servers, Duration::from_millis(100), [1, 2]);
        let step = l.start(0);
        let done = answer_all(&mut l, step, 1, |_, q| {
            Some(answer(q, &[], RCODE::NoError, false))
        });
        assert_eq!(done, Step::Done(Err(LookupError::NoAddress)));
    }

    #[test]
    fn truncated_answers_are_asked_again_over_tcp() {
        let server = sa("127.0.0.1:53");
        let mut l = Lookup::new(HOST, &[server], Duration::from_millis(100), [1, 2]);
        let Step::Send { packets, .. } = l.start(0) else {
            panic!()
        };
        let tc = answer(&packets[0], &[], RCODE::NoError, true);
        let Step::Tcp {
            server: s,
            family,
            packet,
        } = l.datagram(server, &tc, 1)
        else {
            panic!()
        };
        assert_eq!((s, family), (server, Family::V4));
        let full = answer(
            &packet,
            &[Rec::Ip(HOST, 9, ip("10.0.0.5"))],
            RCODE::NoError,
            false,
        );
        assert_eq!(l.tcp_reply(family, Ok(full), 2), Step::Wait);
        let v6 = answer(&packets[1], &[], RCODE::NoError, false);
        assert_eq!(
            l.datagram(server, &v6, 3),
            Step::Done(Ok(Resolved {
                addrs: vec![ip("10.0.0.5")],
                ttl: Some(Duration::from_secs(9))
            }))
        );
        // A TCP exchange that fails is a failed try like any other.
        let mut l = Lookup::new(HOST, &[server], Duration::from_millis(100), [1, 2]);
        let Step::Send { packets, .. } = l.start(0) else {
            panic!()
        };
        let tc = answer(&packets[1], &[], RCODE::NoError, true);
        let Step::Tcp { family, .. } = l.datagram(server, &tc, 1) else {
            panic!()
        };
        assert_eq!(l.tcp_reply(family, Err("refused".into()), 2), Step::Wait);
        let Step::Send { packets, .. } = l.expire(100) else {
            panic!("second round")
        };
        assert_eq!(
            packets.len(),
            2,
            "both were open: A never answered, AAAA failed"
        );
    }
}
