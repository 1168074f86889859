//! One license statement across the tree (README.md#license): the LICENSE files exist; the
//! crates that build a BPF object (those that depend on `aya-ebpf`) are MIT OR GPL-2.0-only
//! in Cargo and say `Dual MIT/GPL` in their object's `license` section, which the kernel
//! reads to allow GPL-only helpers; every other crate has the workspace's MIT OR
//! Apache-2.0; and README.md's License section names both.

use std::path::{Path, PathBuf};

/// The license of user space, egress-common and the tooling: the workspace's.
const WORKSPACE: &str = "MIT OR Apache-2.0";
/// The license of the BPF programs: GPL-compatible, for the kernel's GPL-only helpers.
const BPF: &str = "MIT OR GPL-2.0-only";
/// The object's `license` section that matches [`BPF`], NUL-terminated as the kernel reads it.
const BPF_SECTION: &str = r#"*b"Dual MIT/GPL\0""#;
/// Each license file and the words its text opens with.
const FILES: [(&str, &str); 3] = [
    ("LICENSE-MIT", "MIT License"),
    ("LICENSE-APACHE", "Apache License"),
    ("LICENSE-GPL-2.0", "GNU GENERAL PUBLIC LICENSE"),
];

/// A package of the workspace as `cargo metadata` has it.
struct Package {
    name: String,
    license: Option<String>,
    /// Whether it builds a BPF object: it depends on `aya-ebpf`.
    bpf: bool,
    /// Its binaries' root files.
    bins: Vec<PathBuf>,
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_owned()
}

fn packages(root: &Path) -> Vec<Package> {
    let out = std::process::Command::new(env!("CARGO"))
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(root)
        .output()
        .expect("cargo metadata runs");
    assert!(
        out.status.success(),
        "cargo metadata: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let metadata: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("cargo metadata prints JSON");
    let list = metadata["packages"].as_array().expect("a package list");
    list.iter()
        .map(|p| Package {
            name: p["name"].as_str().unwrap_or_default().to_owned(),
            license: p["license"].as_str().map(str::to_owned),
            bpf: p["dependencies"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|d| d["name"] == "aya-ebpf"),
            bins: p["targets"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|t| {
                    t["kind"]
                        .as_array()
                        .is_some_and(|k| k.iter().any(|k| k == "bin"))
                })
                .filter_map(|t| t["src_path"].as_str().map(PathBuf::from))
                .collect(),
        })
        .collect()
}

/// The value of `license` in the `[workspace.package]` table of the root manifest.
fn workspace_license(manifest: &str) -> Option<&str> {
    let table = manifest
        .split("\n[")
        .find(|t| t.starts_with("workspace.package]"))?;
    table.lines().find_map(|line| {
        let value = line.trim().strip_prefix("license")?.trim_start();
        Some(value.strip_prefix('=')?.trim().trim_matches('"'))
    })
}

/// The `## {heading}` section of a markdown file, up to the next `## ` heading.
fn section<'a>(markdown: &'a str, heading: &str) -> Option<&'a str> {
    let start = markdown.find(&format!("\n## {heading}\n"))? + 1;
    let body = &markdown[start..];
    let end = body[3..].find("\n## ").map_or(body.len(), |i| i + 3);
    Some(&body[..end])
}

/// Whether `source` declares the object's license section as [`BPF_SECTION`].
fn declares_dual_license(source: &str) -> bool {
    let lines: Vec<&str> = source.lines().map(str::trim).collect();
    lines.iter().enumerate().any(|(i, line)| {
        line.contains("static LICENSE")
            && line.contains(BPF_SECTION)
            && lines[..i]
                .iter()
                .rev()
                .take(3)
                .any(|attr| attr.contains(r#"link_section = "license""#))
    })
}

#[test]
fn the_license_files_exist() {
    let root = root();
    for (file, opening) in FILES {
        let text =
            std::fs::read_to_string(root.join(file)).unwrap_or_else(|err| panic!("{file}: {err}"));
        assert!(
            text.trim_start().starts_with(opening),
            "{file} does not open with {opening:?}"
        );
    }
}

#[test]
fn bpf_crates_are_gpl_compatible_and_their_objects_say_so() {
    let root = root();
    let packages = packages(&root);
    let bpf: Vec<&Package> = packages.iter().filter(|p| p.bpf).collect();
    let names: Vec<&str> = bpf.iter().map(|p| p.name.as_str()).collect();
    for expected in ["egress-ebpf", "egress-lab-ebpf"] {
        assert!(
            names.contains(&expected),
            "{expected} is a BPF crate: {names:?}"
        );
    }
    for package in bpf {
        assert_eq!(package.license.as_deref(), Some(BPF), "{}", package.name);
        assert!(
            !package.bins.is_empty(),
            "{}: no [[bin]] target",
            package.name
        );
        for bin in &package.bins {
            let source = std::fs::read_to_string(bin).expect("the bin's root file");
            assert!(
                declares_dual_license(&source),
                "{}: {} has no `static LICENSE` of {BPF_SECTION} in the license section",
                package.name,
                bin.display()
            );
        }
    }
}

#[test]
fn every_other_crate_has_the_workspace_license() {
    let root = root();
    let manifest = std::fs::read_to_string(root.join("Cargo.toml")).expect("Cargo.toml");
    assert_eq!(workspace_license(&manifest), Some(WORKSPACE));
    let packages = packages(&root);
    assert!(packages.len() > 4, "found the packages: {}", packages.len());
    for package in packages.iter().filter(|p| !p.bpf) {
        assert_eq!(
            package.license.as_deref(),
            Some(WORKSPACE),
            "{}",
            package.name
        );
    }
}

#[test]
fn the_readme_names_both_licenses() {
    let readme = std::fs::read_to_string(root().join("README.md")).expect("README.md");
    let section = section(&readme, "License").expect("README.md has a License section");
    for needed in [
        WORKSPACE,
        BPF,
        "Dual MIT/GPL",
        "egress-ebpf",
        "egress-lab-ebpf",
        "(LICENSE-MIT)",
        "(LICENSE-APACHE)",
        "(LICENSE-GPL-2.0)",
    ] {
        assert!(
            section.contains(needed),
            "README.md's License section lacks {needed:?}"
        );
    }
}

#[test]
fn the_checks_see_what_they_check() {
    assert_eq!(
        workspace_license("[workspace]\nx = 1\n\n[workspace.package]\nlicense = \"A OR B\"\n"),
        Some("A OR B")
    );
    assert_eq!(workspace_license("[package]\nlicense = \"A\"\n"), None);
    let good = "#[unsafe(link_section = \"license\")]\n#[unsafe(no_mangle)]\n\
                static LICENSE: [u8; 13] = *b\"Dual MIT/GPL\\0\";\n";
    assert!(declares_dual_license(good));
    assert!(!declares_dual_license(&good.replace("Dual MIT/GPL", "GPL")));
    assert!(!declares_dual_license(
        &good.replace("\"license\"", "\"maps\"")
    ));
    let readme = "# x\n\n## License\n\nMIT\n\n## Other\n\nGPL\n";
    assert_eq!(section(readme, "License"), Some("## License\n\nMIT\n"));
}
