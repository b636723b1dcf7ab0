//! The words of CLIP's vocabulary nearest to learned context vectors in its token embedding space,
//! by Euclidean and by cosine distance (as CoOp's `interpret_prompt.py` reports them). Candidates
//! come from one matrix product on the backend; their distances are then computed exactly on the
//! host, so that a context equal to a word's embedding is at distance 0 from it.

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use mocoop_model::Clip;
use mocoop_model::tokenizer::ClipTokenizer;
use serde::Serialize;

/// A word of the vocabulary and its distance to a context vector.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Near {
    /// The token, decoded (`<token N>` when it decodes to nothing).
    pub word: String,
    /// Its id.
    pub token: u32,
    /// The distance: Euclidean, or 1 − cosine similarity.
    pub distance: f64,
}

/// The nearest words of one context vector.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Neighbours {
    /// By Euclidean distance.
    pub euclidean: Vec<Near>,
    /// By cosine distance (tokens with an all-zero embedding have none and are left out).
    pub cosine: Vec<Near>,
}

/// CLIP's token embedding table `[vocabulary, width]`.
pub fn token_table<B: Backend>(clip: &Clip<B>, device: &B::Device) -> Tensor<B, 2> {
    let vocab = clip.config().text.vocab_size;
    let ids: Vec<i64> = (0..vocab as i64).collect();
    let ids = Tensor::<B, 2, Int>::from_data(TensorData::new(ids, [1, vocab]), device);
    let table = clip.text.embed(ids);
    let width = table.dims()[2];
    table.reshape([vocab, width])
}

/// The `top` nearest words of each of `vectors` (rows of the table's width).
pub fn nearest<B: Backend>(
    table: &Tensor<B, 2>,
    vectors: &[Vec<f32>],
    top: usize,
    tokenizer: &ClipTokenizer,
) -> anyhow::Result<Vec<Neighbours>> {
    if vectors.is_empty() {
        return Ok(Vec::new());
    }
    let [vocab, width] = table.dims();
    let device = table.device();
    let flat: Vec<f32> = vectors.concat();
    let c = Tensor::<B, 2>::from_data(TensorData::new(flat, [vectors.len(), width]), &device);
    let dots = c.matmul(table.clone().transpose());
    let norms = table.clone().powi_scalar(2).sum_dim(1).reshape([1, vocab]);
    let squared = (norms.clone() - dots.clone() * 2.0)
        .into_data()
        .to_vec::<f32>();
    let cosines = (dots / norms.sqrt()).into_data().to_vec::<f32>();
    let rows = vocab;
    let (squared, cosines) = match (squared, cosines) {
        (Ok(s), Ok(c)) => (s, c),
        _ => anyhow::bail!("reading the distances back"),
    };
    let host_table = table
        .clone()
        .into_data()
        .to_vec::<f32>()
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let embedding = |t: usize| &host_table[t * width..(t + 1) * width];
    let word = |t: usize| {
        let w = tokenizer.decode(&[t as u32]).trim().to_string();
        if w.is_empty() {
            format!("<token {t}>")
        } else {
            w
        }
    };
    let near = |t: usize, distance: f64| Near {
        word: word(t),
        token: t as u32,
        distance,
    };
    Ok(vectors
        .iter()
        .enumerate()
        .map(|(i, v)| {
            // |c|² is the same for every token, so |e|² − 2 c·e ranks them like the distance.
            let ranked = candidates(&squared[i * rows..(i + 1) * rows], top, false);
            let mut euclidean: Vec<Near> = ranked
                .into_iter()
                .map(|t| near(t, euclidean_distance(v, embedding(t))))
                .collect();
            euclidean.sort_by(|a, b| {
                a.distance
                    .total_cmp(&b.distance)
                    .then(a.token.cmp(&b.token))
            });
            euclidean.truncate(top);
            let ranked = candidates(&cosines[i * rows..(i + 1) * rows], top, true);
            let mut cosine: Vec<Near> = ranked
                .into_iter()
                .filter_map(|t| Some(near(t, cosine_distance(v, embedding(t))?)))
                .collect();
            cosine.sort_by(|a, b| {
                a.distance
                    .total_cmp(&b.distance)
                    .then(a.token.cmp(&b.token))
            });
            cosine.truncate(top);
            Neighbours { euclidean, cosine }
        })
        .collect())
}

/// The indices of the `4 × top` best finite scores (lowest, or highest with `descending`): more
/// than `top`, so that rounding in the fast scores cannot push a nearest word out.
fn candidates(scores: &[f32], top: usize, descending: bool) -> Vec<usize> {
    let mut order: Vec<usize> = (0..scores.len())
        .filter(|&t| scores[t].is_finite())
        .collect();
    let key = |t: &usize| if descending { -scores[*t] } else { scores[*t] };
    let keep = (top * 4).min(order.len());
    if keep == 0 {
        return Vec::new();
    }
    order.select_nth_unstable_by(keep - 1, |a, b| key(a).total_cmp(&key(b)));
    order.truncate(keep);
    order
}

fn euclidean_distance(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (f64::from(*x) - f64::from(*y)).powi(2))
        .sum::<f64>()
        .sqrt()
}

/// 1 − cosine similarity; `None` when either vector is zero.
fn cosine_distance(a: &[f32], b: &[f32]) -> Option<f64> {
    let dot: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| f64::from(*x) * f64::from(*y))
        .sum();
    let norm = |v: &[f32]| v.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    let (na, nb) = (norm(a), norm(b));
    (na > 0.0 && nb > 0.0).then(|| 1.0 - dot / (na * nb))
}
