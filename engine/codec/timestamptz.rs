//! TIMESTAMPTZ values between the RFC 3339 text servers send and take and the instant they mean
//! (microseconds since the Unix epoch, UTC), which the files store and the digest hashes.

/// The instant of `2024-01-02T03:04:05.123456Z` or `…+05:30` (a space may stand for `T`); digits
/// past microseconds are dropped, as Milvus does. `None` for anything else, a value without an
/// offset included: its instant would depend on a timezone setting.
pub fn parse(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    let num = |from: usize, len: usize| -> Option<i64> {
        let digits = b.get(from..from + len)?;
        digits
            .iter()
            .all(u8::is_ascii_digit)
            .then(|| digits.iter().fold(0, |n, d| n * 10 + i64::from(d - b'0')))
    };
    let sep = |at: usize, c: &[u8]| b.get(at).is_some_and(|x| c.contains(x));
    if !(sep(4, b"-") && sep(7, b"-") && sep(10, b"Tt ") && sep(13, b":") && sep(16, b":")) {
        return None;
    }
    let (y, mo, d) = (num(0, 4)?, num(5, 2)?, num(8, 2)?);
    let (h, mi, s) = (num(11, 2)?, num(14, 2)?, num(17, 2)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || s > 60 {
        return None;
    }
    let mut at = 19;
    let mut micros = 0;
    if sep(at, b".") {
        at += 1;
        let digits = b[at..].iter().take_while(|c| c.is_ascii_digit()).count();
        if digits == 0 {
            return None;
        }
        micros = num(at, digits.min(6))? * 10i64.pow(6 - digits.min(6) as u32);
        at += digits;
    }
    let offset = match b.get(at..)? {
        b"Z" | b"z" => 0,
        [sign @ (b'+' | b'-'), ..] if b.len() == at + 6 && sep(at + 3, b":") => {
            let minutes = num(at + 1, 2)? * 60 + num(at + 4, 2)?;
            if *sign == b'+' { minutes } else { -minutes }
        }
        _ => return None,
    };
    let secs = days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + s - offset * 60;
    Some(secs * 1_000_000 + micros)
}

/// The RFC 3339 text of an instant in UTC, as Milvus Lite writes it: microseconds only when
/// there are some (`2024-01-02T03:04:05Z`, `2024-01-02T03:04:05.120000Z`).
pub fn format(micros: i64) -> String {
    let (secs, frac) = (micros.div_euclid(1_000_000), micros.rem_euclid(1_000_000));
    let (days, t) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, mo, d) = civil_from_days(days);
    let fraction = if frac == 0 {
        String::new()
    } else {
        format!(".{frac:06}")
    };
    format!(
        "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}{fraction}Z",
        t / 3600,
        t % 3600 / 60,
        t % 60
    )
}

// Days since 1970-01-01 of a proleptic Gregorian date and back: Howard Hinnant's algorithms,
// with years counted from March so the leap day ends the year.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let (era, yoe) = (y.div_euclid(400), y.rem_euclid(400));
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let (era, doe) = (z.div_euclid(146_097), z.rem_euclid(146_097));
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn milvus_lite_text_round_trips() {
        // What Milvus Lite 3.2.2 answered for values inserted with various offsets.
        for text in [
            "1970-01-01T00:00:00Z",
            "2024-01-02T03:04:05Z",
            "2024-01-02T03:04:05.123456Z",
            "2024-02-29T23:59:59.500000Z",
            "0001-01-01T00:00:00Z",
            "1900-03-01T00:00:00Z",
            "9999-12-31T23:59:59.999999Z",
        ] {
            let t = parse(text).unwrap_or_else(|| panic!("{text}"));
            assert_eq!(format(t), text);
        }
        assert_eq!(parse("2024-01-02T03:04:05Z"), Some(1_704_164_645_000_000));
        assert_eq!(parse("1969-12-31T23:59:59.999999Z"), Some(-1));
    }

    #[test]
    fn offsets_are_applied_and_extra_digits_dropped() {
        let utc = parse("2024-01-01T21:34:05.123Z").unwrap();
        assert_eq!(parse("2024-01-02T03:04:05.123+05:30"), Some(utc));
        assert_eq!(parse("2024-01-01 21:04:05.1234567-00:30"), Some(utc + 456));
    }

    #[test]
    fn text_without_an_instant_is_refused() {
        for bad in [
            "2024-01-02T03:04:05",
            "2024-13-02T03:04:05Z",
            "2024-01-02T03:04:05.Z",
            "2024-01-02T03:04:05+0530",
            "2024-01-02",
            "",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }
}
