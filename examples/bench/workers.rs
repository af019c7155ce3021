//! `make bench`, several workers per generation (--workers): throughput
//! of a server whose handler blocks, how the load spreads, what a roll
//! under load costs (failed requests, live workers, memory), and the
//! scaling of a CPU-bound node server (reported, too noisy on two cores
//! to judge by).

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::procfs::{children, rss_kib};

/// One request at a time, each blocking 5 ms; the answer names the pid.
const BLOCKING: &str = r#"
import os, socket, time
s = socket.socket(fileno=3)
body = ("pid %d\n" % os.getpid()).encode()
while True:
    c, _ = s.accept()
    c.recv(4096)
    time.sleep(0.005)
    c.sendall(b"HTTP/1.0 200 OK\r\n\r\n" + body)
    c.close()
"#;

/// 0.2 ms of CPU per request.
const NODE_SPIN: &str = r#"
const server = require("http").createServer((req, res) => {
  const end = process.hrtime.bigint() + 200000n;
  while (process.hrtime.bigint() < end) {}
  res.end("pid " + process.pid + "\n");
});
server.listen({ fd: 3 });
process.on("SIGTERM", () => server.close(() => process.exit(0)));
"#;

const WINDOW: Duration = Duration::from_secs(2);
const RUNS: usize = 3;

pub fn run(ours: &str, hello: &Path) {
    // The workers run in a directory of their own.
    let ours = std::fs::canonicalize(ours).unwrap().display().to_string();
    let ours = ours.as_str();
    let dir = std::env::temp_dir().join(format!("start_server-bench-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    std::fs::write(dir.join("server.py"), BLOCKING).unwrap();
    std::fs::write(dir.join("app.js"), NODE_SPIN).unwrap();
    println!(
        "--workers: a server that blocks 5 ms per request (python3), 8 clients, {} s windows, median of {RUNS}",
        WINDOW.as_secs()
    );
    let python = ["python3", "server.py"];
    let mut base = 0.0;
    for n in [1, 2, 4] {
        let mut s = Started::new(
            ours,
            &dir,
            &[&format!("--workers={n}"), "--readiness=accept"],
            &python,
            n,
        );
        let mut rates = Vec::new();
        let mut spread8 = Vec::new();
        for _ in 0..RUNS {
            let counts = measure(&s.addr, 8, WINDOW);
            rates.push(counts.values().sum::<usize>() as f64 / WINDOW.as_secs_f64());
            spread8.push(max_over_mean(&counts));
        }
        let rate = median_f(rates);
        if n == 1 {
            base = rate;
        }
        print!(
            "                         N={n}: {rate:.0} req/s ({:.2}x N=1)",
            rate / base
        );
        if n == 4 {
            let spread1 = max_over_mean(&measure(&s.addr, 1, WINDOW));
            print!(
                "; max/mean per worker {:.2} at 8 clients, {spread1:.2} at 1",
                median_f(spread8)
            );
        }
        println!();
        s.stop();
    }
    println!("--workers: 10 restarts under load (example server, 4 clients, --readiness=notify)");
    for (n, surge) in [(2, 1), (2, 2), (4, 1), (4, 4)] {
        roll(ours, &dir, hello, n, surge);
    }
    if Command::new("node").arg("--version").output().is_ok() {
        println!(
            "--workers: node, 0.2 ms of CPU per request, 8 clients (two cores, the clients on them too: noisy, reported only)"
        );
        for n in [1, 2] {
            let mut s = Started::new(
                ours,
                &dir,
                &[&format!("--workers={n}"), "--readiness=accept"],
                &["node", "app.js"],
                n,
            );
            let rates: Vec<f64> = (0..RUNS)
                .map(|_| {
                    measure(&s.addr, 8, WINDOW).values().sum::<usize>() as f64
                        / WINDOW.as_secs_f64()
                })
                .collect();
            println!(
                "                         N={n}: {:.0} req/s (runs {rates:.0?})",
                median_f(rates.clone())
            );
            s.stop();
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Ten HUPs under load with N workers and --max-surge=S: failed
/// requests, the most children start_server had at once, and the
/// workers' summed RSS at its peak against the steady state.
fn roll(ours: &str, dir: &Path, hello: &Path, n: usize, surge: usize) {
    let hello = hello.display().to_string();
    let mut s = Started::new(
        ours,
        dir,
        &[
            &format!("--workers={n}"),
            &format!("--max-surge={surge}"),
            "--readiness=notify",
        ],
        &[&hello],
        n,
    );
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (stop, ok, failed, addr) =
                (stop.clone(), ok.clone(), failed.clone(), s.addr.clone());
            thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match get(&addr) {
                        Some(_) => ok.fetch_add(1, Ordering::Relaxed),
                        None => failed.fetch_add(1, Ordering::Relaxed),
                    };
                }
            })
        })
        .collect();
    let steady = peak_while(s.pid(), || thread::sleep(Duration::from_millis(1500))).1;
    let began = Instant::now();
    let (most, peak) = peak_while(s.pid(), || {
        for generation in 2..=11 {
            s.signal("HUP");
            s.wait_generation(generation, n);
        }
    });
    let took = began.elapsed();
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        let _ = c.join();
    }
    println!(
        "                         N={n} S={surge}: {} failed of {} requests, {most} workers at most (N+S = {}), RSS {steady} KiB steady, {peak} KiB peak ({:.2}x; (N+S)/N = {:.2}), {:.2} s for 10 restarts",
        failed.load(Ordering::Relaxed),
        ok.load(Ordering::Relaxed) + failed.load(Ordering::Relaxed),
        n + surge,
        peak as f64 / steady.max(1) as f64,
        (n + surge) as f64 / n as f64,
        took.as_secs_f64()
    );
    s.stop();
}

