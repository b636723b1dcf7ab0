#![warn(missing_docs)]
//! Developer chores behind `cargo xtask …`: downloading OpenAI's CLIP checkpoints
//! ([`download`]), converting any supported checkpoint to the native format ([`convert`]) and timing
//! how fast each format loads ([`bench`]).

pub mod bench;
pub mod convert;
pub mod download;
pub mod layout;

/// Lower-case hex SHA-256 of everything `reader` yields.
pub fn sha256_reader(mut reader: impl std::io::Read) -> std::io::Result<String> {
    use sha2::Digest;
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

/// Lower-case hex SHA-256 of a file.
pub fn sha256_file(path: &std::path::Path) -> std::io::Result<String> {
    sha256_reader(std::fs::File::open(path)?)
}

/// Lower-case hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// A byte count for people: `1.23 GiB`, `4.5 MiB`, `812 B`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.2} {}", UNITS[unit])
}
