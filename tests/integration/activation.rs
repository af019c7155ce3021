//! start_server itself socket-activated: it adopts the sockets LISTEN_FDS
//! passes it instead of binding.

use std::process::Command;

use crate::support::*;

/// A stand-in for systemd: binds the sockets `specs` describes
/// (`tcp:HOST:PORT`, `unix:PATH`, `file:PATH`), puts them on descriptors
/// 3, 4, ..., and executes the rest of the arguments with LISTEN_FDS,
/// LISTEN_PID (its own pid, kept across exec) and LISTEN_FDNAMES set.
pub const ACTIVATE: &str = r#"
import os, socket, sys
socks = []
for spec in sys.argv[1].split(','):
    kind, addr = spec.split(':', 1)
    if kind == 'tcp':
        host, port = addr.rsplit(':', 1)
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host, int(port)))
        s.listen(16)
    elif kind == 'unix':
        s = socket.socket(socket.AF_UNIX)
        s.bind(addr)
        s.listen(16)
    else:
        s = open(addr, 'w')
    socks.append(s)
for i, s in enumerate(socks):
    if s.fileno() != 3 + i:
        os.dup2(s.fileno(), 3 + i)
    os.set_inheritable(3 + i, True)
env = dict(os.environ, LISTEN_FDS=str(len(socks)), LISTEN_PID=str(os.getpid()), LISTEN_FDNAMES=sys.argv[2])
os.execve(sys.argv[3], sys.argv[3:], env)
"#;

fn activated(specs: &str, names: &str, args: &[&str]) -> Server {
    let mut cmd = Command::new("python3");
    cmd.args(["-c", ACTIVATE, specs, names])
        .arg(bin())
        .args(args);
    Server::spawn(&mut cmd)
}

#[test]
fn matching_sockets_are_adopted_others_bound_and_strays_reported() {
    let dir = TempDir::new("activation");
    let (p1, p2, p3) = (free_port(), free_port(), free_port());
    let sock = dir.s("app.sock");
    let hello = example("hello").display().to_string();
    let st = dir.join("status");
    let specs = format!("tcp:127.0.0.1:{p1},tcp:127.0.0.1:{p2},unix:{sock}");
    let mut server = activated(
        &specs,
        "one:two:three",
        &[
            &format!("--port=127.0.0.1:{p1}"),
            &format!("--port=127.0.0.1:{p3}"),
            "--path",
            &sock,
            &format!("--status-file={}", st.display()),
            "--interval=0",
            &hello,
        ],
    );
    let worker = wait_status(&st, &[1], &server)[0].1;
    server.wait_line(&format!(
        "ignoring inherited socket 127.0.0.1:{p2} on descriptor 4: it matches no --port or --path"
    ));
    assert!(
        !server.log().contains("removing existing socket file"),
        "an adopted socket file is not ours to remove"
    );
    for port in [p1, p3] {
        let body = get(&format!("127.0.0.1:{port}")).unwrap();
        assert!(body.starts_with("hello from generation 1"), "{body}");
    }
    // The stray socket was closed: nothing listens there any more.
    assert!(std::net::TcpStream::connect(("127.0.0.1", p2)).is_err());
    let env = raw_environ(worker);
    assert_eq!(
        env_var(&env, "SERVER_STARTER_PORT").unwrap(),
        format!("127.0.0.1:{p1}=3;127.0.0.1:{p3}=4;{sock}=5")
    );
    // Fresh variables for the worker; the inherited names carried over.
    assert_eq!(env_var(&env, "LISTEN_PID").unwrap(), worker.to_string());
    assert_eq!(
        env_var(&env, "LISTEN_FDNAMES").unwrap(),
        format!("one:127.0.0.1_{p3}:three")
    );
    assert!(server.stop().success());
    // The socket file belongs to whoever passed the socket: left in place.
    assert!(dir.join("app.sock").exists());
}

#[test]
fn without_specs_every_inherited_socket_is_adopted() {
    let dir = TempDir::new("activation-all");
    let port = free_port();
    let sock = dir.s("admin.sock");
    let hello = example("hello").display().to_string();
    let st = dir.join("status");
    let mut server = activated(
        &format!("tcp:127.0.0.1:{port},unix:{sock}"),
        "web:admin",
        &[
            &format!("--status-file={}", st.display()),
            "--interval=0",
            &hello,
        ],
    );
    let worker = wait_status(&st, &[1], &server)[0].1;
    let env = raw_environ(worker);
    assert_eq!(
        env_var(&env, "SERVER_STARTER_PORT").unwrap(),
        format!("127.0.0.1:{port}=3;{sock}=4")
    );
    assert_eq!(env_var(&env, "LISTEN_FDNAMES").unwrap(), "web:admin");
    assert_serves(&format!("127.0.0.1:{port}"), "hello from generation 1");
    // A restart keeps serving on the adopted socket.
    server.signal("HUP");
    wait_status(&st, &[2], &server);
    assert_serves(&format!("127.0.0.1:{port}"), "hello from generation 2");
    assert!(server.stop().success());
}

#[test]
fn an_inherited_descriptor_that_is_not_a_socket_is_reported() {
    let dir = TempDir::new("activation-file");
    let port = free_port();
    let hello = example("hello").display().to_string();
    let st = dir.join("status");
    let mut server = activated(
        &format!("file:{}", dir.s("plain")),
        "",
        &[
            &format!("--port=127.0.0.1:{port}"),
            &format!("--status-file={}", st.display()),
            "--interval=0",
            &hello,
        ],
    );
    server.wait_line("ignoring inherited descriptor 3 (LISTEN_FDS): not a socket");
    wait_status(&st, &[1], &server);
    assert_serves(&format!("127.0.0.1:{port}"), "hello");
    assert!(server.stop().success());
}
