//! A package archive other than the host's own (Ubuntu's, an older Debian's), read with apt
//! itself under a private configuration in the kernel cache: its own sources list, lists,
//! status and package cache, so the host's apt is never touched. apt checks each index's
//! signature against the archive's keyring, and each package it downloads against the
//! SHA256 its index gives: a corrupt download fails ("Hash Sum mismatch") and nothing of it
//! is unpacked. The lists are refreshed once a day ([`STALE`]); without network the lists
//! already there serve.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, SystemTime},
};

use anyhow::{Context as _, Result, bail};

use crate::run;

/// Lists older than this are fetched again.
const STALE: Duration = Duration::from_secs(24 * 3600);

/// An archive, its suites and the keys its indexes are signed with.
#[derive(Debug)]
pub(crate) struct Archive {
    /// Names the private configuration's directory (`ubuntu-jammy`).
    pub(crate) name: &'static str,
    pub(crate) url: &'static str,
    /// The suites whose `main` component is read, e.g. `jammy` and `jammy-updates`.
    pub(crate) suites: &'static [&'static str],
    pub(crate) keyring: Keyring,
}

/// The keys an archive's indexes are signed with.
#[derive(Debug)]
pub(crate) enum Keyring {
    /// A keyring file the host has (Debian's `debian-archive-keyring`, which also holds the
    /// keys of the previous release).
    Host(&'static str),
    /// An armored public key kept in this tree: Debian ships no keyring of Ubuntu's archive.
    Armored(&'static str),
}

/// Ubuntu's archive key (2018), `F6EC B376 2474 EDA9 D21B 7022 8719 20D1 991B C93C`, which
/// signs the indexes of 22.04 and later.
pub(crate) const UBUNTU_ARCHIVE_2018: &str = include_str!("ubuntu-archive-2018.asc");

impl Archive {
    /// The sources list of the private configuration; `keyring` the file apt checks the
    /// indexes with.
    fn sources(&self, keyring: &Path) -> String {
        self.suites
            .iter()
            .map(|suite| {
                format!(
                    "deb [arch=amd64 signed-by={}] {} {suite} main\n",
                    keyring.display(),
                    self.url
                )
            })
            .collect()
    }
}

/// apt under a private configuration rooted in one directory.
pub(crate) struct Apt {
    root: PathBuf,
}

impl Apt {
    /// The private configuration of `archive` under `cache/apt-<name>/`, written afresh.
    pub(crate) fn of(cache: &Path, archive: &Archive) -> Result<Self> {
        let root = cache.join(format!("apt-{}", archive.name));
        fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
        let keyring = match archive.keyring {
            Keyring::Host(path) => PathBuf::from(path),
            Keyring::Armored(key) => {
                // apt reads a keyring file as armored when its name ends in `.asc`.
                let path = root.join("archive-key.asc");
                fs::write(&path, key).with_context(|| format!("writing {}", path.display()))?;
                path
            }
        };
        Self::with_sources(root, &archive.sources(&keyring))
    }

    /// A private configuration at `root` reading `sources` (a sources list).
    pub(crate) fn with_sources(root: PathBuf, sources: &str) -> Result<Self> {
        for dir in ["state/lists/partial", "cache/archives/partial"] {
            fs::create_dir_all(root.join(dir))?;
        }
        fs::write(root.join("sources.list"), sources)?;
        let status = root.join("state/status");
        if !status.exists() {
            fs::write(&status, "")?;
        }
        Ok(Self { root })
    }

    /// `program` (apt-get, apt-cache) with the private configuration. As root, apt drops
    /// to its `_apt` user to download, which cannot write into the target directory: it
    /// stays root here.
    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        let dir = |sub: &str| self.root.join(sub).display().to_string();
        for (option, value) in [
            ("Dir::Etc::SourceList", dir("sources.list")),
            ("Dir::Etc::SourceParts", "/dev/null".to_owned()),
            ("Dir::Etc::Preferences", "/dev/null".to_owned()),
            ("Dir::Etc::PreferencesParts", "/dev/null".to_owned()),
            ("Dir::State", dir("state")),
            ("Dir::State::status", dir("state/status")),
            ("Dir::Cache", dir("cache")),
            ("APT::Architectures", "amd64".to_owned()),
            ("Acquire::Languages", "none".to_owned()),
            ("APT::Sandbox::User", "root".to_owned()),
        ] {
            cmd.arg("-o").arg(format!("{option}={value}"));
        }
        cmd
    }

    /// Fetches the indexes when there are none or they are older than [`STALE`]; keeps the
    /// old ones, with a warning, when that fails and there are some.
    pub(crate) fn refresh(&self) -> Result<()> {
        let lists = self.root.join("state/lists");
        let newest = fs::read_dir(&lists)?
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().contains("_Packages"))
            .filter_map(|e| e.metadata().ok()?.modified().ok())
            .max();
        let fresh = newest.is_some_and(|t| {
            SystemTime::now()
                .duration_since(t)
                .is_ok_and(|age| age < STALE)
        });
        if fresh {
            return Ok(());
        }
        match (self.update(), newest) {
            (Ok(()), _) => Ok(()),
            (Err(err), Some(_)) => {
                eprintln!(
                    "xtask setup: could not refresh {}: {err:#}; using the lists there",
                    self.root.display()
                );
                Ok(())
            }
            (Err(err), None) => Err(err),
        }
    }

