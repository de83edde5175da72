/// Implements `get_ref`, `get_mut` and `into_inner` for a service wrapping `inner`.
///
/// Internal to the brownout crates; not part of the public API.
#[doc(hidden)]
#[macro_export]
macro_rules! impl_inner_access {
    ($service:ident < $($param:ident),+ >) => {
        impl<$($param),+> $service<$($param),+> {
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
