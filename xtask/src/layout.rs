//! Checks of the source tree's shape (CONTRIBUTING.md#code-style): no file of any crate of
//! the workspace imports a file that imports it back (directly or through others; the paths
//! are read by [`imports`]), and source files stay under [`MAX_LINES`] unless [`LONG_FILES`]
//! names them with a reason.
//!
//! | module | concern |
//! |---|---|
//! | [`imports`] | the module paths a source file names (`use` trees, `crate::`, `super::`, `self::`) |

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

mod imports;

/// Longest source file, in lines, that needs no reason.
pub(crate) const MAX_LINES: usize = 450;

/// The source files allowed over [`MAX_LINES`], each with the reason it stays one file.
pub(crate) const LONG_FILES: &[(&str, &str)] = &[
    (
        "tests/src/lab.rs",
        "the pod lab is one topology: its namespaces, links, addresses and routes are built \
         in one sequence, and all of it is removed on Drop, panics included",
    ),
    (
        "tests/src/nodelab.rs",
        "the node lab is one topology (one node or two, pods wired as routed CNIs wire \
         them), built in one sequence and removed on Drop, panics included",
    ),
];

/// Every `.rs` file below `dir`, relative to it.
pub(crate) fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(at) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&at) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                found.push(path.strip_prefix(dir).expect("below dir").to_owned());
            }
        }
    }
    found.sort();
    found
}

/// The module path of a file of a crate's `src/` (`a/b.rs` and `a/b/mod.rs` are `a::b`).
fn module_of(file: &Path) -> Vec<String> {
    let mut parts: Vec<String> = file
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_owned())
        .collect();
    if parts
        .last()
        .is_some_and(|p| p == "mod" || p == "lib" || p == "main")
    {
        parts.pop();
    }
    parts
}

/// The crates whose import graphs are checked: each directory is one crate's root (a
/// `src/` without its `bin/`, a binary's own directory of modules below `src/bin/`, or a
/// test binary's directory below `tests/tests/`): every crate of the workspace.
pub(crate) const CRATES: [&str; 15] = [
    "egress-common/src",
    "egress-ebpf/src",
    "egress-lab-ebpf/src",
    "egress-ebpf-build/src",
    "egress-user/src",
    "tests/src",
    "tests/src/bin/bench",
    "tests/src/bin/vmlab",
    "tests/tests/bpf",
    "tests/tests/deploy",
    "tests/tests/node",
    "tests/tests/ops",
    "tests/tests/pod",
    "tests/tests/proxy",
    "xtask/src",
];

/// Import cycles known to be on their way out, as (file, file) from the workspace root:
/// the edge between the two is not followed. None today.
pub(crate) const KNOWN_CYCLES: &[(&str, &str)] = &[];

/// The `.rs` files of the crate whose root is `src` (its `bin/` left out: each binary
/// there is a crate of its own), relative to it, with their text.
pub(crate) fn crate_sources(src: &Path) -> BTreeMap<PathBuf, String> {
    rust_files(src)
        .into_iter()
        .filter(|file| !(src.ends_with("src") && file.starts_with("bin")))
        .map(|file| {
            let text = std::fs::read_to_string(src.join(&file)).unwrap_or_default();
            (file, text)
        })
        .collect()
}

