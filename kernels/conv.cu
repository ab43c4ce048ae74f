/* 2-D convolution with cuDNN's legacy API (deprecated in cuDNN 9 but present); shapes and
 * PyTorch's group order in ops.h (cuDNN uses the same NCHW / [out, in/groups, kh, kw]
 * layouts and group order, with cross-correlation as PyTorch).
 *
 * Algorithms come from cuDNN's heuristics (the *_v7 queries; nothing is run to time
 * them, so choosing never writes into dx or dw), filtered by:
 *   - deterministic backends: only CUDNN_DETERMINISTIC algorithms;
 *   - TF32 not allowed: no tensor-op algorithms, and the descriptor runs in
 *     CUDNN_FMA_MATH (CUDNN_DEFAULT_MATH would permit TF32 on sm_80+);
 *   - a workspace of at most CU_CONV_WORKSPACE_LIMIT.
 * The choice is cached per (shape, direction, precision). Backward passes beta = 1 so dx
 * and dw accumulate; the bias gradient is a fixed-order channel sum (reduce.cu).
 * Mixed precision (FP16, BF16; precision.cu): a dense convolution (groups 1) runs on half
 * (bf16) copies of its operands with float32 compute (cuDNN's PSEUDO_HALF / PSEUDO_BFLOAT16
 * configurations, tensor-op algorithms allowed), writes a half result and widens it into
 * the float32 output (backward: adds it). Grouped and depthwise convolutions, which are
 * bound by memory traffic rather than arithmetic, stay float32.
 * Depthwise convolutions go through cuDNN too for now (correct, not fast).
 * Host side; the bias kernel is in device/conv.cuh. */
#include "common.cuh"
#include "device/conv.cuh"

#include <string.h>

enum { DIR_FORWARD = 0, DIR_BACKWARD_DATA = 1, DIR_BACKWARD_FILTER = 2 };
static const char *const dir_names[] = {"forward", "backward data", "backward filter"};

struct conv_descs {
    cudnnTensorDescriptor_t x, y;
    cudnnFilterDescriptor_t w;
    cudnnConvolutionDescriptor_t conv;
};

static void destroy_descs(conv_descs *d) {
    if (d->x)
        cudnnDestroyTensorDescriptor(d->x);
    if (d->y)
        cudnnDestroyTensorDescriptor(d->y);
    if (d->w)
        cudnnDestroyFilterDescriptor(d->w);
    if (d->conv)
        cudnnDestroyConvolutionDescriptor(d->conv);
}

static int make_descs(cu_state *st, const cx_conv_shape *s, int low, conv_descs *d) {
    memset(d, 0, sizeof *d);
    cudnnDataType_t type = low ? cu_low_dnn_type(st) : CUDNN_DATA_FLOAT;
    int out_h = cx_conv_out_h(s), out_w = cx_conv_out_w(s);
    if (!cu_ok_cudnn(st, cudnnCreateTensorDescriptor(&d->x), "conv2d descriptors") ||
        !cu_ok_cudnn(st, cudnnCreateTensorDescriptor(&d->y), "conv2d descriptors") ||
        !cu_ok_cudnn(st, cudnnCreateFilterDescriptor(&d->w), "conv2d descriptors") ||
        !cu_ok_cudnn(st, cudnnCreateConvolutionDescriptor(&d->conv), "conv2d descriptors"))
        return 0;
    if (!cu_ok_cudnn(st, cudnnSetTensor4dDescriptor(d->x, CUDNN_TENSOR_NCHW, type,
                                                    s->batch, s->in_ch, s->in_h, s->in_w),
                     "conv2d x descriptor") ||
        !cu_ok_cudnn(st, cudnnSetTensor4dDescriptor(d->y, CUDNN_TENSOR_NCHW, type,
                                                    s->batch, s->out_ch, out_h, out_w),
                     "conv2d y descriptor") ||
        !cu_ok_cudnn(st, cudnnSetFilter4dDescriptor(d->w, type, CUDNN_TENSOR_NCHW,
                                                    s->out_ch, s->in_ch / s->groups, s->k_h,
                                                    s->k_w),
                     "conv2d w descriptor") ||
        !cu_ok_cudnn(st, cudnnSetConvolution2dDescriptor(d->conv, s->pad_h, s->pad_w, s->stride,
                                                         s->stride, s->dilation, s->dilation,
                                                         CUDNN_CROSS_CORRELATION,
                                                         CUDNN_DATA_FLOAT),
                     "conv2d descriptor") ||
        !cu_ok_cudnn(st, cudnnSetConvolutionGroupCount(d->conv, s->groups),
                     "conv2d group count") ||
        !cu_ok_cudnn(st, cudnnSetConvolutionMathType(d->conv, low ? CUDNN_TENSOR_OP_MATH
                                                         : st->allow_tf32 ? CUDNN_DEFAULT_MATH
                                                                          : CUDNN_FMA_MATH),
                     "conv2d math type"))
        return 0;
    int n, c, h, w;
    if (!cu_ok_cudnn(st, cudnnGetConvolution2dForwardOutputDim(d->conv, d->x, d->w, &n, &c, &h, &w),
                     "conv2d output size"))
        return 0;
    if (n != s->batch || c != s->out_ch || h != out_h || w != out_w) {
        cu_record(st, CX_ERUNTIME, "conv2d: cuDNN computes output [%d, %d, %d, %d], codext "
                  "[%d, %d, %d, %d]", n, c, h, w, s->batch, s->out_ch, out_h, out_w);
        return 0;
    }
    return 1;
}

