//! APISIX's `proxy-rewrite` plugin: what a route changes in a request on its way upstream.
//!
//! [`from_plugins`] reads a route's `plugins` object, from the admin API, etcd or the file (all
//! handed over as JSON values), into a [`ProxyRewrite`]. Any other plugin is refused by name, and
//! so is everything hearth's rules forbid, before any request arrives: templates are parsed,
//! regular expressions compiled, field names checked against the hop boundary
//! ([`edit_refusal`]) and kept lowercase for comparing. [`ProxyRewrite::editor`] applies one to a
//! request as an [`Edit`], which writes straight into the head hearth sends upstream.
//!
//! The fields mean what they mean in APISIX 3.x, except where noted:
//! - `uri` replaces the path. `$NAME` and `${NAME}` in it are the variables `vars` knows, plus
//!   `request_uri`, `args` and `scheme`; a value is percent-encoded where it would break the
//!   target (controls, space, non-ASCII, `?`, `#`). The client's query follows, after `?`, or after
//!   `&` when the new uri has a query of its own.
//! - `regex_uri`, `[pattern, replacement, ...]`: the first pattern that matches the path replaces
//!   its first match by the replacement, in which `$N` and `${N}` are captures and `$$` is a
//!   dollar; the query follows as for `uri`, which wins when both are given. Unlike APISIX, which
//!   matches nginx's decoded and normalised `$uri`, hearth matches the path as sent, as its route
//!   matching does. A result that does not start with `/` gets one.
//! - `host` is the Host sent upstream when the upstream's `pass_host` is `pass`; `node` and
//!   `rewrite` choose the Host themselves, as in APISIX, where the upstream's choice is applied
//!   after the plugin.
//! - `method` is the method sent upstream, but a HEAD request stays HEAD and `HEAD` is refused:
//!   the answer to HEAD has no body, which a client that asked otherwise would wait for (APISIX
//!   leaves that client hanging).
//! - `headers`: `add` appends lines and keeps the client's, `set` replaces the client's fields of
//!   that name (an empty value only removes them), `remove` drops them; the older flat form
//!   `{name: value}` means `set`. Values take the same variables as `uri`, and regex_uri's
//!   captures. APISIX applies add, then set, then remove, so a name in two of them loses all but
//!   the last; hearth refuses such a name instead. A name set or removed also drops the client's
//!   fields spelled with `_` for `-`, which CGI-style upstreams read as the same field.
//!
//! Invariants: a [`ProxyRewrite`] holds nothing that could make the head hearth sends invalid (no
//! CR, LF or NUL in a value, no space or `#` in a target, no field hearth must write itself), and
//! applying one allocates only to keep regex_uri's captures, when something uses them.

use std::fmt::{self, Write as _};
use std::net::IpAddr;

use serde_json::{Map, Value};

use crate::http::head::{Header, Method, RequestHead};
use crate::http::rewrite::{edit_refusal, request_head_with, Edit, Forward};
use crate::vars::{parse_var, Request, Var, Vars};

/// Longest `uri`, as APISIX's schema has it.
const MAX_URI_LEN: usize = 4096;

/// The methods `method` may name: APISIX's list, less HEAD (see the module docs).
const METHODS: [&str; 13] = [
    "GET", "POST", "PUT", "DELETE", "OPTIONS", "MKCOL", "COPY", "MOVE", "PROPFIND", "LOCK",
    "UNLOCK", "PATCH", "TRACE",
];

/// The one plugin hearth runs.
pub const NAME: &str = "proxy-rewrite";

/// A route's `plugins.proxy-rewrite`, checked and compiled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyRewrite {
    /// `uri`: the path to send.
    pub uri: Option<Template>,
    /// `regex_uri`, pair by pair; unused when `uri` is given.
    pub regex_uri: Vec<RegexUri>,
    /// `host`: the Host to send under `pass_host = "pass"`.
    pub host: Option<String>,
    /// `method`: the method to send.
    pub method: Option<NewMethod>,
    pub headers: Headers,
    /// Some template or replacement reads regex_uri's captures, so a match keeps them.
    keep_captures: bool,
}

/// A method `method` names, with what replays need to know of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMethod {
    pub name: String,
    /// RFC 9110 §9.2.2; the WebDAV methods count as not idempotent, which only forgoes replays.
    pub idempotent: bool,
}

/// One `[pattern, replacement]` of `regex_uri`.
#[derive(Debug, Clone)]
pub struct RegexUri {
    pub pattern: String,
    pub regex: regex::bytes::Regex,
    pub replacement: Template,
}

impl PartialEq for RegexUri {
    fn eq(&self, other: &RegexUri) -> bool {
        self.pattern == other.pattern && self.replacement == other.replacement
    }
}

impl Eq for RegexUri {}

/// `headers`, as the lines to write and the names to leave out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers {
    /// Names whose fields hearth would send are left out: each name of `set` and `remove`,
    /// lowercase with `-` for `_`.
    pub drop: Vec<String>,
    /// The lines to write, `add`'s then `set`'s, each name as configured.
    pub write: Vec<Line>,
}

/// One field line a route writes; none when its value comes out empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub name: String,
    pub value: Template,
}

/// A text with variables, parsed: what is written per request is its pieces in turn.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Template {
    pieces: Vec<Piece>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Var(Var),
    /// The target as the client sent it (`$request_uri`).
    RequestUri,
    /// The query (`$args`, `$query_string`).
    Args,
    /// `http` or `https` (`$scheme`).
    Scheme,
    /// A capture of the regex_uri pattern that matched; `$0` is the whole match.
    Capture(usize),
}

/// Why a `plugins` object was refused: where in it and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginError {
    /// From inside the `plugins` object down to the value at fault; empty for the object itself.
    pub path: Vec<Step>,
    pub message: String,
}

/// One step of a [`PluginError`]'s path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Key(String),
    Index(usize),
}

impl PluginError {
    /// The path as dotted text after `prefix`, keys that are not plain words quoted, as the
    /// configuration's paths are: `plugins.proxy-rewrite.headers.set."X A"`.
    pub fn path_text(&self, prefix: &str) -> String {
        let mut text = prefix.to_owned();
        for step in &self.path {
            match step {
                Step::Key(k) => {
                    if !text.is_empty() {
                        text.push('.');
                    }
                    let bare = !k.is_empty()
                        && k.bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
                    if bare {
                        text.push_str(k);
                    } else {
                        let _ = write!(text, "{k:?}");
                    }
                }
                // Writing to a String cannot fail.
                Step::Index(i) => {
                    let _ = write!(text, "[{i}]");
                }
            }
        }
        text
    }

    fn under(mut self, step: Step) -> PluginError {
        self.path.insert(0, step);
        self
    }
}

impl fmt::Display for PluginError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.path_text("") {
            p if p.is_empty() => f.write_str(&self.message),
            p => write!(f, "{p}: {}", self.message),
        }
    }
}

impl std::error::Error for PluginError {}

fn fail<T>(message: impl Into<String>) -> Result<T, PluginError> {
    Err(PluginError {
        path: Vec::new(),
        message: message.into(),
    })
}

/// Puts an error under a key or an index of its parent.
trait Under<T> {
    fn key(self, key: &str) -> Result<T, PluginError>;
    fn index(self, i: usize) -> Result<T, PluginError>;
}

