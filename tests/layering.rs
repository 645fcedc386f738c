//! The module layering of src/ (ARCHITECTURE.md, *Layers*): imports flow one
//! way, from the top of the data path to the bottom, never back up.
//!
//! ```text
//! slot, failpoint, notify, sys, allocator   (the foundation: they use nothing of the crate)
//!   ← ids, entry, net
//!   ← proto ← table ← log ← shard ← txn ← metrics ← cluster ← config ← datadir ← server
//!   ← backup ← http
//! client ← cli                    (the client side: uses proto and ids, and
//!                                  the cluster client slot and cluster)
//! ```
//!
//! A module may use any module of a lower layer, never one of its own layer
//! or a higher one, and no import cycle may form. The server starts the HTTP
//! API without importing it: the binary hands it `http::start` as a
//! `server::frontend::StartFrontend`.
//!
//! The check reads every non-test source file of src/ and collects its
//! references to other modules: `use crate::…` lines, paths such as
//! `crate::log::recover(…)` in code, and `super::…` paths, with comments,
//! string literals and `#[cfg(test)]` items removed. Run it with
//! `--nocapture` to see the whole dependency list.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// The layers, lowest first. A module may use modules of lower layers only.
const LAYERS: &[&[&str]] = &[
    &["slot", "failpoint", "notify", "sys", "allocator"],
    &["ids", "entry", "net"],
    &["proto"],
    &["table"],
    &["log"],
    &["shard"],
    &["txn"],
    &["metrics"],
    &["cluster"],
    &["config"],
    &["datadir"],
    &["server"],
    &["backup"],
    &["http"],
];

/// Modules beside the server's layers, and everything each may use: the
/// portable client library and the CLI built on it know the wire model and
/// the ids, nothing of the server (and no server module uses them). The
/// cluster client also routes by hash slot with the cluster map, which uses
/// only `slot` and the wire model itself.
const CLIENT_SIDE: &[(&str, &[&str])] = &[
    ("client", &["ids", "proto", "slot", "cluster"]),
    ("cli", &["ids", "proto", "client"]),
];

/// Modules whose submodules are listed one by one in the dependency list.
const DETAILED: &[&str] = &["log", "shard", "txn"];

/// One reference from a module to another: `from` uses `to` at `file:line`.
#[derive(Debug, Clone)]
struct Reference {
    from: String,
    to: String,
    site: String,
}

#[test]
fn imports_follow_the_layer_order() {
    let references = crate_references();
    let mut violations = Vec::new();
    for r in &references {
        let (from, to) = (top(&r.from), top(&r.to));
        if from == to {
            continue;
        }
        if let Some(why) = forbidden(from, to) {
            violations.push(format!("{} uses {} ({}): {why}", r.from, r.to, r.site));
        }
    }
    eprintln!("{}", dependency_list(&references));
    assert!(
        violations.is_empty(),
        "imports against the layer order (tests/layering.rs explains it):\n{}",
        violations.join("\n")
    );
}

#[test]
fn no_module_import_cycle_remains() {
    let references = crate_references();
    let cycles: Vec<String> = cycles(&top_level_edges(&references))
        .into_iter()
        .map(|cycle| cycle.join(" → "))
        .collect();
    assert!(
        cycles.is_empty(),
        "module import cycles:\n{}\n\n{}",
        cycles.join("\n"),
        dependency_list(&references)
    );
}

#[test]
fn the_reader_sees_imports_and_paths_but_not_comments_strings_or_tests() {
    let source = r##"
//! Uses [`crate::doc_link`] in a comment.
use crate::alpha::{self, Thing};
use crate::beta;
/* crate::block_comment */
fn f() {
    let s = "crate::in_a_string";
    let r = r#"crate::in_a_raw_string"#;
    let c = '"';
    let lifetime: &'static str = "x";
    crate::gamma::call();
    super::sibling::call();
    child::call();
}
#[cfg(test)]
mod tests {
    use crate::only_in_tests;
    fn g() { let b = '{'; }
}
#[cfg(test)]
use crate::test_only_import;
fn h() { crate::delta::call(); }
"##;
    let found = references_in("top::here", source, &["child".to_owned()]);
    let targets: Vec<&str> = found.iter().map(|(to, _)| to.as_str()).collect();
    assert_eq!(
        targets,
        [
            "alpha",
            "beta",
            "gamma::call",
            "top::sibling::call",
            "top::here::child",
            "delta::call"
        ]
    );
}

