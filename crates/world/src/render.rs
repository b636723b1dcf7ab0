//! Rasterising a scene: shapes as implicit functions or polygons in the object's own frame,
//! anti-aliased by supersampling, then drawn in one of the [`Style`]s.

use std::f32::consts::{FRAC_PI_2, PI, TAU};

use image::{Rgb, RgbImage};
use serde::{Deserialize, Serialize};

use crate::attributes::{Colour, Pattern, Shape, Size, Style};
use crate::rng::{Rng, lattice};

/// Everything that is named about an image: what an object is and how it is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Scene {
    /// The object's outline.
    pub shape: Shape,
    /// The object's main colour.
    pub colour: Colour,
    /// The decoration of its surface.
    pub pattern: Pattern,
    /// Its size relative to the image.
    pub size: Size,
    /// How the image is drawn.
    pub style: Style,
}

/// The continuous, unnamed parameters of one image: placement and appearance jitter. Lengths are
/// fractions of the image side, so the same geometry renders at any resolution.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Geometry {
    /// Centre, horizontal (0 = left edge, 1 = right edge).
    pub cx: f32,
    /// Centre, vertical (0 = top edge).
    pub cy: f32,
    /// Half the object's extent.
    pub radius: f32,
    /// Rotation of the object, radians (small).
    pub rotation: f32,
    /// Period of stripes, dots and checks.
    pub pattern_period: f32,
    /// Orientation of stripes and checks relative to the object, radians.
    pub pattern_angle: f32,
    /// The object's actual colour (the nominal colour, jittered), sRGB in `[0, 1]`.
    pub fill: [f32; 3],
}

impl Geometry {
    /// Draws placement and jitter for `scene`.
    pub fn sample(scene: &Scene, rng: &mut Rng) -> Self {
        let radius = match scene.size {
            Size::Small => rng.range(0.21, 0.27),
            Size::Large => rng.range(0.36, 0.44),
        };
        let margin = radius + 0.03;
        let cx = rng.range(margin, 1.0 - margin);
        let cy = rng.range(margin, 1.0 - margin);
        let gain = rng.range(0.88, 1.06);
        let nominal = scene.colour.rgb();
        let fill = nominal.map(|c| (c * gain + rng.range(-0.035, 0.035)).clamp(0.0, 1.0));
        Self {
            cx,
            cy,
            radius,
            rotation: rng.range(-0.14, 0.14),
            pattern_period: rng.range(0.17, 0.22),
            pattern_angle: *rng.pick(&[0.0, PI / 4.0, FRAC_PI_2, 3.0 * PI / 4.0]),
            fill,
        }
    }
}

/// A rendered image and the fraction of each pixel covered by the object (row-major).
#[derive(Debug, Clone)]
pub struct Rendered {
    /// The image.
    pub image: RgbImage,
    /// Object coverage in `[0, 1]` per pixel, `size * size` values.
    pub object: Vec<f32>,
}

/// Renders `scene` at `size`×`size` pixels, drawing its geometry and style noise from `rng`.
pub fn render(scene: &Scene, size: u32, rng: &mut Rng) -> RgbImage {
    let geometry = Geometry::sample(scene, rng);
    render_geometry(scene, &geometry, size, rng)
}

/// Renders `scene` and also returns the object's coverage mask.
pub fn render_with_mask(scene: &Scene, size: u32, rng: &mut Rng) -> Rendered {
    let geometry = Geometry::sample(scene, rng);
    let image = render_geometry(scene, &geometry, size, rng);
    Rendered {
        image,
        object: object_mask(scene.shape, &geometry, size),
    }
}

/// Fraction of each pixel inside the (undecorated, unstyled) shape.
pub fn object_mask(shape: Shape, geometry: &Geometry, size: u32) -> Vec<f32> {
    let frame = Frame::new(geometry, size);
    let k = 4;
    supersample(size, k, |x, y| {
        let (u, v) = frame.unit(x, y);
        if inside(shape, u, v) { 1.0 } else { 0.0 }
    })
}

/// Renders with a given geometry; only style noise is drawn from `rng`.
pub fn render_geometry(scene: &Scene, geometry: &Geometry, size: u32, rng: &mut Rng) -> RgbImage {
    let pixels = match scene.style {
        Style::Photo => photo(scene, geometry, size, rng),
        Style::Sketch => sketch(scene, geometry, size, rng),
        Style::Pixelated => pixelated(scene, geometry, size, rng),
        Style::Noisy => noisy(scene, geometry, size, rng),
        Style::Texture => texture(scene, geometry, size, rng),
    };
    to_image(&pixels, size)
}

