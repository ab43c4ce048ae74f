/* AdamW on the one-buffer parameter layout, parameter classes and the chunked walk over
 * the buffer that the other training functions share (see optim.h). */
#include "optim.h"

#include <immintrin.h>
#include <math.h>
#include <string.h>

#define CX_AVX2 __attribute__((target("avx2,fma")))

/* ---- parameter classes ----------------------------------------------------------- */

static int ends_with(const char *text, const char *suffix) {
    size_t n = strlen(text), k = strlen(suffix);
    return n >= k && memcmp(text + n - k, suffix, k) == 0;
}

int cx_optim_decays(const char *name, int ndim) {
    if (ndim <= 1 || ends_with(name, "temperature") || strstr(name, ".moe.gate.") != NULL)
        return 0;
    return 1;
}

void cx_optim_classify(cx_param_table *table) {
    for (int i = 0; i < table->count; i++) {
        cx_param *p = &table->items[i];
        p->group = strncmp(p->name, "backbone.", 9) == 0 ? CX_GROUP_BACKBONE : CX_GROUP_HEAD;
        p->decay = cx_optim_decays(p->name, p->ndim);
    }
}

void cx_optim_stage_mask(const cx_param_table *table, int stage, unsigned char *mask) {
    for (int i = 0; i < table->count; i++)
        mask[i] = (unsigned char)(stage >= 2 || table->items[i].group != CX_GROUP_BACKBONE);
}

cx_status cx_optim_check_table(const cx_param_table *table) {
    size_t end = 0;
    for (int i = 0; i < table->count; i++) {
        const cx_param *p = &table->items[i];
        if (p->group < 0 || p->group >= CX_OPTIM_GROUPS)
            return cx_fail(CX_EINVAL, "parameter %s: group %d is not 0 (backbone) or 1 (head)",
                           p->name, p->group);
        if (p->offset < end)
            return cx_fail(CX_EINVAL, "parameter %s: offset %zu overlaps the previous parameter "
                           "(ends at %zu); parameters must lie in buffer order", p->name,
                           p->offset, end);
        end = p->offset + p->numel;
        if (end > table->total)
            return cx_fail(CX_EINVAL, "parameter %s: [%zu, %zu) lies outside the buffer of %zu "
                           "floats", p->name, p->offset, end, table->total);
    }
    return CX_OK;
}

/* ---- chunked walk ------------------------------------------------------------------ */

int64_t cx_optim_n_chunks(const cx_param_table *table) {
    return (int64_t)((table->total + CX_REDUCE_CHUNK - 1) / CX_REDUCE_CHUNK);
}

void cx_optim_chunk_pieces(const cx_param_table *table, const unsigned char *mask,
                           int64_t chunk, cx_piece_fn fn, void *ctx) {
    size_t begin = (size_t)chunk * CX_REDUCE_CHUNK, end = begin + CX_REDUCE_CHUNK;
    /* first parameter that ends after `begin` (parameters are in buffer order) */
    int lo = 0, hi = table->count;
    while (lo < hi) {
        int mid = lo + (hi - lo) / 2;
        const cx_param *p = &table->items[mid];
        if (p->offset + p->numel <= begin)
            lo = mid + 1;
        else
            hi = mid;
    }
    for (int i = lo; i < table->count && table->items[i].offset < end; i++) {
        const cx_param *p = &table->items[i];
        if (mask && !mask[i])
            continue;
        size_t a = p->offset > begin ? p->offset : begin;
        size_t b = p->offset + p->numel < end ? p->offset + p->numel : end;
        if (a < b)
            fn(ctx, i, a, b);
    }
}

/* ---- AdamW ------------------------------------------------------------------------- */

typedef struct {
    float decay;      /* f32(1 - lr * wd) */
    float beta1, one_minus_beta1, beta2, one_minus_beta2;
    float bias2_sqrt; /* f32(sqrt(1 - beta2^t)) */
    float eps;
    float neg_step;   /* f32(-(lr / (1 - beta1^t))) */
} adamw_coefs;

static void adamw_span_scalar(const adamw_coefs *k, size_t n, float *values,
                              const float *grads, float *exp_avg, float *exp_avg_sq) {
    for (size_t j = 0; j < n; j++) {
        float p = values[j] * k->decay;
        float g = grads[j];
        float m = fmaf(g, k->one_minus_beta1, exp_avg[j] * k->beta1);
        float v = fmaf(k->one_minus_beta2 * g, g, exp_avg_sq[j] * k->beta2);
        float denom = sqrtf(v) / k->bias2_sqrt + k->eps;
        values[j] = p + (k->neg_step * m) / denom;
        exp_avg[j] = m;
        exp_avg_sq[j] = v;
    }
}

