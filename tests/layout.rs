//! The crate's shape, checked: what `src/lib.rs` says of the layout holds in the code.
//!
//! Two rules, each with an allow-list that may only shrink:
//! - no file under `src/` is longer than [`MAX_LINES`] lines, tests included;
//! - the modules depend on each other without loops, so the graph of `use crate::...` (and
//!   `super::`, `self::`, child-module) references is a DAG and the crate reads leaves first.
//!   A `mod child;` declaration counts as the parent depending on the child: whoever names the
//!   parent reaches the child's items through it, so a child may not name its parent.
//!
//! Every file under `src/` is one node, so `http::head`, `http::body` and `http::lex` are three
//! nodes, as are `config::raw` and `config` (the directory's `mod.rs`); the binaries
//! (`src/main.rs`, `src/bin/`) are crates of their own and are left out. References are found by
//! a small tokeniser that skips comments and literals, so neither a doc link nor a string that
//! happens to spell a path counts as a dependency. A path counts for the longest module prefix it
//! names, so `crate::config::Config` is an edge to `config`, whichever submodule defines
//! `Config`; inside a directory module, siblings therefore name each other by their own path,
//! never through the parent's re-exports, or the parent and the child would form a loop.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fs;
use std::path::{Path, PathBuf};

/// Longest file allowed under `src/`.
const MAX_LINES: usize = 2_000;

/// Files allowed over [`MAX_LINES`] for now.
const LONG_FILES: &[&str] = &[];

/// Loops allowed for now, each as the set of modules that form it (a strongly connected
/// component of the graph). Only loops entirely inside `runtime::` and `upstream::` may be listed:
/// those are being untangled in the work on the runtime's structure, which will remove each entry
/// as its loop goes. A loop found must be one of these sets or part of one, and an entry that no
/// longer matches any loop fails the test so that the list only shrinks.
const ALLOWED_LOOPS: &[&[&str]] = &[];

#[test]
fn no_source_file_is_too_long() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut too_long = Vec::new();
    let mut seen_allowed = BTreeSet::new();
    for path in files(&root.join("src")) {
        let rel = relative(root, &path);
        let Ok(text) = fs::read_to_string(&path) else {
            continue;
        };
        let lines = text.lines().count();
        if lines <= MAX_LINES {
            continue;
        }
        if LONG_FILES.contains(&rel.as_str()) {
            seen_allowed.insert(rel);
        } else {
            too_long.push(format!("{rel}: {lines} lines"));
        }
    }
    assert!(
        too_long.is_empty(),
        "files over {MAX_LINES} lines; split them into modules:\n{}",
        too_long.join("\n")
    );
    let stale: Vec<_> = LONG_FILES
        .iter()
        .filter(|f| !seen_allowed.contains(**f))
        .collect();
    assert!(
        stale.is_empty(),
        "no longer over {MAX_LINES} lines, remove from LONG_FILES: {stale:?}"
    );
}

#[test]
fn module_dependencies_have_no_loops() {
    let graph = Graph::of_crate(Path::new(env!("CARGO_MANIFEST_DIR")));
    for entry in ALLOWED_LOOPS {
        for m in *entry {
            assert!(
                m.starts_with("runtime::") || m.starts_with("upstream::"),
                "ALLOWED_LOOPS may only hold loops inside runtime:: and upstream::, not {m}"
            );
        }
    }
    let mut report = Vec::new();
    let mut used = vec![false; ALLOWED_LOOPS.len()];
    for component in graph.loops() {
        let allowed = ALLOWED_LOOPS.iter().position(|entry| {
            component
                .iter()
                .all(|m| entry.contains(&graph.name(*m).as_str()))
        });
        match allowed {
            Some(i) => used[i] = true,
            None => report.push(graph.describe(&component)),
        }
    }
    assert!(
        report.is_empty(),
        "module dependency loops (each: one loop, where each step is referenced, what else is tangled):\n\n{}",
        report.join("\n\n")
    );
    let stale: Vec<_> = ALLOWED_LOOPS
        .iter()
        .zip(used)
        .filter(|(_, used)| !used)
        .map(|(entry, _)| entry)
        .collect();
    assert!(
        stale.is_empty(),
        "these allowed loops are gone, remove them from ALLOWED_LOOPS: {stale:?}"
    );
}

