//! The plan language: TOML file → typed raw plan → resolved `Plan` (templates rendered, references checked) → `Dag`.
//!
//! Phases (`compile.rs`): [`load`] parses into a spanned raw plan (`load.rs`), resolves and checks
//! it (`validate/`, templates in `template.rs`, collection patterns in `pattern.rs`), then builds
//! the [`dag::Dag`]. Every error of the file is collected into one [`PlanError`].

mod compile;
pub mod dag;
mod describe;
mod diag;
mod load;
mod location;
mod mask;
mod model;
pub mod pattern;
mod raw;
mod template;
mod validate;

pub use compile::{Compiled, load, load_str};
pub use diag::{InvalidPlan, PlanDiagnostic, PlanError, render};
pub use location::Location;
pub use model::*;
pub use pattern::{Pattern, glob};
pub use raw::schema_json;
