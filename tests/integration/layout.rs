//! The source's shape, checked: modules depend on each other in one
//! direction only (no import cycle), and the core (`rules`) imports
//! nothing that does I/O, so its rules stay testable without processes,
//! descriptors or a clock.

use std::collections::{BTreeMap, BTreeSet};

/// A module's source without its `#[cfg(test)] mod tests` (tests may use
/// anything; the rules' are in a file of their own).
fn without_tests(text: &str) -> &str {
    text.find("#[cfg(test)]\nmod tests")
        .map_or(text, |i| &text[..i])
}

/// The crate's top-level modules and the others each one names through a
/// `crate::` path, outside its tests.
fn imports() -> BTreeMap<String, BTreeSet<String>> {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut graph = BTreeMap::new();
    for entry in std::fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let module = path.file_stem().unwrap().to_str().unwrap().to_string();
        let text = std::fs::read_to_string(&path).unwrap();
        let mut deps = BTreeSet::new();
        let code = without_tests(&text);
        for (i, _) in code.match_indices("crate::") {
            let rest = &code[i + "crate::".len()..];
            // `crate::name` or `crate::{a, b::c, ...}`.
            let names: Vec<&str> = match rest.strip_prefix('{') {
                Some(list) => list[..list.find('}').unwrap()]
                    .split(',')
                    .map(|n| n.trim().split("::").next().unwrap())
                    .collect(),
                None => vec![
                    rest.split(|c: char| !c.is_alphanumeric() && c != '_')
                        .next()
                        .unwrap(),
                ],
            };
            for name in names {
                if !name.is_empty() && name != "self" && name != module {
                    deps.insert(name.to_string());
                }
            }
        }
        graph.insert(module, deps);
    }
    graph
}

/// A cycle through `from`, if there is one: the modules on it.
fn cycle(graph: &BTreeMap<String, BTreeSet<String>>, from: &str) -> Option<Vec<String>> {
    fn walk(
        graph: &BTreeMap<String, BTreeSet<String>>,
        at: &str,
        target: &str,
        path: &mut Vec<String>,
        seen: &mut BTreeSet<String>,
    ) -> bool {
        for next in graph.get(at).into_iter().flatten() {
            if next == target {
                return true;
            }
            if seen.insert(next.clone()) {
                path.push(next.clone());
                if walk(graph, next, target, path, seen) {
                    return true;
                }
                path.pop();
            }
        }
        false
    }
    let mut path = vec![from.to_string()];
    walk(graph, from, from, &mut path, &mut BTreeSet::new()).then_some(path)
}

#[test]
fn modules_depend_on_each_other_in_one_direction() {
    let graph = imports();
    assert!(
        graph.len() > 20 && graph["shell"].contains("rules"),
        "{graph:?}"
    );
    for module in graph.keys() {
        if let Some(path) = cycle(&graph, module) {
            panic!("an import cycle: {} -> {module}", path.join(" -> "));
        }
    }
}

#[test]
fn the_rules_import_nothing_that_does_io() {
    let graph = imports();
    // Plain data and pure functions only.
    let allowed = ["clock", "config", "sig", "wait"];
    for dep in &graph["rules"] {
        assert!(
            allowed.contains(&dep.as_str()),
            "rules imports crate::{dep}"
        );
    }
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/rules.rs"),
    )
    .unwrap();
    for io in [
        "libc::",
        "std::fs",
        "std::os",
        "std::process",
        "std::net",
        "std::thread",
        "std::env",
        "Instant::now",
        "SystemTime",
        "sys::",
    ] {
        assert!(!without_tests(&text).contains(io), "rules uses {io}");
    }
}

/// The check itself finds what it is for.
#[test]
fn a_cycle_is_found() {
    let graph: BTreeMap<String, BTreeSet<String>> =
        [("a", "b"), ("b", "c"), ("c", "a"), ("d", "a")]
            .into_iter()
            .map(|(m, d)| (m.to_string(), BTreeSet::from([d.to_string()])))
            .collect();
    assert_eq!(cycle(&graph, "a").unwrap(), ["a", "b", "c"]);
    assert_eq!(cycle(&graph, "d"), None);
}
