//! Plan diagnostics: every error of a file, located, rendered with miette.

use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;

use miette::{Diagnostic, GraphicalReportHandler, GraphicalTheme, NamedSource, SourceSpan};
use thiserror::Error;

/// Why a plan could not be loaded.
#[derive(Debug, Error, Diagnostic)]
pub enum PlanError {
    /// The file could not be read (exit code 1).
    #[error("cannot read plan file `{}`: {source}", path.display())]
    #[diagnostic(
        code(planrun::plan::read),
        help("check the path; plans are TOML files such as `plans/migrate.toml`")
    )]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The plan has errors (exit code 2); each one is located in the file.
    #[error(transparent)]
    #[diagnostic(transparent)]
    Invalid(#[from] InvalidPlan),
}

impl PlanError {
    /// The process exit code for this error: 2 for an invalid plan, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            PlanError::Read { .. } => 1,
            PlanError::Invalid(_) => 2,
        }
    }

    /// The individual errors (empty for `Read`).
    pub fn errors(&self) -> &[PlanDiagnostic] {
        match self {
            PlanError::Read { .. } => &[],
            PlanError::Invalid(i) => &i.errors,
        }
    }

    /// Render as text without colour, at a fixed width (for snapshots and logs).
    pub fn render_plain(&self, width: usize) -> String {
        render(self, width, false)
    }
}

/// Every error found in one plan file.
#[derive(Debug, Error, Diagnostic)]
#[error("plan `{}` is invalid: {} error{}", path.display(), errors.len(), if errors.len() == 1 { "" } else { "s" })]
#[diagnostic()]
pub struct InvalidPlan {
    pub path: PathBuf,
    #[source_code]
    pub src: NamedSource<Arc<String>>,
    #[related]
    pub errors: Vec<PlanDiagnostic>,
}

/// One located error.
#[derive(Debug, Clone, Error, Diagnostic)]
#[error("{message}")]
pub struct PlanDiagnostic {
    pub message: String,
    #[label("{label}")]
    pub span: SourceSpan,
    pub label: String,
    #[help]
    pub help: Option<String>,
}

/// Builder used while checking a plan.
#[derive(Debug, Clone)]
pub(crate) struct Diag {
    pub message: String,
    pub span: Range<usize>,
    pub label: String,
    pub help: Option<String>,
}

impl Diag {
    pub fn new(span: Range<usize>, message: impl Into<String>, label: impl Into<String>) -> Diag {
        Diag {
            message: message.into(),
            span,
            label: label.into(),
            help: None,
        }
    }

    pub fn help(mut self, help: impl Into<String>) -> Diag {
        self.help = Some(help.into());
        self
    }
}

/// All diagnostics of one file, in file order.
pub(crate) fn invalid(path: PathBuf, text: &str, mut diags: Vec<Diag>) -> InvalidPlan {
    diags.sort_by_key(|d| (d.span.start, d.span.end));
    diags.dedup_by(|a, b| a.span == b.span && a.message == b.message);
    let name = path.display().to_string();
    InvalidPlan {
        path,
        src: NamedSource::new(name, Arc::new(text.to_string())),
        errors: diags
            .into_iter()
            .map(|d| PlanDiagnostic {
                message: d.message,
                span: (d.span.start, d.span.end.saturating_sub(d.span.start)).into(),
                label: d.label,
                help: d.help,
            })
            .collect(),
    }
}

/// "did you mean `x`?" for the closest of `candidates`, if any is close.
pub(crate) fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<String> {
    let mut best: Option<(f64, &str)> = None;
    for c in candidates {
        let score = strsim::jaro_winkler(word, c);
        if score > 0.8 && best.is_none_or(|(s, _)| score > s) {
            best = Some((score, c));
        }
    }
    best.map(|(_, c)| format!("did you mean `{c}`?"))
}

/// "did you mean" plus the full list of choices.
pub(crate) fn suggest<'a>(
    word: &str,
    what: &str,
    candidates: impl IntoIterator<Item = &'a str> + Clone,
) -> String {
    let list: Vec<&str> = candidates.clone().into_iter().collect();
    let known = if list.is_empty() {
        format!("no {what} is defined")
    } else {
        format!("known {what}: {}", list.join(", "))
    };
    match did_you_mean(word, candidates) {
        Some(d) => format!("{d} ({known})"),
        None => known,
    }
}

/// Render any diagnostic the way the CLI does.
pub fn render(diag: &dyn Diagnostic, width: usize, color: bool) -> String {
    let theme = if color {
        GraphicalTheme::unicode()
    } else {
        GraphicalTheme::unicode_nocolor()
    };
    let mut out = String::new();
    GraphicalReportHandler::new_themed(theme)
        .with_width(width)
        .with_links(false)
        .render_report(&mut out, diag)
        .expect("rendering into a String cannot fail");
    out
}