static cudnnStatus_t workspace_size(cu_state *st, const conv_descs *d, int direction, int algo,
                                    size_t *bytes) {
    switch (direction) {
    case DIR_FORWARD:
        return cudnnGetConvolutionForwardWorkspaceSize(st->cudnn, d->x, d->w, d->conv, d->y,
                                                       (cudnnConvolutionFwdAlgo_t)algo, bytes);
    case DIR_BACKWARD_DATA:
        return cudnnGetConvolutionBackwardDataWorkspaceSize(
            st->cudnn, d->w, d->y, d->conv, d->x, (cudnnConvolutionBwdDataAlgo_t)algo, bytes);
    default:
        return cudnnGetConvolutionBackwardFilterWorkspaceSize(
            st->cudnn, d->x, d->y, d->conv, d->w, (cudnnConvolutionBwdFilterAlgo_t)algo, bytes);
    }
}

/* The first heuristic candidate that passes the filters (see the top of the file). */
template <typename Perf>
static int pick(cu_state *st, const conv_descs *d, int direction, const Perf *perf, int n,
                cu_conv_choice *choice) {
    /* tensor cores: always for half data, for float data only when TF32 is allowed */
    int tensor_ok = st->allow_tf32 || choice->precision != CX_PRECISION_FP32;
    for (int i = 0; i < n; i++) {
        const Perf *p = &perf[i];
        if (p->status != CUDNN_STATUS_SUCCESS)
            continue;
        if (st->deterministic && p->determinism != CUDNN_DETERMINISTIC)
            continue;
        int tensor_op = p->mathType == CUDNN_TENSOR_OP_MATH ||
                        p->mathType == CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION;
        if (!tensor_ok && tensor_op)
            continue;
        cudnnMathType_t math = tensor_ok ? p->mathType : CUDNN_FMA_MATH;
        size_t bytes = 0;
        if (cudnnSetConvolutionMathType(d->conv, math) != CUDNN_STATUS_SUCCESS ||
            workspace_size(st, d, direction, (int)p->algo, &bytes) != CUDNN_STATUS_SUCCESS ||
            bytes > CU_CONV_WORKSPACE_LIMIT)
            continue;
        choice->algo = (int)p->algo;
        choice->math_type = (int)math;
        choice->workspace_bytes = bytes;
        return 1;
    }
    return 0;
}

