//! Token layouts of soft prompts, on the host: which positions of each `(expert, class)` sequence are
//! fixed tokens and which are learnable context vectors.
//!
//! Expert `g` is built from one template, split at `{}`:
//!
//! ```text
//! [SOT] ctx_before_g [class-name tokens] ctx_after_g [.] [EOT]
//! ```
//!
//! `ctx_before_g` are the BPE tokens of the words before `{}`, `ctx_after_g` those after it with the
//! template's final period removed; the period (when the template ends with one), the class name,
//! SOT and EOT stay fixed tokens.

use serde::{Deserialize, Serialize};

use super::PromptError;
use crate::tokenizer::ClipTokenizer;

/// Where one expert's learnable context comes from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ExpertInit {
    /// The words around `{}` in a template, initialised from CLIP's token embeddings of them.
    Template {
        /// The template, e.g. `"a photo of a {}."`.
        template: String,
    },
    /// `n_ctx` vectors before the class name, drawn from `N(0, std²)` (CoOp's random
    /// initialisation); the class name is followed by a fixed period.
    Random {
        /// Number of context vectors.
        n_ctx: usize,
        /// Standard deviation of the initial values (CoOp: 0.02).
        std: f32,
    },
    /// The first `n_ctx` BPE tokens of `text` learnable, right after SOT, initialised from their
    /// embeddings, and the rest of `text` fixed before the class name, which is followed by a
    /// fixed period: the official IVLP and MaPLe prompt (`"a photo of a"` with 2 tokens gives
    /// `[SOT] ctx ctx of a {class} . [EOT]`).
    Leading {
        /// The initialising words, e.g. `"a photo of a"`.
        text: String,
        /// How many of its first tokens learn (at most its token count).
        n_ctx: usize,
    },
}

impl ExpertInit {
    /// A short human-readable description (for logs and errors).
    pub fn describe(&self) -> String {
        match self {
            ExpertInit::Template { template } => format!("'{template}'"),
            ExpertInit::Random { n_ctx, .. } => format!("{n_ctx} random context vectors"),
            ExpertInit::Leading { text, n_ctx } => {
                format!("the first {n_ctx} tokens of '{text}'")
            }
        }
    }
}

/// How an expert's learnable contexts are counted (decision).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum ContextCount {
    /// One context vector per BPE token of the template's words (the method description).
    #[default]
    Tokens,
    /// One per space-separated word, laid over the tokenised prompt as the official code does
    /// (`prompting/moe.py`, `PromptLearner`): see [`super::words`].
    Words,
}

/// How prompts are laid out: the method description's reading by default, or the official
/// code's behaviours, each on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LayoutOptions {
    /// How the learnable contexts are counted.
    #[serde(default)]
    pub context_count: ContextCount,
    /// The classification prompts leave out the template's final period (the official code:
    /// the prompts of the text-level loss and the hard prompts keep it).
    #[serde(default)]
    pub classify_without_period: bool,
}

/// The token layout of one expert, independent of the class name.
#[derive(Debug, Clone, PartialEq)]
pub struct ExpertLayout {
    /// How the context was made.
    pub init: ExpertInit,
    /// Context vectors before the class name.
    pub before: usize,
    /// Fixed token ids between those context vectors and the class name (the rest of a
    /// [`ExpertInit::Leading`] text; empty otherwise).
    pub infix: Vec<u32>,
    /// Context vectors after the class name (and before the final period).
    pub after: usize,
    /// Token ids whose embeddings initialise the context (`before + after` ids), for template
    /// initialisation; `None` for random initialisation.
    pub init_ids: Option<Vec<u32>>,
    /// Fixed token ids between the context and EOT (the final period), possibly empty.
    pub suffix: Vec<u32>,
    /// With contexts counted in words, the official code's cut of the template (`None`: counted
    /// in tokens).
    pub words: Option<WordSplit>,
}

/// A template as the official code cuts it for its word-counted layout (see `prompt/words.rs`):
/// every period removed, split at `{}`, the part before without its last character.
#[derive(Debug, Clone, PartialEq)]
pub struct WordSplit {
    /// The text before `{}`.
    pub before: String,
    /// The text after `{}`.
    pub after: String,
}

