//! The crate's modules form layers: `src/lib.rs` declares them top to bottom, and each may use
//! only the modules declared after it. So no module imports one that imports it back (a module
//! cycle), and the map in lib.rs stays in layer order. A folder and its own files count as one
//! module.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::Path,
};

#[test]
fn every_module_uses_only_modules_declared_after_it_in_lib_rs() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let lib = fs::read_to_string(src.join("lib.rs")).expect("read src/lib.rs");
    let order = declared_modules(&lib);
    assert!(order.len() >= 10, "lib.rs declares the crate's modules: {order:?}");
    let mut uses = BTreeMap::new();
    for module in &order {
        let folder = src.join(module);
        let files = if folder.is_dir() {
            rust_files(&folder)
        } else {
            vec![src.join(format!("{module}.rs"))]
        };
        let mut used = BTreeSet::new();
        for file in files {
            let depth = file.strip_prefix(&src).unwrap().components().count();
            let is_mod_file = file.file_name().is_some_and(|name| name == "mod.rs");
            // How many `super::` from this file reach the crate root.
            let depth = if is_mod_file { depth - 1 } else { depth };
            let text = fs::read_to_string(&file).expect("read a source file");
            used.extend(modules_used(&text, depth));
        }
        used.retain(|name| name != module && order.contains(name));
        uses.insert(module.clone(), used);
    }
    let problems = layer_violations(&order, &uses);
    assert!(problems.is_empty(), "modules out of layer order:\n{}", problems.join("\n"));
}

/// Every use of a module declared before (above) its user.
fn layer_violations(order: &[String], uses: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    let position = |module: &str| order.iter().position(|m| m == module);
    let mut problems = Vec::new();
    for (user, used) in uses {
        for module in used {
            match (position(user), position(module)) {
                (Some(from), Some(to)) if to <= from => problems.push(format!(
                    "`{user}` uses `{module}`, which lib.rs declares before it{}",
                    if uses.get(module).is_some_and(|back| back.contains(user)) {
                        " (and which uses it back: a cycle)"
                    } else {
                        ""
                    }
                )),
                _ => {}
            }
        }
    }
    problems
}

/// The modules `lib.rs` declares (`mod x;`, `pub mod x;`, `pub(crate) mod x;`), in order.
fn declared_modules(lib: &str) -> Vec<String> {
    code_only(lib)
        .lines()
        .filter_map(|line| {
            let line = line.trim();
            let rest =
                line.strip_prefix("pub(crate) ").or(line.strip_prefix("pub ")).unwrap_or(line);
            let name = rest.strip_prefix("mod ")?.strip_suffix(';')?;
            Some(name.trim().to_owned())
        })
        .collect()
}

fn rust_files(folder: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in fs::read_dir(folder).expect("read a module folder") {
        let path = entry.expect("a folder entry").path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            files.push(path);
        }
    }
    files
}

/// The top-level modules a file names through `crate::` (or as many `super::` as the file is
/// deep), in paths and in `use` groups. Names that are not modules (items `lib.rs` re-exports,
/// `super::` paths inside a file's own test module) are left to the caller to drop.
fn modules_used(text: &str, depth: usize) -> BTreeSet<String> {
    let code = code_only(text);
    let root = "super::".repeat(depth);
    let mut used = BTreeSet::new();
    for prefix in ["crate::", root.as_str()] {
        for (at, _) in code.match_indices(prefix) {
            let before = code[..at].chars().next_back();
            let rest = &code[at + prefix.len()..];
            // Part of a longer path (`x::super::`) or name (`$crate` is fine, `mycrate` not),
            // or more `super::` than reach the root.
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':')
                || rest.starts_with("super::")
            {
                continue;
            }
            match rest.strip_prefix('{') {
                Some(group) => used.extend(group_heads(group)),
                None => used.extend(identifier(rest)),
            }
        }
    }
    used
}

/// The first name of every item in a `{ ... }` use group (the text after its `{`).
fn group_heads(group: &str) -> Vec<String> {
    let mut heads = Vec::new();
    let mut depth = 0;
    let mut item_start = true;
    for (at, c) in group.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => break,
            '}' => depth -= 1,
            ',' if depth == 0 => item_start = true,
            c if item_start && !c.is_whitespace() => {
                item_start = false;
                heads.extend(identifier(&group[at..]));
            }
            _ => {}
        }
    }
    heads
}

fn identifier(text: &str) -> Option<String> {
    let name: String = text.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
    (!name.is_empty()).then_some(name)
}

/// The text without comments and string literals (which may mention `crate::` freely).
fn code_only(text: &str) -> String {
    let mut code = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '/' if chars.peek() == Some(&'/') => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        code.push('\n');
                        break;
                    }
                }
            }
            '/' if chars.peek() == Some(&'*') => {
                let mut last = ' ';
                for c in chars.by_ref() {
                    if last == '*' && c == '/' {
                        break;
                    }
                    last = c;
                }
            }
            '"' => {
                let mut escaped = false;
                for c in chars.by_ref() {
                    match c {
                        '\\' if !escaped => escaped = true,
                        '"' if !escaped => break,
                        _ => escaped = false,
                    }
                }
                code.push_str("\"\"");
            }
            c => code.push(c),
        }
    }
    code
}

#[test]
fn the_check_finds_paths_groups_and_cycles() {
    let text = r#"
        //! A doc line naming crate::doc is not a use.
        use crate::{
            hub::{Hub, Target},
            store::Store, bus,
        };
        use super::error::AppError;
        fn f() { crate::relay::send(); let s = "crate::string"; super::super::deep(); }
    "#;
    let used: Vec<String> = modules_used(text, 1).into_iter().collect();
    assert_eq!(used, ["bus", "error", "hub", "relay", "store"]);
    let nested: Vec<String> = modules_used(text, 2).into_iter().collect();
    assert_eq!(nested, ["bus", "deep", "hub", "relay", "store"]);
    assert!(modules_used("let x = mycrate::hub::X; $crate::error::Y;", 1).contains("error"));
    assert!(!modules_used("let x = mycrate::hub::X;", 1).contains("hub"));

    let order: Vec<String> = ["top", "middle", "bottom"].map(String::from).to_vec();
    let edges = |pairs: &[(&str, &str)]| {
        let mut uses: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (from, to) in pairs {
            uses.entry(from.to_string()).or_default().insert(to.to_string());
        }
        uses
    };
    assert!(
        layer_violations(&order, &edges(&[("top", "bottom"), ("middle", "bottom")])).is_empty()
    );
    let cycle = layer_violations(&order, &edges(&[("middle", "bottom"), ("bottom", "middle")]));
    assert_eq!(
        cycle,
        [
            "`bottom` uses `middle`, which lib.rs declares before it (and which uses it back: a cycle)"
        ]
    );
    let lib = "pub(crate) mod a;\n// mod commented;\npub mod b;\nmod c;\npub use a::X;";
    assert_eq!(declared_modules(lib), ["a", "b", "c"]);
}
