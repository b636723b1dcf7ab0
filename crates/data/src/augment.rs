//! The training augmentation of the CoOp family (Dassl's `random_resized_crop`, `random_flip`,
//! `normalize`): torchvision's `RandomResizedCrop(224, scale=(0.08, 1), ratio=(3/4, 4/3),
//! interpolation=BICUBIC)`, `RandomHorizontalFlip()`, then the checkpoint's normalisation (CLIP's
//! unless its configuration states another, as open_clip's `preprocess_cfg` may). Every random draw
//! comes from a generator derived from `(seed, epoch, index)`, so an image's augmentation does not
//! depend on worker count, batch order or what other images were drawn.

use std::cell::RefCell;

use fast_image_resize as fr;
use fast_image_resize::pixels::U8x3;
use image::RgbImage;
use mocoop_model::preprocess::{CLIP_MEAN, CLIP_STD, Preprocess, round_half_even};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

/// torchvision's default scale range of the crop's area relative to the image.
pub const DEFAULT_SCALE: (f64, f64) = (0.08, 1.0);
/// torchvision's default aspect-ratio range of the crop.
pub const DEFAULT_RATIO: (f64, f64) = (3.0 / 4.0, 4.0 / 3.0);

/// A crop rectangle in pixels, as torchvision's `RandomResizedCrop.get_params` returns it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CropBox {
    /// First row.
    pub top: u32,
    /// First column.
    pub left: u32,
    /// Rows.
    pub height: u32,
    /// Columns.
    pub width: u32,
}

/// splitmix64's finaliser: a cheap bijective mix with good avalanche.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A generator for one `(seed, epoch, index)`, independent of every other triple: the three are
/// hash-mixed into a 256-bit `StdRng` seed. `stream` separates uses (augmentation, shuffling).
pub fn derived_rng(seed: u64, epoch: u64, index: u64, stream: u64) -> StdRng {
    let base = mix(mix(mix(mix(seed) ^ epoch) ^ index) ^ stream);
    let mut bytes = [0u8; 32];
    for (k, chunk) in bytes.chunks_exact_mut(8).enumerate() {
        chunk.copy_from_slice(
            &mix(base ^ (k as u64).wrapping_mul(0xa076_1d64_78bd_642f)).to_le_bytes(),
        );
    }
    StdRng::from_seed(bytes)
}

/// The generator for augmenting image `index` (its position in the item list) in `epoch`.
pub fn augment_rng(seed: u64, epoch: u64, index: u64) -> StdRng {
    derived_rng(seed, epoch, index, 0x6175_676d)
}

fn uniform(rng: &mut StdRng, low: f64, high: f64) -> f64 {
    low + (high - low) * rng.random::<f64>()
}

/// torchvision's `RandomResizedCrop.get_params`: up to ten tries to draw an area fraction from
/// `scale` and a log-uniform aspect ratio from `ratio` that fit in the image, at a uniformly drawn
/// position; failing that, the largest centred crop whose aspect ratio is clamped into `ratio`.
pub fn random_crop_box(
    width: u32,
    height: u32,
    scale: (f64, f64),
    ratio: (f64, f64),
    rng: &mut StdRng,
) -> CropBox {
    let area = width as f64 * height as f64;
    let (log_lo, log_hi) = (ratio.0.ln(), ratio.1.ln());
    for _ in 0..10 {
        let target_area = area * uniform(rng, scale.0, scale.1);
        let aspect = uniform(rng, log_lo, log_hi).exp();
        let w = round_half_even((target_area * aspect).sqrt());
        let h = round_half_even((target_area / aspect).sqrt());
        if 0 < w && w <= width as i64 && 0 < h && h <= height as i64 {
            let (w, h) = (w as u32, h as u32);
            let top = rng.random_range(0..=height - h);
            let left = rng.random_range(0..=width - w);
            return CropBox {
                top,
                left,
                height: h,
                width: w,
            };
        }
    }
    let in_ratio = width as f64 / height as f64;
    let (w, h) = if in_ratio < ratio.0 {
        (width, round_half_even(width as f64 / ratio.0) as u32)
    } else if in_ratio > ratio.1 {
        (round_half_even(height as f64 * ratio.1) as u32, height)
    } else {
        (width, height)
    };
    CropBox {
        top: (height - h) / 2,
        left: (width - w) / 2,
        height: h,
        width: w,
    }
}

thread_local! {
    static RESIZER: RefCell<fr::Resizer> = RefCell::new(fr::Resizer::new());
}

