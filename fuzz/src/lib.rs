//! Helpers shared by the fuzz targets: the readers under test take paths, so fuzzed bytes are
//! written to files in a per-process scratch folder first.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The scratch folder of this fuzzing process (one per process, so parallel jobs do not collide).
pub fn scratch_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("mocoop-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("scratch folder can be created");
        dir
    })
}

/// Writes `bytes` to `relative` under the scratch folder (creating parent folders) and returns
/// the file's path.
pub fn write_scratch(relative: &str, bytes: &[u8]) -> PathBuf {
    let path = scratch_dir().join(relative);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).expect("scratch sub-folder can be created");
    }
    std::fs::write(&path, bytes).expect("scratch file can be written");
    path
}

/// A fresh, empty folder under the scratch folder, for readers that look at a whole directory.
pub fn fresh_dir(relative: &str) -> PathBuf {
    let dir = scratch_dir().join(relative);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch sub-folder can be created");
    dir
}

/// A zip archive holding `entries` uncompressed, as `torch.save` and `torch.jit.save` write them.
pub fn zip_archive(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut writer = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for (name, bytes) in entries {
        writer.start_file(*name, options).expect("zip entry starts");
        writer.write_all(bytes).expect("zip entry is written");
    }
    writer
        .finish()
        .expect("zip archive is finished")
        .into_inner()
}

/// Splits fuzz input at the first `sep` byte: `(before, after)`, `after` empty when absent.
pub fn split_at_byte(data: &[u8], sep: u8) -> (&[u8], &[u8]) {
    match data.iter().position(|&b| b == sep) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[]),
    }
}
