/* The op-test runner: entry lookup, argument layout, backend buffers (see op_runner.h). */
#include "op_runner.h"

#include <stdio.h>
#include <string.h>

static const cx_op_entry *const families[] = {
    cx_run_entries_conv,   cx_run_entries_linear, cx_run_entries_norm,
    cx_run_entries_pointwise, cx_run_entries_layout, cx_run_entries_pool,
    cx_run_entries_attention, cx_run_entries_loss,
};
#define N_FAMILIES (sizeof families / sizeof families[0])

const cx_op_entry *cx_op_runner_find(const char *name) {
    for (size_t f = 0; f < N_FAMILIES; f++)
        for (const cx_op_entry *e = families[f]; e->name; e++)
            if (strcmp(e->name, name) == 0)
                return e;
    return NULL;
}

void cx_op_runner_each(void (*fn)(const cx_op_entry *entry, void *ctx), void *ctx) {
    for (size_t f = 0; f < N_FAMILIES; f++)
        for (const cx_op_entry *e = families[f]; e->name; e++)
            fn(e, ctx);
}

/* ---- buffers ---- */

static cx_status track(cx_op_run *r, size_t n_floats, float **out) {
    if (r->n_buffers == CX_RUN_MAX_BUFFERS)
        return cx_fail(CX_EINVAL, "%s: too many buffers", r->op);
    void *ptr = r->be->alloc(r->be, (n_floats ? n_floats : 1) * sizeof(float));
    if (!ptr)
        return cx_fail(CX_ENOMEM, "%s: the %s backend could not allocate %zu floats", r->op,
                       r->be->name, n_floats);
    r->buffers[r->n_buffers++] = ptr;
    *out = ptr;
    return CX_OK;
}

int64_t cx_run_numel(const cx_op_run *r, int i) {
    int64_t n = 1;
    for (int d = 0; d < r->call->in_ndim[i]; d++)
        n *= r->call->in_shape[i][d];
    return n;
}

cx_status cx_run_scratch(cx_op_run *r, size_t n_floats, float **out) {
    return track(r, n_floats, out);
}

cx_status cx_run_input(cx_op_run *r, int i, const float **out) {
    *out = NULL;
    if (i >= r->n_fwd)
        return CX_OK;
    size_t n = (size_t)cx_run_numel(r, i);
    if (n == 0)
        return CX_OK;
    float *dev = NULL;
    CX_TRY(track(r, n, &dev));
    r->be->upload(r->be, dev, r->call->in[i], n);
    *out = dev;
    return CX_OK;
}

cx_status cx_run_dy(cx_op_run *r, int k, size_t numel, const float **out) {
    int i = r->dy_base + k;
    size_t n = (size_t)cx_run_numel(r, i);
    if (n != numel)
        return cx_fail(CX_EINVAL, "%s backward: the gradient of output %d has %zu values, "
                       "expected %zu", r->op, k, n, numel);
    float *dev = NULL;
    CX_TRY(track(r, n, &dev));
    r->be->upload(r->be, dev, r->call->in[i], n);
    *out = dev;
    return CX_OK;
}

/* The next returned array; `absent`: an empty array and *out NULL. */
static cx_status output(cx_op_run *r, int ndim, const int64_t *shape, const float *init,
                        int absent, float **out) {
    int64_t empty_shape[1] = {0};
    if (absent) {
        ndim = 1;
        shape = empty_shape;
    }
    int index = r->n_out;
    if (index == CX_RUN_MAX_TENSORS)
        return cx_fail(CX_EINVAL, "%s: too many outputs", r->op);
    size_t n = 1;
    for (int d = 0; d < ndim; d++)
        n *= (size_t)shape[d];
    float *host = r->call->alloc_out(r->call, index, ndim, shape);
    if (!host)
        return cx_fail(CX_ENOMEM, "%s: could not allocate output %d", r->op, index);
    r->out_host[index] = host;
    r->out_numel[index] = n;
    r->out_device[index] = NULL;
    r->n_out++;
    *out = NULL;
    if (absent || n == 0)
        return CX_OK;
    float *dev = NULL;
    CX_TRY(track(r, n, &dev));
    if (init)
        r->be->upload(r->be, dev, init, n);
    else
        r->be->zero(r->be, dev, n);
    r->out_device[index] = dev;
    *out = dev;
    return CX_OK;
}

cx_status cx_run_output(cx_op_run *r, int ndim, const int64_t *shape, const float *init,
                        float **out) {
    return output(r, ndim, shape, init, 0, out);
}

cx_status cx_run_gradient(cx_op_run *r, int i, float **out) {
    const cx_op_call *c = r->call;
    const float *start = NULL;
    int absent = i >= r->n_fwd || cx_run_numel(r, i) == 0;
    if (!absent && r->start_base >= 0) {
        int s = r->start_base + i;
        int64_t n = cx_run_numel(r, s);
        if (n == 0)
            absent = 1;
        else if (n != cx_run_numel(r, i))
            return cx_fail(CX_EINVAL, "%s backward: starting gradient %d has %lld values, input "
                           "%d has %lld", r->op, i, (long long)n, i, (long long)cx_run_numel(r, i));
        else
            start = c->in[s];
    }
    if (i >= r->n_fwd) { /* an input left off gets no returned gradient at all */
        *out = NULL;
        return CX_OK;
    }
    return output(r, c->in_ndim[i], c->in_shape[i], start, absent, out);
}

cx_status cx_run_no_gradient(cx_op_run *r, int i) {
    float *unused = NULL;
    return cx_run_gradient(r, i, &unused);
}

