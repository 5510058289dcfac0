//! What every section of the builder works with: the [`Builder`] itself (the `Locator` that
//! turns spans into `file:line: key`, and the warnings so far) and the helpers all sections share:
//! reading a duration (warning when it looks like a unit mistake), naming where a warning points,
//! and resolving a path against the configuration file's directory.
//!
//! It sits below the sections (`build` for the top-level tables, `build::upstream` for
//! `[upstreams.NAME]`), which add their own methods to `Builder`, so no section depends on another
//! through it. Invariants: a warning always names the file, and the line when there is one.

use std::ops::Range;
use std::time::Duration;

use toml::Spanned;

use crate::config::locate::{key_path, line_of, ConfigError, Locator, Warning};
use crate::config::types::Resolve;
use crate::config::value::{
    spelled_out, RawDuration, SUSPICIOUS_BARE_SECONDS, SUSPICIOUS_DURATION,
};

/// Converts the raw tree into a [`Config`], checking what serde cannot and collecting warnings.
pub(super) struct Builder<'a> {
    pub(super) locator: Locator<'a>,
    pub(super) warnings: Vec<Warning>,
    /// `resolver` and `[resolve]`, read before the upstreams, whose node names are looked up
    /// with them.
    pub(super) resolve: Resolve,
}

impl Builder<'_> {
    /// A path from the file, relative to the configuration file's directory.
    pub(super) fn path(&self, p: &str) -> std::path::PathBuf {
        let p = std::path::Path::new(p);
        match std::path::Path::new(self.locator.file).parent() {
            Some(dir) if p.is_relative() => dir.join(p),
            _ => p.to_path_buf(),
        }
    }

    /// The chosen value or the default, warning when it looks like a unit mistake.
    pub(super) fn duration(
        &mut self,
        raw: Option<Spanned<RawDuration>>,
        default: Duration,
    ) -> Result<Duration, ConfigError> {
        let Some(raw) = raw else { return Ok(default) };
        if raw.get_ref().auto {
            return Err(self.locator.error(
                Some(raw.span()),
                "\"auto\" is accepted only for keepalive_pool.idle_timeout".to_owned(),
            ));
        }
        let span = raw.span();
        let d = raw.into_inner();
        if d.value > SUSPICIOUS_DURATION || (d.bare && d.number >= SUSPICIOUS_BARE_SECONDS) {
            let key = key_path(self.locator.tree, span.start).unwrap_or_default();
            let at = self.prefix(Some(span), &key);
            let hint = if d.in_seconds {
                format!("did you mean {} ms? write \"{}ms\"", d.number, d.number)
            } else {
                "is that intended?".to_owned()
            };
            self.warnings.push(Warning(format!(
                "{at}: {} is {}; {hint}",
                d.as_read,
                spelled_out(d.value)
            )));
        }
        Ok(d.value)
    }

    pub(super) fn prefix(&self, span: Option<Range<usize>>, key: &str) -> String {
        match span {
            Some(s) => format!(
                "{}:{}: {key}",
                self.locator.file,
                line_of(self.locator.text, s.start)
            ),
            None => format!("{}: {key}", self.locator.file),
        }
    }
}
