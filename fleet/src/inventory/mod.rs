//! Ansible inventories (INI and YAML, the subset real fleets use), host
//! patterns, and the targets they describe.
//!
//! [`Inventory`] holds hosts (in file order), groups with `children` and
//! variables; [`Inventory::select`] applies a host pattern;
//! [`Inventory::target`] turns a host and its variables into a
//! [`crate::Target`] (see `vars`).

mod ini;
mod pattern;
mod range;
mod vars;
mod yaml;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

pub use range::expand as expand_range;
pub use vars::{HostOptions, PasswordSource};

/// Variables: names to values (YAML scalars kept as their text).
pub type Vars = BTreeMap<String, String>;

/// A group: its own hosts, its child groups, its variables.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Group {
    pub hosts: Vec<String>,
    pub children: Vec<String>,
    pub vars: Vars,
}

/// A bad inventory file, pattern or variable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InventoryError(pub String);

impl From<String> for InventoryError {
    fn from(s: String) -> Self {
        InventoryError(s)
    }
}

/// Hosts and groups from one or more inventory files.
#[derive(Debug, Clone, Default)]
pub struct Inventory {
    /// Host names in the order they first appear.
    order: Vec<String>,
    host_vars: BTreeMap<String, Vars>,
    groups: BTreeMap<String, Group>,
}

impl Inventory {
    pub fn new() -> Inventory {
        Inventory::default()
    }

    /// Reads a file, YAML when its name ends in `.yml`/`.yaml` or its text
    /// starts like YAML, else INI. Several files merge.
    pub fn load(&mut self, path: &Path) -> Result<(), InventoryError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| InventoryError(format!("cannot read {}: {e}", path.display())))?;
        let name = path.to_string_lossy();
        let yaml = name.ends_with(".yml")
            || name.ends_with(".yaml")
            || text.trim_start().starts_with("---")
            || text
                .lines()
                .map(str::trim)
                .find(|l| !l.is_empty() && !l.starts_with('#'))
                .is_some_and(|l| l.ends_with(':') && !l.starts_with('['));
        let r = if yaml {
            yaml::parse(self, &text)
        } else {
            ini::parse(self, &text)
        };
        r.map_err(|e| InventoryError(format!("{}: {e}", path.display())))
    }

    /// Parses INI text (for tests and callers with text in hand).
    pub fn parse_ini(&mut self, text: &str) -> Result<(), InventoryError> {
        ini::parse(self, text).map_err(InventoryError)
    }

    pub fn parse_yaml(&mut self, text: &str) -> Result<(), InventoryError> {
        yaml::parse(self, text).map_err(InventoryError)
    }

    pub fn hosts(&self) -> &[String] {
        &self.order
    }

    pub fn groups(&self) -> &BTreeMap<String, Group> {
        &self.groups
    }

    pub fn contains_host(&self, name: &str) -> bool {
        self.host_vars.contains_key(name)
    }

    pub(crate) fn add_host(&mut self, name: &str, vars: Vars, group: Option<&str>) {
        if !self.host_vars.contains_key(name) {
            self.order.push(name.to_string());
        }
        self.host_vars
            .entry(name.to_string())
            .or_default()
            .extend(vars);
        if let Some(g) = group {
            let g = self.group_mut(g);
            if !g.hosts.iter().any(|h| h == name) {
                g.hosts.push(name.to_string());
            }
        }
    }

    pub(crate) fn group_mut(&mut self, name: &str) -> &mut Group {
        self.groups.entry(name.to_string()).or_default()
    }

    pub(crate) fn add_child(&mut self, parent: &str, child: &str) {
        self.group_mut(child);
        let p = self.group_mut(parent);
        if !p.children.iter().any(|c| c == child) {
            p.children.push(child.to_string());
        }
    }

    /// Every host of `group` and its descendants, in inventory order.
    pub fn group_hosts(&self, group: &str) -> Vec<String> {
        if group == "all" {
            return self.order.clone();
        }
        let mut set = BTreeSet::new();
        let mut seen = BTreeSet::new();
        let mut stack = vec![group.to_string()];
        while let Some(g) = stack.pop() {
            if !seen.insert(g.clone()) {
                continue;
            }
            if let Some(gr) = self.groups.get(&g) {
                set.extend(gr.hosts.iter().cloned());
                stack.extend(gr.children.iter().cloned());
            }
        }
        self.order
            .iter()
            .filter(|h| set.contains(*h))
            .cloned()
            .collect()
    }

    /// A host's variables as Ansible resolves them: `all`, then its groups
    /// from the outermost to the innermost (siblings by name), then the
    /// host's own.
    pub fn host_vars(&self, host: &str) -> Vars {
        let mut depth: BTreeMap<String, usize> = BTreeMap::new();
        for (name, g) in &self.groups {
            if g.hosts.iter().any(|h| h == host) {
                self.ancestors(name, 1, &mut depth);
            }
        }
        let mut groups: Vec<(usize, String)> = depth.into_iter().map(|(g, d)| (d, g)).collect();
        // Deepest distance from the host last... ancestors have larger
        // distances: apply the largest distance first.
        groups.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        let mut vars = self
            .groups
            .get("all")
            .map(|g| g.vars.clone())
            .unwrap_or_default();
        for (_, g) in groups {
            if g != "all" {
                vars.extend(self.groups[&g].vars.clone());
            }
        }
        if let Some(own) = self.host_vars.get(host) {
            vars.extend(own.clone());
        }
        vars
    }

    /// Records `group` and its ancestors with their largest distance.
    fn ancestors(&self, group: &str, d: usize, out: &mut BTreeMap<String, usize>) {
        if d > 64 {
            return; // a cycle of children
        }
        let e = out.entry(group.to_string()).or_insert(0);
        if *e >= d {
            return;
        }
        *e = d;
        for (name, g) in &self.groups {
            if g.children.iter().any(|c| c == group) {
                self.ancestors(name, d + 1, out);
            }
        }
    }

    /// The hosts a pattern selects, in inventory order.
    pub fn select(&self, pattern: &str) -> Result<Vec<String>, InventoryError> {
        pattern::select(self, pattern).map_err(InventoryError)
    }
}

#[cfg(test)]
mod tests;
