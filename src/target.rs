//! The CLI's TARGET syntax: hops joined by commas, each
//! `METHOD[:SPEC][?key=value&...]`, e.g. `local?python=python2.7&name=web`.

use econtext_bootstrap::{
    ContainerOptions, KubectlOptions, LocalOptions, Method, Secret, SshOptions, SuOptions,
    SudoOptions,
};

use crate::ConnectOptions;

/// One parsed hop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hop {
    pub method: String,
    pub spec: Option<String>,
    pub params: Vec<(String, String)>,
}

/// A TARGET that does not parse, with the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad target {target:?}: {reason}")]
pub struct TargetError {
    pub target: String,
    pub reason: String,
}

/// Splits a TARGET into hops.
pub fn parse(target: &str) -> Result<Vec<Hop>, TargetError> {
    let err = |reason: String| TargetError {
        target: target.to_string(),
        reason,
    };
    if target.trim().is_empty() {
        return Err(err("empty target".into()));
    }
    // Commas separate hops, except inside a `?query` (where values may not
    // contain commas anyway; ssh options use their own key).
    target
        .split(',')
        .map(|hop| {
            let (head, query) = match hop.split_once('?') {
                Some((h, q)) => (h, Some(q)),
                None => (hop, None),
            };
            let (method, spec) = match head.split_once(':') {
                Some((m, s)) => (m, Some(s.to_string())),
                None => (head, None),
            };
            if method.is_empty() {
                return Err(err(format!("hop {hop:?} has no method")));
            }
            let mut params = Vec::new();
            for kv in query.unwrap_or("").split('&').filter(|s| !s.is_empty()) {
                let (k, v) = kv
                    .split_once('=')
                    .ok_or_else(|| err(format!("parameter {kv:?} is not key=value")))?;
                params.push((k.to_string(), v.to_string()));
            }
            Ok(Hop {
                method: method.to_string(),
                spec,
                params,
            })
        })
        .collect()
}

impl Hop {
    /// The connection options this hop describes. Passwords come from
    /// the environment (`password_env=NAME`), never from the target text.
    pub fn options(&self) -> Result<ConnectOptions, TargetError> {
        let err = |reason: String| TargetError {
            target: self.method.clone(),
            reason,
        };
        let mut name = None;
        let method = match self.method.as_str() {
            "local" => {
                let mut o = LocalOptions::default();
                if self.spec.is_some() {
                    return Err(err("local takes no spec".into()));
                }
                self.each(&mut name, &["python"], |k, v| {
                    o.python = v.to_string();
                    let _ = k;
                    Ok(())
                })?;
                Method::Local(o)
            }
            "ssh" => {
                let spec = self
                    .spec
                    .as_deref()
                    .filter(|s| !s.is_empty())
                    .ok_or_else(|| err("ssh needs a host: ssh:[USER@]HOST[:PORT]".into()))?;
                let (user, hostport) = match spec.rsplit_once('@') {
                    Some((u, h)) => (Some(u.to_string()), h),
                    None => (None, spec),
                };
                let (host, port) = split_host_port(hostport).map_err(err)?;
                let mut o = SshOptions::new(host);
                o.user = user;
                o.port = port;
                self.each(
                    &mut name,
                    &[
                        "identity",
                        "check_host_keys",
                        "python",
                        "port",
                        "user",
                        "password_env",
                        "compression",
                        "option",
                        "ssh_path",
                    ],
                    |k, v| {
                        match k {
                            "identity" => o.identity_file = Some(v.to_string()),
                            "check_host_keys" => o.check_host_keys = v.parse()?,
                            "python" => o.python = v.to_string(),
                            "port" => o.port = Some(parse_port(v)?),
                            "user" => o.user = Some(v.to_string()),
                            "password_env" => o.password = Some(password_from_env(v)?),
                            "compression" => o.compression = parse_bool(v)?,
                            "option" => o.ssh_options.push(v.to_string()),
                            _ => o.ssh_path = v.to_string(),
                        }
                        Ok(())
                    },
                )?;
                Method::Ssh(o)
            }
            "sudo" => {
                let mut o = SudoOptions::default();
                if let Some(u) = self.spec.as_deref().filter(|s| !s.is_empty()) {
                    o.user = u.to_string();
                }
                self.each(
                    &mut name,
                    &[
                        "password_env",
                        "python",
                        "login",
                        "preserve_env",
                        "sudo_path",
                    ],
                    |k, v| {
                        match k {
                            "password_env" => o.password = Some(password_from_env(v)?),
                            "python" => o.python = v.to_string(),
                            "login" => o.login = parse_bool(v)?,
                            "preserve_env" => o.preserve_env = parse_bool(v)?,
                            _ => o.sudo_path = v.to_string(),
                        }
                        Ok(())
                    },
                )?;
                Method::Sudo(o)
            }
            "su" => {
                let mut o = SuOptions::default();
                if let Some(u) = self.spec.as_deref().filter(|s| !s.is_empty()) {
                    o.user = u.to_string();
                }
                self.each(&mut name, &["password_env", "python", "su_path"], |k, v| {
                    match k {
                        "password_env" => o.password = Some(password_from_env(v)?),
                        "python" => o.python = v.to_string(),
                        _ => o.su_path = v.to_string(),
                    }
                    Ok(())
                })?;
                Method::Su(o)
            }
            "docker" | "podman" => {
                let kind = self.method.as_str();
                let container = self
                    .spec
                    .as_deref()
                    .filter(|s| !s.is_empty())
                    .ok_or_else(|| err(format!("{kind} needs a container: {kind}:CONTAINER")))?;
                let mut o = ContainerOptions::new(kind, container);
                self.each(&mut name, &["user", "python", "path"], |k, v| {
                    match k {
                        "user" => o.user = Some(v.to_string()),
                        "python" => o.python = v.to_string(),
                        _ => o.program = v.to_string(),
                    }
                    Ok(())
                })?;
                if kind == "docker" {
                    Method::Docker(o)
                } else {
                    Method::Podman(o)
                }
            }
            "kubectl" => {
                let pod = self
                    .spec
                    .as_deref()
                    .filter(|s| !s.is_empty())
                    .ok_or_else(|| err("kubectl needs a pod: kubectl:POD".into()))?;
                let mut o = KubectlOptions::new(pod);
                self.each(
                    &mut name,
                    &["container", "namespace", "context", "python", "path"],
                    |k, v| {
                        let v = v.to_string();
                        match k {
                            "container" => o.container = Some(v),
                            "namespace" => o.namespace = Some(v),
                            "context" => o.kube_context = Some(v),
                            "python" => o.python = v,
                            _ => o.kubectl_path = v,
                        }
                        Ok(())
                    },
                )?;
                Method::Kubectl(o)
            }
            other => {
                return Err(err(format!(
                "unknown method {other:?} (known: local, ssh, sudo, su, docker, podman, kubectl)"
            )))
            }
        };
        // Every field that lands in an argv (host, user, pod, container,
        // namespace, context): the library's own check, before anything runs.
        method.validate().map_err(|e| err(e.to_string()))?;
        let mut c = ConnectOptions::new(method);
        c.name = name;
        c.agent = self.agent().map_err(err)?;
        Ok(c)
    }

