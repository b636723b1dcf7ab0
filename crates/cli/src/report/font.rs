//! The font of every figure: DejaVu Sans, bundled in the binary (assets/DejaVuSans.ttf, its licence
//! in assets/README.md) and handed to plotters' ab_glyph text renderer, so that figures look the
//! same everywhere and need no system font or fontconfig.

use std::sync::Once;

use plotters::style::{FontStyle, register_font};

/// The family name figures ask for; SVG viewers fall back to their own sans-serif font.
pub const FAMILY: &str = "sans-serif";

/// DejaVu Sans Book.
static DEJAVU_SANS: &[u8] = include_bytes!("../../../../assets/DejaVuSans.ttf");

/// Registers the bundled font under [`FAMILY`] (once per process; later calls do nothing).
pub fn register() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if register_font(FAMILY, FontStyle::Normal, DEJAVU_SANS).is_err() {
            panic!("the bundled assets/DejaVuSans.ttf is not a font plotters can read");
        }
    });
}
