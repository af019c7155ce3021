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

/// Names as `kill -l` prints them, without the SIG prefix, NUL-padded to
/// six bytes (plain bytes: a table of string slices would cost a pointer
/// each, and a single string a split to reach each name), and their
/// numbers.
const NAMES: [([u8; 6], i32); 34] = [
    (*b"HUP\0\0\0", libc::SIGHUP),
    (*b"INT\0\0\0", libc::SIGINT),
    (*b"QUIT\0\0", libc::SIGQUIT),
    (*b"ILL\0\0\0", libc::SIGILL),
    (*b"TRAP\0\0", libc::SIGTRAP),
    (*b"ABRT\0\0", libc::SIGABRT),
    (*b"IOT\0\0\0", libc::SIGIOT),
    (*b"BUS\0\0\0", libc::SIGBUS),
    (*b"FPE\0\0\0", libc::SIGFPE),
    (*b"KILL\0\0", libc::SIGKILL),
    (*b"USR1\0\0", libc::SIGUSR1),
    (*b"SEGV\0\0", libc::SIGSEGV),
    (*b"USR2\0\0", libc::SIGUSR2),
    (*b"PIPE\0\0", libc::SIGPIPE),
    (*b"ALRM\0\0", libc::SIGALRM),
    (*b"TERM\0\0", libc::SIGTERM),
    (*b"STKFLT", libc::SIGSTKFLT),
    (*b"CHLD\0\0", libc::SIGCHLD),
    (*b"CLD\0\0\0", libc::SIGCHLD),
    (*b"CONT\0\0", libc::SIGCONT),
    (*b"STOP\0\0", libc::SIGSTOP),
    (*b"TSTP\0\0", libc::SIGTSTP),
    (*b"TTIN\0\0", libc::SIGTTIN),
    (*b"TTOU\0\0", libc::SIGTTOU),
    (*b"URG\0\0\0", libc::SIGURG),
    (*b"XCPU\0\0", libc::SIGXCPU),
    (*b"XFSZ\0\0", libc::SIGXFSZ),
    (*b"VTALRM", libc::SIGVTALRM),
    (*b"PROF\0\0", libc::SIGPROF),
    (*b"WINCH\0", libc::SIGWINCH),
    (*b"IO\0\0\0\0", libc::SIGIO),
    (*b"POLL\0\0", libc::SIGPOLL),
    (*b"PWR\0\0\0", libc::SIGPWR),
    (*b"SYS\0\0\0", libc::SIGSYS),
];

/// A name of the table, without its padding.
fn unpadded(name: &[u8; 6]) -> &str {
    let len = name.iter().position(|&b| b == 0).unwrap_or(name.len());
    std::str::from_utf8(name.get(..len).unwrap_or_default()).unwrap_or_default()
}

/// Every (name, number) pair.
fn names() -> impl Iterator<Item = (&'static str, i32)> {
    NAMES.iter().map(|(name, number)| (unpadded(name), *number))
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
    match NAMES.iter().find(|&&(_, number)| number == sig) {
        Some((n, _)) => unpadded(n).to_string(),
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
