/* 2-D convolution, NCHW (shapes in ops.h, cx_conv_shape), on the blocked GEMM.
 *
 * Per image and group, with Kc = (in_ch/groups) * k_h * k_w and P = out_h * out_w:
 *   forward  y[b,g] [Cout_g, P]  = w_g [Cout_g, Kc] . col(x[b,g]) [Kc, P]   (+ bias)
 *   dw_g    [Cout_g, Kc]        += sum_b dy[b,g] [Cout_g, P] . col(x[b,g])^T
 *   dx                          += col2im(w_g^T . dy[b,g])
 * col() is never materialised: the GEMM packs its panels straight from the image
 * ("implicit im2col", pack_im2col below). A 1x1 stride-1 unpadded conv needs no col at
 * all (x[b] is already the [Cin, P] matrix). For dx:
 *   - 1x1 stride 1: one GEMM, w^T . dy.
 *   - windows that do not overlap (patchify convs: k <= stride): w^T . dy for a chunk of
 *     pixels into scratch, then a scatter-add (each dx element receives one value).
 *   - otherwise: dx is itself a correlation of dy with the transposed filters,
 *       dx[b,g] [Cin_g, H*W] += w'_g [Cin_g, Cout_g*k*k] . col'(dy[b,g])
 *     where col' picks dy[(ih + pad - kh*dil) / stride] (zero when not divisible), so
 *     every dx element is one GEMM dot product: deterministic with no col2im races.
 * Channel-wise convolutions (groups == in_ch) take the direct path in conv_depthwise.c.
 * The GEMM fixes each output element's summation order by problem size alone, so
 * results do not depend on the thread count. */
#include <string.h>

#include "cpu_ops.h"
#include "gemm.h"

/* conv_depthwise.c */
int cx_conv_is_channelwise(const cx_conv_shape *s);
void cx_conv_channelwise_forward(const cx_conv_shape *s, const float *x, const float *w,
                                 const float *bias, float *y);
void cx_conv_channelwise_backward(const cx_conv_shape *s, const float *x, const float *w,
                                  const float *dy, float *dx, float *dw, float *dbias);

/* ---- implicit im2col -----------------------------------------------------------------------
 * A view of col: element (j, k) with j a pixel of an output grid (row j / grid_w, column
 * j % grid_w) and k = (channel, kh, kw) reads the source plane at
 *   row (grid_row * mul + kh * dil + off_h) / div,  column likewise,
 * and is zero outside the plane or when the division is not exact.
 *   forward / dw:  source x,  grid = output, mul = stride, dil = dilation, off = -pad, div 1
 *   dx (general):  source dy, grid = input,  mul = 1, dil = -dilation, off = +pad,
 *                  div = stride */
typedef struct {
    const float *src;    /* the group's first channel in item 0 */
    int64_t item_stride; /* floats between images */
    int src_h, src_w, grid_w, k_h, k_w;
    int mul, dil, off_h, off_w, div;
} im2col_view;

/* Source index along one axis, or -1 when the tap falls outside / between pixels. */
static inline int source_index(int num, int div, int limit) {
    if (num < 0)
        return -1;
    if (div != 1) {
        if (num % div)
            return -1;
        num /= div;
    }
    return num < limit ? num : -1;
}

/* d[q] = view(pixel (grid_row, grid_col + q), tap (row_tap, col_tap)) for q < len. */
static void fill_segment(const im2col_view *v, const float *plane, int grid_row, int grid_col,
                         int row_tap, int col_tap, int len, float *d, int d_step) {
    int ih = source_index(grid_row * v->mul + row_tap * v->dil + v->off_h, v->div, v->src_h);
    if (ih < 0) {
        for (int q = 0; q < len; q++)
            d[(int64_t)q * d_step] = 0.0f;
        return;
    }
    const float *row = plane + (int64_t)ih * v->src_w;
    int num0 = grid_col * v->mul + col_tap * v->dil + v->off_w;
    if (v->mul == 1 && v->div == 1) { /* contiguous: zeros, a copy, zeros */
        int lo = num0 < 0 ? -num0 : 0;
        int hi = v->src_w - num0 < len ? v->src_w - num0 : len;
        if (hi < lo)
            hi = lo;
        if (lo > len)
            lo = hi = len;
        if (d_step == 1) {
            memset(d, 0, (size_t)lo * sizeof(float));
            memcpy(d + lo, row + num0 + lo, (size_t)(hi - lo) * sizeof(float));
            memset(d + hi, 0, (size_t)(len - hi) * sizeof(float));
        } else {
            for (int q = 0; q < lo; q++)
                d[(int64_t)q * d_step] = 0.0f;
            for (int q = lo; q < hi; q++)
                d[(int64_t)q * d_step] = row[num0 + q];
            for (int q = hi; q < len; q++)
                d[(int64_t)q * d_step] = 0.0f;
        }
        return;
    }
    for (int q = 0; q < len; q++) {
        int iw = source_index(num0 + q * v->mul, v->div, v->src_w);
        d[(int64_t)q * d_step] = iw < 0 ? 0.0f : row[iw];
    }
}

