//! Signals as plain values: numbers, the names people write for them,
//! and the ones the rules act on. No system call here (see `signals` for
//! the signalfd that delivers them).

pub const HUP: i32 = libc::SIGHUP;
pub const INT: i32 = libc::SIGINT;
pub const QUIT: i32 = libc::SIGQUIT;
pub const KILL: i32 = libc::SIGKILL;
pub const USR1: i32 = libc::SIGUSR1;
pub const PIPE: i32 = libc::SIGPIPE;
pub const TERM: i32 = libc::SIGTERM;
pub const CHLD: i32 = libc::SIGCHLD;
pub const CONT: i32 = libc::SIGCONT;
pub const URG: i32 = libc::SIGURG;
pub const WINCH: i32 = libc::SIGWINCH;

/// Names as `kill -l` prints them, without the SIG prefix, and their
/// numbers.
const NAMES: [(&str, i32); 34] = [
    ("HUP", libc::SIGHUP),
    ("INT", libc::SIGINT),
    ("QUIT", libc::SIGQUIT),
    ("ILL", libc::SIGILL),
    ("TRAP", libc::SIGTRAP),
    ("ABRT", libc::SIGABRT),
    ("IOT", libc::SIGIOT),
    ("BUS", libc::SIGBUS),
    ("FPE", libc::SIGFPE),
    ("KILL", libc::SIGKILL),
    ("USR1", libc::SIGUSR1),
    ("SEGV", libc::SIGSEGV),
    ("USR2", libc::SIGUSR2),
    ("PIPE", libc::SIGPIPE),
    ("ALRM", libc::SIGALRM),
    ("TERM", libc::SIGTERM),
    ("STKFLT", libc::SIGSTKFLT),
    ("CHLD", libc::SIGCHLD),
    ("CLD", libc::SIGCHLD),
    ("CONT", libc::SIGCONT),
    ("STOP", libc::SIGSTOP),
    ("TSTP", libc::SIGTSTP),
    ("TTIN", libc::SIGTTIN),
    ("TTOU", libc::SIGTTOU),
    ("URG", libc::SIGURG),
    ("XCPU", libc::SIGXCPU),
    ("XFSZ", libc::SIGXFSZ),
    ("VTALRM", libc::SIGVTALRM),
    ("PROF", libc::SIGPROF),
    ("WINCH", libc::SIGWINCH),
    ("IO", libc::SIGIO),
    ("POLL", libc::SIGPOLL),
    ("PWR", libc::SIGPWR),
    ("SYS", libc::SIGSYS),
];

/// Every (name, number) pair.
fn names() -> impl Iterator<Item = (&'static str, i32)> {
    NAMES.iter().copied()
}

/// A signal number, parsed from `TERM`, `SIGTERM`, `term` or `15`.
pub fn parse(s: &str) -> Option<i32> {
    let upper = s.trim().to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    if let Ok(n) = name.parse::<i32>() {
        return (1..=last()).contains(&n).then_some(n);
    }
    names().find(|&(n, _)| n == name).map(|(_, sig)| sig)
}

/// A signal given on the command line: its number, and how log lines
/// show it, which is how the user wrote it in Server::Starter's
/// normalisation (upper case, without a SIG prefix: `15` stays `15`,
/// `iot` becomes `IOT`).
#[derive(Debug, Clone, PartialEq)]
pub struct Signal {
    pub number: i32,
    pub shown: String,
}

impl Signal {
    /// Parses `TERM`, `SIGterm`, `15`, ...
    pub fn parse(s: &str) -> Option<Signal> {
        let number = parse(s)?;
        let upper = s.trim().to_ascii_uppercase();
        let shown = upper.strip_prefix("SIG").unwrap_or(&upper).to_string();
        Some(Signal { number, shown })
    }

    pub fn of(number: i32) -> Signal {
        Signal {
            number,
            shown: name(number),
        }
    }
}

/// The conventional name of `sig` without the SIG prefix (`TERM`), or
/// its number for a signal without one.
pub fn name(sig: i32) -> String {
    match names().find(|&(_, number)| number == sig) {
        Some((n, _)) => n.to_string(),
        None => sig.to_string(),
    }
}

/// The last signal number on this system (SIGRTMAX: musl and glibc
/// agree on 64 for Linux).
pub fn last() -> i32 {
    libc::SIGRTMAX()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_has_its_number() {
        assert!(names().all(|(n, _)| {
            !n.is_empty()
                && n.bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
        }));
        assert_eq!(name(libc::SIGVTALRM), "VTALRM");
        assert_eq!(name(libc::SIGABRT), "ABRT");
        assert_eq!(name(libc::SIGCHLD), "CHLD");
        assert_eq!(parse("SIGXFSZ"), Some(libc::SIGXFSZ));
        assert_eq!(name(libc::SIGPWR), "PWR");
    }

    #[test]
    fn parses_names_and_numbers() {
        assert_eq!(parse("TERM"), Some(libc::SIGTERM));
        assert_eq!(parse("SIGterm"), Some(libc::SIGTERM));
        assert_eq!(parse("usr1"), Some(libc::SIGUSR1));
        assert_eq!(parse("9"), Some(9));
        assert_eq!(parse("NOSUCH"), None);
        assert_eq!(parse("0"), None);
        assert_eq!(parse("1000"), None);
        assert_eq!(name(libc::SIGHUP), "HUP");
        for (given, number, shown) in [
            ("15", libc::SIGTERM, "15"),
            ("iot", libc::SIGABRT, "IOT"),
            ("SIGusr1", libc::SIGUSR1, "USR1"),
            ("Sig1", libc::SIGHUP, "1"),
        ] {
            assert_eq!(
                Signal::parse(given),
                Some(Signal {
                    number,
                    shown: shown.into()
                })
            );
        }
        assert_eq!(Signal::parse("SIG"), None);
    }
}
