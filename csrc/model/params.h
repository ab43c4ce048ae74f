/* Parameter table: every parameter of a model lives in ONE contiguous float buffer
 * (values), with gradients, optimizer moments and the EMA copy in more buffers of the
 * same layout. A parameter is a named view: (name, shape, offset). Models declare
 * their parameters in forward order; gradients of later layers finish first in
 * backward, so DDP buckets are contiguous slices taken from the end of the buffer. */
#ifndef CX_PARAMS_H
#define CX_PARAMS_H

#include "../core/cx.h"
#include "../core/rng.h"

#define CX_PARAM_NAME_MAX 96
#define CX_PARAM_MAX_DIMS 4

/* How a parameter is initialised and whether weight decay applies. */
typedef enum {
    CX_INIT_ZERO,        /* biases of our own layers, gates */
    CX_INIT_ONE,         /* norm weights, temperatures */
    CX_INIT_TRUNC_NORMAL,/* timm: trunc_normal_(std=0.02) for conv and linear weights */
    CX_INIT_CONST,       /* fill with `init_value` (layer-scale gammas) */
    CX_INIT_TORCH_DEFAULT,/* PyTorch's default for conv/linear weights: U(-1/sqrt(fan_in), ..) */
    CX_INIT_TORCH_BIAS,  /* PyTorch's default conv/linear bias: U(-1/sqrt(fan_in), ..) */
} cx_init_kind;

typedef struct {
    char name[CX_PARAM_NAME_MAX];
    int ndim;
    int64_t shape[CX_PARAM_MAX_DIMS];
    size_t offset; /* in floats, from the start of the buffer */
    size_t numel;
    int decay;     /* 1: weight decay applies */
    cx_init_kind init;
    float init_value;
    int fan_in;    /* for the torch-default inits */
    int group;     /* which optimizer group (0 backbone, 1 the rest) */
} cx_param;

typedef struct {
    cx_param *items;
    int count, capacity;
    size_t total; /* floats */
} cx_param_table;

/* Appends a parameter named "<prefix><name>" and returns its offset in *offset.
 * shape has ndim entries. Offsets are aligned to 16 floats (64 bytes). */
cx_status cx_params_add(cx_param_table *table, const char *prefix, const char *name, int ndim,
                        const int64_t *shape, int decay, cx_init_kind init, float init_value,
                        int fan_in, size_t *offset);
void cx_params_free(cx_param_table *table);
/* Index of a parameter by full name, or -1. */
int cx_params_find(const cx_param_table *table, const char *name);
/* Index of the first parameter (table order) holding a value that is not finite in the
 * host buffer values [table->total], or -1; *bad (may be NULL) gets that value. */
int cx_params_first_nonfinite(const cx_param_table *table, const float *values, float *bad);
/* Fills values according to each parameter's init rule, from a seed (counter-based
 * RNG keyed by (seed, parameter index, element), so the result does not depend on the
 * thread count or on other parameters). Padding between parameters is zeroed. */
void cx_params_init(const cx_param_table *table, float *values, uint64_t seed);

#endif
