/* Micro-kernels (AVX-512 12x32, 24x16, 8x48; AVX2+FMA 6x16; portable 4x8), the choice
 * among them, and operand packing for the GEMM driver in gemm.c (see gemm.h).
 *
 * All kernels share one template: an MR x NR tile of accumulators in registers, one FMA
 * chain per element over the K block, then the epilogue C = alpha*acc + beta*C + bias
 * with the same operation order everywhere; partial tiles go through a full-size local
 * tile so their elements see exactly the same arithmetic. */
#include "gemm_kernels.h"

#if defined(__x86_64__) || defined(__i386__)
#define CX_GEMM_X86 1
#include <immintrin.h>
#endif
#include <stdlib.h>
#include <string.h>

#define MR_MAX 24
#define NR_MAX 48

#ifdef CX_GEMM_X86
#define CX_AVX2 __attribute__((target("avx2,fma")))
#define CX_AVX512 __attribute__((target("avx512f,avx2,fma")))
#endif

/* ---- epilogue for partial tiles ----------------------------------------------------
 * A partial tile is computed in full into a local buffer, the valid part of C and the
 * biases are copied into full-size local tiles, the kernel's own vector epilogue runs
 * on them, and the valid part is copied back: every element sees the same arithmetic. */
typedef struct {
    float c[MR_MAX * NR_MAX];
    float bias_m[MR_MAX], bias_n[NR_MAX];
} partial_tile;

static void partial_tile_load(partial_tile *t, const float *c, int64_t ldc, int mr, int nr,
                              int NR, const gemm_epilogue *ep, gemm_epilogue *local) {
    memset(t, 0, sizeof *t);
    *local = *ep;
    if (ep->load_c)
        for (int i = 0; i < mr; i++)
            memcpy(t->c + i * NR, c + i * ldc, (size_t)nr * sizeof(float));
    if (ep->bias_m) {
        memcpy(t->bias_m, ep->bias_m, (size_t)mr * sizeof(float));
        local->bias_m = t->bias_m;
    }
    if (ep->bias_n) {
        memcpy(t->bias_n, ep->bias_n, (size_t)nr * sizeof(float));
        local->bias_n = t->bias_n;
    }
}

static void partial_tile_store(const partial_tile *t, float *c, int64_t ldc, int mr, int nr,
                               int NR) {
    for (int i = 0; i < mr; i++)
        memcpy(c + i * ldc, t->c + i * NR, (size_t)nr * sizeof(float));
}

/* ---- micro-kernel template -------------------------------------------------------------
 * MR rows x NV vectors of W floats: the accumulator array is fully unrolled into
 * registers; A is broadcast from a + a_off[k], B loaded from b + b_off[k] (a NULL table
 * means a packed panel: k*MR, k*NR). */
/* one k step: acc += a[k][0:MR] (broadcast) x b[k][0:W*NV] */
#define KERNEL_STEP(VEC, W, LOADU, SET1, FMADD, MR_, NV_, A_K, B_K)                         \
    {                                                                                         \
        VEC bv[NV_];                                                                          \
        const float *ak = (A_K), *bk = (B_K);                                                 \
        _Pragma("GCC unroll 16") for (int h = 0; h < NV_; h++) bv[h] = LOADU(bk + W * h);    \
        _Pragma("GCC unroll 32") for (int i = 0; i < MR_; i++) {                             \
            VEC ai = SET1(ak[i]);                                                             \
            _Pragma("GCC unroll 16") for (int h = 0; h < NV_; h++) acc[i][h] =                \
                FMADD(ai, bv[h], acc[i][h]);                                                  \
        }                                                                                     \
    }

