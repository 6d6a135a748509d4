"""The guest contract, the same ops as contract-rust (see its src/lib.rs)."""

from cachelet_policy import CachePolicy, recache, recache_call

policy = CachePolicy("contract", "0.1.0")
policy.read("get_item", params=["item_id"], key="item:{item_id}", ttl=60)


@policy.read_rule("get_computed", params=["id"])
def get_computed(args):
    return policy.rule(args.render("computed:{id}"), tags=["computed"], ttl=60)


@policy.read_rule("spin", params=["id"])
def spin(args):
    x = 0
    while True:
        x += 1


policy.write("update_static", params=["item_id", "id"], tags=["item:{item_id}"],
             recache=[recache("get_item", include=["item_id"]),
                      recache("get_computed", include=["id"])])
policy.write("update_dynamic", params=["item_id", "id"], tags=["item:{item_id}"],
             tags_with=lambda args: ["items"],
             recache=[recache("get_item", include=["item_id"]),
                      recache("get_computed", include=["id"])])


@policy.write_rule("update_computed", params=["item_id"])
def update_computed(args):
    if "item_id" not in args:
        return None
    return policy.invalidate([args.render("item:{item_id}")],
                             recache=[recache_call("get_item", {"item_id": args["item_id"]})])


policy.write("update_recache_with", params=["item_id"], tags=["items"],
             recache_with=lambda args: [recache_call("get_item", {"item_id": args["item_id"]})])
# Constants of every kind, added to a recache.
policy.write("update_extras", params=["item_id"], tags=["items"],
             recache=[recache("get_item", include=["item_id"],
                              extra={"f": 0.5, "n": None, "t": "a:b:c", "j": {"a": 1}})])
# No params: the host cannot check `{id}`; `cachelet check` warns.
policy.read("undeclared", key="undeclared:{id}")

Policy = policy.export()
