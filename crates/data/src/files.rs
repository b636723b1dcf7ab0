//! Small file-system helpers shared by the readers: directory listings that skip hidden entries
//! (Dassl's `listdir_nohidden`) and are sorted so that runs are reproducible on any file system,
//! and text reading with errors that name the dataset and the file.

use std::path::{Path, PathBuf};

use crate::error::{DataError, Result};

fn entries(dataset: &str, dir: &Path, what: &str) -> Result<Vec<(String, PathBuf, bool)>> {
    let read = std::fs::read_dir(dir).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => DataError::MissingFile {
            dataset: dataset.to_string(),
            path: dir.to_path_buf(),
            what: what.to_string(),
        },
        _ => DataError::io(dataset, dir, e),
    })?;
    let mut out = Vec::new();
    for entry in read {
        let entry = entry.map_err(|e| DataError::io(dataset, dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        let path = entry.path();
        // Follow symlinks: datasets are often linked in from elsewhere.
        let is_dir = path.is_dir();
        out.push((name, path, is_dir));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// Non-hidden sub-folders of `dir`, sorted by name: `(name, path)`.
pub(crate) fn list_dirs(dataset: &str, dir: &Path, what: &str) -> Result<Vec<(String, PathBuf)>> {
    Ok(entries(dataset, dir, what)?
        .into_iter()
        .filter(|e| e.2)
        .map(|(name, path, _)| (name, path))
        .collect())
}

/// Non-hidden files of `dir`, sorted by name.
pub(crate) fn list_files(dataset: &str, dir: &Path, what: &str) -> Result<Vec<PathBuf>> {
    Ok(entries(dataset, dir, what)?
        .into_iter()
        .filter(|e| !e.2)
        .map(|(_, path, _)| path)
        .collect())
}

/// Reads a whole text file; a missing file becomes [`DataError::MissingFile`] described as `what`.
pub(crate) fn read_text(dataset: &str, path: &Path, what: &str) -> Result<String> {
    let bytes = std::fs::read(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => DataError::MissingFile {
            dataset: dataset.to_string(),
            path: path.to_path_buf(),
            what: what.to_string(),
        },
        _ => DataError::io(dataset, path, e),
    })?;
    String::from_utf8(bytes).map_err(|e| DataError::Format {
        dataset: dataset.to_string(),
        path: path.to_path_buf(),
        line: 0,
        message: format!("not UTF-8 text ({e})"),
    })
}

/// Parses JSON with errors that carry serde_json's line and column.
pub(crate) fn read_json<T: serde::de::DeserializeOwned>(
    dataset: &str,
    path: &Path,
    what: &str,
) -> Result<T> {
    let text = read_text(dataset, path, what)?;
    serde_json::from_str(&text).map_err(|e| DataError::json(dataset, path, &e))
}
