//! start_server's integration tests: the real binary, real workers, real
//! sockets on loopback and in per-test temp dirs.

mod accept;
mod activation;
mod bad_input;
mod clients;
mod compat;
mod container;
mod containment;
mod einhorn;
mod faults;
mod layout;
mod lifecycle;
mod load;
mod notify;
mod procfs;
mod socketmaster;
mod sockets;
mod support;
mod systemd;
mod third_party;
mod upgrade;
mod watch;
mod worker_env;
mod workers;
