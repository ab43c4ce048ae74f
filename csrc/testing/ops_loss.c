/* Test wrappers for the loss ops (see op_call.h).
 *   "structure_loss"       [logits (B,1,H,W), target (B,1,H,W)] -> [loss (B)]
 *                          backward [logits, target, dloss (B)]
 *                          -> [dlogits, dtarget (zeros: the target has no gradient)]
 *   "structure_loss_sums"  the same inputs -> [sums (B,4)] (forward only): the per-image
 *                          (sum w, sum w*bce, sum w*p*y, sum w*(p+y)) kept in `saved` */
#include "op_call.h"
#include "../cpu/cpu_ops.h"

#include <stdlib.h>
#include <string.h>

static cx_status run_structure_loss(cx_op_call *call, const char *op, int want_sums) {
    if (want_sums && call->backward)
        return cx_fail(CX_EINVAL, "%s has no backward", op);
    CX_TRY(cx_op_expect_inputs(call, op, call->backward ? 3 : 2, 0, 0));
    CX_TRY(cx_op_expect_rank(call, op, 0, 4));
    CX_TRY(cx_op_expect_rank(call, op, 1, 4));
    const int64_t *x = call->in_shape[0], *t = call->in_shape[1];
    if (x[0] < 1 || x[1] != 1 || x[2] < 1 || x[3] < 1)
        return cx_fail(CX_EINVAL, "%s: logits must be (B,1,H,W) with B,H,W >= 1, got "
                       "(%lld,%lld,%lld,%lld)", op, (long long)x[0], (long long)x[1],
                       (long long)x[2], (long long)x[3]);
    for (int d = 0; d < 4; d++)
        if (t[d] != x[d])
            return cx_fail(CX_EINVAL, "%s: target must have the shape of logits", op);
    int batch = (int)x[0], h = (int)x[2], w = (int)x[3];
    if (call->backward) {
        CX_TRY(cx_op_expect_rank(call, op, 2, 1));
        if (call->in_shape[2][0] != batch)
            return cx_fail(CX_EINVAL, "%s: dloss must have %d entries", op, batch);
    }
    float *saved = malloc(cx_structure_loss_saved_floats(batch, h, w) * sizeof(float));
    float *loss = malloc((size_t)batch * sizeof(float));
    if (!saved || !loss) {
        free(saved);
        free(loss);
        return cx_fail(CX_ENOMEM, "%s: out of memory", op);
    }
    cx_backend *be = cx_backend_cpu();
    cx_status st = CX_OK;
    cpu_structure_loss_forward(be, batch, h, w, call->in[0], call->in[1], loss, saved);
    if (!call->backward) {
        int64_t shape[2] = {batch, 4};
        float *out = call->alloc_out(call, 0, want_sums ? 2 : 1, shape);
        if (!out)
            st = cx_fail(CX_ENOMEM, "%s: cannot allocate the output", op);
        else if (want_sums)
            memcpy(out, saved + (size_t)batch * h * w, (size_t)batch * 4 * sizeof(float));
        else
            memcpy(out, loss, (size_t)batch * sizeof(float));
    } else {
        float *dlogits = call->alloc_out(call, 0, 4, x);
        float *dtarget = dlogits ? call->alloc_out(call, 1, 4, t) : NULL;
        if (!dlogits || !dtarget)
            st = cx_fail(CX_ENOMEM, "%s: cannot allocate gradients", op);
        else
            cpu_structure_loss_backward(be, batch, h, w, call->in[0], call->in[1], saved,
                                        call->in[2], dlogits);
    }
    free(saved);
    free(loss);
    return st;
}

static cx_status op_structure_loss(cx_op_call *call) {
    return run_structure_loss(call, "structure_loss", 0);
}

static cx_status op_structure_loss_sums(cx_op_call *call) {
    return run_structure_loss(call, "structure_loss_sums", 1);
}

const cx_op_entry cx_op_entries_loss[] = {
    {"structure_loss", op_structure_loss},
    {"structure_loss_sums", op_structure_loss_sums},
    {NULL, NULL},
};
