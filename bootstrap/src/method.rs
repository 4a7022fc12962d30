//! Connection methods as data: how to start a context's interpreter.
//!
//! A [`Method`] turns into a [`SpawnSpec`]: the argv, the environment,
//! whether the child needs a controlling terminal (only to answer a
//! password prompt), the prompt rules and the password. A spec is plain,
//! serializable data, so that an intermediate context can later run the
//! same generic spawn and handshake with it.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::first_stage::python_argv;
use crate::prompt::{exit_rules, ExitRule, PromptRules, Secret};
use crate::validate::{check_name, check_opt, InvalidOption};

/// A setter per field, for option structs that are `#[non_exhaustive]`
/// (built with `new`/`default` and these, never with a literal).
macro_rules! setters {
    ($t:ty { $($name:ident: $ty:ty),* $(,)? }) => {
        impl $t {
            $(#[doc = concat!("Sets `", stringify!($name), "`.")]
            pub fn $name(mut self, v: $ty) -> Self {
                self.$name = v;
                self
            })*
        }
    };
}

/// Options of the `local` method: a child process on this machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct LocalOptions {
    /// The interpreter to run (a path, or a name looked up on PATH).
    pub python: String,
}

impl LocalOptions {
    /// A local child running `python` (a path, or a name on PATH).
    pub fn new(python: impl Into<String>) -> Self {
        LocalOptions {
            python: python.into(),
        }
    }
}

setters!(LocalOptions { python: String });

impl Default for LocalOptions {
    fn default() -> Self {
        LocalOptions {
            python: "python3".into(),
        }
    }
}

/// What ssh does with a host key it does not know, or one that changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HostKeyCheck {
    /// Whatever ssh_config says (no option passed). With nothing there,
    /// ssh's own default `ask` cannot ask (no terminal) and refuses
    /// unknown and changed keys, as `Enforce` does. With a password
    /// (answered on a pty) ssh asks its yes/no question on that pty, and
    /// the answer is "no" (`prompt::ends_with_host_key_question`): the
    /// same outcome, with ssh_config's policy untouched.
    #[default]
    SshConfig,
    /// Only hosts already in known_hosts (`StrictHostKeyChecking=yes`).
    Enforce,
    /// Add unknown hosts, refuse changed keys (`accept-new`).
    Accept,
    /// Check nothing, remember nothing (`no`, known hosts `/dev/null`).
    Ignore,
}

impl std::str::FromStr for HostKeyCheck {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "enforce" => Ok(HostKeyCheck::Enforce),
            "accept" => Ok(HostKeyCheck::Accept),
            "ignore" => Ok(HostKeyCheck::Ignore),
            other => Err(format!("{other:?} is not enforce, accept or ignore")),
        }
    }
}

/// Options of the `ssh` method.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct SshOptions {
    pub user: Option<String>,
    pub host: String,
    pub port: Option<u16>,
    /// A private key file (`ssh -i`).
    pub identity_file: Option<String>,
    pub check_host_keys: HostKeyCheck,
    /// Extra `-o` options, each `Name=value`.
    pub ssh_options: Vec<String>,
    pub compression: bool,
    /// `ServerAliveInterval` in seconds (0: off).
    pub keepalive_interval: u32,
    /// `ServerAliveCountMax`.
    pub keepalive_count_max: u32,
    /// Answered on a pty when ssh asks; without it ssh runs in batch mode
    /// and fails at once instead of prompting.
    pub password: Option<Secret>,
    /// The remote interpreter.
    pub python: String,
    pub ssh_path: String,
}

impl SshOptions {
    pub fn new(host: impl Into<String>) -> Self {
        SshOptions {
            user: None,
            host: host.into(),
            port: None,
            identity_file: None,
            check_host_keys: HostKeyCheck::SshConfig,
            ssh_options: Vec::new(),
            compression: false,
            keepalive_interval: 0,
            keepalive_count_max: 3,
            password: None,
            python: "python3".into(),
            ssh_path: "ssh".into(),
        }
    }
}

