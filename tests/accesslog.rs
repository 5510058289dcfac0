//! The access log as written by the running proxy: one line per request, with the upstream,
//! whether the connection was reused and its connect time.

mod common;

use std::thread;
use std::time::{Duration, Instant};

use common::*;

fn log_lines(path: &std::path::Path, want: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<String> = text.lines().map(str::to_owned).collect();
        if lines.len() >= want || Instant::now() > deadline {
            return lines;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// A fresh log path for the test at `line`, and a configuration that logs there in JSON.
fn logging_to(line: u32, mock: &MockUpstream) -> (std::path::PathBuf, String) {
    let path =
        std::env::temp_dir().join(format!("hearth-access-{}-{line}.log", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let toml = conf(&[mock.addr()])
        .routes("[[routes]]\nuris = [\"/a/*\"]\nupstream = \"backend\"\n")
        .toml()
        .replacen(
            "workers = 1",
            &format!(
                "workers = 1\naccess_log = {{ path = {:?}, format = \"json\" }}",
                path.display().to_string()
            ),
            1,
        );
    (path, toml)
}

#[test]
fn json_lines_name_the_upstream_and_whether_the_connection_was_reused() {
    let mock = MockUpstream::echo_target();
    let (path, toml) = logging_to(line!(), &mock);
    let h = Hearth::start(&toml);
    let mut c = h.client();
    assert_eq!(c.get("/a/one").status, 200);
    assert_eq!(c.get("/a/two").status, 200);
    assert_eq!(c.get("/nowhere").status, 404);
    let lines = log_lines(&path, 3);
    let _ = std::fs::remove_file(&path);
    assert_eq!(lines.len(), 3, "one line per request: {lines:#?}");
    let up = format!("\"upstream\":\"{}\"", mock.addr());
    assert!(
        lines[0].contains("\"target\":\"/a/one\"") && lines[0].contains("\"status\":200"),
        "{}",
        lines[0]
    );
    assert!(
        lines[0].contains(&up) && lines[0].contains("\"reused\":false"),
        "first request connects: {}",
        lines[0]
    );
    assert!(
        lines[1].contains(&up)
            && lines[1].contains("\"reused\":true")
            && lines[1].contains("\"connect_ms\":0"),
        "second reuses: {}",
        lines[1]
    );
    assert!(
        lines[1].contains("\"bytes_sent\":6"),
        "body bytes of \"/a/two\": {}",
        lines[1]
    );
    assert!(
        lines[2].contains("\"status\":404") && lines[2].contains("\"upstream\":null"),
        "hearth's own answer: {}",
        lines[2]
    );
}

/// logrotate's default: rename the file, then signal. Before the signal, lines still go to the
/// renamed file (hearth holds it open); after it, to a new file under the configured name, and
/// no line is lost or written twice on the way.
#[test]
fn sigusr1_reopens_the_log_after_it_was_renamed() {
    let mock = MockUpstream::echo_target();
    let (path, toml) = logging_to(line!(), &mock);
    let rotated = path.with_extension("log.1");
    let _ = std::fs::remove_file(&rotated);
    let h = Hearth::start(&toml);
    let mut c = h.client();
    assert_eq!(c.get("/a/one").status, 200);
    assert_eq!(log_lines(&path, 1).len(), 1);
    std::fs::rename(&path, &rotated).unwrap();
    assert_eq!(c.get("/a/two").status, 200);

    h.reopen_logs();
    // The reopen creates the file again; wait for it, bounded.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !path.exists() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
    }
    assert!(path.exists(), "SIGUSR1 did not open {}", path.display());
    assert_eq!(c.get("/a/three").status, 200);
    let new = log_lines(&path, 1);
    let old = log_lines(&rotated, 2);
    let _ = std::fs::remove_file(&rotated);
    assert_eq!(
        old.len(),
        2,
        "the renamed file keeps what came before: {old:#?}"
    );
    assert!(old[0].contains("\"target\":\"/a/one\""), "{}", old[0]);
    assert!(old[1].contains("\"target\":\"/a/two\""), "{}", old[1]);
    assert_eq!(new.len(), 1, "the new file has what came after: {new:#?}");
    assert!(new[0].contains("\"target\":\"/a/three\""), "{}", new[0]);
    // Still serving, and still logging to the new file.
    assert_eq!(c.get("/a/four").status, 200);
    let after = log_lines(&path, 2);
    let _ = std::fs::remove_file(&path);
    assert_eq!(after.len(), 2, "{after:#?}");
}
