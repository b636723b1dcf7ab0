//! The package's integration tests, one module per subject, built into a single test binary:
//! each separate binary compiled Burn's generic code for itself and linked it again, which made
//! the test build several times slower than the tests themselves.

mod checkpoint;
mod image_parts;
mod learner;
mod official_step;
mod reference_step;
