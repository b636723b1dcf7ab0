//! `cargo xtask download MODEL`: OpenAI's released CLIP checkpoints, verified.
//!
//! The files come from OpenAI's public release addresses
//! `https://openaipublic.azureedge.net/clip/models/<sha256>/<file>.pt` (the table in `clip/clip.py` of
//! github.com/openai/CLIP); the path embeds the file's SHA-256, which is checked before the file gets
//! its final name. A download goes to `<file>.partial` first and resumes from it (HTTP `Range`) after
//! an interruption; only a complete, verified file is renamed into place. The base address can be
//! replaced by a mirror (`--mirror URL` or the `MOCOOP_MIRROR` environment variable): the file is
//! then fetched from `<mirror>/<sha256>/<file>.pt`.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use sha2::Digest;

/// OpenAI's release address, under which each file lives at `<sha256>/<file>`.
pub const OPENAI_BASE: &str = "https://openaipublic.azureedge.net/clip/models";
/// Environment variable naming a mirror of [`OPENAI_BASE`].
pub const MIRROR_ENV: &str = "MOCOOP_MIRROR";

/// One released checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Release {
    /// The name OpenAI's `clip.load` uses, e.g. `ViT-B/32`.
    pub name: &'static str,
    /// File name of the TorchScript archive.
    pub file: &'static str,
    /// SHA-256 of the file (also the directory of its address).
    pub sha256: &'static str,
}

/// The checkpoints OpenAI released, ResNets and ViTs (addresses from `clip/clip.py`, `_MODELS`).
pub const RELEASES: &[Release] = &[
    Release {
        name: "RN50",
        file: "RN50.pt",
        sha256: "afeb0e10f9e5a86da6080e35cf09123aca3b358a0c3e3b6c78a7b63bc04b6762",
    },
    Release {
        name: "RN101",
        file: "RN101.pt",
        sha256: "8fa8567bab74a42d41c5915025a8e4538c3bdbe8804a470a72f30b0d94fab599",
    },
    Release {
        name: "RN50x4",
        file: "RN50x4.pt",
        sha256: "7e526bd135e493cef0776de27d5f42653e6b4c8bf9e0f653bb11773263205fdd",
    },
    Release {
        name: "RN50x16",
        file: "RN50x16.pt",
        sha256: "52378b407f34354e150460fe41077663dd5b39c54cd0bfd2b27167a4a06ec9aa",
    },
    Release {
        name: "RN50x64",
        file: "RN50x64.pt",
        sha256: "be1cfb55d75a9666199fb2206c106743da0f6468c9d327f3e0d0a543a9919d9c",
    },
    Release {
        name: "ViT-B/32",
        file: "ViT-B-32.pt",
        sha256: "40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af",
    },
    Release {
        name: "ViT-B/16",
        file: "ViT-B-16.pt",
        sha256: "5806e77cd80f8b59890b7e101eabd078d9fb84e6937f9e85e4ecb61988df416f",
    },
    Release {
        name: "ViT-L/14",
        file: "ViT-L-14.pt",
        sha256: "b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836",
    },
    Release {
        name: "ViT-L/14@336px",
        file: "ViT-L-14-336px.pt",
        sha256: "3035c92b350959924f9f00213499208652fc7ea050643e8b385c2dac08641f02",
    },
];

/// Finds a release by OpenAI's name (`ViT-B/16`), its file stem (`ViT-B-16`) or file name, in any case.
pub fn find_release(name: &str) -> Option<&'static Release> {
    let wanted = normalise(name.trim().trim_end_matches(".pt"));
    RELEASES.iter().find(|r| {
        normalise(r.name) == wanted || normalise(r.file.trim_end_matches(".pt")) == wanted
    })
}

fn normalise(name: &str) -> String {
    name.to_ascii_lowercase().replace(['/', '@'], "-")
}

/// The address of a release under `base` (OpenAI's or a mirror's).
pub fn release_url(base: &str, release: &Release) -> String {
    format!(
        "{}/{}/{}",
        base.trim_end_matches('/'),
        release.sha256,
        release.file
    )
}

/// The base address to use: `--mirror`, else `MOCOOP_MIRROR`, else OpenAI's.
pub fn base_address(mirror: Option<&str>) -> String {
    mirror
        .map(str::to_string)
        .or_else(|| {
            std::env::var(MIRROR_ENV)
                .ok()
                .filter(|m| !m.trim().is_empty())
        })
        .unwrap_or_else(|| OPENAI_BASE.to_string())
}

