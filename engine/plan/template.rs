//! Templates in plan strings: minijinja, strict undefined, `vars` and `env`; tracks env use.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use minijinja::value::{Enumerator, Object};
use minijinja::{Environment, UndefinedBehavior, Value};

/// Instructions one plan string may take to render: far more than any real plan string needs,
/// and reached in well under a second by a loop that would otherwise run for ever.
const FUEL: u64 = 200_000;

/// Renders plan strings. Values that used `env` (directly or through a var) are "tainted":
/// the caller must treat them as secrets.
pub(crate) struct Renderer {
    env: Environment<'static>,
    vars: BTreeMap<String, Value>,
    env_map: Arc<BTreeMap<String, String>>,
    tainted_vars: BTreeSet<String>,
}

/// `env` as templates see it: every variable a render reads is recorded, however it is
/// written (`env.NAME`, `env['NAME']`, `env[vars.x]`, a loop over `env`), so its value is
/// masked wherever it appears.
#[derive(Debug)]
struct EnvObject {
    map: Arc<BTreeMap<String, String>>,
    read: Mutex<BTreeSet<String>>,
}

impl EnvObject {
    fn read(&self) -> std::sync::MutexGuard<'_, BTreeSet<String>> {
        self.read.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Object for EnvObject {
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        let name = key.as_str()?;
        let value = self.map.get(name)?;
        self.read().insert(name.to_string());
        Some(Value::from(value.as_str()))
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        // Iterating hands out every name (and through them every value): all count as read.
        self.read().extend(self.map.keys().cloned());
        Enumerator::Values(self.map.keys().map(|k| Value::from(k.as_str())).collect())
    }
}

/// Why a string could not be rendered, and where inside it (byte range of the template).
#[derive(Debug)]
pub(crate) struct TemplateError {
    pub message: String,
    pub at: Option<std::ops::Range<usize>>,
}

impl TemplateError {
    /// A short label for the marked part of the string.
    pub fn label(&self) -> &'static str {
        if self.message.ends_with("is not set") || self.message.contains("is not defined") {
            "undefined"
        } else {
            "here"
        }
    }
}

impl std::fmt::Display for TemplateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// A rendered string and whether it came (partly) from `env`.
pub(crate) struct Rendered {
    pub value: String,
    pub tainted: bool,
    /// The values of the `env.NAME`s it used, to be masked wherever they appear.
    pub env_values: Vec<String>,
}

impl Renderer {
    pub fn new(process_env: &BTreeMap<String, String>) -> Renderer {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        // Plan strings are not HTML: never escape.
        env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
        env.set_fuel(Some(FUEL));
        Renderer {
            env,
            vars: BTreeMap::new(),
            env_map: Arc::new(process_env.clone()),
            tainted_vars: BTreeSet::new(),
        }
    }

    /// Adds a var (already rendered); `tainted` when it used `env`.
    pub fn set_var(&mut self, name: &str, value: Value, tainted: bool) {
        self.vars.insert(name.to_string(), value);
        if tainted {
            self.tainted_vars.insert(name.to_string());
        }
    }

    /// Renders one string.
    pub fn render(&self, src: &str) -> Result<Rendered, TemplateError> {
        // Fast path: most strings in large plans are plain.
        if !src.contains("{{") && !src.contains("{%") && !src.contains("{#") {
            return Ok(Rendered {
                value: src.to_string(),
                tainted: false,
                env_values: vec![],
            });
        }
        let tmpl = self.env.template_from_str(src).map_err(|e| TemplateError {
            at: e.range(),
            message: describe(e),
        })?;
        let used = tmpl.undeclared_variables(true);
        let env = Arc::new(EnvObject {
            map: self.env_map.clone(),
            read: Mutex::new(BTreeSet::new()),
        });
        let ctx = minijinja::context! {
            vars => Value::from_serialize(&self.vars),
            env => Value::from_dyn_object(env.clone()),
        };
        let value = tmpl.render(ctx).map_err(|e| {
            if e.kind() == minijinja::ErrorKind::UndefinedError
                && let Some((message, name)) = self.missing(&used)
            {
                let at = src.find(&name).map(|i| i..i + name.len());
                return TemplateError { message, at };
            }
            TemplateError {
                at: e.range(),
                message: describe(e),
            }
        })?;
        let read = env.read().clone();
        let tainted = !read.is_empty()
            || used.iter().any(|u| {
                u == "vars" && !self.tainted_vars.is_empty()
                    || u.strip_prefix("vars.")
                        .is_some_and(|v| self.tainted_vars.contains(v))
            });
        let env_values = read
            .iter()
            .filter_map(|name| self.env_map.get(name))
            .filter(|v| !v.is_empty())
            .cloned()
            .collect();
        Ok(Rendered {
            value,
            tainted,
            env_values,
        })
    }

