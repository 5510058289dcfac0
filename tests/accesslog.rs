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

#[test]
fn json_lines_name_the_upstream_and_whether_the_connection_was_reused() {
    let mock = MockUpstream::echo_target();
    let path = std::env::temp_dir().join(format!(
        "hearth-access-{}-{}.log",
        std::process::id(),
        line!()
    ));
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
