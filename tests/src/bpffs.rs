//! A bpffs for a lab's pins, in the root mount namespace.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};

/// A bpffs mounted on a fresh directory in the root mount namespace: pins there outlive the
/// processes under test (unlike a bpffs mounted by `ip netns exec`). Unmounted on Drop.
pub struct Bpffs {
    path: PathBuf,
}

impl Bpffs {
    /// Mounts a new bpffs instance on `path` (created here).
    pub fn mount(path: &Path) -> Result<Self> {
        std::fs::create_dir(path).with_context(|| format!("creating {}", path.display()))?;
        let target = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())?;
        // SAFETY: valid NUL-terminated strings; no data argument.
        let rc = unsafe {
            libc::mount(
                c"bpf".as_ptr(),
                target.as_ptr(),
                c"bpf".as_ptr(),
                0,
                std::ptr::null(),
            )
        };
        if rc != 0 {
            let err = std::io::Error::last_os_error();
            let _ = std::fs::remove_dir(path);
            return Err(err).with_context(|| format!("mounting bpffs on {}", path.display()));
        }
        Ok(Self {
            path: path.to_owned(),
        })
    }

    /// Where it is mounted.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Bpffs {
    fn drop(&mut self) {
        if let Ok(target) = std::ffi::CString::new(self.path.as_os_str().as_encoded_bytes()) {
            // SAFETY: valid NUL-terminated string. Lazy unmount: pins go with the superblock.
            if unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) } != 0 {
                eprintln!(
                    "lab: unmounting {}: {}",
                    self.path.display(),
                    std::io::Error::last_os_error()
                );
            }
        }
        if let Err(err) = std::fs::remove_dir(&self.path) {
            eprintln!("lab: removing {}: {err}", self.path.display());
        }
    }
}
