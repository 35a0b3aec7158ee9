//! The one SQLSTATE table: what a PostgreSQL error code means to an API client
//! (its [`Kind`]) and which HTTP status answers it. Every API's error type asks
//! here and renders the answer in its own client's shape (PostgREST's body for
//! `/rest/v1` and guests' data calls, GoTrue's for `/auth/v1`, the platform's
//! `{code, message}` elsewhere), so a new API cannot drift from the others.

/// What a SQLSTATE tells the client, coarse enough that each API can pick its
/// own stable code for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// 23503/23505: the row conflicts with another (a key exists, a reference
    /// does not).
    Conflict,
    /// 25006: a write in a read-only transaction (a write through a GET).
    ReadOnly,
    /// 42883/42P01: the function or table is unknown to the database.
    NotFound,
    /// 42501: the role may not do this (RLS or a missing grant).
    PermissionDenied,
    /// 57014: the statement ran past `statement_timeout`.
    Timeout,
    /// Class 08/53 and 57P01-57P03: the database is unreachable, out of
    /// resources or shutting down; retrying later can succeed.
    Unavailable,
    /// Class 0L/0P/28: an invalid grantor, role or authorization.
    Forbidden,
    /// Class 22 (a data exception): the caller's input, e.g. a NUL in text or a
    /// value that does not parse as its type. Never a server fault.
    InvalidInput,
    /// Any other client error PostgREST answers 400 (P0001 `RAISE`, class 23
    /// other than conflicts, class 42 syntax and names, ...).
    BadRequest,
    /// A server-side failure (serialization, internal, 42P17 a policy that
    /// recurses, ...): the caller cannot fix it.
    Internal,
}

/// The [`Kind`] of a SQLSTATE. PostgREST's table, except that a statement
/// timeout (57014) is a 504 like everywhere else on the platform, and a server
/// shutting down (57P01-57P03, PostgREST: 500) is a 503 like a failed connection.
pub fn classify(sqlstate: &str) -> Kind {
    match sqlstate {
        "23503" | "23505" => Kind::Conflict,
        "25006" => Kind::ReadOnly,
        "42883" | "42P01" => Kind::NotFound,
        "42501" => Kind::PermissionDenied,
        "57014" => Kind::Timeout,
        "57P01" | "57P02" | "57P03" => Kind::Unavailable,
        "P0001" => Kind::BadRequest,
        "42P17" => Kind::Internal,
        _ => match &sqlstate[..2.min(sqlstate.len())] {
            "08" | "53" => Kind::Unavailable,
            "0L" | "0P" | "28" => Kind::Forbidden,
            "22" => Kind::InvalidInput,
            "09" | "25" | "2D" | "38" | "39" | "3B" | "40" | "54" | "55" | "57" | "58" | "F0"
            | "HV" | "P0" | "XX" => Kind::Internal,
            _ => Kind::BadRequest,
        },
    }
}

impl Kind {
    /// The HTTP status for this kind. `anon` says the caller has not signed in:
    /// a permission error then is 401, so the client knows to sign in (403 for
    /// everyone else, who signing in would not help).
    pub fn status(self, anon: bool) -> u16 {
        match self {
            Kind::Conflict => 409,
            Kind::ReadOnly => 405,
            Kind::NotFound => 404,
            Kind::PermissionDenied if anon => 401,
            Kind::PermissionDenied | Kind::Forbidden => 403,
            Kind::Timeout => 504,
            Kind::Unavailable => 503,
            Kind::InvalidInput | Kind::BadRequest => 400,
            Kind::Internal => 500,
        }
    }
}

/// What to tell a client whose input PostgreSQL refused with a data exception
/// ([`Kind::InvalidInput`]), in words that quote nothing of the row: APIs that
/// do not send PostgreSQL's own message (it can quote values) send this.
pub fn input_message(sqlstate: &str) -> &'static str {
    match sqlstate {
        // `\u0000` in JSON (22P05) or a NUL byte in text (22021)
        "22P05" | "22021" => "Text must not contain the NUL character (\\u0000)",
        "22P02" => "A value could not be read as its type",
        "22001" => "A value is too long for its column",
        "22003" => "A number is out of range",
        _ => "Invalid input value",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_of_codes() {
        assert_eq!(classify("22P02"), Kind::InvalidInput);
        assert_eq!(classify("23502"), Kind::BadRequest);
        assert_eq!(classify("57014"), Kind::Timeout);
        assert_eq!(classify("57P01"), Kind::Unavailable);
        assert_eq!(classify("57000"), Kind::Internal);
        assert_eq!(classify("08006"), Kind::Unavailable);
        assert_eq!(classify("P0001"), Kind::BadRequest);
        assert_eq!(classify("P0002"), Kind::Internal);
        assert_eq!(classify(""), Kind::BadRequest);
        assert_eq!(classify("2"), Kind::BadRequest);
        assert_eq!(Kind::PermissionDenied.status(true), 401);
        assert_eq!(Kind::PermissionDenied.status(false), 403);
    }
}
