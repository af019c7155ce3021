//! Processes as plain values: pids, and wait statuses read without a
//! system call (Linux's encoding, as wait(2)'s macros read it).

use crate::sig;

pub type Pid = i32;

/// How a child ended, as waitpid(2) reported it. The raw number is what
/// Server::Starter prints (`status:768` for `exit 3`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WaitStatus(pub i32);

impl WaitStatus {
    #[cfg(test)]
    pub fn exited(code: u8) -> WaitStatus {
        WaitStatus(i32::from(code) << 8)
    }

    #[cfg(test)]
    pub fn killed(sig: i32) -> WaitStatus {
        WaitStatus(sig & 0x7f)
    }

    /// The exit code, if it exited.
    pub fn code(self) -> Option<i32> {
        (self.0 & 0x7f == 0).then_some((self.0 >> 8) & 0xff)
    }

    /// The signal that killed it, if one did.
    pub fn signal(self) -> Option<i32> {
        let sig = self.0 & 0x7f;
        (sig != 0 && sig != 0x7f).then_some(sig)
    }

    /// In words: `exit status 1`, `killed by TERM`.
    pub fn describe(self) -> String {
        match (self.code(), self.signal()) {
            (Some(code), _) => format!("exit status {code}"),
            (_, Some(sig)) => format!("killed by {}", sig::name(sig)),
            _ => format!("status {self}"),
        }
    }
}

impl std::fmt::Display for WaitStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_as_the_kernel_encodes_them() {
        for code in [0u8, 1, 3, 255] {
            let s = WaitStatus::exited(code);
            assert!(libc::WIFEXITED(s.0) && libc::WEXITSTATUS(s.0) == i32::from(code));
            assert_eq!((s.code(), s.signal()), (Some(i32::from(code)), None));
        }
        for sig in [libc::SIGTERM, libc::SIGKILL, libc::SIGRTMAX()] {
            let s = WaitStatus::killed(sig);
            assert!(libc::WIFSIGNALED(s.0) && libc::WTERMSIG(s.0) == sig);
            assert_eq!((s.code(), s.signal()), (None, Some(sig)));
        }
        // Killed with a core dump.
        let dumped = WaitStatus(libc::SIGSEGV | 0x80);
        assert_eq!(dumped.signal(), Some(libc::SIGSEGV));
        assert_eq!(WaitStatus::exited(3).to_string(), "768");
        assert_eq!(
            WaitStatus::killed(libc::SIGTERM).describe(),
            "killed by TERM"
        );
    }
}
