//! [`ShutdownGuardLayer`]: wraps services in a [`ShutdownGuard`].

use std::fmt;
use std::sync::Arc;

use tower_layer::Layer;

use crate::handle::Shared;
use crate::{Shutdown, ShutdownGuard};

/// Wraps services in a [`ShutdownGuard`] tied to one [`Shutdown`] handle.
///
/// Get one from [`Shutdown::layer`]. Every service it builds (and every clone of them)
/// shares the handle's counters and phase.
#[derive(Clone)]
pub struct ShutdownGuardLayer {
    shared: Arc<Shared>,
}

impl ShutdownGuardLayer {
    /// A layer guarded by `shutdown`.
    pub fn new(shutdown: &Shutdown) -> ShutdownGuardLayer {
        ShutdownGuardLayer {
            shared: shutdown.shared().clone(),
        }
    }
}

impl<S> Layer<S> for ShutdownGuardLayer {
    type Service = ShutdownGuard<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ShutdownGuard::from_shared(inner, self.shared.clone())
    }
}

impl fmt::Debug for ShutdownGuardLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShutdownGuardLayer").finish_non_exhaustive()
    }
}