impl<T> Under<T> for Result<T, PluginError> {
    fn key(self, key: &str) -> Result<T, PluginError> {
        self.map_err(|e| e.under(Step::Key(key.to_owned())))
    }

    fn index(self, i: usize) -> Result<T, PluginError> {
        self.map_err(|e| e.under(Step::Index(i)))
    }
}

impl<T> Under<T> for Result<T, String> {
    fn key(self, key: &str) -> Result<T, PluginError> {
        self.or_else(fail).key(key)
    }

    fn index(self, i: usize) -> Result<T, PluginError> {
        self.or_else(fail).index(i)
    }
}

/// Reads a route's `plugins` object: `proxy-rewrite` or nothing. An empty object is nothing.
pub fn from_plugins(v: &Value) -> Result<Option<ProxyRewrite>, PluginError> {
    let plugins = object(v)?;
    let mut rule = None;
    for (name, conf) in plugins {
        if name != NAME {
            return fail(format!("plugins are not supported, except {NAME}")).key(name);
        }
        rule = Some(parse(conf).key(name)?);
    }
    Ok(rule)
}

/// Reads one `proxy-rewrite` object.
pub fn parse(v: &Value) -> Result<ProxyRewrite, PluginError> {
    let m = object(v)?;
    for (k, val) in m {
        match k.as_str() {
            "uri" | "regex_uri" | "host" | "method" | "headers" => {}
            "scheme" => {
                return fail(
                    "not supported: the upstream's scheme decides (APISIX deprecated this field)",
                )
                .key(k)
            }
            // APISIX writes its default, false, into the objects it stores.
            "use_real_request_uri_unsafe" => match val {
                Value::Bool(false) => {}
                _ => {
                    return fail(
                        "only false is supported: hearth matches and sends the path as the \
                         client sent it, percent-encoding intact",
                    )
                    .key(k)
                }
            },
            "_meta" => return fail("not supported by hearth").key(k),
            _ => return fail("unknown field").key(k),
        }
    }
    if !m.keys().any(|k| k != "use_real_request_uri_unsafe") {
        return fail("give at least one of uri, regex_uri, host, method and headers");
    }
    let regex_uri = match m.get("regex_uri") {
        None => Vec::new(),
        Some(v) => regex_uri(v).key("regex_uri")?,
    };
    let uri = match m.get("uri") {
        None => None,
        Some(v) => Some(uri(v).key("uri")?),
    };
    // Captures exist only when regex_uri applies, which it does not when uri is given.
    let groups = match (&uri, regex_uri.as_slice()) {
        (None, [_, ..]) => Captures::Upto(
            regex_uri
                .iter()
                .map(|r| r.regex.captures_len() - 1)
                .max()
                .unwrap_or(0),
        ),
        (Some(_), [_, ..]) => Captures::Overridden,
        (_, []) => Captures::None,
    };
    let host = match m.get("host") {
        None => None,
        Some(v) => Some(host(string(v).key("host")?).key("host")?),
    };
    let method = match m.get("method") {
        None => None,
        Some(v) => Some(method(string(v).key("method")?).key("method")?),
    };
    let headers = match m.get("headers") {
        None => Headers::default(),
        Some(v) => headers(v, groups).key("headers")?,
    };
    let keep_captures = regex_uri.iter().any(|r| r.replacement.has_captures())
        || headers.write.iter().any(|l| l.value.has_captures());
    Ok(ProxyRewrite {
        uri,
        regex_uri,
        host,
        method,
        headers,
        keep_captures,
    })
}

/// Which regex_uri captures a field value may read.
#[derive(Clone, Copy)]
enum Captures {
    /// No regex_uri.
    None,
    /// regex_uri is given but uri wins over it.
    Overridden,
    /// Up to this group number (the most any pattern has).
    Upto(usize),
}

fn uri(v: &Value) -> Result<Template, PluginError> {
    let text = string(v)?;
    if !text.starts_with('/') {
        return fail(format!("must start with \"/\", found {text:?}"));
    }
    if text.len() > MAX_URI_LEN {
        return fail(format!(
            "{} bytes is longer than APISIX allows ({MAX_URI_LEN})",
            text.len()
        ));
    }
    let t = template(text, Place::Target, Captures::None).or_else(fail)?;
    check_target_text(&t).or_else(fail)?;
    Ok(t)
}

fn regex_uri(v: &Value) -> Result<Vec<RegexUri>, PluginError> {
    let list = array(v)?;
    if list.is_empty() || list.len() % 2 != 0 {
        return fail(format!(
            "expected pairs of [pattern, replacement], such as [\"^/api/(.*)\", \"/$1\"]; found \
             {} elements",
            list.len()
        ));
    }
    let mut pairs = Vec::with_capacity(list.len() / 2);
    for (i, pair) in list.chunks(2).enumerate() {
        let pattern = string(&pair[0]).index(2 * i)?;
        let regex = regex::bytes::RegexBuilder::new(pattern)
            .size_limit(1 << 20)
            .build()
            .map_err(|e| format!("invalid regex: {e}"))
            .index(2 * i)?;
        let text = string(&pair[1]).index(2 * i + 1)?;
        let replacement = replacement(text, regex.captures_len() - 1)
            .and_then(|t| check_target_text(&t).map(|()| t))
            .index(2 * i + 1)?;
        pairs.push(RegexUri {
            pattern: pattern.to_owned(),
            regex,
            replacement,
        });
    }
    Ok(pairs)
}

/// `host`, by APISIX's pattern: letters, digits, `-` and `.`, then optionally `:port`.
fn host(text: &str) -> Result<String, String> {
    let (name, port) = match text.rsplit_once(':') {
        Some((name, port)) => (name, Some(port)),
        None => (text, None),
    };
    let name_ok = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    let port_ok = port.is_none_or(|p| {
        (1..=5).contains(&p.len())
            && p.bytes().all(|b| b.is_ascii_digit())
            && p.parse::<u32>().is_ok_and(|n| n <= 65535)
    });
    if name_ok && port_ok {
        Ok(text.to_owned())
    } else {
        Err(format!(
            "expected a host such as \"api.example.com\" or \"10.0.0.1:8080\" (letters, digits, \
             '-' and '.', then an optional port), found {text:?}"
        ))
    }
}

fn method(name: &str) -> Result<NewMethod, String> {
    if name == "HEAD" {
        let why = "HEAD is refused: its answer has no body, which a client that asked with \
                   another method would wait for";
        return Err(why.into());
    }
    if !METHODS.contains(&name) {
        return Err(format!(
            "expected one of {}, found {name:?}",
            METHODS.join(", ")
        ));
    }
    Ok(NewMethod {
        name: name.to_owned(),
        idempotent: matches!(name, "GET" | "PUT" | "DELETE" | "OPTIONS" | "TRACE"),
    })
}

