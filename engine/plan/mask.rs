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
        crate::secret::scrub(text, &self.env_values)
    }
}

/// The plan keys whose values are credentials.
pub(crate) const SECRET_KEYS: &[&str] = &[
    "password",
    "token",
    "access_key_id",
    "secret_access_key",
    "session_token",
];

/// The plan text with the value of every secret key overwritten by `*`, byte for byte, so error
/// snippets (which show the lines around an error) never show a credential while every offset
/// stays valid. Works on the text, not the parsed TOML, so a file with a syntax error is masked
/// too.
pub(crate) fn mask_secret_values(text: &str) -> String {
    let mut out = text.as_bytes().to_vec();
    let b = text.as_bytes();
    for key in SECRET_KEYS {
        let mut from = 0;
        while let Some(i) = text[from..].find(key).map(|i| i + from) {
            from = i + key.len();
            // A whole key, bare or quoted: not the tail of `my_token`, not `token_file`.
            let before = i.checked_sub(1).map(|j| b[j]);
            let word = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c == b'-';
            if before.is_some_and(word) {
                continue;
            }
            let mut j = from;
            if matches!(b.get(j), Some(b'"' | b'\'')) {
                j += 1;
            }
            while matches!(b.get(j), Some(b' ' | b'\t')) {
                j += 1;
            }
            if b.get(j) != Some(&b'=') {
                continue;
            }
            j += 1;
            while matches!(b.get(j), Some(b' ' | b'\t')) {
                j += 1;
            }
            let end = value_end(b, j);
            let start = if matches!(b.get(j), Some(b'"' | b'\'')) {
                j + 1
            } else {
                j
            };
            for c in &mut out[start..end.max(start)] {
                if *c != b'\n' {
                    *c = b'*';
                }
            }
            from = end.max(from);
        }
    }
    String::from_utf8(out).expect("only ASCII bytes replaced whole characters")
}

/// Where the value starting at `j` ends (before its closing quote): a string runs to its closing
/// quote (`\"` escapes in basic strings; triple quotes span lines), a bare value to the end of
/// the line, a `,` or a `}`.
fn value_end(b: &[u8], j: usize) -> usize {
    let at = |k: usize| b.get(k).copied();
    match at(j) {
        Some(q @ (b'"' | b'\'')) => {
            let triple = at(j + 1) == Some(q) && at(j + 2) == Some(q);
            let mut k = if triple { j + 3 } else { j + 1 };
            while k < b.len() {
                if q == b'"' && b[k] == b'\\' {
                    k += 2;
                    continue;
                }
                if b[k] == q && (!triple || (at(k + 1) == Some(q) && at(k + 2) == Some(q))) {
                    return k;
                }
                if b[k] == b'\n' && !triple {
                    return k;
                }
                k += 1;
            }
            b.len()
        }
        _ => {
            let mut k = j;
            while k < b.len() && !matches!(b[k], b'\n' | b',' | b'}' | b'#') {
                k += 1;
            }
            k
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_values_are_overwritten_in_place() {
        let text = "[instances.a]\nuser = \"root\"\npassword = \"hunter2\"\ntoken_file = \"x\"\n\
                    [buckets.b]\nkeys = { access_key_id = 'AKIA1', \"secret_access_key\" = \"s\\\"3\" }\n\
                    session_token = \"\"\"multi\nline\"\"\"\nmy_token = \"keep\"\npassword=bare # c\n\
                    password = \"unterminated\n";
        let m = mask_secret_values(text);
        assert_eq!(m.len(), text.len());
        for secret in [
            "hunter2",
            "AKIA1",
            "s\\\"3",
            "multi",
            "line",
            "bare",
            "unterminated",
        ] {
            assert!(!m.contains(secret), "{secret} in {m}");
        }
        for kept in ["root", "token_file = \"x\"", "my_token = \"keep\"", "# c"] {
            assert!(m.contains(kept), "{kept} lost in {m}");
        }
        assert!(m.contains("password = \"*******\""), "{m}");
    }

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
