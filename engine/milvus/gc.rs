//! Pausing and resuming Milvus' garbage collection over its management HTTP port (plain HTTP/1.1).

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::error::MilvusError;

const GC_PATH: &str = "/management/datacoord/garbage_collection";
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);
/// Management answers are a few bytes of JSON; anything longer is not that endpoint.
const MAX_RESPONSE: u64 = 64 * 1024;

/// Asks Milvus to keep segment files for `seconds` even when compaction made them obsolete, so a
/// backup that copies binlogs does not lose files halfway. `management_url` is e.g.
/// `http://127.0.0.1:9091`. Milvus 2.3.5 lacks the endpoint: that is `GcUnsupported`.
pub async fn pause_gc(management_url: &str, seconds: u64) -> Result<(), MilvusError> {
    let path = format!("{GC_PATH}/pause?pause_seconds={seconds}");
    answered(management_url, ask(management_url, &path).await?)
}

/// Finds out, without pausing anything, what [`pause_gc`] would find: a pause of 0 seconds. A
/// server without the endpoint answers 404 (`GcUnsupported`) as it does to a real pause; one
/// with it answers anything else (a 0-second pause, or a refusal of 0), which pauses nothing.
/// The dry run asks this, so it says what apply will do.
pub async fn probe_gc(management_url: &str) -> Result<(), MilvusError> {
    match ask(management_url, &format!("{GC_PATH}/pause?pause_seconds=0")).await? {
        (404, body) => answered(management_url, (404, body)),
        _ => Ok(()),
    }
}

/// Lets garbage collection run again before the pause runs out.
pub async fn resume_gc(management_url: &str) -> Result<(), MilvusError> {
    answered(
        management_url,
        ask(management_url, &format!("{GC_PATH}/resume")).await?,
    )
}

struct Target {
    host: String,
    port: u16,
    prefix: String,
}

fn parse_url(url: &str) -> Result<Target, String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or("only http:// management urls are supported")?;
    let (authority, prefix) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
        None => (rest, ""),
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => (
            h,
            p.parse::<u16>()
                .map_err(|_| format!("invalid port `{p}`"))?,
        ),
        None => (authority, 80),
    };
    if host.is_empty() {
        return Err("missing host".into());
    }
    Ok(Target {
        host: host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string(),
        port,
        prefix: prefix.to_string(),
    })
}

/// Sends `GET path` to the management port: the HTTP status and body it answered.
async fn ask(url: &str, path: &str) -> Result<(u16, String), MilvusError> {
    let err = |reason: String| MilvusError::Gc {
        url: url.to_string(),
        reason,
    };
    let t = parse_url(url).map_err(err)?;
    let full = format!("{}{path}", t.prefix);
    let exchange = async {
        let mut stream = TcpStream::connect((t.host.as_str(), t.port)).await?;
        let req = format!(
            "GET {full} HTTP/1.1\r\nHost: {}:{}\r\nConnection: close\r\nAccept: */*\r\n\r\n",
            t.host, t.port
        );
        stream.write_all(req.as_bytes()).await?;
        let mut buf = Vec::new();
        stream.take(MAX_RESPONSE).read_to_end(&mut buf).await?;
        Ok::<_, std::io::Error>(buf)
    };
    let raw = tokio::time::timeout(HTTP_TIMEOUT, exchange)
        .await
        .map_err(|_| err(format!("no answer within {HTTP_TIMEOUT:?}")))?
        .map_err(|e| err(format!("cannot reach it: {e}")))?;
    parse_response(&raw).map_err(err)
}

/// What a pause or resume answer means: done, no such endpoint (`GcUnsupported`), or refused.
fn answered(url: &str, (status, body): (u16, String)) -> Result<(), MilvusError> {
    let err = |reason: String| MilvusError::Gc {
        url: url.to_string(),
        reason,
    };
    match status {
        200..=299 => {
            // 2.4+ answers `{"msg": "OK"}`; an error travels as a non-OK msg with status 200.
            let lower = body.to_ascii_lowercase();
            if lower.contains("error") || lower.contains("fail") {
                Err(err(format!("Milvus answered: {}", body.trim())))
            } else {
                Ok(())
            }
        }
        404 => Err(MilvusError::GcUnsupported {
            url: url.to_string(),
            status,
        }),
        _ => Err(err(format!("HTTP {status}: {}", body.trim()))),
    }
}

fn parse_response(raw: &[u8]) -> Result<(u16, String), String> {
    let text = String::from_utf8_lossy(raw);
    let line = text.lines().next().unwrap_or_default();
    let mut parts = line.split_whitespace();
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/") {
        return Err(format!("not an HTTP answer: `{line}`"));
    }
    let status = parts
        .next()
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| format!("bad HTTP status line `{line}`"))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls_and_answers() {
        let t = parse_url("http://127.0.0.1:9091/").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.prefix.as_str()),
            ("127.0.0.1", 9091, "")
        );
        assert!(parse_url("https://x:1").is_err());
        let (s, b) = parse_response(b"HTTP/1.1 404 Not Found\r\nA: b\r\n\r\n404 page").unwrap();
        assert_eq!((s, b.as_str()), (404, "404 page"));
        assert!(parse_response(b"garbage").is_err());
    }
}
