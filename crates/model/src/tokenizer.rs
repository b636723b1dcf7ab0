//! The CLIP byte-level BPE tokenizer, id-for-id compatible with open_clip's
//! `SimpleTokenizer` (itself OpenAI CLIP's `simple_tokenizer.py`).
//!
//! # Pipeline
//!
//! 1. **Cleaning** (open_clip's default `clean="lower"`): `ftfy.fix_text`, Python's
//!    `html.unescape` twice, whitespace runs collapsed to one space and both ends
//!    stripped, then lower-casing.
//! 2. **Pre-tokenisation** with the [`regex`] crate and CLIP's pattern
//!    `<special>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+`, which the
//!    reference compiles case-insensitively with Python's `regex` module. Case folding is
//!    reproduced where it matters after lower-casing: on the special tokens and
//!    contractions (`'ſ` is a contraction too), not on the classes, where the only
//!    difference is that Python's `regex` matches U+0345 (combining ypogegrammeni) with
//!    no alternative, so it is dropped, as here.
//! 3. **Byte-level BPE**: each piece's UTF-8 bytes are mapped to GPT-2's printable
//!    byte characters, the last symbol gets the `</w>` end-of-word marker, and the
//!    lowest-ranked adjacent pair is merged until no merge applies. Results are cached
//!    per piece.
//!
//! # Why hand-written rather than the `tokenizers` crate
//!
//! The cleaning step is CLIP-specific: it needs the ftfy-like rules and Python's exact
//! `html.unescape` semantics, which `tokenizers` does not provide. The `tokenizers` crate
//! is also a heavy dependency (onig/esaxx native code and many transitive crates) and
//! wants a `tokenizer.json`, which the OpenAI release (a gzipped merges list) does not
//! have. What remains—the byte map and the BPE merge loop—is small; the [`regex`] crate
//! does the pre-tokenisation.
//!
//! # What of ftfy is covered
//!
//! `ftfy.fix_text` cannot be fully ported. With ftfy 6's default configuration, the
//! following are reproduced, in ftfy's order, repeated until the text stops changing,
//! on the same line-by-line segments as ftfy:
//!
//! - ftfy's own HTML unescaping ("auto": only references ending in `;`, also all-caps
//!   names such as `&EACUTE;`; switched off from the first line containing `<` on);
//! - C1 control characters read as Windows-1252 (`\x93` → `“`);
//! - Latin ligatures (`ﬀ ﬁ ﬂ ﬃ ﬄ ﬆ` → `ff fi fl ffi ffl st`, `ﬅ` → `ſt` as ftfy
//!   does, plus the Dutch `Ĳ`/`ĳ`, `ŉ` and the Serbo-Croatian digraphs `Ǳ`…`ǌ`);
//! - half-width and full-width forms (U+FF01..U+FFEF → their NFKC form, e.g. `Ａ` → `A`,
//!   and U+3000 → space);
//! - curly quotes (`ʼ ‘ ’ ‚ ‛` → `'`, `“ ” „ ‟` → `"`);
//! - line breaks (CRLF, CR, U+2028, U+2029, NEL → `\n`);
//! - ANSI terminal escapes (`ESC[…m`) and the control characters ftfy deletes
//!   (U+0000..U+0008, U+000B, U+000E..U+001F, U+007F, U+206A..U+206F, U+FEFF,
//!   U+FFF9..U+FFFC);
//! - Unicode NFC normalisation.
//!
//! Not covered: mojibake repair (`fix_encoding`: re-decoding text that was decoded with
//! the wrong codec, e.g. `cafÃ©` → `café`, and its sub-steps `restore_byte_a0`,
//! `replace_lossy_sequences`, `decode_inconsistent_utf8`) and `fix_surrogates` (Rust
//! strings cannot hold lone surrogates). Text that ftfy would consider mojibake can
//! therefore tokenize differently from open_clip; ordinary text does not.
//!
//! # Special tokens
//!
//! Ids 49406 and 49407 are the start and end of text. The embedded vocabulary names
//! them `<start_of_text>` and `<end_of_text>` like open_clip (OpenAI's original release
//! called them `<|startoftext|>` and `<|endoftext|>`); a tokenizer loaded with
//! [`ClipTokenizer::from_hf_files`] uses the names in its `vocab.json` (Hugging Face
//! ships `<|startoftext|>`/`<|endoftext|>`). Those strings in the input text (in any
//! case) are encoded as the special ids, as the reference implementations do.
//!
//! # Unicode versions
//!
//! Letter/number classes, case mappings and normalisation come from the Unicode tables
//! of Rust's standard library, the `regex` crate and `unicode-normalization`, which need
//! not be the Unicode version of the Python used for the reference: characters assigned
//! only in recent Unicode versions (e.g. the newest CJK extensions) may tokenize
//! differently.

mod clean;

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock, RwLock};

use regex::Regex;

