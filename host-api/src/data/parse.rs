//! PostgREST's query-string grammar → [`Query`]: `select=`, filters, `or=`/`and=`
//! trees, `order=`, `limit=`/`offset=`, each optionally prefixed with an embed
//! path (`items.order=id.desc`). Pure and total: any input gives a `Query` or a
//! PGRST100 error, never a panic (fuzzed by `fuzz/`).

use super::error::DataError;
use super::request::*;

/// Query-string keys that are not filters.
pub const RESERVED_KEYS: &[&str] = &[
    "select",
    "order",
    "limit",
    "offset",
    "on_conflict",
    "columns",
];

/// Longest accepted select/filter/order text, and deepest nesting: bounds on the
/// work a request can ask of the parser and planner.
const MAX_DEPTH: usize = 16;

/// Parses the query-string pairs of a read (or the filter/select part of a
/// write or call). `on_conflict` and `columns` are ignored here.
pub fn parse_query(pairs: &[(String, String)]) -> Result<Query, DataError> {
    let mut q = Query::default();
    for (key, value) in pairs {
        let (path, last) = split_key(key);
        match last {
            "select" if path.is_empty() => q.select = parse_select(value)?,
            "order" => q.levels.entry(path).or_default().order = parse_order(value)?,
            "limit" => q.levels.entry(path).or_default().limit = Some(parse_count("limit", value)?),
            "offset" => {
                q.levels.entry(path).or_default().offset = Some(parse_count("offset", value)?)
            }
            "on_conflict" | "columns" if path.is_empty() => {}
            "or" | "and" | "not.or" | "not.and" => {
                let negate = last.starts_with("not.");
                let is_or = last.ends_with("or");
                let inner = value
                    .strip_prefix('(')
                    .and_then(|v| v.strip_suffix(')'))
                    .ok_or_else(|| {
                        DataError::parse(
                            "logic tree",
                            format!("expected \"(\" ... \")\" in {last}={value}"),
                        )
                    })?;
                let items = parse_logic_items(inner, 0)?;
                let cond = if is_or {
                    Condition::Or(negate, items)
                } else {
                    Condition::And(negate, items)
                };
                q.levels.entry(path).or_default().conditions.push(cond);
            }
            _ => {
                let (path, field) = split_filter_key(key)?;
                let f = parse_filter_value(field, value)?;
                q.levels
                    .entry(path)
                    .or_default()
                    .conditions
                    .push(Condition::Filter(f));
            }
        }
    }
    Ok(q)
}

/// `a.b.order` → (["a","b"], "order"); keys with a `->` path are never split here.
fn split_key(key: &str) -> (Vec<String>, &str) {
    if key.contains("->") {
        return (Vec::new(), key);
    }
    for special in ["not.or", "not.and"] {
        if key == special {
            return (Vec::new(), key);
        }
        if let Some(prefix) = key.strip_suffix(&format!(".{special}")[..]) {
            return (
                prefix.split('.').map(str::to_string).collect(),
                &key[prefix.len() + 1..],
            );
        }
    }
    match key.rsplit_once('.') {
        Some((prefix, last))
            if matches!(last, "order" | "limit" | "offset" | "or" | "and" | "select") =>
        {
            (prefix.split('.').map(str::to_string).collect(), last)
        }
        _ => (Vec::new(), key),
    }
}

/// `items.data->>x` → (["items"], Field{data, ->>x}): the embed path and field
/// of a filter's key (also used by structured guest filters, which carry the
/// key separately from the condition).
pub fn split_filter_key(key: &str) -> Result<(Vec<String>, Field), DataError> {
    let (head, rest) = match key.find("->") {
        Some(i) => (&key[..i], &key[i..]),
        None => (key, ""),
    };
    let mut parts: Vec<&str> = head.split('.').collect();
    let column = parts.pop().unwrap_or_default();
    let field = parse_field(&format!("{column}{rest}"))?;
    Ok((parts.into_iter().map(str::to_string).collect(), field))
}

fn parse_count(what: &str, v: &str) -> Result<i64, DataError> {
    v.trim()
        .parse::<i64>()
        .ok()
        .filter(|n| *n >= 0)
        .ok_or_else(|| DataError::parse(what, format!("\"{v}\" is not a non-negative integer")))
}

