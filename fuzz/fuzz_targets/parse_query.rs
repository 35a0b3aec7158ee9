//! Fuzzes the data API's query-string grammar (`host-api/src/data/parse.rs`).
//!
//! The input is a raw query string. Property: parsing never panics, and every
//! rejection is PostgREST's parse error (`PGRST100`, HTTP 400) — never another
//! code or status that would reach the client as something other than "bad query".

#![no_main]

use libfuzzer_sys::fuzz_target;
use wasmbase_host_api::data::parse::{
    parse_field, parse_filter_value, parse_order, parse_query, parse_select,
};
use wasmbase_host_api::data::DataError;

/// Errors are fine; any error other than a 400 PGRST100 is a bug.
fn check<T>(what: &str, input: &str, result: Result<T, DataError>) {
    if let Err(e) = result {
        assert!(
            e.code == "PGRST100" && e.status == 400,
            "{what}({input:?}) failed with {} {} instead of 400 PGRST100: {e:?}",
            e.status,
            e.code,
        );
    }
}

fuzz_target!(|data: &[u8]| {
    // As /rest/v1 sees it: percent- and '+'-decoded key/value pairs.
    let pairs: Vec<(String, String)> = url::form_urlencoded::parse(data)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let raw = String::from_utf8_lossy(data);
    let raw: &str = &raw;
    check("parse_query", raw, parse_query(&pairs));

    // The sub-grammars directly, on the undecoded text.
    check("parse_select", raw, parse_select(raw));
    check("parse_order", raw, parse_order(raw));

    // The whole input as one `field=[not.]op.value` filter.
    let (key, value) = raw.split_once('=').unwrap_or((raw, ""));
    match parse_field(key) {
        Ok(field) => check("parse_filter_value", value, parse_filter_value(field, value)),
        Err(e) => check::<()>("parse_field", key, Err(e)),
    }
});