/// Id of the start-of-text token in the CLIP vocabulary.
pub const SOT_TOKEN: u32 = 49406;
/// Id of the end-of-text token in the CLIP vocabulary (also the position CLIP's text
/// encoder pools from, being the highest id in the sequence).
pub const EOT_TOKEN: u32 = 49407;
/// Context length of every CLIP text encoder.
pub const CONTEXT_LENGTH: usize = 77;

/// The OpenAI CLIP BPE merges list shipped in this repository.
static EMBEDDED_BPE_GZ: &[u8] = include_bytes!("../../../assets/bpe_simple_vocab_16e6.txt.gz");

/// Number of merges CLIP uses from the merges list: `49152 - 256 - 2`.
const NUM_MERGES: usize = 49152 - 256 - 2;

/// open_clip's names for the special tokens of the embedded vocabulary.
const EMBEDDED_SOT_TEXT: &str = "<start_of_text>";
const EMBEDDED_EOT_TEXT: &str = "<end_of_text>";

/// Special-token names accepted in a Hugging Face `vocab.json`, preferred first.
const HF_SOT_NAMES: [&str; 2] = ["<|startoftext|>", EMBEDDED_SOT_TEXT];
const HF_EOT_NAMES: [&str; 2] = ["<|endoftext|>", EMBEDDED_EOT_TEXT];

/// End-of-word marker appended to the last symbol of each pre-tokenised piece.
const END_OF_WORD: &str = "</w>";

/// Pieces cached per tokenizer at most (the cache just stops growing after that).
const CACHE_CAPACITY: usize = 1 << 16;

/// Name used in error messages for a vocabulary passed as bytes.
const GZ_SOURCE: &str = "BPE vocabulary (gzip)";

/// Errors from loading a tokenizer vocabulary.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    /// A vocabulary file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file that could not be read.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The gzipped BPE vocabulary could not be decompressed.
    #[error("{GZ_SOURCE}: not a valid gzip stream: {0}")]
    Gzip(#[source] std::io::Error),
    /// A vocabulary file is not valid UTF-8.
    #[error("{file}: not valid UTF-8")]
    NotUtf8 {
        /// The offending file.
        file: String,
    },
    /// `vocab.json` is not a JSON object mapping token strings to non-negative ids.
    #[error("{path}: expected a JSON object mapping tokens to ids: {source}")]
    Json {
        /// The offending `vocab.json`.
        path: PathBuf,
        /// The JSON error (with its line and column).
        #[source]
        source: serde_json::Error,
    },
    /// A line of a merges list is malformed or refers to unknown tokens.
    #[error("{file}, line {line}: {message}")]
    BadLine {
        /// The offending file.
        file: String,
        /// 1-based line number.
        line: usize,
        /// What is wrong with the line.
        message: String,
    },
    /// The vocabulary as a whole is inconsistent (missing lines or tokens, bad ids).
    #[error("{file}: {message}")]
    BadVocab {
        /// The offending file.
        file: String,
        /// What is wrong with it.
        message: String,
    },
}

/// GPT-2/CLIP's reversible map between bytes and printable Unicode characters.
struct ByteMap {
    /// `bytes_to_unicode()[b]`.
    to_char: [char; 256],
    /// The bytes in `bytes_to_unicode()` dictionary order (the vocabulary order).
    order: [u8; 256],
    /// The inverse map.
    from_char: HashMap<char, u8>,
}

fn byte_map() -> &'static ByteMap {
    static MAP: OnceLock<ByteMap> = OnceLock::new();
    MAP.get_or_init(|| {
        let printable = |b: u8| matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
        let mut to_char = ['\0'; 256];
        let mut order = [0u8; 256];
        let mut next = 0;
        for b in (0..=255u8).filter(|&b| printable(b)) {
            to_char[b as usize] = char::from(b);
            order[next] = b;
            next += 1;
        }
        for (shift, b) in (0..=255u8).filter(|&b| !printable(b)).enumerate() {
            to_char[b as usize] = char::from_u32(256 + shift as u32).unwrap_or('\u{fffd}');
            order[next] = b;
            next += 1;
        }
        let from_char = (0..=255u8).map(|b| (to_char[b as usize], b)).collect();
        ByteMap {
            to_char,
            order,
            from_char,
        }
    })
}

/// Everything a loaded tokenizer holds; shared behind an [`Arc`].
struct Inner {
    /// Token string of each id (the decoder).
    tokens: Vec<String>,
    /// Id of the single-byte symbol for each byte, inside a word.
    byte_ids: [u32; 256],
    /// Id of the single-byte symbol with `</w>`, for the last byte of a word.
    byte_end_ids: [u32; 256],
    /// `(left id, right id)` → `(rank, merged id)`.
    merges: HashMap<(u32, u32), (u32, u32)>,
    sot_id: u32,
    eot_id: u32,
    sot_text: String,
    eot_text: String,
    /// CLIP's pre-tokenisation pattern.
    pattern: Regex,
    /// BPE result per pre-tokenised piece.
    cache: RwLock<HashMap<String, Vec<u32>>>,
}