/// `headers`, in either form.
fn headers(v: &Value, groups: Captures) -> Result<Headers, PluginError> {
    let m = object(v)?;
    if m.is_empty() {
        return fail("give add, set or remove, or fields to set as {\"X-Name\": \"value\"}");
    }
    // APISIX's test: one of the operations is an object or a list. A flat form can only hold
    // strings and numbers, so this cannot misread one.
    let structured = ["add", "set", "remove"]
        .iter()
        .any(|k| matches!(m.get(*k), Some(Value::Object(_) | Value::Array(_))));
    // Each name once, whatever the operation: (normalised name, operation) so far.
    let mut seen: Vec<(String, &'static str)> = Vec::new();
    let mut out = Headers::default();
    if !structured {
        for (name, value) in m {
            if let Value::Array(_) = value {
                return fail(format!(
                    "expected a string or a number, found {}; several values need the set form",
                    shown(value)
                ))
                .key(name);
            }
            set_field(&mut out, &mut seen, "set", name, value, groups).key(name)?;
        }
        return Ok(out);
    }
    for k in m.keys() {
        if !matches!(k.as_str(), "add" | "set" | "remove") {
            return fail(
                "unknown field: with add, set or remove, headers takes nothing else (the \
                 older flat form cannot be mixed in)",
            )
            .key(k);
        }
    }
    for op in ["add", "set"] {
        let Some(v) = m.get(op) else { continue };
        let fields = object(v).key(op)?;
        if fields.is_empty() {
            return fail("give at least one field").key(op);
        }
        for (name, value) in fields {
            set_field(&mut out, &mut seen, op, name, value, groups)
                .key(name)
                .key(op)?;
        }
    }
    if let Some(v) = m.get("remove") {
        let names = array(v).key("remove")?;
        if names.is_empty() {
            return fail("give at least one field name").key("remove");
        }
        for (i, n) in names.iter().enumerate() {
            let name = string(n).index(i).key("remove")?;
            let norm = field(name, &mut seen, "remove").index(i).key("remove")?;
            out.drop.push(norm);
        }
    }
    Ok(out)
}

/// One field of `add` or `set` (or of the flat form, which is `set`).
fn set_field(
    out: &mut Headers,
    seen: &mut Vec<(String, &'static str)>,
    op: &'static str,
    name: &str,
    value: &Value,
    groups: Captures,
) -> Result<(), PluginError> {
    let norm = field(name, seen, op)?;
    let values: Vec<(Option<usize>, &Value)> = match value {
        Value::Array(items) => {
            if items.is_empty() {
                return fail("give at least one value");
            }
            items
                .iter()
                .enumerate()
                .map(|(i, v)| (Some(i), v))
                .collect()
        }
        v => vec![(None, v)],
    };
    if op == "set" {
        out.drop.push(norm);
    }
    for (i, v) in values {
        let text = match v {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            other => {
                let e = fail(format!(
                    "expected a string or a number, found {}",
                    shown(other)
                ));
                return match i {
                    Some(i) => e.index(i),
                    None => e,
                };
            }
        };
        let value = field_value(&text, op, groups);
        let value = match i {
            Some(i) => value.index(i)?,
            None => value?,
        };
        // An empty value only removes (APISIX's set_header with "").
        if !value.pieces.is_empty() {
            out.write.push(Line {
                name: name.to_owned(),
                value,
            });
        }
    }
    Ok(())
}

/// Checks a field name an operation names and returns it normalised, refusing a name named
/// twice.
fn field(
    name: &str,
    seen: &mut Vec<(String, &'static str)>,
    op: &'static str,
) -> Result<String, PluginError> {
    if name.is_empty() {
        return fail("a field name cannot be empty");
    }
    if let Some(why) = edit_refusal(name.as_bytes()) {
        return fail(format!("{name} {why}"));
    }
    let norm = normalise(name.as_bytes());
    if let Some((_, other)) = seen.iter().find(|(n, _)| *n == norm) {
        let message = if *other == op {
            format!("{name} is named twice (field names ignore case, and '_' reads as '-')")
        } else {
            format!(
                "{name} is also in {other}; APISIX would let the later of add, set and remove \
                 undo the other, so name it once"
            )
        };
        return fail(message);
    }
    seen.push((norm.clone(), op));
    Ok(norm)
}

fn field_value(text: &str, op: &str, groups: Captures) -> Result<Template, PluginError> {
    // RFC 9110 §5.5: a value may hold HTAB and SP, never another control character.
    if let Some(c) = text
        .chars()
        .find(|&c| (c.is_ascii_control() && c != '\t') || c == '\u{7f}')
    {
        return fail(format!(
            "{c:?} cannot be sent in a field value (RFC 9110 §5.5)"
        ));
    }
    if op == "add" && text.is_empty() {
        return fail("an empty value adds nothing; to drop the field use remove");
    }
    template(text, Place::Field, groups).or_else(fail)
}

/// A field name as compared: lowercase, with `_` read as `-`.
fn normalise(name: &[u8]) -> String {
    name.iter()
        .map(|&b| {
            if b == b'_' {
                '-'
            } else {
                char::from(b.to_ascii_lowercase())
            }
        })
        .collect()
}

/// Where a template's text goes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Place {
    Target,
    Field,
}

/// Parses a `uri` or field value: `$NAME` (letters, digits, `_` and `.`) or `${NAME}` is a
/// variable, all digits a capture; a `$` followed by anything else, or after a backslash, is
/// itself (as APISIX's resolver leaves it).
fn template(text: &str, place: Place, groups: Captures) -> Result<Template, String> {
    let mut t = Template::default();
    let b = text.as_bytes();
    let mut literal = String::new();
    let mut i = 0;
    while i < b.len() {
        let escaped = i > 0 && b[i - 1] == b'\\';
        if b[i] != b'$' || escaped {
            // Whole characters, so non-ASCII text survives to be refused or kept as it is.
            let len = utf8_len(b[i]);
            literal.push_str(&text[i..i + len]);
            i += len;
            continue;
        }
        let (name, next) = if b.get(i + 1) == Some(&b'{') {
            let Some(close) = text[i + 2..].find('}') else {
                return Err(format!("{text:?}: \"${{\" without a closing \"}}\""));
            };
            (text[i + 2..i + 2 + close].trim(), i + 3 + close)
        } else {
            let len = b[i + 1..]
                .iter()
                .take_while(|&&c| c.is_ascii_alphanumeric() || c == b'_' || c == b'.')
                .count();
            if len == 0 {
                literal.push('$');
                i += 1;
                continue;
            }
            (&text[i + 1..i + 1 + len], i + 1 + len)
        };
        let piece = variable(name, place, groups)?;
        if !literal.is_empty() {
            t.pieces.push(Piece::Text(std::mem::take(&mut literal)));
        }
        t.pieces.push(piece);
        i = next;
    }
    if !literal.is_empty() {
        t.pieces.push(Piece::Text(literal));
    }
    Ok(t)
}

fn utf8_len(first: u8) -> usize {
    match first {
        0xf0.. => 4,
        0xe0.. => 3,
        0xc0.. => 2,
        _ => 1,
    }
}

/// One variable of a template, by name.
fn variable(name: &str, place: Place, groups: Captures) -> Result<Piece, String> {
    if !name.is_empty() && name.bytes().all(|b| b.is_ascii_digit()) {
        let n: usize = name.parse().unwrap_or(usize::MAX);
        return match (place, groups) {
            (Place::Target, _) => Err(format!(
                "${name}: captures come from regex_uri and are empty in uri"
            )),
            (Place::Field, Captures::None) => Err(format!(
                "${name}: captures come from regex_uri, which this plugin does not have"
            )),
            (Place::Field, Captures::Overridden) => Err(format!(
                "${name}: captures come from regex_uri, which uri overrides here"
            )),
            (Place::Field, Captures::Upto(max)) if n > max => Err(format!(
                "${name}: no regex_uri pattern has {n} groups (the most is {max})"
            )),
            (Place::Field, Captures::Upto(_)) => Ok(Piece::Capture(n)),
        };
    }
    if name.contains("??") {
        return Err(format!(
            "${{{name}}}: default values (\"??\") are not supported"
        ));
    }
    Ok(match name {
        "request_uri" => Piece::RequestUri,
        "args" | "query_string" => Piece::Args,
        "scheme" => Piece::Scheme,
        _ => Piece::Var(parse_var(name).map_err(|_| {
            let hint = if name.contains('.') {
                " (a name runs on through '.': write ${uri}.html to end it before)"
            } else {
                ""
            };
            format!(
                "${name}: unknown variable{hint}; hearth knows uri, host, request_method, \
                 remote_addr, request_uri, args, scheme, arg_NAME, cookie_NAME and http_NAME"
            )
        })?),
    })
}

/// Parses a regex_uri replacement as `ngx.re.sub` reads it: `$N` and `${N}` are captures, `$$`
/// is a dollar, and any other `$` is an error.
fn replacement(text: &str, groups: usize) -> Result<Template, String> {
    let mut t = Template::default();
    let mut literal = String::new();
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        literal.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let (digits, used) = if let Some(inner) = after.strip_prefix('{') {
            match inner.find('}') {
                Some(close) => (&inner[..close], close + 2),
                None => ("", 0),
            }
        } else if let Some(more) = after.strip_prefix('$') {
            literal.push('$');
            rest = more;
            continue;
        } else {
            let n = after.bytes().take_while(u8::is_ascii_digit).count();
            (&after[..n], n)
        };
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!(
                "{text:?}: in a replacement, \"$\" starts a capture ($1 or ${{1}}) or writes a \
                 dollar ($$)"
            ));
        }
        let n: usize = digits.parse().unwrap_or(usize::MAX);
        if n > groups {
            return Err(format!(
                "${digits}: the pattern has {groups} capture group{}",
                if groups == 1 { "" } else { "s" }
            ));
        }
        if !literal.is_empty() {
            t.pieces.push(Piece::Text(std::mem::take(&mut literal)));
        }
        t.pieces.push(Piece::Capture(n));
        rest = &after[used..];
    }
    literal.push_str(rest);
    if !literal.is_empty() {
        t.pieces.push(Piece::Text(literal));
    }
    Ok(t)
}