/// The layer of a top-level module; panics for a module the rules do not place.
fn layer_of(module: &str) -> usize {
    LAYERS
        .iter()
        .position(|layer| layer.contains(&module))
        .unwrap_or_else(|| panic!("module {module} has no layer in tests/layering.rs"))
}

/// Why `from` may not use `to`, if it may not.
fn forbidden(from: &str, to: &str) -> Option<String> {
    let client_side = |m: &str| CLIENT_SIDE.iter().find(|(name, _)| *name == m);
    if let Some((_, allowed)) = client_side(from) {
        return (!allowed.contains(&to)).then(|| format!("{from} may use only {allowed:?}"));
    }
    if client_side(to).is_some() {
        return Some(format!(
            "{to} is the client side; the server does not use it"
        ));
    }
    let (from_layer, to_layer) = (layer_of(from), layer_of(to));
    (from_layer <= to_layer).then(|| {
        format!(
            "{from} (layer {from_layer}) may use only lower layers, and {to} is layer {to_layer}"
        )
    })
}

fn top(module: &str) -> &str {
    module.split("::").next().unwrap_or(module)
}

/// Every reference between different modules in src/ (bins excluded: they are
/// crates of their own on top of the library).
fn crate_references() -> Vec<Reference> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    collect_files(&src, &mut files);
    let modules: Vec<(String, PathBuf)> = files
        .into_iter()
        .filter_map(|path| module_of(&src, &path).map(|m| (m, path)))
        .collect();
    let mut references = Vec::new();
    for (module, path) in &modules {
        let source = fs::read_to_string(path).expect("read a source file");
        let prefix = format!("{module}::");
        let children: Vec<String> = modules
            .iter()
            .filter_map(|(m, _)| m.strip_prefix(&prefix))
            .filter(|rest| !rest.contains("::"))
            .map(str::to_owned)
            .collect();
        let relative = path.strip_prefix(src.parent().expect("src has a parent"));
        let file = relative.unwrap_or(path).display().to_string();
        for (to, line) in references_in(module, &source, &children) {
            let to = unit(&to, &modules);
            let from = unit(module, &modules);
            if from != to {
                let site = format!("{file}:{line}");
                references.push(Reference { from, to, site });
            }
        }
    }
    references
}

fn collect_files(dir: &Path, files: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).expect("read a source directory") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            collect_files(&path, files);
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
}

/// `src/log/format.rs` → `log::format`, `src/log/mod.rs` → `log`; None for
/// lib.rs and the binaries.
fn module_of(src: &Path, path: &Path) -> Option<String> {
    let relative = path.strip_prefix(src).ok()?.with_extension("");
    let parts: Vec<String> = relative
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    match parts.as_slice() {
        [lib] if lib == "lib" => None,
        [bin, ..] if bin == "bin" => None,
        [.., last] if last == "mod" => Some(parts[..parts.len() - 1].join("::")),
        _ => Some(parts.join("::")),
    }
}

/// The module a path names, at the grain of the dependency list: the
/// submodule for the detailed modules, the top-level module otherwise
/// (`log::format::Effect` → `log::format`, `table::pinned` → `table`).
fn unit(path: &str, modules: &[(String, PathBuf)]) -> String {
    let segments: Vec<&str> = path.split("::").collect();
    if !DETAILED.contains(&segments[0]) {
        return segments[0].to_owned();
    }
    let known = |m: &str| modules.iter().any(|(name, _)| name == m);
    (1..=segments.len())
        .rev()
        .map(|n| segments[..n].join("::"))
        .find(|candidate| known(candidate))
        .unwrap_or_else(|| segments[0].to_owned())
}

