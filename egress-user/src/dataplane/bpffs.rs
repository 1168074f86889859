//! The bpffs that holds an instance's pins: the given root, mounted there if need be, or a
//! scratch one for the length of a set-up where none can be had (an `ip netns exec` or a
//! container has a fresh /sys without one).

use std::{
    io,
    path::{Path, PathBuf},
};

/// A bpffs mounted on a fresh temporary directory for the duration of a set-up, then
/// detached and removed.
pub struct ScratchBpffs {
    path: PathBuf,
}

impl ScratchBpffs {
    pub fn mount() -> Result<Self, String> {
        let path = std::env::temp_dir().join(format!("egress-router-bpffs-{}", std::process::id()));
        std::fs::create_dir_all(&path)
            .map_err(|err| format!("creating {}: {err}", path.display()))?;
        let scratch = Self { path };
        mount_bpffs(&scratch.path)?;
        Ok(scratch)
    }
}

impl Drop for ScratchBpffs {
    fn drop(&mut self) {
        if let Ok(c_path) = std::ffi::CString::new(self.path.as_os_str().as_encoded_bytes()) {
            // SAFETY: a valid NUL-terminated path; a lazy unmount of our own mount.
            unsafe { libc::umount2(c_path.as_ptr(), libc::MNT_DETACH) };
        }
        let _ = std::fs::remove_dir(&self.path);
    }
}

const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

pub fn is_bpffs(path: &Path) -> bool {
    let Ok(c_path) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: statfs writes into the zeroed struct; the path is NUL-terminated.
    unsafe {
        let mut st: libc::statfs = std::mem::zeroed();
        libc::statfs(c_path.as_ptr(), &mut st) == 0 && st.f_type as i64 == BPF_FS_MAGIC
    }
}

/// Makes `root` a directory on a bpffs: it is one already, it is below one (e.g. the host's
/// /sys/fs/bpf), or a bpffs is mounted there. The error says why pins are not possible.
pub fn prepare_bpffs(root: &Path) -> Result<(), String> {
    if is_bpffs(root) {
        return Ok(());
    }
    if let Err(err) = std::fs::create_dir_all(root)
        && err.kind() != io::ErrorKind::AlreadyExists
    {
        return Err(format!("cannot create {}: {err}", root.display()));
    }
    if is_bpffs(root) {
        return Ok(());
    }
    mount_bpffs(root)
}

fn mount_bpffs(root: &Path) -> Result<(), String> {
    let c_path = std::ffi::CString::new(root.as_os_str().as_encoded_bytes())
        .map_err(|_| format!("{} contains a NUL byte", root.display()))?;
    // SAFETY: valid NUL-terminated strings; mounting is what we mean to do.
    let rc = unsafe {
        libc::mount(
            c"bpffs".as_ptr(),
            c_path.as_ptr(),
            c"bpf".as_ptr(),
            0,
            c"mode=0700".as_ptr().cast(),
        )
    };
    if rc != 0 {
        return Err(format!(
            "{} is not a bpffs and mounting one there failed: {}",
            root.display(),
            io::Error::last_os_error()
        ));
    }
    Ok(())
}

impl ScratchBpffs {
    /// Where it is mounted.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Removes an instance's pin directory and the pins in it; returns how many pins there
/// were. A directory that is not there is nothing to remove.
pub fn remove_pins(pin_dir: &Path) -> io::Result<usize> {
    let mut pins = 0;
    let entries = match std::fs::read_dir(pin_dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(err) => return Err(err),
    };
    for entry in entries {
        std::fs::remove_file(entry?.path())?;
        pins += 1;
    }
    std::fs::remove_dir(pin_dir)?;
    Ok(pins)
}