/// The CLIP BPE tokenizer. Cheap to clone (the vocabulary is shared) and `Send + Sync`.
#[derive(Clone)]
pub struct ClipTokenizer {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ClipTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClipTokenizer")
            .field("vocab_size", &self.vocab_size())
            .field("merges", &self.inner.merges.len())
            .field("sot", &(&self.inner.sot_text, self.inner.sot_id))
            .field("eot", &(&self.inner.eot_text, self.inner.eot_id))
            .finish_non_exhaustive()
    }
}

/// One merge rule as read from a file.
struct MergeLine<'a> {
    line: usize,
    left: &'a str,
    right: &'a str,
}

/// Splits a merges-list line into its two symbols.
fn parse_merge_line<'a>(
    file: &str,
    line: usize,
    text: &'a str,
) -> Result<MergeLine<'a>, TokenizerError> {
    let mut parts = text.split_whitespace();
    match (parts.next(), parts.next(), parts.next()) {
        (Some(left), Some(right), None) => Ok(MergeLine { line, left, right }),
        _ => Err(TokenizerError::BadLine {
            file: file.to_owned(),
            line,
            message: format!("expected two space-separated symbols, found {text:?}"),
        }),
    }
}

impl ClipTokenizer {
    /// The tokenizer for the OpenAI CLIP vocabulary embedded in this crate
    /// (`assets/bpe_simple_vocab_16e6.txt.gz`), built on first use and shared afterwards.
    ///
    /// # Panics
    ///
    /// Only if the embedded asset were corrupt, which the crate's tests rule out.
    pub fn embedded() -> &'static ClipTokenizer {
        static EMBEDDED: OnceLock<ClipTokenizer> = OnceLock::new();
        EMBEDDED.get_or_init(|| {
            ClipTokenizer::from_bpe_gz(EMBEDDED_BPE_GZ)
                .expect("the embedded CLIP BPE vocabulary is valid")
        })
    }

    /// Builds the tokenizer from an OpenAI-style gzipped merges list
    /// (`bpe_simple_vocab_16e6.txt.gz`): a version header line, then one merge per line,
    /// of which the first 48894 are used. The vocabulary is the 256 byte symbols, the
    /// same with `</w>`, the joined merges and the two special tokens (49408 ids).
    pub fn from_bpe_gz(bytes: &[u8]) -> Result<Self, TokenizerError> {
        let mut raw = Vec::new();
        flate2::read::GzDecoder::new(bytes)
            .read_to_end(&mut raw)
            .map_err(TokenizerError::Gzip)?;
        let text = String::from_utf8(raw).map_err(|_| TokenizerError::NotUtf8 {
            file: GZ_SOURCE.to_owned(),
        })?;
        let lines: Vec<&str> = text.split('\n').collect();
        if lines.len() < NUM_MERGES + 1 {
            return Err(TokenizerError::BadVocab {
                file: GZ_SOURCE.to_owned(),
                message: format!(
                    "expected a header line and at least {NUM_MERGES} merge lines, found {} lines",
                    lines.len()
                ),
            });
        }
        let merges = lines[1..=NUM_MERGES]
            .iter()
            .enumerate()
            .map(|(i, line)| parse_merge_line(GZ_SOURCE, i + 2, line))
            .collect::<Result<Vec<_>, _>>()?;

        let map = byte_map();
        let byte_symbols = map
            .order
            .iter()
            .map(|&b| map.to_char[b as usize].to_string());
        let mut tokens: Vec<String> = byte_symbols.clone().collect();
        tokens.extend(byte_symbols.map(|s| s + END_OF_WORD));
        tokens.extend(merges.iter().map(|m| format!("{}{}", m.left, m.right)));
        tokens.push(EMBEDDED_SOT_TEXT.to_owned());
        tokens.push(EMBEDDED_EOT_TEXT.to_owned());
        Self::build(
            GZ_SOURCE,
            tokens,
            &merges,
            EMBEDDED_SOT_TEXT,
            EMBEDDED_EOT_TEXT,
        )
    }

    /// Builds the tokenizer from Hugging Face files: `vocab.json` (token → id, ids
    /// forming the dense range `0..N`) and `merges.txt` (an optional `#version` header
    /// line, then one `left right` merge per line, highest priority first). The special
    /// tokens are `<|startoftext|>`/`<|endoftext|>` (or open_clip's
    /// `<start_of_text>`/`<end_of_text>`) as found in `vocab.json`.
    pub fn from_hf_files(vocab_json: &Path, merges_txt: &Path) -> Result<Self, TokenizerError> {
        let read = |path: &Path| {
            let bytes = std::fs::read(path).map_err(|source| TokenizerError::Io {
                path: path.to_owned(),
                source,
            })?;
            String::from_utf8(bytes).map_err(|_| TokenizerError::NotUtf8 {
                file: path.display().to_string(),
            })
        };
        let vocab_text = read(vocab_json)?;
        let merges_text = read(merges_txt)?;
        let vocab_file = vocab_json.display().to_string();
        let merges_file = merges_txt.display().to_string();

        let vocab: HashMap<String, u32> =
            serde_json::from_str(&vocab_text).map_err(|source| TokenizerError::Json {
                path: vocab_json.to_owned(),
                source,
            })?;
        let mut slots: Vec<Option<String>> = vec![None; vocab.len()];
        for (token, &id) in &vocab {
            let bad = |message: String| TokenizerError::BadVocab {
                file: vocab_file.clone(),
                message,
            };
            let slot = slots.get_mut(id as usize).ok_or_else(|| {
                bad(format!(
                    "id {id} of {token:?} is out of range: ids must be 0..{}",
                    vocab.len()
                ))
            })?;
            if let Some(other) = slot {
                return Err(bad(format!(
                    "id {id} is used by both {other:?} and {token:?}"
                )));
            }
            *slot = Some(token.clone());
        }
        // With unique ids all below the entry count, every slot is filled.
        let tokens: Vec<String> = slots.into_iter().flatten().collect();

        let find_special =
            |names: [&'static str; 2], what: &str| -> Result<&'static str, TokenizerError> {
                names
                    .into_iter()
                    .find(|name| vocab.contains_key(*name))
                    .ok_or_else(|| TokenizerError::BadVocab {
                        file: vocab_file.clone(),
                        message: format!("no {what} token (expected one of {names:?})"),
                    })
            };
        let sot_text = find_special(HF_SOT_NAMES, "start-of-text")?;
        let eot_text = find_special(HF_EOT_NAMES, "end-of-text")?;

        let mut merges = Vec::new();
        for (i, line) in merges_text.lines().enumerate() {
            if (i == 0 && line.starts_with('#')) || line.trim().is_empty() {
                continue;
            }
            merges.push(parse_merge_line(&merges_file, i + 1, line)?);
        }
        if merges.is_empty() {
            return Err(TokenizerError::BadVocab {
                file: merges_file,
                message: "no merges".to_owned(),
            });
        }
        Self::build(&merges_file, tokens, &merges, sot_text, eot_text)
    }

    /// Resolves token strings to ids and checks that every symbol BPE can produce has an id.
    fn build(
        file: &str,
        tokens: Vec<String>,
        merges: &[MergeLine<'_>],
        sot_text: &str,
        eot_text: &str,
    ) -> Result<Self, TokenizerError> {
        // As in Python's `dict(zip(vocab, range(len(vocab))))`, a repeated string keeps its last id.
        let encoder: HashMap<&str, u32> = tokens
            .iter()
            .enumerate()
            .map(|(id, t)| (t.as_str(), id as u32))
            .collect();
        let missing = |token: &str| TokenizerError::BadVocab {
            file: file.to_owned(),
            message: format!("the vocabulary has no token {token:?}"),
        };

        let map = byte_map();
        let mut byte_ids = [0u32; 256];
        let mut byte_end_ids = [0u32; 256];
        for b in 0..256 {
            let symbol = map.to_char[b].to_string();
            byte_ids[b] = *encoder
                .get(symbol.as_str())
                .ok_or_else(|| missing(&symbol))?;
            let end = symbol + END_OF_WORD;
            byte_end_ids[b] = *encoder.get(end.as_str()).ok_or_else(|| missing(&end))?;
        }

        let mut merge_table = HashMap::with_capacity(merges.len());
        for (rank, m) in merges.iter().enumerate() {
            let id = |token: &str| {
                encoder
                    .get(token)
                    .copied()
                    .ok_or_else(|| TokenizerError::BadLine {
                        file: file.to_owned(),
                        line: m.line,
                        message: format!(
                            "merge {} {}: {token:?} is not in the vocabulary",
                            m.left, m.right
                        ),
                    })
            };
            let key = (id(m.left)?, id(m.right)?);
            let merged = id(&format!("{}{}", m.left, m.right))?;
            // A repeated pair keeps its last rank, as Python's `dict(zip(merges, ranks))`.
            merge_table.insert(key, (rank as u32, merged));
        }

        let sot_id = *encoder.get(sot_text).ok_or_else(|| missing(sot_text))?;
        let eot_id = *encoder.get(eot_text).ok_or_else(|| missing(eot_text))?;
        let pattern = Regex::new(&format!(
            r"(?i:{}|{}|'s|'t|'re|'ve|'m|'ll|'d)|[\p{{L}}]+|[\p{{N}}]|[^\s\p{{L}}\p{{N}}\x{{345}}]+",
            regex::escape(sot_text),
            regex::escape(eot_text)
        ))
        .map_err(|e| TokenizerError::BadVocab {
            file: file.to_owned(),
            message: format!("cannot build the pre-tokenisation pattern: {e}"),
        })?;

        Ok(Self {
            inner: Arc::new(Inner {
                tokens,
                byte_ids,
                byte_end_ids,
                merges: merge_table,
                sot_id,
                eot_id,
                sot_text: sot_text.to_owned(),
                eot_text: eot_text.to_owned(),
                pattern,
                cache: RwLock::new(HashMap::new()),
            }),
        })
    }

    /// Number of token ids (49408 for CLIP), i.e. the rows of the token embedding.
    pub fn vocab_size(&self) -> usize {
        self.inner.tokens.len()
    }

    /// Cleans `text` and returns its BPE token ids, without start/end tokens and without
    /// truncation (open_clip's `SimpleTokenizer.encode`).
    pub fn encode(&self, text: &str) -> Vec<u32> {
        let inner = &*self.inner;
        let cleaned = clean::clean_lower(text);
        let mut ids = Vec::new();
        for piece in inner.pattern.find_iter(&cleaned).map(|m| m.as_str()) {
            if piece == inner.sot_text {
                ids.push(inner.sot_id);
            } else if piece == inner.eot_text {
                ids.push(inner.eot_id);
            } else {
                self.bpe_cached(piece, &mut ids);
            }
        }
        ids
    }

    /// `[SOT] encode(text) [EOT]`, truncated to `context_length` with the end token kept
    /// as the last id, then zero-padded to exactly `context_length` ids (open_clip's
    /// `tokenize`). A `context_length` of 0 gives an empty vector.
    pub fn tokenize(&self, text: &str, context_length: usize) -> Vec<u32> {
        if context_length == 0 {
            return Vec::new();
        }
        let mut ids = Vec::with_capacity(context_length);
        ids.push(self.inner.sot_id);
        ids.extend(self.encode(text));
        ids.push(self.inner.eot_id);
        if ids.len() > context_length {
            ids.truncate(context_length);
            ids[context_length - 1] = self.inner.eot_id;
        }
        ids.resize(context_length, 0);
        ids
    }

    /// Best-effort inverse of [`encode`](Self::encode): drops trailing zero padding and
    /// the start/end tokens, ignores unknown ids, turns `</w>` into spaces and trims the
    /// trailing space. Cleaning (lower-casing, whitespace, entities) is not undone, and
    /// punctuation comes back space-separated (`"a, b"` → `"a , b"`).
    pub fn decode(&self, ids: &[u32]) -> String {
        let inner = &*self.inner;
        let end = ids.iter().rposition(|&id| id != 0).map_or(0, |i| i + 1);
        let map = byte_map();
        let mut bytes = Vec::new();
        for &id in &ids[..end] {
            if id == inner.sot_id || id == inner.eot_id {
                continue;
            }
            let Some(token) = inner.tokens.get(id as usize) else {
                continue;
            };
            for c in token.chars() {
                match map.from_char.get(&c) {
                    Some(&b) => bytes.push(b),
                    None => bytes.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
                }
            }
        }
        let text = String::from_utf8_lossy(&bytes).replace(END_OF_WORD, " ");
        text.trim_end().to_owned()
    }

    /// Appends the BPE ids of one pre-tokenised piece, using and filling the cache.
    fn bpe_cached(&self, piece: &str, out: &mut Vec<u32>) {
        let cache = &self.inner.cache;
        if let Some(ids) = cache.read().unwrap_or_else(|e| e.into_inner()).get(piece) {
            out.extend_from_slice(ids);
            return;
        }
        let ids = self.bpe(piece.as_bytes());
        out.extend_from_slice(&ids);
        let mut cache = cache.write().unwrap_or_else(|e| e.into_inner());
        if cache.len() < CACHE_CAPACITY {
            cache.insert(piece.to_owned(), ids);
        }
    }

    /// CLIP's BPE on one piece: start from byte symbols (the last one with `</w>`) and
    /// repeatedly merge every occurrence, left to right, of the adjacent pair with the
    /// lowest merge rank.
    fn bpe(&self, bytes: &[u8]) -> Vec<u32> {
        let inner = &*self.inner;
        let Some((&last, init)) = bytes.split_last() else {
            return Vec::new();
        };
        let mut word: Vec<u32> = init.iter().map(|&b| inner.byte_ids[b as usize]).collect();
        word.push(inner.byte_end_ids[last as usize]);

        while word.len() > 1 {
            let best = word
                .windows(2)
                .filter_map(|pair| {
                    inner
                        .merges
                        .get(&(pair[0], pair[1]))
                        .map(|&(rank, merged)| (rank, merged, pair))
                })
                .min_by_key(|&(rank, _, _)| rank);
            let Some((_, merged, pair)) = best else { break };
            let (left, right) = (pair[0], pair[1]);
            let mut next = Vec::with_capacity(word.len());
            let mut i = 0;
            while i < word.len() {
                if i + 1 < word.len() && word[i] == left && word[i + 1] == right {
                    next.push(merged);
                    i += 2;
                } else {
                    next.push(word[i]);
                    i += 1;
                }
            }
            word = next;
        }
        word
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reference ids from open_clip 3.3.0's `SimpleTokenizer`. The fixture is regenerated with
    /// `.venv-ref/bin/python tests/fixtures/make_reference.py` (see tests/fixtures/requirements.txt).
    const REFERENCE_JSON: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/reference.json"
    );

    fn tok() -> &'static ClipTokenizer {
        ClipTokenizer::embedded()
    }

    /// The tokenizer section of a reference file: `(string, ids padded to 77, unpadded BPE ids)`.
    fn load_reference(path: &Path) -> Vec<(String, Vec<u32>, Vec<u32>)> {
        let text = std::fs::read_to_string(path).unwrap_or_else(|e| {
            panic!(
                "{}: {e} (regenerate it, see REFERENCE_JSON)",
                path.display()
            )
        });
        let json: serde_json::Value =
            serde_json::from_str(&text).expect("reference.json is valid JSON");
        let section = &json["tokenizer"];
        let strings: Vec<String> =
            serde_json::from_value(section["strings"].clone()).expect("tokenizer.strings");
        let ids: Vec<Vec<u32>> =
            serde_json::from_value(section["ids"].clone()).expect("tokenizer.ids");
        let bpe: Vec<Vec<u32>> =
            serde_json::from_value(section["bpe"].clone()).expect("tokenizer.bpe");
        assert_eq!(
            strings.len(),
            ids.len(),
            "tokenizer.ids has one row per string"
        );
        assert_eq!(
            strings.len(),
            bpe.len(),
            "tokenizer.bpe has one row per string"
        );
        strings
            .into_iter()
            .zip(ids)
            .zip(bpe)
            .map(|((s, i), b)| (s, i, b))
            .collect()
    }

    /// Checks every reference string against `tokenizer`, reporting all mismatches at once.
    fn assert_matches_reference(tokenizer: &ClipTokenizer, path: &Path) -> usize {
        let cases = load_reference(path);
        let mut failures = Vec::new();
        for (text, ids, bpe) in &cases {
            let got_bpe = tokenizer.encode(text);
            let got_ids = tokenizer.tokenize(text, CONTEXT_LENGTH);
            if &got_bpe != bpe {
                failures.push(format!(
                    "encode({text:?}):\n  got      {got_bpe:?}\n  expected {bpe:?}"
                ));
            }
            if &got_ids != ids {
                failures.push(format!(
                    "tokenize({text:?}, 77):\n  got      {got_ids:?}\n  expected {ids:?}"
                ));
            }
        }
        assert!(
            failures.is_empty(),
            "{} mismatches:\n{}",
            failures.len(),
            failures.join("\n")
        );
        cases.len()
    }

    #[test]
    fn tokenizer_matches_open_clip_fixture() {
        let n = assert_matches_reference(tok(), Path::new(REFERENCE_JSON));
        assert!(n > 0, "the fixture has tokenizer strings");
        eprintln!("{n} fixture strings matched open_clip exactly");
    }

    /// Extra cases checked against open_clip 3.3.0's `SimpleTokenizer.encode`.
    const HAND_CHECKED: &[(&str, &[u32])] = &[
        ("a photo of a dog.", &[320, 1125, 539, 320, 1929, 269]),
        ("Hello, World!", &[3306, 267, 1002, 256]),
        (
            "It\u{2019}s a \u{201c}quoted\u{201d} \u{fb01}ne day",
            &[585, 568, 320, 257, 27706, 257, 3797, 575],
        ),
        (
            "\u{ff26}\u{ff35}\u{ff2c}\u{ff2c}\u{3000}\u{ff57}\u{ff49}\u{ff44}\u{ff54}\u{ff48}",
            &[1476, 23571],
        ),
        ("caf\u{e9} cafe\u{301}", &[15304, 15304]),
        (
            "&lt;b&gt;tom &amp; jerry&lt;/b&gt; &hellip; &#x2019;",
            &[283, 321, 285, 2435, 261, 9164, 34308, 321, 285, 959, 262],
        ),
        (
            "I'm sure they'll've done it, didn't they?",
            &[
                328, 880, 1650, 889, 1342, 1200, 1700, 585, 267, 2376, 713, 889, 286,
            ],
        ),
        (
            "1234 3.14 \u{bd}",
            &[272, 273, 274, 275, 274, 269, 272, 275, 33613],
        ),
        (
            "\u{732b}\u{306e}\u{5199}\u{771f} \u{1f431}\u{1f44d}\u{1f3fd}",
            &[163, 234, 104, 21575, 44653, 33440, 509, 35710, 43722],
        ),
        (
            "<start_of_text>x<|endoftext|>",
            &[49406, 343, 27, 347, 40786, 4160, 91, 285],
        ),
        ("   lots \t of\n\nspace   ", &[2958, 539, 2138]),
        ("", &[]),
        ("a\u{345}b \u{345}", &[320, 321]),
        ("it'\u{17f} IT'S", &[585, 6, 129, 379, 585, 568]),
        ("<START_OF_TEXT>dog", &[SOT_TOKEN, 1929]),
        (
            "x\r\n<b>&rsquo;</b>\n&rsquo;",
            &[343, 283, 321, 29, 728, 247, 34308, 321, 285, 728, 503],
        ),
        (
            "&ampersand &amp &notin; &#128;&#x9D;",
            &[261, 4840, 537, 261, 17788, 487, 34919, 126, 507],
        ),
        (
            "\u{1c5}\u{133} \u{fb05}",
            &[67, 129, 122, 72, 329, 129, 123, 339],
        ),
    ];

    #[test]
    fn tokenizer_hand_checked_cases() {
        for (text, expected) in HAND_CHECKED {
            assert_eq!(&tok().encode(text), expected, "encode({text:?})");
        }
    }

    #[test]
    fn tokenizer_vocab_and_specials() {
        let t = tok();
        assert_eq!(t.vocab_size(), 49408);
        assert_eq!((t.inner.sot_id, t.inner.eot_id), (SOT_TOKEN, EOT_TOKEN));
        assert_eq!(t.inner.tokens[0], "!");
        assert_eq!(t.inner.tokens[256], "!</w>");
        assert_eq!(t.inner.tokens[SOT_TOKEN as usize], "<start_of_text>");
        assert_eq!(
            t.tokenize("", CONTEXT_LENGTH)[..3],
            [SOT_TOKEN, EOT_TOKEN, 0]
        );
        assert_eq!(t.encode("<END_OF_TEXT>"), [EOT_TOKEN]);
        fn assert_send_sync<T: Send + Sync + Clone>() {}
        assert_send_sync::<ClipTokenizer>();
    }

    #[test]
    fn tokenizer_truncation_keeps_eot_last() {
        let t = tok();
        let text = "a photo of a dog ".repeat(40);
        assert!(t.encode(&text).len() > CONTEXT_LENGTH);
        let ids = t.tokenize(&text, CONTEXT_LENGTH);
        assert_eq!(ids.len(), CONTEXT_LENGTH);
        assert_eq!(ids[0], SOT_TOKEN);
        assert_eq!(ids[CONTEXT_LENGTH - 1], EOT_TOKEN);
        assert_eq!(
            ids[1..CONTEXT_LENGTH - 1],
            t.encode(&text)[..CONTEXT_LENGTH - 2]
        );
        assert!(!ids.contains(&0));
        assert_eq!(t.tokenize(&text, 3), [SOT_TOKEN, 320, EOT_TOKEN]);
        assert_eq!(t.tokenize(&text, 1), [EOT_TOKEN]);
        assert!(t.tokenize(&text, 0).is_empty());
        let short = t.tokenize("a dog", 10);
        assert_eq!(short, [SOT_TOKEN, 320, 1929, EOT_TOKEN, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn tokenizer_decode_round_trips_plain_text() {
        let t = tok();
        for text in [
            "a photo of a cat",
            "the quick brown fox jumps over the lazy dog",
            "a bad photo of the itap of a sculpture",
            "supercalifragilisticexpialidocious",
        ] {
            assert_eq!(t.decode(&t.encode(text)), text);
            assert_eq!(t.decode(&t.tokenize(text, CONTEXT_LENGTH)), text);
        }
        assert_eq!(t.decode(&t.encode("Hello, World!")), "hello , world !");
        assert_eq!(
            t.decode(&t.encode("caf\u{e9} \u{1f431}")),
            "caf\u{e9} \u{1f431}"
        );
        assert_eq!(t.decode(&[u32::MAX, 320]), "a");
    }

    /// The 48894 merges of the embedded vocabulary, as text lines.
    fn embedded_merge_lines() -> Vec<String> {
        let mut text = String::new();
        flate2::read::GzDecoder::new(EMBEDDED_BPE_GZ)
            .read_to_string(&mut text)
            .expect("gunzip");
        text.split('\n')
            .skip(1)
            .take(NUM_MERGES)
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn tokenizer_from_hf_files_matches_embedded() {
        let embedded = tok();
        let scratch = tempfile::tempdir().expect("a scratch directory");
        let dir = scratch.path();
        // Hugging Face names the special tokens the OpenAI way.
        let vocab: serde_json::Map<String, serde_json::Value> = embedded
            .inner
            .tokens
            .iter()
            .enumerate()
            .map(|(id, token)| {
                let name = match id as u32 {
                    SOT_TOKEN => "<|startoftext|>".to_owned(),
                    EOT_TOKEN => "<|endoftext|>".to_owned(),
                    _ => token.clone(),
                };
                (name, serde_json::Value::from(id))
            })
            .collect();
        let vocab_path = dir.join("vocab.json");
        let merges_path = dir.join("merges.txt");
        std::fs::write(&vocab_path, serde_json::to_string(&vocab).unwrap()).unwrap();
        std::fs::write(
            &merges_path,
            format!("#version: 0.2\n{}\n", embedded_merge_lines().join("\n")),
        )
        .unwrap();

        let hf = ClipTokenizer::from_hf_files(&vocab_path, &merges_path).expect("HF files load");
        assert_eq!(hf.vocab_size(), embedded.vocab_size());
        assert_eq!(hf.inner.merges, embedded.inner.merges);
        let mut texts: Vec<String> = HAND_CHECKED.iter().map(|(s, _)| s.to_string()).collect();
        if let Ok(text) = std::fs::read_to_string(REFERENCE_JSON) {
            let json: serde_json::Value = serde_json::from_str(&text).unwrap();
            if let Some(strings) = json["tokenizer"]["strings"].as_array() {
                texts.extend(strings.iter().filter_map(|s| s.as_str().map(str::to_owned)));
            }
        }
        // The two only differ on the special-token spellings, which each recognises by its own names.
        texts.retain(|t| !t.contains("<|") && !t.to_lowercase().contains("_of_text>"));
        for text in &texts {
            assert_eq!(
                hf.tokenize(text, CONTEXT_LENGTH),
                embedded.tokenize(text, CONTEXT_LENGTH),
                "{text:?}"
            );
        }
        assert_eq!(
            hf.encode("<|startoftext|>a<|endoftext|>"),
            [SOT_TOKEN, 320, EOT_TOKEN]
        );
    }

    fn gzip(text: &str) -> Vec<u8> {
        use std::io::Write;
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(text.as_bytes()).unwrap();
        encoder.finish().unwrap()
    }

    #[test]
    fn tokenizer_malformed_vocabularies_are_errors() {
        let err = |r: Result<ClipTokenizer, TokenizerError>| {
            r.expect_err("malformed input must fail").to_string()
        };

        assert!(err(ClipTokenizer::from_bpe_gz(b"definitely not gzip")).contains("gzip"));
        assert!(err(ClipTokenizer::from_bpe_gz(&gzip("#version\na b\n"))).contains("48894"));
        let mut lines = embedded_merge_lines();
        lines[9] = "one two three".to_owned();
        let msg = err(ClipTokenizer::from_bpe_gz(&gzip(&format!(
            "#version\n{}",
            lines.join("\n")
        ))));
        assert!(msg.contains("line 11"), "{msg}");
        lines[9] = "q \u{2603}".to_owned();
        let msg = err(ClipTokenizer::from_bpe_gz(&gzip(&format!(
            "#version\n{}",
            lines.join("\n")
        ))));
        assert!(
            msg.contains("line 11") && msg.contains("not in the vocabulary"),
            "{msg}"
        );

        let scratch = tempfile::tempdir().expect("a scratch directory");
        let dir = scratch.path();
        let vocab = dir.join("vocab.json");
        let merges = dir.join("merges.txt");
        std::fs::write(&merges, "#version: 0.2\na b\n").unwrap();
        let msg = err(ClipTokenizer::from_hf_files(
            &dir.join("missing.json"),
            &merges,
        ));
        assert!(msg.contains("missing.json"), "{msg}");
        std::fs::write(&vocab, "{\"a\": 0,").unwrap();
        assert!(err(ClipTokenizer::from_hf_files(&vocab, &merges)).contains("vocab.json"));
        std::fs::write(&vocab, "[1, 2]").unwrap();
        assert!(err(ClipTokenizer::from_hf_files(&vocab, &merges)).contains("JSON object"));
        std::fs::write(&vocab, r#"{"a": 0, "b": 5}"#).unwrap();
        assert!(err(ClipTokenizer::from_hf_files(&vocab, &merges)).contains("out of range"));
        std::fs::write(
            &vocab,
            r#"{"a": 0, "<|startoftext|>": 1, "<|endoftext|>": 2}"#,
        )
        .unwrap();
        assert!(err(ClipTokenizer::from_hf_files(&vocab, &merges)).contains("no token"));
        std::fs::write(&vocab, r#"{"a": 0}"#).unwrap();
        assert!(err(ClipTokenizer::from_hf_files(&vocab, &merges)).contains("start-of-text"));
        std::fs::write(&merges, "#version: 0.2\na b c\n").unwrap();
        std::fs::write(
            &vocab,
            r#"{"a": 0, "<|startoftext|>": 1, "<|endoftext|>": 2}"#,
        )
        .unwrap();
        assert!(err(ClipTokenizer::from_hf_files(&vocab, &merges)).contains("line 2"));
    }
}
