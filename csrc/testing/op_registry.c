/* Registry of the per-family op tables (see op_call.h). */
#include "op_call.h"

#include <string.h>

static const cx_op_entry *const op_tables[] = {
    cx_op_entries_conv,      cx_op_entries_linear, cx_op_entries_norm,
    cx_op_entries_pointwise, cx_op_entries_pool,   cx_op_entries_attention,
    cx_op_entries_loss,
};

const cx_op_entry *cx_op_find(const char *name) {
    for (size_t t = 0; t < sizeof op_tables / sizeof op_tables[0]; t++)
        for (const cx_op_entry *e = op_tables[t]; e->name; e++)
            if (strcmp(e->name, name) == 0)
                return e;
    return NULL;
}

void cx_op_each(void (*fn)(const char *name, void *ctx), void *ctx) {
    for (size_t t = 0; t < sizeof op_tables / sizeof op_tables[0]; t++)
        for (const cx_op_entry *e = op_tables[t]; e->name; e++)
            fn(e->name, ctx);
}

cx_status cx_op_expect_inputs(const cx_op_call *call, const char *op, int n_in, int n_iargs,
                              int n_fargs) {
    if (call->n_in != n_in)
        return cx_fail(CX_EINVAL, "%s %s takes %d input arrays, got %d", op,
                       call->backward ? "backward" : "forward", n_in, call->n_in);
    if (call->n_iargs != n_iargs)
        return cx_fail(CX_EINVAL, "%s takes %d integer arguments, got %d", op, n_iargs,
                       call->n_iargs);
    if (call->n_fargs != n_fargs)
        return cx_fail(CX_EINVAL, "%s takes %d float arguments, got %d", op, n_fargs,
                       call->n_fargs);
    return CX_OK;
}

cx_status cx_op_expect_rank(const cx_op_call *call, const char *op, int i, int ndim) {
    if (call->in_ndim[i] != ndim)
        return cx_fail(CX_EINVAL, "%s: input %d has rank %d, expected %d", op, i,
                       call->in_ndim[i], ndim);
    return CX_OK;
}

int64_t cx_op_numel(const cx_op_call *call, int i) {
    int64_t n = 1;
    for (int d = 0; d < call->in_ndim[i]; d++)
        n *= call->in_shape[i][d];
    return n;
}
