//! `GET /rest/v1/`: an OpenAPI 2.0 description of the exposed tables, views and
//! functions, built from the schema cache (what PostgREST serves at its root).

use super::error::RestError;
use crate::server::caller::authenticate;
use crate::server::state::AppState;
use axum::extract::{Request, State};
use axum::Json;
use serde_json::{json, Map, Value};
use wasmbase_host_api::data::schema::{Column, RelKind, Returns};

/// Serves the description for the default (or `Accept-Profile`) schema.
pub async fn handler(State(st): State<AppState>, req: Request) -> Result<Json<Value>, RestError> {
    let (parts, _) = req.into_parts();
    authenticate(&parts, &st)?;
    let schema = st.schema.get().ok_or_else(RestError::not_loaded)?;
    let wanted = super::request::profile(&parts.headers, true, &schema)?;
    let mut paths = Map::new();
    let mut definitions = Map::new();
    paths.insert("/".into(), json!({"get": {"summary": "OpenAPI description (this document)", "responses": {"200": {"description": "OK"}}}}));
    for rel in schema.relations_in(wanted) {
        definitions.insert(
            rel.name.clone(),
            definition(&rel.columns, &rel.pk, rel.comment.as_deref()),
        );
        let reference = json!({"$ref": format!("#/definitions/{}", rel.name)});
        let rows = json!({"description": "OK", "schema": {"type": "array", "items": reference}});
        let mut ops = Map::new();
        ops.insert("get".into(), json!({"tags": [rel.name], "summary": rel.comment, "responses": {"200": rows, "206": {"description": "Partial Content"}}}));
        if rel.kind != RelKind::View || !rel.pk.is_empty() {
            ops.insert("post".into(), json!({"tags": [rel.name], "parameters": [{"name": "body", "in": "body", "schema": reference}], "responses": {"201": {"description": "Created"}}}));
            ops.insert("patch".into(), json!({"tags": [rel.name], "parameters": [{"name": "body", "in": "body", "schema": reference}], "responses": {"204": {"description": "No Content"}}}));
            ops.insert(
                "delete".into(),
                json!({"tags": [rel.name], "responses": {"204": {"description": "No Content"}}}),
            );
        }
        paths.insert(format!("/{}", rel.name), Value::Object(ops));
    }
    for f in schema.functions_in(wanted) {
        let mut props = Map::new();
        let mut required = Vec::new();
        for a in &f.args {
            props.insert(
                a.name.clone(),
                json!({"format": a.type_sql, "type": json_type(&a.type_sql)}),
            );
            if !a.has_default {
                required.push(a.name.clone());
            }
        }
        let returns = match &f.returns {
            Returns::Void => "void".to_string(),
            Returns::Scalar { type_sql } => type_sql.clone(),
            Returns::Rows { .. } => "rows".to_string(),
        };
        let args = json!({"name": "args", "in": "body", "required": true, "schema": {"type": "object", "properties": props, "required": required}});
        paths.insert(
            format!("/rpc/{}", f.name),
            json!({"post": {"tags": ["(rpc) ".to_string() + &f.name], "summary": f.comment, "description": format!("returns {}{returns}", if f.set { "setof " } else { "" }), "parameters": [args], "responses": {"200": {"description": "OK"}}}}),
        );
    }
    Ok(Json(json!({
        "swagger": "2.0",
        "info": {"title": "Wasmbase data API", "description": format!("Tables, views and functions of schema {wanted}"), "version": env!("CARGO_PKG_VERSION")},
        "basePath": "/rest/v1",
        "schemes": ["http", "https"],
        "consumes": ["application/json"],
        "produces": ["application/json", "application/vnd.pgrst.object+json", "text/csv"],
        "paths": paths,
        "definitions": definitions,
        "securityDefinitions": {"apikey": {"type": "apiKey", "in": "header", "name": "apikey"}},
        "security": [{"apikey": []}],
    })))
}

fn definition(cols: &[Column], pk: &[String], comment: Option<&str>) -> Value {
    let mut props = Map::new();
    let mut required = Vec::new();
    for c in cols {
        let mut p = json!({"format": c.type_sql, "type": json_type(&c.type_sql)});
        if pk.contains(&c.name) {
            p["description"] = json!("Primary key");
        }
        if let Some(d) = &c.default {
            p["default"] = json!(d);
        }
        if !c.nullable && c.default.is_none() && !c.generated {
            required.push(c.name.clone());
        }
        props.insert(c.name.clone(), p);
    }
    json!({"type": "object", "description": comment, "properties": props, "required": required})
}

fn json_type(sql: &str) -> &'static str {
    if sql.ends_with("[]") {
        return "array";
    }
    match sql {
        "smallint" | "integer" | "bigint" => "integer",
        "numeric" | "real" | "double precision" => "number",
        "boolean" => "boolean",
        "json" | "jsonb" => "object",
        _ => "string",
    }
}
