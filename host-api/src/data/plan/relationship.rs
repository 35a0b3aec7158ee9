//! Which relationship an embed goes through, decided as PostgREST 12 does
//! (`Plan.hs`, `findRel`): the relation's relationships are listed the way
//! PostgREST's schema cache lists them (many-to-one and its inverse
//! one-to-many per foreign key, one-to-one when the key's columns are a
//! primary key or unique constraint, many-to-many through a junction whose
//! two keys lie in its primary key, computed relationships), then filtered by
//! the embed's name and `!hint`. No match is PGRST200, several are PGRST201
//! with PostgREST's details and hint.

use super::{suggest, Builder, Source};
use crate::data::error::DataError;
use crate::data::request::Embed;
use crate::data::schema::{ForeignKey, Function, RelKind, Relation};

/// A resolved relationship between a parent level and an embedded relation.
pub(super) struct Link<'s> {
    /// The embedded relation.
    pub(super) target: &'s Relation,
    /// (parent column, target column) pairs (empty for a junction or a
    /// computed relationship).
    pub(super) pairs: Vec<(String, String)>,
    /// The target has at most one row per parent (many-to-one, one-to-one,
    /// a to-one computed relationship).
    pub(super) to_one: bool,
    /// Many-to-many: the junction between them.
    pub(super) junction: Option<Junction<'s>>,
    /// A computed relationship: the function giving the related rows.
    pub(super) computed: Option<&'s Function>,
}

/// A junction table joining two relations (many-to-many embedding).
pub(super) struct Junction<'s> {
    /// The junction relation.
    pub(super) rel: &'s Relation,
    /// (parent column, junction column) pairs.
    pub(super) parent_pairs: Vec<(String, String)>,
    /// (junction column, target column) pairs.
    pub(super) target_pairs: Vec<(String, String)>,
}

