//! The VM's kernel: the packages a spec names ([`family`](super::family)), downloaded with
//! apt (the host's, or a private configuration for another archive:
//! [`archive`](super::archive), signatures and SHA256 checked) and unpacked with `dpkg-deb`
//! into a cache under the target directory, once. Their modules get a `modules.dep` from
//! busybox's `depmod` (the packages leave that to their postinst), which says what to load
//! before what.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

use super::{
    archive::{self, Apt},
    family::{Family, Source, Spec, newest_of, number},
};
use crate::{output, run};

/// The modules the lab needs that these kernels build as modules (`=m`).
pub(crate) const MODULES: [&str; 4] = ["veth", "macvlan", "sch_ingress", "cls_bpf"];

/// An unpacked kernel package.
#[derive(Clone, Debug)]
pub(crate) struct Kernel {
    /// The image package's name.
    pub(crate) package: String,
    /// `uname -r` of the kernel.
    pub(crate) release: String,
    /// The unpacked packages (`boot/`, `lib/modules/<release>/`).
    pub(crate) root: PathBuf,
}

impl Kernel {
    pub(crate) fn vmlinuz(&self) -> PathBuf {
        self.root.join(format!("boot/vmlinuz-{}", self.release))
    }

    pub(crate) fn modules_dir(&self) -> PathBuf {
        self.root.join(format!("lib/modules/{}", self.release))
    }

    /// The `.ko` files to load for `names`, dependencies first, relative to
    /// [`Kernel::modules_dir`] (from its `modules.dep`: `path: dep dep ...`).
    pub(crate) fn load_order(&self, names: &[&str]) -> Result<Vec<String>> {
        let dep_file = self.modules_dir().join("modules.dep");
        let text = std::fs::read_to_string(&dep_file)
            .with_context(|| format!("reading {}", dep_file.display()))?;
        load_order(&text, names)
    }
}

/// [`Kernel::load_order`] of a `modules.dep` text.
fn load_order(modules_dep: &str, names: &[&str]) -> Result<Vec<String>> {
    let deps: Vec<(&str, Vec<&str>)> = modules_dep
        .lines()
        .filter_map(|line| line.split_once(':'))
        .map(|(path, deps)| (path.trim(), deps.split_whitespace().collect()))
        .collect();
    let mut order = Vec::new();
    for name in names {
        // Uncompressed (Debian's 6.1, Ubuntu's 5.15) or compressed (later packages: the
        // initramfs unpacks them).
        let file = format!("/{name}.ko");
        let Some((path, _)) = deps.iter().find(|(path, _)| {
            let path = format!("/{path}");
            [".xz", ".zst", ".gz", ""]
                .iter()
                .any(|ext| path.strip_suffix(ext).is_some_and(|p| p.ends_with(&file)))
        }) else {
            bail!("the kernel has no module {name} (is it built in? then drop it from the list)");
        };
        add(path, &deps, &mut order);
    }
    Ok(order)
}

/// Adds `path` after its dependencies (modules.dep lists them transitively, but the
/// recursion keeps the order right either way).
fn add(path: &str, deps: &[(&str, Vec<&str>)], order: &mut Vec<String>) {
    if order.iter().any(|p| p == path) {
        return;
    }
    if let Some((_, needs)) = deps.iter().find(|(p, _)| *p == path) {
        for need in needs {
            add(need, deps, order);
        }
    }
    order.push(path.to_owned());
}

/// The newest package of the family its apt lists, e.g.
/// `linux-image-6.1.0-57-cloud-amd64-unsigned`.
fn newest_package(family: &Family, apt: Option<&Apt>) -> Option<String> {
    let regex = format!(
        "^{}[0-9]+{}$",
        family.prefix.replace('.', "\\."),
        family.suffix
    );
    let listed = match apt {
        None => {
            let search = || output("apt-cache", &["search", "--names-only", &regex]);
            match search().filter(|listed| newest_of(listed, family).is_some()) {
                Some(listed) => listed,
                None => {
                    // A fresh machine: apt has no lists yet.
                    let _ = Command::new("apt-get").args(["update", "-qq"]).status();
                    search()?
                }
            }
        }
        Some(apt) => {
            if let Err(err) = apt.refresh() {
                eprintln!("xtask setup: no package lists for {}: {err:#}", family.spec);
            }
            apt.search(&regex)?
        }
    };
    newest_of(&listed, family)
}

