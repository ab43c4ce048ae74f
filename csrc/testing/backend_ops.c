/* Test access: single ops on any backend's table (CPU or CUDA), uploading inputs and
 * downloading outputs, so tests/gpu can compare the CUDA backend with the CPU backend
 * through the same calls (declared in backend_ops.h). */
#include "backend_ops.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>


#define RUN_MAX_BUFFERS 24

typedef struct {
    cx_backend *be;
    cx_op_call *call;
    const char *op;
    void *buffers[RUN_MAX_BUFFERS]; /* backend memory to free at the end */
    int n_buffers;
    float *out_host[CX_OPCALL_MAX_TENSORS];
    float *out_device[CX_OPCALL_MAX_TENSORS];
    size_t out_numel[CX_OPCALL_MAX_TENSORS];
    int n_out;
} op_run;

static int64_t run_numel(const op_run *r, int i) { return cx_op_numel(r->call, i); }

static cx_status run_alloc(op_run *r, size_t n_floats, float **out) {
    if (r->n_buffers == RUN_MAX_BUFFERS)
        return cx_fail(CX_EINVAL, "%s: too many buffers", r->op);
    void *ptr = r->be->alloc(r->be, (n_floats ? n_floats : 1) * sizeof(float));
    if (!ptr)
        return cx_fail(CX_ENOMEM, "%s: %s backend could not allocate %zu floats", r->op,
                       r->be->name, n_floats);
    r->buffers[r->n_buffers++] = ptr;
    *out = ptr;
    return CX_OK;
}

/* Input i in backend memory; NULL when `optional` and the input is empty. */
static cx_status run_input(op_run *r, int i, int optional, const float **out) {
    size_t n = (size_t)run_numel(r, i);
    if (n == 0 && optional) {
        *out = NULL;
        return CX_OK;
    }
    float *dev = NULL;
    CX_TRY(run_alloc(r, n, &dev));
    if (n)
        r->be->upload(r->be, dev, r->call->in[i], n);
    *out = dev;
    return CX_OK;
}

/* The next output, in backend memory: zeroed, or holding host `start`. With `absent`
 * the output is an empty array and *out is NULL (a NULL gradient). */
static cx_status run_output(op_run *r, int ndim, const int64_t *shape, const float *start,
                            int absent, float **out) {
    int64_t empty_shape[1] = {0};
    if (absent) {
        ndim = 1;
        shape = empty_shape;
    }
    int index = r->n_out;
    if (index == CX_OPCALL_MAX_TENSORS)
        return cx_fail(CX_EINVAL, "%s: too many outputs", r->op);
    size_t n = 1;
    for (int d = 0; d < ndim; d++)
        n *= (size_t)shape[d];
    float *host = r->call->alloc_out(r->call, index, ndim, shape);
    if (!host)
        return cx_fail(CX_ENOMEM, "%s: could not allocate output %d", r->op, index);
    float *dev = NULL;
    if (!absent) {
        CX_TRY(run_alloc(r, n, &dev));
        if (start && n)
            r->be->upload(r->be, dev, start, n);
        else if (n)
            r->be->zero(r->be, dev, n);
    }
    r->out_host[index] = host;
    r->out_device[index] = dev;
    r->out_numel[index] = absent ? 0 : n;
    r->n_out++;
    *out = dev;
    return CX_OK;
}

/* Gradient output for forward input i of a backward call whose starting gradients
 * (if any) begin at input `start_base`. */
static cx_status run_gradient(op_run *r, int i, int start_base, float **out) {
    const cx_op_call *c = r->call;
    const float *start = NULL;
    int absent = run_numel(r, i) == 0; /* an empty optional input has no gradient */
    if (c->n_in > start_base) {
        int s = start_base + i;
        if (cx_op_numel(c, s) == 0) {
            absent = 1;
        } else {
            if (cx_op_numel(c, s) != run_numel(r, i))
                return cx_fail(CX_EINVAL, "%s backward: starting gradient %d has %lld values, "
                               "input %d has %lld", r->op, i, (long long)cx_op_numel(c, s), i,
                               (long long)run_numel(r, i));
            start = c->in[s];
        }
    }
    return run_output(r, c->in_ndim[i], c->in_shape[i], start, absent, out);
}

