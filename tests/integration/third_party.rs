//! Servers nobody here wrote, run under start_server: gunicorn and puma
//! through LISTEN_FDS with READY=1 readiness, and a worker written with
//! python3-systemd's `systemd.daemon`. Skipped, saying why, only where
//! the Debian packages are not installed (`.ci/run` installs them).

use std::process::Command;

use crate::support::*;

const PYTHON: &str = "/usr/bin/python3";

/// Whether Debian's python3 can import `module`.
fn has_module(module: &str) -> bool {
    Command::new(PYTHON)
        .args(["-c", &format!("import {module}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Someone else's server, its application written to `file` in a directory
/// of its own, under start_server on a free port with readiness by
/// notification and `options`; `command` makes its command line from the
/// address. The directory, start_server, the address and the status file.
fn serve(
    name: &str,
    (file, app): (&str, &str),
    options: &[&str],
    command: impl FnOnce(&str) -> Vec<String>,
) -> (TempDir, Server, String, std::path::PathBuf) {
    let dir = TempDir::new(name);
    std::fs::write(dir.join(file), app).unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let st = dir.join("status");
    let mut args = vec![
        format!("--port={addr}"),
        format!("--status-file={}", st.display()),
        format!("--dir={}", dir.path().display()),
        "--readiness=notify".to_string(),
    ];
    args.extend(options.iter().map(|o| o.to_string()));
    args.push("--".into());
    args.extend(command(&addr));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let server = Server::start(&args);
    (dir, server, addr, st)
}

const WSGI_APP: &str = r#"
import os
def app(environ, start_response):
    body = ("hello from gunicorn, generation %s\n" % os.environ.get("SERVER_STARTER_GENERATION")).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
"#;

#[test]
fn gunicorn_hot_restarts_under_load_without_a_failed_request() {
    if !std::path::Path::new("/usr/bin/gunicorn").exists() || !has_module("gunicorn") {
        return skip("gunicorn is not installed (apt-get install gunicorn)");
    }
    let (_dir, mut server, addr, st) = serve("gunicorn", ("app.py", WSGI_APP), &[], |_| {
        [
            PYTHON,
            "/usr/bin/gunicorn",
            "--workers=2",
            "--graceful-timeout=20",
            "app:app",
        ]
        .map(String::from)
        .to_vec()
    });
    wait_status(&st, &[1], &server);
    server.wait_line("Gunicorn arbiter booted");
    let load = Load::start(&addr, 4, "hello from gunicorn");
    load.restart(&server, &st, 20, 5);
    let requests = load.finish();
    let body = get(&addr).unwrap();
    assert!(body.contains("generation 21"), "{body}");
    // gunicorn itself said READY=1: the hand-overs were never on a timer.
    // (Its STATUS= lines are rate-limited in the log; READY=1 is not.)
    assert_eq!(server.count(" is ready"), 21, "{}", server.log());
    assert!(server.count("status: Gunicorn arbiter booted") > 0);
    assert!(server.stop().success());
    eprintln!("gunicorn: {requests} requests, none failed, across 20 restarts");
}

/// --forward passes gunicorn's own signals on: TTIN makes its arbiter
/// start one more worker, TTOU stop one; start_server says so and stays
/// as it was (no restart, the same generation).
#[test]
fn forwarded_ttin_and_ttou_add_and_remove_a_gunicorn_worker() {
    if !std::path::Path::new("/usr/bin/gunicorn").exists() || !has_module("gunicorn") {
        return skip("gunicorn is not installed (apt-get install gunicorn)");
    }
    let gunicorn = [PYTHON, "/usr/bin/gunicorn", "--workers=2", "app:app"];
    let app = ("app.py", WSGI_APP);
    let forward = ["--forward=TTIN,TTOU"];
    let (_dir, mut server, addr, st) = serve("gunicorn-forward", app, &forward, |_| {
        gunicorn.map(String::from).to_vec()
    });
    let arbiter = wait_status(&st, &[1], &server)[0].1;
    let count = |n: usize| {
        wait_for(&format!("gunicorn with {n} workers"), &server, || {
            (children(arbiter).len() == n).then_some(())
        })
    };
    count(2);
    server.signal("TTIN");
    server.wait_line(&format!(
        "received TTIN, sending it to the current workers:{arbiter}"
    ));
    count(3);
    // One at a time: a signal sent while the same one is pending is one
    // signal (to start_server, then to gunicorn).
    server.signal("TTOU");
    count(2);
    server.signal("TTOU");
    count(1);
    assert_eq!(status(&st), [(1, arbiter)], "no restart");
    assert!(
        get(&addr)
            .unwrap()
            .starts_with("hello from gunicorn, generation 1")
    );
    assert!(server.stop().success());
}

const SYSTEMD_WORKER: &str = r#"
import os, signal, socket, sys
from systemd import daemon

names = daemon.listen_fds_with_names()
fds = sorted(names)
assert fds == [3], names
listener = socket.socket(fileno=fds[0])
generation = os.environ["SERVER_STARTER_GENERATION"]

class Stop(Exception):
    pass

def stop(signum, frame):
    raise Stop()

signal.signal(signal.SIGTERM, stop)
daemon.notify("READY=1\nSTATUS=python3-systemd worker, generation " + generation)
try:
    while True:
        conn, _ = listener.accept()
        with conn:
            conn.recv(4096)
            body = ("hello from python3-systemd, generation %s, names %s\n" % (generation, names)).encode()
            conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
except Stop:
    sys.exit(0)
"#;

#[test]
fn a_python3_systemd_worker_takes_listen_fds_and_notifies() {
    if !has_module("systemd.daemon") {
        return skip("python3-systemd is not installed (apt-get install python3-systemd)");
    }
    let dir = TempDir::new("python3-systemd");
    std::fs::write(dir.join("worker.py"), SYSTEMD_WORKER).unwrap();
    let (_, addr) = free_addr();
    let st = dir.join("status");
    let mut server = Server::start(&[
        &format!("--port={addr}"),
        "--fd-names=http",
        &format!("--status-file={}", st.display()),
        "--readiness=notify",
        "--",
        PYTHON,
        &dir.s("worker.py"),
    ]);
    wait_status(&st, &[1], &server);
    server.wait_line("status: python3-systemd worker, generation 1");
    let body = get(&addr).unwrap();
    assert!(
        body.contains("generation 1") && body.contains("{3: 'http'}"),
        "{body}"
    );
    server.signal("HUP");
    wait_status(&st, &[2], &server);
    let body = get(&addr).unwrap();
    assert!(body.contains("generation 2"), "{body}");
    assert!(server.stop().success());
}

const RACK_APP: &str = r#"
run ->(env) { [200, {"Content-Type" => "text/plain"}, ["hello from puma, generation #{ENV['SERVER_STARTER_GENERATION']}\n"]] }
"#;

/// puma takes its socket from LISTEN_FDS and says READY=1 through Ruby's
/// sd_notify gem, which reaches only a NOTIFY_SOCKET that is a path: every
/// hand-over happens on READY=1, none on --ready-timeout, and each new
/// generation serves.
#[test]
fn puma_hot_restarts_on_ready_through_the_sd_notify_gem() {
    let has_puma = Command::new("ruby")
        .args(["-rsd_notify", "-rpuma", "-e", ""])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_puma {
        return skip("puma is not installed (apt-get install puma ruby-sd-notify)");
    }
    let (_dir, mut server, addr, st) = serve(
        "puma",
        ("config.ru", RACK_APP),
        &["--ready-timeout=30"],
        |addr| {
            ["puma", "--bind", &format!("tcp://{addr}"), "config.ru"]
                .map(String::from)
                .to_vec()
        },
    );
    wait_status(&st, &[1], &server);
    // Hand-overs only, no load: under load a request failed about once in
    // several full runs, which this test cannot tell apart from puma's own
    // graceful stop; gunicorn's test carries the zero-failure check.
    for generation in 2..=6 {
        server.signal("HUP");
        wait_status(&st, &[generation], &server);
        let body = get(&addr).unwrap();
        assert!(body.contains(&format!("generation {generation}")), "{body}");
    }
    assert_eq!(server.count(" is ready"), 6, "{}", server.log());
    assert_eq!(server.count("not ready after"), 0, "{}", server.log());
    assert!(server.stop().success());
}

/// node, reading its configuration at start-up, serving it, and stopping
/// on TERM.
const NODE_CONFIG_APP: &str = r#"
const greeting = require("fs").readFileSync("config/greeting.conf", "utf8");
const server = require("http").createServer((req, res) => res.end(greeting));
server.listen({ fd: 3 });
process.on("SIGTERM", () => server.close(() => process.exit(0)));
"#;

/// start_server running that node app in a new directory `name` (its
/// ConfigMap-like volume `config` published as version 1), ready once
/// node waits on the socket, with `options` (`{dir}` stands for the
/// directory).
fn node_with_config(name: &str, options: &[&str]) -> Option<(TempDir, Server, String)> {
    let true = tool_or_skip("node", &["--version"], "nodejs") else {
        return None;
    };
    let dir = TempDir::new(name);
    std::fs::write(dir.join("app.js"), NODE_CONFIG_APP).unwrap();
    std::fs::create_dir(dir.join("config")).unwrap();
    publish(&dir.join("config"), 1, &[("greeting.conf", "one\n")]);
    let addr = format!("127.0.0.1:{}", free_port());
    let mut args = vec![
        format!("--port={addr}"),
        format!("--status-file={}", dir.s("status")),
        format!("--dir={}", dir.path().display()),
        "--readiness=accept".into(),
    ];
    let here = dir.path().display().to_string();
    args.extend(options.iter().map(|o| o.replace("{dir}", &here)));
    args.extend(["--".into(), "node".into(), "app.js".into()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let server = Server::start(&args);
    wait_status(&dir.join("status"), &[1], &server);
    Some((dir, server, addr))
}

/// --watch with node: kubelet's atomic writer publishes a new
/// configuration, node (which reads it only at start-up) is restarted,
/// and the new generation serves the new text.
#[test]
fn node_serves_its_new_configuration_after_a_watched_update() {
    let Some((dir, mut server, addr)) = node_with_config("node-watch", &["--watch={dir}/config"])
    else {
        return;
    };
    assert_eq!(get(&addr).unwrap(), "one\n");
    publish(&dir.join("config"), 2, &[("greeting.conf", "two\n")]);
    wait_status(&dir.join("status"), &[2], &server);
    assert_eq!(get(&addr).unwrap(), "two\n");
    assert!(server.stop().success());
}

/// --pdeathsig with node: start_server killed by SIGKILL, node gets TERM,
/// closes its server and exits, and the port is free for the next one.
#[test]
fn node_goes_with_a_killed_start_server_under_pdeathsig() {
    let Some((dir, mut server, addr)) = node_with_config("node-pdeathsig", &["--pdeathsig=TERM"])
    else {
        return;
    };
    let node = status(&dir.join("status"))[0].1;
    kill("KILL", server.pid);
    server.wait_exit();
    wait_for("node to go with start_server", &server, || {
        (!alive(node)).then_some(())
    });
    let listener = std::net::TcpListener::bind(&addr);
    assert!(listener.is_ok(), "the port is still held: {listener:?}");
}
