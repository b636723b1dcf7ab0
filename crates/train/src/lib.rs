//! Training, losses, schedules, checkpoints and evaluation protocols.