static cx_status run_finish(op_run *r, cx_status status) {
    if (status == CX_OK)
        for (int i = 0; i < r->n_out; i++)
            if (r->out_numel[i])
                r->be->download(r->be, r->out_host[i], r->out_device[i], r->out_numel[i]);
    char first_error[512] = "";
    if (status != CX_OK) /* keep the message: the sync below may record another one */
        snprintf(first_error, sizeof first_error, "%s", cx_last_error());
    cx_status synced = r->be->sync(r->be); /* also when failing: drain queued work */
    for (int i = r->n_buffers - 1; i >= 0; i--)
        r->be->free(r->be, r->buffers[i]);
    if (status != CX_OK)
        return cx_fail(status, "%s", first_error);
    return synced;
}

/* Backward calls: forward inputs, n_grads output gradients, optional starting grads. */
static cx_status run_expect_backward(op_run *r, int n_fwd, int n_grads, int n_iargs,
                                     int n_fargs) {
    const cx_op_call *c = r->call;
    if (c->n_in != n_fwd + n_grads && c->n_in != 2 * n_fwd + n_grads)
        return cx_fail(CX_EINVAL, "%s backward takes %d forward inputs and %d output gradients "
                       "(then optionally %d starting gradients), got %d arrays", r->op, n_fwd,
                       n_grads, n_fwd, c->n_in);
    if (c->n_iargs != n_iargs || c->n_fargs != n_fargs)
        return cx_fail(CX_EINVAL, "%s takes %d integer and %d float arguments, got %d and %d",
                       r->op, n_iargs, n_fargs, c->n_iargs, c->n_fargs);
    return CX_OK;
}

static cx_status run_same_size(op_run *r, int i, int j) {
    if (run_numel(r, i) != run_numel(r, j))
        return cx_fail(CX_EINVAL, "%s: input %d has %lld values, input %d has %lld", r->op, i,
                       (long long)run_numel(r, i), j, (long long)run_numel(r, j));
    return CX_OK;
}

static cx_status run_dim_is(op_run *r, int i, int d, int64_t want, const char *what) {
    if (r->call->in_ndim[i] <= d || r->call->in_shape[i][d] != want)
        return cx_fail(CX_EINVAL, "%s: %s must have size %lld in dim %d", r->op, what,
                       (long long)want, d);
    return CX_OK;
}

static cx_status run_int(op_run *r, int64_t value, const char *what, int *out) {
    if (value < 0 || value > 0x7fffffff)
        return cx_fail(CX_EINVAL, "%s: %s = %lld is out of range", r->op, what, (long long)value);
    *out = (int)value;
    return CX_OK;
}

/* ---- pointwise ---- */

static cx_status run_unary(op_run *r, int is_gelu) {
    const cx_op_call *c = r->call;
    cx_backend *be = r->be;
    const float *x = NULL, *dy = NULL;
    float *y = NULL, *dx = NULL;
    size_t n = (size_t)run_numel(r, 0);
    if (!c->backward) {
        CX_TRY(cx_op_expect_inputs(c, r->op, 1, 0, 0));
        CX_TRY(run_input(r, 0, 0, &x));
        CX_TRY(run_output(r, c->in_ndim[0], c->in_shape[0], NULL, 0, &y));
        (is_gelu ? be->gelu_forward : be->sigmoid_forward)(be, n, x, y);
        return CX_OK;
    }
    CX_TRY(run_expect_backward(r, 1, 1, 0, 0));
    CX_TRY(run_same_size(r, 0, 1));
    CX_TRY(run_input(r, 0, 0, &x));
    CX_TRY(run_input(r, 1, 0, &dy));
    CX_TRY(run_gradient(r, 0, 2, &dx));
    if (is_gelu) {
        be->gelu_backward(be, n, x, dy, dx);
    } else {
        float *sig = NULL;
        CX_TRY(run_alloc(r, n, &sig));
        be->sigmoid_forward(be, n, x, sig);
        be->sigmoid_backward(be, n, sig, dy, dx);
    }
    return CX_OK;
}
static cx_status run_gelu(op_run *r) { return run_unary(r, 1); }
static cx_status run_sigmoid(op_run *r) { return run_unary(r, 0); }

