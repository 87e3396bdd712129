//! Where a collection's primary keys are cut so that several readers read about as many rows
//! each: split points found from the first keys and `count(*)` of `pk < X` probes (Milvus 2.3.5
//! has no min/max aggregate), for int64 and VARCHAR keys.
//!
//! The first keys (one page of keys only) tell the low end and the density there; a split point
//! is guessed from that density, then refined between the probes around it by interpolation
//! (bisection when interpolation stalls), until a probe is within a few percent of its target
//! or `MAX_PROBES` were asked. The split is only for balance: any increasing points give
//! disjoint ranges that cover every key.

use std::future::Future;

use crate::milvus::Pk;

/// Count queries per split point at most: a split only balances readers, it need not be exact.
const MAX_PROBES: usize = 8;

/// Keys as positions on a line, so that a count can be interpolated between two keys.
#[derive(Clone)]
enum Space {
    /// Offsets from the smallest key.
    Int { min: i64 },
    /// The bytes after `prefix` as the digits of a number in the base of `alphabet`, the bytes
    /// the keys seen use (sorted; digit 0 is the end of a key): decimal keys interpolate as
    /// decimal numbers, hex keys as hex, instead of through bytes no key holds.
    Str { prefix: Vec<u8>, alphabet: Vec<u8> },
}

/// Adds the bytes of `key` to `alphabet` (sorted, unique), each with its class: a digit brings
/// every digit, a letter every letter of its case, as keys seen so far rarely hold them all.
fn learn(alphabet: &mut Vec<u8>, key: &[u8]) {
    for &c in key {
        match c {
            b'0'..=b'9' => alphabet.extend(b'0'..=b'9'),
            b'a'..=b'z' => alphabet.extend(b'a'..=b'z'),
            b'A'..=b'Z' => alphabet.extend(b'A'..=b'Z'),
            _ => alphabet.push(c),
        }
    }
    alphabet.sort_unstable();
    alphabet.dedup();
}

/// Positions of VARCHAR keys end here (the digits an f64 holds exactly).
const STR_END: f64 = (1u64 << 52) as f64;

impl Space {
    /// The space of `keys` (in order): an int space from the first, a VARCHAR space over the
    /// prefix the first and the last share.
    fn of(keys: &[&Pk], alphabet: &[u8]) -> Space {
        match (keys.first(), keys.last()) {
            (Some(Pk::Str(a)), Some(Pk::Str(b))) => {
                let n = a.bytes().zip(b.bytes()).take_while(|(x, y)| x == y).count();
                let n = a.floor_char_boundary(n);
                let mut alphabet = alphabet.to_vec();
                for k in keys {
                    if let Pk::Str(k) = k {
                        learn(&mut alphabet, k.as_bytes().get(n..).unwrap_or_default());
                    }
                }
                Space::Str {
                    prefix: a.as_bytes()[..n].to_vec(),
                    alphabet,
                }
            }
            (Some(Pk::Int(min)), _) => Space::Int { min: *min },
            _ => Space::Str {
                prefix: Vec::new(),
                alphabet: alphabet.to_vec(),
            },
        }
    }

    /// Digits after the prefix that fit `STR_END`, and the base.
    fn digits(alphabet: &[u8]) -> (usize, f64) {
        let base = alphabet.len() as f64 + 1.0;
        ((52.0 / base.log2()).floor().max(1.0) as usize, base)
    }

    fn pos(&self, k: &Pk) -> f64 {
        match (self, k) {
            (Space::Int { min }, Pk::Int(v)) => (*v as i128 - *min as i128) as f64,
            (Space::Str { prefix, alphabet }, Pk::Str(s)) => {
                let s = s.as_bytes();
                if !s.starts_with(prefix) {
                    // Past every key with this prefix (keys below it are below the first key).
                    return if s < prefix.as_slice() { 0.0 } else { STR_END };
                }
                let (n, base) = Space::digits(alphabet);
                let mut x = 0.0;
                for i in 0..n {
                    // A byte no key seen holds counts as the nearest one below it.
                    let d = s
                        .get(prefix.len() + i)
                        .map_or(0, |c| alphabet.partition_point(|a| a <= c));
                    x = x * base + d as f64;
                }
                x * (STR_END / base.powi(n as i32))
            }
            _ => 0.0,
        }
    }

