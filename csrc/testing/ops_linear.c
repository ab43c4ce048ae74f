/* Test wrappers for the linear ops and the GEMM behind them (see op_call.h).
 *
 * "gemm"   forward only. inputs [A, B, C], iargs (trans_a, trans_b[, isa]),
 *          fargs (alpha, beta) -> [alpha op(A) op(B) + beta C]; inputs [A, B] take C as
 *          zeros (no copy of C: what bench/gemm.py times).
 *          A [M, K] ([K, M] with trans_a), B [K, N] ([N, K] with trans_b), C [M, N].
 *          isa (optional): 0 auto, 1 portable, 2 AVX2, 3 AVX-512 micro-kernels.
 * "linear" inputs [x (rows, in), w (out, in)] or [x, w, bias (out)] -> [y (rows, out)];
 *          backward inputs [x, w, (bias,) dy] -> [dx, dw, (dbias)]. */
#include <string.h>

#include "op_call.h"
#include "../cpu/cpu_ops.h"
#include "../cpu/gemm.h"

static cx_status op_gemm(cx_op_call *call) {
    if (call->backward)
        return cx_fail(CX_EINVAL, "gemm has no backward");
    if ((call->n_in != 3 && call->n_in != 2) || (call->n_iargs != 2 && call->n_iargs != 3) ||
        call->n_fargs != 2)
        return cx_fail(CX_EINVAL,
                       "gemm takes inputs [A, B, C] or [A, B], iargs (trans_a, trans_b[, isa]) "
                       "and fargs (alpha, beta)");
    int has_c = call->n_in == 3;
    for (int i = 0; i < call->n_in; i++)
        CX_TRY(cx_op_expect_rank(call, "gemm", i, 2));
    int trans_a = (int)call->iargs[0], trans_b = (int)call->iargs[1];
    int isa = call->n_iargs == 3 ? (int)call->iargs[2] : 0;
    int64_t M = trans_a ? call->in_shape[0][1] : call->in_shape[0][0];
    int64_t K = trans_a ? call->in_shape[0][0] : call->in_shape[0][1];
    int64_t KB = trans_b ? call->in_shape[1][1] : call->in_shape[1][0];
    int64_t N = trans_b ? call->in_shape[1][0] : call->in_shape[1][1];
    if (KB != K)
        return cx_fail(CX_EINVAL, "gemm: op(A) is %lld x %lld but op(B) has %lld rows",
                       (long long)M, (long long)K, (long long)KB);
    if (has_c && (call->in_shape[2][0] != M || call->in_shape[2][1] != N))
        return cx_fail(CX_EINVAL, "gemm: C is %lld x %lld, expected %lld x %lld",
                       (long long)call->in_shape[2][0], (long long)call->in_shape[2][1],
                       (long long)M, (long long)N);
    int64_t shape[2] = {M, N};
    float *c = call->alloc_out(call, 0, 2, shape);
    if (!c)
        return cx_fail(CX_ENOMEM, "gemm: cannot allocate the output");
    if (has_c)
        memcpy(c, call->in[2], (size_t)(M * N) * sizeof(float));
    if (isa && cx_gemm_force_isa(isa) != 0)
        return cx_fail(CX_EINVAL, "gemm: this CPU cannot run micro-kernel level %d", isa);
    cx_gemm(trans_a, trans_b, (int)M, (int)N, (int)K, (float)call->fargs[0],
            call->in[0], (int)call->in_shape[0][1], call->in[1], (int)call->in_shape[1][1],
            has_c ? (float)call->fargs[1] : 0.0f, c, (int)N);
    if (isa)
        cx_gemm_force_isa(0);
    return CX_OK;
}

static cx_status op_linear(cx_op_call *call) {
    int n_fwd = call->backward ? call->n_in - 1 : call->n_in;
    if ((n_fwd != 2 && n_fwd != 3) || call->n_iargs != 0 || call->n_fargs != 0)
        return cx_fail(CX_EINVAL, "linear takes inputs [x, w] or [x, w, bias] (plus dy for "
                                  "backward) and no arguments");
    int has_bias = n_fwd == 3;
    CX_TRY(cx_op_expect_rank(call, "linear", 0, 2));
    CX_TRY(cx_op_expect_rank(call, "linear", 1, 2));
    int64_t rows = call->in_shape[0][0], in_f = call->in_shape[0][1];
    int64_t out_f = call->in_shape[1][0];
    if (call->in_shape[1][1] != in_f)
        return cx_fail(CX_EINVAL, "linear: w has %lld input features, x has %lld",
                       (long long)call->in_shape[1][1], (long long)in_f);
    if (has_bias) {
        CX_TRY(cx_op_expect_rank(call, "linear", 2, 1));
        if (call->in_shape[2][0] != out_f)
            return cx_fail(CX_EINVAL, "linear: bias has %lld entries, expected %lld",
                           (long long)call->in_shape[2][0], (long long)out_f);
    }
    const float *x = call->in[0], *w = call->in[1], *bias = has_bias ? call->in[2] : NULL;
    cx_backend *be = cx_backend_cpu();
    if (!call->backward) {
        int64_t shape[2] = {rows, out_f};
        float *y = call->alloc_out(call, 0, 2, shape);
        if (!y)
            return cx_fail(CX_ENOMEM, "linear: cannot allocate the output");
        cpu_linear_forward(be, (int)rows, (int)in_f, (int)out_f, x, w, bias, y);
        return CX_OK;
    }
    int dy_index = n_fwd;
    CX_TRY(cx_op_expect_rank(call, "linear", dy_index, 2));
    if (call->in_shape[dy_index][0] != rows || call->in_shape[dy_index][1] != out_f)
        return cx_fail(CX_EINVAL, "linear backward: dy must be %lld x %lld", (long long)rows,
                       (long long)out_f);
    float *dx = call->alloc_out(call, 0, 2, call->in_shape[0]);
    float *dw = dx ? call->alloc_out(call, 1, 2, call->in_shape[1]) : NULL;
    float *dbias = (dw && has_bias) ? call->alloc_out(call, 2, 1, call->in_shape[2]) : NULL;
    if (!dx || !dw || (has_bias && !dbias))
        return cx_fail(CX_ENOMEM, "linear backward: cannot allocate the gradients");
    cpu_linear_backward(be, (int)rows, (int)in_f, (int)out_f, x, w, call->in[dy_index], dx, dw,
                        dbias);
    return CX_OK;
}

const cx_op_entry cx_op_entries_linear[] = {
    {"gemm", op_gemm},
    {"linear", op_linear},
    {NULL, NULL},
};
