/* Op-test entry of the convolution (see op_runner.h).
 *   conv2d  [x (B, Cin, H, W), w (Cout, Cin/groups, k_h, k_w), bias (Cout) (optional: empty
 *           or left off)], iargs (stride, pad_h, pad_w, dilation, groups)
 *           -> [y (B, Cout, out_h, out_w)];  backward [x, w, (bias,) dy] -> [dx, dw, (dbias)] */
#include "op_runner.h"

#include <string.h>

static cx_status run_conv2d(cx_op_run *r) {
    cx_backend *be = r->be;
    CX_TRY(cx_run_args(r, 5, 0));
    const cx_op_call *c = r->call;
    CX_TRY(cx_run_rank(r, 0, 4));
    CX_TRY(cx_run_rank(r, 1, 4));
    cx_conv_shape s;
    memset(&s, 0, sizeof s);
    const int64_t *xs = c->in_shape[0], *ws = c->in_shape[1];
    CX_TRY(cx_run_int(r, xs[0], 1, "batch", &s.batch));
    CX_TRY(cx_run_int(r, xs[1], 1, "in_ch", &s.in_ch));
    CX_TRY(cx_run_int(r, xs[2], 1, "in_h", &s.in_h));
    CX_TRY(cx_run_int(r, xs[3], 1, "in_w", &s.in_w));
    CX_TRY(cx_run_int(r, ws[0], 1, "out_ch", &s.out_ch));
    CX_TRY(cx_run_int(r, ws[2], 1, "k_h", &s.k_h));
    CX_TRY(cx_run_int(r, ws[3], 1, "k_w", &s.k_w));
    CX_TRY(cx_run_int(r, c->iargs[0], 1, "stride", &s.stride));
    CX_TRY(cx_run_int(r, c->iargs[1], 0, "pad_h", &s.pad_h));
    CX_TRY(cx_run_int(r, c->iargs[2], 0, "pad_w", &s.pad_w));
    CX_TRY(cx_run_int(r, c->iargs[3], 1, "dilation", &s.dilation));
    CX_TRY(cx_run_int(r, c->iargs[4], 1, "groups", &s.groups));
    if (s.in_ch % s.groups || s.out_ch % s.groups || ws[1] != s.in_ch / s.groups)
        return cx_fail(CX_EINVAL, "%s: x has %d channels and w is %lld x %lld, which does not "
                       "fit groups = %d", r->op, s.in_ch, (long long)ws[0], (long long)ws[1],
                       s.groups);
    if (s.in_h + 2 * s.pad_h < s.dilation * (s.k_h - 1) + 1 ||
        s.in_w + 2 * s.pad_w < s.dilation * (s.k_w - 1) + 1)
        return cx_fail(CX_EINVAL, "%s: the kernel does not fit the padded input (empty output)",
                       r->op);
    if (r->n_fwd == 3 && cx_run_numel(r, 2) != 0)
        CX_TRY(cx_run_vector(r, 2, s.out_ch));
    int64_t y_shape[4] = {s.batch, s.out_ch, cx_conv_out_h(&s), cx_conv_out_w(&s)};
    const float *x = NULL, *w = NULL, *bias = NULL, *dy = NULL;
    float *y = NULL, *dx = NULL, *dw = NULL, *dbias = NULL;
    CX_TRY(cx_run_input(r, 0, &x));
    CX_TRY(cx_run_input(r, 1, &w));
    CX_TRY(cx_run_input(r, 2, &bias));
    if (!c->backward) {
        CX_TRY(cx_run_output(r, 4, y_shape, NULL, &y));
        be->conv2d_forward(be, &s, x, w, bias, y);
        return CX_OK;
    }
    CX_TRY(cx_run_dy(r, 0, (size_t)(y_shape[0] * y_shape[1] * y_shape[2] * y_shape[3]), &dy));
    CX_TRY(cx_run_gradient(r, 0, &dx));
    CX_TRY(cx_run_gradient(r, 1, &dw));
    CX_TRY(cx_run_gradient(r, 2, &dbias));
    be->conv2d_backward(be, &s, x, w, dy, dx, dw, dbias);
    return CX_OK;
}

#define OP CX_RUN_OP
const cx_op_entry cx_run_entries_conv[] = {
    {"conv2d", 1, 0, 2, 3, OP(conv2d_forward), OP(conv2d_backward), 0, run_conv2d},
    {NULL, 0, 0, 0, 0, 0, 0, 0, NULL},
};
