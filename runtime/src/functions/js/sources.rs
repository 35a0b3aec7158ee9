//! A JS/TS function's files → the modules its engine snapshot holds.
//!
//! Why not a bundler: QuickJS links ES modules itself, so the build only has
//! to find the files the entry imports (relative imports, resolved the way
//! TypeScript and Deno users write them), strip their TypeScript (oxc), and
//! note which `wasmbase` capabilities they import (checked against the
//! grants before anything runs). Packages (`npm:`, bare names, URLs) are not
//! resolved: pre-bundle them (docs/FUNCTIONS.md says how).

use oxc::allocator::Allocator;
use oxc::codegen::Codegen;
use oxc::parser::Parser;
use oxc::semantic::SemanticBuilder;
use oxc::span::SourceType;
use oxc::syntax::module_record::ImportImportName;
use oxc::transformer::{TransformOptions, Transformer};
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::path::Path;

/// Entry files looked for, in order, when `function.toml` names no `main`.
pub const ENTRIES: &[&str] = &[
    "index.ts",
    "index.js",
    "index.mts",
    "index.mjs",
    "index.tsx",
    "index.jsx",
    "main.ts",
    "main.js",
];

/// The empty module a type-declaration import (`*.d.ts`) loads.
const TYPES_ONLY: &str = "(types).js";

/// What one function's sources may add up to.
const MAX_SOURCE_BYTES: usize = 8 << 20;

/// Extensions tried, in order, for an import written without one.
const EXTENSIONS: &[&str] = &[".ts", ".tsx", ".mts", ".js", ".mjs", ".jsx"];

/// The modules of one function, ready for the engine.
#[derive(Debug, Default)]
pub struct Sources {
    /// `(path relative to the function's directory, JavaScript)`.
    pub modules: Vec<(String, String)>,
    /// Imports as written (joined to their importer's directory) → the file
    /// they resolved to, where the two differ.
    pub aliases: Vec<(String, String)>,
    /// The entry module's path.
    pub entry: String,
    /// Names imported from `"wasmbase"` (`*` for a namespace or default import).
    pub uses: BTreeSet<String>,
}

/// The entry file of the function in `dir`: `main` from function.toml, else
/// the first of [`ENTRIES`] that exists. None: not a JS/TS function.
pub fn entry(dir: &Path, main: Option<&str>) -> Option<String> {
    match main {
        Some(m) => Some(m.trim_start_matches("./").to_string()),
        None => ENTRIES
            .iter()
            .find(|e| dir.join(e).is_file())
            .map(|e| e.to_string()),
    }
}

/// `base/../x` style joins within the function's directory; None when the
/// path leaves it.
fn join(dir: &str, rel: &str) -> Option<String> {
    let mut parts: Vec<&str> = dir.split('/').filter(|p| !p.is_empty()).collect();
    for p in rel.split('/') {
        match p {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            p => parts.push(p),
        }
    }
    Some(parts.join("/"))
}

fn dir_of(path: &str) -> &str {
    path.rsplit_once('/').map_or("", |(d, _)| d)
}

/// The file an import names: as written, with an extension added, with
/// TypeScript's `.js` → `.ts` convention, or as a directory's index.
fn resolve(root: &Path, key: &str) -> Option<String> {
    // Only files whose real path is inside the function's directory (no
    // symlink out of it, no absolute path).
    let real_root = std::fs::canonicalize(root).ok()?;
    let is_file = |p: &str| {
        !p.is_empty()
            && !p.starts_with('/')
            && std::fs::canonicalize(root.join(p))
                .is_ok_and(|r| r.starts_with(&real_root) && r.is_file())
    };
    if is_file(key) {
        return Some(key.to_string());
    }
    for (js, ts) in [
        (".js", ".ts"),
        (".js", ".tsx"),
        (".mjs", ".mts"),
        (".jsx", ".tsx"),
    ] {
        if let Some(stem) = key.strip_suffix(js) {
            let c = format!("{stem}{ts}");
            if is_file(&c) {
                return Some(c);
            }
        }
    }
    for ext in EXTENSIONS {
        let c = format!("{key}{ext}");
        if is_file(&c) {
            return Some(c);
        }
    }
    let dir = if key.is_empty() {
        String::new()
    } else {
        format!("{key}/")
    };
    for ext in EXTENSIONS {
        let c = format!("{dir}index{ext}");
        if is_file(&c) {
            return Some(c);
        }
    }
    None
}

