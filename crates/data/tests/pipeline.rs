//! Augmentation, batching and the multi-threaded loader.

use crate::common::*;
use burn::backend::Flex;
use burn::data::dataloader::batcher::Batcher;
use image::RgbImage;
use mocoop_data::augment::{DEFAULT_RATIO, DEFAULT_SCALE, random_crop_box, resized_crop};
use mocoop_data::{
    BatchPart, CpuBatch, CropBox, ImageBatch, ImageBatcher, ImageItem, Item, Loader, LoaderConfig,
    TrainTransform, Transform, augment_rng,
};

type B = Flex;

fn device() -> burn::tensor::Device<B> {
    Default::default()
}

#[test]
fn augmentation_is_reproducible_per_seed_epoch_index() {
    let image = pattern(60, 45, 3);
    let t = TrainTransform::new(32);
    let a = t.apply(&image, 1, 0, 5);
    assert_eq!(a.len(), 3 * 32 * 32);
    assert_eq!(
        a,
        t.apply(&image, 1, 0, 5),
        "same (seed, epoch, index), same pixels"
    );
    assert_ne!(a, t.apply(&image, 1, 0, 6), "another index");
    assert_ne!(a, t.apply(&image, 1, 1, 5), "another epoch");
    assert_ne!(a, t.apply(&image, 2, 0, 5), "another seed");
    // Values are CLIP-normalised bytes.
    assert!(a.iter().all(|v| (-1.8..=2.2).contains(v)));

    // Crops vary across indices and cover the scale range.
    let boxes: Vec<CropBox> = (0..2000)
        .map(|i| {
            random_crop_box(
                500,
                375,
                DEFAULT_SCALE,
                DEFAULT_RATIO,
                &mut augment_rng(0, 0, i),
            )
        })
        .collect();
    let distinct: std::collections::HashSet<_> = boxes
        .iter()
        .map(|b| (b.top, b.left, b.width, b.height))
        .collect();
    assert!(distinct.len() > 1900);
    let mean_area = boxes
        .iter()
        .map(|b| (b.width * b.height) as f64 / (500.0 * 375.0))
        .sum::<f64>()
        / 2000.0;
    // torchvision's get_params averages 0.433 on a 500x375 image (measured over 200k draws;
    // large crops of extreme aspect ratio do not fit and are redrawn).
    assert!(
        (0.40..0.47).contains(&mean_area),
        "mean area fraction {mean_area}"
    );
}

#[test]
fn flip_mirrors_the_crop() {
    let image = pattern(40, 30, 9);
    let whole = |flip: f64| TrainTransform {
        size: 40,
        scale: (1.0, 1.0),
        ratio: (40.0 / 30.0, 40.0 / 30.0),
        flip_probability: flip,
        ..TrainTransform::new(40)
    };
    // Full-image crop to 40x40, with and without the flip.
    let plain = whole(0.0).apply(&image, 0, 0, 0);
    let flipped = whole(1.0).apply(&image, 0, 0, 0);
    for c in 0..3 {
        for y in 0..40 {
            for x in 0..40 {
                let p = |v: &Vec<f32>, x: usize| v[c * 1600 + y * 40 + x];
                assert_eq!(p(&flipped, x), p(&plain, 39 - x));
            }
        }
    }
}

#[test]
fn resized_crop_matches_a_crop_then_bicubic_resize() {
    // The fast path must agree with cropping first and resizing with Pillow's bicubic filter (the
    // model crate's Pillow-exact resampler), up to rounding.
    let image = pattern(120, 90, 4);
    let crop = CropBox {
        top: 10,
        left: 25,
        height: 60,
        width: 70,
    };
    let fast = resized_crop(&image, crop, 32);
    let cropped: RgbImage = image::imageops::crop_imm(&image, 25, 10, 70, 60).to_image();
    let reference = mocoop_model::preprocess::resize_bicubic(&cropped, 32, 32);
    let worst = fast
        .as_raw()
        .iter()
        .zip(reference.as_raw())
        .map(|(a, b)| (*a as i32 - *b as i32).abs())
        .max()
        .unwrap();
    assert!(worst <= 2, "max difference {worst}");
}

#[test]
fn batcher_stacks_items() {
    let items: Vec<ImageItem> = (0..3)
        .map(|i| ImageItem {
            pixels: vec![i as f32; 3 * 4 * 4],
            label: i * 2,
            index: 10 + i,
        })
        .collect();
    let batch: ImageBatch<B> = ImageBatcher { size: 4 }.batch(items, &device());
    assert_eq!(batch.images.dims(), [3, 3, 4, 4]);
    assert_eq!(batch.labels.dims(), [3]);
    assert_eq!(batch.indices, [10, 11, 12]);
    let labels: Vec<i64> = batch.labels.into_data().convert::<i64>().to_vec().unwrap();
    assert_eq!(labels, [0, 2, 4]);
    let pixels: Vec<f32> = batch.images.into_data().to_vec().unwrap();
    assert_eq!(pixels[3 * 16 * 2], 2.0);
}