fn bad_name(what: &str, s: &str) -> DataError {
    DataError::parse(what, format!("unexpected name \"{s}\""))
}

/// A column name or alias as a client may write it: not empty, no control or
/// grammar characters. Names are matched against the schema cache later; this
/// only keeps the grammar unambiguous.
fn check_name<'a>(what: &str, s: &'a str) -> Result<&'a str, DataError> {
    let s = s.trim();
    if s.is_empty()
        || s.len() > 63 * 4
        || s.chars()
            .any(|c| c.is_control() || matches!(c, '(' | ')' | ',' | ':' | '!' | '"' | '\\' | '.'))
    {
        return Err(bad_name(what, s));
    }
    Ok(s)
}

/// `col`, `col->a->>b`, `col->0`.
pub fn parse_field(s: &str) -> Result<Field, DataError> {
    let s = s.trim();
    let (col, mut rest) = match s.find("->") {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, ""),
    };
    let column = check_name("field", col)?.to_string();
    let mut path = Vec::new();
    while !rest.is_empty() {
        let (text, after) = if let Some(r) = rest.strip_prefix("->>") {
            (true, r)
        } else if let Some(r) = rest.strip_prefix("->") {
            (false, r)
        } else {
            return Err(DataError::parse("field", format!("unexpected \"{rest}\"")));
        };
        let end = after.find("->").unwrap_or(after.len());
        let key = &after[..end];
        if key.is_empty() || key.chars().any(|c| c.is_control()) {
            return Err(DataError::parse(
                "field",
                format!("empty or invalid JSON key in \"{s}\""),
            ));
        }
        path.push(JsonStep {
            key: key.to_string(),
            text,
        });
        rest = &after[end..];
    }
    if path.len() > MAX_DEPTH {
        return Err(DataError::parse("field", "JSON path too deep"));
    }
    Ok(Field { column, path })
}

/// Splits on commas at parenthesis depth 0, outside double quotes (also
/// realtime's postgres_changes filters, which use PostgREST's grammar).
pub fn split_top(s: &str) -> Result<Vec<&str>, DataError> {
    let mut out = Vec::new();
    let (mut depth, mut quoted, mut escaped, mut start) = (0usize, false, false, 0usize);
    for (i, c) in s.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '(' if !quoted => depth += 1,
            ')' if !quoted => {
                depth = depth.checked_sub(1).ok_or_else(|| {
                    DataError::parse("query", format!("unbalanced \")\" in \"{s}\""))
                })?;
            }
            ',' if !quoted && depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 || quoted {
        return Err(DataError::parse(
            "query",
            format!("unbalanced parenthesis or quote in \"{s}\""),
        ));
    }
    out.push(&s[start..]);
    Ok(out)
}

/// Parses `select=`.
pub fn parse_select(s: &str) -> Result<Vec<SelectItem>, DataError> {
    select_items(s, 0)
}

fn select_items(s: &str, depth: usize) -> Result<Vec<SelectItem>, DataError> {
    if depth > MAX_DEPTH {
        return Err(DataError::parse(
            "select parameter",
            "embedding nested too deep",
        ));
    }
    let mut out = Vec::new();
    for raw in split_top(s)? {
        let item = raw.trim();
        if item.is_empty() {
            if s.trim().is_empty() {
                continue;
            }
            return Err(DataError::parse(
                "select parameter",
                format!("empty item in \"{s}\""),
            ));
        }
        out.push(select_item(item, depth)?);
    }
    Ok(out)
}