setters!(SshOptions {
    user: Option<String>,
    port: Option<u16>,
    identity_file: Option<String>,
    check_host_keys: HostKeyCheck,
    ssh_options: Vec<String>,
    compression: bool,
    keepalive_interval: u32,
    keepalive_count_max: u32,
    password: Option<Secret>,
    python: String,
    ssh_path: String,
});

/// Options of the `sudo` method.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct SudoOptions {
    pub user: String,
    /// Answered on a pty; without it sudo runs with `-n` and fails at once
    /// if it needs one.
    pub password: Option<Secret>,
    /// `-E`: keep the caller's environment.
    pub preserve_env: bool,
    /// `-i`: run through the target user's login shell.
    pub login: bool,
    /// More sudo options, placed before `--`.
    pub extra_args: Vec<String>,
    pub python: String,
    pub sudo_path: String,
}

impl Default for SudoOptions {
    fn default() -> Self {
        SudoOptions {
            user: "root".into(),
            password: None,
            preserve_env: false,
            login: false,
            extra_args: Vec::new(),
            python: "python3".into(),
            sudo_path: "sudo".into(),
        }
    }
}

impl SudoOptions {
    /// sudo to `user`, other options at their defaults.
    pub fn new(user: impl Into<String>) -> Self {
        SudoOptions {
            user: user.into(),
            ..Default::default()
        }
    }
}

setters!(SudoOptions {
    user: String,
    password: Option<Secret>,
    preserve_env: bool,
    login: bool,
    extra_args: Vec<String>,
    python: String,
    sudo_path: String,
});

/// Options of the `su` method.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct SuOptions {
    pub user: String,
    pub password: Option<Secret>,
    pub python: String,
    pub su_path: String,
}

impl Default for SuOptions {
    fn default() -> Self {
        SuOptions {
            user: "root".into(),
            password: None,
            python: "python3".into(),
            su_path: "su".into(),
        }
    }
}

impl SuOptions {
    /// su to `user`, other options at their defaults.
    pub fn new(user: impl Into<String>) -> Self {
        SuOptions {
            user: user.into(),
            ..Default::default()
        }
    }
}

setters!(SuOptions {
    user: String,
    password: Option<Secret>,
    python: String,
    su_path: String,
});

/// Options of `docker exec` and `podman exec`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ContainerOptions {
    pub container: String,
    pub user: Option<String>,
    pub python: String,
    /// The engine's program (`docker`, `podman`, or a path).
    pub program: String,
}

impl ContainerOptions {
    pub fn new(program: &str, container: impl Into<String>) -> Self {
        ContainerOptions {
            container: container.into(),
            user: None,
            python: "python3".into(),
            program: program.into(),
        }
    }
}

setters!(ContainerOptions {
    user: Option<String>,
    python: String,
});

/// Options of `kubectl exec`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct KubectlOptions {
    pub pod: String,
    pub container: Option<String>,
    pub namespace: Option<String>,
    /// A kubeconfig context (`--context`).
    pub kube_context: Option<String>,
    pub python: String,
    pub kubectl_path: String,
}

impl KubectlOptions {
    pub fn new(pod: impl Into<String>) -> Self {
        KubectlOptions {
            pod: pod.into(),
            container: None,
            namespace: None,
            kube_context: None,
            python: "python3".into(),
            kubectl_path: "kubectl".into(),
        }
    }
}

setters!(KubectlOptions {
    container: Option<String>,
    namespace: Option<String>,
    kube_context: Option<String>,
    python: String,
    kubectl_path: String,
});

/// A connection method: turns into the spec that starts the first stage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    Local(LocalOptions),
    Ssh(SshOptions),
    Sudo(SudoOptions),
    Su(SuOptions),
    Docker(ContainerOptions),
    Podman(ContainerOptions),
    Kubectl(KubectlOptions),
}