    /// `agent=rust` starts this hop as a Rust agent (this very program,
    /// shipped from memory); `agent=python`, the default, as Python.
    /// `agent_cache=yes` keeps the agent in the target user's cache so the
    /// next connect ships nothing (`AgentOptions::cache`).
    fn agent(&self) -> Result<Option<econtext_agent::AgentOptions>, String> {
        let mut out = None;
        for (_, v) in self.params.iter().filter(|(k, _)| k == "agent") {
            out = match v.as_str() {
                "rust" => Some(econtext_agent::AgentOptions::default()),
                "python" => None,
                other => return Err(format!("agent: {other:?} is not rust or python")),
            };
        }
        for (_, v) in self.params.iter().filter(|(k, _)| k == "agent_cache") {
            let yes = match v.as_str() {
                "1" | "yes" | "true" => true,
                "0" | "no" | "false" => false,
                other => return Err(format!("agent_cache: {other:?} is not yes or no")),
            };
            out = match out {
                Some(a) => Some(a.cache(yes)),
                None => return Err("agent_cache needs agent=rust".into()),
            };
        }
        Ok(out)
    }

    /// The environment variables this hop reads its password from. The CLI
    /// removes them from its own environment once every hop is parsed, so
    /// no child (nor `sudo -E`'s target user) inherits them.
    pub fn password_vars(&self) -> impl Iterator<Item = &str> {
        self.params
            .iter()
            .filter(|(k, _)| k == "password_env")
            .map(|(_, v)| v.as_str())
    }

    /// Calls `f` for each parameter; `name` is common to every method.
    fn each(
        &self,
        name: &mut Option<String>,
        known: &[&str],
        mut f: impl FnMut(&str, &str) -> Result<(), String>,
    ) -> Result<(), TargetError> {
        let err = |reason: String| TargetError {
            target: self.method.clone(),
            reason,
        };
        for (k, v) in &self.params {
            if k == "name" {
                *name = Some(v.clone());
            } else if k == "agent" || k == "agent_cache" {
                // Common to every method: read by `options`.
            } else if known.contains(&k.as_str()) {
                f(k, v).map_err(|e| err(format!("{k}: {e}")))?;
            } else {
                return Err(err(format!(
                    "{} does not take {k:?} (name, {})",
                    self.method,
                    known.join(", ")
                )));
            }
        }
        Ok(())
    }
}

fn split_host_port(s: &str) -> Result<(String, Option<u16>), String> {
    // [v6::addr]:port, host:port, host
    if let Some(rest) = s.strip_prefix('[') {
        let (h, after) = rest
            .split_once(']')
            .ok_or_else(|| format!("unclosed [ in {s:?}"))?;
        return match after.strip_prefix(':') {
            Some(p) => Ok((h.to_string(), Some(parse_port(p)?))),
            None if after.is_empty() => Ok((h.to_string(), None)),
            None => Err(format!("bad host {s:?}")),
        };
    }
    match s.split_once(':') {
        Some((h, p)) => Ok((h.to_string(), Some(parse_port(p)?))),
        None => Ok((s.to_string(), None)),
    }
}