fn select_item(item: &str, depth: usize) -> Result<SelectItem, DataError> {
    if item == "*" {
        return Ok(SelectItem::Star);
    }
    let err = |d: String| DataError::parse("select parameter", d);
    if let Some(agg) = aggregate_item(item)? {
        return Ok(agg);
    }
    if let Some(open) = item.find('(') {
        // An embed: [...][alias:]name[!hint][!inner|!left](items)
        let inner = item[open + 1..]
            .strip_suffix(')')
            .ok_or_else(|| err(format!("expected \")\" at the end of \"{item}\"")))?;
        let mut head = item[..open].trim();
        let spread = match head.strip_prefix("...") {
            Some(h) => {
                head = h;
                true
            }
            None => false,
        };
        let (alias, head) = match head.split_once(':') {
            Some((a, h)) => (Some(check_name("select parameter", a)?.to_string()), h),
            None => (None, head),
        };
        let mut bangs = head.split('!');
        let name = check_name("select parameter", bangs.next().unwrap_or_default())?.to_string();
        let (mut hint, mut join) = (None, JoinKind::Left);
        for b in bangs {
            match b.trim() {
                "inner" => join = JoinKind::Inner,
                "left" => join = JoinKind::Left,
                h if hint.is_none() => hint = Some(check_name("select parameter", h)?.to_string()),
                h => return Err(err(format!("unexpected \"!{h}\" in \"{item}\""))),
            }
        }
        if spread && alias.is_some() {
            return Err(err(format!(
                "a spread embed cannot have an alias: \"{item}\""
            )));
        }
        return Ok(SelectItem::Embed(Embed {
            alias,
            name,
            hint,
            join,
            spread,
            select: select_items(inner, depth + 1)?,
        }));
    }
    if item.contains(')') {
        return Err(err(format!("unexpected \")\" in \"{item}\"")));
    }
    field_item(item)
}

/// `[alias:]field[::cast]` — the alias colon is the first single ':'.
fn field_item(item: &str) -> Result<SelectItem, DataError> {
    let (alias, rest) = match find_alias_colon(item) {
        Some(i) => (
            Some(check_name("select parameter", &item[..i])?.to_string()),
            &item[i + 1..],
        ),
        None => (None, item),
    };
    let (field, cast) = match rest.split_once("::") {
        Some((f, c)) => (f, Some(check_cast(c)?)),
        None => (rest, None),
    };
    Ok(SelectItem::Field {
        alias,
        field: parse_field(field)?,
        cast,
        aggregate: None,
        agg_cast: None,
    })
}

/// A cast's type name: letters, digits, `_`, spaces and `[]` (resolved against
/// the schema cache's types later).
fn check_cast(c: &str) -> Result<String, DataError> {
    let c = c.trim();
    if c.is_empty()
        || !c
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '_' | ' ' | '[' | ']'))
    {
        return Err(DataError::parse(
            "select parameter",
            format!("invalid cast \"{c}\""),
        ));
    }
    Ok(c.to_string())
}

/// PostgREST 12's aggregates: `[alias:]count()[::cast]` and
/// `[alias:]field[::cast].agg()[::cast]` (`agg` one of count, sum, avg, max,
/// min). `None` when `item` is something else (an embed such as `users()` or
/// `orders(amount.sum())`, whose text also holds `()`).
fn aggregate_item(item: &str) -> Result<Option<SelectItem>, DataError> {
    let Some(close) = item.rfind("()") else {
        return Ok(None);
    };
    let agg_cast = match &item[close + 2..] {
        "" => None,
        after => match after.strip_prefix("::") {
            Some(c) => Some(check_cast(c)?),
            None => return Ok(None),
        },
    };
    let before = &item[..close];
    let start = before.rfind(['.', ':']).map(|i| i + 1).unwrap_or(0);
    let Some(aggregate) = Aggregate::parse(before[start..].trim()) else {
        return Ok(None);
    };
    let head = &before[..start];
    if let Some(field) = head.strip_suffix('.') {
        return match field_item(field)? {
            SelectItem::Field {
                alias, field, cast, ..
            } => Ok(Some(SelectItem::Field {
                alias,
                field,
                cast,
                aggregate: Some(aggregate),
                agg_cast,
            })),
            other => Ok(Some(other)),
        };
    }
    if aggregate != Aggregate::Count {
        return Ok(None);
    }
    let alias = match head {
        "" => None,
        h => match h.strip_suffix(':') {
            Some(a) => Some(check_name("select parameter", a)?.to_string()),
            None => return Ok(None),
        },
    };
    Ok(Some(SelectItem::CountAll {
        alias,
        cast: agg_cast,
    }))
}

/// Index of a ':' that is not part of '::'.
fn find_alias_colon(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    (0..b.len())
        .find(|&i| b[i] == b':' && b.get(i + 1) != Some(&b':') && (i == 0 || b[i - 1] != b':'))
}

