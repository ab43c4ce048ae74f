/* 2-D convolution, NCHW (shapes in ops.h, cx_conv_shape), on the blocked GEMM.
 *
 * Per image and group, with Kc = (in_ch/groups) * k_h * k_w and P = out_h * out_w:
 *   forward  y[b,g] [Cout_g, P]  = w_g [Cout_g, Kc] . col(x[b,g]) [Kc, P]   (+ bias)
 *   dw_g    [Cout_g, Kc]        += sum_b dy[b,g] [Cout_g, P] . col(x[b,g])^T
 *   dx                          += col2im(w_g^T . dy[b,g])
 * Paths (channel-wise convolutions, groups == in_ch, go to conv_depthwise.c):
 *   - pointwise (1x1, stride 1, no padding): x[b] already is the [Cin, P] matrix.
 *   - stride 1: the image is copied once into a zero-padded buffer of width Wp. On the
 *     "virtual grid" of out_h rows of Wp pixels, col(x)[(c, kh, kw), j] is the padded
 *     image at offset c*plane + kh*dil*Wp + kw*dil + j: a matrix whose rows are the image
 *     itself at per-tap offsets, which the GEMM reads in place (no im2col copy). The
 *     Wp - out_w extra columns per row are computed and dropped. dx is the same kind of
 *     correlation of the padded dy with the transposed filters (no col2im), and dw pairs
 *     the padded image with dy laid out on the virtual grid (zeros in the extra columns).
 *   - any other stride: explicit columns per image in scratch; dx through a col2im in
 *     which each task owns an input plane and adds the taps in a fixed order.
 * Every output element is produced by one GEMM dot product (fixed order, see gemm.h) or
 * one task, so results do not depend on the thread count. Images are processed in
 * chunks sized by the problem (never by the thread count). */
#include <string.h>

#include "cpu_ops.h"
#include "cpu_error.h"
#include "gemm.h"

/* conv_depthwise.c */
int cx_conv_is_channelwise(const cx_conv_shape *s);
void cx_conv_channelwise_forward(const cx_conv_shape *s, const float *x, const float *w,
                                 const float *bias, float *y);
void cx_conv_channelwise_backward(const cx_conv_shape *s, const float *x, const float *w,
                                  const float *dy, float *dx, float *dw, float *dbias);

#define CHUNK_FLOATS ((size_t)8 << 20) /* scratch budget per image chunk (32 MB) */
#define SLACK_FLOATS 64

typedef struct {
    const cx_conv_shape *s;
    int out_h, out_w, cin_g, cout_g, kk, kc;
    int64_t in_hw, out_hw;
} conv_dims;

static conv_dims conv_dims_of(const cx_conv_shape *s) {
    conv_dims d;
    d.s = s;
    d.out_h = cx_conv_out_h(s);
    d.out_w = cx_conv_out_w(s);
    d.cin_g = s->in_ch / s->groups;
    d.cout_g = s->out_ch / s->groups;
    d.kk = s->k_h * s->k_w;
    d.kc = d.cin_g * d.kk;
    d.in_hw = (int64_t)s->in_h * s->in_w;
    d.out_hw = (int64_t)d.out_h * d.out_w;
    return d;
}

static int is_pointwise(const cx_conv_shape *s) {
    return s->k_h == 1 && s->k_w == 1 && s->stride == 1 && s->pad_h == 0 && s->pad_w == 0;
}

static int images_per_chunk(const cx_conv_shape *s, size_t floats_per_image) {
    size_t n = CHUNK_FLOATS / (floats_per_image ? floats_per_image : 1);
    if (n < 1)
        n = 1;
    return n < (size_t)s->batch ? (int)n : s->batch;
}

/* n rounded up to 16 floats: keeps tables carved after a buffer 64-byte aligned */
static size_t align16(size_t n) { return (n + 15) / 16 * 16; }

static void report_oom(const char *what) {
    cx_cpu_record_error(CX_ENOMEM, "conv2d: out of scratch memory for %s", what);
}

/* ---- plane copies (parallel over planes) --------------------------------------------------
 * dst plane p [dst_h, dst_w] (planes dst_plane apart) = zeros with src plane p
 * [src_h, src_w] placed at (top, left). */
typedef struct {
    const float *src;
    float *dst;
    int64_t src_plane, dst_plane;
    int src_h, src_w, dst_h, dst_w, top, left;
} plane_copy;

