/* Op-test entries of the attention ops (see op_runner.h).
 *   xca             [qkv (B, N, 3C), temperature (heads)] iargs (heads)
 *                   -> [out (B, N, C), saved (xca_saved_floats)];
 *                   backward [qkv, temperature, dout] -> [dqkv, dtemperature]
 *                   (reruns the forward for `saved`)
 *   posenc_fourier  [] iargs (hidden, h, w) fargs (temperature) -> [out (2*hidden, h, w)]
 *                   (a constant of the shape: forward only) */
#include "op_runner.h"

static cx_status run_xca(cx_op_run *r) {
    cx_backend *be = r->be;
    CX_TRY(cx_run_args(r, 1, 0));
    const cx_op_call *c = r->call;
    CX_TRY(cx_run_rank(r, 0, 3));
    CX_TRY(cx_run_rank(r, 1, 1));
    const int64_t *qkv_shape = c->in_shape[0];
    int64_t heads = c->iargs[0], channels = qkv_shape[2] / 3;
    if (heads < 1 || channels < 1 || qkv_shape[2] % 3 != 0 || channels % heads != 0)
        return cx_fail(CX_EINVAL, "%s: qkv last dim %lld must be 3*C with C divisible by heads "
                       "%lld", r->op, (long long)qkv_shape[2], (long long)heads);
    int batch = 0, tokens = 0, ch = 0, nh = 0;
    CX_TRY(cx_run_int(r, qkv_shape[0], 1, "batch", &batch));
    CX_TRY(cx_run_int(r, qkv_shape[1], 1, "tokens", &tokens));
    CX_TRY(cx_run_int(r, channels, 1, "channels", &ch));
    CX_TRY(cx_run_int(r, heads, 1, "heads", &nh));
    if (c->in_shape[1][0] != heads)
        return cx_fail(CX_EINVAL, "%s: temperature has %lld entries, expected heads = %lld", r->op,
                       (long long)c->in_shape[1][0], (long long)heads);
    int64_t out_shape[3] = {batch, tokens, ch};
    size_t n_out = (size_t)batch * (size_t)tokens * (size_t)ch;
    size_t n_saved = cx_xca_saved_floats(batch, tokens, ch, nh);
    const float *qkv = NULL, *temperature = NULL, *dout = NULL;
    float *out = NULL, *saved = NULL, *dqkv = NULL, *dtemperature = NULL;
    CX_TRY(cx_run_input(r, 0, &qkv));
    CX_TRY(cx_run_input(r, 1, &temperature));
    if (!c->backward) {
        int64_t saved_shape[1] = {(int64_t)n_saved};
        CX_TRY(cx_run_output(r, 3, out_shape, NULL, &out));
        CX_TRY(cx_run_output(r, 1, saved_shape, NULL, &saved));
        be->xca_forward(be, batch, tokens, ch, nh, qkv, temperature, out, saved);
        return CX_OK;
    }
    const int64_t *ds = c->in_shape[r->dy_base];
    if (c->in_ndim[r->dy_base] != 3 || ds[0] != batch || ds[1] != tokens || ds[2] != ch)
        return cx_fail(CX_EINVAL, "%s: dout must be (%d,%d,%d)", r->op, batch, tokens, ch);
    CX_TRY(cx_run_dy(r, 0, n_out, &dout));
    CX_TRY(cx_run_scratch(r, n_out, &out));
    CX_TRY(cx_run_scratch(r, n_saved, &saved));
    CX_TRY(cx_run_gradient(r, 0, &dqkv));
    CX_TRY(cx_run_gradient(r, 1, &dtemperature));
    be->xca_forward(be, batch, tokens, ch, nh, qkv, temperature, out, saved);
    be->xca_backward(be, batch, tokens, ch, nh, qkv, temperature, saved, dout, dqkv,
                     dtemperature);
    return CX_OK;
}

static cx_status run_posenc_fourier(cx_op_run *r) {
    CX_TRY(cx_run_args(r, 3, 1));
    const int64_t *ia = r->call->iargs;
    int hidden = 0, h = 0, w = 0;
    CX_TRY(cx_run_int(r, ia[0], 1, "hidden", &hidden));
    CX_TRY(cx_run_int(r, ia[1], 1, "h", &h));
    CX_TRY(cx_run_int(r, ia[2], 1, "w", &w));
    int64_t shape[3] = {2 * (int64_t)hidden, h, w};
    float *out = NULL;
    CX_TRY(cx_run_output(r, 3, shape, NULL, &out));
    r->be->posenc_fourier(r->be, hidden, (float)r->call->fargs[0], h, w, out);
    return CX_OK;
}

#define OP CX_RUN_OP
const cx_op_entry cx_run_entries_attention[] = {
    {"xca", 1, 1, 2, 2, OP(xca_forward), OP(xca_forward) | OP(xca_backward), 0, run_xca},
    {"posenc_fourier", 1, 0, 0, 0, OP(posenc_fourier), 0, 0, run_posenc_fourier},
    {NULL, 0, 0, 0, 0, 0, 0, 0, NULL},
};
