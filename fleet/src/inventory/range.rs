//! Ansible host ranges: `web[01:20]`, `db-[a:c]`, `n[0:10:2]`.

/// Expands every `[start:end(:step)]` in `pattern`; a name without one
/// expands to itself. Numeric ranges keep the start's zero padding.
pub fn expand(pattern: &str) -> Result<Vec<String>, String> {
    let Some(open) = pattern.find('[') else {
        return Ok(vec![pattern.to_string()]);
    };
    let close = pattern[open..]
        .find(']')
        .map(|i| open + i)
        .ok_or_else(|| format!("unclosed [ in host range {pattern:?}"))?;
    let (head, body, tail) = (
        &pattern[..open],
        &pattern[open + 1..close],
        &pattern[close + 1..],
    );
    let parts: Vec<&str> = body.split(':').collect();
    if parts.len() < 2 || parts.len() > 3 {
        return Err(format!("bad host range [{body}] in {pattern:?}"));
    }
    let step: usize = match parts.get(2) {
        Some(s) => s
            .parse()
            .ok()
            .filter(|&n| n > 0)
            .ok_or_else(|| format!("bad step in {pattern:?}"))?,
        None => 1,
    };
    let items = range_items(parts[0], parts[1], step)
        .ok_or_else(|| format!("bad host range [{body}] in {pattern:?}"))?;
    if items.len() > 100_000 {
        return Err(format!("host range {pattern:?} is too large"));
    }
    let mut out = Vec::new();
    for tail_name in expand(tail)? {
        for i in &items {
            out.push(format!("{head}{i}{tail_name}"));
        }
    }
    // Order by the range first, as Ansible lists them.
    if out.len() > items.len() {
        let n = items.len();
        let m = out.len() / n;
        out = (0..n)
            .flat_map(|i| (0..m).map(move |j| (i, j)))
            .map(|(i, j)| out[j * n + i].clone())
            .collect();
    }
    Ok(out)
}

fn range_items(start: &str, end: &str, step: usize) -> Option<Vec<String>> {
    if let (Ok(a), Ok(b)) = (start.parse::<u64>(), end.parse::<u64>()) {
        if a > b {
            return None;
        }
        let width = if start.len() > 1 && start.starts_with('0') {
            start.len()
        } else {
            0
        };
        return Some(
            (a..=b)
                .step_by(step)
                .map(|n| format!("{n:0width$}"))
                .collect(),
        );
    }
    let (a, b) = (single_char(start)?, single_char(end)?);
    if !(a.is_ascii_alphabetic() && b.is_ascii_alphabetic()) || a > b {
        return None;
    }
    Some(
        (a as u8..=b as u8)
            .step_by(step)
            .map(|c| (c as char).to_string())
            .collect(),
    )
}

fn single_char(s: &str) -> Option<char> {
    let mut c = s.chars();
    let first = c.next()?;
    c.next().is_none().then_some(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_alpha_padded_stepped_and_nested() {
        assert_eq!(expand("web[01:03]").unwrap(), ["web01", "web02", "web03"]);
        assert_eq!(expand("db-[a:c]").unwrap(), ["db-a", "db-b", "db-c"]);
        assert_eq!(expand("n[0:10:5]x").unwrap(), ["n0x", "n5x", "n10x"]);
        assert_eq!(expand("plain").unwrap(), ["plain"]);
        assert_eq!(
            expand("r[1:2]-[a:b]").unwrap(),
            ["r1-a", "r1-b", "r2-a", "r2-b"]
        );
        assert!(expand("web[3:1]").is_err());
        assert!(expand("web[1:").is_err());
        assert!(expand("web[a:10]").is_err());
        assert!(expand("x[0:9999999]").is_err());
    }
}