/* GEMM operand: rows j = pixels, columns k = (channel, kh, kw) (see cx_gemm_pack_fn). */
static void pack_im2col(const void *ctx, int item, int k0, int kc, int x0, int nx, int width,
                        float *dst) {
    const im2col_view *v = ctx;
    const float *base = v->src + (int64_t)item * v->item_stride;
    int kk = v->k_h * v->k_w;
    int64_t plane_size = (int64_t)v->src_h * v->src_w;
    int seg_row[64], seg_col[64], seg_start[64], seg_len[64];
    for (int p0 = 0; p0 < nx; p0 += width, dst += (int64_t)kc * width) {
        int n = nx - p0 < width ? nx - p0 : width;
        /* the panel's pixels as runs along grid rows */
        int n_seg = 0;
        for (int j = 0; j < n;) {
            int pix = x0 + p0 + j;
            int gr = pix / v->grid_w, gc = pix % v->grid_w;
            int len = v->grid_w - gc < n - j ? v->grid_w - gc : n - j;
            seg_row[n_seg] = gr;
            seg_col[n_seg] = gc;
            seg_start[n_seg] = j;
            seg_len[n_seg] = len;
            n_seg++;
            j += len;
        }
        int c = (k0) / kk, tap = k0 % kk;
        for (int k = 0; k < kc; k++) {
            const float *plane = base + c * plane_size;
            int r = tap / v->k_w, t = tap % v->k_w;
            float *d = dst + (int64_t)k * width;
            for (int sgi = 0; sgi < n_seg; sgi++)
                fill_segment(v, plane, seg_row[sgi], seg_col[sgi], r, t, seg_len[sgi],
                             d + seg_start[sgi], 1);
            for (int j = n; j < width; j++)
                d[j] = 0.0f;
            if (++tap == kk) {
                tap = 0;
                c++;
            }
        }
    }
}

/* GEMM operand: the transposed view, rows j = (channel, kh, kw), columns k = pixels. */
static void pack_im2col_t(const void *ctx, int item, int k0, int kc, int x0, int nx, int width,
                          float *dst) {
    const im2col_view *v = ctx;
    const float *base = v->src + (int64_t)item * v->item_stride;
    int kk = v->k_h * v->k_w;
    int64_t plane_size = (int64_t)v->src_h * v->src_w;
    for (int p0 = 0; p0 < nx; p0 += width, dst += (int64_t)kc * width) {
        for (int jj = 0; jj < width; jj++) {
            if (p0 + jj >= nx) {
                for (int k = 0; k < kc; k++)
                    dst[(int64_t)k * width + jj] = 0.0f;
                continue;
            }
            int kidx = x0 + p0 + jj;
            int c = kidx / kk, tap = kidx % kk;
            const float *plane = base + c * plane_size;
            for (int k = 0; k < kc;) {
                int pix = k0 + k;
                int gr = pix / v->grid_w, gc = pix % v->grid_w;
                int len = v->grid_w - gc < kc - k ? v->grid_w - gc : kc - k;
                fill_segment(v, plane, gr, gc, tap / v->k_w, tap % v->k_w, len,
                             dst + (int64_t)k * width + jj, width);
                k += len;
            }
        }
    }
}

/* GEMM operand for the general dx: rows i = input channel of the group, columns
 * k = (output channel, kh, kw): w'[i, k] = w[co, i, kh, kw]. */
typedef struct {
    const float *w; /* the group's filters [Cout_g, Cin_g, k_h, k_w] */
    int cin_g, kk;
} transposed_filters;

static void pack_w_transposed(const void *ctx, int item, int k0, int kc, int x0, int nx,
                              int width, float *dst) {
    const transposed_filters *f = ctx;
    (void)item;
    int64_t kc_stride = (int64_t)f->cin_g * f->kk;
    for (int p0 = 0; p0 < nx; p0 += width, dst += (int64_t)kc * width)
        for (int k = 0; k < kc; k++) {
            int co = (k0 + k) / f->kk, tap = (k0 + k) % f->kk;
            const float *src = f->w + co * kc_stride + tap;
            float *d = dst + (int64_t)k * width;
            for (int i = 0; i < width; i++)
                d[i] = p0 + i < nx ? src[(int64_t)(x0 + p0 + i) * f->kk] : 0.0f;
        }
}

