//! The configuration contract as the operator meets it: the binary's exit code and what it
//! prints for good and bad files. Errors must point at `FILE:LINE:` and name the key, so every
//! test writes its TOML literally and finds the expected line with `line_of`.

mod common;

use std::time::Duration;

use common::*;

/// Config checks read a file and exit; anything slower is a hang.
const EXIT_DEADLINE: Duration = Duration::from_secs(10);

/// A complete, valid config whose node nobody listens on (nothing connects at startup).
fn valid_config() -> String {
    format!(
        "workers = 1\n\
         \n\
         [[listen]]\n\
         addr = \"127.0.0.1:0\"\n\
         \n\
         [client]\n\
         header_timeout = \"10s\"\n\
         \n\
         [upstreams.backend]\n\
         nodes = {{ \"{}\" = 1 }}\n\
         \n\
         [[routes]]\n\
         uris = [\"/*\"]\n\
         upstream = \"backend\"\n",
        dead_addr()
    )
}

/// Runs hearth on `toml`, expects exit 1 and a message at `FILE:LINE:` (for any of the lines
/// holding one of `line_needles`) that mentions `key`.
fn assert_rejected(toml: &str, line_needles: &[&str], key: &str) {
    let file = ConfigFile::new(toml);
    let path = file.path_str();
    let exit = run_hearth(&["-c", &path], EXIT_DEADLINE);
    assert_eq!(
        exit.code(),
        Some(1),
        "exit code for a bad config (stderr: {})\nconfig:\n{toml}",
        exit.stderr
    );
    let places: Vec<String> = line_needles
        .iter()
        .map(|n| format!("{path}:{}:", line_of(toml, n)))
        .collect();
    assert!(
        places.iter().any(|p| exit.stderr.contains(p.as_str())),
        "stderr does not point at any of {places:?}:\n{}",
        exit.stderr
    );
    assert!(
        exit.stderr.contains(key),
        "stderr does not name {key:?}:\n{}",
        exit.stderr
    );
}

#[test]
fn unknown_key_is_reported_with_file_and_line() {
    let toml = valid_config().replace(
        "header_timeout = \"10s\"\n",
        "header_timeout = \"10s\"\nbogus_key = 5\n",
    );
    assert_rejected(&toml, &["bogus_key"], "bogus_key");
}

#[test]
fn route_to_unknown_upstream_is_reported_at_the_route() {
    let toml = valid_config().replace("upstream = \"backend\"", "upstream = \"nope\"");
    assert_rejected(&toml, &["[[routes]]", "upstream = \"nope\""], "upstream");
}

#[test]
fn bad_duration_names_the_key() {
    let toml = valid_config().replace("header_timeout = \"10s\"", "header_timeout = \"10x\"");
    assert_rejected(&toml, &["header_timeout"], "header_timeout");
}

#[test]
fn check_flag_exits_0_for_valid_and_1_for_invalid() {
    let good = ConfigFile::new(&valid_config());
    let exit = run_hearth(&["--check", "-c", &good.path_str()], EXIT_DEADLINE);
    assert_eq!(
        exit.code(),
        Some(0),
        "--check on a valid file (stderr: {})",
        exit.stderr
    );

    let bad = ConfigFile::new(&valid_config().replace("workers = 1", "workers = \"many\""));
    let exit = run_hearth(&["--check", "-c", &bad.path_str()], EXIT_DEADLINE);
    assert_eq!(
        exit.code(),
        Some(1),
        "--check on an invalid file (stderr: {})",
        exit.stderr
    );
}

