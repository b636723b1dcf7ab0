//! Models already in the Hugging Face cache, named `hf:ORG/NAME[@REVISION][/PATH]`, found offline.
//!
//! The cache is `huggingface_hub`'s: `HF_HUB_CACHE`, else `HF_HOME/hub`, else
//! `$XDG_CACHE_HOME/huggingface/hub`, else `~/.cache/huggingface/hub`. A repository lives in
//! `models--ORG--NAME/`, its files in `snapshots/<commit>/` (links into `blobs/`), and
//! `refs/<branch>` names the commit of a branch. The revision is `main` unless given; a cache with
//! no `refs/main` but exactly one snapshot uses that one. Nothing is ever downloaded.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use super::WeightsError;

/// The prefix that marks a cache reference in place of a path.
pub const SCHEME: &str = "hf:";

/// Where the cache is, from the environment variables `var` reads (the process's in [`resolve`];
/// tests pass their own).
pub fn cache_dir(var: impl Fn(&str) -> Option<OsString>) -> Option<PathBuf> {
    let set = |name: &str| var(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    set("HF_HUB_CACHE")
        .or_else(|| set("HF_HOME").map(|home| home.join("hub")))
        .or_else(|| set("XDG_CACHE_HOME").map(|cache| cache.join("huggingface/hub")))
        .or_else(|| set("HOME").map(|home| home.join(".cache/huggingface/hub")))
}

/// `path` itself, or, for `hf:…`, the snapshot directory (or the file in it) it names, found in
/// the cache of the process's environment.
pub fn resolve(path: &Path) -> Result<PathBuf, WeightsError> {
    match path.to_str().and_then(|p| p.strip_prefix(SCHEME)) {
        None => Ok(path.to_path_buf()),
        Some(spec) => {
            let cache = cache_dir(|name| std::env::var_os(name)).ok_or_else(|| {
                WeightsError::Config(format!(
                    "{SCHEME}{spec}: cannot find the Hugging Face cache: none of HF_HUB_CACHE, \
                     HF_HOME, XDG_CACHE_HOME or HOME is set"
                ))
            })?;
            resolve_in(spec, &cache)
        }
    }
}

/// The snapshot directory (or the file in it) that `ORG/NAME[@REVISION][/PATH]` names in `cache`.
pub fn resolve_in(spec: &str, cache: &Path) -> Result<PathBuf, WeightsError> {
    let mut parts = spec.splitn(3, '/');
    let (org, name, inner) = match (parts.next(), parts.next(), parts.next()) {
        (Some(org), Some(name), inner) if !org.is_empty() && !name.is_empty() => (org, name, inner),
        _ => {
            return Err(WeightsError::Config(format!(
                "'{SCHEME}{spec}' is not a model name: expected {SCHEME}ORG/NAME[@REVISION][/PATH], \
                 e.g. {SCHEME}openai/clip-vit-base-patch16"
            )));
        }
    };
    let (name, revision) = name.split_once('@').unwrap_or((name, "main"));
    let repo = cache.join(format!("models--{org}--{name}"));
    let missing = |path: &Path, message: String| WeightsError::NotInCache {
        path: path.to_path_buf(),
        message: format!("{SCHEME}{org}/{name}: {message}"),
    };
    if !repo.is_dir() {
        return Err(missing(
            &repo,
            "the model is not in the Hugging Face cache".into(),
        ));
    }
    let snapshot = snapshot_dir(&repo, revision).map_err(|message| missing(&repo, message))?;
    let target = inner.map_or(snapshot.clone(), |inner| snapshot.join(inner));
    if target.exists() {
        Ok(target)
    } else {
        Err(missing(&target, "no such file in the snapshot".into()))
    }
}

/// The snapshot of `revision` (a branch in `refs/`, or a commit), or why there is none.
fn snapshot_dir(repo: &Path, revision: &str) -> Result<PathBuf, String> {
    let snapshots = repo.join("snapshots");
    let commit = std::fs::read_to_string(repo.join("refs").join(revision))
        .map(|text| text.trim().to_string())
        .ok();
    if let Some(commit) = commit
        .as_deref()
        .or((revision != "main").then_some(revision))
    {
        let dir = snapshots.join(commit);
        return if dir.is_dir() {
            Ok(dir)
        } else {
            Err(format!(
                "revision '{revision}' has no snapshot {}",
                dir.display()
            ))
        };
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir(&snapshots)
        .map(|entries| entries.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    found.retain(|p| p.is_dir());
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => Err(format!("no snapshot in {}", snapshots.display())),
        n => Err(format!(
            "{n} snapshots in {} and no refs/main to choose one: name it as @REVISION",
            snapshots.display()
        )),
    }
}
