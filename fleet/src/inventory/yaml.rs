//! Ansible's YAML inventory: groups with `hosts` (a map of host to its
//! variables), `vars` and `children` (a map of groups), nested freely.

use serde_yaml::Value;

use super::{range, Inventory, Vars};

pub fn parse(inv: &mut Inventory, text: &str) -> Result<(), String> {
    let doc: Value = serde_yaml::from_str(text).map_err(|e| format!("not YAML: {e}"))?;
    let Value::Mapping(top) = doc else {
        return if doc.is_null() {
            Ok(())
        } else {
            Err("the top level must map group names to groups".into())
        };
    };
    for (name, body) in &top {
        let name = key(name)?;
        group(inv, &name, body, 0)?;
    }
    Ok(())
}

fn group(inv: &mut Inventory, name: &str, body: &Value, depth: usize) -> Result<(), String> {
    if depth > 32 {
        return Err(format!("group {name}: nested too deep"));
    }
    inv.group_mut(name);
    let body = match body {
        Value::Null => return Ok(()),
        Value::Mapping(m) => m,
        _ => return Err(format!("group {name}: expected hosts, vars or children")),
    };
    for (k, v) in body {
        match key(k)?.as_str() {
            "hosts" => {
                let Value::Mapping(hosts) = v else {
                    if v.is_null() {
                        continue;
                    }
                    return Err(format!("group {name}: hosts must be a mapping"));
                };
                for (h, hv) in hosts {
                    let vars = vars(hv)
                        .map_err(|e| format!("host {}: {e}", key(h).unwrap_or_default()))?;
                    for host in range::expand(&key(h)?)? {
                        inv.add_host(&host, vars.clone(), Some(name));
                    }
                }
            }
            "vars" => {
                let vs = vars(v).map_err(|e| format!("group {name}: {e}"))?;
                inv.group_mut(name).vars.extend(vs);
            }
            "children" => match v {
                Value::Mapping(children) => {
                    for (c, cv) in children {
                        let c = key(c)?;
                        inv.add_child(name, &c);
                        group(inv, &c, cv, depth + 1)?;
                    }
                }
                Value::Null => {}
                _ => return Err(format!("group {name}: children must be a mapping")),
            },
            other => return Err(format!("group {name}: unknown key {other:?}")),
        }
    }
    Ok(())
}

fn key(v: &Value) -> Result<String, String> {
    scalar(v).ok_or_else(|| format!("{v:?} is not a name"))
}

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn vars(v: &Value) -> Result<Vars, String> {
    let mut out = Vars::new();
    match v {
        Value::Null => {}
        Value::Mapping(m) => {
            for (k, val) in m {
                let k = key(k)?;
                let s = scalar(val)
                    .ok_or_else(|| format!("variable {k}: only scalar values are supported"))?;
                out.insert(k, s);
            }
        }
        _ => return Err("variables must be a mapping".into()),
    }
    Ok(out)
}
