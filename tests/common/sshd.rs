//! Fixtures for the ssh, sudo and su tests: a throwaway sshd on 127.0.0.1,
//! throwaway users with passwords, sudoers drop-ins. Each removes what it
//! made when dropped. They need root; [`missing`] says why a test cannot
//! run here, for a loud SKIP line.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

static SEQ: AtomicUsize = AtomicUsize::new(0);

/// Why these tests cannot run here (not root, a program missing), or None.
pub fn missing(programs: &[&str]) -> Option<String> {
    let uid = Command::new("id").arg("-u").output().map(|o| o.stdout);
    if !matches!(uid.as_deref().map(<[u8]>::trim_ascii), Ok(b"0")) {
        return Some("not root (run ./scripts/test as root)".into());
    }
    missing_programs(programs)
}

/// Which of `programs` (paths, or names on PATH) is missing, if any.
pub fn missing_programs(programs: &[&str]) -> Option<String> {
    for p in programs {
        let found = if p.starts_with('/') {
            Path::new(p).exists()
        } else {
            Command::new("sh")
                .args(["-c", &format!("command -v {p}")])
                .stdout(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false)
        };
        if !found {
            return Some(format!("{p} is not installed (./scripts/test installs it)"));
        }
    }
    None
}

/// Prints a loud `SKIP:` line, and appends it to the file named by
/// `ECONTEXT_SKIP_LOG` when set: libtest hides a passing test's output, so
/// `scripts/test` collects the lines there and prints them all at the end.
pub fn skip(reason: &str) {
    let line = format!("SKIP: {reason}");
    eprintln!("{line}");
    if let Some(path) = std::env::var_os("ECONTEXT_SKIP_LOG") {
        use std::io::Write;
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(path)
        {
            let _ = writeln!(f, "{line}");
        }
    }
}

/// Prints the loud SKIP line; true if the test must return. `programs`
/// are needed, and root.
pub fn skip_unless(programs: &[&str], test: &str) -> bool {
    skip_if(missing(programs), test)
}

/// Like [`skip_unless`] for tests that need no root.
pub fn skip_unless_installed(programs: &[&str], test: &str) -> bool {
    skip_if(missing_programs(programs), test)
}

