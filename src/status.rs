//! The status file and the pid file.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use crate::sys::Pid;

/// Rewrites the status file atomically: one `GEN:PID` line per live
/// worker, in generation order, written to `FILE.<our pid>` and renamed
/// over FILE.
pub fn write_status(path: &Path, entries: &[(u64, Pid)]) -> io::Result<()> {
    let mut entries = entries.to_vec();
    entries.sort();
    let mut text = String::new();
    for (generation, pid) in entries {
        text.push_str(&format!("{generation}:{pid}\n"));
    }
    write_atomic(path, &text)
}

/// Writes `text` to `FILE.<our pid>`, then renames it over FILE.
fn write_atomic(path: &Path, text: &str) -> io::Result<()> {
    let tmp = tmp_path(path);
    let result = std::fs::write(&tmp, text).and_then(|()| std::fs::rename(&tmp, path));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Where the state file goes: beside the status file, named after it.
pub fn state_path(status_file: &Path) -> PathBuf {
    let mut path = status_file.as_os_str().to_owned();
    path.push(".state");
    PathBuf::from(path)
}

/// Rewrites the state file: start_server's pid, how many restarts it gave
/// up, then `GEN PID ROLE` for every worker, starting ones included, in
/// generation order.
pub fn write_state(
    path: &Path,
    me: Pid,
    workers: &[(u64, Pid, &str)],
    restarts_given_up: u64,
) -> io::Result<()> {
    let mut workers = workers.to_vec();
    workers.sort();
    let mut text = format!("start_server {me}\nrestarts-given-up {restarts_given_up}\n");
    for (generation, pid, role) in workers {
        text.push_str(&format!("{generation} {pid} {role}\n"));
    }
    write_atomic(path, &text)
}

/// How many restarts the state file says were given up (0 when it says
/// nothing).
pub fn read_restarts_given_up(path: &Path) -> io::Result<u64> {
    let text = std::fs::read_to_string(path)?;
    Ok(text
        .lines()
        .find_map(|l| l.strip_prefix("restarts-given-up ")?.parse().ok())
        .unwrap_or(0))
}

/// The workers the state file lists: `(generation, pid, role)`, in
/// generation order.
pub fn read_state(path: &Path) -> io::Result<Vec<(u64, Pid, String)>> {
    let text = std::fs::read_to_string(path)?;
    Ok(text
        .lines()
        .filter_map(|l| {
            let mut f = l.split(' ');
            let generation = f.next()?.parse().ok()?;
            let pid = f.next()?.parse().ok()?;
            let role = f.next()?.to_string();
            Some((generation, pid, role))
        })
        .collect())
}

/// Checks that the status file can be written where it goes, by creating
/// and removing the temporary file it is written through.
pub fn check_writable(path: &Path) -> io::Result<()> {
    let tmp = tmp_path(path);
    File::create(&tmp)?;
    std::fs::remove_file(&tmp)
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".{}", std::process::id()));
    PathBuf::from(tmp)
}

/// The generations listed in a status file, in ascending order.
pub fn read_generations(path: &Path) -> io::Result<Vec<u64>> {
    let text = std::fs::read_to_string(path)?;
    let mut gens: Vec<u64> = text
        .lines()
        .filter_map(|l| l.split_once(':')?.0.parse().ok())
        .collect();
    gens.sort_unstable();
    gens.dedup();
    Ok(gens)
}

/// The pid file, `flock`ed for as long as start_server lives: a second
/// start_server cannot take it, and `--stop` waits for the lock to go.
pub struct PidFile {
    path: PathBuf,
    file: File,
}

/// Why the pid file could not be taken.
pub enum LockError {
    /// Another live process holds it; its pid, if the file says.
    Held(Option<Pid>),
    Io(io::Error),
}

impl PidFile {
    /// Opens (creating) and locks the pid file without blocking and
    /// without truncating it first, so a running owner's content survives
    /// a failed attempt.
    pub fn lock(path: &Path) -> Result<PidFile, LockError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(LockError::Io)?;
        match file.try_lock() {
            Ok(()) => Ok(PidFile {
                path: path.to_owned(),
                file,
            }),
            Err(std::fs::TryLockError::WouldBlock) => Err(LockError::Held(read_pid(path).ok())),
            Err(std::fs::TryLockError::Error(e)) => Err(LockError::Io(e)),
        }
    }

    /// The pid file the previous program image held locked (live upgrade):
    /// the lock belongs to the open file description, which exec keeps.
    pub fn adopt(path: &Path, fd: std::os::fd::OwnedFd) -> PidFile {
        PidFile {
            path: path.to_owned(),
            file: File::from(fd),
        }
    }

    pub fn raw_fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        self.file.as_raw_fd()
    }

    /// Writes `PID\n`.
    pub fn write(&mut self, pid: Pid) -> io::Result<()> {
        self.file.set_len(0)?;
        (&self.file).write_all(format!("{pid}\n").as_bytes())
    }

    /// Moves the descriptor out of the way of the sockets' places (a
    /// duplicate shares the lock).
    pub fn keep_clear(self, layout: &crate::listen::Layout) -> io::Result<PidFile> {
        let moved = self.file.try_clone().and_then(|f| layout.clear(f.into()));
        match moved {
            Ok(fd) => Ok(PidFile {
                path: self.path,
                file: File::from(fd),
            }),
            Err(e) => {
                self.remove();
                Err(e)
            }
        }
    }

    /// Unlinks the file, then releases the lock by closing it: whoever
    /// waits for the lock finds the file gone.
    pub fn remove(self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Reads the pid a pid file holds.
pub fn read_pid(path: &Path) -> io::Result<Pid> {
    let mut text = String::new();
    File::open(path)?.read_to_string(&mut text)?;
    text.trim()
        .parse()
        .ok()
        .filter(|&p: &Pid| p > 0)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no pid in it"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_roundtrip() {
        let path = std::env::temp_dir().join(format!("ss-status-{}", std::process::id()));
        write_status(&path, &[(10, 5), (9, 4)]).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "9:4\n10:5\n");
        assert_eq!(read_generations(&path).unwrap(), [9, 10]);
        std::fs::remove_file(&path).unwrap();
    }
}
