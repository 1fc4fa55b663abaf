//! docs/DESIGN.md's "Layout of the code" table, checked against the code so that it cannot drift:
//! each `crates/shmarena/src` row's "uses" column must name exactly the modules that the row's
//! files import (`crate::` paths outside `#[cfg(test)]` modules, with the crate root's
//! re-exports traced to the module that defines them), every module must have a row, and the
//! rows must run in import order: no module imports one in a row below it, and no import circle.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

type Graph = BTreeMap<String, BTreeSet<String>>;

/// Imports that run against the table's order (to a module in a row below). The last two
/// (`error` → `service`, `arena` → `image`) went when the service's errors moved into error.rs
/// and opening by locator into open.rs; nothing may join it.
const KNOWN_AGAINST_ORDER: &[(&str, &str)] = &[];

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The text of `s` with comments (doc comments included) and `#[cfg(test)] mod … { … }` blocks
/// removed: links in docs and unit tests' helpers are not the layout.
fn code_of(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for line in s.lines() {
        if !line.trim_start().starts_with("//") {
            // A `//` after code is a trailing comment unless it is inside a string; the crate's
            // `crate::` paths never follow one, so cutting there is safe for this purpose.
            let code = match line.find("//") {
                Some(i) if !line[..i].contains('"') => &line[..i],
                _ => line,
            };
            out.push_str(code);
        }
        out.push('\n');
    }
    while let Some(start) = out.find("#[cfg(test)]\nmod ") {
        let open = start + out[start..].find('{').expect("a test module has a body");
        let end = matching_brace(&out, open);
        out.replace_range(start..=end, "");
    }
    out
}

/// The index of the `}` that closes the `{` at `open`.
fn matching_brace(s: &str, open: usize) -> usize {
    let mut depth = 0usize;
    for (i, c) in s[open..].char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return open + i;
                }
            }
            _ => {}
        }
    }
    panic!("unbalanced braces");
}

fn ident_at(s: &str) -> &str {
    let s = s.trim_start();
    let end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    &s[..end]
}

/// The first names of every `crate::` path in `code`: `crate::a::B` gives `a`,
/// `crate::{a::B, c}` gives `a` and `c`.
fn crate_paths(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        let before = rest[..i].chars().next_back();
        let after = &rest[i + "crate::".len()..];
        rest = after;
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
            continue;
        }
        if after.starts_with('{') {
            let inner = &after[1..matching_brace(after, 0)];
            let mut depth = 0usize;
            let mut start = 0;
            for (j, c) in inner.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        out.push(ident_at(&inner[start..j]).to_string());
                        start = j + 1;
                    }
                    _ => {}
                }
            }
            out.push(ident_at(&inner[start..]).to_string());
        } else {
            out.push(ident_at(after).to_string());
        }
    }
    out.retain(|n| !n.is_empty());
    out
}

