//! axum extractors for what [`DegradationLayer`](super::DegradationLayer) puts in requests.

use std::convert::Infallible;

use axum::extract::FromRequestParts;
use http::request::Parts;

use super::Degradation;
use brownout_core::{LoadLevel, WorkMode};

impl<S: Send + Sync> FromRequestParts<S> for Degradation {
    type Rejection = Infallible;

    /// The request's degradation, or full work at Normal when no `DegradationLayer` ran.
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(parts
            .extensions
            .get::<Degradation>()
            .cloned()
            .unwrap_or_else(|| Degradation::new(LoadLevel::Normal, WorkMode::Full)))
    }
}

/// The load level when the request arrived, as an axum extractor
/// (`async fn handler(CurrentLevel(level): CurrentLevel)`); Normal when no layer recorded it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CurrentLevel(pub LoadLevel);

impl<S: Send + Sync> FromRequestParts<S> for CurrentLevel {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(CurrentLevel(
            parts
                .extensions
                .get::<LoadLevel>()
                .copied()
                .unwrap_or_default(),
        ))
    }
}