static const cu_conv_choice *choose(cu_state *st, const cx_conv_shape *s, int direction,
                                    int precision, const conv_descs *d) {
    for (int i = 0; i < CU_CONV_CACHE; i++) {
        const cu_conv_choice *c = &st->conv_cache[i];
        if (c->valid && c->direction == direction && c->precision == precision &&
            !memcmp(&c->shape, s, sizeof *s))
            return c;
    }
    cu_conv_choice choice;
    memset(&choice, 0, sizeof choice);
    choice.shape = *s;
    choice.direction = direction;
    choice.precision = precision;
    int max_count = 0, returned = 0, found = 0;
    cudnnStatus_t status;
    if (direction == DIR_FORWARD) {
        cudnnConvolutionFwdAlgoPerf_t perf[16];
        status = cudnnGetConvolutionForwardAlgorithmMaxCount(st->cudnn, &max_count);
        if (status == CUDNN_STATUS_SUCCESS)
            status = cudnnGetConvolutionForwardAlgorithm_v7(
                st->cudnn, d->x, d->w, d->conv, d->y, max_count < 16 ? max_count : 16,
                &returned, perf);
        if (status == CUDNN_STATUS_SUCCESS)
            found = pick(st, d, direction, perf, returned, &choice);
    } else if (direction == DIR_BACKWARD_DATA) {
        cudnnConvolutionBwdDataAlgoPerf_t perf[16];
        status = cudnnGetConvolutionBackwardDataAlgorithmMaxCount(st->cudnn, &max_count);
        if (status == CUDNN_STATUS_SUCCESS)
            status = cudnnGetConvolutionBackwardDataAlgorithm_v7(
                st->cudnn, d->w, d->y, d->conv, d->x, max_count < 16 ? max_count : 16,
                &returned, perf);
        if (status == CUDNN_STATUS_SUCCESS)
            found = pick(st, d, direction, perf, returned, &choice);
    } else {
        cudnnConvolutionBwdFilterAlgoPerf_t perf[16];
        status = cudnnGetConvolutionBackwardFilterAlgorithmMaxCount(st->cudnn, &max_count);
        if (status == CUDNN_STATUS_SUCCESS)
            status = cudnnGetConvolutionBackwardFilterAlgorithm_v7(
                st->cudnn, d->x, d->y, d->conv, d->w, max_count < 16 ? max_count : 16,
                &returned, perf);
        if (status == CUDNN_STATUS_SUCCESS)
            found = pick(st, d, direction, perf, returned, &choice);
    }
    if (!cu_ok_cudnn(st, status, "conv2d algorithm query"))
        return NULL;
    if (!found) {
        cu_record(st, CX_ERUNTIME,
                  "conv2d %s: cuDNN offers no %s%salgorithm%s within %zu MiB of workspace for "
                  "x [%d, %d, %d, %d], w [%d, %d, %d, %d], stride %d, pad %d/%d, dilation %d, "
                  "groups %d", dir_names[direction], st->deterministic ? "deterministic " : "",
                  precision == CX_PRECISION_FP16   ? "fp16 "
                  : precision == CX_PRECISION_BF16 ? "bf16 "
                                                   : "",
                  st->allow_tf32 || precision != CX_PRECISION_FP32 ? "" : " without TF32",
                  CU_CONV_WORKSPACE_LIMIT >> 20,
                  s->batch, s->in_ch, s->in_h, s->in_w, s->out_ch, s->in_ch / s->groups,
                  s->k_h, s->k_w, s->stride, s->pad_h, s->pad_w, s->dilation, s->groups);
        return NULL;
    }
    choice.valid = 1;
    cu_conv_choice *slot = &st->conv_cache[st->conv_cache_next];
    st->conv_cache_next = (st->conv_cache_next + 1) % CU_CONV_CACHE;
    *slot = choice;
    return slot;
}

/* Descriptors set up for `direction` with its cached algorithm and workspace. */
static const cu_conv_choice *prepare(cu_state *st, const cx_conv_shape *s, int direction,
                                     int low, conv_descs *d, void **workspace) {
    if (!make_descs(st, s, low, d))
        return NULL;
    const cu_conv_choice *choice =
        choose(st, s, direction, low ? st->precision : CX_PRECISION_FP32, d);
    if (!choice)
        return NULL;
    if (!cu_ok_cudnn(st, cudnnSetConvolutionMathType(d->conv, (cudnnMathType_t)choice->math_type),
                     "conv2d math type"))
        return NULL;
    *workspace = cu_workspace(st, choice->workspace_bytes);
    if (choice->workspace_bytes && !*workspace)
        return NULL;
    return choice;
}

static int conv_is_empty(const cx_conv_shape *s) {
    return s->batch <= 0 || s->in_ch <= 0 || s->out_ch <= 0 || cx_conv_out_h(s) <= 0 ||
           cx_conv_out_w(s) <= 0;
}

/* Element counts of x, w and y. */
static size_t x_count(const cx_conv_shape *s) {
    return (size_t)s->batch * s->in_ch * s->in_h * s->in_w;
}
static size_t w_count(const cx_conv_shape *s) {
    return (size_t)s->out_ch * (s->in_ch / s->groups) * s->k_h * s->k_w;
}
static size_t y_count(const cx_conv_shape *s) {
    return (size_t)s->batch * s->out_ch * cx_conv_out_h(s) * cx_conv_out_w(s);
}

/* Mixed precision for this convolution: dense ones only (see the top of the file). */
static int conv_low(const cu_state *st, const cx_conv_shape *s) {
    return cu_low_precision(st) && s->groups == 1;
}

