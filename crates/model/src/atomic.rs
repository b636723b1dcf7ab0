//! Crash-safe file writing.

use std::path::Path;

/// Writes `contents` to `path` atomically: a temporary file in the same folder (named after the
/// target, so that one a killed process leaves behind says whose it is), synced, then renamed over
/// `path`, so that concurrent runs never read a half-written file and a killed process never leaves
/// a truncated one under the final name. Creates the missing parent folders; on any error the
/// temporary file is removed. Used for every file the project writes for later reading: weights,
/// checkpoints, few-shot subsets, run configurations and results.
pub fn write_atomic(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let prefix = format!(".{name}.tmp-");
    let mut builder = tempfile::Builder::new();
    builder.prefix(&prefix);
    // The mode `File::create` gives (0o666 less the umask), not tempfile's owner-only 0o600: the
    // files are shared results, not secrets.
    #[cfg(unix)]
    builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666));
    // Dropped on every early return, which deletes the temporary file.
    let mut file = builder.tempfile_in(dir)?;
    file.write_all(contents)?;
    file.as_file().sync_all()?;
    file.persist(path).map_err(|e| e.error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_the_file_and_leaves_no_temporary_behind() {
        let scratch = tempfile::tempdir().unwrap();
        let dir = scratch.path();
        let path = dir.join("nested/out.json");
        write_atomic(&path, b"first").unwrap();
        write_atomic(&path, b"second").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"second");
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("out.json")]);
        // Permissions as a plain `File::create` gives them.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let plain = dir.join("plain");
            std::fs::File::create(&plain).unwrap();
            let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode();
            assert_eq!(mode(&path), mode(&plain));
        }
        // A target that cannot be written is an error, not a panic.
        assert!(write_atomic(&dir.join("nested/out.json/child"), b"x").is_err());
    }
}
