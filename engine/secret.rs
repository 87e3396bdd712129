//! `Secret`: a string that never reaches logs, plan output or the checkpoint store.

use std::fmt;
use std::sync::{Mutex, MutexGuard};

/// Every secret this process has seen, and every value a plan took from `env`, longest first:
/// what log output (planrun's own and its libraries', e.g. the AWS SDK's debug lines) is
/// scrubbed of. Kept sorted as values arrive, so scrubbing a log line sorts nothing.
static KNOWN: Mutex<Vec<String>> = Mutex::new(Vec::new());

fn known() -> MutexGuard<'static, Vec<String>> {
    KNOWN.lock().unwrap_or_else(|e| e.into_inner())
}

/// Adds values that must never be printed (see [`scrub_logged`]).
pub fn never_print<'a>(values: impl IntoIterator<Item = &'a str>) {
    let mut k = known();
    for v in values.into_iter().filter(|v| !v.is_empty()) {
        if !k.iter().any(|x| x == v) {
            k.push(v.to_string());
        }
    }
    k.sort_by_key(|s| std::cmp::Reverse(s.len()));
}

/// `text` with every value registered by [`never_print`] (and every [`Secret`]) masked: for
/// output planrun does not compose itself, such as log lines.
pub fn scrub_logged(text: &str) -> String {
    replace_each(text, known().iter().map(|v| (v.as_str(), "***")))
}

/// `text` with each of `values` replaced by `***`, longest first, so a value containing another
/// is masked whole.
pub fn scrub<'a>(text: &str, values: impl IntoIterator<Item = &'a String>) -> String {
    let mut v: Vec<&String> = values.into_iter().filter(|v| !v.is_empty()).collect();
    v.sort_by_key(|s| std::cmp::Reverse(s.len()));
    replace_each(text, v.into_iter().map(|v| (v.as_str(), "***")))
}

/// `text` with each `from` replaced by its `to`, in the order given.
fn replace_each<'a>(text: &str, pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut out = text.to_string();
    for (from, to) in pairs {
        if out.contains(from) {
            out = out.replace(from, to);
        }
    }
    out
}

/// A password, key or token. `Debug` and `Display` print `***`; it has no `Serialize`, so it
/// cannot be written into JSON output or the checkpoint store by accident.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        let s = Secret(value.into());
        never_print([s.0.as_str()]);
        s
    }

    /// The value itself, for the one place that sends it to a server.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// A reversible stand-in for env values in what the state dir stores: each value becomes
/// `{env:<hash>}` (the first 12 hex digits of its SHA-256), so task keys stay distinct and stable
/// without holding the value, and the plan that knows the values reads them back.
#[derive(Debug, Clone, Default)]
pub struct Veil {
    /// (value, placeholder), longest value first, so a value containing another is hidden whole.
    pairs: Vec<(String, String)>,
}

impl Veil {
    pub fn new<'a>(values: impl IntoIterator<Item = &'a String>) -> Veil {
        use sha2::{Digest, Sha256};
        let mut pairs: Vec<(String, String)> = values
            .into_iter()
            .filter(|v| !v.is_empty())
            .map(|v| {
                let hash = hex::encode(Sha256::digest(v.as_bytes()));
                (v.clone(), format!("{{env:{}}}", &hash[..12]))
            })
            .collect();
        pairs.sort_by_key(|(v, _)| std::cmp::Reverse(v.len()));
        Veil { pairs }
    }

    pub fn hide(&self, text: &str) -> String {
        replace_each(
            text,
            self.pairs.iter().map(|(v, p)| (v.as_str(), p.as_str())),
        )
    }

    pub fn reveal(&self, text: &str) -> String {
        replace_each(
            text,
            self.pairs.iter().map(|(v, p)| (p.as_str(), v.as_str())),
        )
    }

    /// Whether there is nothing to hide (no env values): stored text passes unchanged.
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::Secret;

    #[test]
    fn never_prints_its_value() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s} {s:?}"), "*** ***");
        assert_eq!(s.expose(), "hunter2");
        assert_eq!(super::scrub_logged("key=hunter2;"), "key=***;");
    }

    #[test]
    fn a_veil_hides_values_reversibly_and_keeps_them_apart() {
        let values = [
            "coll_a".to_string(),
            "coll_a_2".to_string(),
            "x".to_string(),
        ];
        let v = super::Veil::new(&values);
        let hidden = v.hide("coll/db.coll_a_2 and coll/db.coll_a, x");
        assert!(!hidden.contains("coll_a"), "{hidden}");
        assert_eq!(v.reveal(&hidden), "coll/db.coll_a_2 and coll/db.coll_a, x");
        assert_ne!(v.hide("coll_a"), v.hide("coll_a_2"));
    }
}
