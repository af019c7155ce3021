//! Starting a process: the plan is built in the parent (argv, envp, the
//! PATH search, the descriptor moves), then [`sys::fork_exec`] runs the
//! child's fixed script. Whether the exec failed is known when the spawn
//! returns.

use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use crate::env::{Layered, PID_PLACEHOLDER, Var};
use crate::sys::{self, CStrArray, CStrArrayBuilder, ChildScript, Pid};
use crate::users::Ids;

/// The search path execvp uses when PATH is unset.
const DEFAULT_PATH: &str = "/usr/local/bin:/bin:/usr/bin";

/// A command to run: its arguments (the first names the program) and the
/// directory to start in.
pub struct Command {
    argv: Vec<CString>,
    /// The file to execute, when it is not `argv[0]`.
    program: Option<CString>,
    dir: Option<CString>,
    pub dir_path: Option<PathBuf>,
}

impl Command {
    pub fn new(args: &[OsString], dir: Option<PathBuf>) -> io::Result<Command> {
        let argv = args
            .iter()
            .map(|a| sys::cstring(a))
            .collect::<io::Result<_>>()?;
        let dir_c = dir
            .as_ref()
            .map(|d| sys::cstring(d.as_os_str()))
            .transpose()?;
        Ok(Command {
            argv,
            program: None,
            dir: dir_c,
            dir_path: dir,
        })
    }

    /// The same command, but executing `path` (its `argv[0]` unchanged).
    pub fn with_program(mut self, path: &std::path::Path) -> io::Result<Command> {
        self.program = Some(sys::cstring(path.as_os_str())?);
        Ok(self)
    }

    pub fn program(&self) -> &OsStr {
        OsStr::from_bytes(self.argv.first().map_or(b"", |a| a.as_bytes()))
    }

    /// The paths to try, in order: the program itself if it has a slash,
    /// else each PATH directory (from the environment the program gets).
    fn candidates(&self, env: Layered) -> Vec<CString> {
        if let Some(p) = &self.program {
            return vec![p.clone()];
        }
        let Some(first) = self.argv.first() else {
            return Vec::new();
        };
        let program = first.as_bytes();
        if program.contains(&b'/') {
            return vec![first.clone()];
        }
        let path = env
            .get("PATH")
            .map_or(DEFAULT_PATH.as_bytes(), OsStr::as_bytes);
        path.split(|&b| b == b':')
            .filter_map(|dir| {
                let mut full = if dir.is_empty() {
                    b".".to_vec()
                } else {
                    dir.to_vec()
                };
                full.push(b'/');
                full.extend_from_slice(program);
                CString::new(full).ok()
            })
            .collect()
    }
}

const _: () = assert!(PID_PLACEHOLDER.len() == sys::PID_DIGITS);

/// The executable `program` names: itself if it holds a slash, else the
/// first executable file of that name in `path` (our PATH).
pub fn resolve(program: &OsStr, path: Option<&OsStr>) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let runnable = |p: &std::path::Path| {
        p.metadata()
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if program.as_bytes().contains(&b'/') {
        let p = PathBuf::from(program);
        return runnable(&p).then_some(p);
    }
    let path = path.unwrap_or(OsStr::new(DEFAULT_PATH));
    std::env::split_paths(path)
        .map(|dir| dir.join(program))
        .find(|p| runnable(p))
}

/// The environment as execve takes it (variables holding a NUL are left
/// out), and where LISTEN_PID's value starts in its buffer when it is the
/// placeholder.
pub fn envp(env: Layered) -> (CStrArray, Option<usize>) {
    // Room for both layers whole: a little more than the program gets (a
    // name set over the base counts twice), for one pass instead of two.
    // Only the variables set here are copied: those we were given are
    // passed on as they are.
    let (mut count, mut size) = (0usize, 0usize);
    for var in env.base.iter().chain(env.over) {
        count = count.saturating_add(1);
        if let Var::Set(k, v) = var {
            size = size
                .saturating_add(k.len())
                .saturating_add(v.len())
                .saturating_add(2);
        }
    }
    let mut b = CStrArrayBuilder::with_capacity(count, size);
    let mut pid_slot = None;
    for var in env.iter() {
        let (k, v) = match var {
            Var::Given(s) => {
                b.push_given(*s);
                continue;
            }
            Var::Set(k, v) => (k, v),
        };
        let start = b.push(&[k.as_bytes(), b"=", v.as_bytes()]);
        if k == "LISTEN_PID" && v == PID_PLACEHOLDER {
            pid_slot = start.map(|s| s.saturating_add(k.len()).saturating_add(1));
        }
    }
    (b.finish(), pid_slot)
}

/// A started child and how its exec went ([`Report::Exec`] or
/// [`Report::Failed`]).
pub struct Spawned {
    pub pid: Pid,
    pub report: Report,
}

/// Starts a worker: `cmd` with environment `env` and the descriptor
/// moves `fds` (`(from, to)`: `from`'s file ends up on `to`), leading a
/// process group of its own, so that signals a terminal generates for our
/// group reach us alone.
pub fn spawn(
    cmd: &Command,
    env: Layered,
    fds: &[(RawFd, RawFd)],
    ids: Option<&Ids>,
    pdeathsig: Option<i32>,
) -> io::Result<Spawned> {
    let pdeathsig = pdeathsig.map(|sig| (sig, sys::getpid()));
    spawn_with(cmd, env, fds, None, (ids, pdeathsig), true)
}

