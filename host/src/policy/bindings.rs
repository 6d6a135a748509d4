//! Host bindings of the `cachelet:policy/cache-policy` world: its types and its imports.
//!
//! Only the `store` import is asynchronous (it awaits the backend, Redis, instead of blocking a
//! thread). Every other import answers at once, so a component that does not import `store`
//! is called without a fiber (see [`super::Policy`]). The exports are called through
//! [`super::calls`], with borrowed arguments.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "cache-policy",
    imports: { "cachelet:policy/store": async },
});
