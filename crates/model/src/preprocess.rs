//! Image preprocessing exactly as CLIP's evaluation transform: decode, convert to RGB, resize the
//! shorter side (bicubic), center crop, scale to [0, 1] and normalise per channel.
//!
//! A checkpoint may state other constants (open_clip's `preprocess_cfg`: mean, std, bilinear
//! interpolation, squashing instead of cropping); [`Preprocess`] holds them and travels in the
//! model's [`ClipConfig`](crate::config::ClipConfig).

use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use image::{DynamicImage, RgbImage};
use serde::{Deserialize, Serialize};

/// Per-channel mean of CLIP's training images (RGB), subtracted after scaling to [0, 1].
#[allow(clippy::excessive_precision)] // the published constants, digit for digit
pub const CLIP_MEAN: [f32; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];
/// Per-channel standard deviation of CLIP's training images (RGB).
#[allow(clippy::excessive_precision)] // the published constants, digit for digit
pub const CLIP_STD: [f32; 3] = [0.268_629_54, 0.261_302_58, 0.275_777_11];

/// The resampling filter of the resize, as open_clip's `preprocess_cfg.interpolation` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Interpolation {
    /// Pillow's bicubic filter (CLIP's).
    #[default]
    Bicubic,
    /// Pillow's bilinear (triangle) filter.
    Bilinear,
}

/// How the image is brought to a square, as open_clip's `preprocess_cfg.resize_mode` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResizeMode {
    /// Resize the shorter side to the model's size, then crop the centre (CLIP's).
    #[default]
    Shortest,
    /// Resize both sides to the model's size, ignoring the aspect ratio.
    Squash,
}

/// The evaluation transform a checkpoint was trained with: CLIP's unless its configuration says
/// otherwise (open_clip's `preprocess_cfg`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Preprocess {
    /// Per-channel mean (RGB), subtracted after scaling to [0, 1].
    pub mean: [f32; 3],
    /// Per-channel standard deviation (RGB).
    pub std: [f32; 3],
    /// The resize filter.
    #[serde(default)]
    pub interpolation: Interpolation,
    /// Crop or squash.
    #[serde(default)]
    pub resize_mode: ResizeMode,
}

impl Default for Preprocess {
    fn default() -> Self {
        Self {
            mean: CLIP_MEAN,
            std: CLIP_STD,
            interpolation: Interpolation::Bicubic,
            resize_mode: ResizeMode::Shortest,
        }
    }
}

impl Preprocess {
    /// Whether this is CLIP's own transform (so configurations need not record it).
    pub fn is_clip(&self) -> bool {
        *self == Self::default()
    }

    /// The whole evaluation transform with these settings: `[3, size, size]` floats, channels first.
    pub fn apply(&self, image: &RgbImage, size: u32) -> Vec<f32> {
        let square = match self.resize_mode {
            ResizeMode::Shortest => center_crop(
                &resize_shorter_side_with(image, size, self.interpolation),
                size,
            ),
            ResizeMode::Squash => resize_with(image, size, size, self.interpolation),
        };
        normalize_chw_with(&square, &self.mean, &self.std)
    }
}

/// An image that could not be read or decoded.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ImageError {
    /// The file.
    pub path: PathBuf,
    /// What went wrong (not found, not an image, corrupt, too large…).
    pub message: String,
}

/// Decodes an image file (JPEG, PNG, WebP, BMP; format sniffed from the content) into RGB.
/// Grayscale is replicated to three channels; alpha is dropped as PIL's `convert("RGB")` does.
pub fn load_rgb(path: &Path) -> Result<RgbImage, ImageError> {
    let error = |message: String| ImageError {
        path: path.to_path_buf(),
        message,
    };
    let reader = image::ImageReader::open(path)
        .map_err(|e| error(e.to_string()))?
        .with_guessed_format()
        .map_err(|e| error(e.to_string()))?;
    if reader.format().is_none() {
        return Err(error("not a recognised image format".into()));
    }
    let image = reader.decode().map_err(|e| error(e.to_string()))?;
    Ok(to_rgb(image))
}

/// Converts any decoded image to 8-bit RGB.
pub fn to_rgb(image: DynamicImage) -> RgbImage {
    match image {
        DynamicImage::ImageRgb8(rgb) => rgb,
        other => other.to_rgb8(),
    }
}

/// Resizes so that the shorter side is `size`, the longer side scaled as torchvision does
/// (`int(size * long / short)`), with Pillow's bicubic filter ([`resize_bicubic`]).
pub fn resize_shorter_side(image: &RgbImage, size: u32) -> RgbImage {
    resize_shorter_side_with(image, size, Interpolation::Bicubic)
}

