//! HTTP in (the request the function handles) and out ([`fetch`]).

use crate::bindings::buffered::exports::wasmbase::platform::buffered_handler as buffered;
use crate::bindings::wasi::http::outgoing_handler;
use crate::bindings::wasi::http::types::{
    Fields, IncomingBody, IncomingRequest, Method, OutgoingBody, OutgoingRequest, OutgoingResponse,
    ResponseOutparam, Scheme,
};
use crate::bindings::wasi::io::streams::StreamError;

/// A request, fully read.
#[derive(Debug, Clone, Default)]
pub struct Request {
    /// `GET`, `POST`, …
    pub method: String,
    /// Path and query as the platform passed them (e.g. `/fn/hello/x?y=1`).
    pub path: String,
    /// Headers (names lower-case).
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Request {
    /// A request to `url` with `method`, for [`fetch`].
    pub fn new(method: &str, url: &str) -> Request {
        Request {
            method: method.to_string(),
            path: url.to_string(),
            ..Default::default()
        }
    }

    /// The first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body parsed as JSON.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_slice(&self.body)
    }

    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Adds a header (builder style, for [`fetch`]).
    pub fn with_header(mut self, name: &str, value: &str) -> Request {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// Sets the body (builder style, for [`fetch`]).
    pub fn with_body(mut self, body: impl Into<Vec<u8>>) -> Request {
        self.body = body.into();
        self
    }
}

/// A response.
#[derive(Debug, Clone)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Headers.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Vec<u8>,
}

impl Response {
    /// An empty response with `status`.
    pub fn new(status: u16) -> Response {
        Response {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// A JSON response.
    pub fn json<T: serde::Serialize + ?Sized>(status: u16, value: &T) -> Response {
        let body = serde_json::to_vec(value).unwrap_or_else(|_| b"null".to_vec());
        Response::new(status)
            .with_header("content-type", "application/json")
            .with_body(body)
    }

    /// A plain-text response.
    pub fn text(status: u16, text: impl Into<String>) -> Response {
        Response::new(status)
            .with_header("content-type", "text/plain; charset=utf-8")
            .with_body(text.into().into_bytes())
    }

    /// Adds a header.
    pub fn with_header(mut self, name: &str, value: &str) -> Response {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// Sets the body.
    pub fn with_body(mut self, body: impl Into<Vec<u8>>) -> Response {
        self.body = body.into();
        self
    }

    /// The first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body parsed as JSON.
    pub fn json_body<T: serde::de::DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_slice(&self.body)
    }
}

/// What a function implements.
pub trait Handler {
    /// Answers one request.
    fn handle(req: Request) -> Response;
}

/// Serves one wasi:http request with `T` (called by [`crate::export!`]).
#[doc(hidden)]
pub fn serve<T: Handler>(request: IncomingRequest, out: ResponseOutparam) {
    let resp = match read_request(request) {
        Ok(req) => T::handle(req),
        Err(e) => Response::text(400, e),
    };
    write_response(out, resp);
}

/// Serves one request of the platform's `buffered-handler` with `T` (called
/// by [`crate::export!`]): the same [`Handler`], without wasi:http resources.
#[doc(hidden)]
pub fn serve_buffered<T: Handler>(request: buffered::Request) -> buffered::Response {
    let req = Request {
        method: request.method,
        path: request.path_with_query,
        headers: texts(request.headers),
        body: request.body,
    };
    let resp = T::handle(req);
    buffered::Response {
        status: resp.status,
        headers: wire(&resp.headers),
        body: resp.body,
    }
}

/// Headers as received (names, value bytes) as the SDK hands them to a
/// function: values as text, lossy only where they are not UTF-8.
fn texts(headers: Vec<(String, Vec<u8>)>) -> Vec<(String, String)> {
    headers
        .into_iter()
        .map(|(k, v)| {
            let v = String::from_utf8(v)
                .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
            (k, v)
        })
        .collect()
}

/// Headers as they go out (lower-case names, value bytes), for wasi:http
/// fields and the buffered handler's response alike.
fn wire(headers: &[(String, String)]) -> Vec<(String, Vec<u8>)> {
    headers
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.as_bytes().to_vec()))
        .collect()
}

fn method_name(m: &Method) -> String {
    match m {
        Method::Get => "GET".into(),
        Method::Head => "HEAD".into(),
        Method::Post => "POST".into(),
        Method::Put => "PUT".into(),
        Method::Delete => "DELETE".into(),
        Method::Connect => "CONNECT".into(),
        Method::Options => "OPTIONS".into(),
        Method::Trace => "TRACE".into(),
        Method::Patch => "PATCH".into(),
        Method::Other(s) => s.clone(),
    }
}

fn headers_of(fields: &Fields) -> Vec<(String, String)> {
    texts(fields.entries())
}

fn read_body(body: IncomingBody) -> Result<Vec<u8>, String> {
    let mut buf = Vec::new();
    {
        let stream = body.stream().map_err(|_| "body already read".to_string())?;
        loop {
            // Try a plain read first; only wait (subscribe + block: two more host
            // calls) when nothing is buffered yet.
            match stream.read(64 * 1024) {
                Ok(chunk) if !chunk.is_empty() => buf.extend_from_slice(&chunk),
                Ok(_) => stream.subscribe().block(),
                Err(StreamError::Closed) => break,
                Err(StreamError::LastOperationFailed(e)) => {
                    return Err(format!("reading the body: {}", e.to_debug_string()))
                }
            }
        }
    }
    // Dropping the body (rather than `finish`, which hands back trailers that
    // would then need dropping too) is one host call instead of two.
    drop(body);
    Ok(buf)
}