static void pad_planes_task(void *vctx, int64_t begin, int64_t end) {
    const plane_copy *c = vctx;
    for (int64_t p = begin; p < end; p++) {
        const float *src = c->src + p * c->src_plane;
        float *dst = c->dst + p * c->dst_plane;
        memset(dst, 0, (size_t)c->dst_plane * sizeof(float));
        for (int r = 0; r < c->src_h; r++)
            memcpy(dst + (int64_t)(r + c->top) * c->dst_w + c->left, src + (int64_t)r * c->src_w,
                   (size_t)c->src_w * sizeof(float));
    }
}

/* dst[p] (rows x cols) (=|+=) src[p] window at (0, 0) with row stride src_w. */
typedef struct {
    const float *src;
    float *dst;
    int64_t src_plane, dst_plane;
    int rows, cols, src_w, accumulate;
} plane_crop;

static void crop_planes_task(void *vctx, int64_t begin, int64_t end) {
    const plane_crop *c = vctx;
    for (int64_t p = begin; p < end; p++)
        for (int r = 0; r < c->rows; r++) {
            const float *src = c->src + p * c->src_plane + (int64_t)r * c->src_w;
            float *dst = c->dst + p * c->dst_plane + (int64_t)r * c->cols;
            if (c->accumulate)
                for (int q = 0; q < c->cols; q++)
                    dst[q] += src[q];
            else
                memcpy(dst, src, (size_t)c->cols * sizeof(float));
        }
}

/* ---- stride 1: padded image, virtual grid ---------------------------------------------------- */

typedef struct {
    int rows, cols; /* padded plane */
    int64_t plane;
} padded_geometry;

/* offsets[(c, kh, kw)] = c*plane + (row0 + kh*step)*cols + col0 + kw*step */
static void tap_offsets(int64_t *offsets, int channels, int k_h, int k_w, int64_t plane,
                        int cols, int row0, int col0, int step) {
    int64_t i = 0;
    for (int c = 0; c < channels; c++)
        for (int kh = 0; kh < k_h; kh++)
            for (int kw = 0; kw < k_w; kw++)
                offsets[i++] = c * plane + (int64_t)(row0 + kh * step) * cols + col0 + kw * step;
}

/* Padded x: rows H + 2 pad_h, cols W + 2 pad_w; output pixel (oh, ow) is grid j = oh*cols
 * + ow and reads tap (kh, kw) at row oh + kh*dil, column ow + kw*dil. */
static padded_geometry input_padding(const cx_conv_shape *s) {
    padded_geometry p;
    p.rows = s->in_h + 2 * s->pad_h;
    p.cols = s->in_w + 2 * s->pad_w;
    p.plane = (int64_t)p.rows * p.cols;
    return p;
}

static void pad_images(const cx_conv_shape *s, const float *x, int n_images, float *xpad,
                       padded_geometry pg) {
    plane_copy c = {x, xpad, (int64_t)s->in_h * s->in_w, pg.plane, s->in_h, s->in_w,
                    pg.rows, pg.cols, s->pad_h, s->pad_w};
    cx_parallel_for((int64_t)n_images * s->in_ch, 4, pad_planes_task, &c);
}

