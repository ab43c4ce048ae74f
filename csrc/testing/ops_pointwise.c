/* Test wrappers for the pointwise, broadcast and layout ops (see op_call.h).
 *   "gelu", "sigmoid"     [x] -> [y];             backward [x, dy] -> [dx]
 *   "softmax"             [x (..., cols)] -> [y];  backward [x, dy] -> [dx]
 *   "add", "mul"          [a, b] -> [y];           backward [a, b, dy] -> [da, db]
 *   "affine"              [x] fargs (alpha, beta) -> [y];  backward [x, dy] -> [dx]
 *   "axpy"                [x, y] fargs (alpha) -> [y + alpha x]  (forward only)
 *   "scale_mid"           [x (outer,mid,inner), s (mid)] -> [y]
 *   "scale_outer_inner"   [x (outer,mid,inner), s (outer,inner)] -> [y]
 *                         both: backward [x, s, dy] -> [dx, ds]
 *   "transpose"           [x (batch,a,b)] -> [y (batch,b,a)];  backward [x, dy] -> [dx]
 *   "copy_channels"       [src (B,Cs,...), dst (B,Cd,...)] iargs (n_channels, src_offset,
 *                         dst_offset, accumulate) -> [dst after the copy]  (forward only) */
#include "op_call.h"
#include "../cpu/cpu_ops.h"

#include <stdlib.h>
#include <string.h>

static int same_shape(const cx_op_call *call, int i, int j) {
    if (call->in_ndim[i] != call->in_ndim[j])
        return 0;
    for (int d = 0; d < call->in_ndim[i]; d++)
        if (call->in_shape[i][d] != call->in_shape[j][d])
            return 0;
    return 1;
}

static cx_status expect_same_shape(const cx_op_call *call, const char *op, int i, int j) {
    if (!same_shape(call, i, j))
        return cx_fail(CX_EINVAL, "%s: input %d must have the shape of input %d", op, i, j);
    return CX_OK;
}

static float *alloc_like(cx_op_call *call, int index, int like) {
    return call->alloc_out(call, index, call->in_ndim[like], call->in_shape[like]);
}

#define NEED(ptr, op)                                                  \
    do {                                                               \
        if (!(ptr))                                                    \
            return cx_fail(CX_ENOMEM, "%s: cannot allocate output", op); \
    } while (0)

/* ---- unary: gelu, sigmoid ---------------------------------------------------------- */
static cx_status op_gelu(cx_op_call *call) {
    const char *op = "gelu";
    CX_TRY(cx_op_expect_inputs(call, op, call->backward ? 2 : 1, 0, 0));
    size_t n = (size_t)cx_op_numel(call, 0);
    float *out = alloc_like(call, 0, 0);
    NEED(out, op);
    if (!call->backward) {
        cpu_gelu_forward(cx_backend_cpu(), n, call->in[0], out);
        return CX_OK;
    }
    CX_TRY(expect_same_shape(call, op, 1, 0));
    cpu_gelu_backward(cx_backend_cpu(), n, call->in[0], call->in[1], out);
    return CX_OK;
}

static cx_status op_sigmoid(cx_op_call *call) {
    const char *op = "sigmoid";
    CX_TRY(cx_op_expect_inputs(call, op, call->backward ? 2 : 1, 0, 0));
    size_t n = (size_t)cx_op_numel(call, 0);
    float *out = alloc_like(call, 0, 0);
    NEED(out, op);
    if (!call->backward) {
        cpu_sigmoid_forward(cx_backend_cpu(), n, call->in[0], out);
        return CX_OK;
    }
    CX_TRY(expect_same_shape(call, op, 1, 0));
    float *y = malloc((n ? n : 1) * sizeof(float));
    if (!y)
        return cx_fail(CX_ENOMEM, "%s: out of memory", op);
    cpu_sigmoid_forward(cx_backend_cpu(), n, call->in[0], y);
    cpu_sigmoid_backward(cx_backend_cpu(), n, y, call->in[1], out);
    free(y);
    return CX_OK;
}

/* ---- softmax over the last dim ----------------------------------------------------- */
static cx_status op_softmax(cx_op_call *call) {
    const char *op = "softmax";
    CX_TRY(cx_op_expect_inputs(call, op, call->backward ? 2 : 1, 0, 0));
    if (call->in_ndim[0] < 1 || call->in_shape[0][call->in_ndim[0] - 1] < 1)
        return cx_fail(CX_EINVAL, "%s: x needs a non-empty last dimension", op);
    int64_t cols = call->in_shape[0][call->in_ndim[0] - 1];
    int64_t n = cx_op_numel(call, 0), rows = n / cols;
    float *out = alloc_like(call, 0, 0);
    NEED(out, op);
    if (!call->backward) {
        cpu_softmax_forward(cx_backend_cpu(), (int)rows, (int)cols, call->in[0], out);
        return CX_OK;
    }
    CX_TRY(expect_same_shape(call, op, 1, 0));
    float *y = malloc((size_t)(n ? n : 1) * sizeof(float));
    if (!y)
        return cx_fail(CX_ENOMEM, "%s: out of memory", op);
    cpu_softmax_forward(cx_backend_cpu(), (int)rows, (int)cols, call->in[0], y);
    cpu_softmax_backward(cx_backend_cpu(), (int)rows, (int)cols, y, call->in[1], out);
    free(y);
    return CX_OK;
}