/// Everything the generic spawn and handshake need: plain data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpawnSpec {
    /// The method's short name, for errors.
    pub method: String,
    pub argv: Vec<String>,
    /// Set in the child's environment on top of ours.
    pub env: Vec<(String, String)>,
    /// Start the child in its own session (so it never reads the user's
    /// terminal).
    pub new_session: bool,
    /// Give the child a pty as its controlling terminal, for prompts.
    /// Only when a password is configured: a pty costs time.
    pub tty: bool,
    pub prompts: PromptRules,
    /// How the child's last words classify a failure ([`exit_rules`]).
    pub exit_rules: Vec<ExitRule>,
    pub password: Option<Secret>,
    /// The first stage may say `EC1` without `EC0` when it already has the
    /// payload (a Rust agent run from its content-hash cache): then
    /// nothing is sent. Never for Python's first stage.
    #[serde(default)]
    pub payload_skippable: bool,
}

/// How the prompt we give sudo with `-p` starts. The whole prompt is
/// [`sudo_prompt`]: with a random token per connection, so that nothing
/// the target prints by chance (or on purpose, without reading sudo's
/// argv) matches it.
pub const SUDO_PROMPT_PREFIX: &str = "[econtext-sudo ";

/// The prompt for one sudo connection: matched exactly, and only on the
/// pty. No `%`: sudo expands those.
pub fn sudo_prompt(token: &str) -> String {
    format!("{SUDO_PROMPT_PREFIX}{token}] password:")
}

/// 64 random bits, hex.
fn prompt_token() -> String {
    use rand::Rng;
    format!("{:016x}", rand::thread_rng().gen::<u64>())
}