/// Parses `order=`.
pub fn parse_order(s: &str) -> Result<Vec<OrderTerm>, DataError> {
    let mut out = Vec::new();
    for term in s.split(',') {
        let term = term.trim();
        if term.is_empty() {
            return Err(DataError::parse("order", format!("empty term in \"{s}\"")));
        }
        let mut parts: Vec<&str> = Vec::new();
        let mut rest = term;
        // Peel modifiers off the right: col.desc.nullslast
        let (mut desc, mut nulls_first) = (false, None);
        loop {
            match rest.rsplit_once('.') {
                Some((r, m)) if matches!(m, "asc" | "desc" | "nullsfirst" | "nullslast") => {
                    parts.push(m);
                    rest = r;
                }
                _ => break,
            }
        }
        for m in parts.iter().rev() {
            match *m {
                "asc" => desc = false,
                "desc" => desc = true,
                "nullsfirst" => nulls_first = Some(true),
                _ => nulls_first = Some(false),
            }
        }
        if parts.len() > 2 {
            return Err(DataError::parse(
                "order",
                format!("too many modifiers in \"{term}\""),
            ));
        }
        out.push(order_term(rest, desc, nulls_first)?);
    }
    Ok(out)
}

/// One order term from its column part (`col`, `col->a`, `rel(col)`) and its
/// direction: what `order=` terms and structured guest order terms share.
pub fn order_term(
    column: &str,
    desc: bool,
    nulls_first: Option<bool>,
) -> Result<OrderTerm, DataError> {
    let (embed, rest) = match column.split_once('(') {
        Some((rel, col)) => {
            let col = col.strip_suffix(')').ok_or_else(|| {
                DataError::parse("order", format!("expected \")\" in \"{column}\""))
            })?;
            (Some(check_name("order", rel)?.to_string()), col)
        }
        None => (None, column),
    };
    Ok(OrderTerm {
        embed,
        field: parse_field(rest)
            .map_err(|e| DataError::parse("order", e.details.unwrap_or_default()))?,
        desc,
        nulls_first,
    })
}

/// `[not.]op[(config)].value` for field `field`.
pub fn parse_filter_value(field: Field, v: &str) -> Result<Filter, DataError> {
    let err = || DataError::parse("filter", format!("\"{v}\" is not [not.]operator.value"));
    let (negate, rest) = match v.strip_prefix("not.") {
        Some(r) => (true, r),
        None => (false, v),
    };
    let (op_text, value) = rest.split_once('.').ok_or_else(err)?;
    let (op_name, config) = match op_text.split_once('(') {
        Some((o, c)) => {
            let c = c.strip_suffix(')').ok_or_else(err)?;
            (o, Some(c.to_string()))
        }
        None => (op_text, None),
    };
    let op = Op::parse(op_name)
        .ok_or_else(|| DataError::parse("filter", format!("unknown operator \"{op_name}\"")))?;
    let mut quantifier = None;
    let quantifiable = matches!(
        op,
        Op::Eq
            | Op::Gt
            | Op::Gte
            | Op::Lt
            | Op::Lte
            | Op::Like
            | Op::Ilike
            | Op::Match
            | Op::Imatch
    );
    let config = match config.as_deref() {
        Some("any") if quantifiable => {
            quantifier = Some(Quantifier::Any);
            None
        }
        Some("all") if quantifiable => {
            quantifier = Some(Quantifier::All);
            None
        }
        _ => config,
    };
    if let Some(c) = &config {
        let is_fts = matches!(op, Op::Fts | Op::Plfts | Op::Phfts | Op::Wfts);
        if !is_fts || c.is_empty() || !c.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '_') {
            return Err(DataError::parse(
                "filter",
                format!(
                    "\"{op_text}\": only full-text operators take a (config), and only \
                     comparisons take (any) or (all)"
                ),
            ));
        }
    }
    let operand = match op {
        Op::In => {
            let inner = value
                .strip_prefix('(')
                .and_then(|x| x.strip_suffix(')'))
                .ok_or_else(|| {
                    DataError::parse("filter", format!("in. expects (a,b,…), got \"{value}\""))
                })?;
            Operand::List(parse_list(inner)?)
        }
        Op::Is => Operand::Is(match value.to_ascii_lowercase().as_str() {
            "null" => IsValue::Null,
            "not_null" => IsValue::NotNull,
            "true" => IsValue::True,
            "false" => IsValue::False,
            "unknown" => IsValue::Unknown,
            _ => {
                return Err(DataError::parse(
                    "filter",
                    format!("is. expects null, not_null, true, false or unknown, got \"{value}\""),
                ))
            }
        }),
        _ => Operand::Value(value.to_string()),
    };
    Ok(Filter {
        field,
        negate,
        op,
        config,
        quantifier,
        operand,
    })
}

