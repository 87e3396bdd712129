//! Server versions as GetVersion reports them, and what binlog mode does on each release.

/// `(major, minor)` of a Milvus server ("v2.3.5", "2.5.4-gpu"); `None` for Milvus Lite
/// ("milvus_lite-3.2.2") and anything else that is not a Milvus release.
pub fn minor(version: &str) -> Option<(u32, u32)> {
    release(version).map(|(major, minor, _)| (major, minor))
}

/// `(major, minor, patch)`; a missing patch is 0.
fn release(version: &str) -> Option<(u32, u32, u32)> {
    let v = version.strip_prefix('v').unwrap_or(version);
    let mut it = v.split(['.', '-']);
    let (major, minor) = (it.next()?.parse().ok()?, it.next()?.parse().ok()?);
    Some((
        major,
        minor,
        it.next().and_then(|p| p.parse().ok()).unwrap_or(0),
    ))
}

/// What binlog mode does with one Milvus release. 2.3 was run here; 2.4 to 3.0 follow what
/// milvus-backup does with them (its layout, meta and import options), unrun, which is why a
/// restore onto them is always checked row by row afterwards (`run_here`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Binlog {
    pub release: (u32, u32, u32),
    /// Deletes may live in L0 (delete-only) segments, restored with `l0_import=true`, and
    /// imports take milvus-backup's options for 2.4 on (`skip_disk_quota_check=true`).
    pub l0: bool,
    /// Segments record their storage format, which an import is told (`storage_version`).
    pub storage_version: bool,
    /// Binlog mode has been run against this release here.
    pub run_here: bool,
}

/// The oldest and the first too new release binlog mode knows: milvus-backup's facts cover
/// 2.4 to 3.0, and 2.3 was run here.
const OLDEST: (u32, u32) = (2, 3);
const TOO_NEW: (u32, u32) = (3, 1);

/// What binlog mode does with `instance` running `version`, or why it refuses it.
pub fn binlog(instance: &str, version: &str) -> Result<Binlog, String> {
    let Some(release) = release(version) else {
        return Err(format!(
            "instance `{instance}` reports version `{version}`, which is not a Milvus release; \
             binlog mode reads the binlogs of Milvus 2.3 to 3.0 only: set mode = \"rows\", \
             which works across versions"
        ));
    };
    let m = (release.0, release.1);
    if m < OLDEST || m >= TOO_NEW {
        let why = if m < OLDEST {
            "older than 2.3, the oldest"
        } else {
            "newer than 3.0, the newest"
        };
        return Err(format!(
            "instance `{instance}` runs Milvus {version}, {why} release whose binlog layout \
             planrun knows (2.3 run here, 2.4 to 3.0 from milvus-backup's layout): set \
             mode = \"rows\", which works across versions"
        ));
    }
    Ok(Binlog {
        release,
        l0: m >= (2, 4),
        storage_version: m >= (2, 6),
        run_here: m == (2, 3),
    })
}

impl Binlog {
    /// `2.5.4`, as messages name the release.
    pub fn name(&self) -> String {
        let (a, b, c) = self.release;
        format!("{a}.{b}.{c}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse() {
        assert_eq!(minor("v2.3.5"), Some((2, 3)));
        assert_eq!(minor("v2.3.5-lite"), Some((2, 3)));
        assert_eq!(minor("2.5.4-gpu"), Some((2, 5)));
        assert_eq!(minor("milvus_lite-3.2.2"), None);
        assert_eq!(release("v2.6.11"), Some((2, 6, 11)));
        assert_eq!(release("v2.4"), Some((2, 4, 0)));
    }

    #[test]
    fn each_release_gets_its_capabilities() {
        let caps = |v: &str| {
            let b = binlog("a", v).expect(v);
            (b.l0, b.storage_version, b.run_here)
        };
        assert_eq!(caps("v2.3.5-lite"), (false, false, true));
        assert_eq!(caps("v2.4.13"), (true, false, false));
        assert_eq!(caps("v2.5.4-gpu"), (true, false, false));
        assert_eq!(caps("v2.6.11"), (true, true, false));
        assert_eq!(caps("v3.0.1"), (true, true, false));
        assert_eq!(binlog("a", "v2.6.11").unwrap().name(), "2.6.11");
    }

    #[test]
    fn releases_outside_the_known_range_are_refused_with_rows_mode() {
        for (v, says) in [
            ("v2.2.16", "older than 2.3"),
            ("v3.1.0", "newer than 3.0"),
            ("v4.0.0", "newer than 3.0"),
            ("milvus_lite-3.2.2", "not a Milvus release"),
        ] {
            let why = binlog("inst", v).expect_err(v);
            assert!(
                why.contains(says) && why.contains("`inst`") && why.contains("mode = \"rows\""),
                "{why}"
            );
        }
    }
}