/// [`resize_shorter_side`] with another filter.
fn resize_shorter_side_with(image: &RgbImage, size: u32, filter: Interpolation) -> RgbImage {
    let (w, h) = image.dimensions();
    let (short, long) = (w.min(h), w.max(h));
    let scaled_long = ((size as u64 * long as u64) / short.max(1) as u64) as u32;
    let (new_w, new_h) = if w <= h {
        (size, scaled_long)
    } else {
        (scaled_long, size)
    };
    resize_with(image, new_w, new_h, filter)
}

/// Resizes to `out_w`×`out_h` with `filter` (no work when the size is already right).
fn resize_with(image: &RgbImage, out_w: u32, out_h: u32, filter: Interpolation) -> RgbImage {
    if image.dimensions() == (out_w, out_h) {
        return image.clone();
    }
    match filter {
        Interpolation::Bicubic => resize_bicubic(image, out_w, out_h),
        Interpolation::Bilinear => resample(image, out_w, out_h, &BILINEAR),
    }
}

/// Fixed-point precision of the filter weights, as Pillow's 8-bit resampler uses.
const PRECISION_BITS: u32 = 32 - 8 - 2;

/// A separable resampling filter: its kernel and how far it reaches at scale 1 (Pillow's
/// `filter->support`).
struct Filter {
    kernel: fn(f64) -> f64,
    support: f64,
}

/// Pillow's `BICUBIC`.
const BICUBIC: Filter = Filter {
    kernel: bicubic,
    support: 2.0,
};

/// Pillow's `BILINEAR`: the triangle kernel.
const BILINEAR: Filter = Filter {
    kernel: |x| (1.0 - x.abs()).max(0.0),
    support: 1.0,
};

/// Pillow's bicubic kernel (a = -0.5).
fn bicubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

/// For each output position along one axis: the first input index and the fixed-point weights of
/// the input samples it mixes (antialiased: the kernel widens by the shrink factor).
fn axis_weights(in_size: u32, out_size: u32, filter: &Filter) -> Vec<(usize, Vec<i64>)> {
    let scale = in_size as f64 / out_size as f64;
    let filter_scale = scale.max(1.0);
    let support = filter.support * filter_scale;
    (0..out_size)
        .map(|i| {
            let center = (i as f64 + 0.5) * scale;
            let lo = ((center - support + 0.5) as i64).max(0) as usize;
            let hi = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
            let weights: Vec<f64> = (lo..hi)
                .map(|j| (filter.kernel)((j as f64 - center + 0.5) / filter_scale))
                .collect();
            let total: f64 = weights.iter().sum();
            let unit = (1i64 << PRECISION_BITS) as f64;
            let fixed = weights
                .iter()
                .map(|w| {
                    let w = if total != 0.0 { w / total } else { *w };
                    // C's float-to-int conversion truncates toward zero.
                    if w < 0.0 {
                        (w * unit - 0.5) as i64
                    } else {
                        (w * unit + 0.5) as i64
                    }
                })
                .collect();
            (lo, fixed)
        })
        .collect()
}

/// One resampling pass along x (`horizontal`) or y, rounding and clamping to 8 bits as Pillow does.
fn resample_pass(image: &RgbImage, out_len: u32, horizontal: bool, filter: &Filter) -> RgbImage {
    let (w, h) = image.dimensions();
    let in_len = if horizontal { w } else { h };
    let weights = axis_weights(in_len, out_len, filter);
    let (out_w, out_h) = if horizontal {
        (out_len, h)
    } else {
        (w, out_len)
    };
    let src = image.as_raw();
    let mut out = vec![0u8; (out_w * out_h * 3) as usize];
    let half = 1i64 << (PRECISION_BITS - 1);
    for y in 0..out_h as usize {
        for x in 0..out_w as usize {
            let (i, other) = if horizontal { (x, y) } else { (y, x) };
            let (first, taps) = &weights[i];
            for c in 0..3 {
                let mut acc = half;
                for (t, k) in taps.iter().enumerate() {
                    let j = first + t;
                    let (sx, sy) = if horizontal { (j, other) } else { (other, j) };
                    acc += src[(sy * w as usize + sx) * 3 + c] as i64 * k;
                }
                out[(y * out_w as usize + x) * 3 + c] = (acc >> PRECISION_BITS).clamp(0, 255) as u8;
            }
        }
    }
    RgbImage::from_raw(out_w, out_h, out).expect("out_w*out_h*3 bytes")
}

