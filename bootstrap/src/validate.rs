//! Checks on every option field that lands in another program's argv.
//!
//! A pod called `--kubeconfig=FILE`, a host called `-oProxyCommand=...`
//! or a user called `-s` would be taken by kubectl, ssh or sudo for an
//! option: the master would run what the attacker chose, on its own
//! machine. These checks live in the option types (through
//! [`Method::validate`](crate::Method::validate), which
//! [`Method::spawn_spec`](crate::Method::spawn_spec) calls), not only in
//! the CLI parser, so every library user gets them.

use econtext_wire::sanitize;

/// A field that would be unsafe in an argv.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {method} {field} {value}: {reason}")]
pub struct InvalidOption {
    /// The method (`kubectl`, `ssh`...).
    pub method: &'static str,
    /// The option field (`pod`, `host`, `user`...).
    pub field: &'static str,
    /// The value as given, with control characters escaped.
    pub value: String,
    pub reason: InvalidReason,
}

/// Why a field was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidReason {
    #[error("it is empty")]
    Empty,
    /// The program would take it for an option.
    #[error("it starts with '-' and would be taken for an option")]
    LeadingDash,
    #[error("it contains whitespace or a control character")]
    ControlOrSpace,
}

/// Checks one name-like field (host, user, pod, container, namespace,
/// kubeconfig context): not empty, no leading `-`, no whitespace or
/// control character.
pub fn check_name(method: &'static str, field: &'static str, v: &str) -> Result<(), InvalidOption> {
    let reason = if v.is_empty() {
        InvalidReason::Empty
    } else if v.starts_with('-') {
        InvalidReason::LeadingDash
    } else if v.chars().any(|c| c.is_whitespace() || c.is_control()) {
        InvalidReason::ControlOrSpace
    } else {
        return Ok(());
    };
    Err(InvalidOption {
        method,
        field,
        value: format!("{:?}", sanitize::field(v)),
        reason,
    })
}

/// [`check_name`] for an optional field.
pub fn check_opt(
    method: &'static str,
    field: &'static str,
    v: &Option<String>,
) -> Result<(), InvalidOption> {
    v.as_deref()
        .map_or(Ok(()), |v| check_name(method, field, v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn option_look_alikes_and_controls_are_refused() {
        assert!(check_name("kubectl", "pod", "web-1").is_ok());
        let e = check_name("kubectl", "pod", "--kubeconfig=x").unwrap_err();
        assert_eq!(e.reason, InvalidReason::LeadingDash);
        assert!(e.to_string().contains("kubectl pod"), "{e}");
        assert_eq!(
            check_name("ssh", "host", "h\x1b]0;x").unwrap_err().reason,
            InvalidReason::ControlOrSpace
        );
        assert!(check_name("ssh", "host", "h\x1b")
            .unwrap_err()
            .value
            .contains("\\x1b"));
        assert_eq!(
            check_name("sudo", "user", "").unwrap_err().reason,
            InvalidReason::Empty
        );
        assert!(check_opt("docker", "user", &None).is_ok());
    }
}
