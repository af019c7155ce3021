//! The status file and the pid file.

use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use crate::rules::Shows;
use crate::sys::Pid;

/// Rewrites the status file atomically: one `GEN:PID` line per live
/// worker, in the order given (generation, then slot), written to
/// `FILE.<our pid>` and renamed over FILE.
pub fn write_status(path: &Path, entries: &[(u64, Pid)]) -> io::Result<()> {
    let mut text = String::new();
    for (generation, pid) in entries {
        let _ = writeln!(text, "{generation}:{pid}");
    }
    write_atomic(path, &text)
}

/// Writes `text` to `FILE.<our pid>`, then renames it over FILE, which
/// must be a regular file or absent. The temporary file is made anew
/// (O_EXCL, which follows no symlink), so that nobody can point it at
/// another file.
fn write_atomic(path: &Path, text: &str) -> io::Result<()> {
    if let Err(why) = regular_or_absent(path) {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, why));
    }
    let tmp = tmp_path(path);
    let result = create_new(&tmp)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .and_then(|()| std::fs::rename(&tmp, path));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Creates `path` anew. A leftover of that name (ours: it carries our
/// pid) is removed first; a symlink there is removed, never followed.
fn create_new(path: &Path) -> io::Result<File> {
    let open = || OpenOptions::new().write(true).create_new(true).open(path);
    match open() {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            std::fs::remove_file(path)?;
            open()
        }
        other => other,
    }
}

/// A pid or status file may only be a regular file, or absent: never a
/// device, a FIFO, a directory or a symlink, which writing, renaming over
/// or removing would harm. The reason, when it is something else.
pub fn regular_or_absent(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::FileTypeExt;
    let t = match std::fs::symlink_metadata(path) {
        Ok(m) => m.file_type(),
        Err(_) => return Ok(()),
    };
    let kind = if t.is_file() {
        return Ok(());
    } else if t.is_dir() {
        "a directory"
    } else if t.is_symlink() {
        "a symlink"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_char_device() || t.is_block_device() {
        "a device"
    } else if t.is_socket() {
        "a socket"
    } else {
        "not a regular file"
    };
    Err(format!("it is {kind}, not a regular file"))
}

/// Removes `path` if it is a regular file (at exit: whatever else took
/// its place is not ours).
pub fn remove_regular(path: &Path) {
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.is_file()) {
        let _ = std::fs::remove_file(path);
    }
}

/// The most read from a pid, status or state file.
const READ_MAX: u64 = 1 << 20;

/// Opens a file that must be regular for reading, without waiting (a
/// FIFO opens at once, and is then refused).
pub fn open_regular(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    if !file.metadata()?.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "it is not a regular file",
        ));
    }
    Ok(file)
}

/// The text of a regular file (its first MiB).
fn read_regular(path: &Path) -> io::Result<String> {
    let mut text = String::new();
    open_regular(path)?
        .take(READ_MAX)
        .read_to_string(&mut text)?;
    Ok(text)
}

/// Where the state file goes: beside the status file, named after it.
pub fn state_path(status_file: &Path) -> PathBuf {
    let mut path = status_file.as_os_str().to_owned();
    path.push(".state");
    PathBuf::from(path)
}

/// Rewrites the state file: start_server's pid, how many restarts it gave
/// up, `workers N` with --workers, then `GEN PID ROLE SLOT` for every
/// worker, starting ones included, in the order given.
pub fn write_state(
    path: &Path,
    me: Pid,
    workers: &[Shows],
    count: Option<u32>,
    restarts_given_up: u64,
) -> io::Result<()> {
    let mut text = format!("start_server {me}\nrestarts-given-up {restarts_given_up}\n");
    if let Some(n) = count {
        let _ = writeln!(text, "workers {n}");
    }
    for w in workers {
        let (g, pid, role, slot) = (w.generation, w.pid, w.role.word(), w.slot);
        let _ = writeln!(text, "{g} {pid} {role} {slot}");
    }
    write_atomic(path, &text)
}