/// Where downloads go by default: the directory OpenAI's `clip` package uses (`~/.cache/clip`,
/// honouring `XDG_CACHE_HOME`), so that files are shared with it.
pub fn default_dir() -> PathBuf {
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")));
    cache.map_or_else(|| PathBuf::from("checkpoints"), |c| c.join("clip"))
}

/// How to download.
#[derive(Debug, Clone)]
pub struct FetchOptions {
    /// Show a progress bar on standard error.
    pub progress: bool,
    /// How many times to resume automatically after the connection drops mid-transfer.
    pub retries: u32,
    /// Connect timeout, and timeout for each read.
    pub timeout: Duration,
}

impl Default for FetchOptions {
    fn default() -> Self {
        Self {
            progress: true,
            retries: 3,
            timeout: Duration::from_secs(30),
        }
    }
}

/// What a successful [`fetch`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// The verified file.
    pub path: PathBuf,
    /// Its size.
    pub bytes: u64,
    /// Bytes that came from an earlier partial download (0 when it started from scratch).
    pub resumed_from: u64,
    /// The file was already there and verified; nothing was downloaded.
    pub already_present: bool,
}

/// The partial file beside `dest`: `<dest>.partial`.
pub fn partial_path(dest: &Path) -> PathBuf {
    let mut name = dest.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    dest.with_file_name(name)
}

/// Downloads `url` to `dest`, resuming `<dest>.partial` if present, and renames it to `dest` only once
/// its SHA-256 equals `sha256`. On a digest mismatch the partial file is deleted and nothing is left
/// under `dest`.
pub fn fetch(url: &str, sha256: &str, dest: &Path, options: &FetchOptions) -> Result<Fetched> {
    let sha256 = sha256.to_ascii_lowercase();
    if dest.exists() {
        let digest = crate::sha256_file(dest)
            .with_context(|| format!("reading existing {}", dest.display()))?;
        if digest == sha256 {
            let bytes = std::fs::metadata(dest)?.len();
            return Ok(Fetched {
                path: dest.to_path_buf(),
                bytes,
                resumed_from: 0,
                already_present: true,
            });
        }
        bail!(
            "{} exists but its SHA-256 is {digest}, not {sha256}; move it away and run again",
            dest.display()
        );
    }
    if let Some(dir) = dest.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let partial = partial_path(dest);
    let agent = ureq::AgentBuilder::new()
        .timeout_connect(options.timeout)
        .timeout_read(options.timeout)
        .user_agent(concat!("mocoop-xtask/", env!("CARGO_PKG_VERSION")))
        .build();

    let mut first_offset = None;
    let mut attempt = 0;
    let (hasher, bytes) = loop {
        match transfer(&agent, url, &partial, options.progress) {
            Ok(Transfer::Complete {
                hasher,
                bytes,
                resumed_from,
            }) => {
                first_offset.get_or_insert(resumed_from);
                break (hasher, bytes);
            }
            Ok(Transfer::Interrupted {
                resumed_from,
                received,
                error,
            }) => {
                first_offset.get_or_insert(resumed_from);
                let have = resumed_from + received;
                if attempt >= options.retries || received == 0 {
                    bail!(
                        "download of {url} interrupted after {} ({error}); {} is kept: run the \
                         same command again to resume",
                        crate::human_bytes(have),
                        partial.display()
                    );
                }
                attempt += 1;
                eprintln!(
                    "connection lost after {} ({error}); resuming (attempt {attempt} of {})",
                    crate::human_bytes(have),
                    options.retries
                );
            }
            Err(e) => return Err(e),
        }
    };

    let digest = crate::hex(&hasher.finalize());
    if digest != sha256 {
        let _ = std::fs::remove_file(&partial);
        bail!(
            "SHA-256 mismatch for {url}: expected {sha256}, got {digest}; the download was \
             deleted (a corrupt mirror or a changed file?)"
        );
    }
    std::fs::rename(&partial, dest)
        .with_context(|| format!("renaming {} to {}", partial.display(), dest.display()))?;
    Ok(Fetched {
        path: dest.to_path_buf(),
        bytes,
        resumed_from: first_offset.unwrap_or(0),
        already_present: false,
    })
}

enum Transfer {
    /// The whole file is in the partial file; `hasher` has seen all of it.
    Complete {
        hasher: sha2::Sha256,
        bytes: u64,
        resumed_from: u64,
    },
    /// The connection dropped; the partial file holds what arrived.
    Interrupted {
        resumed_from: u64,
        received: u64,
        error: String,
    },
}

