//! Exports `cachelet:policy/policy@0.1.0`, the world before `describe` could refuse a
//! declaration: the host (0.2.0) must refuse it by name.

wit_bindgen::generate!({
    inline: "
        package cachelet:policy@0.1.0;
        interface policy {
            describe: func() -> string;
        }
        world cache-policy { export policy; }
    ",
});

struct Past;

impl exports::cachelet::policy::policy::Guest for Past {
    fn describe() -> String {
        "from the past".into()
    }
}

export!(Past);