/* ---- shapes ------------------------------------------------------------------------------------ */

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

/* Every input pixel lies under at most one window position (patchify convs). */
static int windows_disjoint(const cx_conv_shape *s) {
    return s->dilation * (s->k_h - 1) < s->stride && s->dilation * (s->k_w - 1) < s->stride;
}

static im2col_view forward_view(const conv_dims *d, const float *x, int g) {
    const cx_conv_shape *s = d->s;
    im2col_view v = {x + (int64_t)g * d->cin_g * d->in_hw, (int64_t)s->in_ch * d->in_hw,
                     s->in_h, s->in_w, d->out_w, s->k_h, s->k_w, s->stride, s->dilation,
                     -s->pad_h, -s->pad_w, 1};
    return v;
}

/* ---- forward ------------------------------------------------------------------------------------ */

void cpu_conv2d_forward(cx_backend *be, const cx_conv_shape *s, const float *x, const float *w,
                        const float *bias, float *y) {
    (void)be;
    if (cx_conv_is_channelwise(s)) {
        cx_conv_channelwise_forward(s, x, w, bias, y);
        return;
    }
    conv_dims d = conv_dims_of(s);
    for (int g = 0; g < s->groups; g++) {
        cx_gemm_matrix weights = {w + (int64_t)g * d.cout_g * d.kc, d.kc, 1, 0};
        cx_gemm_matrix pixels = {x + (int64_t)g * d.cin_g * d.in_hw, 1, d.in_hw,
                                 (int64_t)s->in_ch * d.in_hw};
        im2col_view view = forward_view(&d, x, g);
        cx_gemm_problem p = {0};
        p.M = d.cout_g;
        p.N = (int)d.out_hw;
        p.K = d.kc;
        p.items = s->batch;
        p.alpha = 1.0f;
        p.beta = 0.0f;
        p.A = (cx_gemm_operand){cx_gemm_pack_matrix, &weights};
        p.B = is_pointwise(s) ? (cx_gemm_operand){cx_gemm_pack_matrix, &pixels}
                              : (cx_gemm_operand){pack_im2col, &view};
        p.C = y + (int64_t)g * d.cout_g * d.out_hw;
        p.ldc = d.out_hw;
        p.c_item_stride = (int64_t)s->out_ch * d.out_hw;
        p.bias_m = bias ? bias + (int64_t)g * d.cout_g : NULL;
        cx_gemm_run(&p);
    }
}

/* ---- backward ------------------------------------------------------------------------------------ */

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

/* Disjoint windows: per (image, group, chunk of output pixels), cols = w_g^T . dy-chunk
 * in scratch, then each value is added to the one dx element it belongs to. */
#define SCATTER_CHUNK_FLOATS (64 * 1024)
typedef struct {
    const conv_dims *d;
    const float *w, *dy;
    float *dx;
    int chunk, n_chunks;
    int failed;
} scatter_ctx;

static void scatter_task(void *vctx, int64_t begin, int64_t end) {
    scatter_ctx *c = vctx;
    const conv_dims *d = c->d;
    const cx_conv_shape *s = d->s;
    float *cols = cx_scratch(1, (size_t)d->kc * c->chunk);
    if (!cols) {
        __atomic_store_n(&c->failed, 1, __ATOMIC_RELAXED);
        return;
    }
    for (int64_t t = begin; t < end; t++) {
        int chunk_index = (int)(t % c->n_chunks);
        int64_t bg = t / c->n_chunks;
        int b = (int)(bg / s->groups), g = (int)(bg % s->groups);
        int p0 = chunk_index * c->chunk;
        int n = d->out_hw - p0 < c->chunk ? (int)(d->out_hw - p0) : c->chunk;
        const float *dy_g = c->dy + ((int64_t)b * s->out_ch + (int64_t)g * d->cout_g) * d->out_hw;
        /* cols [kc, n] = w_g^T [kc, Cout_g] . dy_g[:, p0:p0+n] */
        cx_gemm_nested(1, 0, d->kc, n, d->cout_g, 1.0f, c->w + (int64_t)g * d->cout_g * d->kc, d->kc,
                dy_g + p0, (int)d->out_hw, 0.0f, cols, n);
        float *dx_g = c->dx + ((int64_t)b * s->in_ch + (int64_t)g * d->cin_g) * d->in_hw;
        for (int kidx = 0; kidx < d->kc; kidx++) {
            int ci = kidx / d->kk, tap = kidx % d->kk;
            int kh = tap / s->k_w, kw = tap % s->k_w;
            float *dx_plane = dx_g + (int64_t)ci * d->in_hw;
            const float *col = cols + (int64_t)kidx * n;
            for (int j = 0; j < n; j++) {
                int pix = p0 + j, oh = pix / d->out_w, ow = pix % d->out_w;
                int ih = oh * s->stride - s->pad_h + kh * s->dilation;
                int iw = ow * s->stride - s->pad_w + kw * s->dilation;
                if (ih >= 0 && ih < s->in_h && iw >= 0 && iw < s->in_w)
                    dx_plane[(int64_t)ih * s->in_w + iw] += col[j];
            }
        }
    }
}

