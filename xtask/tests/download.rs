//! `cargo xtask download` against a local HTTP server (never the internet): a full download with a
//! verified digest, resuming after a dropped connection, and a digest mismatch leaving nothing behind.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use xtask::download::{self, FetchOptions};

/// A one-file HTTP/1.1 server on 127.0.0.1 supporting GET and single `Range: bytes=N-` requests.
struct Server {
    base: String,
    /// The `Range` header of each request received (None when absent).
    ranges: Arc<Mutex<Vec<Option<String>>>>,
}

impl Server {
    /// Serves `body` at `/<sha>/<file>`; the first `cut_first` responses send only half of what
    /// they promise and then drop the connection.
    fn start(path: String, body: Vec<u8>, cut_first: usize) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let ranges = Arc::new(Mutex::new(Vec::new()));
        let seen = ranges.clone();
        let cuts = Arc::new(AtomicUsize::new(cut_first));
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let cut = cuts
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok();
                let _ = respond(stream, &path, &body, cut, &seen);
            }
        });
        Self { base, ranges }
    }

    fn ranges(&self) -> Vec<Option<String>> {
        self.ranges.lock().unwrap().clone()
    }
}

fn respond(
    stream: TcpStream,
    path: &str,
    body: &[u8],
    cut: bool,
    seen: &Mutex<Vec<Option<String>>>,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut range = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("range")
        {
            range = Some(value.trim().to_string());
        }
    }
    seen.lock().unwrap().push(range.clone());
    let mut out = stream;
    let mut parts = request_line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    if method != "GET" || target != path {
        return out.write_all(
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        );
    }
    let start = range
        .as_deref()
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|r| r.parse::<usize>().ok());
    let (head, slice) = match start {
        Some(start) if start >= body.len() => {
            let head = format!(
                "HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */{}\r\n\
                 Content-Length: 0\r\nConnection: close\r\n\r\n",
                body.len()
            );
            (head, &body[..0])
        }
        Some(start) => {
            let head = format!(
                "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {start}-{}/{}\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n",
                body.len() - 1,
                body.len(),
                body.len() - start
            );
            (head, &body[start..])
        }
        None => {
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nAccept-Ranges: bytes\r\n\
                 Connection: close\r\n\r\n",
                body.len()
            );
            (head, body)
        }
    };
    out.write_all(head.as_bytes())?;
    let sent = if cut {
        &slice[..slice.len() / 2]
    } else {
        slice
    };
    out.write_all(sent)?;
    out.flush()?;
    out.shutdown(std::net::Shutdown::Both)
}

/// Deterministic pseudo-random bytes (xorshift), so that the digest is not that of a pattern.
fn generated_file(len: usize) -> Vec<u8> {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

fn scratch_dir(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("download-tests")
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn options(retries: u32) -> FetchOptions {
    FetchOptions {
        progress: false,
        retries,
        timeout: Duration::from_secs(10),
    }
}

/// A file served like a release: at `/<sha256>/<file>` under the server's address.
struct Served {
    server: Server,
    body: Vec<u8>,
    sha256: String,
    url: String,
}

fn serve(cut_first: usize) -> Served {
    let body = generated_file(3 * 1024 * 1024 + 123);
    let sha256 = xtask::sha256_reader(body.as_slice()).unwrap();
    let server = Server::start(format!("/{sha256}/test.pt"), body.clone(), cut_first);
    // What `--mirror <base>` asks for: `<base>/<sha256>/<file>`.
    let url = format!("{}/{sha256}/test.pt", server.base);
    Served {
        server,
        body,
        sha256,
        url,
    }
}

#[test]
fn full_download_is_verified_and_renamed() {
    let served = serve(0);
    let dest = scratch_dir("full").join("test.pt");
    let fetched = download::fetch(&served.url, &served.sha256, &dest, &options(0)).unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), served.body);
    assert_eq!(fetched.bytes, served.body.len() as u64);
    assert_eq!(fetched.resumed_from, 0);
    assert!(!fetched.already_present);
    assert!(!download::partial_path(&dest).exists());
    assert_eq!(served.server.ranges(), vec![None]);

    // A second run verifies the file and downloads nothing.
    let again = download::fetch(&served.url, &served.sha256, &dest, &options(0)).unwrap();
    assert!(again.already_present);
    assert_eq!(served.server.ranges().len(), 1);
}