static void forward_stride1(const conv_dims *d, const float *x, const float *w,
                            const float *bias, float *y) {
    const cx_conv_shape *s = d->s;
    padded_geometry pg = input_padding(s);
    int64_t grid = (int64_t)d->out_h * pg.cols; /* virtual-grid pixels per plane */
    size_t pad_floats = (size_t)s->in_ch * pg.plane, out_floats = (size_t)s->out_ch * grid;
    int chunk = images_per_chunk(s, pad_floats + out_floats);
    float *xpad = cx_scratch(0, chunk * pad_floats + SLACK_FLOATS + pg.cols);
    float *out = cx_scratch(1, chunk * out_floats + 2 * (size_t)d->kc + 16);
    if (!xpad || !out) {
        report_oom("the padded input");
        return;
    }
    int64_t *offsets = (int64_t *)(out + align16(chunk * out_floats));
    tap_offsets(offsets, d->cin_g, s->k_h, s->k_w, pg.plane, pg.cols, 0, 0, s->dilation);
    memset(xpad + chunk * pad_floats, 0, (SLACK_FLOATS + pg.cols) * sizeof(float));
    for (int b0 = 0; b0 < s->batch; b0 += chunk) {
        int n = s->batch - b0 < chunk ? s->batch - b0 : chunk;
        pad_images(s, x + (int64_t)b0 * s->in_ch * d->in_hw, n, xpad, pg);
        for (int g = 0; g < s->groups; g++) {
            cx_gemm_matrix weights = {.data = w + (int64_t)g * d->cout_g * d->kc, .x_stride = d->kc, .k_stride = 1};
            cx_gemm_matrix image = {xpad + (int64_t)g * d->cin_g * pg.plane, 1, 0,
                                    (int64_t)pad_floats, NULL, offsets};
            cx_gemm_problem p = {0};
            p.M = d->cout_g;
            p.N = (int)grid;
            p.K = d->kc;
            p.items = n;
            p.alpha = 1.0f;
            p.A = (cx_gemm_operand){cx_gemm_pack_matrix, &weights};
            p.B = (cx_gemm_operand){cx_gemm_pack_matrix, &image};
            p.C = out + (int64_t)g * d->cout_g * grid;
            p.ldc = grid;
            p.c_item_stride = (int64_t)out_floats;
            p.bias_m = bias ? bias + (int64_t)g * d->cout_g : NULL;
            cx_gemm_run(&p);
        }
        plane_crop c = {out, y + (int64_t)b0 * s->out_ch * d->out_hw, grid, d->out_hw,
                        d->out_h, d->out_w, pg.cols, 0};
        cx_parallel_for((int64_t)n * s->out_ch, 4, crop_planes_task, &c);
    }
}

/* w_t [groups][Cin_g][Cout_g * kk] with w_t[g][ci][(co, tap)] = w[g*Cout_g + co][ci][tap]:
 * the filters of the transposed correlation that gives dx. */
static void transpose_filters(const conv_dims *d, const float *w, float *w_t) {
    const cx_conv_shape *s = d->s;
    int64_t row = (int64_t)d->cout_g * d->kk;
    for (int g = 0; g < s->groups; g++)
        for (int co = 0; co < d->cout_g; co++)
            for (int ci = 0; ci < d->cin_g; ci++)
                memcpy(w_t + ((int64_t)g * d->cin_g + ci) * row + (int64_t)co * d->kk,
                       w + (((int64_t)g * d->cout_g + co) * d->cin_g + ci) * d->kk,
                       (size_t)d->kk * sizeof(float));
}

/* dx[ci][ih][iw] += sum_{co,kh,kw} w[co,ci,kh,kw] dy[co][ih + pad_h - kh*dil][iw + ...]:
 * dy padded so that every tap of a valid (ih, iw) lands inside, grid over (ih, iw). */