fn skip_if(why: Option<String>, test: &str) -> bool {
    match why {
        Some(why) => {
            skip(&format!("{test}: {why}"));
            true
        }
        None => false,
    }
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A fresh temporary directory, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let d = std::env::temp_dir().join(format!(
            "econtext-{tag}-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        // Readable by the test users (their keys live here).
        std::fs::set_permissions(&d, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        TempDir(d)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl std::ops::Deref for TempDir {
    type Target = PathBuf;
    fn deref(&self) -> &PathBuf {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Generates an ed25519 key pair at `path` (and `path.pub`).
pub fn keygen(path: &Path) {
    run(Command::new("ssh-keygen").args([
        "-q",
        "-t",
        "ed25519",
        "-N",
        "",
        "-C",
        "econtext-test",
        "-f",
        path.to_str().unwrap(),
    ]));
}

/// A free TCP port on 127.0.0.1 (free when this returns).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// An sshd on 127.0.0.1 with its own host key, config and log, that lets
/// in the user key [`Sshd::key`] for every user (root included).
pub struct Sshd {
    pub port: u16,
    /// The client's private key (authorized for every user).
    pub key: PathBuf,
    /// The server's host public key line, for a known_hosts file.
    pub host_pub: String,
    pub log: PathBuf,
    child: Child,
    pub dir: TempDir,
}

/// sshd takes at most this many `ListenAddress` lines.
pub const MAX_LISTEN_ADDRESSES: usize = 16;

impl Sshd {
    pub fn start(password_auth: bool) -> Sshd {
        Sshd::start_on(&["127.0.0.1"], free_port(), password_auth)
    }

    /// One sshd listening on `port` of each of `addresses` (at most
    /// [`MAX_LISTEN_ADDRESSES`]): that many distinct loopback "hosts".
    pub fn start_on(addresses: &[&str], port: u16, password_auth: bool) -> Sshd {
        assert!(
            !addresses.is_empty() && addresses.len() <= MAX_LISTEN_ADDRESSES,
            "sshd listens on 1 to {MAX_LISTEN_ADDRESSES} addresses"
        );
        let dir = TempDir::new("sshd");
        let host_key = dir.path("host_key");
        let key = dir.path("id_ed25519");
        keygen(&host_key);
        keygen(&key);
        std::fs::copy(dir.path("id_ed25519.pub"), dir.path("authorized_keys")).unwrap();
        let host_pub = std::fs::read_to_string(dir.path("host_key.pub")).unwrap();
        // sshd's privilege separation directory.
        let _ = std::fs::create_dir_all("/run/sshd");
        let log = dir.path("sshd.log");
        let config = dir.path("sshd_config");
        let listen: String = addresses
            .iter()
            .map(|a| format!("ListenAddress {a}\n"))
            .collect();
        std::fs::write(
            &config,
            format!(
                "Port {port}\n{listen}HostKey {hk}\nUsePAM no\n\
                 StrictModes no\nPermitRootLogin yes\nPubkeyAuthentication yes\n\
                 AuthorizedKeysFile {dir}/authorized_keys\n\
                 PasswordAuthentication {pw}\nKbdInteractiveAuthentication no\n\
                 PidFile {dir}/sshd.pid\nLogLevel VERBOSE\nMaxStartups 100\n",
                hk = host_key.display(),
                dir = dir.0.display(),
                pw = if password_auth { "yes" } else { "no" },
            ),
        )
        .unwrap();
        let child = Command::new("/usr/sbin/sshd")
            .args(["-D", "-f"])
            .arg(&config)
            .arg("-E")
            .arg(&log)
            .stdin(Stdio::null())
            .spawn()
            .expect("start sshd");
        let mut sshd = Sshd {
            port,
            key,
            host_pub,
            log,
            child,
            dir,
        };
        let end = Instant::now() + Duration::from_secs(10);
        while Instant::now() < end {
            let last = addresses[addresses.len() - 1];
            if std::net::TcpStream::connect((last, port)).is_ok() {
                return sshd;
            }
            if let Ok(Some(st)) = sshd.child.try_wait() {
                panic!("sshd exited ({st}): {}", sshd.log_text());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("sshd did not listen within 10 s: {}", sshd.log_text());
    }

    /// The daemon's pid (its sessions are its children).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A known_hosts line for this server.
    pub fn known_hosts_line(&self) -> String {
        let mut f = self.host_pub.split_whitespace();
        format!(
            "[127.0.0.1]:{} {} {}\n",
            self.port,
            f.next().unwrap(),
            f.next().unwrap()
        )
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A throwaway user with a home and a password; removed on drop.
pub struct TestUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub password: String,
}

impl TestUser {
    /// `tag`: a few letters naming the test.
    pub fn create(tag: &str) -> TestUser {
        let name = format!(
            "ec{tag}{}x{}",
            std::process::id() % 100_000,
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let _ = Command::new("userdel").args(["-r", "-f", &name]).output();
        run(Command::new("useradd").args(["-m", "-s", "/bin/sh", &name]));
        let password = format!(
            "Pw-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let mut c = Command::new("chpasswd")
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        c.stdin
            .take()
            .unwrap()
            .write_all(format!("{name}:{password}\n").as_bytes())
            .unwrap();
        assert!(c.wait().unwrap().success(), "chpasswd {name}");
        let id = |flag: &str| -> u32 {
            let out = Command::new("id").args([flag, &name]).output().unwrap();
            String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
        };
        TestUser {
            uid: id("-u"),
            gid: id("-g"),
            name,
            password,
        }
    }

    /// A command run as this user (setpriv, no password, clean groups).
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("setpriv");
        c.arg(format!("--reuid={}", self.uid))
            .arg(format!("--regid={}", self.gid))
            .arg("--init-groups")
            .arg("--")
            .arg(program)
            .env("HOME", format!("/home/{}", self.name))
            .env("USER", &self.name)
            .env("LOGNAME", &self.name)
            .current_dir("/");
        c
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        let _ = Command::new("userdel")
            .args(["-r", "-f", &self.name])
            .output();
    }
}

/// A file under /etc/sudoers.d/, removed on drop.
pub struct Sudoers(PathBuf);

impl Sudoers {
    pub fn add(tag: &str, content: &str) -> Sudoers {
        let path = PathBuf::from(format!(
            "/etc/sudoers.d/econtext-test-{tag}-{}",
            std::process::id()
        ));
        std::fs::write(&path, content).unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o440))
            .unwrap();
        run(Command::new("visudo").args(["-c", "-q", "-f"]).arg(&path));
        Sudoers(path)
    }
}

impl Drop for Sudoers {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
