//! Reading and atomically replacing the small text files of this module.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use super::AuthError;

/// Reads a whole file as UTF-8 text. Errors name the file.
pub(crate) fn read_text(path: &Path) -> Result<String, AuthError> {
    let bytes = fs::read(path).map_err(|e| AuthError::io(path, e))?;
    String::from_utf8(bytes).map_err(|e| {
        let line = 1 + e.as_bytes()[..e.utf8_error().valid_up_to()]
            .iter()
            .filter(|&&b| b == b'\n')
            .count();
        AuthError::parse(path, line, "the file is not valid UTF-8")
    })
}

/// Replaces `path` with `contents` so that a reader sees either the old or the new file, never
/// a partial one: the text is written to a temporary file in the same directory (created with
/// mode 0600 on Unix, as it holds password hashes), flushed to disk, and renamed over `path`.
pub(crate) fn write_atomic(path: &Path, contents: &str) -> Result<(), AuthError> {
    let tmp = temp_path(path);
    let result = write_new(&tmp, contents).and_then(|()| {
        fs::rename(&tmp, path).map_err(|e| AuthError::io(path, e))?;
        sync_parent(path);
        Ok(())
    });
    if result.is_err() {
        // Best effort: do not leave a stray temporary file behind.
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// `dir/.name.tmp-PID`, next to `path` so that the rename stays on one file system.
fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "passwd".to_owned());
    path.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}

fn write_new(tmp: &Path, contents: &str) -> Result<(), AuthError> {
    let mut options = OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file: File = options.open(tmp).map_err(|e| AuthError::io(tmp, e))?;
    // The mode given to open() only applies when the file is created: a stale temporary file
    // from an earlier crash keeps its old mode, so set it explicitly.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(fs::Permissions::from_mode(0o600))
            .map_err(|e| AuthError::io(tmp, e))?;
    }
    file.write_all(contents.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| AuthError::io(tmp, e))
}

/// Flushes the directory entry of a rename to disk; failures are ignored (not all platforms
/// can open a directory, and the data itself is already synced).
fn sync_parent(path: &Path) {
    #[cfg(unix)]
    if let Some(dir) = path.parent() {
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}
