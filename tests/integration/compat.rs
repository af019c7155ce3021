//! Side by side with Perl's Server::Starter (installed by .ci/run): the
//! same command lines must give the same log lines, status files, sockets
//! (address, backlog) and SERVER_STARTER_PORT.

use std::collections::HashMap;
use std::process::Command;

use crate::support::*;

/// Replaces every number in `lines` but wait statuses by `P1`, `P2`, ...
/// in order of first appearance: pids differ from run to run.
fn normalise(lines: &[String]) -> Vec<String> {
    let mut pids: HashMap<String, String> = HashMap::new();
    lines
        .iter()
        .map(|line| {
            let mut out = String::new();
            let mut rest = line.as_str();
            while let Some(start) = rest.find(|c: char| c.is_ascii_digit()) {
                let len = rest[start..]
                    .find(|c: char| !c.is_ascii_digit())
                    .unwrap_or(rest.len() - start);
                let number = &rest[start..start + len];
                out.push_str(&rest[..start]);
                if out.ends_with("status:") {
                    out.push_str(number);
                } else {
                    let n = pids.len() + 1;
                    out.push_str(
                        pids.entry(number.to_string())
                            .or_insert_with(|| format!("P{n}")),
                    );
                }
                rest = &rest[start + len..];
            }
            out.push_str(rest);
            out
        })
        .collect()
}

/// Perl's `warn` adds where it was called: ` at FILE line N.`
fn without_perl_location(line: &str) -> &str {
    match line.rfind(" at /") {
        Some(i) if line.ends_with('.') && line[i..].contains(" line ") => &line[..i],
        _ => line,
    }
}

/// start, HUP, TERM under `bin`, with `extra` arguments (`{dir}` stands
/// for the test's directory) and environment; the normalised log and the
/// status file contents after the restart; the log as it was.
fn scenario(
    bin: &str,
    name: &str,
    extra: &[&str],
    env: &[(&str, &str)],
) -> ((Vec<String>, Vec<u64>), String) {
    let dir = TempDir::new(name);
    dir.mode("run");
    let probe = example("probe").display().to_string();
    let st = dir.join("status");
    let port = format!("--port=127.0.0.1:{}", free_port());
    let st_arg = format!("--status-file={}", st.display());
    let extra: Vec<String> = extra
        .iter()
        .map(|a| a.replace("{dir}", dir.path().to_str().unwrap()))
        .collect();
    if extra.iter().any(|a| a.contains("stale.sock")) {
        // A socket file left by a previous run, for --path to remove.
        let stale = std::os::unix::net::UnixListener::bind(dir.join("stale.sock")).unwrap();
        drop(stale);
    }
    let mut server = Server::spawn(
        Command::new(bin)
            .args([&port, "--interval=1", &st_arg])
            .args(&extra)
            .args(["--", &probe, dir.path().to_str().unwrap()])
            .envs(env.iter().copied()),
    );
    wait_status(&st, &[1], &server);
    server.signal("HUP");
    server.wait_line("old worker");
    let gens: Vec<u64> = wait_status(&st, &[2], &server)
        .iter()
        .map(|&(g, _)| g)
        .collect();
    server.signal("TERM");
    server.wait_exit();
    server.wait_line("exiting");
    let lines: Vec<String> = server
        .lines()
        .iter()
        .filter(|l| !l.starts_with("hello"))
        .map(|l| without_perl_location(l).to_string())
        .collect();
    ((normalise(&lines), gens), lines.join("\n"))
}

#[test]
fn log_lines_and_status_file_match_server_starter() {
    if !perl_or_skip() {
        return;
    }
    let theirs = scenario(PERL, "compat-perl", &[], &[]).0;
    let ours = scenario(bin().to_str().unwrap(), "compat-ours", &[], &[]).0;
    assert_eq!(ours, theirs);
}

