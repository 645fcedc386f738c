//! A first start that fails (docs/operations.md, "Data directory") must not
//! leave anything that blocks the next one: a marker that could not be
//! written — a failpoint, or a real full filesystem — fails the start with a
//! clear error and a non-zero exit, and once the cause is gone the next start
//! works. A start refused before it needs the disk (its port is taken, locked
//! memory is too low) creates no data directory at all.

mod common;

use common::{server_binary, TestServer};
use rmpv::Value;
use std::ffi::CString;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The small filesystem the full-disk case fills.
const TMPFS_OPTIONS: &str = "size=64k";

/// A start that must fail: its exit status must be non-zero; returns stderr.
fn refused_start(data_dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> String {
    match TestServer::start_with_env(data_dir, 1, extra, env) {
        Ok(mut server) => panic!("the start must fail, but:\n{}", server.stderr()),
        Err((status, stderr)) => {
            assert!(
                status.is_some_and(|s| !s.success()),
                "exit status {status:?}:\n{stderr}"
            );
            stderr
        }
    }
}

/// The start after a failed one works: it serves, keeps data and stops cleanly.
fn the_next_start_works(data_dir: &Path) {
    let mut server = TestServer::start_in(data_dir, 1, &["--engine", "log"])
        .unwrap_or_else(|(status, stderr)| panic!("the next start failed ({status:?}):\n{stderr}"));
    let mut client = server.client();
    client.set(b"k", Value::from("v")).expect("set");
    assert_eq!(client.get(b"k").expect("get"), Some(Value::from("v")));
    drop(client);
    let status = server.stop_with(libc::SIGTERM);
    assert!(status.success(), "{status:?}\n{}", server.stderr());
    let marker = std::fs::read_to_string(data_dir.join("ENGINE")).expect("ENGINE");
    assert_eq!(marker, "log\n");
}

fn a_failed_marker_write_fails_the_start_and_the_next_start_works(temp: &Path) {
    let data_dir = temp.join("failpoint");
    let env = [("FAILPOINTS", "datadir::marker=return")];
    let stderr = refused_start(&data_dir, &["--engine", "log"], &env);
    let marker = data_dir.join("ENGINE");
    let expected = format!("cannot write the engine marker {}", marker.display());
    assert!(stderr.contains(&expected), "{stderr}");
    assert!(
        stderr.contains("failpoint datadir::marker fired"),
        "{stderr}"
    );
    assert!(!marker.exists(), "no marker may be left behind");
    the_next_start_works(&data_dir);
}

/// A tmpfs mounted for one test, unmounted when dropped (a failed assertion too).
struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    /// `None` when this process may not mount (not root, or no CAP_SYS_ADMIN).
    fn mount(path: &Path) -> Option<Tmpfs> {
        std::fs::create_dir_all(path).expect("mount point");
        let target = CString::new(path.as_os_str().as_bytes()).expect("path");
        let options = CString::new(TMPFS_OPTIONS).expect("options");
        // SAFETY: every pointer is a NUL-terminated string that outlives the call.
        let rc = unsafe {
            libc::mount(
                c"tmpfs".as_ptr(),
                target.as_ptr(),
                c"tmpfs".as_ptr(),
                0,
                options.as_ptr().cast(),
            )
        };
        if rc != 0 {
            let err = std::io::Error::last_os_error();
            eprintln!("cannot mount a tmpfs on {} ({err})", path.display());
            return None;
        }
        Some(Tmpfs {
            path: path.to_owned(),
        })
    }

    /// Writes a file until the filesystem is full; returns its path.
    fn fill(&self) -> PathBuf {
        let filler = self.path.join("filler");
        let mut file = std::fs::File::create(&filler).expect("filler");
        let chunk = vec![0u8; 4096];
        for _ in 0..1024 {
            match file.write_all(&chunk).and_then(|()| file.sync_all()) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => return filler,
                Err(e) => panic!("filling the tmpfs: {e}"),
            }
        }
        panic!("a {TMPFS_OPTIONS} tmpfs did not fill up with 4 MiB");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let target = CString::new(self.path.as_os_str().as_bytes()).expect("path");
        // SAFETY: a NUL-terminated path. MNT_DETACH: a server still running
        // after a failed assertion must not keep the mount alive.
        if unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) } != 0 {
            let err = std::io::Error::last_os_error();
            eprintln!("cannot unmount {}: {err}", self.path.display());
        }
    }
}

