//! Automatic grouping: on constructed features, and through the shipped shape-world CLIP on
//! templates that differ only in the style words it was pretrained on.

use std::collections::BTreeSet;

use burn::backend::Flex;

use super::*;
use crate::templates::TemplateTable;
use crate::templates::pool::{imagenet_templates, parse_pool};
use crate::weights::LoadOptions;

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// Unit vectors near one of three axes of 4-D space: template `t` is near axis `axis[t]`.
fn near_axes(axis: &[usize]) -> Vec<Vec<f32>> {
    axis.iter()
        .enumerate()
        .map(|(t, &a)| {
            let mut v = [0.05 * (t % 3) as f32; 4];
            v[a] = 1.0;
            v[3] = 0.1 * t as f32 / axis.len() as f32;
            let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            v.iter().map(|x| x / norm).collect()
        })
        .collect()
}

#[test]
fn constructed_features_give_their_groups_with_the_medoid_first() {
    let templates = strings(&["a {}", "b {}", "c {}", "d {}", "e {}", "f {}", "g {}"]);
    let axis = [0, 1, 0, 2, 1, 0, 2];
    let features = near_axes(&axis);
    let auto = suggest(&templates, &features, GroupCount::Auto).unwrap();
    let fixed = suggest(&templates, &features, GroupCount::Fixed(3)).unwrap();
    assert_eq!(auto.groups, fixed.groups, "auto finds the three axes");
    assert_eq!(auto.silhouettes.len(), 5, "K = 2..=6");
    let sets: Vec<BTreeSet<&str>> = auto
        .groups
        .iter()
        .map(|g| g.templates.iter().map(String::as_str).collect())
        .collect();
    let expected: Vec<BTreeSet<&str>> = vec![
        ["a {}", "c {}", "f {}"].into(),
        ["b {}", "e {}"].into(),
        ["d {}", "g {}"].into(),
    ];
    assert_eq!(sets, expected);
    for group in &auto.groups {
        let cohesion = group.cohesion.unwrap();
        assert!(cohesion > 0.9 && cohesion <= 1.0 + 1e-9, "{cohesion}");
    }
    // The medoid leads its group; the rest follow in pool order.
    let sim = Similarity::of_unit_rows(&features);
    let first = medoid(&sim, &[0, 2, 5]);
    assert_eq!(auto.groups[0].templates[0], templates[first]);
    let one = suggest(&templates, &features, GroupCount::Fixed(1)).unwrap();
    assert_eq!(one.groups.len(), 1);
    assert_eq!(one.groups[0].templates.len(), 7);
}

#[test]
fn bad_counts_and_pools_are_clear_errors() {
    let templates = strings(&["a {}", "b {}", "c {}"]);
    let features = near_axes(&[0, 1, 2]);
    let err = suggest(&templates, &features, GroupCount::Fixed(5)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "cannot make 5 groups from 3 templates (at most one per template)"
    );
    let err = suggest(&templates, &features, GroupCount::Fixed(0)).unwrap_err();
    assert!(err.to_string().contains("at least 1"), "{err}");
    let err = suggest(&templates, &features[..2], GroupCount::Auto).unwrap_err();
    assert!(err.to_string().contains("one per template"), "{err}");
    assert_eq!("auto".parse::<GroupCount>(), Ok(GroupCount::Auto));
    assert_eq!("4".parse::<GroupCount>(), Ok(GroupCount::Fixed(4)));
    assert!(
        "0".parse::<GroupCount>()
            .unwrap_err()
            .contains("at least 1")
    );
    assert!("-2".parse::<GroupCount>().unwrap_err().contains("'auto'"));
    let err = parse_pool("a {}\n\n   \nno placeholder\n", "pool.txt").unwrap_err();
    assert_eq!(
        err.to_string(),
        "pool.txt line 4: template 'no placeholder' must contain exactly one '{}'"
    );
    let err = parse_pool("\n  \n", "pool.txt").unwrap_err();
    assert!(
        err.to_string().contains("pool.txt holds no templates"),
        "{err}"
    );
    assert_eq!(
        parse_pool(" a {} \n\nb {}\n", "p").unwrap(),
        strings(&["a {}", "b {}"])
    );
}

