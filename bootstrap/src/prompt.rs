//! Password prompts and the diagnostics of ssh, sudo and su, as plain
//! logic: recognising a prompt in what a child wrote on its terminal or
//! stderr, and turning its last words into a typed error.

use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use econtext_wire::messages::ExitRule;

use crate::error::ConnectError;

/// A password: never shown by `Debug`, never in an argv or an error.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }

    /// The password itself: only to write it to a prompt.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// `text` with every occurrence of the password replaced.
    pub fn redact(&self, text: &str) -> String {
        if self.0.is_empty() {
            text.to_string()
        } else {
            text.replace(&self.0, "********")
        }
    }
}

/// Wiped from memory when dropped (each clone wipes its own copy).
impl Drop for Secret {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(********)")
    }
}

/// How prompts are recognised. This is data: SPAWN carries it to
/// intermediates, which apply the same rules (docs/PROTOCOL.md).
///
/// - With `custom` (a prompt the method set itself, `sudo -p`, with a
///   random token per connection), only that prompt is answered, and only
///   when it appears on the pty: a `Password:` line printed by a login
///   profile or rc file is never taken for it.
/// - Without it (ssh, su: they cannot be told what to print), a prompt is
///   a last line of at most 300 bytes ending in `:` that contains one of
///   `words`, on the pty or on stderr. Anything the target prints before
///   the method's own prompt could be taken for one; docs/SECURITY.md says
///   what that exposes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PromptRules {
    pub custom: Option<String>,
    /// Lowercase words meaning "password" (default [`PASSWORD_WORDS`]).
    pub words: Vec<String>,
}

impl Default for PromptRules {
    fn default() -> Self {
        PromptRules {
            custom: None,
            words: PASSWORD_WORDS.iter().map(|w| w.to_string()).collect(),
        }
    }
}

/// Words that mean "password" in the prompts of ssh, sudo, sudo-rs, su and
/// PAM, in English and the most common translations (lowercase).
pub const PASSWORD_WORDS: &[&str] = &[
    "password",
    "passphrase",
    "passwort",
    "kennwort",
    "mot de passe",
    "contraseña",
    "contrasena",
    "senha",
    "palavra-passe",
    "wachtwoord",
    "parola",
    "hasło",
    "heslo",
    "jelszó",
    "lösenord",
    "passord",
    "adgangskode",
    "salasana",
    "пароль",
    "密码",
    "密碼",
    "口令",
    "パスワード",
    "비밀번호",
    "암호",
    "κωδικός",
    "şifre",
    "parolă",
    "geslo",
    "lozinka",
];

/// The longest line taken for a prompt: longer ones are output, not
/// questions.
const MAX_PROMPT_LINE: usize = 300;

impl PromptRules {
    /// Only `prompt`, only on the pty.
    pub fn exact(prompt: impl Into<String>) -> Self {
        PromptRules {
            custom: Some(prompt.into()),
            ..Default::default()
        }
    }

    /// Whether `text` (what the child wrote so far, since the last prompt,
    /// on its pty if `on_tty`, else on stderr) ends with a password prompt.
    pub fn ends_with_prompt(&self, text: &str, on_tty: bool) -> bool {
        let t = text.trim_end_matches([' ', '\t']);
        if let Some(c) = &self.custom {
            let c = c.trim_end();
            return on_tty && !c.is_empty() && t.ends_with(c);
        }
        let line = t.rsplit(['\n', '\r']).next().unwrap_or("");
        if line.is_empty() || line.len() > MAX_PROMPT_LINE {
            return false;
        }
        if !(line.ends_with(':') || line.ends_with('：')) {
            return false;
        }
        let lower = line.to_lowercase();
        self.words
            .iter()
            .any(|w| !w.is_empty() && lower.contains(w.as_str()))
    }
}