/// `a,"b,c",d` → [a, b,c, d] (quotes removed, `\"` and `\\` unescaped).
pub fn parse_list(s: &str) -> Result<Vec<String>, DataError> {
    if s.trim().is_empty() {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for raw in split_top(s)? {
        out.push(unquote(raw.trim()));
    }
    Ok(out)
}

/// A value with its double quotes removed and `\"`, `\\` unescaped; an
/// unquoted value as it is.
pub fn unquote(s: &str) -> String {
    match s.strip_prefix('"').and_then(|x| x.strip_suffix('"')) {
        Some(inner) => {
            let mut out = String::with_capacity(inner.len());
            let mut chars = inner.chars();
            while let Some(c) = chars.next() {
                if c == '\\' {
                    if let Some(n) = chars.next() {
                        out.push(n);
                    }
                } else {
                    out.push(c);
                }
            }
            out
        }
        None => s.to_string(),
    }
}

/// Items of a logic tree body: `a.eq.1,or(b.gt.2,c.is.null),not.and(...)`.
fn parse_logic_items(s: &str, depth: usize) -> Result<Vec<Condition>, DataError> {
    if depth > MAX_DEPTH {
        return Err(DataError::parse("logic tree", "nested too deep"));
    }
    let mut out = Vec::new();
    for raw in split_top(s)? {
        let item = raw.trim();
        let (negate, body) = match item.strip_prefix("not.") {
            Some(b) if b.starts_with("and(") || b.starts_with("or(") => (true, b),
            _ => (false, item),
        };
        let tree = if let Some(inner) = body.strip_prefix("and(") {
            Some((false, inner))
        } else {
            body.strip_prefix("or(").map(|inner| (true, inner))
        };
        if let Some((is_or, inner)) = tree {
            let inner = inner.strip_suffix(')').ok_or_else(|| {
                DataError::parse("logic tree", format!("expected \")\" in \"{item}\""))
            })?;
            let items = parse_logic_items(inner, depth + 1)?;
            out.push(if is_or {
                Condition::Or(negate, items)
            } else {
                Condition::And(negate, items)
            });
            continue;
        }
        // field.[not.]op.value — the field ends at the first '.' after any JSON path.
        let split = field_end(item).ok_or_else(|| {
            DataError::parse(
                "logic tree",
                format!("\"{item}\" is not field.operator.value"),
            )
        })?;
        let field = parse_field(&item[..split])?;
        let mut f = parse_filter_value(field, &item[split + 1..])?;
        if let Operand::Value(v) = &f.operand {
            f.operand = Operand::Value(unquote(v));
        }
        out.push(Condition::Filter(f));
    }
    Ok(out)
}

/// Where the field part of `field.op.value` ends (a '.' not inside a JSON key).
fn field_end(item: &str) -> Option<usize> {
    let start = item.rfind("->").map(|i| i + 2).unwrap_or(0);
    item[start..].find('.').map(|i| start + i)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> Result<Query, DataError> {
        let pairs: Vec<(String, String)> = url::form_urlencoded::parse(s.as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        parse_query(&pairs)
    }

    #[test]
    fn select_with_alias_cast_path_and_embeds() {
        let s = parse_select(
            "id,label:name,price::text,data->a->>b,author:authors!fk!inner(name),...tags(label)",
        )
        .unwrap();
        assert_eq!(s.len(), 6);
        assert!(matches!(&s[1], SelectItem::Field { alias: Some(a), .. } if a == "label"));
        assert!(matches!(&s[2], SelectItem::Field { cast: Some(c), .. } if c == "text"));
        match &s[3] {
            SelectItem::Field { field, .. } => {
                assert_eq!(field.output_name(), "b");
                assert_eq!(field.path.len(), 2);
                assert!(field.path[1].text);
            }
            _ => panic!(),
        }
        match &s[4] {
            SelectItem::Embed(e) => {
                assert_eq!(e.key(), "author");
                assert_eq!(e.hint.as_deref(), Some("fk"));
                assert_eq!(e.join, JoinKind::Inner);
            }
            _ => panic!(),
        }
        assert!(matches!(&s[5], SelectItem::Embed(e) if e.spread));
    }

    #[test]
    fn aggregates_with_aliases_and_casts() {
        // PostgREST's QueryParams.hs: `[alias:]count()[::cast]` and
        // `[alias:]field[::cast].agg()[::cast]`.
        let s = parse_select(
            "count(),n:count()::text,amount.sum(),total:amount::int.avg()::int,data->a::numeric.max(),orders(amount.sum()),users()",
        )
        .unwrap();
        assert_eq!(s.len(), 7);
        assert_eq!(
            s[0],
            SelectItem::CountAll {
                alias: None,
                cast: None
            }
        );
        assert!(
            matches!(&s[1], SelectItem::CountAll { alias: Some(a), cast: Some(c) } if a == "n" && c == "text")
        );
        assert!(
            matches!(&s[2], SelectItem::Field { aggregate: Some(Aggregate::Sum), field, .. } if field.column == "amount")
        );
        match &s[3] {
            SelectItem::Field {
                alias,
                cast,
                aggregate,
                agg_cast,
                ..
            } => {
                assert_eq!(alias.as_deref(), Some("total"));
                assert_eq!(cast.as_deref(), Some("int"));
                assert_eq!(*aggregate, Some(Aggregate::Avg));
                assert_eq!(agg_cast.as_deref(), Some("int"));
            }
            other => panic!("{other:?}"),
        }
        assert!(
            matches!(&s[4], SelectItem::Field { aggregate: Some(Aggregate::Max), field, .. } if field.path.len() == 1)
        );
        match &s[5] {
            SelectItem::Embed(e) => assert!(matches!(
                &e.select[0],
                SelectItem::Field {
                    aggregate: Some(Aggregate::Sum),
                    ..
                }
            )),
            other => panic!("{other:?}"),
        }
        assert!(matches!(&s[6], SelectItem::Embed(e) if e.select.is_empty()));
        for bad in [
            "amount.sum()x",
            "amount.sum()::",
            "amount.median()",
            "a:b:count()",
        ] {
            assert_eq!(parse_select(bad).unwrap_err().code, "PGRST100", "{bad}");
        }
    }

    #[test]
    fn filters_logic_and_levels() {
        let q = q("id=gt.5&name=not.like.a*&tags=in.(a,%22b,c%22)&or=(a.eq.1,and(b.lt.2,c.is.null))&items.order=id.desc.nullslast&items.limit=2&items.name=eq.x").unwrap();
        let root = q.root().unwrap();
        assert_eq!(root.conditions.len(), 4);
        match &root.conditions[2] {
            Condition::Filter(f) => {
                assert_eq!(f.operand, Operand::List(vec!["a".into(), "b,c".into()]))
            }
            _ => panic!(),
        }
        match &root.conditions[3] {
            Condition::Or(false, items) => {
                assert!(matches!(&items[1], Condition::And(false, v) if v.len() == 2))
            }
            c => panic!("{c:?}"),
        }
        let items = &q.levels[&vec!["items".to_string()]];
        assert_eq!(items.limit, Some(2));
        assert!(items.order[0].desc);
        assert_eq!(items.order[0].nulls_first, Some(false));
        assert_eq!(items.conditions.len(), 1);
    }

    #[test]
    fn bad_input_is_pgrst100() {
        for bad in [
            "id=zz.1",
            "id=eq",
            "select=a(b",
            "select=a)b",
            "or=a.eq.1",
            "or=(a.eq.1",
            "is=is.maybe",
            "limit=-1",
            "order=",
            "select=a:b:c(",
            "x=fts(eng lish).a",
            "x=eq(en).a",
        ] {
            let e = q(bad).unwrap_err();
            assert_eq!(e.code, "PGRST100", "{bad}");
            assert_eq!(e.status, 400);
        }
    }

    #[test]
    fn values_keep_dots_and_json_paths_in_trees() {
        let q = q("or=(data->>a.eq.1.5,name.eq.%22x,y%22)").unwrap();
        match &q.root().unwrap().conditions[0] {
            Condition::Or(_, items) => {
                assert!(
                    matches!(&items[0], Condition::Filter(f) if f.operand == Operand::Value("1.5".into()) && f.field.path.len() == 1)
                );
                assert!(
                    matches!(&items[1], Condition::Filter(f) if f.operand == Operand::Value("x,y".into()))
                );
            }
            _ => panic!(),
        }
    }
}
