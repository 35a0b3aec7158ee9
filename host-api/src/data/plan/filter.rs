//! Filters (`WHERE`): horizontal filtering of each level, `and=`/`or=` trees,
//! the operators with their bind parameters, and the embed conditions
//! (`!inner`, `rel=is.null`) a level's rows must meet.

use super::embed::{find_embed, unknown_level};
use super::{Builder, Source};
use crate::data::error::DataError;
use crate::data::request::{
    Condition, Filter, IsValue, JoinKind, Op, Operand, Quantifier, Query, SelectItem,
};

impl<'s> Builder<'s> {
    /// ` WHERE …` for a level (empty string when there is nothing to filter),
    /// including `EXISTS` for its `!inner` embeds.
    pub(super) fn conditions(
        &mut self,
        q: &Query,
        conds: &[Condition],
        src: Source<'s>,
        a: &str,
        path: &[String],
    ) -> Result<String, DataError> {
        let items = if path.is_empty() {
            &q.select
        } else {
            match find_embed(&q.select, path) {
                Some(e) => &e.select,
                None => return Err(unknown_level(path)),
            }
        };
        let mut parts = Vec::new();
        for c in conds {
            // `rel=is.null` / `rel=not.is.null`: parents without / with a match.
            if let Condition::Filter(f) = c {
                let embed = items.iter().find_map(|i| match i {
                    SelectItem::Embed(e)
                        if f.field.path.is_empty() && e.key() == f.field.column =>
                    {
                        Some(e)
                    }
                    _ => None,
                });
                if let Some(e) = embed.filter(|_| src.column(&f.field.column).is_err()) {
                    let Operand::Is(v) = &f.operand else {
                        return Err(DataError::embed_filter(e.key()));
                    };
                    let exists = match (v, f.negate) {
                        (IsValue::Null, true) | (IsValue::NotNull, false) => true,
                        (IsValue::Null, false) | (IsValue::NotNull, true) => false,
                        _ => return Err(DataError::embed_filter(e.key())),
                    };
                    let cond = self.exists(q, e, src, a, path)?;
                    parts.push(if exists { cond } else { format!("NOT {cond}") });
                    continue;
                }
            }
            parts.push(self.condition(c, src, a)?);
        }
        for item in items {
            if let SelectItem::Embed(e) = item {
                if e.join == JoinKind::Inner {
                    let cond = self.exists(q, e, src, a, path)?;
                    parts.push(cond);
                }
            }
        }
        if parts.is_empty() {
            Ok(String::new())
        } else {
            Ok(format!(" WHERE {}", parts.join(" AND ")))
        }
    }

    /// One condition of a level: a filter, or an `and`/`or` group (maybe negated).
    fn condition(&mut self, c: &Condition, src: Source<'s>, a: &str) -> Result<String, DataError> {
        match c {
            Condition::Filter(f) => self.filter(f, src, a),
            Condition::And(neg, items) | Condition::Or(neg, items) => {
                let joiner = if matches!(c, Condition::And(..)) {
                    " AND "
                } else {
                    " OR "
                };
                let mut parts = Vec::new();
                for i in items {
                    parts.push(self.condition(i, src, a)?);
                }
                let body = if parts.is_empty() {
                    (if joiner == " AND " { "true" } else { "false" }).to_string()
                } else {
                    parts.join(joiner)
                };
                Ok(if *neg {
                    format!("NOT ({body})")
                } else {
                    format!("({body})")
                })
            }
        }
    }

