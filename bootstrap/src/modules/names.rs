//! What a GET_MODULE request may name, checked before anything touches
//! the file system: a child chooses these strings.

/// Longest request accepted (a module name, or a resource path).
pub const MAX_REQUEST_LEN: usize = 512;

/// A dotted module name: identifiers separated by dots.
pub fn valid_module_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_REQUEST_LEN
        && name.split('.').all(|p| {
            let mut cs = p.chars();
            cs.next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || !c.is_ascii())
                && cs.all(|c| {
                    c.is_ascii_alphanumeric() || c == '_' || (!c.is_ascii() && c.is_alphanumeric())
                })
        })
}

/// A resource request `package/rel/path` (`package/` for the package's
/// own directory): the package a valid module name, every path part
/// plain (no `..`, `.`, empty part, backslash or control character), so
/// the path cannot leave the package's directory.
pub fn split_resource(request: &str) -> Option<(&str, Vec<&str>)> {
    if request.len() > MAX_REQUEST_LEN {
        return None;
    }
    let (package, rel) = request.split_once('/')?;
    if !valid_module_name(package) {
        return None;
    }
    let rel = rel.strip_suffix('/').unwrap_or(rel);
    if rel.is_empty() {
        return Some((package, Vec::new()));
    }
    let parts: Vec<&str> = rel.split('/').collect();
    let plain = |p: &&str| {
        !p.is_empty() && *p != "." && *p != ".." && !p.chars().any(|c| c.is_control() || c == '\\')
    };
    parts.iter().all(plain).then_some((package, parts))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_names() {
        for ok in ["a", "a.b_c", "_x.y2", "pkg.sub.mod"] {
            assert!(valid_module_name(ok), "{ok}");
        }
        let long = "a".repeat(MAX_REQUEST_LEN + 1);
        for bad in [
            "",
            ".a",
            "a.",
            "a..b",
            "1a",
            "a/b",
            "a-b",
            "a b",
            "../etc",
            long.as_str(),
        ] {
            assert!(!valid_module_name(bad), "{bad}");
        }
    }

    #[test]
    fn resource_paths_stay_inside_the_package() {
        assert_eq!(
            split_resource("certifi/cacert.pem"),
            Some(("certifi", vec!["cacert.pem"]))
        );
        assert_eq!(
            split_resource("pytz/zoneinfo/Asia/Tokyo"),
            Some(("pytz", vec!["zoneinfo", "Asia", "Tokyo"]))
        );
        assert_eq!(split_resource("tzdata/"), Some(("tzdata", vec![])));
        for bad in [
            "pkg/../x",
            "pkg/./x",
            "pkg//x",
            "pkg/a\\b",
            "/etc/passwd",
            "pkg/a\nb",
            "1x/a",
            "nopath",
        ] {
            assert_eq!(split_resource(bad), None, "{bad:?}");
        }
    }
}
