//! Classifying http requests from headers, routes and methods.

use std::fmt;
use std::sync::Arc;

use brownout_core::{Classify, Priority};
use http::{HeaderName, Method, Request};

/// RFC 9218's `priority` header, parsed once (a `&str` name is parsed on every lookup).
const RFC9218_PRIORITY: HeaderName = HeaderName::from_static("priority");

#[derive(Clone)]
enum Rule {
    Header(HeaderName),
    Rfc9218,
    Exact(String, Priority),
    Prefix(String, Priority),
    Method(Method, Priority),
}

/// Decides the class of an http request from ordered rules; the first rule that matches wins,
/// malformed header values never match (they fall through to the next rule, then the default).
///
/// `HttpClassifier::default()` reads `x-priority` (`critical|high|medium|low|background|0-4`),
/// then the RFC 9218 `priority` header (`u=0..7`), else Medium.
///
/// Client-sent headers can be capped with [`max_from_headers`](HttpClassifier::max_from_headers)
/// so that a public client cannot promote itself to Critical; route and method rules are
/// the server's own and are never capped.
///
/// ```
/// use brownout::http::HttpClassifier;
/// use brownout_core::{Classify, Priority};
///
/// let classify = HttpClassifier::new()
///     .route("/health", Priority::Critical)
///     .route_prefix("/batch/", Priority::Low)
///     .header("x-priority")
///     .rfc9218()
///     .method(http::Method::OPTIONS, Priority::Background)
///     .max_from_headers(Priority::High)
///     .default_priority(Priority::Medium);
///
/// let req = |path: &str, header: &str| {
///     http::Request::get(path).header("x-priority", header).body(()).unwrap()
/// };
/// assert_eq!(classify.classify(&req("/health", "low")), Priority::Critical);
/// assert_eq!(classify.classify(&req("/batch/run", "high")), Priority::Low);
/// assert_eq!(classify.classify(&req("/search", "background")), Priority::Background);
/// assert_eq!(classify.classify(&req("/search", "critical")), Priority::High); // capped
/// assert_eq!(classify.classify(&req("/search", "garbage")), Priority::Medium); // malformed
/// ```
#[derive(Clone)]
pub struct HttpClassifier {
    rules: Arc<[Rule]>,
    default: Priority,
    header_cap: Priority,
}

impl Default for HttpClassifier {
    fn default() -> Self {
        HttpClassifier::new().header("x-priority").rfc9218()
    }
}

impl HttpClassifier {
    /// A classifier with no rules: every request gets the default class (Medium).
    pub fn new() -> HttpClassifier {
        HttpClassifier {
            rules: Arc::from(Vec::new()),
            default: Priority::Medium,
            header_cap: Priority::Critical,
        }
    }

    fn push(mut self, rule: Rule) -> Self {
        let mut rules = self.rules.to_vec();
        rules.push(rule);
        self.rules = Arc::from(rules);
        self
    }

    /// Reads a class name or rank digit from header `name` (e.g. `x-priority`).
    ///
    /// # Panics
    ///
    /// When `name` is not a valid header name (a programming error caught at start-up).
    #[must_use]
    pub fn header(self, name: &str) -> Self {
        let name = HeaderName::try_from(name).expect("HttpClassifier::header: invalid header name");
        self.push(Rule::Header(name))
    }

    /// Reads the RFC 9218 `priority` header's urgency (`u=0` … `u=7`).
    #[must_use]
    pub fn rfc9218(self) -> Self {
        self.push(Rule::Rfc9218)
    }

    /// Requests whose path is exactly `path` get `priority`.
    #[must_use]
    pub fn route(self, path: impl Into<String>, priority: Priority) -> Self {
        self.push(Rule::Exact(path.into(), priority))
    }

    /// Requests whose path starts with `prefix` get `priority`.
    #[must_use]
    pub fn route_prefix(self, prefix: impl Into<String>, priority: Priority) -> Self {
        self.push(Rule::Prefix(prefix.into(), priority))
    }

    /// Requests with method `method` get `priority`.
    #[must_use]
    pub fn method(self, method: Method, priority: Priority) -> Self {
        self.push(Rule::Method(method, priority))
    }

    /// The class of requests no rule matches (Medium unless set).
    #[must_use]
    pub fn default_priority(mut self, priority: Priority) -> Self {
        self.default = priority;
        self
    }

    /// Caps what client headers can claim: a header asking for more than `cap` gets `cap`.
    #[must_use]
    pub fn max_from_headers(mut self, cap: Priority) -> Self {
        self.header_cap = cap;
        self
    }

    fn capped(&self, claimed: Priority) -> Priority {
        claimed.min(self.header_cap)
    }
}

impl<B> Classify<Request<B>> for HttpClassifier {
    fn classify(&self, req: &Request<B>) -> Priority {
        for rule in self.rules.iter() {
            let found = match rule {
                Rule::Header(name) => req
                    .headers()
                    .get(name)
                    .and_then(|value| Priority::from_bytes(value.as_bytes()))
                    .map(|p| self.capped(p)),
                Rule::Rfc9218 => req
                    .headers()
                    .get(RFC9218_PRIORITY)
                    .and_then(|v| v.to_str().ok())
                    .and_then(Priority::from_rfc9218)
                    .map(|p| self.capped(p)),
                Rule::Exact(path, p) => (req.uri().path() == path).then_some(*p),
                Rule::Prefix(prefix, p) => {
                    req.uri().path().starts_with(prefix.as_str()).then_some(*p)
                }
                Rule::Method(method, p) => (req.method() == method).then_some(*p),
            };
            if let Some(priority) = found {
                return priority;
            }
        }
        self.default
    }
}

impl fmt::Debug for HttpClassifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpClassifier")
            .field("rules", &self.rules.len())
            .field("default", &self.default)
            .field("header_cap", &self.header_cap)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn with(name: &str, value: &[u8]) -> Request<()> {
        let mut req = Request::new(());
        if let Ok(v) = http::HeaderValue::from_bytes(value) {
            req.headers_mut()
                .insert(HeaderName::try_from(name).unwrap(), v);
        }
        req
    }

    #[test]
    fn default_reads_x_priority_then_rfc9218() {
        let c = HttpClassifier::default();
        assert_eq!(c.classify(&with("x-priority", b"LOW")), Priority::Low);
        assert_eq!(c.classify(&with("x-priority", b"0")), Priority::Critical);
        assert_eq!(
            c.classify(&with("priority", b"u=6, i")),
            Priority::Background
        );
        assert_eq!(c.classify(&with("priority", b"u=9")), Priority::Medium);
        assert_eq!(
            c.classify(&with("x-priority", b"\xff\xfe")),
            Priority::Medium
        );
        assert_eq!(c.classify(&Request::new(())), Priority::Medium);
    }

    proptest! {
        // RELIABILITY #25: malformed x-priority / priority headers never panic.
        #[test]
        fn rel_25_malformed_headers_fall_back(bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
            let c = HttpClassifier::default();
            let p1 = c.classify(&with("x-priority", &bytes));
            let p2 = c.classify(&with("priority", &bytes));
            if std::str::from_utf8(&bytes).ok().and_then(|s| s.parse::<Priority>().ok()).is_none() {
                prop_assert_eq!(p1, Priority::Medium);
            }
            let _ = p2;
        }
    }
}