#[test]
fn truncated_download_resumes_with_a_range_request() {
    let served = serve(1);
    let dest = scratch_dir("resume").join("test.pt");
    let partial = download::partial_path(&dest);

    let error = download::fetch(&served.url, &served.sha256, &dest, &options(0)).unwrap_err();
    assert!(
        error.to_string().contains("interrupted"),
        "unexpected error: {error:#}"
    );
    assert!(!dest.exists(), "nothing under the final name");
    let half = served.body.len() / 2;
    assert_eq!(std::fs::metadata(&partial).unwrap().len(), half as u64);

    let fetched = download::fetch(&served.url, &served.sha256, &dest, &options(0)).unwrap();
    assert_eq!(fetched.resumed_from, half as u64);
    assert_eq!(std::fs::read(&dest).unwrap(), served.body);
    assert!(!partial.exists());
    assert_eq!(
        served.server.ranges(),
        vec![None, Some(format!("bytes={half}-"))]
    );
}

#[test]
fn dropped_connection_is_resumed_within_one_run() {
    let served = serve(1);
    let dest = scratch_dir("retry").join("test.pt");
    let fetched = download::fetch(&served.url, &served.sha256, &dest, &options(2)).unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), served.body);
    assert_eq!(fetched.resumed_from, 0);
    let half = served.body.len() / 2;
    assert_eq!(
        served.server.ranges(),
        vec![None, Some(format!("bytes={half}-"))]
    );
}

#[test]
fn digest_mismatch_leaves_no_file() {
    let served = serve(0);
    let dest = scratch_dir("mismatch").join("test.pt");
    let wrong = "0".repeat(64);
    let error = download::fetch(&served.url, &wrong, &dest, &options(0)).unwrap_err();
    let message = error.to_string();
    assert!(message.contains("SHA-256 mismatch"), "{message}");
    assert!(
        message.contains(&served.sha256),
        "names the digest received: {message}"
    );
    assert!(!dest.exists(), "no file under the final name");
    assert!(!download::partial_path(&dest).exists(), "partial removed");
}

#[test]
fn unreachable_server_is_one_clear_line() {
    // A port that was just free: nothing listens there.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dest = scratch_dir("offline").join("test.pt");
    let url = format!("http://127.0.0.1:{port}/{}/test.pt", "0".repeat(64));
    let error = download::fetch(&url, &"0".repeat(64), &dest, &options(0)).unwrap_err();
    let message = format!("{error:#}");
    assert!(message.contains("cannot reach 127.0.0.1"), "{message}");
    assert!(message.contains("--mirror"), "{message}");
    assert!(!message.contains('\n'), "one line: {message}");
    assert!(!dest.exists());
}

#[test]
fn missing_file_on_the_server_is_an_error() {
    let served = serve(0);
    let dest = scratch_dir("missing").join("test.pt");
    let url = format!("{}/{}/other.pt", served.server.base, served.sha256);
    let error = download::fetch(&url, &served.sha256, &dest, &options(0)).unwrap_err();
    assert!(error.to_string().contains("HTTP 404"), "{error:#}");
    assert!(!dest.exists());
}

#[test]
fn releases_and_addresses() {
    let b16 = download::find_release("ViT-B/16").unwrap();
    assert_eq!(
        download::release_url(download::OPENAI_BASE, b16),
        "https://openaipublic.azureedge.net/clip/models/\
         5806e77cd80f8b59890b7e101eabd078d9fb84e6937f9e85e4ecb61988df416f/ViT-B-16.pt"
    );
    assert_eq!(download::find_release("vit-b-16"), Some(b16));
    assert_eq!(
        download::find_release("ViT-L/14@336px").unwrap().file,
        "ViT-L-14-336px.pt"
    );
    assert_eq!(
        download::find_release("ViT-L-14-336px.pt").unwrap().name,
        "ViT-L/14@336px"
    );
    let rn50 = download::find_release("rn50").unwrap();
    assert_eq!(
        download::release_url(download::OPENAI_BASE, rn50),
        "https://openaipublic.azureedge.net/clip/models/\
         afeb0e10f9e5a86da6080e35cf09123aca3b358a0c3e3b6c78a7b63bc04b6762/RN50.pt"
    );
    assert_eq!(
        download::find_release("RN50x64.pt").unwrap().name,
        "RN50x64"
    );
    assert_eq!(download::RELEASES.len(), 9);
    assert!(download::find_release("RN200").is_none());
    assert_eq!(
        download::release_url("http://mirror.example/clip/", b16),
        format!("http://mirror.example/clip/{}/ViT-B-16.pt", b16.sha256)
    );
    assert_eq!(
        download::base_address(Some("http://mirror.example")),
        "http://mirror.example"
    );
}