impl Method {
    /// Short name for logs, errors and default context names.
    pub fn kind(&self) -> &'static str {
        match self {
            Method::Local(_) => "local",
            Method::Ssh(_) => "ssh",
            Method::Sudo(_) => "sudo",
            Method::Su(_) => "su",
            Method::Docker(_) => "docker",
            Method::Podman(_) => "podman",
            Method::Kubectl(_) => "kubectl",
        }
    }

    /// The argv that starts context `name` with this method.
    pub fn argv(&self, name: &str) -> Result<Vec<String>, InvalidOption> {
        Ok(self.spawn_spec(name, Duration::from_secs(30))?.argv)
    }

    /// Checks every field that lands in the argv as a name (host, user,
    /// pod, container, namespace, kubeconfig context): a leading `-`,
    /// whitespace or a control character is refused, so that no field can
    /// pass for an option of ssh, sudo, su, docker or kubectl.
    pub fn validate(&self) -> Result<(), InvalidOption> {
        let kind = self.kind();
        match self {
            Method::Local(_) => Ok(()),
            Method::Ssh(o) => {
                check_name(kind, "host", &o.host)?;
                check_opt(kind, "user", &o.user)
            }
            Method::Sudo(SudoOptions { user, .. }) | Method::Su(SuOptions { user, .. }) => {
                check_name(kind, "user", user)
            }
            Method::Docker(o) | Method::Podman(o) => {
                check_name(kind, "container", &o.container)?;
                check_opt(kind, "user", &o.user)
            }
            Method::Kubectl(o) => {
                check_name(kind, "pod", &o.pod)?;
                check_opt(kind, "container", &o.container)?;
                check_opt(kind, "namespace", &o.namespace)?;
                check_opt(kind, "context", &o.kube_context)
            }
        }
    }

    /// The interpreter the method starts on the target (`auto`: the
    /// first stage's discovery).
    pub fn python(&self) -> &str {
        match self {
            Method::Local(o) => &o.python,
            Method::Ssh(o) => &o.python,
            Method::Sudo(o) => &o.python,
            Method::Su(o) => &o.python,
            Method::Docker(o) | Method::Podman(o) => &o.python,
            Method::Kubectl(o) => &o.python,
        }
    }

    /// The password this method answers prompts with, if any.
    pub fn password(&self) -> Option<&Secret> {
        match self {
            Method::Ssh(o) => o.password.as_ref(),
            Method::Sudo(o) => o.password.as_ref(),
            Method::Su(o) => o.password.as_ref(),
            _ => None,
        }
    }

    /// Everything needed to start context `name`; `timeout` is the
    /// connect timeout (enforced by the spawner over the whole handshake;
    /// ssh's own `ConnectTimeout` is left to ssh_config). Fails,
    /// building nothing, when a field does not pass [`Method::validate`].
    pub fn spawn_spec(&self, name: &str, timeout: Duration) -> Result<SpawnSpec, InvalidOption> {
        self.spawn_spec_with(name, timeout, &python_argv)
    }

    /// Like [`Method::spawn_spec`], with `first(python, name)` as the
    /// program the method starts on the target instead of the Python first
    /// stage (the Rust agent's `sh` first stage, econtext-agent).
    pub fn spawn_spec_with(
        &self,
        name: &str,
        // The spawner enforces it; no method's argv carries it.
        _timeout: Duration,
        first: &dyn Fn(&str, &str) -> Vec<String>,
    ) -> Result<SpawnSpec, InvalidOption> {
        self.validate()?;
        let password = self.password().cloned();
        let mut spec = SpawnSpec {
            method: self.kind().to_string(),
            argv: Vec::new(),
            env: Vec::new(),
            new_session: !matches!(self, Method::Local(_)),
            tty: password.is_some(),
            prompts: PromptRules::default(),
            exit_rules: exit_rules(self.kind()),
            password,
            payload_skippable: false,
        };
        spec.argv = match self {
            Method::Local(o) => first(&o.python, name),
            // The caller's environment reaches ssh as it is: no
            // SSH_ASKPASS_REQUIRE of ours. With a password ssh has our pty
            // and asks there; without one it has no terminal, and asks an
            // askpass program only where the user's environment names one
            // (DISPLAY and SSH_ASKPASS, as plain ssh would).
            Method::Ssh(o) => ssh_argv(o, name, first),
            Method::Sudo(o) => {
                let prompt = sudo_prompt(&prompt_token());
                let argv = sudo_argv(o, name, &prompt, first);
                spec.prompts = PromptRules::exact(prompt);
                argv
            }
            Method::Su(o) => {
                let cmd = format!("exec {}", shell_join(&first(&o.python, name)));
                vec![
                    o.su_path.clone(),
                    "-c".into(),
                    cmd,
                    "--".into(),
                    o.user.clone(),
                ]
            }
            Method::Docker(o) | Method::Podman(o) => {
                let mut a = vec![o.program.clone(), "exec".into(), "-i".into()];
                if let Some(u) = &o.user {
                    a.extend(["-u".into(), u.clone()]);
                }
                a.push("--".into());
                a.push(o.container.clone());
                a.extend(first(&o.python, name));
                a
            }
            Method::Kubectl(o) => {
                let mut a = vec![o.kubectl_path.clone()];
                if let Some(c) = &o.kube_context {
                    a.push(format!("--context={c}"));
                }
                if let Some(n) = &o.namespace {
                    a.push(format!("--namespace={n}"));
                }
                a.extend(["exec".into(), "-i".into()]);
                if let Some(c) = &o.container {
                    a.push(format!("--container={c}"));
                }
                a.push(o.pod.clone());
                a.push("--".into());
                a.extend(first(&o.python, name));
                a
            }
        };
        Ok(spec)
    }
}

