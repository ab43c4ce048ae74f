/* Pointwise ops of the CPU backend: GELU (exact erf), sigmoid, softmax over the last
 * dim, and the small arithmetic ops (add, axpy, mul, affine). Shapes in ops.h.
 *
 * Accuracy: the transcendental parts are evaluated in double with our own exp and erfc
 * (plain arithmetic, no library calls), so gcc -O3 vectorises the loops and every float
 * result is within about one rounding of the exact value, also in the tails (GELU of
 * large negative x is x * Phi(x) from erfc, not 1 + erf with its cancellation).
 *
 * Threads: elementwise loops are split into ranges with cx_parallel_for; each output
 * depends only on its own inputs, so the split cannot change a result. Softmax rows are
 * reduced inside one task in a fixed order. */
#include "cpu_ops.h"

/* Lets gcc if-convert the selects in the loops below (a comparison may raise an FP
 * exception flag, which we never read); the values computed do not change. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-trapping-math")
#endif

#include <math.h>
#include <stdint.h>
#include <string.h>


/* Elements per task for memory-bound loops, and for the costlier GELU/sigmoid. */
#define GRAIN_SIMPLE (1 << 15)
#define GRAIN_TRANSCENDENTAL (1 << 13)

/* ---- exp and erfc in double ------------------------------------------------------ */

/* exp(a) for a <= 0 (a is clamped at -708, where exp is still a normal double; NaN
 * passes through). Cody-Waite reduction a = n ln2 + r, |r| <= ln2/2, a degree-10
 * Taylor polynomial for exp(r) (truncation < 3e-13 relative) and 2^n built in the
 * exponent bits. Branch-free so that loops calling it vectorise. */
static inline double exp_nonpositive(double a) {
    const double shifter = 0x1.8p52; /* adding it rounds to an integer kept in the low bits */
    const double log2e = 1.4426950408889634;
    const double ln2_hi = 0x1.62e42fee00000p-1; /* n * ln2_hi is exact for |n| < 2^20 */
    const double ln2_lo = 0x1.a39ef35793c76p-33;
    a = a < -708.0 ? -708.0 : a;
    double k = a * log2e + shifter;
    double n = k - shifter;
    double r = (a - n * ln2_hi) - n * ln2_lo;
    double p = 1.0 / 3628800.0;
    p = p * r + 1.0 / 362880.0;
    p = p * r + 1.0 / 40320.0;
    p = p * r + 1.0 / 5040.0;
    p = p * r + 1.0 / 720.0;
    p = p * r + 1.0 / 120.0;
    p = p * r + 1.0 / 24.0;
    p = p * r + 1.0 / 6.0;
    p = p * r + 0.5;
    p = p * r + 1.0;
    p = p * r + 1.0;
    /* k's low bits hold 2^51 + n; 2^n has exponent field n + 1023 */
    uint64_t k_bits, shifter_bits;
    memcpy(&k_bits, &k, sizeof k_bits);
    memcpy(&shifter_bits, &shifter, sizeof shifter_bits);
    uint64_t scale_bits = (k_bits - shifter_bits + 1023u) << 52;
    double scale;
    memcpy(&scale, &scale_bits, sizeof scale);
    return p * scale;
}

/* exp(-x^2/2), set to 0 beyond |x| = 14 where it (times anything of float range) is
 * below float's smallest value. x^2/2 is exact in double for float x. */
static inline double gaussian(double x) {
    double e = exp_nonpositive(-0.5 * x * x);
    return fabs(x) > 14.0 ? 0.0 : e;
}

/* Phi(-|x|) = erfc(|x|/sqrt2)/2, the normal tail, given e = gaussian(x).
 * erfc(z) = t exp(-z^2) P(t), t = 1/(1 + 0.3 z): P is a degree-10 least-squares
 * (Lawson-reweighted, Chebyshev-basis) fit of erfc(z) exp(z^2)/t on z in [0, 10]
 * (|x| <= 14.1), max relative error 5.1e-10 there. */
static inline double normal_tail(double abs_x, double e) {
    const double z = abs_x * 0.70710678118654752;
    const double t = 1.0 / (1.0 + 0.3 * z);
    double p = 0.05552465793463646;
    p = p * t - 0.33158374990764317;
    p = p * t + 0.7408201992547759;
    p = p * t - 0.8347066643602821;
    p = p * t + 0.7675765144682326;
    p = p * t - 0.27948250544506076;
    p = p * t + 0.2658502064339896;
    p = p * t + 0.11044948526189077;
    p = p * t + 0.16759011254474443;
    p = p * t + 0.16868002036851554;
    p = p * t + 0.1692817232837377;
    return 0.5 * t * e * p;
}

/* ---- GELU -------------------------------------------------------------------------
 * y = x Phi(x) = 0.5 x (1 + erf(x/sqrt2)); dy/dx = Phi(x) + x phi(x),
 * phi(x) = exp(-x^2/2)/sqrt(2 pi). x^2/2 is exact in double for float x. */