/// What hearth prints for a bad file, start and `--check` alike: one line, `hearth: `, then
/// `FILE:LINE: KEY: MESSAGE`, and nothing else (the logger does not print it a second time).
#[test]
fn each_error_is_printed_once_naming_file_line_and_key() {
    let base = valid_config();
    let cases: Vec<(String, &str, &str, &str)> = vec![
        (
            base.replace("[[routes]]", "type = \"random\"\n\n[[routes]]"),
            "type = \"random\"",
            "upstreams.backend.type",
            "expected \"roundrobin\", \"least_conn\", \"chash\" or \"ewma\", found \"random\"",
        ),
        (
            base.replace("[[routes]]", "retries = 1\nretries = 2\n\n[[routes]]"),
            "retries = 2",
            "upstreams.backend.retries",
            "duplicate key: it is set twice; keep one",
        ),
        (
            format!("{base}\n[upstreams.backend] # again\nnodes = {{ \"127.0.0.1:1\" = 1 }}\n"),
            "# again",
            "upstreams.backend",
            "duplicate key: it is set twice; keep one",
        ),
        (
            base.replace(
                "header_timeout = \"10s\"",
                "header_timeout = \"10s\"\nheader_timeout = \"5s\"",
            ),
            "header_timeout = \"5s\"",
            "client.header_timeout",
            "duplicate key: it is set twice; keep one",
        ),
    ];
    for (toml, at, key, message) in cases {
        let file = ConfigFile::new(&toml);
        let path = file.path_str();
        let line = line_of(&toml, at);
        let want = format!("hearth: {path}:{line}: {key}: {message}");
        for args in [
            vec!["-c", path.as_str()],
            vec!["--check", "-c", path.as_str()],
        ] {
            let exit = run_hearth(&args, EXIT_DEADLINE);
            assert_eq!(exit.code(), Some(1), "{args:?}: {exit:?}\n{toml}");
            assert_eq!(exit.stderr, want, "{args:?}\n{toml}");
            assert_eq!(exit.stdout, "", "{args:?}");
        }
    }
}

#[test]
fn version_flag_prints_the_version() {
    let exit = run_hearth(&["--version"], EXIT_DEADLINE);
    assert_eq!(
        exit.code(),
        Some(0),
        "--version exit code (stderr: {})",
        exit.stderr
    );
    assert!(
        exit.stdout.contains(env!("CARGO_PKG_VERSION")),
        "--version output lacks {}: {:?}",
        env!("CARGO_PKG_VERSION"),
        exit.stdout
    );
}

#[test]
fn pool_idle_timeout_that_looks_like_milliseconds_starts_with_a_warning() {
    // 60000 bare seconds is almost certainly meant as 60 s; it is legal, so only warn.
    let toml = valid_config().replace(
        "nodes = ",
        "keepalive_pool = { idle_timeout = 60000 }\nnodes = ",
    );
    let h = Hearth::start(&toml);
    assert!(
        h.wait_log(&["WARN", "idle_timeout"], Duration::from_secs(3)),
        "no warning naming idle_timeout; logs:\n{}",
        h.logs_text()
    );
}

#[test]
fn minimal_config_uses_defaults_and_proxies() {
    let mock = MockUpstream::echo_target();
    let toml = format!(
        "[[listen]]\naddr = \"127.0.0.1:0\"\n\n\
         [upstreams.backend]\nnodes = {{ \"{}\" = 1 }}\n\n\
         [[routes]]\nuris = [\"/*\"]\nupstream = \"backend\"\n",
        mock.addr()
    );
    let h = Hearth::start(&toml);
    assert_eq!(
        h.client().get("/min").text(),
        "/min",
        "request through a minimal config"
    );
}

#[test]
fn every_duration_form_is_accepted() {
    let mock = MockUpstream::echo_target();
    let toml = conf(&[mock.addr()])
        .client("header_timeout = 10")
        .client("idle_timeout = \"2m\"")
        .upstream("timeout = { connect = \"500ms\", send = \"1m\", read = 30 }")
        .upstream("queue = { size = 8, timeout = \"1s\" }")
        .toml();
    let h = Hearth::start(&toml);
    assert_eq!(
        h.client().get("/d").text(),
        "/d",
        "request with every duration form"
    );
}
