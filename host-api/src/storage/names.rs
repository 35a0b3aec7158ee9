//! What a bucket or object name may be, which content types a bucket takes,
//! and how a size limit is written — storage-api's rules, plus what Wasmbase
//! adds: no `.`/`..` segments, no empty segments, a bounded length.

use super::error::StorageError;

/// Longest object name, in bytes (storage-api's practical bound).
pub const MAX_KEY_LEN: usize = 1024;

fn allowed(c: char, slash: bool) -> bool {
    c.is_ascii_alphanumeric() || "_!.*'() &$=@;:+,?-".contains(c) || (slash && c == '/')
}

/// Checks an object name: storage-api's characters (ASCII letters, digits,
/// `_/!.*'() &$=@;:+,?-`), non-empty, at most [`MAX_KEY_LEN`] bytes, no empty,
/// `.` or `..` segment and no leading or trailing `/`.
pub fn object_key(key: &str) -> Result<(), StorageError> {
    let bad = || {
        StorageError::new(
            400,
            "InvalidKey",
            "InvalidKey",
            format!("Invalid key: {key}"),
        )
    };
    if key.is_empty() || key.len() > MAX_KEY_LEN || !key.chars().all(|c| allowed(c, true)) {
        return Err(bad());
    }
    if key
        .split('/')
        .any(|s| s.is_empty() || s == "." || s == "..")
    {
        return Err(bad());
    }
    Ok(())
}

/// A listing's folder as `storage.search` takes it: `a/b` and `a/b/` both
/// mean the folder `a/b/`; empty is the bucket's root.
pub fn folder(prefix: &str) -> String {
    let mut p = prefix.to_string();
    if !p.is_empty() && !p.ends_with('/') {
        p.push('/');
    }
    p
}

/// Checks a bucket name: the object characters without `/`, 1..=100 long,
/// no surrounding spaces, and not `.` or `..`.
pub fn bucket_name(name: &str) -> Result<(), StorageError> {
    let ok = (1..=100).contains(&name.len())
        && name.trim() == name
        && name != "."
        && name != ".."
        && name.chars().all(|c| allowed(c, false));
    if ok {
        Ok(())
    } else {
        Err(StorageError::new(
            400,
            "InvalidBucketName",
            "Invalid Input",
            "Bucket name invalid",
        ))
    }
}

/// Whether `mime` is allowed by a bucket's `allowed_mime_types` (none or an
/// empty list allows all). `type/*` matches any subtype; parameters such as
/// `;charset=` are ignored on both sides (a deliberate difference from
/// storage-api, which refuses `text/plain;charset=UTF-8` against `text/plain`).
pub fn mime_allowed(allowed: Option<&[String]>, mime: &str) -> Result<(), StorageError> {
    let Some(list) = allowed.filter(|l| !l.is_empty()) else {
        return Ok(());
    };
    let essence = |m: &str| {
        m.split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase()
    };
    let want = essence(mime);
    let (ty, sub) = want.split_once('/').unwrap_or((&want, ""));
    let ok = !sub.is_empty()
        && list.iter().any(|a| {
            let a = essence(a);
            match a.split_once('/') {
                Some((aty, "*")) => aty == ty,
                Some(_) => a == want,
                None => false,
            }
        });
    if ok {
        Ok(())
    } else {
        Err(StorageError::new(
            415,
            "InvalidMimeType",
            "invalid_mime_type",
            format!("mime type {mime} is not supported"),
        ))
    }
}

/// Checks the entries of an `allowed_mime_types` list (`type/subtype` or
/// `type/*`, optional `;charset=`).
pub fn mime_list(list: &[String]) -> Result<(), StorageError> {
    for m in list {
        let essence = m.split(';').next().unwrap_or("");
        let ok = m.len() <= 1000
            && essence.split_once('/').is_some_and(|(t, s)| {
                let part = |p: &str| {
                    !p.is_empty()
                        && p.chars()
                            .all(|c| c.is_ascii_alphanumeric() || "-+.".contains(c))
                };
                part(t) && (s == "*" || part(s))
            });
        if !ok {
            return Err(StorageError::new(
                415,
                "InvalidMimeType",
                "invalid_mime_type",
                format!("mime type {m} is not supported"),
            ));
        }
    }
    Ok(())
}

/// A bucket's `file_size_limit` as JSON gives it: a number of bytes, or text
/// such as `"20MB"`, `"1.5GB"`, `"30KB"`, `"3B"` (decimal units, as
/// storage-api), or null.
pub fn file_size_limit(v: &serde_json::Value) -> Result<Option<i64>, StorageError> {
    let bad =
        || StorageError::invalid("Invalid file size format, hint: use 20GB / 20MB / 30KB / 3B");
    match v {
        serde_json::Value::Null => Ok(None),
        serde_json::Value::Number(n) => n.as_i64().filter(|n| *n >= 0).map(Some).ok_or_else(bad),
        serde_json::Value::String(s) => {
            let lower = s.trim().to_ascii_lowercase();
            let (num, unit) = [("gb", 1e9), ("mb", 1e6), ("kb", 1e3), ("b", 1.0)]
                .into_iter()
                .find_map(|(u, m)| lower.strip_suffix(u).map(|n| (n, m)))
                .ok_or_else(bad)?;
            if num.is_empty() || !num.chars().all(|c| c.is_ascii_digit() || c == '.') {
                return Err(bad());
            }
            let n: f64 = num.parse().map_err(|_| bad())?;
            let bytes = (n * unit).round();
            if !(0.0..9.0e18).contains(&bytes) {
                return Err(bad());
            }
            Ok(Some(bytes as i64))
        }
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keys() {
        for ok in ["a.png", "u1/x y/(1).txt", "a/b/c"] {
            assert!(object_key(ok).is_ok(), "{ok}");
        }
        for bad in [
            "", "../x", "a/../b", "a//b", "/a", "a/", "é.png", "a\u{0}b", "a%2fb", "a\\b",
        ] {
            assert!(object_key(bad).is_err(), "{bad:?}");
        }
        assert!(object_key(&"a".repeat(MAX_KEY_LEN + 1)).is_err());
        assert!(bucket_name("avatars").is_ok());
        assert!(bucket_name("a/b").is_err());
        assert!(bucket_name(" a").is_err());
        assert!(bucket_name("..").is_err());
    }

    #[test]
    fn mime_types() {
        let l = vec!["image/*".to_string(), "text/plain".to_string()];
        assert!(mime_allowed(Some(&l), "image/png").is_ok());
        assert!(mime_allowed(Some(&l), "text/plain;charset=UTF-8").is_ok());
        assert_eq!(
            mime_allowed(Some(&l), "application/json")
                .unwrap_err()
                .status,
            415
        );
        assert!(mime_allowed(Some(&l), "image").is_err());
        assert!(mime_allowed(None, "anything/at-all").is_ok());
        assert!(mime_list(&l).is_ok());
        assert!(mime_list(&["nope".to_string()]).is_err());
    }

    #[test]
    fn size_limits() {
        assert_eq!(file_size_limit(&json!(1024)).unwrap(), Some(1024));
        assert_eq!(file_size_limit(&json!("1MB")).unwrap(), Some(1_000_000));
        assert_eq!(
            file_size_limit(&json!("1.5GB")).unwrap(),
            Some(1_500_000_000)
        );
        assert_eq!(file_size_limit(&json!("3b")).unwrap(), Some(3));
        assert_eq!(file_size_limit(&json!(null)).unwrap(), None);
        assert!(file_size_limit(&json!("12XB")).is_err());
        assert!(file_size_limit(&json!(-1)).is_err());
    }
}