/// Signals and delays appear in log lines as the user wrote them, and
/// start-up lines come in the original's order.
#[test]
fn log_lines_keep_what_the_user_wrote() {
    if !perl_or_skip() {
        return;
    }
    let extra = [
        "--signal-on-hup=15",
        "--signal-on-term=sigint",
        "--port=0=5",
        "--path={dir}/stale.sock",
    ];
    let env = [("KILL_OLD_DELAY", "01")];
    // One directory name for both: it appears in a log line.
    let (theirs, _) = scenario(PERL, "compat-written", &extra, &env);
    let (ours, log) = scenario(bin().to_str().unwrap(), "compat-written", &extra, &env);
    assert_eq!(ours, theirs);
    for needle in [
        "sending 15 to old workers",
        "sleeping 01 secs",
        "received TERM, sending INT to all workers",
    ] {
        assert!(log.contains(needle), "{needle:?} in:\n{log}");
    }
    let dup = log
        .find("socket is duplicated to file descriptor 5")
        .unwrap();
    let removing = log.find("removing existing socket file:").unwrap();
    assert!(dup < removing, "{log}");
}

/// What one start under `bin` with `args` (`{P}` stands for a free port)
/// gives: the specs in SERVER_STARTER_PORT (without descriptors), and each
/// listening socket's address and backlog as ss(8) shows them; or the
/// exit status when it refuses.
fn sockets_of(bin: &str, args: &[&str], port: u16) -> Result<(Vec<String>, Vec<String>), i32> {
    let dir = TempDir::new(&format!("compat-spec-{port}"));
    let probe = example("probe").display().to_string();
    let args: Vec<String> = args
        .iter()
        .map(|a| a.replace("{P}", &port.to_string()))
        .collect();
    let mut server = Server::spawn(Command::new(bin).arg("--interval=0").args(&args).args([
        "--",
        &probe,
        dir.path().to_str().unwrap(),
    ]));
    let deadline = std::time::Instant::now() + DEADLINE;
    while !dir.join("1.report").exists() {
        if let Some(code) = server.exited() {
            return Err(code);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{bin} {args:?}: neither a worker nor an exit\n{}",
            server.log()
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let report = dir.report(1, &server);
    let specs = report["env.SERVER_STARTER_PORT"]
        .split(';')
        .filter(|p| !p.is_empty())
        .map(|p| p.rsplit_once('=').map_or(p, |(spec, _)| spec).to_string())
        .collect();
    let mut sockets = Vec::new();
    for proto in ["-Hlnt", "-Hlnu"] {
        let out = Command::new("ss")
            .args([proto, &format!("sport = :{port}")])
            .output()
            .expect("ss(8) (iproute2) is needed");
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            sockets.push(format!("{proto} {} backlog {}", f[3], f[2]));
        }
    }
    server.stop();
    Ok((specs, sockets))
}

/// Every `--port` form the original takes gives the same socket and the
/// same SERVER_STARTER_PORT; the forms it refuses, we refuse. Getopt::Long's
/// own syntax (`+option`, `+N`, `1_0`) and --backlog as well.
#[test]
fn port_specs_and_backlogs_match_server_starter() {
    if !perl_or_skip() {
        return;
    }
    let cases: &[&[&str]] = &[
        &["--port={P}"],
        &["--port=[127.0.0.1]:{P}"],
        &["--port=[127.0.0.1:{P}"],
        &["--port=127.0.0.1]:{P}"],
        &["--port=[localhost]:{P}"],
        &["--port=localhost:{P}"],
        &["--port= 127.0.0.1:{P} "],
        &["--port=[::1]:{P}"],
        &["--port=::1:{P}"],
        &["--port=[ ::1] : {P}"],
        &["--port=[0:0::1]:{P}"],
        &["--port=0{P}"],
        &["--port=127.0.0.1:0{P}"],
        &["--port=127.0.0.1:u{P}"],
        &["--port= u{P}"],
        &["--port={P} =5"],
        &["+port=127.0.0.1:{P}", "+interval=+0", "--backlog=1_0"],
        &["--port={P}", "--backlog=0"],
        &["--port={P}", "--backlog=7"],
        &["--port={P}", "--path={P}.sock"],
        // Refused by both.
        &["--port={P}= 5"],
        &["--port=[::1 ]:{P}"],
        &["--port=:{P}"],
        &["--port=127.0.0.1 :{P}"],
        &["--port=x{P}"],
    ];
    for args in cases {
        let port = free_port();
        let theirs = sockets_of(PERL, args, port);
        let ours = sockets_of(bin().to_str().unwrap(), args, port);
        match (&theirs, &ours) {
            (Err(_), Err(_)) => {}
            _ => assert_eq!(ours, theirs, "{args:?}"),
        }
    }
}
