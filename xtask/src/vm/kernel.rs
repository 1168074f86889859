//! The VM's kernel: Debian's Linux 6.1 cloud image (`linux-image-6.1.0-<N>-cloud-amd64-unsigned`,
//! the newest `<N>` apt knows), fetched with `apt-get download` and unpacked with `dpkg-deb`
//! into a cache under the target directory, once. Its modules get a `modules.dep` from
//! busybox's `depmod` (the package leaves that to its postinst), which says what to load
//! before what.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

use crate::{output, run};

/// The package family: Linux 6.1, the newest kernel without TCX that Debian ships (Debian
/// 12's), built for cloud VMs (no firmware, few drivers: a small download).
const PREFIX: &str = "linux-image-6.1.0-";
const SUFFIX: &str = "-cloud-amd64-unsigned";

/// The modules the lab needs that this kernel builds as modules (`=m`).
pub(crate) const MODULES: [&str; 4] = ["veth", "macvlan", "sch_ingress", "cls_bpf"];

/// An unpacked kernel package.
#[derive(Clone, Debug)]
pub(crate) struct Kernel {
    /// The package's name.
    pub(crate) package: String,
    /// `uname -r` of the kernel.
    pub(crate) release: String,
    /// The unpacked package (`boot/`, `lib/modules/<release>/`).
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
        // Uncompressed (Debian's 6.1) or compressed (later packages: busybox's insmod
        // reads both).
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

/// The newest package of the family apt lists, e.g. `linux-image-6.1.0-57-cloud-amd64-unsigned`.
fn newest_package() -> Option<String> {
    let listed = output(
        "apt-cache",
        &["search", "--names-only", "^linux-image-6\\.1\\.0-"],
    )?;
    newest_of(&listed)
}

fn newest_of(apt_cache_search: &str) -> Option<String> {
    apt_cache_search
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter_map(|name| Some((number(name)?, name.to_owned())))
        .max()
        .map(|(_, name)| name)
}

/// Names another kernel package to boot instead (any Debian `linux-image-*-unsigned`
/// whose modules include the lab's, e.g. a 6.12 from bookworm-backports, with TCX).
pub(crate) const KERNEL_ENV: &str = "EGRESS_VM_KERNEL";

/// The cached, unpacked kernel: the newest package apt lists, downloaded and unpacked into
/// `cache` if it is not there yet. Without apt lists (or network), the newest kernel
/// already in the cache. [`KERNEL_ENV`] names another package.
pub(crate) fn ensure(cache: &Path) -> Result<Kernel> {
    if let Some(package) = std::env::var(KERNEL_ENV).ok().filter(|p| !p.is_empty()) {
        return match unpacked(&cache.join(&package), &package) {
            Some(kernel) => Ok(kernel),
            None => fetch(cache, &package),
        };
    }
    let mut package = newest_package();
    if package.is_none() {
        // A fresh machine: apt has no lists yet.
        let _ = Command::new("apt-get").args(["update", "-qq"]).status();
        package = newest_package();
    }
    let in_cache = cached(cache);
    let Some(package) = package else {
        return in_cache.with_context(|| {
            format!("apt lists no {PREFIX}<N>{SUFFIX} package and none is cached")
        });
    };
    if let Some(kernel) = in_cache.filter(|k| k.package == package) {
        return Ok(kernel);
    }
    match fetch(cache, &package) {
        Ok(kernel) => Ok(kernel),
        Err(err) => cached(cache).ok_or(err).inspect(|kernel| {
            eprintln!(
                "xtask setup: could not fetch {package}; using {} from the cache",
                kernel.package
            );
        }),
    }
}

/// The newest unpacked kernel of the family in the cache.
fn cached(cache: &Path) -> Option<Kernel> {
    std::fs::read_dir(cache)
        .ok()?
        .flatten()
        .filter_map(|entry| {
            let package = entry.file_name().into_string().ok()?;
            let n = number(&package)?;
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

/// `<N>` of a package of the family.
fn number(package: &str) -> Option<u32> {
    package
        .strip_prefix(PREFIX)?
        .strip_suffix(SUFFIX)?
        .parse()
        .ok()
}

/// Downloads and unpacks `package` into `<cache>/<package>/`.
fn fetch(cache: &Path, package: &str) -> Result<Kernel> {
    eprintln!("xtask setup: downloading {package} (the test VM's kernel)");
    let download = cache.join("download");
    let _ = std::fs::remove_dir_all(&download);
    std::fs::create_dir_all(&download)
        .with_context(|| format!("creating {}", download.display()))?;
    // As root, apt drops to its `_apt` user to download, which cannot write into the
    // target directory: stay root for this one file.
    run(Command::new("apt-get")
        .args(["download", "-qq", "-o", "APT::Sandbox::User=root", package])
        .current_dir(&download))?;
    let deb = std::fs::read_dir(&download)?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .context("apt-get download left no .deb")?;
    let root = cache.join(package);
    let unpacking = cache.join(format!("{package}.partial"));
    let _ = std::fs::remove_dir_all(&unpacking);
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&unpacking))?;
    let release = std::fs::read_dir(unpacking.join("lib/modules"))?
        .flatten()
        .find_map(|e| e.file_name().into_string().ok())
        .context("the package has no lib/modules/<release>")?;
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
    fn the_newest_cloud_kernel_of_6_1_is_chosen() {
        let listed = "linux-image-6.1.0-9-cloud-amd64-unsigned - Linux 6.1 for x86-64 cloud\n\
                      linux-image-6.1.0-57-cloud-amd64-unsigned - Linux 6.1 for x86-64 cloud\n\
                      linux-image-6.1.0-57-cloud-amd64-dbg - Debug symbols\n\
                      linux-image-6.1.0-60-amd64-unsigned - Linux 6.1 for 64-bit PCs\n\
                      linux-image-6.12.118+deb12-cloud-amd64-unsigned - Linux 6.12\n";
        assert_eq!(
            newest_of(listed).as_deref(),
            Some("linux-image-6.1.0-57-cloud-amd64-unsigned")
        );
        assert_eq!(newest_of("nothing here"), None);
    }

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
