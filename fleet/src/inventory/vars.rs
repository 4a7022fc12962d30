//! A host's variables as a [`Target`]: `ansible_connection` (ssh, local),
//! `ansible_host`, `ansible_port`, `ansible_user`,
//! `ansible_ssh_private_key_file`, `ansible_ssh_common_args`,
//! `ansible_ssh_extra_args`, `ansible_python_interpreter`, `ansible_become`,
//! `ansible_become_user`, `ansible_become_method` (sudo, su),
//! `ansible_password` and `ansible_become_password` (only as an
//! environment variable's name), and `econtext_via` (the inventory hosts
//! this one is reached through).

use econtext_bootstrap::first_stage::DISCOVER_PYTHON;
use econtext_bootstrap::{
    HostKeyCheck, LocalOptions, Method, Secret, SshOptions, SuOptions, SudoOptions,
};

use super::ini::split_words;
use super::{Inventory, InventoryError, Vars};
use crate::{Hop, Target};

/// Where a password comes from when the inventory does not name one.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub enum PasswordSource {
    #[default]
    None,
    /// Asked once on the terminal (`--ask-pass`), used for every host.
    Prompted(Secret),
}

/// What the command line adds to every host.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct HostOptions {
    /// Overrides ssh's host key policy (default: enforce).
    pub check_host_keys: Option<HostKeyCheck>,
    pub password: PasswordSource,
    pub become_password: PasswordSource,
}

const PASSWORD_VARS: &[&str] = &[
    "ansible_password",
    "ansible_ssh_pass",
    "ansible_become_password",
    "ansible_become_pass",
];

const KNOWN: &[&str] = &[
    "ansible_host",
    "ansible_port",
    "ansible_user",
    "ansible_ssh_private_key_file",
    "ansible_python_interpreter",
    "ansible_ssh_common_args",
    "ansible_ssh_extra_args",
    "ansible_connection",
    "ansible_become",
    "ansible_become_user",
    "ansible_become_method",
    "ansible_password",
    "ansible_ssh_pass",
    "ansible_become_password",
    "ansible_become_pass",
    "econtext_via",
];

