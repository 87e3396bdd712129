//! What planrun may take from a server: a rate of requests (or bytes) per second that every call
//! waits for, halved when the server answers that it is overloaded and grown back as calls
//! succeed, so a migration yields to a live cluster instead of failing on it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The slowest a throttled server is asked: one call every ten seconds.
const FLOOR: f64 = 0.1;
/// Calls in a row that must succeed before the rate grows again by a tenth of the cap.
const RECOVER_AFTER: u32 = 20;

/// Told once per throttle when it first slows down (what the server said, the new rate).
pub type Notice = Arc<dyn Fn(String) + Send + Sync>;

/// A token bucket whose rate adapts: `cap` per second at most, less while the server pushes
/// back. Without a cap it lets every call through until the server first pushes back, and
/// then starts from the rate it saw.
pub struct Throttle {
    /// What is counted, for messages: `requests` or `bytes`.
    unit: &'static str,
    /// Whose rate it is, for messages: "`milvus_a`".
    owner: String,
    cap: Option<f64>,
    state: Mutex<State>,
    notice: Mutex<Option<Notice>>,
    /// An outage of the server was said and no call has gone through since: every call that
    /// waits for the server to come back would otherwise say it again.
    outage_said: AtomicBool,
    /// Outages seen so far: what was in flight on the server before one may be gone.
    outages: AtomicU64,
}

struct State {
    /// The current rate; `None` while uncapped and never pushed back.
    rate: Option<f64>,
    tokens: f64,
    last: Instant,
    ok_in_a_row: u32,
    /// Calls let through in the current second, to start an uncapped throttle from.
    window: (Instant, f64),
    noticed: bool,
}

impl std::fmt::Debug for Throttle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Throttle({} {:?}/s)", self.owner, self.rate())
    }
}

impl Throttle {
    pub fn new(owner: impl Into<String>, unit: &'static str, cap: Option<f64>) -> Arc<Throttle> {
        let now = Instant::now();
        Arc::new(Throttle {
            unit,
            owner: owner.into(),
            cap: cap.filter(|c| *c > 0.0),
            state: Mutex::new(State {
                rate: cap.filter(|c| *c > 0.0),
                // A full bucket: the first second's calls go out at once.
                tokens: cap.unwrap_or(0.0),
                last: now,
                ok_in_a_row: 0,
                window: (now, 0.0),
                noticed: false,
            }),
            notice: Mutex::new(None),
            outage_said: AtomicBool::new(false),
            outages: AtomicU64::new(0),
        })
    }

    /// Where the first slow-down is said (the run's events); without one it is only logged.
    pub fn tell(&self, notice: Notice) {
        *self.notice.lock().expect("throttle lock") = Some(notice);
    }

    /// Says that the server cannot be reached (`msg`), once per outage: until a call succeeds.
    pub fn say_outage(&self, msg: impl FnOnce() -> String) {
        if self.outage_said.swap(true, Ordering::SeqCst) {
            return;
        }
        self.outages.fetch_add(1, Ordering::SeqCst);
        let msg = msg();
        tracing::info!("{msg}");
        if let Some(n) = self.notice.lock().expect("throttle lock").as_ref() {
            n(msg);
        }
    }

    /// Whether an outage was said and no call has gone through since.
    pub fn in_outage(&self) -> bool {
        self.outage_said.load(Ordering::SeqCst)
    }

    /// How many outages of the server were seen (each said once): a count that moved while
    /// something ran on the server means the server may have restarted under it.
    pub fn outages(&self) -> u64 {
        self.outages.load(Ordering::SeqCst)
    }

    /// The rate calls are let through at now, per second (`None`: not limited).
    pub fn rate(&self) -> Option<f64> {
        self.state.lock().expect("throttle lock").rate
    }

