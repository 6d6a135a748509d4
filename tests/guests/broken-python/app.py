"""Every declaration mistake the SDKs refuse, one op each (the same ops as broken-rust):
`describe` must return them all and the host must not load it."""

from cachelet_policy import CachePolicy, recache

policy = CachePolicy("broken", "0.1.0")
policy.read("ok_read", key="ok:{id}")
policy.read("brace_key", key="user:{user_id")
policy.read("joined_key", key="org:{org_id}{user_id}")
policy.read("joined_tag", key="user:{user_id}", tags=["user:{user_id}", "org:{org_id}-{user_id}"])
policy.read("no_key", ttl=3)
policy.read("early", key="k", ttl=30, early_ttl=30)
policy.read("undeclared_param", key="k:{a}:{b}", params=["a"])
policy.read("bad_param", key="k:{a}", params=["a-b"])
policy.read("twice", key="a")
# The mistake that used to flush the namespace on every write.
policy.write("broken_tag_write", tags=["user:{user_id"])
policy.write("joined_write", tags=["t:{a}-{b}"])
policy.write("empty_write")
policy.write("recache_write", tags=["t"], recache=[recache("broken_tag_write")])
policy.write("bad_include", tags=["t"], recache=[recache("ok_read", include=["a-b"])])
policy.write("twice", tags=["a"])
# A read of another policy: not a mistake.
policy.write("elsewhere", tags=["t"], recache=[recache("get_user")])
# A misspelled placeholder, caught by the declared params.
policy.write("misspelled", params=["item_id"], tags=["item:{item_idd}"])


# A computed rule combined with a declared one.
@policy.read_rule("computed_read", key="k")
def computed_read(args):
    return None


@policy.write_rule("computed_write", recache=[recache("ok_read")])
def computed_write(args):
    return None


# What Rust's and C's compilers refuse, refused at load.
policy.read("string_tags", key="search:{q}", tags="search")
policy.read("unknown_option", key="k", tag=["t"])
policy.read("ttl_range", key="k", ttl=-1)
policy.read("early_range", key="k", ttl=60, early_ttl=-1)
policy.write("single_recache", tags=["t"], recache=recache("ok_read"))

Policy = policy.export()
