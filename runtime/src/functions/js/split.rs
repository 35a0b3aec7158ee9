//! One copy of the JS engine's code per node, however many JS functions it
//! serves.
//!
//! Why: wasmtime compiles code per component, and every JS function's
//! component is the whole engine with a different snapshot in it, so each
//! loaded function kept its own ~2.5 MiB of the engine's machine code and
//! ~1.2 MiB of its read-only data resident (10 functions: 140 MB idle RSS,
//! docs/PERFORMANCE.md). At load, a snapshot component is cut in two:
//!
//! - the **code** component: the snapshot with its main core module's
//!   memory turned into an import, its snapshot data segments removed, and a
//!   core module holding that memory imported from the host
//!   (`SNAPSHOT_IMPORT`) and instantiated just before the main module. The
//!   snapshot's globals stay in it: a snapshot is taken after the
//!   initializer returned, so the one mutable global (the stack pointer) is
//!   back at its first value in every snapshot, and every function built on
//!   the same engine yields the same bytes. They are compiled (or read from
//!   the artifact cache) and mapped once, then shared. (Should globals ever
//!   differ, the bytes differ, and that function simply gets its own copy.)
//!   A global kept, rather than imported, is also one indirection less on
//!   every call;
//! - the **data** module: no code, only the memory: its snapshot size, and
//!   its contents as active data segments, from which wasmtime makes its
//!   copy-on-write image.
//!
//! The stored and deployed artifact stays the whole snapshot component (a
//! valid component on its own); this is only how a node loads it. A
//! component of any other shape is loaded whole, as before.

use std::ops::Range;
use wasm_encoder::reencode::{Reencode, ReencodeComponent, RoundtripReencoder};
use wasmparser::{Chunk, DataKind, Parser, Payload, TypeRef};

/// The component-level import the code component adds: the data module.
pub const SNAPSHOT_IMPORT: &str = "wasmbase-js-snapshot";

/// The core-level module name under which the main module imports its
/// memory (from the data module's instance).
const CORE_MODULE: &str = "wasmbase:snapshot";

/// A snapshot component cut in two (see the module doc).
pub struct Split {
    /// The code component: the same bytes for every snapshot of one engine.
    pub code: Vec<u8>,
    /// The data core module: this snapshot's memory.
    pub data: Vec<u8>,
}

/// Cuts `wasm` (a snapshot component) in two, or says why its shape is not
/// one this handles (the caller then loads it whole).
pub fn split(wasm: &[u8]) -> Result<Split, String> {
    let top = sections(wasm)?;
    let modules: Vec<&[u8]> = top
        .iter()
        .filter_map(|s| match s {
            Section::Module(r) => Some(&wasm[r.clone()]),
            _ => None,
        })
        .collect();
    // The main module: the one module that defines a memory (the others,
    // wit-component's shims, define none).
    let mut main = None;
    for (i, m) in modules.iter().enumerate() {
        if defines_memory(m)? {
            if main.is_some() {
                return Err("more than one module defines a memory".into());
            }
            main = Some(i);
        }
    }
    let main = main.ok_or("no module defines a memory")?;
    let parts = cut_module(modules[main])?;
    let code = code_component(wasm, &top, main as u32, &parts)?;
    Ok(Split {
        code,
        data: parts.data,
    })
}

/// A top-level section of the component.
enum Section {
    /// A core module (its bytes' range).
    Module(Range<usize>),
    /// Any other section: id and contents' range.
    Other(u8, Range<usize>),
}