type Pixels = Vec<[f32; 3]>;

fn to_image(pixels: &Pixels, size: u32) -> RgbImage {
    RgbImage::from_fn(size, size, |x, y| {
        let p = pixels[(y * size + x) as usize];
        Rgb(p.map(|c| (c.clamp(0.0, 1.0) * 255.0 + 0.5) as u8))
    })
}

/// Averages `f` over `k`×`k` sample points of each pixel (pixel coordinates, centres at `+0.5`).
fn supersample<T, F>(size: u32, k: u32, mut f: F) -> Vec<T>
where
    T: Copy + Default + std::ops::AddAssign + std::ops::Mul<f32, Output = T>,
    F: FnMut(f32, f32) -> T,
{
    let n = size as usize;
    let mut out = vec![T::default(); n * n];
    let weight = 1.0 / (k * k) as f32;
    for y in 0..size {
        for x in 0..size {
            let mut acc = T::default();
            for j in 0..k {
                for i in 0..k {
                    let px = x as f32 + (i as f32 + 0.5) / k as f32;
                    let py = y as f32 + (j as f32 + 0.5) / k as f32;
                    acc += f(px, py);
                }
            }
            out[(y * size + x) as usize] = acc * weight;
        }
    }
    out
}

/// An RGB triple that can be accumulated by [`supersample`].
#[derive(Debug, Clone, Copy, Default)]
struct Colour3([f32; 3]);

impl std::ops::AddAssign for Colour3 {
    fn add_assign(&mut self, o: Self) {
        for c in 0..3 {
            self.0[c] += o.0[c];
        }
    }
}

impl std::ops::Mul<f32> for Colour3 {
    type Output = Self;
    fn mul(self, s: f32) -> Self {
        Colour3(self.0.map(|c| c * s))
    }
}

fn render_rgb<F: FnMut(f32, f32) -> [f32; 3]>(size: u32, k: u32, mut f: F) -> Pixels {
    supersample(size, k, |x, y| Colour3(f(x, y)))
        .into_iter()
        .map(|c| c.0)
        .collect()
}

/// The object's coordinate frame at one resolution.
struct Frame {
    cx: f32,
    cy: f32,
    radius: f32,
    cos: f32,
    sin: f32,
    period: f32,
    pattern_cos: f32,
    pattern_sin: f32,
}

impl Frame {
    fn new(g: &Geometry, size: u32) -> Self {
        let s = size as f32;
        Self {
            cx: g.cx * s,
            cy: g.cy * s,
            radius: g.radius * s,
            cos: g.rotation.cos(),
            sin: g.rotation.sin(),
            period: g.pattern_period * s,
            pattern_cos: g.pattern_angle.cos(),
            pattern_sin: g.pattern_angle.sin(),
        }
    }

    /// Pixel offsets from the centre in the object's rotated frame (x right, y down).
    fn local(&self, px: f32, py: f32) -> (f32, f32) {
        let (dx, dy) = (px - self.cx, py - self.cy);
        (
            dx * self.cos + dy * self.sin,
            -dx * self.sin + dy * self.cos,
        )
    }

    /// Unit coordinates of the shape definitions (u right, v up, the shape within `[-1, 1]`).
    fn unit(&self, px: f32, py: f32) -> (f32, f32) {
        let (x, y) = self.local(px, py);
        (x / self.radius, -y / self.radius)
    }

    /// Whether the pattern's second colour covers this point.
    fn pattern_on(&self, pattern: Pattern, px: f32, py: f32) -> bool {
        let (x, y) = self.local(px, py);
        let (a, b) = (
            x * self.pattern_cos + y * self.pattern_sin,
            -x * self.pattern_sin + y * self.pattern_cos,
        );
        let half = self.period / 2.0;
        match pattern {
            Pattern::Plain => false,
            Pattern::Striped => (a / half).floor().rem_euclid(2.0) < 1.0,
            Pattern::Dotted => {
                let cell = self.period;
                let (fa, fb) = (
                    (x + 0.5 * cell).rem_euclid(cell) - 0.5 * cell,
                    (y + 0.5 * cell).rem_euclid(cell) - 0.5 * cell,
                );
                fa * fa + fb * fb <= (0.3 * cell) * (0.3 * cell)
            }
            Pattern::Checkered => ((a / half).floor() + (b / half).floor()).rem_euclid(2.0) < 1.0,
        }
    }
}

