/* Op-test entries of the broadcast products and the layout ops (see op_runner.h).
 *   scale_mid          [x (outer, mid, inner), s (mid)] -> [y]
 *   scale_outer_inner  [x (outer, mid, inner), s (outer, inner)] -> [y]
 *                      both: backward [x, s, dy] -> [dx, ds]
 *   transpose          [x (batch, a, b)] -> [y (batch, b, a)]; backward [x, dy] -> [dx]
 *                      (transpose_accumulate)
 *   copy_channels      [src (B, Cs, ...), dst (B, Cd, ...)] iargs (n_channels, src_offset,
 *                      dst_offset, accumulate) -> [dst after the copy]  (forward only) */
#include "op_runner.h"

/* x (outer, mid, inner) is input 0. */
static cx_status scale(cx_op_run *r, int per_mid) {
    cx_backend *be = r->be;
    CX_TRY(cx_run_args(r, 0, 0));
    const cx_op_call *c = r->call;
    CX_TRY(cx_run_rank(r, 0, 3));
    int outer = 0, mid = 0, inner = 0;
    CX_TRY(cx_run_int(r, c->in_shape[0][0], 0, "outer", &outer));
    CX_TRY(cx_run_int(r, c->in_shape[0][1], 0, "mid", &mid));
    CX_TRY(cx_run_int(r, c->in_shape[0][2], 0, "inner", &inner));
    if (per_mid) {
        if (c->in_ndim[1] != 1 || c->in_shape[1][0] != mid)
            return cx_fail(CX_EINVAL, "%s: s must have shape (%d,)", r->op, mid);
    } else if (c->in_ndim[1] != 2 || c->in_shape[1][0] != outer || c->in_shape[1][1] != inner) {
        return cx_fail(CX_EINVAL, "%s: s must have shape (%d, %d)", r->op, outer, inner);
    }
    const float *x = NULL, *s = NULL, *dy = NULL;
    float *y = NULL, *dx = NULL, *ds = NULL;
    CX_TRY(cx_run_input(r, 0, &x));
    CX_TRY(cx_run_input(r, 1, &s));
    size_t n = (size_t)cx_run_numel(r, 0);
    if (!c->backward) {
        CX_TRY(cx_run_output(r, 3, c->in_shape[0], NULL, &y));
        if (n)
            (per_mid ? be->scale_mid_forward : be->scale_outer_inner_forward)(be, outer, mid,
                                                                             inner, x, s, y);
        return CX_OK;
    }
    CX_TRY(cx_run_dy(r, 0, n, &dy));
    CX_TRY(cx_run_gradient(r, 0, &dx));
    CX_TRY(cx_run_gradient(r, 1, &ds));
    if (n)
        (per_mid ? be->scale_mid_backward : be->scale_outer_inner_backward)(be, outer, mid, inner,
                                                                           x, s, dy, dx, ds);
    return CX_OK;
}
static cx_status run_scale_mid(cx_op_run *r) { return scale(r, 1); }
static cx_status run_scale_outer_inner(cx_op_run *r) { return scale(r, 0); }

static cx_status run_transpose(cx_op_run *r) {
    cx_backend *be = r->be;
    CX_TRY(cx_run_args(r, 0, 0));
    const cx_op_call *c = r->call;
    CX_TRY(cx_run_rank(r, 0, 3));
    int batch = 0, a = 0, b = 0;
    CX_TRY(cx_run_int(r, c->in_shape[0][0], 0, "batch", &batch));
    CX_TRY(cx_run_int(r, c->in_shape[0][1], 0, "a", &a));
    CX_TRY(cx_run_int(r, c->in_shape[0][2], 0, "b", &b));
    size_t n = (size_t)cx_run_numel(r, 0);
    if (!c->backward) {
        const float *x = NULL;
        float *y = NULL;
        int64_t shape[3] = {batch, b, a};
        CX_TRY(cx_run_input(r, 0, &x));
        CX_TRY(cx_run_output(r, 3, shape, NULL, &y));
        if (n)
            be->transpose(be, batch, a, b, x, y);
        return CX_OK;
    }
    const int64_t *dy_shape = c->in_shape[r->dy_base];
    if (c->in_ndim[r->dy_base] != 3 || dy_shape[0] != batch || dy_shape[1] != b || dy_shape[2] != a)
        return cx_fail(CX_EINVAL, "%s: dy must have shape (%d, %d, %d)", r->op, batch, b, a);
    const float *dy = NULL;
    float *dx = NULL;
    CX_TRY(cx_run_dy(r, 0, n, &dy));
    CX_TRY(cx_run_gradient(r, 0, &dx));
    if (n && dx)
        be->transpose_accumulate(be, batch, b, a, dy, dx);
    return CX_OK;
}

static cx_status run_copy_channels(cx_op_run *r) {
    CX_TRY(cx_run_args(r, 4, 0));
    const cx_op_call *c = r->call;
    if (c->in_ndim[0] < 2 || c->in_ndim[1] != c->in_ndim[0])
        return cx_fail(CX_EINVAL, "%s: src and dst must be (B, C, ...) of the same rank", r->op);
    const int64_t *src = c->in_shape[0], *dst = c->in_shape[1];
    int64_t hw = 1;
    for (int d = 2; d < c->in_ndim[0]; d++) {
        if (src[d] != dst[d])
            return cx_fail(CX_EINVAL, "%s: src and dst differ in dimension %d", r->op, d);
        hw *= src[d];
    }
    if (dst[0] != src[0])
        return cx_fail(CX_EINVAL, "%s: src and dst differ in batch", r->op);
    int64_t n_channels = c->iargs[0], src_offset = c->iargs[1];
    int64_t dst_offset = c->iargs[2], accumulate = c->iargs[3];
    if (n_channels < 0 || src_offset < 0 || dst_offset < 0 || src_offset + n_channels > src[1] ||
        dst_offset + n_channels > dst[1])
        return cx_fail(CX_EINVAL, "%s: channels [%lld, %lld) of src (%lld) or [%lld, %lld) of dst "
                       "(%lld) out of range", r->op, (long long)src_offset,
                       (long long)(src_offset + n_channels), (long long)src[1],
                       (long long)dst_offset, (long long)(dst_offset + n_channels),
                       (long long)dst[1]);
    int batch = 0, plane = 0;
    CX_TRY(cx_run_int(r, src[0], 0, "batch", &batch));
    CX_TRY(cx_run_int(r, hw, 0, "hw", &plane));
    const float *x = NULL;
    float *out = NULL;
    CX_TRY(cx_run_input(r, 0, &x));
    CX_TRY(cx_run_output(r, c->in_ndim[1], dst, c->in[1], &out));
    if (x && out && n_channels)
        r->be->copy_channels(r->be, batch, plane, (int)n_channels, x, (int)src[1], (int)src_offset,
                             out, (int)dst[1], (int)dst_offset, accumulate != 0);
    return CX_OK;
}

#define OP CX_RUN_OP
const cx_op_entry cx_run_entries_layout[] = {
    {"scale_mid", 1, 0, 2, 2, OP(scale_mid_forward), OP(scale_mid_backward), 0, run_scale_mid},
    {"scale_outer_inner", 1, 0, 2, 2, OP(scale_outer_inner_forward),
     OP(scale_outer_inner_backward), 0, run_scale_outer_inner},
    {"transpose", 1, 0, 1, 1, OP(transpose), OP(transpose_accumulate), 0, run_transpose},
    {"copy_channels", 1, 0, 2, 2, OP(copy_channels), 0, 0, run_copy_channels},
    {NULL, 0, 0, 0, 0, 0, 0, 0, NULL},
};
