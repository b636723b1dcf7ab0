//! Image preprocessing exactly as CLIP's evaluation transform: decode, convert to RGB, resize the
//! shorter side (bicubic), center crop, scale to [0, 1] and normalise per channel.

use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use image::{DynamicImage, RgbImage};

/// Per-channel mean of CLIP's training images (RGB), subtracted after scaling to [0, 1].
#[allow(clippy::excessive_precision)] // the published constants, digit for digit
pub const CLIP_MEAN: [f32; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];
/// Per-channel standard deviation of CLIP's training images (RGB).
#[allow(clippy::excessive_precision)] // the published constants, digit for digit
pub const CLIP_STD: [f32; 3] = [0.268_629_54, 0.261_302_58, 0.275_777_11];

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
    let (w, h) = image.dimensions();
    let (short, long) = (w.min(h), w.max(h));
    let scaled_long = ((size as u64 * long as u64) / short.max(1) as u64) as u32;
    let (new_w, new_h) = if w <= h {
        (size, scaled_long)
    } else {
        (scaled_long, size)
    };
    if (new_w, new_h) == (w, h) {
        return image.clone();
    }
    resize_bicubic(image, new_w, new_h)
}

/// Fixed-point precision of the filter weights, as Pillow's 8-bit resampler uses.
const PRECISION_BITS: u32 = 32 - 8 - 2;

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
fn axis_weights(in_size: u32, out_size: u32) -> Vec<(usize, Vec<i64>)> {
    let scale = in_size as f64 / out_size as f64;
    let filter_scale = scale.max(1.0);
    let support = 2.0 * filter_scale;
    (0..out_size)
        .map(|i| {
            let center = (i as f64 + 0.5) * scale;
            let lo = ((center - support + 0.5) as i64).max(0) as usize;
            let hi = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
            let weights: Vec<f64> = (lo..hi)
                .map(|j| bicubic((j as f64 - center + 0.5) / filter_scale))
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
fn resample_pass(image: &RgbImage, out_len: u32, horizontal: bool) -> RgbImage {
    let (w, h) = image.dimensions();
    let in_len = if horizontal { w } else { h };
    let weights = axis_weights(in_len, out_len);
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
    assert!(out_w > 0 && out_h > 0, "cannot resize to {out_w}x{out_h}");
    let (w, h) = image.dimensions();
    let image = if out_w != w {
        resample_pass(image, out_w, true)
    } else {
        image.clone()
    };
    if out_h != h {
        resample_pass(&image, out_h, false)
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
    let (w, h) = image.dimensions();
    let plane = (w * h) as usize;
    let mut out = vec![0f32; 3 * plane];
    for (i, pixel) in image.pixels().enumerate() {
        for c in 0..3 {
            out[c * plane + i] = (pixel.0[c] as f32 / 255.0 - CLIP_MEAN[c]) / CLIP_STD[c];
        }
    }
    out
}

/// The whole evaluation transform: `[3, size, size]` floats, channels first.
pub fn preprocess(image: &RgbImage, size: u32) -> Vec<f32> {
    normalize_chw(&center_crop(&resize_shorter_side(image, size), size))
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
