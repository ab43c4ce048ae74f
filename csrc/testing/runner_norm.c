/* Op-test entries of the norm ops (see op_runner.h). Backward calls rerun the forward on
 * the backend to fill `saved`.
 *   layernorm    [x (..., cols), weight (cols), bias (cols)] fargs (eps)
 *                -> [y, saved (2, rows): mean, 1/std];   backward [x, weight, bias, dy]
 *                -> [dx, dweight, dbias]
 *   layernorm2d  [x (B, C, ...spatial), weight (C), bias (C)] fargs (eps)
 *                -> [y, saved (2, B*hw)];  backward like layernorm
 *   l2norm       [x (..., cols)] fargs (eps) -> [y, saved (rows): the norms];
 *                backward [x, dy] -> [dx] */
#include "op_runner.h"

/* layernorm (is_2d 0): rows x cols over the last dim; layernorm2d: batch x channels x hw. */
static cx_status layernorm_family(cx_op_run *r, int is_2d) {
    cx_backend *be = r->be;
    CX_TRY(cx_run_args(r, 0, 1));
    const cx_op_call *c = r->call;
    int64_t numel = cx_run_numel(r, 0);
    int outer = 0, inner = 0, hw = 1;
    if (is_2d) {
        if (c->in_ndim[0] != 3 && c->in_ndim[0] != 4)
            return cx_fail(CX_EINVAL, "%s: x must be (B,C,H,W) or (B,C,HW), got rank %d", r->op,
                           c->in_ndim[0]);
        CX_TRY(cx_run_int(r, c->in_shape[0][0], 1, "batch", &outer));
        CX_TRY(cx_run_int(r, c->in_shape[0][1], 1, "channels", &inner));
        CX_TRY(cx_run_int(r, numel / ((int64_t)outer * inner), 1, "hw", &hw));
    } else {
        if (c->in_ndim[0] < 1)
            return cx_fail(CX_EINVAL, "%s: x must have at least one dimension", r->op);
        CX_TRY(cx_run_int(r, c->in_shape[0][c->in_ndim[0] - 1], 1, "cols", &inner));
        CX_TRY(cx_run_int(r, numel / inner, 0, "rows", &outer));
    }
    CX_TRY(cx_run_vector(r, 1, inner));
    CX_TRY(cx_run_vector(r, 2, inner));
    float eps = (float)c->fargs[0];
    size_t n_saved = is_2d ? cx_layernorm2d_saved_floats(outer, hw) : cx_layernorm_saved_floats(outer);
    const float *x = NULL, *w = NULL, *b = NULL, *dy = NULL;
    float *y = NULL, *saved = NULL, *dx = NULL, *dw = NULL, *db = NULL;
    CX_TRY(cx_run_input(r, 0, &x));
    CX_TRY(cx_run_input(r, 1, &w));
    CX_TRY(cx_run_input(r, 2, &b));
    if (!c->backward) {
        int64_t saved_shape[2] = {2, (int64_t)n_saved / 2};
        CX_TRY(cx_run_output(r, c->in_ndim[0], c->in_shape[0], NULL, &y));
        CX_TRY(cx_run_output(r, 2, saved_shape, NULL, &saved));
    } else {
        CX_TRY(cx_run_dy(r, 0, (size_t)numel, &dy));
        CX_TRY(cx_run_scratch(r, (size_t)numel, &y));
        CX_TRY(cx_run_scratch(r, n_saved, &saved));
        CX_TRY(cx_run_gradient(r, 0, &dx));
        CX_TRY(cx_run_gradient(r, 1, &dw));
        CX_TRY(cx_run_gradient(r, 2, &db));
    }
    if (!numel)
        return CX_OK;
    if (is_2d)
        be->layernorm2d_forward(be, outer, inner, hw, eps, x, w, b, y, saved);
    else
        be->layernorm_forward(be, outer, inner, eps, x, w, b, y, saved);
    if (c->backward) {
        if (is_2d)
            be->layernorm2d_backward(be, outer, inner, hw, x, w, saved, dy, dx, dw, db);
        else
            be->layernorm_backward(be, outer, inner, x, w, saved, dy, dx, dw, db);
    }
    return CX_OK;
}
static cx_status run_layernorm(cx_op_run *r) { return layernorm_family(r, 0); }
static cx_status run_layernorm2d(cx_op_run *r) { return layernorm_family(r, 1); }

static cx_status run_l2norm(cx_op_run *r) {
    cx_backend *be = r->be;
    CX_TRY(cx_run_args(r, 0, 1));
    const cx_op_call *c = r->call;
    if (c->in_ndim[0] < 1)
        return cx_fail(CX_EINVAL, "%s: x must have at least one dimension", r->op);
    int64_t numel = cx_run_numel(r, 0);
    int rows = 0, cols = 0;
    CX_TRY(cx_run_int(r, c->in_shape[0][c->in_ndim[0] - 1], 1, "cols", &cols));
    CX_TRY(cx_run_int(r, numel / cols, 0, "rows", &rows));
    float eps = (float)c->fargs[0];
    size_t n_saved = cx_l2norm_saved_floats(rows);
    const float *x = NULL, *dy = NULL;
    float *y = NULL, *saved = NULL, *dx = NULL;
    CX_TRY(cx_run_input(r, 0, &x));
    if (!c->backward) {
        int64_t saved_shape[1] = {(int64_t)n_saved};
        CX_TRY(cx_run_output(r, c->in_ndim[0], c->in_shape[0], NULL, &y));
        CX_TRY(cx_run_output(r, 1, saved_shape, NULL, &saved));
        if (numel)
            be->l2norm_forward(be, rows, cols, eps, x, y, saved);
        return CX_OK;
    }
    CX_TRY(cx_run_dy(r, 0, (size_t)numel, &dy));
    CX_TRY(cx_run_scratch(r, (size_t)numel, &y));
    CX_TRY(cx_run_scratch(r, n_saved, &saved));
    CX_TRY(cx_run_gradient(r, 0, &dx));
    if (numel) {
        be->l2norm_forward(be, rows, cols, eps, x, y, saved);
        be->l2norm_backward(be, rows, cols, eps, x, saved, dy, dx);
    }
    return CX_OK;
}

#define OP CX_RUN_OP
const cx_op_entry cx_run_entries_norm[] = {
    {"layernorm", 1, 1, 3, 3, OP(layernorm_forward),
     OP(layernorm_forward) | OP(layernorm_backward), 0, run_layernorm},
    {"layernorm2d", 1, 1, 3, 3, OP(layernorm2d_forward),
     OP(layernorm2d_forward) | OP(layernorm2d_backward), 0, run_layernorm2d},
    {"l2norm", 1, 1, 1, 1, OP(l2norm_forward), OP(l2norm_forward) | OP(l2norm_backward), 0,
     run_l2norm},
    {NULL, 0, 0, 0, 0, 0, 0, 0, NULL},
};
