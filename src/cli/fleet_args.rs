//! The options every fleet subcommand takes (`run`, `call`, and any
//! later one): inventories, forks, deadlines, retries, limit, output.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use econtext::bootstrap::{HostKeyCheck, Secret};
use econtext::fleet::{FleetOptions, Hop, HostOptions, Inventory, PasswordSource, Target};
use econtext::target;

/// Fleet options, flattened into each subcommand (`#[command(flatten)]`).
#[derive(Args, Debug, Clone)]
pub struct FleetArgs {
    /// An Ansible inventory (INI or YAML; repeatable). With one, the first
    /// positional argument is a host pattern instead of a TARGET.
    #[arg(short = 'i', long = "inventory", value_name = "FILE")]
    pub inventory: Vec<PathBuf>,
    /// Hosts worked on at once.
    #[arg(short = 'f', long, default_value_t = 32, value_name = "N")]
    pub forks: usize,
    /// Seconds allowed to reach each host (every hop of its chain).
    #[arg(long, default_value_t = 30.0, value_name = "SECS")]
    pub connect_timeout: f64,
    /// Seconds allowed for each host's command or call (default: none).
    #[arg(long, value_name = "SECS")]
    pub timeout: Option<f64>,
    /// Start every fork's connect at once, whatever the load. By default
    /// at most 4 per CPU connect at once while the CPUs are saturated
    /// (more while they have idle time): a saturated master finishes the
    /// fleet sooner that way, and deadlines fire for the hosts' delays,
    /// not for ours.
    #[arg(long)]
    pub no_connect_pacing: bool,
    /// Connect attempts after a failed one, with jittered backoff.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub retries: u32,
    /// Further restrict the hosts to this pattern (e.g. `@failed.txt`).
    #[arg(short = 'l', long, value_name = "PATTERN")]
    pub limit: Option<String>,
    /// One JSON object per host per line on stdout.
    #[arg(long)]
    pub json: bool,
    /// Write each host's result to files in DIR.
    #[arg(long, value_name = "DIR")]
    pub output_dir: Option<PathBuf>,
    /// Write the hosts that did not succeed to FILE, one per line.
    #[arg(long, value_name = "FILE")]
    pub failed_to: Option<PathBuf>,
    /// ssh host key policy for every host.
    #[arg(long, value_name = "enforce|accept|ignore", value_parser = parse_host_keys)]
    pub check_host_keys: Option<HostKeyCheck>,
    /// Print one JSON line of counters on stderr at exit: the importer's,
    /// and this process's own CPU seconds and peak RSS
    /// (`copy`: and the bytes it wrote to its links).
    #[arg(long)]
    pub stats: bool,
    /// Print the hosts the pattern selects, one per line, and exit.
    #[arg(long)]
    pub list_hosts: bool,
    /// Ask once for the ssh password (hosts whose inventory names none).
    #[arg(short = 'k', long)]
    pub ask_pass: bool,
    /// Ask once for the become (sudo/su) password.
    #[arg(short = 'K', long)]
    pub ask_become_pass: bool,
}

fn parse_host_keys(s: &str) -> Result<HostKeyCheck, String> {
    s.parse()
}

impl FleetArgs {
    /// With an inventory: fleet mode (per-host lines, fleet exit codes).
    pub fn is_fleet(&self) -> bool {
        !self.inventory.is_empty()
    }

    /// With `--list-hosts`: prints the targets' names; true if the
    /// subcommand should exit now (0).
    pub fn listed(&self, targets: &[Target]) -> bool {
        if self.list_hosts {
            for t in targets {
                println!("{}", super::text::printable(&t.name));
            }
        }
        self.list_hosts
    }

    pub fn fleet_options(&self) -> Result<FleetOptions, String> {
        let secs = |what: &str, s: f64| {
            if s.is_finite() && s > 0.0 {
                Ok(Duration::from_secs_f64(s))
            } else {
                Err(format!("{what} must be a positive number of seconds"))
            }
        };
        if self.forks == 0 {
            return Err("--forks must be at least 1".into());
        }
        Ok(FleetOptions::default()
            .forks(self.forks)
            .connect_timeout(secs("--connect-timeout", self.connect_timeout)?)
            .call_timeout(self.timeout.map(|t| secs("--timeout", t)).transpose()?)
            .retries(self.retries)
            .pace_connects(!self.no_connect_pacing))
    }

