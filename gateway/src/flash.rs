//! Writing to the router's flash: every file the daemon keeps (spool segments, the consent
//! registry, bundle files and the install journal) is written the same way, so a power cut
//! and a full flash are handled in one place.
//!
//! A file is written whole beside its destination and synced before it takes the
//! destination's name: a power cut leaves the old file or the new one, never half of one. A
//! write that fails (a full flash, most likely) deletes what it wrote, so the partial copy
//! does not take the room the next attempt needs.

use std::io::Write;
use std::path::{Path, PathBuf};

/// Writes `bytes` to `path` and syncs them; on failure nothing is left at `path`.
pub fn write_synced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let written = std::fs::File::create(path)
        .and_then(|mut f| f.write_all(bytes).and_then(|()| f.sync_all()));
    if written.is_err() {
        let _ = std::fs::remove_file(path);
    }
    written
}

/// Replaces `path` with `bytes` atomically (see the module), through [`temporary`].
pub fn replace(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = temporary(path);
    write_synced(&tmp, bytes)?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

/// Where [`replace`] writes before the rename: `.<name>.tmp` beside `path`. A file of that
/// name found at start is a leftover of a power cut.
pub fn temporary(path: &Path) -> PathBuf {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    path.with_file_name(format!(".{name}.tmp"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_flash_leaves_the_old_file_and_no_partial_copy() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("registry.json");
        replace(&path, b"old").unwrap();
        // The kernel's always-full device stands in for the copy: a real ENOSPC.
        std::os::unix::fs::symlink("/dev/full", temporary(&path)).unwrap();
        let e = replace(&path, b"new").unwrap_err();
        assert_eq!(e.raw_os_error(), Some(28), "{e}");
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
        assert!(!temporary(&path).exists());
        replace(&path, b"new").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
