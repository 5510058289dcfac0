//! The admin API's state file (`[admin] state = "path"`): the routes and upstreams created
//! through the API, when no config center keeps them, so that they survive a restart.
//!
//! The file is JSON Lines. Its first line is `{"hearth_admin_state":1}`, the format's version;
//! every other line holds one object as the admin API's GET shows it,
//! `{"key":"routes/ID","value":{...}}`, upstreams first, then routes, each in id order. One
//! object per line is what lets a refusal name the line, as errors in the configuration do;
//! blank lines are allowed, so the file can be edited by hand while hearth is stopped.
//!
//! Invariants:
//! - A save replaces the whole file atomically: the text goes to `PATH.tmp` in the same
//!   directory, is flushed to disk (fsync), renamed over `PATH`, and the directory is flushed
//!   too, so after a crash or a power cut the file holds the state before the change or after
//!   it, whole, never a mix.
//! - Loading only reads: JSON, the version line, keys. Translating the values, and refusing
//!   one, is `dynamic`'s job, which names the line this module read it from.
//! - A missing file is an empty state (the first start); everything else unreadable is an
//!   error that names the file and, when there is one, the line and key.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::config::ConfigError;
use crate::config_center::Kind;

/// The format this hearth writes and reads.
pub const FORMAT: u64 = 1;
const VERSION_KEY: &str = "hearth_admin_state";

/// One object read back from the file.
#[derive(Debug, Clone, PartialEq)]
pub struct Saved {
    /// 1-based line it was read from.
    pub line: usize,
    pub kind: Kind,
    pub id: String,
    pub value: Value,
}

/// The state file at one path.
#[derive(Debug, Clone)]
pub struct StateFile {
    path: PathBuf,
}

impl StateFile {
    pub fn new(path: PathBuf) -> StateFile {
        StateFile { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// An error about line `line` of this file, displayed as `file:line: key: message`.
    pub fn error(
        &self,
        line: Option<usize>,
        key: Option<String>,
        message: impl Into<String>,
    ) -> ConfigError {
        ConfigError::new(self.path.display().to_string(), line, key, message)
    }

    /// Every object in the file, in file order; none when the file does not exist yet.
    pub fn load(&self) -> Result<Vec<Saved>, ConfigError> {
        match std::fs::read_to_string(&self.path) {
            Ok(text) => self.parse(&text),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(self.error(None, None, format!("cannot read the admin state: {e}"))),
        }
    }

    /// Reads `text` as the content of this file.
    pub fn parse(&self, text: &str) -> Result<Vec<Saved>, ConfigError> {
        let mut lines = text
            .lines()
            .enumerate()
            .map(|(i, l)| (i + 1, l))
            .filter(|(_, l)| !l.trim().is_empty());
        let Some((first, header)) = lines.next() else {
            return Ok(Vec::new());
        };
        let wanted = format!("expected {{\"{VERSION_KEY}\":{FORMAT}}} on the first line");
        match self.json(first, header)?.get(VERSION_KEY) {
            Some(v) if v.as_u64() == Some(FORMAT) => {}
            Some(v) => {
                return Err(self.error(
                    Some(first),
                    Some(VERSION_KEY.to_owned()),
                    format!("written in format {v}; this hearth reads format {FORMAT}"),
                ))
            }
            None => {
                return Err(self.error(
                    Some(first),
                    None,
                    format!("not a hearth admin state file: {wanted}"),
                ))
            }
        }
        let mut seen: HashMap<String, usize> = HashMap::new();
        let mut out = Vec::new();
        for (line, text) in lines {
            let (key, value) = match self.json(line, text)? {
                Value::Object(mut m) if m.len() == 2 => {
                    match (m.remove("key"), m.remove("value")) {
                        (Some(Value::String(key)), Some(value)) => (key, value),
                        _ => return Err(self.shape(line)),
                    }
                }
                _ => return Err(self.shape(line)),
            };
            let Some((kind, id)) = split_key(&key) else {
                return Err(self.error(
                    Some(line),
                    Some(key),
                    "expected a key of the form routes/ID or upstreams/ID",
                ));
            };
            if let Some(before) = seen.insert(key.clone(), line) {
                return Err(self.error(
                    Some(line),
                    Some(key),
                    format!("appears twice, first on line {before}"),
                ));
            }
            out.push(Saved {
                line,
                kind,
                id: id.to_owned(),
                value,
            });
        }
        Ok(out)
    }

    fn json(&self, line: usize, text: &str) -> Result<Value, ConfigError> {
        serde_json::from_str(text).map_err(|e| {
            let what = e.to_string();
            let what = what
                .rsplit_once(" at line ")
                .map_or(what.as_str(), |(w, _)| w);
            self.error(
                Some(line),
                None,
                format!("invalid JSON at column {}: {what}", e.column()),
            )
        })
    }

    fn shape(&self, line: usize) -> ConfigError {
        self.error(
            Some(line),
            None,
            "expected an object {\"key\": \"routes/ID\", \"value\": {...}}",
        )
    }

    /// Replaces the file with `objects` (kind, id, value), atomically (see the module docs).
    /// Err says which step failed and on which path; the file is then as it was.
    pub fn save<'a>(
        &self,
        objects: impl IntoIterator<Item = (Kind, &'a str, &'a Value)>,
    ) -> io::Result<()> {
        let mut text = format!("{{\"{VERSION_KEY}\":{FORMAT}}}\n");
        for (kind, id, value) in objects {
            let line =
                serde_json::json!({ "key": format!("{}/{id}", kind.segment()), "value": value });
            text.push_str(&line.to_string());
            text.push('\n');
        }
        let mut tmp = self.path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let context = |what: &str, path: &Path, e: io::Error| {
            io::Error::new(e.kind(), format!("cannot {what} {}: {e}", path.display()))
        };
        let written = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .and_then(|mut f| {
                f.write_all(text.as_bytes())?;
                f.sync_all()
            })
            .map_err(|e| context("write", &tmp, e))
            .and_then(|()| {
                std::fs::rename(&tmp, &self.path).map_err(|e| context("replace", &self.path, e))
            });
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        // The rename is durable only once the directory that records it is.
        let dir = match self.path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| context("flush the directory", dir, e))
    }
}

