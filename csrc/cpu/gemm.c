/* Blocked, packed, multi-threaded SGEMM (see gemm.h for the contract).
 *
 * Structure (BLIS-like): K is cut into blocks of at most KC_MAX columns (a function of K
 * only). For each output tile (an MC x NC block of C, the unit of threading) and each K
 * block, the A block is packed into MR-row panels; B rows that are contiguous in memory
 * are read in place by the micro-kernel (through a per-k offset table, which is also how
 * convolutions address a padded image), other B operands are packed into NR-column panels
 * (or, when op(B) is small and shared by many tiles, packed once up front). The
 * micro-kernel computes each MR x NR sub-tile as one FMA chain over the K block and
 * applies the epilogue C = alpha*acc + beta*C + bias.
 *
 * Micro-kernels: AVX-512 (12x32, 24x16, 8x48), AVX2+FMA (6x16), portable C (4x8). The
 * AVX-512 and AVX2 kernels perform the same per-element FMA chain and epilogue, so they
 * produce identical bits; which one runs is a speed decision per problem shape (least
 * padding). Tile sizes follow a small cost model (choose_tiles) and may depend on the
 * thread count, since they never change any element's arithmetic. */
#include "gemm.h"

#if defined(__x86_64__) || defined(__i386__)
#define CX_GEMM_X86 1
#include <immintrin.h>
#endif
#include <sched.h>
#include <stdlib.h>
#include <string.h>

#define KC_MAX 320                         /* K block; A micro-panels (MR x kc) stay in L1 */
#define NC_L2_FLOATS (128 * 1024)          /* B block (kc x NC) budget: half of L2 */
#define MC_L3_FLOATS (1024 * 1024)         /* A block (MC x kc) budget: a slice of L3 */
#define CACHED_OPERAND_FLOATS (4 << 20)    /* operands larger than this come from DRAM */
#define TASK_OVERHEAD 50000                /* per tile, in multiply-adds (tiling model) */
#define SHARED_B_MAX_FLOATS ((size_t)4 << 20) /* pre-pack op(B) when at most 16 MB */
#define MR_MAX 24
#define NR_MAX 48

#ifdef CX_GEMM_X86
#define CX_AVX2 __attribute__((target("avx2,fma")))
#define CX_AVX512 __attribute__((target("avx512f,avx2,fma")))
#endif

typedef struct {
    float alpha, beta;
    int load_c;                   /* read C (beta != 0, or a later K block / item) */
    const float *bias_m, *bias_n; /* offset to the tile; NULL when absent */
} gemm_epilogue;

/* kc steps over the A rows a + a_off[k] (MR floats, broadcast) and the B rows
 * b + b_off[k] (NR floats); a NULL offset table means a packed panel (rows k*MR, k*NR
 * apart), a table addresses a matrix read in place. Writes the mr x nr top-left part of
 * the tile at c. */
typedef void (*micro_kernel_fn)(int kc, const float *a, const int64_t *a_off, const float *b,
                                const int64_t *b_off, float *c, int64_t ldc, int mr, int nr,
                                const gemm_epilogue *ep);

