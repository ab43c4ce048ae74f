/* Test wrappers for the pool ops (see op_call.h).
 *   "avgpool2d"          [x (B,C,H,W)] iargs (k, stride, pad, count_include_pad) -> [y]
 *   "adaptive_avgpool2d" [x (B,C,H,W)] iargs (out_h, out_w) -> [y]
 *   "global_avgpool"     [x (B,C,H,W)] -> [y (B,C)]
 *   "resize_bilinear"    [x (B,C,H,W)] iargs (out_h, out_w) -> [y]
 * Backward calls take [x, dy] and return [dx]. */
#include "op_call.h"
#include "../cpu/cpu_ops.h"

/* Checks x (input 0) and, for backward, dy (input 1) against the output size. */
static cx_status check_planes(const cx_op_call *call, const char *op, int n_iargs,
                              cx_pool_shape *s) {
    CX_TRY(cx_op_expect_inputs(call, op, call->backward ? 2 : 1, n_iargs, 0));
    CX_TRY(cx_op_expect_rank(call, op, 0, 4));
    const int64_t *x = call->in_shape[0];
    if (x[0] < 1 || x[1] < 1 || x[2] < 1 || x[3] < 1)
        return cx_fail(CX_EINVAL, "%s: x has an empty dimension", op);
    s->planes = (int)(x[0] * x[1]);
    s->in_h = (int)x[2];
    s->in_w = (int)x[3];
    return CX_OK;
}

static cx_status check_dy(const cx_op_call *call, const char *op, const cx_pool_shape *s) {
    CX_TRY(cx_op_expect_rank(call, op, 1, 4));
    const int64_t *x = call->in_shape[0], *dy = call->in_shape[1];
    if (dy[0] != x[0] || dy[1] != x[1] || dy[2] != s->out_h || dy[3] != s->out_w)
        return cx_fail(CX_EINVAL, "%s: dy is (%lld,%lld,%lld,%lld), expected (%lld,%lld,%d,%d)", op,
                       (long long)dy[0], (long long)dy[1], (long long)dy[2], (long long)dy[3],
                       (long long)x[0], (long long)x[1], s->out_h, s->out_w);
    return CX_OK;
}

/* Runs forward or backward of one pool-shaped op. */
static cx_status run_pool(cx_op_call *call, const char *op, const cx_pool_shape *s,
                          void (*forward)(cx_backend *, const cx_pool_shape *, const float *, float *),
                          void (*backward)(cx_backend *, const cx_pool_shape *, const float *, float *)) {
    const int64_t *x = call->in_shape[0];
    if (call->backward) {
        CX_TRY(check_dy(call, op, s));
        float *dx = call->alloc_out(call, 0, 4, x);
        if (!dx)
            return cx_fail(CX_ENOMEM, "%s: cannot allocate dx", op);
        backward(cx_backend_cpu(), s, call->in[1], dx);
        return CX_OK;
    }
    int64_t shape[4] = {x[0], x[1], s->out_h, s->out_w};
    float *y = call->alloc_out(call, 0, 4, shape);
    if (!y)
        return cx_fail(CX_ENOMEM, "%s: cannot allocate y", op);
    forward(cx_backend_cpu(), s, call->in[0], y);
    return CX_OK;
}

static cx_status op_avgpool2d(cx_op_call *call) {
    const char *op = "avgpool2d";
    cx_pool_shape s = {0};
    CX_TRY(check_planes(call, op, 4, &s));
    int64_t k = call->iargs[0], stride = call->iargs[1], pad = call->iargs[2];
    int64_t incl = call->iargs[3];
    if (k < 1 || stride < 1 || pad < 0 || pad > k / 2)
        return cx_fail(CX_EINVAL, "%s: need k >= 1, stride >= 1, 0 <= pad <= k/2; got k %lld, "
                       "stride %lld, pad %lld", op, (long long)k, (long long)stride, (long long)pad);
    if (incl != 0 && incl != 1)
        return cx_fail(CX_EINVAL, "%s: count_include_pad must be 0 or 1, got %lld", op,
                       (long long)incl);
    s.k = (int)k;
    s.stride = (int)stride;
    s.pad = (int)pad;
    s.count_include_pad = (int)incl;
    s.out_h = (s.in_h + 2 * s.pad - s.k) / s.stride + 1;
    s.out_w = (s.in_w + 2 * s.pad - s.k) / s.stride + 1;
    if (s.in_h + 2 * s.pad < s.k || s.in_w + 2 * s.pad < s.k)
        return cx_fail(CX_EINVAL, "%s: window %d does not fit the padded %dx%d input", op, s.k,
                       s.in_h, s.in_w);
    return run_pool(call, op, &s, cpu_avgpool2d_forward, cpu_avgpool2d_backward);
}

static cx_status sized_output(const cx_op_call *call, const char *op, cx_pool_shape *s) {
    int64_t out_h = call->iargs[0], out_w = call->iargs[1];
    if (out_h < 1 || out_w < 1)
        return cx_fail(CX_EINVAL, "%s: output size must be positive, got %lldx%lld", op,
                       (long long)out_h, (long long)out_w);
    s->out_h = (int)out_h;
    s->out_w = (int)out_w;
    return CX_OK;
}

static cx_status op_adaptive_avgpool2d(cx_op_call *call) {
    const char *op = "adaptive_avgpool2d";
    cx_pool_shape s = {0};
    CX_TRY(check_planes(call, op, 2, &s));
    CX_TRY(sized_output(call, op, &s));
    return run_pool(call, op, &s, cpu_adaptive_avgpool2d_forward, cpu_adaptive_avgpool2d_backward);
}

static cx_status op_resize_bilinear(cx_op_call *call) {
    const char *op = "resize_bilinear";
    cx_pool_shape s = {0};
    CX_TRY(check_planes(call, op, 2, &s));
    CX_TRY(sized_output(call, op, &s));
    return run_pool(call, op, &s, cpu_resize_bilinear_forward, cpu_resize_bilinear_backward);
}

static cx_status op_global_avgpool(cx_op_call *call) {
    const char *op = "global_avgpool";
    cx_pool_shape s = {0};
    CX_TRY(check_planes(call, op, 0, &s));
    const int64_t *x = call->in_shape[0];
    int hw = s.in_h * s.in_w;
    if (call->backward) {
        CX_TRY(cx_op_expect_rank(call, op, 1, 2));
        if (call->in_shape[1][0] != x[0] || call->in_shape[1][1] != x[1])
            return cx_fail(CX_EINVAL, "%s: dy must be (%lld,%lld)", op, (long long)x[0],
                           (long long)x[1]);
        float *dx = call->alloc_out(call, 0, 4, x);
        if (!dx)
            return cx_fail(CX_ENOMEM, "%s: cannot allocate dx", op);
        cpu_global_avgpool_backward(cx_backend_cpu(), s.planes, hw, call->in[1], dx);
        return CX_OK;
    }
    int64_t shape[2] = {x[0], x[1]};
    float *y = call->alloc_out(call, 0, 2, shape);
    if (!y)
        return cx_fail(CX_ENOMEM, "%s: cannot allocate y", op);
    cpu_global_avgpool_forward(cx_backend_cpu(), s.planes, hw, call->in[0], y);
    return CX_OK;
}

const cx_op_entry cx_op_entries_pool[] = {
    {"avgpool2d", op_avgpool2d},
    {"adaptive_avgpool2d", op_adaptive_avgpool2d},
    {"global_avgpool", op_global_avgpool},
    {"resize_bilinear", op_resize_bilinear},
    {NULL, NULL},
};
