//! `Ctx`: what every check shares: the renderer, the error list and what came from `env`.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::PathBuf;

use crate::plan::diag::{Diag, suggest};
use crate::plan::load::RawPlan;
use crate::plan::location::Location;
use crate::plan::mask::Masks;
use crate::plan::model::Instance;
use crate::plan::raw::{RawStep, Sp};
use crate::plan::template::{Renderer, TemplateError};
use crate::secret::Secret;

/// Where each resolved value came from, for errors found after resolution (cycles, overlaps).
#[derive(Debug, Default)]
pub(crate) struct Spans {
    pub step_ids: BTreeMap<String, Range<usize>>,
    /// Per step: span of each `needs` entry by target id.
    pub needs: BTreeMap<String, BTreeMap<String, Range<usize>>>,
}

pub(super) struct Ctx<'a> {
    pub r: Renderer,
    /// The plan file, to find where inside a string a template error is.
    pub text: &'a str,
    /// The one error list every check extends.
    pub diags: &'a mut Vec<Diag>,
    pub masks: Masks,
    /// The plan file's directory: relative paths resolve against it.
    pub dir: PathBuf,
    pub bucket_ids: Vec<String>,
}

impl Ctx<'_> {
    /// Renders a plan string; a template error is recorded and gives `None`.
    pub fn text(&mut self, sp: &Sp<String>) -> Option<String> {
        match self.r.render(sp.get()) {
            Ok(r) => {
                if r.tainted {
                    self.masks.tainted.insert(r.value.clone());
                }
                crate::secret::never_print(r.env_values.iter().map(String::as_str));
                self.masks.env_values.extend(r.env_values);
                Some(r.value)
            }
            Err(e) => {
                self.template_error(
                    sp,
                    &e,
                    "templates can use `vars.NAME` and `env.NAME`; give a fallback with \
                     `| default('value')`",
                );
                None
            }
        }
    }

    pub fn opt_text(&mut self, sp: &Option<Sp<String>>) -> Option<String> {
        sp.as_ref().and_then(|s| self.text(s))
    }

    /// Renders a secret; it is never recorded anywhere displayable.
    pub fn secret(&mut self, sp: &Option<Sp<String>>) -> Option<Secret> {
        let sp = sp.as_ref()?;
        match self.r.render(sp.get()) {
            Ok(r) => Some(Secret::new(r.value)),
            Err(e) => {
                self.template_error(
                    sp,
                    &e,
                    "give a fallback with `| default('value')` or set the variable",
                );
                None
            }
        }
    }

    fn template_error(&mut self, sp: &Sp<String>, e: &TemplateError, help: &str) {
        let span = self.inner_span(sp, e);
        self.diags
            .push(Diag::new(span, format!("template error: {e}"), e.label()).help(help));
    }

    /// The part of the string the error is about, when the string is written without escapes
    /// (so template offsets equal file offsets); else the whole string.
    fn inner_span(&self, sp: &Sp<String>, e: &TemplateError) -> Range<usize> {
        let span = sp.span();
        let written = self.text.get(span.clone()).unwrap_or("");
        let plain = written.len() == sp.get().len() + 2
            && (written.starts_with('"') || written.starts_with('\''))
            && &written[1..written.len() - 1] == sp.get();
        match (&e.at, plain) {
            (Some(at), true) if at.end <= sp.get().len() => {
                span.start + 1 + at.start..span.start + 1 + at.end.max(at.start + 1)
            }
            _ => span,
        }
    }

    /// A rendered path, absolute against the plan file's directory.
    pub fn path(&mut self, sp: &Option<Sp<String>>) -> Option<PathBuf> {
        self.opt_text(sp).map(|p| self.dir.join(p))
    }

    /// A rendered `<bucket id>:<path>` whose bucket exists.
    pub fn location(&mut self, sp: &Sp<String>) -> Option<Location> {
        let text = self.text(sp)?;
        let Some((bucket, path)) = text.split_once(':') else {
            self.diags.push(
                Diag::new(
                    sp.span(),
                    format!("`{}` is not a location", self.masks.mask(&text)),
                    "expected `<bucket id>:<path>`",
                )
                .help(format!(
                    "write a bucket id, a colon and a path, e.g. `{}:backup/x`",
                    self.bucket_ids.first().map_or("bucket_a", String::as_str)
                )),
            );
            return None;
        };
        if !self.bucket_ids.iter().any(|b| b == bucket) {
            self.diags.push(
                Diag::new(
                    sp.span(),
                    format!("unknown bucket `{bucket}` in location"),
                    "no bucket with this id",
                )
                .help(suggest(
                    bucket,
                    "buckets",
                    self.bucket_ids.iter().map(String::as_str),
                )),
            );
            return None;
        }
        match Location::new(bucket, path) {
            Ok(loc) => {
                // Normalising changes the text: mask the normalised forms too.
                if self.masks.tainted.contains(&text) {
                    self.masks.tainted.insert(loc.to_string());
                    self.masks.tainted.insert(loc.path.clone());
                }
                Some(loc)
            }
            Err(e) => {
                self.diags.push(
                    Diag::new(sp.span(), format!("bad location: {e}"), "bad path").help(
                        "paths are `/`-separated names under the bucket, without `.` or `..`",
                    ),
                );
                None
            }
        }
    }
}

/// What resolving one step needs to know about the rest of the plan.
pub(super) struct Known<'a> {
    pub raw: &'a RawPlan,
    pub step_ids: Vec<&'a str>,
    pub instance_ids: Vec<&'a str>,
    pub instances: &'a BTreeMap<String, Instance>,
}

impl Known<'_> {
    /// The instance a step names, when it exists.
    pub fn instance(&self, cx: &mut Ctx, step: &str, sp: &Sp<String>) -> Option<String> {
        if self.instance_ids.contains(&sp.get().as_str()) {
            return Some(sp.get().clone());
        }
        cx.diags.push(
            Diag::new(
                sp.span(),
                format!("unknown instance `{}` in `steps.{step}.instance`", sp.get()),
                "no instance with this id",
            )
            .help(suggest(
                sp.get(),
                "instances",
                self.instance_ids.iter().copied(),
            )),
        );
        None
    }

    /// Ids of the steps of one type, for "known ..." hints.
    pub fn ids_of(&self, is: fn(&RawStep) -> bool) -> Vec<&str> {
        self.raw
            .steps
            .iter()
            .filter(|s| is(&s.raw))
            .map(|s| s.id.as_str())
            .collect()
    }
}