static void input_grad(const conv_dims *d, const float *w, const float *dy, float *dx) {
    const cx_conv_shape *s = d->s;
    if (!is_pointwise(s) && windows_disjoint(s)) {
        scatter_ctx c = {d, w, dy, dx};
        int64_t chunk = SCATTER_CHUNK_FLOATS / d->kc;
        chunk = chunk < 16 ? 16 : chunk;
        c.chunk = (int)(chunk < d->out_hw ? chunk : d->out_hw);
        c.n_chunks = (int)((d->out_hw + c.chunk - 1) / c.chunk);
        cx_parallel_for((int64_t)s->batch * s->groups * c.n_chunks, 1, scatter_task, &c);
        if (c.failed)
            cx_fail(CX_ENOMEM, "conv2d backward: out of scratch memory");
        return;
    }
    for (int g = 0; g < s->groups; g++) {
        cx_gemm_matrix wt = {w + (int64_t)g * d->cout_g * d->kc, 1, d->kc, 0};
        cx_gemm_matrix grads = {dy + (int64_t)g * d->cout_g * d->out_hw, 1, d->out_hw,
                                (int64_t)s->out_ch * d->out_hw};
        transposed_filters tf = {w + (int64_t)g * d->cout_g * d->kc, d->cin_g, d->kk};
        im2col_view view = {dy + (int64_t)g * d->cout_g * d->out_hw,
                            (int64_t)s->out_ch * d->out_hw,
                            d->out_h, d->out_w, s->in_w, s->k_h, s->k_w, 1, -s->dilation,
                            s->pad_h, s->pad_w, s->stride};
        cx_gemm_problem p = {0};
        p.M = d->cin_g;
        p.N = (int)d->in_hw;
        p.items = s->batch;
        p.alpha = 1.0f;
        p.beta = 1.0f;
        if (is_pointwise(s)) {
            p.K = d->cout_g;
            p.A = (cx_gemm_operand){cx_gemm_pack_matrix, &wt};
            p.B = (cx_gemm_operand){cx_gemm_pack_matrix, &grads};
        } else {
            p.K = d->cout_g * d->kk;
            p.A = (cx_gemm_operand){pack_w_transposed, &tf};
            p.B = (cx_gemm_operand){pack_im2col, &view};
        }
        p.C = dx + (int64_t)g * d->cin_g * d->in_hw;
        p.ldc = d->in_hw;
        p.c_item_stride = (int64_t)s->in_ch * d->in_hw;
        cx_gemm_run(&p);
    }
}

static void weight_grad(const conv_dims *d, const float *x, const float *dy, float *dw) {
    const cx_conv_shape *s = d->s;
    for (int g = 0; g < s->groups; g++) {
        cx_gemm_matrix grads = {dy + (int64_t)g * d->cout_g * d->out_hw, d->out_hw, 1,
                                (int64_t)s->out_ch * d->out_hw};
        cx_gemm_matrix pixels = {x + (int64_t)g * d->cin_g * d->in_hw, d->in_hw, 1,
                                 (int64_t)s->in_ch * d->in_hw};
        im2col_view view = forward_view(d, x, g);
        cx_gemm_problem p = {0};
        p.M = d->cout_g;
        p.N = d->kc;
        p.K = (int)d->out_hw;
        p.items = s->batch;
        p.reduce_items = 1;
        p.alpha = 1.0f;
        p.beta = 1.0f;
        p.A = (cx_gemm_operand){cx_gemm_pack_matrix, &grads};
        p.B = is_pointwise(s) ? (cx_gemm_operand){cx_gemm_pack_matrix, &pixels}
                              : (cx_gemm_operand){pack_im2col_t, &view};
        p.C = dw + (int64_t)g * d->cout_g * d->kc;
        p.ldc = d->kc;
        cx_gemm_run(&p);
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
    if (dw)
        weight_grad(&d, x, dy, dw);
    if (dx)
        input_grad(&d, w, dy, dx);
}
