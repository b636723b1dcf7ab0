//! Degenerate and hostile split and list files (issue #8): clean errors naming the file, never a
//! panic or an allocation sized by a number in the file.

use mocoop_data::{DataError, load_dataset};

fn write(path: &std::path::Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

#[test]
fn split_file_without_any_entry_is_an_error_not_an_empty_dataset() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("dtd/split_zhou_DescribableTextures.json");
    std::fs::create_dir_all(tmp.path().join("dtd/images")).unwrap();
    write(&path, r#"{"train": [], "val": [], "test": []}"#);
    let err = load_dataset("dtd", tmp.path()).unwrap_err();
    assert!(matches!(err, DataError::Inconsistent { .. }), "{err}");
    assert!(err.to_string().contains("no classes"), "{err}");
    assert!(
        err.to_string()
            .contains("split_zhou_DescribableTextures.json"),
        "{err}"
    );
}

#[test]
fn list_files_without_rows_are_errors() {
    let tmp = tempfile::tempdir().unwrap();
    for (name, text) in [
        ("empty.csv", ""),
        ("header.csv", "path,label\n"),
        ("empty.json", "[]"),
    ] {
        let path = tmp.path().join(name);
        write(&path, text);
        let err = load_dataset("list", &path).unwrap_err();
        assert!(err.to_string().contains(name), "{name}: {err}");
    }
}

#[test]
fn huge_labels_are_refused_without_allocating_for_them() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("dtd/split_zhou_DescribableTextures.json");
    std::fs::create_dir_all(tmp.path().join("dtd/images")).unwrap();
    // The largest label a usize holds: a table indexed by label would need 2^64 entries.
    write(
        &path,
        r#"{"train": [["a.jpg", 18446744073709551615, "a"]], "val": [], "test": []}"#,
    );
    let err = load_dataset("dtd", tmp.path()).unwrap_err();
    assert!(err.to_string().contains("no image has label 0"), "{err}");
    // One more does not even parse.
    write(
        &path,
        r#"{"train": [["a.jpg", 18446744073709551616, "a"]], "val": [], "test": []}"#,
    );
    let err = load_dataset("dtd", tmp.path()).unwrap_err();
    assert!(matches!(err, DataError::Json { .. }), "{err}");
    // In a CSV list the same label is a clean error too.
    let csv = tmp.path().join("list.csv");
    write(&csv, "a.jpg,18446744073709551615,a\n");
    let err = load_dataset("list", &csv).unwrap_err();
    assert!(err.to_string().contains("list.csv"), "{err}");
}
