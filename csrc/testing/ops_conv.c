/* Test wrappers for the conv ops (see op_call.h).
 *
 * "conv2d" inputs [x (B, Cin, H, W), w (Cout, Cin/groups, k_h, k_w)] or [x, w, bias (Cout)],
 *          iargs (stride, pad_h, pad_w, dilation, groups) -> [y (B, Cout, out_h, out_w)];
 *          backward inputs [x, w, (bias,) dy] -> [dx, dw, (dbias)]. */
#include "op_call.h"
#include "../cpu/cpu_ops.h"

static cx_status op_conv2d(cx_op_call *call) {
    int n_fwd = call->backward ? call->n_in - 1 : call->n_in;
    if ((n_fwd != 2 && n_fwd != 3) || call->n_iargs != 5 || call->n_fargs != 0)
        return cx_fail(CX_EINVAL, "conv2d takes inputs [x, w] or [x, w, bias] (plus dy for "
                                  "backward) and iargs (stride, pad_h, pad_w, dilation, groups)");
    int has_bias = n_fwd == 3;
    CX_TRY(cx_op_expect_rank(call, "conv2d", 0, 4));
    CX_TRY(cx_op_expect_rank(call, "conv2d", 1, 4));
    const int64_t *xs = call->in_shape[0], *ws = call->in_shape[1];
    cx_conv_shape s = {(int)xs[0], (int)xs[1], (int)xs[2], (int)xs[3], (int)ws[0], (int)ws[2],
                       (int)ws[3], (int)call->iargs[0], (int)call->iargs[1], (int)call->iargs[2],
                       (int)call->iargs[3], (int)call->iargs[4]};
    if (s.stride < 1 || s.dilation < 1 || s.pad_h < 0 || s.pad_w < 0 || s.groups < 1)
        return cx_fail(CX_EINVAL, "conv2d: bad stride %d, padding (%d, %d), dilation %d or "
                                  "groups %d", s.stride, s.pad_h, s.pad_w, s.dilation, s.groups);
    if (s.in_ch % s.groups || s.out_ch % s.groups || ws[1] != s.in_ch / s.groups)
        return cx_fail(CX_EINVAL, "conv2d: x has %d channels and w is %lld x %lld, which does "
                                  "not fit groups = %d", s.in_ch, (long long)ws[0],
                       (long long)ws[1], s.groups);
    int64_t out_h = cx_conv_out_h(&s), out_w = cx_conv_out_w(&s);
    if (out_h < 1 || out_w < 1 || s.k_h < 1 || s.k_w < 1)
        return cx_fail(CX_EINVAL, "conv2d: empty output (%lld x %lld)", (long long)out_h,
                       (long long)out_w);
    if (has_bias) {
        CX_TRY(cx_op_expect_rank(call, "conv2d", 2, 1));
        if (call->in_shape[2][0] != s.out_ch)
            return cx_fail(CX_EINVAL, "conv2d: bias has %lld entries, expected %d",
                           (long long)call->in_shape[2][0], s.out_ch);
    }
    const float *x = call->in[0], *w = call->in[1], *bias = has_bias ? call->in[2] : NULL;
    cx_backend *be = cx_backend_cpu();
    int64_t y_shape[4] = {s.batch, s.out_ch, out_h, out_w};
    if (!call->backward) {
        float *y = call->alloc_out(call, 0, 4, y_shape);
        if (!y)
            return cx_fail(CX_ENOMEM, "conv2d: cannot allocate the output");
        cpu_conv2d_forward(be, &s, x, w, bias, y);
        return CX_OK;
    }
    int dy_index = n_fwd;
    CX_TRY(cx_op_expect_rank(call, "conv2d", dy_index, 4));
    for (int d = 0; d < 4; d++)
        if (call->in_shape[dy_index][d] != y_shape[d])
            return cx_fail(CX_EINVAL, "conv2d backward: dy dim %d is %lld, expected %lld", d,
                           (long long)call->in_shape[dy_index][d], (long long)y_shape[d]);
    float *dx = call->alloc_out(call, 0, 4, xs);
    float *dw = dx ? call->alloc_out(call, 1, 4, ws) : NULL;
    float *dbias = (dw && has_bias) ? call->alloc_out(call, 2, 1, call->in_shape[2]) : NULL;
    if (!dx || !dw || (has_bias && !dbias))
        return cx_fail(CX_ENOMEM, "conv2d backward: cannot allocate the gradients");
    cpu_conv2d_backward(be, &s, x, w, call->in[dy_index], dx, dw, dbias);
    return CX_OK;
}

const cx_op_entry cx_op_entries_conv[] = {
    {"conv2d", op_conv2d},
    {NULL, NULL},
};