#define DEFINE_VECTOR_KERNEL(NAME, TARGET, VEC, W, SETZERO, LOADU, SET1, FMADD, STOREU,     \
                             EPILOGUE, MR_, NV_)                                          \
    TARGET static void NAME(int kc, const float *a, const int64_t *a_off, const float *b, \
                            const int64_t *b_off,                                         \
                            float *c, int64_t ldc, int mr, int nr,                        \
                            const gemm_epilogue *ep) {                                    \
        VEC acc[MR_][NV_];                                                                \
        _Pragma("GCC unroll 32") for (int i = 0; i < MR_; i++)                           \
            _Pragma("GCC unroll 16") for (int h = 0; h < NV_; h++) acc[i][h] = SETZERO(); \
        /* both panels packed (no offset tables): plain pointer steps */                \
        if (!a_off && !b_off)                                                             \
            for (int k = 0; k < kc; k++)                                                  \
                KERNEL_STEP(VEC, W, LOADU, SET1, FMADD, MR_, NV_, a + k * MR_,            \
                            b + k * (W * NV_))                                            \
        else                                                                              \
            for (int k = 0; k < kc; k++)                                                  \
                KERNEL_STEP(VEC, W, LOADU, SET1, FMADD, MR_, NV_,                         \
                            a + (a_off ? a_off[k] : k * MR_),                             \
                            b + (b_off ? b_off[k] : k * (W * NV_)))                       \
        partial_tile t;                                                                   \
        gemm_epilogue local;                                                              \
        const gemm_epilogue *e = ep;                                                      \
        float *dst = c;                                                                   \
        int64_t ld = ldc;                                                                 \
        int full = (mr == MR_ && nr == W * NV_);                                          \
        if (!full) {                                                                      \
            partial_tile_load(&t, c, ldc, mr, nr, W * NV_, ep, &local);                   \
            e = &local;                                                                   \
            dst = t.c;                                                                    \
            ld = W * NV_;                                                                 \
        }                                                                                 \
        _Pragma("GCC unroll 32") for (int i = 0; i < MR_; i++)                           \
            _Pragma("GCC unroll 16") for (int h = 0; h < NV_; h++)                        \
                STOREU(dst + i * ld + W * h,                                              \
                       EPILOGUE(acc[i][h], dst + i * ld + W * h, i, W * h, e));           \
        if (!full)                                                                        \
            partial_tile_store(&t, c, ldc, mr, nr, W * NV_);                              \
    }

/* ---- portable micro-kernel (4 x 8): the same template on GCC vector types (SSE2 or
 * NEON), multiply then add (no FMA), so its results differ from the FMA kernels. */
typedef float v4f __attribute__((vector_size(16)));
static inline v4f v4_zero(void) { return (v4f){0.0f, 0.0f, 0.0f, 0.0f}; }
static inline v4f v4_load(const float *p) {
    v4f v;
    memcpy(&v, p, sizeof v);
    return v;
}
static inline v4f v4_set1(float x) { return (v4f){x, x, x, x}; }
static inline v4f v4_madd(v4f a, v4f b, v4f c) { return c + a * b; }
static inline void v4_store(float *p, v4f v) { memcpy(p, &v, sizeof v); }
static inline v4f v4_epilogue(v4f acc, const float *c, int i, int j, const gemm_epilogue *ep) {
    v4f v = v4_set1(ep->alpha) * acc;
    if (ep->load_c)
        v = v + v4_set1(ep->beta) * v4_load(c);
    if (ep->bias_m)
        v = v + v4_set1(ep->bias_m[i]);
    if (ep->bias_n)
        v = v + v4_load(ep->bias_n + j);
    return v;
}
#define CX_PORTABLE /* no target attribute */
DEFINE_VECTOR_KERNEL(kernel_generic, CX_PORTABLE, v4f, 4, v4_zero, v4_load, v4_set1, v4_madd,
                     v4_store, v4_epilogue, 4, 2)

#ifdef CX_GEMM_X86
/* ---- AVX2 + FMA micro-kernel (6 x 16) ---------------------------------------------- */
CX_AVX2 static inline __m256 avx2_epilogue_vec(__m256 acc, const float *c, int i, int j,
                                               const gemm_epilogue *ep) {
    __m256 v = _mm256_mul_ps(_mm256_set1_ps(ep->alpha), acc);
    if (ep->load_c)
        v = _mm256_add_ps(v, _mm256_mul_ps(_mm256_set1_ps(ep->beta), _mm256_loadu_ps(c)));
    if (ep->bias_m)
        v = _mm256_add_ps(v, _mm256_set1_ps(ep->bias_m[i]));
    if (ep->bias_n)
        v = _mm256_add_ps(v, _mm256_loadu_ps(ep->bias_n + j));
    return v;
}

DEFINE_VECTOR_KERNEL(kernel_avx2_6x16, CX_AVX2, __m256, 8, _mm256_setzero_ps, _mm256_loadu_ps,
                     _mm256_set1_ps, _mm256_fmadd_ps, _mm256_storeu_ps, avx2_epilogue_vec, 6, 2)

