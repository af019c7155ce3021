//! A small HTTP server to run under start_server: it serves on every
//! inherited TCP or unix socket (passed by any convention the `worker`
//! module knows), answers each request with its generation and pid, echoes
//! UDP datagrams, says READY=1 when it is up, and on SIGTERM stops
//! accepting, finishes the requests in flight and exits.
//!
//!     start_server --port=127.0.0.1:8080 -- target/.../examples/hello
//!     curl http://127.0.0.1:8080/

use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

use start_server::worker::{self, Event, Shutdown, Socket};

fn main() {
    if let Err(e) = serve() {
        say(format_args!("{e}"));
        std::process::exit(1);
    }
}

/// One line on stderr, in one write: lines of generations running side by
/// side on the same stderr never mix (eprintln! writes piece by piece).
fn say(what: std::fmt::Arguments) {
    let line = format!("hello: {what}\n");
    let _ = io::stderr().write_all(line.as_bytes());
}

fn serve() -> io::Result<()> {
    // First, before any thread: TERM becomes an event, not death.
    let shutdown = Shutdown::new()?;
    let listeners = worker::listeners()?;
    let generation = std::env::var("SERVER_STARTER_GENERATION").unwrap_or_default();
    let greeting: Arc<str> = format!(
        "hello from generation {generation}, pid {}\n",
        std::process::id()
    )
    .into();
    for l in &listeners {
        match &l.socket {
            Socket::Tcp(s) => s.set_nonblocking(true)?,
            Socket::Unix(s) => s.set_nonblocking(true)?,
            Socket::Udp(s) => s.set_nonblocking(true)?,
        }
    }
    say(format_args!(
        "pid {} generation {generation} serving {} socket(s)",
        std::process::id(),
        listeners.len()
    ));
    // Everything is in place: with --readiness=notify, start_server hands
    // over to this generation now.
    worker::ready()?;
    let fds: Vec<BorrowedFd> = listeners
        .iter()
        .map(|l| match &l.socket {
            Socket::Tcp(s) => s.as_fd(),
            Socket::Unix(s) => s.as_fd(),
            Socket::Udp(s) => s.as_fd(),
        })
        .collect();
    let in_flight = Arc::new(AtomicUsize::new(0));
    let mut handles = Vec::new();
    // Accept only here, after poll: once TERM is seen nothing more is
    // taken off the shared queue, and everything taken is answered.
    loop {
        match shutdown.wait(&fds)? {
            Event::Shutdown(_) => break,
            Event::Readable(i) => match &listeners[i].socket {
                Socket::Tcp(s) => {
                    while let Ok((conn, _)) = s.accept() {
                        handles.push(answer(conn, &greeting, &in_flight));
                    }
                }
                Socket::Unix(s) => {
                    while let Ok((conn, _)) = s.accept() {
                        handles.push(answer(conn, &greeting, &in_flight));
                    }
                }
                Socket::Udp(s) => {
                    let mut buf = [0u8; 2048];
                    while let Ok((n, from)) = s.recv_from(&mut buf) {
                        let mut reply = greeting.as_bytes().to_vec();
                        reply.extend_from_slice(&buf[..n]);
                        let _ = s.send_to(&reply, from);
                    }
                }
            },
        }
        handles.retain(|h: &thread::JoinHandle<()>| !h.is_finished());
    }
    let pending = in_flight.load(Ordering::SeqCst);
    say(format_args!(
        "pid {} shutting down, {pending} request(s) in flight",
        std::process::id()
    ));
    for h in handles {
        let _ = h.join();
    }
    Ok(())
}

/// Answers one HTTP request on its own thread.
fn answer<S>(
    mut conn: S,
    greeting: &Arc<str>,
    in_flight: &Arc<AtomicUsize>,
) -> thread::JoinHandle<()>
where
    S: Read + Write + Send + 'static + SetTimeout,
{
    let greeting = Arc::clone(greeting);
    let in_flight = Arc::clone(in_flight);
    in_flight.fetch_add(1, Ordering::SeqCst);
    thread::spawn(move || {
        let _ = conn.blocking_with_timeout(Duration::from_secs(10));
        let mut request = Vec::new();
        let mut buf = [0u8; 1024];
        while !request.windows(4).any(|w| w == b"\r\n\r\n") {
            match conn.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => request.extend_from_slice(&buf[..n]),
            }
        }
        let response = format!(
            "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{greeting}",
            greeting.len()
        );
        let _ = conn.write_all(response.as_bytes());
        in_flight.fetch_sub(1, Ordering::SeqCst);
    })
}

/// Accepted sockets inherit non-blocking mode on some systems: make them
/// blocking, with a timeout so a silent client cannot hold us forever.
trait SetTimeout {
    fn blocking_with_timeout(&self, t: Duration) -> io::Result<()>;
}

impl SetTimeout for std::net::TcpStream {
    fn blocking_with_timeout(&self, t: Duration) -> io::Result<()> {
        self.set_nonblocking(false)?;
        self.set_read_timeout(Some(t))
    }
}

impl SetTimeout for std::os::unix::net::UnixStream {
    fn blocking_with_timeout(&self, t: Duration) -> io::Result<()> {
        self.set_nonblocking(false)?;
        self.set_read_timeout(Some(t))
    }
}
