//! Every dataset layout, read from a miniature copy: counts, labels, class names, and the errors
//! for bad input.

use std::path::Path;

use crate::common::*;
use mocoop_data::{
    BENCHMARK, CheckOptions, DATASETS, DOMAIN_TARGETS, DataError, DecodeCheck, Split,
    check_dataset, check_dataset_with, load_dataset,
};
use mocoop_model::templates::TemplateTable;

fn names(d: &mocoop_data::Dataset) -> Vec<&str> {
    d.classnames.iter().map(String::as_str).collect()
}

fn labels(items: &[mocoop_data::Item]) -> Vec<usize> {
    items.iter().map(|i| i.label).collect()
}

#[test]
fn table_lists_every_dataset_with_coop_folders() {
    let got: Vec<(&str, &str)> = DATASETS.iter().map(|d| (d.name, d.dir)).collect();
    assert_eq!(
        got,
        [
            ("imagenet", "imagenet"),
            ("caltech101", "caltech-101"),
            ("oxford_pets", "oxford_pets"),
            ("stanford_cars", "stanford_cars"),
            ("oxford_flowers", "oxford_flowers"),
            ("food101", "food-101"),
            ("fgvc_aircraft", "fgvc_aircraft"),
            ("sun397", "sun397"),
            ("dtd", "dtd"),
            ("eurosat", "eurosat"),
            ("ucf101", "ucf101"),
            ("imagenet_v2", "imagenetv2"),
            ("imagenet_sketch", "imagenet-sketch"),
            ("imagenet_a", "imagenet-adversarial"),
            ("imagenet_r", "imagenet-rendition"),
            ("imagefolder", ""),
            ("list", ""),
            ("shapeworld", "shapeworld"),
        ]
    );
    // The protocols' lists name registered datasets: the benchmark, then the domain targets.
    let names: Vec<&str> = DATASETS.iter().map(|d| d.name).collect();
    assert_eq!(names[..11], BENCHMARK);
    let targets: Vec<&str> = DATASETS
        .iter()
        .filter(|d| d.domain_shift)
        .map(|d| d.name)
        .collect();
    assert_eq!(targets, DOMAIN_TARGETS);
}

#[test]
fn every_benchmark_dataset_and_domain_target_has_template_groups() {
    let table = TemplateTable::builtin();
    for name in BENCHMARK.iter().chain(&DOMAIN_TARGETS) {
        let groups = table.groups(name).unwrap();
        assert!(groups.groups().len() >= 4, "{name}");
    }
}

#[test]
fn imagenet_reads_class_folders_and_classnames_txt() {
    let tmp = tempfile::tempdir().unwrap();
    let base = imagenet(tmp.path(), 3, 2, 1);
    // Hidden files are ignored, as Dassl's listdir_nohidden does.
    write(&base.join("images/train/n01440764/.DS_Store"), "x");
    let d = load_dataset("imagenet", tmp.path()).unwrap();
    assert_eq!(names(&d), ["tench", "goldfish", "great white shark"]);
    assert_eq!(d.train.len(), 6);
    assert_eq!(d.test.len(), 3);
    assert_eq!(d.val, d.test, "ImageNet's val is its test set");
    assert!(d.val_is_test);
    assert_eq!(labels(&d.train), [0, 0, 1, 1, 2, 2]);
    assert_eq!(d.train[2].classname, "goldfish");
    assert!(
        d.train[2]
            .path
            .ends_with("images/train/n01443537/n_train_0.JPEG")
    );
    assert_eq!(d.imagenet_ids, Some(vec![0, 1, 2]));
    assert_eq!(d.dir, base);
    // The dataset's own folder is accepted as root too.
    assert_eq!(load_dataset("imagenet", &base).unwrap().train, d.train);
}

