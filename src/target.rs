//! The CLI's TARGET syntax: hops joined by commas, each
//! `METHOD[:SPEC][?key=value&...]`, e.g. `local?python=python2.7&name=web`.

use econtext_bootstrap::{LocalOptions, Method};

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
    /// The connection options this hop describes.
    pub fn options(&self) -> Result<ConnectOptions, TargetError> {
        let err = |reason: String| TargetError {
            target: self.method.clone(),
            reason,
        };
        match self.method.as_str() {
            "local" => {
                let mut o = LocalOptions::default();
                let mut name = None;
                for (k, v) in &self.params {
                    match k.as_str() {
                        "python" => o.python = v.clone(),
                        "name" => name = Some(v.clone()),
                        other => {
                            return Err(err(format!(
                                "local does not take {other:?} (python, name)"
                            )))
                        }
                    }
                }
                let mut c = ConnectOptions::new(Method::Local(o));
                c.name = name;
                Ok(c)
            }
            other => Err(err(format!("unknown method {other:?} (known: local)"))),
        }
    }
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
}
