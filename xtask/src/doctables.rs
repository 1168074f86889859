//! The module tables are the one description of the layout: every file that declares
//! modules (`mod x;`) opens with a `//!` table whose header's first cell is `module` and
//! that has one row per module (`` | `x` | ... | `` or ``| [`x`] | ... |``), and no row
//! for a module that is not there. CONTRIBUTING.md points into these tables instead of
//! listing files.

use std::{collections::BTreeSet, path::Path};

use crate::layout::rust_files;

/// The source roots of the workspace's crates (the tests crate's binaries included).
const CRATES: [&str; 8] = [
    "egress-common/src",
    "egress-ebpf/src",
    "egress-lab-ebpf/src",
    "egress-ebpf-build/src",
    "egress-user/src",
    "xtask/src",
    "tests/src",
    "tests/tests",
];

/// The modules a file declares as files of their own (`mod x;`, any visibility).
fn declared(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|line| {
            let line = line.trim();
            let rest = if let Some(rest) = line.strip_prefix("pub") {
                let rest = rest.trim_start();
                match rest.strip_prefix('(') {
                    Some(scoped) => scoped.split_once(')')?.1.trim_start(),
                    None => rest,
                }
            } else {
                line
            };
            let name = rest.strip_prefix("mod ")?.strip_suffix(';')?.trim();
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
                .then(|| name.to_owned())
        })
        .collect()
}

/// The first cell of a table row, trimmed.
fn first_cell(row: &str) -> Option<&str> {
    Some(row.strip_prefix('|')?.split('|').next()?.trim())
}

/// The modules the file's `//!` module table has rows for; `None` without such a table.
fn tabled(text: &str) -> Option<BTreeSet<String>> {
    let rows: Vec<&str> = text
        .lines()
        .filter_map(|line| line.strip_prefix("//!"))
        .map(str::trim)
        .skip_while(|row| first_cell(row) != Some("module"))
        .take_while(|row| row.starts_with('|'))
        .collect();
    if rows.is_empty() {
        return None;
    }
    let names = rows
        .iter()
        .skip(2) // the header and its separator
        .filter_map(|row| {
            let cell = first_cell(row)?;
            let cell = cell
                .strip_prefix('[')
                .and_then(|c| c.strip_suffix(']'))
                .unwrap_or(cell);
            Some(cell.strip_prefix('`')?.strip_suffix('`')?.to_owned())
        })
        .collect();
    Some(names)
}

/// What is wrong with one file's table, one line per fault.
fn faults(file: &str, text: &str) -> Vec<String> {
    let declared = declared(text);
    if declared.is_empty() {
        return Vec::new();
    }
    let Some(tabled) = tabled(text) else {
        return vec![format!(
            "{file}: declares modules but has no `//!` module table"
        )];
    };
    let missing = declared
        .difference(&tabled)
        .map(|m| format!("{file}: `{m}` is not in the module table"));
    let stale = tabled
        .difference(&declared)
        .map(|m| format!("{file}: the module table names `{m}`, which is not declared"));
    missing.chain(stale).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_and_stale_rows_are_found() {
        let text = "//! Top.\n//!\n//! | module | concern |\n//! |---|---|\n//! | `a` | A |\n\
                    //! | [`gone`] | G |\n\nmod a;\n#[cfg(test)]\nmod b;\npub(crate) mod c;\n\
                    mod inline {}\n// mod commented;\n";
        assert_eq!(
            faults("f.rs", text),
            [
                "f.rs: `b` is not in the module table",
                "f.rs: `c` is not in the module table",
                "f.rs: the module table names `gone`, which is not declared",
            ]
        );
        assert_eq!(
            faults("g.rs", "//! No table.\npub mod x;\n"),
            ["g.rs: declares modules but has no `//!` module table"]
        );
        assert!(faults("h.rs", "//! A leaf.\nfn f() {}\n").is_empty());
    }

    #[test]
    fn every_module_is_in_its_parents_table() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("xtask lives in the workspace");
        let mut bad = Vec::new();
        let mut parents = 0;
        for krate in CRATES {
            for file in rust_files(&root.join(krate)) {
                let text = std::fs::read_to_string(root.join(krate).join(&file)).unwrap();
                parents += usize::from(!declared(&text).is_empty());
                bad.extend(faults(&format!("{krate}/{}", file.display()), &text));
            }
        }
        assert!(parents > 15, "found the parent files: {parents}");
        assert!(bad.is_empty(), "module tables to fix: {bad:#?}");
    }
}