#[test]
fn caltech101_renames_and_labels() {
    let tmp = tempfile::tempdir().unwrap();
    // The published split file already holds `face`; a regenerated one may hold the raw `Faces`.
    caltech(
        tmp.path(),
        &[
            Class {
                folder: "accordion",
                json_name: "accordion",
            },
            Class {
                folder: "airplanes",
                json_name: "airplanes",
            },
            Class {
                folder: "Faces",
                json_name: "face",
            },
            Class {
                folder: "Leopards",
                json_name: "Leopards",
            },
            Class {
                folder: "yin_yang",
                json_name: "yin_yang",
            },
        ],
        (3, 2, 1),
    );
    let d = load_dataset("caltech101", tmp.path()).unwrap();
    assert_eq!(
        names(&d),
        ["accordion", "airplane", "face", "leopard", "yin yang"]
    );
    assert_eq!((d.train.len(), d.val.len(), d.test.len()), (15, 10, 5));
    assert_eq!(labels(&d.test), [0, 1, 2, 3, 4]);
    assert!(
        d.test[2]
            .path
            .ends_with("caltech-101/101_ObjectCategories/Faces/image_test_0000.jpg")
    );
    assert!(!d.val_is_test);
    assert_eq!(d.imagenet_ids, None);
}

#[test]
fn oxford_pets_flat_images_and_underscores() {
    let tmp = tempfile::tempdir().unwrap();
    split_dataset(
        tmp.path(),
        "oxford_pets",
        "images",
        "split_zhou_OxfordPets.json",
        &[
            Class {
                folder: "Abyssinian",
                json_name: "abyssinian",
            },
            Class {
                folder: "american_bulldog",
                json_name: "american_bulldog",
            },
        ],
        (2, 1, 2),
        &|folder, _, split, i| format!("{folder}_{split}{i}.jpg"),
    );
    let d = load_dataset("oxford_pets", tmp.path()).unwrap();
    assert_eq!(names(&d), ["abyssinian", "american bulldog"]);
    assert_eq!(d.test.len(), 4);
    assert!(
        d.train[2]
            .path
            .ends_with("oxford_pets/images/american_bulldog_train0.jpg")
    );
}

#[test]
fn stanford_cars_paths_are_relative_to_the_dataset_folder() {
    let tmp = tempfile::tempdir().unwrap();
    split_dataset(
        tmp.path(),
        "stanford_cars",
        "",
        "split_zhou_StanfordCars.json",
        &[
            Class {
                folder: "",
                json_name: "2000 AM General Hummer SUV",
            },
            Class {
                folder: "",
                json_name: "2012 Acura RL Sedan",
            },
        ],
        (2, 1, 1),
        &|_, label, split, i| {
            let dir = if split == "test" {
                "cars_test"
            } else {
                "cars_train"
            };
            format!(
                "{dir}/{:05}.jpg",
                label * 100 + i + if split == "val" { 50 } else { 0 }
            )
        },
    );
    let d = load_dataset("stanford_cars", tmp.path()).unwrap();
    assert_eq!(
        names(&d),
        ["2000 AM General Hummer SUV", "2012 Acura RL Sedan"]
    );
    assert!(
        d.test[1]
            .path
            .ends_with("stanford_cars/cars_test/00100.jpg")
    );
}

