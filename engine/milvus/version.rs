//! Server versions as GetVersion reports them, and the ones binlog mode has been run against.

/// `(major, minor)` of a Milvus server ("v2.3.5", "2.5.4-gpu"); `None` for Milvus Lite
/// ("milvus_lite-3.2.2") and anything else that is not a Milvus release.
pub fn minor(version: &str) -> Option<(u32, u32)> {
    let v = version.strip_prefix('v').unwrap_or(version);
    let mut it = v.split(['.', '-']);
    Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
}

/// The Milvus releases binlog mode has been run against here. Others lay their binlogs out
/// differently (2.4: L0 delete segments; 2.5: import options; 2.6: storage format v2), and a
/// restore that misreads them would leave wrong data, so they are refused until run.
const BINLOG_TESTED: &[(u32, u32)] = &[(2, 3)];

/// Why binlog mode refuses `instance` running `version`, if it does.
pub fn binlog_untested(instance: &str, version: &str) -> Option<String> {
    match minor(version) {
        Some(m) if BINLOG_TESTED.contains(&m) => None,
        _ => Some(format!(
            "instance `{instance}` runs Milvus {version}; binlog mode has been run against \
             Milvus 2.3 only, and newer servers lay out binlogs differently (L0 delete segments \
             from 2.4, storage format v2 from 2.6), which planrun does not read yet: use \
             mode = \"rows\", which works across versions"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse_and_only_tested_ones_pass() {
        assert_eq!(minor("v2.3.5"), Some((2, 3)));
        assert_eq!(minor("2.5.4-gpu"), Some((2, 5)));
        assert_eq!(minor("milvus_lite-3.2.2"), None);
        assert!(binlog_untested("a", "v2.3.5").is_none());
        for v in ["v2.4.13", "v2.6.0", "v3.0.1", "v2.2.16"] {
            let why = binlog_untested("a", v).expect(v);
            assert!(why.contains("mode = \"rows\""), "{why}");
        }
    }
}