    /// Names the first undefined `vars.x` / `env.X` a template uses, with a suggestion.
    fn missing(&self, used: &std::collections::HashSet<String>) -> Option<(String, String)> {
        let mut used: Vec<&String> = used.iter().collect();
        used.sort();
        for u in used {
            if let Some(name) = u.strip_prefix("vars.") {
                let name = name.split('.').next().unwrap_or(name);
                if !self.vars.contains_key(name) {
                    let hint =
                        super::diag::did_you_mean(name, self.vars.keys().map(String::as_str))
                            .map(|d| format!("; {d}"))
                            .unwrap_or_default();
                    return Some((
                        format!("`vars.{name}` is not defined{hint}"),
                        format!("vars.{name}"),
                    ));
                }
            } else if let Some(name) = u.strip_prefix("env.") {
                let name = name.split('.').next().unwrap_or(name);
                if !self.env_map.contains_key(name) {
                    return Some((
                        format!("environment variable `{name}` is not set"),
                        format!("env.{name}"),
                    ));
                }
            }
        }
        None
    }

    /// Renders a var definition: vars may use `env` but not other vars.
    pub fn render_var(&self, src: &str) -> Result<Rendered, TemplateError> {
        let tmp = Renderer {
            env: self.env.clone(),
            vars: BTreeMap::new(),
            env_map: self.env_map.clone(),
            tainted_vars: BTreeSet::new(),
        };
        tmp.render(src)
    }
}

fn describe(e: minijinja::Error) -> String {
    let mut msg = match e.kind() {
        minijinja::ErrorKind::UndefinedError => "undefined value".to_string(),
        minijinja::ErrorKind::OutOfFuel => {
            return format!(
                "the template takes too long to render (over {FUEL} steps); plan strings \
                 must render quickly: shorten or remove the loop"
            );
        }
        _ => e.kind().to_string(),
    };
    if let Some(detail) = e.detail() {
        msg.push_str(": ");
        msg.push_str(detail);
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r() -> Renderer {
        let env = BTreeMap::from([("PW".to_string(), "hunter2".to_string())]);
        let mut r = Renderer::new(&env);
        r.set_var("c", Value::from("coll"), false);
        r.set_var("secret", Value::from("s3cr3t"), true);
        r
    }

    #[test]
    fn renders_vars_and_env_and_tracks_env() {
        let r = r();
        let a = r.render("x/{{ vars.c }}").unwrap();
        assert_eq!((a.value.as_str(), a.tainted), ("x/coll", false));
        let b = r.render("{{ env.PW }}").unwrap();
        assert_eq!((b.value.as_str(), b.tainted), ("hunter2", true));
        assert_eq!(b.env_values, ["hunter2"]);
        let c = r.render("{{ vars.secret }}").unwrap();
        assert!(c.tainted);
        let d = r.render("{{ env.NOPE | default('dflt') }}").unwrap();
        assert_eq!(d.value, "dflt");
    }

    #[test]
    fn env_read_any_way_is_tracked() {
        let r = r();
        for t in [
            "{{ env['PW'] }}",
            "{{ env.get('PW') if false else env['P' ~ 'W'] }}",
            "{% for k in env %}{{ k }}{% endfor %}",
        ] {
            let x = r.render(t).unwrap_or_else(|e| panic!("{t}: {e}"));
            assert!(x.tainted, "{t}");
            assert_eq!(x.env_values, ["hunter2"], "{t}");
        }
        let plain = r.render("{{ vars.c }}").unwrap();
        assert!(!plain.tainted && plain.env_values.is_empty());
    }

    #[test]
    fn a_template_that_would_loop_for_ever_runs_out_of_fuel_quickly() {
        let started = std::time::Instant::now();
        let e = r()
            .render(
                "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
            )
            .err()
            .expect("out of fuel");
        assert!(e.message.contains("takes too long"), "{}", e.message);
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
    }

    #[test]
    fn strict_undefined_is_an_error() {
        let r = r();
        assert!(r.render("{{ vars.nope }}").is_err());
        assert!(r.render("{{ env.NOPE }}").is_err());
        assert!(r.render("{{ vars.c ").is_err());
    }
}
