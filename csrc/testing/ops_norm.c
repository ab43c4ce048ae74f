/* Test wrappers for the norm ops (see op_call.h).
 *   "layernorm"   [x (..., cols), weight (cols), bias (cols)] fargs (eps) -> [y]
 *                 backward [x, weight, bias, dy] -> [dx, dweight, dbias]
 *   "layernorm2d" [x (B,C,H,W) or (B,C,HW), weight (C), bias (C)] fargs (eps) -> [y]
 *                 backward [x, weight, bias, dy] -> [dx, dweight, dbias]
 *   "l2norm"      [x (..., cols)] fargs (eps) -> [y];  backward [x, dy] -> [dx]
 * Backward wrappers run the forward first to fill `saved` (buffers malloc'ed here). */
#include "op_call.h"
#include "../cpu/cpu_ops.h"

#include <stdlib.h>

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

/* Output `index` shaped like input `like`. */
static float *alloc_like(cx_op_call *call, int index, int like) {
    return call->alloc_out(call, index, call->in_ndim[like], call->in_shape[like]);
}

static cx_status expect_vector(const cx_op_call *call, const char *op, int i, int64_t n) {
    if (call->in_ndim[i] != 1 || call->in_shape[i][0] != n)
        return cx_fail(CX_EINVAL, "%s: input %d must have shape (%lld,)", op, i, (long long)n);
    return CX_OK;
}

/* Forward outputs (and, for backward, the recomputed forward) with scratch y/saved. */
typedef struct {
    float *y, *saved;
} forward_buffers;

static cx_status alloc_forward(forward_buffers *buf, int64_t n_y, int64_t n_saved) {
    buf->y = malloc((size_t)(n_y > 0 ? n_y : 1) * sizeof(float));
    buf->saved = malloc((size_t)(n_saved > 0 ? n_saved : 1) * sizeof(float));
    if (!buf->y || !buf->saved) {
        free(buf->y);
        free(buf->saved);
        return cx_fail(CX_ENOMEM, "cannot allocate forward buffers");
    }
    return CX_OK;
}

static void free_forward(forward_buffers *buf) {
    free(buf->y);
    free(buf->saved);
}

static cx_status op_layernorm(cx_op_call *call) {
    const char *op = "layernorm";
    CX_TRY(cx_op_expect_inputs(call, op, call->backward ? 4 : 3, 0, 1));
    if (call->in_ndim[0] < 1)
        return cx_fail(CX_EINVAL, "%s: x must have at least one dimension", op);
    int64_t cols = call->in_shape[0][call->in_ndim[0] - 1];
    int64_t numel = cx_op_numel(call, 0);
    if (cols < 1)
        return cx_fail(CX_EINVAL, "%s: x has an empty last dimension", op);
    int64_t rows = numel / cols;
    CX_TRY(expect_vector(call, op, 1, cols));
    CX_TRY(expect_vector(call, op, 2, cols));
    float eps = (float)call->fargs[0];
    const float *x = call->in[0], *weight = call->in[1], *bias = call->in[2];
    cx_backend *be = cx_backend_cpu();
    if (!call->backward) {
        float *y = alloc_like(call, 0, 0);
        float *saved = malloc(cx_layernorm_saved_floats((int)rows) * sizeof(float) + 4);
        if (!y || !saved) {
            free(saved);
            return cx_fail(CX_ENOMEM, "%s: out of memory", op);
        }
        cpu_layernorm_forward(be, (int)rows, (int)cols, eps, x, weight, bias, y, saved);
        free(saved);
        return CX_OK;
    }
    CX_TRY(expect_same_shape(call, op, 3, 0));
    float *dx = alloc_like(call, 0, 0), *dweight = alloc_like(call, 1, 1);
    float *dbias = alloc_like(call, 2, 2);
    if (!dx || !dweight || !dbias)
        return cx_fail(CX_ENOMEM, "%s: cannot allocate gradients", op);
    forward_buffers buf;
    CX_TRY(alloc_forward(&buf, numel, (int64_t)cx_layernorm_saved_floats((int)rows)));
    cpu_layernorm_forward(be, (int)rows, (int)cols, eps, x, weight, bias, buf.y, buf.saved);
    cpu_layernorm_backward(be, (int)rows, (int)cols, x, weight, buf.saved, call->in[3], dx,
                           dweight, dbias);
    free_forward(&buf);
    return CX_OK;
}

