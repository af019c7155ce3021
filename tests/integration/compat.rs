//! Side by side with Perl's Server::Starter (installed by .ci/run): the
//! same scenario must produce the same log lines and status files.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

use crate::support::*;

const PERL: &str = "/usr/bin/start_server";

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

/// start, HUP, TERM under `bin`; the normalised log and the status file
/// contents after the restart.
fn scenario(bin: &str, name: &str) -> (Vec<String>, Vec<u64>) {
    let dir = TempDir::new(name);
    dir.mode("run");
    let probe = example("probe").display().to_string();
    let st = dir.join("status");
    let port = format!("--port=127.0.0.1:{}", free_port());
    let st_arg = format!("--status-file={}", st.display());
    let mut server = Server::spawn(Command::new(bin).args([
        &port,
        "--interval=1",
        &st_arg,
        "--",
        &probe,
        dir.path().to_str().unwrap(),
    ]));
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
        .into_iter()
        .filter(|l| !l.starts_with("hello"))
        .collect();
    (normalise(&lines), gens)
}

#[test]
fn log_lines_and_status_file_match_server_starter() {
    if !Path::new(PERL).exists() {
        eprintln!("skipped: {PERL} is not installed (apt-get install libserver-starter-perl)");
        return;
    }
    let theirs = scenario(PERL, "compat-perl");
    let ours = scenario(bin().to_str().unwrap(), "compat-ours");
    assert_eq!(ours, theirs);
}