/// The literal text of a target template must be what a request target may hold as it is.
fn check_target_text(t: &Template) -> Result<(), String> {
    for piece in &t.pieces {
        let Piece::Text(text) = piece else { continue };
        if text.bytes().any(|b| !b.is_ascii_graphic()) {
            return Err(format!(
                "{text:?} holds a space, a control or a non-ASCII character; percent-encode it"
            ));
        }
        if text.contains('#') {
            return Err(format!(
                "{text:?}: a fragment (\"#\") is never sent in a request target"
            ));
        }
    }
    Ok(())
}

impl Template {
    fn has_captures(&self) -> bool {
        self.pieces.iter().any(|p| matches!(p, Piece::Capture(_)))
    }
}

impl ProxyRewrite {
    /// The edit for one request (`req`, arrived over `scheme`).
    pub fn editor<'r, 'a>(&'r self, req: &Request<'a>, scheme: &'static str) -> Editor<'r, 'a> {
        Editor {
            rule: self,
            req: *req,
            vars: None,
            scheme,
            captures: None,
        }
    }

    /// Writes the head sent upstream for `head` (parsed from `src` with fields `headers`, from a
    /// client at `remote`) with this rewrite applied, as [`request_head_with`] does. Kept out of
    /// line, so that the caller's path for routes without a rewrite stays as short as it was.
    #[inline(never)]
    pub fn write_head(
        &self,
        src: &[u8],
        head: &RequestHead,
        headers: &[Header],
        fwd: &Forward,
        remote: IpAddr,
        out: &mut Vec<u8>,
    ) -> Option<std::ops::Range<usize>> {
        let req = Request {
            method: head.method_span.of(src),
            target: head.target.of(src),
            host: head.host.map(|s| s.of(src)),
            remote,
            headers,
            src,
        };
        let mut edit = self.editor(&req, fwd.proto);
        request_head_with(src, head, headers, fwd, &mut edit, out)
    }

    /// Whether the request as sent upstream is idempotent, for replays: by the method this
    /// sends, or the client's (`client`) when it keeps that.
    pub fn idempotent(&self, client: Method) -> bool {
        match &self.method {
            Some(m) if client != Method::Head => m.idempotent,
            _ => client.is_idempotent(),
        }
    }
}

/// A [`ProxyRewrite`] applied to one request.
pub struct Editor<'r, 'a> {
    rule: &'r ProxyRewrite,
    req: Request<'a>,
    /// The request's variables, read only when a template or regex_uri needs them: filling them
    /// in (the host lowercased into a buffer) costs more than a field with a fixed value.
    vars: Option<Vars<'a>>,
    scheme: &'static str,
    /// The captures of the regex_uri pattern that matched, when something reads them.
    captures: Option<regex::bytes::CaptureLocations>,
}

impl<'a> Editor<'_, 'a> {
    fn vars(&mut self) -> &mut Vars<'a> {
        let req = &self.req;
        self.vars.get_or_insert_with(|| Vars::new(req))
    }

    /// Writes the path regex_uri makes of the client's; false when no pattern matches.
    fn substitute(&mut self, out: &mut Vec<u8>) -> bool {
        let rule = self.rule;
        let path = self.vars().path();
        for pair in &rule.regex_uri {
            let (start, end) = if rule.keep_captures {
                let mut locs = pair.regex.capture_locations();
                if pair.regex.captures_read(&mut locs, path).is_none() {
                    continue;
                }
                let whole = locs.get(0);
                self.captures = Some(locs);
                // A match has a group 0.
                whole.unwrap_or((0, 0))
            } else {
                match pair.regex.find(path) {
                    Some(m) => (m.start(), m.end()),
                    None => continue,
                }
            };
            out.extend_from_slice(&path[..start]);
            self.render(&pair.replacement, Place::Target, out);
            out.extend_from_slice(&path[end..]);
            return true;
        }
        false
    }

    /// Appends `t` for this request; values from the request are made safe for `place`.
    fn render(&mut self, t: &Template, place: Place, out: &mut Vec<u8>) {
        for piece in &t.pieces {
            let value: &[u8] = match piece {
                Piece::Text(s) => {
                    out.extend_from_slice(s.as_bytes());
                    continue;
                }
                Piece::Var(v) => self.vars().get(v),
                Piece::RequestUri => self.req.target,
                Piece::Args => self.vars().query(),
                Piece::Scheme => self.scheme.as_bytes(),
                Piece::Capture(n) => {
                    let path = self.vars().path();
                    match self.captures.as_ref().and_then(|c| c.get(*n)) {
                        Some((s, e)) => &path[s..e],
                        None => b"",
                    }
                }
            };
            match place {
                Place::Target => push_in_target(out, value),
                Place::Field => push_in_field(out, value),
            }
        }
    }
}

