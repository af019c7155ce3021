//! `make bench`: whole-process figures for start_server, side by side with
//! Perl's Server::Starter (/usr/bin/start_server) when it is installed.
//!
//!     bench PATH-TO-start_server
//!
//! - size of the binary;
//! - idle VmRSS of the supervisor with one worker running (median of 5);
//! - wake-ups (context switches) of an idle supervisor over 10 s, with and
//!   without auto-restart pending, and with every timer option set;
//! - latency from spawning start_server to its worker's first instruction
//!   (median of 21), next to spawning the worker directly, the two
//!   alternating.
//!
//! - hand-over latency: from a new worker's READY=1 to the old worker
//!   receiving its signal (median of 100 restarts with
//!   `--readiness=notify`; the original has only its fixed `--interval`),
//!   and whether the old worker was ever signalled first;
//! - with `--readiness=accept`: from a new worker's first wait on the
//!   socket (a blocking accept, after a load of ACCEPT_LOAD) to the old
//!   worker's signal (median and max of 20), and start_server's CPU time
//!   per start, next to the same restarts with `--readiness=notify`.
//!
//! - with --workers: throughput of a server that blocks 5 ms per request
//!   for N = 1, 2, 4, the spread of the load over 4 workers, 10 restarts
//!   under load for N in {2, 4} and S in {1, N} (failed requests, most
//!   workers alive, peak RSS), and a CPU-bound node server's scaling
//!   (`bench workers PATH-TO-start_server` for this part alone).
//!
//! Run as `bench stamp`, it is the worker for the latency figure: it prints
//! the wall-clock time at which it started, in nanoseconds, then waits to
//! be killed. Run as `bench handover`, it is the worker for the hand-over:
//! it prints `ready GEN TIME` just before sending READY=1, and
//! `term GEN TIME` when its SIGTERM arrives; as `bench accepting`, the
//! same, `ready` just before it blocks in accept.