/// An image folder of `n` images over three classes, as loader items.
fn items(dir: &std::path::Path, n: usize) -> Vec<Item> {
    let mut out = Vec::new();
    for i in 0..n {
        let path = dir.join(format!("{i:03}.jpg"));
        write_image(&path, 48 + (i as u32 % 5) * 4, 36, i as u32);
        out.push(Item {
            path,
            label: i % 3,
            classname: format!("c{}", i % 3),
            domain: None,
        });
    }
    out
}

fn config(workers: usize) -> LoaderConfig {
    LoaderConfig {
        workers,
        ..LoaderConfig::train(16, 4, 7)
    }
}

#[test]
fn loader_batches_shapes_order_and_worker_independence() {
    let tmp = tempfile::tempdir().unwrap();
    let items = items(tmp.path(), 10);
    let loader = Loader::new("mini", items.clone(), config(2));
    assert_eq!(loader.num_batches(), 3);
    let batches: Vec<ImageBatch<B>> = loader
        .epoch::<B>(0, &device())
        .map(Result::unwrap)
        .collect();
    let shapes: Vec<[usize; 4]> = batches.iter().map(|b| b.images.dims()).collect();
    assert_eq!(shapes, [[4, 3, 16, 16], [4, 3, 16, 16], [2, 3, 16, 16]]);
    let mut seen: Vec<usize> = batches.iter().flat_map(|b| b.indices.clone()).collect();
    let order = seen.clone();
    assert_eq!(order, loader.order(0));
    seen.sort();
    assert_eq!(
        seen,
        (0..10).collect::<Vec<_>>(),
        "every image once per epoch"
    );
    assert_ne!(loader.order(0), loader.order(1), "reshuffled each epoch");
    let labels: Vec<i64> = batches[0]
        .labels
        .clone()
        .into_data()
        .convert::<i64>()
        .to_vec()
        .unwrap();
    assert_eq!(
        labels,
        order[..4]
            .iter()
            .map(|&i| (i % 3) as i64)
            .collect::<Vec<_>>()
    );

    // The same pixels whatever the number of workers, and again on a second pass.
    let host = |workers: usize| -> Vec<CpuBatch> {
        Loader::new("mini", items.clone(), config(workers))
            .epoch_cpu(1)
            .map(Result::unwrap)
            .collect()
    };
    let inline = host(0);
    assert_eq!(inline, host(1));
    assert_eq!(inline, host(3));
    assert_eq!(inline, host(3));
    // Each image's augmentation depends only on (seed, epoch, index).
    let first = &inline[0];
    let index = first.indices[0];
    let image = mocoop_model::preprocess::load_rgb(&items[index].path).unwrap();
    let expected = TrainTransform::new(16).apply(&image, 7, 1, index as u64);
    assert_eq!(&first.pixels[..3 * 16 * 16], expected.as_slice());

    let drop_last = Loader::new(
        "mini",
        items.clone(),
        LoaderConfig {
            drop_last: true,
            ..config(2)
        },
    );
    assert_eq!(drop_last.epoch_cpu(0).count(), 2);
}

#[test]
fn batch_parts_together_are_the_whole_batches() {
    // 10 images in batches of 4 (4, 4, 2) split three ways, as for three devices: parts of
    // 2+1+1, 2+1+1 and 1+1+0 images, which together are each whole batch, pixel for pixel.
    let tmp = tempfile::tempdir().unwrap();
    let items = items(tmp.path(), 10);
    let whole = Loader::new("mini", items.clone(), config(2));
    let part = |index| whole.clone().with_part(BatchPart { index, count: 3 });
    let epochs: Vec<Vec<CpuBatch>> = (0..3)
        .map(|p| part(p).epoch_cpu(1).map(Result::unwrap).collect())
        .collect();
    let sizes: Vec<Vec<usize>> = epochs
        .iter()
        .map(|e| e.iter().map(CpuBatch::len).collect())
        .collect();
    assert_eq!(sizes, [vec![2, 2, 1], vec![1, 1, 1], vec![1, 1]]);
    for (b, batch) in whole.epoch_cpu(1).map(Result::unwrap).enumerate() {
        let parts: Vec<&CpuBatch> = epochs.iter().filter_map(|e| e.get(b)).collect();
        let indices: Vec<usize> = parts.iter().flat_map(|p| p.indices.clone()).collect();
        let pixels: Vec<f32> = parts.iter().flat_map(|p| p.pixels.clone()).collect();
        assert_eq!(indices, batch.indices);
        assert_eq!(pixels, batch.pixels);
        let shares: f32 = parts.iter().map(|p| p.share).sum();
        assert!(
            (shares - 1.0).abs() < 1e-6,
            "batch {b}: shares sum to {shares}"
        );
        assert_eq!(batch.share, 1.0);
    }
    assert_eq!(epochs[0][2].share, 0.5);
    let counted: Vec<(usize, usize)> = (0..3)
        .map(|p| (part(p).images_before(1), part(p).images_before(usize::MAX)))
        .collect();
    assert_eq!(counted, [(2, 5), (1, 3), (1, 2)]);
    assert_eq!(whole.images_before(2), 8);
}