/// Even-odd point-in-polygon test.
fn in_polygon(points: &[(f32, f32)], u: f32, v: f32) -> bool {
    let mut inside = false;
    let mut j = points.len() - 1;
    for i in 0..points.len() {
        let (xi, yi) = points[i];
        let (xj, yj) = points[j];
        if (yi > v) != (yj > v) && u < (xj - xi) * (v - yi) / (yj - yi) + xi {
            inside = !inside;
        }
        j = i;
    }
    inside
}

fn star_points() -> &'static [(f32, f32)] {
    static POINTS: std::sync::OnceLock<Vec<(f32, f32)>> = std::sync::OnceLock::new();
    POINTS.get_or_init(|| {
        (0..10)
            .map(|i| {
                let r = if i % 2 == 0 { 1.0 } else { 0.42 };
                let angle = FRAC_PI_2 + i as f32 * TAU / 10.0;
                (r * angle.cos(), r * angle.sin() - 0.08)
            })
            .collect()
    })
}

/// Whether unit-frame point `(u, v)` (v up) lies inside `shape`.
pub fn inside(shape: Shape, u: f32, v: f32) -> bool {
    match shape {
        Shape::Circle => u * u + v * v <= 0.92 * 0.92,
        Shape::Square => u.abs() <= 0.78 && v.abs() <= 0.78,
        Shape::Triangle => in_polygon(&[(0.0, 0.95), (-0.95, -0.72), (0.95, -0.72)], u, v),
        Shape::Star => in_polygon(star_points(), u, v),
        Shape::Cross => (u.abs() <= 0.3 && v.abs() <= 0.92) || (v.abs() <= 0.3 && u.abs() <= 0.92),
        Shape::Ring => {
            let r2 = u * u + v * v;
            (0.52 * 0.52..=0.92 * 0.92).contains(&r2)
        }
        Shape::Diamond => u.abs() / 0.7 + v.abs() / 0.95 <= 1.0,
        Shape::Heart => {
            let (x, y) = (u * 1.2, v * 1.2 + 0.1);
            let a = x * x + y * y - 1.0;
            a * a * a - x * x * y * y * y <= 0.0
        }
    }
}

fn mix(a: [f32; 3], b: [f32; 3], t: f32) -> [f32; 3] {
    [0, 1, 2].map(|c| a[c] + (b[c] - a[c]) * t)
}

fn luminance(c: [f32; 3]) -> f32 {
    0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2]
}

/// The pattern's second colour: a pale tint of dark colours, a dark shade of light ones.
fn secondary(fill: [f32; 3]) -> [f32; 3] {
    if luminance(fill) > 0.6 {
        fill.map(|c| c * 0.4)
    } else {
        mix(fill, [1.0; 3], 0.72)
    }
}

/// A muted random colour for backgrounds (low saturation, so objects stand out by hue).
fn muted(rng: &mut Rng, lo: f32, hi: f32) -> [f32; 3] {
    let grey = rng.range(lo, hi);
    let tint = [rng.uniform(), rng.uniform(), rng.uniform()];
    mix([grey; 3], tint.map(|t| grey * (0.7 + 0.6 * t)), 0.35)
}