/// Whether `text` (what ssh wrote on its pty since the last prompt) ends
/// with ssh's yes/no question about a host key it cannot verify ("Are you
/// sure you want to continue connecting (yes/no/[fingerprint])?"), which
/// it asks on a terminal when ssh_config leaves `StrictHostKeyChecking`
/// at `ask`. Nobody is there to answer it: the answer is "no", what `ask`
/// does without a terminal, so ssh_config's own policy stands and is not
/// overridden on the command line.
pub fn ends_with_host_key_question(text: &str) -> bool {
    let t = text.trim_end_matches([' ', '\t']);
    let line = t.rsplit(['\n', '\r']).next().unwrap_or("");
    line.len() <= MAX_PROMPT_LINE && line.ends_with('?') && line.contains("(yes/no")
}

/// What a child asked on its pty or stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Asked {
    /// A password prompt ([`PromptRules::ends_with_prompt`]).
    Password,
    /// ssh's host key question, on the pty only
    /// ([`ends_with_host_key_question`]): answered "no".
    HostKey,
}

/// Watches one output (a pty or stderr) for prompts. Each prompt is
/// reported once; the text is kept bounded.
#[derive(Debug, Default)]
pub struct PromptScanner {
    text: String,
}

impl PromptScanner {
    /// Adds output (from the pty if `on_tty`); what it now ends with, a
    /// password prompt or ssh's host key question (then consumed), if
    /// anything.
    pub fn feed(&mut self, rules: &PromptRules, bytes: &[u8], on_tty: bool) -> Option<Asked> {
        self.text.push_str(&String::from_utf8_lossy(bytes));
        if self.text.len() > 4 * MAX_PROMPT_LINE {
            let mut cut = self.text.len() - 2 * MAX_PROMPT_LINE;
            while !self.text.is_char_boundary(cut) {
                cut += 1;
            }
            self.text.drain(..cut);
        }
        let asked = if rules.ends_with_prompt(&self.text, on_tty) {
            Asked::Password
        } else if on_tty && ends_with_host_key_question(&self.text) {
            Asked::HostKey
        } else {
            return None;
        };
        self.text.clear();
        Some(asked)
    }
}

/// What happened with the password so far, for classifying a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Auth {
    pub password_given: bool,
    pub password_sent: bool,
}

/// The kinds an [`ExitRule`] may name (as `ConnectError::kind`).
pub mod kind {
    pub const HOST_KEY_REFUSED: &str = "HostKeyRefused";
    pub const PASSWORD_REQUIRED: &str = "PasswordRequired";
    pub const PASSWORD_REFUSED: &str = "PasswordRefused";
    pub const AUTH_FAILED: &str = "AuthFailed";
    pub const TIMEOUT: &str = "Timeout";
}

fn rule(needles: &[&str], if_sent: &str, if_given: &str, if_none: &str) -> ExitRule {
    ExitRule {
        needles: needles.iter().map(|n| n.to_string()).collect(),
        if_sent: if_sent.into(),
        if_given: if_given.into(),
        if_none: if_none.into(),
    }
}

/// How ssh's, sudo's and su's last words classify a failed connection of
/// `method`, most specific first. Written once, here: SPAWN carries these
/// rules to intermediates. `local` and the container methods get none.
pub fn exit_rules(method: &str) -> Vec<ExitRule> {
    use kind::*;
    if !matches!(method, "ssh" | "sudo" | "su") {
        return Vec::new();
    }
    let all = |k: &str, needles: &[&str]| rule(needles, k, k, k);
    let mut rules = vec![
        all(
            HOST_KEY_REFUSED,
            &[
                "host key is known",
                "remote host identification has changed",
                "host key for",
                "host key verification failed",
            ],
        ),
        all(
            PASSWORD_REQUIRED,
            &[
                "a password is required",
                "a terminal is required to read the password",
                "no askpass program",
            ],
        ),
        rule(
            &[
                "permission denied",
                "authentication failure",
                "incorrect password",
                "sorry, try again",
            ],
            PASSWORD_REFUSED,
            AUTH_FAILED,
            // ssh without a password refused our key; sudo and su wanted
            // a password.
            if method == "ssh" {
                AUTH_FAILED
            } else {
                PASSWORD_REQUIRED
            },
        ),
        all(
            AUTH_FAILED,
            &[
                "is not in the sudoers file",
                "is not allowed to execute",
                "may not run sudo",
            ],
        ),
    ];
    if method == "ssh" {
        rules.push(all(TIMEOUT, &["timed out"]));
    }
    rules
}

