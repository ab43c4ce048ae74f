/* Op-test entries of the linear op and the GEMM behind it (see op_runner.h).
 *   linear  [x (rows, in), w (out, in), bias (out) (optional: empty or left off)]
 *           -> [y (rows, out)];  backward [x, w, (bias,) dy] -> [dx, dw, (dbias)]
 *   gemm    a CPU routine, not a table op (CPU backend only), forward only:
 *           [A, B, C] or [A, B], iargs (trans_a, trans_b[, isa]), fargs (alpha, beta)
 *           -> [alpha op(A) op(B) + beta C]; [A, B] takes C as zeros (what bench/gemm.py
 *           times). A [M, K] ([K, M] with trans_a), B [K, N] ([N, K] with trans_b), C [M, N].
 *           isa: 0 auto, 1 portable, 2 AVX2, 3 AVX-512 micro-kernels. */
#include "op_runner.h"
#include "../cpu/gemm.h"

#include <string.h>

static cx_status run_linear(cx_op_run *r) {
    cx_backend *be = r->be;
    CX_TRY(cx_run_args(r, 0, 0));
    const cx_op_call *c = r->call;
    CX_TRY(cx_run_rank(r, 0, 2));
    CX_TRY(cx_run_rank(r, 1, 2));
    int rows = 0, in_f = 0, out_f = 0;
    CX_TRY(cx_run_int(r, c->in_shape[0][0], 0, "rows", &rows));
    CX_TRY(cx_run_int(r, c->in_shape[0][1], 1, "in_features", &in_f));
    CX_TRY(cx_run_int(r, c->in_shape[1][0], 1, "out_features", &out_f));
    if (c->in_shape[1][1] != in_f)
        return cx_fail(CX_EINVAL, "%s: w has %lld input features, x has %d", r->op,
                       (long long)c->in_shape[1][1], in_f);
    if (r->n_fwd == 3 && cx_run_numel(r, 2) != 0)
        CX_TRY(cx_run_vector(r, 2, out_f));
    const float *x = NULL, *w = NULL, *bias = NULL, *dy = NULL;
    float *y = NULL, *dx = NULL, *dw = NULL, *dbias = NULL;
    CX_TRY(cx_run_input(r, 0, &x));
    CX_TRY(cx_run_input(r, 1, &w));
    CX_TRY(cx_run_input(r, 2, &bias));
    int64_t y_shape[2] = {rows, out_f};
    if (!c->backward) {
        CX_TRY(cx_run_output(r, 2, y_shape, NULL, &y));
        if (rows)
            be->linear_forward(be, rows, in_f, out_f, x, w, bias, y);
        return CX_OK;
    }
    CX_TRY(cx_run_dy(r, 0, (size_t)rows * (size_t)out_f, &dy));
    CX_TRY(cx_run_gradient(r, 0, &dx));
    CX_TRY(cx_run_gradient(r, 1, &dw));
    CX_TRY(cx_run_gradient(r, 2, &dbias));
    if (rows)
        be->linear_backward(be, rows, in_f, out_f, x, w, dy, dx, dw, dbias);
    return CX_OK;
}

static cx_status run_gemm(cx_op_run *r) {
    const cx_op_call *c = r->call;
    if ((c->n_iargs != 2 && c->n_iargs != 3) || c->n_fargs != 2)
        return cx_fail(CX_EINVAL, "gemm takes iargs (trans_a, trans_b[, isa]) and fargs "
                       "(alpha, beta)");
    if (c->n_in != 2 && c->n_in != 3)
        return cx_fail(CX_EINVAL, "gemm takes inputs [A, B, C] or [A, B]");
    r->n_fwd = c->n_in;
    int has_c = c->n_in == 3;
    for (int i = 0; i < c->n_in; i++)
        CX_TRY(cx_run_rank(r, i, 2));
    int trans_a = (int)c->iargs[0], trans_b = (int)c->iargs[1];
    int isa = c->n_iargs == 3 ? (int)c->iargs[2] : 0;
    int64_t M = trans_a ? c->in_shape[0][1] : c->in_shape[0][0];
    int64_t K = trans_a ? c->in_shape[0][0] : c->in_shape[0][1];
    int64_t KB = trans_b ? c->in_shape[1][1] : c->in_shape[1][0];
    int64_t N = trans_b ? c->in_shape[1][0] : c->in_shape[1][1];
    if (KB != K)
        return cx_fail(CX_EINVAL, "gemm: op(A) is %lld x %lld but op(B) has %lld rows",
                       (long long)M, (long long)K, (long long)KB);
    if (has_c && (c->in_shape[2][0] != M || c->in_shape[2][1] != N))
        return cx_fail(CX_EINVAL, "gemm: C is %lld x %lld, expected %lld x %lld",
                       (long long)c->in_shape[2][0], (long long)c->in_shape[2][1],
                       (long long)M, (long long)N);
    /* A CPU routine on host memory: it reads the inputs in place and writes the returned
     * array directly (no backend copies inside what bench/gemm.py times). */
    int64_t shape[2] = {M, N};
    float *out = r->call->alloc_out(r->call, 0, 2, shape);
    if (!out)
        return cx_fail(CX_ENOMEM, "gemm: cannot allocate the output");
    if (has_c)
        memcpy(out, c->in[2], (size_t)(M * N) * sizeof(float));
    if (isa && cx_gemm_force_isa(isa) != 0)
        return cx_fail(CX_EINVAL, "gemm: this CPU cannot run micro-kernel level %d", isa);
    cx_gemm(trans_a, trans_b, (int)M, (int)N, (int)K, (float)c->fargs[0], c->in[0],
            (int)c->in_shape[0][1], c->in[1], (int)c->in_shape[1][1],
            has_c ? (float)c->fargs[1] : 0.0f, out, (int)N);
    if (isa)
        cx_gemm_force_isa(0);
    return CX_OK;
}

#define OP CX_RUN_OP
const cx_op_entry cx_run_entries_linear[] = {
    {"linear", 1, 0, 2, 3, OP(linear_forward), OP(linear_backward), 0, run_linear},
    {"gemm", 1, 0, 2, 3, 0, 0, 1, run_gemm},
    {NULL, 0, 0, 0, 0, 0, 0, 0, NULL},
};