/* ---- binary: add, mul -------------------------------------------------------------- */
static cx_status binary(cx_op_call *call, const char *op, int is_mul) {
    CX_TRY(cx_op_expect_inputs(call, op, call->backward ? 3 : 2, 0, 0));
    CX_TRY(expect_same_shape(call, op, 1, 0));
    size_t n = (size_t)cx_op_numel(call, 0);
    cx_backend *be = cx_backend_cpu();
    if (!call->backward) {
        float *y = alloc_like(call, 0, 0);
        NEED(y, op);
        if (is_mul)
            cpu_mul_forward(be, n, call->in[0], call->in[1], y);
        else
            cpu_add(be, n, call->in[0], call->in[1], y);
        return CX_OK;
    }
    CX_TRY(expect_same_shape(call, op, 2, 0));
    float *da = alloc_like(call, 0, 0), *db = alloc_like(call, 1, 1);
    NEED(da && db, op);
    if (is_mul) {
        cpu_mul_backward(be, n, call->in[0], call->in[1], call->in[2], da, db);
    } else { /* the backward of add is two axpys */
        cpu_axpy(be, n, 1.0f, call->in[2], da);
        cpu_axpy(be, n, 1.0f, call->in[2], db);
    }
    return CX_OK;
}

static cx_status op_add(cx_op_call *call) { return binary(call, "add", 0); }
static cx_status op_mul(cx_op_call *call) { return binary(call, "mul", 1); }

static cx_status op_affine(cx_op_call *call) {
    const char *op = "affine";
    CX_TRY(cx_op_expect_inputs(call, op, call->backward ? 2 : 1, 0, 2));
    size_t n = (size_t)cx_op_numel(call, 0);
    float alpha = (float)call->fargs[0], beta = (float)call->fargs[1];
    float *out = alloc_like(call, 0, 0);
    NEED(out, op);
    if (!call->backward) {
        cpu_affine(cx_backend_cpu(), n, alpha, beta, call->in[0], out);
        return CX_OK;
    }
    CX_TRY(expect_same_shape(call, op, 1, 0));
    cpu_axpy(cx_backend_cpu(), n, alpha, call->in[1], out);
    return CX_OK;
}

static cx_status op_axpy(cx_op_call *call) {
    const char *op = "axpy";
    if (call->backward)
        return cx_fail(CX_EINVAL, "%s has no backward test entry", op);
    CX_TRY(cx_op_expect_inputs(call, op, 2, 0, 1));
    CX_TRY(expect_same_shape(call, op, 1, 0));
    size_t n = (size_t)cx_op_numel(call, 0);
    float *y = alloc_like(call, 0, 1);
    NEED(y, op);
    memcpy(y, call->in[1], n * sizeof(float));
    cpu_axpy(cx_backend_cpu(), n, (float)call->fargs[0], call->in[0], y);
    return CX_OK;
}

/* ---- broadcast products ------------------------------------------------------------ */
/* x (outer, mid, inner) is input 0; backward's dy (input 2) must match it. */
static cx_status scale_shape(const cx_op_call *call, const char *op, int *outer, int *mid,
                             int *inner) {
    CX_TRY(cx_op_expect_inputs(call, op, call->backward ? 3 : 2, 0, 0));
    CX_TRY(cx_op_expect_rank(call, op, 0, 3));
    *outer = (int)call->in_shape[0][0];
    *mid = (int)call->in_shape[0][1];
    *inner = (int)call->in_shape[0][2];
    if (call->backward)
        CX_TRY(expect_same_shape(call, op, 2, 0));
    return CX_OK;
}

static cx_status op_scale_mid(cx_op_call *call) {
    const char *op = "scale_mid";
    int outer, mid, inner;
    CX_TRY(scale_shape(call, op, &outer, &mid, &inner));
    if (call->in_ndim[1] != 1 || call->in_shape[1][0] != mid)
        return cx_fail(CX_EINVAL, "%s: s must have shape (%d,)", op, mid);
    cx_backend *be = cx_backend_cpu();
    if (!call->backward) {
        float *y = alloc_like(call, 0, 0);
        NEED(y, op);
        cpu_scale_mid_forward(be, outer, mid, inner, call->in[0], call->in[1], y);
        return CX_OK;
    }
    float *dx = alloc_like(call, 0, 0), *ds = alloc_like(call, 1, 1);
    NEED(dx && ds, op);
    cpu_scale_mid_backward(be, outer, mid, inner, call->in[0], call->in[1], call->in[2], dx, ds);
    return CX_OK;
}