fn ssh_argv(o: &SshOptions, name: &str, first: &dyn Fn(&str, &str) -> Vec<String>) -> Vec<String> {
    let mut a = vec![o.ssh_path.clone()];
    let mut opt = |s: String| {
        a.push("-o".into());
        a.push(s);
    };
    // The caller's own options first: ssh keeps the first value it gets
    // for an option, so an inventory's `StrictHostKeyChecking=no` wins
    // over anything below.
    for s in &o.ssh_options {
        opt(s.clone());
    }
    // Nothing else unless asked: a `-o` on the command line beats
    // ssh_config, and what ~/.ssh/config or /etc/ssh/ssh_config set for
    // the host (Port, User, IdentityFile, StrictHostKeyChecking,
    // UserKnownHostsFile, ConnectTimeout, LogLevel, BatchMode...) must
    // stand. No BatchMode either: without a password ssh runs with no
    // terminal (its own session), so any question it would ask (a
    // password, a passphrase, an unknown host key under the default
    // `ask`) gets "no" at once, unless the user's environment names an
    // askpass program. The connect deadline is ours (the whole
    // handshake, not just the TCP connect).
    if o.password.is_some() {
        // We were given a password: ssh must ask for it (on our pty).
        opt("BatchMode=no".into());
    }
    // SshConfig passes nothing, with a password too: on our pty, `ask`
    // asks its yes/no question there and gets "no" (connect.rs).
    match o.check_host_keys {
        HostKeyCheck::SshConfig => {}
        HostKeyCheck::Enforce => opt("StrictHostKeyChecking=yes".into()),
        HostKeyCheck::Accept => {
            opt("StrictHostKeyChecking=accept-new".into());
            // Without it every new host logs "Permanently added".
            opt("LogLevel=ERROR".into());
        }
        HostKeyCheck::Ignore => {
            opt("StrictHostKeyChecking=no".into());
            opt("UserKnownHostsFile=/dev/null".into());
            opt("GlobalKnownHostsFile=/dev/null".into());
            // Else every connection logs "Permanently added".
            opt("LogLevel=ERROR".into());
        }
    }
    if o.compression {
        opt("Compression=yes".into());
    }
    if o.keepalive_interval > 0 {
        opt(format!("ServerAliveInterval={}", o.keepalive_interval));
        opt(format!("ServerAliveCountMax={}", o.keepalive_count_max));
    }
    if let Some(i) = &o.identity_file {
        a.extend(["-i".into(), i.clone()]);
    }
    if let Some(u) = &o.user {
        a.extend(["-l".into(), u.clone()]);
    }
    if let Some(p) = o.port {
        a.extend(["-p".into(), p.to_string()]);
    }
    // No remote pty: the data is binary and flows on stdin/stdout.
    a.push("-T".into());
    a.push("--".into());
    a.push(o.host.clone());
    // ssh hands the command line to the remote user's shell.
    a.push(format!("exec {}", shell_join(&first(&o.python, name))));
    a
}

fn sudo_argv(
    o: &SudoOptions,
    name: &str,
    prompt: &str,
    first: &dyn Fn(&str, &str) -> Vec<String>,
) -> Vec<String> {
    let mut a = vec![o.sudo_path.clone()];
    if o.password.is_some() {
        a.extend(["-p".into(), prompt.into()]);
    } else {
        // Non-interactive: "a password is required" at once, no prompt.
        a.push("-n".into());
    }
    a.extend(["-u".into(), o.user.clone()]);
    if o.preserve_env {
        a.push("-E".into());
    }
    if o.login {
        a.push("-i".into());
    }
    a.extend(o.extra_args.iter().cloned());
    a.push("--".into());
    // sudo executes argv directly (and escapes it itself under -i).
    a.extend(first(&o.python, name));
    a
}

