//! Where in the file: [`ConfigError`] (`file:line: key: message`), [`Warning`], and `Locator`,
//! which turns a byte offset from toml into the 1-based line and the dotted key path there.
//!
//! Key paths come from a second, spanned parse of the text: the deepest key whose key or value
//! span covers the offset. Invariants: a path is written as TOML would need it (keys that are not
//! bare are quoted), so it reads back unambiguous; offsets past the text or inside a character
//! never panic; an error with nothing to point at has no line and no key rather than a wrong one.

use std::fmt::{self, Write as _};
use std::ops::Range;

use toml::de::{DeTable, DeValue};
use toml::Spanned;

/// Something in the file that is valid but probably not what was meant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning(pub String);

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why a configuration was refused. Displays as `file:line: key: message`; `line` and `key`
/// are left out when there is nothing to point at (an unreadable file, a missing section).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub(super) file: String,
    pub(super) line: Option<usize>,
    pub(super) key: Option<String>,
    pub(super) message: String,
}

impl ConfigError {
    /// An error in another file hearth reads the way it reads its configuration (the admin
    /// API's state file), displayed alike: `file:line: key: message`.
    pub fn new(
        file: impl Into<String>,
        line: Option<usize>,
        key: Option<String>,
        message: impl Into<String>,
    ) -> ConfigError {
        ConfigError {
            file: file.into(),
            line,
            key,
            message: message.into(),
        }
    }

    pub fn file(&self) -> &str {
        &self.file
    }

    /// 1-based.
    pub fn line(&self) -> Option<usize> {
        self.line
    }

    /// Dotted path such as `upstreams.backend.timeout.connect` or `routes[0].upstream`.
    pub fn key(&self) -> Option<&str> {
        self.key.as_deref()
    }

    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if let Some(key) = &self.key {
            write!(f, ": {key}")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ConfigError {}

/// Turns byte offsets into the `file:line: key` part of errors and warnings.
pub(super) struct Locator<'a> {
    pub(super) file: &'a str,
    pub(super) text: &'a str,
    pub(super) tree: &'a DeTable<'a>,
}

impl Locator<'_> {
    pub(super) fn error(
        &self,
        span: Option<Range<usize>>,
        message: impl Into<String>,
    ) -> ConfigError {
        ConfigError {
            file: self.file.to_owned(),
            line: span.as_ref().map(|s| line_of(self.text, s.start)),
            key: span.and_then(|s| key_path(self.tree, s.start)),
            message: message.into(),
        }
    }

    /// For things that are absent, so have no span of their own.
    pub(super) fn missing(&self, key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.file.to_owned(),
            line: None,
            key: Some(key.to_owned()),
            message: message.into(),
        }
    }
}

/// 1-based line of a byte offset; counts bytes, so an offset inside a character cannot panic.
pub(super) fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// The dotted path of the deepest key whose key or value span covers `offset`. Leaf spans never
/// overlap, so the first match in a depth-first walk is the one; table spans (which toml sets to
/// their header) are checked only after their children.
pub(super) fn key_path(tree: &DeTable<'_>, offset: usize) -> Option<String> {
    let mut path = String::new();
    path_in_table(tree, offset, &mut path).then_some(path)
}

fn path_in_table(table: &DeTable<'_>, offset: usize, path: &mut String) -> bool {
    for (key, value) in table.iter() {
        let len = path.len();
        if !path.is_empty() {
            path.push('.');
        }
        push_key(path, key.get_ref());
        if path_in_value(value, offset, path)
            || covers(&key.span(), offset)
            || covers(&value.span(), offset)
        {
            return true;
        }
        path.truncate(len);
    }
    false
}

fn path_in_value(value: &Spanned<DeValue<'_>>, offset: usize, path: &mut String) -> bool {
    match value.get_ref() {
        DeValue::Table(table) => path_in_table(table, offset, path),
        DeValue::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                let len = path.len();
                // Writing to a String cannot fail.
                let _ = write!(path, "[{i}]");
                if path_in_value(item, offset, path) || covers(&item.span(), offset) {
                    return true;
                }
                path.truncate(len);
            }
            false
        }
        _ => false,
    }
}

/// The dotted path of the key that a `duplicate key` error of toml points at (`span` covers the
/// second occurrence's last segment). toml refuses the whole text, so there is no tree to look
/// the offset up in; the same text with that segment renamed parses (when nothing else is
/// wrong), and the renamed key's path is the one wanted. None when it does not parse.
pub(super) fn duplicate_key_path(text: &str, span: Range<usize>) -> Option<String> {
    let written = text.get(span.clone())?;
    let name = written
        .strip_prefix('"')
        .and_then(|k| k.strip_suffix('"'))
        .or_else(|| {
            written
                .strip_prefix('\'')
                .and_then(|k| k.strip_suffix('\''))
        })
        .unwrap_or(written);
    let mut stand_in = String::from("hearth-duplicate-key");
    while text.contains(&stand_in) {
        stand_in.push('x');
    }
    let renamed = format!("{}{stand_in}{}", &text[..span.start], &text[span.end..]);
    let tree = DeTable::parse(&renamed).ok()?;
    let path = key_path(tree.get_ref(), span.start)?;
    let mut key = String::new();
    push_key(&mut key, name);
    Some(path.replacen(&stand_in, &key, 1))
}

/// Empty spans never cover: toml gives implicit tables empty spans at offset 0, which would
/// otherwise claim every error on the first line.
fn covers(span: &Range<usize>, offset: usize) -> bool {
    span.start <= offset && offset < span.end
}

/// Keys are written as TOML would need them, so `nodes."127.0.0.1:9001"` reads back unambiguous.
fn push_key(path: &mut String, key: &str) {
    let bare = !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if bare {
        path.push_str(key);
    } else {
        let _ = write!(path, "{key:?}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicate_keys_are_named_by_their_path() {
        let cases = [
            ("[a.demo]\nx = 1\n[a.demo]\ny = 2\n", Some("a.demo")),
            (
                "[a.demo]\nretries = 1\nretries = 2\n",
                Some("a.demo.retries"),
            ),
            ("[a]\n\"q k\" = 1\n\"q k\" = 2\n", Some("a.\"q k\"")),
            ("x = { a = 1, a = 2 }\n", Some("x.a")),
            ("[[r]]\nu = 1\n[[r]]\nu = 1\nu = 2\n", Some("r[1].u")),
            ("a.b = 1\na.b = 2\n", Some("a.b")),
            ("a = 1\n[a]\n", Some("a")),
            // Something else wrong too: no path rather than a wrong one.
            ("a = 1\na = 2\nb = \n", None),
        ];
        for (text, want) in cases {
            let e = DeTable::parse(text).expect_err(text);
            assert_eq!(e.message(), "duplicate key", "{text}");
            let span = e.span().expect("a span");
            assert_eq!(duplicate_key_path(text, span).as_deref(), want, "{text}");
        }
    }

    #[test]
    fn key_paths_quote_keys_that_are_not_bare() {
        let mut path = String::new();
        push_key(&mut path, "backend_2-x");
        path.push('.');
        push_key(&mut path, "127.0.0.1:9001");
        path.push('.');
        push_key(&mut path, "");
        assert_eq!(path, "backend_2-x.\"127.0.0.1:9001\".\"\"");
    }
}
