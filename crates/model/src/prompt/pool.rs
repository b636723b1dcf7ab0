//! The pool of learnable contexts (one per expert) and the fixed part of every prompt.

use burn::module::{Module, Param};
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use rand::SeedableRng;
use rand_distr::Distribution;

use super::PromptError;
use super::buckets::encode_rows;
use super::layout::{ExpertLayout, PromptSequences};
use crate::clip::{DeepPrompts, TextEncoder};
use crate::tokenizer::ClipTokenizer;

/// One learnable context per expert: `[n_ctx_g, width]` vectors in the text encoder's token
/// embedding space (`None` for an expert whose template has no words besides the class name).
#[derive(Module, Debug)]
pub struct PromptPool<B: Backend> {
    /// Context vectors of each expert.
    pub ctx: Vec<Option<Param<Tensor<B, 2>>>>,
    #[module(skip)]
    layouts: Vec<ExpertLayout>,
    #[module(skip)]
    width: usize,
    /// The classification prompts leave out the templates' final periods (see
    /// [`super::LayoutOptions`]).
    #[module(skip)]
    classify_without_period: bool,
}

impl<B: Backend> PromptPool<B> {
    /// Initialises each expert's context: from the token embeddings of its template's words, or at
    /// random (`N(0, std²)`, seeded by `seed` and the expert's index).
    pub fn new(
        layouts: Vec<ExpertLayout>,
        text: &TextEncoder<B>,
        seed: u64,
        device: &B::Device,
    ) -> Self {
        let width = text.width();
        let ctx = layouts
            .iter()
            .enumerate()
            .map(|(g, layout)| {
                let n = layout.n_ctx();
                if n == 0 {
                    return None;
                }
                let value = match (&layout.init_ids, &layout.init) {
                    (Some(ids), _) => {
                        let ids: Vec<i64> = ids.iter().map(|&i| i64::from(i)).collect();
                        let ids =
                            Tensor::<B, 2, Int>::from_data(TensorData::new(ids, [1, n]), device);
                        text.embed(ids).reshape([n, width]).detach()
                    }
                    (None, super::ExpertInit::Random { std, .. }) => {
                        let mut rng = rand::rngs::StdRng::seed_from_u64(
                            seed ^ (0x9e37_79b9 * (g as u64 + 1)),
                        );
                        let normal = rand_distr::Normal::new(0.0f32, *std).expect("finite std");
                        let values: Vec<f32> =
                            (0..n * width).map(|_| normal.sample(&mut rng)).collect();
                        Tensor::from_data(TensorData::new(values, [n, width]), device)
                    }
                    (None, init) => unreachable!("layout without ids for {init:?}"),
                };
                Some(Param::from_tensor(value))
            })
            .collect();
        Self {
            ctx,
            layouts,
            width,
            classify_without_period: false,
        }
    }

    /// The pool with its classification prompts built without the templates' final periods
    /// (`without`), or with them.
    pub fn classifying_without_period(mut self, without: bool) -> Self {
        self.classify_without_period = without;
        self
    }

    /// The experts' layouts.
    pub fn layouts(&self) -> &[ExpertLayout] {
        &self.layouts
    }

    /// Number of experts.
    pub fn experts(&self) -> usize {
        self.layouts.len()
    }

    /// Width of the context vectors.
    pub fn width(&self) -> usize {
        self.width
    }

    /// The context table `[1 + Σ n_ctx, width]`: a zero row, then every expert's context in order
    /// (what [`ClassPrompts::ctx_index`] points into).
    pub fn table(&self, device: &B::Device) -> Tensor<B, 2> {
        let mut parts = vec![Tensor::zeros([1, self.width], device)];
        parts.extend(self.ctx.iter().flatten().map(Param::val));
        Tensor::cat(parts, 0)
    }

    /// Lays out every expert's classification prompts with `classnames` and embeds the fixed
    /// tokens with the (frozen) text encoder's token embedding.
    pub fn class_prompts(
        &self,
        text: &TextEncoder<B>,
        tokenizer: &ClipTokenizer,
        classnames: &[String],
        device: &B::Device,
    ) -> Result<ClassPrompts<B>, PromptError> {
        let period = !self.classify_without_period;
        self.prompts_with_period(text, tokenizer, classnames, period, device)
    }

    /// [`Self::class_prompts`] with the templates' final periods always kept: the prompts of the
    /// text-level loss.
    pub fn text_loss_prompts(
        &self,
        text: &TextEncoder<B>,
        tokenizer: &ClipTokenizer,
        classnames: &[String],
        device: &B::Device,
    ) -> Result<ClassPrompts<B>, PromptError> {
        self.prompts_with_period(text, tokenizer, classnames, true, device)
    }

    fn prompts_with_period(
        &self,
        text: &TextEncoder<B>,
        tokenizer: &ClipTokenizer,
        classnames: &[String],
        period: bool,
        device: &B::Device,
    ) -> Result<ClassPrompts<B>, PromptError> {
        let context = text.context_length();
        let seqs =
            PromptSequences::with_period(&self.layouts, classnames, tokenizer, context, period)?;
        Ok(ClassPrompts::from_sequences(
            &seqs, text, classnames, device,
        ))
    }
}