/// The checker itself, on small made-up sources: it must see every form of reference the crate
/// uses, and nothing in comments or literals.
#[test]
fn references_are_found_in_every_form() {
    let known: BTreeSet<Vec<String>> = ["a", "a::b", "a::c", "d", "e", "f", "g", "h"]
        .iter()
        .map(|m| path(m))
        .collect();
    let text = r##"
        //! A doc link to [`x`](crate::h::X) is not a dependency.
        use crate::d::Thing;
        use super::c::{self, Other};
        use crate::{e::One, f::{Two, Three}};
        pub use child::Item; // no such child here: not counted
        /* crate::h::Nope /* nested */ crate::h::Nope */
        const S: &str = "crate::h::Nope";
        const R: &str = r#"crate::h::"Nope""#;
        const C: char = '"';
        fn f<'a>(x: &'a str) -> usize { crate::g::len(x) }
        mod tests {
            use super::*;
            use super::super::c::Z;
        }
    "##;
    let found = references(text, &path("a::b"), &known);
    let targets: BTreeSet<String> = found.iter().map(|(m, _)| m.join("::")).collect();
    assert_eq!(
        targets,
        ["a::b", "a::c", "d", "e", "f", "g"]
            .iter()
            .map(|s| s.to_string())
            .collect::<BTreeSet<_>>()
    );
    // A parent's `pub use child::...` is an edge to the child, and so is `mod child;`.
    let found = references("pub use b::Thing;", &path("a"), &known);
    assert_eq!(found, vec![(path("a::b"), 1)]);
    let found = references("\nmod c;\n#[cfg(test)]\nmod tests;", &path("a"), &known);
    assert_eq!(found, vec![(path("a::c"), 2)]);
    // A test module in a file of its own names its parent; its declaration is no edge back.
    let known: BTreeSet<Vec<String>> = [path("a"), path("a::c"), path("a::tests")].into();
    let found = references("\nmod c;\n#[cfg(test)]\nmod tests;", &path("a"), &known);
    assert_eq!(found, vec![(path("a::c"), 2)]);
}

#[test]
fn a_loop_is_reported_with_its_steps() {
    let mut graph = Graph::default();
    let (a, b, c) = (
        graph.node(&path("a")),
        graph.node(&path("b")),
        graph.node(&path("c")),
    );
    graph.edge(a, b, "src/a.rs:1");
    graph.edge(b, c, "src/b.rs:2");
    graph.edge(c, a, "src/c.rs:3");
    let d = graph.node(&path("d"));
    graph.edge(a, d, "src/a.rs:4");
    let loops = graph.loops();
    assert_eq!(loops.len(), 1);
    assert_eq!(
        graph.describe(&loops[0]),
        "a -> b -> c -> a\n  a -> b at src/a.rs:1\n  b -> c at src/b.rs:2\n  c -> a at src/c.rs:3"
    );
}

fn path(m: &str) -> Vec<String> {
    m.split("::").map(str::to_owned).collect()
}

/// Every file under `dir`, sorted.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
            let p = entry.expect("a directory entry").path();
            if p.is_dir() {
                todo.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

fn relative(root: &Path, p: &Path) -> String {
    p.strip_prefix(root)
        .unwrap_or(p)
        .to_string_lossy()
        .into_owned()
}

/// The module a library source file defines: `src/a/b.rs` and `src/a/b/mod.rs` are `a::b`.
/// None for the binaries, which are crates of their own.
fn module_of(src: &Path, file: &Path) -> Option<Vec<String>> {
    let rel = file.strip_prefix(src).ok()?;
    if rel.extension()? != "rs" || rel == Path::new("main.rs") || rel.starts_with("bin") {
        return None;
    }
    let mut parts: Vec<String> = rel
        .with_extension("")
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod" || p == "lib") {
        parts.pop();
    }
    Some(parts)
}

#[derive(Default)]
struct Graph {
    names: Vec<String>,
    index: BTreeMap<String, usize>,
    /// For each edge, where it is first referenced (`file:line`).
    edges: BTreeMap<(usize, usize), String>,
}

