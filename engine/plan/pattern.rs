//! Collection patterns (`name`, `db.name`, globs): one grammar for the plan's checks and the steps' matching.

use super::model::DEFAULT_DATABASE;

/// One entry of a step's `collections`: an optional database glob and a collection glob.
///
/// ```text
/// pattern   = [ part "." ] part      at most one `.`: database, then collection
/// part      = 1*( name-char | "*" | "?" | class )
/// class     = "[" [ "!" ] 1*( name-char [ "-" name-char ] ) "]"
/// name-char = ASCII letter | digit | "_" | "-"
/// ```
///
/// `*` matches any run of characters, `?` any one, `[abc]`/`[a-z]` one of the listed characters
/// and `[!...]` one that is not listed. A missing database is [`DEFAULT_DATABASE`]. There is no
/// exclusion: a `!` outside a class is an error, since no step could honour it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pattern {
    pub db: Option<String>,
    pub coll: String,
}

impl Pattern {
    /// Checks `s` against the grammar; `Err` says what is wrong, for a plan diagnostic.
    pub fn try_parse(s: &str) -> Result<Pattern, String> {
        let parts: Vec<&str> = s.split('.').collect();
        if parts.len() > 2 {
            return Err("at most one `.` (between database and collection)".into());
        }
        // Names first, globs after: a stray character is the likelier mistake, so it is the
        // one reported when a pattern has both.
        for p in &parts {
            if p.is_empty() {
                return Err("empty database or collection name".into());
            }
            if let Some(c) = p
                .chars()
                .find(|c| !(is_name_char(*c) || "*?[]!".contains(*c)))
            {
                return Err(format!("`{c}` cannot appear in a collection name"));
            }
        }
        for p in &parts {
            Glob::parse(p)?;
        }
        Ok(Pattern::parse(s))
    }