typedef struct {
    const float *x, *dy;
    float *out;
} unary_args;

VECTOR_CLONES static void gelu_forward_range(void *ctx, int64_t begin, int64_t end) {
    const unary_args *args = ctx;
    const float *x = args->x;
    float *y = args->out;
    for (int64_t i = begin; i < end; i++) {
        double xd = x[i];
        double e = gaussian(xd);
        double tail = normal_tail(fabs(xd), e);
        double cdf = xd >= 0.0 ? 1.0 - tail : tail;
        y[i] = (float)(xd * cdf);
    }
}

void cpu_gelu_forward(cx_backend *be, size_t n, const float *x, float *y) {
    unary_args args = {x, NULL, y};
    cx_parallel_for((int64_t)n, GRAIN_TRANSCENDENTAL, gelu_forward_range, &args);
}

VECTOR_CLONES static void gelu_backward_range(void *ctx, int64_t begin, int64_t end) {
    const unary_args *args = ctx;
    const float *x = args->x, *dy = args->dy;
    float *dx = args->out;
    const double inv_sqrt_2pi = 0.39894228040143268;
    for (int64_t i = begin; i < end; i++) {
        double xd = x[i];
        double e = gaussian(xd);
        double tail = normal_tail(fabs(xd), e);
        double cdf = xd >= 0.0 ? 1.0 - tail : tail;
        double slope = cdf + xd * e * inv_sqrt_2pi;
        dx[i] += (float)(dy[i] * slope);
    }
}

void cpu_gelu_backward(cx_backend *be, size_t n, const float *x, const float *dy, float *dx) {
    if (!dx)
        return;
    unary_args args = {x, dy, dx};
    cx_parallel_for((int64_t)n, GRAIN_TRANSCENDENTAL, gelu_backward_range, &args);
}

/* ---- sigmoid ----------------------------------------------------------------------
 * With e = exp(-|x|) <= 1 nothing overflows: y = 1/(1+e) for x >= 0, e/(1+e) below. */
VECTOR_CLONES static void sigmoid_forward_range(void *ctx, int64_t begin, int64_t end) {
    const unary_args *args = ctx;
    const float *x = args->x;
    float *y = args->out;
    for (int64_t i = begin; i < end; i++) {
        double xd = x[i];
        double e = exp_nonpositive(-fabs(xd));
        double s = 1.0 / (1.0 + e);
        y[i] = (float)(xd >= 0.0 ? s : e * s);
    }
}

void cpu_sigmoid_forward(cx_backend *be, size_t n, const float *x, float *y) {
    unary_args args = {x, NULL, y};
    cx_parallel_for((int64_t)n, GRAIN_TRANSCENDENTAL, sigmoid_forward_range, &args);
}

/* dx += dy * y (1 - y), from the forward output y */
static void sigmoid_backward_range(void *ctx, int64_t begin, int64_t end) {
    const unary_args *args = ctx;
    const float *y = args->x, *dy = args->dy;
    float *dx = args->out;
    for (int64_t i = begin; i < end; i++)
        dx[i] += dy[i] * (y[i] * (1.0f - y[i]));
}

void cpu_sigmoid_backward(cx_backend *be, size_t n, const float *y, const float *dy, float *dx) {
    if (!dx)
        return;
    unary_args args = {y, dy, dx};
    cx_parallel_for((int64_t)n, GRAIN_SIMPLE, sigmoid_backward_range, &args);
}

/* ---- softmax over the last dim ----------------------------------------------------
 * x, y [rows, cols]. y = exp(x - max) / sum, exp and sum in double (8 interleaved
 * partial sums combined in a fixed order). Backward: dx += y * (dy - <dy, y>). */
typedef struct {
    int rows, cols;
    const float *x, *dy;
    float *out;
} rows_args;

VECTOR_CLONES static void softmax_forward_range(void *ctx, int64_t begin, int64_t end) {
    const rows_args *args = ctx;
    const int cols = args->cols;
    for (int64_t r = begin; r < end; r++) {
        const float *x = args->x + r * cols;
        float *y = args->out + r * cols;
        float max_x = x[0];
        for (int c = 1; c < cols; c++)
            max_x = x[c] > max_x ? x[c] : max_x;
        double partial[8] = {0};
        int c = 0;
        for (; c + 8 <= cols; c += 8)
            for (int j = 0; j < 8; j++) {
                double e = exp_nonpositive((double)x[c + j] - max_x);
                y[c + j] = (float)e;
                partial[j] += e;
            }
        for (; c < cols; c++) {
            double e = exp_nonpositive((double)x[c] - max_x);
            y[c] = (float)e;
            partial[0] += e;
        }
        double sum = ((partial[0] + partial[4]) + (partial[1] + partial[5])) +
                     ((partial[2] + partial[6]) + (partial[3] + partial[7]));
        double inv = 1.0 / sum;
        for (c = 0; c < cols; c++)
            y[c] = (float)(y[c] * inv);
    }
}

