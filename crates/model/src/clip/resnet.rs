//! OpenAI's ModifiedResNet image tower (RN50, RN101, RN50x4, RN50x16, RN50x64): a stem of three
//! 3×3 convolutions and a 2×2 average pool, four stages of bottleneck blocks whose strided
//! blocks downsample by average pooling (anti-aliased, instead of strided convolutions), and
//! attention pooling ([`super::attention_pool`]).
//!
//! Tensors are named as in OpenAI's `model.py` (`visual.layer1.0.conv1.weight`,
//! `visual.layer2.0.downsample.0.weight`, `visual.bn1.running_var`, …), which open_clip keeps.
//! BatchNorm runs as in evaluation, from the checkpoint's running statistics.

use burn::module::{Module, Param};
use burn::nn::PaddingConfig2d;
use burn::nn::conv::Conv2d;
use burn::tensor::activation::relu;
use burn::tensor::backend::Backend;
use burn::tensor::module::avg_pool2d;
use burn::tensor::{FloatDType, Tensor};

use super::attention_pool::AttentionPool;
use super::transformer::param;
use crate::config::ClipConfig;
use crate::precision::dtype_of;
use crate::weights::{StateDict, WeightsError};

/// PyTorch's `BatchNorm2d` epsilon, which OpenAI's and open_clip's ResNets keep.
const BATCH_NORM_EPS: f64 = 1e-5;

/// The channels of a bottleneck block's output per channel of its middle: ResNet's expansion.
const EXPANSION: usize = 4;

/// Stem → four stages → attention pooling.
#[derive(Module, Debug)]
pub struct ModifiedResNet<B: Backend> {
    conv1: Conv2d<B>,
    bn1: FrozenBatchNorm<B>,
    conv2: Conv2d<B>,
    bn2: FrozenBatchNorm<B>,
    conv3: Conv2d<B>,
    bn3: FrozenBatchNorm<B>,
    layer1: Vec<Bottleneck<B>>,
    layer2: Vec<Bottleneck<B>>,
    layer3: Vec<Bottleneck<B>>,
    layer4: Vec<Bottleneck<B>>,
    attnpool: AttentionPool<B>,
    image_size: usize,
}

impl<B: Backend> ModifiedResNet<B> {
    /// Takes the `visual.*` tensors of an OpenAI-layout ResNet CLIP (`config.vision` is a ResNet's).
    pub(crate) fn load(
        state: &mut StateDict,
        config: &ClipConfig,
        device: &B::Device,
    ) -> Result<Self, WeightsError> {
        let v = &config.vision;
        let stages = v.resnet_stages.ok_or_else(|| {
            WeightsError::Config("the image tower's configuration is not a ResNet's".into())
        })?;
        let w = v.width;
        let half = w / 2;
        let stem = |state: &mut StateDict, i: usize, [out, inp]: [usize; 2], stride| {
            Ok::<_, WeightsError>((
                conv(
                    state,
                    &format!("visual.conv{i}.weight"),
                    [out, inp, 3],
                    stride,
                    device,
                )?,
                FrozenBatchNorm::load(state, &format!("visual.bn{i}"), out, device)?,
            ))
        };
        let (conv1, bn1) = stem(state, 1, [half, 3], 2)?;
        let (conv2, bn2) = stem(state, 2, [half, half], 1)?;
        let (conv3, bn3) = stem(state, 3, [w, half], 1)?;
        let mut inplanes = w;
        let mut layers = Vec::with_capacity(4);
        for (i, blocks) in stages.into_iter().enumerate() {
            let planes = w << i;
            let stride = if i == 0 { 1 } else { 2 };
            let stage = (0..blocks)
                .map(|j| {
                    let prefix = format!("visual.layer{}.{j}.", i + 1);
                    let (inp, s) = if j == 0 {
                        (inplanes, stride)
                    } else {
                        (planes * EXPANSION, 1)
                    };
                    Bottleneck::load(state, &prefix, [inp, planes], s, device)
                })
                .collect::<Result<Vec<_>, _>>()?;
            inplanes = planes * EXPANSION;
            layers.push(stage);
        }
        let [layer1, layer2, layer3, layer4] = <[_; 4]>::try_from(layers).expect("four stages");
        Ok(Self {
            conv1,
            bn1,
            conv2,
            bn2,
            conv3,
            bn3,
            layer1,
            layer2,
            layer3,
            layer4,
            attnpool: AttentionPool::load(state, inplanes, v, config.embed_dim, device)?,
            image_size: v.image_size,
        })
    }