/// Photo-like: linear-gradient background, a soft drop shadow, shading and a highlight.
fn photo(scene: &Scene, g: &Geometry, size: u32, rng: &mut Rng) -> Pixels {
    let frame = Frame::new(g, size);
    let s = size as f32;
    let (c0, c1) = (muted(rng, 0.3, 0.9), muted(rng, 0.3, 0.9));
    let angle = rng.range(0.0, TAU);
    let (gx, gy) = (angle.cos(), angle.sin());
    let light = rng.range(1.9, 2.8); // from the upper left, v up
    let (lx, ly) = (light.cos(), light.sin());
    let shadow = (-lx * 0.06 * s, ly * 0.06 * s);
    let fill = g.fill;
    let second = secondary(fill);
    render_rgb(size, 3, |px, py| {
        let t = (((px / s - 0.5) * gx + (py / s - 0.5) * gy) + 0.7) / 1.4;
        let mut colour = mix(c0, c1, t.clamp(0.0, 1.0));
        let (su, sv) = frame.unit(px - shadow.0, py - shadow.1);
        if inside(scene.shape, su, sv) {
            colour = colour.map(|c| c * 0.55);
        }
        let (u, v) = frame.unit(px, py);
        if inside(scene.shape, u, v) {
            let base = if frame.pattern_on(scene.pattern, px, py) {
                second
            } else {
                fill
            };
            let shade = (0.8 + 0.22 * (u * lx + v * ly) - 0.08 * (u * u + v * v)).clamp(0.45, 1.1);
            let (hu, hv) = (u - 0.45 * lx, v - 0.45 * ly);
            let highlight = 0.3 * (-(hu * hu + hv * hv) / 0.06).exp();
            colour = base.map(|c| c * shade + highlight * (1.0 - c * shade).max(0.0));
        }
        colour
    })
}

/// A line sketch: the outline in the object's colour on paper, patterns as light hatching inside.
fn sketch(scene: &Scene, g: &Geometry, size: u32, rng: &mut Rng) -> Pixels {
    let frame = Frame::new(g, size);
    let s = size as f32;
    let k = 4u32;
    let n = (size * k) as usize;
    // Hand-drawn wobble of the sample positions.
    let amp = rng.range(0.2, 0.7) * s / 32.0;
    let (f1, f2) = (
        rng.range(0.25, 0.6) * 32.0 / s,
        rng.range(0.25, 0.6) * 32.0 / s,
    );
    let (p1, p2) = (rng.range(0.0, TAU), rng.range(0.0, TAU));
    let wobble = |px: f32, py: f32| {
        (
            px + amp * (py * f1 + p1).sin(),
            py + amp * (px * f2 + p2).sin(),
        )
    };
    let mut mask = vec![false; n * n];
    for j in 0..n {
        for i in 0..n {
            let (px, py) = wobble((i as f32 + 0.5) / k as f32, (j as f32 + 0.5) / k as f32);
            let (u, v) = frame.unit(px, py);
            mask[j * n + i] = inside(scene.shape, u, v);
        }
    }
    let half_width = ((rng.range(0.9, 1.4) * s / 32.0) * k as f32 / 2.0)
        .round()
        .max(1.0) as usize;
    let dilated = box_filter(&mask, n, half_width, true);
    let eroded = box_filter(&mask, n, half_width, false);
    let paper_level = rng.range(0.93, 1.0);
    let paper = [
        paper_level,
        paper_level * rng.range(0.97, 1.0),
        paper_level * rng.range(0.92, 1.0),
    ];
    let ink = g.fill.map(|c| c * 0.82);
    let ink_alpha = rng.range(0.85, 1.0);
    let hatch_alpha = rng.range(0.3, 0.45);
    let mut out = vec![[0.0f32; 3]; (size * size) as usize];
    for y in 0..size as usize {
        for x in 0..size as usize {
            let mut acc = [0.0f32; 3];
            for j in 0..k as usize {
                for i in 0..k as usize {
                    let idx = (y * k as usize + j) * n + x * k as usize + i;
                    let px = x as f32 + (i as f32 + 0.5) / k as f32;
                    let py = y as f32 + (j as f32 + 0.5) / k as f32;
                    let colour = if dilated[idx] && !eroded[idx] {
                        mix(paper, ink, ink_alpha)
                    } else if mask[idx] && frame.pattern_on(scene.pattern, px, py) {
                        mix(paper, ink, hatch_alpha)
                    } else {
                        paper
                    };
                    for c in 0..3 {
                        acc[c] += colour[c];
                    }
                }
            }
            let grain = rng.normal() * 0.012;
            out[y * size as usize + x] = acc.map(|c| c / (k * k) as f32 + grain);
        }
    }
    out
}

/// Separable square max (`dilate`) or min filter of a boolean grid.
fn box_filter(mask: &[bool], n: usize, radius: usize, dilate: bool) -> Vec<bool> {
    let pass = |src: &[bool], horizontal: bool| -> Vec<bool> {
        let mut out = vec![false; n * n];
        for a in 0..n {
            for b in 0..n {
                let lo = b.saturating_sub(radius);
                let hi = (b + radius).min(n - 1);
                let at = |c: usize| {
                    if horizontal {
                        src[a * n + c]
                    } else {
                        src[c * n + a]
                    }
                };
                let value = if dilate {
                    (lo..=hi).any(at)
                } else {
                    (lo..=hi).all(at) && b >= radius && b + radius < n
                };
                let idx = if horizontal { a * n + b } else { b * n + a };
                out[idx] = value;
            }
        }
        out
    };
    pass(&pass(mask, true), false)
}

