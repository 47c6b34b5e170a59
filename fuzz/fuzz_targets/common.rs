//! Shared by the file-based targets: the readers under test take a path, so each input is written
//! to a file in one per-process temporary directory (on tmpfs when /dev/shm exists) first.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The per-process scratch directory (removed when the process exits normally).
pub fn scratch() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let shm = Path::new("/dev/shm");
        if shm.is_dir() {
            tempfile::tempdir_in(shm).expect("temp dir in /dev/shm")
        } else {
            tempfile::tempdir().expect("temp dir")
        }
    })
    .path()
}

/// Writes `data` to `<scratch>/<name>` and returns the path (unused by the `dicom` target).
#[allow(dead_code)]
pub fn write_input(name: &str, data: &[u8]) -> PathBuf {
    let p = scratch().join(name);
    std::fs::write(&p, data).expect("write fuzz input");
    p
}
