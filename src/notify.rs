//! The socket workers send `READY=1` to (`--readiness=notify`), or
//! einhorn's `worker:ack` (`--readiness=einhorn`: a stream socket, as
//! einhorn's EINHORN_SOCK_PATH is).
//!
//! NOTIFY_SOCKET is a filesystem path, as systemd always hands out: many
//! sd_notify libraries (the `sd-notify` crate, Ruby's `sd_notify` gem,
//! which puma uses) connect only to paths. The socket lives in a private
//! directory of its own, made under the first of $RUNTIME_DIRECTORY,
//! $XDG_RUNTIME_DIR, $TMPDIR and /tmp where that works; only where none is
//! writable (a scratch image without /tmp) does it fall back to an
//! abstract address, with a warning. Senders are told apart by their
//! kernel-checked pid, not by who can reach the socket.

use std::fmt;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::clock::Instant;
use crate::listen::{SocketFile, socket_file_id};
use crate::log::errtext;
use crate::log::{note, warning};
use crate::sys;
use crate::users::Ids;

/// Which readiness messages a socket takes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Channel {
    /// sd_notify datagrams (NOTIFY_SOCKET).
    Notify,
    /// einhorn's control connections (EINHORN_SOCK_PATH).
    Einhorn,
}

impl Channel {
    /// The socket's name in its directory.
    fn name(self) -> &'static str {
        match self {
            Channel::Notify => "notify",
            Channel::Einhorn => "einhorn.sock",
        }
    }

    fn socket(self, path: Option<&Path>) -> std::io::Result<(OwnedFd, String)> {
        match self {
            Channel::Notify => sys::notify_socket(path),
            Channel::Einhorn => sys::control_socket(path),
        }
    }
}
/// Attempts at a fresh directory name per parent directory.
const ATTEMPTS: u32 = 100;

/// Readiness by notification, or by einhorn's ACK.
pub struct Notify {
    pub channel: Channel,
    pub fd: OwnedFd,
    /// The NOTIFY_SOCKET (or EINHORN_SOCK_PATH) value workers get.
    pub address: String,
    /// The socket file, when the address is a path: removed at exit with
    /// its directory.
    pub file: Option<SocketFile>,
}

impl Notify {
    /// Creates the socket. With `ids` (workers run as another user), the
    /// directory and the socket are group-owned by the workers' group,
    /// which may reach the socket but not change the directory.
    pub fn create(channel: Channel, ids: Option<&Ids>) -> std::io::Result<Notify> {
        let mut last = None;
        for parent in parents() {
            match create_in(channel, &parent, ids) {
                Ok((fd, path)) => {
                    return Ok(Notify {
                        channel,
                        fd,
                        address: path.to_string_lossy().into_owned(),
                        file: Some(SocketFile {
                            id: socket_file_id(&path),
                            path,
                        }),
                    });
                }
                Err(e) => last = Some((parent, e)),
            }
        }
        let (fd, address) = channel.socket(None)?;
        let why = last.map_or(String::new(), |(dir, e)| {
            format!(" (in {}: {})", dir.display(), errtext(&e))
        });
        warning!(
            "no writable directory for the notification socket{why}: using the abstract \
             address {address}, which some sd_notify libraries cannot reach"
        );
        Ok(Notify {
            channel,
            fd,
            address,
            file: None,
        })
    }

    /// The socket file and its directory, for one handed over by a live
    /// upgrade: the directory is the file's parent.
    pub fn file_of(address: &str, id: Option<(u64, u64)>) -> Option<SocketFile> {
        address.starts_with('/').then(|| SocketFile {
            path: PathBuf::from(address),
            id,
        })
    }

    /// Removes the socket file, if it is still ours, and its directory.
    pub fn remove(&self) {
        if let Some(file) = &self.file {
            file.remove();
            if let Some(dir) = file.path.parent() {
                let _ = std::fs::remove_dir(dir);
            }
        }
    }
}

/// Where the private directory may go, in order of preference.
fn parents() -> Vec<PathBuf> {
    let var = |name: &str| {
        std::env::var_os(name)
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
    };
    // systemd lists several runtime directories separated by colons.
    let runtime = std::env::var("RUNTIME_DIRECTORY")
        .ok()
        .and_then(|v| v.split(':').next().map(PathBuf::from))
        .filter(|p| p.is_absolute());
    let mut out: Vec<PathBuf> = Vec::new();
    for p in [runtime, var("XDG_RUNTIME_DIR"), var("TMPDIR")]
        .into_iter()
        .flatten()
        .chain([PathBuf::from("/tmp")])
    {
        if !out.contains(&p) {
            out.push(p);
        }
    }
    out
}