impl Graph {
    fn of_crate(root: &Path) -> Graph {
        let src = root.join("src");
        let sources: Vec<(PathBuf, Vec<String>)> = files(&src)
            .into_iter()
            .filter_map(|f| module_of(&src, &f).map(|m| (f, m)))
            .collect();
        let known: BTreeSet<Vec<String>> = sources.iter().map(|(_, m)| m.clone()).collect();
        let mut graph = Graph::default();
        for (file, module) in &sources {
            if module.is_empty() {
                continue;
            }
            let from = graph.node(module);
            let text = fs::read_to_string(file).expect("a readable source file");
            for (target, line) in references(&text, module, &known) {
                // The crate root only declares modules; a module's reference to itself is none.
                if target.is_empty() || &target == module {
                    continue;
                }
                let to = graph.node(&target);
                graph.edge(from, to, &format!("{}:{line}", relative(root, file)));
            }
        }
        graph
    }

    fn node(&mut self, module: &[String]) -> usize {
        let name = module.join("::");
        if let Some(&i) = self.index.get(&name) {
            return i;
        }
        self.names.push(name.clone());
        self.index.insert(name, self.names.len() - 1);
        self.names.len() - 1
    }

    fn name(&self, node: usize) -> &String {
        &self.names[node]
    }

    fn edge(&mut self, from: usize, to: usize, at: &str) {
        self.edges
            .entry((from, to))
            .or_insert_with(|| at.to_owned());
    }

    fn successors(&self, node: usize) -> impl Iterator<Item = usize> + '_ {
        self.edges
            .range((node, 0)..(node + 1, 0))
            .map(|(&(_, to), _)| to)
    }

    fn reachable(&self, from: usize) -> BTreeSet<usize> {
        let mut seen = BTreeSet::new();
        let mut todo = vec![from];
        while let Some(n) = todo.pop() {
            for s in self.successors(n) {
                if seen.insert(s) {
                    todo.push(s);
                }
            }
        }
        seen
    }

    /// The strongly connected components with more than one module: each is one or more loops.
    /// The graph is a few dozen nodes, so mutual reachability is plenty fast.
    fn loops(&self) -> Vec<Vec<usize>> {
        let reach: Vec<BTreeSet<usize>> =
            (0..self.names.len()).map(|n| self.reachable(n)).collect();
        let mut placed = BTreeSet::new();
        let mut out = Vec::new();
        for n in 0..self.names.len() {
            if placed.contains(&n) || !reach[n].contains(&n) {
                continue;
            }
            let component: Vec<usize> = reach[n]
                .iter()
                .copied()
                .filter(|&m| reach[m].contains(&n))
                .collect();
            placed.extend(component.iter().copied());
            out.push(component);
        }
        out
    }

    /// Shortest path from `from` to `to` through `within`, both ends included.
    fn shortest(&self, from: usize, to: usize, within: &[usize]) -> Vec<usize> {
        let mut before: BTreeMap<usize, usize> = BTreeMap::new();
        let mut queue = VecDeque::from([from]);
        while let Some(n) = queue.pop_front() {
            for s in self.successors(n) {
                if !within.contains(&s) || before.contains_key(&s) || s == from {
                    continue;
                }
                before.insert(s, n);
                if s == to {
                    let mut path = vec![to];
                    let mut at = to;
                    while at != from {
                        at = before[&at];
                        path.push(at);
                    }
                    path.reverse();
                    return path;
                }
                queue.push_back(s);
            }
        }
        Vec::new()
    }

    /// One loop through the component's first module, with where each step is referenced, then
    /// the other modules of the component if the loop does not pass them.
    fn describe(&self, component: &[usize]) -> String {
        let start = component[0];
        // A loop through `start`: the shortest way to one of its successors and back.
        let cycle = self
            .successors(start)
            .filter(|s| component.contains(s))
            .map(|s| {
                let mut cycle = vec![start];
                cycle.extend(self.shortest(s, start, component));
                cycle
            })
            .min_by_key(Vec::len)
            .unwrap_or_default();
        let mut text = cycle
            .iter()
            .map(|&n| self.names[n].as_str())
            .collect::<Vec<_>>()
            .join(" -> ");
        for step in cycle.windows(2) {
            let at = &self.edges[&(step[0], step[1])];
            text.push_str(&format!(
                "\n  {} -> {} at {at}",
                self.names[step[0]], self.names[step[1]]
            ));
        }
        let others: Vec<&str> = component
            .iter()
            .filter(|n| !cycle.contains(n))
            .map(|&n| self.names[n].as_str())
            .collect();
        if !others.is_empty() {
            text.push_str(&format!("\n  (also in this tangle: {})", others.join(", ")));
        }
        text
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Ident(String),
    /// `::`
    Sep,
    Punct(char),
}

