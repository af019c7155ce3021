//! --watch: paths whose changes restart the workers, watched with inotify
//! from the event loop. Each path is watched through its directory (for
//! events on its name: created, written, replaced by a rename, removed)
//! and, while it exists, itself (a file written or removed, a directory's
//! entries; a symbolic link is followed). After any event on a path its
//! own watch is armed again: an editor's write-then-rename, kubelet's
//! atomic writer (a new timestamped directory, then a `..data` link
//! renamed over the old one, whose directory is removed) and a replaced
//! directory leave the new file watched.

use std::ffi::OsString;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::log::errtext;
use crate::sys;

/// What a directory watch reports about its entries.
const ENTRIES: u32 = libc::IN_CREATE
    | libc::IN_DELETE
    | libc::IN_MOVED_FROM
    | libc::IN_MOVED_TO
    | libc::IN_CLOSE_WRITE
    | libc::IN_MODIFY
    | libc::IN_ATTRIB;
/// What a path's own watch reports: its entries if a directory, and its
/// own writes, removal and moves.
const ITSELF: u32 = ENTRIES | libc::IN_DELETE_SELF | libc::IN_MOVE_SELF;

struct Watched {
    path: PathBuf,
    /// Its directory's watch, and its name there.
    dir_wd: i32,
    name: OsString,
    /// Its own watch, while it exists.
    own_wd: Option<i32>,
}

pub struct Watcher {
    fd: OwnedFd,
    paths: Vec<Watched>,
}

impl Watcher {
    /// Watches `paths`; each one's directory must exist (the path need
    /// not, yet). An error names the path.
    pub fn new(paths: &[PathBuf]) -> Result<Watcher, String> {
        let fd = sys::inotify().map_err(|e| format!("unable to watch: {}", errtext(&e)))?;
        let mut watched = Vec::new();
        for path in paths {
            let dir = match path.parent() {
                Some(d) if !d.as_os_str().is_empty() => d,
                _ => Path::new("."),
            };
            let name = path.file_name().map(OsString::from).unwrap_or_default();
            let dir_wd = sys::add_watch(&fd, dir, ENTRIES | libc::IN_ONLYDIR).map_err(|e| {
                format!(
                    "invalid --watch value '{}': unable to watch its directory: {}",
                    path.display(),
                    errtext(&e)
                )
            })?;
            let own_wd = sys::add_watch(&fd, path, ITSELF).ok();
            watched.push(Watched {
                path: path.clone(),
                dir_wd,
                name,
                own_wd,
            });
        }
        Ok(Watcher { fd, paths: watched })
    }

    pub fn fd(&self) -> &OwnedFd {
        &self.fd
    }

    /// Reads what happened: the paths that changed (each once), their own
    /// watches armed again.
    pub fn changed(&mut self) -> Vec<PathBuf> {
        let events = sys::read_events(&self.fd);
        let overflow = events.iter().any(|e| e.mask & libc::IN_Q_OVERFLOW != 0);
        let mut changed = Vec::new();
        for w in &mut self.paths {
            let hit = overflow
                || events.iter().any(|e| {
                    (e.wd == w.dir_wd && e.name == w.name.as_bytes()) || Some(e.wd) == w.own_wd
                });
            if !hit {
                continue;
            }
            let again = sys::add_watch(&self.fd, &w.path, ITSELF).ok();
            if let Some(old) = w.own_wd
                && again != Some(old)
            {
                sys::rm_watch(&self.fd, old);
            }
            w.own_wd = again;
            changed.push(w.path.clone());
        }
        changed
    }
}
