//! "Perhaps you meant …" hints (PostgREST's fuzzy suggestions for misspelled
//! tables, columns, functions and relationships).

/// The candidate closest to `name`, when it is close enough to be a likely
/// misspelling (normalized Levenshtein similarity of at least one half).
pub fn closest<'a>(name: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    let mut best: Option<(f64, &str)> = None;
    for c in candidates {
        let score = strsim::normalized_levenshtein(name, c);
        if score >= 0.5 && best.is_none_or(|(b, _)| score > b) {
            best = Some((score, c));
        }
    }
    best.map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::closest;

    #[test]
    fn suggests_near_misses_only() {
        // PostgREST's doctests (Error.hs, noRelBetweenHint).
        let rels = ["directors", "roles", "actors"];
        assert_eq!(closest("role", rels.into_iter()), Some("roles"));
        assert_eq!(closest("noclosealternative", rels.into_iter()), None);
        assert_eq!(
            closest("film", ["films", "tasks"].into_iter()),
            Some("films")
        );
    }
}
