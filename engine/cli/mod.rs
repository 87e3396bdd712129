//! The binary's side: the commands, and rendering for people (the preview text, the reporter).

pub mod apply;
pub mod commands;
pub mod preview;
pub mod report;
pub mod saved;
