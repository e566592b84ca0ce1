//! The layers of `ARCHITECTURE.md`, checked on the source: the module graph has no cycle, the
//! domain imports no I/O (no `mongodb`, `bson`, `actix-*` or `tokio`) and nothing of the
//! layers above it, the store nothing of the service or HTTP layers, and the service nothing
//! of HTTP.
//!
//! The graph: a node per source file (its module); an edge from a module to every module
//! whose items it names (in `use` declarations and in paths written in code, after `crate::`,
//! `super::` and `self::` are resolved), except between a module and its own ancestors or
//! descendants (a file declares and re-exports its children, and they use what it shares).
//! Test code (`#[cfg(test)]` items and `tests` modules) is left out.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use syn::visit::Visit;

/// Crates the domain must not import.
const IO_CRATES: &[&str] = &["mongodb", "bson", "tokio", "actix_web", "actix_cors"];

/// Layers of the crate, lowest first, and the top-level modules of each; a module may use only
/// its own layer and those below.
const LAYERS: &[(&str, &[&str])] = &[
    ("domain", &["domain"]),
    (
        "store",
        &["store", "error", "auth", "config", "context", "telemetry"],
    ),
    ("service", &["service"]),
    ("http", &["http", "startup", "cli", "demo"]),
];

/// A module: its path from the crate root (`["store", "batch"]`).
type Module = Vec<String>;

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every source file of the library and its module path.
fn modules(dir: &Path, root: &Path, out: &mut BTreeMap<Module, PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir).unwrap().flatten().collect();
    entries.sort_by_key(|e| e.path());
    for e in entries {
        let p = e.path();
        if p.is_dir() {
            modules(&p, root, out);
            continue;
        }
        if p.extension().is_none_or(|x| x != "rs") {
            continue;
        }
        let rel = p.strip_prefix(root).unwrap().with_extension("");
        let mut m: Module = rel
            .iter()
            .map(|c| c.to_string_lossy().into_owned())
            .collect();
        match m.last().map(String::as_str) {
            Some("lib") if m.len() == 1 => m.clear(),
            Some("main") if m.len() == 1 => continue, // the binary
            Some("mod") => {
                m.pop();
            }
            _ => {}
        }
        if m.iter().any(|s| s == "tests") {
            continue;
        }
        out.insert(m, p);
    }
}

fn is_test(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|a| {
        a.path().is_ident("cfg")
            && a.parse_args::<syn::Meta>()
                .is_ok_and(|m| m.path().is_ident("test"))
    })
}

/// The paths a file names, as written (`crate::a::b`, `super::c`, `mongodb::Client`), with
/// test code left out.
#[derive(Default)]
struct Names {
    paths: Vec<Vec<String>>,
}

impl Names {
    fn use_tree(&mut self, prefix: &mut Vec<String>, tree: &syn::UseTree) {
        match tree {
            syn::UseTree::Path(p) => {
                prefix.push(p.ident.to_string());
                self.use_tree(prefix, &p.tree);
                prefix.pop();
            }
            syn::UseTree::Name(n) => {
                let mut full = prefix.clone();
                if n.ident != "self" {
                    full.push(n.ident.to_string());
                }
                self.paths.push(full);
            }
            syn::UseTree::Rename(r) => {
                let mut full = prefix.clone();
                full.push(r.ident.to_string());
                self.paths.push(full);
            }
            syn::UseTree::Glob(_) => self.paths.push(prefix.clone()),
            syn::UseTree::Group(g) => {
                for t in &g.items {
                    self.use_tree(prefix, t);
                }
            }
        }
    }
}

impl<'ast> Visit<'ast> for Names {
    fn visit_item(&mut self, i: &'ast syn::Item) {
        let attrs = match i {
            syn::Item::Mod(m) => &m.attrs,
            syn::Item::Fn(f) => &f.attrs,
            syn::Item::Impl(x) => &x.attrs,
            syn::Item::Use(u) => &u.attrs,
            syn::Item::Struct(s) => &s.attrs,
            syn::Item::Const(c) => &c.attrs,
            _ => return syn::visit::visit_item(self, i),
        };
        if !is_test(attrs) {
            syn::visit::visit_item(self, i);
        }
    }

