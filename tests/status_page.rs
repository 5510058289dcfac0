//! The status page (`GET /status` on the admin listener) rendered by a real browser.
//!
//! The page is static HTML that fetches `/status.json` and builds its table with JavaScript, so
//! only a browser proves it works: these tests run headless Chromium with a virtual time budget
//! (timers and fetches run on virtual time, so the page gets its first readings without the test
//! waiting in real time), dump the rendered DOM and read the table cells by their `data-k`
//! attributes. Chromium is required, not optional: without it the tests fail and say to run
//! `.ci/chromium.sh`, which CI does. Each run gets a fresh profile directory, removed afterwards,
//! and a deadline after which the browser's whole process group is killed.

mod common;

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::{conf, Hearth, MockUpstream};

/// The browser to run; `CHROMIUM=/path/to/chrome` picks another build.
fn chromium_bin() -> String {
    std::env::var("CHROMIUM").unwrap_or_else(|_| "chromium".into())
}

/// Virtual milliseconds the page gets to load, poll `/status.json` and render (it polls every
/// 2 s, so this covers the first reading and two more).
const VIRTUAL_TIME_BUDGET_MS: u32 = 5_000;
/// Real time the browser gets before it is killed; a cold start on a busy machine takes seconds.
const BROWSER_DEADLINE: Duration = Duration::from_secs(60);

/// A fresh Chromium profile directory, removed on drop.
struct Profile(PathBuf);

impl Profile {
    fn new() -> Profile {
        static SEQ: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "hearth-status-chromium-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create a Chromium profile directory");
        Profile(dir)
    }
}

impl Drop for Profile {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn spawn_reader(mut pipe: impl Read + Send + 'static) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// Loads `url` in headless Chromium and returns the DOM after the virtual time budget.
fn render(url: &str) -> String {
    let profile = Profile::new();
    let bin = chromium_bin();
    let mut cmd = Command::new(&bin);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
    ])
    .arg(format!("--user-data-dir={}", profile.0.display()))
    .arg(format!("--virtual-time-budget={VIRTUAL_TIME_BUDGET_MS}"))
    .arg("--dump-dom")
    .arg(url)
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    // Its own process group, so a browser past the deadline is killed with all its children.
    .process_group(0);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "`{bin}` is not installed, and the status page test needs a real browser: run \
             .ci/chromium.sh (as root; it installs Debian's chromium), or set CHROMIUM to a \
             Chromium or Chrome binary"
        ),
        Err(e) => panic!("cannot start `{bin}`: {e}"),
    };
    let out = spawn_reader(child.stdout.take().expect("stdout is piped"));
    let err = spawn_reader(child.stderr.take().expect("stderr is piped"));
    let deadline = Instant::now() + BROWSER_DEADLINE;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
            Ok(None) | Err(_) => {
                let _ = Command::new("kill")
                    .args(["-KILL", "--", &format!("-{}", child.id())])
                    .status();
                let _ = child.wait();
                panic!(
                    "`{bin}` did not finish within {BROWSER_DEADLINE:?}; stderr:\n{}",
                    err.join().unwrap_or_default()
                );
            }
        }
    };
    let dom = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    assert!(
        status.success() && dom.contains("</html>"),
        "`{bin}` exited {status} without a DOM; stderr:\n{stderr}\nstdout:\n{dom}"
    );
    dom
}

/// The `<tr>` the page rendered for `node`, as serialized HTML.
fn row<'a>(dom: &'a str, node: &str) -> &'a str {
    let start = dom
        .find(&format!("<tr data-node=\"{node}\""))
        .unwrap_or_else(|| panic!("no table row for node {node} in the rendered page:\n{dom}"));
    let len = dom[start..]
        .find("</tr>")
        .expect("the serialized DOM closes every row");
    &dom[start..start + len]
}

/// The text (still HTML-escaped, as the DOM serializes it) of the cell `data-k="key"`.
fn cell<'a>(row: &'a str, key: &str) -> &'a str {
    let marker = format!("data-k=\"{key}\">");
    let start = row
        .find(&marker)
        .unwrap_or_else(|| panic!("no {key} cell in row {row}"))
        + marker.len();
    let len = row[start..]
        .find("</td>")
        .expect("the serialized DOM closes every cell");
    &row[start..start + len]
}

// The acceptance test of issue 7: after 20 requests through one client connection, the page,
// rendered from /status.json by the browser, shows them on the live upstream's row: one
// connect, 19 reuses.
#[test]
fn chromium_renders_the_live_upstreams_counts() {
    let mock = MockUpstream::echo_target();
    let h = conf(&[mock.addr()]).admin().start();
    let mut c = h.client();
    for i in 0..20 {
        assert_eq!(
            c.get(&format!("/status-test/{i}")).status,
            200,
            "request {i}"
        );
    }
    let admin = h.admin_addr();
    let dom = render(&format!("http://{admin}/status"));
    let r = row(&dom, &mock.addr().to_string());
    let want = [
        ("upstream", "backend"),
        ("requests", "20"),
        ("connects", "1"),
        ("connect_failures", "0"),
        ("reuses", "19"),
        ("reuse_ratio", "95.0%"),
        ("idle_now", "1"),
        ("queue_timeouts", "0"),
        ("replays", "0"),
    ];
    for (key, value) in want {
        assert_eq!(cell(r, key), value, "{key} in {r}");
    }
    assert!(
        dom.contains("data-state=\"live\""),
        "the page did not mark itself live"
    );
}

// The upstream name comes from the configuration file and reaches the page through JSON; it must
// arrive as text, never as markup.
#[test]
fn chromium_shows_markup_in_names_as_text() {
    let mock = MockUpstream::echo_target();
    let name = "<i>web</i> & \"co\"";
    let quoted = format!("\"{}\"", name.replace('"', "\\\""));
    let toml = conf(&[mock.addr()])
        .admin()
        .toml()
        .replace("[upstreams.backend]", &format!("[upstreams.{quoted}]"))
        .replace("upstream = \"backend\"", &format!("upstream = {quoted}"));
    let h = Hearth::start(&toml);
    assert_eq!(h.client().get("/").status, 200, "a request through hearth");
    let dom = render(&format!("http://{}/status", h.admin_addr()));
    let r = row(&dom, &mock.addr().to_string());
    assert_eq!(cell(r, "upstream"), "&lt;i&gt;web&lt;/i&gt; &amp; \"co\"");
    assert!(!dom.contains("<i>web"), "the name became markup:\n{dom}");
}