#[path = "../tests/integration/procfs.rs"]
mod procfs;
#[path = "bench/workers.rs"]
mod workers;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const PERL: &str = "/usr/bin/start_server";

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// Where the code of the same build with its symbols goes (`nm`): our
/// own, the standard library, musl, the unwinder, lexopt.
fn split_by_origin(unstripped: &str) {
    let Ok(out) = Command::new("nm")
        .args(["--size-sort", "-S", "-C", unstripped])
        .output()
    else {
        println!("                         (nm not installed: no split)");
        return;
    };
    let mut sizes: Vec<(&str, u64)> = Vec::new();
    let text = String::from_utf8_lossy(&out.stdout);
    for line in text.lines() {
        let mut f = line.splitn(4, ' ');
        let (Some(_), Some(size), Some(_), Some(name)) = (f.next(), f.next(), f.next(), f.next())
        else {
            continue;
        };
        let Ok(size) = u64::from_str_radix(size, 16) else {
            continue;
        };
        let origin = if name.contains("start_server::") {
            "ours"
        } else if name.contains("lexopt") {
            "lexopt"
        } else if name.contains("unwind") || name.starts_with("_Unwind") {
            "unwinder"
        } else if name.contains("::") || name.starts_with('<') {
            "std"
        } else {
            "musl"
        };
        match sizes.iter_mut().find(|(o, _)| *o == origin) {
            Some((_, total)) => *total += size,
            None => sizes.push((origin, size)),
        }
    }
    sizes.sort_by_key(|&(_, size)| std::cmp::Reverse(size));
    let split: Vec<String> = sizes
        .iter()
        .map(|(o, size)| format!("{o} {} KiB", size / 1024))
        .collect();
    println!(
        "                         symbols by origin: {}",
        split.join(", ")
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("stamp") {
        let t = now_ns();
        let mut out = std::io::stdout();
        let _ = writeln!(out, "{t}");
        let _ = out.flush();
        loop {
            std::thread::park();
        }
    }
    if args.get(1).map(String::as_str) == Some("handover") {
        handover_worker(false);
    }
    if args.get(1).map(String::as_str) == Some("accepting") {
        handover_worker(true);
    }
    if args.get(1).map(String::as_str) == Some("lines") {
        write_lines(args[2].parse().unwrap());
    }
    if args.get(1).map(String::as_str) == Some("startup") {
        startup_ab(&args[2..]);
        return;
    }
    let hello = std::env::current_exe().unwrap().with_file_name("hello");
    if args.get(1).map(String::as_str) == Some("workers") {
        workers::run(&args[2], &hello);
        return;
    }
    let ours = args
        .get(1)
        .expect("usage: bench PATH-TO-start_server")
        .clone();
    let me = std::env::current_exe().unwrap().display().to_string();
    let perl = std::path::Path::new(PERL)
        .exists()
        .then(|| PERL.to_string());
    if perl.is_none() {
        println!(
            "(Server::Starter not installed: apt-get install libserver-starter-perl for the comparison)"
        );
    }
    let impls: Vec<(&str, String)> = std::iter::once(("ours", ours.clone()))
        .chain(perl.clone().map(|p| ("perl", p)))
        .collect();

    println!("start_server benchmark ({})", ours);
    println!();
    let size = std::fs::metadata(&ours).unwrap().len();
    println!(
        "binary size              ours: {} bytes ({:.0} KiB), static: {}",
        size,
        size as f64 / 1024.0,
        is_static(&ours)
    );
    if let Some(symbols) = args.get(2) {
        split_by_origin(symbols);
    }
    if perl.is_some() {
        let perl_size = std::fs::metadata("/usr/bin/perl")
            .map(|m| m.len())
            .unwrap_or(0);
        println!(
            "                         perl: script + /usr/bin/perl ({} KiB) + modules",
            perl_size / 1024
        );
    }

    for (name, bin) in &impls {
        let rss: Vec<u64> = (0..5)
            .map(|_| {
                let mut s = Supervised::start(bin, &me, &[]);
                let rss = proc_status(s.child.id(), "VmRSS:");
                s.stop();
                rss
            })
            .collect();
        println!("idle VmRSS (median of 5) {name}: {} kB", median(rss));
    }

    println!("idle wake-ups over 10 s  (measuring...)");
    let mut running: Vec<(String, Supervised)> = Vec::new();
    for (name, bin) in &impls {
        running.push((name.to_string(), Supervised::start(bin, &me, &[])));
        running.push((
            format!("{name}, auto-restart pending"),
            Supervised::start(
                bin,
                &me,
                &["--enable-auto-restart", "--auto-restart-interval=360"],
            ),
        ));
    }
    // Our own timers, all set and none due: still nothing to wake for.
    running.push((
        "ours, every timer option set".to_string(),
        Supervised::start(
            &ours,
            &me,
            &[
                "--drain-timeout=5",
                "--shutdown-delay=5",
                "--stop-timeout=5",
                "--start-retries=3",
                "--signal-group",
            ],
        ),
    ));
    // Let start-up settle (Perl's first start check included).
    std::thread::sleep(Duration::from_millis(500));
    let before: Vec<u64> = running
        .iter()
        .map(|(_, s)| switches(s.child.id()))
        .collect();
    std::thread::sleep(Duration::from_secs(10));
    for ((name, s), b) in running.iter_mut().zip(before) {
        println!(
            "                         {name}: {}",
            switches(s.child.id()) - b
        );
        s.stop();
    }

    println!("spawn to first instruction (median of 21, spawns alternating)");
    let bins: Vec<&str> = impls.iter().map(|(_, bin)| bin.as_str()).collect();
    let (direct, via) = spawn_times(&me, &bins, 21);
    println!(
        "                         worker spawned directly: {:.3} ms",
        direct as f64 / 1e6
    );
    for ((name, _), m) in impls.iter().zip(via) {
        println!(
            "                         via {name}: {:.3} ms (start_server's share: {:.3} ms)",
            m as f64 / 1e6,
            (m.saturating_sub(direct)) as f64 / 1e6
        );
    }
    println!("hand-over: READY=1 to the old worker's signal");
    let (runs, _) = handover(&ours, &me, &["--readiness=notify"], 100, "handover");
    report_handover("ours, --readiness=notify", &runs);
    if let Some(perl) = &perl {
        let (runs, _) = handover(perl, &me, &[], 5, "handover");
        report_handover("perl (fixed --interval=1)", &runs);
    }
    println!(
        "hand-over: the new worker's first wait on the socket (a blocking accept, after a {} ms load) to the old worker's signal",
        ACCEPT_LOAD.as_millis()
    );
    let (runs, cpu) = handover(&ours, &me, &["--readiness=accept"], 20, "accepting");
    report_handover("ours, --readiness=accept", &runs);
    println!(
        "                         max {:.3} ms; start_server's CPU per start {:.3} ms",
        runs.iter().max().copied().unwrap_or(0) as f64 / 1e6,
        cpu as f64 / 1e6
    );
    let (_, cpu) = handover(&ours, &me, &["--readiness=notify"], 20, "accepting-notify");
    println!(
        "                         the same restarts with --readiness=notify: CPU per start {:.3} ms",
        cpu as f64 / 1e6
    );
    relay(&ours, &me);
    workers::run(&ours, &hello);
    println!();
    println!(
        "zero failed requests across 20 restarts under load: cargo test --test integration load"
    );
    println!("the same with gunicorn and READY=1: cargo test --test integration gunicorn");
}

/// `bench lines N`: N numbered lines of 100 bytes on stdout, then wait.
fn write_lines(n: usize) -> ! {
    let mut out = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout());
    for i in 0..n {
        let _ = writeln!(out, "line {i:010} {}", "x".repeat(83));
    }
    let _ = out.flush();
    loop {
        std::thread::park();
    }
}

