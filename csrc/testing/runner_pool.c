/* Op-test entries of the pooling and resizing ops (see op_runner.h).
 *   avgpool2d           [x (B,C,H,W)] iargs (k, stride, pad, count_include_pad) -> [y]
 *   adaptive_avgpool2d  [x (B,C,H,W)] iargs (out_h, out_w) -> [y]
 *   resize_bilinear     [x (B,C,H,W)] iargs (out_h, out_w) -> [y]
 *   global_avgpool      [x (B,C,H,W)] -> [y (B,C)]
 * Backward calls take [x, dy] and return [dx] (x gives the shape only). */
#include "op_runner.h"

typedef void (*pool_forward_fn)(cx_backend *, const cx_pool_shape *, const float *, float *);
typedef void (*pool_backward_fn)(cx_backend *, const cx_pool_shape *, const float *, float *);

/* Checks x (input 0) and fills planes, in_h, in_w. */
static cx_status planes_of(cx_op_run *r, int n_iargs, cx_pool_shape *s) {
    CX_TRY(cx_run_args(r, n_iargs, 0));
    CX_TRY(cx_run_rank(r, 0, 4));
    const int64_t *x = r->call->in_shape[0];
    if (x[0] < 1 || x[1] < 1 || x[2] < 1 || x[3] < 1)
        return cx_fail(CX_EINVAL, "%s: x has an empty dimension", r->op);
    CX_TRY(cx_run_int(r, x[0] * x[1], 1, "planes", &s->planes));
    CX_TRY(cx_run_int(r, x[2], 1, "in_h", &s->in_h));
    CX_TRY(cx_run_int(r, x[3], 1, "in_w", &s->in_w));
    return CX_OK;
}

/* Runs forward or backward of one pool-shaped op. */
static cx_status pool(cx_op_run *r, const cx_pool_shape *s, pool_forward_fn forward,
                      pool_backward_fn backward) {
    const cx_op_call *c = r->call;
    const int64_t *x = c->in_shape[0];
    int64_t y_shape[4] = {x[0], x[1], s->out_h, s->out_w};
    if (c->backward) {
        const int64_t *dy = c->in_shape[r->dy_base];
        if (c->in_ndim[r->dy_base] != 4 || dy[0] != x[0] || dy[1] != x[1] || dy[2] != s->out_h ||
            dy[3] != s->out_w)
            return cx_fail(CX_EINVAL, "%s: dy must be (%lld,%lld,%d,%d)", r->op, (long long)x[0],
                           (long long)x[1], s->out_h, s->out_w);
        const float *dyd = NULL;
        float *dx = NULL;
        CX_TRY(cx_run_dy(r, 0, (size_t)s->planes * s->out_h * s->out_w, &dyd));
        CX_TRY(cx_run_gradient(r, 0, &dx));
        if (dx)
            backward(r->be, s, dyd, dx);
        return CX_OK;
    }
    const float *xd = NULL;
    float *y = NULL;
    CX_TRY(cx_run_input(r, 0, &xd));
    CX_TRY(cx_run_output(r, 4, y_shape, NULL, &y));
    forward(r->be, s, xd, y);
    return CX_OK;
}

static cx_status run_avgpool2d(cx_op_run *r) {
    cx_pool_shape s = {0};
    CX_TRY(planes_of(r, 4, &s));
    const int64_t *ia = r->call->iargs;
    int64_t k = ia[0], stride = ia[1], pad = ia[2], incl = ia[3];
    if (k < 1 || stride < 1 || pad < 0 || pad > k / 2)
        return cx_fail(CX_EINVAL, "%s: need k >= 1, stride >= 1, 0 <= pad <= k/2; got k %lld, "
                       "stride %lld, pad %lld", r->op, (long long)k, (long long)stride,
                       (long long)pad);
    if (incl != 0 && incl != 1)
        return cx_fail(CX_EINVAL, "%s: count_include_pad must be 0 or 1, got %lld", r->op,
                       (long long)incl);
    if (s.in_h + 2 * pad < k || s.in_w + 2 * pad < k)
        return cx_fail(CX_EINVAL, "%s: window %lld does not fit the padded %dx%d input", r->op,
                       (long long)k, s.in_h, s.in_w);
    s.k = (int)k;
    s.stride = (int)stride;
    s.pad = (int)pad;
    s.count_include_pad = (int)incl;
    s.out_h = (s.in_h + 2 * s.pad - s.k) / s.stride + 1;
    s.out_w = (s.in_w + 2 * s.pad - s.k) / s.stride + 1;
    return pool(r, &s, r->be->avgpool2d_forward, r->be->avgpool2d_backward);
}

