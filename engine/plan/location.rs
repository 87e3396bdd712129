//! `Location`: `<bucket id>:<path>`, where steps read and write, and how locations overlap.

use std::fmt;

/// The longest location path: what S3 allows for a key (1024 bytes) less room for the backup's
/// own object names under it.
const MAX_PATH: usize = 768;

/// `<bucket id>:<path>`, path normalised: no leading/trailing `/`, no `.`/`..`, no empty segments.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Location {
    pub bucket: String,
    pub path: String,
}

impl Location {
    /// Normalises `path`; `Err` says what is wrong with it.
    pub fn new(bucket: impl Into<String>, path: &str) -> Result<Location, String> {
        let mut segs = Vec::new();
        for seg in path.split('/') {
            match seg {
                "" => {}
                "." | ".." => {
                    return Err(format!("`{seg}` is not allowed in a location path"));
                }
                // File systems refuse longer names (a local bucket, or a copy into one).
                s if s.len() > 255 => {
                    return Err(format!(
                        "a path segment of {} bytes; at most 255 are allowed",
                        s.len()
                    ));
                }
                s => segs.push(s),
            }
        }
        if path.trim_matches('/').contains("//") {
            return Err("empty path segment (`//`) in a location path".into());
        }
        let path = segs.join("/");
        // S3 keys end at 1024 bytes, and a backup adds its own below the location.
        if path.len() > MAX_PATH {
            return Err(format!(
                "a location path of {} bytes; at most {MAX_PATH} are allowed, so that the \
                 objects under it stay within S3's 1024-byte keys",
                path.len()
            ));
        }
        Ok(Location {
            bucket: bucket.into(),
            path,
        })
    }

    /// Whether `other` is this location or lies inside it (by whole path segments).
    pub fn contains(&self, other: &Location) -> bool {
        self.bucket == other.bucket
            && (self.path.is_empty()
                || other.path == self.path
                || (other.path.starts_with(&self.path)
                    && other.path.as_bytes().get(self.path.len()) == Some(&b'/')))
    }

    /// Whether one of the two contains the other.
    pub fn overlaps(&self, other: &Location) -> bool {
        self.contains(other) || other.contains(self)
    }

    /// The object key of `rel` under this location: `path/rel`, or either alone when the other
    /// is empty. A leading `/` on `rel` is dropped, so a key never holds an empty segment.
    pub fn join(&self, rel: &str) -> String {
        let rel = rel.trim_start_matches('/');
        match (self.path.is_empty(), rel.is_empty()) {
            (true, _) => rel.to_string(),
            (_, true) => self.path.clone(),
            _ => format!("{}/{rel}", self.path),
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.bucket, self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loc(b: &str, p: &str) -> Location {
        Location::new(b, p).unwrap()
    }

    #[test]
    fn location_normalises_and_rejects_dots() {
        assert_eq!(loc("b", "/a/b/").path, "a/b");
        assert_eq!(loc("b", "/a/b/").to_string(), "b:a/b");
        assert!(Location::new("b", "a/../c").is_err());
        assert!(Location::new("b", "a//c").is_err());
        assert!(Location::new("b", &format!("a/{}", "x".repeat(256))).is_err());
        assert!(Location::new("b", &vec!["y".repeat(200); 4].join("/")).is_err());
        assert_eq!(loc("b", "").path, "");
    }

    #[test]
    fn contains_is_by_whole_segments() {
        assert!(loc("b", "backup").contains(&loc("b", "backup/x")));
        assert!(loc("b", "backup/x").contains(&loc("b", "backup/x")));
        assert!(!loc("b", "backup/x").contains(&loc("b", "backup/xy")));
        assert!(!loc("b", "backup").contains(&loc("c", "backup")));
        assert!(loc("b", "").contains(&loc("b", "anything")));
        assert!(loc("b", "a/b").overlaps(&loc("b", "a")));
        assert!(!loc("b", "a/b").overlaps(&loc("b", "a/c")));
    }

    #[test]
    fn join_makes_keys_without_empty_segments() {
        assert_eq!(
            loc("b", "backup/x").join("meta/a.json"),
            "backup/x/meta/a.json"
        );
        assert_eq!(loc("b", "backup/x").join("/meta"), "backup/x/meta");
        assert_eq!(loc("b", "backup/x").join(""), "backup/x");
        assert_eq!(loc("b", "").join("meta"), "meta");
        assert_eq!(loc("b", "").join(""), "");
    }
}
