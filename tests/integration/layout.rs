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
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (path, text) in sources() {
        // A file under src/NAME/ is part of module NAME; tests are not.
        let rel = std::path::Path::new(&path).strip_prefix(&src).unwrap();
        let top = rel.iter().next().unwrap().to_str().unwrap();
        let module = top.trim_end_matches(".rs").to_string();
        if rel.file_name().is_some_and(|f| f == "tests.rs") {
            continue;
        }
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
        deps.remove(&module);
        graph.entry(module).or_default().extend(deps);
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

/// The files of `src/`, rules' tests included.
fn sources() -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut dirs = vec![std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                out.push((path.display().to_string(), text));
            }
        }
    }
    out
}

/// Each function's first line and length in lines, found by its braces
/// (braces in strings and character literals, and comments, left out).
fn functions(text: &str) -> Vec<(usize, usize)> {
    let lines: Vec<&str> = text.lines().collect();
    let code = |line: &str| -> String {
        let mut out = String::new();
        let mut quoted = false;
        let mut chars = line.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '\\' if quoted => {
                    chars.next();
                }
                '"' => quoted = !quoted,
                '\'' if !quoted && chars.clone().nth(1) == Some('\'') => {
                    chars.next();
                    chars.next();
                }
                '/' if !quoted && chars.peek() == Some(&'/') => break,
                _ if !quoted => out.push(c),
                _ => {}
            }
        }
        out
    };
    let mut found = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let t = line.trim_start();
        let t = t.strip_prefix("pub ").unwrap_or(t);
        let t = t.strip_prefix("const ").unwrap_or(t);
        let t = t.strip_prefix("unsafe ").unwrap_or(t);
        let t = t.strip_prefix("extern \"C\" ").unwrap_or(t);
        if !t.starts_with("fn ") || line.trim_end().ends_with(';') {
            continue;
        }
        let (mut depth, mut opened) = (0i64, false);
        for (j, l) in lines.iter().enumerate().skip(i) {
            let c = code(l);
            depth += c.matches('{').count() as i64 - c.matches('}').count() as i64;
            opened |= c.contains('{');
            if opened && depth <= 0 {
                found.push((i + 1, j - i + 1));
                break;
            }
        }
    }
    found
}

#[test]
fn no_function_is_longer_than_120_lines() {
    let mut long = Vec::new();
    let mut seen = 0;
    for (path, text) in sources() {
        for (line, length) in functions(&text) {
            seen += 1;
            if length > 120 {
                long.push(format!("{path}:{line} ({length} lines)"));
            }
        }
    }
    assert!(seen > 300, "only {seen} functions found");
    assert!(long.is_empty(), "too long: {long:?}");
    // The measure itself: a function of 3 lines is 3 lines.
    assert_eq!(functions("fn f() {\n    let s = \"}\";\n}\n"), [(1, 3)]);
}