    /// Fetches the indexes (apt-get update).
    pub(crate) fn update(&self) -> Result<()> {
        run(self.command("apt-get").args(["update", "-qq"]))
    }

    /// The names of the packages whose name matches `regex` (apt-cache search
    /// --names-only), one a line with its description.
    pub(crate) fn search(&self, regex: &str) -> Option<String> {
        let out = self
            .command("apt-cache")
            .args(["search", "--names-only", regex])
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Downloads `packages` into `dir`, each checked against its index; returns the files.
    pub(crate) fn download(&self, packages: &[String], dir: &Path) -> Result<Vec<PathBuf>> {
        run(self
            .command("apt-get")
            .args(["download", "-qq"])
            .args(packages)
            .current_dir(dir))
        .with_context(|| format!("downloading {}", packages.join(" ")))?;
        debs(dir, packages.len())
    }
}

/// The `.deb` files in `dir`: `count` of them.
pub(crate) fn debs(dir: &Path, count: usize) -> Result<Vec<PathBuf>> {
    let mut debs: Vec<PathBuf> = fs::read_dir(dir)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "deb"))
        .collect();
    debs.sort();
    if debs.len() != count {
        bail!(
            "apt-get download left {} .deb files, not {count}",
            debs.len()
        );
    }
    Ok(debs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_name_each_suite_with_its_keyring() {
        let archive = Archive {
            name: "ubuntu-jammy",
            url: "http://archive.ubuntu.com/ubuntu",
            suites: &["jammy", "jammy-updates"],
            keyring: Keyring::Armored(UBUNTU_ARCHIVE_2018),
        };
        assert_eq!(
            archive.sources(Path::new("/k.asc")),
            "deb [arch=amd64 signed-by=/k.asc] http://archive.ubuntu.com/ubuntu jammy main\n\
             deb [arch=amd64 signed-by=/k.asc] http://archive.ubuntu.com/ubuntu jammy-updates main\n"
        );
        assert!(UBUNTU_ARCHIVE_2018.starts_with("-----BEGIN PGP PUBLIC KEY BLOCK-----"));
    }

    /// A package whose bytes are not those its index names is refused, and nothing is left
    /// of it; once the index gives its real SHA256 it is taken. A local archive (apt's
    /// `file:` method).
    #[test]
    fn a_download_that_does_not_match_its_index_fails() {
        let dir = std::env::temp_dir().join(format!("xtask-apt-test-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let repo = dir.join("repo");
        fs::create_dir_all(&repo).unwrap();
        let name = "linux-image-5.15.0-1-generic";
        let file = format!("{name}_1_amd64.deb");
        fs::write(repo.join(&file), "not what the index says").unwrap();
        let index = |sha256: &str| {
            format!(
                "Package: {name}\nVersion: 1\nArchitecture: amd64\nFilename: ./{file}\n\
                 Size: 23\nSHA256: {sha256}\nDescription: test\n\n"
            )
        };
        fs::write(repo.join("Packages"), index(&"0".repeat(64))).unwrap();
        let apt = Apt::with_sources(
            dir.join("apt"),
            &format!("deb [trusted=yes] file:{} ./\n", repo.display()),
        )
        .unwrap();
        apt.refresh().unwrap();
        assert!(apt.search("^linux-image-").unwrap().contains(name));
        let into = dir.join("download");
        fs::create_dir_all(&into).unwrap();
        let package = [name.to_owned()];
        assert!(apt.download(&package, &into).is_err());
        assert!(debs(&into, 0).is_ok(), "a corrupt download was left");
        let sha256 = crate::output("sha256sum", &[&repo.join(&file).to_string_lossy()]).unwrap();
        fs::write(repo.join("Packages"), index(&sha256[..64])).unwrap();
        apt.update().unwrap();
        assert_eq!(apt.download(&package, &into).unwrap().len(), 1);
        fs::remove_dir_all(&dir).unwrap();
    }
}
