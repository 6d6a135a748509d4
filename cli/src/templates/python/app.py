"""The {{name}} cache policy. Build: `./build.sh` (-> {{name}}.wasm)."""

from cachelet_policy import CachePolicy, recache

policy = CachePolicy("{{name}}", "0.1.0")

# Every op declares its params: a misspelled placeholder is then refused at load.

# A read: cached under item:{item_id} for 300 s, tagged with its key.
policy.read("get_item", params=["item_id"], key="item:{item_id}", ttl=300)

# A write: invalidates what get_item cached for that item, then warms it again.
policy.write("update_item", params=["item_id"], tags=["item:{item_id}"],
             recache=[recache("get_item", include=["item_id"])])

# The class componentize-py binds to the world's `policy` export.
Policy = policy.export()
