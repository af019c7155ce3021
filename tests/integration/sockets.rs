//! Every kind of socket actually serves through the example server.

use std::io::{Read, Write};
use std::process::Command;

use crate::support::*;

#[test]
fn ipv6_udp_and_unix_sockets_serve() {
    let dir = TempDir::new("sockets");
    let (v6, udp) = (free_port(), free_port());
    let sock = dir.s("app.sock");
    let hello = example("hello").display().to_string();
    let st = dir.join("status");
    let mut server = Server::start(&[
        &format!("--port=[::1]:{v6}"),
        &format!("--port=127.0.0.1:u{udp}"),
        "--path",
        &sock,
        "--backlog=7",
        &format!("--status-file={}", st.display()),
        "--interval=0",
        &hello,
    ]);
    wait_status(&st, &[1], &server);
    let body = get(&format!("[::1]:{v6}")).unwrap();
    assert!(body.starts_with("hello from generation 1"), "{body}");
    // IPV6_V6ONLY: nothing listens on the IPv4 side of that port.
    assert!(std::net::TcpStream::connect(("127.0.0.1", v6)).is_err());

    let mut unix = std::os::unix::net::UnixStream::connect(&sock).unwrap();
    unix.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    let mut reply = String::new();
    unix.read_to_string(&mut reply).unwrap();
    assert!(reply.contains("hello from generation 1"), "{reply}");

    let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    client.set_read_timeout(Some(DEADLINE)).unwrap();
    client.send_to(b"ping", ("127.0.0.1", udp)).unwrap();
    let mut buf = [0u8; 512];
    let n = client.recv(&mut buf).unwrap();
    let reply = String::from_utf8_lossy(&buf[..n]);
    assert!(
        reply.starts_with("hello from generation 1") && reply.ends_with("ping"),
        "{reply}"
    );

    // The backlog, as ss(8) shows it (Send-Q of a listening socket).
    if tool_or_skip("ss", &["-V"], "iproute2") {
        let out = Command::new("ss")
            .args(["-Hltn", &format!("sport = :{v6}")])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "ss failed: {out:?}");
        let send_q: Vec<&str> = text.split_whitespace().collect();
        assert_eq!(send_q.get(2).copied(), Some("7"), "{text}");
    }
    assert!(server.stop().success());
}

#[test]
fn settings_come_from_the_environment_and_the_envdir() {
    let dir = TempDir::with_mode("settings-env", "run");
    let probe = probe();
    let envdir = dir.join("env");
    std::fs::create_dir(&envdir).unwrap();
    let mut server = Server::spawn(
        Command::new(bin())
            .env("KILL_OLD_DELAY", "0.2")
            .env("ENVDIR", &envdir)
            .args(["--interval=0", &probe, dir.path().to_str().unwrap()]),
    );
    dir.report(1, &server);
    server.signal("HUP");
    server.wait_line("sleeping 0.2 secs before killing old workers");
    server.wait_line("old worker");
    // The envdir overrides the environment, while start_server runs.
    std::fs::write(envdir.join("KILL_OLD_DELAY"), "0").unwrap();
    std::fs::write(envdir.join("AUTO_RESTART_INTERVAL"), "0.3").unwrap();
    std::fs::write(envdir.join("ENABLE_AUTO_RESTART"), "1").unwrap();
    server.signal("HUP");
    dir.report(3, &server);
    server.wait_line("autorestart triggered (interval=0.3)");
    assert_eq!(server.count("sleeping"), 1, "{}", server.log());
    // A bad value in the envdir is reported once and the default used.
    std::fs::write(envdir.join("KILL_OLD_DELAY"), "later").unwrap();
    server.wait_line("invalid KILL_OLD_DELAY value 'later'");
    server.wait_line("sleeping 5 secs before killing old workers");
    // Reported once, though the envdir was read again since: at the
    // forced auto-restart that follows, and at each turn between.
    let after = server.count("autorestart triggered");
    server.wait_line_n("autorestart triggered", after + 1);
    assert_eq!(
        server.count("invalid KILL_OLD_DELAY value"),
        1,
        "{}",
        server.log()
    );
    assert!(server.stop().success());
}

#[test]
fn an_unexecutable_deploy_after_hup_keeps_the_old_generation() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::with_mode("exec-after-hup", "run");
    let server_bin = dir.join("server");
    copy_program(&example("probe"), &server_bin);
    let st = dir.join("status");
    let mut server = Server::start(&[
        "--interval=0",
        &format!("--status-file={}", st.display()),
        server_bin.to_str().unwrap(),
        dir.path().to_str().unwrap(),
    ]);
    let first = wait_status(&st, &[1], &server)[0].1;
    std::fs::set_permissions(&server_bin, std::fs::Permissions::from_mode(0o644)).unwrap();
    server.signal("HUP");
    server.wait_line(&format!(
        "start_server: warning: unable to exec {}: Permission denied",
        server_bin.display()
    ));
    server.wait_line("seems to have failed to start, exit status:32256");
    server.wait_line("4 failed starts in a row");
    assert_eq!(status(&st), [(1, first)], "{}", server.log());
    assert!(alive(first));
    std::fs::set_permissions(&server_bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    server.signal("HUP");
    server.wait_line(&format!("old worker {first} died"));
    assert!(server.stop().success());
}