fn parse_port(p: &str) -> Result<u16, String> {
    p.parse::<u16>()
        .ok()
        .filter(|&n| n > 0)
        .ok_or_else(|| format!("bad port {p:?}"))
}

fn parse_bool(v: &str) -> Result<bool, String> {
    match v {
        "1" | "yes" | "true" | "on" => Ok(true),
        "0" | "no" | "false" | "off" => Ok(false),
        _ => Err(format!("{v:?} is not yes or no")),
    }
}

fn password_from_env(var: &str) -> Result<Secret, String> {
    std::env::var(var)
        .map(Secret::new)
        .map_err(|_| format!("environment variable {var} is not set"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hops_specs_and_params() {
        let h = parse("local?python=/usr/bin/python3&name=a,ssh:root@h:22?identity=k").unwrap();
        assert_eq!(h.len(), 2);
        assert_eq!(h[0].method, "local");
        assert_eq!(h[0].params[1], ("name".into(), "a".into()));
        assert_eq!(h[1].spec.as_deref(), Some("root@h:22"));
        assert!(parse("").is_err());
        assert!(parse("local?python").is_err());
    }

    #[test]
    fn agent_and_its_cache() {
        let opts = |t: &str| parse(t).unwrap()[0].options().map(|o| o.agent);
        assert_eq!(opts("local").unwrap(), None);
        assert!(!opts("local?agent=rust").unwrap().unwrap().cache);
        assert!(
            opts("local?agent=rust&agent_cache=yes")
                .unwrap()
                .unwrap()
                .cache
        );
        assert!(opts("local?agent_cache=yes").is_err(), "needs agent=rust");
        assert!(opts("local?agent=rust&agent_cache=maybe").is_err());
    }

    fn method(t: &str) -> Result<Method, TargetError> {
        let h = parse(t).unwrap();
        h[0].options().map(|o| o.method)
    }

    #[test]
    fn ssh_sudo_su_hops() {
        let Method::Ssh(o) = method(
            "ssh:bob@example.org:2222?identity=/k&check_host_keys=accept&python=/usr/bin/python2.7",
        )
        .unwrap() else {
            panic!()
        };
        assert_eq!(
            (o.user.as_deref(), o.host.as_str(), o.port),
            (Some("bob"), "example.org", Some(2222))
        );
        assert_eq!(o.identity_file.as_deref(), Some("/k"));
        assert_eq!(o.check_host_keys, econtext_bootstrap::HostKeyCheck::Accept);
        assert_eq!(o.python, "/usr/bin/python2.7");
        let Method::Ssh(o) = method("ssh:[::1]:22").unwrap() else {
            panic!()
        };
        assert_eq!((o.host.as_str(), o.port, o.user), ("::1", Some(22), None));
        let Method::Ssh(o) = method("ssh:h?port=2200&name=x").unwrap() else {
            panic!()
        };
        assert_eq!(o.port, Some(2200));
        assert!(method("ssh").is_err());
        assert!(method("ssh:-oProxyCommand=x").is_err());
        assert!(method("ssh:h?check_host_keys=maybe").is_err());
        assert!(method("ssh:h:99999").is_err());

        std::env::set_var("ECONTEXT_TARGET_TEST_PW", "s3cret");
        let Method::Sudo(o) =
            method("sudo:web?password_env=ECONTEXT_TARGET_TEST_PW&login=yes").unwrap()
        else {
            panic!()
        };
        assert_eq!(o.user, "web");
        assert!(o.login);
        assert_eq!(o.password.as_ref().map(|p| p.expose()), Some("s3cret"));
        let Method::Sudo(o) = method("sudo").unwrap() else {
            panic!()
        };
        assert_eq!((o.user.as_str(), o.password), ("root", None));
        let Method::Su(o) = method("su:alice?python=python3.11").unwrap() else {
            panic!()
        };
        assert_eq!(
            (o.user.as_str(), o.python.as_str()),
            ("alice", "python3.11")
        );
        let e = method("su?password_env=ECONTEXT_NO_SUCH_VAR").unwrap_err();
        assert!(
            e.to_string().contains("ECONTEXT_NO_SUCH_VAR is not set"),
            "{e}"
        );
        assert!(method("sudo?password=x").is_err());
        assert!(matches!(
            method("docker:web?user=app").unwrap(),
            Method::Docker(_)
        ));
        assert!(matches!(
            method("kubectl:pod?namespace=n").unwrap(),
            Method::Kubectl(_)
        ));
        for bad in [
            "kubectl:--kubeconfig=x",
            "kubectl:pod?namespace=-x",
            "kubectl:pod?container=--x",
            "kubectl:pod?context=-c",
            "docker:-v",
            "docker:c?user=-u0",
            "ssh:-F@h",
            "sudo:-s",
            "su:a b",
            "su:a\x1b",
        ] {
            assert!(method(bad).is_err(), "{bad}");
        }
    }
}