/// The crate's modules (`mod x;` in lib.rs) and its root re-exports, each traced to its module.
fn modules_and_reexports(lib: &str) -> (BTreeSet<String>, BTreeMap<String, String>) {
    let mut modules = BTreeSet::new();
    for line in lib.lines() {
        let line = line.trim_start_matches("pub ");
        if let Some(rest) = line.strip_prefix("mod ") {
            if let Some(name) = rest.strip_suffix(';') {
                modules.insert(name.to_string());
            }
        }
    }
    let mut reexports = BTreeMap::new();
    for stmt in code_of(lib).split(';') {
        let Some(path) = stmt.trim().strip_prefix("pub use ") else {
            continue;
        };
        let module = ident_at(path);
        if !modules.contains(module) {
            continue;
        }
        let items = path[module.len()..].trim_start_matches("::");
        let items = items.trim_start_matches('{').trim_end_matches('}');
        for item in items.split(',') {
            let name = item.rsplit(" as ").next().unwrap_or("").trim();
            if !name.is_empty() {
                reexports.insert(name.to_string(), module.to_string());
            }
        }
    }
    (modules, reexports)
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Module → the other modules its files import, from the code.
fn imports() -> Graph {
    let src = manifest_dir().join("src");
    let lib = std::fs::read_to_string(src.join("lib.rs")).unwrap();
    let (modules, reexports) = modules_and_reexports(&lib);
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut graph: Graph = modules
        .iter()
        .map(|m| (m.clone(), BTreeSet::new()))
        .collect();
    for file in files {
        let rel = file.strip_prefix(&src).unwrap();
        let first = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_str()
            .unwrap();
        if first == "lib.rs" {
            continue;
        }
        let module = first.trim_end_matches(".rs").to_string();
        assert!(
            modules.contains(&module),
            "{} is no module of lib.rs",
            rel.display()
        );
        let code = code_of(&std::fs::read_to_string(&file).unwrap());
        for name in crate_paths(&code) {
            let target = if modules.contains(&name) {
                Some(name)
            } else {
                reexports.get(&name).cloned()
            };
            if let Some(target) = target.filter(|t| *t != module) {
                graph.get_mut(&module).unwrap().insert(target);
            }
        }
    }
    graph
}

/// The table's `crates/shmarena/src` rows in order: (module, the modules its "uses" cell names).
fn table() -> Vec<(String, BTreeSet<String>)> {
    let design = std::fs::read_to_string(manifest_dir().join("../../docs/DESIGN.md")).unwrap();
    let section = design
        .split("\n## ")
        .find(|s| s.starts_with("Layout of the code"))
        .expect("docs/DESIGN.md has a \"Layout of the code\" section");
    let mut rows = Vec::new();
    for line in section
        .lines()
        .filter(|l| l.starts_with("| `crates/shmarena/src/"))
    {
        let cells: Vec<&str> = line.trim_matches('|').split(" | ").collect();
        assert_eq!(cells.len(), 3, "a row of three cells: {line}");
        let path = cells[0].trim().trim_matches('`');
        let rel = path.strip_prefix("crates/shmarena/src/").unwrap();
        let module = rel.split('/').next().unwrap().trim_end_matches(".rs");
        let mut uses = String::new();
        let mut depth = 0usize;
        for c in cells[2].chars() {
            match c {
                '(' => depth += 1,
                ')' => depth -= 1,
                _ if depth == 0 => uses.push(c),
                _ => {}
            }
        }
        let uses = uses
            .split(',')
            .map(|u| u.trim().trim_matches('`').to_string())
            .filter(|u| !u.is_empty() && u != "—")
            .collect();
        rows.push((module.to_string(), uses));
    }
    rows
}

/// The modules in table order (first row of each), with each module's claimed uses merged.
fn claimed() -> (Vec<String>, Graph) {
    let mut order = Vec::new();
    let mut graph = Graph::new();
    for (module, uses) in table() {
        if !order.contains(&module) {
            order.push(module.clone());
        }
        graph.entry(module).or_default().extend(uses);
    }
    (order, graph)
}

fn names(set: &BTreeSet<String>) -> String {
    if set.is_empty() {
        "—".to_string()
    } else {
        set.iter().cloned().collect::<Vec<_>>().join(", ")
    }
}

/// Imports from a module to one in a row below it.
fn against_order(order: &[String], graph: &Graph) -> Vec<(String, String)> {
    let row = |m: &str| order.iter().position(|o| o == m).unwrap_or(usize::MAX);
    let mut out = Vec::new();
    for (from, tos) in graph {
        for to in tos {
            if row(to) >= row(from) {
                out.push((from.clone(), to.clone()));
            }
        }
    }
    out
}

/// The groups of two or more modules that reach each other through imports.
fn circles(graph: &Graph) -> Vec<BTreeSet<String>> {
    let reach = |start: &String| {
        let mut seen = BTreeSet::new();
        let mut todo = vec![start.clone()];
        while let Some(m) = todo.pop() {
            for n in graph.get(&m).into_iter().flatten() {
                if seen.insert(n.clone()) {
                    todo.push(n.clone());
                }
            }
        }
        seen
    };
    let reaches: BTreeMap<&String, BTreeSet<String>> =
        graph.keys().map(|m| (m, reach(m))).collect();
    let mut out: Vec<BTreeSet<String>> = Vec::new();
    for (m, r) in &reaches {
        if !r.contains(*m) || out.iter().any(|c| c.contains(*m)) {
            continue;
        }
        let group = r
            .iter()
            .filter(|n| reaches[*n].contains(*m))
            .cloned()
            .collect::<BTreeSet<_>>();
        if group.len() > 1 {
            out.push(group);
        }
    }
    out
}

fn describe_circles(graph: &Graph) -> String {
    let mut out = String::new();
    for group in circles(graph) {
        writeln!(
            out,
            "import circle of {} modules: {}",
            group.len(),
            names(&group)
        )
        .unwrap();
        for m in &group {
            let inside: BTreeSet<String> = graph[m].intersection(&group).cloned().collect();
            writeln!(out, "  {m} imports {}", names(&inside)).unwrap();
        }
    }
    out
}

#[test]
fn the_parser_reads_grouped_and_inline_paths() {
    let code = code_of(
        "use crate::{format::{self, Kind}, os};\n\
         // use crate::commented;\n\
         fn f() { crate::error::Error::Busy; let _ = my_crate::x; }\n\
         #[cfg(test)]\nmod tests { use crate::only_in_tests; }\n",
    );
    assert_eq!(crate_paths(&code), ["format", "os", "error"]);
}

#[test]
fn the_layout_table_names_what_each_module_imports() {
    let actual = imports();
    let (order, claimed) = claimed();
    let mut problems = String::new();
    for (module, uses) in &actual {
        match claimed.get(module) {
            None => writeln!(
                problems,
                "no row for `crates/shmarena/src/{module}`; its uses: {}",
                names(uses)
            )
            .unwrap(),
            Some(said) if said != uses => writeln!(
                problems,
                "row `{module}` says it uses {}, the code imports {}",
                names(said),
                names(uses)
            )
            .unwrap(),
            Some(_) => {}
        }
    }
    for module in order.iter().filter(|m| !actual.contains_key(*m)) {
        writeln!(problems, "row `{module}` names no module of lib.rs").unwrap();
    }
    assert!(
        problems.is_empty(),
        "docs/DESIGN.md's layout table has drifted from the code:\n{problems}"
    );
}

#[test]
fn no_import_runs_against_the_table_order_but_the_known_ones() {
    let (order, _) = claimed();
    let actual = imports();
    let new: Vec<_> = against_order(&order, &actual)
        .into_iter()
        .filter(|(a, b)| !KNOWN_AGAINST_ORDER.contains(&(a.as_str(), b.as_str())))
        .collect();
    assert!(
        new.is_empty(),
        "imports from a module to one in a row below it in docs/DESIGN.md's layout table \
         (reorder the rows, or move the code): {new:?}\n{}",
        describe_circles(&actual)
    );
    for (from, to) in KNOWN_AGAINST_ORDER {
        assert!(
            actual[*from].contains(*to),
            "{from} no longer imports {to}: remove it from KNOWN_AGAINST_ORDER"
        );
    }
}

#[test]
fn imports_run_one_way_with_no_circle() {
    let (order, _) = claimed();
    let actual = imports();
    let against = against_order(&order, &actual);
    let circles = describe_circles(&actual);
    assert!(
        against.is_empty() && circles.is_empty(),
        "imports that run against docs/DESIGN.md's layout table: {against:?}\n{circles}"
    );
}