impl Inventory {
    /// Every environment variable a password variable names (for the
    /// caller to remove from its environment once the targets are made).
    pub fn password_env_vars(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .hosts()
            .iter()
            .flat_map(|h| self.host_vars(h).into_iter())
            .filter(|(k, _)| PASSWORD_VARS.contains(&k.as_str()))
            .filter_map(|(_, v)| env_name(&v))
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// The target that reaches `host`, its `econtext_via` hosts first.
    pub fn target(&self, host: &str, opts: &HostOptions) -> Result<Target, InventoryError> {
        let vars = self.host_vars(host);
        let mut hops = Vec::new();
        if let Some(via) = vars.get("econtext_via").filter(|v| !v.trim().is_empty()) {
            let mut seen = vec![host.to_string()];
            for (i, v) in via.split(',').map(str::trim).enumerate() {
                if !self.contains_host(v) {
                    return Err(InventoryError(format!(
                        "{host}: econtext_via names {v:?}, which is not in the inventory"
                    )));
                }
                if i == 0 {
                    hops.extend(self.via_chain(v, opts, &mut seen)?);
                } else {
                    hops.extend(own_hops(v, &self.host_vars(v), opts)?);
                }
            }
        }
        hops.extend(own_hops(host, &vars, opts)?);
        Ok(Target::new(host, hops))
    }

    fn via_chain(
        &self,
        host: &str,
        opts: &HostOptions,
        seen: &mut Vec<String>,
    ) -> Result<Vec<Hop>, InventoryError> {
        if seen.iter().any(|s| s == host) || seen.len() > 16 {
            return Err(InventoryError(format!(
                "econtext_via loops: {} -> {host}",
                seen.join(" -> ")
            )));
        }
        seen.push(host.to_string());
        let vars = self.host_vars(host);
        let mut hops = match vars.get("econtext_via").filter(|v| !v.trim().is_empty()) {
            Some(v) => self.via_chain(v.split(',').next().unwrap_or("").trim(), opts, seen)?,
            None => Vec::new(),
        };
        hops.extend(own_hops(host, &vars, opts)?);
        Ok(hops)
    }
}

/// The host's own hops (ssh or local, then become). Without
/// `ansible_python_interpreter` the first stage discovers one.
fn own_hops(host: &str, vars: &Vars, opts: &HostOptions) -> Result<Vec<Hop>, InventoryError> {
    let err = |m: String| InventoryError(format!("{host}: {m}"));
    for k in vars.keys() {
        if k.starts_with("ansible_") && !KNOWN.contains(&k.as_str()) && !ignorable(k) {
            return Err(err(format!("variable {k} is not supported")));
        }
    }
    let get = |k: &str| vars.get(k).map(String::as_str).filter(|v| !v.is_empty());
    let python = match get("ansible_python_interpreter") {
        Some(p) if !p.starts_with("auto") => p.to_string(),
        _ => DISCOVER_PYTHON.to_string(),
    };
    let mut hops = Vec::new();
    match get("ansible_connection").unwrap_or("ssh") {
        "ssh" | "smart" | "paramiko" => {
            let mut o = SshOptions::new(get("ansible_host").unwrap_or(host));
            o.python = python.clone();
            if let Some(p) = get("ansible_port") {
                o.port = Some(
                    p.parse()
                        .ok()
                        .filter(|&n: &u16| n > 0)
                        .ok_or_else(|| err(format!("bad ansible_port {p:?}")))?,
                );
            }
            o.user = get("ansible_user").map(str::to_string);
            o.identity_file = get("ansible_ssh_private_key_file").map(str::to_string);
            if let Some(c) = opts.check_host_keys {
                o.check_host_keys = c;
            }
            for k in ["ansible_ssh_common_args", "ansible_ssh_extra_args"] {
                if let Some(a) = get(k) {
                    ssh_args(&mut o, a).map_err(|e| err(format!("{k}: {e}")))?;
                }
            }
            o.password = password(
                vars,
                &["ansible_password", "ansible_ssh_pass"],
                &opts.password,
            )
            .map_err(err)?;
            hops.push(Hop::named(Method::Ssh(o), host));
        }
        "local" => hops.push(Hop::named(
            Method::Local(LocalOptions::new(python.clone())),
            host,
        )),
        other => {
            return Err(err(format!(
                "ansible_connection {other:?} is not supported (ssh, local)"
            )))
        }
    }
    if truthy(get("ansible_become").unwrap_or("false")).map_err(err)? {
        let user = get("ansible_become_user").unwrap_or("root").to_string();
        let pw = password(
            vars,
            &["ansible_become_password", "ansible_become_pass"],
            &opts.become_password,
        )
        .map_err(err)?;
        let method = match get("ansible_become_method").unwrap_or("sudo") {
            "sudo" => Method::Sudo(
                SudoOptions::default()
                    .user(user)
                    .password(pw)
                    .python(python.clone()),
            ),
            "su" => Method::Su(
                SuOptions::default()
                    .user(user)
                    .password(pw)
                    .python(python.clone()),
            ),
            other => {
                return Err(err(format!(
                    "ansible_become_method {other:?} is not supported (sudo, su)"
                )))
            }
        };
        let kind = method.kind();
        hops.push(Hop::named(method, format!("{host}.{kind}")));
    }
    // Every field that lands in an argv: the library's own check.
    for h in &hops {
        h.method.validate().map_err(|e| err(e.to_string()))?;
    }
    Ok(hops)
}

/// Variables that change nothing here (Ansible's own tuning knobs).
fn ignorable(k: &str) -> bool {
    matches!(
        k,
        "ansible_ssh_pipelining"
            | "ansible_pipelining"
            | "ansible_shell_type"
            | "ansible_become_flags"
    )
}

fn truthy(v: &str) -> Result<bool, String> {
    match v.to_ascii_lowercase().as_str() {
        "1" | "yes" | "true" | "on" | "y" => Ok(true),
        "0" | "no" | "false" | "off" | "n" => Ok(false),
        _ => Err(format!("{v:?} is not a boolean")),
    }
}

/// A password variable names an environment variable, as
/// `{{ lookup('env', 'NAME') }}` (Ansible's form) or `env:NAME`; a literal
/// password is refused (it would sit in a file and in `ps`-visible places).
fn password(
    vars: &Vars,
    keys: &[&str],
    fallback: &PasswordSource,
) -> Result<Option<Secret>, String> {
    let Some((k, v)) = keys.iter().find_map(|k| vars.get(*k).map(|v| (*k, v))) else {
        return Ok(match fallback {
            PasswordSource::Prompted(s) => Some(s.clone()),
            PasswordSource::None => None,
        });
    };
    let name = env_name(v).ok_or_else(|| {
        format!("{k} must name an environment variable ({{{{ lookup('env', 'NAME') }}}} or env:NAME), never the password itself; or use the prompt")
    })?;
    std::env::var(&name)
        .map(|s| Some(Secret::new(s)))
        .map_err(|_| format!("{k}: environment variable {name} is not set"))
}

fn env_name(v: &str) -> Option<String> {
    let v = v.trim();
    let name = if let Some(n) = v.strip_prefix("env:") {
        n.to_string()
    } else {
        let inner = v.strip_prefix("{{")?.strip_suffix("}}")?.trim();
        let args = inner.strip_prefix("lookup(")?.strip_suffix(')')?;
        let (kind, name) = args.split_once(',')?;
        if kind.trim().trim_matches(['\'', '"']) != "env" {
            return None;
        }
        name.trim().trim_matches(['\'', '"']).to_string()
    };
    (!name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
        .then_some(name)
}

/// `-o Name=value`, `-oName=value`, `-J HOST` and `-C` from Ansible's ssh
/// argument variables; anything else would bypass our own ssh options.
fn ssh_args(o: &mut SshOptions, text: &str) -> Result<(), String> {
    let words = split_words(text)?;
    let mut it = words.iter();
    while let Some(w) = it.next() {
        match w.as_str() {
            "-o" => o
                .ssh_options
                .push(it.next().ok_or("-o needs a value")?.clone()),
            "-J" => o
                .ssh_options
                .push(format!("ProxyJump={}", it.next().ok_or("-J needs a host")?)),
            "-C" => o.compression = true,
            s if s.starts_with("-o") && s.len() > 2 => o.ssh_options.push(s[2..].to_string()),
            s if s.starts_with("-J") && s.len() > 2 => {
                o.ssh_options.push(format!("ProxyJump={}", &s[2..]))
            }
            other => {
                return Err(format!(
                    "{other:?} is not supported (use -o Name=value, -J HOST or -C)"
                ))
            }
        }
    }
    for opt in &o.ssh_options {
        if !opt.contains('=') || opt.starts_with('-') {
            return Err(format!("{opt:?} is not Name=value"));
        }
    }
    Ok(())
}