/// 100 MB of lines relayed by socketmaster into a file: its CPU time per
/// MB, and whether every line arrived whole.
fn relay(bin: &str, me: &str) {
    const LINES: usize = 1_000_000;
    let dir = std::env::temp_dir().join(format!("start_server-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let link = dir.join("socketmaster");
    std::os::unix::fs::symlink(std::fs::canonicalize(bin).unwrap(), &link).unwrap();
    let log = dir.join("relay.log");
    let mut child = Command::new(&link)
        .args([
            "-listen=tcp4://127.0.0.1:0",
            "-start=0",
            &format!("-command={me}"),
            "--",
            "lines",
            &LINES.to_string(),
        ])
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    // The log: "starting new worker PID", then every line with "[PID] ".
    let started = std::time::Instant::now();
    let first = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if let Some(line) = text.lines().next().filter(|_| text.contains('\n')) {
            break line.to_string();
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let pid = first.rsplit(' ').next().unwrap_or_default();
    let expected = (first.len() + 1 + LINES * (100 + format!("[{pid}] ").len())) as u64;
    while std::fs::metadata(&log).map_or(0, |m| m.len()) < expected
        && started.elapsed() < Duration::from_secs(120)
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", child.id())).unwrap_or_default();
    let fields: Vec<&str> = stat[stat.rfind(')').map_or(0, |i| i + 2)..]
        .split_whitespace()
        .collect();
    let tick = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime, in clock ticks of 10 ms.
    let ticks = tick(11) + tick(12);
    let _ = Command::new("sh")
        .arg("-c")
        .arg(format!("kill -TERM {}", child.id()))
        .status();
    let _ = child.wait();
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let (mut whole, mut next) = (0usize, 0usize);
    for line in text.lines().filter(|l| l.contains("] line ")) {
        let body = &line[line.find("] ").unwrap() + 2..];
        if body.len() == 99 && body[5..15].parse::<usize>() == Ok(next) {
            whole += 1;
            next += 1;
        }
    }
    let mb = (LINES * 100) as f64 / 1e6;
    println!(
        "output relay, socketmaster: {mb:.0} MB in {LINES} lines, {:.2} ms CPU per MB, {whole} of {LINES} lines whole and in order",
        ticks as f64 * 10.0 / mb
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// How long `bench accepting` loads before it waits on its socket.
const ACCEPT_LOAD: Duration = Duration::from_millis(300);

/// `bench handover`: say when READY=1 is sent and when TERM arrives.
/// With `accepting`: load for ACCEPT_LOAD, then say `ready` right before
/// blocking in accept (in a thread), and send READY=1 too (for the
/// comparison with notify).
fn handover_worker(accepting: bool) -> ! {
    let shutdown = start_server::worker::Shutdown::new().expect("block signals");
    let generation = std::env::var("SERVER_STARTER_GENERATION").unwrap_or_default();
    let mut out = std::io::stdout();
    if accepting {
        std::thread::sleep(ACCEPT_LOAD);
        let listeners = start_server::worker::listeners().expect("the sockets");
        let Some(start_server::worker::Socket::Tcp(l)) =
            listeners.into_iter().next().map(|l| l.socket)
        else {
            panic!("no TCP socket");
        };
        let _ = writeln!(out, "ready {generation} {}", now_ns());
        let _ = out.flush();
        std::thread::spawn(move || while l.accept().is_ok() {});
    } else {
        let _ = writeln!(out, "ready {generation} {}", now_ns());
        let _ = out.flush();
    }
    let _ = start_server::worker::ready();
    let _ = shutdown.wait(&[]);
    let _ = writeln!(out, "term {generation} {}", now_ns());
    let _ = out.flush();
    std::process::exit(0);
}

type Times = std::collections::HashMap<u64, i128>;

/// Restarts `bin` `restarts` times with `bench WORKER` as its worker; for
/// each, the old worker's signal time minus the new worker's `ready` time,
/// in nanoseconds (negative: the old one was signalled before the new one
/// was ready); and the supervisor's CPU time per restart, in ns.
fn handover(bin: &str, me: &str, extra: &[&str], restarts: u64, worker: &str) -> (Vec<i128>, u64) {
    let worker = worker.trim_end_matches("-notify");
    let mut child = Command::new(bin)
        .args(["--port=127.0.0.1:0"])
        .args(extra)
        .args(["--", me, worker])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut ready, mut term) = (Times::new(), Times::new());
    let mut next = |ready: &mut Times, term: &mut Times| {
        let line = lines.next().expect("a line from a worker").unwrap();
        let words: Vec<&str> = line.split_whitespace().collect();
        let (generation, t): (u64, i128) = (words[1].parse().unwrap(), words[2].parse().unwrap());
        match words[0] {
            "ready" => ready.insert(generation, t),
            _ => term.insert(generation, t),
        };
    };
    while !ready.contains_key(&1) {
        next(&mut ready, &mut term);
    }
    let cpu_before = cpu_ns(child.id());
    let mut runs = Vec::new();
    for generation in 2..=restarts + 1 {
        let _ = Command::new("sh")
            .arg("-c")
            .arg(format!("kill -HUP {}", child.id()))
            .status();
        while !term.contains_key(&(generation - 1)) || !ready.contains_key(&generation) {
            next(&mut ready, &mut term);
        }
        runs.push(term[&(generation - 1)] - ready[&generation]);
    }
    let cpu = (cpu_ns(child.id()) - cpu_before) / restarts.max(1);
    let _ = Command::new("sh")
        .arg("-c")
        .arg(format!("kill -TERM {}", child.id()))
        .status();
    let _ = child.wait();
    (runs, cpu)
}

/// The CPU time process `pid` has used, in ns (/proc/PID/schedstat).
fn cpu_ns(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/schedstat"))
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn report_handover(name: &str, runs: &[i128]) {
    let inversions = runs.iter().filter(|&&d| d < 0).count();
    println!(
        "                         {name}: median {:.3} ms over {} restarts, {inversions} signalled before ready",
        median(runs.to_vec()) as f64 / 1e6,
        runs.len()
    );
}

/// Spawn to first instruction of `bench stamp`, in ns: the median of
/// `runs` spawned directly, and of `runs` through each of `bins`, in
/// alternating runs, so that all meet the same machine, the direct spawn
/// that is subtracted from the others included. Each round of runs
/// starts one further along (direct, A, B; A, B, direct; B, direct, A;
/// ...): a spawn right after a start_server has stopped is slower, by
/// tens of microseconds, and in a fixed order the same one would always
/// come after it.
fn spawn_times(me: &str, bins: &[&str], runs: usize) -> (u128, Vec<u128>) {
    // Entry 0 is the direct spawn, the others the bins in order.
    let mut times: Vec<Vec<u128>> = vec![Vec::with_capacity(runs); bins.len() + 1];
    for round in 0..runs {
        for k in 0..times.len() {
            let which = (round + k) % times.len();
            let t = match which {
                0 => spawn_directly(me),
                _ => {
                    let t0 = now_ns();
                    let mut s = Supervised::start(bins[which - 1], me, &[]);
                    let t = s.stamp - t0;
                    s.stop();
                    t
                }
            };
            times[which].push(t);
        }
    }
    let mut medians = times.into_iter().map(median);
    let direct = medians.next().unwrap();
    (direct, medians.collect())
}

/// `bench startup A B`: start_server's share of spawn-to-first-
/// instruction for two builds (see `spawn_times`); the medians of 5
/// rounds of 21 each.
fn startup_ab(bins: &[String]) {
    let [a, b] = bins else {
        panic!("usage: bench startup BIN-A BIN-B");
    };
    let me = std::env::current_exe().unwrap().display().to_string();
    println!("start_server's share of spawn to first instruction, ms (A: {a}, B: {b})");
    for round in 1..=5 {
        let (d, via) = spawn_times(&me, &[a, b], 21);
        let share = |t: u128| t.saturating_sub(d) as f64 / 1e6;
        println!(
            "round {round}: A {:.3}  B {:.3}  (direct spawn {:.3})",
            share(via[0]),
            share(via[1]),
            d as f64 / 1e6
        );
    }
}

/// Spawn to first instruction of this program's `stamp`, spawned
/// directly, in ns.
fn spawn_directly(me: &str) -> u128 {
    let t0 = now_ns();
    let mut child = Command::new(me)
        .arg("stamp")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let t = read_stamp(&mut child) - t0;
    let _ = child.kill();
    let _ = child.wait();
    t
}

/// A start_server running `bench stamp` as its worker, on a loopback port.
struct Supervised {
    child: Child,
    stamp: u128,
}

impl Supervised {
    fn start(bin: &str, me: &str, extra: &[&str]) -> Supervised {
        let mut child = Command::new(bin)
            .args(["--port=127.0.0.1:0", "--interval=0"])
            .args(extra)
            .args(["--", me, "stamp"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stamp = read_stamp(&mut child);
        Supervised { child, stamp }
    }

    fn stop(&mut self) {
        let _ = Command::new("sh")
            .arg("-c")
            .arg(format!("kill -TERM {}", self.child.id()))
            .status();
        let _ = self.child.wait();
    }
}

fn read_stamp(child: &mut Child) -> u128 {
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    line.trim().parse().expect("a timestamp from the worker")
}

fn proc_status(pid: u32, key: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn switches(pid: u32) -> u64 {
    proc_status(pid, "voluntary_ctxt_switches:") + proc_status(pid, "nonvoluntary_ctxt_switches:")
}

fn median<T: Ord + Copy>(mut v: Vec<T>) -> T {
    v.sort();
    v[v.len() / 2]
}

fn is_static(path: &str) -> bool {
    // A static executable has no PT_INTERP program header.
    let Ok(bytes) = std::fs::read(path) else {
        return false;
    };
    if bytes.len() < 64 || &bytes[..4] != b"\x7fELF" {
        return false;
    }
    let phoff = u64::from_le_bytes(bytes[32..40].try_into().unwrap()) as usize;
    let phentsize = u16::from_le_bytes(bytes[54..56].try_into().unwrap()) as usize;
    let phnum = u16::from_le_bytes(bytes[56..58].try_into().unwrap()) as usize;
    (0..phnum).all(|i| {
        let off = phoff + i * phentsize;
        bytes
            .get(off..off + 4)
            .is_none_or(|t| u32::from_le_bytes(t.try_into().unwrap()) != 3)
    })
}