/// The component's top-level sections, nested modules skipped over.
fn sections(wasm: &[u8]) -> Result<Vec<Section>, String> {
    let mut parser = Parser::new(0);
    let mut at = 0;
    let mut out = Vec::new();
    loop {
        let (payload, consumed) = match parser.parse(&wasm[at..], true) {
            Ok(Chunk::Parsed { payload, consumed }) => (payload, consumed),
            Ok(Chunk::NeedMoreData(_)) => return Err("truncated component".into()),
            Err(e) => return Err(e.to_string()),
        };
        at += consumed;
        match payload {
            Payload::Version { encoding, .. } => {
                if encoding != wasmparser::Encoding::Component {
                    return Err("not a component".into());
                }
            }
            Payload::ModuleSection {
                unchecked_range, ..
            } if unchecked_range.end <= wasm.len() => {
                // The parser has moved past the module; the caller skips its bytes.
                at += unchecked_range.len();
                out.push(Section::Module(unchecked_range));
            }
            // wit-component's export shims: they see none of the core
            // instances renumbered here, and are kept as they are.
            Payload::ComponentSection {
                unchecked_range, ..
            } if unchecked_range.end <= wasm.len() => {
                at += unchecked_range.len();
                out.push(Section::Other(
                    wasm_encoder::ComponentSectionId::Component as u8,
                    unchecked_range,
                ));
            }
            Payload::ModuleSection { .. } | Payload::ComponentSection { .. } => {
                return Err("truncated component".into())
            }
            Payload::End(_) => return Ok(out),
            // An imported core module takes a module index that counting
            // module sections does not see.
            Payload::ComponentImportSection(ref reader)
                if reader.clone().into_iter().any(|i| {
                    matches!(
                        i.map(|i| i.ty),
                        Ok(wasmparser::ComponentTypeRef::Module(_)) | Err(_)
                    )
                }) =>
            {
                return Err("an imported core module".into())
            }
            p => match p.as_section() {
                Some((id, range)) => out.push(Section::Other(id, range)),
                None => return Err("an unexpected payload".into()),
            },
        }
    }
}

fn defines_memory(module: &[u8]) -> Result<bool, String> {
    for p in Parser::new(0).parse_all(module) {
        if let Payload::MemorySection(r) = p.map_err(|e| e.to_string())? {
            return Ok(r.count() > 0);
        }
    }
    Ok(false)
}

/// The main module cut in two.
struct ModuleParts {
    /// The main module reading its memory from [`CORE_MODULE`].
    code: Vec<u8>,
    /// The data module.
    data: Vec<u8>,
    /// The memory's type as the code module imports it (minimum 0: any
    /// snapshot's memory satisfies it).
    memory: wasm_encoder::MemoryType,
}