typedef struct {
    const char *name;
    int mr, nr;
    micro_kernel_fn fn;
} micro_kernel;

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
static const micro_kernel *choose_kernel(int M, int N) {
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

/* Offset of view(x, k) from m->data for item 0, by the strides or the offset tables. */
static inline int64_t matrix_x_offset(const cx_gemm_matrix *m, int x) {
    return m->x_offsets ? m->x_offsets[x] : (int64_t)x * m->x_stride;
}
static inline int64_t matrix_k_offset(const cx_gemm_matrix *m, int k) {
    return m->k_offsets ? m->k_offsets[k] : (int64_t)k * m->k_stride;
}
/* x-contiguous: view(x, k) = data[item*item_stride + k_offset(k) + x] */
static inline int matrix_x_contiguous(const cx_gemm_matrix *m) {
    return !m->x_offsets && m->x_stride == 1;
}

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

/* Threads the tiling plans for: the CPUs this process may use. Deliberately not
 * cx_get_num_threads(), which takes the pool's submit lock and so would deadlock when a
 * product runs inside a cx_parallel_for task; tiles only affect speed, never results. */
static int cpu_count(void) {
    static int cached;
    if (!cached) {
        cpu_set_t set;
        int n = sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : 1;
        cached = n > 0 ? n : 1;
    }
    return cached;
}

/* ---- driver ------------------------------------------------------------------------------ */

typedef struct {
    const cx_gemm_problem *p;
    const micro_kernel *uk;
    int kcb, n_kblocks;
    int mc, nc, m_blocks, n_blocks;
    int64_t n_pad;         /* N rounded up to NR */
    const float *shared_b; /* op(B) packed once, or NULL */
    int direct_a, direct_b; /* read full panels in place (x-contiguous matrices) */
    int failed;            /* a scratch allocation failed */
} gemm_plan;

static void k_block(const gemm_plan *g, int pb, int *k0, int *kc) {
    *k0 = pb * g->kcb;
    *kc = g->p->K - *k0 < g->kcb ? g->p->K - *k0 : g->kcb;
}

/* One output tile (rows [i0, i0+mc), columns [j0, j0+nc)) for items [item0, item1).
 * Loop order (as BLIS): the narrower micro-panel (A's MR x kc, or B's kc x NR) stays in
 * L1 while the other operand's block (sized for L2) streams past it. */
/* Where the micro-kernel finds one operand of a tile for the current K block: either a
 * packed block (panel p at packed + p*kc*width, rows k*width apart) or, for a matrix
 * contiguous along x, the matrix itself (panel p at in_place + p*width, row k at
 * offset[k]); a ragged last panel is always packed. */
typedef struct {
    const cx_gemm_operand *op;
    const cx_gemm_matrix *in_place_matrix; /* NULL: packed */
    float *packed;
    const float *in_place;
    int64_t in_place_off[KC_MAX];
    int width, n_full; /* panel width; extent of the full panels */
} tile_operand;

static void operand_load(tile_operand *t, int item, int k0, int kc, int x0, int nx) {
    const cx_gemm_matrix *m = t->in_place_matrix;
    if (!m) {
        t->op->pack(t->op->ctx, item, k0, kc, x0, nx, t->width, t->packed);
        t->n_full = 0;
        return;
    }
    t->in_place = m->data + x0;
    for (int k = 0; k < kc; k++)
        t->in_place_off[k] = (int64_t)item * m->item_stride + matrix_k_offset(m, k0 + k);
    t->n_full = nx / t->width * t->width;
    if (t->n_full < nx) /* the ragged panel goes to the start of the packed buffer */
        t->op->pack(t->op->ctx, item, k0, kc, x0 + t->n_full, nx - t->n_full, t->width,
                    t->packed);
}

static const float *operand_panel(const tile_operand *t, int x, int kc, const int64_t **off) {
    if (x < t->n_full) {
        *off = t->in_place_off;
        return t->in_place + x;
    }
    *off = NULL; /* packed: the kernel steps k*width */
    return t->packed + (int64_t)((x - t->n_full) / t->width) * kc * t->width;
}

static int in_place_ok(const cx_gemm_operand *op) {
    return op->pack == cx_gemm_pack_matrix && matrix_x_contiguous((const cx_gemm_matrix *)op->ctx);
}

static void gemm_tile(gemm_plan *g, int item0, int item1, int i0, int mc, int j0, int nc) {
    const cx_gemm_problem *p = g->p;
    const int MR = g->uk->mr, NR = g->uk->nr;
    tile_operand ta, tb; /* ~10 KB of offset tables on the stack */
    ta.op = &p->A;
    tb.op = &p->B;
    ta.width = MR;
    tb.width = NR;
    ta.in_place_matrix = g->direct_a ? p->A.ctx : NULL;
    tb.in_place_matrix = g->direct_b ? p->B.ctx : NULL;
    ta.packed = cx_scratch(CX_GEMM_SLOT_A, (size_t)(g->direct_a ? MR : round_up(mc, MR)) * g->kcb + 64);
    tb.packed = g->shared_b ? NULL
                            : cx_scratch(CX_GEMM_SLOT_B,
                                         (size_t)(g->direct_b ? NR : round_up(nc, NR)) * g->kcb + 64);
    if (!ta.packed || (!g->shared_b && !tb.packed)) {
        __atomic_store_n(&g->failed, 1, __ATOMIC_RELAXED);
        return;
    }
    tb.n_full = 0;
    for (int item = item0; item < item1; item++) {
        float *c_item = p->C + (p->reduce_items ? 0 : (int64_t)item * p->c_item_stride);
        for (int pb = 0; pb < g->n_kblocks; pb++) {
            int k0, kc;
            k_block(g, pb, &k0, &kc);
            operand_load(&ta, item, k0, kc, i0, mc);
            if (g->shared_b)
                tb.packed = (float *)g->shared_b + (int64_t)k0 * g->n_pad + (int64_t)j0 * kc;
            else
                operand_load(&tb, item, k0, kc, j0, nc);
            int first = pb == 0 && (!p->reduce_items || item == item0);
            gemm_epilogue ep = {p->alpha, first ? p->beta : 1.0f, !first || p->beta != 0.0f,
                                NULL, NULL};
            /* The narrower micro-panel stays in L1 while the other streams past it. */
            int a_outer = MR <= NR;
            int n_ir = (mc + MR - 1) / MR, n_jr = (nc + NR - 1) / NR;
            for (int outer = 0; outer < (a_outer ? n_ir : n_jr); outer++)
                for (int inner = 0; inner < (a_outer ? n_jr : n_ir); inner++) {
                    int ir = (a_outer ? outer : inner) * MR, jr = (a_outer ? inner : outer) * NR;
                    int mr = mc - ir < MR ? mc - ir : MR;
                    int nr = nc - jr < NR ? nc - jr : NR;
                    ep.bias_m = first && p->bias_m ? p->bias_m + i0 + ir : NULL;
                    ep.bias_n = first && p->bias_n ? p->bias_n + j0 + jr : NULL;
                    const int64_t *a_off, *b_off;
                    const float *a_panel = operand_panel(&ta, ir, kc, &a_off);
                    const float *b_panel = operand_panel(&tb, jr, kc, &b_off);
                    g->uk->fn(kc, a_panel, a_off, b_panel, b_off,
                              c_item + (int64_t)(i0 + ir) * p->ldc + j0 + jr, p->ldc, mr, nr, &ep);
                }
        }
    }
}

static void gemm_tiles_task(void *ctx, int64_t begin, int64_t end) {
    gemm_plan *g = ctx;
    const cx_gemm_problem *p = g->p;
    int64_t per_item = (int64_t)g->m_blocks * g->n_blocks;
    for (int64_t t = begin; t < end; t++) {
        int item = (int)(t / per_item);
        int rest = (int)(t % per_item);
        int mb = rest / g->n_blocks, nb = rest % g->n_blocks;
        int i0 = mb * g->mc, j0 = nb * g->nc;
        int mc = p->M - i0 < g->mc ? p->M - i0 : g->mc;
        int nc = p->N - j0 < g->nc ? p->N - j0 : g->nc;
        if (p->reduce_items)
            gemm_tile(g, 0, p->items, i0, mc, j0, nc);
        else
            gemm_tile(g, item, item + 1, i0, mc, j0, nc);
    }
}

/* Pre-packing of op(B): task = (K block, group of 8 NR-panels). */
#define PREPACK_PANELS 8
static void prepack_b_task(void *ctx, int64_t begin, int64_t end) {
    gemm_plan *g = ctx;
    const int NR = g->uk->nr;
    int64_t groups = (g->n_pad / NR + PREPACK_PANELS - 1) / PREPACK_PANELS;
    float *packed = (float *)g->shared_b;
    for (int64_t t = begin; t < end; t++) {
        int pb = (int)(t / groups), grp = (int)(t % groups);
        int k0, kc;
        k_block(g, pb, &k0, &kc);
        int j0 = grp * PREPACK_PANELS * NR;
        int nc = g->p->N - j0 < PREPACK_PANELS * NR ? g->p->N - j0 : PREPACK_PANELS * NR;
        g->p->B.pack(g->p->B.ctx, 0, k0, kc, j0, nc, NR,
                     packed + (int64_t)k0 * g->n_pad + (int64_t)j0 * kc);
    }
}

/* K == 0: C = beta*C + bias, with the same operation order as the kernels' epilogue. */
static void gemm_no_k(const cx_gemm_problem *p) {
    int n_c = p->reduce_items ? 1 : p->items;
    for (int t = 0; t < n_c; t++) {
        float *c = p->C + (int64_t)t * p->c_item_stride;
        for (int i = 0; i < p->M; i++)
            for (int j = 0; j < p->N; j++) {
                float v = p->alpha * 0.0f;
                if (p->beta != 0.0f)
                    v = v + p->beta * c[(int64_t)i * p->ldc + j];
                if (p->bias_m)
                    v = v + p->bias_m[i];
                if (p->bias_n)
                    v = v + p->bias_n[j];
                c[(int64_t)i * p->ldc + j] = v;
            }
    }
}

/* Chooses the output tiling (mc x nc blocks, one task each). Tiles never change results,
 * so this may depend on the thread count. The cost estimate, in multiply-adds of one
 * thread: the makespan of the padded work, plus half a task for dynamic-scheduling
 * imbalance, plus the operand traffic (A is read once per column block, B once per row
 * block unless pre-packed), weighted by how far away the operands live. */
static void choose_tiles(gemm_plan *g, int threads) {
    const cx_gemm_problem *p = g->p;
    const int MR = g->uk->mr, NR = g->uk->nr;
    int64_t k_total = (int64_t)p->K * (p->reduce_items ? p->items : 1);
    int items_eff = p->reduce_items ? 1 : p->items;
    int64_t nc_cap = NC_L2_FLOATS / g->kcb / NR * NR;
    if (nc_cap < NR)
        nc_cap = NR;
    int64_t mc_cap = MC_L3_FLOATS / g->kcb / MR * MR;
    if (mc_cap < MR)
        mc_cap = MR;
    int64_t m_panels = (p->M + MR - 1) / MR, n_panels = (p->N + NR - 1) / NR;
    int64_t operand_floats = ((int64_t)p->M + p->N) * k_total;
    double traffic_weight = operand_floats > CACHED_OPERAND_FLOATS ? 12.0 : 3.0;
    int b_shared = g->shared_b != NULL;
    double best = -1;
    int64_t mb_min = (p->M + mc_cap - 1) / mc_cap, nb_min = (p->N + nc_cap - 1) / nc_cap;
    for (int64_t mb = mb_min; mb <= m_panels; mb = mb < 8 ? mb + 1 : mb + (mb + 7) / 8) {
        int64_t mc = round_up((p->M + mb - 1) / mb, MR);
        int64_t mb_real = (p->M + mc - 1) / mc;
        for (int64_t nb = nb_min; nb <= n_panels; nb = nb < 8 ? nb + 1 : nb + (nb + 7) / 8) {
            int64_t nc = round_up((p->N + nb - 1) / nb, NR);
            int64_t nb_real = (p->N + nc - 1) / nc;
            int64_t tasks = items_eff * mb_real * nb_real;
            double task_work = (double)mc * nc * k_total;
            double makespan = (double)((tasks + threads - 1) / threads) * task_work;
            double traffic = (double)items_eff * k_total *
                             ((double)nb_real * p->M + (b_shared ? 1.0 : (double)mb_real) * p->N);
            double cost = makespan + 0.5 * task_work + traffic_weight * traffic +
                          (double)TASK_OVERHEAD * tasks / threads;
            if (best < 0 || cost < best) {
                best = cost;
                g->mc = (int)mc;
                g->nc = (int)nc;
                g->m_blocks = (int)mb_real;
                g->n_blocks = (int)nb_real;
            }
            if (tasks >= 64L * threads)
                break;
        }
    }
}

void cx_gemm_run(const cx_gemm_problem *p) {
    if (p->M <= 0 || p->N <= 0 || p->items <= 0)
        return;
    if (p->K <= 0) {
        gemm_no_k(p);
        return;
    }
    gemm_plan g = {0};
    g.p = p;
    g.uk = choose_kernel(p->M, p->N);
    const int NR = g.uk->nr;
    /* K blocks depend on K only (this fixes each element's summation order). */
    g.n_kblocks = (p->K + KC_MAX - 1) / KC_MAX;
    g.kcb = (p->K + g.n_kblocks - 1) / g.n_kblocks;
    g.n_pad = round_up(p->N, NR);
    int threads = cpu_count();

    /* Pack op(B) once when it is shared by several row blocks and small enough. */
    size_t b_floats = (size_t)g.n_pad * (size_t)p->K;
    int64_t mc_cap = MC_L3_FLOATS / g.kcb;
    float *packed = NULL;
    if (p->items == 1 && (p->M > mc_cap || p->M > 4 * g.uk->mr * threads) &&
        b_floats <= SHARED_B_MAX_FLOATS)
        packed = cx_scratch(CX_GEMM_SLOT_B, b_floats + 64);
    g.shared_b = packed;
    choose_tiles(&g, threads);
    if (packed && g.m_blocks == 1)
        g.shared_b = NULL; /* one row block: pack B inside the tiles instead */
    /* operands whose rows are contiguous in memory are read in place */
    g.direct_b = !g.shared_b && in_place_ok(&p->B);
    /* A in place when its micro-panels stream anyway (B kept in L1), or when K is long
     * enough that packing A would mostly wait on memory (weight gradients) */
    g.direct_a = in_place_ok(&p->A) && (g.uk->mr > g.uk->nr || g.n_kblocks >= 8);
    if (g.shared_b) {
        int64_t groups = (g.n_pad / NR + PREPACK_PANELS - 1) / PREPACK_PANELS;
        cx_parallel_for((int64_t)g.n_kblocks * groups, 1, prepack_b_task, &g);
    }
    int items_eff = p->reduce_items ? 1 : p->items;
    int64_t n_tasks = (int64_t)items_eff * g.m_blocks * g.n_blocks;
    cx_parallel_for(n_tasks, 1, gemm_tiles_task, &g);
    if (g.failed)
        cx_fail(CX_ENOMEM, "gemm: out of memory for packing buffers (%d x %d x %d)", p->M, p->N,
                p->K);
}

void cx_gemm(int trans_a, int trans_b, int M, int N, int K, float alpha, const float *A,
             int lda, const float *B, int ldb, float beta, float *C, int ldc) {
    cx_gemm_matrix a = cx_gemm_matrix_a(A, lda, trans_a, 0);
    cx_gemm_matrix b = cx_gemm_matrix_b(B, ldb, trans_b, 0);
    cx_gemm_problem p = {0};
    p.M = M;
    p.N = N;
    p.K = K;
    p.items = 1;
    p.alpha = alpha;
    p.beta = beta;
    p.A = (cx_gemm_operand){cx_gemm_pack_matrix, &a};
    p.B = (cx_gemm_operand){cx_gemm_pack_matrix, &b};
    p.C = C;
    p.ldc = ldc;
    cx_gemm_run(&p);
}