static cx_status run_add(op_run *r) {
    const cx_op_call *c = r->call;
    const float *a = NULL, *b = NULL;
    float *y = NULL;
    if (c->backward)
        return cx_fail(CX_EINVAL, "add has no backward op (its gradient is axpy)");
    CX_TRY(cx_op_expect_inputs(c, r->op, 2, 0, 0));
    CX_TRY(run_same_size(r, 0, 1));
    CX_TRY(run_input(r, 0, 0, &a));
    CX_TRY(run_input(r, 1, 0, &b));
    CX_TRY(run_output(r, c->in_ndim[0], c->in_shape[0], NULL, 0, &y));
    r->be->add(r->be, (size_t)run_numel(r, 0), a, b, y);
    return CX_OK;
}

static cx_status run_axpy(op_run *r) {
    const cx_op_call *c = r->call;
    const float *x = NULL;
    float *y = NULL;
    if (c->backward)
        return cx_fail(CX_EINVAL, "axpy is forward only");
    CX_TRY(cx_op_expect_inputs(c, r->op, 2, 0, 1));
    CX_TRY(run_same_size(r, 0, 1));
    CX_TRY(run_input(r, 0, 0, &x));
    CX_TRY(run_output(r, c->in_ndim[1], c->in_shape[1], c->in[1], 0, &y));
    r->be->axpy(r->be, (size_t)run_numel(r, 0), (float)c->fargs[0], x, y);
    return CX_OK;
}

static cx_status run_affine(op_run *r) {
    const cx_op_call *c = r->call;
    const float *x = NULL;
    float *y = NULL;
    if (c->backward)
        return cx_fail(CX_EINVAL, "affine is forward only");
    CX_TRY(cx_op_expect_inputs(c, r->op, 1, 0, 2));
    CX_TRY(run_input(r, 0, 0, &x));
    CX_TRY(run_output(r, c->in_ndim[0], c->in_shape[0], NULL, 0, &y));
    r->be->affine(r->be, (size_t)run_numel(r, 0), (float)c->fargs[0], (float)c->fargs[1], x, y);
    return CX_OK;
}

static cx_status run_mul(op_run *r) {
    const cx_op_call *c = r->call;
    const float *a = NULL, *b = NULL, *dy = NULL;
    float *y = NULL, *da = NULL, *db = NULL;
    size_t n = (size_t)run_numel(r, 0);
    if (!c->backward) {
        CX_TRY(cx_op_expect_inputs(c, r->op, 2, 0, 0));
        CX_TRY(run_same_size(r, 0, 1));
        CX_TRY(run_input(r, 0, 0, &a));
        CX_TRY(run_input(r, 1, 0, &b));
        CX_TRY(run_output(r, c->in_ndim[0], c->in_shape[0], NULL, 0, &y));
        r->be->mul_forward(r->be, n, a, b, y);
        return CX_OK;
    }
    CX_TRY(run_expect_backward(r, 2, 1, 0, 0));
    CX_TRY(run_same_size(r, 0, 1));
    CX_TRY(run_same_size(r, 0, 2));
    CX_TRY(run_input(r, 0, 0, &a));
    CX_TRY(run_input(r, 1, 0, &b));
    CX_TRY(run_input(r, 2, 0, &dy));
    CX_TRY(run_gradient(r, 0, 3, &da));
    CX_TRY(run_gradient(r, 1, 3, &db));
    r->be->mul_backward(r->be, n, a, b, dy, da, db);
    return CX_OK;
}

/* ---- normalisation ---- */

