//! PostgREST's errors, word for word: one constructor per error the data API
//! shares with PostgREST, each with the `code`, status, `message`, `details`
//! and `hint` PostgREST 14 gives, and the constructor of
//! `src/library/PostgREST/Error.hs` it mirrors. supabase-js hands these
//! fields to apps unchanged, and apps match on them; a text changes here, or
//! nowhere.
//!
//! Wasmbase's own errors (`WB_…`, `no_api_key`, …) are not here: they have no
//! PostgREST counterpart.

use super::error::DataError;
use super::plan::suggest;

impl DataError {
    /// PGRST100 `QueryParamError`: the query string does not parse. PostgREST's
    /// message is its parser's (Parsec) text; ours names what failed to parse,
    /// with the same code and status.
    pub fn parse(what: &str, details: impl Into<String>) -> DataError {
        DataError::new(400, "PGRST100", format!("failed to parse {what}")).details(details)
    }

    /// PGRST101 `InvalidRpcMethod`: "Cannot use the PUT method on RPC".
    pub fn rpc_method(method: &str) -> DataError {
        DataError::new(
            405,
            "PGRST101",
            format!("Cannot use the {method} method on RPC"),
        )
    }

    /// PGRST102 `InvalidBody`: the message says what is wrong with the body
    /// (PostgREST: "Empty or invalid json", "All object keys must match").
    pub fn body(message: impl Into<String>) -> DataError {
        DataError::new(400, "PGRST102", message)
    }

    /// PGRST103 `InvalidRange`, with its details (`LowerGTUpper`,
    /// `OutOfBounds`, `NegativeLimit`) when there is one.
    pub fn range(details: Option<String>) -> DataError {
        let e = DataError::new(416, "PGRST103", "Requested range not satisfiable");
        match details {
            Some(d) => e.details(d),
            None => e,
        }
    }

    /// PGRST103 `OutOfBounds`.
    pub fn range_out_of_bounds(offset: i64, total: i64) -> DataError {
        DataError::range(Some(format!(
            "An offset of {offset} was requested, but there are only {total} rows."
        )))
    }

    /// PGRST106 `UnacceptableSchema`.
    pub fn schema_not_exposed(schema: &str, exposed: &[String]) -> DataError {
        DataError::new(406, "PGRST106", format!("Invalid schema: {schema}")).hint(format!(
            "Only the following schemas are exposed: {}",
            exposed.join(", ")
        ))
    }

    /// PGRST107 `MediaTypeError`: no offered media type can be produced.
    pub fn media_type(offered: &str) -> DataError {
        DataError::new(
            406,
            "PGRST107",
            format!("None of these media types are available: {offered}"),
        )
    }

    /// PGRST108 `NotEmbedded`: a filter, order or limit names an embed that
    /// `select` does not have.
    pub fn not_embedded(resource: &str) -> DataError {
        DataError::new(
            400,
            "PGRST108",
            format!("'{resource}' is not an embedded resource in this request"),
        )
        .hint(format!(
            "Verify that '{resource}' is included in the 'select' query parameter."
        ))
    }

    /// PGRST116 `SingularityError` (PostgREST 13's wording).
    pub fn singularity(rows: i64) -> DataError {
        DataError::new(
            406,
            "PGRST116",
            "Cannot coerce the result to a single JSON object",
        )
        .details(format!("The result contains {rows} rows"))
    }

    /// PGRST117 `UnsupportedMethod`.
    pub fn unsupported_method(method: &str) -> DataError {
        DataError::new(
            405,
            "PGRST117",
            format!("Unsupported HTTP method: {method}"),
        )
    }

    /// PGRST118 `RelatedOrderNotToOne`.
    pub fn related_order(origin: &str, target: &str) -> DataError {
        DataError::new(
            400,
            "PGRST118",
            format!("A related order on '{target}' is not possible"),
        )
        .details(format!(
            "'{origin}' and '{target}' do not form a many-to-one or one-to-one relationship"
        ))
    }

    /// PGRST120 `UnacceptableFilter`: an embed key filtered with something
    /// other than `is.null` / `not.is.null`.
    pub fn embed_filter(target: &str) -> DataError {
        DataError::new(
            400,
            "PGRST120",
            format!("Bad operator on the '{target}' embedded resource"),
        )
        .details("Only is null or not is null filters are allowed on embedded resources")
    }

    /// PGRST122 `InvalidPreferences` (with `handling=strict`).
    pub fn preferences(invalid: &[String]) -> DataError {
        DataError::new(
            400,
            "PGRST122",
            "Invalid preferences given with handling=strict",
        )
        .details(format!("Invalid preferences: {}", invalid.join(", ")))
    }

    /// PGRST123 `AggregatesNotAllowed`.
    pub fn aggregates_off() -> DataError {
        DataError::new(400, "PGRST123", "Use of aggregate functions is not allowed")
    }

    /// PGRST124 `MaxAffectedViolationError`.
    pub fn max_affected(rows: i64) -> DataError {
        DataError::new(
            400,
            "PGRST124",
            "Query result exceeds max-affected preference constraint",
        )
        .details(format!("The query affects {rows} rows"))
    }