impl ExpertLayout {
    /// Builds the layout of an expert, its contexts counted in BPE tokens.
    pub fn new(init: &ExpertInit, tokenizer: &ClipTokenizer) -> Result<Self, PromptError> {
        match init {
            ExpertInit::Template { template } => {
                let (pre, post) = split_template(template)?;
                let post = post.trim_end();
                let (post, period) = match post.strip_suffix('.') {
                    Some(stripped) => (stripped, true),
                    None => (post, false),
                };
                let before_ids = tokenizer.encode(pre);
                let after_ids = tokenizer.encode(post);
                let suffix = if period {
                    tokenizer.encode(".")
                } else {
                    Vec::new()
                };
                Ok(Self {
                    init: init.clone(),
                    infix: Vec::new(),
                    before: before_ids.len(),
                    after: after_ids.len(),
                    init_ids: Some([before_ids, after_ids].concat()),
                    suffix,
                    words: None,
                })
            }
            ExpertInit::Random { n_ctx, .. } => Ok(Self {
                init: init.clone(),
                infix: Vec::new(),
                before: *n_ctx,
                after: 0,
                init_ids: None,
                suffix: tokenizer.encode("."),
                words: None,
            }),
            ExpertInit::Leading { text, n_ctx } => {
                let ids = tokenizer.encode(text);
                if *n_ctx == 0 || *n_ctx > ids.len() {
                    return Err(PromptError::Config(format!(
                        "{n_ctx} context tokens taken from '{text}', which has {} tokens \
                         (use random context vectors for more)",
                        ids.len()
                    )));
                }
                Ok(Self {
                    init: init.clone(),
                    before: *n_ctx,
                    infix: ids[*n_ctx..].to_vec(),
                    after: 0,
                    init_ids: Some(ids[..*n_ctx].to_vec()),
                    suffix: tokenizer.encode("."),
                    words: None,
                })
            }
        }
    }

    /// Number of learnable context vectors.
    pub fn n_ctx(&self) -> usize {
        self.before + self.after
    }

    /// Length of the sequence for a class name of `class_len` tokens, SOT and EOT included.
    pub fn sequence_len(&self, class_len: usize) -> usize {
        2 + self.n_ctx() + self.infix.len() + class_len + self.suffix.len()
    }

    /// The positions of one `(expert, class)` prompt up to its EOT, with the final period or
    /// without it: a fixed token id, or the index of a context vector of this expert.
    fn slots(
        &self,
        classname: &str,
        class: &[u32],
        tokenizer: &ClipTokenizer,
        period: bool,
    ) -> Vec<Slot> {
        if let Some(split) = &self.words {
            return self.word_slots(split, classname, tokenizer, period);
        }
        let mut slots = vec![Slot::Fixed(tokenizer.tokenize("", 2)[0])];
        slots.extend((0..self.before).map(Slot::Ctx));
        slots.extend(self.infix.iter().map(|&id| Slot::Fixed(id)));
        slots.extend(class.iter().map(|&id| Slot::Fixed(id)));
        slots.extend((self.before..self.n_ctx()).map(Slot::Ctx));
        if period {
            slots.extend(self.suffix.iter().map(|&id| Slot::Fixed(id)));
        }
        slots.push(Slot::Fixed(tokenizer.tokenize("", 2)[1]));
        slots
    }
}

impl ExpertLayout {
    /// The positions of one prompt of a word-counted layout: the tokenised string
    /// `before + " " + class + after` (+ `"."`), positions `1 .. 1 + before` and the `after`
    /// positions that follow the class name's BPE tokens made context vectors. Context
    /// positions past the EOT (possible only for templates with more words than tokens after the
    /// class name) cannot change the features and are left out.
    fn word_slots(
        &self,
        split: &WordSplit,
        classname: &str,
        tokenizer: &ClipTokenizer,
        period: bool,
    ) -> Vec<Slot> {
        let classname = classname.replace('_', " ");
        let end = if period { "." } else { "" };
        let text = format!("{} {classname}{}{end}", split.before, split.after);
        let special = tokenizer.tokenize("", 2);
        let mut slots = vec![Slot::Fixed(special[0])];
        slots.extend(tokenizer.encode(&text).into_iter().map(Slot::Fixed));
        slots.push(Slot::Fixed(special[1]));
        let after_start = 1 + self.before + tokenizer.encode(&classname).len();
        let positions = (0..self.before)
            .map(|j| (1 + j, j))
            .chain((0..self.after).map(|j| (after_start + j, self.before + j)));
        for (pos, j) in positions {
            if let Some(slot) = slots.get_mut(pos) {
                *slot = Slot::Ctx(j);
            }
        }
        slots
    }
}

/// One position of a laid-out prompt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    /// A fixed token id.
    Fixed(u32),
    /// The expert's context vector of this index.
    Ctx(usize),
}

/// Splits a template at its single `{}`.
fn split_template(template: &str) -> Result<(&str, &str), PromptError> {
    if template.matches("{}").count() != 1 {
        return Err(PromptError::Template(format!(
            "template '{template}' must contain exactly one '{{}}' (where the class name goes)"
        )));
    }
    Ok(template.split_once("{}").expect("one placeholder"))
}

