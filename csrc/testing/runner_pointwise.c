/* Op-test entries of the pointwise ops (see op_runner.h for the calling convention).
 *   gelu, sigmoid   [x] -> [y];                   backward [x, dy] -> [dx]
 *   softmax         [x (..., cols)] -> [y];       backward [x, dy] -> [dx]
 *   add, mul        [a, b] (same shape) -> [y];   backward [a, b, dy] -> [da, db]
 *                   (add's backward is two axpys: the table has no add_backward)
 *   affine          [x] fargs (alpha, beta) -> [alpha x + beta]; backward [x, dy] -> [dx]
 *                   (an axpy)
 *   axpy            [x, y] fargs (alpha) -> [y + alpha x]  (forward only) */
#include "op_runner.h"

static cx_status unary(cx_op_run *r, int is_gelu) {
    cx_backend *be = r->be;
    CX_TRY(cx_run_args(r, 0, 0));
    const cx_op_call *c = r->call;
    size_t n = (size_t)cx_run_numel(r, 0);
    const float *x = NULL, *dy = NULL;
    float *y = NULL, *dx = NULL;
    CX_TRY(cx_run_input(r, 0, &x));
    if (!c->backward) {
        CX_TRY(cx_run_output(r, c->in_ndim[0], c->in_shape[0], NULL, &y));
        if (n)
            (is_gelu ? be->gelu_forward : be->sigmoid_forward)(be, n, x, y);
        return CX_OK;
    }
    CX_TRY(cx_run_dy(r, 0, n, &dy));
    CX_TRY(cx_run_gradient(r, 0, &dx));
    if (!n)
        return CX_OK;
    if (is_gelu) {
        be->gelu_backward(be, n, x, dy, dx);
    } else {
        CX_TRY(cx_run_scratch(r, n, &y));
        be->sigmoid_forward(be, n, x, y);
        be->sigmoid_backward(be, n, y, dy, dx);
    }
    return CX_OK;
}
static cx_status run_gelu(cx_op_run *r) { return unary(r, 1); }
static cx_status run_sigmoid(cx_op_run *r) { return unary(r, 0); }

static cx_status run_softmax(cx_op_run *r) {
    cx_backend *be = r->be;
    CX_TRY(cx_run_args(r, 0, 0));
    const cx_op_call *c = r->call;
    if (c->in_ndim[0] < 1 || c->in_shape[0][c->in_ndim[0] - 1] < 1)
        return cx_fail(CX_EINVAL, "%s: x needs a non-empty last dimension", r->op);
    int64_t n = cx_run_numel(r, 0);
    int rows = 0, cols = 0;
    CX_TRY(cx_run_int(r, c->in_shape[0][c->in_ndim[0] - 1], 1, "cols", &cols));
    CX_TRY(cx_run_int(r, n / cols, 0, "rows", &rows));
    const float *x = NULL, *dy = NULL;
    float *y = NULL, *dx = NULL;
    CX_TRY(cx_run_input(r, 0, &x));
    if (!c->backward) {
        CX_TRY(cx_run_output(r, c->in_ndim[0], c->in_shape[0], NULL, &y));
        if (rows)
            be->softmax_forward(be, rows, cols, x, y);
        return CX_OK;
    }
    CX_TRY(cx_run_dy(r, 0, (size_t)n, &dy));
    CX_TRY(cx_run_gradient(r, 0, &dx));
    CX_TRY(cx_run_scratch(r, (size_t)n, &y));
    if (rows) {
        be->softmax_forward(be, rows, cols, x, y);
        be->softmax_backward(be, rows, cols, y, dy, dx);
    }
    return CX_OK;
}

