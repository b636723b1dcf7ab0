//! The attributes objects are made of. Every name is an ordinary English word, so that CLIP's
//! tokenizer and any caption or prompt can use it as it is.

use serde::{Deserialize, Serialize};

macro_rules! attribute {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident => $word:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(rename_all = "lowercase")]
        pub enum $name {
            $($(#[$vmeta])* $variant),+
        }

        impl $name {
            /// Every value, in a fixed order (the order of indices).
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The English word for this value.
            pub fn name(self) -> &'static str {
                match self {
                    $($name::$variant => $word),+
                }
            }

            /// Position in [`Self::ALL`].
            pub fn index(self) -> usize {
                self as usize
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.name())
            }
        }

        impl std::str::FromStr for $name {
            type Err = String;

            fn from_str(s: &str) -> Result<Self, String> {
                let lower = s.trim().to_ascii_lowercase();
                $name::ALL.iter().copied().find(|v| v.name() == lower).ok_or_else(|| {
                    format!(
                        "unknown {} '{s}' (expected one of: {})",
                        stringify!($name).to_ascii_lowercase(),
                        $name::ALL.iter().map(|v| v.name()).collect::<Vec<_>>().join(", ")
                    )
                })
            }
        }
    };
}

attribute! {
    /// The outline of an object.
    Shape {
        /// A filled disc.
        Circle => "circle",
        /// An axis-aligned square.
        Square => "square",
        /// An upward equilateral triangle.
        Triangle => "triangle",
        /// A five-pointed star.
        Star => "star",
        /// A plus-shaped cross.
        Cross => "cross",
        /// An annulus.
        Ring => "ring",
        /// A square standing on a corner, slightly narrow.
        Diamond => "diamond",
        /// A heart.
        Heart => "heart",
    }
}

attribute! {
    /// The main colour of an object.
    Colour {
        /// Red.
        Red => "red",
        /// Orange.
        Orange => "orange",
        /// Yellow.
        Yellow => "yellow",
        /// Green.
        Green => "green",
        /// Blue.
        Blue => "blue",
        /// Purple.
        Purple => "purple",
        /// Pink.
        Pink => "pink",
        /// Brown.
        Brown => "brown",
    }
}

attribute! {
    /// How an object's surface is decorated.
    Pattern {
        /// One colour.
        Plain => "plain",
        /// Parallel stripes.
        Striped => "striped",
        /// A grid of dots.
        Dotted => "dotted",
        /// A checkerboard.
        Checkered => "checkered",
    }
}

attribute! {
    /// How large an object is relative to the image.
    Size {
        /// About half the image.
        Small => "small",
        /// Most of the image.
        Large => "large",
    }
}

attribute! {
    /// How a scene is drawn: the "domain" of an image. Styles are what MoCoOp's experts should
    /// specialise in.
    Style {
        /// Photo-like: gradient background, shading, a drop shadow.
        Photo => "photo",
        /// A line sketch: the outline only (light hatching for patterns) on white paper.
        Sketch => "sketch",
        /// A low-resolution render, upscaled in blocks with few colour levels.
        Pixelated => "pixelated",
        /// A faded, low-contrast photo with heavy grain.
        Noisy => "noisy",
        /// Object and background filled with rough texture, no shading.
        Texture => "texture",
    }
}

impl Colour {
    /// Nominal sRGB value, in `[0, 1]`.
    pub fn rgb(self) -> [f32; 3] {
        let c: [u8; 3] = match self {
            Colour::Red => [214, 36, 36],
            Colour::Orange => [247, 138, 22],
            Colour::Yellow => [242, 219, 36],
            Colour::Green => [36, 166, 58],
            Colour::Blue => [38, 82, 222],
            Colour::Purple => [136, 48, 190],
            Colour::Pink => [247, 128, 196],
            Colour::Brown => [124, 74, 36],
        };
        c.map(|v| v as f32 / 255.0)
    }
}

/// A colour-shape pair: the class of the world's benchmark ("red circle").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Combo {
    /// The colour.
    pub colour: Colour,
    /// The shape.
    pub shape: Shape,
}

impl Combo {
    /// A colour-shape pair.
    pub fn new(colour: Colour, shape: Shape) -> Self {
        Self { colour, shape }
    }

    /// The class name used in prompts: `"red circle"`.
    pub fn name(self) -> String {
        format!("{} {}", self.colour.name(), self.shape.name())
    }

    /// The folder name of its images: `"red_circle"`.
    pub fn dir_name(self) -> String {
        format!("{}_{}", self.colour.name(), self.shape.name())
    }

    /// Every colour-shape pair, colour-major.
    pub fn all() -> Vec<Combo> {
        Colour::ALL
            .iter()
            .flat_map(|&c| Shape::ALL.iter().map(move |&s| Combo::new(c, s)))
            .collect()
    }

    /// `(shape - colour) mod n`: the diagonal of the colour × shape grid the pair lies on.
    /// Selecting whole diagonals gives sets in which every colour and every shape occur equally
    /// often.
    pub fn diagonal(self) -> usize {
        let n = Shape::ALL.len();
        (self.shape.index() + n - self.colour.index() % n) % n
    }
}

impl std::fmt::Display for Combo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.colour, self.shape)
    }
}

impl std::str::FromStr for Combo {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim().replace('_', " ");
        let (colour, shape) = s
            .split_once(' ')
            .ok_or_else(|| format!("'{s}' is not '<colour> <shape>'"))?;
        Ok(Combo::new(colour.parse()?, shape.trim().parse()?))
    }
}
