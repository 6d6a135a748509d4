//! A test's host in a process of its own: the test binary itself, run with one test
//! (`--exact NAME`), driven line by line. The parent writes a request; the child prints its
//! answer on a line of its own after `HOST ` (the test harness may print before it), and
//! `HOST ready` once it serves.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

/// A child host; killed when dropped.
pub struct ChildHost {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl ChildHost {
    /// Runs the test `test` of this binary with `env`, and waits for its `ready`.
    pub fn start<K, V>(test: &str, env: impl IntoIterator<Item = (K, V)>) -> ChildHost
    where
        K: AsRef<OsStr>,
        V: AsRef<OsStr>,
    {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", test, "--nocapture", "--test-threads", "1"])
            .envs(env)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let mut host = ChildHost {
            child,
            stdin,
            stdout,
        };
        assert_eq!(host.answer(), "ready");
        host
    }

    /// The child's next answer.
    pub fn answer(&mut self) -> String {
        loop {
            let mut line = String::new();
            if self.stdout.read_line(&mut line).unwrap() == 0 {
                panic!("the host died: {:?}", self.child.wait());
            }
            if let Some((_, a)) = line.trim().split_once("HOST ") {
                return a.to_string();
            }
        }
    }

    /// Sends `what`, returns the answer.
    pub fn ask(&mut self, what: &str) -> String {
        writeln!(self.stdin, "{what}").unwrap();
        self.answer()
    }

    /// Kills the child (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ChildHost {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "quit");
        self.kill();
    }
}