/* ---- argument layout ---- */

cx_status cx_run_args(cx_op_run *r, int n_iargs, int n_fargs) {
    const cx_op_call *c = r->call;
    const cx_op_entry *e = cx_op_runner_find(r->op);
    if (c->n_iargs != n_iargs || c->n_fargs != n_fargs)
        return cx_fail(CX_EINVAL, "%s takes %d integer and %d float arguments, got %d and %d",
                       r->op, n_iargs, n_fargs, c->n_iargs, c->n_fargs);
    r->start_base = -1;
    if (!c->backward) {
        if (c->n_in < e->min_inputs || c->n_in > e->max_inputs) {
            if (e->min_inputs == e->max_inputs)
                return cx_fail(CX_EINVAL, "%s takes %d input arrays, got %d", r->op,
                               e->min_inputs, c->n_in);
            return cx_fail(CX_EINVAL, "%s takes %d to %d input arrays, got %d", r->op,
                           e->min_inputs, e->max_inputs, c->n_in);
        }
        r->n_fwd = c->n_in;
        return CX_OK;
    }
    for (int nf = e->max_inputs; nf >= e->min_inputs; nf--) {
        if (c->n_in == nf + e->n_outputs || c->n_in == 2 * nf + e->n_outputs) {
            r->n_fwd = nf;
            r->dy_base = nf;
            if (c->n_in == 2 * nf + e->n_outputs && nf > 0)
                r->start_base = nf + e->n_outputs;
            return CX_OK;
        }
    }
    return cx_fail(CX_EINVAL, "%s backward takes its %d forward inputs, %d output gradient%s "
                   "and optionally one starting gradient per input; got %d arrays", r->op,
                   e->max_inputs, e->n_outputs, e->n_outputs == 1 ? "" : "s", c->n_in);
}

/* ---- shape checks ---- */

cx_status cx_run_rank(const cx_op_run *r, int i, int ndim) {
    if (r->call->in_ndim[i] != ndim)
        return cx_fail(CX_EINVAL, "%s: input %d has rank %d, expected %d", r->op, i,
                       r->call->in_ndim[i], ndim);
    return CX_OK;
}

cx_status cx_run_same_shape(const cx_op_run *r, int i, int j) {
    const cx_op_call *c = r->call;
    int same = c->in_ndim[i] == c->in_ndim[j];
    for (int d = 0; same && d < c->in_ndim[i]; d++)
        same = c->in_shape[i][d] == c->in_shape[j][d];
    if (!same)
        return cx_fail(CX_EINVAL, "%s: input %d must have the shape of input %d", r->op, j, i);
    return CX_OK;
}

cx_status cx_run_vector(const cx_op_run *r, int i, int64_t n) {
    if (r->call->in_ndim[i] != 1 || r->call->in_shape[i][0] != n)
        return cx_fail(CX_EINVAL, "%s: input %d must have shape (%lld,)", r->op, i, (long long)n);
    return CX_OK;
}

cx_status cx_run_int(const cx_op_run *r, int64_t value, int64_t min, const char *what, int *out) {
    if (value < min || value > 0x7fffffff)
        return cx_fail(CX_EINVAL, "%s: %s = %lld is out of range (at least %lld)", r->op, what,
                       (long long)value, (long long)min);
    *out = (int)value;
    return CX_OK;
}

/* ---- running ---- */

static cx_status finish(cx_op_run *r, cx_status status) {
    if (status == CX_OK)
        for (int i = 0; i < r->n_out; i++)
            if (r->out_device[i])
                r->be->download(r->be, r->out_host[i], r->out_device[i], r->out_numel[i]);
    char first_error[1024] = "";
    if (status != CX_OK) /* keep the message: the sync below may record another one */
        snprintf(first_error, sizeof first_error, "%s", cx_last_error());
    cx_status synced = r->be->sync(r->be); /* also when failing: drain queued work */
    for (int i = r->n_buffers - 1; i >= 0; i--)
        r->be->free(r->be, r->buffers[i]);
    if (status != CX_OK)
        return cx_fail(status, "%s", first_error);
    return synced;
}

/* CX_OK when `be` supports every op in `ops`; else names the missing ones. */
static cx_status check_supported(cx_backend *be, const char *entry, int backward, uint64_t ops) {
    cx_op_set needed;
    memset(&needed, 0, sizeof needed);
    for (int op = 0; op < CX_OP_COUNT; op++)
        needed.has[op] = (ops >> op) & 1;
    char what[128];
    snprintf(what, sizeof what, "the test entry '%s' %s", entry, backward ? "backward" : "forward");
    return cx_backend_check_ops(be, &needed, what);
}

cx_status cx_op_runner_run(cx_backend *be, const char *name, cx_op_call *call) {
    const cx_op_entry *entry = cx_op_runner_find(name);
    if (!entry)
        return cx_fail(CX_EKEY, "no op-test entry named '%s'", name);
    if (entry->cpu_internal && be != cx_backend_cpu())
        return cx_fail(CX_EINVAL, "'%s' is a CPU routine, not a table op: it runs on the CPU "
                       "backend only", name);
    if (call->backward && !entry->backward_ops)
        return cx_fail(CX_EINVAL, "'%s' has no backward", name);
    uint64_t ops = call->backward ? entry->backward_ops : entry->forward_ops;
    CX_TRY(check_supported(be, name, call->backward, ops));
    cx_op_run r;
    memset(&r, 0, sizeof r);
    r.be = be;
    r.call = call;
    r.op = entry->name;
    r.start_base = -1;
    return finish(&r, entry->run(&r));
}
