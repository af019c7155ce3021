//! The first half of a live upgrade: the new program, run aside in a
//! process group of its own, says whether it takes our state. It runs
//! beside the event loop (its answer is one more descriptor to poll, its
//! exit one more child to reap, its deadline one more timer), so a program
//! that hangs, or closes its output and lingers, delays nothing; at the
//! deadline the whole group is killed, whatever it started included.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::clock::Instant;
use crate::env::{self, Var, Vars};
use crate::log::errtext;
use crate::spawn::{self, Command, Report};
use crate::sys::{self, Pid, WaitStatus};
use crate::upgrade;

/// How long a new program may take to say whether it takes our state.
const TIMEOUT: Duration = Duration::from_secs(5);
/// How long a killed check may take to be gone.
const KILL_GRACE: Duration = Duration::from_secs(1);
/// The most of its answer that is kept.
const ANSWER_MAX: usize = 4096;

pub struct UpgradeCheck {
    pid: Pid,
    exe: PathBuf,
    cmd: Command,
    /// Its standard output, until end-of-file.
    out: Option<OwnedFd>,
    report: Report,
    answer: Vec<u8>,
    status: Option<WaitStatus>,
    pub deadline: Instant,
    /// Its group was killed at the deadline.
    killed: bool,
}

/// How a check ended.
pub enum Verdict {
    /// The new program takes the state: execute it.
    Accepted,
    /// Carry on as before, for this reason.
    Refused(String),
}

impl UpgradeCheck {
    /// Runs `exe` with our arguments and `state`, in check mode.
    pub fn start(
        exe: &Path,
        argv: &[std::ffi::OsString],
        env: &Vars,
        state: &str,
        now: Instant,
    ) -> Result<UpgradeCheck, String> {
        let over: Vars = vec![
            Var::new(upgrade::STATE_VAR, state),
            Var::new(upgrade::CHECK_VAR, "1"),
        ];
        let env = env::Layered {
            base: env,
            over: &over,
        };
        let cmd = Command::new(argv, None).map_err(|e| errtext(&e))?;
        let cmd = cmd.with_program(exe).map_err(|e| errtext(&e))?;
        let (r, w) = sys::pipe().map_err(|e| errtext(&e))?;
        sys::set_nonblocking(r.as_raw_fd()).map_err(|e| errtext(&e))?;
        let child = spawn::spawn_helper(&cmd, env, &[(w.as_raw_fd(), 1)], true)
            .map_err(|e| format!("unable to run {}: {}", exe.display(), errtext(&e)))?;
        Ok(UpgradeCheck {
            pid: child.pid,
            exe: exe.to_path_buf(),
            cmd,
            out: Some(r),
            report: child.report,
            answer: Vec::new(),
            status: None,
            deadline: crate::clock::after(now, TIMEOUT),
            killed: false,
        })
    }

    pub fn pid(&self) -> Pid {
        self.pid
    }

    /// Its output, while there is more to read.
    pub fn out_fd(&self) -> Option<&OwnedFd> {
        self.out.as_ref()
    }

    /// Reads what its output holds now.
    pub fn on_readable(&mut self) {
        let Some(fd) = &self.out else { return };
        let mut buf = [0u8; 512];
        loop {
            match sys::read(fd.as_raw_fd(), &mut buf) {
                Ok(0) => {
                    self.out = None;
                    return;
                }
                Ok(n) => {
                    let room = ANSWER_MAX.saturating_sub(self.answer.len());
                    self.answer
                        .extend_from_slice(buf.get(..n.min(room)).unwrap_or_default());
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(_) => {
                    self.out = None;
                    return;
                }
            }
        }
    }

    pub fn exited(&mut self, status: WaitStatus) {
        self.status = Some(status);
    }

    /// The verdict, once the program has exited and its output ended. At
    /// the deadline its process group is killed, and the verdict follows
    /// from that; if even that brings no end (something that left the
    /// group holds the output), it is given up KILL_GRACE later.
    pub fn verdict(&mut self, now: Instant) -> Option<Verdict> {
        if let (None, Some(status)) = (&self.out, self.status) {
            return Some(self.judge(status));
        }
        if now < self.deadline {
            return None;
        }
        if self.killed {
            return Some(Verdict::Refused(format!(
                "{} did not answer within {} s",
                self.exe.display(),
                TIMEOUT.as_secs()
            )));
        }
        // The group lives on while a member is left (or its leader is not
        // reaped), so the number still names this group.
        let _ = sys::kill_group(self.pid, libc::SIGKILL);
        self.killed = true;
        self.deadline = crate::clock::after(now, KILL_GRACE);
        None
    }

    fn judge(&self, status: WaitStatus) -> Verdict {
        if let Report::Failed { step, errno } = self.report {
            return Verdict::Refused(spawn::describe_failure(&self.cmd, step, errno));
        }
        let answer = String::from_utf8_lossy(&self.answer);
        if answer.lines().any(|l| l == upgrade::CHECK_OK) {
            return Verdict::Accepted;
        }
        let said = answer.lines().next().unwrap_or("nothing");
        Verdict::Refused(format!(
            "{} refused the state ({}; it said: {said})",
            self.exe.display(),
            status.describe()
        ))
    }
}