#[test]
fn the_default_pool_is_clips_eighty_imagenet_templates() {
    let pool = imagenet_templates();
    assert_eq!(pool.len(), 80);
    assert_eq!(pool.iter().collect::<BTreeSet<_>>().len(), 80, "no repeats");
    assert_eq!(pool[0], "a bad photo of a {}.");
    assert!(pool.contains(&"itap of my {}.".to_string()));
}

#[test]
fn the_written_file_reads_back_as_the_same_groups() {
    let templates = strings(&["a \"quoted\" {}", "b {}", "c\\d {}", "e {}"]);
    let features = near_axes(&[0, 1, 0, 1]);
    let suggestion = suggest(&templates, &features, GroupCount::Auto).unwrap();
    let notes = vec!["classes: 4".to_string()];
    let text = suggestion.to_toml("my data", &notes);
    assert_eq!(text, suggestion.to_toml("my data", &notes));
    assert!(text.contains("# classes: 4\n"), "{text}");
    assert!(
        text.contains("# group 1: 2 template(s), cohesion "),
        "{text}"
    );
    assert!(text.contains("silhouette by K  2: "), "{text}");
    let table = TemplateTable::parse(&text, "suggested").unwrap();
    let read = table.groups("my data").unwrap();
    assert_eq!(read, suggestion.template_groups("my data").unwrap());
    assert_eq!(read.groups().len(), 2);
    assert!(read.all_templates().any(|t| t == "a \"quoted\" {}"));
}

/// Five styles the shape-world CLIP was pretrained to tell apart, four templates each that
/// differ only in the style words of its captions.
const STYLES: [[&str; 4]; 5] = [
    [
        "a photo of a {}.",
        "a clean photo of the {}.",
        "a shaded photo of a {}.",
        "a picture of the {}.",
    ],
    [
        "a sketch of a {}.",
        "a pencil sketch of the {}.",
        "a line drawing of a {}.",
        "an outline sketch of the {}.",
    ],
    [
        "a pixelated photo of a {}.",
        "a pixelated image of the {}.",
        "a {} in blocky pixel art.",
        "a blocky pixelated picture of the {}.",
    ],
    [
        "a noisy photo of a {}.",
        "a grainy photo of the {}.",
        "a faded noisy image of a {}.",
        "a noisy picture of the {}.",
    ],
    [
        "a {} made of texture.",
        "a textured {}.",
        "a {} with a rough texture.",
        "a {} filled with texture.",
    ],
];

fn shapeworld_clip() -> Clip<Flex> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../assets/shapeworld-clip.safetensors"
    );
    Clip::load(path.as_ref(), &LoadOptions::default(), &Default::default()).unwrap()
}

#[test]
fn the_shapeworld_clip_groups_templates_by_their_style_words() {
    // The pool interleaves the styles, so that pool order alone cannot give the answer.
    let pool: Vec<String> = (0..4)
        .flat_map(|i| {
            STYLES
                .iter()
                .map(move |style| style[(i + 1) % 4].to_string())
        })
        .collect();
    let classes = strings(&[
        "red circle",
        "blue star",
        "green square",
        "yellow heart",
        "purple ring",
    ]);
    let clip = shapeworld_clip();
    let mut calls = Vec::new();
    let features = class_averaged_features(
        &clip,
        ClipTokenizer::embedded(),
        &pool,
        &classes,
        &Default::default(),
        &mut |done, total| calls.push((done, total)),
    )
    .unwrap();
    assert_eq!(calls.last(), Some(&(20, 20)));
    let expected: BTreeSet<BTreeSet<&str>> =
        STYLES.iter().map(|s| s.iter().copied().collect()).collect();
    for count in [GroupCount::Fixed(5), GroupCount::Auto] {
        let suggestion = suggest(&pool, &features, count).unwrap();
        let found: BTreeSet<BTreeSet<&str>> = suggestion
            .groups
            .iter()
            .map(|g| g.templates.iter().map(String::as_str).collect())
            .collect();
        assert_eq!(found, expected, "{count}: {:#?}", suggestion.groups);
    }
    let again = class_averaged_features(
        &clip,
        ClipTokenizer::embedded(),
        &pool,
        &classes,
        &Default::default(),
        &mut |_, _| {},
    )
    .unwrap();
    assert_eq!(
        features, again,
        "the features, hence the groups, are deterministic"
    );
}
