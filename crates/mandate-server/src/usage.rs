//! Windowed usage counts for policies: how many tokens holding a scope were issued to an agent,
//! or for a user, in the last hour — per-minute buckets kept in memory (per node).

use std::collections::HashMap;
use std::sync::Mutex;

/// Minutes in the window.
const WINDOW: usize = 60;
/// Most keys tracked; beyond it, keys idle for a whole window are forgotten.
const MAX_KEYS: usize = 200_000;

#[derive(Debug, Clone)]
struct Counts {
    minutes: [u32; WINDOW],
    /// The minute (since the epoch) of the newest bucket.
    newest: i64,
}

impl Counts {
    fn advance(&mut self, minute: i64) {
        let gap = minute - self.newest;
        if gap <= 0 {
            return;
        }
        let clear = gap.min(WINDOW as i64);
        for m in 1..=clear {
            self.minutes[((self.newest + m).rem_euclid(WINDOW as i64)) as usize] = 0;
        }
        self.newest = minute;
    }
}

/// Counters of recent use, by key.
#[derive(Debug, Default)]
pub struct UsageCounter {
    counts: Mutex<HashMap<String, Counts>>,
}

/// The key of an agent's use of a scope.
pub fn agent_key(agent: &str, scope: &str) -> String {
    format!("agent|{agent}|{scope}")
}

/// The key of use of a scope for a user.
pub fn user_key(user: &str, scope: &str) -> String {
    format!("user|{user}|{scope}")
}

impl UsageCounter {
    /// Counts one use of `key` at `now` (seconds).
    pub fn record(&self, key: &str, now: i64) {
        let minute = now.div_euclid(60);
        let mut map = match self.counts.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if map.len() >= MAX_KEYS {
            map.retain(|_, c| minute - c.newest < WINDOW as i64);
        }
        let c = map.entry(key.to_owned()).or_insert(Counts {
            minutes: [0; WINDOW],
            newest: minute,
        });
        c.advance(minute);
        let slot = minute.rem_euclid(WINDOW as i64) as usize;
        c.minutes[slot] = c.minutes[slot].saturating_add(1);
    }

    /// Uses of `key` in the last hour before `now`.
    pub fn last_hour(&self, key: &str, now: i64) -> i64 {
        let minute = now.div_euclid(60);
        let mut map = match self.counts.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        match map.get_mut(key) {
            None => 0,
            Some(c) => {
                c.advance(minute);
                c.minutes.iter().map(|n| i64::from(*n)).sum()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_slide_out_of_the_hour() {
        let u = UsageCounter::default();
        let k = agent_key("support-v2", "email:send");
        u.record(&k, 0);
        u.record(&k, 30);
        u.record(&k, 1_800);
        assert_eq!(u.last_hour(&k, 1_800), 3);
        assert_eq!(
            u.last_hour(&k, 3_600),
            1,
            "the first minute's two left the window"
        );
        assert_eq!(u.last_hour(&k, 10_000), 0);
        assert_eq!(u.last_hour(&user_key("alice", "email:send"), 0), 0);
    }
}
