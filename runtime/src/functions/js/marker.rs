//! The custom section a JS function's component carries: it says the
//! component is the engine with a script snapshotted in, and which
//! `wasmbase` capabilities the script imports.
//!
//! Why: the engine component imports every platform interface (it cannot
//! know in advance which a script uses), so the loader's import check would
//! refuse every JS function without every grant. For these components the
//! loader checks the script's own imports, listed here, instead. This is
//! for clear errors at deploy time; the boundary is each host call's own
//! grant check, which does not trust this section.

use serde::{Deserialize, Serialize};

/// The section's name.
pub(super) const NAME: &str = "wasmbase:js";

/// What the section says.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Marker {
    /// SHA-256 of the engine component the snapshot was taken from.
    pub engine: String,
    /// Names the script imports from `"wasmbase"` (`*`: namespace import).
    pub uses: Vec<String>,
}

fn leb(mut n: usize, out: &mut Vec<u8>) {
    loop {
        let b = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

fn read_leb(b: &[u8], at: &mut usize) -> Option<usize> {
    let mut n = 0usize;
    for shift in (0..35).step_by(7) {
        let byte = *b.get(*at)?;
        *at += 1;
        n |= ((byte & 0x7f) as usize) << shift;
        if byte & 0x80 == 0 {
            return Some(n);
        }
    }
    None
}

/// `wasm` with the section appended (a component may end with custom sections).
pub fn append(mut wasm: Vec<u8>, m: &Marker) -> Vec<u8> {
    let body = serde_json::to_vec(m).expect("a marker serializes");
    let mut payload = Vec::with_capacity(body.len() + NAME.len() + 2);
    leb(NAME.len(), &mut payload);
    payload.extend_from_slice(NAME.as_bytes());
    payload.extend_from_slice(&body);
    wasm.push(0);
    leb(payload.len(), &mut wasm);
    wasm.extend_from_slice(&payload);
    wasm
}

/// The marker of a component's top level, if it has one (malformed input
/// reads as none: it is then checked like any other component).
pub fn read(wasm: &[u8]) -> Option<Marker> {
    let mut at = 8; // magic and version
    while at < wasm.len() {
        let id = wasm[at];
        at += 1;
        let size = read_leb(wasm, &mut at)?;
        let end = at.checked_add(size).filter(|&e| e <= wasm.len())?;
        if id == 0 {
            let mut p = at;
            let n = read_leb(wasm, &mut p)?;
            if p + n <= end && &wasm[p..p + n] == NAME.as_bytes() {
                return serde_json::from_slice(&wasm[p + n..end]).ok();
            }
        }
        at = end;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_after_other_sections() {
        // An empty component: magic, version 0x0d, layer 1.
        let mut wasm = b"\0asm\x0d\x00\x01\x00".to_vec();
        assert_eq!(read(&wasm), None);
        wasm = [&wasm[..], &[0, 4, 3, b'a', b'b', b'c']].concat();
        let m = Marker {
            engine: "e".into(),
            uses: vec!["db".into()],
        };
        let out = append(wasm, &m);
        assert_eq!(read(&out), Some(m));
        assert_eq!(
            read(&out[..out.len() - 1]),
            None,
            "a truncated section is no marker"
        );
    }
}
