//! Signed checkpoints of the audit chain's head, and what they prove (SPEC §7).
//!
//! A hash chain alone cannot show that its tail was cut off, or that every hash was recomputed
//! after an edit: the shorter or rewritten chain is consistent with itself. A checkpoint is the
//! server's signed statement "at time T the event of seq N had hash H". The signature is checked
//! by the caller (with `mandate-token`); [`check`] compares the checkpoints that verified with
//! what the log holds now. No IO here.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The `typ` header of a checkpoint JWS.
pub const CHECKPOINT_TYP: &str = "audit-checkpoint+jwt";

/// A checkpoint of the chain head.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The `seq` of the head event.
    pub seq: i64,
    /// Its hash.
    pub hash: String,
    /// When the checkpoint was signed (RFC 3339 UTC).
    pub time: String,
    /// The compact JWS (`iss`, `iat`, `seq`, `hash`), signed with the server's signing key.
    pub jws: String,
}

/// Something a checkpoint shows to be wrong.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointFinding {
    /// `truncated` (the log ends before the checkpointed seq), `missing` (the checkpointed event
    /// is gone, later ones remain), `rewritten` (the event at the checkpointed seq has another
    /// hash) or `signature` (the checkpoint's signature does not verify).
    pub kind: String,
    /// The checkpointed `seq`.
    pub seq: i64,
    /// What is wrong, in words.
    pub problem: String,
}

/// What the log holds at the checkpointed places, gathered while walking it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogFacts {
    /// The highest `seq` in the log (0 when empty).
    pub last_seq: i64,
    /// The stored hash of the event at each checkpointed `seq` that is present.
    pub hashes: BTreeMap<i64, String>,
}

fn short(h: &str) -> &str {
    h.get(..16).unwrap_or(h)
}

/// Compares checkpoints (whose signatures verified) with the log. Returns one finding per
/// checkpoint that the log contradicts, in `seq` order.
pub fn check(checkpoints: &[Checkpoint], log: &LogFacts) -> Vec<CheckpointFinding> {
    let mut sorted: Vec<&Checkpoint> = checkpoints.iter().collect();
    sorted.sort_by(|a, b| a.seq.cmp(&b.seq).then_with(|| a.time.cmp(&b.time)));
    sorted.dedup_by(|a, b| a.seq == b.seq && a.hash == b.hash);
    // The highest checkpointed seq the log still agrees with.
    let mut agreed = 0_i64;
    let mut out = Vec::new();
    for cp in sorted {
        let (n, t) = (cp.seq, &cp.time);
        match log.hashes.get(&n) {
            Some(h) if *h == cp.hash => agreed = agreed.max(n),
            Some(h) => {
                let place = if agreed > 0 {
                    format!("between seq {} and {n}", agreed + 1)
                } else {
                    format!("at or before seq {n}")
                };
                out.push(CheckpointFinding {
                    kind: "rewritten".into(),
                    seq: n,
                    problem: format!(
                        "the chain was rewritten {place}: checkpoint of seq {n} (signed at {t}) \
                         recorded hash {}…, the event at seq {n} now has hash {}…",
                        short(&cp.hash),
                        short(h)
                    ),
                })
            }
            None if log.last_seq < n => out.push(CheckpointFinding {
                kind: "truncated".into(),
                seq: n,
                problem: format!(
                    "events after seq {} are missing: checkpoint of seq {n} (signed at {t}) names \
                     an event the log no longer has",
                    log.last_seq
                ),
            }),
            None => out.push(CheckpointFinding {
                kind: "missing".into(),
                seq: n,
                problem: format!(
                    "event seq {n} is missing: checkpoint of seq {n} (signed at {t}) names it, \
                     and the log goes on to seq {}",
                    log.last_seq
                ),
            }),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cp(seq: i64, hash: &str) -> Checkpoint {
        Checkpoint {
            seq,
            hash: hash.into(),
            time: format!("2026-03-14T14:3{seq}:00.000Z"),
            jws: String::new(),
        }
    }

    fn log(last: i64, at: &[(i64, &str)]) -> LogFacts {
        LogFacts {
            last_seq: last,
            hashes: at.iter().map(|(s, h)| (*s, (*h).to_owned())).collect(),
        }
    }

    #[test]
    fn agreeing_checkpoints_find_nothing() {
        let cps = [cp(3, "aa"), cp(5, "bb"), cp(5, "bb")];
        assert!(check(&cps, &log(7, &[(3, "aa"), (5, "bb")])).is_empty());
    }

    #[test]
    fn a_cut_tail_is_named() {
        let f = check(&[cp(3, "aa"), cp(5, "bb")], &log(4, &[(3, "aa")]));
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].kind, "truncated");
        assert_eq!(f[0].seq, 5);
        assert!(
            f[0].problem.starts_with(
                "events after seq 4 are missing: checkpoint of seq 5 (signed at 2026-03-14T14:35:00.000Z)"
            ),
            "{}",
            f[0].problem
        );
    }

    #[test]
    fn a_missing_checkpointed_event_is_named() {
        let f = check(&[cp(3, "aa")], &log(6, &[]));
        assert_eq!(f[0].kind, "missing");
        assert!(f[0].problem.starts_with("event seq 3 is missing"));
    }

    #[test]
    fn a_rewritten_chain_is_named_after_the_last_agreeing_checkpoint() {
        let f = check(
            &[cp(2, "aa"), cp(5, "bb")],
            &log(9, &[(2, "aa"), (5, "cc")]),
        );
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].kind, "rewritten");
        assert_eq!(f[0].seq, 5);
        assert!(
            f[0].problem
                .starts_with("the chain was rewritten between seq 3 and 5:"),
            "{}",
            f[0].problem
        );
    }
}
