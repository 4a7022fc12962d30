use econtext_bootstrap::{HostKeyCheck, Method};

use super::*;

const INI: &str = r#"
# a comment
lonely ansible_host=10.0.0.9

[web]
web[01:03] ansible_user=deploy
web-extra:2200 ansible_python_interpreter=/usr/bin/python2.7

[db]
db-[a:b] ansible_become=yes ansible_become_user=postgres

[prod:children]
web
db

[prod:vars]
ansible_user=ops
ansible_ssh_common_args='-o ProxyJump=jump -J other'

[all:vars]
ansible_port=22
"#;

fn ini() -> Inventory {
    let mut inv = Inventory::new();
    inv.parse_ini(INI).unwrap();
    inv
}

#[test]
fn ini_groups_children_ranges_and_vars() {
    let inv = ini();
    assert_eq!(
        inv.hosts(),
        [
            "lonely",
            "web01",
            "web02",
            "web03",
            "web-extra",
            "db-a",
            "db-b"
        ]
    );
    assert_eq!(inv.group_hosts("prod").len(), 6);
    let v = inv.host_vars("web02");
    // Host vars beat group vars; a child group's vars beat its parent's.
    assert_eq!(v["ansible_user"], "deploy");
    assert_eq!(v["ansible_port"], "22");
    assert_eq!(inv.host_vars("db-a")["ansible_user"], "ops");
    assert_eq!(inv.host_vars("web-extra")["ansible_port"], "2200");
}

#[test]
fn patterns_union_intersection_exclusion_globs_and_files() {
    let inv = ini();
    assert_eq!(inv.select("all").unwrap().len(), 7);
    assert_eq!(inv.select("web:db").unwrap().len(), 6);
    assert_eq!(inv.select("prod:&db").unwrap(), ["db-a", "db-b"]);
    assert_eq!(inv.select("prod:!web").unwrap(), ["db-a", "db-b"]);
    assert_eq!(inv.select("web0*").unwrap(), ["web01", "web02", "web03"]);
    assert_eq!(
        inv.select("db-?,lonely").unwrap(),
        ["lonely", "db-a", "db-b"]
    );
    assert_eq!(inv.select("!prod").unwrap(), ["lonely"]);
    assert!(inv.select("nosuch").is_err());
    let f = std::env::temp_dir().join(format!("econtext-fleet-hosts-{}", std::process::id()));
    std::fs::write(&f, "web02\n\ndb-b\n").unwrap();
    assert_eq!(
        inv.select(&format!("@{}", f.display())).unwrap(),
        ["web02", "db-b"]
    );
    std::fs::write(&f, "ghost\n").unwrap();
    assert!(inv.select(&format!("@{}", f.display())).is_err());
    let _ = std::fs::remove_file(&f);
}

#[test]
fn targets_from_variables() {
    let inv = ini();
    let t = inv.target("web01", &HostOptions::default()).unwrap();
    assert!(t.discover_python);
    let Method::Ssh(o) = &t.hops[0].method else {
        panic!()
    };
    assert_eq!(
        (o.host.as_str(), o.port, o.user.as_deref()),
        ("web01", Some(22), Some("deploy"))
    );
    assert_eq!(o.ssh_options, ["ProxyJump=jump", "ProxyJump=other"]);
    assert_eq!(o.python, econtext_bootstrap::first_stage::DISCOVER_PYTHON);
    let t = inv.target("db-a", &HostOptions::default()).unwrap();
    assert_eq!(t.hops.len(), 2);
    assert!(matches!(&t.hops[1].method, Method::Sudo(s) if s.user == "postgres"));
    let t = inv.target("web-extra", &HostOptions::default()).unwrap();
    assert!(!t.discover_python);
    let opts = HostOptions {
        check_host_keys: Some(HostKeyCheck::Ignore),
        ..Default::default()
    };
    let Method::Ssh(o) = &inv.target("lonely", &opts).unwrap().hops[0].method else {
        panic!()
    };
    assert_eq!(
        (o.host.as_str(), o.check_host_keys),
        ("10.0.0.9", HostKeyCheck::Ignore)
    );
}

#[test]
fn passwords_only_from_a_named_environment_variable() {
    let mut inv = Inventory::new();
    inv.parse_ini(
        "a ansible_password=hunter2\n\
         b ansible_password=\"{{ lookup('env', 'ECONTEXT_FLEET_TEST_PW') }}\"\n\
         c ansible_become=true ansible_become_method=su ansible_become_password=env:ECONTEXT_FLEET_TEST_PW\n\
         d ansible_password=env:ECONTEXT_FLEET_UNSET\n",
    )
    .unwrap();
    std::env::set_var("ECONTEXT_FLEET_TEST_PW", "s3cret");
    let e = inv.target("a", &HostOptions::default()).unwrap_err();
    assert!(e.to_string().contains("environment variable"), "{e}");
    assert!(!e.to_string().contains("hunter2"), "{e}");
    let Method::Ssh(o) = &inv.target("b", &HostOptions::default()).unwrap().hops[0].method else {
        panic!()
    };
    assert_eq!(o.password.as_ref().map(|p| p.expose()), Some("s3cret"));
    let t = inv.target("c", &HostOptions::default()).unwrap();
    assert!(matches!(&t.hops[1].method, Method::Su(s) if s.password.is_some()));
    assert!(inv.target("d", &HostOptions::default()).is_err());
}

#[test]
fn yaml_inventory_with_nested_children_and_via_chains() {
    let mut inv = Inventory::new();
    inv.parse_yaml(
        r#"
all:
  vars:
    ansible_port: 2222
  children:
    bastions:
      hosts:
        bastion:
          ansible_host: 127.0.0.1
    dcs:
      hosts:
        dc1:
          econtext_via: bastion
    racks:
      hosts:
        rack[1:2]:
          econtext_via: dc1
          ansible_connection: local
"#,
    )
    .unwrap();
    assert_eq!(inv.hosts(), ["bastion", "dc1", "rack1", "rack2"]);
    let t = inv.target("rack2", &HostOptions::default()).unwrap();
    let kinds: Vec<&str> = t.hops.iter().map(|h| h.method.kind()).collect();
    assert_eq!(kinds, ["ssh", "ssh", "local"]);
    assert_eq!(t.hops[0].name.as_deref(), Some("bastion"));
    let Method::Ssh(o) = &t.hops[1].method else {
        panic!()
    };
    assert_eq!((o.host.as_str(), o.port), ("dc1", Some(2222)));
    // A shared prefix: both racks start with the same two hops.
    let t1 = inv.target("rack1", &HostOptions::default()).unwrap();
    assert_eq!(t.prefix_key(2), t1.prefix_key(2));
    assert_ne!(t.prefix_key(3), t1.prefix_key(3));

    let mut bad = Inventory::new();
    bad.parse_yaml(
        "all:\n  hosts:\n    a:\n      econtext_via: b\n    b:\n      econtext_via: a\n",
    )
    .unwrap();
    assert!(bad
        .target("a", &HostOptions::default())
        .unwrap_err()
        .to_string()
        .contains("loops"));
    assert!(Inventory::new().parse_yaml("all:\n  hosts: [a]\n").is_err());
}