#[test]
fn flowers_food_sun_dtd_ucf_read_their_split_files() {
    let tmp = tempfile::tempdir().unwrap();
    let r = tmp.path();
    split_dataset(
        r,
        "oxford_flowers",
        "jpg",
        "split_zhou_OxfordFlowers.json",
        &[
            Class {
                folder: "",
                json_name: "pink primrose",
            },
            Class {
                folder: "",
                json_name: "hard-leaved pocket orchid",
            },
        ],
        (2, 1, 1),
        &|_, label, split, i| format!("image_{:05}.jpg", label * 10 + i + split.len() * 100),
    );
    split_dataset(
        r,
        "food-101",
        "images",
        "split_zhou_Food101.json",
        &[
            Class {
                folder: "apple_pie",
                json_name: "apple_pie",
            },
            Class {
                folder: "baby_back_ribs",
                json_name: "baby_back_ribs",
            },
        ],
        (1, 1, 1),
        &|folder, _, split, i| format!("{folder}/{}{i}.jpg", split.len() * 1000),
    );
    split_dataset(
        r,
        "sun397",
        "SUN397",
        "split_zhou_SUN397.json",
        &[
            Class {
                folder: "a/abbey",
                json_name: "abbey",
            },
            Class {
                folder: "a/airplane_cabin",
                json_name: "airplane_cabin",
            },
            Class {
                folder: "b/bakery/shop",
                json_name: "shop bakery",
            },
        ],
        (1, 1, 1),
        &|folder, _, split, i| format!("{folder}/sun_{split}{i}.jpg"),
    );
    split_dataset(
        r,
        "dtd",
        "images",
        "split_zhou_DescribableTextures.json",
        &[
            Class {
                folder: "banded",
                json_name: "banded",
            },
            Class {
                folder: "blotchy",
                json_name: "blotchy",
            },
        ],
        (2, 2, 2),
        &|folder, _, split, i| format!("{folder}/{folder}_{split}_{i:04}.jpg"),
    );
    split_dataset(
        r,
        "ucf101",
        "UCF-101-midframes",
        "split_zhou_UCF101.json",
        &[
            Class {
                folder: "Apply_Eye_Makeup",
                json_name: "Apply_Eye_Makeup",
            },
            Class {
                folder: "Apply_Lipstick",
                json_name: "Apply_Lipstick",
            },
        ],
        (1, 1, 1),
        &|folder, _, split, i| {
            format!(
                "{folder}/v_{}_g0{i}_c01_{split}.jpg",
                folder.replace('_', "")
            )
        },
    );

    let flowers = load_dataset("oxford_flowers", r).unwrap();
    assert_eq!(
        names(&flowers),
        ["pink primrose", "hard-leaved pocket orchid"]
    );
    assert!(
        flowers.train[0]
            .path
            .starts_with(r.join("oxford_flowers/jpg"))
    );

    let food = load_dataset("food101", r).unwrap();
    assert_eq!(names(&food), ["apple pie", "baby back ribs"]);

    let sun = load_dataset("sun397", r).unwrap();
    assert_eq!(names(&sun), ["abbey", "airplane cabin", "shop bakery"]);
    assert!(
        sun.test[2]
            .path
            .ends_with("sun397/SUN397/b/bakery/shop/sun_test0.jpg")
    );

    let dtd = load_dataset("dtd", r).unwrap();
    assert_eq!((dtd.train.len(), dtd.val.len(), dtd.test.len()), (4, 4, 4));
    assert_eq!(labels(&dtd.val), [0, 0, 1, 1]);

    let ucf = load_dataset("ucf101", r).unwrap();
    assert_eq!(names(&ucf), ["Apply Eye Makeup", "Apply Lipstick"]);
}

#[test]
fn eurosat_uses_the_descriptive_class_names() {
    let tmp = tempfile::tempdir().unwrap();
    split_dataset(
        tmp.path(),
        "eurosat",
        "2750",
        "split_zhou_EuroSAT.json",
        &[
            Class {
                folder: "AnnualCrop",
                json_name: "AnnualCrop",
            },
            Class {
                folder: "Forest",
                json_name: "Forest",
            },
            Class {
                folder: "HerbaceousVegetation",
                json_name: "Herbaceous Vegetation Land",
            },
            Class {
                folder: "Highway",
                json_name: "Highway",
            },
            Class {
                folder: "SeaLake",
                json_name: "SeaLake",
            },
        ],
        (1, 1, 1),
        &|folder, _, split, i| format!("{folder}/{folder}_{}.jpg", split.len() * 10 + i),
    );
    let d = load_dataset("eurosat", tmp.path()).unwrap();
    assert_eq!(
        names(&d),
        [
            "Annual Crop Land",
            "Forest",
            "Herbaceous Vegetation Land",
            "Highway or Road",
            "Sea or Lake"
        ]
    );
    assert_eq!(d.train[0].classname, "Annual Crop Land");
}