/// One HTTP request: resumes `partial` if it has data, appends what arrives, hashes everything.
fn transfer(agent: &ureq::Agent, url: &str, partial: &Path, progress: bool) -> Result<Transfer> {
    let existing = std::fs::metadata(partial).map(|m| m.len()).unwrap_or(0);
    let mut request = agent.get(url);
    if existing > 0 {
        request = request.set("Range", &format!("bytes={existing}-"));
    }
    let response = match request.call() {
        Ok(response) => response,
        // The partial file is already complete (or longer than the file): verify what is there.
        Err(ureq::Error::Status(416, _)) if existing > 0 => {
            let file = File::open(partial)?;
            let mut hasher = sha2::Sha256::new();
            hash_into(&mut hasher, file)?;
            return Ok(Transfer::Complete {
                hasher,
                bytes: existing,
                resumed_from: existing,
            });
        }
        Err(ureq::Error::Status(code, response)) => {
            bail!(
                "{url}: the server answered HTTP {code} {}",
                response.status_text()
            )
        }
        Err(ureq::Error::Transport(transport)) => return Err(unreachable(url, &transport)),
    };

    let length = response
        .header("Content-Length")
        .and_then(|v| v.trim().parse::<u64>().ok());
    // Resume only if the server honoured the range exactly; otherwise start again from zero.
    let resume_from = if existing > 0 && response.status() == 206 {
        let range = response.header("Content-Range").unwrap_or_default();
        if content_range_start(range) != Some(existing) {
            bail!("{url}: the server sent range '{range}' for a request from byte {existing}");
        }
        existing
    } else {
        0
    };

    let mut file = OpenOptions::new()
        .create(true)
        .write(true)
        .read(true)
        .truncate(false)
        .open(partial)
        .with_context(|| format!("opening {}", partial.display()))?;
    let mut hasher = sha2::Sha256::new();
    if resume_from > 0 {
        hash_into(&mut hasher, (&mut file).take(resume_from))?;
    }
    file.set_len(resume_from)?;
    file.seek(SeekFrom::Start(resume_from))?;

    let bar = progress_bar(progress, length.map(|l| l + resume_from), resume_from);
    let mut reader = response.into_reader();
    let mut buf = vec![0u8; 1 << 16];
    let mut received = 0u64;
    let mut failure = None;
    loop {
        match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                file.write_all(&buf[..n])
                    .with_context(|| format!("writing {}", partial.display()))?;
                hasher.update(&buf[..n]);
                received += n as u64;
                bar.inc(n as u64);
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                failure = Some(e.to_string());
                break;
            }
        }
    }
    file.flush()?;
    file.sync_data()?;
    bar.finish_and_clear();
    if failure.is_none()
        && let Some(length) = length
        && received < length
    {
        failure = Some(format!("connection closed at {received} of {length} bytes"));
    }
    Ok(match failure {
        Some(error) => Transfer::Interrupted {
            resumed_from: resume_from,
            received,
            error,
        },
        None => Transfer::Complete {
            hasher,
            bytes: resume_from + received,
            resumed_from: resume_from,
        },
    })
}

/// The first byte of a `Content-Range: bytes <first>-<last>/<total>` header.
fn content_range_start(header: &str) -> Option<u64> {
    let rest = header.trim().strip_prefix("bytes")?.trim_start();
    rest.split('-').next()?.trim().parse().ok()
}

fn hash_into(hasher: &mut sha2::Sha256, mut reader: impl Read) -> Result<()> {
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        hasher.update(&buf[..n]);
    }
}

/// The one-line error for a server that cannot be reached.
fn unreachable(url: &str, transport: &ureq::Transport) -> anyhow::Error {
    let host = url
        .split("://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .unwrap_or(url);
    let mut detail = transport.kind().to_string();
    if let Some(message) = transport.message() {
        detail = format!("{detail}: {message}");
    }
    if let Some(source) = std::error::Error::source(transport) {
        detail = format!("{detail}: {source}");
    }
    let detail = detail.replace('\n', " ");
    anyhow!(
        "cannot reach {host} ({detail}): are you offline? Retry later, or download from a mirror \
         with --mirror URL or {MIRROR_ENV}=URL"
    )
}

fn progress_bar(show: bool, total: Option<u64>, start: u64) -> indicatif::ProgressBar {
    if !show {
        return indicatif::ProgressBar::hidden();
    }
    let bar = match total {
        Some(total) => indicatif::ProgressBar::new(total).with_style(
            indicatif::ProgressStyle::with_template(
                "{bar:40.cyan/blue} {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        ),
        None => indicatif::ProgressBar::new_spinner().with_style(
            indicatif::ProgressStyle::with_template("{spinner} {bytes} {binary_bytes_per_sec}")
                .expect("valid template"),
        ),
    };
    bar.set_position(start);
    bar
}