/* layernorm (is_2d 0): x [rows, cols]; layernorm2d: x [batch, channels, ...spatial]. */
static cx_status run_layernorm_family(op_run *r, int is_2d) {
    const cx_op_call *c = r->call;
    cx_backend *be = r->be;
    if (c->backward)
        CX_TRY(run_expect_backward(r, 3, 1, 0, 1));
    else
        CX_TRY(cx_op_expect_inputs(c, r->op, 3, 0, 1));
    int outer = 0, inner = 0, hw = 1;
    if (is_2d) {
        if (c->in_ndim[0] < 2)
            return cx_fail(CX_EINVAL, "%s: x must be [batch, channels, ...], got rank %d", r->op,
                           c->in_ndim[0]);
        int64_t spatial = 1;
        for (int d = 2; d < c->in_ndim[0]; d++)
            spatial *= c->in_shape[0][d];
        CX_TRY(run_int(r, spatial, "hw", &hw));
    } else {
        CX_TRY(cx_op_expect_rank(c, r->op, 0, 2));
    }
    CX_TRY(run_int(r, c->in_shape[0][0], "rows/batch", &outer));
    CX_TRY(run_int(r, c->in_shape[0][1], "cols/channels", &inner));
    CX_TRY(cx_op_expect_rank(c, r->op, 1, 1));
    CX_TRY(cx_op_expect_rank(c, r->op, 2, 1));
    CX_TRY(run_dim_is(r, 1, 0, inner, "weight"));
    CX_TRY(run_dim_is(r, 2, 0, inner, "bias"));
    float eps = (float)c->fargs[0];
    size_t saved_n = is_2d ? cx_layernorm2d_saved_floats(outer, hw) : cx_layernorm_saved_floats(outer);
    const float *x = NULL, *w = NULL, *b = NULL, *dy = NULL;
    float *y = NULL, *saved = NULL, *dx = NULL, *dw = NULL, *db = NULL;
    CX_TRY(run_input(r, 0, 0, &x));
    CX_TRY(run_input(r, 1, 0, &w));
    CX_TRY(run_input(r, 2, 0, &b));
    if (!c->backward) {
        int64_t saved_shape[2] = {2, (int64_t)saved_n / 2};
        CX_TRY(run_output(r, c->in_ndim[0], c->in_shape[0], NULL, 0, &y));
        CX_TRY(run_output(r, 2, saved_shape, NULL, 0, &saved));
    } else {
        CX_TRY(run_same_size(r, 0, 3));
        CX_TRY(run_input(r, 3, 0, &dy));
        CX_TRY(run_alloc(r, (size_t)run_numel(r, 0), &y));
        CX_TRY(run_alloc(r, saved_n, &saved));
        CX_TRY(run_gradient(r, 0, 4, &dx));
        CX_TRY(run_gradient(r, 1, 4, &dw));
        CX_TRY(run_gradient(r, 2, 4, &db));
    }
    if (is_2d)
        be->layernorm2d_forward(be, outer, inner, hw, eps, x, w, b, y, saved);
    else
        be->layernorm_forward(be, outer, inner, eps, x, w, b, y, saved);
    if (c->backward) {
        if (is_2d)
            be->layernorm2d_backward(be, outer, inner, hw, x, w, saved, dy, dx, dw, db);
        else
            be->layernorm_backward(be, outer, inner, x, w, saved, dy, dx, dw, db);
    }
    return CX_OK;
}
static cx_status run_layernorm(op_run *r) { return run_layernorm_family(r, 0); }
static cx_status run_layernorm2d(op_run *r) { return run_layernorm_family(r, 1); }

/* ---- linear ---- */

static cx_status run_linear(op_run *r) {
    const cx_op_call *c = r->call;
    cx_backend *be = r->be;
    if (c->backward)
        CX_TRY(run_expect_backward(r, 3, 1, 0, 0));
    else
        CX_TRY(cx_op_expect_inputs(c, r->op, 3, 0, 0));
    int rows = 0, in_features = 0, out_features = 0;
    CX_TRY(cx_op_expect_rank(c, r->op, 0, 2));
    CX_TRY(cx_op_expect_rank(c, r->op, 1, 2));
    CX_TRY(run_int(r, c->in_shape[0][0], "rows", &rows));
    CX_TRY(run_int(r, c->in_shape[0][1], "in_features", &in_features));
    CX_TRY(run_int(r, c->in_shape[1][0], "out_features", &out_features));
    CX_TRY(run_dim_is(r, 1, 1, in_features, "w"));
    if (run_numel(r, 2) != 0)
        CX_TRY(run_dim_is(r, 2, 0, out_features, "bias"));
    const float *x = NULL, *w = NULL, *bias = NULL, *dy = NULL;
    float *y = NULL, *dx = NULL, *dw = NULL, *dbias = NULL;
    CX_TRY(run_input(r, 0, 0, &x));
    CX_TRY(run_input(r, 1, 0, &w));
    CX_TRY(run_input(r, 2, 1, &bias));
    int64_t y_shape[2] = {rows, out_features};
    if (!c->backward) {
        CX_TRY(run_output(r, 2, y_shape, NULL, 0, &y));
        be->linear_forward(be, rows, in_features, out_features, x, w, bias, y);
        return CX_OK;
    }
    if (run_numel(r, 3) != (int64_t)rows * out_features)
        return cx_fail(CX_EINVAL, "%s backward: dy must be [%d, %d]", r->op, rows, out_features);
    CX_TRY(run_input(r, 3, 0, &dy));
    CX_TRY(run_gradient(r, 0, 4, &dx));
    CX_TRY(run_gradient(r, 1, 4, &dw));
    CX_TRY(run_gradient(r, 2, 4, &dbias));
    be->linear_backward(be, rows, in_features, out_features, x, w, dy, dx, dw, dbias);
    return CX_OK;
}

