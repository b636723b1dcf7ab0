//! On Burn's CPU backend, without autodiff, each transformer stack cuts its batch into one part per
//! CPU thread and runs the parts concurrently. This test runs the same inputs in a rayon pool of
//! one thread (one part) and of three (parts of uneven sizes) and requires the same embeddings;
//! `parity.rs` checks the embeddings themselves against open_clip.

use burn::backend::Flex;
use mocoop_test_support::reference::*;

/// Runs `f` where `rayon::current_num_threads()` is `threads`.
fn in_pool<T: Send>(threads: usize, f: impl FnOnce() -> T + Send) -> T {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .expect("a rayon pool")
        .install(f)
}

fn assert_rows_equal(what: &str, one: Vec<Vec<f32>>, three: Vec<Vec<f32>>) {
    let diff = max_abs_diff(&one, &three);
    assert!(diff < 1e-6, "{what}: one part vs three differ by {diff}");
}

#[test]
fn parts_give_the_same_embeddings() {
    let clip = load_quickgelu::<Flex>(&Default::default());
    let reference = reference();
    let device = Default::default();
    let embed = |threads| {
        in_pool(threads, || {
            let (images, texts) = embed_reference_inputs(&clip, &reference, &device);
            (rows(images), rows(texts))
        })
    };
    let (images_one, texts_one) = embed(1);
    let (images_three, texts_three) = embed(3);
    assert!(texts_one.len() >= 3, "enough texts for three parts");
    assert_rows_equal("image embeddings", images_one, images_three);
    assert_rows_equal("text embeddings", texts_one, texts_three);
}
