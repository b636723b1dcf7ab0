//! `hf:ORG/NAME` against a fake Hugging Face cache in a temporary directory: the cache location
//! from the environment (passed in, not set on the process), the snapshot a revision names, files
//! as links into `blobs/` as `huggingface_hub` stores them, and the errors of what is not there.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use mocoop_model::weights::hf_cache::{cache_dir, resolve_in};
use mocoop_model::weights::{self, LoadOptions, WeightLayout, WeightsError};
use mocoop_test_support::reference::*;

const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

/// Puts `files` (name, source) in `cache` as repository `org/name` at [`COMMIT`], the snapshot's
/// entries linking into `blobs/` as `huggingface_hub` makes them; `refs/main` only if `with_ref`.
fn cached_repo(cache: &Path, repo: &str, files: &[(&str, PathBuf)], with_ref: bool) -> PathBuf {
    let root = cache.join(format!("models--{}", repo.replace('/', "--")));
    let snapshot = root.join("snapshots").join(COMMIT);
    std::fs::create_dir_all(root.join("blobs")).unwrap();
    std::fs::create_dir_all(&snapshot).unwrap();
    for (i, (name, source)) in files.iter().enumerate() {
        let blob = root.join("blobs").join(format!("blob{i}"));
        std::fs::copy(source, &blob).unwrap();
        link(&blob, &snapshot.join(name));
    }
    if with_ref {
        std::fs::create_dir_all(root.join("refs")).unwrap();
        std::fs::write(root.join("refs/main"), COMMIT).unwrap();
    }
    snapshot
}

#[cfg(unix)]
fn link(target: &Path, at: &Path) {
    std::os::unix::fs::symlink(target, at).unwrap();
}

#[cfg(not(unix))]
fn link(target: &Path, at: &Path) {
    std::fs::copy(target, at).unwrap();
}

fn env<'a>(vars: &'a [(&str, &str)]) -> impl Fn(&str) -> Option<OsString> + 'a {
    move |name| {
        vars.iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| OsString::from(v))
    }
}

#[test]
fn the_cache_is_found_as_huggingface_hub_finds_it() {
    let all = [
        ("HF_HUB_CACHE", "/hub-cache"),
        ("HF_HOME", "/hf-home"),
        ("XDG_CACHE_HOME", "/xdg"),
        ("HOME", "/home/u"),
    ];
    assert_eq!(cache_dir(env(&all)), Some("/hub-cache".into()));
    assert_eq!(cache_dir(env(&all[1..])), Some("/hf-home/hub".into()));
    assert_eq!(
        cache_dir(env(&all[2..])),
        Some("/xdg/huggingface/hub".into())
    );
    assert_eq!(
        cache_dir(env(&all[3..])),
        Some("/home/u/.cache/huggingface/hub".into())
    );
    // An empty variable counts as unset.
    assert_eq!(
        cache_dir(env(&[("HF_HUB_CACHE", ""), ("HF_HOME", "/h")])),
        Some("/h/hub".into())
    );
    assert_eq!(cache_dir(env(&[])), None);
}

#[test]
fn transformers_and_open_clip_repositories_load_from_the_cache() {
    let cache = tempfile::tempdir().unwrap();
    let hf = fixtures().join("hf_clip");
    let hf_snapshot = cached_repo(
        cache.path(),
        "openai/clip-test",
        &[
            ("config.json", hf.join("config.json")),
            ("model.safetensors", hf.join("model.safetensors")),
        ],
        true,
    );
    let resolved = resolve_in("openai/clip-test", cache.path()).unwrap();
    assert_eq!(resolved, hf_snapshot);
    let loaded = weights::load(&resolved, &LoadOptions::default()).unwrap();
    assert_eq!(loaded.layout, WeightLayout::HuggingFace);
    // A file inside the snapshot (a link into blobs/) finds its configuration beside it.
    let file = resolve_in("openai/clip-test/model.safetensors", cache.path()).unwrap();
    assert_eq!(file, hf_snapshot.join("model.safetensors"));
    check_against_reference::<burn::backend::Flex>(
        &Default::default(),
        "hf_clip",
        &file,
        &LoadOptions::default(),
    );

    // An open_clip repository without refs/main: its only snapshot.
    let hub = fixtures().join(HUB);
    let oc_snapshot = cached_repo(
        cache.path(),
        "acme/tiny-open-clip",
        &[
            ("open_clip_config.json", hub.join("open_clip_config.json")),
            (
                "open_clip_model.safetensors",
                hub.join("open_clip_model.safetensors"),
            ),
        ],
        false,
    );
    let resolved = resolve_in("acme/tiny-open-clip", cache.path()).unwrap();
    assert_eq!(resolved, oc_snapshot);
    let loaded = weights::load(&resolved, &LoadOptions::default()).unwrap();
    assert_eq!(
        loaded.config.vision.heads, 2,
        "heads from open_clip_config.json"
    );
    // A revision by commit.
    let by_commit = resolve_in(&format!("acme/tiny-open-clip@{COMMIT}"), cache.path()).unwrap();
    assert_eq!(by_commit, oc_snapshot);
}

#[test]
fn what_the_cache_does_not_hold_is_an_error_naming_where_it_looked() {
    let cache = tempfile::tempdir().unwrap();
    let not_in_cache = |spec: &str| match resolve_in(spec, cache.path()) {
        Err(WeightsError::NotInCache { path, .. }) => path,
        other => panic!("{spec}: {other:?}"),
    };
    let absent = not_in_cache("openai/clip-vit-base-patch16");
    assert_eq!(
        absent,
        cache.path().join("models--openai--clip-vit-base-patch16")
    );
    let message = resolve_in("openai/clip-vit-base-patch16", cache.path())
        .unwrap_err()
        .to_string();
    assert!(
        message.contains(&absent.display().to_string())
            && message.contains("nothing is downloaded"),
        "{message}"
    );

    // A repository directory with no snapshot (an interrupted download).
    std::fs::create_dir_all(cache.path().join("models--acme--empty/snapshots")).unwrap();
    not_in_cache("acme/empty");
    let message = resolve_in("acme/empty", cache.path())
        .unwrap_err()
        .to_string();
    assert!(message.contains("no snapshot"), "{message}");

    // refs/main naming a snapshot that is not there, and a file the snapshot lacks.
    let snapshot = cached_repo(cache.path(), "acme/partial", &[], true);
    std::fs::remove_dir(&snapshot).unwrap();
    let message = resolve_in("acme/partial", cache.path())
        .unwrap_err()
        .to_string();
    assert!(message.contains(COMMIT), "{message}");
    cached_repo(cache.path(), "acme/partial", &[], true);
    assert_eq!(
        not_in_cache("acme/partial/model.safetensors"),
        snapshot.join("model.safetensors")
    );

    let message = resolve_in("just-a-name", cache.path())
        .unwrap_err()
        .to_string();
    assert!(message.contains("hf:ORG/NAME"), "{message}");
}