fn cut_module(module: &[u8]) -> Result<ModuleParts, String> {
    let e = |e: wasmparser::BinaryReaderError| e.to_string();
    let r = |e: wasm_encoder::reencode::Error| e.to_string();
    // First pass: the memory and the snapshot's segments, which move out.
    let mut memory: Option<wasmparser::MemoryType> = None;
    let mut active: Vec<(u32, wasmparser::ConstExpr, &[u8])> = Vec::new();
    let mut passive = 0u32;
    let mut saw_imports = false;
    for p in Parser::new(0).parse_all(module) {
        match p.map_err(e)? {
            Payload::ImportSection(rd) => {
                saw_imports = true;
                for imp in rd.into_imports() {
                    if let TypeRef::Memory(_) = imp.map_err(e)?.ty {
                        return Err("the main module imports a memory".into());
                    }
                }
            }
            Payload::MemorySection(rd) => {
                let mems: Vec<_> = rd.into_iter().collect::<Result<_, _>>().map_err(e)?;
                if mems.len() != 1 {
                    return Err("the main module defines more than one memory".into());
                }
                memory = Some(mems[0]);
            }
            Payload::StartSection { .. } => return Err("the main module has a start".into()),
            Payload::DataSection(rd) => {
                for d in rd {
                    let d = d.map_err(e)?;
                    match d.kind {
                        DataKind::Passive if !active.is_empty() => {
                            return Err("a passive data segment after an active one".into())
                        }
                        DataKind::Passive => passive += 1,
                        DataKind::Active {
                            memory_index,
                            offset_expr,
                        } => active.push((memory_index, offset_expr, d.data)),
                    }
                }
            }
            _ => {}
        }
    }
    if !saw_imports {
        return Err("the main module imports nothing".into());
    }
    let memory = memory.ok_or("the main module defines no memory")?;
    let mem_ty = RoundtripReencoder.memory_type(memory).map_err(r)?;
    let mut import_mem = mem_ty;
    import_mem.minimum = 0;

    // Second pass: the code module.
    let mut code = wasm_encoder::Module::new();
    for p in Parser::new(0).parse_all(module) {
        let p = p.map_err(e)?;
        match &p {
            Payload::ImportSection(rd) => {
                let mut imports = wasm_encoder::ImportSection::new();
                for imp in rd.clone().into_imports() {
                    let imp = imp.map_err(e)?;
                    imports.import(
                        imp.module,
                        imp.name,
                        RoundtripReencoder.entity_type(imp.ty).map_err(r)?,
                    );
                }
                // Imported memories are numbered before defined ones: the
                // memory keeps index 0.
                imports.import(
                    CORE_MODULE,
                    "memory",
                    wasm_encoder::EntityType::Memory(import_mem),
                );
                code.section(&imports);
            }
            Payload::MemorySection(_) => {}
            // Only the passive segments stay (below).
            Payload::DataCountSection { .. } => {
                code.section(&wasm_encoder::DataCountSection { count: passive });
            }
            Payload::DataSection(rd) => {
                // The passive segments stay (Wizer empties the engine's own
                // segments into passive ones; code may name them by index);
                // the active ones are the snapshot's and move out.
                let mut section = wasm_encoder::DataSection::new();
                for d in rd.clone() {
                    let d = d.map_err(e)?;
                    if let DataKind::Passive = d.kind {
                        section.passive(d.data.iter().copied());
                    }
                }
                code.section(&section);
            }
            other => {
                if let Some((id, range)) = other.as_section() {
                    code.section(&wasm_encoder::RawSection {
                        id,
                        data: &module[range],
                    });
                }
            }
        }
    }

    // The data module: the memory and the snapshot's segments.
    let mut data = wasm_encoder::Module::new();
    let mut mems = wasm_encoder::MemorySection::new();
    mems.memory(mem_ty);
    data.section(&mems);
    let mut exports = wasm_encoder::ExportSection::new();
    exports.export("memory", wasm_encoder::ExportKind::Memory, 0);
    data.section(&exports);
    let mut segments = wasm_encoder::DataSection::new();
    for (mem, offset, bytes) in active {
        if mem != 0 {
            return Err("a data segment for another memory".into());
        }
        segments.active(
            0,
            &RoundtripReencoder.const_expr(offset).map_err(r)?,
            bytes.iter().copied(),
        );
    }
    data.section(&segments);
    Ok(ModuleParts {
        code: code.finish(),
        data: data.finish(),
        memory: import_mem,
    })
}

/// Renumbers core instances past the one inserted for the data module.
struct Renumber {
    /// Old index of the main module's instance (the data module's instance
    /// takes it; the main one and every later one move up by one).
    at: u32,
}

impl Reencode for Renumber {
    type Error = std::convert::Infallible;
}

impl ReencodeComponent for Renumber {
    fn instance_index(&mut self, i: u32) -> u32 {
        if i >= self.at {
            i + 1
        } else {
            i
        }
    }
}

