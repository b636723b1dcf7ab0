//! One `--recipe official` MoCoOp step on the CPU against the official code's own
//! (`tests/fixtures/official_step.json`, written by `tests/fixtures/make_official.py`, which runs
//! dyabel/mocoop's trainer on Dassl from pinned checkouts): the word-counted contexts, the
//! classification prompts without their final period, the softmax gating target with its
//! gradient, `L_text` over the routed experts only at batch size 1, and the warm-up rate for
//! every parameter group, to 1e-4 in f32. The checks are in `mocoop_test_support::official_step`.

use burn::backend::{Autodiff, Flex};

use mocoop_test_support::official_step::run_official_case;

type B = Autodiff<Flex>;

/// Base-to-new, `{} texture.` first: its EOT is a learnt context vector.
#[test]
fn official_caltech101_step_matches_the_official_code() {
    let _serial = mocoop_test_support::serial_autodiff();
    run_official_case::<B>("caltech101", &Default::default());
}

/// All classes (the text-level loss reads the classification prompts), `a photo of a  {}.`
/// first: the double space replaces each class name's first token with a context vector.
#[test]
fn official_food101_step_matches_the_official_code() {
    let _serial = mocoop_test_support::serial_autodiff();
    run_official_case::<B>("food101", &Default::default());
}

/// DTD's templates with one-word class names.
#[test]
fn official_dtd_step_matches_the_official_code() {
    let _serial = mocoop_test_support::serial_autodiff();
    run_official_case::<B>("dtd", &Default::default());
}

/// Batch size 1 (ImageNet's): `L_text` over the two routed experts only.
#[test]
fn official_batch_of_one_step_matches_the_official_code() {
    let _serial = mocoop_test_support::serial_autodiff();
    run_official_case::<B>("batch1", &Default::default());
}