fn read_request(req: IncomingRequest) -> Result<Request, String> {
    let method = method_name(&req.method());
    let path = req.path_with_query().unwrap_or_else(|| "/".into());
    let headers = headers_of(&req.headers());
    let body = match req.consume() {
        Ok(b) => read_body(b)?,
        Err(()) => Vec::new(),
    };
    Ok(Request {
        method,
        path,
        headers,
        body,
    })
}

fn fields(headers: &[(String, String)]) -> Fields {
    let list = wire(headers);
    // One host call for all headers; if one is refused (forbidden or invalid),
    // fall back to adding them one by one and skipping the bad ones.
    match Fields::from_list(&list) {
        Ok(f) => f,
        Err(_) => {
            let f = Fields::new();
            for (k, v) in &list {
                let _ = f.append(k, v);
            }
            f
        }
    }
}

/// Writes the body as the host's write permits allow (waiting only when it
/// has none); a client that went away ends the write quietly.
fn write_all(body: &OutgoingBody, bytes: &[u8]) -> bool {
    let Ok(stream) = body.write() else {
        return false;
    };
    // A small body goes in one host call (write, flush and wait together)
    // instead of three (check-write, write, flush).
    if bytes.len() <= 4096 {
        return stream.blocking_write_and_flush(bytes).is_ok();
    }
    // Hand the bytes over before the stream is dropped.
    write_stream(&stream, bytes) && stream.flush().is_ok()
}

/// Writes all of `bytes` to `stream` as its write permits allow, waiting
/// only when it has none; false once the stream is closed. (HTTP bodies and
/// storage uploads both write this way.)
pub(crate) fn write_stream(
    stream: &crate::bindings::wasi::io::streams::OutputStream,
    bytes: &[u8],
) -> bool {
    let mut rest = bytes;
    while !rest.is_empty() {
        let permit = match stream.check_write() {
            Ok(0) => {
                stream.subscribe().block();
                continue;
            }
            Ok(n) => n as usize,
            Err(_) => return false,
        };
        let n = permit.min(rest.len());
        if stream.write(&rest[..n]).is_err() {
            return false;
        }
        rest = &rest[n..];
    }
    true
}

fn write_response(out: ResponseOutparam, mut resp: Response) {
    // A known length lets the host send the response in one piece instead of
    // chunked encoding.
    if resp.header("content-length").is_none() {
        let len = resp.body.len().to_string();
        resp.headers.push(("content-length".into(), len));
    }
    let r = OutgoingResponse::new(fields(&resp.headers));
    let _ = r.set_status_code(resp.status);
    let Ok(body) = r.body() else {
        return;
    };
    ResponseOutparam::set(out, Ok(r));
    if write_all(&body, &resp.body) {
        let _ = OutgoingBody::finish(body, None);
    }
}

/// Sends an outbound request (only to hosts granted in `function.toml`; others
/// fail with `ErrorCode::HttpRequestDenied`, and the server log names the host).
pub fn fetch(req: Request) -> Result<Response, String> {
    let (scheme, rest) = match req.path.split_once("://") {
        Some(("https", r)) => (Scheme::Https, r),
        Some(("http", r)) => (Scheme::Http, r),
        _ => return Err(format!("fetch needs an absolute http(s) URL, got {}", req.path)),
    };
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) if rest.as_bytes()[i] == b'?' => (&rest[..i], format!("/{}", &rest[i..])),
        Some(i) => (&rest[..i], rest[i..].to_string()),
        None => (rest, "/".to_string()),
    };
    let out = OutgoingRequest::new(fields(&req.headers));
    let method = match req.method.to_ascii_uppercase().as_str() {
        "GET" => Method::Get,
        "POST" => Method::Post,
        "PUT" => Method::Put,
        "DELETE" => Method::Delete,
        "PATCH" => Method::Patch,
        "HEAD" => Method::Head,
        "OPTIONS" => Method::Options,
        other => Method::Other(other.to_string()),
    };
    out.set_method(&method).map_err(|_| "invalid method".to_string())?;
    out.set_scheme(Some(&scheme)).map_err(|_| "invalid scheme".to_string())?;
    out.set_authority(Some(authority)).map_err(|_| "invalid host".to_string())?;
    out.set_path_with_query(Some(&path)).map_err(|_| "invalid path".to_string())?;
    let body = out.body().map_err(|_| "request body unavailable".to_string())?;
    let pending = outgoing_handler::handle(out, None).map_err(|e| format!("{e:?}"))?;
    // The host may refuse the request (an ungranted host) while the body is
    // still being written; then the write fails because nobody reads it, and
    // the refusal is the error worth reporting, so the response is awaited
    // either way. An empty body is not written at all.
    let written = req.body.is_empty() || write_all(&body, &req.body);
    // An unfinished body is dropped before waiting, which tells the host the
    // request is incomplete instead of leaving it waiting for more bytes.
    let finished = if written {
        OutgoingBody::finish(body, None).is_ok()
    } else {
        drop(body);
        false
    };
    pending.subscribe().block();
    let resp = match pending.get() {
        Some(Ok(Err(e))) => return Err(format!("{e:?}")),
        _ if !written => return Err("writing the request body failed".into()),
        _ if !finished => return Err("finishing the request body failed".into()),
        Some(Ok(Ok(r))) => r,
        _ => return Err("no response".into()),
    };
    let status = resp.status();
    let headers = headers_of(&resp.headers());
    let body = match resp.consume() {
        Ok(b) => read_body(b)?,
        Err(()) => Vec::new(),
    };
    Ok(Response {
        status,
        headers,
        body,
    })
}