/* ---- convolution ---- */

static cx_status run_conv2d(op_run *r) {
    const cx_op_call *c = r->call;
    cx_backend *be = r->be;
    if (c->backward)
        CX_TRY(run_expect_backward(r, 3, 1, 5, 0));
    else
        CX_TRY(cx_op_expect_inputs(c, r->op, 3, 5, 0));
    CX_TRY(cx_op_expect_rank(c, r->op, 0, 4));
    CX_TRY(cx_op_expect_rank(c, r->op, 1, 4));
    cx_conv_shape s;
    memset(&s, 0, sizeof s);
    CX_TRY(run_int(r, c->in_shape[0][0], "batch", &s.batch));
    CX_TRY(run_int(r, c->in_shape[0][1], "in_ch", &s.in_ch));
    CX_TRY(run_int(r, c->in_shape[0][2], "in_h", &s.in_h));
    CX_TRY(run_int(r, c->in_shape[0][3], "in_w", &s.in_w));
    CX_TRY(run_int(r, c->in_shape[1][0], "out_ch", &s.out_ch));
    CX_TRY(run_int(r, c->in_shape[1][2], "k_h", &s.k_h));
    CX_TRY(run_int(r, c->in_shape[1][3], "k_w", &s.k_w));
    CX_TRY(run_int(r, c->iargs[0], "stride", &s.stride));
    CX_TRY(run_int(r, c->iargs[1], "pad_h", &s.pad_h));
    CX_TRY(run_int(r, c->iargs[2], "pad_w", &s.pad_w));
    CX_TRY(run_int(r, c->iargs[3], "dilation", &s.dilation));
    CX_TRY(run_int(r, c->iargs[4], "groups", &s.groups));
    if (s.stride < 1 || s.dilation < 1 || s.groups < 1 || s.in_ch % s.groups ||
        s.out_ch % s.groups || s.k_h < 1 || s.k_w < 1)
        return cx_fail(CX_EINVAL, "%s: bad stride %d, dilation %d, groups %d or kernel %dx%d "
                       "for %d -> %d channels", r->op, s.stride, s.dilation, s.groups, s.k_h,
                       s.k_w, s.in_ch, s.out_ch);
    CX_TRY(run_dim_is(r, 1, 1, s.in_ch / s.groups, "w"));
    if (run_numel(r, 2) != 0)
        CX_TRY(run_dim_is(r, 2, 0, s.out_ch, "bias"));
    int out_h = cx_conv_out_h(&s), out_w = cx_conv_out_w(&s);
    if (out_h < 1 || out_w < 1 || s.in_h + 2 * s.pad_h < s.dilation * (s.k_h - 1) + 1 ||
        s.in_w + 2 * s.pad_w < s.dilation * (s.k_w - 1) + 1)
        return cx_fail(CX_EINVAL, "%s: the kernel does not fit the padded input", r->op);
    int64_t y_shape[4] = {s.batch, s.out_ch, out_h, out_w};
    const float *x = NULL, *w = NULL, *bias = NULL, *dy = NULL;
    float *y = NULL, *dx = NULL, *dw = NULL, *dbias = NULL;
    CX_TRY(run_input(r, 0, 0, &x));
    CX_TRY(run_input(r, 1, 0, &w));
    CX_TRY(run_input(r, 2, 1, &bias));
    if (!c->backward) {
        CX_TRY(run_output(r, 4, y_shape, NULL, 0, &y));
        be->conv2d_forward(be, &s, x, w, bias, y);
        return CX_OK;
    }
    if (run_numel(r, 3) != y_shape[0] * y_shape[1] * y_shape[2] * y_shape[3])
        return cx_fail(CX_EINVAL, "%s backward: dy must be [%d, %d, %d, %d]", r->op, s.batch,
                       s.out_ch, out_h, out_w);
    CX_TRY(run_input(r, 3, 0, &dy));
    CX_TRY(run_gradient(r, 0, 4, &dx));
    CX_TRY(run_gradient(r, 1, 4, &dw));
    CX_TRY(run_gradient(r, 2, 4, &dbias));
    be->conv2d_backward(be, &s, x, w, dy, dx, dw, dbias);
    return CX_OK;
}