/// The fixed part of all `E × C` prompts for one list of class names: the token embeddings of
/// SOT, class names, periods and EOT (zeros at context positions and after EOT), and where each
/// context vector goes. Row `g * C + c` is expert `g` with class `c`.
///
/// The prompts of a step are `fixed + embedding(table, ctx_index)`: one gather, no per-class
/// concatenation.
///
/// It is a module of constant tensors (no parameters), so that it follows a model holding it
/// through `valid()` and device moves.
#[derive(Module, Debug)]
pub struct ClassPrompts<B: Backend> {
    /// `[E * C, len, width]`.
    pub fixed: Tensor<B, 3>,
    /// `[E * C, len]` indices into [`PromptPool::table`].
    pub ctx_index: Tensor<B, 2, Int>,
    /// EOT position of each row.
    #[module(skip)]
    pub eot: Vec<usize>,
    /// Number of experts.
    #[module(skip)]
    pub experts: usize,
    /// The class names, in order.
    #[module(skip)]
    pub classnames: Vec<String>,
}

impl<B: Backend> ClassPrompts<B> {
    /// Moves laid-out sequences onto the device, embedding their fixed tokens.
    pub fn from_sequences(
        seqs: &PromptSequences,
        text: &TextEncoder<B>,
        classnames: &[String],
        device: &B::Device,
    ) -> Self {
        let rows = seqs.experts * seqs.classes;
        let shape = [rows, seqs.len];
        let ids = Tensor::<B, 2, Int>::from_data(TensorData::new(seqs.ids.clone(), shape), device);
        let mask =
            Tensor::<B, 2>::from_data(TensorData::new(seqs.fixed_mask.clone(), shape), device);
        let fixed = (text.embed(ids) * mask.unsqueeze_dim(2)).detach();
        let ctx_index =
            Tensor::<B, 2, Int>::from_data(TensorData::new(seqs.ctx_index.clone(), shape), device);
        Self {
            fixed,
            ctx_index,
            eot: seqs.eot.clone(),
            experts: seqs.experts,
            classnames: classnames.to_vec(),
        }
    }

    /// Number of classes `C`.
    pub fn classes(&self) -> usize {
        self.classnames.len()
    }

    /// Number of rows `E * C`.
    pub fn rows(&self) -> usize {
        self.eot.len()
    }

    /// Text-encoder outputs `[N, rows, D]` (not normalised) of every row once per context table
    /// of `tables` (`[N, T, width]`, each laid out as [`PromptPool::table`]): the prompts of a
    /// method whose contexts differ per image (CoCoOp), encoded together in buckets of similar
    /// length of at most `chunk` rows.
    pub fn encode_per_table(
        &self,
        text: &TextEncoder<B>,
        tables: Tensor<B, 3>,
        chunk: usize,
    ) -> Tensor<B, 3> {
        let [n, t, width] = tables.dims();
        let rows = self.rows();
        let [_, len, _] = self.fixed.dims();
        let device = self.fixed.device();
        // Table `k`'s rows follow the earlier tables' in one table; each copy of the prompts
        // points into its own.
        let offsets: Vec<i64> = (0..n).map(|k| (k * t) as i64).collect();
        let offsets = Tensor::<B, 1, Int>::from_data(TensorData::new(offsets, [n]), &device)
            .reshape([n, 1, 1]);
        let index =
            (self.ctx_index.clone().unsqueeze_dim::<3>(0) + offsets).reshape([n * rows, len]);
        let fixed = self
            .fixed
            .clone()
            .unsqueeze_dim::<4>(0)
            .repeat_dim(0, n)
            .reshape([n * rows, len, self.fixed.dims()[2]]);
        let eot: Vec<usize> = (0..n).flat_map(|_| self.eot.iter().copied()).collect();
        let table = tables.reshape([n * t, width]);
        let encoded = encode_rows(
            text,
            &fixed,
            &index,
            &eot,
            table,
            &DeepPrompts::none(),
            chunk,
        );
        let d = encoded.dims()[1];
        encoded.reshape([n, rows, d])
    }

    /// Text-encoder outputs `[len, D]` (not normalised) of rows `start..start + len` with the
    /// contexts from `table`, encoded in buckets of similar length of at most `chunk` rows.
    pub fn encode(
        &self,
        text: &TextEncoder<B>,
        table: Tensor<B, 2>,
        start: usize,
        len: usize,
        chunk: usize,
    ) -> Tensor<B, 2> {
        let fixed = self.fixed.clone().narrow(0, start, len);
        let index = self.ctx_index.clone().narrow(0, start, len);
        encode_rows(
            text,
            &fixed,
            &index,
            &self.eot[start..start + len],
            table,
            &DeepPrompts::none(),
            chunk,
        )
    }

    /// Text-encoder outputs `[rows, D]` (not normalised) of every row with the contexts from
    /// `table` and the deep prompts `deep` at the context positions (IVLP, MaPLe: one expert, its
    /// context right after SOT), encoded in buckets of similar length of at most `chunk` rows.
    pub fn encode_prompted(
        &self,
        text: &TextEncoder<B>,
        table: Tensor<B, 2>,
        deep: &DeepPrompts<B>,
        chunk: usize,
    ) -> Tensor<B, 2> {
        encode_rows(
            text,
            &self.fixed,
            &self.ctx_index,
            &self.eot,
            table,
            deep,
            chunk,
        )
    }
}
