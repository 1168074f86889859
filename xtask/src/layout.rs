//! Checks of the source tree's shape that keep the README's "Layout" true: no file of
//! egress-user imports a file that imports it back (directly or through others), and source
//! files stay under [`MAX_LINES`] unless the README names them.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

/// Longest source file, in lines, that needs no word in the README.
pub(crate) const MAX_LINES: usize = 450;

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

/// The `crate::...` paths a source text names, with `use` groups expanded.
fn crate_paths(text: &str) -> Vec<Vec<String>> {
    let code: String = text
        .lines()
        .map(|line| line.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n");
    let mut paths = Vec::new();
    let mut rest = code.as_str();
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        expand(&[], rest, &mut paths);
    }
    paths
}

/// Expands one path (possibly with `{...}` groups) at the start of `text`.
fn expand(prefix: &[String], text: &str, out: &mut Vec<Vec<String>>) {
    let end = text
        .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
        .unwrap_or(text.len());
    let head = &text[..end];
    let mut path = prefix.to_vec();
    path.extend(
        head.split("::")
            .filter(|s| !s.is_empty() && *s != "self")
            .map(str::to_owned),
    );
    if (head.is_empty() || head.ends_with("::")) && text[end..].starts_with('{') {
        let group = &text[end + 1..];
        let (mut depth, mut start) = (0, 0);
        for (i, c) in group.char_indices() {
            match c {
                '{' => depth += 1,
                '}' if depth == 0 => {
                    expand(&path, group[start..i].trim(), out);
                    return;
                }
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    expand(&path, group[start..i].trim(), out);
                    start = i + 1;
                }
                _ => {}
            }
        }
    } else {
        out.push(path);
    }
}

/// Which files of `src` each file imports through `crate::` paths.
pub(crate) fn imports(src: &Path) -> BTreeMap<PathBuf, BTreeSet<PathBuf>> {
    let files = rust_files(src);
    let by_module: BTreeMap<Vec<String>, PathBuf> =
        files.iter().map(|f| (module_of(f), f.clone())).collect();
    let mut graph = BTreeMap::new();
    for file in &files {
        let text = std::fs::read_to_string(src.join(file)).unwrap_or_default();
        let mut deps = BTreeSet::new();
        for path in crate_paths(&text) {
            // The longest prefix that is a module is the file the path lives in.
            if let Some(target) = (1..=path.len())
                .rev()
                .find_map(|n| by_module.get(&path[..n]))
                .filter(|target| *target != file)
            {
                deps.insert(target.clone());
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
    fn use_groups_expand_to_every_path() {
        let paths =
            crate_paths("use crate::{a::{b, c::D}, e};\nlet x = crate::f::g(); // crate::h");
        let joined: Vec<String> = paths.iter().map(|p| p.join("::")).collect();
        assert_eq!(joined, ["a::b", "a::c::D", "e", "f::g"]);
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

    #[test]
    fn egress_user_files_import_no_file_that_imports_them_back() {
        let graph = imports(&root().join("egress-user/src"));
        assert!(graph.len() > 30, "found the sources: {}", graph.len());
        assert_eq!(find_cycle(&graph), None);
    }

    #[test]
    fn egress_ebpf_files_import_no_file_that_imports_them_back() {
        let graph = imports(&root().join("egress-ebpf/src"));
        assert!(graph.len() > 25, "found the sources: {}", graph.len());
        assert_eq!(find_cycle(&graph), None);
    }

    #[test]
    fn long_source_files_are_named_in_the_readme() {
        let root = root();
        let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
        let mut unexplained = Vec::new();
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
                let named = readme.contains(&format!("`{}`", path.display()));
                if lines > MAX_LINES && !named {
                    unexplained.push(format!("{} ({lines} lines)", path.display()));
                }
            }
        }
        assert!(
            unexplained.is_empty(),
            "over {MAX_LINES} lines: {unexplained:?}"
        );
    }
}