/// The kind of a relationship (PostgREST's `Cardinality`).
enum Card<'s> {
    M2O(&'s ForeignKey),
    O2M(&'s ForeignKey),
    O2O(&'s ForeignKey),
    M2M {
        junction: &'s Relation,
        to_parent: &'s ForeignKey,
        to_target: &'s ForeignKey,
    },
}

/// One relationship of the parent relation.
struct Rel<'s> {
    target: &'s Relation,
    card: Card<'s>,
    /// (origin column, target column): for a one-to-many the origin's
    /// referenced column and the target's referencing one.
    cols: Vec<(String, String)>,
    /// Both ends are the same relation.
    is_self: bool,
}

impl<'s> Rel<'s> {
    fn constraint(&self) -> Option<&str> {
        match &self.card {
            Card::M2O(fk) | Card::O2M(fk) | Card::O2O(fk) => Some(&fk.name),
            Card::M2M { .. } => None,
        }
    }

    /// The hint matches the single origin column of the key.
    fn origin_col(&self, h: &str) -> bool {
        self.constraint().is_some() && self.cols.len() == 1 && self.cols[0].0 == h
    }

    /// The hint matches the single target column of the key.
    fn target_col(&self, h: &str) -> bool {
        self.constraint().is_some() && self.cols.len() == 1 && self.cols[0].1 == h
    }

    /// PostgREST's `findRel` filter for embed `name` with `hint`.
    fn matches(&self, name: &str, hint: Option<&str>) -> bool {
        let target_named = self.target.name == name;
        let target_is_view = self.target.kind == RelKind::View;
        if self.is_self {
            // One foreign key, two relationships: the table's name is the
            // one-to-many (`children:family_tree(*)`), the key's column the
            // many-to-one (`parent(*)`); a hint names the referencing column
            // of the one-to-many (`auditees:organizations!auditor(*)`).
            return match hint {
                None => {
                    (target_named && matches!(self.card, Card::O2M(_)))
                        || (self.origin_col(name) && matches!(self.card, Card::M2O(_)))
                }
                Some(h) => target_named && matches!(self.card, Card::O2M(_)) && self.target_col(h),
            };
        }
        match hint {
            None => {
                target_named
                    || (self.constraint() == Some(name) && !target_is_view)
                    || (self.origin_col(name) && !target_is_view)
            }
            Some(h) => {
                target_named
                    && (self.constraint() == Some(h)
                        || self.origin_col(h)
                        || self.target_col(h)
                        || matches!(&self.card, Card::M2M { junction, .. } if junction.name == h))
            }
        }
    }

    /// PostgREST's entry for this relationship in a PGRST201 `details`.
    fn describe(&self, origin: &str) -> serde_json::Value {
        let list = |cols: &mut dyn Iterator<Item = &String>| {
            format!(
                "({})",
                cols.map(String::as_str).collect::<Vec<_>>().join(", ")
            )
        };
        let (cardinality, relationship) = match &self.card {
            Card::M2M {
                junction,
                to_parent,
                to_target,
            } => (
                "many-to-many",
                format!(
                    "{} using {}{} and {}{}",
                    junction.name,
                    to_parent.name,
                    list(&mut to_parent.from_cols.iter()),
                    to_target.name,
                    list(&mut to_target.from_cols.iter())
                ),
            ),
            card => {
                let (kind, fk) = match card {
                    Card::M2O(fk) => ("many-to-one", fk),
                    Card::O2M(fk) => ("one-to-many", fk),
                    Card::O2O(fk) => ("one-to-one", fk),
                    Card::M2M { .. } => unreachable!("handled above"),
                };
                (
                    kind,
                    format!(
                        "{} using {}{} and {}{}",
                        fk.name,
                        origin,
                        list(&mut self.cols.iter().map(|c| &c.0)),
                        self.target.name,
                        list(&mut self.cols.iter().map(|c| &c.1))
                    ),
                )
            }
        };
        serde_json::json!({
            "cardinality": cardinality,
            "embedding": format!("{origin} with {}", self.target.name),
            "relationship": relationship,
        })
    }

    /// PostgREST's `'target!hint'` suggestion for this relationship.
    fn suggestion(&self) -> String {
        let hint = match &self.card {
            Card::M2M { junction, .. } => junction.name.as_str(),
            Card::M2O(fk) | Card::O2M(fk) | Card::O2O(fk) => fk.name.as_str(),
        };
        format!("'{}!{hint}'", self.target.name)
    }

    fn into_link(self) -> Link<'s> {
        let (to_one, junction) = match self.card {
            Card::M2O(_) | Card::O2O(_) => (true, None),
            Card::O2M(_) => (false, None),
            Card::M2M {
                junction,
                to_parent,
                to_target,
            } => (
                false,
                Some(Junction {
                    rel: junction,
                    parent_pairs: zip(&to_parent.to_cols, &to_parent.from_cols),
                    target_pairs: zip(&to_target.from_cols, &to_target.to_cols),
                }),
            ),
        };
        Link {
            target: self.target,
            pairs: if junction.is_some() {
                Vec::new()
            } else {
                self.cols
            },
            to_one,
            junction,
            computed: None,
        }
    }
}

fn zip(a: &[String], b: &[String]) -> Vec<(String, String)> {
    a.iter().cloned().zip(b.iter().cloned()).collect()
}

