//! "Perhaps you meant …" hints (PostgREST's fuzzy suggestions for misspelled
//! tables, functions, parameters and relationships).

/// How close a table or function name must be to be suggested (PostgREST:
/// a fuzzy score of 0.75, `getFuzzyHint`).
pub const NAME: f64 = 0.75;

/// How close a relationship or parameter list must be (PostgREST's default
/// fuzzy score of 0.33 for those; normalized Levenshtein is stricter, so one
/// half keeps suggestions to likely misspellings).
pub const LOOSE: f64 = 0.5;

/// The candidate closest to `name` by normalized Levenshtein similarity, when
/// it is at least `min`, and not `name` itself.
pub fn closest<'a>(
    name: &str,
    candidates: impl Iterator<Item = &'a str>,
    min: f64,
) -> Option<&'a str> {
    let mut best: Option<(f64, &str)> = None;
    for c in candidates {
        let score = strsim::normalized_levenshtein(name, c);
        if c != name && score >= min && best.is_none_or(|(b, _)| score > b) {
            best = Some((score, c));
        }
    }
    best.map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_near_misses_only() {
        // PostgREST's doctests (Error.hs, noRelBetweenHint, noRpcHint).
        let rels = ["directors", "roles", "actors"];
        assert_eq!(closest("role", rels.into_iter(), LOOSE), Some("roles"));
        assert_eq!(closest("noclosealternative", rels.into_iter(), LOOSE), None);
        let procs = ["test", "another"];
        assert_eq!(closest("testt", procs.into_iter(), NAME), Some("test"));
        assert_eq!(closest("other", procs.into_iter(), NAME), None);
        assert_eq!(closest("films", ["films"].into_iter(), NAME), None);
    }
}
