//! Password prompts and the diagnostics of ssh, sudo and su, as plain
//! logic: recognising a prompt in what a child wrote on its terminal or
//! stderr, and turning its last words into a typed error.

use std::time::Duration;

use serde::{Deserialize, Serialize};

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

/// How prompts are recognised.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PromptRules {
    /// A prompt we chose ourselves (`sudo -p`): matched exactly at the end
    /// of the output.
    pub custom: Option<String>,
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
    /// Whether `text` (what the child wrote so far, since the last prompt)
    /// ends with a password prompt.
    pub fn ends_with_prompt(&self, text: &str) -> bool {
        let t = text.trim_end_matches([' ', '\t']);
        if let Some(c) = &self.custom {
            let c = c.trim_end();
            if !c.is_empty() && t.ends_with(c) {
                return true;
            }
        }
        let line = t.rsplit(['\n', '\r']).next().unwrap_or("");
        if line.is_empty() || line.len() > MAX_PROMPT_LINE {
            return false;
        }
        if !(line.ends_with(':') || line.ends_with('：')) {
            return false;
        }
        let lower = line.to_lowercase();
        PASSWORD_WORDS.iter().any(|w| lower.contains(w))
    }
}

/// Watches one output (a pty or stderr) for prompts. Each prompt is
/// reported once; the text is kept bounded.
#[derive(Debug, Default)]
pub struct PromptScanner {
    text: String,
}

impl PromptScanner {
    /// Adds output; true if it now ends with a prompt (which is then
    /// consumed).
    pub fn feed(&mut self, rules: &PromptRules, bytes: &[u8]) -> bool {
        self.text.push_str(&String::from_utf8_lossy(bytes));
        if self.text.len() > 4 * MAX_PROMPT_LINE {
            let mut cut = self.text.len() - 2 * MAX_PROMPT_LINE;
            while !self.text.is_char_boundary(cut) {
                cut += 1;
            }
            self.text.drain(..cut);
        }
        if rules.ends_with_prompt(&self.text) {
            self.text.clear();
            true
        } else {
            false
        }
    }
}

/// What happened with the password so far, for classifying a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Auth {
    pub password_given: bool,
    pub password_sent: bool,
}

fn has(line: &str, needle: &str) -> bool {
    line.to_lowercase().contains(needle)
}

/// Turns the last lines a child printed before it exited into a typed
/// error, when they say why (host key, authentication). `None`: nothing
/// recognised, the caller reports an early exit with the lines.
pub fn classify_exit(
    method: &str,
    lines: &[String],
    auth: Auth,
    timeout: Duration,
) -> Option<ConnectError> {
    let find = |needles: &[&str]| -> Option<String> {
        lines
            .iter()
            .find(|l| needles.iter().any(|n| has(l, n)))
            .map(|l| l.trim().to_string())
    };
    // Host keys (ssh): the most specific line first.
    if let Some(detail) = find(&[
        "host key is known",
        "remote host identification has changed",
        "host key for",
        "host key verification failed",
    ]) {
        let detail = if has(&detail, "identification has changed") {
            find(&["host key for"])
                .map(|l| format!("{detail} ({l})"))
                .unwrap_or(detail)
        } else {
            detail
        };
        return Some(ConnectError::HostKeyRefused { detail });
    }
    let method = method.to_string();
    if find(&[
        "a password is required",
        "a terminal is required to read the password",
        "no askpass program",
    ])
    .is_some()
    {
        return Some(ConnectError::PasswordRequired { method });
    }
    if let Some(detail) = find(&[
        "permission denied",
        "authentication failure",
        "incorrect password",
        "sorry, try again",
    ]) {
        return Some(if auth.password_sent {
            ConnectError::PasswordRefused { method }
        } else if auth.password_given || method == "ssh" {
            ConnectError::AuthFailed { method, detail }
        } else {
            ConnectError::PasswordRequired { method }
        });
    }
    if let Some(detail) = find(&[
        "is not in the sudoers file",
        "is not allowed to execute",
        "may not run sudo",
    ]) {
        return Some(ConnectError::AuthFailed { method, detail });
    }
    if method == "ssh" && find(&["timed out"]).is_some() {
        return Some(ConnectError::Timeout {
            stage: "ssh to connect",
            after: timeout,
            stderr: lines.to_vec(),
        });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prompt(s: &str) -> bool {
        PromptRules::default().ends_with_prompt(s)
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
        let custom = PromptRules {
            custom: Some("[econtext-sudo] xyz".into()),
        };
        assert!(custom.ends_with_prompt("\r\n[econtext-sudo] xyz"));
    }

    #[test]
    fn scanner_reports_each_prompt_once_across_splits() {
        let rules = PromptRules::default();
        let mut s = PromptScanner::default();
        assert!(!s.feed(&rules, b"[sudo] pass"));
        assert!(s.feed(&rules, b"word for bob: "));
        assert!(!s.feed(&rules, b"\r\n"));
        assert!(!s.feed(&rules, b"Sorry, try again.\r\n"));
        assert!(s.feed(&rules, b"[sudo] password for bob: "));
        // Bounded.
        for _ in 0..1000 {
            s.feed(&rules, "é0123456789".as_bytes());
        }
        assert!(s.text.len() <= 4 * MAX_PROMPT_LINE + 20);
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
        let l = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let e = classify_exit(
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
            classify_exit(
                "ssh",
                &l(&["root@h: Permission denied (publickey)."]),
                none,
                t
            ),
            Some(ConnectError::AuthFailed { .. })
        ));
        assert!(matches!(
            classify_exit("ssh", &l(&["Permission denied (password)."]), sent, t),
            Some(ConnectError::PasswordRefused { .. })
        ));
        assert!(matches!(
            classify_exit("sudo", &l(&["sudo: a password is required"]), none, t),
            Some(ConnectError::PasswordRequired { .. })
        ));
        assert!(matches!(
            classify_exit("su", &l(&["su: Authentication failure"]), sent, t),
            Some(ConnectError::PasswordRefused { .. })
        ));
        assert!(matches!(
            classify_exit(
                "ssh",
                &l(&["Connection timed out during banner exchange"]),
                none,
                t
            ),
            Some(ConnectError::Timeout { .. })
        ));
        assert_eq!(classify_exit("local", &l(&["boom"]), none, t), None);
    }
}