#[test]
fn test_loader_uses_the_evaluation_transform_in_order() {
    let tmp = tempfile::tempdir().unwrap();
    let items = items(tmp.path(), 5);
    let loader = Loader::new("mini", items.clone(), LoaderConfig::test(16, 2));
    let batches: Vec<_> = loader.epoch_cpu(0).map(Result::unwrap).collect();
    assert_eq!(
        batches
            .iter()
            .flat_map(|b| b.indices.clone())
            .collect::<Vec<_>>(),
        [0, 1, 2, 3, 4]
    );
    let image = mocoop_model::preprocess::load_rgb(&items[3].path).unwrap();
    let expected = mocoop_model::preprocess::preprocess(&image, 16);
    assert_eq!(&batches[1].pixels[3 * 256..], expected.as_slice());
    assert_eq!(
        loader.config().transform,
        Transform::Test(16, Default::default())
    );
}

#[test]
fn bad_images_stop_the_epoch_with_their_path() {
    let tmp = tempfile::tempdir().unwrap();
    let mut items = items(tmp.path(), 6);
    let empty = tmp.path().join("empty.jpg");
    std::fs::write(&empty, b"").unwrap();
    items[4].path = empty.clone();
    for workers in [0, 2] {
        let loader = Loader::new(
            "mini",
            items.clone(),
            LoaderConfig {
                shuffle: false,
                ..config(workers)
            },
        );
        let results: Vec<_> = loader.epoch_cpu(0).collect();
        assert_eq!(results.len(), 2, "the epoch ends at the bad batch");
        assert!(results[0].is_ok());
        let err = results[1].as_ref().unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("mini") && msg.contains("empty.jpg"), "{msg}");
        assert_eq!(err.path(), Some(empty.as_path()));
    }
    // A file that does not exist.
    items[4].path = tmp.path().join("gone.jpg");
    let loader = Loader::new("mini", items, config(1));
    let err = loader.epoch_cpu(0).find_map(Result::err).expect("an error");
    assert!(err.to_string().contains("gone.jpg"), "{err}");
}

#[test]
fn skipped_bad_images_are_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let mut items = items(tmp.path(), 9);
    let not_image = tmp.path().join("notes.jpg");
    std::fs::write(&not_image, b"plain text, not an image").unwrap();
    let missing = tmp.path().join("missing.png");
    items[2].path = not_image.clone();
    items[7].path = missing.clone();
    let loader = Loader::new(
        "mini",
        items,
        LoaderConfig {
            skip_bad_images: true,
            ..config(2)
        },
    );
    let mut epoch = loader.epoch::<B>(0, &device());
    let batches: Vec<ImageBatch<B>> = epoch.by_ref().map(Result::unwrap).collect();
    let total: usize = batches.iter().map(|b| b.images.dims()[0]).sum();
    assert_eq!(total, 7);
    assert!(
        batches
            .iter()
            .all(|b| !b.indices.contains(&2) && !b.indices.contains(&7))
    );
    let mut skipped: Vec<_> = epoch
        .skipped()
        .iter()
        .map(|b| (b.index, b.path.clone()))
        .collect();
    skipped.sort();
    assert_eq!(skipped, [(2, not_image), (7, missing)]);
    assert!(epoch.skipped().iter().all(|b| !b.message.is_empty()));
}

#[test]
fn dropping_an_epoch_early_stops_its_workers() {
    let tmp = tempfile::tempdir().unwrap();
    let items = items(tmp.path(), 24);
    let loader = Loader::new(
        "mini",
        items,
        LoaderConfig {
            batch_size: 2,
            ..config(3)
        },
    );
    let mut epoch = loader.epoch_cpu(0);
    assert!(epoch.next().unwrap().is_ok());
    drop(epoch); // must not hang
}
