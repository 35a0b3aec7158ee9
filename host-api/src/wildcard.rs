//! One wildcard matcher for the places that take patterns from users:
//! realtime filters' SQL LIKE (`%`, `_`) and functions' realtime topic
//! grants (`*`). Iterative (linear in practice, never recursive), so no
//! pattern can exhaust the stack or stall its caller.

/// Whether `text` matches `pattern`, where `many` matches any run of
/// characters (including none) and `one`, if given, exactly one.
pub fn matches(text: &[char], pattern: &[char], many: char, one: Option<char>) -> bool {
    let (mut ti, mut pi) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < text.len() {
        let p = pattern.get(pi).copied();
        if p.is_some_and(|p| Some(p) == one || (p != many && p == text[ti])) {
            ti += 1;
            pi += 1;
        } else if p == Some(many) {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    pattern[pi..].iter().all(|c| *c == many)
}

#[cfg(test)]
mod tests {
    use super::matches;

    fn like(s: &str, p: &str) -> bool {
        let (s, p): (Vec<char>, Vec<char>) = (s.chars().collect(), p.chars().collect());
        matches(&s, &p, '%', Some('_'))
    }

    #[test]
    fn like_and_glob() {
        assert!(like("Hello", "H%") && like("Hello", "H_l%o") && !like("Hello", "Hello_"));
        assert!(like("", "%") && !like("a", "") && like("a%b", "a%b"));
        let g = |s: &str, p: &str| {
            let (s, p): (Vec<char>, Vec<char>) = (s.chars().collect(), p.chars().collect());
            matches(&s, &p, '*', None)
        };
        assert!(
            g("room:1", "room:*") && !g("rooms:1", "room:*") && g("a_b", "a_b") && !g("axb", "a_b")
        );
    }
}