/// Quotes `s` for a POSIX shell: unchanged when it is made only of safe
/// characters, else in single quotes.
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "@%+=:,./-_".contains(c))
    {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Joins an argv into one shell command line.
pub fn shell_join(argv: &[String]) -> String {
    argv.iter()
        .map(|a| shell_quote(a))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(cmd: &str) -> Vec<String> {
        // Let a real shell split the line and print each word.
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                "set -- {cmd}; for a; do printf '%s\\0' \"$a\"; done"
            ))
            .output()
            .unwrap();
        String::from_utf8(out.stdout)
            .unwrap()
            .split_terminator('\0')
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn shell_join_round_trips_through_sh() {
        let argv: Vec<String> = [
            "python3",
            "-c",
            "a='b'; print(\"x y\")",
            "",
            "$HOME",
            "it's",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(sh(&shell_join(&argv)), argv);
        let first = python_argv("/usr/bin/python3", "ssh.1");
        assert_eq!(sh(&shell_join(&first)), first);
    }

    #[test]
    fn ssh_argv_passes_only_what_was_asked_for() {
        let mut o = SshOptions::new("example.org");
        let spec = Method::Ssh(o.clone())
            .spawn_spec("ssh.1", Duration::from_millis(2500))
            .unwrap();
        // Nothing asked: no -o at all, ssh_config decides everything.
        assert!(!spec.argv.iter().any(|a| a == "-o"), "{:?}", spec.argv);
        assert!(spec
            .argv
            .join(" ")
            .starts_with("ssh -T -- example.org exec "));
        // The caller's environment as it is (no SSH_ASKPASS_REQUIRE).
        assert!(spec.env.is_empty(), "{:?}", spec.env);
        assert!(!spec.tty && spec.new_session && spec.password.is_none());

        o.user = Some("bob".into());
        o.port = Some(2222);
        o.identity_file = Some("/k".into());
        o.check_host_keys = HostKeyCheck::Ignore;
        let spec = Method::Ssh(o.clone())
            .spawn_spec("ssh.1", Duration::from_millis(2500))
            .unwrap();
        let a = spec.argv.join(" ");
        assert!(a.starts_with(
            "ssh -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null \
             -o GlobalKnownHostsFile=/dev/null -o LogLevel=ERROR "
        ));
        assert!(
            !a.contains("BatchMode") && !a.contains("ConnectTimeout"),
            "{a}"
        );
        assert!(
            a.contains("-i /k -l bob -p 2222 -T -- example.org exec /usr/bin/python3")
                || a.contains("-i /k -l bob -p 2222 -T -- example.org exec python3 -S -c ")
        );

        o.password = Some(Secret::new("hunter2"));
        o.check_host_keys = HostKeyCheck::Accept;
        let spec = Method::Ssh(o.clone())
            .spawn_spec("ssh.1", Duration::from_secs(30))
            .unwrap();
        assert!(spec.tty);
        assert!(spec.argv.contains(&"BatchMode=no".to_string()));
        assert!(spec
            .argv
            .contains(&"StrictHostKeyChecking=accept-new".to_string()));
        assert!(!spec.argv.iter().any(|a| a.contains("hunter2")));
        assert!(!format!("{spec:?}").contains("hunter2"));

        // A password and no policy: ssh_config decides (ssh's question on
        // our pty gets "no"); nothing on the command line, nothing in the
        // environment.
        o.check_host_keys = HostKeyCheck::SshConfig;
        let spec = Method::Ssh(o.clone())
            .spawn_spec("ssh.1", Duration::from_secs(30))
            .unwrap();
        assert!(
            !spec
                .argv
                .iter()
                .any(|a| a.contains("StrictHostKeyChecking")),
            "{:?}",
            spec.argv
        );
        assert!(spec.env.is_empty(), "{:?}", spec.env);
    }

    #[test]
    fn sudo_uses_n_without_password_and_exact_prompt_with_one() {
        let o = SudoOptions {
            user: "web".into(),
            login: true,
            ..Default::default()
        };
        let spec = Method::Sudo(o.clone())
            .spawn_spec("sudo.1", Duration::from_secs(5))
            .unwrap();
        assert_eq!(&spec.argv[..6], ["sudo", "-n", "-u", "web", "-i", "--"]);
        assert_eq!(spec.argv[7..9], ["-S", "-c"]);
        assert!(!spec.tty);
        let spec = Method::Sudo(SudoOptions {
            password: Some(Secret::new("pw")),
            ..o
        })
        .spawn_spec("sudo.1", Duration::from_secs(5))
        .unwrap();
        assert_eq!(&spec.argv[..2], ["sudo", "-p"]);
        let prompt = &spec.argv[2];
        assert!(prompt.starts_with(SUDO_PROMPT_PREFIX) && prompt.ends_with("] password:"));
        assert!(spec.tty);
        assert_eq!(spec.prompts.custom.as_deref(), Some(prompt.as_str()));
        // A fresh token for every connection.
        let again = Method::Sudo(SudoOptions {
            password: Some(Secret::new("pw")),
            ..Default::default()
        })
        .spawn_spec("sudo.2", Duration::from_secs(5))
        .unwrap();
        assert_ne!(again.argv[2], *prompt);
    }

    #[test]
    fn su_takes_one_quoted_command_string() {
        let spec = Method::Su(SuOptions::default())
            .spawn_spec("su.1", Duration::from_secs(5))
            .unwrap();
        assert_eq!(spec.argv[..2], ["su", "-c"]);
        assert_eq!(spec.argv[3..], ["--", "root"]);
        let words = sh(spec.argv[2].strip_prefix("exec ").unwrap());
        assert_eq!(words, python_argv("python3", "su.1"));
    }

    #[test]
    fn container_argvs() {
        let mut d = ContainerOptions::new("docker", "web");
        d.user = Some("app".into());
        let a = Method::Docker(d).argv("docker.1").unwrap();
        assert_eq!(a[..7], ["docker", "exec", "-i", "-u", "app", "--", "web"]);
        assert_eq!(a[7..10], ["python3", "-S", "-c"]);
        let a = Method::Podman(ContainerOptions::new("/usr/bin/podman", "db"))
            .argv("p")
            .unwrap();
        assert_eq!(a[..5], ["/usr/bin/podman", "exec", "-i", "--", "db"]);
        let mut k = KubectlOptions::new("pod-1");
        k.namespace = Some("ns".into());
        k.container = Some("main".into());
        let a = Method::Kubectl(k).argv("k").unwrap();
        assert_eq!(
            a[..7],
            [
                "kubectl",
                "--namespace=ns",
                "exec",
                "-i",
                "--container=main",
                "pod-1",
                "--"
            ]
        );
    }

    #[test]
    fn option_injection_in_any_argv_field_is_a_typed_error() {
        let bad = "--kubeconfig=x";
        let mut cases = vec![
            Method::Kubectl(KubectlOptions::new(bad)),
            Method::Ssh(SshOptions::new("-oProxyCommand=touch /tmp/x")),
            Method::Sudo(SudoOptions {
                user: "-s".into(),
                ..Default::default()
            }),
            Method::Su(SuOptions {
                user: "root\n".into(),
                ..Default::default()
            }),
            Method::Docker(ContainerOptions::new("docker", "-v")),
        ];
        let mut k = KubectlOptions::new("pod");
        k.kube_context = Some("a b".into());
        cases.push(Method::Kubectl(k.clone()));
        k.kube_context = None;
        k.namespace = Some("-n".into());
        cases.push(Method::Kubectl(k.clone()));
        k.namespace = None;
        k.container = Some("\x1b[2J".into());
        cases.push(Method::Kubectl(k));
        let mut s = SshOptions::new("h");
        s.user = Some("-F/tmp/cfg".into());
        cases.push(Method::Ssh(s));
        let mut d = ContainerOptions::new("podman", "c");
        d.user = Some("-0".into());
        cases.push(Method::Podman(d));
        for m in cases {
            assert!(m.spawn_spec("x", Duration::from_secs(1)).is_err(), "{m:?}");
        }
    }

    #[test]
    fn methods_serialize_without_losing_anything() {
        let mut o = SshOptions::new("h");
        o.password = Some(Secret::new("pw"));
        let m = Method::Ssh(o);
        let json = serde_json::to_string(&m).unwrap();
        assert_eq!(serde_json::from_str::<Method>(&json).unwrap(), m);
    }
}