/// A photo rendered at a low resolution and upscaled in square blocks (nearest neighbour).
fn pixelated(scene: &Scene, g: &Geometry, size: u32, rng: &mut Rng) -> Pixels {
    let block = (*rng.pick(&[2u32, 3, 3]) as f32 * size as f32 / 32.0)
        .round()
        .max(2.0) as u32;
    let low_size = size.div_ceil(block);
    let low = photo(scene, g, low_size, rng);
    let (ox, oy) = (
        rng.below(block as usize) as u32,
        rng.below(block as usize) as u32,
    );
    let mut out = Vec::with_capacity((size * size) as usize);
    for y in 0..size {
        for x in 0..size {
            let lx = ((x + ox) / block).min(low_size - 1);
            let ly = ((y + oy) / block).min(low_size - 1);
            out.push(low[(ly * low_size + lx) as usize]);
        }
    }
    out
}

/// A faded, low-contrast photo with strong grain.
fn noisy(scene: &Scene, g: &Geometry, size: u32, rng: &mut Rng) -> Pixels {
    let base = photo(scene, g, size, rng);
    let contrast = rng.range(0.4, 0.6);
    let level = rng.range(0.42, 0.6);
    let sigma = rng.range(0.05, 0.09);
    base.into_iter()
        .map(|c| {
            let luma = rng.normal() * sigma * 0.7;
            c.map(|v| level + (v - 0.5) * contrast + luma + rng.normal() * sigma * 0.5)
        })
        .collect()
}

/// Smooth value noise in `[0, 1]` with lattice spacing `period` pixels.
fn value_noise(seed: u64, x: f32, y: f32, period: f32) -> f32 {
    let (fx, fy) = (x / period, y / period);
    let (x0, y0) = (fx.floor(), fy.floor());
    let (tx, ty) = (fx - x0, fy - y0);
    let (sx, sy) = (tx * tx * (3.0 - 2.0 * tx), ty * ty * (3.0 - 2.0 * ty));
    let (ix, iy) = (x0 as i32, y0 as i32);
    let a = lattice(seed, ix, iy);
    let b = lattice(seed, ix + 1, iy);
    let c = lattice(seed, ix, iy + 1);
    let d = lattice(seed, ix + 1, iy + 1);
    let top = a + (b - a) * sx;
    let bottom = c + (d - c) * sx;
    top + (bottom - top) * sy
}

/// Object and background made of rough texture: grainy multi-scale noise, no shading.
fn texture(scene: &Scene, g: &Geometry, size: u32, rng: &mut Rng) -> Pixels {
    let frame = Frame::new(g, size);
    let scale = size as f32 / 32.0;
    let (seed_bg, seed_fg) = (rng.next_u64(), rng.next_u64());
    let bg_a = muted(rng, 0.25, 0.6);
    let bg_b = muted(rng, 0.5, 0.9);
    let bg_period = rng.range(3.0, 6.0) * scale;
    let fg_period = rng.range(1.2, 2.2) * scale;
    let strength = rng.range(0.5, 0.8);
    let fill = g.fill;
    let second = secondary(fill);
    render_rgb(size, 3, |px, py| {
        let (u, v) = frame.unit(px, py);
        if inside(scene.shape, u, v) {
            let base = if frame.pattern_on(scene.pattern, px, py) {
                second
            } else {
                fill
            };
            let n = 0.6 * value_noise(seed_fg, px, py, fg_period)
                + 0.4 * value_noise(seed_fg ^ 1, px, py, 2.5 * fg_period);
            base.map(|c| c * (1.0 - strength / 2.0 + strength * n))
        } else {
            let n = 0.5 * value_noise(seed_bg, px, py, bg_period)
                + 0.3 * value_noise(seed_bg ^ 1, px, py, bg_period / 2.5)
                + 0.2 * value_noise(seed_bg ^ 2, px, py, 1.2 * scale);
            mix(bg_a, bg_b, n)
        }
    })
}