/* out_h, out_w from iargs. */
static cx_status sized(cx_op_run *r, cx_pool_shape *s) {
    CX_TRY(planes_of(r, 2, s));
    const int64_t *ia = r->call->iargs;
    if (ia[0] < 1 || ia[1] < 1)
        return cx_fail(CX_EINVAL, "%s: output size must be positive, got %lldx%lld", r->op,
                       (long long)ia[0], (long long)ia[1]);
    CX_TRY(cx_run_int(r, ia[0], 1, "out_h", &s->out_h));
    return cx_run_int(r, ia[1], 1, "out_w", &s->out_w);
}

static cx_status run_adaptive_avgpool2d(cx_op_run *r) {
    cx_pool_shape s = {0};
    CX_TRY(sized(r, &s));
    return pool(r, &s, r->be->adaptive_avgpool2d_forward, r->be->adaptive_avgpool2d_backward);
}

static cx_status run_resize_bilinear(cx_op_run *r) {
    cx_pool_shape s = {0};
    CX_TRY(sized(r, &s));
    return pool(r, &s, r->be->resize_bilinear_forward, r->be->resize_bilinear_backward);
}

static cx_status run_global_avgpool(cx_op_run *r) {
    cx_backend *be = r->be;
    cx_pool_shape s = {0};
    CX_TRY(planes_of(r, 0, &s));
    const cx_op_call *c = r->call;
    const int64_t *x = c->in_shape[0];
    int hw = s.in_h * s.in_w;
    if (c->backward) {
        const int64_t *dy = c->in_shape[r->dy_base];
        if (c->in_ndim[r->dy_base] != 2 || dy[0] != x[0] || dy[1] != x[1])
            return cx_fail(CX_EINVAL, "%s: dy must be (%lld,%lld)", r->op, (long long)x[0],
                           (long long)x[1]);
        const float *dyd = NULL;
        float *dx = NULL;
        CX_TRY(cx_run_dy(r, 0, (size_t)s.planes, &dyd));
        CX_TRY(cx_run_gradient(r, 0, &dx));
        if (dx)
            be->global_avgpool_backward(be, s.planes, hw, dyd, dx);
        return CX_OK;
    }
    int64_t shape[2] = {x[0], x[1]};
    const float *xd = NULL;
    float *y = NULL;
    CX_TRY(cx_run_input(r, 0, &xd));
    CX_TRY(cx_run_output(r, 2, shape, NULL, &y));
    be->global_avgpool_forward(be, s.planes, hw, xd, y);
    return CX_OK;
}

#define OP CX_RUN_OP
const cx_op_entry cx_run_entries_pool[] = {
    {"avgpool2d", 1, 0, 1, 1, OP(avgpool2d_forward), OP(avgpool2d_backward), 0, run_avgpool2d},
    {"adaptive_avgpool2d", 1, 0, 1, 1, OP(adaptive_avgpool2d_forward),
     OP(adaptive_avgpool2d_backward), 0, run_adaptive_avgpool2d},
    {"global_avgpool", 1, 0, 1, 1, OP(global_avgpool_forward), OP(global_avgpool_backward), 0,
     run_global_avgpool},
    {"resize_bilinear", 1, 0, 1, 1, OP(resize_bilinear_forward), OP(resize_bilinear_backward), 0,
     run_resize_bilinear},
    {NULL, 0, 0, 0, 0, 0, 0, 0, NULL},
};
