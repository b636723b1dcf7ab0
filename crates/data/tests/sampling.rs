//! Few-shot subsets (determinism, reuse of the saved file, read-only fallback) and base/new class
//! halves.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::common::*;
use mocoop_data::{
    FewShotFile, Subsample, few_shot_with_cache, fewshot_path, load_dataset, subsample_classes,
};

const CLASSES: [&str; 5] = ["ant", "bee", "cat", "dog", "eel"];

/// Caltech101 with five classes, 20/6/3 images each.
fn dataset(root: &Path) -> mocoop_data::Dataset {
    let classes: Vec<Class> = CLASSES
        .iter()
        .map(|c| Class {
            folder: c,
            json_name: c,
        })
        .collect();
    caltech(root, &classes, (20, 6, 3));
    load_dataset("caltech101", root).unwrap()
}

fn paths(items: &[mocoop_data::Item]) -> Vec<PathBuf> {
    items.iter().map(|i| i.path.clone()).collect()
}

fn per_class(items: &[mocoop_data::Item]) -> BTreeMap<usize, usize> {
    let mut m = BTreeMap::new();
    for i in items {
        *m.entry(i.label).or_insert(0) += 1;
    }
    m
}

#[test]
fn few_shot_draws_k_per_class_and_min_k_4_from_val() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let d = dataset(tmp.path());
    let fs = few_shot_with_cache(&d, 8, 1, cache.path()).unwrap();
    assert!(!fs.reused);
    assert_eq!(fs.note, None);
    assert_eq!(fs.file, d.dir.join("split_fewshot/shot_8-seed_1.json"));
    assert_eq!(fs.file, fewshot_path(&d, 8, 1));
    assert!(per_class(&fs.dataset.train).values().all(|&n| n == 8));
    assert_eq!(per_class(&fs.dataset.train).len(), 5);
    assert!(per_class(&fs.dataset.val).values().all(|&n| n == 4));
    assert_eq!(fs.dataset.test, d.test);
    assert_eq!(fs.dataset.classnames, d.classnames);
    // Drawn images come from the right split and class.
    for item in &fs.dataset.train {
        assert!(d.train.contains(item));
    }
    // Fewer images than k: the whole class is taken.
    let fs = few_shot_with_cache(&d, 32, 1, cache.path()).unwrap();
    assert_eq!(fs.dataset.train, d.train);
    assert_eq!(fs.dataset.val.len(), 5 * 4);
    // 0 shots: everything.
    let fs = few_shot_with_cache(&d, 0, 1, cache.path()).unwrap();
    assert_eq!(fs.dataset, d);
}

#[test]
fn few_shot_is_deterministic_saved_and_reused() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let d = dataset(tmp.path());
    let first = few_shot_with_cache(&d, 4, 2, cache.path()).unwrap();
    let again = few_shot_with_cache(&d, 4, 2, cache.path()).unwrap();
    assert!(again.reused);
    assert_eq!(first.dataset, again.dataset);

    // The file has CoOp's entry structure with paths relative to the dataset folder.
    let saved: FewShotFile = serde_json::from_slice(&std::fs::read(&first.file).unwrap()).unwrap();
    assert_eq!(
        (saved.shots, saved.seed, saved.train.len(), saved.val.len()),
        (4, 2, 20, 20)
    );
    assert!(
        saved.train[0].0.starts_with("101_ObjectCategories/ant/"),
        "{:?}",
        saved.train[0]
    );

    // Another "run" without the file draws the same images from the same seed.
    std::fs::remove_file(&first.file).unwrap();
    let redrawn = few_shot_with_cache(&d, 4, 2, cache.path()).unwrap();
    assert!(!redrawn.reused);
    assert_eq!(paths(&redrawn.dataset.train), paths(&first.dataset.train));
    assert_eq!(paths(&redrawn.dataset.val), paths(&first.dataset.val));

    // A different seed draws different images, into its own file.
    let other = few_shot_with_cache(&d, 4, 3, cache.path()).unwrap();
    assert_ne!(paths(&other.dataset.train), paths(&first.dataset.train));
    assert_ne!(other.file, first.file);

    // The saved file is what counts: an edited subset is used as it is.
    let mut edited = saved.clone();
    edited.train.truncate(3);
    std::fs::write(&first.file, serde_json::to_vec(&edited).unwrap()).unwrap();
    let reused = few_shot_with_cache(&d, 4, 2, cache.path()).unwrap();
    assert!(reused.reused);
    assert_eq!(reused.dataset.train.len(), 3);

    // A file naming an image the dataset does not have is refused, naming the file.
    edited.train[0].0 = "101_ObjectCategories/ant/elsewhere.jpg".into();
    std::fs::write(&first.file, serde_json::to_vec(&edited).unwrap()).unwrap();
    let err = few_shot_with_cache(&d, 4, 2, cache.path()).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("shot_4-seed_2.json") && msg.contains("elsewhere.jpg"),
        "{msg}"
    );

    // Malformed JSON in the saved file is reported with its position.
    std::fs::write(
        &first.file,
        b"{\"dataset\": \"caltech101\",\n \"shots\": 4 \"seed\": 2}",
    )
    .unwrap();
    let err = few_shot_with_cache(&d, 4, 2, cache.path()).unwrap_err();
    assert!(
        matches!(err, mocoop_data::DataError::Json { line: 2, .. }),
        "{err}"
    );
}