    /// Waits until `cost` (1 for a request, n for n bytes) may go out.
    pub async fn acquire(&self, cost: f64) {
        loop {
            let wait = {
                let mut s = self.state.lock().expect("throttle lock");
                let now = Instant::now();
                if now.duration_since(s.window.0) >= Duration::from_secs(1) {
                    s.window = (now, 0.0);
                }
                s.window.1 += cost;
                let Some(rate) = s.rate else { return };
                let burst = rate.max(cost);
                s.tokens = (s.tokens + now.duration_since(s.last).as_secs_f64() * rate).min(burst);
                s.last = now;
                if s.tokens >= cost {
                    s.tokens -= cost;
                    return;
                }
                s.window.1 -= cost;
                Duration::from_secs_f64((cost - s.tokens) / rate)
            };
            tokio::time::sleep(wait).await;
        }
    }

    /// The server pushed back (`why`, in its words): halve the rate. Returns how long to wait
    /// before trying again.
    pub fn slow_down(&self, why: &str) -> Duration {
        let (rate, first) = {
            let mut s = self.state.lock().expect("throttle lock");
            let seen = s.window.1.max(1.0);
            let rate = (s.rate.unwrap_or(seen) / 2.0).max(FLOOR);
            s.rate = Some(rate);
            s.tokens = 0.0;
            s.ok_in_a_row = 0;
            let first = !s.noticed;
            s.noticed = true;
            (rate, first)
        };
        if first {
            let msg = format!(
                "{} pushes back ({why}); planrun slows down to {} {}/s and retries",
                self.owner,
                shown(rate),
                self.unit
            );
            tracing::info!("{msg}");
            if let Some(n) = self.notice.lock().expect("throttle lock").as_ref() {
                n(msg);
            }
        }
        Duration::from_secs_f64((1.0 / rate).clamp(0.5, 10.0))
    }

    /// A call went through: after enough in a row, the rate grows back towards the cap.
    pub fn succeeded(&self) {
        self.outage_said.store(false, Ordering::SeqCst);
        let mut s = self.state.lock().expect("throttle lock");
        let Some(rate) = s.rate else { return };
        s.ok_in_a_row += 1;
        if s.ok_in_a_row >= RECOVER_AFTER {
            s.ok_in_a_row = 0;
            let step = self.cap.unwrap_or(rate) / 10.0;
            s.rate = Some(match self.cap {
                Some(cap) => (rate + step).min(cap),
                None => rate + step,
            });
        }
    }
}

/// A rate for people: whole numbers above 10, one decimal below.
pub fn shown(rate: f64) -> String {
    if rate >= 10.0 {
        format!("{rate:.0}")
    } else {
        format!("{rate:.1}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn calls_beyond_the_cap_wait_for_their_turn() {
        let t = Throttle::new("`a`", "requests", Some(100.0));
        let start = Instant::now();
        for _ in 0..130 {
            t.acquire(1.0).await;
        }
        // 100 from the full bucket, then 30 at 100 per second: never faster (a slow machine
        // only makes it slower).
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(290), "{took:?}");
    }

    #[test]
    fn a_push_back_halves_the_rate_and_is_said_once() {
        let said = Arc::new(Mutex::new(Vec::new()));
        let t = Throttle::new("`milvus_q`", "requests", Some(100.0));
        let s = said.clone();
        t.tell(Arc::new(move |m| s.lock().unwrap().push(m)));
        t.slow_down("rate limit exceeded[rate=2]");
        assert_eq!(t.rate(), Some(50.0));
        t.slow_down("again");
        assert_eq!(t.rate(), Some(25.0));
        assert_eq!(
            *said.lock().unwrap(),
            [
                "`milvus_q` pushes back (rate limit exceeded[rate=2]); planrun slows down to 50 \
              requests/s and retries"
            ]
        );
        for _ in 0..20 * 10 {
            t.succeeded();
        }
        assert_eq!(
            t.rate(),
            Some(100.0),
            "it grows back to the cap, not beyond"
        );
    }

    #[test]
    fn an_uncapped_throttle_starts_from_what_it_let_through() {
        let t = Throttle::new("`b`", "requests", None);
        assert_eq!(t.rate(), None);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            for _ in 0..8 {
                t.acquire(1.0).await;
            }
        });
        t.slow_down("SlowDown");
        assert_eq!(t.rate(), Some(4.0));
        for _ in 0..100 {
            t.slow_down("SlowDown");
        }
        assert_eq!(t.rate(), Some(FLOOR));
    }
}