    /// Side of the square images this encoder takes.
    pub fn image_size(&self) -> usize {
        self.image_size
    }

    /// Image features (not normalised, f32) of preprocessed images `[batch, 3, size, size]`,
    /// computed in the type of the encoder's weights.
    pub fn forward(&self, images: Tensor<B, 4>) -> Tensor<B, 2> {
        let x = images.cast(dtype_of(&self.conv1.weight));
        let x = relu(self.bn1.forward(convolve(&self.conv1, x)));
        let x = relu(self.bn2.forward(convolve(&self.conv2, x)));
        let x = relu(self.bn3.forward(convolve(&self.conv3, x)));
        let mut x = avg_pool2d(x, [2, 2], [2, 2], [0, 0], true, false);
        for block in [&self.layer1, &self.layer2, &self.layer3, &self.layer4]
            .into_iter()
            .flatten()
        {
            x = block.forward(x);
        }
        self.attnpool.forward(x).cast(FloatDType::F32)
    }
}

/// A 1×1 → 3×3 → (average pool) → 1×1 bottleneck with a residual connection.
#[derive(Module, Debug)]
pub struct Bottleneck<B: Backend> {
    conv1: Conv2d<B>,
    bn1: FrozenBatchNorm<B>,
    conv2: Conv2d<B>,
    bn2: FrozenBatchNorm<B>,
    conv3: Conv2d<B>,
    bn3: FrozenBatchNorm<B>,
    downsample: Option<Downsample<B>>,
    stride: usize,
}

impl<B: Backend> Bottleneck<B> {
    /// The block under `prefix` (`visual.layer2.0.`) taking `inplanes` channels to
    /// `planes * 4`, shrinking the image by `stride`.
    fn load(
        state: &mut StateDict,
        prefix: &str,
        [inplanes, planes]: [usize; 2],
        stride: usize,
        device: &B::Device,
    ) -> Result<Self, WeightsError> {
        let out = planes * EXPANSION;
        let bn = |state: &mut StateDict, name: &str, channels| {
            FrozenBatchNorm::load(state, &format!("{prefix}{name}"), channels, device)
        };
        let name = |name: &str| format!("{prefix}{name}.weight");
        let downsample = (stride > 1 || inplanes != out)
            .then(|| {
                Ok::<_, WeightsError>(Downsample {
                    conv: conv(state, &name("downsample.0"), [out, inplanes, 1], 1, device)?,
                    bn: bn(state, "downsample.1", out)?,
                })
            })
            .transpose()?;
        Ok(Self {
            conv1: conv(state, &name("conv1"), [planes, inplanes, 1], 1, device)?,
            bn1: bn(state, "bn1", planes)?,
            conv2: conv(state, &name("conv2"), [planes, planes, 3], 1, device)?,
            bn2: bn(state, "bn2", planes)?,
            conv3: conv(state, &name("conv3"), [out, planes, 1], 1, device)?,
            bn3: bn(state, "bn3", out)?,
            downsample,
            stride,
        })
    }

    fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let out = relu(self.bn1.forward(convolve(&self.conv1, x.clone())));
        let out = relu(self.bn2.forward(convolve(&self.conv2, out)));
        let out = self
            .bn3
            .forward(convolve(&self.conv3, pool(out, self.stride)));
        let identity = match &self.downsample {
            Some(d) => d.bn.forward(convolve(&d.conv, pool(x, self.stride))),
            None => x,
        };
        relu(out + identity)
    }
}

/// The residual branch of a block that changes the width or the size: average pool of the
/// block's stride, 1×1 convolution, BatchNorm (OpenAI's `downsample` `-1`, `0` and `1`).
#[derive(Module, Debug)]
pub struct Downsample<B: Backend> {
    conv: Conv2d<B>,
    bn: FrozenBatchNorm<B>,
}