/* ---- AVX-512 micro-kernels (12 x 32, 24 x 16, 8 x 48) ---------------------------------- */
CX_AVX512 static inline __m512 avx512_epilogue_vec(__m512 acc, const float *c, int i, int j,
                                                   const gemm_epilogue *ep) {
    __m512 v = _mm512_mul_ps(_mm512_set1_ps(ep->alpha), acc);
    if (ep->load_c)
        v = _mm512_add_ps(v, _mm512_mul_ps(_mm512_set1_ps(ep->beta), _mm512_loadu_ps(c)));
    if (ep->bias_m)
        v = _mm512_add_ps(v, _mm512_set1_ps(ep->bias_m[i]));
    if (ep->bias_n)
        v = _mm512_add_ps(v, _mm512_loadu_ps(ep->bias_n + j));
    return v;
}

#define DEFINE_AVX512_KERNEL(NAME, MR_, NV_)                                                \
    DEFINE_VECTOR_KERNEL(NAME, CX_AVX512, __m512, 16, _mm512_setzero_ps, _mm512_loadu_ps,     \
                         _mm512_set1_ps, _mm512_fmadd_ps, _mm512_storeu_ps,                  \
                         avx512_epilogue_vec, MR_, NV_)

DEFINE_AVX512_KERNEL(kernel_avx512_12x32, 12, 2)
DEFINE_AVX512_KERNEL(kernel_avx512_24x16, 24, 1)
DEFINE_AVX512_KERNEL(kernel_avx512_8x48, 8, 3)

static const micro_kernel k_avx2 = {"avx2", 6, 16, kernel_avx2_6x16};
static const micro_kernel k_avx512_wide = {"avx512", 12, 32, kernel_avx512_12x32};
static const micro_kernel k_avx512_tall = {"avx512", 24, 16, kernel_avx512_24x16};
static const micro_kernel k_avx512_8x48 = {"avx512", 8, 48, kernel_avx512_8x48};

#endif

static const micro_kernel k_generic = {"generic", 4, 8, kernel_generic};

/* 1 generic, 2 avx2, 3 avx512; detected once (CODEXT_GEMM_KERNEL=avx2|generic caps it) */
static int detected_isa = 0;
static int forced_isa = 0;

static int detect_isa(void) {
    if (!detected_isa) {
        int level = 1;
#ifdef CX_GEMM_X86
        __builtin_cpu_init();
        if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
            level = 2;
            if (__builtin_cpu_supports("avx512f"))
                level = 3;
        }
#endif
        const char *env = getenv("CODEXT_GEMM_KERNEL");
        if (env && strcmp(env, "generic") == 0)
            level = 1;
        else if (env && strcmp(env, "avx2") == 0 && level > 2)
            level = 2;
        detected_isa = level;
    }
    return detected_isa;
}

static int isa_level(void) { return forced_isa ? forced_isa : detect_isa(); }

int cx_gemm_force_isa(int level) {
    if (level < 0 || level > detect_isa())
        return -1;
    forced_isa = level;
    return 0;
}

const char *cx_gemm_kernel_name(void) {
    int level = isa_level();
    return level == 3 ? "avx512" : level == 2 ? "avx2" : "generic";
}

static int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

/* The kernels reach about the same FLOP rate (the AVX2 one a little less on AVX-512
 * machines); pick the one that wastes the least work on padding. */
const micro_kernel *cx_gemm_choose_kernel(int M, int N) {
    int level = isa_level();
#ifndef CX_GEMM_X86
    (void)level;
    return &k_generic;
#else
    if (level == 1)
        return &k_generic;
    if (level == 2)
        return &k_avx2;
    static const micro_kernel *const candidates[] = {&k_avx512_wide, &k_avx512_tall,
                                                      &k_avx512_8x48, &k_avx2};
    static const double speed[] = {1.0, 1.0, 1.0, 0.85};
    const micro_kernel *best = candidates[0];
    double best_cost = 0;
    for (int i = 0; i < 4; i++) {
        const micro_kernel *k = candidates[i];
        double cost = (double)round_up(M, k->mr) * (double)round_up(N, k->nr) / speed[i];
        if (i == 0 || cost < best_cost) {
            best = k;
            best_cost = cost;
        }
    }
    return best;
#endif
}