static cx_status op_scale_outer_inner(cx_op_call *call) {
    const char *op = "scale_outer_inner";
    int outer, mid, inner;
    CX_TRY(scale_shape(call, op, &outer, &mid, &inner));
    if (call->in_ndim[1] != 2 || call->in_shape[1][0] != outer || call->in_shape[1][1] != inner)
        return cx_fail(CX_EINVAL, "%s: s must have shape (%d, %d)", op, outer, inner);
    cx_backend *be = cx_backend_cpu();
    if (!call->backward) {
        float *y = alloc_like(call, 0, 0);
        NEED(y, op);
        cpu_scale_outer_inner_forward(be, outer, mid, inner, call->in[0], call->in[1], y);
        return CX_OK;
    }
    float *dx = alloc_like(call, 0, 0), *ds = alloc_like(call, 1, 1);
    NEED(dx && ds, op);
    cpu_scale_outer_inner_backward(be, outer, mid, inner, call->in[0], call->in[1], call->in[2],
                                   dx, ds);
    return CX_OK;
}

/* ---- layout ------------------------------------------------------------------------ */
static cx_status op_transpose(cx_op_call *call) {
    const char *op = "transpose";
    CX_TRY(cx_op_expect_inputs(call, op, call->backward ? 2 : 1, 0, 0));
    CX_TRY(cx_op_expect_rank(call, op, 0, 3));
    const int64_t *x = call->in_shape[0];
    int batch = (int)x[0], a = (int)x[1], b = (int)x[2];
    cx_backend *be = cx_backend_cpu();
    if (!call->backward) {
        int64_t shape[3] = {batch, b, a};
        float *y = call->alloc_out(call, 0, 3, shape);
        NEED(y, op);
        cpu_transpose(be, batch, a, b, call->in[0], y);
        return CX_OK;
    }
    const int64_t *dy = call->in_shape[1];
    if (call->in_ndim[1] != 3 || dy[0] != batch || dy[1] != b || dy[2] != a)
        return cx_fail(CX_EINVAL, "%s: dy must have shape (%d, %d, %d)", op, batch, b, a);
    float *dx = alloc_like(call, 0, 0);
    NEED(dx, op);
    cpu_transpose_accumulate(be, batch, b, a, call->in[1], dx);
    return CX_OK;
}

static cx_status op_copy_channels(cx_op_call *call) {
    const char *op = "copy_channels";
    if (call->backward)
        return cx_fail(CX_EINVAL, "%s has no backward test entry", op);
    CX_TRY(cx_op_expect_inputs(call, op, 2, 4, 0));
    if (call->in_ndim[0] < 2 || call->in_ndim[1] != call->in_ndim[0])
        return cx_fail(CX_EINVAL, "%s: src and dst must be (B, C, ...) of the same rank", op);
    const int64_t *src = call->in_shape[0], *dst = call->in_shape[1];
    int64_t batch = src[0], hw = 1;
    for (int d = 2; d < call->in_ndim[0]; d++) {
        if (src[d] != dst[d])
            return cx_fail(CX_EINVAL, "%s: src and dst differ in dimension %d", op, d);
        hw *= src[d];
    }
    if (dst[0] != batch)
        return cx_fail(CX_EINVAL, "%s: src and dst differ in batch", op);
    int64_t n_channels = call->iargs[0], src_offset = call->iargs[1];
    int64_t dst_offset = call->iargs[2], accumulate = call->iargs[3];
    if (n_channels < 0 || src_offset < 0 || dst_offset < 0 || src_offset + n_channels > src[1] ||
        dst_offset + n_channels > dst[1])
        return cx_fail(CX_EINVAL, "%s: channels [%lld, %lld) of src (%lld) or [%lld, %lld) of dst "
                       "(%lld) out of range", op, (long long)src_offset,
                       (long long)(src_offset + n_channels), (long long)src[1],
                       (long long)dst_offset, (long long)(dst_offset + n_channels),
                       (long long)dst[1]);
    float *out = alloc_like(call, 0, 1);
    NEED(out, op);
    memcpy(out, call->in[1], (size_t)cx_op_numel(call, 1) * sizeof(float));
    cpu_copy_channels(cx_backend_cpu(), (int)batch, (int)hw, (int)n_channels, call->in[0],
                      (int)src[1], (int)src_offset, out, (int)dst[1], (int)dst_offset,
                      accumulate != 0);
    return CX_OK;
}

const cx_op_entry cx_op_entries_pointwise[] = {
    {"gelu", op_gelu},
    {"sigmoid", op_sigmoid},
    {"softmax", op_softmax},
    {"add", op_add},
    {"mul", op_mul},
    {"affine", op_affine},
    {"axpy", op_axpy},
    {"scale_mid", op_scale_mid},
    {"scale_outer_inner", op_scale_outer_inner},
    {"transpose", op_transpose},
    {"copy_channels", op_copy_channels},
    {NULL, NULL},
};