/// Which files of one crate each file imports: through `use` trees and paths from
/// `crate::`, `super::`, `self::` or a child module, an item re-exported by a module
/// followed to the file that defines it. A module's ancestors are the rooms it sits in:
/// what a file uses of its own ancestors' definitions (the crate root's, as `crate::f`;
/// its parent's, as `super::T`) is no import. A parent naming its children is.
pub(crate) fn imports(sources: &BTreeMap<PathBuf, String>) -> BTreeMap<PathBuf, BTreeSet<PathBuf>> {
    let by_module: BTreeMap<Vec<String>, PathBuf> =
        sources.keys().map(|f| (module_of(f), f.clone())).collect();
    let is_module = |path: &[String]| by_module.contains_key(path);
    let names: BTreeMap<&PathBuf, imports::Names> = sources
        .iter()
        .map(|(file, text)| {
            (
                file,
                imports::named_paths(text, &module_of(file), &is_module),
            )
        })
        .collect();
    // The file a path leads to: the longest prefix that is a module, unless that module
    // binds the next segment with a `use` (a re-export): then where that leads.
    let target = |mut path: Vec<String>| -> Option<&PathBuf> {
        for _ in 0..8 {
            let (n, file) = (1..=path.len())
                .rev()
                .find_map(|n| Some((n, by_module.get(&path[..n])?)))?;
            let Some(item) = path.get(n) else {
                return Some(file);
            };
            let bound = names[file].bound.iter().find(|(name, _)| name == item);
            match bound {
                Some((_, to)) => path = to.iter().chain(&path[n + 1..]).cloned().collect(),
                None => return Some(file),
            }
        }
        None
    };
    let mut graph = BTreeMap::new();
    for file in sources.keys() {
        let module = module_of(file);
        let mut deps = BTreeSet::new();
        for path in &names[file].paths {
            if let Some(to) = target(path.clone()).filter(|to| *to != file) {
                let ancestor = module.starts_with(&module_of(to));
                if !ancestor {
                    deps.insert(to.clone());
                }
            }
        }
        graph.insert(file.clone(), deps);
    }
    graph
}