static void input_grad_stride1(const conv_dims *d, const float *w, const float *dy, float *dx) {
    const cx_conv_shape *s = d->s;
    int dil = s->dilation;
    int top = (s->k_h - 1) * dil - s->pad_h, left = (s->k_w - 1) * dil - s->pad_w;
    top = top > 0 ? top : 0;
    left = left > 0 ? left : 0;
    padded_geometry pg;
    pg.rows = top + (d->out_h > s->in_h + s->pad_h ? d->out_h : s->in_h + s->pad_h);
    pg.cols = left + (d->out_w > s->in_w + s->pad_w ? d->out_w : s->in_w + s->pad_w);
    pg.plane = (int64_t)pg.rows * pg.cols;
    int64_t grid = (int64_t)s->in_h * pg.cols;
    size_t pad_floats = (size_t)s->out_ch * pg.plane, out_floats = (size_t)s->in_ch * grid;
    int chunk = images_per_chunk(s, pad_floats + out_floats);
    int k_total = d->cout_g * d->kk;
    float *dypad = cx_scratch(0, chunk * pad_floats + SLACK_FLOATS + pg.cols);
    size_t wt_floats = (size_t)s->in_ch * k_total;
    float *out = cx_scratch(1, chunk * out_floats + 2 * (size_t)k_total + 32 + wt_floats);
    if (!dypad || !out) {
        report_oom("the padded output gradient");
        return;
    }
    int64_t *offsets = (int64_t *)(out + align16(chunk * out_floats));
    float *w_t = (float *)(offsets + k_total) + 4;
    transpose_filters(d, w, w_t);
    tap_offsets(offsets, d->cout_g, s->k_h, s->k_w, pg.plane, pg.cols, s->pad_h + top,
                s->pad_w + left, -dil);
    memset(dypad + chunk * pad_floats, 0, (SLACK_FLOATS + pg.cols) * sizeof(float));
    for (int b0 = 0; b0 < s->batch; b0 += chunk) {
        int n = s->batch - b0 < chunk ? s->batch - b0 : chunk;
        plane_copy pc = {dy + (int64_t)b0 * s->out_ch * d->out_hw, dypad, d->out_hw, pg.plane,
                         d->out_h, d->out_w, pg.rows, pg.cols, top, left};
        cx_parallel_for((int64_t)n * s->out_ch, 4, pad_planes_task, &pc);
        for (int g = 0; g < s->groups; g++) {
            cx_gemm_matrix filters = {.data = w_t + (int64_t)g * d->cin_g * k_total, .x_stride = k_total, .k_stride = 1};
            cx_gemm_matrix grads = {dypad + (int64_t)g * d->cout_g * pg.plane, 1, 0,
                                    (int64_t)pad_floats, NULL, offsets};
            cx_gemm_problem p = {0};
            p.M = d->cin_g;
            p.N = (int)grid;
            p.K = k_total;
            p.items = n;
            p.alpha = 1.0f;
            p.A = (cx_gemm_operand){cx_gemm_pack_matrix, &filters};
            p.B = (cx_gemm_operand){cx_gemm_pack_matrix, &grads};
            p.C = out + (int64_t)g * d->cin_g * grid;
            p.ldc = grid;
            p.c_item_stride = (int64_t)out_floats;
            cx_gemm_run(&p);
        }
        plane_crop c = {out, dx + (int64_t)b0 * s->in_ch * d->in_hw, grid, d->in_hw, s->in_h,
                        s->in_w, pg.cols, 1};
        cx_parallel_for((int64_t)n * s->in_ch, 4, crop_planes_task, &c);
    }
}

/* dw[co][(ci,kh,kw)] += sum_b sum_grid dyv[co][j] * xpad[ci][offset(kh, kw) + j], with dyv
 * = dy on the virtual grid (zero in the extra columns). */
static void weight_grad_stride1(const conv_dims *d, const float *x, const float *dy, float *dw) {
    const cx_conv_shape *s = d->s;
    padded_geometry pg = input_padding(s);
    int64_t grid = (int64_t)d->out_h * pg.cols;
    size_t pad_floats = (size_t)s->in_ch * pg.plane, dyv_floats = (size_t)s->out_ch * grid;
    int chunk = images_per_chunk(s, pad_floats + dyv_floats);
    float *xpad = cx_scratch(0, chunk * pad_floats + SLACK_FLOATS + pg.cols);
    float *dyv = cx_scratch(1, chunk * dyv_floats + 2 * (size_t)d->kc + 16);
    if (!xpad || !dyv) {
        report_oom("the padded input");
        return;
    }
    int64_t *offsets = (int64_t *)(dyv + align16(chunk * dyv_floats));
    tap_offsets(offsets, d->cin_g, s->k_h, s->k_w, pg.plane, pg.cols, 0, 0, s->dilation);
    memset(xpad + chunk * pad_floats, 0, (SLACK_FLOATS + pg.cols) * sizeof(float));
    for (int b0 = 0; b0 < s->batch; b0 += chunk) {
        int n = s->batch - b0 < chunk ? s->batch - b0 : chunk;
        pad_images(s, x + (int64_t)b0 * s->in_ch * d->in_hw, n, xpad, pg);
        /* dy rows on the grid: a padded copy with out_h rows of pg.cols */
        plane_copy pc = {dy + (int64_t)b0 * s->out_ch * d->out_hw, dyv, d->out_hw, grid,
                         d->out_h, d->out_w, d->out_h, pg.cols, 0, 0};
        cx_parallel_for((int64_t)n * s->out_ch, 4, pad_planes_task, &pc);
        for (int g = 0; g < s->groups; g++) {
            cx_gemm_matrix grads = {.data = dyv + (int64_t)g * d->cout_g * grid, .x_stride = grid,
                                    .k_stride = 1, .item_stride = (int64_t)dyv_floats};
            cx_gemm_matrix image = {xpad + (int64_t)g * d->cin_g * pg.plane, 0, 1,
                                    (int64_t)pad_floats, offsets, NULL};
            cx_gemm_problem p = {0};
            p.M = d->cout_g;
            p.N = d->kc;
            p.K = (int)grid;
            p.items = n;
            p.reduce_items = 1;
            p.alpha = 1.0f;
            p.beta = 1.0f;
            p.A = (cx_gemm_operand){cx_gemm_pack_matrix, &grads};
            p.B = (cx_gemm_operand){cx_gemm_pack_matrix, &image};
            p.C = dw + (int64_t)g * d->cout_g * d->kc;
            p.ldc = d->kc;
            cx_gemm_run(&p);
        }
    }
}

