//! Image preprocessing exactly as CLIP's evaluation transform: decode, convert to RGB, resize the
//! shorter side (bicubic), center crop, scale to [0, 1] and normalise per channel.

use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use image::{DynamicImage, RgbImage, imageops::FilterType};

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
/// (`int(size * long / short)`), with bicubic (Catmull-Rom, a = -0.5) filtering as PIL's `BICUBIC`.
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
    image::imageops::resize(image, new_w, new_h, FilterType::CatmullRom)
}

/// Python's `round` (half to even), which torchvision uses to place the center crop.
fn round_half_even(x: f64) -> i64 {
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
