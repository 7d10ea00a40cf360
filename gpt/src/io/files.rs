//! Crash-safe file writes: a reader sees the old file or the complete new one, never half of one.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{GptError, Result};

/// A temporary path next to `path` (same directory, so the final rename is atomic), unique to this
/// call: two threads of one process writing the same file never share a temporary.
pub fn temp_path_for(path: &Path) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    path.with_file_name(format!(".{name}.tmp.{}.{n}", std::process::id()))
}

/// Writes `bytes` to a temporary file, syncs it, and renames it over `path`.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_with(path, |tmp| std::fs::write(tmp, bytes))
}

/// Lets `write` create the file at a temporary path, then syncs it and renames it over `path`.
/// On any error the temporary file is removed and `path` is left as it was.
pub fn write_atomic_with(path: &Path, write: impl FnOnce(&Path) -> std::io::Result<()>) -> Result<()> {
    replace_atomically(path, |tmp| write(tmp).map_err(|e| GptError::io(path, e)), |e| GptError::io(path, e))
}

/// [`write_atomic_with`] for callers with an error type of their own: `write` creates the file
/// at the temporary path, `io_error` wraps a failure to sync or rename it.
pub fn replace_atomically<E>(
    path: &Path,
    write: impl FnOnce(&Path) -> std::result::Result<(), E>,
    io_error: impl FnOnce(std::io::Error) -> E,
) -> std::result::Result<(), E> {
    let tmp = temp_path_for(path);
    let result = write(&tmp).and_then(|()| commit(&tmp, path).map_err(io_error));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Syncs `tmp`, renames it over `path` and syncs the directory, so the rename survives a crash.
fn commit(tmp: &Path, path: &Path) -> std::io::Result<()> {
    std::fs::File::open(tmp)?.sync_all()?;
    std::fs::rename(tmp, path)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        // Not every platform lets us open a directory, which is fine.
        if let Ok(dir) = std::fs::File::open(dir) {
            let _ = dir.sync_all();
        }
    }
    Ok(())
}

/// Bytes this user may still write on the file system that holds `path` (which must exist), or
/// `None` where that cannot be told.
pub fn available_space(path: &Path) -> Option<u64> {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::ffi::OsStrExt;
        let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
        let mut stat = std::mem::MaybeUninit::<libc::statvfs>::uninit();
        // SAFETY: a valid NUL-terminated path and a buffer of the right type, filled on success.
        if unsafe { libc::statvfs(c_path.as_ptr(), stat.as_mut_ptr()) } != 0 {
            return None;
        }
        // SAFETY: statvfs returned 0, so it filled the struct.
        let stat = unsafe { stat.assume_init() };
        Some((stat.f_bavail as u64).saturating_mul(stat.f_frsize as u64))
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = path;
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporary_names_are_unique_within_a_process() {
        let path = Path::new("dir/model.safetensors");
        let (a, b) = (temp_path_for(path), temp_path_for(path));
        assert_ne!(a, b);
        assert_eq!(a.parent(), path.parent(), "the rename stays on one file system");
    }

    #[test]
    fn available_space_is_reported_for_an_existing_directory() {
        let dir = std::env::temp_dir();
        #[cfg(target_os = "linux")]
        assert!(available_space(&dir).is_some_and(|bytes| bytes > 0));
        assert_eq!(available_space(Path::new("/no/such/dir/llmfs")), None);
    }

    #[test]
    fn a_failed_write_leaves_the_old_file_and_no_temporary() {
        let dir = std::env::temp_dir().join(format!("llmfs-fsutil-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("a.txt");
        write_atomic(&path, b"old").unwrap();
        let error = write_atomic_with(&path, |tmp| {
            std::fs::write(tmp, b"half")?;
            Err(std::io::Error::other("disk full"))
        })
        .unwrap_err();
        assert!(error.to_string().contains("a.txt"), "{error}");
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
        let names: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, ["a.txt"], "no temporary file is left");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
