//! tmp
#[allow(missing_docs)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "wit",
        world: "cache-policy",
        pub_export_macro: true,
        export_macro_name: "__export_cache_policy",
        default_bindings_module: "cachelet_guest::bindings",
        additional_derives: [PartialEq],
        debug: true,
    });
}