    fn visit_item_use(&mut self, u: &'ast syn::ItemUse) {
        let mut prefix = Vec::new();
        if u.leading_colon.is_some() {
            prefix.push(String::new());
        }
        self.use_tree(&mut prefix, &u.tree);
    }

    fn visit_path(&mut self, p: &'ast syn::Path) {
        self.paths
            .push(p.segments.iter().map(|s| s.ident.to_string()).collect());
        syn::visit::visit_path(self, p);
    }

    fn visit_macro(&mut self, m: &'ast syn::Macro) {
        // Paths inside macro calls (e.g. `doc! {}` values, `tracing` fields) are tokens; read
        // those that parse as expressions' paths.
        let tokens = m.tokens.to_string();
        for word in tokens.split(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':')) {
            if word.starts_with("crate::") || word.starts_with("super::") {
                self.paths
                    .push(word.split("::").map(str::to_owned).collect());
            }
        }
        syn::visit::visit_macro(self, m);
    }
}

/// The module `path` (as written in `from`) names, if it is one of the crate's: the longest
/// known module that prefixes it once `crate`, `super` and `self` are resolved.
fn resolve(from: &Module, path: &[String], known: &BTreeMap<Module, PathBuf>) -> Option<Module> {
    let mut abs: Vec<String> = match path.first().map(String::as_str) {
        Some("crate") => Vec::new(),
        Some("super") | Some("self") => from.clone(),
        _ => return None,
    };
    let mut rest = if path.first().is_some_and(|s| s == "crate") {
        &path[1..]
    } else {
        path
    };
    while let Some(first) = rest.first() {
        match first.as_str() {
            "super" => {
                abs.pop();
            }
            "self" => {}
            _ => break,
        }
        rest = &rest[1..];
    }
    abs.extend(rest.iter().cloned());
    (0..=abs.len())
        .rev()
        .map(|n| abs[..n].to_vec())
        .find(|m| known.contains_key(m))
}

fn nested(a: &Module, b: &Module) -> bool {
    a.starts_with(b) || b.starts_with(a)
}

fn show(m: &Module) -> String {
    if m.is_empty() {
        "crate".into()
    } else {
        m.join("/")
    }
}

struct Graph {
    edges: BTreeMap<Module, BTreeSet<Module>>,
    /// Names of other crates each module uses.
    externs: BTreeMap<Module, BTreeSet<String>>,
}

fn graph() -> Graph {
    let root = src();
    let mut known = BTreeMap::new();
    modules(&root, &root, &mut known);
    let mut edges: BTreeMap<Module, BTreeSet<Module>> = BTreeMap::new();
    let mut externs: BTreeMap<Module, BTreeSet<String>> = BTreeMap::new();
    for (m, file) in &known {
        let text = std::fs::read_to_string(file).unwrap();
        let ast = syn::parse_file(&text).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let mut names = Names::default();
        names.visit_file(&ast);
        for p in &names.paths {
            match resolve(m, p, &known) {
                Some(to) if !nested(m, &to) => {
                    edges.entry(m.clone()).or_default().insert(to);
                }
                Some(_) => {}
                None => {
                    if let Some(first) = p.first() {
                        externs.entry(m.clone()).or_default().insert(first.clone());
                    }
                }
            }
        }
        edges.entry(m.clone()).or_default();
    }
    Graph { edges, externs }
}

