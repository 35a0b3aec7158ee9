//! Outgoing HTTP from guests: allowed only to the hosts the manifest grants,
//! enforced here in the host's send hook (a denied request never opens a
//! socket), with timeouts capped so a guest cannot park a connection.

use std::sync::Arc;
use std::time::Duration;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

use super::manifest::Manifest;

/// Longest connect/first-byte/between-bytes wait of an outgoing request.
const CAP: Duration = Duration::from_secs(10);

/// The send hook of one invocation.
pub struct Outbound {
    /// The function's manifest (its `http` grants).
    pub manifest: Arc<Manifest>,
    /// Function name, for the log line of a denial.
    pub function: Arc<str>,
}

impl WasiHttpHooks for Outbound {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _fut: Box<dyn std::future::Future<Output = Result<(), Error>> + Send>,
    ) -> Box<
        dyn std::future::Future<
                Output = Result<
                    (
                        http::Response<WasiBody>,
                        Box<dyn std::future::Future<Output = Result<(), Error>> + Send>,
                    ),
                    Error,
                >,
            > + Send,
    > {
        let uri = request.uri();
        let https = uri.scheme_str() == Some("https");
        let host = uri.host().unwrap_or("").to_string();
        let allowed =
            self.manifest
                .allows_host(&host, uri.port_u16(), if https { 443 } else { 80 });
        if !allowed {
            tracing::warn!(function = &*self.function, host = %host, "outbound HTTP to an ungranted host refused");
        }
        let o = options.unwrap_or_default();
        let options = Some(RequestOptions {
            connect_timeout: Some(o.connect_timeout.map_or(CAP, |t| t.min(CAP))),
            first_byte_timeout: Some(o.first_byte_timeout.map_or(CAP, |t| t.min(CAP))),
            between_bytes_timeout: Some(o.between_bytes_timeout.map_or(CAP, |t| t.min(CAP))),
        });
        Box::new(async move {
            if !allowed {
                return Err(Error::HttpRequestDenied);
            }
            use http_body_util::BodyExt;
            let (res, io) = wasmtime_wasi_http::default_send_request(request, options).await?;
            Ok((
                res.map(BodyExt::boxed_unsync),
                Box::new(io) as Box<dyn std::future::Future<Output = _> + Send>,
            ))
        })
    }
}
