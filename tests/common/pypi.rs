//! Real PyPI packages for the importer tests: wheels downloaded at test
//! time with each interpreter's own pip (so each gets the versions it
//! supports), unpacked into a directory only root can read, and a way to
//! run a child as `nobody` that cannot see them nor its own
//! site-packages (a mount namespace and a uid switch).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// What the tests call into; rich needs 3.6+.
pub const PACKAGES: &[&str] = &[
    "requests",
    "jinja2",
    "attrs",
    "click",
    "python-dateutil",
    "tzdata",
    "pygments",
    "pytz",
    "packaging",
    "rich",
];

fn run(cmd: &mut Command) -> Result<String, String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        let err = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = err.lines().rev().take(3).collect();
        Err(format!(
            "{:?} failed: {}",
            cmd.get_program(),
            tail.join(" / ")
        ))
    }
}

/// A directory only root can read, made once per test process.
pub fn private_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("econtext-pypi-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700)).unwrap();
    d
}

/// Downloads the wheels `python` supports (pip's cache makes a second
/// run cheap) and unpacks them into `dest/site`. Err says why (no
/// registry, no pip): the caller prints a loud SKIP.
pub fn site_for(python: &Path, version: &str, dest: &Path) -> Result<PathBuf, String> {
    let wheels = dest.join(format!("wheels-{version}"));
    let site = dest.join(format!("site-{version}"));
    let mut pkgs: Vec<&str> = PACKAGES.to_vec();
    if version.starts_with("2.") {
        pkgs.retain(|p| *p != "rich");
    }
    run(Command::new("timeout")
        .arg("600")
        .arg(python)
        .args(["-m", "pip", "download", "--disable-pip-version-check", "-q"])
        .args(["--only-binary=:all:", "-d"])
        .arg(&wheels)
        .args(&pkgs))?;
    let unzip = "import sys, zipfile, os\n\
                 d = sys.argv[1]\n\
                 for w in sorted(os.listdir(d)):\n    zipfile.ZipFile(os.path.join(d, w)).extractall(sys.argv[2])\n";
    run(Command::new(python)
        .args(["-c", unzip])
        .arg(&wheels)
        .arg(&site))?;
    std::fs::write(site.join("ecprobe.py"), include_str!("ecprobe.py")).unwrap();
    Ok(site)
}

/// A program that runs `python` as `nobody` in a mount namespace where
/// the interpreter's own site-packages are empty (so nothing is imported
/// locally that the master should serve), the interpreter reachable at
/// a path nobody can traverse to. Err says why not (no unshare, no
/// mount permission).
pub fn nobody_python(python: &Path, tag: &str) -> Result<PathBuf, String> {
    let info = run(Command::new(python).args([
        "-c",
        "import sys, site, sysconfig\n\
         print(sys.prefix)\n\
         for p in set(getattr(site, 'getsitepackages', lambda: [])() + [sysconfig.get_paths()['purelib']]):\n    print(p)",
    ]))?;
    let mut lines = info.lines();
    let prefix = PathBuf::from(lines.next().ok_or("no prefix")?);
    let sites: Vec<PathBuf> = lines.map(PathBuf::from).filter(|p| p.is_dir()).collect();
    let base = std::env::temp_dir().join(format!("econtext-nobody-{tag}-{}", std::process::id()));
    let mnt = base.join("py");
    std::fs::create_dir_all(&mnt).unwrap();
    for d in [&base, &mnt] {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let rel_exe = python
        .strip_prefix(&prefix)
        .map_err(|_| "interpreter outside its prefix")?;
    let mut script = String::from("#!/bin/sh\nset -e\n");
    script.push_str(&format!(
        "mount --bind '{}' '{}'\n",
        prefix.display(),
        mnt.display()
    ));
    for s in &sites {
        let inside = match s.strip_prefix(&prefix) {
            Ok(r) => mnt.join(r),
            Err(_) => s.clone(),
        };
        script.push_str(&format!(
            "mount -t tmpfs -o size=1m none '{}'\n",
            inside.display()
        ));
    }
    // --enable-shared builds find libpython by an rpath into the prefix.
    script.push_str(&format!(
        "export LD_LIBRARY_PATH='{}'\n",
        mnt.join("lib").display()
    ));
    script.push_str(&format!(
        "exec setpriv --reuid=65534 --regid=65534 --clear-groups '{}' \"$@\"\n",
        mnt.join(rel_exe).display()
    ));
    let inner = base.join("inner.sh");
    std::fs::write(&inner, script).unwrap();
    let outer = base.join("python");
    std::fs::write(
        &outer,
        format!(
            "#!/bin/sh\nexec unshare --mount --propagation private '{}' \"$@\"\n",
            inner.display()
        ),
    )
    .unwrap();
    for f in [&inner, &outer] {
        std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let uid = run(Command::new(&outer).args(["-c", "import os; print(os.getuid())"]))?;
    if uid.trim() != "65534" {
        return Err(format!("the child runs as uid {}, not nobody", uid.trim()));
    }
    Ok(outer)
}