impl Edit for Editor<'_, '_> {
    fn method(&self) -> Option<&[u8]> {
        match &self.rule.method {
            Some(m) if self.req.method != b"HEAD" => Some(m.name.as_bytes()),
            _ => None,
        }
    }

    fn target(&mut self, out: &mut Vec<u8>) -> bool {
        let start = out.len();
        let rule = self.rule;
        if let Some(uri) = &rule.uri {
            self.render(uri, Place::Target, out);
        } else if rule.regex_uri.is_empty() || !self.substitute(out) {
            return false;
        }
        if out.get(start) != Some(&b'/') {
            out.insert(start, b'/');
        }
        // The client's query goes on, even an empty one, as nginx's `$is_args$args` would.
        let has_query = self
            .req
            .target
            .iter()
            .take_while(|&&b| b != b'#')
            .any(|&b| b == b'?');
        if has_query {
            let sep = if out[start..].contains(&b'?') {
                b'&'
            } else {
                b'?'
            };
            out.push(sep);
            let query = self.vars().query();
            out.extend_from_slice(query);
        }
        true
    }

    fn drops(&self, name: &[u8]) -> bool {
        self.rule.headers.drop.iter().any(|d| {
            d.len() == name.len()
                && d.bytes().zip(name).all(|(d, &n)| {
                    d == if n == b'_' {
                        b'-'
                    } else {
                        n.to_ascii_lowercase()
                    }
                })
        })
    }

    fn fields(&mut self, out: &mut Vec<u8>) {
        let rule = self.rule;
        for line in &rule.headers.write {
            let start = out.len();
            out.extend_from_slice(line.name.as_bytes());
            out.extend_from_slice(b": ");
            let value = out.len();
            self.render(&line.value, Place::Field, out);
            if out.len() == value {
                out.truncate(start);
            } else {
                out.extend_from_slice(b"\r\n");
            }
        }
    }
}

/// Appends a value into a request target, percent-encoding what would end the target or the
/// path there (controls, space, non-ASCII, `?` and `#`). `%` is kept: values are as sent, so
/// already encoded.
fn push_in_target(out: &mut Vec<u8>, value: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in value {
        if b.is_ascii_graphic() && b != b'?' && b != b'#' {
            out.push(b);
        } else {
            out.extend_from_slice(&[b'%', HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]);
        }
    }
}

/// Appends a value into a field line. Values come from a head the parser accepted, so hold no
/// CR, LF or NUL; those are skipped anyway, so no value can ever break the line.
fn push_in_field(out: &mut Vec<u8>, value: &[u8]) {
    if value.iter().all(|&b| b >= b' ' || b == b'\t') {
        out.extend_from_slice(value);
    } else {
        out.extend(value.iter().filter(|&&b| b >= b' ' || b == b'\t'));
    }
}

fn object(v: &Value) -> Result<&Map<String, Value>, PluginError> {
    match v {
        Value::Object(m) => Ok(m),
        other => fail(format!("expected an object, found {}", shown(other))),
    }
}

fn array(v: &Value) -> Result<&Vec<Value>, PluginError> {
    match v {
        Value::Array(a) => Ok(a),
        other => fail(format!("expected a list, found {}", shown(other))),
    }
}

fn string(v: &Value) -> Result<&str, PluginError> {
    match v {
        Value::String(s) => Ok(s),
        other => fail(format!("expected a string, found {}", shown(other))),
    }
}

