//! Every declaration mistake the SDKs refuse, one op each (the same ops in broken-python,
//! broken-js and broken-c): `describe` must return them all and the host must not load it.

use cachelet_guest::prelude::*;

fn define(p: &mut Policy) {
    p.name("broken").version("0.1.0");
    p.read("ok_read").key("ok:{id}");
    p.read("brace_key").key("user:{user_id");
    p.read("joined_key").key("org:{org_id}{user_id}");
    p.read("joined_tag")
        .key("user:{user_id}")
        .tags(["user:{user_id}", "org:{org_id}-{user_id}"]);
    p.read("no_key").ttl(3);
    p.read("early").key("k").ttl(30).early_ttl(30);
    p.read("undeclared_param").key("k:{a}:{b}").params(["a"]);
    p.read("bad_param").key("k:{a}").params(["a-b"]);
    p.read("twice").key("a");
    // The mistake that used to flush the namespace on every write.
    p.write("broken_tag_write").tags(["user:{user_id"]);
    p.write("joined_write").tags(["t:{a}-{b}"]);
    p.write("empty_write");
    p.write("recache_write")
        .tags(["t"])
        .recache(recache("broken_tag_write"));
    p.write("bad_include")
        .tags(["t"])
        .recache(recache("ok_read").include(["a-b"]));
    p.write("twice").tags(["a"]);
    // A read of another policy: not a mistake.
    p.write("elsewhere")
        .tags(["t"])
        .recache(recache("get_user"));
    // A misspelled placeholder, caught by the declared params.
    p.write("misspelled")
        .params(["item_id"])
        .tags(["item:{item_idd}"]);
    // A computed rule combined with a declared one.
    p.read("computed_read").key("k").rule_with(|_| Ok(None));
    p.write("computed_write")
        .recache(recache("ok_read"))
        .rule_with(|_| Ok(None));
    // Rust's types refuse the other mistakes at build time (see the SDK's docs).
}

cachelet_guest::export_policy!(define);
