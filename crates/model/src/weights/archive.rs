//! The zip side of PyTorch archives (`torch.save` since PyTorch 1.6, and `torch.jit.save`): where
//! `data.pkl` is, reading it with a size bound, and checking storages against the sizes the pickle
//! declares before anything is allocated for them.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use super::pickle::{Res, Storage};

/// Largest `data.pkl` accepted (OpenAI's are well under 1 MiB).
const MAX_PICKLE_BYTES: u64 = 64 << 20;
/// Most a deflated zip entry can expand (deflate's limit is about 1032:1); an entry claiming more
/// than this many times its compressed size is corrupt or hostile.
const MAX_DEFLATE_RATIO: u64 = 1032;

/// An open PyTorch zip archive and the folder inside it that holds `data.pkl`.
pub(super) struct PytorchZip {
    archive: zip::ZipArchive<BufReader<File>>,
    /// `""` or a single `<name>/`.
    prefix: String,
    /// Size of the archive file, the most that a stored entry can hold.
    file_len: u64,
}

impl PytorchZip {
    /// Opens `path` as a zip archive with exactly one `data.pkl` at its root or one folder down.
    pub(super) fn open(path: &Path) -> Res<Self> {
        let file = File::open(path).map_err(|e| e.to_string())?;
        let file_len = file.metadata().map_err(|e| e.to_string())?.len();
        let archive = zip::ZipArchive::new(BufReader::new(file))
            .map_err(|e| format!("not a valid zip archive ({e})"))?;
        let prefix = archive_prefix(&archive)?;
        Ok(Self {
            archive,
            prefix,
            file_len,
        })
    }

    /// Whether an entry `<prefix><name>` exists, or one under the folder `<prefix><name>` when
    /// `name` ends with `/`.
    pub(super) fn has(&self, name: &str) -> bool {
        let full = format!("{}{name}", self.prefix);
        self.archive.file_names().any(|n| {
            if name.ends_with('/') {
                n.starts_with(&full)
            } else {
                n == full
            }
        })
    }

    /// Checks that the archive is little-endian (when it says) and returns its `data.pkl`.
    pub(super) fn read_pickle(&mut self) -> Res<Vec<u8>> {
        if let Some(order) = self.read_small_entry("byteorder")? {
            let order = String::from_utf8_lossy(&order);
            if order.trim() != "little" {
                return Err(format!(
                    "byte order '{}' is not supported (only little-endian)",
                    order.trim()
                ));
            }
        }
        let name = format!("{}data.pkl", self.prefix);
        let mut entry = self
            .archive
            .by_name(&name)
            .map_err(|e| format!("cannot open {name}: {e}"))?;
        if entry.size() > MAX_PICKLE_BYTES {
            return Err(format!(
                "{name} claims {} bytes, more than the {MAX_PICKLE_BYTES} accepted",
                entry.size()
            ));
        }
        let mut bytes = Vec::new();
        entry
            .by_ref()
            .take(MAX_PICKLE_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| format!("cannot read {name}: {e}"))?;
        Ok(bytes)
    }

    /// Reads a small optional entry (at most 1 KiB).
    fn read_small_entry(&mut self, name: &str) -> Res<Option<Vec<u8>>> {
        let name = format!("{}{name}", self.prefix);
        let Ok(entry) = self.archive.by_name(&name) else {
            return Ok(None);
        };
        let mut bytes = Vec::new();
        entry
            .take(1024)
            .read_to_end(&mut bytes)
            .map_err(|e| format!("cannot read {name}: {e}"))?;
        Ok(Some(bytes))
    }

    /// Checks, from the zip directory alone, that a storage's entry exists, holds exactly the
    /// bytes the pickle declares, and that the file can really hold them.
    pub(super) fn check_storage(&mut self, storage: &Storage) -> Res<()> {
        let name = format!("{}data/{}", self.prefix, storage.key);
        let entry = self
            .archive
            .by_name(&name)
            .map_err(|e| format!("storage {name} is missing ({e})"))?;
        let expected = storage.byte_len() as u64;
        if entry.size() != expected {
            return Err(format!(
                "storage {name} holds {} bytes, but the pickle declares {} elements of {} bytes",
                entry.size(),
                storage.numel,
                storage.kind.element_size()
            ));
        }
        let plausible = if entry.compression() == zip::CompressionMethod::Stored {
            entry.compressed_size() == expected && expected <= self.file_len
        } else {
            entry.compressed_size() <= self.file_len
                && expected <= entry.compressed_size().saturating_mul(MAX_DEFLATE_RATIO)
        };
        if !plausible {
            return Err(format!(
                "storage {name} claims {expected} bytes, more than the archive can hold"
            ));
        }
        Ok(())
    }

    /// Reads the raw bytes of one storage, checked as [`Self::check_storage`] does.
    pub(super) fn read_storage(&mut self, storage: &Storage) -> Res<Vec<u8>> {
        self.check_storage(storage)?;
        let name = format!("{}data/{}", self.prefix, storage.key);
        let mut entry = self
            .archive
            .by_name(&name)
            .map_err(|e| format!("storage {name} is missing ({e})"))?;
        let expected = storage.byte_len();
        // Compressed data grows the buffer as it really decompresses.
        let capacity = if entry.compression() == zip::CompressionMethod::Stored {
            expected
        } else {
            expected.min(1 << 24)
        };
        let mut bytes = Vec::with_capacity(capacity);
        entry
            .by_ref()
            .take(expected as u64)
            .read_to_end(&mut bytes)
            .map_err(|e| format!("cannot read storage {name}: {e}"))?;
        if bytes.len() != expected {
            return Err(format!(
                "storage {name} is truncated: {} of {expected} bytes",
                bytes.len()
            ));
        }
        Ok(bytes)
    }
}

/// The directory holding `data.pkl`: `""` or a single `<name>/`.
fn archive_prefix<R: Read + std::io::Seek>(archive: &zip::ZipArchive<R>) -> Res<String> {
    let mut prefixes = archive.file_names().filter_map(|name| {
        let prefix = name.strip_suffix("data.pkl")?;
        (prefix.is_empty() || (prefix.ends_with('/') && prefix.matches('/').count() == 1))
            .then(|| prefix.to_string())
    });
    let first = prefixes
        .next()
        .ok_or("the zip archive has no data.pkl (not a PyTorch archive)")?;
    if prefixes.next().is_some() {
        return Err("the zip archive has more than one data.pkl".into());
    }
    Ok(first)
}