void cu_conv2d_forward(cx_backend *be, const cx_conv_shape *s, const float *x, const float *w,
                       const float *bias, float *y) {
    cu_state *st = cu_get(be);
    if (conv_is_empty(s))
        return;
    int low = conv_low(st, s);
    conv_descs d;
    void *workspace = NULL;
    const cu_conv_choice *choice = prepare(st, s, DIR_FORWARD, low, &d, &workspace);
    /* the operands and the result as cuDNN sees them: float32, or half copies */
    const void *x_in = x, *w_in = w;
    void *y_out = y;
    if (choice && low) {
        x_in = cu_lowered(st, CU_SLOT_LOW_A, x, x_count(s));
        w_in = x_in ? cu_lowered(st, CU_SLOT_LOW_B, w, w_count(s)) : NULL;
        y_out = w_in ? cu_low_buffer(st, CU_SLOT_LOW_C, y_count(s)) : NULL;
        if (!y_out)
            choice = NULL;
    }
    if (choice) {
        const float one = 1.0f, zero = 0.0f;
        int ok = cu_ok_cudnn(st, cudnnConvolutionForward(st->cudnn, &one, d.x, x_in, d.w, w_in,
                                                         d.conv,
                                                         (cudnnConvolutionFwdAlgo_t)choice->algo,
                                                         workspace, choice->workspace_bytes,
                                                         &zero, d.y, y_out),
                             "conv2d forward");
        if (ok && low)
            cu_widen(st, y_out, y, y_count(s), 0);
        if (ok && bias) {
            int hw = cx_conv_out_h(s) * cx_conv_out_w(s);
            size_t n = (size_t)s->batch * s->out_ch * hw;
            CX_LAUNCH(add_channel_bias_kernel, cu_blocks(n, CU_BLOCK), CU_BLOCK, 0, st->stream)(
                n, s->out_ch, hw, bias, y);
            cu_ok_launch(st, "conv2d forward (bias)");
        }
    }
    destroy_descs(&d);
}

/* dx += the data gradient (float32, or a half result widened and added). 1 on success. */
static int backward_data(cu_state *st, const cx_conv_shape *s, int low, const float *w,
                         const float *dy, float *dx) {
    conv_descs d;
    void *workspace = NULL;
    const cu_conv_choice *choice = prepare(st, s, DIR_BACKWARD_DATA, low, &d, &workspace);
    const void *w_in = w, *dy_in = dy;
    void *dx_out = dx;
    float beta = 1.0f; /* float32: cuDNN accumulates into dx itself */
    if (choice && low) {
        w_in = cu_lowered(st, CU_SLOT_LOW_B, w, w_count(s));
        dy_in = w_in ? cu_lowered(st, CU_SLOT_LOW_C, dy, y_count(s)) : NULL;
        dx_out = dy_in ? cu_low_buffer(st, CU_SLOT_LOW_A, x_count(s)) : NULL;
        beta = 0.0f;
        if (!dx_out)
            choice = NULL;
    }
    const float one = 1.0f;
    int ok = choice && cu_ok_cudnn(st, cudnnConvolutionBackwardData(
                                           st->cudnn, &one, d.w, w_in, d.y, dy_in, d.conv,
                                           (cudnnConvolutionBwdDataAlgo_t)choice->algo,
                                           workspace, choice->workspace_bytes, &beta, d.x,
                                           dx_out),
                                   "conv2d backward data");
    destroy_descs(&d);
    if (ok && low)
        cu_widen(st, dx_out, dx, x_count(s), 1);
    return ok;
}

/* dw += the filter gradient, as backward_data. */
static int backward_filter(cu_state *st, const cx_conv_shape *s, int low, const float *x,
                           const float *dy, float *dw) {
    conv_descs d;
    void *workspace = NULL;
    const cu_conv_choice *choice = prepare(st, s, DIR_BACKWARD_FILTER, low, &d, &workspace);
    const void *x_in = x, *dy_in = dy;
    void *dw_out = dw;
    float beta = 1.0f;
    if (choice && low) {
        x_in = cu_lowered(st, CU_SLOT_LOW_A, x, x_count(s));
        dy_in = x_in ? cu_lowered(st, CU_SLOT_LOW_C, dy, y_count(s)) : NULL;
        dw_out = dy_in ? cu_low_buffer(st, CU_SLOT_LOW_B, w_count(s)) : NULL;
        beta = 0.0f;
        if (!dw_out)
            choice = NULL;
    }
    const float one = 1.0f;
    int ok = choice && cu_ok_cudnn(st, cudnnConvolutionBackwardFilter(
                                           st->cudnn, &one, d.x, x_in, d.y, dy_in, d.conv,
                                           (cudnnConvolutionBwdFilterAlgo_t)choice->algo,
                                           workspace, choice->workspace_bytes, &beta, d.w,
                                           dw_out),
                                   "conv2d backward filter");
    destroy_descs(&d);
    if (ok && low)
        cu_widen(st, dw_out, dw, w_count(s), 1);
    return ok;
}

void cu_conv2d_backward(cx_backend *be, const cx_conv_shape *s, const float *x,
                        const float *w, const float *dy, float *dx, float *dw, float *dbias) {
    cu_state *st = cu_get(be);
    if (conv_is_empty(s))
        return;
    int low = conv_low(st, s);
    if (dx && !backward_data(st, s, low, w, dy, dx))
        return;
    if (dw && !backward_filter(st, s, low, x, dy, dw))
        return;
    if (dbias)
        cu_channel_sums(st, s->batch, s->out_ch, cx_conv_out_h(s) * cx_conv_out_w(s), dy, NULL,
                        NULL, dbias, NULL);
}