/// A cycle of the graph, if there is one (a depth-first search).
fn find_cycle(edges: &BTreeMap<Module, BTreeSet<Module>>) -> Option<Vec<Module>> {
    fn walk(
        m: &Module,
        edges: &BTreeMap<Module, BTreeSet<Module>>,
        state: &mut BTreeMap<Module, u8>,
        stack: &mut Vec<Module>,
    ) -> Option<Vec<Module>> {
        state.insert(m.clone(), 1);
        stack.push(m.clone());
        for next in edges.get(m).into_iter().flatten() {
            match state.get(next).copied().unwrap_or(0) {
                1 => {
                    let at = stack.iter().position(|x| x == next).unwrap_or(0);
                    let mut cycle = stack[at..].to_vec();
                    cycle.push(next.clone());
                    return Some(cycle);
                }
                0 => {
                    if let Some(c) = walk(next, edges, state, stack) {
                        return Some(c);
                    }
                }
                _ => {}
            }
        }
        stack.pop();
        state.insert(m.clone(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for m in edges.keys() {
        if state.get(m).copied().unwrap_or(0) == 0 {
            let mut stack = Vec::new();
            if let Some(c) = walk(m, edges, &mut state, &mut stack) {
                return Some(c);
            }
        }
    }
    None
}

fn layer(m: &Module) -> Option<usize> {
    let top = m.first()?;
    LAYERS
        .iter()
        .position(|(_, mods)| mods.contains(&top.as_str()))
}

#[test]
fn the_module_graph_has_no_cycle() {
    let g = graph();
    assert!(
        g.edges.len() > 50,
        "the source was read: {} modules",
        g.edges.len()
    );
    if let Some(cycle) = find_cycle(&g.edges) {
        let shown: Vec<String> = cycle.iter().map(show).collect();
        panic!("a module cycle: {}", shown.join(" -> "));
    }
}

#[test]
fn the_domain_imports_no_io_and_each_layer_only_those_below_it() {
    let g = graph();
    let mut wrong = Vec::new();
    for (m, used) in &g.externs {
        if m.first().is_some_and(|s| s == "domain") {
            for c in used
                .iter()
                .filter(|c| IO_CRATES.contains(&c.as_str()) || c.starts_with("actix"))
            {
                wrong.push(format!("{} uses the crate {c}", show(m)));
            }
        }
    }
    for (m, to) in &g.edges {
        let Some(mine) = layer(m) else { continue };
        for t in to {
            if layer(t).is_some_and(|theirs| theirs > mine) {
                let (a, b) = (LAYERS[mine].0, LAYERS[layer(t).unwrap_or(0)].0);
                wrong.push(format!("{} ({a}) uses {} ({b})", show(m), show(t)));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "layer rules broken:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn the_checks_see_a_cycle_and_a_forbidden_import_when_there_is_one() {
    let m = |s: &str| -> Module { s.split('/').map(str::to_owned).collect() };
    let mut edges: BTreeMap<Module, BTreeSet<Module>> = BTreeMap::new();
    edges.insert(m("a"), [m("b")].into());
    edges.insert(m("b"), [m("c")].into());
    edges.insert(m("c"), BTreeSet::new());
    assert_eq!(find_cycle(&edges), None);
    edges.insert(m("c"), [m("a")].into());
    assert!(find_cycle(&edges).is_some_and(|c| c.len() == 4));
    let mut known = BTreeMap::new();
    for k in ["store", "store/batch", "store/members", "domain"] {
        known.insert(m(k), PathBuf::new());
    }
    let from = m("store/batch");
    let path = |s: &str| -> Vec<String> { s.split("::").map(str::to_owned).collect() };
    assert_eq!(
        resolve(&from, &path("super::members::X"), &known),
        Some(m("store/members"))
    );
    assert_eq!(
        resolve(&from, &path("crate::domain::Y"), &known),
        Some(m("domain"))
    );
    assert_eq!(
        resolve(&from, &path("super::Store"), &known),
        Some(m("store"))
    );
    assert_eq!(resolve(&from, &path("bson::doc"), &known), None);
    let mut names = Names::default();
    let file: syn::File = syn::parse_quote! {
        use mongodb::Client;
        use crate::store::{batch::Op, members};
        #[cfg(test)]
        mod tests { use crate::http::X; }
    };
    names.visit_file(&file);
    assert!(names.paths.contains(&path("mongodb::Client")));
    assert!(names.paths.contains(&path("crate::store::batch::Op")));
    assert!(names.paths.contains(&path("crate::store::members")));
    assert!(
        !names.paths.contains(&path("crate::http::X")),
        "test code is left out"
    );
}
