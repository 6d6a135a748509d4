//! Host bindings of the `cachelet:policy/cache-policy` world.
//!
//! Calls are asynchronous both ways: WASI's streams (a guest printing a panic message, say)
//! never block a thread of the caller's tokio runtime, and the `store` import awaits the
//! backend (Redis) instead of blocking.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "cache-policy",
    imports: { default: async },
    exports: { default: async },
});
