//! `-user` / `--user`: a user's uid, primary gid and supplementary groups,
//! read from /etc/passwd and /etc/group directly (a static binary has no
//! NSS modules to ask).

use std::path::Path;

/// Who a worker runs as.
#[derive(Debug, Clone, PartialEq)]
pub struct Ids {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups: every group listing the user, and the primary.
    pub groups: Vec<u32>,
}

/// Looks `login` up (a name, or a numeric uid present in /etc/passwd).
pub fn lookup(login: &str) -> Result<Ids, String> {
    lookup_in(login, Path::new("/etc/passwd"), Path::new("/etc/group"))
}

fn lookup_in(login: &str, passwd: &Path, group: &Path) -> Result<Ids, String> {
    let read = |p: &Path| {
        std::fs::read_to_string(p).map_err(|e| format!("unable to read {}: {e}", p.display()))
    };
    let passwd = read(passwd)?;
    let entry = passwd
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            match f[..] {
                [name, _, uid, gid, ..] => Some((name, uid, gid)),
                _ => None,
            }
        })
        .find(|&(name, uid, _)| name == login || uid == login)
        .ok_or_else(|| format!("unknown user '{login}' (not in /etc/passwd)"))?;
    let (name, uid, gid) = entry;
    let uid = uid
        .parse()
        .map_err(|_| format!("bad uid for '{name}' in /etc/passwd"))?;
    let gid: u32 = gid
        .parse()
        .map_err(|_| format!("bad gid for '{name}' in /etc/passwd"))?;
    let mut groups = vec![gid];
    // /etc/group may be missing in a minimal container: primary group only.
    if let Ok(text) = std::fs::read_to_string(group) {
        for f in text.lines().map(|l| l.split(':').collect::<Vec<_>>()) {
            if let [_, _, g, members, ..] = f[..]
                && members.split(',').any(|m| m == name)
                && let Ok(g) = g.parse::<u32>()
                && !groups.contains(&g)
            {
                groups.push(g);
            }
        }
    }
    Ok(Ids { uid, gid, groups })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn looks_users_up_in_the_files() {
        let dir = std::env::temp_dir().join(format!("ss-users-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("passwd"),
            "root:x:0:0::/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(
            dir.join("group"),
            "root:x:0:\napp:x:1000:\nweb:x:33:app,other\nnope:x:44:other\n",
        )
        .unwrap();
        let (p, g) = (dir.join("passwd"), dir.join("group"));
        assert_eq!(
            lookup_in("app", &p, &g).unwrap(),
            Ids {
                uid: 1000,
                gid: 1000,
                groups: vec![1000, 33]
            }
        );
        assert_eq!(lookup_in("1000", &p, &g).unwrap().uid, 1000);
        assert!(
            lookup_in("ghost", &p, &g)
                .unwrap_err()
                .contains("unknown user 'ghost'")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
