//! Masking of env-derived values: what came from the environment is treated as a secret.

use std::collections::BTreeSet;

use super::location::Location;

/// What a plan's strings took from `env`, so that no message or output shows it.
#[derive(Debug, Clone, Default)]
pub(crate) struct Masks {
    /// Rendered strings that used `env` (directly or through a var): shown as `***`.
    pub tainted: BTreeSet<String>,
    /// Values of env vars used by non-secret strings: masked wherever they appear in a text.
    pub env_values: BTreeSet<String>,
}

impl Masks {
    /// `***` when `value` came from `env`, else `value` unchanged.
    pub fn mask<'a>(&self, value: &'a str) -> &'a str {
        if self.tainted.contains(value) {
            "***"
        } else {
            value
        }
    }

    /// `<bucket>:***` when the location (or its path) came from `env`, else as written.
    pub fn mask_location(&self, loc: &Location) -> String {
        if self.location_tainted(loc) {
            format!("{}:***", loc.bucket)
        } else {
            loc.to_string()
        }
    }

    /// `value` for display: `***` when it came from `env`, else with env values inside it
    /// masked.
    pub fn show(&self, value: &str) -> String {
        if self.tainted.contains(value) {
            "***".to_string()
        } else {
            self.redact(value)
        }
    }

    /// A location for display, the same way as [`Masks::show`].
    pub fn show_location(&self, loc: &Location) -> String {
        let shown = self.mask_location(loc);
        if self.location_tainted(loc) {
            shown
        } else {
            self.redact(&shown)
        }
    }

    fn location_tainted(&self, loc: &Location) -> bool {
        self.tainted.contains(&loc.to_string()) || self.tainted.contains(&loc.path)
    }

    /// `text` with every env value replaced by `***`.
    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_string();
        // Longest first, so a value containing another is masked whole.
        let mut v: Vec<&String> = self.env_values.iter().collect();
        v.sort_by_key(|s| std::cmp::Reverse(s.len()));
        for value in v {
            if out.contains(value.as_str()) {
                out = out.replace(value.as_str(), "***");
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masks() -> Masks {
        Masks {
            tainted: ["b:secret/x".to_string(), "secret/x".into(), "tok".into()].into(),
            env_values: ["hunter2".to_string(), "hunter".into()].into(),
        }
    }

    #[test]
    fn env_values_are_masked_whole() {
        let m = masks();
        assert_eq!(m.redact("pw hunter2 and hunter"), "pw *** and ***");
        assert_eq!(m.show("tok"), "***");
        assert_eq!(m.show("a hunter2"), "a ***");
        assert_eq!(m.mask("a hunter2"), "a hunter2");
        let loc = Location::new("b", "secret/x").unwrap();
        assert_eq!(m.show_location(&loc), "b:***");
        let plain = Location::new("b", "hunter2/x").unwrap();
        assert_eq!(m.show_location(&plain), "b:***/x");
        assert_eq!(m.mask_location(&plain), "b:hunter2/x");
    }
}
