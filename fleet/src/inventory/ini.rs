//! Ansible's INI inventory: `[group]` host lines with `key=value`
//! variables, `[group:vars]`, `[group:children]`, hosts before any
//! section are ungrouped.

use super::{range, Inventory, Vars};

enum Section {
    Hosts(String),
    Vars(String),
    Children(String),
}

pub fn parse(inv: &mut Inventory, text: &str) -> Result<(), String> {
    let mut section = Section::Hosts("ungrouped".into());
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        let at = |e: String| format!("line {}: {e}", n + 1);
        if let Some(head) = line.strip_prefix('[') {
            let name = head
                .strip_suffix(']')
                .ok_or_else(|| at(format!("bad section {line:?}")))?;
            section = match name.split_once(':') {
                Some((g, "vars")) => Section::Vars(g.to_string()),
                Some((g, "children")) => Section::Children(g.to_string()),
                Some((_, other)) => return Err(at(format!("unknown section kind {other:?}"))),
                None => Section::Hosts(name.to_string()),
            };
            match &section {
                Section::Hosts(g) | Section::Vars(g) | Section::Children(g) => {
                    inv.group_mut(g);
                }
            }
            continue;
        }
        let words = split_words(line).map_err(at)?;
        match &section {
            Section::Hosts(g) => {
                let (host, vars) = words.split_first().expect("non-empty line");
                let mut vars = key_values(vars).map_err(at)?;
                let (host, port) = host_port(host);
                if let Some(p) = port {
                    vars.entry("ansible_port".into()).or_insert(p);
                }
                for h in range::expand(&host).map_err(at)? {
                    inv.add_host(&h, vars.clone(), Some(g));
                }
            }
            Section::Vars(g) => {
                let kv = key_values(&words).map_err(at)?;
                inv.group_mut(g).vars.extend(kv);
            }
            Section::Children(g) => {
                if words.len() != 1 {
                    return Err(at(format!("a children line names one group: {line:?}")));
                }
                inv.add_child(g, &words[0]);
            }
        }
    }
    Ok(())
}

/// `host:port` (not an IPv6 address) splits; anything else is a name.
fn host_port(h: &str) -> (String, Option<String>) {
    match h.rsplit_once(':') {
        Some((name, p))
            if !name.contains(':') && !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) =>
        {
            (name.to_string(), Some(p.to_string()))
        }
        _ => (h.to_string(), None),
    }
}

fn key_values(words: &[String]) -> Result<Vars, String> {
    let mut vars = Vars::new();
    for w in words {
        let (k, v) = w
            .split_once('=')
            .ok_or_else(|| format!("{w:?} is not key=value"))?;
        if k.is_empty() {
            return Err(format!("{w:?} has no name"));
        }
        vars.insert(k.to_string(), v.to_string());
    }
    Ok(vars)
}

/// Splits on blanks, honouring '...' and "..." (quotes removed) and a
/// trailing ` # comment`.
pub(crate) fn split_words(line: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut has = false;
    let mut quote: Option<char> = None;
    for c in line.chars() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => cur.push(c),
            None if c == '\'' || c == '"' => {
                quote = Some(c);
                has = true;
            }
            None if c.is_whitespace() => {
                if has {
                    words.push(std::mem::take(&mut cur));
                    has = false;
                }
            }
            None if c == '#' && !has => break,
            None => {
                cur.push(c);
                has = true;
            }
        }
    }
    if quote.is_some() {
        return Err(format!("unclosed quote in {line:?}"));
    }
    if has {
        words.push(cur);
    }
    Ok(words)
}
