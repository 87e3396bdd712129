//! The plan language: TOML file → typed raw plan → resolved `Plan` (templates rendered, references checked).