static cx_status binary(cx_op_run *r, int is_mul) {
    cx_backend *be = r->be;
    CX_TRY(cx_run_args(r, 0, 0));
    const cx_op_call *c = r->call;
    CX_TRY(cx_run_same_shape(r, 0, 1));
    size_t n = (size_t)cx_run_numel(r, 0);
    const float *a = NULL, *b = NULL, *dy = NULL;
    float *y = NULL, *da = NULL, *db = NULL;
    CX_TRY(cx_run_input(r, 0, &a));
    CX_TRY(cx_run_input(r, 1, &b));
    if (!c->backward) {
        CX_TRY(cx_run_output(r, c->in_ndim[0], c->in_shape[0], NULL, &y));
        if (n)
            (is_mul ? be->mul_forward : be->add)(be, n, a, b, y);
        return CX_OK;
    }
    CX_TRY(cx_run_dy(r, 0, n, &dy));
    CX_TRY(cx_run_gradient(r, 0, &da));
    CX_TRY(cx_run_gradient(r, 1, &db));
    if (!n)
        return CX_OK;
    if (is_mul) {
        be->mul_backward(be, n, a, b, dy, da, db);
    } else {
        if (da)
            be->axpy(be, n, 1.0f, dy, da);
        if (db)
            be->axpy(be, n, 1.0f, dy, db);
    }
    return CX_OK;
}
static cx_status run_add(cx_op_run *r) { return binary(r, 0); }
static cx_status run_mul(cx_op_run *r) { return binary(r, 1); }

static cx_status run_affine(cx_op_run *r) {
    cx_backend *be = r->be;
    CX_TRY(cx_run_args(r, 0, 2));
    const cx_op_call *c = r->call;
    size_t n = (size_t)cx_run_numel(r, 0);
    float alpha = (float)c->fargs[0], beta = (float)c->fargs[1];
    const float *x = NULL, *dy = NULL;
    float *y = NULL, *dx = NULL;
    if (!c->backward) {
        CX_TRY(cx_run_input(r, 0, &x));
        CX_TRY(cx_run_output(r, c->in_ndim[0], c->in_shape[0], NULL, &y));
        if (n)
            be->affine(be, n, alpha, beta, x, y);
        return CX_OK;
    }
    CX_TRY(cx_run_dy(r, 0, n, &dy));
    CX_TRY(cx_run_gradient(r, 0, &dx));
    if (n && dx)
        be->axpy(be, n, alpha, dy, dx);
    return CX_OK;
}

static cx_status run_axpy(cx_op_run *r) {
    CX_TRY(cx_run_args(r, 0, 1));
    const cx_op_call *c = r->call;
    CX_TRY(cx_run_same_shape(r, 0, 1));
    size_t n = (size_t)cx_run_numel(r, 0);
    const float *x = NULL;
    float *y = NULL;
    CX_TRY(cx_run_input(r, 0, &x));
    CX_TRY(cx_run_output(r, c->in_ndim[1], c->in_shape[1], c->in[1], &y));
    if (n)
        r->be->axpy(r->be, n, (float)c->fargs[0], x, y);
    return CX_OK;
}

#define OP CX_RUN_OP
const cx_op_entry cx_run_entries_pointwise[] = {
    {"gelu", 1, 0, 1, 1, OP(gelu_forward), OP(gelu_backward), 0, run_gelu},
    {"sigmoid", 1, 0, 1, 1, OP(sigmoid_forward), OP(sigmoid_forward) | OP(sigmoid_backward), 0,
     run_sigmoid},
    {"softmax", 1, 0, 1, 1, OP(softmax_forward), OP(softmax_forward) | OP(softmax_backward), 0,
     run_softmax},
    {"add", 1, 0, 2, 2, OP(add), OP(axpy), 0, run_add},
    {"mul", 1, 0, 2, 2, OP(mul_forward), OP(mul_backward), 0, run_mul},
    {"affine", 1, 0, 1, 1, OP(affine), OP(axpy), 0, run_affine},
    {"axpy", 1, 0, 2, 2, OP(axpy), 0, 0, run_axpy},
    {NULL, 0, 0, 0, 0, 0, 0, 0, NULL},
};
