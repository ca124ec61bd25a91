//! Failpoints: named places on the persistence path where a test can kill the process.
//!
//! The crash-injection suite runs a workflow in a child process with the environment variable
//! `CHATTER_FAILPOINT=name#n`: the `n`-th time (from 1) the code passes the failpoint `name`,
//! the process sends itself `SIGKILL`, as a power cut or an OOM killer would. With
//! `CHATTER_FAILPOINT_TRACE=path`, every failpoint passed is appended to `path` (one name per
//! line), which is how the suite enumerates the points of an uninterrupted run.
//!
//! Without either variable a failpoint costs one atomic load.

use std::collections::HashMap;
use std::io::Write;
use std::sync::{Mutex, OnceLock, PoisonError};

struct Config {
    /// The failpoint to crash at and on which pass (from 1).
    crash_at: Option<(String, u64)>,
    /// Where passes are recorded.
    trace: Option<std::path::PathBuf>,
    passes: Mutex<HashMap<&'static str, u64>>,
}

static CONFIG: OnceLock<Option<Config>> = OnceLock::new();

fn config() -> Option<&'static Config> {
    CONFIG
        .get_or_init(|| {
            let crash_at =
                std::env::var("CHATTER_FAILPOINT")
                    .ok()
                    .map(|spec| match spec.split_once('#') {
                        Some((name, n)) => (name.to_owned(), n.parse().unwrap_or(1)),
                        None => (spec, 1),
                    });
            let trace = std::env::var_os("CHATTER_FAILPOINT_TRACE").map(Into::into);
            (crash_at.is_some() || trace.is_some()).then(|| Config {
                crash_at,
                trace,
                passes: Mutex::new(HashMap::new()),
            })
        })
        .as_ref()
}

/// Passes the failpoint `name`: records it when tracing, kills the process when it is the
/// configured one.
pub fn hit(name: &'static str) {
    let Some(config) = config() else {
        return;
    };
    let pass = {
        let mut passes = config.passes.lock().unwrap_or_else(PoisonError::into_inner);
        let pass = passes.entry(name).or_insert(0);
        *pass += 1;
        *pass
    };
    if let Some(path) = &config.trace
        && let Ok(mut file) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
    {
        let _ = writeln!(file, "{name}");
    }
    if let Some((target, n)) = &config.crash_at
        && target == name
        && *n == pass
    {
        kill_self();
    }
}

/// Ends the process with `SIGKILL` (no destructor, no flush, no atexit handler runs).
fn kill_self() -> ! {
    let _ = std::io::stderr().flush();
    let _ = std::process::Command::new("kill")
        .args(["-KILL", &std::process::id().to_string()])
        .status();
    // `kill` is missing or failed: abort, which is as abrupt for the store.
    std::process::abort()
}
