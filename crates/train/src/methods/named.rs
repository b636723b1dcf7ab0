//! Trainable tensors by checkpoint name, for the methods whose learned tensors are not only a
//! mixture's (CoCoOp's meta-net, the deep prompts): a reference to a parameter of either rank, and
//! taking a saved tensor of the right shape into a new parameter.

use std::collections::BTreeMap;

use burn::module::{Param, ParamId};
use burn::nn::Linear;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};

use crate::TrainError;

/// A parameter of rank 1 or 2.
pub(crate) enum ParamRef<'a, B: Backend> {
    /// A bias.
    One(&'a Param<Tensor<B, 1>>),
    /// A weight or a table of tokens.
    Two(&'a Param<Tensor<B, 2>>),
}

impl<B: Backend> ParamRef<'_, B> {
    /// Its id (what the optimiser's state is keyed by).
    pub(crate) fn id(&self) -> ParamId {
        match self {
            Self::One(p) => p.id,
            Self::Two(p) => p.id,
        }
    }

    /// Its values.
    pub(crate) fn data(&self) -> TensorData {
        match self {
            Self::One(p) => p.val().into_data(),
            Self::Two(p) => p.val().into_data(),
        }
    }
}

/// Parameter ids split by rank, as the optimiser step takes them.
pub(crate) fn ids_by_rank<B: Backend>(
    params: &[(String, ParamRef<'_, B>)],
) -> (Vec<ParamId>, Vec<ParamId>) {
    let mut one = Vec::new();
    let mut two = Vec::new();
    for (_, p) in params {
        match p {
            ParamRef::One(p) => one.push(p.id),
            ParamRef::Two(p) => two.push(p.id),
        }
    }
    (one, two)
}

/// The bias of a layer that has one (every layer the methods build).
pub(crate) fn layer_bias<B: Backend>(layer: &Linear<B>) -> &Param<Tensor<B, 1>> {
    layer
        .bias
        .as_ref()
        .expect("the methods' layers have biases")
}

/// A new parameter shaped like `like` from the checkpoint tensor `name`, taken out of `saved`.
pub(crate) fn take_param<B: Backend, const D: usize>(
    saved: &mut BTreeMap<String, TensorData>,
    name: &str,
    like: &Param<Tensor<B, D>>,
    device: &B::Device,
) -> Result<Param<Tensor<B, D>>, TrainError> {
    let shape = like.dims();
    let data = saved
        .remove(name)
        .ok_or_else(|| TrainError::Checkpoint(format!("the checkpoint has no tensor '{name}'")))?;
    if data.shape.as_slice() != shape.as_slice() {
        return Err(TrainError::Checkpoint(format!(
            "checkpoint tensor '{name}' has shape {:?}, the model needs {shape:?}",
            data.shape
        )));
    }
    Ok(Param::from_tensor(Tensor::from_data(data, device)))
}

/// A linear layer (weight in Burn's `[in, out]` layout, and bias) from the checkpoint tensors
/// `{prefix}.weight` and `{prefix}.bias`, shaped like `like`.
pub(crate) fn take_linear<B: Backend>(
    saved: &mut BTreeMap<String, TensorData>,
    prefix: &str,
    like: &Linear<B>,
    device: &B::Device,
) -> Result<Linear<B>, TrainError> {
    Ok(Linear {
        weight: take_param(saved, &format!("{prefix}.weight"), &like.weight, device)?,
        bias: Some(take_param(
            saved,
            &format!("{prefix}.bias"),
            layer_bias(like),
            device,
        )?),
    })
}

/// A linear layer's two tensors under `{prefix}.weight` and `{prefix}.bias`.
pub(crate) fn linear_params<'a, B: Backend>(
    prefix: &str,
    layer: &'a Linear<B>,
) -> [(String, ParamRef<'a, B>); 2] {
    [
        (format!("{prefix}.weight"), ParamRef::Two(&layer.weight)),
        (format!("{prefix}.bias"), ParamRef::One(layer_bias(layer))),
    ]
}
