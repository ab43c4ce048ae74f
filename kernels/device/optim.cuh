/* The optimizer step on the device (device code; launched by kernels/optim.cu, whose
 * header csrc/ops/cuda_optim.h is the C ABI): the global gradient norm over the trained
 * parameters, clipping, AdamW and the EMA, on the one-buffer parameter layout of
 * csrc/model/params.h. The CPU reference is csrc/train/clip.c, optim.c and ema.c
 * (documented in csrc/train/optim.h); these kernels compute the same thing in the same
 * float32 arithmetic (docs/emulator.md, "The optimizer step on the device").
 *
 * Three launches per step, all on one stream, nothing read back in between:
 *   1. optim_norm_partials_kernel: block c sums g^2 (in double) over the trained floats of
 *      chunk c = [c * OPTIM_CHUNK, (c + 1) * OPTIM_CHUNK) of the buffer, the CPU's chunks
 *      (CX_REDUCE_CHUNK); each thread sums its own fixed elements in order, then a fixed
 *      tree adds the OPTIM_BLOCK thread sums: one partial per chunk.
 *   2. optim_prepare_kernel (one block): adds the partials (fixed strided sums, then the
 *      same tree), norm = sqrt(total), the clip factor; when the norm is finite, each
 *      trained parameter's step count += 1 and its AdamW coefficients (in double, rounded
 *      to float32 as optim.c rounds them). A non-finite norm applies nothing: the step
 *      is skipped on the device (the trainer stops the run on it, state untouched).
 *   3. optim_update_kernel: per chunk, each float of a trained parameter gets
 *      g = g * clip, AdamW, then every parameter's EMA (trained or not) from the new value.
 * No atomics: every sum has an order fixed by the layout and OPTIM_BLOCK alone, so the
 * results are bit-identical whatever order threads and blocks run in.
 *
 * The float32 update is the CPU's operation for operation, each operation rounded once
 * (the _rn intrinsics keep nvcc from contracting a multiply and an add into an FMA that
 * the CPU does not do; the two fmaf calls are the CPU's fmaf). Denormals are kept (do
 * not build with -ftz=true or --use_fast_math). */
#ifndef CX_KERNELS_DEVICE_OPTIM_CUH
#define CX_KERNELS_DEVICE_OPTIM_CUH

#include "helpers.cuh"

// nvrtc-check: hot optim_norm_partials_kernel optim_prepare_kernel optim_update_kernel

/* Floats per chunk: csrc/train/optim.h's CX_REDUCE_CHUNK (tests/test_emu_optim.py checks
 * that the two agree). One block per chunk in kernels 1 and 3. */
#define OPTIM_CHUNK 16384
/* Threads per block of all three kernels (a power of two: the tree halves it). */
#define OPTIM_BLOCK 256

/* One parameter tensor: the layout of cu_optim_param (csrc/ops/cuda_optim.h; optim.cu
 * checks that they agree). Parameters lie in buffer order without overlap. */
struct optim_param {
    unsigned long long offset, numel; /* floats */
    int group;                        /* 0 backbone, 1 head: index of the lr */
    int decay;                        /* 1: weight decay applies */
};

/* Per-step scalars, as csrc/train/optim.c derives them from cx_adamw_config in double
 * (the host computes them: kernels/optim.cu). */
struct optim_hyper {
    double lr[2];
    double weight_decay, beta1, beta2;
    double max_norm;                  /* <= 0: measure the norm only */
    float beta1_f, one_minus_beta1, beta2_f, one_minus_beta2, eps;
    float ema_keep, ema_take;         /* f32(d), f32(1 - d) (ema.c) */
};

/* One parameter's coefficients for this step (optim.c's adamw_coefs less the constants). */
struct optim_coef {
    float decay;      /* f32(1 - lr * wd) */
    float bias2_sqrt; /* f32(sqrt(1 - beta2^t)) */
    float neg_step;   /* f32(-(lr / (1 - beta1^t))) */
    int active;       /* 1: AdamW updates it this step (trained, and the norm is finite) */
};