    /// PGRST125 `InvalidResourcePath`.
    pub fn resource_path() -> DataError {
        DataError::new(404, "PGRST125", "Invalid path specified in request URL")
    }

    /// PGRST127 `NotImplemented`.
    pub fn not_implemented(details: impl Into<String>) -> DataError {
        DataError::new(400, "PGRST127", "Feature not implemented").details(details)
    }

    /// PGRST200 `NoRelBetween`, with `noRelBetweenHint`'s suggestion.
    pub fn no_relationship(
        parent: &str,
        child: &str,
        hint: Option<&str>,
        schema: &str,
        suggestion: Option<&str>,
    ) -> DataError {
        let using = hint
            .map(|h| format!("' using the hint '{h}"))
            .unwrap_or_default();
        let e = DataError::new(
            400,
            "PGRST200",
            format!("Could not find a relationship between '{parent}' and '{child}' in the schema cache"),
        )
        .details(format!(
            "Searched for a foreign key relationship between '{parent}' and '{child}{using}' in the schema '{schema}', but no matches were found."
        ));
        match suggestion {
            Some(s) => e.hint(format!("Perhaps you meant '{s}' instead of '{child}'.")),
            None => e,
        }
    }

    /// PGRST201 `AmbiguousRelBetween`: `details` holds `compressedRel` of
    /// each candidate, `hint` their `relHint`s (`'table!constraint'`).
    pub fn ambiguous_relationship(
        parent: &str,
        child: &str,
        candidates: Vec<serde_json::Value>,
        suggestions: &[String],
    ) -> DataError {
        DataError::new(
            300,
            "PGRST201",
            format!("Could not embed because more than one relationship was found for '{parent}' and '{child}'"),
        )
        .details_json(serde_json::Value::Array(candidates))
        .hint(format!(
            "Try changing '{child}' to one of the following: {}. Find the desired relationship in the 'details' key.",
            suggestions.join(", ")
        ))
    }

    /// PGRST202 `NoRpc`. `raw` is the single unnamed parameter type a raw
    /// body asked for (`text`, `xml`, `bytea`), `json` whether a JSON body was
    /// posted; the hint is `noRpcHint`'s.
    pub fn no_function(
        schema: &str,
        name: &str,
        keys: &[String],
        raw: Option<&str>,
        json_post: bool,
        hint: Option<String>,
    ) -> DataError {
        let func = format!("{schema}.{name}");
        let with = if keys.is_empty() {
            " without parameters".to_string()
        } else {
            format!(
                " with parameter{} {}",
                if keys.len() > 1 { "s" } else { "" },
                keys.join(", ")
            )
        };
        let message = match (raw, keys.is_empty()) {
            (Some(_), _) => format!("Could not find the function {func} in the schema cache"),
            (None, true) => {
                format!("Could not find the function {func} without parameters in the schema cache")
            }
            (None, false) => format!(
                "Could not find the function {func}({}) in the schema cache",
                keys.join(", ")
            ),
        };
        let searched = match raw {
            Some(t) => format!(" with a single unnamed {t} parameter"),
            None if json_post => format!("{with} or with a single unnamed json/jsonb parameter"),
            None => with,
        };
        let e = DataError::new(404, "PGRST202", message).details(format!(
            "Searched for the function {func}{searched}, but no matches were found in the schema cache."
        ));
        match hint {
            Some(h) => e.hint(h),
            None => e,
        }
    }

    /// PGRST203 `AmbiguousRpc`: `overloads` are `schema.name(arg => type, …)`.
    pub fn ambiguous_function(overloads: &[String]) -> DataError {
        DataError::new(
            300,
            "PGRST203",
            format!(
                "Could not choose the best candidate function between: {}",
                overloads.join(", ")
            ),
        )
        .hint("Try renaming the parameters or the function itself in the database so function overloading can be resolved")
    }

    /// PGRST204 `ColumnNotFound`: a column of a write's body, `columns=` or
    /// `on_conflict=`.
    pub fn no_column(table: &str, column: &str) -> DataError {
        DataError::new(
            400,
            "PGRST204",
            format!("Could not find the '{column}' column of '{table}' in the schema cache"),
        )
    }

    /// PGRST205 `TableNotFound`, with `tableNotFoundHint`'s suggestion.
    pub fn no_table(schema: &str, table: &str) -> DataError {
        DataError::new(
            404,
            "PGRST205",
            format!("Could not find the table '{schema}.{table}' in the schema cache"),
        )
    }

    /// PGRST205 with the "Perhaps you meant the table …" hint, when a table
    /// of `schema` is close to `table`.
    pub fn no_table_among<'a>(
        schema: &str,
        table: &str,
        tables: impl Iterator<Item = &'a str>,
    ) -> DataError {
        let e = DataError::no_table(schema, table);
        match suggest::closest(table, tables, suggest::NAME) {
            Some(t) => e.hint(format!("Perhaps you meant the table '{schema}.{t}'")),
            None => e,
        }
    }
}