/// A cycle in the import graph, if there is one.
pub(crate) fn find_cycle(graph: &BTreeMap<PathBuf, BTreeSet<PathBuf>>) -> Option<Vec<PathBuf>> {
    fn visit(
        node: &PathBuf,
        graph: &BTreeMap<PathBuf, BTreeSet<PathBuf>>,
        done: &mut BTreeSet<PathBuf>,
        stack: &mut Vec<PathBuf>,
    ) -> Option<Vec<PathBuf>> {
        if let Some(at) = stack.iter().position(|n| n == node) {
            let mut cycle = stack[at..].to_vec();
            cycle.push(node.clone());
            return Some(cycle);
        }
        if !done.insert(node.clone()) {
            return None;
        }
        stack.push(node.clone());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, done, stack) {
                return Some(cycle);
            }
        }
        stack.pop();
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|node| visit(node, graph, &mut done, &mut Vec::new()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("xtask lives in the workspace")
            .to_owned()
    }

    #[test]
    fn a_cycle_is_found_and_a_tree_has_none() {
        let edge = |a: &str, b: &[&str]| {
            (
                PathBuf::from(a),
                b.iter().map(PathBuf::from).collect::<BTreeSet<_>>(),
            )
        };
        let tree: BTreeMap<_, _> = [edge("a", &["b", "c"]), edge("b", &["c"]), edge("c", &[])]
            .into_iter()
            .collect();
        assert_eq!(find_cycle(&tree), None);
        let looped: BTreeMap<_, _> = [edge("a", &["b"]), edge("b", &["c"]), edge("c", &["a"])]
            .into_iter()
            .collect();
        assert_eq!(find_cycle(&looped).map(|c| c.len()), Some(4));
    }

    /// The import graph of the crate at `dir`, without the edges of [`KNOWN_CYCLES`].
    fn graph_of(dir: &str) -> BTreeMap<PathBuf, BTreeSet<PathBuf>> {
        let mut graph = imports(&crate_sources(&root().join(dir)));
        for (a, b) in KNOWN_CYCLES {
            let (Ok(a), Ok(b)) = (
                Path::new(a).strip_prefix(dir),
                Path::new(b).strip_prefix(dir),
            ) else {
                continue;
            };
            for (from, to) in [(a, b), (b, a)] {
                if let Some(deps) = graph.get_mut(from) {
                    deps.remove(to);
                }
            }
        }
        graph
    }

    #[test]
    fn no_file_of_any_crate_imports_a_file_that_imports_it_back() {
        for dir in CRATES {
            let graph = graph_of(dir);
            assert!(!graph.is_empty(), "{dir}: found no sources");
            assert_eq!(find_cycle(&graph), None, "{dir}");
        }
        assert!(imports(&crate_sources(&root().join("egress-user/src"))).len() > 30);
    }

    /// The real egress-user tree, with `line` added to `file`.
    fn egress_user_with(file: &str, line: &str) -> BTreeMap<PathBuf, BTreeSet<PathBuf>> {
        let mut sources = crate_sources(&root().join("egress-user/src"));
        let text = sources.get_mut(Path::new(file)).expect("the file exists");
        text.insert_str(0, line);
        imports(&sources)
    }

    #[test]
    fn an_injected_super_cycle_is_caught() {
        // dataplane/load.rs reads the program table; the table reading it back is a cycle.
        let graph = egress_user_with("dataplane/programs.rs", "use super::load::Dataplane;\n");
        let cycle = find_cycle(&graph).expect("the cycle is found");
        assert!(
            cycle.contains(&PathBuf::from("dataplane/load.rs")),
            "{cycle:?}"
        );
        // The same import from the file's own tests module is no import of another file.
        let graph = egress_user_with("dataplane/programs.rs", "mod tests { use super::*; }\n");
        assert_eq!(find_cycle(&graph), None);
    }

    #[test]
    fn ancestors_are_no_imports_and_re_exports_lead_to_their_file() {
        let sources: BTreeMap<PathBuf, String> = [
            ("lib.rs", "mod a;\nmod b;\npub fn top() {}"),
            ("a/mod.rs", "mod c;\npub use c::T;\npub fn f() { c::g() }"),
            (
                "a/c.rs",
                "use super::f;\nuse crate::top;\npub struct T;\npub fn g() {}",
            ),
            ("b.rs", "use crate::a::T;"),
        ]
        .into_iter()
        .map(|(file, text)| (PathBuf::from(file), text.to_owned()))
        .collect();
        let graph = imports(&sources);
        let deps = |file: &str| -> Vec<String> {
            graph[Path::new(file)]
                .iter()
                .map(|p| p.display().to_string())
                .collect()
        };
        // A parent naming its child is an import; the child using its parent's and the
        // crate root's definitions is not.
        assert_eq!(deps("a/mod.rs"), ["a/c.rs"]);
        assert_eq!(deps("a/c.rs"), [] as [&str; 0]);
        // `crate::a::T` is `a/c.rs`'s, re-exported by `a/mod.rs`.
        assert_eq!(deps("b.rs"), ["a/c.rs"]);
        assert_eq!(find_cycle(&graph), None);
        // So `a/c.rs` reaching for `b.rs` closes a cycle.
        let mut sources = sources;
        sources
            .get_mut(Path::new("a/c.rs"))
            .unwrap()
            .push_str("\nuse crate::b;");
        assert!(find_cycle(&imports(&sources)).is_some());
    }

    #[test]
    fn an_injected_nested_tree_cycle_is_caught() {
        let graph = egress_user_with(
            "network/interface.rs",
            "use crate::{config::fields::Egress, dataplane::{bpffs, load::{Dataplane, LoadOptions}}};\n",
        );
        let cycle = find_cycle(&graph).expect("the cycle is found");
        assert!(
            cycle.contains(&PathBuf::from("network/interface.rs")),
            "{cycle:?}"
        );
    }

    #[test]
    fn long_source_files_are_listed_with_a_reason() {
        let root = root();
        let mut faults = Vec::new();
        for dir in [
            "egress-common",
            "egress-ebpf",
            "egress-ebpf-build",
            "egress-lab-ebpf",
            "egress-user",
            "xtask",
            "tests",
        ] {
            for file in rust_files(&root.join(dir)) {
                let path = Path::new(dir).join(&file);
                if path.starts_with("tests/target") {
                    continue;
                }
                let lines = std::fs::read_to_string(root.join(&path))
                    .unwrap()
                    .lines()
                    .count();
                let listed = LONG_FILES.iter().any(|(long, _)| Path::new(long) == path);
                if lines > MAX_LINES && !listed {
                    faults.push(format!("{} ({lines} lines) is not listed", path.display()));
                }
            }
        }
        for (file, reason) in LONG_FILES {
            let lines = std::fs::read_to_string(root.join(file)).map(|t| t.lines().count());
            match lines {
                Ok(lines) if lines > MAX_LINES => {}
                Ok(lines) => faults.push(format!("{file} ({lines} lines) needs no entry")),
                Err(_) => faults.push(format!("{file} is listed but gone")),
            }
            if reason.split_whitespace().count() < 8 {
                faults.push(format!("{file}: {reason:?} is no reason"));
            }
        }
        assert!(faults.is_empty(), "over {MAX_LINES} lines: {faults:#?}");
    }
}
