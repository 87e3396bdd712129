//! Which collections a step means: `coll`, `db.coll`, `db.*` and glob patterns.

/// One entry of a step's `collections`: an optional database and a collection glob.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pattern {
    pub db: Option<String>,
    pub coll: String,
}

impl Pattern {
    /// `coll` (default database), `db.coll`, `db.*`, `db.` (all of db), `*` (all of default).
    pub fn parse(s: &str) -> Pattern {
        match s.split_once('.') {
            Some((db, "")) => Pattern {
                db: Some(db.to_string()),
                coll: "*".into(),
            },
            Some((db, coll)) => Pattern {
                db: Some(db.to_string()),
                coll: coll.to_string(),
            },
            None => Pattern {
                db: None,
                coll: s.to_string(),
            },
        }
    }

    pub fn database(&self) -> &str {
        self.db.as_deref().unwrap_or("default")
    }

    pub fn is_literal(&self) -> bool {
        !self.coll.contains(['*', '?', '['])
    }

    pub fn matches(&self, db: &str, coll: &str) -> bool {
        glob(self.database(), db) && glob(&self.coll, coll)
    }
}

/// `*` any run, `?` any one character; everything else literal.
pub fn glob(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    // Iterative matcher with one backtrack point: linear for the patterns people write.
    let (mut pi, mut ti) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns() {
        assert!(Pattern::parse("coll").matches("default", "coll"));
        assert!(!Pattern::parse("coll").matches("db1", "coll"));
        assert!(Pattern::parse("db1.*").matches("db1", "anything"));
        assert!(Pattern::parse("db1.").matches("db1", "x"));
        assert!(Pattern::parse("db1.c?ll").matches("db1", "coll"));
        assert!(Pattern::parse("*_bak").matches("default", "coll_bak"));
        assert!(!Pattern::parse("*_bak").matches("default", "coll_bak2"));
        assert!(glob("a*b*c", "aXXbYYc"));
        assert!(!glob("a*b*c", "aXXbYY"));
        assert!(Pattern::parse("coll").is_literal());
        assert!(!Pattern::parse("db.*").is_literal());
    }
}
