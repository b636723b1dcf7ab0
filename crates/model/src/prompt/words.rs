//! The official code's prompt layout (github dyabel/mocoop, `prompting/moe.py`,
//! `PromptLearner.__init__` and `construct_prompts`), for `--context-count words`: the layout
//! ([`ExpertLayout::counted`]) here, its sequences by `ExpertLayout::word_slots` in `layout`.
//!
//! There, a template loses all its periods and is split at `{}`; the part before loses its last
//! character (the space before `{}`). Each part's learnable context has one vector per word of
//! `part.split(" ")` (none for an empty part), initialised from the first that many positions
//! after SOT of the part tokenised on its own (EOT and padding included). The prompt is the
//! tokenised string `before + " " + class + after` (plus `"."` in the text-level loss's prompts),
//! in which positions `1 .. 1 + n_before` and, after as many positions as the class name has
//! BPE tokens, the next `n_after` are the context vectors; every other position keeps its
//! token, and the features are read at that string's EOT. So where words and tokens disagree:
//! - `{} texture.`, `a {} in a video game.`: the part after `{}` starts with a space, one
//!   word more than it has tokens, and its last context vector sits on the EOT position
//!   (initialised from EOT's embedding): the EOT is learnt;
//! - a multi-token word (`close-up`, `high-performance`, `itap`): fewer context vectors than
//!   tokens, so only the first tokens learn and the rest stay fixed;
//! - a double space (Food101's `a photo of a  {}.`): one word more than tokens, so the context
//!   covers the class name's first token (initialised from EOT's embedding).

use super::PromptError;
use super::layout::{ContextCount, ExpertInit, ExpertLayout, WordSplit};
use crate::tokenizer::ClipTokenizer;

/// The template's parts before and after `{}` as the official code cuts them.
fn split(template: &str) -> Result<WordSplit, PromptError> {
    if template.matches("{}").count() != 1 {
        return Err(PromptError::Template(format!(
            "template '{template}' must contain exactly one '{{}}' (where the class name goes)"
        )));
    }
    let stripped = template.replace('.', "");
    let (before, after) = stripped.split_once("{}").expect("one placeholder");
    let mut before = before.to_string();
    before.pop();
    Ok(WordSplit {
        before,
        after: after.to_string(),
    })
}

/// Python's `len(part.split(" "))`, 0 for an empty part.
fn words(part: &str) -> usize {
    if part.is_empty() {
        0
    } else {
        part.split(' ').count()
    }
}

/// The first `n` ids after SOT of `part` tokenised on its own (EOT, then zero padding).
fn init_ids(part: &str, n: usize, tokenizer: &ClipTokenizer) -> Vec<u32> {
    let mut ids = tokenizer.encode(&part.replace('_', " "));
    ids.push(tokenizer.tokenize("", 2)[1]);
    ids.resize(ids.len().max(n), 0);
    ids.truncate(n);
    ids
}

