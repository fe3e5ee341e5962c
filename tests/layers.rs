//! The layer rule of docs/design.md, checked on the source: every
//! `crate::` path in `src/` (outside comments and unit tests) goes to a
//! module of a lower layer or of the same family, the engine imports none
//! of its clients, and the only circle of imports is `tensor ⇄ node`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Layers, lowest first; a module is in the layer of its longest listed
/// prefix.
const LAYERS: &[&[&str]] = &[
    &["float", "sync", "error"],
    &["layout", "pool"],
    &["rng"],
    &["storage"],
    &["memory"],
    &["autograd::held", "autograd::mode"],
    &["autograd::hooks"],
    &["tensor", "autograd::node"],
    &["autograd::tensor_hooks"],
    &["autograd::engine", "autograd::user_hooks", "autograd"],
    &["ops", "gradcheck"],
    &["checkpoint"],
    &["nn", "optim", "data", "viz", "distributed"],
    &["testing"],
    &["crate"],
];

/// The engine: what it may not import.
const ENGINE: &str = "autograd";
const CLIENTS: &[&str] = &["checkpoint", "nn", "optim", "viz", "distributed"];

fn layer_of(module: &str) -> usize {
    let mut best = (0, usize::MAX);
    for (i, layer) in LAYERS.iter().enumerate() {
        for &m in *layer {
            let hit = module == m || module.starts_with(&format!("{m}::"));
            if hit && m.len() >= best.0 {
                best = (m.len(), i);
            }
        }
    }
    assert!(
        best.1 != usize::MAX,
        "module {module} is in no layer: add it to LAYERS"
    );
    best.1
}

/// `src/a/b.rs` -> `a::b`, `src/a/mod.rs` -> `a`, `src/lib.rs` -> `crate`.
fn module_name(rel: &Path) -> String {
    let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    let last = parts.pop().unwrap();
    let stem = last.trim_end_matches(".rs");
    if stem != "mod" && stem != "lib" {
        parts.push(stem.to_string());
    }
    match parts.is_empty() {
        true => "crate".to_string(),
        false => parts.join("::"),
    }
}

fn sources(dir: &Path, root: &Path, out: &mut BTreeMap<String, String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, root, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(&path).unwrap();
            out.insert(module_name(path.strip_prefix(root).unwrap()), text);
        }
    }
}

/// The code of a file without comments and without its unit tests.
fn code(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(i) => &text[..i],
        None => text,
    };
    text.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The paths after `crate::` in `code`, with brace groups expanded one
/// level (`crate::a::{b, c::d}` -> `a::b`, `a::c::d`).
fn crate_paths(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + "crate::".len()..];
        let end = rest
            .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
            .unwrap_or(rest.len());
        let head = rest[..end].trim_end_matches(':').to_string();
        if rest[end..].starts_with('{') && rest[..end].ends_with("::") || rest.starts_with('{') {
            let close = rest.find('}').unwrap();
            let open = rest.find('{').unwrap();
            for item in rest[open + 1..close].split(',') {
                let item = item.trim().split(" as ").next().unwrap().trim();
                if !item.is_empty() && item != "self" {
                    out.push(match head.is_empty() {
                        true => item.split("::{").next().unwrap().to_string(),
                        false => format!("{head}::{}", item.split("::{").next().unwrap()),
                    });
                }
            }
            if head.is_empty() {
                continue;
            }
        }
        out.push(head);
    }
    out
}

/// The top-level names lib.rs re-exports, and from which module.
fn reexports(lib: &str, modules: &BTreeSet<String>) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for stmt in code(lib).split(';') {
        let Some(i) = stmt.find("pub use ") else { continue };
        let body: String = stmt[i + 8..].split_whitespace().collect();
        if body.starts_with("crate::") {
            continue; // the prelude
        }
        let (base, items) = match body.find("::{") {
            Some(j) => (
                body[..j].to_string(),
                body[j + 3..].trim_end_matches('}').to_string(),
            ),
            None => match body.rfind("::") {
                Some(j) => (body[..j].to_string(), body[j + 2..].to_string()),
                None => continue,
            },
        };
        if let Some(module) = resolve(&base, modules) {
            for item in items.split(',').filter(|s| !s.is_empty()) {
                out.insert(item.to_string(), module.clone());
            }
        }
    }
    out
}