    /// The key at position `x` (a VARCHAR one made valid, printable UTF-8: the key it names is
    /// near `x`, which only makes it a slightly different probe).
    fn key(&self, x: f64) -> Pk {
        match self {
            Space::Int { min } => {
                let v = (*min as i128 + x.max(0.0) as i128).min(i64::MAX as i128);
                Pk::Int(v as i64)
            }
            Space::Str { prefix, alphabet } => {
                let (n, base) = Space::digits(alphabet);
                let mut x = (x.clamp(0.0, STR_END - 1.0) / (STR_END / base.powi(n as i32))) as u64;
                let mut digits = vec![0; n];
                for d in digits.iter_mut().rev() {
                    *d = (x % base as u64) as usize;
                    x /= base as u64;
                }
                let mut b = prefix.clone();
                // A digit 0 ends the key.
                b.extend(
                    digits
                        .iter()
                        .take_while(|&&d| d > 0)
                        .map(|&d| alphabet[d - 1]),
                );
                // No control characters in an expression: the next printable one instead.
                for c in &mut b[prefix.len()..] {
                    *c = (*c).max(b' ');
                }
                let s = match std::str::from_utf8(&b) {
                    Ok(s) => s.to_string(),
                    Err(e) => String::from_utf8_lossy(&b[..e.valid_up_to()]).into_owned(),
                };
                Pk::Str(s)
            }
        }
    }

    /// Whether `x` lies past the end of this space (a VARCHAR space can then be widened).
    fn past_end(&self, x: f64) -> bool {
        matches!(self, Space::Str { .. }) && x >= STR_END
    }

    /// The bytes VARCHAR keys were seen to use.
    fn alphabet(&self) -> &[u8] {
        match self {
            Space::Str { alphabet, .. } => alphabet,
            Space::Int { .. } => &[],
        }
    }
}

/// Drops the last character of `prefix`, which the alphabet learns.
fn widen(prefix: &mut Vec<u8>, alphabet: &mut Vec<u8>) {
    let mut cut = prefix.len() - 1;
    while std::str::from_utf8(&prefix[..cut]).is_err() {
        cut -= 1;
    }
    learn(alphabet, &prefix[cut..]);
    prefix.truncate(cut);
}

/// How far a key may lie from its target: 5% of a reader's share.
fn tolerance(total: u64, readers: usize) -> u64 {
    (total / (readers as u64 * 20)).max(1)
}

