//! What a plan says, for people and for change detection: step summaries, masked JSON, fingerprint.

use std::fmt;
use std::path::PathBuf;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::location::Location;
use super::model::{
    CollectionRef, DEFAULT_FILE_BYTES, DEFAULT_READERS, Keys, Naming, Plan, Step, StepKind,
    VerifyStep,
};
use crate::secret::Secret;
use crate::storage::{LocalConfig, S3Config, StorageConfig};

impl fmt::Debug for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Plan")
            .field("path", &self.path)
            .field("state_dir", &self.settings.state_dir)
            .field("plan", &self.describe_json())
            .finish()
    }
}

impl Plan {
    /// One line saying what a step does, secrets masked: the one description of a step, shown
    /// by `validate` and by the preview (`plan`, `exec/preview.rs`).
    pub fn describe_step(&self, step: &Step) -> String {
        match &step.kind {
            StepKind::Backup(b) => format!(
                "backup {} [{}] → {} ({})",
                b.instance,
                b.collections
                    .iter()
                    .map(|c| self.show(c))
                    .collect::<Vec<_>>()
                    .join(", "),
                self.show_location(&b.to),
                b.mode.as_str()
            ),
            StepKind::Copy(c) => format!(
                "copy {} → {}",
                self.show_location(&c.from),
                self.show_location(&c.to)
            ),
            StepKind::Restore(r) => {
                let naming = match &r.naming {
                    Naming::Suffix(s) => format!("suffix `{}`", self.show(s)),
                    Naming::Rename(m) => format!(
                        "rename {}",
                        m.iter()
                            .map(|(k, v)| format!("{} → {}", self.show(k), self.show(v)))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                    Naming::Keep => "same names".to_string(),
                };
                format!(
                    "restore {} → {} ({naming}, on conflict {})",
                    self.show_location(&r.from),
                    r.instance,
                    r.on_conflict.as_str()
                )
            }
            StepKind::Verify(VerifyStep::Pair { source, target }) => format!(
                "verify {}:{} against {}:{}",
                target.instance,
                self.show(&target.collection),
                source.instance,
                self.show(&source.collection)
            ),
            StepKind::Verify(VerifyStep::Restore(r)) => {
                format!("verify the collections restored by `{r}` against their sources")
            }
            StepKind::Alias(a) => format!(
                "alias {}:{} → `{}`",
                a.instance,
                self.show(&a.alias),
                self.show(&a.collection)
            ),
        }
    }

    /// A canonical, secret-free description of everything that decides what a run does.
    /// Values that came from `env` appear as `***`; secrets only as `"set"`.
    pub fn describe_json(&self) -> Value {
        self.describe(true)
    }

    /// Stable hex SHA-256 of the resolved plan without secrets: a changed password leaves it
    /// unchanged, any other change (including env-derived non-secret values) changes it.
    pub fn fingerprint(&self) -> String {
        let v = self.describe(false);
        // serde_json maps are sorted (no `preserve_order`), so this text is canonical.
        let text = serde_json::to_string(&v).expect("JSON values always serialise");
        hex::encode(Sha256::digest(text.as_bytes()))
    }

    fn describe(&self, mask: bool) -> Value {
        let s = |v: &str| -> Value {
            if mask {
                Value::from(self.show(v))
            } else {
                Value::from(v)
            }
        };
        let os = |v: &Option<String>| v.as_deref().map(s).unwrap_or(Value::Null);
        let loc = |l: &Location| -> Value {
            if mask {
                Value::from(self.show_location(l))
            } else {
                Value::from(l.to_string())
            }
        };
        let set = |v: &Option<Secret>| -> Value {
            if v.is_some() {
                Value::from("set")
            } else {
                Value::Null
            }
        };
        let path = |p: &Option<PathBuf>| {
            p.as_ref()
                .map(|p| s(&p.display().to_string()))
                .unwrap_or(Value::Null)
        };
        let instances: serde_json::Map<String, Value> = self
            .instances
            .values()
            .map(|i| {
                (
                    i.id.clone(),
                    json!({
                        "uri": s(&i.uri),
                        "user": os(&i.user),
                        "password": set(&i.password),
                        "token": set(&i.token),
                        "database": os(&i.database),
                        "tls": i.tls.as_ref().map(|t| json!({
                            "ca_cert": path(&t.ca_cert),
                            "client_cert": path(&t.client_cert),
                            "client_key": path(&t.client_key),
                            "server_name": os(&t.server_name),
                        })),
                        "data": i.data.as_ref().map(loc),
                        "management": os(&i.management),
                        "timeout": i.timeout,
                        "requests_per_second": i.requests_per_second,
                    }),
                )
            })
            .collect();
        let buckets: serde_json::Map<String, Value> = self
            .buckets
            .values()
            .map(|b| {
                // Every field is named, so that a new one is shown (or masked) on purpose.
                let v = match &b.config {
                    StorageConfig::S3(S3Config {
                        name: _,
                        endpoint,
                        bucket,
                        region,
                        access_key_id,
                        secret_access_key,
                        session_token,
                        path_style,
                        instance_metadata,
                        requests_per_second,
                        bytes_per_second,
                    }) => json!({
                        "type": "s3",
                        "endpoint": os(endpoint),
                        "bucket": s(bucket),
                        "region": os(region),
                        "access_key_id": set(access_key_id),
                        "secret_access_key": set(secret_access_key),
                        "session_token": set(session_token),
                        "path_style": path_style,
                        "instance_metadata": instance_metadata,
                        "requests_per_second": requests_per_second,
                        "bytes_per_second": bytes_per_second,
                    }),
                    StorageConfig::Local(LocalConfig { name: _, path: p }) => json!({
                        "type": "local",
                        "path": s(&p.display().to_string()),
                    }),
                };
                (b.id.clone(), v)
            })
            .collect();
        let list = |v: &[String]| Value::Array(v.iter().map(|c| s(c)).collect());
        let steps: Vec<Value> = self
            .steps
            .iter()
            .map(|st| {
                let mut v = match &st.kind {
                    StepKind::Backup(b) => json!({
                        "instance": b.instance,
                        "collections": list(&b.collections),
                        "to": loc(&b.to),
                        "mode": b.mode.as_str(),
                    }),
                    StepKind::Copy(c) => json!({ "from": loc(&c.from), "to": loc(&c.to) }),
                    StepKind::Restore(r) => json!({
                        "instance": r.instance,
                        "from": loc(&r.from),
                        "collections": r.collections.as_deref().map(list),
                        "naming": match &r.naming {
                            Naming::Suffix(x) => json!({ "suffix": s(x) }),
                            Naming::Rename(m) => json!({ "rename": m.iter()
                                .map(|(k, x)| (k.clone(), s(x)))
                                .collect::<serde_json::Map<_, _>>() }),
                            Naming::Keep => json!("keep"),
                        },
                        "database": os(&r.database),
                        "on_conflict": r.on_conflict.as_str(),
                        "indexes": r.indexes,
                        "aliases": r.aliases,
                        "load": r.load,
                    }),
                    StepKind::Verify(VerifyStep::Pair { source, target }) => {
                        let cref = |c: &CollectionRef| {
                            json!({
                                "instance": c.instance,
                                "collection": s(&c.collection),
                                "database": os(&c.database),
                            })
                        };
                        json!({ "source": cref(source), "target": cref(target) })
                    }
                    StepKind::Verify(VerifyStep::Restore(r)) => json!({ "restore": r }),
                    StepKind::Alias(a) => json!({
                        "instance": a.instance,
                        "alias": s(&a.alias),
                        "collection": s(&a.collection),
                        "database": os(&a.database),
                    }),
                };
                let o = v.as_object_mut().expect("built as an object");
                o.insert("id".into(), Value::from(st.id.clone()));
                o.insert("type".into(), Value::from(st.type_name));
                o.insert("needs".into(), json!(st.needs));
                // Only when set: plans written before the option keep their fingerprint.
                if let StepKind::Restore(r) = &st.kind
                    && r.keys != Keys::Keep
                {
                    o.insert("auto_id".into(), json!(r.keys.as_str()));
                }
                if let StepKind::Restore(r) = &st.kind
                    && let Some(m) = r.method
                {
                    o.insert("method".into(), json!(m.as_str()));
                }
                v
            })
            .collect();
        let mut settings = json!({
            "concurrency": self.settings.concurrency,
            "retries": self.settings.retries,
        });
        // Only when set: plans written before these settings keep their fingerprint.
        if self.settings.readers != DEFAULT_READERS {
            settings["readers"] = json!(self.settings.readers);
        }
        if self.settings.file_bytes != DEFAULT_FILE_BYTES {
            settings["file_bytes"] = json!(self.settings.file_bytes);
        }
        json!({
            "name": self.name,
            "settings": settings,
            "instances": instances,
            "buckets": buckets,
            "steps": steps,
        })
    }
}