/// A worker as the state file lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct Listed {
    pub generation: u64,
    pub pid: Pid,
    pub role: String,
    /// Absent from state files of versions that did not write it.
    pub slot: Option<u32>,
}

/// What the state file says: the workers, and `workers N` if it says.
pub struct StateFile {
    pub workers: Vec<Listed>,
    pub count: Option<u32>,
}

/// How many restarts the state file says were given up (0 when it says
/// nothing).
pub fn read_restarts_given_up(path: &Path) -> io::Result<u64> {
    let text = read_regular(path)?;
    Ok(text
        .lines()
        .find_map(|l| l.strip_prefix("restarts-given-up ")?.parse().ok())
        .unwrap_or(0))
}

/// What the state file lists, in its order.
pub fn read_state(path: &Path) -> io::Result<StateFile> {
    let text = read_regular(path)?;
    let count = text
        .lines()
        .find_map(|l| l.strip_prefix("workers ")?.parse().ok());
    let workers = text
        .lines()
        .filter_map(|l| {
            let mut f = l.split(' ');
            let generation = f.next()?.parse().ok()?;
            let pid = f.next()?.parse().ok()?;
            let role = f.next()?.to_string();
            let slot = f.next().and_then(|s| s.parse().ok());
            Some(Listed {
                generation,
                pid,
                role,
                slot,
            })
        })
        .collect();
    Ok(StateFile { workers, count })
}

/// Checks that the status file can be written where it goes, by creating
/// and removing the temporary file it is written through.
pub fn check_writable(path: &Path) -> io::Result<()> {
    regular_or_absent(path).map_err(|why| io::Error::new(io::ErrorKind::InvalidInput, why))?;
    let tmp = tmp_path(path);
    create_new(&tmp)?;
    std::fs::remove_file(&tmp)
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".{}", std::process::id()));
    PathBuf::from(tmp)
}

/// The generations listed in a status file, in ascending order.
pub fn read_generations(path: &Path) -> io::Result<Vec<u64>> {
    let text = read_regular(path)?;
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
        use std::os::unix::fs::OpenOptionsExt;
        let not_regular =
            |why: String| LockError::Io(io::Error::new(io::ErrorKind::InvalidInput, why));
        regular_or_absent(path).map_err(not_regular)?;
        // No symlink followed, no FIFO waited on; checked again once open.
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(path)
            .map_err(LockError::Io)?;
        if !file.metadata().is_ok_and(|m| m.is_file()) {
            return Err(not_regular("it is not a regular file".into()));
        }
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

    /// Unlinks the file (if the path still names it), then releases the
    /// lock by closing it: whoever waits for the lock finds the file gone.
    pub fn remove(self) {
        use std::os::unix::fs::MetadataExt;
        let ours = self.file.metadata().ok().map(|m| (m.dev(), m.ino()));
        let there = std::fs::symlink_metadata(&self.path)
            .ok()
            .filter(|m| m.is_file())
            .map(|m| (m.dev(), m.ino()));
        if ours.is_some() && ours == there {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Reads the pid a pid file holds.
pub fn read_pid(path: &Path) -> io::Result<Pid> {
    let mut text = String::new();
    open_regular(path)?
        .take(READ_MAX)
        .read_to_string(&mut text)?;
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
        write_status(&path, &[(9, 4), (10, 5)]).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "9:4\n10:5\n");
        assert_eq!(read_generations(&path).unwrap(), [9, 10]);
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn a_symlink_at_the_temporary_name_is_not_followed() {
        let dir = std::env::temp_dir().join(format!("ss-status-link-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (path, victim) = (dir.join("status"), dir.join("victim"));
        std::fs::write(&victim, "precious\n").unwrap();
        std::os::unix::fs::symlink(&victim, tmp_path(&path)).unwrap();
        write_status(&path, &[(1, 5)]).unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "1:5\n");
        // Nor is a symlink where the status file goes replaced.
        std::fs::remove_file(&path).unwrap();
        std::os::unix::fs::symlink(&victim, &path).unwrap();
        assert!(write_status(&path, &[(1, 5)]).is_err());
        assert!(std::fs::symlink_metadata(&path).unwrap().is_symlink());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
