//! The process tree, as /proc shows it: what is still running under us
//! once the workers are gone.

use crate::sys::Pid;

/// One process: its parent, and whether it has already ended (a zombie
/// waiting for its parent to reap it).
struct Entry {
    parent: Pid,
    ended: bool,
}

/// `pid (comm) state ppid ...`: the state and the parent. The command
/// name may hold spaces and parentheses, so the fields are found after
/// the last `)`.
fn parse_stat(stat: &str) -> Option<Entry> {
    let after = stat.get(stat.rfind(')')?.saturating_add(1)..)?;
    let mut fields = after.split_whitespace();
    let state = fields.next()?;
    let parent = fields.next()?.parse().ok()?;
    Some(Entry {
        parent,
        ended: matches!(state, "Z" | "X"),
    })
}

/// Whether /proc shows our own pid namespace: one mounted for another
/// (as after `unshare --pid` without a new mount) names other processes
/// by our numbers.
pub fn proc_is_ours() -> bool {
    std::fs::read_link("/proc/self")
        .ok()
        .and_then(|p| p.to_str()?.parse::<u32>().ok())
        == Some(std::process::id())
}

/// The parent of process `pid`, from /proc.
pub fn parent_of(pid: Pid) -> Option<Pid> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&stat).map(|e| e.parent)
}

/// Every live process in the tree under `root` (not `root` itself),
/// leaving out the subtrees of `except`. Empty when /proc cannot be read
/// or belongs to another pid namespace.
pub fn descendants(root: Pid, except: &[Pid]) -> Vec<Pid> {
    if !proc_is_ours() {
        return Vec::new();
    }
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut table: Vec<(Pid, Entry)> = Vec::new();
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<Pid>().ok())
        else {
            continue;
        };
        // A process may end between the listing and the read: skipped.
        if let Some(e) = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .as_deref()
            .and_then(parse_stat)
        {
            table.push((pid, e));
        }
    }
    under(root, except, &table)
}

/// The tree under `root` in `table` (pid, entry), but the subtrees of
/// `except` and the processes that have ended. A plain list: the table
/// holds a host's processes at most, read at shutdown.
fn under(root: Pid, except: &[Pid], table: &[(Pid, Entry)]) -> Vec<Pid> {
    let mut found = Vec::new();
    let mut seen = vec![root];
    let mut todo = vec![root];
    while let Some(p) = todo.pop() {
        for (c, e) in table.iter().filter(|(_, e)| e.parent == p) {
            // Each process once: a corrupt table (a cycle) never loops.
            if except.contains(c) || seen.contains(c) {
                continue;
            }
            seen.push(*c);
            if !e.ended {
                found.push(*c);
            }
            todo.push(*c);
        }
    }
    found.sort_unstable();
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_with_awkward_names() {
        let e = parse_stat("42 (a) b (c)) S 7 42 42 0").unwrap();
        assert_eq!((e.parent, e.ended), (7, false));
        assert!(parse_stat("43 (x) Z 1 0").unwrap().ended);
        assert!(parse_stat("garbage").is_none());
    }

    #[test]
    fn the_tree_under_a_root_without_the_excepted_and_the_ended() {
        let t: Vec<(Pid, Entry)> = [
            (10, 1, false),
            (11, 10, false), // a worker's helper
            (12, 11, false), // its child
            (13, 10, false), // the log command
            (14, 13, false), // its child
            (15, 10, true),  // a zombie, not yet reaped
            (16, 15, false), // not possible, but harmless
            (20, 1, false),  // not ours
        ]
        .into_iter()
        .map(|(p, parent, ended)| (p, Entry { parent, ended }))
        .collect();
        assert_eq!(under(10, &[13], &t), [11, 12, 16]);
        assert_eq!(under(20, &[], &t), Vec::<Pid>::new());
    }

    #[test]
    fn this_process_has_its_children_listed() {
        let me = std::process::id() as Pid;
        let mut child = std::process::Command::new("sleep")
            .arg("100")
            .spawn()
            .unwrap();
        let pid = child.id() as Pid;
        let all = descendants(me, &[]);
        let without = descendants(me, &[pid]);
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(all.contains(&pid), "{pid} not in {all:?}");
        assert!(!all.contains(&me));
        assert!(!without.contains(&pid), "{pid} in {without:?}");
    }
}
