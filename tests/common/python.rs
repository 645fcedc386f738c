//! Running Python 3 from tests, and making sure a package it needs is
//! importable (installing it with pip if not), so the suite passes on a fresh
//! machine by itself.
#![allow(dead_code)]

use std::io::Write;
use std::process::{Command, Output, Stdio};

/// Runs `python3 ARGS` with `stdin` as its standard input.
pub fn python(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new("python3")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run python3 {args:?}: {e} (is Python 3 installed?)"));
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin)
        .expect("write to python");
    child.wait_with_output().expect("python3 output")
}

/// A process's exit status and output, for assertion messages.
pub fn describe(output: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Makes `import MODULE` work, installing PACKAGE with pip if it is missing.
pub fn ensure_python_package(module: &str, package: &str) {
    let import = format!("import {module}");
    if python(&["-c", &import], b"").status.success() {
        return;
    }
    let install = python(&["-m", "pip", "install", "--quiet", package], b"");
    assert!(
        install.status.success(),
        "the Python package `{package}` is not importable and `python3 -m pip install {package}` \
         failed; install it by hand.\n{}",
        describe(&install)
    );
    let check = python(&["-c", &import], b"");
    assert!(
        check.status.success(),
        "{package} was installed but `{import}` still fails:\n{}",
        describe(&check)
    );
}