/// A helper of our own (a log command, an upgrade check): nothing of ours
/// from descriptor 3 up is inherited, and with `new_group` it leads a
/// process group of its own, to be stopped with all it started.
pub fn spawn_helper(
    cmd: &Command,
    env: Layered,
    fds: &[(RawFd, RawFd)],
    new_group: bool,
) -> io::Result<Spawned> {
    spawn_with(cmd, env, fds, Some(3), (None, None), new_group)
}

fn spawn_with(
    cmd: &Command,
    env: Layered,
    fds: &[(RawFd, RawFd)],
    cloexec_from: Option<RawFd>,
    (ids, pdeathsig): (Option<&Ids>, Option<(i32, sys::Pid)>),
    new_group: bool,
) -> io::Result<Spawned> {
    let (envp, pid_slot) = envp(env);
    let park_fd = fds
        .iter()
        .map(|&(_, to)| to.saturating_add(1))
        .max()
        .unwrap_or(3)
        .max(3);
    let mut script = ChildScript {
        fds: fds.to_vec(),
        dir: cmd.dir.clone(),
        programs: cmd.candidates(env),
        argv: CStrArray::new(&cmd.argv),
        envp,
        park_fd,
        cloexec_from,
        ids: ids.map(|i| (i.uid, i.gid, i.groups.clone())),
        pid_slot,
        new_group,
        pdeathsig,
    };
    let (pid, failure) = sys::fork_exec(&mut script)?;
    let report = match failure {
        None => Report::Exec,
        Some((step, errno)) => Report::Failed { step, errno },
    };
    Ok(Spawned { pid, report })
}

/// How a child's exec went: known at spawn, or read from the exec report
/// pipe a previous program image handed over (end of file once the exec
/// succeeded, `[step, errno as 4 native-endian bytes]` when it failed).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Report {
    /// End of file: the exec succeeded.
    Exec,
    /// The child failed at `step` with `errno`.
    Failed { step: u8, errno: i32 },
    /// Nothing yet.
    Pending,
}

pub fn read_report(fd: &OwnedFd) -> Report {
    let mut buf = [0u8; 5];
    match sys::read(fd.as_raw_fd(), &mut buf) {
        Ok(0) => Report::Exec,
        Ok(5) => Report::Failed {
            step: buf[0],
            errno: i32::from_ne_bytes([buf[1], buf[2], buf[3], buf[4]]),
        },
        Ok(_) => Report::Failed {
            step: sys::STEP_EXEC,
            errno: libc::EIO,
        },
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Report::Pending,
        Err(e) => Report::Failed {
            step: sys::STEP_EXEC,
            errno: e.raw_os_error().unwrap_or(libc::EIO),
        },
    }
}

/// A report's failure in words: `unable to exec /x: No such file or directory`.
pub fn describe_failure(cmd: &Command, step: u8, errno: i32) -> String {
    let why = sys::strerror(errno);
    match step {
        sys::STEP_CHDIR => format!(
            "unable to chdir to {}: {why}",
            cmd.dir_path
                .as_deref()
                .unwrap_or_else(|| "?".as_ref())
                .display()
        ),
        sys::STEP_IDS => format!(
            "unable to switch user for {}: {why}",
            cmd.program().to_string_lossy()
        ),
        sys::STEP_FDS => format!(
            "unable to set up descriptors for {}: {why}",
            cmd.program().to_string_lossy()
        ),
        _ => format!("unable to exec {}: {why}", cmd.program().to_string_lossy()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::{Vars, vars};

    #[test]
    fn envp_holds_every_variable_once_and_finds_the_pid_slot() {
        let base = vars(&[("PATH", "/bin"), ("LISTEN_PID", "1"), ("BAD", "a\0b")]);
        let over = vars(&[("LISTEN_FDS", "1"), ("LISTEN_PID", PID_PLACEHOLDER)]);
        let (array, slot) = envp(Layered {
            base: &base,
            over: &over,
        });
        let strings = array.strings();
        assert_eq!(
            strings,
            [&b"PATH=/bin"[..], b"LISTEN_FDS=1", b"LISTEN_PID=0000000000"]
        );
        let at = slot.unwrap();
        let whole: usize = strings.iter().map(|s| s.len() + 1).sum();
        assert_eq!(at, whole - 1 - PID_PLACEHOLDER.len());
        let (_, none) = envp(Layered {
            base: &base,
            over: &Vars::new(),
        });
        assert_eq!(none, None);
    }

    #[test]
    fn variables_we_were_given_are_passed_on_uncopied() {
        let given = crate::env::given();
        // A name no test runner's environment holds.
        let over = vars(&[("START_SERVER_UNCOPIED_TEST", "1")]);
        let (array, _) = envp(Layered {
            base: &given,
            over: &over,
        });
        let strings = array.strings();
        assert_eq!(strings.len(), given.len() + 1);
        for (s, var) in strings.iter().zip(&given) {
            let crate::env::Var::Given(entry) = var else {
                panic!("{var:?} is not one we were given");
            };
            assert_eq!(s.as_ptr(), entry.as_ptr().cast());
        }
        assert_eq!(strings.last().unwrap(), b"START_SERVER_UNCOPIED_TEST=1");
    }
}