#[test]
fn fgvc_aircraft_reads_variant_lists() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("fgvc_aircraft");
    write(&base.join("variants.txt"), "707-320\n727-200\nF/A-18\n");
    let splits = [
        (
            "train",
            vec![
                ("1025794", "707-320"),
                ("1340192", "F/A-18"),
                ("0056978", "727-200"),
            ],
        ),
        ("val", vec![("1917930", "F/A-18")]),
        ("test", vec![("2233441", "727-200"), ("0123456", "707-320")]),
    ];
    let mut seed = 0;
    for (split, rows) in &splits {
        let mut text = String::new();
        for (id, variant) in rows {
            text.push_str(&format!("{id} {variant}\n"));
            seed += 1;
            write_image(&base.join(format!("images/{id}.jpg")), 10, 8, seed);
        }
        write(&base.join(format!("images_variant_{split}.txt")), &text);
    }
    let d = load_dataset("fgvc_aircraft", tmp.path()).unwrap();
    assert_eq!(names(&d), ["707-320", "727-200", "F/A-18"]);
    assert_eq!(labels(&d.train), [0, 2, 1]);
    assert_eq!(labels(&d.test), [1, 0]);
    assert!(d.val[0].path.ends_with("fgvc_aircraft/images/1917930.jpg"));
    assert_eq!(d.val[0].classname, "F/A-18");

    // An unknown variant is reported with file and line.
    write(
        &base.join("images_variant_val.txt"),
        "1917930 F/A-18\n1917931 Spitfire\n",
    );
    let err = load_dataset("fgvc_aircraft", tmp.path()).unwrap_err();
    assert!(matches!(&err, DataError::Format { line: 2, .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("fgvc_aircraft") && msg.contains("images_variant_val.txt"),
        "{msg}"
    );
}

#[test]
fn imagenet_v2_numbered_folders() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("imagenetv2");
    write(
        &base.join("classnames.txt"),
        &classnames_txt(&IMAGENET_HEAD[..4]),
    );
    let images = base.join("imagenetv2-matched-frequency-format-val");
    for label in 0..4 {
        for i in 0..2 {
            write_image(
                &images.join(format!("{label}/{:040x}.jpeg", label * 2 + i)),
                8,
                8,
                i as u32,
            );
        }
    }
    let d = load_dataset("imagenet_v2", tmp.path()).unwrap();
    assert_eq!(
        names(&d),
        ["tench", "goldfish", "great white shark", "tiger shark"]
    );
    assert_eq!(labels(&d.test), [0, 0, 1, 1, 2, 2, 3, 3]);
    assert_eq!(d.test[3].domain.as_deref(), Some("imagenet_v2"));
    assert!(d.val.is_empty());
}

#[test]
fn imagenet_sketch_sorted_wnid_folders() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("imagenet-sketch");
    write(
        &base.join("classnames.txt"),
        &classnames_txt(&IMAGENET_HEAD[..5]),
    );
    let wnids: Vec<&str> = IMAGENET_HEAD[..5].iter().rev().map(|c| c.0).collect();
    class_folders(&base.join("images"), &wnids, 2, "sketch_");
    let d = load_dataset("imagenet_sketch", tmp.path()).unwrap();
    assert_eq!(names(&d)[4], "hammerhead shark");
    assert_eq!(d.test.len(), 10);
    assert_eq!(d.imagenet_ids, Some(vec![0, 1, 2, 3, 4]));
}

#[test]
fn imagenet_a_and_r_map_their_subsets_into_imagenet() {
    let tmp = tempfile::tempdir().unwrap();
    // ImageNet-A's first classes are ImageNet labels 6, 11, 13, 15, 17, 22; ImageNet-R's first are
    // 1, 2, 4, 6, 8, 9, 11, 13, 22.
    for (dir, image_dir, ids) in [
        (
            "imagenet-adversarial",
            "imagenet-a",
            vec![6, 11, 13, 15, 17, 22],
        ),
        (
            "imagenet-rendition",
            "imagenet-r",
            vec![1, 2, 4, 6, 8, 9, 11, 13, 22],
        ),
    ] {
        let base = tmp.path().join(dir);
        write(&base.join("classnames.txt"), &classnames_txt(IMAGENET_HEAD));
        let wnids: Vec<&str> = ids.iter().map(|&i| IMAGENET_HEAD[i].0).collect();
        class_folders(&base.join(image_dir), &wnids, 2, "img_");
        write(
            &base.join(image_dir).join("README.txt"),
            "ImageNet subset\n",
        );
    }
    let a = load_dataset("imagenet_a", tmp.path()).unwrap();
    assert_eq!(a.num_classes(), 6);
    assert_eq!(
        names(&a),
        [
            "stingray",
            "goldfinch",
            "junco",
            "American robin",
            "jay",
            "bald eagle"
        ]
    );
    assert_eq!(labels(&a.test), [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5]);
    assert_eq!(a.imagenet_ids, Some(vec![6, 11, 13, 15, 17, 22]));
    assert_eq!(a.train, a.test);

    let r = load_dataset("imagenet_r", tmp.path()).unwrap();
    assert_eq!(r.imagenet_ids, Some(vec![1, 2, 4, 6, 8, 9, 11, 13, 22]));
    assert_eq!(r.classnames[3], "stingray");
    // Each item's label maps to its ImageNet class, whose name is the item's class name.
    let ids = r.imagenet_ids.as_ref().unwrap();
    for item in &r.test {
        assert_eq!(IMAGENET_HEAD[ids[item.label]].1, item.classname);
    }

    // A folder missing from classnames.txt is an error naming the file.
    class_folders(
        &tmp.path().join("imagenet-rendition/imagenet-r"),
        &["n99999999"],
        1,
        "x",
    );
    let err = load_dataset("imagenet_r", tmp.path()).unwrap_err();
    assert!(
        err.to_string().contains("n99999999") && err.to_string().contains("classnames.txt"),
        "{err}"
    );
}

