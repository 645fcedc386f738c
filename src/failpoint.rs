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
//!
//! Three failpoints do not fail a call but *hold* a cross-shard batch at a
//! step of two-phase commit ([`hold_while_armed`]): `txn::before_prepare`
//! (before the participant of the scope is asked to prepare; the scope is the
//! participant's shard), `txn::before_commit` (every participant voted yes,
//! the COMMIT is not logged yet) and `txn::before_decide` (the COMMIT is
//! safe, no participant told yet). Armed with `return`, they
//! hold the coordinator's task until disarmed, while its shard keeps serving.
//! Two more hold a compaction the same way: `compaction::before_switch`
//! (the snapshot is written; appends still go to the old log and make the
//! tail the switch copies) and `compaction::tail_copied` (in the switch, the
//! tail is copied; appends wait in memory and go behind it), and
//! `snapshot::chunk_written` holds a snapshot writer (a compaction's or a
//! backup's) after each chunk it writes: a compaction that cannot keep up
//! with the writes.
//! (The `fail` crate's own `pause` and `sleep` actions block the whole shard's
//! thread; do not use them.)

use std::io;

/// Every failpoint name, for the docs and the tests.
pub const NAMES: &[&str] = &[
    "log::write",
    "log::fdatasync",
    "log::before_sync",
    "log::read_value",
    "compaction::create",
    "compaction::write",
    "compaction::fdatasync",
    "compaction::rename",
    "compaction::before_switch",
    "compaction::tail_copied",
    "compaction::dir_fsync",
    "segment::sync",
    "segment::rename",
    "segment::create",
    "segment::dir_fsync",
    "merge::write",
    "merge::sync",
    "merge::rename",
    "merge::dir_fsync",
    "merge::delete",
    "snapshot::chunk_written",
    "recovery::write",
    "recovery::fdatasync",
    "recovery::rename",
    "datadir::marker",
    "backup::create",
    "backup::write",
    "backup::fdatasync",
    "txn::before_prepare",
    "txn::before_commit",
    "txn::before_decide",
];

/// The argument of failpoint `name@scope` or else `name`, if armed ("" for a
/// bare `return`).
#[cfg(feature = "failpoints")]
fn hit(name: &str, scope: Option<usize>) -> Option<String> {
    let armed = |name: &str| fail::eval(name, |arg| arg).map(|arg| arg.unwrap_or_default());
    match scope {
        Some(scope) => armed(&format!("{name}@{scope}")).or_else(|| armed(name)),
        None => armed(name),
    }
}

/// Fails with an I/O error if failpoint `name` (or `name@scope`) is armed.
#[cfg(feature = "failpoints")]
pub fn check(name: &str, scope: Option<usize>) -> io::Result<()> {
    match hit(name, scope) {
        None => Ok(()),
        Some(arg) if arg == "ENOSPC" => Err(io::Error::from_raw_os_error(libc::ENOSPC)),
        Some(_) => Err(io::Error::other(format!("failpoint {name} fired"))),
    }
}

/// How often a held task looks whether its failpoint was disarmed.
#[cfg(feature = "failpoints")]
const HOLD_POLL: std::time::Duration = std::time::Duration::from_millis(5);

/// Holds the calling task while failpoint `name` (or `name@scope`) is armed,
/// logging `failpoint NAME holds WHAT` when it starts (tests wait for that
/// line) and `… releases WHAT` when it ends. Only this task waits: it polls,
/// so its shard keeps serving meanwhile. Each poll consumes one count of a
/// counted action (`3*return` holds for three polls).
#[cfg(feature = "failpoints")]
pub async fn hold_while_armed(name: &str, scope: Option<usize>, what: &dyn std::fmt::Display) {
    if hit(name, scope).is_none() {
        return;
    }
    tracing::info!("failpoint {name} holds {what}");
    while hit(name, scope).is_some() {
        glommio::timer::sleep(HOLD_POLL).await;
    }
    tracing::info!("failpoint {name} releases {what}");
}

/// Without the `failpoints` feature nothing is armed, ever.
#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub async fn hold_while_armed(_name: &str, _scope: Option<usize>, _what: &dyn std::fmt::Display) {}

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
