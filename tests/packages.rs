//! Real PyPI packages through the importer: wheels downloaded at test
//! time (requests with its dependencies, jinja2, attrs, click,
//! python-dateutil with tzdata, pygments, rich, pytz, packaging), unpacked
//! where only root can read them, and called from a child running as
//! `nobody` that has none of them locally, under every interpreter each
//! package supports. The first call into requests and into rich costs at
//! most 3 GET_MODULE round trips. No registry: a loud SKIP.

mod common;

use std::path::Path;

use common::pypi::{nobody_python, private_dir, site_for};
use common::*;
use econtext::{Master, MasterOptions};
use serde_json::{json, Value};

fn requests_so_far(master: &Master) -> u64 {
    master.importer_stats().snapshot()[0].1
}

fn bytes_so_far(master: &Master) -> u64 {
    master.importer_stats().snapshot()[2].1
}

/// Every check of one interpreter; the failures, not the first only.
async fn check_interpreter(site: &Path, child: &Path, version: &str) -> Vec<String> {
    let py2 = version.starts_with("2.");
    let mut fails = Vec::new();
    let cap = Capture::default();
    let asked = |cap: &Capture| -> String {
        cap.text()
            .lines()
            .filter(|l| l.contains("serving module") || l.contains("module not found"))
            .map(|l| {
                let name = l.split(" name=").nth(1).unwrap_or(l);
                name.split(' ').next().unwrap_or(name).to_string()
            })
            .collect::<Vec<_>>()
            .join("; ")
    };
    let master = Master::new(
        MasterOptions::default()
            .module_path(vec![site.to_path_buf()])
            .log(cap.logger()),
    );
    let ctx = match master.local(local(child.to_str().unwrap())).await {
        Ok(c) => c,
        Err(e) => return vec![format!("{version}: connect as nobody: {e}")],
    };
    let who: Vec<u32> = match ctx.call("ecprobe", "whoami", ()).await {
        Ok(w) => w,
        Err(e) => return vec![format!("{version}: ecprobe.whoami: {e}")],
    };
    assert_eq!(who, [65534, 65534], "{version}: the child runs as nobody");
    let readable: bool = ctx
        .call("ecprobe", "can_list", (site.to_str().unwrap(),))
        .await
        .unwrap();
    assert!(!readable, "{version}: the child cannot read the packages");

    // The first call into requests: at most 3 round trips.
    let (r0, b0) = (requests_so_far(&master), bytes_so_far(&master));
    let t0 = std::time::Instant::now();
    match ctx
        .call::<String>(
            "requests.utils",
            "requote_uri",
            ("http://example.com/a b?q=%zz",),
        )
        .await
    {
        Ok(v) if v == "http://example.com/a%20b?q=%25zz" => {}
        other => fails.push(format!("{version}: requests.utils.requote_uri: {other:?}")),
    }
    let trips = requests_so_far(&master) - r0;
    eprintln!(
        "{version}: first call into requests: {trips} GET_MODULE, {} KB, {:.0} ms",
        (bytes_so_far(&master) - b0) / 1024,
        t0.elapsed().as_secs_f64() * 1e3
    );
    if trips > 3 {
        fails.push(format!(
            "{version}: requests cost {trips} round trips (at most 3): {}",
            asked(&cap)
        ));
    }

    let checks: Vec<(&str, Value, bool)> = vec![
        ("certifi_pem", json!(null), true),
        ("paris_offset", json!(7200), true),
        ("tokyo_offset", json!(["Asia/Tokyo", 32400]), true),
        ("jinja", json!("Hello WORLD! 1 2"), true),
        ("click_run", json!([0, "hi bob\nhi bob\n"]), true),
        ("attrs_class", json!(["Point(x=1, y=0)", true, 0]), true),
        ("versions", json!([true, "1.0.0rc1", true]), true),
        ("highlight", json!(null), true),
        ("resources_api", json!(null), true),
    ];
    for (name, want, supported) in checks {
        if !supported {
            continue;
        }
        let got = ctx.call::<Value>("ecprobe", name, ()).await;
        let ok = match (&got, name) {
            (Ok(v), "certifi_pem") => v[0].as_u64().unwrap_or(0) > 100_000 && v[1] == json!(true),
            (Ok(v), "highlight") => v
                .as_str()
                .is_some_and(|s| s.contains("<span class=\"nb\">print</span>")),
            (Ok(v), "resources_api") => {
                let ok = v.as_object().is_some_and(|m| {
                    m.values().all(|x| x.as_bool() != Some(false))
                        && m.get("get_data").and_then(Value::as_u64).unwrap_or(0) > 100_000
                });
                ok && (version < "3.9"
                    || v["tzif"] == json!("TZif") && v["as_file"] == json!("TZif"))
            }
            (Ok(v), _) => *v == want,
            _ => false,
        };
        if !ok {
            fails.push(format!("{version}: ecprobe.{name}: {got:?}"));
        }
    }

    // No code went down that the child has itself (its stdlib: its own
    // site-packages are empty). Records saying a name is not on the master
    // may name another version's stdlib (urlparse for 3.x): not counted.
    let sent: Vec<String> = cap
        .text()
        .lines()
        .filter_map(|l| l.split(" served=").nth(1))
        .flat_map(|r| r.split(' ').next().unwrap_or("").split(','))
        .filter(|n| !n.is_empty() && !n.contains('/'))
        .map(str::to_string)
        .collect();
    match ctx
        .call::<Vec<String>>("ecprobe", "local_of", (&sent,))
        .await
    {
        Ok(local) if local.is_empty() && sent.len() > 10 => {}
        other => fails.push(format!(
            "{version}: modules sent that the child has locally: {other:?} (of {} sent)",
            sent.len()
        )),
    }

    if !py2 {
        let fresh = master.local(local(child.to_str().unwrap())).await.unwrap();
        let seen = asked(&cap).len();
        let (r0, b0) = (requests_so_far(&master), bytes_so_far(&master));
        let t0 = std::time::Instant::now();
        let got = fresh.call::<String>("ecprobe", "rich_render", ()).await;
        let trips = requests_so_far(&master) - r0;
        eprintln!(
            "{version}: first call into rich: {trips} GET_MODULE, {} KB, {:.0} ms",
            (bytes_so_far(&master) - b0) / 1024,
            t0.elapsed().as_secs_f64() * 1e3
        );
        match got {
            Ok(s) if s.contains("\u{1b}[1;31malert\u{1b}[0m ok") => {}
            other => fails.push(format!("{version}: rich Console render: {other:?}")),
        }
        // ecprobe itself is one of them.
        if trips > 3 + 1 {
            fails.push(format!(
                "{version}: rich cost {trips} round trips (at most 3): {}",
                &asked(&cap)[seen..]
            ));
        }
    }
    fails
}