/* ---- dispatch ---- */

typedef struct {
    const char *name;
    cx_status (*run)(op_run *r);
} run_entry;

static const run_entry run_entries[] = {
    {"gelu", run_gelu},           {"sigmoid", run_sigmoid},     {"add", run_add},
    {"axpy", run_axpy},           {"mul", run_mul},             {"affine", run_affine},
    {"layernorm", run_layernorm}, {"layernorm2d", run_layernorm2d},
    {"linear", run_linear},       {"conv2d", run_conv2d},
};
#define RUN_N_ENTRIES (sizeof run_entries / sizeof run_entries[0])

/* Whether `be` implements what entry `name` calls (NULL table slots are unimplemented). */
static int run_supported(const cx_backend *be, const char *name, int backward) {
#define HAVE(field) (be->field != NULL)
    if (!HAVE(alloc) || !HAVE(free) || !HAVE(zero) || !HAVE(upload) || !HAVE(download) ||
        !HAVE(sync))
        return 0;
    if (!strcmp(name, "gelu"))
        return backward ? HAVE(gelu_backward) : HAVE(gelu_forward);
    if (!strcmp(name, "sigmoid"))
        return HAVE(sigmoid_forward) && (!backward || HAVE(sigmoid_backward));
    if (!strcmp(name, "add"))
        return HAVE(add);
    if (!strcmp(name, "axpy"))
        return HAVE(axpy);
    if (!strcmp(name, "affine"))
        return HAVE(affine);
    if (!strcmp(name, "mul"))
        return backward ? HAVE(mul_backward) : HAVE(mul_forward);
    if (!strcmp(name, "layernorm"))
        return HAVE(layernorm_forward) && (!backward || HAVE(layernorm_backward));
    if (!strcmp(name, "layernorm2d"))
        return HAVE(layernorm2d_forward) && (!backward || HAVE(layernorm2d_backward));
    if (!strcmp(name, "linear"))
        return backward ? HAVE(linear_backward) : HAVE(linear_forward);
    if (!strcmp(name, "conv2d"))
        return backward ? HAVE(conv2d_backward) : HAVE(conv2d_forward);
    return 0;
#undef HAVE
}

cx_status cx_backend_op_run(cx_backend *be, const char *name, cx_op_call *call) {
    const run_entry *entry = NULL;
    for (size_t i = 0; i < RUN_N_ENTRIES; i++)
        if (!strcmp(run_entries[i].name, name))
            entry = &run_entries[i];
    if (!entry)
        return cx_fail(CX_EKEY, "no backend op named '%s'", name);
    if (!run_supported(be, name, call->backward))
        return cx_fail(CX_ERUNTIME, "the %s backend does not implement %s %s yet", be->name,
                       name, call->backward ? "backward" : "forward");
    op_run r;
    memset(&r, 0, sizeof r);
    r.be = be;
    r.call = call;
    r.op = name;
    cx_status status = entry->run(&r);
    return run_finish(&r, status);
}

void cx_backend_op_each(void (*fn)(const char *name, void *ctx), void *ctx) {
    for (size_t i = 0; i < RUN_N_ENTRIES; i++)
        fn(run_entries[i].name, ctx);
}