/// `routes/ID` or `upstreams/ID` into its kind and id (the id is checked by `dynamic`).
fn split_key(key: &str) -> Option<(Kind, &str)> {
    let (segment, id) = key.split_once('/')?;
    let kind = [Kind::Route, Kind::Upstream]
        .into_iter()
        .find(|k| k.segment() == segment)?;
    Some((kind, id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn temp_dir(tag: &str) -> PathBuf {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static SEQ: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "hearth-admin-state-{tag}-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn saved_objects_read_back_with_their_lines() {
        let dir = temp_dir("round");
        let f = StateFile::new(dir.join("state.jsonl"));
        assert_eq!(f.load().unwrap(), vec![], "no file yet: nothing stored");
        let (u, r) = (json!({"nodes": {"127.0.0.1:1": 1}}), json!({"uri": "/a"}));
        f.save([(Kind::Upstream, "u1", &u), (Kind::Route, "r1", &r)])
            .unwrap();
        let text = std::fs::read_to_string(f.path()).unwrap();
        assert_eq!(
            text,
            "{\"hearth_admin_state\":1}\n\
             {\"key\":\"upstreams/u1\",\"value\":{\"nodes\":{\"127.0.0.1:1\":1}}}\n\
             {\"key\":\"routes/r1\",\"value\":{\"uri\":\"/a\"}}\n"
        );
        let back = f.load().unwrap();
        assert_eq!(
            back,
            vec![
                Saved {
                    line: 2,
                    kind: Kind::Upstream,
                    id: "u1".into(),
                    value: u
                },
                Saved {
                    line: 3,
                    kind: Kind::Route,
                    id: "r1".into(),
                    value: r
                },
            ]
        );
        assert!(!dir.join("state.jsonl.tmp").exists());
        // Saving nothing leaves the version line only.
        f.save([]).unwrap();
        assert_eq!(f.load().unwrap(), vec![]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_failed_save_leaves_the_file_as_it_was() {
        let dir = temp_dir("fail");
        let f = StateFile::new(dir.join("state.jsonl"));
        let v = json!({"uri": "/a"});
        f.save([(Kind::Route, "r1", &v)]).unwrap();
        let before = std::fs::read_to_string(f.path()).unwrap();
        // A directory where the temporary file goes: the write fails, even for root.
        std::fs::create_dir(dir.join("state.jsonl.tmp")).unwrap();
        let e = f.save([]).unwrap_err();
        assert!(e.to_string().starts_with("cannot write "), "{e}");
        assert!(e.to_string().contains("state.jsonl.tmp"), "{e}");
        assert_eq!(std::fs::read_to_string(f.path()).unwrap(), before);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_corrupt_file_is_refused_naming_line_and_key() {
        let f = StateFile::new(PathBuf::from("/var/lib/hearth/state.jsonl"));
        let head = "{\"hearth_admin_state\":1}\n";
        let ok = "{\"key\":\"routes/r1\",\"value\":{}}\n";
        type Case<'a> = (String, &'a str);
        let cases: Vec<Case> = vec![
            (
                "[1]\n".into(),
                "/var/lib/hearth/state.jsonl:1: not a hearth admin state file: expected \
                 {\"hearth_admin_state\":1} on the first line",
            ),
            (
                "{\"hearth_admin_state\":2}\n".into(),
                "/var/lib/hearth/state.jsonl:1: hearth_admin_state: written in format 2; this \
                 hearth reads format 1",
            ),
            (
                format!("{head}{ok}{{\"key\":\"routes/r2\",\"value\":{{\"uri\":}}\n"),
                "/var/lib/hearth/state.jsonl:3: invalid JSON at column 35: expected value",
            ),
            (
                format!("{head}\n\n{{\"key\":\"services/1\",\"value\":{{}}}}\n"),
                "/var/lib/hearth/state.jsonl:4: services/1: expected a key of the form \
                 routes/ID or upstreams/ID",
            ),
            (
                format!("{head}{{\"key\":\"routes/r1\"}}\n"),
                "/var/lib/hearth/state.jsonl:2: expected an object {\"key\": \"routes/ID\", \
                 \"value\": {...}}",
            ),
            (
                format!("{head}{ok}{ok}"),
                "/var/lib/hearth/state.jsonl:3: routes/r1: appears twice, first on line 2",
            ),
        ];
        for (text, want) in cases {
            let e = f.parse(&text).unwrap_err();
            assert_eq!(e.to_string(), want, "{text}");
        }
        assert_eq!(
            f.parse("").unwrap(),
            vec![],
            "an empty file is an empty state"
        );
        assert_eq!(f.parse(&format!("\n{head}\n{ok}")).unwrap()[0].line, 4);
    }
}
