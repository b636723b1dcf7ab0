//! The single hand-made prompt per dataset that KgCoOp's knowledge guidance and ProGrad's
//! zero-shot teacher encode: facts of each method's official code (its `CUSTOM_TEMPLATES`), by
//! registry name. The two tables differ (ProGrad puts the class name last, since it also
//! initialises its context from the words before it); ImageNet's transfer targets share
//! ImageNet's prompt, and a dataset a table does not name (a custom one) gets `a photo of a {}.`.

use crate::config::Method;

/// KgCoOp's prompts (`trainers/kgcoop.py`).
const KGCOOP: &[(&str, &str)] = &[
    ("oxford_pets", "a photo of a {}, a type of pet."),
    ("oxford_flowers", "a photo of a {}, a type of flower."),
    ("fgvc_aircraft", "a photo of a {}, a type of aircraft."),
    ("dtd", "a photo of a {}, a type of texture."),
    ("eurosat", "a centered satellite photo of {}."),
    ("food101", "a photo of {}, a type of food."),
    ("ucf101", "a photo of a person doing {}."),
];

/// ProGrad's prompts (`trainers/prograd.py`).
const PROGRAD: &[(&str, &str)] = &[
    ("oxford_pets", "a type of pet, a photo of a {}."),
    ("oxford_flowers", "a type of flower, a photo of a {}."),
    ("fgvc_aircraft", "a type of aircraft, a photo of a {}."),
    ("dtd", "a texture of {}."),
    ("eurosat", "a centered satellite photo of {}."),
    ("food101", "a type of food, a photo of {}."),
    ("ucf101", "a photo of a person doing {}."),
];

/// The prompt of every dataset neither table names (the rest of the CoOp benchmark included).
const DEFAULT: &str = "a photo of a {}.";

/// The hand-made prompt `method` encodes for `dataset` (`None`: the method uses none).
pub fn hand_made_template(method: Method, dataset: &str) -> Option<&'static str> {
    let table = match method {
        Method::Kgcoop => KGCOOP,
        Method::Prograd => PROGRAD,
        _ => return None,
    };
    Some(
        table
            .iter()
            .find(|(name, _)| *name == dataset)
            .map_or(DEFAULT, |(_, template)| template),
    )
}