/// `file:line:column` of byte `offset` in `text` (1-based, as editors show).
fn position(file: &str, text: &str, offset: u32) -> String {
    let before = &text[..(offset as usize).min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    format!("{file}:{line}:{col}")
}

fn diagnostic(file: &str, text: &str, d: &oxc::diagnostics::OxcDiagnostic) -> String {
    let at = d
        .labels
        .first()
        .map(|l| position(file, text, l.offset()))
        .unwrap_or_else(|| file.to_string());
    match &d.help {
        Some(h) => format!("{at}: {} ({h})", d.message),
        None => format!("{at}: {}", d.message),
    }
}

/// Reads, checks and strips every module the entry reaches.
pub fn collect(root: &Path, entry: &str) -> Result<Sources, String> {
    let mut out = Sources {
        entry: entry.to_string(),
        ..Default::default()
    };
    if join("", entry).as_deref() != Some(entry) || resolve(root, entry).as_deref() != Some(entry) {
        return Err(format!(
            "{entry}: no such file in {} (set `main` in function.toml, or add one of {})",
            root.display(),
            ENTRIES.join(", ")
        ));
    }
    let mut seen: HashMap<String, ()> = HashMap::new();
    let mut queue = VecDeque::from([entry.to_string()]);
    seen.insert(entry.to_string(), ());
    let mut total = 0usize;
    while let Some(file) = queue.pop_front() {
        let path = root.join(&file);
        total += std::fs::metadata(&path).map_or(0, |m| m.len() as usize);
        if total > MAX_SOURCE_BYTES {
            return Err(format!(
                "the function's sources pass {} MiB; bundle and minify them first",
                MAX_SOURCE_BYTES >> 20
            ));
        }
        let text = std::fs::read_to_string(&path).map_err(|e| format!("{file}: {e}"))?;
        let (js, imports) = transform(&file, &text)?;
        for (spec, offset, names) in imports {
            if spec == "wasmbase" {
                out.uses.extend(names);
                continue;
            }
            // Type declarations (Supabase's template imports
            // `jsr:@supabase/functions-js/edge-runtime.d.ts`) have no code:
            // such an import loads an empty module.
            let relative = spec.starts_with("./") || spec.starts_with("../");
            if spec.ends_with(".d.ts") {
                if seen.insert(TYPES_ONLY.to_string(), ()).is_none() {
                    out.modules.push((TYPES_ONLY.to_string(), String::new()));
                }
                // The engine looks a relative import up by its joined path.
                let key = match relative {
                    true => join(dir_of(&file), &spec).unwrap_or(spec),
                    false => spec,
                };
                out.aliases.push((key, TYPES_ONLY.to_string()));
                continue;
            }
            if !relative {
                return Err(format!(
                    "{}: cannot import \"{spec}\": a function's modules are its own files (relative imports) and \"wasmbase\"; bundle packages first (docs/FUNCTIONS.md, \"npm packages\")",
                    position(&file, &text, offset)
                ));
            }
            let key = join(dir_of(&file), &spec).ok_or_else(|| {
                format!(
                    "{}: \"{spec}\" points outside the function's directory",
                    position(&file, &text, offset)
                )
            })?;
            let found = resolve(root, &key).ok_or_else(|| {
                format!(
                    "{}: cannot find module \"{spec}\" (looked for {key} with {} and {key}/index.*)",
                    position(&file, &text, offset),
                    EXTENSIONS.join(", ")
                )
            })?;
            if found != key {
                out.aliases.push((key, found.clone()));
            }
            if seen.insert(found.clone(), ()).is_none() {
                queue.push_back(found);
            }
        }
        out.modules.push((file, js));
    }
    out.aliases.sort();
    out.aliases.dedup();
    Ok(out)
}

/// One import of a module: specifier, where it is, and the names taken.
type Import = (String, u32, Vec<String>);

/// Parses `text`, lists its value imports, and prints it as JavaScript.
fn transform(file: &str, text: &str) -> Result<(String, Vec<Import>), String> {
    let source_type = SourceType::from_path(file)
        .map_err(|_| format!("{file}: not a JavaScript or TypeScript file"))?
        .with_module(true);
    let alloc = Allocator::default();
    let parsed = Parser::new(&alloc, text, source_type).parse();
    if let Some(d) = parsed.diagnostics.first() {
        return Err(diagnostic(file, text, d));
    }
    let record = &parsed.module_record;
    let mut imports: Vec<Import> = Vec::new();
    for (spec, reqs) in record.requested_modules.iter() {
        if reqs.iter().all(|r| r.is_type) {
            continue;
        }
        let offset = reqs.first().map_or(0, |r| r.span.start);
        imports.push((spec.to_string(), offset, Vec::new()));
    }
    for e in record.import_entries.iter() {
        if e.is_type || e.module_request.name.as_str() != "wasmbase" {
            continue;
        }
        let name = match &e.import_name {
            ImportImportName::Name(n) => n.name.to_string(),
            _ => "*".to_string(),
        };
        if let Some(i) = imports.iter_mut().find(|i| i.0 == "wasmbase") {
            i.2.push(name);
        }
    }
    // Re-exports (`export * from "wasmbase"`) count as taking everything.
    for i in imports.iter_mut() {
        if i.0 == "wasmbase" && i.2.is_empty() {
            i.2.push("*".into());
        }
    }
    imports.sort_by_key(|i| i.1);
    let mut program = parsed.program;
    let semantic = SemanticBuilder::new().build(&program);
    if let Some(d) = semantic.diagnostics.first() {
        return Err(diagnostic(file, text, d));
    }
    let scoping = semantic.semantic.into_scoping();
    let options = TransformOptions::default();
    let done = Transformer::new(&alloc, Path::new(file), &options)
        .build_with_scoping(scoping, &mut program);
    if let Some(d) = done.diagnostics.first() {
        return Err(diagnostic(file, text, d));
    }
    Ok((Codegen::new().build(&program).code, imports))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(files: &[(&str, &str)]) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        for (name, text) in files {
            let p = d.path().join(name);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
        d
    }

    #[test]
    fn strips_types_and_resolves_relative_imports() {
        let d = dir(&[
            ("index.ts", "import { add } from './lib/math.js';\nimport type { T } from './types';\nimport { db, sql } from 'wasmbase';\nconst x: number = add(1, 2);\nexport default { fetch: () => new Response(String(x)) };\n"),
            ("lib/math.ts", "export function add(a: number, b: number): number { return a + b }\n"),
            ("types.ts", "export type T = string;\n"),
        ]);
        let s = collect(d.path(), "index.ts").unwrap();
        let names: Vec<&str> = s.modules.iter().map(|m| m.0.as_str()).collect();
        assert_eq!(
            names,
            ["index.ts", "lib/math.ts"],
            "type-only imports are not modules"
        );
        assert_eq!(
            s.aliases,
            [("lib/math.js".to_string(), "lib/math.ts".to_string())]
        );
        assert!(!s.modules[1].1.contains(": number"), "{}", s.modules[1].1);
        assert_eq!(s.uses.iter().collect::<Vec<_>>(), ["db", "sql"]);
    }

    #[test]
    fn syntax_errors_name_file_line_and_column() {
        let d = dir(&[("index.ts", "const a = 1;\nconst b = (;\n")]);
        let e = collect(d.path(), "index.ts").unwrap_err();
        assert!(e.starts_with("index.ts:2:12: "), "{e}");
    }

    #[test]
    fn refuses_packages_and_missing_files_and_escapes() {
        let d = dir(&[("index.ts", "import x from 'left-pad';\n")]);
        let e = collect(d.path(), "index.ts").unwrap_err();
        assert!(
            e.starts_with("index.ts:1:15: cannot import \"left-pad\""),
            "{e}"
        );
        let d = dir(&[("index.js", "\n import './nope.js';\n")]);
        let e = collect(d.path(), "index.js").unwrap_err();
        assert!(
            e.contains("index.js:2:9: cannot find module \"./nope.js\""),
            "{e}"
        );
        let d = dir(&[("index.js", "import '../secret.js';\n")]);
        let e = collect(d.path(), "index.js").unwrap_err();
        assert!(e.contains("outside the function's directory"), "{e}");
        let d = dir(&[("index.js", "import './';\n")]);
        assert!(
            collect(d.path(), "index.js").is_ok(),
            "`./` is the directory's own index"
        );
        let d = dir(&[("index.js", "import './lib/x.js';\n")]);
        std::os::unix::fs::symlink("/etc", d.path().join("lib")).unwrap();
        let e = collect(d.path(), "index.js").unwrap_err();
        assert!(
            e.contains("cannot find module"),
            "a symlink out of the directory: {e}"
        );
    }
}
