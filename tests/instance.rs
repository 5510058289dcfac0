//! One hearth per listen address. hearth's cores share each address through SO_REUSEPORT, which
//! would also let a second hearth join it and silently take part of the connections; hearth
//! refuses to start where another process already listens, and still restarts at once on the
//! address it just left.

mod common;

use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use common::*;

const EXIT_WITHIN: Duration = Duration::from_secs(10);

/// `toml` (written by `Conf`, whose only `[[listen]]` is on 127.0.0.1:0) listening on `addr`.
fn on(toml: &str, addr: SocketAddr) -> String {
    let listen = "[[listen]]\naddr = \"127.0.0.1:0\"";
    assert!(toml.contains(listen), "test bug: {toml}");
    toml.replacen(listen, &format!("[[listen]]\naddr = \"{addr}\""), 1)
}

/// Runs hearth on `toml` and expects it to refuse to start because `addr` is taken.
fn assert_refused(toml: &str, addr: SocketAddr) {
    let file = ConfigFile::new(toml);
    let exit = run_hearth(&["-c", &file.path_str()], EXIT_WITHIN);
    assert_eq!(exit.code(), Some(1), "{exit:?}");
    let want = format!("{addr} is already in use by another process");
    assert!(
        exit.stderr.contains(&want),
        "want {want:?} in:\n{}",
        exit.stderr
    );
    assert!(
        !exit.stderr.contains("listening on"),
        "nothing may have listened:\n{}",
        exit.stderr
    );
}

#[test]
fn an_address_another_process_listens_on_stops_the_start() {
    let upstream = MockUpstream::echo_target();
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    assert_refused(&on(&conf(&[upstream.addr()]).toml(), addr), addr);
}

#[test]
fn a_second_hearth_on_the_same_address_refuses_and_the_first_keeps_serving() {
    let upstream = MockUpstream::echo_target();
    let first = conf(&[upstream.addr()]).workers(2).start();
    let addr = first.addr();
    assert_refused(&on(&conf(&[upstream.addr()]).toml(), addr), addr);
    // Every connection still reaches the first: nothing else joined its address.
    for _ in 0..8 {
        assert_eq!(Client::connect(addr).get("/x").status, 200);
    }
    assert_eq!(upstream.request_count(), 8);
}

#[test]
fn a_restart_on_the_address_just_left_is_not_refused() {
    let upstream = MockUpstream::echo_target();
    let addr = dead_addr();
    let toml = on(&conf(&[upstream.addr()]).toml(), addr);
    let mut first = Hearth::start(&toml);
    // hearth closes these connections first, so they linger in TIME_WAIT on its address: the
    // check must not take them for a listener.
    for _ in 0..4 {
        let mut c = Client::connect(addr);
        c.send(&request("GET", "/x", &[("Connection", "close")], b""));
        assert_eq!(c.read_response().status, 200);
        assert!(c.is_closed(Duration::from_secs(5)));
    }
    assert!(first.terminate().is_some_and(|s| s.success()));
    let second = Hearth::start(&toml);
    assert_eq!(second.addr(), addr);
    assert_eq!(second.client().get("/x").status, 200);
}
