//! What start_server is asked to do, as plain data: filled by the
//! command-line parsers (`cli`), read by start-up and the supervisor.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use crate::listen::PortSpec;
use crate::sig;

/// Where `--log-file` sends start_server's (and the workers') output.
#[derive(Debug, Clone, PartialEq)]
pub enum LogTarget {
    File(PathBuf),
    /// `| cmd args`, run by `/bin/sh -c`.
    Command(OsString),
}

/// Everything `start_server` needs to run, as given on the command line.
#[derive(Debug, Default)]
pub struct Config {
    pub ports: Vec<PortSpec>,
    pub paths: Vec<PathBuf>,
    pub dir: Option<PathBuf>,
    pub pid_file: Option<PathBuf>,
    pub status_file: Option<PathBuf>,
    pub envdir: Option<PathBuf>,
    pub log_file: Option<LogTarget>,
    pub daemonize: bool,
    pub backlog: Option<i32>,
    /// What the rules read: timings, signals, retries.
    pub rules: Rules,
    /// Signal each worker's whole process group.
    pub signal_group: bool,
    /// How long the client modes wait at most.
    pub timeout: Option<Duration>,
    /// Which fd-passing conventions the workers' environment speaks.
    pub protocols: Protocols,
    /// Explicit LISTEN_FDNAMES names, in socket order.
    pub fd_names: Vec<String>,
    /// The user workers run as (`--user`, `-user`).
    pub user: Option<String>,
    /// --pdeathsig: what each worker gets if start_server dies.
    pub pdeathsig: Option<i32>,
    /// --watch: paths whose changes restart the workers.
    pub watch: Vec<PathBuf>,
    /// Which program's behaviour this is.
    pub personality: Personality,
    /// socketmaster's `fd://N`: sockets already open on these descriptors.
    pub open_fds: Vec<std::os::fd::RawFd>,
    /// socketmaster's `-syslog`.
    pub syslog: bool,
    /// Settings that Server::Starter also reads from the environment
    /// (ENABLE_AUTO_RESTART, AUTO_RESTART_INTERVAL, KILL_OLD_DELAY) as
    /// given by options: they override the environment and, as in the
    /// original, are exported to the workers.
    pub settings: Vec<(&'static str, String)>,
    pub command: Vec<OsString>,
}

/// The fd-passing conventions a worker's environment can carry.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Protocols {
    /// SERVER_STARTER_PORT (and SERVER_STARTER_GENERATION).
    pub server_starter: bool,
    /// LISTEN_FDS, LISTEN_PID, LISTEN_FDNAMES.
    pub systemd: bool,
    /// EINHORN_FD_COUNT, `EINHORN_FD_<n>`, EINHORN_FDS.
    pub einhorn: bool,
}

impl Default for Protocols {
    fn default() -> Protocols {
        Protocols {
            server_starter: true,
            systemd: true,
            einhorn: true,
        }
    }
}

/// The interface the binary speaks, chosen by the name it is run under.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Personality {
    /// Server::Starter's `start_server`.
    #[default]
    StartServer,
    /// zimbatm's `socketmaster`: no respawn, signals forwarded, output
    /// relayed with a `[PID] ` prefix, exit when no worker is left.
    Socketmaster,
}

/// Where the supervisor's rules differ between the personalities: one
/// value, consulted where each rule applies.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Policy {
    /// Auto-restart and the kill-old delay are read from the environment
    /// and the envdir (start_server); otherwise they are off.
    pub env_settings: bool,
    /// Workers' output is captured and relayed with a `[PID] ` prefix.
    pub relay_output: bool,
    /// A dead worker is replaced; otherwise start_server exits, with the
    /// last worker's status, once none is left.
    pub respawn: bool,
    /// Shutdown signals reach the workers as they are; otherwise TERM
    /// becomes --signal-on-term and INT and QUIT become TERM.
    pub forward_as_is: bool,
    /// The signal that upgrades start_server in place.
    pub upgrade_signal: i32,
    /// The command is looked up in PATH once, at start-up (otherwise at
    /// every spawn, for a deploy that changes it).
    pub resolve_command: bool,
    /// How its options are written in messages: `--user`, `-user`.
    pub flag_prefix: &'static str,
    /// Start-up says `start_server (pid:N) starting now...`.
    pub start_line: bool,
}

impl Personality {
    pub fn policy(self) -> Policy {
        match self {
            Personality::StartServer => Policy {
                env_settings: true,
                relay_output: false,
                respawn: true,
                forward_as_is: false,
                upgrade_signal: libc::SIGUSR2,
                resolve_command: false,
                flag_prefix: "--",
                start_line: true,
            },
            Personality::Socketmaster => Policy {
                env_settings: false,
                relay_output: true,
                respawn: false,
                forward_as_is: true,
                upgrade_signal: libc::SIGUSR1,
                resolve_command: true,
                flag_prefix: "-",
                start_line: false,
            },
        }
    }
}