void cpu_softmax_forward(cx_backend *be, int rows, int cols, const float *x, float *y) {
    if (rows <= 0 || cols <= 0)
        return;
    rows_args args = {rows, cols, x, NULL, y};
    int64_t grain = GRAIN_TRANSCENDENTAL / cols + 1;
    cx_parallel_for(rows, grain, softmax_forward_range, &args);
}

static void softmax_backward_range(void *ctx, int64_t begin, int64_t end) {
    const rows_args *args = ctx;
    const int cols = args->cols;
    for (int64_t r = begin; r < end; r++) {
        const float *y = args->x + r * cols;
        const float *dy = args->dy + r * cols;
        float *dx = args->out + r * cols;
        double partial[8] = {0};
        int c = 0;
        for (; c + 8 <= cols; c += 8)
            for (int j = 0; j < 8; j++)
                partial[j] += (double)dy[c + j] * y[c + j];
        for (; c < cols; c++)
            partial[0] += (double)dy[c] * y[c];
        double dot = ((partial[0] + partial[4]) + (partial[1] + partial[5])) +
                     ((partial[2] + partial[6]) + (partial[3] + partial[7]));
        for (c = 0; c < cols; c++)
            dx[c] += (float)(y[c] * (dy[c] - dot));
    }
}

void cpu_softmax_backward(cx_backend *be, int rows, int cols, const float *y, const float *dy,
                          float *dx) {
    if (!dx || rows <= 0 || cols <= 0)
        return;
    rows_args args = {rows, cols, y, dy, dx};
    int64_t grain = GRAIN_SIMPLE / cols + 1;
    cx_parallel_for(rows, grain, softmax_backward_range, &args);
}

/* ---- arithmetic ------------------------------------------------------------------- */
typedef struct {
    const float *a, *b, *dy;
    float *out, *out2;
    float alpha, beta;
} arith_args;

static void add_range(void *ctx, int64_t begin, int64_t end) {
    const arith_args *args = ctx;
    const float *a = args->a, *b = args->b;
    float *y = args->out;
    for (int64_t i = begin; i < end; i++)
        y[i] = a[i] + b[i];
}

void cpu_add(cx_backend *be, size_t n, const float *a, const float *b, float *y) {
    arith_args args = {.a = a, .b = b, .out = y};
    cx_parallel_for((int64_t)n, GRAIN_SIMPLE, add_range, &args);
}

static void axpy_range(void *ctx, int64_t begin, int64_t end) {
    const arith_args *args = ctx;
    const float *x = args->a;
    float *y = args->out;
    const float alpha = args->alpha;
    for (int64_t i = begin; i < end; i++)
        y[i] += alpha * x[i];
}

void cpu_axpy(cx_backend *be, size_t n, float alpha, const float *x, float *y) {
    if (!y)
        return;
    arith_args args = {.a = x, .out = y, .alpha = alpha};
    cx_parallel_for((int64_t)n, GRAIN_SIMPLE, axpy_range, &args);
}

static void mul_forward_range(void *ctx, int64_t begin, int64_t end) {
    const arith_args *args = ctx;
    const float *a = args->a, *b = args->b;
    float *y = args->out;
    for (int64_t i = begin; i < end; i++)
        y[i] = a[i] * b[i];
}

void cpu_mul_forward(cx_backend *be, size_t n, const float *a, const float *b, float *y) {
    arith_args args = {.a = a, .b = b, .out = y};
    cx_parallel_for((int64_t)n, GRAIN_SIMPLE, mul_forward_range, &args);
}

/* da += dy * b, db += dy * a (either may be NULL) */
static void mul_backward_range(void *ctx, int64_t begin, int64_t end) {
    const arith_args *args = ctx;
    const float *a = args->a, *b = args->b, *dy = args->dy;
    float *da = args->out, *db = args->out2;
    if (da)
        for (int64_t i = begin; i < end; i++)
            da[i] += dy[i] * b[i];
    if (db)
        for (int64_t i = begin; i < end; i++)
            db[i] += dy[i] * a[i];
}

void cpu_mul_backward(cx_backend *be, size_t n, const float *a, const float *b, const float *dy,
                      float *da, float *db) {
    if (!da && !db)
        return;
    arith_args args = {.a = a, .b = b, .dy = dy, .out = da, .out2 = db};
    cx_parallel_for((int64_t)n, GRAIN_SIMPLE, mul_backward_range, &args);
}

static void affine_range(void *ctx, int64_t begin, int64_t end) {
    const arith_args *args = ctx;
    const float *x = args->a;
    float *y = args->out;
    const float alpha = args->alpha, beta = args->beta;
    for (int64_t i = begin; i < end; i++)
        y[i] = alpha * x[i] + beta;
}

/* y = alpha x + beta; y may alias x */
void cpu_affine(cx_backend *be, size_t n, float alpha, float beta, const float *x, float *y) {
    arith_args args = {.a = x, .out = y, .alpha = alpha, .beta = beta};
    cx_parallel_for((int64_t)n, GRAIN_SIMPLE, affine_range, &args);
}
