//! Live reload (SIGHUP): what changes, what stays, and that a bad file changes nothing.

mod common;

use std::time::Duration;

use common::load::Load;
use common::*;

// A route edit under load opens no new upstream connection to a node that stays, and no
// request fails while the new configuration goes in.
#[test]
fn reload_under_load_keeps_pooled_connections_to_unchanged_nodes() {
    let mock = MockUpstream::echo_target();
    let base = conf(&[mock.addr()]);
    let h = base.start();
    let load = Load::start(h.addr(), 2, Duration::from_secs(20), "reload");
    assert!(
        load.advances(0, 200, Duration::from_secs(5)),
        "load did not start"
    );
    let before = mock.connections();
    // Same node, new route table and new timeouts.
    let edited = base
        .clone()
        .upstream("timeout = { connect = \"2s\", send = \"30s\", read = \"30s\" }")
        .routes("[[routes]]\nuris = [\"/load/*\", \"/other\"]\nupstream = \"backend\"\n")
        .toml();
    h.reload_with(&edited);
    assert!(
        wait_until(Duration::from_secs(5), || h
            .logs_text()
            .contains("configuration reloaded")),
        "hearth never reloaded"
    );
    assert!(
        load.advances(load.done(), 200, Duration::from_secs(5)),
        "load stalled after the reload"
    );
    load.finish();
    assert_eq!(
        mock.connections(),
        before,
        "the reload opened upstream connections to an unchanged node"
    );
    // The new route table is live: /nope no longer matches.
    assert_eq!(
        h.client().get("/nope").status,
        404,
        "old catch-all route still routes"
    );
}

// A file that fails validation changes nothing: the old configuration keeps serving.
#[test]
fn broken_reload_leaves_the_old_configuration_serving() {
    let mock = MockUpstream::echo_target();
    let h = conf(&[mock.addr()]).start();
    assert_eq!(h.client().get("/a").status, 200);
    h.reload_with("[[listen]]\naddr = \"127.0.0.1:0\"\n[upstreams.backend]\nnodes = { \"127.0.0.1:1\" = 1 }\nbogus = 1\n");
    assert!(
        wait_until(Duration::from_secs(5), || h
            .logs_text()
            .contains("reload refused")),
        "the broken file was not reported"
    );
    let r = h.client().get("/b");
    assert_eq!(
        (r.status, r.text()),
        (200, "/b".to_string()),
        "old configuration after a broken reload"
    );
    assert_eq!(mock.connections(), 1, "connections after a broken reload");
}

// A node removed by a reload has its idle pooled connection closed; traffic moves to the new node.
#[test]
fn reload_closes_idle_connections_to_removed_nodes() {
    let old = MockUpstream::echo_target();
    let new = MockUpstream::echo_target();
    let h = conf(&[old.addr()]).start();
    assert_eq!(h.client().get("/x").status, 200);
    assert_eq!(old.open_now(), 1, "pooled connection to the old node");
    h.reload_with(&conf(&[new.addr()]).toml());
    assert!(
        wait_until(Duration::from_secs(5), || old.open_now() == 0),
        "idle connection to the removed node stayed open"
    );
    assert_eq!(h.client().get("/y").status, 200);
    assert_eq!(
        new.requests_to("/y").len(),
        1,
        "request after the reload went to the new node"
    );
}
