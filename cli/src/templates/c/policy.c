/* The {{name}} cache policy. Build: `./build.sh` (-> {{name}}.wasm). */
#include "cachelet_policy.h"

/* Every op declares its params: a misspelled placeholder is then refused at load. */
const cl_op CL_OPS[] = {
    /* A read: cached under item:{item_id} for 300 s, tagged with its key. */
    CL_READ("get_item", .params = CL_LIST("item_id"), .key = "item:{item_id}",
            .ttl = CL_SECONDS(300)),
    /* A write: invalidates what get_item cached for that item, then warms it again. */
    CL_WRITE("update_item", .params = CL_LIST("item_id"), .invalidate = CL_LIST("item:{item_id}"),
             .recache = CL_RECACHES(CL_RECACHE("get_item", .include = CL_LIST("item_id")))),
    CL_END,
};

CL_POLICY("{{name}}", "0.1.0");
