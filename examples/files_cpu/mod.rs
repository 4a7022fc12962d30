//! CPU seconds per process and thread, from /proc, for `files_bench
//! --cpu`: what each side of a transfer costs. Unlike wall time, these
//! barely change with the load of a shared machine: on 2 cores where ssh
//! and sshd already take most of the CPU, every extra CPU second of ours
//! is wall time.

use std::collections::BTreeMap;

/// Clock ticks per second of /proc's times (USER_HZ, 100 on Linux).
const HZ: f64 = 100.0;

/// utime, stime, cutime, cstime (seconds) of a process or a thread.
#[derive(Clone, Copy, Default, Debug)]
pub struct Times {
    pub user: f64,
    pub sys: f64,
    /// Children waited for (and theirs, recursively).
    pub reaped: f64,
}

impl Times {
    pub fn own(&self) -> f64 {
        self.user + self.sys
    }
}

fn fields(path: &str) -> Option<Vec<String>> {
    let s = std::fs::read_to_string(path).ok()?;
    // comm may hold spaces and parentheses: fields start after the last ')'.
    let rest = &s[s.rfind(')')? + 2..];
    Some(rest.split_whitespace().map(str::to_string).collect())
}

fn times_of(path: &str) -> Option<Times> {
    let f = fields(path)?;
    let n = |i: usize| f.get(i)?.parse::<f64>().ok().map(|v| v / HZ);
    // After the comm: state(0) ppid(1) ... utime(11) stime(12) cutime(13) cstime(14).
    Some(Times {
        user: n(11)?,
        sys: n(12)?,
        reaped: n(13)? + n(14)?,
    })
}

pub fn times(pid: u32) -> Times {
    times_of(&format!("/proc/{pid}/stat")).unwrap_or_default()
}

pub fn ppid(pid: u32) -> Option<u32> {
    fields(&format!("/proc/{pid}/stat"))?.get(1)?.parse().ok()
}

fn comm(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// Live children of `pid` named `name`.
pub fn children_named(pid: u32, name: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(c) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if ppid(c) == Some(pid) && comm(&format!("/proc/{c}/comm")) == name {
            out.push(c);
        }
    }
    out
}

/// `pid`'s threads: "name/tid" -> own CPU seconds.
pub fn threads(pid: u32) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let tid = e.file_name().to_string_lossy().into_owned();
        let base = format!("/proc/{pid}/task/{tid}");
        if let Some(t) = times_of(&format!("{base}/stat")) {
            out.insert(format!("{}/{tid}", comm(&format!("{base}/comm"))), t.own());
        }
    }
    out
}

/// The processes from `pid` up to (not including) `stop`: a child and
/// the sshd session processes above it.
pub fn chain_to(pid: u32, stop: u32) -> Vec<u32> {
    let mut out = vec![pid];
    let mut p = pid;
    while let Some(up) = ppid(p) {
        if up == stop || up <= 1 || out.len() > 8 {
            break;
        }
        out.push(up);
        p = up;
    }
    out
}

/// A labelled snapshot of several processes, with their threads.
pub struct Snapshot {
    procs: Vec<(String, u32, Times, BTreeMap<String, f64>)>,
}

impl Snapshot {
    pub fn take(procs: &[(String, u32)]) -> Snapshot {
        Snapshot {
            procs: procs
                .iter()
                .map(|(l, p)| (l.clone(), *p, times(*p), threads(*p)))
                .collect(),
        }
    }

    /// Per process (and thread) CPU seconds spent since `before`.
    pub fn since(&self, before: &Snapshot) -> String {
        let mut out = String::new();
        let mut total = 0.0;
        for ((label, pid, t, th), (_, _, t0, th0)) in self.procs.iter().zip(&before.procs) {
            let (u, s) = (t.user - t0.user, t.sys - t0.sys);
            total += u + s;
            out += &format!(
                "  {label} (pid {pid}): {:.2} s (user {u:.2}, sys {s:.2})",
                u + s
            );
            let busy: Vec<String> = th
                .iter()
                .map(|(k, v)| (k, v - th0.get(k).copied().unwrap_or(0.0)))
                .filter(|(_, d)| *d >= 0.02)
                .map(|(k, d)| format!("{k} {d:.2}"))
                .collect();
            if busy.len() > 1 {
                out += &format!("; threads: {}", busy.join(", "));
            }
            out += "\n";
        }
        out + &format!("  total: {total:.2} s\n")
    }
}
