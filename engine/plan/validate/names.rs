//! Name rules: collection patterns and names in steps, and http(s) addresses.

use crate::plan::diag::Diag;
use crate::plan::pattern::Pattern;
use crate::plan::raw::Sp;

use super::context::Ctx;

/// What a collection string in a step may be.
#[derive(Debug, Clone, Copy)]
pub(super) enum NameRule {
    /// Any pattern: `collections` of backup and restore steps.
    Pattern,
    /// One collection, maybe as `db.name`: verify's `source` and `target`.
    One,
    /// A bare collection name (no glob, no database); the text says why.
    Plain(&'static str),
}

/// A rendered collection string checked against [`Pattern`]'s grammar and `rule`.
pub(super) fn check_name(v: &str, rule: NameRule) -> Result<Pattern, String> {
    let p = Pattern::try_parse(v)?;
    match rule {
        NameRule::One if !p.is_single() => {
            Err("verify compares one named collection, not a pattern".into())
        }
        NameRule::Plain(why) if !p.is_single() || p.db.is_some() => Err(why.into()),
        _ => Ok(p),
    }
}

/// Milvus's rule for collection and database names (what `CreateCollection` refuses): letters,
/// digits and `_`, not starting with a digit, at most 255 bytes. `what` names it in the message.
pub(super) fn milvus_name(v: &str, what: &str) -> Result<(), String> {
    if v.is_empty() {
        return Err(format!("empty {what}"));
    }
    if v.len() > 255 {
        return Err(format!("{what} is {} bytes; Milvus allows 255", v.len()));
    }
    if let Some(c) = v
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '_'))
    {
        return Err(format!(
            "`{c}` cannot appear in a {what}; Milvus allows letters, digits and `_`"
        ));
    }
    if v.starts_with(|c: char| c.is_ascii_digit()) {
        return Err(format!("a {what} cannot start with a digit"));
    }
    Ok(())
}

/// The host of an `http(s)://host:port/...` uri, or an error message.
pub(super) fn uri_host(uri: &str) -> Result<String, String> {
    let rest = uri
        .strip_prefix("http://")
        .or_else(|| uri.strip_prefix("https://"))
        .ok_or_else(|| "the uri must start with `http://` or `https://`".to_string())?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let authority = authority.rsplit('@').next().unwrap_or("");
    let host = if let Some(v6) = authority.strip_prefix('[') {
        format!("[{}]", v6.split(']').next().unwrap_or(""))
    } else {
        authority.split(':').next().unwrap_or("").to_string()
    };
    if host.is_empty() || host == "[]" {
        return Err("the uri has no host".into());
    }
    Ok(host)
}

/// An HTTP address other than an instance's `uri` (`endpoint`, `management`): `what` names it
/// in the message, `example` is a line of TOML that would do.
pub(super) fn check_http_url(
    cx: &mut Ctx,
    sp: &Sp<String>,
    value: &str,
    what: &str,
    example: &str,
) {
    if let Err(msg) = uri_host(value) {
        cx.diags.push(
            Diag::new(
                sp.span(),
                format!("bad {what}: {msg}"),
                "not an http(s) URL",
            )
            .help(format!("e.g. `{example}`")),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uri_hosts() {
        assert_eq!(uri_host("http://127.0.0.1:19530").unwrap(), "127.0.0.1");
        assert_eq!(
            uri_host("https://u:p@milvus.example/x").unwrap(),
            "milvus.example"
        );
        assert_eq!(uri_host("http://[::1]:19530").unwrap(), "[::1]");
        assert!(uri_host("tcp://x:1").is_err());
        assert!(uri_host("http://").is_err());
    }

    #[test]
    fn name_rules() {
        assert!(check_name("coll", NameRule::Pattern).is_ok());
        assert!(check_name("db.*", NameRule::Pattern).is_ok());
        assert!(check_name("logs_[0-9]*", NameRule::Pattern).is_ok());
        assert!(check_name("a.b.c", NameRule::Pattern).is_err());
        assert!(check_name("my coll", NameRule::Pattern).is_err());
        assert!(check_name(".x", NameRule::Pattern).is_err());
        assert!(check_name("db.coll", NameRule::One).is_ok());
        assert!(check_name("db*.coll", NameRule::One).is_err());
        assert!(check_name("c[12]", NameRule::One).is_err());
        assert_eq!(
            check_name("db.c", NameRule::Plain("plain")),
            Err("plain".into())
        );
        assert_eq!(
            check_name("c*", NameRule::Plain("plain")),
            Err("plain".into())
        );
        assert!(check_name("c", NameRule::Plain("plain")).is_ok());
    }
}
