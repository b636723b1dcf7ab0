//! What each benchmark case is: its sizes (experts, classes, batch, LN tuning) and its inputs
//! (class names, template groups, synthetic images). The PyTorch reference builds the same inputs
//! by the same rules.

use anyhow::{Result, bail};
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Int, Tensor, TensorData};
use clap::ValueEnum;
use serde::Serialize;

use mocoop_model::templates::{TemplateGroups, TemplateTable};
use mocoop_train::Method;

use super::geometry::Geometry;

/// One measured case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CaseName {
    /// A full MoCoOp step, E = 5, C = 50, visual LN tuning on.
    TrainLn,
    /// The same step with the image LayerNorms frozen.
    TrainNoLn,
    /// An ImageNet-scale step (E = 20, C = 1000 unless scaled or overridden), LN tuning on.
    TrainImagenet,
    /// A CoCoOp step (C = 50): every image's prompts encoded, at batch 1 (its official recipe).
    TrainCocoop,
    /// The same CoCoOp step at batch 8, which the EOT cut and the length buckets are meant to make
    /// practical.
    TrainCocoopB8,
    /// A KgCoOp step (one prompt, C = 50): CoOp's plus the distance to the hand-made prompt.
    TrainKgcoop,
    /// A ProGrad step (one prompt, C = 50): CoOp's plus a second backward pass for the projection.
    TrainPrograd,
    /// A MaPLe step (C = 50): language tokens to its official depth 9 (every layer but the first of
    /// a shallower model), the visual tokens made from them, both encoders prompted.
    TrainMaple,
    /// Inference with every text feature cached (`PromptClassifier`), E = 5, C = 50.
    InferCached,
    /// Plain CLIP image encoding, the floor of inference cost.
    EncodeImage,
}

impl CaseName {
    /// Every case, in report order.
    pub const ALL: [Self; 10] = [
        Self::TrainLn,
        Self::TrainNoLn,
        Self::TrainImagenet,
        Self::TrainCocoop,
        Self::TrainCocoopB8,
        Self::TrainKgcoop,
        Self::TrainPrograd,
        Self::TrainMaple,
        Self::InferCached,
        Self::EncodeImage,
    ];

    /// The name used on the command line and in the JSON.
    pub fn name(self) -> &'static str {
        match self {
            Self::TrainLn => "train-ln",
            Self::TrainNoLn => "train-no-ln",
            Self::TrainImagenet => "train-imagenet",
            Self::TrainCocoop => "train-cocoop",
            Self::TrainCocoopB8 => "train-cocoop-b8",
            Self::TrainKgcoop => "train-kgcoop",
            Self::TrainPrograd => "train-prograd",
            Self::TrainMaple => "train-maple",
            Self::InferCached => "infer-cached",
            Self::EncodeImage => "encode-image",
        }
    }

    /// Whether the case is a training step (otherwise inference).
    pub fn is_training(self) -> bool {
        !matches!(self, Self::InferCached | Self::EncodeImage)
    }

    /// The method a training case steps (MoCoOp for the inference cases, whose prompts are
    /// MoCoOp's).
    pub fn method(self) -> Method {
        match self {
            Self::TrainCocoop | Self::TrainCocoopB8 => Method::Cocoop,
            Self::TrainKgcoop => Method::Kgcoop,
            Self::TrainPrograd => Method::Prograd,
            Self::TrainMaple => Method::Maple,
            _ => Method::Mocoop,
        }
    }
}

/// Classes of the ImageNet-scale case at a reduced geometry unless `--classes` says otherwise: the
/// full 1000 would need tens of GB for PyTorch's 77-token sequences on the CPU.
pub const SCALED_IMAGENET_CLASSES: usize = 100;

/// The sizes of one case.
#[derive(Debug, Clone, Serialize)]
pub struct CaseSpec {
    /// Which case.
    pub case: CaseName,
    /// Experts `E`.
    pub experts: usize,
    /// Classes `C`.
    pub classes: usize,
    /// Images per step.
    pub batch: usize,
    /// Whether the image encoder's `ln_1`/`ln_2` train.
    pub ln_tuning: bool,
    /// How the case deviates from the definition, if it does.
    pub note: Option<String>,
}

