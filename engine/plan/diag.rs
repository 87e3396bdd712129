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

/// All diagnostics of one file, in file order. The snippets come from [`Snippet`]: no secret
/// value and no over-long line of the file is ever shown.
pub(crate) fn invalid(path: PathBuf, text: &str, mut diags: Vec<Diag>) -> InvalidPlan {
    diags.sort_by_key(|d| (d.span.start, d.span.end));
    diags.dedup_by(|a, b| a.span == b.span && a.message == b.message);
    let name = path.display().to_string();
    let shown = Snippet::of(text);
    InvalidPlan {
        path,
        src: NamedSource::new(name, Arc::new(shown.text.clone())),
        errors: diags
            .into_iter()
            .map(|d| {
                let (start, end) = (shown.map(d.span.start), shown.map(d.span.end));
                PlanDiagnostic {
                    message: clip(&d.message),
                    span: (start, end.saturating_sub(start)).into(),
                    label: clip(&d.label),
                    help: d.help.as_deref().map(clip),
                }
            })
            .collect(),
    }
}

/// Longest line an error snippet shows whole; longer ones keep their ends.
const LINE_MAX: usize = 200;
/// Longest message, label or help shown whole (they may quote a value from the plan).
const MESSAGE_MAX: usize = 400;

/// The plan text as error snippets show it: secret values overwritten (`mask`), and lines over
/// [`LINE_MAX`] cut in the middle, with the cuts kept to move error offsets along.
struct Snippet {
    text: String,
    /// (start, end) of each removed range in the original text, and where its marker starts
    /// and ends in the shown one.
    cuts: Vec<(usize, usize, usize, usize)>,
}

impl Snippet {
    fn of(text: &str) -> Snippet {
        let masked = super::mask::mask_secret_values(text);
        let mut shown = String::with_capacity(masked.len().min(1 << 20));
        let mut cuts = Vec::new();
        let mut at = 0;
        for line in masked.split_inclusive('\n') {
            if line.len() <= LINE_MAX {
                shown.push_str(line);
            } else {
                let head = floor(line, LINE_MAX / 2);
                let tail = ceil(line, line.len() - LINE_MAX / 4);
                shown.push_str(&line[..head]);
                let marker = format!(" … {} bytes not shown … ", tail - head);
                cuts.push((
                    at + head,
                    at + tail,
                    shown.len(),
                    shown.len() + marker.len(),
                ));
                shown.push_str(&marker);
                shown.push_str(&line[tail..]);
            }
            at += line.len();
        }
        Snippet { text: shown, cuts }
    }

    /// Where offset `o` of the original text is in the shown one (inside a cut: its marker).
    fn map(&self, o: usize) -> usize {
        let mut moved = o as isize;
        for &(start, end, m_start, m_end) in &self.cuts {
            if o >= end {
                moved -= (end - start) as isize - (m_end - m_start) as isize;
            } else if o > start {
                return m_start + 1;
            }
        }
        moved.max(0) as usize
    }
}

fn floor(s: &str, mut i: usize) -> usize {
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn ceil(s: &str, mut i: usize) -> usize {
    while !s.is_char_boundary(i) {
        i += 1;
    }
    i
}

/// `s`, or its start and a note of how much was left out.
fn clip(s: &str) -> String {
    if s.len() <= MESSAGE_MAX {
        return s.to_string();
    }
    let cut = floor(s, MESSAGE_MAX);
    format!("{}… ({} bytes not shown)", &s[..cut], s.len() - cut)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snippets_cut_long_lines_and_move_offsets_along() {
        let long = "x".repeat(10_000);
        let text = format!("a = \"{long}\"\npassword = \"hunter2\"\nb = 1\n");
        let s = Snippet::of(&text);
        assert!(s.text.len() < 400, "{}", s.text.len());
        assert!(s.text.contains("bytes not shown"));
        assert!(!s.text.contains("hunter2"));
        // `b` keeps pointing at `b`, and a span inside the cut lands on its marker.
        let b = text.find("b = 1").unwrap();
        assert_eq!(&s.text[s.map(b)..s.map(b) + 5], "b = 1");
        assert!(s.text[s.map(5000)..].starts_with("… "));
        assert!(clip(&"y".repeat(5000)).ends_with("(4600 bytes not shown)"));
    }
}