/// `conv` applied to `x`; a 1×1 convolution (most of a bottleneck's) as one batched matrix
/// product `[out, in] · [in, H·W]` per image. That is the same sum, and it sidesteps a Burn 0.21
/// WGPU convolution kernel that computes some 1×1 shapes wrongly (8 → 32 channels on 16×16 maps
/// of 5 images is off by whole units; `crates/cli/tests/wgpu.rs` checks the ResNet fixture there).
fn convolve<B: Backend>(conv: &Conv2d<B>, x: Tensor<B, 4>) -> Tensor<B, 4> {
    if conv.kernel_size != [1, 1] || conv.stride != [1, 1] {
        return conv.forward(x);
    }
    let [n, c, h, w] = x.dims();
    let [out, ..] = conv.weight.dims();
    let weight = conv.weight.val().reshape([1, out, c]).expand([n, out, c]);
    weight
        .matmul(x.reshape([n, c, h * w]))
        .reshape([n, out, h, w])
}

/// `stride`×`stride` average pooling (nothing for stride 1).
fn pool<B: Backend>(x: Tensor<B, 4>, stride: usize) -> Tensor<B, 4> {
    if stride > 1 {
        avg_pool2d(x, [stride; 2], [stride; 2], [0, 0], true, false)
    } else {
        x
    }
}

/// A bias-free `k`×`k` convolution (`shape` = `[out, in, k]`) padded to keep the size at stride 1.
fn conv<B: Backend>(
    state: &mut StateDict,
    name: &str,
    [out, inp, k]: [usize; 3],
    stride: usize,
    device: &B::Device,
) -> Result<Conv2d<B>, WeightsError> {
    let pad = k / 2;
    Ok(Conv2d {
        weight: param(state, name, [out, inp, k, k], device)?,
        bias: None,
        stride: [stride; 2],
        kernel_size: [k, k],
        dilation: [1, 1],
        groups: 1,
        padding: PaddingConfig2d::Explicit(pad, pad, pad, pad),
    })
}

/// BatchNorm in evaluation mode: `(x - running_mean) / sqrt(running_var + eps) * weight + bias`
/// per channel. The four tensors are kept as the checkpoint has them, so that the model is written
/// back exactly (`Clip::to_state_dict`); the per-channel scale and shift they make are a few
/// operations on vectors per call.
#[derive(Module, Debug)]
pub struct FrozenBatchNorm<B: Backend> {
    weight: Param<Tensor<B, 1>>,
    bias: Param<Tensor<B, 1>>,
    running_mean: Param<Tensor<B, 1>>,
    running_var: Param<Tensor<B, 1>>,
}

impl<B: Backend> FrozenBatchNorm<B> {
    /// `{prefix}.weight`, `.bias`, `.running_mean` and `.running_var` of `channels`.
    fn load(
        state: &mut StateDict,
        prefix: &str,
        channels: usize,
        device: &B::Device,
    ) -> Result<Self, WeightsError> {
        let mut take = |name: &str| param(state, &format!("{prefix}.{name}"), [channels], device);
        Ok(Self {
            weight: take("weight")?,
            bias: take("bias")?,
            running_mean: take("running_mean")?,
            running_var: take("running_var")?,
        })
    }

    /// Normalises `x` `[N, C, H, W]`; the scale and shift are computed in f32.
    ///
    /// They are repeated to `[N, C, 1, 1]` (a few hundred values) before they multiply and add:
    /// broadcast from `[1, C, 1, 1]`, their batch axis would have stride 0, which Burn's CPU
    /// backend walks one element at a time instead of as one scalar per `H × W` row.
    fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let f32 = |p: &Param<Tensor<B, 1>>| p.val().cast(FloatDType::F32);
        let scale = f32(&self.weight) / (f32(&self.running_var) + BATCH_NORM_EPS).sqrt();
        let shift = f32(&self.bias) - f32(&self.running_mean) * scale.clone();
        let [n, c, ..] = x.dims();
        let dtype = x.dtype();
        let per_image = |t: Tensor<B, 1>| t.cast(dtype).reshape([1, c, 1, 1]).repeat_dim(0, n);
        x * per_image(scale) + per_image(shift)
    }
}