fn code_component(
    wasm: &[u8],
    top: &[Section],
    main: u32,
    parts: &ModuleParts,
) -> Result<Vec<u8>, String> {
    use wasm_encoder::reencode::component_utils;
    use wasm_encoder::ComponentSectionId as Id;
    let err = |e: wasm_encoder::reencode::Error<std::convert::Infallible>| e.to_string();
    let mut out = wasm_encoder::Component::new();
    let mut modules = 0u32;
    let mut instances = 0u32;
    // Where the main module's instance is (old numbering).
    let mut main_instance = None;
    for s in top {
        if let Section::Other(id, r) = s {
            if *id == Id::CoreInstance as u8 {
                let reader = wasmparser::InstanceSectionReader::new(wasmparser::BinaryReader::new(
                    &wasm[r.clone()],
                    0,
                ))
                .map_err(|e| e.to_string())?;
                let count = reader.count();
                for (k, inst) in reader.into_iter().enumerate() {
                    if let wasmparser::Instance::Instantiate { module_index, .. } =
                        inst.map_err(|e| e.to_string())?
                    {
                        if module_index == main {
                            if main_instance.is_some() {
                                return Err("the main module is instantiated twice".into());
                            }
                            main_instance = Some(instances + k as u32);
                        }
                    }
                }
                instances += count;
            }
        }
    }
    let at = main_instance.ok_or("the main module is never instantiated")?;
    let mut renumber = Renumber { at };
    let mut data_module = None;
    let mut seen_instances = 0u32;
    for s in top {
        match s {
            Section::Module(r) => {
                if data_module.is_some() {
                    return Err("a module defined after the first core instance".into());
                }
                let bytes = if modules == main {
                    &parts.code[..]
                } else {
                    &wasm[r.clone()]
                };
                out.section(&wasm_encoder::RawSection {
                    id: Id::CoreModule as u8,
                    data: bytes,
                });
                modules += 1;
            }
            Section::Other(id, r) => {
                let body = &wasm[r.clone()];
                if *id == Id::CoreType as u8 {
                    return Err("core type definitions".into());
                }
                if *id == Id::CoreInstance as u8 {
                    if data_module.is_none() {
                        // The data module's type and import, once, before
                        // the first core instance (after every module).
                        let mut ty = wasm_encoder::ModuleType::new();
                        ty.export("memory", wasm_encoder::EntityType::Memory(parts.memory));
                        let mut types = wasm_encoder::CoreTypeSection::new();
                        types.ty().module(&ty);
                        out.section(&types);
                        let mut imports = wasm_encoder::ComponentImportSection::new();
                        imports.import(SNAPSHOT_IMPORT, wasm_encoder::ComponentTypeRef::Module(0));
                        out.section(&imports);
                        data_module = Some(modules);
                    }
                    let d = data_module.expect("set above");
                    let reader = wasmparser::InstanceSectionReader::new(
                        wasmparser::BinaryReader::new(body, 0),
                    )
                    .map_err(|e| e.to_string())?;
                    let mut section = wasm_encoder::InstanceSection::new();
                    for inst in reader {
                        let inst = inst.map_err(|e| e.to_string())?;
                        if seen_instances == at {
                            let wasmparser::Instance::Instantiate { module_index, args } = inst
                            else {
                                unreachable!("found as an instantiation above");
                            };
                            let none: [(&str, wasm_encoder::ModuleArg); 0] = [];
                            section.instantiate(d, none);
                            let mut with: Vec<(String, wasm_encoder::ModuleArg)> = args
                                .iter()
                                .map(|a| {
                                    (
                                        a.name.to_string(),
                                        wasm_encoder::ModuleArg::Instance(
                                            renumber.instance_index(a.index),
                                        ),
                                    )
                                })
                                .collect();
                            with.push((
                                CORE_MODULE.to_string(),
                                wasm_encoder::ModuleArg::Instance(at),
                            ));
                            section.instantiate(module_index, with);
                        } else {
                            component_utils::parse_instance(&mut renumber, &mut section, inst)
                                .map_err(err)?;
                        }
                        seen_instances += 1;
                    }
                    out.section(&section);
                } else if *id == Id::Alias as u8 {
                    let reader = wasmparser::ComponentAliasSectionReader::new(
                        wasmparser::BinaryReader::new(body, 0),
                    )
                    .map_err(|e| e.to_string())?;
                    let mut section = wasm_encoder::ComponentAliasSection::new();
                    component_utils::parse_component_alias_section(
                        &mut renumber,
                        &mut section,
                        reader,
                    )
                    .map_err(err)?;
                    out.section(&section);
                } else if *id == Id::CoreCustom as u8 && is_marker(body) {
                    // The function's own marker (its imports): not code.
                } else {
                    out.section(&wasm_encoder::RawSection {
                        id: *id,
                        data: body,
                    });
                }
            }
        }
    }
    Ok(out.finish())
}