/// The cached, unpacked kernel `spec` names: a family's newest package its apt lists,
/// downloaded and unpacked into `cache` if it is not there yet. Without lists (or network),
/// the family's newest kernel already in the cache.
pub(crate) fn ensure(cache: &Path, spec: &Spec) -> Result<Kernel> {
    std::fs::create_dir_all(cache).with_context(|| format!("creating {}", cache.display()))?;
    let family = spec.family;
    let apt = match &family.source {
        Source::Host => None,
        Source::Archive(archive) => Some(Apt::of(cache, archive)?),
    };
    if let Some(package) = &spec.package {
        return match unpacked(&cache.join(package), package) {
            Some(kernel) => Ok(kernel),
            None => fetch(cache, family, apt.as_ref(), package),
        };
    }
    let in_cache = cached(cache, family);
    let Some(package) = newest_package(family, apt.as_ref()) else {
        return in_cache.with_context(|| {
            format!(
                "{}: no {}<N>{} package is listed and none is cached",
                family.spec, family.prefix, family.suffix
            )
        });
    };
    if let Some(kernel) = in_cache.filter(|k| k.package == package) {
        return Ok(kernel);
    }
    match fetch(cache, family, apt.as_ref(), &package) {
        Ok(kernel) => Ok(kernel),
        Err(err) => cached(cache, family).ok_or(err).inspect(|kernel| {
            eprintln!(
                "xtask setup: could not fetch {package}; using {} from the cache",
                kernel.package
            );
        }),
    }
}

/// The family's newest unpacked kernel in the cache.
fn cached(cache: &Path, family: &Family) -> Option<Kernel> {
    std::fs::read_dir(cache)
        .ok()?
        .flatten()
        .filter_map(|entry| {
            let package = entry.file_name().into_string().ok()?;
            let n = number(family, &package)?;
            Some((n, unpacked(&entry.path(), &package)?))
        })
        .max_by_key(|(n, _)| *n)
        .map(|(_, kernel)| kernel)
}

/// The kernel unpacked at `root` (a `boot/vmlinuz-*` and a `modules.dep`), if it is.
fn unpacked(root: &Path, package: &str) -> Option<Kernel> {
    let release = std::fs::read_dir(root.join("lib/modules"))
        .ok()?
        .flatten()
        .find_map(|e| e.file_name().into_string().ok())?;
    let kernel = Kernel {
        package: package.to_owned(),
        release,
        root: root.to_owned(),
    };
    (kernel.vmlinuz().is_file() && kernel.modules_dir().join("modules.dep").is_file())
        .then_some(kernel)
}

/// Downloads `package` and what comes with it, and unpacks them into `<cache>/<package>/`.
fn fetch(cache: &Path, family: &Family, apt: Option<&Apt>, package: &str) -> Result<Kernel> {
    let abi = package
        .strip_prefix("linux-image-")
        .with_context(|| format!("{package} is not a linux-image- package"))?;
    let mut packages = vec![package.to_owned()];
    packages.extend(family.with.iter().map(|with| format!("{with}{abi}")));
    eprintln!(
        "xtask setup: downloading {} (the test VM's kernel)",
        packages.join(" ")
    );
    let download = cache.join("download");
    let _ = std::fs::remove_dir_all(&download);
    std::fs::create_dir_all(&download)
        .with_context(|| format!("creating {}", download.display()))?;
    let debs = match apt {
        Some(apt) => apt.download(&packages, &download)?,
        None => {
            // As root, apt drops to its `_apt` user to download, which cannot write into
            // the target directory: stay root for these files.
            run(Command::new("apt-get")
                .args(["download", "-qq", "-o", "APT::Sandbox::User=root"])
                .args(&packages)
                .current_dir(&download))?;
            archive::debs(&download, packages.len())?
        }
    };
    let root = cache.join(package);
    let unpacking = cache.join(format!("{package}.partial"));
    let _ = std::fs::remove_dir_all(&unpacking);
    for deb in &debs {
        run(Command::new("dpkg-deb").arg("-x").arg(deb).arg(&unpacking))?;
    }
    let release = std::fs::read_dir(unpacking.join("lib/modules"))?
        .flatten()
        .find_map(|e| e.file_name().into_string().ok())
        .context("the packages have no lib/modules/<release>")?;
    run(Command::new("busybox")
        .args(["depmod", "-b"])
        .arg(&unpacking)
        .arg(&release))?;
    let _ = std::fs::remove_dir_all(&root);
    std::fs::rename(&unpacking, &root)?;
    std::fs::remove_dir_all(&download)?;
    Ok(Kernel {
        package: package.to_owned(),
        release,
        root,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modules_come_after_their_dependencies() {
        let dep = "kernel/net/sched/cls_bpf.ko:\n\
                   kernel/drivers/net/macvlan.ko: kernel/net/core/tap.ko kernel/lib/x.ko\n\
                   kernel/net/core/tap.ko: kernel/lib/x.ko\n\
                   kernel/lib/x.ko:\n";
        assert_eq!(
            load_order(dep, &["macvlan", "cls_bpf"]).unwrap(),
            [
                "kernel/lib/x.ko",
                "kernel/net/core/tap.ko",
                "kernel/drivers/net/macvlan.ko",
                "kernel/net/sched/cls_bpf.ko"
            ]
        );
        assert!(load_order(dep, &["veth"]).is_err());
        let xz = "kernel/drivers/net/veth.ko.xz:\n";
        assert_eq!(
            load_order(xz, &["veth"]).unwrap(),
            ["kernel/drivers/net/veth.ko.xz"]
        );
    }
}
