/* Parameter table and initialisation (see params.h). */
#include "params.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

cx_status cx_params_add(cx_param_table *table, const char *prefix, const char *name, int ndim,
                        const int64_t *shape, int decay, cx_init_kind init, float init_value,
                        int fan_in, size_t *offset) {
    if (ndim < 0 || ndim > CX_PARAM_MAX_DIMS)
        return cx_fail(CX_EINVAL, "parameter %s%s: rank %d not supported", prefix, name, ndim);
    if (table->count == table->capacity) {
        int grown = table->capacity ? table->capacity * 2 : 64;
        cx_param *items = cx_aligned_alloc((size_t)grown * sizeof *items);
        if (!items)
            return cx_fail(CX_ENOMEM, "out of memory declaring parameters");
        if (table->count)
            memcpy(items, table->items, (size_t)table->count * sizeof *items);
        cx_aligned_free(table->items);
        table->items = items;
        table->capacity = grown;
    }
    cx_param *p = &table->items[table->count];
    memset(p, 0, sizeof *p);
    int n = snprintf(p->name, sizeof p->name, "%s%s", prefix, name);
    if (n < 0 || (size_t)n >= sizeof p->name)
        return cx_fail(CX_EINVAL, "parameter name too long: %s%s", prefix, name);
    p->ndim = ndim;
    p->numel = 1;
    for (int d = 0; d < ndim; d++) {
        p->shape[d] = shape[d];
        p->numel *= (size_t)shape[d];
    }
    p->offset = table->total;
    p->decay = decay;
    p->init = init;
    p->init_value = init_value;
    p->fan_in = fan_in;
    table->total += (p->numel + 15) & ~(size_t)15;
    table->count++;
    if (offset)
        *offset = p->offset;
    return CX_OK;
}

void cx_params_free(cx_param_table *table) {
    cx_aligned_free(table->items);
    memset(table, 0, sizeof *table);
}

int cx_params_find(const cx_param_table *table, const char *name) {
    for (int i = 0; i < table->count; i++)
        if (strcmp(table->items[i].name, name) == 0)
            return i;
    return -1;
}

/* Whether any of v[0..n) is inf or NaN: an all-ones exponent, tested on the bits with an
 * OR reduction the compiler vectorises (a predict checks every weight before each batch). */
static int any_nonfinite(const float *v, size_t n) {
    uint32_t found = 0;
    for (size_t j = 0; j < n; j++) {
        uint32_t bits;
        memcpy(&bits, &v[j], sizeof bits);
        found |= (uint32_t)((bits & 0x7f800000u) == 0x7f800000u);
    }
    return found != 0;
}

int cx_params_first_nonfinite(const cx_param_table *table, const float *values, float *bad) {
    for (int i = 0; i < table->count; i++) {
        const float *v = values + table->items[i].offset;
        if (!any_nonfinite(v, table->items[i].numel))
            continue;
        for (size_t j = 0; j < table->items[i].numel; j++)
            if (!isfinite(v[j])) {
                if (bad)
                    *bad = v[j];
                return i;
            }
    }
    return -1;
}

void cx_params_init(const cx_param_table *table, float *values, uint64_t seed) {
    memset(values, 0, table->total * sizeof(float));
    for (int i = 0; i < table->count; i++) {
        const cx_param *p = &table->items[i];
        float *v = values + p->offset;
        double bound = p->fan_in > 0 ? 1.0 / sqrt((double)p->fan_in) : 0.0;
        for (size_t j = 0; j < p->numel; j++) {
            switch (p->init) {
            case CX_INIT_ZERO: v[j] = 0.0f; break;
            case CX_INIT_ONE: v[j] = 1.0f; break;
            case CX_INIT_CONST: v[j] = p->init_value; break;
            case CX_INIT_TRUNC_NORMAL:
                /* timm's trunc_normal_(std=.02) truncates at +-2 absolute: at this std
                 * that is a plain normal. */
                v[j] = (float)(0.02 * cx_rng_normal(seed, (uint64_t)i, j));
                break;
            case CX_INIT_TORCH_DEFAULT:
            case CX_INIT_TORCH_BIAS:
                v[j] = (float)((2.0 * cx_rng_uniform(seed, (uint64_t)i, j) - 1.0) * bound);
                break;
            }
        }
    }
}
