//! Cross-origin requests (CORS) for the API and the embedded object store: a browser page on
//! another origin may create jobs, upload to presigned URLs and play results when its origin
//! is allowed (`[ingest] cors_origins`; `*` allows any). Preflights are answered here; actual
//! responses get `Access-Control-Allow-Origin` and the headers players and uploaders read.
//!
//! `*` is a safe default for tcoder: the API takes a bearer key (no cookies a page could
//! borrow), the store's writes need a signature, and its outputs are public anyway.

use hyper::http::{HeaderMap, HeaderValue, Method, header};

/// The allowed origins.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cors {
    any: bool,
    origins: Vec<String>,
}

/// Methods a page may use.
const METHODS: &str = "GET, HEAD, POST, PUT, DELETE, OPTIONS";
/// Response headers a page may read (uploads read the ETag; players read ranges and lengths).
const EXPOSED: &str =
    "ETag, Content-Length, Content-Range, Content-Type, Accept-Ranges, Location, Idempotency-Key";
/// How long a browser may cache a preflight answer (seconds).
const MAX_AGE: &str = "600";

impl Cors {
    /// From the configured list: exact origins (`https://app.example`), or `*`.
    pub fn new(origins: &[String]) -> Cors {
        Cors {
            any: origins.iter().any(|o| o == "*"),
            origins: origins
                .iter()
                .filter(|o| *o != "*")
                .map(|o| o.trim_end_matches('/').to_owned())
                .collect(),
        }
    }

    /// The `Access-Control-Allow-Origin` value for a request from `origin`, if allowed.
    fn allow(&self, origin: Option<&HeaderValue>) -> Option<HeaderValue> {
        let origin = origin?;
        if self.any {
            return Some(HeaderValue::from_static("*"));
        }
        let text = origin.to_str().ok()?;
        self.origins.iter().any(|o| o == text).then(|| origin.clone())
    }

    /// Whether `method` with `headers` is a CORS preflight.
    pub fn is_preflight(method: &Method, headers: &HeaderMap) -> bool {
        method == Method::OPTIONS
            && headers.contains_key(header::ORIGIN)
            && headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
    }

    /// The headers answering a preflight (none when the origin is not allowed: the browser
    /// then refuses the request).
    pub fn preflight_headers(&self, request: &HeaderMap) -> HeaderMap {
        let mut headers = HeaderMap::new();
        let Some(allowed) = self.allow(request.get(header::ORIGIN)) else { return headers };
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allowed);
        headers.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static(METHODS));
        // Whatever the page asks to send (Authorization, Content-Type, x-amz-*, Range, …).
        let asked = request
            .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
            .cloned()
            .unwrap_or_else(|| HeaderValue::from_static("*"));
        headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, asked);
        headers.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static(MAX_AGE));
        headers.insert(header::VARY, HeaderValue::from_static("Origin"));
        headers
    }

    /// Adds the CORS headers of an actual (non-preflight) response to `response`.
    pub fn decorate(&self, request: &HeaderMap, response: &mut HeaderMap) {
        if let Some(allowed) = self.allow(request.get(header::ORIGIN)) {
            response.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allowed);
            response
                .insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, HeaderValue::from_static(EXPOSED));
            response.append(header::VARY, HeaderValue::from_static("Origin"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(origin: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::ORIGIN, HeaderValue::from_str(origin).unwrap());
        headers.insert(header::ACCESS_CONTROL_REQUEST_METHOD, HeaderValue::from_static("PUT"));
        headers.insert(
            header::ACCESS_CONTROL_REQUEST_HEADERS,
            HeaderValue::from_static("content-type"),
        );
        headers
    }

    #[test]
    fn only_configured_origins_are_allowed_and_echoed() {
        let cors = Cors::new(&["https://app.example/".to_owned()]);
        let answer = cors.preflight_headers(&request("https://app.example"));
        assert_eq!(answer[header::ACCESS_CONTROL_ALLOW_ORIGIN], "https://app.example");
        assert_eq!(answer[header::ACCESS_CONTROL_ALLOW_HEADERS], "content-type");
        assert!(cors.preflight_headers(&request("https://evil.example")).is_empty());
        let mut response = HeaderMap::new();
        cors.decorate(&request("https://evil.example"), &mut response);
        assert!(response.is_empty());
        let any = Cors::new(&["*".to_owned()]);
        assert_eq!(
            any.preflight_headers(&request("https://x.example"))
                [header::ACCESS_CONTROL_ALLOW_ORIGIN],
            "*"
        );
        assert!(Cors::new(&[]).preflight_headers(&request("https://x.example")).is_empty());
        assert!(Cors::is_preflight(&Method::OPTIONS, &request("https://x.example")));
        assert!(!Cors::is_preflight(&Method::GET, &request("https://x.example")));
    }
}