/* ---- packing -------------------------------------------------------------------------- */

#ifdef CX_GEMM_X86
/* Rows past the matrix read from here (zeros), so the transposes need no branches. */
static const float zero_row[KC_MAX + 8];

/* 8 rows x 8 columns in, transposed out: o[k] holds column k of the rows. */
#define TRANSPOSE_8X8(v, o)                                                                  \
    {                                                                                        \
        __m256 t0 = _mm256_unpacklo_ps(v[0], v[1]), t1 = _mm256_unpackhi_ps(v[0], v[1]);    \
        __m256 t2 = _mm256_unpacklo_ps(v[2], v[3]), t3 = _mm256_unpackhi_ps(v[2], v[3]);    \
        __m256 t4 = _mm256_unpacklo_ps(v[4], v[5]), t5 = _mm256_unpackhi_ps(v[4], v[5]);    \
        __m256 t6 = _mm256_unpacklo_ps(v[6], v[7]), t7 = _mm256_unpackhi_ps(v[6], v[7]);    \
        __m256 s0 = _mm256_shuffle_ps(t0, t2, 0x44), s1 = _mm256_shuffle_ps(t0, t2, 0xEE);  \
        __m256 s2 = _mm256_shuffle_ps(t1, t3, 0x44), s3 = _mm256_shuffle_ps(t1, t3, 0xEE);  \
        __m256 s4 = _mm256_shuffle_ps(t4, t6, 0x44), s5 = _mm256_shuffle_ps(t4, t6, 0xEE);  \
        __m256 s6 = _mm256_shuffle_ps(t5, t7, 0x44), s7 = _mm256_shuffle_ps(t5, t7, 0xEE);  \
        o[0] = _mm256_permute2f128_ps(s0, s4, 0x20);                                         \
        o[1] = _mm256_permute2f128_ps(s1, s5, 0x20);                                         \
        o[2] = _mm256_permute2f128_ps(s2, s6, 0x20);                                         \
        o[3] = _mm256_permute2f128_ps(s3, s7, 0x20);                                         \
        o[4] = _mm256_permute2f128_ps(s0, s4, 0x31);                                         \
        o[5] = _mm256_permute2f128_ps(s1, s5, 0x31);                                         \
        o[6] = _mm256_permute2f128_ps(s2, s6, 0x31);                                         \
        o[7] = _mm256_permute2f128_ps(s3, s7, 0x31);                                         \
    }

/* dst[k*width + i] = rows_ptr[i][k] for i < rows (zero for rows <= i < width), k < kc
 * (kc <= KC_MAX): 8 x 8 in-register transposes, groups of 4 rows for widths like 12. */
CX_AVX2 static void pack_transpose_avx2(const float *const *rows_ptr, int rows, int kc,
                                        int width, float *dst) {
    for (int ib = 0; ib < width; ib += 8) {
        int n_store = width - ib < 8 ? width - ib : 8;
        const float *row[8];
        for (int r = 0; r < 8; r++)
            row[r] = ib + r < rows && r < n_store ? rows_ptr[ib + r] : zero_row;
        int k = 0;
        if (n_store != 4) {
            for (; k + 8 <= kc; k += 8) {
                __m256 v[8], o[8];
                for (int r = 0; r < 8; r++)
                    v[r] = _mm256_loadu_ps(row[r] + k);
                TRANSPOSE_8X8(v, o)
                float *d = dst + (int64_t)k * width + ib;
                if (n_store == 8)
                    for (int kk = 0; kk < 8; kk++)
                        _mm256_storeu_ps(d + kk * width, o[kk]);
                else /* e.g. width 6 (vmaskmovps stores are slow on AMD) */
                    for (int kk = 0; kk < 8; kk++) {
                        float lanes[8];
                        _mm256_storeu_ps(lanes, o[kk]);
                        memcpy(d + kk * width, lanes, (size_t)n_store * sizeof(float));
                    }
            }
        } else {
            for (; k + 8 <= kc; k += 8) {
                __m256 v0 = _mm256_loadu_ps(row[0] + k), v1 = _mm256_loadu_ps(row[1] + k);
                __m256 v2 = _mm256_loadu_ps(row[2] + k), v3 = _mm256_loadu_ps(row[3] + k);
                __m256 t0 = _mm256_unpacklo_ps(v0, v1), t1 = _mm256_unpackhi_ps(v0, v1);
                __m256 t2 = _mm256_unpacklo_ps(v2, v3), t3 = _mm256_unpackhi_ps(v2, v3);
                __m256 o[4] = {_mm256_shuffle_ps(t0, t2, 0x44), _mm256_shuffle_ps(t0, t2, 0xEE),
                               _mm256_shuffle_ps(t1, t3, 0x44), _mm256_shuffle_ps(t1, t3, 0xEE)};
                float *d = dst + (int64_t)k * width + ib;
                for (int kk = 0; kk < 4; kk++) {
                    _mm_storeu_ps(d + kk * width, _mm256_castps256_ps128(o[kk]));
                    _mm_storeu_ps(d + (kk + 4) * width, _mm256_extractf128_ps(o[kk], 1));
                }
            }
        }
        for (; k < kc; k++)
            for (int r = 0; r < n_store; r++)
                dst[(int64_t)k * width + ib + r] = row[r][k];
    }
}
#endif

