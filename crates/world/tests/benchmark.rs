//! The benchmark writer produces a CoOp-layout folder that the dataset code reads as written.

use mocoop_data::{Subsample, load_dataset, subsample_classes};
use mocoop_world::{
    BenchSplit, BenchmarkConfig, BenchmarkMeta, Colour, Shape, Style, TEMPLATE_SECTION,
    default_held_out, style_from_path, write_benchmark,
};

#[test]
fn written_benchmark_reads_back_through_the_dataset_code() {
    let dir = tempfile::tempdir().unwrap();
    let config = BenchmarkConfig::new(4).with_counts(5, 2, 5);
    let bench = write_benchmark(dir.path(), &config).unwrap();
    assert_eq!(bench.classnames.len(), 32);
    assert_eq!(bench.num_base, 16);
    assert_eq!(bench.counts, [160, 64, 160]);

    // CoOp's split-file structure, read by the generic list reader.
    let dataset = load_dataset("list", &bench.split_file).unwrap();
    assert_eq!(dataset.train.len(), 160);
    assert_eq!(dataset.val.len(), 64);
    assert_eq!(dataset.test.len(), 160);
    assert_eq!(dataset.classnames, bench.classnames);
    assert_eq!(dataset.classnames[0], "red circle");
    // ... and by its registry name, from the data root, as `mocoop train --dataset shapeworld` reads it.
    let named = load_dataset("shapeworld", dir.path()).unwrap();
    assert_eq!(named.test.len(), 160);
    assert_eq!(named.classnames, bench.classnames);
    for item in &dataset.test {
        assert!(item.path.is_file());
        let image = image::open(&item.path).unwrap();
        assert_eq!((image.width(), image.height()), (32, 32));
    }

    // The protocol's base/new cut is the configured one: base seen in pretraining, new held out.
    let base = subsample_classes(&dataset, Subsample::Base);
    let new = subsample_classes(&dataset, Subsample::New);
    assert_eq!(base.num_classes(), 16);
    assert_eq!(new.num_classes(), 16);
    assert_eq!(base.test.len(), 80);
    let held_out: Vec<String> = default_held_out().into_iter().map(|c| c.name()).collect();
    assert_eq!(new.classnames, held_out);
    assert!(base.classnames.iter().all(|c| !held_out.contains(c)));
    for half in [&base, &new] {
        for colour in Colour::ALL {
            assert_eq!(
                half.classnames
                    .iter()
                    .filter(|c| c.starts_with(colour.name()))
                    .count(),
                2
            );
        }
        for shape in Shape::ALL {
            assert_eq!(
                half.classnames
                    .iter()
                    .filter(|c| c.ends_with(shape.name()))
                    .count(),
                2
            );
        }
    }

    // Styles are balanced within each class and recoverable from the path and the metadata.
    let meta = BenchmarkMeta::read(&bench.dir).unwrap();
    assert_eq!(meta.images.len(), 384);
    assert_eq!(meta.template_section, TEMPLATE_SECTION);
    let styles = meta.styles_by_path();
    for item in &dataset.test {
        let relative = item
            .path
            .strip_prefix(&bench.dir)
            .unwrap()
            .to_str()
            .unwrap();
        assert_eq!(Some(styles[relative]), style_from_path(&item.path));
    }
    for label in 0..32 {
        let mut count = [0; 5];
        for item in dataset.test.iter().filter(|i| i.label == label) {
            count[style_from_path(&item.path).unwrap().index()] += 1;
        }
        assert_eq!(count, [1; 5], "class {label}");
    }

    // In-memory samples are the written images.
    let (scene, image) = config.sample(BenchSplit::Test, 3, 2);
    let path = bench.dir.join(config.relative_path(BenchSplit::Test, 3, 2));
    assert_eq!(
        image::open(&path).unwrap().to_rgb8().as_raw(),
        image.as_raw()
    );
    assert_eq!(scene.style, style_from_path(&path).unwrap());

    // Same seed, same bytes.
    let again = tempfile::tempdir().unwrap();
    write_benchmark(again.path(), &config).unwrap();
    let a = std::fs::read(&path).unwrap();
    let b = std::fs::read(again.path().join("shapeworld").join(config.relative_path(
        BenchSplit::Test,
        3,
        2,
    )))
    .unwrap();
    assert_eq!(a, b);
}

#[test]
fn template_groups_match_the_styles() {
    let table = mocoop_model::templates::TemplateTable::builtin();
    let groups = table.groups(TEMPLATE_SECTION).unwrap();
    assert_eq!(groups.groups().len(), Style::ALL.len());
    let keys = ["photo", "sketch", "pixelated", "noisy", "texture"];
    for (group, key) in groups.groups().iter().zip(keys) {
        assert!(
            group[0].contains(key),
            "{group:?} should be the {key} group"
        );
        assert!(group.len() >= 3);
    }
}

#[test]
fn bad_configurations_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = BenchmarkConfig::new(0).with_counts(1, 1, 1);
    config.new.pop();
    config.new.pop();
    assert!(write_benchmark(dir.path(), &config).is_err());
    let mut config = BenchmarkConfig::new(0).with_counts(1, 1, 1);
    config.new[0] = config.base[0];
    assert!(write_benchmark(dir.path(), &config).is_err());
}

#[test]
fn captions_cover_every_token_of_the_prompts() {
    // Every token of every benchmark prompt occurs in pretraining captions, so the shipped model
    // (whose never-trained token rows are zero) has learnt all of them.
    let tokenizer = mocoop_model::tokenizer::ClipTokenizer::embedded();
    let world = mocoop_world::World::new(mocoop_world::WorldConfig::default());
    let mut seen = std::collections::BTreeSet::new();
    for i in 0..3000 {
        seen.extend(tokenizer.encode(&world.pretraining_pair(0, i).caption));
    }
    let table = mocoop_model::templates::TemplateTable::builtin();
    let groups = table.groups(TEMPLATE_SECTION).unwrap();
    for class in BenchmarkConfig::new(0).classnames() {
        for template in groups.all_templates().chain(["a photo of a {}."]) {
            let prompt = mocoop_model::templates::fill(template, &class);
            for token in tokenizer.encode(&prompt) {
                assert!(
                    seen.contains(&token),
                    "'{}' of '{prompt}' never occurs in a caption",
                    tokenizer.decode(&[token])
                );
            }
        }
    }
}
