//! The crate-owned rayon pools, one per requested thread count.
//!
//! `n_jobs` wins, then `FASTCORE_AD_NUM_THREADS`, then the number of logical CPUs. Pools are
//! cached; after `fork()` the child's pool threads are gone, so `reset_after_fork` forgets the
//! inherited pools (leaking them on purpose: dropping would join threads that do not exist).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use rayon::{ThreadPool, ThreadPoolBuilder};

type PoolMap = HashMap<usize, Arc<ThreadPool>>;

fn pools() -> &'static Mutex<PoolMap> {
    static POOLS: OnceLock<Mutex<PoolMap>> = OnceLock::new();
    POOLS.get_or_init(|| Mutex::new(HashMap::new()))
}

/// Resolve the thread count: explicit `n_jobs` (<= 0 means "all CPUs"), then the environment.
pub fn resolve_threads(n_jobs: Option<i64>) -> usize {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let from_env = || {
        std::env::var("FASTCORE_AD_NUM_THREADS")
            .ok()
            .and_then(|v| v.trim().parse::<i64>().ok())
    };
    // More threads than a few per CPU only add overhead, and a huge request (n_jobs=10**6)
    // would try to start that many OS threads.
    let most = cpus.saturating_mul(4);
    match n_jobs.or_else(from_env) {
        Some(n) if n > 0 => (n.min(most as i64)) as usize,
        Some(n) if n < 0 => {
            // scikit-learn convention: -1 = all CPUs, -2 = all but one, ...
            let k = cpus as i64 + 1 + n;
            k.max(1) as usize
        }
        _ => cpus,
    }
}

/// Run `f` inside the pool with the resolved number of threads.
pub fn install<R: Send>(n_jobs: Option<i64>, f: impl FnOnce() -> R + Send) -> R {
    let threads = resolve_threads(n_jobs);
    let pool = {
        let mut map = match pools().lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        match map.get(&threads) {
            Some(p) => Some(p.clone()),
            None => match ThreadPoolBuilder::new()
                .num_threads(threads)
                .thread_name(|i| format!("fastcore-ad-{i}"))
                .build()
            {
                Ok(p) => {
                    let p = Arc::new(p);
                    map.insert(threads, p.clone());
                    Some(p)
                }
                Err(_) => None,
            },
        }
    };
    match pool {
        Some(p) => p.install(f),
        // A pool that cannot start threads still gives a correct (sequential) answer.
        None => f(),
    }
}

/// Forget the pools inherited through `fork()`; called from Python's `os.register_at_fork`.
pub fn reset_after_fork() {
    let mut map = match pools().lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    };
    for (_, pool) in map.drain() {
        std::mem::forget(pool);
    }
}

/// Bytes of memory still available to the process (Linux `MemAvailable`), if known: sizes that
/// an input implies are checked against it before allocating.
pub fn available_memory() -> Option<usize> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: usize = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}