/// Turns the last lines a child printed before it exited into a typed
/// error by `rules` ([`exit_rules`]), when they say why. `None`: nothing
/// recognised, the caller reports an early exit with the lines.
pub fn classify_exit(
    rules: &[ExitRule],
    method: &str,
    lines: &[String],
    auth: Auth,
    timeout: Duration,
) -> Option<ConnectError> {
    let lower: Vec<String> = lines.iter().map(|l| l.to_lowercase()).collect();
    rules.iter().find_map(|r| {
        let matched: Vec<&str> = lines
            .iter()
            .zip(&lower)
            .filter(|(_, l)| r.needles.iter().any(|n| l.contains(n.as_str())))
            .map(|(line, _)| line.trim())
            .collect();
        if matched.is_empty() {
            return None;
        }
        let k = if auth.password_sent {
            &r.if_sent
        } else if auth.password_given {
            &r.if_given
        } else {
            &r.if_none
        };
        Some(error_of_kind(
            k,
            method,
            matched.join(" | "),
            lines,
            timeout,
        ))
    })
}

/// The typed error an [`ExitRule`]'s kind names.
fn error_of_kind(
    k: &str,
    method: &str,
    detail: String,
    lines: &[String],
    timeout: Duration,
) -> ConnectError {
    let method = method.to_string();
    match k {
        kind::HOST_KEY_REFUSED => ConnectError::HostKeyRefused { detail },
        kind::PASSWORD_REQUIRED => ConnectError::PasswordRequired { method },
        kind::PASSWORD_REFUSED => ConnectError::PasswordRefused { method },
        kind::TIMEOUT => ConnectError::Timeout {
            stage: "ssh to connect",
            after: timeout,
            stderr: lines.to_vec(),
        },
        _ => ConnectError::AuthFailed { method, detail },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prompt(s: &str) -> bool {
        PromptRules::default().ends_with_prompt(s, true)
            && PromptRules::default().ends_with_prompt(s, false)
    }

    #[test]
    fn prompts_of_every_tool_and_language() {
        for p in [
            "[sudo] password for alice: ",
            "[sudo: authenticate] Password: ",
            "Password:",
            "Password: ",
            "root@127.0.0.1's password: ",
            "(bob@host) Password: ",
            "Enter passphrase for key '/root/.ssh/id_ed25519': ",
            "Mot de passe : ",
            "Passwort: ",
            "Contraseña: ",
            "密码：",
            "Пароль: ",
            "Banner line\r\nmotd\nPassword: ",
        ] {
            assert!(prompt(p), "{p:?}");
        }
        for p in [
            "",
            "Password",
            "Sorry, try again.\n",
            "Permission denied, please try again.\r\n",
            "password: changed\n",
            "Welcome: ",
        ] {
            assert!(!prompt(p), "{p:?}");
        }
        let custom = PromptRules::exact("[econtext-sudo 1a2b] password:");
        assert!(custom.ends_with_prompt("\r\n[econtext-sudo 1a2b] password:", true));
        // Only the method's own prompt, only on the pty.
        assert!(!custom.ends_with_prompt("[econtext-sudo 1a2b] password:", false));
        assert!(!custom.ends_with_prompt("Password:", true));
        assert!(!custom.ends_with_prompt("[sudo] password for bob: ", true));
    }

    #[test]
    fn scanner_reports_each_prompt_once_across_splits() {
        let rules = PromptRules::default();
        let mut s = PromptScanner::default();
        let pw = Some(Asked::Password);
        assert_eq!(s.feed(&rules, b"[sudo] pass", true), None);
        assert_eq!(s.feed(&rules, b"word for bob: ", true), pw);
        assert_eq!(s.feed(&rules, b"\r\n", true), None);
        assert_eq!(s.feed(&rules, b"Sorry, try again.\r\n", true), None);
        assert_eq!(s.feed(&rules, b"[sudo] password for bob: ", true), pw);
        // Bounded.
        for _ in 0..1000 {
            s.feed(&rules, "é0123456789".as_bytes(), true);
        }
        assert!(s.text.len() <= 4 * MAX_PROMPT_LINE + 20);
    }

    #[test]
    fn ssh_host_key_question_is_seen_on_the_pty_only() {
        let rules = PromptRules::default();
        let q = "The authenticity of host '[127.0.0.1]:2222 ([127.0.0.1]:2222)' can't be \
                 established.\r\nED25519 key fingerprint is SHA256:abc.\r\nThis key is not \
                 known by any other names.\r\nAre you sure you want to continue connecting \
                 (yes/no/[fingerprint])? ";
        let mut s = PromptScanner::default();
        assert_eq!(s.feed(&rules, q.as_bytes(), true), Some(Asked::HostKey));
        let mut s = PromptScanner::default();
        assert_eq!(s.feed(&rules, q.as_bytes(), false), None);
        // Older ssh, split across reads.
        let mut s = PromptScanner::default();
        assert_eq!(s.feed(&rules, b"continue connecting (yes/", true), None);
        assert_eq!(s.feed(&rules, b"no)? ", true), Some(Asked::HostKey));
        for not in ["(yes/no)? and more\n", "Continue? ", "yes/no?"] {
            assert!(!ends_with_host_key_question(not), "{not:?}");
        }
    }

    #[test]
    fn exits_are_classified() {
        let t = Duration::from_secs(1);
        let none = Auth {
            password_given: false,
            password_sent: false,
        };
        let sent = Auth {
            password_given: true,
            password_sent: true,
        };
        let classify = |m: &str, lines: &[String], a: Auth, t: Duration| {
            classify_exit(&exit_rules(m), m, lines, a, t)
        };
        let l = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let e = classify(
            "ssh",
            &l(&[
                "No ED25519 host key is known for [127.0.0.1]:2222 and you have requested strict checking.",
                "Host key verification failed.",
            ]),
            none,
            t,
        );
        assert!(
            matches!(&e, Some(ConnectError::HostKeyRefused { detail }) if detail.contains("No ED25519")),
            "{e:?}"
        );
        assert!(matches!(
            classify(
                "ssh",
                &l(&["root@h: Permission denied (publickey)."]),
                none,
                t
            ),
            Some(ConnectError::AuthFailed { .. })
        ));
        assert!(matches!(
            classify("ssh", &l(&["Permission denied (password)."]), sent, t),
            Some(ConnectError::PasswordRefused { .. })
        ));
        assert!(matches!(
            classify("sudo", &l(&["sudo: a password is required"]), none, t),
            Some(ConnectError::PasswordRequired { .. })
        ));
        assert!(matches!(
            classify("su", &l(&["su: Authentication failure"]), sent, t),
            Some(ConnectError::PasswordRefused { .. })
        ));
        assert!(matches!(
            classify(
                "ssh",
                &l(&["Connection timed out during banner exchange"]),
                none,
                t
            ),
            Some(ConnectError::Timeout { .. })
        ));
        assert_eq!(classify("local", &l(&["boom"]), none, t), None);
        // A host key change names the host in its detail.
        let e = classify(
            "ssh",
            &l(&[
                "@@@ WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED! @@@",
                "Host key for [127.0.0.1]:2222 has changed and you have requested strict checking.",
            ]),
            none,
            t,
        );
        assert!(
            matches!(&e, Some(ConnectError::HostKeyRefused { detail }) if detail.contains("[127.0.0.1]:2222")),
            "{e:?}"
        );
    }
}
