//! Imports flow one way (CONTRIBUTING.md, "The direction of imports"): no
//! module of `pgoutbox` or `pgoutbox-macros` uses, directly or through
//! others, a module that uses it.
//!
//! A module's imports are read from its source as text: every
//! `crate::name` outside comments, where `name` is a module of the crate
//! (its files `name.rs` or `name/…`), and, for an item re-exported at the
//! crate root (`crate::Status`), the root itself. The root's edges are its
//! `pub use` re-exports; `mod` declarations are not imports.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Module name → the modules it imports.
type Graph = BTreeMap<String, BTreeSet<String>>;

const ROOT: &str = "lib";

fn module_of(src: &Path, file: &Path) -> String {
    let relative = file.strip_prefix(src).unwrap();
    let first = relative
        .components()
        .next()
        .unwrap()
        .as_os_str()
        .to_string_lossy();
    first.trim_end_matches(".rs").to_owned()
}

fn files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The code of a line, without a trailing `//` comment (good enough for
/// this crate: no `//` inside the string literals that mention `crate::`).
fn code(line: &str) -> &str {
    let trimmed = line.trim_start();
    if trimmed.starts_with("//") {
        return "";
    }
    line.split("//").next().unwrap_or("")
}

fn graph(src: &Path) -> Graph {
    let mut paths = Vec::new();
    files(src, &mut paths);
    let modules: BTreeSet<String> = paths.iter().map(|p| module_of(src, p)).collect();
    let mut graph = Graph::new();
    for path in &paths {
        let from = module_of(src, path);
        let text = std::fs::read_to_string(path).unwrap();
        let edges = graph.entry(from.clone()).or_default();
        for line in text.lines().map(code) {
            if from == ROOT {
                // The root's edges: `pub use module::…` (or `crate::module`).
                if let Some(path) = line.trim_start().strip_prefix("pub use ") {
                    let path = path.trim_start_matches("crate::");
                    let name: String = path
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_')
                        .collect();
                    if modules.contains(&name) {
                        edges.insert(name);
                    }
                }
                continue;
            }
            for (i, _) in line.match_indices("crate::") {
                // `$crate::` in a macro_rules! body is the user's path to the crate.
                if line[..i].ends_with('$') {
                    continue;
                }
                let rest = &line[i + "crate::".len()..];
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if modules.contains(&name) {
                    if name != from {
                        edges.insert(name);
                    }
                } else if name.starts_with(|c: char| c.is_ascii_uppercase()) && from != ROOT {
                    edges.insert(ROOT.to_owned());
                }
            }
            // `use crate::{a, b::C}` lists modules after the brace.
            if let Some(list) = line.split("crate::{").nth(1) {
                for name in list.split([',', '}', ' ', ':']) {
                    if modules.contains(name) && name != from {
                        edges.insert(name.to_owned());
                    }
                }
            }
        }
    }
    graph
}

/// A cycle through `start`, if any, as the modules along it.
fn cycle(graph: &Graph, start: &str) -> Option<Vec<String>> {
    fn walk(
        graph: &Graph,
        at: &str,
        start: &str,
        path: &mut Vec<String>,
        seen: &mut BTreeSet<String>,
    ) -> bool {
        for next in graph.get(at).into_iter().flatten() {
            if next == start {
                return true;
            }
            if seen.insert(next.clone()) {
                path.push(next.clone());
                if walk(graph, next, start, path, seen) {
                    return true;
                }
                path.pop();
            }
        }
        false
    }
    let mut path = vec![start.to_owned()];
    walk(graph, start, start, &mut path, &mut BTreeSet::new()).then(|| {
        path.push(start.to_owned());
        path
    })
}

fn assert_one_way(crate_dir: &str) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(crate_dir)
        .join("src");
    let graph = graph(&src);
    assert!(
        graph.len() > 3,
        "read too few modules in {}: {graph:?}",
        src.display()
    );
    let cycles: Vec<String> = graph
        .keys()
        .filter_map(|m| cycle(&graph, m))
        .map(|c| c.join(" → "))
        .collect();
    assert!(
        cycles.is_empty(),
        "{crate_dir}: modules that import their importers:\n{}",
        cycles.join("\n")
    );
}

#[test]
fn the_runtime_imports_one_way() {
    assert_one_way("pgoutbox");
}

#[test]
fn the_macro_imports_one_way() {
    assert_one_way("pgoutbox-macros");
}

#[test]
fn a_loop_is_found() {
    let graph: Graph = [("a", "b"), ("b", "c"), ("c", "a")]
        .into_iter()
        .map(|(from, to)| (from.to_owned(), BTreeSet::from([to.to_owned()])))
        .collect();
    assert_eq!(cycle(&graph, "a").unwrap(), ["a", "b", "c", "a"]);
}
