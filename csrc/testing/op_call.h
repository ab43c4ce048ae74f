/* Test access to single ops: the Python binding's `_C.op(name, inputs, iargs, fargs,
 * backward)` finds an entry here by name and runs it on the CPU backend, so the tests
 * can check each op against NumPy and by finite differences.
 *
 * A wrapper receives float32 contiguous inputs with their shapes, integer and float
 * arguments, and asks for each output with call->alloc_out(), which returns zeroed
 * memory (so backward wrappers may pass outputs straight to accumulating ops).
 * Convention: a forward call returns the op's outputs; a backward call receives the
 * forward inputs followed by the gradients of the forward outputs and returns one
 * gradient per forward input (same order and shapes). Wrappers validate shapes and
 * return cx_fail(CX_EINVAL, ...) on a mismatch. */
#ifndef CX_OP_CALL_H
#define CX_OP_CALL_H

#include "../core/cx.h"

#define CX_OPCALL_MAX_TENSORS 8
#define CX_OPCALL_MAX_DIMS 6
#define CX_OPCALL_MAX_ARGS 16

typedef struct cx_op_call cx_op_call;
struct cx_op_call {
    int n_in;
    const float *in[CX_OPCALL_MAX_TENSORS];
    int in_ndim[CX_OPCALL_MAX_TENSORS];
    int64_t in_shape[CX_OPCALL_MAX_TENSORS][CX_OPCALL_MAX_DIMS];
    int n_iargs;
    int64_t iargs[CX_OPCALL_MAX_ARGS];
    int n_fargs;
    double fargs[CX_OPCALL_MAX_ARGS];
    int backward; /* 0 forward, 1 backward */
    /* Allocates output number `index` (outputs must be requested in order 0, 1, ...)
     * with the given shape; returns zeroed float32 memory or NULL on failure. */
    float *(*alloc_out)(cx_op_call *call, int index, int ndim, const int64_t *shape);
    void *binding; /* private to the binding */
};

typedef struct {
    const char *name;
    cx_status (*run)(cx_op_call *call);
} cx_op_entry;

/* Each op family file in csrc/testing/ defines one table ending with {NULL, NULL}. */
extern const cx_op_entry cx_op_entries_conv[];
extern const cx_op_entry cx_op_entries_linear[];
extern const cx_op_entry cx_op_entries_norm[];
extern const cx_op_entry cx_op_entries_pointwise[];
extern const cx_op_entry cx_op_entries_pool[];
extern const cx_op_entry cx_op_entries_attention[];
extern const cx_op_entry cx_op_entries_loss[];

/* Looks an entry up by name in every table; NULL if absent. */
const cx_op_entry *cx_op_find(const char *name);
/* Calls fn(name, ctx) for every registered op (for listing in Python). */
void cx_op_each(void (*fn)(const char *name, void *ctx), void *ctx);

/* Helpers for wrappers: check input i has the given rank, or fail naming the op. */
cx_status cx_op_expect_rank(const cx_op_call *call, const char *op, int i, int ndim);
cx_status cx_op_expect_inputs(const cx_op_call *call, const char *op, int n_in, int n_iargs,
                              int n_fargs);
/* Product of input i's dims. */
int64_t cx_op_numel(const cx_op_call *call, int i);

#endif