/// Splits Rust source into identifiers, `::` and single punctuation, each with its 1-based
/// line; comments, string, byte-string and char literals, lifetimes and numbers are dropped.
fn tokens(text: &str) -> Vec<(Token, usize)> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut line = 1;
    let mut i = 0;
    // Skips to just past the closing quote of a string with escapes.
    let skip_string = |i: &mut usize, line: &mut usize| {
        while *i < chars.len() && chars[*i] != '"' {
            if chars[*i] == '\\' {
                *i += 1;
            }
            if chars.get(*i) == Some(&'\n') {
                *line += 1;
            }
            *i += 1;
        }
        *i += 1;
    };
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '\n' {
            line += 1;
            i += 1;
        } else if c.is_whitespace() {
            i += 1;
        } else if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    if chars[i] == '\n' {
                        line += 1;
                    }
                    i += 1;
                }
            }
        } else if c == '"' {
            i += 1;
            skip_string(&mut i, &mut line);
        } else if c == '\'' {
            // A char literal ('a', '\n', '\u{..}', '"') or a lifetime ('a, 'static).
            if next == Some('\\') {
                i += 2;
                while i < chars.len() && chars[i] != '\'' {
                    i += 1;
                }
                i += 1;
            } else if chars.get(i + 2) == Some(&'\'') {
                i += 3;
            } else {
                i += 1;
                while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                    i += 1;
                }
            }
        } else if c.is_ascii_digit() {
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
        } else if c.is_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let at = chars.get(i).copied();
            let raw_prefix = matches!(word.as_str(), "r" | "br" | "cr");
            if raw_prefix && (at == Some('"') || at == Some('#')) {
                let hashes = chars[i..].iter().take_while(|&&h| h == '#').count();
                if chars.get(i + hashes) == Some(&'"') {
                    // A raw string: ends at a quote followed by as many hashes.
                    i += hashes + 1;
                    while i < chars.len() {
                        if chars[i] == '"' && chars[i + 1..].iter().take(hashes).all(|&h| h == '#')
                        {
                            i += 1 + hashes;
                            break;
                        }
                        if chars[i] == '\n' {
                            line += 1;
                        }
                        i += 1;
                    }
                    continue;
                }
                if word == "r" && hashes == 1 {
                    // A raw identifier, r#type: the identifier follows.
                    i += 1;
                    continue;
                }
            }
            if (word == "b" || word == "c") && at == Some('"') {
                i += 1;
                skip_string(&mut i, &mut line);
                continue;
            }
            if word == "b" && at == Some('\'') {
                i += 1;
                if chars.get(i) == Some(&'\\') {
                    i += 1;
                }
                i += 1;
                while i < chars.len() && chars[i] != '\'' {
                    i += 1;
                }
                i += 1;
                continue;
            }
            out.push((Token::Ident(word), line));
        } else if c == ':' && next == Some(':') {
            out.push((Token::Sep, line));
            i += 2;
        } else {
            out.push((Token::Punct(c), line));
            i += 1;
        }
    }
    out
}