void cx_gemm_pack_matrix(const void *ctx, int item, int k0, int kc, int x0, int nx, int width,
                         float *dst) {
    const cx_gemm_matrix *m = ctx;
    const float *base = m->data + (int64_t)item * m->item_stride;
    if (matrix_x_contiguous(m)) {
        /* rows of the source are contiguous along x: walk each k row once, left to right */
        int n_full = nx / width, tail = nx - n_full * width;
        int64_t panel_stride = (int64_t)kc * width;
        for (int k = 0; k < kc; k++) {
            const float *s = base + matrix_k_offset(m, k0 + k) + x0;
            float *d = dst + (int64_t)k * width;
            /* constant sizes let the compiler inline the copies */
#define COPY_PANELS(W)                                                                        \
    for (int p = 0; p < n_full; p++)                                                          \
        memcpy(d + p * panel_stride, s + p * (W), (W) * sizeof(float));
            switch (width) {
            case 4: COPY_PANELS(4) break;
            case 6: COPY_PANELS(6) break;
            case 8: COPY_PANELS(8) break;
            case 12: COPY_PANELS(12) break;
            case 16: COPY_PANELS(16) break;
            case 24: COPY_PANELS(24) break;
            case 32: COPY_PANELS(32) break;
            case 48: COPY_PANELS(48) break;
            default: COPY_PANELS(width)
            }
#undef COPY_PANELS
            if (tail) {
                float *dt = d + n_full * panel_stride;
                const float *st = s + n_full * width;
                for (int i = 0; i < tail; i++)
                    dt[i] = st[i];
                for (int i = tail; i < width; i++)
                    dt[i] = 0.0f;
            }
        }
        return;
    }
    for (int x = 0; x < nx; x += width, dst += (int64_t)kc * width) {
        int rows = nx - x < width ? nx - x : width;
#ifdef CX_GEMM_X86
        const float *rows_ptr[64];
        if (!m->k_offsets && m->k_stride == 1 && width <= 64 && isa_level() >= 2) {
            for (int i = 0; i < rows; i++)
                rows_ptr[i] = base + matrix_x_offset(m, x0 + x + i) + k0;
            pack_transpose_avx2(rows_ptr, rows, kc, width, dst);
            continue;
        }
#endif
        for (int k = 0; k < kc; k++) {
            float *d = dst + (int64_t)k * width;
            int64_t k_off = matrix_k_offset(m, k0 + k);
            for (int i = 0; i < rows; i++)
                d[i] = base[matrix_x_offset(m, x0 + x + i) + k_off];
            for (int i = rows; i < width; i++)
                d[i] = 0.0f;
        }
    }
}

cx_gemm_matrix cx_gemm_matrix_a(const float *A, int lda, int trans_a, int64_t item_stride) {
    /* view(i, k) = op(A)[i, k] */
    cx_gemm_matrix m = {A, trans_a ? 1 : lda, trans_a ? lda : 1, item_stride, NULL, NULL};
    return m;
}

cx_gemm_matrix cx_gemm_matrix_b(const float *B, int ldb, int trans_b, int64_t item_stride) {
    /* view(j, k) = op(B)[k, j] */
    cx_gemm_matrix m = {B, trans_b ? ldb : 1, trans_b ? 1 : ldb, item_stride, NULL, NULL};
    return m;
}

