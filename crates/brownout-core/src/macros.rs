/// Implements `get_ref`, `get_mut` and `into_inner` for a service wrapping `inner`.
///
/// Internal to the brownout crates; not part of the public API.
///
/// Bounds a type parameter must carry (because the struct declares them) go in a `where`
/// clause: `impl_inner_access!(FleetRateLimit<S, X> where X: KeySpace)`.
#[doc(hidden)]
#[macro_export]
macro_rules! impl_inner_access {
    ($service:ident < $($param:ident),+ >) => {
        $crate::impl_inner_access!($service<$($param),+> where);
    };
    ($service:ident < $($param:ident),+ > where $($bound:tt)*) => {
        impl<$($param),+> $service<$($param),+> where $($bound)* {
            /// A reference to the inner service.
            pub fn get_ref(&self) -> &S {
                &self.inner
            }

            /// A mutable reference to the inner service.
            pub fn get_mut(&mut self) -> &mut S {
                &mut self.inner
            }

            /// Consumes this service, returning the inner one.
            pub fn into_inner(self) -> S {
                self.inner
            }
        }
    };
}