/* ---- other strides: explicit columns ------------------------------------------------------
 * col[b][(c, kh, kw)][(oh, ow)] over all in_ch channels (group g's rows are contiguous). */
typedef struct {
    const conv_dims *d;
    const float *x;
    float *col;
    float *dx;
} columns_ctx;

static void im2col_task(void *vctx, int64_t begin, int64_t end) {
    const columns_ctx *c = vctx;
    const conv_dims *d = c->d;
    const cx_conv_shape *s = d->s;
    int64_t rows_per_image = (int64_t)s->in_ch * d->kk;
    for (int64_t r = begin; r < end; r++) {
        int64_t b = r / rows_per_image, kidx = r % rows_per_image;
        int ch = (int)(kidx / d->kk), tap = (int)(kidx % d->kk);
        int kh = tap / s->k_w, kw = tap % s->k_w;
        const float *plane = c->x + (b * s->in_ch + ch) * d->in_hw;
        float *dst = c->col + r * d->out_hw;
        for (int oh = 0; oh < d->out_h; oh++) {
            int ih = oh * s->stride - s->pad_h + kh * s->dilation;
            float *drow = dst + (int64_t)oh * d->out_w;
            if (ih < 0 || ih >= s->in_h) {
                memset(drow, 0, (size_t)d->out_w * sizeof(float));
                continue;
            }
            const float *srow = plane + (int64_t)ih * s->in_w;
            for (int ow = 0; ow < d->out_w; ow++) {
                int iw = ow * s->stride - s->pad_w + kw * s->dilation;
                drow[ow] = iw >= 0 && iw < s->in_w ? srow[iw] : 0.0f;
            }
        }
    }
}

/* dx plane (b, c) += its column rows, taps in (kh, kw) order: one task per plane. */
static void col2im_task(void *vctx, int64_t begin, int64_t end) {
    const columns_ctx *c = vctx;
    const conv_dims *d = c->d;
    const cx_conv_shape *s = d->s;
    for (int64_t pl = begin; pl < end; pl++) {
        int64_t b = pl / s->in_ch, ch = pl % s->in_ch;
        float *plane = c->dx + pl * d->in_hw;
        for (int tap = 0; tap < d->kk; tap++) {
            int kh = tap / s->k_w, kw = tap % s->k_w;
            const float *src = c->col + ((b * s->in_ch + ch) * d->kk + tap) * d->out_hw;
            for (int oh = 0; oh < d->out_h; oh++) {
                int ih = oh * s->stride - s->pad_h + kh * s->dilation;
                if (ih < 0 || ih >= s->in_h)
                    continue;
                for (int ow = 0; ow < d->out_w; ow++) {
                    int iw = ow * s->stride - s->pad_w + kw * s->dilation;
                    if (iw >= 0 && iw < s->in_w)
                        plane[(int64_t)ih * s->in_w + iw] += src[(int64_t)oh * d->out_w + ow];
                }
            }
        }
    }
}

