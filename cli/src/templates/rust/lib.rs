//! The {{name}} cache policy. Build: `./build.sh` (-> {{name}}.wasm).

use cachelet_guest::prelude::*;

fn define(p: &mut Policy) {
    p.name("{{name}}").version("0.1.0");

    // Every op declares its params: a misspelled placeholder is then refused at load.

    // A read: cached under item:{item_id} for 300 s, tagged with its key.
    p.read("get_item")
        .params(["item_id"])
        .key("item:{item_id}")
        .ttl(300);

    // A write: invalidates what get_item cached for that item, then warms it again.
    p.write("update_item")
        .params(["item_id"])
        .tags(["item:{item_id}"])
        .recache(recache("get_item").include(["item_id"]));
}

cachelet_guest::export_policy!(define);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn get_item_is_keyed_by_its_id() {
        let policy = Compiled::new(define);
        let call = [("item_id".to_string(), Value::Integer(42))];
        let rule = policy.read("get_item", &call).unwrap().unwrap();
        assert_eq!(rule.key, "item:42");
    }
}
