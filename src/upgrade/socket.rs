//! The upgrade socket on disk: where it is, binding it safely, removing it, and who may use it.
//!
//! Whoever connects to it and is answered gets the listening sockets and upstream connections
//! of the running hearth, so it is made mode 0600 and every peer must run as hearth's own user
//! (checked with SO_PEERCRED, [`check_peer`]). A file left at the path by a hearth that died is
//! removed at start, but only when it is a socket nothing answers on; a socket that answers
//! belongs to a running hearth, and is left alone. At exit a hearth removes the file only if it
//! is still the one it made (same device, inode and change time: an inode number alone is
//! reused at once): after an upgrade the path belongs to the new hearth.

use std::ffi::OsStr;
use std::fs;
use std::io;
use std::net::SocketAddr;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use crate::config::Config;
use crate::sys::{self, PeerCred};

/// Where the upgrade socket of `cfg` is: `upgrade_socket` when set, or else a name made of the
/// first listen address in `$XDG_RUNTIME_DIR` (a directory of the user's own), or in `/tmp`
/// with the user id in the name. None, meaning binary upgrade is unavailable, when neither
/// applies: no listener, or a first listener on port 0 (its port changes with every start).
pub fn path_for(cfg: &Config) -> Option<PathBuf> {
    if let Some(p) = &cfg.upgrade_socket {
        return Some(p.clone());
    }
    let runtime_dir = std::env::var_os("XDG_RUNTIME_DIR");
    derived(cfg.listen.first()?.addr, runtime_dir.as_deref(), sys::uid())
}

fn derived(first: SocketAddr, runtime_dir: Option<&OsStr>, uid: u32) -> Option<PathBuf> {
    if first.port() == 0 {
        return None;
    }
    let (ip, port) = (first.ip(), first.port());
    Some(match runtime_dir.filter(|d| !d.is_empty()) {
        Some(dir) => Path::new(dir).join(format!("hearth-{ip}-{port}.sock")),
        None => PathBuf::from(format!("/tmp/hearth-{uid}-{ip}-{port}.sock")),
    })
}

/// The socket file a hearth made, to remove at exit if it is still that one.
#[derive(Debug, Clone)]
pub struct SocketFile {
    path: PathBuf,
    id: Identity,
}

/// Device, inode and change time (seconds, nanoseconds) of a file.
type Identity = (u64, u64, i64, i64);

fn identity(m: &fs::Metadata) -> Identity {
    (m.dev(), m.ino(), m.ctime(), m.ctime_nsec())
}

impl SocketFile {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Removes the file if it is still the one this hearth made.
    pub fn remove(&self) {
        if let Ok(m) = fs::symlink_metadata(&self.path) {
            if identity(&m) == self.id {
                let _ = fs::remove_file(&self.path);
            }
        }
    }
}

/// Binds the upgrade socket at `path`, mode 0600. A file already there is removed first only
/// when it is a socket on which nothing answers; otherwise Err says what is in the way.
pub fn bind(path: &Path) -> Result<(UnixListener, SocketFile), String> {
    let shown = path.display();
    match fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("cannot look at {shown}: {e}")),
        Ok(m) if !m.file_type().is_socket() => {
            return Err(format!(
                "{shown} exists and is not a socket; leaving it alone"
            ))
        }
        Ok(_) => match UnixStream::connect(path) {
            Ok(_) => return Err(format!("another hearth answers on {shown}")),
            Err(_) => {
                fs::remove_file(path)
                    .map_err(|e| format!("cannot remove the stale socket {shown}: {e}"))?;
            }
        },
    }
    let listener =
        UnixListener::bind(path).map_err(|e| format!("cannot listen on {shown}: {e}"))?;
    // Between bind and chmod the file has the umask's mode; the peer check holds anyway.
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))
        .map_err(|e| format!("cannot make {shown} private: {e}"))?;
    let m = fs::symlink_metadata(path).map_err(|e| format!("cannot look at {shown}: {e}"))?;
    Ok((
        listener,
        SocketFile {
            path: path.to_path_buf(),
            id: identity(&m),
        },
    ))
}

/// Who is at the other end of `sock`, if it runs as this process's user; Err says who it is
/// otherwise.
pub fn check_peer(sock: &UnixStream) -> Result<PeerCred, String> {
    let peer = sys::peer_cred(sock).map_err(|e| format!("cannot tell who connected: {e}"))?;
    judge(peer, sys::uid())?;
    Ok(peer)
}

/// Only our own user may take part in an upgrade.
fn judge(peer: PeerCred, ours: u32) -> Result<(), String> {
    if peer.uid == ours {
        Ok(())
    } else {
        Err(format!(
            "pid {} runs as uid {}, not as this hearth's uid {ours}; refused",
            peer.pid, peer.uid
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_path_comes_from_the_first_listener() {
        let a: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        assert_eq!(
            derived(a, Some(OsStr::new("/run/user/1000")), 1000),
            Some(PathBuf::from("/run/user/1000/hearth-127.0.0.1-8080.sock"))
        );
        assert_eq!(
            derived(a, None, 1000),
            Some(PathBuf::from("/tmp/hearth-1000-127.0.0.1-8080.sock"))
        );
        assert_eq!(
            derived(a, Some(OsStr::new("")), 7),
            Some(PathBuf::from("/tmp/hearth-7-127.0.0.1-8080.sock")),
            "an empty XDG_RUNTIME_DIR is unset"
        );
        let v6: SocketAddr = "[::1]:443".parse().unwrap();
        assert_eq!(
            derived(v6, None, 0),
            Some(PathBuf::from("/tmp/hearth-0-::1-443.sock"))
        );
        assert_eq!(derived("127.0.0.1:0".parse().unwrap(), None, 0), None);
    }

    #[test]
    fn only_our_own_user_may_take_part() {
        assert!(judge(PeerCred { pid: 9, uid: 1000 }, 1000).is_ok());
        let e = judge(PeerCred { pid: 9, uid: 1001 }, 1000).unwrap_err();
        assert!(e.contains("uid 1001") && e.contains("uid 1000"), "{e}");
        // A real connection from this process: the same user.
        let (a, _b) = UnixStream::pair().unwrap();
        assert_eq!(check_peer(&a).unwrap().pid, std::process::id());
    }

    #[test]
    fn a_stale_socket_is_replaced_a_live_one_is_not() {
        let dir = std::env::temp_dir().join(format!("hearth-sock-test-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("u.sock");
        let _ = fs::remove_file(&path);
        let (live, file) = bind(&path).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let e = bind(&path).unwrap_err();
        assert!(e.contains("another hearth answers"), "{e}");
        // Closed, the socket file stays behind and is stale.
        drop(live);
        let (_again, second) = bind(&path).expect("a stale socket is replaced");
        // Another socket put in its place (as a new hearth's would be): removing "ours" leaves
        // it alone.
        let other_path = dir.join("v.sock");
        let _ = fs::remove_file(&other_path);
        let (_other, _) = bind(&other_path).unwrap();
        fs::rename(&other_path, &path).unwrap();
        second.remove();
        assert!(path.exists(), "someone else's socket file was removed");
        fs::remove_file(&path).unwrap();
        file.remove();
        let (_third, third) = bind(&path).unwrap();
        third.remove();
        assert!(!path.exists(), "our own file stays behind");
        fs::write(&path, b"not a socket").unwrap();
        let e = bind(&path).unwrap_err();
        assert!(e.contains("not a socket"), "{e}");
        fs::remove_dir_all(&dir).unwrap();
    }
}