#[test]
fn few_shot_falls_back_to_the_cache_when_the_dataset_folder_is_read_only() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let d = dataset(tmp.path());
    // A file where the split_fewshot folder should be makes the folder unwritable (chmod would not
    // stop root).
    std::fs::write(d.dir.join("split_fewshot"), b"in the way").unwrap();
    let fs = few_shot_with_cache(&d, 2, 1, cache.path()).unwrap();
    assert!(fs.file.starts_with(cache.path()), "{}", fs.file.display());
    let note = fs.note.expect("the fallback is announced");
    assert!(note.contains(&fs.file.display().to_string()), "{note}");
    // The cached copy is reused on the next run.
    let again = few_shot_with_cache(&d, 2, 1, cache.path()).unwrap();
    assert!(again.reused);
    assert_eq!(again.file, fs.file);
    assert_eq!(again.dataset, fs.dataset);
}

#[test]
fn few_shot_leaves_imagenet_val_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    imagenet(tmp.path(), 3, 5, 3);
    let d = load_dataset("imagenet", tmp.path()).unwrap();
    let fs = few_shot_with_cache(&d, 2, 1, cache.path()).unwrap();
    assert_eq!(fs.dataset.train.len(), 6);
    assert_eq!(fs.dataset.val, d.test);
    assert_eq!(fs.dataset.test, d.test);
}

#[test]
fn base_and_new_halves() {
    let tmp = tempfile::tempdir().unwrap();
    let d = dataset(tmp.path());
    let base = subsample_classes(&d, Subsample::Base);
    let new = subsample_classes(&d, Subsample::New);
    assert_eq!(
        base.classnames,
        ["ant", "bee", "cat"],
        "⌈5/2⌉ = 3 base classes"
    );
    assert_eq!(new.classnames, ["dog", "eel"]);
    assert_eq!(new.class_ids, [3, 4]);
    assert_eq!(base.class_ids, [0, 1, 2]);
    for half in [&base, &new] {
        assert_eq!(half.all_classnames, CLASSES, "every name stays available");
    }
    assert_eq!(per_class(&new.test), BTreeMap::from([(0, 3), (1, 3)]));
    assert_eq!(
        per_class(&base.train),
        BTreeMap::from([(0, 20), (1, 20), (2, 20)])
    );
    for item in &new.train {
        assert_eq!(new.classnames[item.label], item.classname);
        assert_eq!(d.classnames[new.class_ids[item.label]], item.classname);
    }
    assert_eq!(base.val.len(), 18);
    assert_eq!(subsample_classes(&d, Subsample::All), d);
    assert_eq!("new".parse::<Subsample>(), Ok(Subsample::New));
    assert!("half".parse::<Subsample>().is_err());

    // Few-shot then base (the protocol's order) keeps the drawn images of the base classes.
    let cache = tempfile::tempdir().unwrap();
    let fs = few_shot_with_cache(&d, 4, 1, cache.path()).unwrap();
    let fs_base = subsample_classes(&fs.dataset, Subsample::Base);
    assert_eq!(fs_base.train.len(), 12);
    assert!(fs_base.train.iter().all(|i| i.label < 3));
}

#[test]
fn base_new_on_even_class_counts_and_imagenet_ids() {
    let tmp = tempfile::tempdir().unwrap();
    imagenet(tmp.path(), 4, 1, 1);
    let d = load_dataset("imagenet", tmp.path()).unwrap();
    let new = subsample_classes(&d, Subsample::New);
    assert_eq!(new.classnames, ["great white shark", "tiger shark"]);
    assert_eq!(new.imagenet_ids, Some(vec![2, 3]));
    assert_eq!(new.val, new.test);
    assert_eq!(new.test.iter().map(|i| i.label).collect::<Vec<_>>(), [0, 1]);
    let base = subsample_classes(&d, Subsample::Base);
    assert_eq!(base.num_classes(), 2);
}

#[test]
fn few_shot_subsets_of_an_image_folder_do_not_become_a_class() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    image_folder(tmp.path(), &["cat", "zebra"], 3, (8, 8));
    let d = load_dataset("imagefolder", tmp.path()).unwrap();
    let fs = few_shot_with_cache(&d, 1, 1, cache.path()).unwrap();
    assert!(fs.file.starts_with(tmp.path().join("split_fewshot")));
    let again = load_dataset("imagefolder", tmp.path()).unwrap();
    assert_eq!(again, d);
    assert!(
        few_shot_with_cache(&again, 1, 1, cache.path())
            .unwrap()
            .reused
    );
}
