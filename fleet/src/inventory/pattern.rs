//! Ansible host patterns: `all`/`*`, group and host names, globs
//! (`web*`, `db-?`), unions `a:b` (or `a,b`), intersections `a:&b`,
//! exclusions `a:!b`, and `@FILE` (one host per line, as `--failed-to`
//! writes). As in Ansible, unions apply first, then intersections, then
//! exclusions, whatever their order in the pattern.

use std::collections::BTreeSet;

use super::Inventory;

pub fn select(inv: &Inventory, pattern: &str) -> Result<Vec<String>, String> {
    let mut union = BTreeSet::new();
    let mut intersect: Vec<BTreeSet<String>> = Vec::new();
    let mut exclude = BTreeSet::new();
    let terms: Vec<&str> = pattern
        .split([':', ','])
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .collect();
    if terms.is_empty() {
        return Err(format!("empty host pattern {pattern:?}"));
    }
    let mut any_union = false;
    for t in terms {
        if let Some(rest) = t.strip_prefix('!') {
            exclude.extend(term(inv, rest)?);
        } else if let Some(rest) = t.strip_prefix('&') {
            intersect.push(term(inv, rest)?.into_iter().collect());
        } else {
            any_union = true;
            union.extend(term(inv, t)?);
        }
    }
    if !any_union {
        // `!web` alone means all but web, `&web` alone means web.
        union.extend(inv.hosts().iter().cloned());
    }
    Ok(inv
        .hosts()
        .iter()
        .filter(|h| union.contains(*h))
        .filter(|h| intersect.iter().all(|s| s.contains(*h)))
        .filter(|h| !exclude.contains(*h))
        .cloned()
        .collect())
}

/// The hosts one term names.
fn term(inv: &Inventory, t: &str) -> Result<Vec<String>, String> {
    if let Some(file) = t.strip_prefix('@') {
        let text = std::fs::read_to_string(file)
            .map_err(|e| format!("cannot read host list {file}: {e}"))?;
        let mut out = Vec::new();
        for line in text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
        {
            if !inv.contains_host(line) {
                return Err(format!("{file}: host {line:?} is not in the inventory"));
            }
            out.push(line.to_string());
        }
        return Ok(out);
    }
    if t == "all" || t == "*" {
        return Ok(inv.hosts().to_vec());
    }
    if t.contains(['*', '?']) {
        let mut out: Vec<String> = inv.hosts().iter().filter(|h| glob(t, h)).cloned().collect();
        for g in inv.groups().keys().filter(|g| glob(t, g)) {
            out.extend(inv.group_hosts(g));
        }
        return Ok(out);
    }
    if inv.groups().contains_key(t) {
        return Ok(inv.group_hosts(t));
    }
    if inv.contains_host(t) {
        return Ok(vec![t.to_string()]);
    }
    Err(format!("{t:?} names no host or group in the inventory"))
}

/// Shell-style glob with `*` and `?` only.
pub(crate) fn glob(pat: &str, s: &str) -> bool {
    let (p, s): (Vec<char>, Vec<char>) = (pat.chars().collect(), s.chars().collect());
    let (mut pi, mut si) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while si < s.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == s[si]) {
            pi += 1;
            si += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = si;
            pi += 1;
        } else if let Some(st) = star {
            pi = st + 1;
            mark += 1;
            si = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}
