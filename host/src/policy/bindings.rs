//! Host bindings of the `cachelet:policy/cache-policy` world.
//!
//! Exports are called asynchronously: WASI's streams (a guest printing a panic message, say)
//! then never block a thread of the caller's tokio runtime. The host's own imports are plain
//! synchronous functions.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "cache-policy",
    exports: { default: async },
});
