//! `mocoop embed`: CLIP embeddings of images and texts as one JSON object.

use std::path::PathBuf;

use anyhow::Result;
use burn::tensor::backend::AutodiffBackend;
use serde_json::json;

use crate::device::OnBackend;
use crate::model_args::{BATCH, ModelArgs, to_rows};

/// Prints `{"image_embeds": [[..]], "text_embeds": [[..]], "logit_scale": x}` with L2-normalised
/// rows in input order; `logit_scale` is the checkpoint's raw (log) temperature, and
/// `logit_scale_exp` its exponential, the factor a classifier multiplies cosines by.
#[derive(Debug, clap::Args)]
pub struct EmbedArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// An image to embed (repeatable).
    #[arg(long = "image", value_name = "FILE")]
    images: Vec<PathBuf>,
    /// A text to embed (repeatable).
    #[arg(long = "text", value_name = "STRING")]
    texts: Vec<String>,
}

impl EmbedArgs {
    /// The device the user asked for.
    pub fn device(&self) -> &crate::device::DeviceSpec {
        &self.model.device
    }
}

impl OnBackend for EmbedArgs {
    type Output = ();

    fn run<B: AutodiffBackend>(self, device: B::Device) -> Result<()> {
        if self.images.is_empty() && self.texts.is_empty() {
            anyhow::bail!("nothing to embed: give at least one --image or --text");
        }
        let model = self.model.load::<B::InnerBackend>(&device)?;
        let mut image_rows = Vec::new();
        for chunk in self.images.chunks(BATCH) {
            let pixels = chunk
                .iter()
                .map(|path| model.read_image(path))
                .collect::<Result<Vec<_>>>()?;
            image_rows.extend(to_rows(model.encode_pixels(&pixels, &device))?);
        }
        let text_rows = if self.texts.is_empty() {
            Vec::new()
        } else {
            to_rows(model.encode_texts(&self.texts, &device))?
        };
        let scale = model.clip.logit_scale();
        let out = json!({
            "image_embeds": image_rows,
            "text_embeds": text_rows,
            "logit_scale": scale,
            "logit_scale_exp": scale.exp(),
        });
        println!("{out}");
        Ok(())
    }
}
