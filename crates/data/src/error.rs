//! The one error type of this crate. Every message names the dataset and the file concerned, so a
//! user with a broken copy of a dataset on disk knows what to fix without reading code.

use std::path::PathBuf;

/// Shorthand for results of this crate.
pub type Result<T, E = DataError> = std::result::Result<T, E>;

/// What can go wrong while reading a dataset, sampling few-shot subsets or loading images.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// `load_dataset` was given a name that is not in [`crate::DATASETS`].
    #[error("unknown dataset `{name}`; known datasets: {known}")]
    UnknownDataset {
        /// The name asked for.
        name: String,
        /// The names that exist, comma separated.
        known: String,
    },
    /// The dataset's folder is not where the CoOp layout puts it.
    #[error("{dataset}: dataset folder {path} does not exist (expected CoOp's layout: {expected})")]
    MissingRoot {
        /// Dataset name.
        dataset: String,
        /// The folder that was looked for.
        path: PathBuf,
        /// What the folder should contain, for the message.
        expected: String,
    },
    /// A split file, class-name list or image folder the layout requires is absent.
    #[error("{dataset}: missing {what} {path}")]
    MissingFile {
        /// Dataset name.
        dataset: String,
        /// The file or folder that was looked for.
        path: PathBuf,
        /// What the file is (`split file`, `class-name list`, …).
        what: String,
    },
    /// A JSON file (split file, few-shot subset, list) that does not parse or does not have the
    /// expected structure; `line` and `column` come from serde_json.
    #[error("{dataset}: malformed JSON in {path} at line {line}, column {column}: {message}")]
    Json {
        /// Dataset name.
        dataset: String,
        /// The JSON file.
        path: PathBuf,
        /// 1-based line of the error.
        line: usize,
        /// 1-based column of the error.
        column: usize,
        /// serde_json's description.
        message: String,
    },
    /// A text or CSV file with a line that cannot be understood.
    #[error("{dataset}: {path}, line {line}: {message}")]
    Format {
        /// Dataset name.
        dataset: String,
        /// The file.
        path: PathBuf,
        /// 1-based line number (0 when the problem is not tied to one line).
        line: usize,
        /// What is wrong with it.
        message: String,
    },
    /// An image that a split or list file names does not exist.
    #[error("{dataset}: image {path} does not exist (listed in {listed_in})")]
    MissingImage {
        /// Dataset name.
        dataset: String,
        /// The image path.
        path: PathBuf,
        /// The split/list file that names it, or the folder it was expected in.
        listed_in: PathBuf,
    },
    /// A file that cannot be decoded as an image (empty, truncated, not an image at all).
    #[error("{dataset}: {path} is not a readable image: {message}")]
    BadImage {
        /// Dataset name.
        dataset: String,
        /// The file.
        path: PathBuf,
        /// The decoder's description.
        message: String,
    },
    /// The labels and class names read from disk contradict each other.
    #[error("{dataset}: {path}: {message}")]
    Inconsistent {
        /// Dataset name.
        dataset: String,
        /// The file or folder the contradiction was found in.
        path: PathBuf,
        /// What contradicts what.
        message: String,
    },
    /// Any other I/O failure (permissions, …).
    #[error("{dataset}: {path}: {source}")]
    Io {
        /// Dataset name.
        dataset: String,
        /// The file or folder.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

impl DataError {
    /// Wraps an I/O error with the dataset and the path it concerns.
    pub fn io(dataset: &str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        DataError::Io {
            dataset: dataset.to_string(),
            path: path.into(),
            source,
        }
    }

    /// Wraps a serde_json error, keeping its line and column.
    pub fn json(dataset: &str, path: impl Into<PathBuf>, error: &serde_json::Error) -> Self {
        // serde_json appends " at line L column C" to its message; the position is kept in
        // separate fields, so strip it from the text.
        let text = error.to_string();
        let message = match text.rfind(" at line ") {
            Some(at) => text[..at].to_string(),
            None => text,
        };
        DataError::Json {
            dataset: dataset.to_string(),
            path: path.into(),
            line: error.line(),
            column: error.column(),
            message,
        }
    }

    /// The file or folder the error is about, where there is one.
    pub fn path(&self) -> Option<&std::path::Path> {
        match self {
            DataError::UnknownDataset { .. } => None,
            DataError::MissingRoot { path, .. }
            | DataError::MissingFile { path, .. }
            | DataError::Json { path, .. }
            | DataError::Format { path, .. }
            | DataError::MissingImage { path, .. }
            | DataError::BadImage { path, .. }
            | DataError::Inconsistent { path, .. }
            | DataError::Io { path, .. } => Some(path),
        }
    }
}