/// Runs `during` while sampling start_server's children from /proc: the
/// most at once, and their peak summed RSS in KiB (a child not yet
/// executed, still start_server's image, counts for nothing).
fn peak_while(pid: u32, during: impl FnOnce()) -> (usize, u64) {
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let stop = stop.clone();
        thread::spawn(move || {
            let (mut most, mut peak) = (0, 0);
            while !stop.load(Ordering::Relaxed) {
                let kids = children(pid);
                most = most.max(kids.len());
                peak = peak.max(kids.iter().map(|&k| rss_kib(k)).sum::<u64>());
                thread::sleep(Duration::from_millis(1));
            }
            (most, peak)
        })
    };
    during();
    stop.store(true, Ordering::Relaxed);
    sampler.join().unwrap_or((0, 0))
}

/// start_server on a free loopback port with a status file, running
/// `command` in `dir`, its first generation's N workers up.
struct Started {
    child: Child,
    addr: String,
    status: PathBuf,
}

impl Started {
    fn new(ours: &str, dir: &Path, options: &[&str], command: &[&str], n: usize) -> Started {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap();
        let addr = format!("127.0.0.1:{port}");
        let status = dir.join(format!("status-{port}"));
        let child = Command::new(ours)
            .arg(format!("--port={addr}"))
            .arg(format!("--status-file={}", status.display()))
            .args(options)
            .arg("--")
            .args(command)
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let s = Started {
            child,
            addr,
            status,
        };
        s.wait_generation(1, n);
        s
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn signal(&self, sig: &str) {
        let _ = Command::new("kill")
            .args([&format!("-{sig}"), &self.pid().to_string()])
            .status();
    }

    /// Waits (10 s at most) until the status file lists `n` workers, all
    /// of `generation`.
    fn wait_generation(&self, generation: u64, n: usize) {
        let want = format!("{generation}:");
        let end = Instant::now() + Duration::from_secs(10);
        while Instant::now() < end {
            let text = std::fs::read_to_string(&self.status).unwrap_or_default();
            if text.lines().count() == n && text.lines().all(|l| l.starts_with(&want)) {
                return;
            }
            thread::sleep(Duration::from_millis(1));
        }
        panic!(
            "generation {generation} never listed {n} times in {}",
            self.status.display()
        );
    }

    fn stop(&mut self) {
        self.signal("TERM");
        let _ = self.child.wait();
    }
}

/// One HTTP/1.0 GET; the body, or None when it failed.
fn get(addr: &str) -> Option<String> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let (head, body) = out.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.").then(|| body.to_string())
}

/// Requests answered in `window` by `clients` clients at once, by answer
/// (the worker's pid).
fn measure(addr: &str, clients: usize, window: Duration) -> HashMap<String, usize> {
    let counts = Arc::new(Mutex::new(HashMap::new()));
    let end = Instant::now() + window;
    let threads: Vec<_> = (0..clients)
        .map(|_| {
            let (addr, counts) = (addr.to_string(), counts.clone());
            thread::spawn(move || {
                while Instant::now() < end {
                    // Only what was answered within the window counts.
                    if let Some(body) = get(&addr).filter(|_| Instant::now() <= end) {
                        *counts.lock().unwrap().entry(body).or_insert(0) += 1;
                    }
                }
            })
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
    let counts = counts.lock().unwrap();
    counts.clone()
}

fn max_over_mean(counts: &HashMap<String, usize>) -> f64 {
    let total: usize = counts.values().sum();
    let max = counts.values().copied().max().unwrap_or(0);
    max as f64 * counts.len().max(1) as f64 / total.max(1) as f64
}

fn median_f(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}