static cx_status op_layernorm2d(cx_op_call *call) {
    const char *op = "layernorm2d";
    CX_TRY(cx_op_expect_inputs(call, op, call->backward ? 4 : 3, 0, 1));
    if (call->in_ndim[0] != 3 && call->in_ndim[0] != 4)
        return cx_fail(CX_EINVAL, "%s: x must be (B,C,H,W) or (B,C,HW), got rank %d", op,
                       call->in_ndim[0]);
    int64_t batch = call->in_shape[0][0], channels = call->in_shape[0][1];
    int64_t numel = cx_op_numel(call, 0);
    if (batch < 1 || channels < 1 || numel < 1)
        return cx_fail(CX_EINVAL, "%s: x has an empty dimension", op);
    int64_t hw = numel / (batch * channels);
    CX_TRY(expect_vector(call, op, 1, channels));
    CX_TRY(expect_vector(call, op, 2, channels));
    float eps = (float)call->fargs[0];
    const float *x = call->in[0], *weight = call->in[1], *bias = call->in[2];
    cx_backend *be = cx_backend_cpu();
    size_t n_saved = cx_layernorm2d_saved_floats((int)batch, (int)hw);
    if (!call->backward) {
        float *y = alloc_like(call, 0, 0);
        float *saved = malloc(n_saved * sizeof(float));
        if (!y || !saved) {
            free(saved);
            return cx_fail(CX_ENOMEM, "%s: out of memory", op);
        }
        cpu_layernorm2d_forward(be, (int)batch, (int)channels, (int)hw, eps, x, weight, bias, y,
                                saved);
        free(saved);
        return CX_OK;
    }
    CX_TRY(expect_same_shape(call, op, 3, 0));
    float *dx = alloc_like(call, 0, 0), *dweight = alloc_like(call, 1, 1);
    float *dbias = alloc_like(call, 2, 2);
    if (!dx || !dweight || !dbias)
        return cx_fail(CX_ENOMEM, "%s: cannot allocate gradients", op);
    forward_buffers buf;
    CX_TRY(alloc_forward(&buf, numel, (int64_t)n_saved));
    cpu_layernorm2d_forward(be, (int)batch, (int)channels, (int)hw, eps, x, weight, bias, buf.y,
                            buf.saved);
    cpu_layernorm2d_backward(be, (int)batch, (int)channels, (int)hw, x, weight, buf.saved,
                             call->in[3], dx, dweight, dbias);
    free_forward(&buf);
    return CX_OK;
}

static cx_status op_l2norm(cx_op_call *call) {
    const char *op = "l2norm";
    CX_TRY(cx_op_expect_inputs(call, op, call->backward ? 2 : 1, 0, 1));
    if (call->in_ndim[0] < 1)
        return cx_fail(CX_EINVAL, "%s: x must have at least one dimension", op);
    int64_t cols = call->in_shape[0][call->in_ndim[0] - 1];
    int64_t numel = cx_op_numel(call, 0);
    if (cols < 1)
        return cx_fail(CX_EINVAL, "%s: x has an empty last dimension", op);
    int64_t rows = numel / cols;
    float eps = (float)call->fargs[0];
    cx_backend *be = cx_backend_cpu();
    if (!call->backward) {
        float *y = alloc_like(call, 0, 0);
        float *saved = malloc(cx_l2norm_saved_floats((int)rows) * sizeof(float) + 4);
        if (!y || !saved) {
            free(saved);
            return cx_fail(CX_ENOMEM, "%s: out of memory", op);
        }
        cpu_l2norm_forward(be, (int)rows, (int)cols, eps, call->in[0], y, saved);
        free(saved);
        return CX_OK;
    }
    CX_TRY(expect_same_shape(call, op, 1, 0));
    float *dx = alloc_like(call, 0, 0);
    if (!dx)
        return cx_fail(CX_ENOMEM, "%s: cannot allocate dx", op);
    forward_buffers buf;
    CX_TRY(alloc_forward(&buf, numel, (int64_t)cx_l2norm_saved_floats((int)rows)));
    cpu_l2norm_forward(be, (int)rows, (int)cols, eps, call->in[0], buf.y, buf.saved);
    cpu_l2norm_backward(be, (int)rows, (int)cols, eps, call->in[0], buf.saved, call->in[1], dx);
    free_forward(&buf);
    return CX_OK;
}

const cx_op_entry cx_op_entries_norm[] = {
    {"layernorm", op_layernorm},
    {"layernorm2d", op_layernorm2d},
    {"l2norm", op_l2norm},
    {NULL, NULL},
};