/// A value as JSON, cut short: error messages quote what was sent without echoing a whole
/// object back. The APISIX route and upstream reader uses it too.
pub(crate) fn shown(v: &Value) -> String {
    const MAX: usize = 60;
    let text = v.to_string();
    match text.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::head::{parse_request, Limits};
    use crate::http::rewrite::{request_head, Upgrades};
    use serde_json::json;

    fn rule(conf: Value) -> ProxyRewrite {
        from_plugins(&json!({ NAME: conf }))
            .unwrap_or_else(|e| panic!("{conf}: {e}"))
            .expect("a proxy-rewrite")
    }

    /// The head hearth sends upstream for `input` under `rule`, as the relay writes it (the
    /// rule's host stands in for the client's, as under pass_host "pass").
    fn sent(rule: &ProxyRewrite, input: &str) -> String {
        let src = input.as_bytes();
        let mut headers = Vec::new();
        let head = parse_request(src, &Limits::default(), &mut headers)
            .expect("a valid head")
            .expect("a whole head");
        let fwd = Forward {
            client_ip: IpAddr::from([192, 0, 2, 1]),
            proto: "http",
            host: rule.host.as_deref().map(str::as_bytes),
            upgrades: Upgrades::NONE,
        };
        let req = Request {
            method: head.method_span.of(src),
            target: head.target.of(src),
            host: head.host.map(|s| s.of(src)),
            remote: IpAddr::from([192, 0, 2, 1]),
            headers: &headers,
            src,
        };
        let mut out = Vec::new();
        request_head_with(
            src,
            &head,
            &headers,
            &fwd,
            &mut rule.editor(&req, "http"),
            &mut out,
        );
        String::from_utf8(out).expect("ASCII")
    }

    /// What every head below ends with: hearth's own forwarding fields for client 192.0.2.1.
    const FORWARDED: &str = "X-Forwarded-For: 192.0.2.1\r\nX-Forwarded-Proto: http\r\n";

    #[test]
    fn targets() {
        #[rustfmt::skip]
        let table: &[(Value, &str, &str)] = &[
            (json!({"uri": "/new"}), "GET /old?a=1&b HTTP/1.1", "GET /new?a=1&b HTTP/1.1"),
            (json!({"uri": "/new"}), "GET /old HTTP/1.1", "GET /new HTTP/1.1"),
            (json!({"uri": "/new"}), "GET /old? HTTP/1.1", "GET /new? HTTP/1.1"),
            (json!({"uri": "/n?x=1"}), "GET /o?a=2 HTTP/1.1", "GET /n?x=1&a=2 HTTP/1.1"),
            (json!({"uri": "/n"}), "GET http://h.test/p?q HTTP/1.1", "GET /n?q HTTP/1.1"),
            (
                json!({"uri": "/u/$arg_id/${http_x_user}/$remote_addr$uri"}),
                "GET /p/q?id=7 HTTP/1.1",
                "GET /u/7/a%20b%3Fc%23%C3%A9/192.0.2.1/p/q?id=7 HTTP/1.1",
            ),
            (
                json!({"uri": "/x/$request_method/$host/$scheme/$args/$request_uri"}),
                "GET /p?k=v HTTP/1.1",
                "GET /x/GET/h.test/http/k=v//p%3Fk=v?k=v HTTP/1.1",
            ),
            (json!({"uri": "/$-and-\\$uri"}), "GET /p HTTP/1.1", "GET /$-and-\\$uri HTTP/1.1"),
            (json!({"uri": "/m/$arg_nope"}), "GET /p HTTP/1.1", "GET /m/ HTTP/1.1"),
            (
                json!({"regex_uri": ["^/api/(.*)/(.*)", "/$2/$1"]}),
                "GET /api/a/b?x HTTP/1.1",
                "GET /b/a?x HTTP/1.1",
            ),
            (json!({"regex_uri": ["b", "X"]}), "GET /abcb HTTP/1.1", "GET /aXcb HTTP/1.1"),
            (
                json!({"regex_uri": ["^/one/(.*)", "/1/$1", "^/two/(.*)", "/2/${1}0"]}),
                "GET /two/x HTTP/1.1",
                "GET /2/x0 HTTP/1.1",
            ),
            (json!({"regex_uri": ["^/api/", "/"]}), "GET /other?q HTTP/1.1", "GET /other?q HTTP/1.1"),
            (json!({"regex_uri": ["^/api/(.*)", "$1"]}), "GET /api/x HTTP/1.1", "GET /x HTTP/1.1"),
            (json!({"regex_uri": ["^/p", "/$$/$0"]}), "GET /p HTTP/1.1", "GET /$//p HTTP/1.1"),
            (json!({"regex_uri": ["^/p", "/q?r=1"]}), "GET /p?s=2 HTTP/1.1", "GET /q?r=1&s=2 HTTP/1.1"),
            (
                json!({"uri": "/u", "regex_uri": ["^/p", "/r"]}),
                "GET /p HTTP/1.1",
                "GET /u HTTP/1.1",
            ),
        ];
        for (conf, line, want) in table {
            let r = rule(conf.clone());
            let input = format!("{line}\r\nHost: h.test\r\nX-User: a b?c#é\r\n\r\n");
            let got = sent(&r, &input);
            let first = got.split("\r\n").next().unwrap_or_default();
            assert_eq!(first, *want, "{conf} on {line}");
        }
    }

    #[test]
    fn methods() {
        let post = rule(json!({"method": "POST"}));
        assert_eq!(
            sent(&post, "GET /p HTTP/1.1\r\nHost: h\r\n\r\n"),
            format!("POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n{FORWARDED}X-Forwarded-Host: h\r\n\r\n"),
            "a method with content and no body says so"
        );
        let put = rule(json!({"method": "PUT"}));
        assert_eq!(
            sent(&put, "POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\n"),
            format!("PUT /p HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n{FORWARDED}X-Forwarded-Host: h\r\n\r\n"),
        );
        assert_eq!(
            sent(&put, "HEAD /p HTTP/1.1\r\nHost: h\r\n\r\n"),
            format!("HEAD /p HTTP/1.1\r\nHost: h\r\n{FORWARDED}X-Forwarded-Host: h\r\n\r\n"),
            "HEAD stays HEAD: its answer has no body"
        );
        let get = rule(json!({"method": "GET"}));
        assert!(sent(&get, "POST /p HTTP/1.1\r\nHost: h\r\n\r\n")
            .starts_with("GET /p HTTP/1.1\r\nHost: h\r\nX-Forwarded-For"));
        // Replays follow the method sent.
        assert!(!post.idempotent(Method::Get));
        assert!(post.idempotent(Method::Head), "HEAD is sent as HEAD");
        assert!(get.idempotent(Method::Post));
        assert!(!rule(json!({"method": "LOCK"})).idempotent(Method::Put));
        assert!(rule(json!({"uri": "/x"})).idempotent(Method::Get));
        assert!(!rule(json!({"uri": "/x"})).idempotent(Method::Post));
    }

    #[test]
    fn host() {
        let r = rule(json!({"host": "backend.internal:8080"}));
        assert_eq!(
            sent(&r, "GET / HTTP/1.1\r\nHost: public.test\r\n\r\n"),
            format!("GET / HTTP/1.1\r\nHost: backend.internal:8080\r\n{FORWARDED}X-Forwarded-Host: public.test\r\n\r\n"),
        );
    }

    #[test]
    fn fields() {
        let client = "GET /p/q?id=7 HTTP/1.1\r\nHost: h\r\nX-A: 1\r\nx_a: 2\r\nX-B: keep\r\nCookie: c=1\r\nUser-Agent: t\r\nX-Forwarded-For: 10.0.0.9\r\n\r\n";
        #[rustfmt::skip]
        let table: &[(&str, Value, &str)] = &[
            (
                "set replaces the client's fields, underscore spellings too",
                json!({"set": {"X-A": "new"}}),
                "GET /p/q?id=7 HTTP/1.1\r\nHost: h\r\nX-B: keep\r\nCookie: c=1\r\nUser-Agent: t\r\nX-A: new\r\nX-Forwarded-For: 10.0.0.9, 192.0.2.1\r\nX-Forwarded-Proto: http\r\nX-Forwarded-Host: h\r\n\r\n",
            ),
            (
                "add keeps them",
                json!({"add": {"X-A": "3", "X-C": 4}}),
                "GET /p/q?id=7 HTTP/1.1\r\nHost: h\r\nX-A: 1\r\nx_a: 2\r\nX-B: keep\r\nCookie: c=1\r\nUser-Agent: t\r\nX-A: 3\r\nX-C: 4\r\nX-Forwarded-For: 10.0.0.9, 192.0.2.1\r\nX-Forwarded-Proto: http\r\nX-Forwarded-Host: h\r\n\r\n",
            ),
            (
                "remove drops them, in any case",
                json!({"remove": ["cookie", "USER-AGENT", "x-a"]}),
                "GET /p/q?id=7 HTTP/1.1\r\nHost: h\r\nX-B: keep\r\nX-Forwarded-For: 10.0.0.9, 192.0.2.1\r\nX-Forwarded-Proto: http\r\nX-Forwarded-Host: h\r\n\r\n",
            ),
            (
                "the flat form sets, and an empty value removes",
                json!({"X-A": "flat", "X-B": ""}),
                "GET /p/q?id=7 HTTP/1.1\r\nHost: h\r\nCookie: c=1\r\nUser-Agent: t\r\nX-A: flat\r\nX-Forwarded-For: 10.0.0.9, 192.0.2.1\r\nX-Forwarded-Proto: http\r\nX-Forwarded-Host: h\r\n\r\n",
            ),
            (
                "several values are several lines",
                json!({"set": {"X-B": ["1", 2]}, "add": {"X-D": ["a", "b"]}}),
                "GET /p/q?id=7 HTTP/1.1\r\nHost: h\r\nX-A: 1\r\nx_a: 2\r\nCookie: c=1\r\nUser-Agent: t\r\nX-D: a\r\nX-D: b\r\nX-B: 1\r\nX-B: 2\r\nX-Forwarded-For: 10.0.0.9, 192.0.2.1\r\nX-Forwarded-Proto: http\r\nX-Forwarded-Host: h\r\n\r\n",
            ),
            (
                "hearth's own forwarding fields can be set, removed or added to",
                json!({"set": {"X-Forwarded-Proto": "https"}, "remove": ["X-Forwarded-For", "X-Forwarded-Host"], "add": {"Via": "1.1 hearth"}}),
                "GET /p/q?id=7 HTTP/1.1\r\nHost: h\r\nX-A: 1\r\nx_a: 2\r\nX-B: keep\r\nCookie: c=1\r\nUser-Agent: t\r\nVia: 1.1 hearth\r\nX-Forwarded-Proto: https\r\n\r\n",
            ),
            (
                "values read variables; one that comes out empty writes no line",
                json!({"set": {"X-Id": "id=$arg_id", "X-Where": "${uri} from $remote_addr", "X-None": "$arg_none"}}),
                "GET /p/q?id=7 HTTP/1.1\r\nHost: h\r\nX-A: 1\r\nx_a: 2\r\nX-B: keep\r\nCookie: c=1\r\nUser-Agent: t\r\nX-Id: id=7\r\nX-Where: /p/q from 192.0.2.1\r\nX-Forwarded-For: 10.0.0.9, 192.0.2.1\r\nX-Forwarded-Proto: http\r\nX-Forwarded-Host: h\r\n\r\n",
            ),
        ];
        for (name, headers, want) in table {
            let r = rule(json!({ "headers": headers }));
            assert_eq!(sent(&r, client), *want, "{name}");
        }
    }

    #[test]
    fn captures_reach_field_values() {
        let r = rule(json!({
            "regex_uri": ["^/api/v(\\d+)/(.*)", "/$2", "^/old/(.*)", "/new/$1"],
            "headers": {"set": {"X-Version": "v$1", "X-Whole": "$0"}}
        }));
        let got = sent(&r, "GET /api/v2/users?x HTTP/1.1\r\nHost: h\r\n\r\n");
        assert!(
            got.starts_with(
                "GET /users?x HTTP/1.1\r\nHost: h\r\nX-Version: v2\r\nX-Whole: /api/v2/users\r\n"
            ),
            "{got}"
        );
        // Another pair matched: a group it lacks reads as empty.
        let got = sent(&r, "GET /old/a HTTP/1.1\r\nHost: h\r\n\r\n");
        assert!(
            got.starts_with(
                "GET /new/a HTTP/1.1\r\nHost: h\r\nX-Version: va\r\nX-Whole: /old/a\r\n"
            ),
            "{got}"
        );
        // No pair matched: the path goes as it came, and captures are empty.
        let got = sent(&r, "GET /else HTTP/1.1\r\nHost: h\r\n\r\n");
        assert!(
            got.starts_with("GET /else HTTP/1.1\r\nHost: h\r\nX-Version: v\r\nX-Forwarded-For"),
            "{got}"
        );
    }

    #[test]
    fn no_edit_is_the_plain_head() {
        let input = b"POST /p?q HTTP/1.1\r\nHost: h\r\nX-A: 1\r\nContent-Length: 2\r\n\r\n";
        let mut headers = Vec::new();
        let head = parse_request(input, &Limits::default(), &mut headers)
            .unwrap()
            .unwrap();
        let fwd = Forward {
            client_ip: IpAddr::from([192, 0, 2, 1]),
            proto: "http",
            host: None,
            upgrades: Upgrades::NONE,
        };
        let (mut plain, mut edited) = (Vec::new(), Vec::new());
        request_head(input, &head, &headers, &fwd, &mut plain);
        let r = rule(json!({"headers": {"remove": ["X-Other"]}}));
        let req = Request {
            method: b"POST",
            target: b"/p?q",
            host: Some(b"h"),
            remote: fwd.client_ip,
            headers: &headers,
            src: input,
        };
        request_head_with(
            input,
            &head,
            &headers,
            &fwd,
            &mut r.editor(&req, "http"),
            &mut edited,
        );
        assert_eq!(
            plain, edited,
            "an edit that touches nothing present changes nothing"
        );
    }

    #[test]
    fn refusals_name_the_field() {
        let pr = |conf: Value| json!({ NAME: conf });
        #[rustfmt::skip]
        let table: Vec<(Value, &str, &str)> = vec![
            (json!({"limit-count": {}}), "limit-count", "plugins are not supported, except proxy-rewrite"),
            (json!([]), "", "expected an object"),
            (pr(json!("x")), "proxy-rewrite", "expected an object"),
            (pr(json!({})), "proxy-rewrite", "at least one of uri"),
            (pr(json!({"use_real_request_uri_unsafe": false})), "proxy-rewrite", "at least one of uri"),
            (pr(json!({"uri": "/a", "use_real_request_uri_unsafe": true})), "proxy-rewrite.use_real_request_uri_unsafe", "only false"),
            (pr(json!({"scheme": "https"})), "proxy-rewrite.scheme", "upstream's scheme"),
            (pr(json!({"_meta": {"disable": true}})), "proxy-rewrite._meta", "not supported"),
            (pr(json!({"url": "/a"})), "proxy-rewrite.url", "unknown field"),
            (pr(json!({"uri": 5})), "proxy-rewrite.uri", "expected a string"),
            (pr(json!({"uri": "a"})), "proxy-rewrite.uri", "must start with \"/\""),
            (pr(json!({"uri": "/a b"})), "proxy-rewrite.uri", "percent-encode"),
            (pr(json!({"uri": "/é"})), "proxy-rewrite.uri", "percent-encode"),
            (pr(json!({"uri": "/a#b"})), "proxy-rewrite.uri", "fragment"),
            (pr(json!({"uri": format!("/{}", "a".repeat(MAX_URI_LEN))})), "proxy-rewrite.uri", "longer"),
            (pr(json!({"uri": "/$1"})), "proxy-rewrite.uri", "empty in uri"),
            (pr(json!({"uri": "/$balancer_ip"})), "proxy-rewrite.uri", "unknown variable"),
            (pr(json!({"uri": "/$uri.html"})), "proxy-rewrite.uri", "${uri}.html"),
            (pr(json!({"uri": "/${arg_a ?? x}"})), "proxy-rewrite.uri", "default values"),
            (pr(json!({"uri": "/${uri"})), "proxy-rewrite.uri", "closing"),
            (pr(json!({"regex_uri": "^/a"})), "proxy-rewrite.regex_uri", "expected a list"),
            (pr(json!({"regex_uri": []})), "proxy-rewrite.regex_uri", "pairs"),
            (pr(json!({"regex_uri": ["^/a", "/b", "^/c"]})), "proxy-rewrite.regex_uri", "found 3 elements"),
            (pr(json!({"regex_uri": ["(", "/"]})), "proxy-rewrite.regex_uri[0]", "invalid regex"),
            (pr(json!({"regex_uri": ["(?<=a)b", "/"]})), "proxy-rewrite.regex_uri[0]", "invalid regex"),
            (pr(json!({"regex_uri": ["^/a", "/b", 1, "/c"]})), "proxy-rewrite.regex_uri[2]", "expected a string"),
            (pr(json!({"regex_uri": ["^/(a)", "/$2"]})), "proxy-rewrite.regex_uri[1]", "1 capture group"),
            (pr(json!({"regex_uri": ["^/a", "/$x"]})), "proxy-rewrite.regex_uri[1]", "starts a capture"),
            (pr(json!({"regex_uri": ["^/a", "/${x}"]})), "proxy-rewrite.regex_uri[1]", "starts a capture"),
            (pr(json!({"regex_uri": ["^/a", "/b c"]})), "proxy-rewrite.regex_uri[1]", "percent-encode"),
            (pr(json!({"host": "a b"})), "proxy-rewrite.host", "expected a host"),
            (pr(json!({"host": ""})), "proxy-rewrite.host", "expected a host"),
            (pr(json!({"host": "a:99999"})), "proxy-rewrite.host", "expected a host"),
            (pr(json!({"host": "a:"})), "proxy-rewrite.host", "expected a host"),
            (pr(json!({"host": "[::1]:80"})), "proxy-rewrite.host", "expected a host"),
            (pr(json!({"host": "a\r\nX: 1"})), "proxy-rewrite.host", "expected a host"),
            (pr(json!({"method": "HEAD"})), "proxy-rewrite.method", "HEAD is refused"),
            (pr(json!({"method": "get"})), "proxy-rewrite.method", "expected one of"),
            (pr(json!({"method": "FETCH"})), "proxy-rewrite.method", "expected one of"),
            (pr(json!({"method": "CONNECT"})), "proxy-rewrite.method", "expected one of"),
            (pr(json!({"headers": []})), "proxy-rewrite.headers", "expected an object"),
            (pr(json!({"headers": {}})), "proxy-rewrite.headers", "give add, set or remove"),
            (pr(json!({"headers": {"set": {"Host": "x"}}})), "proxy-rewrite.headers.set.Host", "set with `host`"),
            (pr(json!({"headers": {"Host": "x"}})), "proxy-rewrite.headers.Host", "set with `host`"),
            (pr(json!({"headers": {"set": {"Content-Length": "1"}}})), "proxy-rewrite.headers.set.Content-Length", "frames the body"),
            (pr(json!({"headers": {"add": {"transfer-encoding": "x"}}})), "proxy-rewrite.headers.add.transfer-encoding", "frames the body"),
            (pr(json!({"headers": {"remove": ["X-A", "Connection"]}})), "proxy-rewrite.headers.remove[1]", "hop-by-hop"),
            (pr(json!({"headers": {"set": {"Upgrade": "h2c"}}})), "proxy-rewrite.headers.set.Upgrade", "hop-by-hop"),
            (pr(json!({"headers": {"TE": "trailers"}})), "proxy-rewrite.headers.TE", "hop-by-hop"),
            (pr(json!({"headers": {"set": {"Idempotency-Key": "k"}}})), "proxy-rewrite.headers.set.Idempotency-Key", "replay"),
            (pr(json!({"headers": {"set": {"X_Forwarded_For": "1"}}})), "proxy-rewrite.headers.set.X_Forwarded_For", "underscore"),
            (pr(json!({"headers": {"remove": ["Content_Length"]}})), "proxy-rewrite.headers.remove[0]", "underscore"),
            (pr(json!({"headers": {"set": {"X A": "1"}}})), "proxy-rewrite.headers.set.\"X A\"", "not a field name"),
            (pr(json!({"headers": {"set": {"X:A": "1"}}})), "proxy-rewrite.headers.set.\"X:A\"", "not a field name"),
            (pr(json!({"headers": {"set": {"": "1"}}})), "proxy-rewrite.headers.set.\"\"", "cannot be empty"),
            (pr(json!({"headers": {"set": {"X-A": "a\r\nX-B: b"}}})), "proxy-rewrite.headers.set.X-A", "'\\r' cannot be sent"),
            (pr(json!({"headers": {"X-A": "a\u{0}"}})), "proxy-rewrite.headers.X-A", "cannot be sent"),
            (pr(json!({"headers": {"add": {"X-A": ""}}})), "proxy-rewrite.headers.add.X-A", "adds nothing"),
            (pr(json!({"headers": {"add": {"X-A": "1"}, "set": {"x-a": "2"}}})), "proxy-rewrite.headers.set.x-a", "also in add"),
            (pr(json!({"headers": {"set": {"X-A": "1"}, "remove": ["X_A"]}})), "proxy-rewrite.headers.remove[0]", "also in set"),
            (pr(json!({"headers": {"set": {"X-A": "1", "x_a": "2"}}})), "proxy-rewrite.headers.set.x_a", "named twice"),
            (pr(json!({"headers": {"set": {"X-A": true}}})), "proxy-rewrite.headers.set.X-A", "a string or a number"),
            (pr(json!({"headers": {"set": {"X-A": []}}})), "proxy-rewrite.headers.set.X-A", "at least one value"),
            (pr(json!({"headers": {"set": {"X-A": ["1", {}]}}})), "proxy-rewrite.headers.set.X-A[1]", "a string or a number"),
            (pr(json!({"headers": {"set": {}}})), "proxy-rewrite.headers.set", "at least one field"),
            (pr(json!({"headers": {"remove": []}})), "proxy-rewrite.headers.remove", "at least one field name"),
            (pr(json!({"headers": {"remove": [1]}})), "proxy-rewrite.headers.remove[0]", "expected a string"),
            (pr(json!({"headers": {"set": {"X-A": "1"}, "X-B": "2"}})), "proxy-rewrite.headers.X-B", "cannot be mixed in"),
            (pr(json!({"headers": {"X-A": ["1"]}})), "proxy-rewrite.headers.X-A", "set form"),
            (pr(json!({"headers": {"X-A": "$1"}})), "proxy-rewrite.headers.X-A", "does not have"),
            (pr(json!({"uri": "/u", "regex_uri": ["^/(a)", "/"], "headers": {"X-A": "$1"}})), "proxy-rewrite.headers.X-A", "uri overrides"),
            (pr(json!({"regex_uri": ["^/(a)", "/"], "headers": {"set": {"X-A": "${3}"}}})), "proxy-rewrite.headers.set.X-A", "3 groups"),
            (pr(json!({"headers": {"X-A": "$nope"}})), "proxy-rewrite.headers.X-A", "unknown variable"),
        ];
        for (v, path, want) in table {
            let e = from_plugins(&v).unwrap_err();
            assert_eq!(e.path_text(""), path, "{v} -> {e}");
            assert!(e.message.contains(want), "{v} -> {e}");
        }
    }

    #[test]
    fn what_is_kept() {
        assert_eq!(from_plugins(&json!({})), Ok(None));
        let r = rule(json!({
            "uri": "/a", "host": "b.test", "method": "PATCH", "use_real_request_uri_unsafe": false,
            "headers": {"set": {"X-S": "1", "X_T": ""}, "add": {"X-A": 1.5}, "remove": ["X-R"]}
        }));
        assert_eq!(r.host.as_deref(), Some("b.test"));
        assert_eq!(r.method.as_ref().map(|m| m.name.as_str()), Some("PATCH"));
        assert_eq!(r.headers.drop, ["x-s", "x-t", "x-r"]);
        let names: Vec<_> = r.headers.write.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(
            names,
            ["X-A", "X-S"],
            "add's lines, then set's; an empty set only drops"
        );
        assert!(!r.keep_captures);
        let c = rule(json!({"regex_uri": ["^/(.*)", "/x"], "headers": {"X-C": "$1"}}));
        assert!(c.keep_captures, "a field reads a capture");
        let c = rule(json!({"regex_uri": ["^/(.*)", "/x"]}));
        assert!(!c.keep_captures, "nothing reads one: find() is enough");
        // Equal when written alike, so a reload can tell nothing changed.
        assert_eq!(
            rule(json!({"regex_uri": ["^/(.*)", "/$1"]})),
            rule(json!({"regex_uri": ["^/(.*)", "/$1"]}))
        );
        assert_ne!(
            rule(json!({"regex_uri": ["^/(.*)", "/$1"]})),
            rule(json!({"regex_uri": ["^/(.+)", "/$1"]}))
        );
    }

    #[test]
    fn error_paths_quote_what_is_not_a_word() {
        let e = PluginError {
            path: vec![
                Step::Key("proxy-rewrite".into()),
                Step::Key("a b".into()),
                Step::Index(2),
            ],
            message: "m".into(),
        };
        assert_eq!(e.path_text("plugins"), "plugins.proxy-rewrite.\"a b\"[2]");
        assert_eq!(e.to_string(), "proxy-rewrite.\"a b\"[2]: m");
    }
}
