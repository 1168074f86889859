//! The documentation's links resolve: every relative link of a markdown file of the
//! repository names a file that exists, and every `#anchor` names a heading of its target
//! (GitHub's anchors). Code comments and manifests that point into the docs
//! (`docs/operations.md#failover`, `README.md#requirements`) are held to the same rule, and
//! name a file: a bare "see the README" cannot be checked.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
};

/// Every file below `root` whose name ends with one of `exts`, relative to it, leaving out
/// build output and hidden directories.
fn files(root: &Path, exts: &[&str]) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![root.to_owned()];
    while let Some(at) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&at) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if path.is_dir() {
                if name != "target" && !name.starts_with('.') {
                    stack.push(path);
                }
            } else if exts.iter().any(|ext| name.ends_with(ext)) {
                found.push(path.strip_prefix(root).expect("below root").to_owned());
            }
        }
    }
    found.sort();
    found
}

/// The lines of a markdown text outside fenced code blocks.
fn prose(text: &str) -> impl Iterator<Item = &str> {
    let mut fenced = false;
    text.lines().filter(move |line| {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            return false;
        }
        !fenced
    })
}

/// GitHub's anchor of a heading: lower case, punctuation left out, spaces as hyphens.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// The anchors of a markdown text: its headings' (a repeated one gets `-1`, `-2`, ...).
fn anchors(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for line in prose(text) {
        let hashes = line.chars().take_while(|&c| c == '#').count();
        if !(1..=6).contains(&hashes) || !line[hashes..].starts_with(' ') {
            continue;
        }
        let base = slug(&line[hashes..]);
        let mut anchor = base.clone();
        let mut n = 0;
        while !found.insert(anchor.clone()) {
            n += 1;
            anchor = format!("{base}-{n}");
        }
    }
    found
}

/// A line with its inline code spans left out (a link's text may be code; a code span is
/// never a link).
fn without_code(line: &str) -> String {
    let mut out = String::new();
    let mut rest = line;
    while let Some(open) = rest.find('`') {
        out.push_str(&rest[..open]);
        let ticks = rest[open..].chars().take_while(|&c| c == '`').count();
        let fence = &rest[open..open + ticks];
        match rest[open + ticks..].find(fence) {
            Some(close) => rest = &rest[open + ticks + close + ticks..],
            None => {
                rest = &rest[open + ticks..];
                out.push_str(fence);
            }
        }
    }
    out.push_str(rest);
    out
}

/// The targets of a markdown text's links: inline (`[text](target)`, images too) and
/// reference definitions (`[name]: target`).
fn links(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    for line in prose(text) {
        let line = without_code(line);
        let trimmed = line.trim_start();
        if trimmed.starts_with('[')
            && let Some(at) = trimmed.find("]: ")
        {
            found.push(
                trimmed[at + 3..]
                    .split_whitespace()
                    .next()
                    .unwrap_or("")
                    .to_owned(),
            );
            continue;
        }
        let mut rest = line.as_str();
        while let Some(at) = rest.find("](") {
            rest = &rest[at + 2..];
            let end = rest.find(')').unwrap_or(rest.len());
            let target = rest[..end].split_whitespace().next().unwrap_or("");
            found.push(target.trim_matches(['<', '>']).to_owned());
            rest = &rest[end..];
        }
    }
    found
}

/// Why a link from the file `from` (relative to `root`) does not resolve, if it does not.
/// `from` is a file of the root for pointers from code, which are relative to the root.
fn broken(root: &Path, from: &Path, target: &str) -> Option<String> {
    if target.contains("://") || target.starts_with("mailto:") {
        return None;
    }
    let (file, anchor) = target.split_once('#').unwrap_or((target, ""));
    let path = if file.is_empty() {
        root.join(from)
    } else {
        root.join(from).parent().expect("a file").join(file)
    };
    if !path.exists() {
        return Some(format!("no file {target}"));
    }
    let is_markdown = path.extension().is_some_and(|e| e == "md");
    if anchor.is_empty() || !is_markdown {
        return None;
    }
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    (!anchors(&text).contains(anchor)).then(|| format!("no heading #{anchor} in {file}"))
}

