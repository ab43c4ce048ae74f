/* Op-test entry of the structure loss (see op_runner.h).
 *   structure_loss  [logits (B,1,H,W), target (B,1,H,W)]
 *                   -> [loss (B), saved (B*(H*W + 4)): the weight map [B, H*W], then per
 *                   image (sum w, sum w*bce, sum w*p*y, sum w*(p+y)) [B, 4]];
 *                   backward [logits, target, dloss (B)]
 *                   -> [dlogits, zeros (the target gets no gradient)] */
#include "op_runner.h"

static cx_status run_structure_loss(cx_op_run *r) {
    cx_backend *be = r->be;
    CX_TRY(cx_run_args(r, 0, 0));
    const cx_op_call *c = r->call;
    CX_TRY(cx_run_rank(r, 0, 4));
    CX_TRY(cx_run_rank(r, 1, 4));
    const int64_t *x = c->in_shape[0], *t = c->in_shape[1];
    if (x[0] < 1 || x[1] != 1 || x[2] < 1 || x[3] < 1)
        return cx_fail(CX_EINVAL, "%s: logits must be (B,1,H,W) with B,H,W >= 1, got "
                       "(%lld,%lld,%lld,%lld)", r->op, (long long)x[0], (long long)x[1],
                       (long long)x[2], (long long)x[3]);
    for (int d = 0; d < 4; d++)
        if (t[d] != x[d])
            return cx_fail(CX_EINVAL, "%s: target must have the shape of logits", r->op);
    int batch = 0, h = 0, w = 0;
    CX_TRY(cx_run_int(r, x[0], 1, "batch", &batch));
    CX_TRY(cx_run_int(r, x[2], 1, "h", &h));
    CX_TRY(cx_run_int(r, x[3], 1, "w", &w));
    size_t n_saved = cx_structure_loss_saved_floats(batch, h, w);
    const float *logits = NULL, *target = NULL, *dloss = NULL;
    float *loss = NULL, *saved = NULL, *dlogits = NULL;
    CX_TRY(cx_run_input(r, 0, &logits));
    CX_TRY(cx_run_input(r, 1, &target));
    if (!c->backward) {
        int64_t loss_shape[1] = {batch}, saved_shape[1] = {(int64_t)n_saved};
        CX_TRY(cx_run_output(r, 1, loss_shape, NULL, &loss));
        CX_TRY(cx_run_output(r, 1, saved_shape, NULL, &saved));
        be->structure_loss_forward(be, batch, h, w, logits, target, loss, saved);
        return CX_OK;
    }
    if (c->in_ndim[r->dy_base] != 1)
        return cx_fail(CX_EINVAL, "%s: dloss must have %d entries", r->op, batch);
    CX_TRY(cx_run_dy(r, 0, (size_t)batch, &dloss));
    CX_TRY(cx_run_scratch(r, (size_t)batch, &loss));
    CX_TRY(cx_run_scratch(r, n_saved, &saved));
    CX_TRY(cx_run_gradient(r, 0, &dlogits));
    CX_TRY(cx_run_no_gradient(r, 1));
    be->structure_loss_forward(be, batch, h, w, logits, target, loss, saved);
    be->structure_loss_backward(be, batch, h, w, logits, target, saved, dloss, dlogits);
    return CX_OK;
}

#define OP CX_RUN_OP
const cx_op_entry cx_run_entries_loss[] = {
    {"structure_loss", 1, 1, 2, 2, OP(structure_loss_forward),
     OP(structure_loss_forward) | OP(structure_loss_backward), 0, run_structure_loss},
    {NULL, 0, 0, 0, 0, 0, 0, 0, NULL},
};
