//! What a step's preview works with (`Look`: connections, what earlier steps will write, the
//! records of a run to resume) and what it fills in (`StepPreview`, `Produced`, `Counts`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::ctx::Resources;
use crate::checkpoint::Tasks;
use crate::format::meta::BackupInfo;
use crate::plan::Location;

/// What a preview works with: the connections, and what earlier steps of the plan will have
/// written by the time this step runs (backup contents by location), since a chained step's
/// input does not exist yet during a dry run.
pub struct Look<'a> {
    pub res: &'a Resources,
    pub produced: &'a mut BTreeMap<Location, Produced>,
    /// The records of the unfinished run that apply would resume, read-only.
    pub tasks: Option<&'a Tasks>,
}

impl Look<'_> {
    /// Whether the unfinished run recorded anything (an intent included) under `key`.
    pub fn recorded(&self, key: &str) -> bool {
        self.tasks
            .is_some_and(|t| matches!(t.get(key), Ok(Some(_))))
    }

    /// What earlier steps write at `loc`, inside it or around it (the same overlap that orders
    /// the steps), by the location each writes: a step reading `loc` sees all of it.
    pub fn written(&self, loc: &Location) -> Vec<(Location, Produced)> {
        self.produced
            .iter()
            .filter(|(at, _)| at.overlaps(loc))
            .map(|(at, p)| (at.clone(), p.clone()))
            .collect()
    }
}

/// A backup that an earlier step will write: its (estimated) meta and counts.
#[derive(Clone, Debug)]
pub struct Produced {
    pub backup: BackupInfo,
    pub counts: Counts,
    /// Set when the step that writes it cannot go on: apply stops there, so what depends on it
    /// is not looked at further (its conflicts would only echo that step's).
    pub blocked_by: Option<Blocked>,
}

/// Why the step writing a location stops apply.
#[derive(Clone, Debug)]
pub struct Blocked {
    pub step: String,
    /// The bucket or instance that step cannot use, when that is why ("instance `a` is
    /// unreachable"); `None` when it has conflicts of another kind.
    pub unusable: Option<String>,
}

impl Produced {
    /// What a step that cannot be looked at leaves for the steps after it.
    pub fn blocked(step: &str, unusable: Option<String>) -> Produced {
        Produced {
            backup: BackupInfo::default(),
            counts: Counts::default(),
            blocked_by: Some(Blocked {
                step: step.to_string(),
                unusable,
            }),
        }
    }

    /// The line a step shows instead of its own preview when its input is blocked.
    pub fn blocked_line(&self) -> Option<String> {
        let b = self.blocked_by.as_ref()?;
        Some(match &b.unusable {
            Some(why) => format!(
                "? not checked: this step reads what step `{}` writes, and {why}",
                b.step
            ),
            None => format!(
                "? waits for step `{}`, which has conflicts; resolve those first",
                b.step
            ),
        })
    }
}

/// What one step would do.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct StepPreview {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    /// `run`, `resume` (partly done in the unfinished run), or `done`.
    pub action: String,
    pub description: String,
    pub counts: Counts,
    /// One line per collection or change.
    pub changes: Vec<String>,
    pub conflicts: Vec<String>,
    /// Estimates taken from an earlier step because the data does not exist yet.
    pub estimated: bool,
    /// The collections the step reads or writes as found on the servers, one each: what a
    /// saved plan compares to name what changed since ("the source now holds 250 rows").
    #[serde(default)]
    pub seen: Vec<Seen>,
}

/// One collection a step reads (`source`) or writes (`target`), as the preview found it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seen {
    /// `source` or `target`.
    pub role: String,
    pub instance: String,
    /// `database.name`, as the step's change lines name it.
    pub collection: String,
    /// Whether it exists now: a target that does not is created.
    pub exists: bool,
    /// A source's rows; the rows a target receives.
    pub rows: Option<u64>,
    /// A source's sealed segments (binlog backups only).
    pub segments: Option<u64>,
}

impl Seen {
    pub fn source(instance: &str, db: &str, name: &str, rows: u64, segments: Option<u64>) -> Seen {
        Seen {
            role: "source".into(),
            instance: instance.into(),
            collection: format!("{db}.{name}"),
            exists: true,
            rows: Some(rows),
            segments,
        }
    }

    pub fn target(instance: &str, db: &str, name: &str, exists: bool, rows: Option<u64>) -> Seen {
        Seen {
            role: "target".into(),
            instance: instance.into(),
            collection: format!("{db}.{name}"),
            exists,
            rows,
            segments: None,
        }
    }
}

impl StepPreview {
    /// Whether the unfinished run already did part of this step, so what exists may be its own.
    pub fn started(&self) -> bool {
        self.action == "done" || self.action == "resume"
    }

    /// Records an error met while looking as a conflict: apply would meet it too.
    pub fn conflict(&mut self, e: impl ToString) {
        self.conflicts.push(e.to_string());
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub collections: u64,
    pub partitions: u64,
    pub segments: u64,
    pub rows: u64,
    pub objects: u64,
    pub bytes: u64,
}