    /// `coll` (in [`DEFAULT_DATABASE`]), `db.coll`, `db.*`, `*` (all of the default database).
    ///
    /// Does not check the grammar: patterns of a loaded plan were checked by
    /// [`Pattern::try_parse`]. A part that is not a valid glob matches only its own text.
    pub fn parse(s: &str) -> Pattern {
        match s.split_once('.') {
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

    /// The database glob: the one written, or [`DEFAULT_DATABASE`].
    pub fn database(&self) -> &str {
        self.db.as_deref().unwrap_or(DEFAULT_DATABASE)
    }

    /// True when the collection part names one collection (no `*`, `?` or class).
    pub fn is_literal(&self) -> bool {
        Glob::parse(&self.coll).is_ok_and(|g| g.is_literal())
    }

    /// True when the pattern names one collection of one database: no glob in either part.
    pub fn is_single(&self) -> bool {
        self.is_literal()
            && self
                .db
                .as_deref()
                .is_none_or(|d| Glob::parse(d).is_ok_and(|g| g.is_literal()))
    }

    /// Whether database `db` can hold collections this pattern selects.
    pub fn matches_database(&self, db: &str) -> bool {
        glob(self.database(), db)
    }

    /// Whether collection `coll` of database `db` is selected.
    pub fn matches(&self, db: &str, coll: &str) -> bool {
        self.matches_database(db) && glob(&self.coll, coll)
    }
}

/// Whether `text` matches the glob `pattern` (one part of a [`Pattern`]); a pattern that is not
/// a valid glob matches only its own text.
pub fn glob(pattern: &str, text: &str) -> bool {
    match Glob::parse(pattern) {
        Ok(g) => g.matches(text),
        Err(_) => pattern == text,
    }
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Char(char),
    /// `?`
    One,
    /// `*`
    Run,
    /// `[...]`: inclusive ranges (a single character is a range of one).
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
}

impl Token {
    fn accepts(&self, c: char) -> bool {
        match self {
            Token::Char(x) => *x == c,
            Token::One => true,
            Token::Run => false,
            Token::Class { negated, ranges } => {
                ranges.iter().any(|(lo, hi)| (*lo..=*hi).contains(&c)) != *negated
            }
        }
    }
}

/// One part of a pattern, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Glob(Vec<Token>);

impl Glob {
    fn parse(s: &str) -> Result<Glob, String> {
        let mut out = Vec::new();
        let mut chars = s.chars().peekable();
        while let Some(c) = chars.next() {
            out.push(match c {
                '*' => Token::Run,
                '?' => Token::One,
                '[' => {
                    let negated = chars.next_if_eq(&'!').is_some();
                    let mut ranges = Vec::new();
                    loop {
                        let lo = match chars.next() {
                            None => return Err("`[` without a closing `]`".into()),
                            Some(']') if ranges.is_empty() => {
                                return Err("`[...]` lists no character".into());
                            }
                            Some(']') => break,
                            Some(c) if !is_name_char(c) => {
                                return Err(format!("`{c}` cannot appear inside `[...]`"));
                            }
                            Some(c) => c,
                        };
                        // `a-z` is a range; a `-` just before `]` is the character itself.
                        let mut hi = lo;
                        if chars.peek() == Some(&'-') {
                            let mut ahead = chars.clone();
                            ahead.next();
                            if let Some(&h) = ahead.peek().filter(|h| **h != ']') {
                                if !is_name_char(h) {
                                    return Err(format!("`{h}` cannot appear inside `[...]`"));
                                }
                                if h < lo {
                                    return Err(format!(
                                        "`{lo}-{h}` is not a range: `{lo}` comes after `{h}`"
                                    ));
                                }
                                chars = ahead;
                                chars.next();
                                hi = h;
                            }
                        }
                        ranges.push((lo, hi));
                    }
                    Token::Class { negated, ranges }
                }
                ']' => return Err("`]` without an opening `[`".into()),
                '!' => {
                    return Err("`!` only negates a class, as in `[!0-9]`; \
                                collections cannot be excluded"
                        .into());
                }
                c => Token::Char(c),
            });
        }
        Ok(Glob(out))
    }

    fn is_literal(&self) -> bool {
        self.0.iter().all(|t| matches!(t, Token::Char(_)))
    }

    fn matches(&self, text: &str) -> bool {
        let p = &self.0;
        let t: Vec<char> = text.chars().collect();
        // Iterative matcher with one backtrack point (the last `*`): linear for the patterns
        // people write, never exponential.
        let (mut pi, mut ti) = (0, 0);
        let (mut star, mut mark) = (None, 0);
        while ti < t.len() {
            if pi < p.len() && p[pi] != Token::Run && p[pi].accepts(t[ti]) {
                pi += 1;
                ti += 1;
            } else if pi < p.len() && p[pi] == Token::Run {
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
        p[pi..].iter().all(|t| *t == Token::Run)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> Pattern {
        Pattern::try_parse(s).unwrap_or_else(|e| panic!("`{s}` should parse: {e}"))
    }

    fn err(s: &str) -> String {
        Pattern::try_parse(s).expect_err(s)
    }

    #[test]
    fn names_and_databases() {
        assert!(ok("coll").matches("default", "coll"));
        assert!(!ok("coll").matches("db1", "coll"));
        assert_eq!(ok("coll").database(), DEFAULT_DATABASE);
        assert!(ok("db1.*").matches("db1", "anything"));
        assert!(!ok("db1.*").matches("db2", "anything"));
        assert!(ok("db?.coll").matches_database("db7"));
        assert!(ok("*.coll").matches("any", "coll"));
        assert_eq!(ok("db1.c").db.as_deref(), Some("db1"));
        assert_eq!(ok("db1.c").coll, "c");
    }

    #[test]
    fn globs() {
        assert!(ok("db1.c?ll").matches("db1", "coll"));
        assert!(ok("*_bak").matches("default", "coll_bak"));
        assert!(!ok("*_bak").matches("default", "coll_bak2"));
        assert!(glob("a*b*c", "aXXbYYc"));
        assert!(!glob("a*b*c", "aXXbYY"));
        assert!(glob("*", ""));
        assert!(glob("a**", "a"));
    }

    #[test]
    fn classes() {
        let p = ok("logs_[0-9]*");
        assert!(p.matches("default", "logs_1"));
        assert!(p.matches("default", "logs_42_old"));
        assert!(!p.matches("default", "logs_x"));
        assert!(!p.matches("default", "logs_"));
        let n = ok("logs_[!0-9]");
        assert!(n.matches("default", "logs_x"));
        assert!(!n.matches("default", "logs_7"));
        assert!(!n.matches("default", "logs_"));
        let m = ok("[abx-z_]");
        for c in ["a", "b", "y", "_"] {
            assert!(m.matches("default", c), "{c}");
        }
        assert!(!m.matches("default", "c"));
        assert!(
            ok("v[-1]").matches("default", "v-"),
            "a leading `-` is itself"
        );
        assert!(
            ok("v[1-]").matches("default", "v-"),
            "a trailing `-` is itself"
        );
    }

    #[test]
    fn literals() {
        assert!(ok("coll").is_literal());
        assert!(ok("db.coll").is_literal());
        assert!(!ok("db.*").is_literal());
        assert!(!ok("c[12]").is_literal());
        assert!(!ok("c?").is_literal());
        assert!(ok("db.coll").is_single());
        assert!(ok("coll").is_single());
        assert!(
            ok("db*.coll").is_literal(),
            "only the collection part counts"
        );
        assert!(!ok("db*.coll").is_single());
    }

    #[test]
    fn errors() {
        assert_eq!(
            err("a.b.c"),
            "at most one `.` (between database and collection)"
        );
        assert_eq!(err(".x"), "empty database or collection name");
        assert_eq!(err("db."), "empty database or collection name");
        assert_eq!(err("my coll"), "` ` cannot appear in a collection name");
        assert_eq!(err("x[.a b"), "` ` cannot appear in a collection name");
        assert_eq!(err("logs_[0-9"), "`[` without a closing `]`");
        assert_eq!(err("a[]"), "`[...]` lists no character");
        assert_eq!(err("a[!]"), "`[...]` lists no character");
        assert_eq!(err("a]"), "`]` without an opening `[`");
        assert!(err("!logs").starts_with("`!` only negates a class"));
        assert_eq!(err("[z-a]"), "`z-a` is not a range: `z` comes after `a`");
        assert_eq!(err("[a*]"), "`*` cannot appear inside `[...]`");
        assert_eq!(err("[a-*]"), "`*` cannot appear inside `[...]`");
    }

    #[test]
    fn unchecked_text_matches_only_itself() {
        let p = Pattern::parse("a]");
        assert!(p.matches("default", "a]"));
        assert!(!p.matches("default", "a"));
        assert!(!p.is_literal());
    }
}