#[test]
fn image_folder_flat_and_split() {
    let tmp = tempfile::tempdir().unwrap();
    let flat = tmp.path().join("flat");
    image_folder(&flat, &["golden_retriever", "cat", "zebra"], 2, (8, 8));
    write(
        &flat.join("cat/notes.txt"),
        "not an image, ignored by extension",
    );
    let d = load_dataset("imagefolder", &flat).unwrap();
    assert_eq!(names(&d), ["cat", "golden retriever", "zebra"]);
    assert_eq!(d.test.len(), 6);
    assert_eq!(d.train, d.test);

    let split = tmp.path().join("split");
    image_folder(&split.join("train"), &["a", "b"], 3, (8, 8));
    image_folder(&split.join("val"), &["b"], 1, (8, 8));
    image_folder(&split.join("test"), &["a", "b"], 2, (8, 8));
    let d = load_dataset("imagefolder", &split).unwrap();
    assert_eq!((d.train.len(), d.val.len(), d.test.len()), (6, 1, 4));
    assert_eq!(labels(&d.val), [1], "val's folder `b` keeps train's label");

    image_folder(&split.join("test"), &["c"], 1, (8, 8));
    let err = load_dataset("imagefolder", &split).unwrap_err();
    assert!(matches!(err, DataError::Inconsistent { .. }), "{err}");
}

#[test]
fn list_files_csv_and_json() {
    let tmp = tempfile::tempdir().unwrap();
    let r = tmp.path();
    for i in 0..4 {
        write_image(&r.join(format!("imgs/{i}.png")), 8, 8, i);
    }
    write(
        &r.join("data.csv"),
        "path,label,classname\nimgs/0.png,0,red_fox\nimgs/1.png,1\nimgs/2.png,1,arctic fox\n",
    );
    let d = load_dataset("list", &r.join("data.csv")).unwrap();
    assert_eq!(names(&d), ["red fox", "arctic fox"]);
    assert_eq!(d.train.len(), 3);
    assert_eq!(
        d.train[1].classname, "arctic fox",
        "name taken from another row"
    );
    assert_eq!(d.train[0].path, r.join("imgs/0.png"));

    // A folder of per-split JSON lists, names from classnames.txt.
    let lists = r.join("lists");
    write(
        &lists.join("train.json"),
        r#"[["../imgs/0.png", 0], {"path": "../imgs/1.png", "label": 1}]"#,
    );
    write(
        &lists.join("test.json"),
        r#"[["../imgs/2.png", 1], ["../imgs/3.png", 0]]"#,
    );
    write(&lists.join("classnames.txt"), "dog\ncat\n");
    let d = load_dataset("list", &lists).unwrap();
    assert_eq!(names(&d), ["dog", "cat"]);
    assert_eq!((d.train.len(), d.val.len(), d.test.len()), (2, 0, 2));

    // One JSON in CoOp's split structure.
    write(
        &r.join("split.json"),
        r#"{"train": [["imgs/0.png", 0, "x"]], "val": [["imgs/1.png", 1, "y"]], "test": [["imgs/2.png", 1, "y"]]}"#,
    );
    let d = load_dataset("list", &r.join("split.json")).unwrap();
    assert_eq!((d.train.len(), d.val.len(), d.test.len()), (1, 1, 1));

    // A bad label is reported with its line.
    write(&r.join("bad.csv"), "imgs/0.png,0,a\nimgs/1.png,one,b\n");
    let err = load_dataset("list", &r.join("bad.csv")).unwrap_err();
    assert!(matches!(err, DataError::Format { line: 2, .. }), "{err}");

    // Label gaps would shift every later class name.
    write(&r.join("gap.csv"), "imgs/0.png,0,a\nimgs/1.png,2,c\n");
    let err = load_dataset("list", &r.join("gap.csv")).unwrap_err();
    assert!(err.to_string().contains("no image has label 1"), "{err}");
}

