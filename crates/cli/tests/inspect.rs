//! `mocoop inspect` on a tiny CoOp run: an untrained context's nearest words are the words of its
//! template, the facts of the run come back, and bad input is a clear error.

use crate::common::{CLASSES, failure, make_dataset, mocoop, ok, scratch, train_args};

#[test]
fn inspect_finds_an_untrained_context_at_its_template_words_and_rejects_bad_runs() {
    let dir = scratch("inspect");
    let root = dir.join("data");
    make_dataset(&root, &CLASSES);
    let run = dir.join("coop");
    let run_s = run.to_str().unwrap();
    // One epoch at a vanishing learning rate: the context stays where it started, at the token
    // embeddings of "a photo of a".
    ok(mocoop(&train_args(
        root.to_str().unwrap(),
        run_s,
        &[
            "--method",
            "coop",
            "--epochs",
            "1",
            "--warmup-epochs",
            "0",
            "--lr",
            "1e-12",
        ],
    )));
    let json = ok(mocoop(&["inspect", run_s, "--json"]));
    assert_eq!(json["method"], "coop");
    assert_eq!(json["dataset"], "dtd");
    assert_eq!(json["setting"], "base2new");
    assert_eq!(json["epochs_trained"], 1);
    let tensors = json["tensors"].as_array().unwrap();
    let counted: u64 = tensors
        .iter()
        .map(|t| {
            t[1].as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_u64().unwrap())
                .product::<u64>()
        })
        .sum();
    assert_eq!(json["trainable_parameters"].as_u64().unwrap(), counted);
    assert!(
        tensors.iter().any(|t| t[0] == "ctx.0" && t[1][0] == 4),
        "{tensors:?}"
    );
    let digest = json["checkpoint_digest"].as_str().unwrap();
    assert!(
        digest.len() == 64 && digest.chars().all(|c| c.is_ascii_hexdigit()),
        "{digest}"
    );
    assert!(json["accuracy"].as_array().unwrap().len() == 2 && json["harmonic_mean"].is_number());

    let experts = json["experts"].as_array().unwrap();
    assert_eq!(experts.len(), 1);
    assert_eq!(experts[0]["template"], "a photo of a {}.");
    let contexts = experts[0]["contexts"].as_array().unwrap();
    let words: Vec<&str> = contexts
        .iter()
        .map(|c| c["init_word"].as_str().unwrap())
        .collect();
    assert_eq!(words, ["a", "photo", "of", "a"]);
    for c in contexts {
        for metric in ["euclidean", "cosine"] {
            let near = c["nearest"][metric].as_array().unwrap();
            assert_eq!(near.len(), 5, "{c}");
            assert_eq!(near[0]["word"], c["init_word"], "{metric}: {c}");
            assert!(
                near[0]["distance"].as_f64().unwrap() < 1e-6,
                "{metric}: {c}"
            );
            let distances: Vec<f64> = near
                .iter()
                .map(|n| n["distance"].as_f64().unwrap())
                .collect();
            assert!(
                distances.windows(2).all(|w| w[0] <= w[1]),
                "{metric} sorted: {distances:?}"
            );
            assert!(
                distances[1] > 1e-3,
                "{metric}: another word as near as the template's: {c}"
            );
        }
    }

    // The text form says the same.
    let text = mocoop(&["inspect", run_s]);
    assert!(text.status.success());
    let text = String::from_utf8_lossy(&text.stdout);
    for wanted in [
        "method       coop",
        "expert 0: a photo of a {}.",
        "(from \"photo\")",
        digest,
    ] {
        assert!(text.contains(wanted), "{wanted:?} not in\n{text}");
    }

    // CoOp's one expert gets every image of the test split (4 classes of 6 images).
    let loads = ok(mocoop(&["inspect", run_s, "--json", "--test-load"]));
    assert_eq!(loads["test_images"], 24);
    assert_eq!(loads["experts"][0]["test_load"], 1.0);

    // A folder that is not a run.
    let err = failure(mocoop(&["inspect", root.to_str().unwrap()]));
    assert!(err.contains("is not a mocoop run directory"), "{err}");
    // A damaged checkpoint: one byte of a tensor changed.
    let checkpoint = run.join("checkpoint.safetensors");
    let mut bytes = std::fs::read(&checkpoint).unwrap();
    let last = bytes.len() - 3;
    bytes[last] ^= 0x40;
    std::fs::write(&checkpoint, bytes).unwrap();
    let err = failure(mocoop(&["inspect", run_s]));
    assert!(
        err.contains("final checkpoint is unusable") && err.contains("corrupt"),
        "{err}"
    );
    // A missing one.
    std::fs::remove_file(&checkpoint).unwrap();
    let err = failure(mocoop(&["inspect", run_s]));
    assert!(err.contains("has no final checkpoint"), "{err}");
}
