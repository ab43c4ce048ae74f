/* What the op table knows about itself: op names and the check that a backend
 * implements every op a model needs. */
#include "ops.h"

#include <stdio.h>

static const char *const op_names[CX_OP_COUNT] = {
#define CX_OP(name, params) #name,
#include "op_list.h"
#undef CX_OP
};

const char *cx_op_name(cx_op_id op) {
    return op >= 0 && op < CX_OP_COUNT ? op_names[op] : NULL;
}

cx_status cx_backend_check_ops(const cx_backend *be, const cx_op_set *needed, const char *what) {
    char missing[1536];
    size_t len = 0;
    int n_missing = 0, n_needed = 0;
    missing[0] = '\0';
    for (int op = 0; op < CX_OP_COUNT; op++) {
        if (!needed->has[op])
            continue;
        n_needed++;
        if (be->supports(be, (cx_op_id)op))
            continue;
        n_missing++;
        if (len < sizeof missing) {
            int n = snprintf(missing + len, sizeof missing - len, "%s%s", n_missing > 1 ? ", " : "",
                             op_names[op]);
            len += n > 0 ? (size_t)n : 0;
        }
    }
    if (!n_missing)
        return CX_OK;
    return cx_fail(CX_ERUNTIME, "the %s backend cannot run %s: it does not implement %d of the "
                   "%d ops it needs: %s", be->name, what, n_missing, n_needed, missing);
}