#[test]
fn real_pypi_packages_for_a_child_running_as_nobody() {
    let dest = private_dir("pkgs");
    let mut fails = Vec::new();
    let mut covered = Vec::new();
    // ECONTEXT_PYPI_ONLY=3.11 narrows the run to matching versions.
    let only = std::env::var("ECONTEXT_PYPI_ONLY").unwrap_or_default();
    for (python, version) in interpreters() {
        if !version.starts_with(&only) {
            continue;
        }
        let site = match site_for(&python, &version, &dest) {
            Ok(s) => s,
            Err(e) => {
                skip(&format!("real packages under Python {version}: cannot download wheels from the package registry: {e}"));
                continue;
            }
        };
        let child = match nobody_python(&python, &version) {
            Ok(c) => c,
            Err(e) => {
                skip(&format!(
                    "real packages under Python {version}: cannot run a child as nobody: {e}"
                ));
                continue;
            }
        };
        let f = actix_rt::System::new().block_on(check_interpreter(&site, &child, &version));
        // nobody_python's directory (its scripts and the mount point).
        if let Some(base) = child.parent() {
            let _ = std::fs::remove_dir_all(base);
        }
        covered.push(version);
        fails.extend(f);
    }
    eprintln!("covered: {covered:?}");
    let _ = std::fs::remove_dir_all(&dest);
    assert!(fails.is_empty(), "{}", fails.join("\n"));
}
