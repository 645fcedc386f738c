//! Failpoints: named places in the I/O paths where a test can make a call
//! fail, to prove that a failed write, sync, rename or file creation loses
//! nothing that was acknowledged.
//!
//! Compiled only with the `failpoints` feature, which the test build turns on
//! (a release build has none: [`check`] is an inlined `Ok(())`). A test arms a
//! failpoint through the `FAILPOINTS` environment variable at start-up
//! (`name=actions;…`, the `fail` crate's syntax) or, on a running server,
//! with `POST /debug/failpoint` on the HTTP address (docs/operations.md).
//!
//! Every failpoint can be armed for all shards (`log::fdatasync`) or for one
//! (`log::fdatasync@1`). An armed failpoint whose action is `return` makes the
//! call fail with an I/O error naming it; `return(ENOSPC)` fails it the way a
//! full disk does.

use std::io;

/// Every failpoint name, for the docs and the tests.
pub const NAMES: &[&str] = &[
    "log::write",
    "log::fdatasync",
    "compaction::create",
    "compaction::write",
    "compaction::fdatasync",
    "compaction::rename",
    "compaction::dir_fsync",
    "recovery::write",
    "recovery::fdatasync",
    "recovery::rename",
    "datadir::marker",
];

/// Fails with an I/O error if failpoint `name` (or `name@scope`) is armed.
#[cfg(feature = "failpoints")]
pub fn check(name: &str, scope: Option<usize>) -> io::Result<()> {
    let armed = |name: &str| fail::eval(name, |arg| arg).map(|arg| arg.unwrap_or_default());
    let hit = match scope {
        Some(scope) => armed(&format!("{name}@{scope}")).or_else(|| armed(name)),
        None => armed(name),
    };
    match hit {
        None => Ok(()),
        Some(arg) if arg == "ENOSPC" => Err(io::Error::from_raw_os_error(libc::ENOSPC)),
        Some(_) => Err(io::Error::other(format!("failpoint {name} fired"))),
    }
}

/// Without the `failpoints` feature nothing is armed, ever.
#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub fn check(_name: &str, _scope: Option<usize>) -> io::Result<()> {
    Ok(())
}

/// Arms the failpoints listed in the `FAILPOINTS` environment variable.
#[cfg(feature = "failpoints")]
pub fn arm_from_env() {
    // The scenario only guards the registry for tests in one process; the
    // server keeps its configuration for its whole life.
    std::mem::forget(fail::FailScenario::setup());
}

#[cfg(not(feature = "failpoints"))]
pub fn arm_from_env() {}

/// Arms (or, with empty `actions`, disarms) one failpoint at run time.
#[cfg(feature = "failpoints")]
pub fn configure(name: &str, actions: &str) -> Result<(), String> {
    let base = name.split('@').next().unwrap_or(name);
    if !NAMES.contains(&base) {
        return Err(format!(
            "no failpoint named {base}; known: {}",
            NAMES.join(", ")
        ));
    }
    if actions.is_empty() {
        fail::remove(name);
        return Ok(());
    }
    fail::cfg(name, actions)
}