/// The longest module that is a prefix of `path`.
fn resolve(path: &str, modules: &BTreeSet<String>) -> Option<String> {
    let parts: Vec<&str> = path.split("::").collect();
    (1..=parts.len())
        .rev()
        .map(|k| parts[..k].join("::"))
        .find(|m| modules.contains(m))
}

fn import_graph() -> BTreeMap<String, BTreeSet<String>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = BTreeMap::new();
    sources(&root, &root, &mut files);
    let modules: BTreeSet<String> = files.keys().cloned().collect();
    let names = reexports(&files["crate"], &modules);
    let mut graph = BTreeMap::new();
    for (module, text) in &files {
        let mut targets = BTreeSet::new();
        for path in crate_paths(&code(text)) {
            let head = path.split("::").next().unwrap();
            let target = resolve(&path, &modules).or_else(|| names.get(head).cloned());
            if let Some(t) = target.filter(|t| t != module && t != "crate") {
                targets.insert(t);
            }
        }
        graph.insert(module.clone(), targets);
    }
    graph
}

fn family(m: &str) -> &str {
    m.split("::").next().unwrap()
}

#[test]
fn imports_go_down_the_layers() {
    let mut wrong = Vec::new();
    for (from, targets) in import_graph() {
        for to in targets {
            let same_family = family(&from) == family(&to) && family(&from) != "autograd";
            let pair = matches!((from.as_str(), to.as_str()), ("tensor", "autograd::node"));
            if layer_of(&to) > layer_of(&from) && !same_family && !pair {
                wrong.push(format!("{from} -> {to}"));
            }
            if from.starts_with(ENGINE) && CLIENTS.contains(&family(&to)) {
                wrong.push(format!("{from} -> {to} (the engine names a client)"));
            }
        }
    }
    assert!(wrong.is_empty(), "imports against the layers: {wrong:#?}");
}

#[test]
fn the_engine_does_not_even_link_to_a_client() {
    // Doc links count too: the engine's docs describe its hook points, not
    // the clients behind them.
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = BTreeMap::new();
    sources(&root, &root, &mut files);
    let mut named = Vec::new();
    for (module, text) in files.iter().filter(|(m, _)| m.starts_with(ENGINE)) {
        for client in CLIENTS {
            if text.contains(&format!("crate::{client}")) {
                named.push(format!("{module} names crate::{client}"));
            }
        }
    }
    assert!(named.is_empty(), "{named:#?}");
}

#[test]
fn the_only_circle_is_tensor_and_node() {
    let graph = import_graph();
    // Modules that reach themselves: the members of circles.
    let reaches = |start: &str| {
        let mut seen = BTreeSet::new();
        let mut stack: Vec<&str> = graph[start].iter().map(String::as_str).collect();
        while let Some(m) = stack.pop() {
            if seen.insert(m.to_string()) {
                stack.extend(graph.get(m).into_iter().flatten().map(String::as_str));
            }
        }
        seen
    };
    let in_circles: BTreeSet<String> = graph
        .keys()
        .filter(|m| reaches(m).contains(*m))
        .cloned()
        .collect();
    let expected: BTreeSet<String> = ["autograd::node", "tensor"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(in_circles, expected, "modules on a circle of imports");
}

#[test]
fn the_parser_sees_imports() {
    let paths =
        crate_paths("use crate::a::{b, c::d};\nuse crate::{Float, Tensor};\nlet x = crate::pool::take(3);");
    assert_eq!(paths, ["a::b", "a::c::d", "a", "Float", "Tensor", "pool::take"]);
    let graph = import_graph();
    assert!(graph["tensor"].contains("autograd::node"));
    assert!(graph["checkpoint::frame"].contains("autograd::hooks"));
}
