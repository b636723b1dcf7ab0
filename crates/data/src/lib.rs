//! Datasets, few-shot sampling, base/new splits, augmentation and batching.
