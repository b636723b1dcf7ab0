//! The way back from a (trained) model to canonical weights: [`Clip::to_state_dict`] gives the
//! OpenAI-layout tensors that [`Clip::from_weights`] takes, so a model trained here can be saved
//! with [`crate::weights::native::save`] and loaded like any checkpoint. Also the trainable
//! temperature, for code that trains CLIP itself.

use std::collections::BTreeMap;

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};

use super::Clip;
use crate::weights::StateDict;

impl<B: Backend> Clip<B> {
    /// Every parameter as an f32 tensor under its canonical OpenAI-layout name
    /// (`visual.conv1.weight`, `transformer.resblocks.0.attn.in_proj_weight`, …), with linear
    /// weights in PyTorch's `[out, in]` layout: exactly what [`Clip::from_weights`] consumes.
    pub fn to_state_dict(&self) -> StateDict {
        let mut collector = Collector::default();
        self.visit(&mut collector);
        StateDict::new(collector.tensors)
    }

    /// The raw (log) temperature as a tensor `[1]` that stays in the autodiff graph, for training
    /// CLIP itself; classifiers multiply cosines by its exponential.
    pub fn logit_scale_tensor(&self) -> Tensor<B, 1> {
        self.logit_scale.val()
    }

    /// Replaces the raw (log) temperature by `f(current)`, keeping the parameter's identity (so an
    /// optimizer's state for it survives), e.g. to clamp it after an update as CLIP's training does.
    pub fn map_logit_scale(mut self, f: impl FnOnce(Tensor<B, 1>) -> Tensor<B, 1>) -> Self {
        let require_grad = self.logit_scale.val().is_require_grad();
        self.logit_scale = self.logit_scale.map(|t| {
            let t = f(t).detach();
            if require_grad { t.require_grad() } else { t }
        });
        self
    }
}

/// Collects parameters with their module paths and renames them to the OpenAI layout.
#[derive(Default)]
struct Collector {
    path: Vec<String>,
    tensors: BTreeMap<String, TensorData>,
}

impl<B: Backend> ModuleVisitor<B> for Collector {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let burn_path = self.path.join(".");
        let (name, transpose) = canonical_name(&burn_path);
        let data = param.val().into_data().convert::<f32>();
        let data = if transpose { transpose_2d(data) } else { data };
        self.tensors.insert(name, data);
    }
}

/// Maps a Burn module path of [`Clip`] (`vision.Vit.transformer.blocks.0.attn.in_proj.weight`) to the
/// canonical name (`visual.transformer.resblocks.0.attn.in_proj_weight`), and says whether the
/// tensor is a linear weight stored as `[in, out]` that PyTorch stores as `[out, in]`.
fn canonical_name(path: &str) -> (String, bool) {
    // The image tower's enum variant (`vision.Vit.`, `vision.ResNet.`) is no part of the name.
    let (prefix, rest) = if let Some(rest) = ["vision.Vit.", "vision.ResNet."]
        .iter()
        .find_map(|p| path.strip_prefix(p))
    {
        ("visual.", rest)
    } else if let Some(rest) = path.strip_prefix("text.") {
        ("", rest)
    } else {
        ("", path)
    };
    let mut parts: Vec<String> = rest.split('.').map(String::from).collect();
    let is_linear_weight = parts.len() >= 2
        && parts[parts.len() - 1] == "weight"
        && matches!(
            parts[parts.len() - 2].as_str(),
            "in_proj" | "out_proj" | "c_fc" | "c_proj" | "q_proj" | "k_proj" | "v_proj"
        );
    // The ResNet's attention pooling has its `c_proj` at its top; a residual block, in its MLP.
    let in_block = !parts.iter().any(|p| p == "attnpool");
    for part in parts.iter_mut() {
        *part = match part.as_str() {
            "blocks" => "resblocks".into(),
            "c_fc" => "mlp.c_fc".into(),
            "c_proj" if in_block => "mlp.c_proj".into(),
            "gamma" => "weight".into(),
            "beta" => "bias".into(),
            "token_embedding" => "token_embedding.weight".into(),
            _ => std::mem::take(part),
        };
    }
    let mut name = format!("{prefix}{}", parts.join("."));
    // OpenAI's `downsample` is a `Sequential`: `-1` the pool, `0` the conv, `1` the norm.
    for (from, to) in [
        (".downsample.conv.", ".downsample.0."),
        (".downsample.bn.", ".downsample.1."),
    ] {
        name = name.replace(from, to);
    }
    // The packed attention input projection is a bare pair of tensors in PyTorch.
    for (from, to) in [
        ("attn.in_proj.weight", "attn.in_proj_weight"),
        ("attn.in_proj.bias", "attn.in_proj_bias"),
    ] {
        if name.ends_with(from) {
            name = format!("{}{to}", &name[..name.len() - from.len()]);
        }
    }
    (name, is_linear_weight)
}

/// Transposes a 2-D f32 tensor's data.
fn transpose_2d(data: TensorData) -> TensorData {
    let [rows, cols] = [data.shape[0], data.shape[1]];
    let values = data.to_vec::<f32>().expect("f32 data");
    let mut out = vec![0f32; values.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = values[r * cols + c];
        }
    }
    TensorData::new(out, [cols, rows])
}

#[cfg(test)]
mod tests {
    use super::canonical_name;

    #[test]
    fn burn_paths_map_to_openai_names() {
        for (path, name, transpose) in [
            ("vision.Vit.conv1.weight", "visual.conv1.weight", false),
            ("vision.Vit.ln_pre.gamma", "visual.ln_pre.weight", false),
            (
                "vision.ResNet.bn1.running_var",
                "visual.bn1.running_var",
                false,
            ),
            (
                "vision.ResNet.layer2.0.downsample.conv.weight",
                "visual.layer2.0.downsample.0.weight",
                false,
            ),
            (
                "vision.ResNet.layer2.0.downsample.bn.bias",
                "visual.layer2.0.downsample.1.bias",
                false,
            ),
            (
                "vision.ResNet.attnpool.c_proj.weight",
                "visual.attnpool.c_proj.weight",
                true,
            ),
            (
                "vision.ResNet.attnpool.q_proj.bias",
                "visual.attnpool.q_proj.bias",
                false,
            ),
            (
                "vision.Vit.transformer.blocks.3.attn.in_proj.weight",
                "visual.transformer.resblocks.3.attn.in_proj_weight",
                true,
            ),
            (
                "text.transformer.blocks.0.attn.in_proj.bias",
                "transformer.resblocks.0.attn.in_proj_bias",
                false,
            ),
            (
                "text.transformer.blocks.1.attn.out_proj.weight",
                "transformer.resblocks.1.attn.out_proj.weight",
                true,
            ),
            (
                "text.transformer.blocks.1.c_fc.bias",
                "transformer.resblocks.1.mlp.c_fc.bias",
                false,
            ),
            ("text.token_embedding", "token_embedding.weight", false),
            ("text.ln_final.beta", "ln_final.bias", false),
            ("text.text_projection", "text_projection", false),
            ("logit_scale", "logit_scale", false),
        ] {
            assert_eq!(
                canonical_name(path),
                (name.to_string(), transpose),
                "{path}"
            );
        }
    }
}