/* mode 0: forward (y = w col + bias), 1: dw += dy col^T, 2: dx += col2im(w^T dy) */
static void columns_path(const conv_dims *d, int mode, const float *x, const float *w,
                         const float *bias, const float *dy, float *out) {
    const cx_conv_shape *s = d->s;
    size_t col_floats = (size_t)s->in_ch * d->kk * d->out_hw;
    int chunk = images_per_chunk(s, col_floats);
    float *col = cx_scratch(0, chunk * col_floats);
    if (!col) {
        report_oom("the im2col columns");
        return;
    }
    for (int b0 = 0; b0 < s->batch; b0 += chunk) {
        int n = s->batch - b0 < chunk ? s->batch - b0 : chunk;
        columns_ctx cc = {d, x + (int64_t)b0 * s->in_ch * d->in_hw, col,
                          mode == 2 ? out + (int64_t)b0 * s->in_ch * d->in_hw : NULL};
        if (mode != 2)
            cx_parallel_for((int64_t)n * s->in_ch * d->kk, 4, im2col_task, &cc);
        for (int g = 0; g < s->groups; g++) {
            const float *w_g = w + (int64_t)g * d->cout_g * d->kc;
            const float *col_g = col + (int64_t)g * d->kc * d->out_hw;
            const float *dy_g = dy ? dy + ((int64_t)b0 * s->out_ch + (int64_t)g * d->cout_g) *
                                              d->out_hw
                                   : NULL;
            cx_gemm_matrix a, b;
            cx_gemm_problem p = {0};
            p.items = n;
            p.alpha = 1.0f;
            if (mode == 0) { /* y_g [Cout_g, P] = w_g [Cout_g, Kc] . col_g [Kc, P] */
                a = cx_gemm_matrix_a(w_g, d->kc, 0, 0);
                b = cx_gemm_matrix_b(col_g, (int)d->out_hw, 0, (int64_t)col_floats);
                p.M = d->cout_g, p.N = (int)d->out_hw, p.K = d->kc;
                p.C = out + ((int64_t)b0 * s->out_ch + (int64_t)g * d->cout_g) * d->out_hw;
                p.ldc = d->out_hw;
                p.c_item_stride = (int64_t)s->out_ch * d->out_hw;
                p.bias_m = bias ? bias + (int64_t)g * d->cout_g : NULL;
            } else if (mode == 1) { /* dw_g [Cout_g, Kc] += dy_g [Cout_g, P] . col_g^T */
                a = cx_gemm_matrix_a(dy_g, (int)d->out_hw, 0, (int64_t)s->out_ch * d->out_hw);
                b = cx_gemm_matrix_b(col_g, (int)d->out_hw, 1, (int64_t)col_floats);
                p.M = d->cout_g, p.N = d->kc, p.K = (int)d->out_hw;
                p.reduce_items = 1;
                p.beta = 1.0f;
                p.C = out + (int64_t)g * d->cout_g * d->kc;
                p.ldc = d->kc;
            } else { /* col_g [Kc, P] = w_g^T [Kc, Cout_g] . dy_g [Cout_g, P] */
                a = cx_gemm_matrix_a(w_g, d->kc, 1, 0);
                b = cx_gemm_matrix_b(dy_g, (int)d->out_hw, 0, (int64_t)s->out_ch * d->out_hw);
                p.M = d->kc, p.N = (int)d->out_hw, p.K = d->cout_g;
                p.C = col + (int64_t)g * d->kc * d->out_hw;
                p.ldc = d->out_hw;
                p.c_item_stride = (int64_t)col_floats;
            }
            p.A = (cx_gemm_operand){cx_gemm_pack_matrix, &a};
            p.B = (cx_gemm_operand){cx_gemm_pack_matrix, &b};
            cx_gemm_run(&p);
        }
        if (mode == 2)
            cx_parallel_for((int64_t)n * s->in_ch, 1, col2im_task, &cc);
    }
}

/* ---- pointwise -------------------------------------------------------------------------------- */