/// Crops `crop` out of `image` and resizes it to `size`×`size` with bicubic (Catmull-Rom, a = -0.5)
/// filtering, antialiased when shrinking, as PIL's `crop(...).resize(..., BICUBIC)`. Pixels outside
/// the crop never contribute, as with torchvision's crop-then-resize.
pub fn resized_crop(image: &RgbImage, crop: CropBox, size: u32) -> RgbImage {
    // The typed API builds the RGB path alone: the untyped one dispatches on the pixel type at run
    // time, which compiled every pixel type's resizers into this crate (half of its build time).
    let (w, h) = image.dimensions();
    let src = fr::images::TypedImageRef::<U8x3>::from_buffer(w, h, image.as_raw())
        .expect("an RgbImage buffer is w*h*3 bytes");
    let view =
        fr::images::TypedCroppedImage::from_ref(&src, crop.left, crop.top, crop.width, crop.height)
            .expect("crop box inside the image");
    let mut out = vec![0u8; size as usize * size as usize * 3];
    let mut dst = fr::images::TypedImage::<U8x3>::from_buffer(size, size, &mut out)
        .expect("size*size*3 bytes");
    let options =
        fr::ResizeOptions::new().resize_alg(fr::ResizeAlg::Convolution(fr::FilterType::CatmullRom));
    RESIZER.with(|r| {
        r.borrow_mut()
            .resize_typed(&view, &mut dst, &options)
            .expect("a crop box inside the image")
    });
    RgbImage::from_raw(size, size, out).expect("size*size*3 bytes")
}

/// Per-channel lookup tables `(v / 255 - mean) / std`, identical to
/// `mocoop_model::preprocess::normalize_chw`'s arithmetic.
type NormTable = [[f32; 256]; 3];

/// The lookup tables of `mean` and `std`.
fn norm_table(mean: &[f32; 3], std: &[f32; 3]) -> NormTable {
    let mut t = [[0f32; 256]; 3];
    for (c, row) in t.iter_mut().enumerate() {
        for (v, out) in row.iter_mut().enumerate() {
            *out = (v as f32 / 255.0 - mean[c]) / std[c];
        }
    }
    t
}

/// CLIP's tables, computed once.
fn clip_table() -> &'static NormTable {
    static TABLE: std::sync::OnceLock<NormTable> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| norm_table(&CLIP_MEAN, &CLIP_STD))
}

/// Writes `image` CLIP-normalised, channels first, into `out` (`3 * w * h` floats), mirrored
/// left-right when `flip` is set.
pub fn normalize_into(image: &RgbImage, flip: bool, out: &mut [f32]) {
    normalize_with(image, flip, clip_table(), out);
}

/// [`normalize_into`] with the lookup tables `table`.
fn normalize_with(image: &RgbImage, flip: bool, table: &NormTable, out: &mut [f32]) {
    let (w, h) = (image.width() as usize, image.height() as usize);
    let plane = w * h;
    assert_eq!(out.len(), 3 * plane, "output buffer must hold 3*w*h floats");
    let raw = image.as_raw();
    let (r_out, rest) = out.split_at_mut(plane);
    let (g_out, b_out) = rest.split_at_mut(plane);
    for y in 0..h {
        let row = &raw[y * w * 3..(y + 1) * w * 3];
        let (r_row, g_row, b_row) = (
            &mut r_out[y * w..(y + 1) * w],
            &mut g_out[y * w..(y + 1) * w],
            &mut b_out[y * w..(y + 1) * w],
        );
        for (x, px) in row.chunks_exact(3).enumerate() {
            let dst = if flip { w - 1 - x } else { x };
            r_row[dst] = table[0][px[0] as usize];
            g_row[dst] = table[1][px[1] as usize];
            b_row[dst] = table[2][px[2] as usize];
        }
    }
}

/// The training transform with its parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrainTransform {
    /// Output side length (224 for ViT-B/16).
    pub size: u32,
    /// Range of the crop's area fraction.
    pub scale: (f64, f64),
    /// Range of the crop's aspect ratio.
    pub ratio: (f64, f64),
    /// Probability of a horizontal flip.
    pub flip_probability: f64,
    /// Per-channel mean of the normalisation (RGB).
    pub mean: [f32; 3],
    /// Per-channel standard deviation of the normalisation (RGB).
    pub std: [f32; 3],
}

impl TrainTransform {
    /// The CoOp-family defaults at output size `size`.
    pub fn new(size: u32) -> Self {
        TrainTransform {
            size,
            scale: DEFAULT_SCALE,
            ratio: DEFAULT_RATIO,
            flip_probability: 0.5,
            mean: CLIP_MEAN,
            std: CLIP_STD,
        }
    }

    /// The random choices for one image: the crop and whether to flip, in torchvision's draw
    /// order (crop parameters first, then the flip coin).
    pub fn draw(&self, width: u32, height: u32, rng: &mut StdRng) -> (CropBox, bool) {
        let crop = random_crop_box(width, height, self.scale, self.ratio, rng);
        let flip = rng.random::<f64>() < self.flip_probability;
        (crop, flip)
    }

    /// Augments `image` into `out` (`3 * size * size` floats, channels first).
    pub fn apply_into(&self, image: &RgbImage, rng: &mut StdRng, out: &mut [f32]) {
        let (crop, flip) = self.draw(image.width(), image.height(), rng);
        let resized = resized_crop(image, crop, self.size);
        if (self.mean, self.std) == (CLIP_MEAN, CLIP_STD) {
            normalize_into(&resized, flip, out);
        } else {
            normalize_with(&resized, flip, &norm_table(&self.mean, &self.std), out);
        }
    }