/// All `(expert, class)` sequences of a prompt pool for one list of class names, row `g * C + c`,
/// each padded with zeros to the longest one.
#[derive(Debug, Clone, PartialEq)]
pub struct PromptSequences {
    /// Number of experts `E`.
    pub experts: usize,
    /// Number of classes `C`.
    pub classes: usize,
    /// Padded length (longest EOT position + 1).
    pub len: usize,
    /// `E * C * len` token ids; 0 at context positions and after EOT.
    pub ids: Vec<i64>,
    /// `E * C * len` indices into the context table (row 0 = no context, expert `g`'s vectors at
    /// `1 + offset_g ..`); 0 at fixed positions.
    pub ctx_index: Vec<i64>,
    /// `E * C * len`: 1 at fixed-token positions up to EOT, 0 at context positions and padding.
    pub fixed_mask: Vec<f32>,
    /// EOT position of each row.
    pub eot: Vec<usize>,
}

impl PromptSequences {
    /// Lays out every expert with every class name, the templates' final periods kept.
    ///
    /// Errors when a class name makes some expert's prompt longer than `context_length`.
    pub fn new(
        layouts: &[ExpertLayout],
        classnames: &[String],
        tokenizer: &ClipTokenizer,
        context_length: usize,
    ) -> Result<Self, PromptError> {
        Self::with_period(layouts, classnames, tokenizer, context_length, true)
    }

    /// [`Self::new`], with the templates' final periods kept or left out (`period`).
    pub fn with_period(
        layouts: &[ExpertLayout],
        classnames: &[String],
        tokenizer: &ClipTokenizer,
        context_length: usize,
        period: bool,
    ) -> Result<Self, PromptError> {
        let class_ids: Vec<Vec<u32>> = classnames.iter().map(|c| tokenizer.encode(c)).collect();
        let mut rows = Vec::with_capacity(layouts.len() * classnames.len());
        for layout in layouts {
            for (classname, ids) in classnames.iter().zip(&class_ids) {
                let slots = layout.slots(classname, ids, tokenizer, period);
                if slots.len() > context_length {
                    return Err(PromptError::ClassTooLong {
                        classname: classname.clone(),
                        tokens: ids.len(),
                        expert: layout.init.describe(),
                        needed: slots.len(),
                        context_length,
                    });
                }
                rows.push(slots);
            }
        }
        let len = rows.iter().map(Vec::len).max().unwrap_or(2);
        let mut ids = vec![0i64; rows.len() * len];
        let mut ctx_index = vec![0i64; rows.len() * len];
        let mut fixed_mask = vec![0f32; rows.len() * len];
        let mut eot = Vec::with_capacity(rows.len());
        let mut offset = 1i64;
        for (g, layout) in layouts.iter().enumerate() {
            for c in 0..classnames.len() {
                let row = g * classnames.len() + c;
                let slots = &rows[row];
                for (pos, slot) in slots.iter().enumerate() {
                    let at = row * len + pos;
                    match *slot {
                        Slot::Fixed(id) => {
                            ids[at] = i64::from(id);
                            fixed_mask[at] = 1.0;
                        }
                        Slot::Ctx(j) => ctx_index[at] = offset + j as i64,
                    }
                }
                eot.push(slots.len() - 1);
            }
            offset += layout.n_ctx() as i64;
        }
        Ok(Self {
            experts: layouts.len(),
            classes: classnames.len(),
            len,
            ids,
            ctx_index,
            fixed_mask,
            eot,
        })
    }