/// Split points cutting the keys into `readers` ranges of about equal row counts: range `i`
/// holds the keys from point `i - 1` (inclusive; the first from the smallest key) below point
/// `i` (the last to the largest). `first`: the smallest keys in order (at least one);
/// `total`: all rows; `count_below(x)`: the rows with a key below `x`. Fewer points come back
/// when there are too few keys (or points coincide). Asks at most `MAX_PROBES` counts per point.
pub async fn split_points<F, Fut, E>(
    first: &[Pk],
    total: u64,
    readers: usize,
    mut count_below: F,
) -> Result<Vec<Pk>, E>
where
    F: FnMut(Pk) -> Fut,
    Fut: Future<Output = Result<u64, E>>,
{
    let mut points: Vec<Pk> = Vec::new();
    let Some(min) = first.first() else {
        return Ok(points);
    };
    if readers < 2 || total < 2 {
        return Ok(points);
    }
    let mut space = Space::of(&first.iter().collect::<Vec<_>>(), &[]);
    // Every probe: a key and how many keys lie below it. The first keys are probes for free.
    let mut probes: Vec<(Pk, u64)> = first.iter().cloned().zip(0..).collect();
    let tol = tolerance(total, readers);
    for j in 1..readers {
        let target = total * j as u64 / readers as u64;
        let mut asked = 0;
        let mut last_span = f64::INFINITY;
        let (mut boost, mut last_count) = (2.0_f64, 0.0);
        loop {
            let near = probes
                .iter()
                .filter(|(k, _)| points.last().is_none_or(|p| k > p))
                .min_by_key(|(_, c)| c.abs_diff(target));
            let close = near.is_some_and(|(_, c)| c.abs_diff(target) <= tol);
            if close || asked >= MAX_PROBES {
                if let Some((k, c)) = near
                    && *c > 0
                {
                    points.push(k.clone());
                }
                break;
            }
            // The probes around the target: `lo` below it (the smallest key counts 0), `hi`
            // above it when one is known.
            let lo = probes
                .iter()
                .filter(|(_, c)| *c <= target)
                .max_by_key(|(_, c)| *c);
            let hi = probes
                .iter()
                .filter(|(_, c)| *c >= target)
                .min_by_key(|(_, c)| *c);
            let Some((lo_k, lo_c)) = lo.cloned() else {
                break;
            };
            let ca = lo_c as f64;
            let key = match hi {
                Some((hi_k, hi_c)) => {
                    // Between the two probes, at the resolution of what they share.
                    let between = Space::of(&[&lo_k, hi_k], space.alphabet());
                    let (a, b) = (between.pos(&lo_k), between.pos(hi_k));
                    let span = *hi_c as f64 - ca;
                    // Interpolate; bisect when the last step did not halve the rows between.
                    let x = if span > last_span / 2.0 {
                        a + (b - a) / 2.0
                    } else {
                        a + (b - a) * (target as f64 - ca) / span.max(1.0)
                    };
                    last_span = span;
                    between.key(x)
                }
                None => {
                    let a = space.pos(&lo_k);
                    // Extrapolate the density seen so far from the smallest key, a little past
                    // the target so that the next probe brackets it.
                    let m = space.pos(min);
                    let grow = target as f64 / ca.max(1.0) * 1.1;
                    // A probe that found no more keys than the one before: reach further each
                    // time (the keys may jump, as from small ones to auto ids).
                    if ca <= last_count {
                        boost *= boost;
                    }
                    last_count = ca;
                    let x = m + (a - m).max(1.0) * grow.max(1.1) * boost / 2.0;
                    if space.past_end(x)
                        && let Space::Str { prefix, alphabet } = &mut space
                        && !prefix.is_empty()
                    {
                        // The keys go past the first keys' prefix: widen it by a character.
                        widen(prefix, alphabet);
                        continue;
                    }
                    space.key(x)
                }
            };
            if hi.is_none()
                && key <= lo_k
                && let Space::Str { prefix, alphabet } = &mut space
                && !prefix.is_empty()
            {
                // Past the characters a key can hold after this prefix: widen it.
                widen(prefix, alphabet);
                continue;
            }
            if key <= lo_k || hi.is_some_and(|(h, _)| key >= *h) {
                // No key between the two probes to try (adjacent, or not expressible): take
                // the nearer of them.
                asked = MAX_PROBES;
                continue;
            }
            let c = count_below(key.clone()).await?;
            asked += 1;
            let at = probes.partition_point(|(k, _)| *k < key);
            probes.insert(at, (key, c));
        }
    }
    points.dedup();
    Ok(points)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    /// Runs `split_points` over sorted `keys`, counting exactly; returns the points, the rows
    /// per range and the number of count queries.
    fn split(keys: &[Pk], readers: usize, first: usize) -> (Vec<Pk>, Vec<u64>, usize) {
        let asked = Cell::new(0);
        let count = |x: Pk| {
            asked.set(asked.get() + 1);
            let n = keys.partition_point(|k| *k < x) as u64;
            async move { Ok::<_, ()>(n) }
        };
        let first = &keys[..first.min(keys.len())];
        let points =
            futures::executor::block_on(split_points(first, keys.len() as u64, readers, count))
                .unwrap();
        let mut bounds = vec![0];
        bounds.extend(points.iter().map(|p| keys.partition_point(|k| k < p)));
        bounds.push(keys.len());
        let sizes = bounds.windows(2).map(|w| (w[1] - w[0]) as u64).collect();
        (points, sizes, asked.get())
    }

    fn ints(v: impl Iterator<Item = i64>) -> Vec<Pk> {
        v.map(Pk::Int).collect()
    }

    fn balanced(sizes: &[u64], total: u64, readers: usize) -> bool {
        let share = total / readers as u64;
        sizes.len() == readers && sizes.iter().all(|s| s.abs_diff(share) <= share / 5 + 1)
    }

    #[test]
    fn uniform_int_keys_split_with_a_probe_or_two() {
        let keys = ints((0..300_000).map(|i| i * 3 + 1));
        for readers in [2, 3, 4] {
            let (_, sizes, asked) = split(&keys, readers, 16384);
            assert!(balanced(&sizes, 300_000, readers), "{readers}: {sizes:?}");
            assert!(asked <= 3 * (readers - 1), "{readers}: {asked} queries");
        }
    }

    #[test]
    fn auto_ids_and_the_ends_of_the_int64_range_split_evenly() {
        // Auto ids: large, increasing with gaps.
        let keys = ints((0..200_000).map(|i| 449_000_000_000_000_000 + i * 1_003 + i % 7));
        let (_, sizes, asked) = split(&keys, 2, 16384);
        assert!(asked <= 3, "{asked}");
        assert!(balanced(&sizes, 200_000, 2), "{sizes:?}");
        // Negative keys and the ends of the int64 range.
        let mut keys = ints((0..50_000).map(|i| i64::MIN + i));
        keys.extend(ints((0..50_000).map(|i| i64::MAX - 50_000 + i)));
        let (_, sizes, asked) = split(&keys, 2, 1000);
        assert!(asked <= MAX_PROBES, "{asked}");
        assert!(balanced(&sizes, 100_000, 2), "{sizes:?}");
    }

    #[test]
    fn keys_that_jump_stay_within_the_probe_budget() {
        // Dense small keys, then auto ids: balance is not promised, the budget and the cover are.
        let mut keys = ints(0..20_000);
        keys.extend(ints(
            (0..80_000).map(|i| 449_000_000_000_000_000 + i * 1_000_003),
        ));
        let (points, sizes, asked) = split(&keys, 2, 16384);
        assert!(asked <= MAX_PROBES, "{asked}");
        assert_eq!(points.len(), 1);
        assert_eq!(sizes.iter().sum::<u64>(), 100_000);
        assert!(sizes[0] >= 20_000, "{sizes:?}");
    }

    #[test]
    fn a_split_inside_the_first_keys_needs_no_query() {
        let keys = ints(0..10_000);
        let (points, sizes, asked) = split(&keys, 4, 16384);
        assert_eq!(asked, 0);
        assert_eq!(points, ints([2500, 5000, 7500].into_iter()));
        assert_eq!(sizes, vec![2500; 4]);
    }

    #[test]
    fn too_few_keys_give_fewer_ranges() {
        assert_eq!(split(&ints(0..1), 2, 10).1, vec![1]);
        let (points, sizes, _) = split(&ints(0..3), 8, 10);
        assert!(points.windows(2).all(|w| w[0] < w[1]), "{points:?}");
        assert_eq!(sizes.iter().sum::<u64>(), 3);
        assert_eq!(split(&ints(0..0), 2, 10).0, Vec::<Pk>::new());
    }

    #[test]
    fn varchar_keys_split_by_their_bytes() {
        let keys: Vec<Pk> = {
            let mut v: Vec<String> = (0..200_000u64)
                .map(|i| format!("k{:012}", i * 7919 % 2_600_000))
                .collect();
            v.sort();
            v.dedup();
            v.into_iter().map(Pk::Str).collect()
        };
        let total = keys.len() as u64;
        for readers in [2, 3] {
            let (points, sizes, asked) = split(&keys, readers, 16384);
            assert!(balanced(&sizes, total, readers), "{points:?} {sizes:?}");
            assert!(asked <= MAX_PROBES * (readers - 1), "{asked}");
        }
    }

    #[test]
    fn varchar_keys_far_past_the_first_keys_and_not_ascii_stay_within_the_budget() {
        // The first keys all start `doc-a`; later ones `doc-b`…`doc-z` and some non-ASCII.
        let mut v: Vec<String> = (0..26u8)
            .flat_map(|c| (0..2000).map(move |i| format!("doc-{}-{i:05}", (b'a' + c) as char)))
            .collect();
        v.extend((0..4000).map(|i| format!("é-{i:05}")));
        v.sort();
        let keys: Vec<Pk> = v.into_iter().map(Pk::Str).collect();
        let total = keys.len() as u64;
        // Balance is not promised when the first keys tell this little; the budget, the cover
        // and two non-empty ranges are.
        let (points, sizes, asked) = split(&keys, 2, 1000);
        assert!(asked <= MAX_PROBES, "{asked}");
        assert_eq!(sizes.iter().sum::<u64>(), total);
        assert!(
            sizes.len() == 2 && sizes.iter().all(|&s| s >= 1000),
            "{points:?} {sizes:?}"
        );
        for p in &points {
            let Pk::Str(s) = p else { panic!() };
            assert!(!s.chars().any(char::is_control), "{s:?}");
        }
    }
}