    /// The targets TARGET or PATTERN names: one target when no inventory
    /// is given, else the pattern's hosts (narrowed by `--limit`).
    pub fn targets(&self, target_or_pattern: &str) -> Result<Vec<Target>, String> {
        if !self.is_fleet() {
            if self.limit.is_some() {
                return Err("--limit needs an inventory (-i)".into());
            }
            return single_target(target_or_pattern, self.check_host_keys).map(|t| vec![t]);
        }
        let mut inv = Inventory::new();
        for f in &self.inventory {
            inv.load(f).map_err(|e| e.to_string())?;
        }
        let mut hosts = inv.select(target_or_pattern).map_err(|e| e.to_string())?;
        if let Some(l) = &self.limit {
            let keep = inv.select(l).map_err(|e| e.to_string())?;
            hosts.retain(|h| keep.contains(h));
        }
        if hosts.is_empty() {
            return Err(format!("{target_or_pattern:?} matched no hosts"));
        }
        let mut opts = HostOptions::default();
        opts.check_host_keys = self.check_host_keys;
        if self.ask_pass {
            opts.password = PasswordSource::Prompted(prompt("SSH password: ")?);
        }
        if self.ask_become_pass {
            opts.become_password = PasswordSource::Prompted(prompt("BECOME password: ")?);
        }
        let targets = hosts
            .iter()
            .map(|h| inv.target(h, &opts).map_err(|e| e.to_string()))
            .collect::<Result<Vec<_>, _>>()?;
        // The passwords are read: no child may inherit them.
        for var in inv.password_env_vars() {
            std::env::remove_var(var);
        }
        Ok(targets)
    }
}

/// A TARGET in the CLI's hop syntax, as one fleet target named by it.
fn single_target(text: &str, keys: Option<HostKeyCheck>) -> Result<Target, String> {
    let hops = target::parse(text).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    // Every hop is parsed and validated before anything runs.
    for h in &hops {
        let o = h.options().map_err(|e| e.to_string())?;
        let mut method = o.method;
        if let (Some(k), econtext::Method::Ssh(s)) = (keys, &mut method) {
            s.check_host_keys = k;
        }
        out.push(Hop {
            method,
            name: o.name,
            rust_agent: o.agent.is_some(),
        });
    }
    // The passwords are read: no child may inherit them.
    for var in hops.iter().flat_map(|h| h.password_vars()) {
        std::env::remove_var(var);
    }
    Ok(Target::new(text, out))
}

/// Reads a password from the terminal with echo off (never argv, never
/// the environment of children).
fn prompt(label: &str) -> Result<Secret, String> {
    use std::io::{BufRead, IsTerminal, Write};
    let tty = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
        .map_err(|e| format!("cannot ask for a password (no terminal: {e})"))?;
    if !tty.is_terminal() {
        return Err("cannot ask for a password: /dev/tty is not a terminal".into());
    }
    let mut w = &tty;
    let _ = w.write_all(label.as_bytes());
    let _ = w.flush();
    let echo = EchoOff::new(&tty);
    let mut line = String::new();
    let r = std::io::BufReader::new(&tty).read_line(&mut line);
    drop(echo);
    let _ = w.write_all(b"\n");
    r.map_err(|e| format!("cannot read the password: {e}"))?;
    Ok(Secret::new(line.trim_end_matches(['\n', '\r'])))
}

/// Turns the terminal's echo off until dropped.
struct EchoOff<'a> {
    fd: std::os::fd::BorrowedFd<'a>,
    saved: Option<nix::sys::termios::Termios>,
}

impl<'a> EchoOff<'a> {
    fn new(f: &'a std::fs::File) -> EchoOff<'a> {
        use nix::sys::termios::{tcgetattr, tcsetattr, LocalFlags, SetArg};
        use std::os::fd::AsFd;
        let fd = f.as_fd();
        let saved = tcgetattr(fd).ok();
        if let Some(t) = &saved {
            let mut quiet = t.clone();
            quiet.local_flags.remove(LocalFlags::ECHO);
            let _ = tcsetattr(fd, SetArg::TCSANOW, &quiet);
        }
        EchoOff { fd, saved }
    }
}

impl Drop for EchoOff<'_> {
    fn drop(&mut self) {
        if let Some(t) = &self.saved {
            let _ = nix::sys::termios::tcsetattr(self.fd, nix::sys::termios::SetArg::TCSANOW, t);
        }
    }
}
