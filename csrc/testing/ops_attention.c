/* Test wrappers for the attention ops (see op_call.h).
 *   "xca"            [qkv (B,N,3C), temperature (heads)] iargs (heads,) -> [out (B,N,C)]
 *                    backward [qkv, temperature, dout] -> [dqkv, dtemperature]
 *   "posenc_fourier" [] iargs (hidden, h, w) fargs (temperature,) -> [out (2*hidden,h,w)]
 * The xca backward wrapper reruns the forward to fill the saved buffer. */
#include "op_call.h"
#include "../cpu/cpu_ops.h"

static cx_status op_xca(cx_op_call *call) {
    const char *op = "xca";
    CX_TRY(cx_op_expect_inputs(call, op, call->backward ? 3 : 2, 1, 0));
    CX_TRY(cx_op_expect_rank(call, op, 0, 3));
    CX_TRY(cx_op_expect_rank(call, op, 1, 1));
    const int64_t *qkv_shape = call->in_shape[0];
    int64_t heads = call->iargs[0];
    int64_t batch = qkv_shape[0], tokens = qkv_shape[1], channels = qkv_shape[2] / 3;
    if (heads < 1 || channels < 1 || qkv_shape[2] % 3 != 0 || channels % heads != 0)
        return cx_fail(CX_EINVAL, "%s: qkv last dim %lld must be 3*C with C divisible by heads %lld",
                       op, (long long)qkv_shape[2], (long long)heads);
    if (batch < 1 || tokens < 1)
        return cx_fail(CX_EINVAL, "%s: qkv has an empty dimension", op);
    if (call->in_shape[1][0] != heads)
        return cx_fail(CX_EINVAL, "%s: temperature has %lld entries, expected heads = %lld", op,
                       (long long)call->in_shape[1][0], (long long)heads);
    int64_t out_shape[3] = {batch, tokens, channels};
    size_t n_saved = cx_xca_saved_floats((int)batch, (int)tokens, (int)channels, (int)heads);
    cx_backend *be = cx_backend_cpu();

    if (!call->backward) {
        float *out = call->alloc_out(call, 0, 3, out_shape);
        float *saved = cx_aligned_alloc(n_saved * sizeof(float));
        if (!out || !saved) {
            cx_aligned_free(saved);
            return cx_fail(CX_ENOMEM, "%s: out of memory", op);
        }
        cpu_xca_forward(be, (int)batch, (int)tokens, (int)channels, (int)heads, call->in[0],
                        call->in[1], out, saved);
        cx_aligned_free(saved);
        return CX_OK;
    }

    CX_TRY(cx_op_expect_rank(call, op, 2, 3));
    const int64_t *dout_shape = call->in_shape[2];
    if (dout_shape[0] != batch || dout_shape[1] != tokens || dout_shape[2] != channels)
        return cx_fail(CX_EINVAL, "%s: dout must be (%lld,%lld,%lld)", op, (long long)batch,
                       (long long)tokens, (long long)channels);
    float *dqkv = call->alloc_out(call, 0, 3, qkv_shape);
    float *dtemperature = call->alloc_out(call, 1, 1, call->in_shape[1]);
    float *out = cx_aligned_alloc((size_t)(batch * tokens * channels) * sizeof(float));
    float *saved = cx_aligned_alloc(n_saved * sizeof(float));
    if (!dqkv || !dtemperature || !out || !saved) {
        cx_aligned_free(out);
        cx_aligned_free(saved);
        return cx_fail(CX_ENOMEM, "%s: out of memory", op);
    }
    cpu_xca_forward(be, (int)batch, (int)tokens, (int)channels, (int)heads, call->in[0],
                    call->in[1], out, saved);
    cpu_xca_backward(be, (int)batch, (int)tokens, (int)channels, (int)heads, call->in[0],
                     call->in[1], saved, call->in[2], dqkv, dtemperature);
    cx_aligned_free(out);
    cx_aligned_free(saved);
    return CX_OK;
}

static cx_status op_posenc_fourier(cx_op_call *call) {
    const char *op = "posenc_fourier";
    if (call->backward)
        return cx_fail(CX_EINVAL, "%s has no backward (a constant of the shape)", op);
    CX_TRY(cx_op_expect_inputs(call, op, 0, 3, 1));
    int64_t hidden = call->iargs[0], h = call->iargs[1], w = call->iargs[2];
    if (hidden < 1 || h < 1 || w < 1)
        return cx_fail(CX_EINVAL, "%s: hidden, h and w must be positive, got %lld, %lld, %lld",
                       op, (long long)hidden, (long long)h, (long long)w);
    int64_t shape[3] = {2 * hidden, h, w};
    float *out = call->alloc_out(call, 0, 3, shape);
    if (!out)
        return cx_fail(CX_ENOMEM, "%s: cannot allocate out", op);
    cpu_posenc_fourier(cx_backend_cpu(), (int)hidden, (float)call->fargs[0], (int)h, (int)w, out);
    return CX_OK;
}

const cx_op_entry cx_op_entries_attention[] = {
    {"xca", op_xca},
    {"posenc_fourier", op_posenc_fourier},
    {NULL, NULL},
};