/* Written by optim_prepare_kernel; read by optim_update_kernel and by the host. */
struct optim_result {
    double norm;      /* before clipping; inf or NaN when a trained gradient is */
    float clip_scale; /* f32(min(1, max_norm / (norm + 1e-6))) when that is < 1, else 1 */
    int applied;      /* 1: the step was applied (finite norm); 0: nothing changed */
};

/* Double arithmetic rounded once per operation: nvcc would contract 1 - lr * wd into an
 * FMA, which the CPU's C does not do. The emulator compiles as host C++ (no FMA contraction
 * without an FMA target), where the plain operators are the same thing. */
#if defined(__CUDACC__)
#define OPTIM_DMUL(a, b) __dmul_rn((a), (b))
#define OPTIM_DADD(a, b) __dadd_rn((a), (b))
#define OPTIM_DDIV(a, b) __ddiv_rn((a), (b))
#else
#define OPTIM_DMUL(a, b) ((a) * (b))
#define OPTIM_DADD(a, b) ((a) + (b))
#define OPTIM_DDIV(a, b) ((a) / (b))
#endif

/* Index of the first parameter that ends after `begin` (count when none). */
static __device__ int optim_first_param(const optim_param *params, int count,
                                        unsigned long long begin) {
    int lo = 0, hi = count;
    while (lo < hi) {
        int mid = lo + (hi - lo) / 2;
        if (params[mid].offset + params[mid].numel <= begin)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* Sum over the OPTIM_BLOCK threads in a fixed tree order; every thread calls it. The
 * total in every thread. shared [OPTIM_BLOCK]. */
static __device__ double optim_block_sum(double value, double *shared) {
    shared[threadIdx.x] = value;
    __syncthreads();
    for (int half = OPTIM_BLOCK / 2; half > 0; half /= 2) {
        if ((int)threadIdx.x < half)
            shared[threadIdx.x] += shared[threadIdx.x + half];
        __syncthreads();
    }
    double total = shared[0];
    __syncthreads(); /* shared may be reused right after */
    return total;
}

/* grid n_chunks, block OPTIM_BLOCK; partials [n_chunks]. mask [count] (nullptr: all). */
__global__ void __launch_bounds__(OPTIM_BLOCK)
optim_norm_partials_kernel(int count, const optim_param *params, const unsigned char *mask,
                           const float *grads, double *partials) {
    __shared__ double shared[OPTIM_BLOCK];
    unsigned long long begin = (unsigned long long)blockIdx.x * OPTIM_CHUNK;
    unsigned long long end = begin + OPTIM_CHUNK;
    double sum = 0.0;
    for (int i = optim_first_param(params, count, begin); i < count && params[i].offset < end;
         i++) {
        if (mask && !mask[i])
            continue;
        unsigned long long a = params[i].offset > begin ? params[i].offset : begin;
        unsigned long long b = params[i].offset + params[i].numel;
        if (b > end)
            b = end;
        for (unsigned long long j = a + threadIdx.x; j < b; j += OPTIM_BLOCK) {
            double g = (double)grads[j];
            sum += g * g; /* exact product: an FMA here rounds the same */
        }
    }
    double total = optim_block_sum(sum, shared);
    if (threadIdx.x == 0)
        partials[blockIdx.x] = total;
}

/* grid 1, block OPTIM_BLOCK; partials [n_chunks]; steps, coefs [count]. */
__global__ void __launch_bounds__(OPTIM_BLOCK)
optim_prepare_kernel(int n_chunks, const double *partials, int count, const optim_param *params,
                     const unsigned char *mask, optim_hyper h, long long *steps,
                     optim_coef *coefs, optim_result *result) {
    __shared__ double shared[OPTIM_BLOCK];
    double sum = 0.0;
    for (int c = (int)threadIdx.x; c < n_chunks; c += OPTIM_BLOCK)
        sum += partials[c];
    double norm = sqrt(optim_block_sum(sum, shared));
    int applied = isfinite(norm) ? 1 : 0;
    if (threadIdx.x == 0) {
        float scale = 1.0f;
        if (applied && h.max_norm > 0.0) { /* clip.c: cx_clip_factor, applied when < 1 */
            double factor = OPTIM_DDIV(h.max_norm, OPTIM_DADD(norm, 1e-6));
            if (factor < 1.0)
                scale = (float)factor;
        }
        result->norm = norm;
        result->clip_scale = scale;
        result->applied = applied;
    }
    for (int i = (int)threadIdx.x; i < count; i += OPTIM_BLOCK) {
        optim_coef k = {1.0f, 1.0f, 0.0f, 0};
        if (applied && (!mask || mask[i])) {
            long long t = steps[i] + 1; /* torch counts the step before using it */
            steps[i] = t;
            const optim_param p = params[i];
            double lr = p.group ? h.lr[1] : h.lr[0]; /* no indexed (local-memory) copy of h */
            double wd = p.decay ? h.weight_decay : 0.0;
            double bias1 = OPTIM_DADD(1.0, -pow(h.beta1, (double)t));
            double bias2 = OPTIM_DADD(1.0, -pow(h.beta2, (double)t));
            k.decay = (float)OPTIM_DADD(1.0, -OPTIM_DMUL(lr, wd));
            k.bias2_sqrt = (float)sqrt(bias2);
            k.neg_step = (float)(-OPTIM_DDIV(lr, bias1));
            k.active = 1;
        }
        coefs[i] = k;
    }
}

/* grid n_chunks, block OPTIM_BLOCK; values, grads, exp_avg, exp_avg_sq, ema [total];
 * coefs [count] (from optim_prepare_kernel). grads are read, never written. */
__global__ void __launch_bounds__(OPTIM_BLOCK)
optim_update_kernel(int count, const optim_param *params, const optim_coef *coefs,
                    const optim_result *result, optim_hyper h, float *values,
                    const float *grads, float *exp_avg, float *exp_avg_sq, float *ema) {
    if (!result->applied) /* the same for every thread */
        return;
    const float clip = result->clip_scale;
    unsigned long long begin = (unsigned long long)blockIdx.x * OPTIM_CHUNK;
    unsigned long long end = begin + OPTIM_CHUNK;
    for (int i = optim_first_param(params, count, begin); i < count && params[i].offset < end;
         i++) {
        unsigned long long a = params[i].offset > begin ? params[i].offset : begin;
        unsigned long long b = params[i].offset + params[i].numel;
        if (b > end)
            b = end;
        const optim_coef k = coefs[i];
        for (unsigned long long j = a + threadIdx.x; j < b; j += OPTIM_BLOCK) {
            float p = values[j];
            if (k.active) {
                float g = __fmul_rn(grads[j], clip); /* clip.c: grads *= scale */
                p = __fmul_rn(p, k.decay);
                float m = __fmaf_rn(g, h.one_minus_beta1, __fmul_rn(exp_avg[j], h.beta1_f));
                float v = __fmaf_rn(__fmul_rn(h.one_minus_beta2, g), g,
                                    __fmul_rn(exp_avg_sq[j], h.beta2_f));
                float denom = __fadd_rn(__fdiv_rn(__fsqrt_rn(v), k.bias2_sqrt), h.eps);
                p = __fadd_rn(p, __fdiv_rn(__fmul_rn(k.neg_step, m), denom));
                values[j] = p;
                exp_avg[j] = m;
                exp_avg_sq[j] = v;
            }
            ema[j] = __fmaf_rn(p, h.ema_take, __fmul_rn(ema[j], h.ema_keep));
        }
    }
}

#endif
