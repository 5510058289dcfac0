//! `/metrics` passes `promtool check metrics` (Prometheus's own linter: every family has
//! `# HELP` and `# TYPE`, counters end in `_total`, histograms are whole, names are well formed)
//! with nothing to report, scraped from a running hearth after traffic that makes the per-node,
//! per-cause, per-code and histogram series carry counts, and, with etcd, the config center's.
//!
//! promtool comes from Debian's prometheus package (`bash .ci/promtool.sh`, run by
//! `make test-deps`). Without it these tests fail rather than skip: a lint that silently does not
//! run checks nothing.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::etcd::Etcd;
use common::*;

/// Runs `promtool check metrics` on `text`; what it printed, and whether it was content.
fn promtool(text: &str) -> (bool, String) {
    let child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => panic!(
            "promtool cannot be run ({e}); install it with `bash .ci/promtool.sh` (as root; \
             `make test-deps` does it)"
        ),
    };
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(text.as_bytes())
            .expect("writing to promtool");
    }
    let out = child.wait_with_output().expect("waiting for promtool");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), said)
}

/// Fails, showing promtool's report and the text, unless promtool has nothing to say.
fn assert_clean(text: &str) {
    let (ok, said) = promtool(text);
    assert!(
        ok && said.trim().is_empty(),
        "promtool check metrics reported:\n{said}\n---- /metrics ----\n{text}"
    );
}

#[test]
fn promtool_finds_nothing_to_report_in_a_busy_hearths_metrics() {
    let node = MockUpstream::echo_target();
    let dead = dead_addr();
    let routes = "[[routes]]\nuris = [\"/ok/*\"]\nupstream = \"backend\"\n\n\
                  [[routes]]\nuris = [\"/dead/*\"]\nupstream = \"dead\"\n";
    let mut toml = conf(&[node.addr()])
        .upstream("checks.active = { http_path = \"/health\", interval = \"100ms\" }")
        .routes(routes)
        .admin()
        .toml();
    toml = toml.replacen(
        "[[routes]]",
        &format!("[upstreams.dead]\nnodes = {{ \"{dead}\" = 1 }}\n\n[[routes]]"),
        1,
    );
    let h = Hearth::start(&toml);
    // Reused connections and responses for the histograms, a 404 without a route and a 502
    // from a node that refuses connections for the causes and codes.
    let mut c = h.client();
    for i in 0..5 {
        assert_eq!(c.get(&format!("/ok/{i}")).status, 200);
    }
    assert_eq!(h.client().get("/nowhere").status, 404);
    assert_eq!(h.client().get("/dead/x").status, 502);
    let probed = wait_until(Duration::from_secs(10), || {
        h.metrics()
            .contains("hearth_upstream_health_probes_total{upstream=\"backend\"")
            && metric(
                &h.metrics(),
                &format!(
                    "hearth_upstream_health_probes_total{{upstream=\"backend\",node=\"{}\",result=\"success\"}}",
                    node.addr()
                ),
            ) > 0.0
    });
    assert!(probed, "no health probe counted:\n{}", h.metrics());

    let text = h.metrics();
    let label = format!("upstream=\"backend\",node=\"{}\"", node.addr());
    for (series, at_least) in [
        (format!("hearth_upstream_requests_total{{{label}}}"), 5.0),
        (format!("hearth_upstream_reuses_total{{{label}}}"), 4.0),
        (
            format!("hearth_upstream_response_seconds_count{{{label}}}"),
            5.0,
        ),
        (
            format!("hearth_upstream_reuse_idle_age_seconds_bucket{{{label},le=\"+Inf\"}}"),
            4.0,
        ),
        (
            format!("hearth_upstream_responses_total{{{label},class=\"2xx\"}}"),
            5.0,
        ),
        ("hearth_failures_total{cause=\"no_route\"}".to_owned(), 1.0),
        (
            "hearth_failures_total{cause=\"connect_refused\"}".to_owned(),
            1.0,
        ),
        ("hearth_answers_total{code=\"502\"}".to_owned(), 1.0),
    ] {
        assert!(
            metric(&text, &series) >= at_least,
            "{series} below {at_least}:\n{text}"
        );
    }
    assert_clean(&text);
}

#[test]
fn promtool_finds_nothing_to_report_in_the_config_centers_metrics() {
    let Some(etcd) = Etcd::start() else { return };
    let toml = format!(
        "workers = 1\n\n[[listen]]\naddr = \"127.0.0.1:0\"\n\n[admin]\naddr = \"127.0.0.1:0\"\n\n\
         [config_center]\ntype = \"etcd\"\nendpoints = [\"{}\"]\n",
        etcd.url()
    );
    let h = Hearth::start(&toml);
    let text = h.metrics();
    assert_eq!(metric(&text, "config_center_connected"), 1.0, "{text}");
    assert_clean(&text);
}

#[test]
fn the_lint_fails_on_a_family_without_help() {
    // The test above would pass if promtool said nothing about anything: show that it speaks.
    let (ok, said) = promtool("# TYPE x_total counter\nx_total 1\n");
    assert!(!ok || !said.trim().is_empty(), "promtool said nothing");
    assert!(said.contains("no help text"), "{said}");
}