/// The modules `source` (the file of `module`) refers to, with line numbers:
/// `crate::a::b…` → `a::b…`, `super::x` → the sibling, `child::…` → the child.
fn references_in(module: &str, source: &str, children: &[String]) -> Vec<(String, usize)> {
    let code = without_tests(&strip_comments_and_strings(source));
    let parent: Vec<&str> = module.split("::").collect();
    let parent = parent[..parent.len().saturating_sub(1)].join("::");
    let mut found = Vec::new();
    let bytes = code.as_bytes();
    let mut at = 0;
    while at < bytes.len() {
        let start_of_word = at == 0 || !is_ident(bytes[at - 1]) && bytes[at - 1] != b':';
        if !start_of_word || !is_ident(bytes[at]) {
            at += 1;
            continue;
        }
        let word_end = (at..bytes.len())
            .find(|&i| !is_ident(bytes[i]))
            .unwrap_or(bytes.len());
        let word = &code[at..word_end];
        let path = path_after(&code, word_end);
        let line = code[..at].matches('\n').count() + 1;
        match word {
            "crate" if !path.is_empty() => found.push((path, line)),
            "super" if !path.is_empty() && !parent.is_empty() => {
                found.push((format!("{parent}::{path}"), line))
            }
            child if code[word_end..].starts_with("::") && children.iter().any(|c| c == child) => {
                found.push((format!("{module}::{child}"), line))
            }
            _ => {}
        }
        at = word_end;
    }
    found
}

/// The identifiers after `::` following `at` (`::a::b::{c, d}` → `a::b`).
fn path_after(code: &str, mut at: usize) -> String {
    let bytes = code.as_bytes();
    let mut segments = Vec::new();
    while code[at..].starts_with("::") {
        at += 2;
        let end = (at..bytes.len())
            .find(|&i| !is_ident(bytes[i]))
            .unwrap_or(bytes.len());
        if end == at {
            break;
        }
        segments.push(&code[at..end]);
        at = end;
    }
    segments.join("::")
}

fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// `source` with comments and the contents of string and char literals
/// blanked out (newlines kept, so line numbers still match).
fn strip_comments_and_strings(source: &str) -> String {
    let chars: Vec<char> = source.chars().collect();
    let mut out = String::with_capacity(source.len());
    let mut i = 0;
    let blank = |c: char| if c == '\n' { '\n' } else { ' ' };
    while i < chars.len() {
        let rest = &chars[i..];
        if rest.starts_with(&['/', '/']) {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if rest.starts_with(&['/', '*']) {
            let mut depth = 0;
            while i < chars.len() {
                if chars[i..].starts_with(&['/', '*']) {
                    depth += 1;
                    i += 2;
                } else if chars[i..].starts_with(&['*', '/']) {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    out.push(blank(chars[i]));
                    i += 1;
                }
            }
        } else if let Some(hashes) = raw_string_start(rest) {
            // r"…", r#"…"#, br#"…"#: no escapes, ends at a quote and the same hashes.
            let open = rest
                .iter()
                .position(|&c| c == '"')
                .expect("a raw string opens");
            i += open + 1;
            out.push('"');
            while i < chars.len() {
                let closes = chars[i] == '"'
                    && chars[i + 1..]
                        .iter()
                        .take(hashes)
                        .filter(|&&c| c == '#')
                        .count()
                        == hashes;
                if closes {
                    i += 1 + hashes;
                    break;
                }
                out.push(blank(chars[i]));
                i += 1;
            }
            out.push('"');
        } else if chars[i] == '"' {
            i += 1;
            out.push('"');
            while i < chars.len() && chars[i] != '"' {
                if chars[i] == '\\' {
                    out.push(' ');
                    i += 1;
                }
                if i < chars.len() {
                    out.push(blank(chars[i]));
                    i += 1;
                }
            }
            i += 1;
            out.push('"');
        } else if chars[i] == '\'' {
            // A char literal ('x', '\n', '\u{..}'), or a lifetime ('a) left as it is.
            let len = if rest.get(1) == Some(&'\\') {
                rest.iter().skip(2).position(|&c| c == '\'').map(|p| p + 3)
            } else if rest.get(2) == Some(&'\'') {
                Some(3)
            } else {
                None
            };
            match len {
                Some(len) => {
                    out.push_str("' '");
                    i += len;
                }
                None => {
                    out.push('\'');
                    i += 1;
                }
            }
        } else {
            out.push(chars[i]);
            i += 1;
        }
    }
    out
}

/// How many hashes a raw string starting at `rest` has, if one does.
fn raw_string_start(rest: &[char]) -> Option<usize> {
    let after_b = if rest.first() == Some(&'b') {
        &rest[1..]
    } else {
        rest
    };
    if after_b.first() != Some(&'r') {
        return None;
    }
    let hashes = after_b[1..].iter().take_while(|&&c| c == '#').count();
    (after_b.get(1 + hashes) == Some(&'"')).then_some(hashes)
}

/// `code` (comments and strings already blanked) without the items marked
/// `#[cfg(test)]`: the attribute and the item up to its `;` or its closing brace.
fn without_tests(code: &str) -> String {
    const MARK: &str = "#[cfg(test)]";
    let mut out = String::with_capacity(code.len());
    let mut rest = code;
    while let Some(found) = rest.find(MARK) {
        out.push_str(&rest[..found]);
        let item = &rest[found..];
        let mut depth = 0usize;
        let mut end = item.len();
        for (i, c) in item.char_indices().skip(MARK.len()) {
            match c {
                ';' if depth == 0 => {
                    end = i + 1;
                    break;
                }
                '{' => depth += 1,
                '}' => {
                    depth = depth.saturating_sub(1);
                    if depth == 0 {
                        end = i + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
        // Keep the line count of the removed item.
        out.extend(item[..end].chars().filter(|&c| c == '\n'));
        rest = &item[end..];
    }
    out.push_str(rest);
    out
}

/// Distinct top-level edges `from → to`.
fn top_level_edges(references: &[Reference]) -> BTreeMap<String, BTreeSet<String>> {
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for r in references {
        let (from, to) = (top(&r.from), top(&r.to));
        if from != to {
            edges
                .entry(from.to_owned())
                .or_default()
                .insert(to.to_owned());
        }
    }
    edges
}

/// Every simple cycle's modules, one per group of modules that reach each
/// other (a strongly connected component), each listed from its smallest name.
fn cycles(edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    let reaches = |from: &str, to: &str| {
        let mut seen = BTreeSet::new();
        let mut stack = vec![from.to_owned()];
        while let Some(m) = stack.pop() {
            for next in edges.get(&m).into_iter().flatten() {
                if next == to {
                    return true;
                }
                if seen.insert(next.clone()) {
                    stack.push(next.clone());
                }
            }
        }
        false
    };
    let mut groups: Vec<Vec<String>> = Vec::new();
    for module in edges.keys() {
        if groups.iter().any(|g| g.contains(module)) || !reaches(module, module) {
            continue;
        }
        let group: Vec<String> = edges
            .keys()
            .filter(|other| *other == module || (reaches(module, other) && reaches(other, module)))
            .cloned()
            .collect();
        groups.push(group);
    }
    groups
}

/// The dependency list: top-level edges, the detailed modules' submodule
/// edges, and the cycles, each edge with the places that make it.
fn dependency_list(references: &[Reference]) -> String {
    let mut top_level: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    let mut detailed: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    for r in references {
        let (from, to) = (top(&r.from).to_owned(), top(&r.to).to_owned());
        if from != to {
            top_level
                .entry((from, to))
                .or_default()
                .insert(r.site.clone());
        }
        if DETAILED.contains(&top(&r.from)) || DETAILED.contains(&top(&r.to)) {
            let key = (r.from.clone(), r.to.clone());
            detailed.entry(key).or_default().insert(r.site.clone());
        }
    }
    let mut text = String::from("# Top-level modules (non-test code): from -> to  [where]\n");
    for ((from, to), sites) in &top_level {
        text += &format!("{from} -> {to}  [{}]\n", sites_text(sites));
    }
    text += "\n# log, shard and txn by submodule (non-test code): from -> to  [where]\n";
    for ((from, to), sites) in &detailed {
        text += &format!("{from} -> {to}  [{}]\n", sites_text(sites));
    }
    text += "\n# Cycles between top-level modules\n";
    let found = cycles(&top_level_edges(references));
    if found.is_empty() {
        text += "none\n";
    }
    for cycle in found {
        text += &format!("{}\n", cycle.join(" <-> "));
    }
    text
}

fn sites_text(sites: &BTreeSet<String>) -> String {
    let shown: Vec<&str> = sites.iter().take(4).map(String::as_str).collect();
    match sites.len() {
        n if n > shown.len() => format!("{} and {} more", shown.join(", "), n - shown.len()),
        _ => shown.join(", "),
    }
}