/// What makes a new worker count as started.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Readiness {
    /// Alive after --interval (Server::Starter's rule).
    #[default]
    Interval,
    /// It sent READY=1 on NOTIFY_SOCKET.
    Notify,
    /// The kernel shows it waiting on a listening socket.
    Accept,
    /// It sent einhorn's `worker:ack` on EINHORN_SOCK_PATH.
    Einhorn,
}

impl Readiness {
    pub const NAMES: &[(&str, Readiness)] = &[
        ("interval", Readiness::Interval),
        ("notify", Readiness::Notify),
        ("accept", Readiness::Accept),
        ("einhorn", Readiness::Einhorn),
    ];

    pub fn parse(s: &str) -> Option<Readiness> {
        Readiness::NAMES
            .iter()
            .find(|(n, _)| *n == s)
            .map(|(_, r)| *r)
    }
}

/// The settings Server::Starter reads from its environment, which the
/// envdir can change while start_server runs. Log lines show the two
/// durations as written (`KILL_OLD_DELAY=01` sleeps `01 secs`).
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub auto_restart: bool,
    pub auto_restart_interval: Duration,
    pub auto_restart_interval_shown: String,
    pub kill_old_delay: Duration,
    pub kill_old_delay_shown: String,
}

pub const DEFAULT_AUTO_RESTART_INTERVAL: Duration = Duration::from_secs(360);

/// The default of --ready-timeout.
pub const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(60);

/// What the rules read (see `rules`), as the parsers fill it: each
/// default is written here, once.
#[derive(Debug, Clone)]
pub struct Rules {
    /// How long a new worker must live to count as started (--interval).
    pub interval: Duration,
    pub signal_on_hup: sig::Signal,
    pub signal_on_term: sig::Signal,
    /// On shutdown, SIGKILL for workers still alive this long after their
    /// signal (none: wait for them).
    pub stop_timeout: Option<Duration>,
    /// How long an old worker may drain after --signal-on-hup before it
    /// gets SIGKILL (none: as long as it takes).
    pub drain_timeout: Option<Duration>,
    /// How many failed starts in a row are retried (none: forever).
    pub start_retries: Option<u32>,
    /// How long to keep serving after TERM/INT/QUIT before the workers are
    /// signalled.
    pub shutdown_delay: Duration,
    /// What makes a new worker count as started.
    pub readiness: Readiness,
    /// With readiness other than --interval's: how long a new worker may
    /// take to be ready (none: readiness is --interval's).
    pub ready_timeout: Option<Duration>,
    /// --workers: how many workers each generation runs (none: one, with
    /// the original's environment and generation rule).
    pub workers: Option<u32>,
    /// --max-surge: how many new workers a restart starts at once, at
    /// most (none: as many as --workers).
    pub max_surge: Option<u32>,
    /// --forward: signals passed on to the current workers.
    pub forward: Vec<i32>,
    /// --watch-delay: how long a watched path must be quiet after a
    /// change before the restart.
    pub watch_delay: Duration,
    pub policy: Policy,
}

/// The most --workers accepts.
pub const MAX_WORKERS: u32 = 1024;

impl Rules {
    /// How many workers a generation runs.
    pub fn slots(&self) -> u32 {
        self.workers.unwrap_or(1)
    }

    /// How many new workers a restart may have starting at once.
    pub fn surge(&self) -> u32 {
        self.max_surge.unwrap_or(self.slots())
    }
}

impl Default for Rules {
    fn default() -> Rules {
        Rules {
            interval: Duration::from_secs(1),
            signal_on_hup: sig::Signal::of(sig::TERM),
            signal_on_term: sig::Signal::of(sig::TERM),
            stop_timeout: None,
            drain_timeout: None,
            start_retries: None,
            shutdown_delay: Duration::ZERO,
            readiness: Readiness::Interval,
            ready_timeout: None,
            workers: None,
            max_surge: None,
            forward: Vec::new(),
            watch_delay: Duration::from_millis(500),
            policy: Personality::StartServer.policy(),
        }
    }
}

impl Default for Settings {
    /// Nothing set: no auto-restart (every 360 s when enabled), no
    /// kill-old delay.
    fn default() -> Settings {
        Settings {
            auto_restart: false,
            auto_restart_interval: DEFAULT_AUTO_RESTART_INTERVAL,
            auto_restart_interval_shown: "360".into(),
            kill_old_delay: Duration::ZERO,
            kill_old_delay_shown: "0".into(),
        }
    }
}