/* mode 0: y = w x + bias, 1: dw += dy x^T, 2: dx += w^T dy; per group, all images at once. */
static void pointwise_path(const conv_dims *d, int mode, const float *x, const float *w,
                           const float *bias, const float *dy, float *out) {
    const cx_conv_shape *s = d->s;
    int64_t hw = d->in_hw, x_item = (int64_t)s->in_ch * hw, y_item = (int64_t)s->out_ch * hw;
    for (int g = 0; g < s->groups; g++) {
        const float *w_g = w + (int64_t)g * d->cout_g * d->cin_g;
        const float *x_g = x ? x + (int64_t)g * d->cin_g * hw : NULL;
        const float *dy_g = dy ? dy + (int64_t)g * d->cout_g * hw : NULL;
        cx_gemm_matrix a, b;
        cx_gemm_problem p = {0};
        p.items = s->batch;
        p.alpha = 1.0f;
        p.beta = mode == 0 ? 0.0f : 1.0f;
        if (mode == 0) {
            a = cx_gemm_matrix_a(w_g, d->cin_g, 0, 0);
            b = cx_gemm_matrix_b(x_g, (int)hw, 0, x_item);
            p.M = d->cout_g, p.N = (int)hw, p.K = d->cin_g;
            p.C = out + (int64_t)g * d->cout_g * hw;
            p.ldc = hw;
            p.c_item_stride = y_item;
            p.bias_m = bias ? bias + (int64_t)g * d->cout_g : NULL;
        } else if (mode == 1) {
            a = cx_gemm_matrix_a(dy_g, (int)hw, 0, y_item);
            b = cx_gemm_matrix_b(x_g, (int)hw, 1, x_item);
            p.M = d->cout_g, p.N = d->cin_g, p.K = (int)hw;
            p.reduce_items = 1;
            p.C = out + (int64_t)g * d->cout_g * d->cin_g;
            p.ldc = d->cin_g;
        } else {
            a = cx_gemm_matrix_a(w_g, d->cin_g, 1, 0);
            b = cx_gemm_matrix_b(dy_g, (int)hw, 0, y_item);
            p.M = d->cin_g, p.N = (int)hw, p.K = d->cout_g;
            p.C = out + (int64_t)g * d->cin_g * hw;
            p.ldc = hw;
            p.c_item_stride = x_item;
        }
        p.A = (cx_gemm_operand){cx_gemm_pack_matrix, &a};
        p.B = (cx_gemm_operand){cx_gemm_pack_matrix, &b};
        cx_gemm_run(&p);
    }
}

/* ---- entry points ------------------------------------------------------------------------------ */

void cpu_conv2d_forward(cx_backend *be, const cx_conv_shape *s, const float *x, const float *w,
                        const float *bias, float *y) {
    (void)be;
    if (cx_conv_is_channelwise(s)) {
        cx_conv_channelwise_forward(s, x, w, bias, y);
        return;
    }
    conv_dims d = conv_dims_of(s);
    if (is_pointwise(s))
        pointwise_path(&d, 0, x, w, bias, NULL, y);
    else if (s->stride == 1)
        forward_stride1(&d, x, w, bias, y);
    else
        columns_path(&d, 0, x, w, bias, NULL, y);
}

typedef struct {
    const conv_dims *d;
    const float *dy;
    float *dbias;
} bias_grad_ctx;

/* dbias[o] += sum_b (sum_p dy[b, o, p]): one task per channel, images in order. */
static void bias_grad_task(void *vctx, int64_t begin, int64_t end) {
    const bias_grad_ctx *c = vctx;
    const cx_conv_shape *s = c->d->s;
    for (int64_t o = begin; o < end; o++) {
        float total = 0.0f;
        for (int b = 0; b < s->batch; b++) {
            const float *plane = c->dy + ((int64_t)b * s->out_ch + o) * c->d->out_hw;
            float sum = 0.0f;
            for (int64_t i = 0; i < c->d->out_hw; i++)
                sum += plane[i];
            total += sum;
        }
        c->dbias[o] += total;
    }
}

void cpu_conv2d_backward(cx_backend *be, const cx_conv_shape *s, const float *x, const float *w,
                         const float *dy, float *dx, float *dw, float *dbias) {
    (void)be;
    if (cx_conv_is_channelwise(s)) {
        cx_conv_channelwise_backward(s, x, w, dy, dx, dw, dbias);
        return;
    }
    conv_dims d = conv_dims_of(s);
    if (dbias) {
        bias_grad_ctx c = {&d, dy, dbias};
        cx_parallel_for(s->out_ch, 1, bias_grad_task, &c);
    }
    if (is_pointwise(s)) {
        if (dw)
            pointwise_path(&d, 1, x, w, NULL, dy, dw);
        if (dx)
            pointwise_path(&d, 2, x, w, NULL, dy, dx);
    } else if (s->stride == 1) {
        if (dw)
            weight_grad_stride1(&d, x, dy, dw);
        if (dx)
            input_grad_stride1(&d, w, dy, dx);
    } else {
        if (dw)
            columns_path(&d, 1, x, w, NULL, dy, dw);
        if (dx)
            columns_path(&d, 2, x, w, NULL, dy, dx);
    }
}
