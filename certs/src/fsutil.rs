//! File helpers: atomic writes (temp file + fsync + rename) and owner-only permissions for keys.
//!
//! Why: a crash or a full disk in the middle of a write must never leave a half-written `ca.key`,
//! `index.json` or `crl.pem`. Writing to a temporary file in the same directory and renaming it over
//! the target is atomic on POSIX file systems, so readers see either the old or the new file.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{CertsError, Result};

/// Unix permission bits for private keys: owner read/write only.
pub const KEY_MODE: u32 = 0o600;
/// Unix permission bits for public material (certificates, CRLs, configs).
pub const PUBLIC_MODE: u32 = 0o644;

fn write_err(path: &Path) -> impl FnOnce(std::io::Error) -> CertsError + '_ {
    move |err| CertsError::Write {
        path: path.to_path_buf(),
        err,
    }
}

/// Reads a whole file as UTF-8 text, naming the path on error.
pub fn read_text(path: &Path) -> Result<String> {
    fs::read_to_string(path).map_err(|err| CertsError::Read {
        path: path.to_path_buf(),
        err,
    })
}

/// Creates a directory and its parents, naming the path on error.
pub fn create_dir_all(path: &Path) -> Result<()> {
    fs::create_dir_all(path).map_err(write_err(path))
}

/// Writes `bytes` to `path` atomically with permission bits `mode` (applied before any byte is
/// written, so a key is never briefly world-readable).
pub fn atomic_write(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| CertsError::Invalid(format!("{} is not a file path", path.display())))?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| {
        let mut opts = OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(mode);
        }
        let mut f = opts.open(&tmp).map_err(write_err(&tmp))?;
        // `mode` passed to open() is filtered by the umask and ignored if the temp file existed.
        set_mode(&tmp, mode)?;
        f.write_all(bytes).map_err(write_err(&tmp))?;
        f.sync_all().map_err(write_err(&tmp))?;
        fs::rename(&tmp, path).map_err(write_err(path))?;
        // Persist the rename itself.
        if let Ok(d) = File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Sets Unix permission bits (no-op elsewhere).
pub fn set_mode(path: &Path, mode: u32) -> Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(write_err(path))?;
    }
    #[cfg(not(unix))]
    let _ = (path, mode);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_sets_mode() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("k.key");
        atomic_write(&p, b"one", KEY_MODE).unwrap();
        atomic_write(&p, b"two", KEY_MODE).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                fs::metadata(&p).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
        // No temp file left behind.
        assert_eq!(fs::read_dir(d.path()).unwrap().count(), 1);
    }

    #[test]
    fn atomic_write_into_missing_dir_names_path() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("nope").join("x.pem");
        let e = atomic_write(&p, b"x", PUBLIC_MODE).unwrap_err().to_string();
        assert!(e.contains("nope"), "{e}");
    }
}
