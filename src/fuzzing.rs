//! Entry points for the fuzz targets in `fuzz/` (built with
//! `--cfg fuzzing`), and for the unit tests that keep what fuzzing found:
//! each takes arbitrary bytes, runs one parser, checks what must hold of
//! what it accepts, and says whether it accepted them (the tests check
//! that their seeds are accepted, so the checks run). A panic here is a
//! finding.

#![allow(
    clippy::panic,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects
)]

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::time::Duration;

use crate::clock::Instant;
use crate::{cli, env, listen, notify, upgrade};

/// Arguments: the bytes cut at NUL, as a kernel would pass them.
fn args(data: &[u8]) -> Vec<OsString> {
    data.split(|&b| b == 0)
        .map(|a| OsString::from_vec(a.to_vec()))
        .collect()
}

/// start_server's command line.
pub fn start_server_args(data: &[u8]) -> bool {
    cli::parse(args(data)).is_ok()
}

/// socketmaster's command line.
pub fn socketmaster_args(data: &[u8]) -> bool {
    cli::parse_socketmaster(args(data)).is_ok()
}

/// A `--port` value, and a socketmaster `-listen` URI: whether either
/// parsed. Hosts are names until they are resolved (" [ [ :0" parses,
/// and fails at binding, as in the original): only that nothing panics
/// is checked.
pub fn listen_specs(data: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(data) else {
        return false;
    };
    let spec = text.parse::<listen::PortSpec>();
    let uri = cli::parse_listen_uri(text);
    spec.is_ok() || uri.is_ok()
}

/// An envdir made of the files the bytes describe (`NAME\0content\0`...):
/// every value it gives is one line, without NUL, short enough to pass
/// to a program. Whether it gave any.
pub fn envdir(data: &[u8]) -> bool {
    // A directory of its own per call: tests call this from several
    // threads at once.
    static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!(
        "start_server-fuzz-envdir-{}-{call}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("make the envdir");
    let mut parts = data.split(|&b| b == 0);
    while let (Some(name), Some(content)) = (parts.next(), parts.next()) {
        let name = String::from_utf8_lossy(name).replace('/', "_");
        if name.is_empty() || name == "." || name == ".." {
            continue;
        }
        let _ = std::fs::write(dir.join(name), content);
    }
    let (vars, _) = env::read_envdir(&dir);
    for var in &vars {
        let (name, value) = (var.name(), var.value());
        let v = value.as_encoded_bytes();
        assert!(!v.contains(&b'\n') && !v.contains(&0), "{name:?}={value:?}");
        assert!(name.len() + v.len() + 2 <= env::ARG_STRLEN_MAX);
    }
    let _ = std::fs::remove_dir_all(&dir);
    !vars.is_empty()
}

/// A datagram on the notification socket.
pub fn notify_message(data: &[u8]) -> bool {
    let Ok(pairs) = notify::parse(data) else {
        return false;
    };
    for (key, _) in pairs {
        assert!(!key.is_empty() && !key.contains('\n'));
    }
    true
}

/// A live-upgrade state: decoded, validated and encoded again, it decodes
/// to the same state, and no accepted state names a pid <= 1 or a
/// descriptor < 3.
pub fn upgrade_state(data: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(data) else {
        return false;
    };
    // A fixed reading of the clocks, far from both ends of their range.
    let clock = upgrade::Clock {
        now: Instant::now() + Duration::from_secs(1 << 20),
        ns: 1 << 62,
    };
    let Ok(state) = upgrade::State::decode(text, &clock) else {
        return false;
    };
    if state.validate().is_err() {
        return false;
    }
    for w in &state.phase.workers {
        assert!(w.pid > 1, "worker pid {}", w.pid);
    }
    for (_, fd, _) in state.descriptors() {
        assert!(fd >= 3, "descriptor {fd}");
    }
    let again = upgrade::State::decode(&state.encode(&clock), &clock).expect("re-decodes");
    assert_eq!(again, state);
    true
}

#[cfg(test)]
mod tests {
    //! What fuzzing found, kept; and each entry point run once, so the
    //! harness stays in step with the code.

    use crate::listen::{Host, PortSpec};

    #[test]
    fn findings() {
        // A host that is no address parses (binding fails later, as in the
        // original): the harness once expected its shown form to parse.
        assert!(super::listen_specs(b" [ [    :0"));
        let spec: PortSpec = " [ [    :0".parse().unwrap();
        assert_eq!((&spec.host, spec.port), (&Host::V4("[    ".into()), 0));
        // Its shown form, "[    :0", reads as an empty host.
        assert_eq!(spec.spec.parse::<PortSpec>(), Err("empty host".into()));
    }

    /// Each entry point accepts its seed, so that every check it makes of
    /// an accepted input runs: the state seed is the one a released build
    /// wrote (two listeners, a pid file, an old and a current worker).
    #[test]
    fn every_entry_point_accepts_its_seed() {
        assert!(super::start_server_args(
            b"--port=80\0--interval=0.5\0--\0true"
        ));
        assert!(super::socketmaster_args(
            b"-listen=tcp://:80\0-command=true"
        ));
        assert!(super::listen_specs(b"[::1]:8080=5"));
        assert!(super::envdir(b"A\0one\ntwo\0B\0\0.hidden\0x"));
        assert!(super::notify_message(b"READY=1\nSTATUS=up"));
        let state = include_str!("../tests/fixtures/state-0.1.0-4ef4b72.txt");
        assert!(super::upgrade_state(state.as_bytes()));
    }

    #[test]
    fn what_each_entry_point_refuses() {
        assert!(!super::start_server_args(b"--interval=x\0true"));
        assert!(!super::socketmaster_args(
            b"-listen=ftp://:80\0-command=true"
        ));
        assert!(!super::listen_specs(b"x80"));
        assert!(!super::envdir(b".hidden\0x"));
        assert!(!super::notify_message(b"READY"));
        assert!(!super::upgrade_state(
            b"start_server-state 1\nworker 1 1 0 done - current\nend\n"
        ));
    }
}
