//! What /proc says of processes, for the tests and the bench alike
//! (`examples/bench.rs` includes this file).

/// The children of `pid` (of all its threads), as the kernel lists them.
pub fn children(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|c| {
            c.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}

/// Resident memory of a worker, in KiB: 0 once it is gone, and for a
/// child forked but not yet executed (still start_server's image, whose
/// pages it shares and which is no worker's yet).
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    if status.starts_with("Name:\tstart_server\n") {
        return 0;
    }
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}
