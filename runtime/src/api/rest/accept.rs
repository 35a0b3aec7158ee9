//! `Accept` → what the response is: JSON (an array, or PostgREST's
//! `vnd.pgrst.array+json`), one object (`vnd.pgrst.object+json`), CSV,
//! GeoJSON, or the statement's plan (`vnd.pgrst.plan`), with PostgREST's media-type
//! parameters (`nulls=stripped`, the plan's `options=` and `for=`).

use wasmbase_host_api::data::request::Explain;
use wasmbase_host_api::data::DataError;

/// The response a request asked for.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Produce {
    /// One object instead of an array.
    pub single: bool,
    /// CSV.
    pub csv: bool,
    /// `nulls=stripped`: keys whose value is null are left out of objects.
    pub strip_nulls: bool,
    /// `vnd.pgrst.plan`: the plan instead of the rows.
    pub plan: Option<Explain>,
    /// `application/geo+json`: a FeatureCollection (PostGIS).
    pub geojson: bool,
}

/// Chooses the first `Accept` entry the data API can produce; the plan types
/// only when `plan_enabled` (PostgREST's `db-plan-enabled`).
pub fn negotiate(accept: &str, plan_enabled: bool) -> Result<Produce, DataError> {
    for entry in accept.split(',') {
        let mut parts = entry.split(';').map(str::trim);
        let mime = parts.next().unwrap_or("").to_ascii_lowercase();
        let params: Vec<(String, String)> = parts
            .filter_map(|p| {
                let (k, v) = p.split_once('=')?;
                Some((
                    k.trim().to_ascii_lowercase(),
                    v.trim().trim_matches('"').to_string(),
                ))
            })
            .collect();
        let param = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        let strip_nulls = param("nulls") == Some("stripped");
        let produce = match mime.as_str() {
            "application/json" | "*/*" | "application/*" | "" => Produce::default(),
            "application/vnd.pgrst.array+json" | "application/vnd.pgrst.array" => Produce {
                strip_nulls,
                ..Default::default()
            },
            "text/csv" => Produce {
                csv: true,
                ..Default::default()
            },
            "application/geo+json" => Produce {
                geojson: true,
                ..Default::default()
            },
            "application/vnd.pgrst.object+json" | "application/vnd.pgrst.object" => Produce {
                single: true,
                strip_nulls,
                ..Default::default()
            },
            "application/vnd.pgrst.plan"
            | "application/vnd.pgrst.plan+json"
            | "application/vnd.pgrst.plan+text"
                if plan_enabled =>
            {
                let options: Vec<String> = param("options")
                    .unwrap_or("")
                    .split('|')
                    .map(|o| o.trim().to_ascii_lowercase())
                    .filter(|o| !o.is_empty())
                    .collect();
                let known = ["analyze", "verbose", "settings", "buffers", "wal"];
                if let Some(bad) = options.iter().find(|o| !known.contains(&o.as_str())) {
                    return Err(DataError::media_type(&format!("{mime}; options={bad}")));
                }
                Produce {
                    plan: Some(Explain {
                        text: mime.ends_with("+text"),
                        analyze: options.iter().any(|o| o == "analyze"),
                        verbose: options.iter().any(|o| o == "verbose"),
                        settings: options.iter().any(|o| o == "settings"),
                        buffers: options.iter().any(|o| o == "buffers"),
                        wal: options.iter().any(|o| o == "wal"),
                    }),
                    ..Default::default()
                }
            }
            _ => continue,
        };
        return Ok(produce);
    }
    Err(DataError::media_type(accept))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgrest_media_types_and_parameters() {
        assert_eq!(
            negotiate("application/json", false).unwrap(),
            Produce::default()
        );
        let p = negotiate("application/vnd.pgrst.array+json;nulls=stripped", false).unwrap();
        assert!(p.strip_nulls && !p.single);
        let p = negotiate("application/vnd.pgrst.object+json; nulls=stripped", false).unwrap();
        assert!(p.strip_nulls && p.single);
        assert!(negotiate("text/csv", false).unwrap().csv);
        assert!(negotiate("application/geo+json", false).unwrap().geojson);
        // Plans only when enabled; options as PostgREST spells them.
        assert_eq!(
            negotiate("application/vnd.pgrst.plan+json", false)
                .unwrap_err()
                .code,
            "PGRST107"
        );
        let p = negotiate(
            "application/vnd.pgrst.plan+text; for=\"application/json\"; options=analyze|buffers",
            true,
        )
        .unwrap();
        let e = p.plan.unwrap();
        assert!(e.text && e.analyze && e.buffers && !e.verbose);
        assert!(negotiate("application/vnd.pgrst.plan; options=drop", true).is_err());
        // The first producible entry wins.
        assert!(negotiate("image/png, text/csv", false).unwrap().csv);
        assert_eq!(negotiate("image/png", false).unwrap_err().status, 406);
    }
}