    /// Augments `image` with the generator of `(seed, epoch, index)`.
    pub fn apply(&self, image: &RgbImage, seed: u64, epoch: u64, index: u64) -> Vec<f32> {
        let mut out = vec![0f32; 3 * (self.size * self.size) as usize];
        self.apply_into(image, &mut augment_rng(seed, epoch, index), &mut out);
        out
    }
}

/// Which transform a loader applies.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Transform {
    /// Random resized crop, flip, normalisation ([`TrainTransform`]).
    Train(TrainTransform),
    /// The checkpoint's evaluation transform (CLIP's: resize the shorter side, centre crop,
    /// normalisation) at the given size.
    Test(u32, Preprocess),
}

impl Transform {
    /// The transform with the normalisation (training) or the whole evaluation transform (test)
    /// of a checkpoint's `preprocess`; a training crop stays torchvision's bicubic one, as
    /// open_clip's training transform is whatever the configuration states.
    pub fn with_preprocess(self, preprocess: Preprocess) -> Self {
        match self {
            Transform::Train(t) => Transform::Train(TrainTransform {
                mean: preprocess.mean,
                std: preprocess.std,
                ..t
            }),
            Transform::Test(size, _) => Transform::Test(size, preprocess),
        }
    }

    /// Output side length.
    pub fn size(&self) -> u32 {
        match self {
            Transform::Train(t) => t.size,
            Transform::Test(size, _) => *size,
        }
    }

    /// Applies the transform to image `index` in `epoch`, writing `3 * size * size` floats.
    pub fn apply_into(&self, image: &RgbImage, seed: u64, epoch: u64, index: u64, out: &mut [f32]) {
        match self {
            Transform::Train(t) => t.apply_into(image, &mut augment_rng(seed, epoch, index), out),
            Transform::Test(size, preprocess) => {
                out.copy_from_slice(&preprocess.apply(image, *size))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding_matches_python() {
        assert_eq!(round_half_even(2.5), 2);
        assert_eq!(round_half_even(3.5), 4);
        assert_eq!(round_half_even(3.4), 3);
    }

    #[test]
    fn crop_boxes_stay_inside_and_respect_ranges() {
        for index in 0..500 {
            let mut rng = augment_rng(7, 0, index);
            let (w, h) = (500, 375);
            let b = random_crop_box(w, h, DEFAULT_SCALE, DEFAULT_RATIO, &mut rng);
            assert!(b.left + b.width <= w && b.top + b.height <= h);
            let frac = (b.width * b.height) as f64 / (w * h) as f64;
            assert!(frac > 0.07 && frac <= 1.0, "{frac}");
        }
    }

    #[test]
    fn fallback_is_central_and_clamped() {
        // An extremely wide image: no draw fits the ratio range, so the fallback applies.
        let mut rng = augment_rng(1, 0, 0);
        let b = random_crop_box(1000, 10, (0.9, 1.0), DEFAULT_RATIO, &mut rng);
        assert_eq!((b.height, b.width), (10, 13));
        assert_eq!((b.top, b.left), (0, (1000 - 13) / 2));
    }

    #[test]
    fn a_checkpoints_normalisation_replaces_clips() {
        let image = RgbImage::from_fn(40, 30, |x, y| {
            image::Rgb([(x * 6) as u8, (y * 8) as u8, 90])
        });
        let clip = TrainTransform::new(16).apply(&image, 3, 1, 2);
        let own = Preprocess {
            mean: [0.5, 0.4, 0.3],
            std: [0.2, 0.25, 0.3],
            ..Preprocess::default()
        };
        let Transform::Train(t) = Transform::Train(TrainTransform::new(16)).with_preprocess(own)
        else {
            unreachable!("a training transform stays one")
        };
        let ours = t.apply(&image, 3, 1, 2);
        for (k, (a, b)) in clip.iter().zip(&ours).enumerate() {
            let c = k / 256;
            let raw = a * CLIP_STD[c] + CLIP_MEAN[c];
            assert!(
                ((raw - own.mean[c]) / own.std[c] - b).abs() < 1e-4,
                "{k}: {a} {b}"
            );
        }
        // The evaluation transform is the checkpoint's own, filter and resize mode included.
        let test = Transform::Test(16, Preprocess::default()).with_preprocess(own);
        let mut out = vec![0f32; 3 * 16 * 16];
        test.apply_into(&image, 0, 0, 0, &mut out);
        assert_eq!(out, own.apply(&image, 16));
    }

    #[test]
    fn normalisation_matches_the_model_crate() {
        let image = RgbImage::from_fn(5, 4, |x, y| {
            image::Rgb([(x * 40) as u8, (y * 60) as u8, 200])
        });
        let mut out = vec![0f32; 60];
        normalize_into(&image, false, &mut out);
        assert_eq!(out, mocoop_model::preprocess::normalize_chw(&image));
        let mut flipped = vec![0f32; 60];
        normalize_into(&image, true, &mut flipped);
        assert_eq!(flipped[0], out[4]);
        assert_eq!(flipped[20 + 5], out[20 + 9]);
    }
}