/// The modules a file at `module` references, each as the longest prefix of the path that is in
/// `known`, with the line of the reference. Paths start at `crate`, `super`, `self` or a child
/// module of the module the reference sits in (a file's module, or an inline `mod` in it).
fn references(
    text: &str,
    module: &[String],
    known: &BTreeSet<Vec<String>>,
) -> Vec<(Vec<String>, usize)> {
    let toks = tokens(text);
    let ident = |i: usize| match toks.get(i) {
        Some((Token::Ident(w), _)) => Some(w.as_str()),
        _ => None,
    };
    let is = |i: usize, t: &Token| toks.get(i).is_some_and(|(x, _)| x == t);
    let mut out = Vec::new();
    // Inline modules open at this point, with the brace depth outside each.
    let mut inline: Vec<(String, usize)> = Vec::new();
    let mut depth = 0;
    let mut i = 0;
    while i < toks.len() {
        let here: Vec<String> = module
            .iter()
            .cloned()
            .chain(inline.iter().map(|(m, _)| m.clone()))
            .collect();
        // `mod child;` makes the child part of this module's surface: whoever names this module
        // may reach the child's items through it, so the parent depends on the child. Not so a
        // test module (`#[cfg(test)] mod tests;`): nothing reaches it, and it names what it tests.
        let test_only = i >= 7
            && [
                Token::Punct('#'),
                Token::Punct('['),
                Token::Ident("cfg".into()),
                Token::Punct('('),
                Token::Ident("test".into()),
                Token::Punct(')'),
                Token::Punct(']'),
            ]
            .iter()
            .enumerate()
            .all(|(k, t)| is(i - 7 + k, t));
        if ident(i) == Some("mod") && is(i + 2, &Token::Punct(';')) && !test_only {
            if let Some(name) = ident(i + 1) {
                let mut child = here.clone();
                child.push(name.to_owned());
                if known.contains(&child) {
                    out.push((child, toks[i].1));
                }
            }
        }
        if ident(i) == Some("mod") && is(i + 2, &Token::Punct('{')) {
            if let Some(name) = ident(i + 1) {
                inline.push((name.to_owned(), depth));
                depth += 1;
                i += 3;
                continue;
            }
        }
        match toks[i].0 {
            Token::Punct('{') => depth += 1,
            Token::Punct('}') => {
                depth -= 1;
                if inline.last().is_some_and(|(_, d)| *d == depth) {
                    inline.pop();
                }
            }
            _ => {}
        }
        let after_sep = i > 0 && is(i - 1, &Token::Sep);
        let base = match ident(i) {
            _ if after_sep || !is(i + 1, &Token::Sep) => None,
            Some("crate") => Some(Vec::new()),
            Some("self") => Some(here.clone()),
            Some("super") => Some(here[..here.len().saturating_sub(1)].to_vec()),
            Some(w) => {
                let mut child = here.clone();
                child.push(w.to_owned());
                known.contains(&child).then_some(child)
            }
            None => None,
        };
        let Some(base) = base else {
            i += 1;
            continue;
        };
        let line = toks[i].1;
        let mut paths = Vec::new();
        i += 2;
        use_tree(&toks, &mut i, base, &mut paths);
        for p in paths {
            let target = (0..=p.len())
                .rev()
                .map(|n| p[..n].to_vec())
                .find(|prefix| known.contains(prefix))
                .unwrap_or_default();
            out.push((target, line));
        }
    }
    out.sort();
    out.dedup_by(|a, b| a.0 == b.0);
    out
}

/// Reads one path or use tree at `i` (after its first segment and `::`), pushing every full
/// path it names; leaves `i` just past it.
fn use_tree(
    toks: &[(Token, usize)],
    i: &mut usize,
    prefix: Vec<String>,
    out: &mut Vec<Vec<String>>,
) {
    let mut path = prefix;
    loop {
        match toks.get(*i).map(|(t, _)| t) {
            Some(Token::Ident(w)) if w == "self" => *i += 1,
            Some(Token::Ident(w)) if w == "super" => {
                path.pop();
                *i += 1;
            }
            Some(Token::Ident(w)) => {
                path.push(w.clone());
                *i += 1;
            }
            Some(Token::Punct('*')) => *i += 1,
            Some(Token::Punct('{')) => {
                *i += 1;
                while *i < toks.len() && toks[*i].0 != Token::Punct('}') {
                    use_tree(toks, i, path.clone(), out);
                    // `as name` and the separating comma.
                    while *i < toks.len()
                        && !matches!(toks[*i].0, Token::Punct('}') | Token::Punct(','))
                    {
                        *i += 1;
                    }
                    if toks.get(*i).is_some_and(|(t, _)| *t == Token::Punct(',')) {
                        *i += 1;
                    }
                }
                *i += 1;
                return;
            }
            _ => break,
        }
        if toks.get(*i).is_some_and(|(t, _)| *t == Token::Sep) {
            *i += 1;
        } else {
            break;
        }
    }
    out.push(path);
}

/// Prints the module graph in Graphviz's dot language:
/// `cargo test --test layout -- --ignored --nocapture | dot -Tsvg`.
#[test]
#[ignore = "prints the graph; run by hand"]
fn print_module_graph() {
    let graph = Graph::of_crate(Path::new(env!("CARGO_MANIFEST_DIR")));
    println!("digraph hearth {{");
    for (&(from, to), at) in &graph.edges {
        println!(
            "  \"{}\" -> \"{}\"; // {at}",
            graph.name(from),
            graph.name(to)
        );
    }
    println!("}}");
}
