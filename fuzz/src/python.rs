//! The `python` target: the Python core's codec, in a Python child.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

/// A Python process running `fuzz/python/unpack_fuzz.py`.
pub struct PythonCodec {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl PythonCodec {
    pub fn start(python: &str) -> std::io::Result<PythonCodec> {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/unpack_fuzz.py");
        let mut child = Command::new(python)
            .arg(script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        let stdin = child.stdin.take().expect("piped");
        let stdout = BufReader::new(child.stdout.take().expect("piped"));
        Ok(PythonCodec {
            child,
            stdin,
            stdout,
        })
    }

    /// Runs a batch; `Err` carries the finding (input and traceback).
    pub fn batch(&mut self, inputs: &[Vec<u8>]) -> Result<(), String> {
        let mut msg = Vec::with_capacity(inputs.iter().map(|i| i.len() + 4).sum::<usize>() + 4);
        msg.extend_from_slice(&(inputs.len() as u32).to_be_bytes());
        for i in inputs {
            msg.extend_from_slice(&(i.len() as u32).to_be_bytes());
            msg.extend_from_slice(i);
        }
        let mut line = String::new();
        let io = self
            .stdin
            .write_all(&msg)
            .and_then(|()| self.stdin.flush())
            .and_then(|()| self.stdout.read_line(&mut line));
        if io.is_ok() && line.starts_with("ok ") {
            return Ok(());
        }
        let mut rest = String::new();
        let _ = std::io::Read::read_to_string(&mut self.stdout, &mut rest);
        let status = self.child.wait().map(|s| s.to_string()).unwrap_or_default();
        Err(format!("python child ({status}; {io:?}): {line}{rest}"))
    }
}

impl Drop for PythonCodec {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
