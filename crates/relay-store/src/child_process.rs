//! Test support: crash tests run their writing half in a child process (this
//! test binary started again on one test) so it can be killed for real.

use std::io::BufRead;
use std::process::{Command, Stdio};

/// Runs the test `test` of this binary in a child with `envs`, waits until
/// it prints `READY`, and kills it (SIGKILL).
pub(crate) fn kill_child_when_ready(test: &str, envs: &[(&str, &std::ffi::OsStr)]) {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args(["--exact", test, "--nocapture", "--test-threads", "1"])
        .stdout(Stdio::piped());
    for (key, value) in envs {
        command.env(key, value);
    }
    let mut child = command.spawn().unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    loop {
        line.clear();
        let n = out.read_line(&mut line).unwrap();
        assert!(n > 0, "child {test} exited before it was ready");
        if line.contains("READY") {
            break;
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
}
