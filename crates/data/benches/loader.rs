//! Loader throughput: images/s of decode + training augmentation + batching (into Burn tensors on
//! the CPU backend) with W worker threads, on photo-sized JPEGs. `loader_reference.py` measures
//! PIL + torchvision's `DataLoader` on the same files; `run_loader_bench.sh` runs both.
//!
//! ```text
//! loader --generate --dir DIR [--images 500]        write DIR/img_0000.jpg … (500x375, quality 90)
//! loader --dir DIR [--workers 2] [--batch 32] [--size 224] [--epochs 4]
//! ```

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::backend::Flex;
use image::{Rgb, RgbImage};
use mocoop_data::{Item, Loader, LoaderConfig};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

struct Args {
    dir: Option<PathBuf>,
    generate: bool,
    images: usize,
    workers: usize,
    batch: usize,
    size: u32,
    epochs: usize,
}

fn parse() -> Args {
    let mut args = Args {
        dir: None,
        generate: false,
        images: 500,
        workers: 2,
        batch: 32,
        size: 224,
        epochs: 4,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{a} needs a value"));
        match a.as_str() {
            "--dir" => args.dir = Some(PathBuf::from(value())),
            "--generate" => args.generate = true,
            "--images" => args.images = value().parse().expect("--images N"),
            "--workers" => args.workers = value().parse().expect("--workers W"),
            "--batch" => args.batch = value().parse().expect("--batch B"),
            "--size" => args.size = value().parse().expect("--size S"),
            "--epochs" => args.epochs = value().parse().expect("--epochs E"),
            "--bench" => {} // added by `cargo bench`
            other => panic!("unknown argument {other}"),
        }
    }
    args
}

/// A photo-like 500x375 image: smooth shapes plus sensor-like noise, so that the JPEG has a
/// realistic size (about 100 kB at quality 90) and decoding cost.
fn photo(seed: u64) -> RgbImage {
    let mut rng = StdRng::seed_from_u64(seed);
    let (fx, fy, phase): (f32, f32, f32) = (
        rng.random_range(0.01..0.05),
        rng.random_range(0.01..0.05),
        rng.random_range(0.0..6.3),
    );
    let base: [f32; 3] = [
        rng.random_range(60.0..190.0),
        rng.random_range(60.0..190.0),
        rng.random_range(60.0..190.0),
    ];
    RgbImage::from_fn(500, 375, |x, y| {
        let (xf, yf) = (x as f32, y as f32);
        let wave = (xf * fx + phase).sin() * (yf * fy).cos() * 50.0;
        let stripes = ((xf + yf) * 0.15).sin() * 12.0;
        let mut px = [0u8; 3];
        for c in 0..3 {
            let noise: f32 = rng.random_range(-14.0..14.0);
            px[c] = (base[c] + wave * (c as f32 - 1.0) + stripes + noise).clamp(0.0, 255.0) as u8;
        }
        Rgb(px)
    })
}

fn generate(dir: &Path, n: usize) {
    std::fs::create_dir_all(dir).expect("create the image folder");
    let mut bytes = 0u64;
    for i in 0..n {
        let path = dir.join(format!("img_{i:04}.jpg"));
        let file = std::io::BufWriter::new(std::fs::File::create(&path).expect("create image"));
        let mut encoder = image::codecs::jpeg::JpegEncoder::new_with_quality(file, 90);
        encoder.encode_image(&photo(i as u64)).expect("encode JPEG");
        drop(encoder);
        bytes += std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    }
    println!(
        "generated {n} JPEGs (500x375, quality 90, mean {:.0} kB) in {}",
        bytes as f64 / n.max(1) as f64 / 1000.0,
        dir.display()
    );
}

fn main() {
    let args = parse();
    let dir = args
        .dir
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join("mocoop-loader-bench"));
    if args.generate {
        generate(&dir, args.images);
        return;
    }
    let list = || -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .map(|d| d.map(|e| e.expect("dir entry").path()).collect())
            .unwrap_or_default();
        files.retain(|p| p.extension().is_some_and(|e| e == "jpg"));
        files.sort();
        files
    };
    let mut files = list();
    if files.is_empty() {
        generate(&dir, args.images);
        files = list();
    }
    let items: Vec<Item> = files
        .iter()
        .enumerate()
        .map(|(i, path)| Item {
            path: path.clone(),
            label: i % 10,
            classname: format!("class {}", i % 10),
            domain: None,
        })
        .collect();
    let n = items.len();
    let config = LoaderConfig {
        workers: args.workers,
        ..LoaderConfig::train(args.size, args.batch, 1)
    };
    let loader = Loader::new("bench", items, config);
    let device = Default::default();
    let mut rates = Vec::new();
    for epoch in 0..args.epochs {
        let start = Instant::now();
        let mut seen = 0;
        for batch in loader.epoch::<Flex>(epoch as u64, &device) {
            let batch = batch.expect("bench images decode");
            seen += batch.images.dims()[0];
        }
        assert_eq!(seen, n);
        let rate = n as f64 / start.elapsed().as_secs_f64();
        println!("rust epoch {epoch}: {rate:.1} images/s");
        rates.push(rate);
    }
    rates.sort_by(f64::total_cmp);
    let mid = rates.len() / 2;
    let median = if rates.len() % 2 == 0 {
        (rates[mid - 1] + rates[mid]) / 2.0
    } else {
        rates[mid]
    };
    println!(
        "rust: {median:.1} images/s (median of {} epochs; {n} images, {} workers, batch {}, {}px)",
        rates.len(),
        args.workers,
        args.batch,
        args.size
    );
}