    /// One `column=op.value` filter as a parenthesized SQL predicate.
    fn filter(&mut self, f: &Filter, src: Source<'s>, a: &str) -> Result<String, DataError> {
        let (expr, typname) = self.typed_field(src, a, &f.field)?;
        let quant = match f.quantifier {
            Some(Quantifier::Any) => Some("ANY"),
            Some(Quantifier::All) => Some("ALL"),
            None => None,
        };
        let value = |b: &mut Self| -> Result<String, DataError> {
            match &f.operand {
                Operand::Value(v) => {
                    let p = b.param(v.clone());
                    Ok(match quant {
                        Some(q) => format!("{q}({p})"),
                        None => p,
                    })
                }
                _ => Err(DataError::parse("filter", "operator needs a single value")),
            }
        };
        let sql = match f.op {
            Op::Eq => format!("{expr} = {}", value(self)?),
            Op::Neq => format!("{expr} <> {}", value(self)?),
            Op::Gt => format!("{expr} > {}", value(self)?),
            Op::Gte => format!("{expr} >= {}", value(self)?),
            Op::Lt => format!("{expr} < {}", value(self)?),
            Op::Lte => format!("{expr} <= {}", value(self)?),
            Op::Like | Op::Ilike => {
                let v = match &f.operand {
                    Operand::Value(v) => v.replace('*', "%"),
                    _ => return Err(DataError::parse("filter", "like needs a value")),
                };
                let op = if f.op == Op::Like { "LIKE" } else { "ILIKE" };
                let p = self.param(v);
                match quant {
                    Some(q) => format!("{expr} {op} {q}({p})"),
                    None => format!("{expr} {op} {p}"),
                }
            }
            Op::Match => format!("{expr} ~ {}", value(self)?),
            Op::Imatch => format!("{expr} ~* {}", value(self)?),
            Op::IsDistinct => format!("{expr} IS DISTINCT FROM {}", value(self)?),
            Op::Cs => format!("{expr} @> {}", value(self)?),
            Op::Cd => format!("{expr} <@ {}", value(self)?),
            Op::Ov => {
                let v = match &f.operand {
                    // `ov.(a,b)` is accepted for arrays as `{a,b}`.
                    Operand::Value(v)
                        if v.starts_with('(') && v.ends_with(')') && typname.starts_with('_') =>
                    {
                        format!("{{{}}}", &v[1..v.len() - 1])
                    }
                    Operand::Value(v) => v.clone(),
                    _ => return Err(DataError::parse("filter", "ov needs a value")),
                };
                format!("{expr} && {}", self.param(v))
            }
            Op::Sl => format!("{expr} << {}", value(self)?),
            Op::Sr => format!("{expr} >> {}", value(self)?),
            // PostgREST: nxr ("does not extend to the right") is `&<`, nxl is `&>`.
            Op::Nxr => format!("{expr} &< {}", value(self)?),
            Op::Nxl => format!("{expr} &> {}", value(self)?),
            Op::Adj => format!("{expr} -|- {}", value(self)?),
            Op::In => match &f.operand {
                Operand::List(items) => {
                    format!("{expr} = ANY({})", self.param(array_literal(items)))
                }
                _ => return Err(DataError::parse("filter", "in. needs a list")),
            },
            Op::Is => match &f.operand {
                Operand::Is(v) => format!(
                    "{expr} {}",
                    match v {
                        IsValue::Null => "IS NULL",
                        IsValue::NotNull => "IS NOT NULL",
                        IsValue::True => "IS TRUE",
                        IsValue::False => "IS FALSE",
                        IsValue::Unknown => "IS UNKNOWN",
                    }
                ),
                _ => {
                    return Err(DataError::parse(
                        "filter",
                        "is. needs null/true/false/unknown",
                    ))
                }
            },
            Op::Fts | Op::Plfts | Op::Phfts | Op::Wfts => {
                let func = match f.op {
                    Op::Fts => "to_tsquery",
                    Op::Plfts => "plainto_tsquery",
                    Op::Phfts => "phraseto_tsquery",
                    _ => "websearch_to_tsquery",
                };
                let cfg = f
                    .config
                    .clone()
                    .map(|c| format!("{}::regconfig, ", self.param(c)));
                let cfg = cfg.unwrap_or_default();
                let doc = if typname == "tsvector" && f.field.path.is_empty() {
                    expr.clone()
                } else {
                    format!("to_tsvector({cfg}{expr}::text)")
                };
                let v = value(self)?;
                format!("{doc} @@ {func}({cfg}{v})")
            }
        };
        Ok(if f.negate {
            format!("NOT ({sql})")
        } else {
            format!("({sql})")
        })
    }
}

/// `{"a","b\"c"}`: a PostgreSQL array literal of text items.
fn array_literal(items: &[String]) -> String {
    let quoted: Vec<String> = items
        .iter()
        .map(|i| format!("\"{}\"", i.replace('\\', "\\\\").replace('"', "\\\"")))
        .collect();
    format!("{{{}}}", quoted.join(","))
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::read;

    #[test]
    fn in_list_is_one_array_parameter_whatever_its_length() {
        let a = read("id=in.(1,2)").unwrap();
        let b = read("id=in.(1,2,3,4,5,6)").unwrap();
        assert_eq!(a.sql, b.sql);
        assert!(a.sql.contains("= ANY($6)"), "{}", a.sql);
        assert_eq!(
            b.params[5].as_deref(),
            Some("{\"1\",\"2\",\"3\",\"4\",\"5\",\"6\"}")
        );
    }
}
