//! Which answers count as "accepted by the server".

use brownout_core::LoadLevel;

use crate::classify::server_level;

/// What one answer says about the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Verdict {
    /// The server accepted the request (it was not refused for overload).
    pub accepted: bool,
    /// The load level the server reported with its answer, if any.
    pub level: Option<LoadLevel>,
}

/// Decides whether the server accepted a request.
///
/// Implemented for [`DefaultAccept`] (responses accepted, errors not), [`HttpAccept`] and
/// closures `Fn(&Result<Res, E>) -> Verdict`.
pub trait AcceptClassifier<Res, E> {
    /// The verdict for `result`.
    fn verdict(&self, result: &Result<Res, E>) -> Verdict;
}

impl<Res, E, F> AcceptClassifier<Res, E> for F
where
    F: Fn(&Result<Res, E>) -> Verdict,
{
    #[inline]
    fn verdict(&self, result: &Result<Res, E>) -> Verdict {
        self(result)
    }
}

/// Any response is an accept; any error (a `Rejected`, a refused connection) is not.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DefaultAccept;

impl<Res, E> AcceptClassifier<Res, E> for DefaultAccept {
    #[inline]
    fn verdict(&self, result: &Result<Res, E>) -> Verdict {
        Verdict {
            accepted: result.is_ok(),
            level: None,
        }
    }
}

/// For `http::Response`s: `503`, `429` and gRPC `UNAVAILABLE` (14) / `RESOURCE_EXHAUSTED`
/// (8) are not accepts, nor are errors; the `x-load-level` header is read as the server's
/// level (a level name or digit).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HttpAccept;

impl<B, E> AcceptClassifier<http::Response<B>, E> for HttpAccept {
    fn verdict(&self, result: &Result<http::Response<B>, E>) -> Verdict {
        let Ok(response) = result else {
            return Verdict::default();
        };
        let refused = matches!(response.status().as_u16(), 429 | 503)
            || matches!(
                response.headers().get("grpc-status").map(|v| v.as_bytes()),
                Some(b"8" | b"14")
            );
        Verdict {
            accepted: !refused,
            level: server_level(response.headers()),
        }
    }
}
