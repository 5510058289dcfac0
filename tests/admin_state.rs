//! `[admin] state`: what the admin API creates survives a restart of the real binary; a state
//! file that does not load stops the start (and `--check`) naming its file, line and key; a
//! change that cannot be written is answered 503, logged, and not applied.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{json, Value};

use common::*;

/// A fresh directory for the state file, removed on drop.
struct StateDir(PathBuf);

impl StateDir {
    fn new(tag: &str) -> StateDir {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let dir =
            std::env::temp_dir().join(format!("hearth-state-{tag}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("creating the state dir");
        StateDir(dir)
    }

    fn file(&self) -> PathBuf {
        self.0.join("admin.jsonl")
    }
}

impl Drop for StateDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `conf` with the admin API on and its state kept in `dir`.
fn with_state(base: Conf, dir: &StateDir) -> String {
    // `admin()` writes the [admin] table last, so the key lands in it.
    let mut toml = base.admin().toml();
    toml.push_str(&format!("state = {:?}\n", dir.file().display().to_string()));
    toml
}

fn admin(h: &Hearth, method: &str, path: &str, body: &str) -> (u16, Value) {
    let mut c = Client::connect(h.admin_addr());
    c.send(&request(
        method,
        path,
        &[("Content-Type", "application/json")],
        body.as_bytes(),
    ));
    let r = c.read_response();
    (
        r.status,
        serde_json::from_slice(&r.body).unwrap_or(Value::Null),
    )
}

#[test]
fn what_the_api_created_is_there_after_a_restart() {
    let (file_node, mock) = (MockUpstream::echo_target(), MockUpstream::echo_target());
    let dir = StateDir::new("restart");
    let toml = with_state(conf(&[file_node.addr()]), &dir);
    let mut first = Hearth::start(&toml);
    let up = json!({"nodes": {mock.addr().to_string(): 1}}).to_string();
    assert_eq!(
        admin(&first, "PUT", "/apisix/admin/upstreams/u1", &up).0,
        201
    );
    let (status, route) = admin(
        &first,
        "PUT",
        "/apisix/admin/routes/r1",
        r#"{"uris":["/api/*"],"upstream_id":"u1","name":"kept"}"#,
    );
    assert_eq!(status, 201, "{route}");
    let (status, posted) = admin(
        &first,
        "POST",
        "/apisix/admin/routes",
        r#"{"uri":"/file-upstream","upstream_id":"backend"}"#,
    );
    assert_eq!(status, 201, "{posted}");
    // Created and deleted: must not come back.
    assert_eq!(
        admin(
            &first,
            "PUT",
            "/apisix/admin/routes/gone",
            r#"{"uri":"/gone","upstream_id":"u1"}"#
        )
        .0,
        201
    );
    assert_eq!(
        admin(&first, "DELETE", "/apisix/admin/routes/gone", "").0,
        200
    );
    assert!(first.terminate().is_some_and(|s| s.success()));

    let second = Hearth::start(&toml);
    assert!(
        second.wait_log(
            &["2 route(s) and 1 upstream(s) loaded from"],
            Duration::from_secs(5)
        ),
        "{}",
        second.logs_text()
    );
    let (status, again) = admin(&second, "GET", "/apisix/admin/routes/r1", "");
    assert_eq!(status, 200, "{again}");
    assert_eq!(
        again["value"], route["value"],
        "the same object, timestamps too"
    );
    let posted_path = posted["key"]
        .as_str()
        .unwrap_or_default()
        .replace("/apisix/", "/apisix/admin/");
    assert_eq!(admin(&second, "GET", &posted_path, "").0, 200);
    assert_eq!(
        admin(&second, "GET", "/apisix/admin/routes/gone", "").0,
        404
    );
    // Live from the first request, not only listed.
    assert_eq!(second.client().get("/api/1").status, 200);
    assert_eq!(mock.requests_to("/api/1").len(), 1);
    assert_eq!(second.client().get("/file-upstream").status, 200);
    assert_eq!(file_node.requests_to("/file-upstream").len(), 1);
    assert_eq!(
        second.client().get("/gone").status,
        200,
        "the file's /* route"
    );
    assert_eq!(file_node.requests_to("/gone").len(), 1);
}

#[test]
fn a_state_file_that_does_not_load_stops_the_start_naming_line_and_key() {
    let file_node = dead_addr();
    let dir = StateDir::new("corrupt");
    let state = "{\"hearth_admin_state\":1}\n\
                 {\"key\":\"upstreams/u1\",\"value\":{\"nodes\":{\"127.0.0.1:9\":1}}}\n\
                 {\"key\":\"routes/r1\",\"value\":{\"uri\":\"/a\",\"upstream_id\":\"u1\",\"hosts\":7}}\n";
    std::fs::write(dir.file(), state).unwrap();
    let config = ConfigFile::new(&with_state(conf(&[file_node]), &dir));
    let want = format!("{}:3: routes/r1.hosts: ", dir.file().display());
    for args in [
        vec!["-c", &config.path_str()],
        vec!["--check", "-c", &config.path_str()],
    ] {
        let exit = run_hearth(&args, Duration::from_secs(10));
        assert_eq!(exit.code(), Some(1), "{args:?}: {exit:?}");
        assert!(
            exit.stderr.contains(&want),
            "{args:?}: want {want:?} in:\n{}",
            exit.stderr
        );
        assert_eq!(
            exit.stderr.matches(&want).count(),
            1,
            "{args:?}: the error is printed once:\n{}",
            exit.stderr
        );
        assert!(!exit.stderr.contains("listening on"), "{}", exit.stderr);
    }
    // A syntax error names its line and column.
    std::fs::write(dir.file(), "{\"hearth_admin_state\":1}\n{\"key\":\n").unwrap();
    let exit = run_hearth(&["-c", &config.path_str()], Duration::from_secs(10));
    let want = format!(
        "{}:2: invalid JSON at column 7: EOF while parsing",
        dir.file().display()
    );
    assert!(
        exit.stderr.contains(&want),
        "want {want:?} in:\n{}",
        exit.stderr
    );
}

#[test]
fn a_change_that_cannot_be_written_is_answered_503_and_not_applied() {
    let (file_node, mock) = (MockUpstream::echo_target(), MockUpstream::echo_target());
    let dir = StateDir::new("unwritable");
    let h = Hearth::start(&with_state(
        conf(&[file_node.addr()])
            .routes("[[routes]]\nuris = [\"/file/*\"]\nupstream = \"backend\"\n"),
        &dir,
    ));
    // The state's directory goes away under the running hearth (a disk unmounted, say).
    std::fs::remove_dir_all(&dir.0).unwrap();
    let route = json!({"uri": "/new", "upstream": {"nodes": {mock.addr().to_string(): 1}}});
    let (status, answer) = admin(&h, "PUT", "/apisix/admin/routes/r1", &route.to_string());
    assert_eq!(status, 503, "{answer}");
    let message = answer["error_msg"].as_str().unwrap_or_default();
    assert!(
        message.contains("not applied: the change could not be written to the admin state file")
            && message.contains("admin.jsonl.tmp"),
        "{answer}"
    );
    assert!(
        h.wait_log(
            &["admin: change not applied, the admin state could not be kept"],
            Duration::from_secs(5)
        ),
        "the failure is logged"
    );
    assert_eq!(admin(&h, "GET", "/apisix/admin/routes/r1", "").0, 404);
    assert_eq!(h.client().get("/new").status, 404, "not routed");
    // Once the directory is back, the same change goes through.
    std::fs::create_dir_all(&dir.0).unwrap();
    assert_eq!(
        admin(&h, "PUT", "/apisix/admin/routes/r1", &route.to_string()).0,
        201
    );
    assert_eq!(h.client().get("/new").status, 200);
    assert!(std::fs::read_to_string(dir.file())
        .unwrap()
        .contains("routes/r1"));
}