fn a_full_filesystem_fails_the_start_and_the_next_start_works(temp: &Path) {
    let Some(tmpfs) = Tmpfs::mount(&temp.join("tmpfs")) else {
        eprintln!("skipped the real full-filesystem part: cannot mount (not root?)");
        return;
    };
    let filler = tmpfs.fill();
    let data_dir = tmpfs.path.join("data");
    let stderr = refused_start(&data_dir, &["--engine", "log"], &[]);
    let marker = data_dir.join("ENGINE");
    let expected = format!("cannot write the engine marker {}", marker.display());
    assert!(stderr.contains(&expected), "{stderr}");
    assert!(stderr.contains("No space left on device"), "{stderr}");
    assert!(!marker.exists(), "no marker may be left behind");
    std::fs::remove_file(filler).expect("free space");
    the_next_start_works(&data_dir);
}

#[test]
fn a_first_start_that_cannot_write_its_engine_marker_fails_and_the_next_start_works() {
    let temp = tempfile::tempdir().expect("temp dir");
    a_failed_marker_write_fails_the_start_and_the_next_start_works(temp.path());
    a_full_filesystem_fails_the_start_and_the_next_start_works(temp.path());
}

/// Runs the server to its exit (bounded), with RLIMIT_MEMLOCK set to
/// `memlock_bytes` if given.
fn run_to_exit(args: &[&str], data_dir: &Path, memlock_bytes: Option<u64>) -> Output {
    let mut command = Command::new(server_binary());
    command.args(args).arg("--data-dir").arg(data_dir);
    if let Some(bytes) = memlock_bytes {
        // SAFETY: the closure only calls setrlimit, which is async-signal-safe.
        unsafe {
            command.pre_exec(move || {
                let limit = libc::rlimit {
                    rlim_cur: bytes,
                    rlim_max: bytes,
                };
                match libc::setrlimit(libc::RLIMIT_MEMLOCK, &limit) {
                    0 => Ok(()),
                    _ => Err(std::io::Error::last_os_error()),
                }
            });
        }
    }
    common::run_to_exit(&mut command)
}

fn assert_refused_without_a_data_dir(output: &Output, data_dir: &Path, needle: &str) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{:?}\n{stderr}", output.status);
    assert!(stderr.contains(needle), "no {needle:?} in:\n{stderr}");
    assert!(
        !data_dir.exists(),
        "a start refused for {needle:?} created {}",
        data_dir.display()
    );
}

#[test]
fn a_start_refused_for_its_port_or_locked_memory_creates_no_data_directory() {
    let temp = tempfile::tempdir().expect("temp dir");
    let data_dir = temp.path().join("data");
    let squatter = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let taken = squatter.local_addr().expect("addr").to_string();
    for args in [
        ["--addr", taken.as_str(), "--http-addr", "127.0.0.1:0"],
        ["--addr", "127.0.0.1:0", "--http-addr", taken.as_str()],
    ] {
        let output = run_to_exit(&args, &data_dir, None);
        assert_refused_without_a_data_dir(&output, &data_dir, "cannot listen on");
    }
    let args = ["--addr", "127.0.0.1:0", "--engine", "log"];
    let output = run_to_exit(&args, &data_dir, Some(64 * 1024));
    assert_refused_without_a_data_dir(&output, &data_dir, "RLIMIT_MEMLOCK");
}