fn assert_names(err: &DataError, dataset: &str, file: &str) {
    let msg = err.to_string();
    assert!(
        msg.contains(dataset),
        "message should name the dataset: {msg}"
    );
    assert!(msg.contains(file), "message should name {file}: {msg}");
}

#[test]
fn missing_root_and_missing_split_file() {
    let tmp = tempfile::tempdir().unwrap();
    let err = load_dataset("dtd", &tmp.path().join("nowhere")).unwrap_err();
    assert!(matches!(err, DataError::MissingRoot { .. }));
    assert_names(&err, "dtd", "nowhere");

    let err = load_dataset("dtd", tmp.path()).unwrap_err();
    assert!(matches!(err, DataError::MissingRoot { .. }));
    assert_names(&err, "dtd", "dtd");

    std::fs::create_dir_all(tmp.path().join("dtd/images")).unwrap();
    let err = load_dataset("dtd", tmp.path()).unwrap_err();
    assert!(matches!(err, DataError::MissingFile { .. }), "{err}");
    assert_names(&err, "dtd", "split_zhou_DescribableTextures.json");

    let err = load_dataset("imagenet_a", tmp.path()).unwrap_err();
    assert_names(&err, "imagenet_a", "imagenet-adversarial");

    let err = load_dataset("cifar10", tmp.path()).unwrap_err();
    assert!(matches!(err, DataError::UnknownDataset { .. }));
    assert!(err.to_string().contains("caltech101"));
}

#[test]
fn malformed_json_reports_line_and_column() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("eurosat");
    std::fs::create_dir_all(base.join("2750")).unwrap();
    let path = base.join("split_zhou_EuroSAT.json");
    write(
        &path,
        "{\n  \"train\": [\n    [\"Forest/Forest_1.jpg\", 1, \"Forest\"]\n    [\"x.jpg\", 0, \"y\"]\n  ]\n}\n",
    );
    let err = load_dataset("eurosat", tmp.path()).unwrap_err();
    match &err {
        DataError::Json { line, column, .. } => assert_eq!((*line, *column), (4, 5)),
        other => panic!("expected a JSON error, got {other}"),
    }
    assert_names(&err, "eurosat", "split_zhou_EuroSAT.json");
    assert!(err.to_string().contains("line 4, column 5"), "{err}");

    // Valid JSON with the wrong structure: an entry with two fields.
    write(
        &path,
        "{\"train\": [[\"a.jpg\", 0]], \"val\": [], \"test\": []}",
    );
    let err = load_dataset("eurosat", tmp.path()).unwrap_err();
    assert!(matches!(err, DataError::Json { line: 1, .. }), "{err}");

    // A missing split.
    write(&path, "{\"train\": [], \"val\": []}");
    let err = load_dataset("eurosat", tmp.path()).unwrap_err();
    assert!(err.to_string().contains("test"), "{err}");
}