    /// The full token sequence of one row, with `placeholder` at context positions (to check a
    /// layout against a tokenised string).
    pub fn row_tokens(&self, row: usize, placeholder: i64) -> Vec<i64> {
        let base = row * self.len;
        (0..=self.eot[row])
            .map(|p| {
                if self.ctx_index[base + p] != 0 {
                    placeholder
                } else {
                    self.ids[base + p]
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::templates::fill;

    fn tok() -> &'static ClipTokenizer {
        ClipTokenizer::embedded()
    }

    fn template(t: &str) -> ExpertInit {
        ExpertInit::Template {
            template: t.to_string(),
        }
    }

    #[test]
    fn template_split_keeps_class_and_period_fixed() {
        let layout =
            ExpertLayout::new(&template("a photo of a {}, a type of flower."), tok()).unwrap();
        assert_eq!(layout.before, 4); // a photo of a
        assert_eq!(layout.after, 5); // , a type of flower
        assert_eq!(layout.suffix, tok().encode("."));
        let ids = layout.init_ids.as_ref().unwrap();
        assert_eq!(ids[..4], tok().encode("a photo of a")[..]);
        assert_eq!(ids[4..], tok().encode(", a type of flower")[..]);

        let layout = ExpertLayout::new(&template("{} texture."), tok()).unwrap();
        assert_eq!((layout.before, layout.after), (0, 1));
        let layout = ExpertLayout::new(&template("itap of a {}"), tok()).unwrap();
        assert!(layout.suffix.is_empty());
        assert!(ExpertLayout::new(&template("no placeholder"), tok()).is_err());
    }

    #[test]
    fn sequences_match_the_tokenised_filled_template() {
        let templates = [
            "a photo of a {}.",
            "{} texture.",
            "a photo of the large {}, a type of car.",
        ];
        let layouts: Vec<_> = templates
            .iter()
            .map(|t| ExpertLayout::new(&template(t), tok()).unwrap())
            .collect();
        let classes = vec!["cat".to_string(), "sports car".to_string()];
        let seqs = PromptSequences::new(&layouts, &classes, tok(), 77).unwrap();
        assert_eq!((seqs.experts, seqs.classes), (3, 2));
        for (g, t) in templates.iter().enumerate() {
            for (c, class) in classes.iter().enumerate() {
                let row = g * 2 + c;
                let expected: Vec<i64> = tok()
                    .tokenize(&fill(t, class), 77)
                    .into_iter()
                    .take(seqs.eot[row] + 1)
                    .map(i64::from)
                    .collect();
                // Context positions hold the template's own words initially.
                let mut got = seqs.row_tokens(row, -1);
                let init = layouts[g].init_ids.as_ref().unwrap();
                let mut k = 0;
                for (p, v) in got.iter_mut().enumerate() {
                    if *v == -1 {
                        let index = seqs.ctx_index[row * seqs.len + p];
                        assert!(index > 0);
                        *v = init[k] as i64;
                        k += 1;
                    }
                }
                assert_eq!(got, expected, "{t} / {class}");
            }
        }
        // Context indices of one expert are shared by all classes, distinct between experts.
        let idx = |row: usize| -> Vec<i64> {
            seqs.ctx_index[row * seqs.len..(row + 1) * seqs.len]
                .iter()
                .copied()
                .filter(|&i| i != 0)
                .collect()
        };
        assert_eq!(idx(0), vec![1, 2, 3, 4]);
        assert_eq!(idx(1), vec![1, 2, 3, 4]);
        assert_eq!(idx(2), vec![5]);
        assert_eq!(idx(4), (6..6 + 10).collect::<Vec<_>>());
        assert_eq!(seqs.len, seqs.eot.iter().max().unwrap() + 1);
    }

    #[test]
    fn random_context_layout() {
        let init = ExpertInit::Random {
            n_ctx: 16,
            std: 0.02,
        };
        let layout = ExpertLayout::new(&init, tok()).unwrap();
        assert_eq!(
            (layout.before, layout.after, layout.init_ids.is_none()),
            (16, 0, true)
        );
        let seqs = PromptSequences::new(&[layout], &["dog".into()], tok(), 77).unwrap();
        assert_eq!(seqs.eot, vec![1 + 16 + 1 + 1]);
    }

    #[test]
    fn leading_layout_keeps_the_rest_of_its_words_fixed() {
        // MaPLe's official prompt: "a photo" learns, "of a" stays, then the class and a period.
        let init = ExpertInit::Leading {
            text: "a photo of a".into(),
            n_ctx: 2,
        };
        let layout = ExpertLayout::new(&init, tok()).unwrap();
        assert_eq!((layout.before, layout.after), (2, 0));
        assert_eq!(layout.infix, tok().encode("of a"));
        assert_eq!(
            layout.init_ids.as_deref(),
            Some(&tok().encode("a photo")[..])
        );
        let seqs = PromptSequences::new(&[layout], &["sea turtle".into()], tok(), 77).unwrap();
        let expected: Vec<i64> = tok()
            .tokenize("a photo of a sea turtle.", 77)
            .into_iter()
            .take(seqs.eot[0] + 1)
            .map(i64::from)
            .collect();
        let mut got = seqs.row_tokens(0, -1);
        assert_eq!(&seqs.ctx_index[1..3], &[1, 2]);
        got[1] = expected[1];
        got[2] = expected[2];
        assert_eq!(got, expected);
        for n_ctx in [0, 5] {
            let init = ExpertInit::Leading {
                text: "a photo of a".into(),
                n_ctx,
            };
            let err = ExpertLayout::new(&init, tok()).unwrap_err().to_string();
            assert!(err.contains("4 tokens"), "{err}");
        }
    }

    #[test]
    fn class_name_past_the_context_length_is_an_error_naming_it() {
        let layout = ExpertLayout::new(&template("a photo of a {}."), tok()).unwrap();
        let long = "very ".repeat(80) + "long name";
        let err =
            PromptSequences::new(&[layout], &["cat".into(), long.clone()], tok(), 77).unwrap_err();
        let message = err.to_string();
        assert!(message.contains("very very"), "{message}");
        assert!(message.contains("77"), "{message}");
    }
}
