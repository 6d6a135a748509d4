//! The guest contract, the same ops in every language (contract-python, contract-js,
//! contract-c): computed rules answered alike by any instance (`describe` runs on the first
//! one only), a read that spins past its deadline (its instance is dropped), computed write
//! rules and computed recache lists, a recache whose call lacks an argument (skipped, as the
//! host skips it), and one op that declares no params (`cachelet check` warns about it).

use cachelet_guest::prelude::*;

fn define(p: &mut Policy) {
    p.name("contract").version("0.1.0");
    p.read("get_item")
        .params(["item_id"])
        .key("item:{item_id}")
        .ttl(60);
    p.read("get_computed").params(["id"]).rule_with(|a| {
        Ok(Some(
            ReadRule::new(a.render("computed:{id}")?)
                .tags(["computed"])
                .ttl(60),
        ))
    });
    p.read("spin").params(["id"]).rule_with(|_| {
        let mut x: u64 = 0;
        loop {
            x = std::hint::black_box(x.wrapping_add(1));
        }
    });
    // The same write twice: rendered by the host, and computed by the guest (a computed tag
    // makes it dynamic). A call without `id` skips the second recache in both.
    p.write("update_static")
        .params(["item_id", "id"])
        .tags(["item:{item_id}"])
        .recache(recache("get_item").include(["item_id"]))
        .recache(recache("get_computed").include(["id"]));
    p.write("update_dynamic")
        .params(["item_id", "id"])
        .tags(["item:{item_id}"])
        .tags_with(|_| Ok(vec!["items".to_string()]))
        .recache(recache("get_item").include(["item_id"]))
        .recache(recache("get_computed").include(["id"]));
    // The whole write rule computed: none without an item.
    p.write("update_computed")
        .params(["item_id"])
        .rule_with(|a| {
            let Some(id) = a.get("item_id") else {
                return Ok(None);
            };
            Ok(Some(
                WriteRule::new()
                    .invalidate([a.render("item:{item_id}")?])
                    .recache(Recache::new("get_item").arg("item_id", id.clone())),
            ))
        });
    // Declared tags, and reads to warm computed per call.
    p.write("update_recache_with")
        .params(["item_id"])
        .tags(["items"])
        .recache_with(|a| {
            Ok(vec![
                Recache::new("get_item").arg("item_id", a.value("item_id")?.clone())
            ])
        });
    // Constants of every kind, added to a recache.
    p.write("update_extras")
        .params(["item_id"])
        .tags(["items"])
        .recache(recache("get_item").include(["item_id"]).extra([
            ("f", Value::Float(0.5)),
            ("n", Value::Null),
            ("t", Value::from("a:b:c")),
            ("j", Value::Json("{\"a\":1}".into())),
        ]));
    // No params: the host cannot check `{id}`; `cachelet check` warns.
    p.read("undeclared").key("undeclared:{id}");
}

cachelet_guest::export_policy!(define);
