//! Writes the world's classification benchmark in CoOp's layout.
//!
//! `cargo run -p mocoop-world --example write_benchmark -- <data-root> [seed] [train val test]`
//! writes `<data-root>/shapeworld/` (images, `split_zhou_ShapeWorld.json`, metadata).

use std::path::PathBuf;

use mocoop_world::{BenchmarkConfig, write_benchmark};

fn main() {
    let mut args = std::env::args().skip(1);
    let root = PathBuf::from(args.next().unwrap_or_else(|| "data".into()));
    let seed: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(1);
    let counts: Vec<usize> = args.filter_map(|s| s.parse().ok()).collect();
    let mut config = BenchmarkConfig::new(seed);
    if let [train, val, test] = counts[..] {
        config = config.with_counts(train, val, test);
    }
    let bench = write_benchmark(&root, &config).expect("write the benchmark");
    println!(
        "wrote {} ({} classes, {} base; train/val/test images {:?})",
        bench.split_file.display(),
        bench.classnames.len(),
        bench.num_base,
        bench.counts
    );
    println!(
        "base classes: {}",
        bench.classnames[..bench.num_base].join(", ")
    );
    println!(
        "new classes:  {}",
        bench.classnames[bench.num_base..].join(", ")
    );
}