/// A fresh directory (mode 0700, or 0710 for the workers' group) in
/// `parent`, and the socket bound in it.
fn create_in(
    channel: Channel,
    parent: &Path,
    ids: Option<&Ids>,
) -> std::io::Result<(OwnedFd, PathBuf)> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let pid = sys::getpid();
    let mut attempt = 0;
    let dir = loop {
        let dir = parent.join(format!("start_server.{pid}.{attempt}"));
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => break dir,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && attempt < ATTEMPTS => {
                attempt = attempt.saturating_add(1)
            }
            Err(e) => return Err(e),
        }
    };
    let path = dir.join(channel.name());
    let made = (|| {
        let (fd, _) = channel.socket(Some(&path))?;
        if let Some(ids) = ids {
            for (p, mode) in [(&dir, 0o710), (&path, 0o660)] {
                std::os::unix::fs::chown(p, None, Some(ids.gid))?;
                std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))?;
            }
        }
        Ok(fd)
    })();
    match made {
        Ok(fd) => Ok((fd, path)),
        Err(e) => {
            let _ = std::fs::remove_file(&path);
            let _ = std::fs::remove_dir(&dir);
            Err(e)
        }
    }
}

// ------------------------------------------------------ the messages

/// The largest notification read whole; bigger ones are rejected.
pub const MESSAGE_MAX: usize = 4096;
/// Notifications handled per turn of the loop, so that a flood cannot
/// starve signals and reaping.
pub const BATCH: usize = 256;
/// Ignored notifications described in full per IGNORED_WINDOW.
const IGNORED_SHOWN: usize = 3;
const IGNORED_WINDOW: Duration = Duration::from_secs(1);

/// A message's `KEY=VALUE` lines (several per datagram, as sd_notify
/// sends them), or why it is not one: not UTF-8, or a line without a key.
pub fn parse(data: &[u8]) -> Result<Vec<(&str, &str)>, String> {
    let text = std::str::from_utf8(data).map_err(|_| "not UTF-8".to_string())?;
    text.split('\n')
        .filter(|l| !l.is_empty())
        .map(|line| {
            line.split_once('=')
                .filter(|(k, _)| !k.is_empty())
                .ok_or_else(|| format!("malformed line \"{line}\""))
        })
        .collect()
}

/// A rate limit on a kind of line (ignored notifications, workers'
/// STATUS= texts): a few a second in full, the rest counted and summed up
/// once the second is over, so that a flood costs a few lines, not one
/// each.
pub struct Limited {
    /// What the summary calls the suppressed lines.
    what: &'static str,
    window_end: Instant,
    shown: usize,
    suppressed: u64,
}

impl Limited {
    pub fn new(what: &'static str, now: Instant) -> Limited {
        Limited {
            what,
            window_end: now,
            shown: 0,
            suppressed: 0,
        }
    }

    /// Logs `line` (a warning when `warn`), unless too many came this
    /// second.
    pub fn report(&mut self, line: fmt::Arguments, warn: bool, now: Instant) {
        if now >= self.window_end {
            self.flush();
            self.window_end = crate::clock::after(now, IGNORED_WINDOW);
            self.shown = 0;
        }
        if self.shown < IGNORED_SHOWN {
            self.shown = self.shown.saturating_add(1);
            match warn {
                true => warning!("{line}"),
                false => note!("{line}"),
            }
        } else {
            self.suppressed = self.suppressed.saturating_add(1);
        }
    }

    /// When the count of suppressed lines is due, if there is one.
    pub fn deadline(&self) -> Option<Instant> {
        (self.suppressed > 0).then_some(self.window_end)
    }

    /// Says how many were suppressed, once their window is over.
    pub fn on_timer(&mut self, now: Instant) {
        if now >= self.window_end {
            self.flush();
        }
    }

    fn flush(&mut self) {
        if self.suppressed > 0 {
            note!("{} more {} not shown", self.suppressed, self.what);
            self.suppressed = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn messages_are_key_value_lines() {
        assert_eq!(
            super::parse(b"READY=1\nSTATUS=up, a=b\n"),
            Ok(vec![("READY", "1"), ("STATUS", "up, a=b")])
        );
        assert!(super::parse(b"READY").unwrap_err().contains("malformed"));
        assert!(super::parse(b"=1").is_err());
        assert!(super::parse(b"\xff").unwrap_err().contains("UTF-8"));
    }
}