impl ExpertLayout {
    /// Builds the layout of an expert with its contexts counted as `count` says (random contexts
    /// have no words: they are laid out as [`Self::new`] lays them out).
    pub fn counted(
        init: &ExpertInit,
        tokenizer: &ClipTokenizer,
        count: ContextCount,
    ) -> Result<Self, PromptError> {
        let ExpertInit::Template { template } = init else {
            return Self::new(init, tokenizer);
        };
        if count == ContextCount::Tokens {
            return Self::new(init, tokenizer);
        }
        let split = split(template)?;
        let (before, after) = (words(&split.before), words(&split.after));
        let ids = [
            init_ids(&split.before, before, tokenizer),
            init_ids(&split.after, after, tokenizer),
        ];
        Ok(Self {
            init: init.clone(),
            before,
            infix: Vec::new(),
            after,
            init_ids: Some(ids.concat()),
            suffix: Vec::new(),
            words: Some(split),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prompt::layout::PromptSequences;

    fn tok() -> &'static ClipTokenizer {
        ClipTokenizer::embedded()
    }

    fn layout_of(t: &str) -> ExpertLayout {
        let init = ExpertInit::Template {
            template: t.to_string(),
        };
        ExpertLayout::counted(&init, tok(), ContextCount::Words).unwrap()
    }

    const EOT: u32 = 49407;

    #[test]
    fn words_not_tokens_are_counted() {
        let texture = layout_of("{} texture.");
        assert_eq!((texture.before, texture.after), (0, 2));
        let texture_ids = tok().encode("texture");
        assert_eq!(
            texture.init_ids.as_deref(),
            Some(&[texture_ids[0], EOT][..])
        );
        let food = layout_of("a photo of a  {}.");
        assert_eq!((food.before, food.after), (5, 0));
        assert_eq!(food.init_ids.as_ref().unwrap()[4], EOT);
        let close = layout_of("a close-up photo of the {}.");
        assert_eq!(close.before, 5);
        assert!(tok().encode("a close-up photo of the").len() > 5);
        let plain = layout_of("a photo of a {}.");
        assert_eq!((plain.before, plain.after), (4, 0));
        assert_eq!(
            plain.init_ids.as_deref(),
            Some(&tok().encode("a photo of a")[..])
        );
    }

    #[test]
    fn the_eot_of_a_texture_prompt_is_a_context_vector() {
        let seqs = PromptSequences::with_period(
            &[layout_of("{} texture.")],
            &["red square".into()],
            tok(),
            77,
            false,
        )
        .unwrap();
        // SOT red square [ctx: texture] [ctx: EOT], read at the EOT position.
        assert_eq!(seqs.eot, vec![4]);
        assert_eq!(seqs.ctx_index[3..5], [1, 2]);
        assert_eq!(seqs.fixed_mask[..5], [1.0, 1.0, 1.0, 0.0, 0.0]);
        // With the period: ". " takes the second vector's place, EOT stays a fixed token.
        let seqs = PromptSequences::with_period(
            &[layout_of("{} texture.")],
            &["red square".into()],
            tok(),
            77,
            true,
        )
        .unwrap();
        assert_eq!(seqs.eot, vec![5]);
        assert_eq!(seqs.ids[5], i64::from(EOT));
        assert_eq!(seqs.ctx_index[3..6], [1, 2, 0]);
    }

    #[test]
    fn a_double_space_covers_the_first_class_token() {
        let seqs = PromptSequences::with_period(
            &[layout_of("a photo of a  {}.")],
            &["red square".into()],
            tok(),
            77,
            false,
        )
        .unwrap();
        // SOT [a photo of a EOT-init] square EOT: "red" is replaced by the fifth vector.
        assert_eq!(seqs.ctx_index[1..6], [1, 2, 3, 4, 5]);
        assert_eq!(seqs.ids[6], i64::from(tok().encode("square")[0]));
        assert_eq!(seqs.eot, vec![7]);
    }

    #[test]
    fn multi_token_words_learn_only_their_first_tokens() {
        let seqs = PromptSequences::with_period(
            &[layout_of("itap of a {}.")],
            &["cat".into()],
            tok(),
            77,
            true,
        )
        .unwrap();
        let tokens = tok().encode("itap of a cat.");
        assert!(tokens.len() > 5, "itap is more than one token: {tokens:?}");
        let ctx: Vec<i64> = seqs.ctx_index[..seqs.eot[0] + 1].to_vec();
        assert_eq!(ctx.iter().filter(|&&i| i > 0).count(), 3);
        // Past the three vectors, the rest of the tokenised string stays as it is.
        let full: Vec<i64> = [49406]
            .iter()
            .chain(&tokens)
            .chain(&[EOT])
            .map(|&id| i64::from(id))
            .collect();
        assert_eq!(seqs.ids[4..=seqs.eot[0]], full[4..]);
    }
}