#[test]
fn listed_image_that_does_not_exist() {
    let tmp = tempfile::tempdir().unwrap();
    let base = caltech(
        tmp.path(),
        &[Class {
            folder: "ant",
            json_name: "ant",
        }],
        (1, 1, 1),
    );
    let gone = base.join("101_ObjectCategories/ant/image_val_0000.jpg");
    std::fs::remove_file(&gone).unwrap();
    let err = load_dataset("caltech101", tmp.path()).unwrap_err();
    match &err {
        DataError::MissingImage {
            path, listed_in, ..
        } => {
            assert_eq!(path, &gone);
            assert!(listed_in.ends_with("split_zhou_Caltech101.json"));
        }
        other => panic!("expected MissingImage, got {other}"),
    }
    assert_names(&err, "caltech101", "image_val_0000.jpg");
}

#[test]
fn inconsistent_class_names_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("dtd");
    write_image(&base.join("images/a/1.jpg"), 8, 8, 1);
    write_image(&base.join("images/a/2.jpg"), 8, 8, 2);
    write(
        &base.join("split_zhou_DescribableTextures.json"),
        r#"{"train": [["a/1.jpg", 0, "banded"], ["a/2.jpg", 0, "blotchy"]], "val": [], "test": []}"#,
    );
    let err = load_dataset("dtd", tmp.path()).unwrap_err();
    assert!(err.to_string().contains("two class names"), "{err}");
}

fn file_problem_paths(list: &[mocoop_data::FileProblem]) -> Vec<&Path> {
    list.iter().map(|p| p.path.as_path()).collect()
}

#[test]
fn check_reports_counts_and_every_bad_file() {
    let tmp = tempfile::tempdir().unwrap();
    let base = caltech(
        tmp.path(),
        &[
            Class {
                folder: "ant",
                json_name: "ant",
            },
            Class {
                folder: "bee",
                json_name: "bee",
            },
        ],
        (3, 2, 1),
    );
    let report = check_dataset("caltech101", tmp.path());
    assert!(report.is_ok(), "{report}");
    assert_eq!(report.checked, 12);
    let train = &report.splits[0];
    assert_eq!(
        (train.split, train.total, train.per_class.clone()),
        (Split::Train, 6, vec![3, 3])
    );
    let text = report.to_string();
    assert!(text.contains("Result: OK"), "{text}");
    assert!(text.contains("full dataset: 100"), "{text}");

    let images = base.join("101_ObjectCategories");
    let missing = images.join("ant/image_train_0001.jpg");
    let empty = images.join("bee/image_val_0000.jpg");
    let text_file = images.join("bee/image_test_0000.jpg");
    std::fs::remove_file(&missing).unwrap();
    std::fs::write(&empty, b"").unwrap();
    std::fs::write(&text_file, b"this is not a JPEG").unwrap();
    let report = check_dataset("caltech101", tmp.path());
    assert!(!report.is_ok());
    assert_eq!(file_problem_paths(&report.missing), [missing.as_path()]);
    let mut bad = file_problem_paths(&report.undecodable);
    bad.sort();
    let mut expected = [empty.as_path(), text_file.as_path()];
    expected.sort();
    assert_eq!(bad, expected);
    let text = report.to_string();
    for p in [&missing, &empty, &text_file] {
        assert!(text.contains(&p.display().to_string()), "{text}");
    }
    assert!(text.contains("split_zhou_Caltech101.json"), "{text}");
    assert!(text.contains("empty file"), "{text}");
    assert!(
        text.contains("Result: FAILED (1 missing, 2 undecodable)"),
        "{text}"
    );

    // A truncated JPEG passes the header check but not a full decode.
    let good = images.join("ant/image_train_0000.jpg");
    let bytes = std::fs::read(&good).unwrap();
    std::fs::write(&good, &bytes[..bytes.len() / 2]).unwrap();
    let full = CheckOptions {
        decode: DecodeCheck::Full,
        threads: 2,
    };
    let report = check_dataset_with("caltech101", tmp.path(), &full);
    assert!(
        file_problem_paths(&report.undecodable).contains(&good.as_path()),
        "{report}"
    );
}

#[test]
fn check_explains_a_dataset_that_cannot_be_read() {
    let tmp = tempfile::tempdir().unwrap();
    let report = check_dataset("oxford_pets", tmp.path());
    assert!(!report.is_ok());
    let text = report.to_string();
    assert!(
        text.contains("Cannot read the dataset") && text.contains("oxford_pets"),
        "{text}"
    );
    assert!(text.contains("Result: FAILED"), "{text}");
}
