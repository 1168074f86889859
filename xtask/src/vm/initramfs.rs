//! The VM's initramfs: busybox (shell, `nsenter`, `insmod`, `wget`), the static
//! `egress-router` and `vmlab` (musl), iproute2's `ip` and `tc` and `bpftool` with the
//! libraries `ldd` names (under `/opt/bin`: busybox's shell runs its own `ip` applet for a
//! bare `ip`), the kernel modules of the lab in load order (`/etc/modules`), and the
//! scripts of `tests/vm/`: `/init` and the lab's steps. An uncompressed newc cpio archive
//! (the kernel unpacks it faster than a gzipped one under emulation).

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

use crate::{output, run, vm::kernel::Kernel};

/// Host programs the lab uses beside busybox, copied with their libraries.
const HOST_PROGRAMS: [&str; 3] = ["/usr/sbin/ip", "/usr/sbin/tc", "/usr/sbin/bpftool"];

/// What goes into the archive besides the host's programs.
pub(crate) struct Contents<'a> {
    pub(crate) kernel: &'a Kernel,
    /// Static binaries, copied to `/bin/<name>`.
    pub(crate) binaries: &'a [PathBuf],
    /// The scripts' directory (`tests/vm`): `init` becomes `/init`, the rest go to `/lab/`.
    pub(crate) scripts: &'a Path,
}

/// Builds the archive from a staging tree in `work` and returns its path.
pub(crate) fn build(contents: &Contents<'_>, work: &Path) -> Result<PathBuf> {
    let root = work.join("root");
    for dir in [
        "bin", "opt/bin", "etc", "lab", "proc", "sys", "dev", "tmp", "run", "var",
    ] {
        fs::create_dir_all(root.join(dir))?;
    }
    std::os::unix::fs::symlink("../run", root.join("var/run"))?;
    let busybox = which("busybox").context("busybox (busybox-static) is not installed")?;
    if output("ldd", &[&busybox.to_string_lossy()]).is_some_and(|l| l.contains("=>")) {
        bail!(
            "{} is not static: install busybox-static",
            busybox.display()
        );
    }
    copy(&busybox, &root.join("bin/busybox"))?;
    for binary in contents.binaries {
        let name = binary.file_name().context("a binary without a name")?;
        copy(binary, &root.join("bin").join(name))?;
    }
    for program in HOST_PROGRAMS {
        let program = Path::new(program);
        let name = program.file_name().context("a program without a name")?;
        copy(program, &root.join("opt/bin").join(name))?;
        for library in libraries(program)? {
            let to = root.join(library.strip_prefix("/").unwrap_or(&library));
            if !to.exists() {
                copy(&library, &to)?;
            }
        }
    }
    let kernel = contents.kernel;
    let modules = kernel.load_order(&super::kernel::MODULES)?;
    let in_vm = Path::new("/lib/modules").join(&kernel.release);
    let mut list = String::new();
    for module in &modules {
        // busybox's insmod loads plain `.ko` files: a compressed one is unpacked here.
        let (plain, unpack) = match module.rsplit_once('.') {
            Some((plain, "xz")) => (plain, Some("xz")),
            Some((plain, "gz")) => (plain, Some("gzip")),
            Some((plain, "zst")) => (plain, Some("zstd")),
            _ => (module.as_str(), None),
        };
        let to = root.join(in_vm.strip_prefix("/")?).join(plain);
        let from = kernel.modules_dir().join(module);
        match unpack {
            None => copy(&from, &to)?,
            Some(tool) => {
                if let Some(parent) = to.parent() {
                    fs::create_dir_all(parent)?;
                }
                run(Command::new(tool)
                    .arg("-dc")
                    .arg(&from)
                    .stdout(fs::File::create(&to)?))?;
            }
        }
        list.push_str(&format!("{}\n", in_vm.join(plain).display()));
    }
    fs::write(root.join("etc/modules"), list)?;
    for entry in fs::read_dir(contents.scripts)
        .with_context(|| format!("reading {}", contents.scripts.display()))?
    {
        let path = entry?.path();
        let name = path.file_name().context("a script without a name")?;
        let to = if name == "init" {
            root.join("init")
        } else {
            root.join("lab").join(name)
        };
        copy(&path, &to)?;
        set_mode(&to, 0o755)?;
    }
    let archive = work.join("initramfs.cpio");
    let file = fs::File::create(&archive)?;
    run(Command::new("sh")
        .args([
            "-c",
            "find . | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet",
        ])
        .current_dir(&root)
        .stdout(file))?;
    fs::remove_dir_all(&root)?;
    Ok(archive)
}

/// The shared libraries and the loader `ldd` lists for `program`.
fn libraries(program: &Path) -> Result<Vec<PathBuf>> {
    let listed = output("ldd", &[&program.to_string_lossy()])
        .with_context(|| format!("ldd {}", program.display()))?;
    Ok(parse_ldd(&listed))
}

fn parse_ldd(listed: &str) -> Vec<PathBuf> {
    listed
        .lines()
        .filter_map(|line| {
            let line = line.trim();
            let path = match line.split_once("=>") {
                Some((_, resolved)) => resolved.split_whitespace().next()?,
                None => line.split_whitespace().next()?,
            };
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect()
}

/// Copies a file's content (symlinks followed) and mode, creating the parents.
fn copy(from: &Path, to: &Path) -> Result<()> {
    if let Some(parent) = to.parent() {
        fs::create_dir_all(parent)?;
    }
    fs::copy(from, to)
        .map(drop)
        .with_context(|| format!("copying {} to {}", from.display(), to.display()))
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {}", path.display()))
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(program))
        .find(|path| path.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_output_gives_libraries_and_the_loader() {
        let listed = "\tlinux-vdso.so.1 (0x00007ffd)\n\
                      \tlibelf.so.1 => /lib/x86_64-linux-gnu/libelf.so.1 (0x00007f37)\n\
                      \t/lib64/ld-linux-x86-64.so.2 (0x00007f37)\n";
        assert_eq!(
            parse_ldd(listed),
            [
                PathBuf::from("/lib/x86_64-linux-gnu/libelf.so.1"),
                PathBuf::from("/lib64/ld-linux-x86-64.so.2")
            ]
        );
    }
}