impl<'s> Builder<'s> {
    /// The relationship embed `e` of a level reading `src` goes through.
    pub(super) fn link(&self, src: Source<'s>, e: &Embed) -> Result<Link<'s>, DataError> {
        let Some(parent) = src.rel else {
            return Err(DataError::no_relationship(
                src.label,
                &e.name,
                e.hint.as_deref(),
                "",
                None,
            ));
        };
        // A computed relationship (a function taking the parent's row) wins
        // over detected ones of the same name, as in PostgREST.
        if let Some(f) = self.schema.computed_relationship(parent, &e.name) {
            if let Some(((s, t), to_one)) = f.relationship() {
                if let Some(target) = self.schema.relation(s, t) {
                    return Ok(Link {
                        target,
                        pairs: Vec::new(),
                        to_one,
                        junction: None,
                        computed: Some(f),
                    });
                }
            }
        }
        let rels = self.relationships(parent);
        let hint = e.hint.as_deref();
        let mut found: Vec<Rel<'s>> = Vec::new();
        let mut candidates = Vec::new();
        for r in rels {
            if r.matches(&e.name, hint) {
                found.push(r);
            } else {
                candidates.push(r.target.name.clone());
            }
        }
        match found.len() {
            0 => Err(DataError::no_relationship(
                &parent.name,
                &e.name,
                hint,
                &parent.schema,
                suggest::closest(
                    &e.name,
                    candidates.iter().map(String::as_str),
                    suggest::LOOSE,
                ),
            )),
            1 => Ok(found.pop().expect("one").into_link()),
            _ => Err(DataError::ambiguous_relationship(
                &parent.name,
                &e.name,
                found.iter().map(|r| r.describe(&parent.name)).collect(),
                &found.iter().map(Rel::suggestion).collect::<Vec<_>>(),
            )),
        }
    }

    /// Every relationship of `parent` to a relation of its own schema.
    fn relationships(&self, parent: &'s Relation) -> Vec<Rel<'s>> {
        let schema = self.schema;
        let origin = (parent.schema.clone(), parent.name.clone());
        let rel = |(s, t): &(String, String)| {
            (*s == parent.schema)
                .then(|| schema.relation(s, t))
                .flatten()
        };
        let mut out = Vec::new();
        for fk in &schema.fks {
            let is_self = fk.from == fk.to;
            if fk.from == origin {
                if let Some(target) = rel(&fk.to) {
                    out.push(Rel {
                        target,
                        card: if fk.one_to_one {
                            Card::O2O(fk)
                        } else {
                            Card::M2O(fk)
                        },
                        cols: zip(&fk.from_cols, &fk.to_cols),
                        is_self,
                    });
                }
            }
            if fk.to == origin {
                if let Some(target) = rel(&fk.from) {
                    out.push(Rel {
                        target,
                        card: if fk.one_to_one {
                            Card::O2O(fk)
                        } else {
                            Card::O2M(fk)
                        },
                        cols: zip(&fk.to_cols, &fk.from_cols),
                        is_self,
                    });
                }
                // Many-to-many: the referencing relation is a junction when
                // another of its keys points elsewhere and both keys' columns
                // lie in its primary key.
                let Some(junction) = rel(&fk.from) else {
                    continue;
                };
                for other in schema
                    .fks
                    .iter()
                    .filter(|o| o.from == fk.from && o.name != fk.name)
                {
                    let in_pk = |cols: &[String]| cols.iter().all(|c| junction.pk.contains(c));
                    if !in_pk(&fk.from_cols) || !in_pk(&other.from_cols) {
                        continue;
                    }
                    if let Some(target) = rel(&other.to) {
                        out.push(Rel {
                            target,
                            card: Card::M2M {
                                junction,
                                to_parent: fk,
                                to_target: other,
                            },
                            cols: Vec::new(),
                            is_self: other.to == origin,
                        });
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::read;

    #[test]
    fn self_reference_follows_postgrest_find_rel() {
        // The table's name is the one-to-many, the key's column the many-to-one.
        let s = read("select=id,children:items(id),parent:parent_id(id)").unwrap();
        assert!(
            s.sql.contains("coalesce(json_agg(_e.j), '[]') FROM (SELECT json_build_object($2::text, \"_1\".\"id\") AS j FROM \"public\".\"items\" \"_1\" WHERE \"_1\".\"parent_id\" = \"_0\".\"id\")"),
            "{}",
            s.sql
        );
        assert!(
            s.sql.contains("(SELECT json_build_object($4::text, \"_2\".\"id\") FROM \"public\".\"items\" \"_2\" WHERE \"_2\".\"id\" = \"_0\".\"parent_id\")"),
            "{}",
            s.sql
        );
        // A hint names the one-to-many's referencing column.
        assert!(read("select=items!parent_id(id)")
            .unwrap()
            .sql
            .contains("json_agg"));
        // The constraint name alone matches nothing on a self-reference.
        assert_eq!(
            read("select=items_parent_id_fkey(id)").unwrap_err().code,
            "PGRST200"
        );
    }

    #[test]
    fn no_relationship_suggests_a_near_name() {
        let e = read("select=author(name)").unwrap_err();
        assert_eq!((e.status, e.code.as_str()), (400, "PGRST200"));
        assert_eq!(
            e.hint.as_deref(),
            Some("Perhaps you meant 'authors' instead of 'author'.")
        );
        assert_eq!(
            e.details.as_deref(),
            Some("Searched for a foreign key relationship between 'items' and 'author' in the schema 'public', but no matches were found.")
        );
    }
}