CX_AVX2 static void adamw_span_avx2(const adamw_coefs *k, size_t n, float *values,
                                    const float *grads, float *exp_avg, float *exp_avg_sq) {
    const __m256 decay = _mm256_set1_ps(k->decay), beta1 = _mm256_set1_ps(k->beta1),
                 c1 = _mm256_set1_ps(k->one_minus_beta1), beta2 = _mm256_set1_ps(k->beta2),
                 c2 = _mm256_set1_ps(k->one_minus_beta2), bias2 = _mm256_set1_ps(k->bias2_sqrt),
                 eps = _mm256_set1_ps(k->eps), neg_step = _mm256_set1_ps(k->neg_step);
    size_t j = 0;
    for (; j + 8 <= n; j += 8) {
        __m256 p = _mm256_mul_ps(_mm256_loadu_ps(values + j), decay);
        __m256 g = _mm256_loadu_ps(grads + j);
        __m256 m = _mm256_fmadd_ps(g, c1, _mm256_mul_ps(_mm256_loadu_ps(exp_avg + j), beta1));
        __m256 v = _mm256_fmadd_ps(_mm256_mul_ps(c2, g), g,
                                   _mm256_mul_ps(_mm256_loadu_ps(exp_avg_sq + j), beta2));
        __m256 denom = _mm256_add_ps(_mm256_div_ps(_mm256_sqrt_ps(v), bias2), eps);
        p = _mm256_add_ps(p, _mm256_div_ps(_mm256_mul_ps(neg_step, m), denom));
        _mm256_storeu_ps(values + j, p);
        _mm256_storeu_ps(exp_avg + j, m);
        _mm256_storeu_ps(exp_avg_sq + j, v);
    }
    adamw_span_scalar(k, n - j, values + j, grads + j, exp_avg + j, exp_avg_sq + j);
}

static int have_avx2_fma(void) {
    static int cached = -1;
    if (cached < 0)
        cached = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    return cached;
}

typedef struct {
    const cx_param_table *table;
    const unsigned char *mask;
    const cx_adamw_config *config;
    const int64_t *steps;
    float *values, *exp_avg, *exp_avg_sq;
    const float *grads;
    int avx2;
} adamw_job;

static void adamw_piece(void *ctx, int param, size_t begin, size_t end) {
    const adamw_job *job = ctx;
    const cx_param *p = &job->table->items[param];
    const cx_adamw_config *c = job->config;
    double lr = c->lr[p->group];
    double wd = p->decay ? c->weight_decay : 0.0;
    double step = (double)job->steps[param]; /* torch: step_t.item(), a float */
    double bias1 = 1.0 - pow(c->beta1, step);
    double bias2 = 1.0 - pow(c->beta2, step);
    double step_size = lr / bias1;
    adamw_coefs k = {
        .decay = (float)(1.0 - lr * wd),
        .beta1 = (float)c->beta1,
        .one_minus_beta1 = (float)(1.0 - c->beta1),
        .beta2 = (float)c->beta2,
        .one_minus_beta2 = (float)(1.0 - c->beta2),
        .bias2_sqrt = (float)sqrt(bias2),
        .eps = (float)c->eps,
        .neg_step = (float)(-step_size),
    };
    size_t n = end - begin;
    if (job->avx2)
        adamw_span_avx2(&k, n, job->values + begin, job->grads + begin, job->exp_avg + begin,
                        job->exp_avg_sq + begin);
    else
        adamw_span_scalar(&k, n, job->values + begin, job->grads + begin, job->exp_avg + begin,
                          job->exp_avg_sq + begin);
}

static void adamw_chunks(void *ctx, int64_t begin, int64_t end) {
    const adamw_job *job = ctx;
    for (int64_t chunk = begin; chunk < end; chunk++)
        cx_optim_chunk_pieces(job->table, job->mask, chunk, adamw_piece, ctx);
}

cx_status cx_adamw_step(const cx_param_table *table, const unsigned char *mask,
                        const cx_adamw_config *config, int64_t *steps, float *values,
                        const float *grads, float *exp_avg, float *exp_avg_sq) {
    if (!(config->beta1 >= 0.0 && config->beta1 < 1.0) ||
        !(config->beta2 >= 0.0 && config->beta2 < 1.0))
        return cx_fail(CX_EINVAL, "AdamW betas (%g, %g) must lie in [0, 1)", config->beta1,
                       config->beta2);
    if (!(config->eps > 0.0) || !(config->weight_decay >= 0.0))
        return cx_fail(CX_EINVAL, "AdamW eps %g must be > 0 and weight decay %g >= 0",
                       config->eps, config->weight_decay);
    for (int g = 0; g < CX_OPTIM_GROUPS; g++)
        if (!(config->lr[g] >= 0.0) || isinf(config->lr[g]))
            return cx_fail(CX_EINVAL, "AdamW lr %g of group %d is not a finite value >= 0",
                           config->lr[g], g);
    /* torch increments each stepped parameter's count before using it */
    for (int i = 0; i < table->count; i++)
        if (!mask || mask[i])
            steps[i] += 1;
    adamw_job job = {table, mask, config, steps, values, exp_avg, exp_avg_sq, grads,
                     have_avx2_fma()};
    cx_parallel_for(cx_optim_n_chunks(table), 1, adamw_chunks, &job);
    return CX_OK;
}

void cx_adamw_reset(const cx_param_table *table, int64_t *steps, float *exp_avg,
                    float *exp_avg_sq) {
    memset(exp_avg, 0, table->total * sizeof(float));
    memset(exp_avg_sq, 0, table->total * sizeof(float));
    memset(steps, 0, (size_t)table->count * sizeof *steps);
}
