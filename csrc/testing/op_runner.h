/* The op-test runner (test builds only: codext._testing).
 *
 * Runs one entry of the op table by name on any backend through the public backend
 * interface (be->alloc, be->upload, the op fields, be->download, be->sync), so the same
 * cases check the CPU backend against NumPy and a device backend against the CPU one.
 *
 * Calling convention, the same for every entry:
 *   forward:  inputs                        -> [outputs..., saved state (if any)]
 *   backward: inputs, one gradient per output (not per saved state), then optionally one
 *             starting gradient per input   -> one gradient per input
 * Outputs come back zero-initialised before the op runs. A backward call reruns the
 * forward on the backend when it needs the forward's output or saved state. Gradients
 * accumulate into the starting gradients (zeros when none are given); an empty starting
 * gradient passes NULL for that gradient, which then comes back empty. An empty optional
 * input (a bias) passes NULL; an optional input may also be left off the end. An input
 * the op gives no gradient for (the loss target) gets zeros. Shapes are validated
 * here and a mismatch fails with CX_EINVAL naming the entry.
 *
 * Each family file (runner_<family>.c) defines a table of entries ending with {NULL}. */
#ifndef CX_OP_RUNNER_H
#define CX_OP_RUNNER_H

#include "../core/cx.h"
#include "../ops/ops.h"

#define CX_RUN_MAX_TENSORS 8
#define CX_RUN_MAX_DIMS 6
#define CX_RUN_MAX_ARGS 16
#define CX_RUN_MAX_BUFFERS 24

/* One call as the binding hands it over: host inputs, their shapes, arguments. */
typedef struct cx_op_call cx_op_call;
struct cx_op_call {
    int n_in;
    const float *in[CX_RUN_MAX_TENSORS];
    int in_ndim[CX_RUN_MAX_TENSORS];
    int64_t in_shape[CX_RUN_MAX_TENSORS][CX_RUN_MAX_DIMS];
    int n_iargs;
    int64_t iargs[CX_RUN_MAX_ARGS];
    int n_fargs;
    double fargs[CX_RUN_MAX_ARGS];
    int backward; /* 0 forward, 1 backward */
    /* Allocates host output number `index` (in order 0, 1, ...) with the given shape;
     * returns zeroed float32 memory or NULL on failure. */
    float *(*alloc_out)(cx_op_call *call, int index, int ndim, const int64_t *shape);
    void *binding; /* private to the binding */
};

/* The state of one run (private to the runner; entries use the helpers below). */
typedef struct {
    cx_backend *be;
    cx_op_call *call;
    const char *op;
    int n_fwd;       /* forward inputs present in this call */
    int dy_base;     /* index of the first output gradient (backward) */
    int start_base;  /* index of the first starting gradient, or -1 */
    void *buffers[CX_RUN_MAX_BUFFERS]; /* backend memory freed at the end */
    int n_buffers;
    float *out_host[CX_RUN_MAX_TENSORS];
    float *out_device[CX_RUN_MAX_TENSORS];
    size_t out_numel[CX_RUN_MAX_TENSORS];
    int n_out;
} cx_op_run;

/* A bit per table op, for an entry's op sets. */
#define CX_RUN_OP(name) ((uint64_t)1 << CX_OP_##name)

typedef struct {
    const char *name;
    int n_outputs;         /* outputs a backward call takes gradients for */
    int has_saved;         /* the forward returns the saved state after the outputs */
    int min_inputs, max_inputs; /* forward inputs (optional ones at the end) */
    uint64_t forward_ops;  /* table ops a forward call runs */
    uint64_t backward_ops; /* table ops a backward call runs (the forward too when it is
                            * rerun for its output or saved state); 0: no backward */
    int cpu_internal;      /* not a table op: a CPU routine (gemm), CPU backend only */
    cx_status (*run)(cx_op_run *r);
} cx_op_entry;

/* Family tables. */
extern const cx_op_entry cx_run_entries_conv[];
extern const cx_op_entry cx_run_entries_linear[];
extern const cx_op_entry cx_run_entries_norm[];
extern const cx_op_entry cx_run_entries_pointwise[];
extern const cx_op_entry cx_run_entries_layout[];
extern const cx_op_entry cx_run_entries_pool[];
extern const cx_op_entry cx_run_entries_attention[];
extern const cx_op_entry cx_run_entries_loss[];

/* ---- the runner (op_runner.c) ---- */
const cx_op_entry *cx_op_runner_find(const char *name);
/* Calls fn(entry, ctx) for every entry. */
void cx_op_runner_each(void (*fn)(const cx_op_entry *entry, void *ctx), void *ctx);
/* Runs entry `name` on `be`. CX_EKEY for an unknown name; CX_ERUNTIME naming the ops
 * when `be` does not support one the call needs. */
cx_status cx_op_runner_run(cx_backend *be, const char *name, cx_op_call *call);

/* ---- helpers for entries ---- */
/* Checks the call's arrays and arguments against the entry (forward inputs, output
 * gradients, starting gradients) and fills n_fwd, dy_base, start_base. */
cx_status cx_run_args(cx_op_run *r, int n_iargs, int n_fargs);
/* Forward input i in backend memory; NULL when it is absent or empty (optional). */
cx_status cx_run_input(cx_op_run *r, int i, const float **out);
/* Gradient k of an output (a backward call's input dy_base + k), which must hold
 * `numel` values. */
cx_status cx_run_dy(cx_op_run *r, int k, size_t numel, const float **out);
/* The next returned array, zeroed (or holding host `init` when not NULL). */
cx_status cx_run_output(cx_op_run *r, int ndim, const int64_t *shape, const float *init,
                        float **out);
/* The gradient of forward input i (returned, shaped like it): zeros or the starting
 * gradient; NULL (returned empty) when the input or its starting gradient is empty. */
cx_status cx_run_gradient(cx_op_run *r, int i, float **out);
/* Zeros for forward input i returned as its gradient: the op gives it none. */
cx_status cx_run_no_gradient(cx_op_run *r, int i);
/* Backend scratch memory, not returned. */
cx_status cx_run_scratch(cx_op_run *r, size_t n_floats, float **out);

/* Shape checks, failing with CX_EINVAL and the entry's name. */
int64_t cx_run_numel(const cx_op_run *r, int i);
cx_status cx_run_rank(const cx_op_run *r, int i, int ndim);
cx_status cx_run_same_shape(const cx_op_run *r, int i, int j);
cx_status cx_run_vector(const cx_op_run *r, int i, int64_t n);
/* value into *out when 0 <= value <= INT_MAX (with `min` as the least allowed). */
cx_status cx_run_int(const cx_op_run *r, int64_t value, int64_t min, const char *what, int *out);

#endif
