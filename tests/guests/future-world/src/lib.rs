//! Exports `cachelet:policy/policy@0.3.0`: the host (0.2.0) must refuse it by name.

wit_bindgen::generate!({
    inline: "
        package cachelet:policy@0.3.0;
        interface policy {
            describe: func() -> string;
        }
        world cache-policy { export policy; }
    ",
});

struct Future;

impl exports::cachelet::policy::policy::Guest for Future {
    fn describe() -> String {
        "from the future".into()
    }
}

export!(Future);
