//! Named failure points: crash the aggregator on purpose at a persisted transition, for the
//! crash-safety tests.
//!
//! Off unless the environment variable `FEDRAD_FAILPOINT` is set (one lookup per process, then a
//! relaxed atomic load per call, so the production cost is nil). Its value is `NAME` (crash at
//! the first hit) or `NAME:N` (crash at the N-th hit, counting from 1). The crash is
//! `std::process::abort()`: no destructor runs and nothing is flushed, as with SIGKILL or a
//! power cut. The points (every place the coordinator persists something, in order):
//!
//! | name | where |
//! | --- | --- |
//! | `submit.persisted` | a submitted study is durable, the submitter not yet told |
//! | `result.accepted` | one site's result is taken in memory (not stored), the site not yet told |
//! | `round.written` | a completed round's record is written, before the flush that makes it durable |
//! | `round.durable` | the completed round is flushed, the next round not yet handed out |
//! | `snapshot.written` | a study snapshot is written, before its flush |
//! | `snapshot.durable` | the snapshot is flushed |
//! | `retire.durable` | a finished study (results folder synced) is retired in the store, its state not yet dropped from memory |
//! | `restore.replayed` | on start-up, after replaying stored rounds, before serving |

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// Every failure point, for tests that visit them all.
pub const POINTS: &[&str] = &[
    "submit.persisted",
    "result.accepted",
    "round.written",
    "round.durable",
    "snapshot.written",
    "snapshot.durable",
    "retire.durable",
    "restore.replayed",
];

struct Armed {
    name: String,
    at: u64,
    hits: AtomicU64,
}

fn armed() -> Option<&'static Armed> {
    static ARMED: OnceLock<Option<Armed>> = OnceLock::new();
    ARMED
        .get_or_init(|| {
            let value = std::env::var("FEDRAD_FAILPOINT").ok()?;
            let (name, at) = match value.split_once(':') {
                Some((n, k)) => (n.to_string(), k.parse().ok()?),
                None => (value, 1),
            };
            Some(Armed {
                name,
                at,
                hits: AtomicU64::new(0),
            })
        })
        .as_ref()
}

/// Aborts the process if `name` is the armed point and this is its N-th hit.
pub fn hit(name: &str) {
    if let Some(a) = armed()
        && a.name == name
        && a.hits.fetch_add(1, Ordering::SeqCst) + 1 == a.at
    {
        eprintln!("FEDRAD_FAILPOINT: crashing at {name} (hit {})", a.at);
        std::process::abort();
    }
}
