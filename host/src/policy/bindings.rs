//! Host bindings of the `cachelet:policy/cache-policy` world (synchronous calls).

wasmtime::component::bindgen!({
    path: "../wit",
    world: "cache-policy",
});