/// The pointers into the docs a source text holds (`docs/x.md#a`, `README.md`, ...), and
/// the places that name the README without a file to check.
fn pointers(text: &str) -> (Vec<String>, usize) {
    let is_path = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '/' | '.' | '-');
    let mut found = Vec::new();
    for (at, _) in text.match_indices(".md") {
        let start = text[..at].rfind(|c: char| !is_path(c)).map_or(0, |i| i + 1);
        let after = &text[at + 3..];
        if after.starts_with(|c: char| c.is_ascii_alphanumeric()) {
            continue;
        }
        let anchor_len = after
            .strip_prefix('#')
            .map_or(0, |a| 1 + a.find(|c: char| !is_path(c)).unwrap_or(a.len()));
        let path = &text[start..at + 3];
        let known = path.starts_with("docs/")
            || [
                "README.md",
                "CONTRIBUTING.md",
                "BENCHMARKS.md",
                "bench/NOTES.md",
            ]
            .contains(&path);
        if known {
            found.push(format!("{path}{}", &after[..anchor_len]));
        }
    }
    let bare = text
        .match_indices("README")
        .filter(|(at, _)| !text[at + 6..].starts_with(".md"))
        .count();
    (found, bare)
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
    fn anchors_follow_github() {
        let text = "# egress-router\n## Node mode (`egress-router node`)\n```\n# not a heading\n```\n\
                    ### What `init` and `legacy` set up\n## Logs\n## Logs\n#hashtag\n";
        let found: Vec<String> = anchors(text).into_iter().collect();
        assert_eq!(
            found,
            [
                "egress-router",
                "logs",
                "logs-1",
                "node-mode-egress-router-node",
                "what-init-and-legacy-set-up"
            ]
        );
    }

    #[test]
    fn links_are_found_outside_code() {
        let text = "See [`a`](a.md#x) and ![chart](b.svg \"t\").\n`[no](c.md)`\n```\n[no](d.md)\n```\n\
                    [ref]: e.md#y\n";
        assert_eq!(links(text), ["a.md#x", "b.svg", "e.md#y"]);
    }

    #[test]
    fn pointers_in_code_are_found() {
        let (found, bare) = pointers(
            "//! see docs/operations.md#failover and README.md, (bench/NOTES.md).\n\
             // the README \"Layout\"; x.md is not ours; docs/design/conntrack.md.",
        );
        assert_eq!(
            found,
            [
                "docs/operations.md#failover",
                "README.md",
                "bench/NOTES.md",
                "docs/design/conntrack.md"
            ]
        );
        assert_eq!(bare, 1);
    }

    #[test]
    fn a_broken_link_is_reported() {
        let root = root();
        let readme = Path::new("README.md");
        assert_eq!(broken(&root, readme, "BENCHMARKS.md"), None);
        assert!(broken(&root, readme, "NOPE.md").is_some());
        assert!(broken(&root, readme, "#no-such-heading").is_some());
        assert!(broken(&root, readme, "https://example.com/x.md#y").is_none());
    }

    #[test]
    fn every_markdown_link_resolves() {
        let root = root();
        let docs = files(&root, &[".md"]);
        assert!(docs.len() > 5, "found the docs: {docs:?}");
        let mut bad = Vec::new();
        for doc in &docs {
            let text = std::fs::read_to_string(root.join(doc)).unwrap();
            for target in links(&text) {
                if let Some(why) = broken(&root, doc, &target) {
                    bad.push(format!("{}: {why}", doc.display()));
                }
            }
        }
        assert!(bad.is_empty(), "links that do not resolve: {bad:#?}");
    }

    #[test]
    fn every_pointer_from_code_into_the_docs_resolves() {
        let root = root();
        let sources = files(&root, &[".rs", ".yaml", ".toml", ".sh"]);
        assert!(sources.len() > 50, "found the sources: {}", sources.len());
        let mut bad = Vec::new();
        for source in sources
            .iter()
            .filter(|s| !s.ends_with("xtask/src/doclinks.rs"))
        {
            let text = std::fs::read_to_string(root.join(source)).unwrap_or_default();
            let (found, bare) = pointers(&text);
            for target in found {
                if let Some(why) = broken(&root, Path::new("code"), &target) {
                    bad.push(format!("{}: {why}", source.display()));
                }
            }
            if bare > 0 {
                bad.push(format!(
                    "{}: names the README without README.md",
                    source.display()
                ));
            }
        }
        assert!(bad.is_empty(), "pointers that do not resolve: {bad:#?}");
    }
}