fn is_marker(body: &[u8]) -> bool {
    let mut r = wasmparser::BinaryReader::new(body, 0);
    matches!(r.read_string(), Ok(n) if n == super::marker::NAME)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::functions::js::marker::{self, Marker};
    use crate::functions::js::snapshot::ENGINE_WASM;

    fn marked(uses: &[&str]) -> Vec<u8> {
        marker::append(
            ENGINE_WASM.to_vec(),
            &Marker {
                engine: "e".into(),
                uses: uses.iter().map(|u| u.to_string()).collect(),
            },
        )
    }

    fn validate(wasm: &[u8]) {
        wasmparser::Validator::new_with_features(wasmparser::WasmFeatures::all())
            .validate_all(wasm)
            .unwrap();
    }

    #[test]
    fn the_engine_splits_into_valid_parts_and_code_that_is_the_same_for_every_script() {
        let a = split(&marked(&["db", "sql"])).unwrap();
        let b = split(&marked(&[])).unwrap();
        // What a function imports is not code: one compiled copy serves both.
        assert_eq!(a.code, b.code);
        validate(&a.code);
        validate(&a.data);
        // The data module holds the memory and its contents, and no code.
        let mut exports = Vec::new();
        for p in Parser::new(0).parse_all(&a.data) {
            match p.unwrap() {
                Payload::CodeSectionStart { .. } | Payload::FunctionSection(_) => {
                    panic!("the data module has code")
                }
                Payload::ExportSection(r) => {
                    exports.extend(r.into_iter().map(|e| e.unwrap().name.to_string()))
                }
                _ => {}
            }
        }
        assert_eq!(exports, ["memory"]);
        // The engine's data segments moved out of the code.
        assert!(a.data.len() > 100_000, "{}", a.data.len());
        assert!(a.code.len() + a.data.len() < ENGINE_WASM.len() + 4096);
    }

    #[test]
    fn components_of_other_shapes_are_refused_not_mangled() {
        assert!(split(b"\0asm\x01\0\0\0").is_err(), "a core module");
        assert!(split(b"not wasm").is_err());
        let mut cut = ENGINE_WASM.to_vec();
        cut.truncate(cut.len() / 2);
        assert!(split(&cut).is_err(), "a truncated component");
        // A component whose one module has no memory.
        let empty = wasm_encoder::Component::new().finish();
        assert!(split(&empty).is_err());
        // One that imports a core module (module indices this does not count).
        let mut c = wasm_encoder::Component::new();
        let mut types = wasm_encoder::CoreTypeSection::new();
        types.ty().module(&wasm_encoder::ModuleType::new());
        c.section(&types);
        let mut imports = wasm_encoder::ComponentImportSection::new();
        imports.import("m", wasm_encoder::ComponentTypeRef::Module(0));
        c.section(&imports);
        let mut m = wasm_encoder::Module::new();
        let mut ftypes = wasm_encoder::TypeSection::new();
        ftypes.ty().function([], []);
        m.section(&ftypes);
        let mut fimports = wasm_encoder::ImportSection::new();
        fimports.import("host", "f", wasm_encoder::EntityType::Function(0));
        m.section(&fimports);
        let mut mems = wasm_encoder::MemorySection::new();
        mems.memory(wasm_encoder::MemoryType {
            minimum: 1,
            maximum: None,
            memory64: false,
            shared: false,
            page_size_log2: None,
        });
        m.section(&mems);
        c.section(&wasm_encoder::ModuleSection(&m));
        let mut inst = wasm_encoder::InstanceSection::new();
        let none: [(&str, wasm_encoder::ModuleArg); 0] = [];
        inst.instantiate(1, none);
        c.section(&inst);
        let err = split(&c.finish()).err().expect("refused");
        assert!(err.contains("imported core module"), "{err}");
    }
}