impl CaseSpec {
    /// The sizes of `case`; `classes`/`experts` override the ImageNet-scale case, `batch` every
    /// case but CoCoOp's, whose batch is the case's.
    pub fn new(
        case: CaseName,
        geometry: Geometry,
        batch: usize,
        classes: Option<usize>,
        experts: Option<usize>,
    ) -> Self {
        let (experts, classes, note) = match case {
            CaseName::TrainImagenet => {
                let scaled = geometry != Geometry::VitB16 && classes.is_none();
                let c = classes.unwrap_or(if scaled {
                    SCALED_IMAGENET_CLASSES
                } else {
                    1000
                });
                let note = scaled.then(|| {
                    format!(
                        "scaled: C = {c} instead of 1000 at the {} geometry (--classes 1000 for \
                         the full size)",
                        geometry.name()
                    )
                });
                (experts.unwrap_or(20), c, note)
            }
            _ if case.method() != Method::Mocoop => (1, 50, None),
            _ => (5, 50, None),
        };
        let batch = match case {
            CaseName::TrainCocoop => 1,
            CaseName::TrainCocoopB8 => 8,
            _ => batch,
        };
        Self {
            case,
            experts,
            classes,
            batch,
            ln_tuning: matches!(case, CaseName::TrainLn | CaseName::TrainImagenet),
            note,
        }
    }
}

/// Template groups for `experts` experts: Caltech101's five groups for E = 5 (a fine-grained
/// dataset's configuration), otherwise the first `experts` of ImageNet's twenty.
pub fn expert_groups(experts: usize) -> Result<TemplateGroups> {
    let table = TemplateTable::builtin();
    if experts == 5 {
        return Ok(table.groups("caltech101")?);
    }
    let imagenet = table.groups("imagenet")?;
    if experts == 0 || experts > imagenet.groups().len() {
        bail!(
            "--experts must be between 1 and {} (ImageNet's template groups)",
            imagenet.groups().len()
        );
    }
    Ok(TemplateGroups::new(
        "bench",
        imagenet.groups()[..experts].to_vec(),
    )?)
}

const ADJECTIVES: [&str; 10] = [
    "red", "green", "blue", "small", "large", "wooden", "striped", "old", "bright", "spotted",
];
const NOUNS: [&str; 10] = [
    "cat", "dog", "car", "tree", "house", "bird", "boat", "flower", "chair", "lamp",
];
const KINDS: [&str; 10] = [
    "toy", "sketch", "model", "statue", "painting", "photo", "drawing", "carving", "poster", "icon",
];

/// Synthetic class names of three words ("red cat toy", …; a number is appended past 1000), so
/// that prompts have realistic token lengths.
pub fn class_names(classes: usize) -> Vec<String> {
    (0..classes)
        .map(|i| {
            let name = format!(
                "{} {} {}",
                ADJECTIVES[i % 10],
                NOUNS[i / 10 % 10],
                KINDS[i / 100 % 10]
            );
            if i >= 1000 {
                format!("{name} {}", i / 1000)
            } else {
                name
            }
        })
        .collect()
}

/// A batch of N(0, 1) pixels `[batch, 3, size, size]` and labels `i mod classes` (no data loading).
pub fn synthetic_batch<B: Backend>(
    batch: usize,
    size: usize,
    classes: usize,
    device: &B::Device,
) -> (Tensor<B, 4>, Tensor<B, 1, Int>) {
    let images = Tensor::random(
        [batch, 3, size, size],
        Distribution::Normal(0.0, 1.0),
        device,
    );
    let labels: Vec<i64> = (0..batch).map(|i| (i % classes) as i64).collect();
    let labels = Tensor::from_data(TensorData::new(labels, [batch]), device);
    (images, labels)
}