/// Resizes to `out_w`×`out_h` with bicubic filtering, antialiased when shrinking, reproducing
/// Pillow's `resize(size, BICUBIC)` bit for bit: fixed-point weights, a horizontal pass then a
/// vertical pass, each rounded and clamped to 8 bits. Exactness matters because CLIP's reference
/// preprocessing is Pillow's, and bicubic overshoot clamped between passes changes pixels near edges.
///
/// # Panics
/// If an output side is zero.
pub fn resize_bicubic(image: &RgbImage, out_w: u32, out_h: u32) -> RgbImage {
    resample(image, out_w, out_h, &BICUBIC)
}

/// [`resize_bicubic`]'s two passes with any filter.
fn resample(image: &RgbImage, out_w: u32, out_h: u32, filter: &Filter) -> RgbImage {
    assert!(out_w > 0 && out_h > 0, "cannot resize to {out_w}x{out_h}");
    let (w, h) = image.dimensions();
    let image = if out_w != w {
        resample_pass(image, out_w, true, filter)
    } else {
        image.clone()
    };
    if out_h != h {
        resample_pass(&image, out_h, false, filter)
    } else {
        image
    }
}

/// Python's `round` (half to even), which torchvision uses to place the center crop and to size
/// random crops.
pub fn round_half_even(x: f64) -> i64 {
    let r = x.round();
    if (x - x.trunc()).abs() == 0.5 && (r as i64) % 2 != 0 {
        (r - x.signum()) as i64
    } else {
        r as i64
    }
}

/// Crops the central `size`×`size` square, placed as torchvision's `CenterCrop` places it.
/// Images smaller than `size` are zero-padded first, as torchvision does.
pub fn center_crop(image: &RgbImage, size: u32) -> RgbImage {
    let (w, h) = image.dimensions();
    let top = round_half_even((h as f64 - size as f64) / 2.0);
    let left = round_half_even((w as f64 - size as f64) / 2.0);
    RgbImage::from_fn(size, size, |x, y| {
        let (sx, sy) = (x as i64 + left, y as i64 + top);
        if sx >= 0 && sy >= 0 && (sx as u32) < w && (sy as u32) < h {
            *image.get_pixel(sx as u32, sy as u32)
        } else {
            image::Rgb([0, 0, 0])
        }
    })
}

/// Scales to [0, 1], normalises with [`CLIP_MEAN`]/[`CLIP_STD`], and lays out channels first.
pub fn normalize_chw(image: &RgbImage) -> Vec<f32> {
    normalize_chw_with(image, &CLIP_MEAN, &CLIP_STD)
}

/// [`normalize_chw`] with a checkpoint's own constants.
fn normalize_chw_with(image: &RgbImage, mean: &[f32; 3], std: &[f32; 3]) -> Vec<f32> {
    let (w, h) = image.dimensions();
    let plane = (w * h) as usize;
    let mut out = vec![0f32; 3 * plane];
    for (i, pixel) in image.pixels().enumerate() {
        for c in 0..3 {
            out[c * plane + i] = (pixel.0[c] as f32 / 255.0 - mean[c]) / std[c];
        }
    }
    out
}

/// The whole evaluation transform: `[3, size, size]` floats, channels first.
pub fn preprocess(image: &RgbImage, size: u32) -> Vec<f32> {
    Preprocess::default().apply(image, size)
}

/// Stacks preprocessed images (each `3 * size * size` floats) into a `[batch, 3, size, size]` tensor.
pub fn batch_tensor<B: Backend>(
    images: &[Vec<f32>],
    size: usize,
    device: &B::Device,
) -> Tensor<B, 4> {
    let flat: Vec<f32> = images.iter().flatten().copied().collect();
    Tensor::from_data(TensorData::new(flat, [images.len(), 3, size, size]), device)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crop_offsets_round_half_to_even_like_python() {
        assert_eq!(round_half_even(0.5), 0);
        assert_eq!(round_half_even(1.5), 2);
        assert_eq!(round_half_even(2.5), 2);
        assert_eq!(round_half_even(3.0), 3);
        assert_eq!(round_half_even(-0.5), 0);
    }

    #[test]
    fn resize_keeps_aspect_with_truncated_long_side() {
        let image = RgbImage::new(64, 48);
        assert_eq!(resize_shorter_side(&image, 32).dimensions(), (42, 32));
        let image = RgbImage::new(40, 72);
        assert_eq!(resize_shorter_side(&image, 32).dimensions(), (32, 57));
    }

    #[test]
    fn crop_pads_small_images_with_zeros() {
        let image = RgbImage::from_pixel(2, 2, image::Rgb([255, 255, 255]));
        let crop = center_crop(&image, 4);
        assert_eq!(crop.get_pixel(0, 0).0, [0, 0, 0]);
        assert_eq!(crop.get_pixel(1, 1).0, [255, 255, 255]);
    }
}
