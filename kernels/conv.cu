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
 * A plan per (shape, direction, precision) holds the descriptors and the choice, made the
 * first time that convolution runs and kept for the backend's life in a growing table
 * that never evicts (the model's few dozen convolutions, each made once). Backward passes beta = 1 so dx
 * and dw accumulate; the bias gradient is a fixed-order channel sum (reduce.cu).
 * Mixed precision (FP16, BF16; precision.cu): a dense convolution (groups 1) runs on half
 * (bf16) copies of its operands with float32 compute (cuDNN's PSEUDO_HALF / PSEUDO_BFLOAT16
 * configurations, tensor-op algorithms allowed), writes a half result and widens it into
 * the float32 output (backward data: adds it); its filter gradient stays float32 (a sum over
 * the whole batch, which would overflow half). Grouped and depthwise convolutions, which are
 * bound by memory traffic rather than arithmetic, stay float32.
 * Depthwise convolutions (groups == in_ch == out_ch > 1) do not go through cuDNN, whose
 * grouped kernels are slow for them: our direct kernels of device/direct_conv.cuh (one
 * thread per output or input-gradient element, one block per filter element for the filter
 * gradient; fixed summation orders), always in float32. The same kernels are the fallback
 * of any other convolution for which cuDNN offers no algorithm that passes the filters
 * above (a deterministic backend and no deterministic algorithm, or none within the
 * workspace limit): slow but deterministic, in float32; the plan records it, so cuDNN is
 * asked once per shape. Dense 1x1 convolutions (stride 1, no padding) are products, run
 * through cuBLAS (or our GEMM) instead of cuDNN: see pointwise() below. With
 * CODEXT_CUDA_CONV=own every convolution runs on the direct kernels (no cuDNN, no cuBLAS).
 * Host side; the bias kernel is in device/conv.cuh. */
#include "common.cuh"
#include "device/conv.cuh"
#include "device/direct_conv.cuh"

#include <stdlib.h>
#include <string.h>

enum { DIR_FORWARD = 0, DIR_BACKWARD_DATA = 1, DIR_BACKWARD_FILTER = 2 };

/* The descriptors of plan p for its shape and precision (low: half or bf16 data). */
static int make_descs(cu_state *st, const cx_conv_shape *s, int low, cu_conv_choice *p) {
    cudnnDataType_t type = low ? cu_low_dnn_type(st) : CUDNN_DATA_FLOAT;
    int out_h = cx_conv_out_h(s), out_w = cx_conv_out_w(s);
    if (!cu_ok_cudnn(st, cudnnCreateTensorDescriptor(&p->x), "conv2d descriptors") ||
        !cu_ok_cudnn(st, cudnnCreateTensorDescriptor(&p->y), "conv2d descriptors") ||
        !cu_ok_cudnn(st, cudnnCreateFilterDescriptor(&p->w), "conv2d descriptors") ||
        !cu_ok_cudnn(st, cudnnCreateConvolutionDescriptor(&p->conv), "conv2d descriptors"))
        return 0;
    if (!cu_ok_cudnn(st, cudnnSetTensor4dDescriptor(p->x, CUDNN_TENSOR_NCHW, type,
                                                    s->batch, s->in_ch, s->in_h, s->in_w),
                     "conv2d x descriptor") ||
        !cu_ok_cudnn(st, cudnnSetTensor4dDescriptor(p->y, CUDNN_TENSOR_NCHW, type,
                                                    s->batch, s->out_ch, out_h, out_w),
                     "conv2d y descriptor") ||
        !cu_ok_cudnn(st, cudnnSetFilter4dDescriptor(p->w, type, CUDNN_TENSOR_NCHW,
                                                    s->out_ch, s->in_ch / s->groups, s->k_h,
                                                    s->k_w),
                     "conv2d w descriptor") ||
        !cu_ok_cudnn(st, cudnnSetConvolution2dDescriptor(p->conv, s->pad_h, s->pad_w, s->stride,
                                                         s->stride, s->dilation, s->dilation,
                                                         CUDNN_CROSS_CORRELATION,
                                                         CUDNN_DATA_FLOAT),
                     "conv2d descriptor") ||
        !cu_ok_cudnn(st, cudnnSetConvolutionGroupCount(p->conv, s->groups),
                     "conv2d group count") ||
        /* what the heuristics are asked about: tensor cores for half data, TF32 only when
         * allowed (DEFAULT math would permit it on sm_80+) */
        !cu_ok_cudnn(st, cudnnSetConvolutionMathType(p->conv, low ? CUDNN_TENSOR_OP_MATH
                                                         : st->allow_tf32 ? CUDNN_DEFAULT_MATH
                                                                          : CUDNN_FMA_MATH),
                     "conv2d math type"))
        return 0;
    int n, c, h, w;
    if (!cu_ok_cudnn(st, cudnnGetConvolution2dForwardOutputDim(p->conv, p->x, p->w, &n, &c, &h, &w),
                     "conv2d output size"))
        return 0;
    if (n != s->batch || c != s->out_ch || h != out_h || w != out_w) {
        cu_record(st, CX_ERUNTIME, "conv2d: cuDNN computes output [%d, %d, %d, %d], codext "
                  "[%d, %d, %d, %d]", n, c, h, w, s->batch, s->out_ch, out_h, out_w);
        return 0;
    }
    return 1;
}

static void destroy_descs(cu_conv_choice *p) {
    if (p->x)
        cudnnDestroyTensorDescriptor(p->x);
    if (p->y)
        cudnnDestroyTensorDescriptor(p->y);
    if (p->w)
        cudnnDestroyFilterDescriptor(p->w);
    if (p->conv)
        cudnnDestroyConvolutionDescriptor(p->conv);
    p->x = p->y = NULL;
    p->w = NULL;
    p->conv = NULL;
}

void cu_conv_plans_free(cu_state *st) {
    for (int i = 0; i < st->n_conv_plans; i++)
        destroy_descs(&st->conv_plans[i]);
    free(st->conv_plans);
    st->conv_plans = NULL;
    st->n_conv_plans = st->conv_plans_capacity = 0;
}

static cudnnStatus_t workspace_size(cu_state *st, const cu_conv_choice *d, int direction,
                                    int algo, size_t *bytes) {
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

/* The first heuristic candidate that passes the filters (see the top of the file); sets
 * the plan's algorithm, math type (also on its descriptor) and workspace size. */
template <typename Perf>
static int pick(cu_state *st, cu_conv_choice *choice, const Perf *perf, int n) {
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
        if (cudnnSetConvolutionMathType(choice->conv, math) != CUDNN_STATUS_SUCCESS ||
            workspace_size(st, choice, choice->direction, (int)p->algo, &bytes) !=
                CUDNN_STATUS_SUCCESS ||
            bytes > CU_CONV_WORKSPACE_LIMIT)
            continue;
        choice->algo = (int)p->algo;
        choice->math_type = (int)math;
        choice->workspace_bytes = bytes;
        return 1;
    }
    return 0;
}

/* Asks cuDNN's heuristics for the plan's direction and picks: 1 when one passed, -1 when
 * none did (nothing recorded: the direct kernels run it), 0 on an error (recorded). */
static int choose(cu_state *st, cu_conv_choice *c) {
    int max_count = 0, returned = 0, found = 0;
    cudnnStatus_t status;
    if (c->direction == DIR_FORWARD) {
        cudnnConvolutionFwdAlgoPerf_t perf[16];
        status = cudnnGetConvolutionForwardAlgorithmMaxCount(st->cudnn, &max_count);
        if (status == CUDNN_STATUS_SUCCESS)
            status = cudnnGetConvolutionForwardAlgorithm_v7(
                st->cudnn, c->x, c->w, c->conv, c->y, max_count < 16 ? max_count : 16,
                &returned, perf);
        if (status == CUDNN_STATUS_SUCCESS)
            found = pick(st, c, perf, returned);
    } else if (c->direction == DIR_BACKWARD_DATA) {
        cudnnConvolutionBwdDataAlgoPerf_t perf[16];
        status = cudnnGetConvolutionBackwardDataAlgorithmMaxCount(st->cudnn, &max_count);
        if (status == CUDNN_STATUS_SUCCESS)
            status = cudnnGetConvolutionBackwardDataAlgorithm_v7(
                st->cudnn, c->w, c->y, c->conv, c->x, max_count < 16 ? max_count : 16,
                &returned, perf);
        if (status == CUDNN_STATUS_SUCCESS)
            found = pick(st, c, perf, returned);
    } else {
        cudnnConvolutionBwdFilterAlgoPerf_t perf[16];
        status = cudnnGetConvolutionBackwardFilterAlgorithmMaxCount(st->cudnn, &max_count);
        if (status == CUDNN_STATUS_SUCCESS)
            status = cudnnGetConvolutionBackwardFilterAlgorithm_v7(
                st->cudnn, c->x, c->y, c->conv, c->w, max_count < 16 ? max_count : 16,
                &returned, perf);
        if (status == CUDNN_STATUS_SUCCESS)
            found = pick(st, c, perf, returned);
    }
    if (!cu_ok_cudnn(st, status, "conv2d algorithm query"))
        return 0;
    if (!found) /* the direct kernels take it (see the top of the file) */
        return -1;
    return cu_ok_cudnn(st, cudnnSetConvolutionMathType(c->conv, (cudnnMathType_t)c->math_type),
                       "conv2d math type");
}

/* The plan for (shape, direction, precision): found, or made now (descriptors and the
 * algorithm, once per plan), with the workspace it needs; NULL with the error recorded. */
static const cu_conv_choice *prepare(cu_state *st, const cx_conv_shape *s, int direction,
                                     int low, void **workspace) {
    int precision = low ? st->precision : CX_PRECISION_FP32;
    const cu_conv_choice *plan = NULL;
    for (int i = 0; i < st->n_conv_plans && !plan; i++) {
        const cu_conv_choice *c = &st->conv_plans[i];
        if (c->direction == direction && c->precision == precision &&
            !memcmp(&c->shape, s, sizeof *s))
            plan = c;
    }
    if (!plan) {
        if (st->n_conv_plans == st->conv_plans_capacity) {
            int grown = st->conv_plans_capacity ? 2 * st->conv_plans_capacity : 64;
            void *more = realloc(st->conv_plans, (size_t)grown * sizeof *st->conv_plans);
            if (!more) {
                cu_record(st, CX_ENOMEM, "conv2d: out of host memory for convolution plans");
                return NULL;
            }
            st->conv_plans = (cu_conv_choice *)more;
            st->conv_plans_capacity = grown;
        }
        cu_conv_choice fresh;
        memset(&fresh, 0, sizeof fresh);
        fresh.shape = *s;
        fresh.direction = direction;
        fresh.precision = precision;
        /* CODEXT_CUDA_CONV=own: the direct kernels run every convolution (no cuDNN) */
        int chosen = st->own_conv ? -1 : make_descs(st, s, low, &fresh) ? choose(st, &fresh) : 0;
        if (chosen == 0) {
            destroy_descs(&fresh);
            return NULL;
        }
        fresh.direct = chosen < 0;
        st->conv_plans[st->n_conv_plans] = fresh;
        plan = &st->conv_plans[st->n_conv_plans++];
    }
    *workspace = NULL;
    if (plan->direct)
        return plan;
    *workspace = cu_workspace(st, plan->workspace_bytes);
    if (plan->workspace_bytes && !*workspace)
        return NULL;
    return plan;
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

/* A depthwise convolution: our kernels (see the top of the file). */
static int is_depthwise(const cx_conv_shape *s) {
    return s->groups > 1 && s->groups == s->in_ch && s->out_ch == s->in_ch;
}

static cx_direct_conv direct_geometry(const cx_conv_shape *s) {
    cx_direct_conv g = {s->batch, s->in_ch, s->out_ch, s->in_h, s->in_w, cx_conv_out_h(s),
                        cx_conv_out_w(s), s->k_h, s->k_w, s->stride, s->pad_h, s->pad_w,
                        s->dilation, s->in_ch / s->groups, s->out_ch / s->groups};
    return g;
}

static void direct_forward(cu_state *st, const cx_conv_shape *s, const float *x,
                           const float *w, const float *bias, float *y) {
    size_t n = y_count(s);
    CX_LAUNCH(direct_conv_forward_kernel, cu_blocks(n, CU_BLOCK), CU_BLOCK, 0, st->stream)(
        direct_geometry(s), x, w, bias, y);
    cu_ok_launch(st, "conv2d forward (direct)");
}

static int direct_backward_data(cu_state *st, const cx_conv_shape *s, const float *w,
                                const float *dy, float *dx) {
    size_t n = x_count(s);
    CX_LAUNCH(direct_conv_backward_data_kernel, cu_blocks(n, CU_BLOCK), CU_BLOCK, 0,
              st->stream)(direct_geometry(s), w, dy, dx);
    return cu_ok_launch(st, "conv2d backward data (direct)");
}

static int direct_backward_filter(cu_state *st, const cx_conv_shape *s, const float *x,
                                  const float *dy, float *dw) {
    unsigned blocks = (unsigned)w_count(s); /* one per filter element */
    CX_LAUNCH(direct_conv_backward_filter_kernel, blocks, CX_DIRECT_FILTER_BLOCK, 0,
              st->stream)(direct_geometry(s), x, dy, dw);
    return cu_ok_launch(st, "conv2d backward filter (direct)");
}

/* A dense 1x1 convolution (one group, stride 1, no padding) is a product per image, run
 * through cu_gemm (cuBLAS, or our GEMM): with x_b [in, hw], w [out, in], y_b [out, hw]
 * row-major, read column-major as x_b^T [hw x in] (ld hw), w^T [in x out] (ld in) and
 * y_b^T [hw x out] (ld hw):
 *   forward   y_b^T  = x_b^T w^T            gemm(N, N, m=hw, n=out, k=in)
 *   data      dx_b^T += dy_b^T w            gemm(N, T, m=hw, n=in,  k=out), beta 1
 *   filter    dw^T  += x_b dy_b^T, b = 0..  gemm(T, N, m=in, n=out, k=hw),  beta 1, float32
 * one image after another (a fixed order), mixed precision as cuDNN's path: half operands
 * for the forward and the data gradient, the filter gradient in float32. */
static int is_pointwise(const cx_conv_shape *s) {
    return s->groups == 1 && s->k_h == 1 && s->k_w == 1 && s->stride == 1 && s->pad_h == 0 &&
           s->pad_w == 0;
}

static int pointwise(cu_state *st, const cx_conv_shape *s, int direction, const float *x,
                     const float *w, const float *dy, float *out) {
    int hw = s->in_h * s->in_w, in = s->in_ch, outc = s->out_ch;
    size_t x_img = (size_t)in * hw, y_img = (size_t)outc * hw, w_n = (size_t)outc * in;
    for (int b = 0; b < s->batch; b++) {
        int ok;
        if (direction == DIR_FORWARD)
            ok = cu_gemm(st, CUBLAS_OP_N, CUBLAS_OP_N, hw, outc, in, x + b * x_img, hw, x_img, w,
                         in, w_n, 0.0f, out + b * y_img, hw, 1, "conv2d forward (1x1 gemm)");
        else if (direction == DIR_BACKWARD_DATA)
            ok = cu_gemm(st, CUBLAS_OP_N, CUBLAS_OP_T, hw, in, outc, dy + b * y_img, hw, y_img, w,
                         in, w_n, 1.0f, out + b * x_img, hw, 1,
                         "conv2d backward data (1x1 gemm)");
        else
            ok = cu_gemm(st, CUBLAS_OP_T, CUBLAS_OP_N, in, outc, hw, x + b * x_img, hw, x_img,
                         dy + b * y_img, hw, y_img, 1.0f, out, in, 0,
                         "conv2d backward filter (1x1 gemm)");
        if (!ok)
            return 0;
    }
    return 1;
}

static void add_bias(cu_state *st, const cx_conv_shape *s, const float *bias, float *y) {
    int hw = cx_conv_out_h(s) * cx_conv_out_w(s);
    size_t n = (size_t)s->batch * s->out_ch * hw;
    CX_LAUNCH(add_channel_bias_kernel, cu_blocks(n, CU_BLOCK), CU_BLOCK, 0, st->stream)(
        n, s->out_ch, hw, bias, y);
    cu_ok_launch(st, "conv2d forward (bias)");
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
    if (is_depthwise(s)) {
        direct_forward(st, s, x, w, bias, y);
        return;
    }
    if (is_pointwise(s) && !st->own_conv) {
        if (pointwise(st, s, DIR_FORWARD, x, w, NULL, y) && bias)
            add_bias(st, s, bias, y);
        return;
    }
    int low = conv_low(st, s);
    void *workspace = NULL;
    const cu_conv_choice *choice = prepare(st, s, DIR_FORWARD, low, &workspace);
    if (choice && choice->direct) { /* no cuDNN algorithm passed the filters */
        direct_forward(st, s, x, w, bias, y);
        return;
    }
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
        int ok = cu_ok_cudnn(st, cudnnConvolutionForward(st->cudnn, &one, choice->x, x_in,
                                                         choice->w, w_in, choice->conv,
                                                         (cudnnConvolutionFwdAlgo_t)choice->algo,
                                                         workspace, choice->workspace_bytes,
                                                         &zero, choice->y, y_out),
                             "conv2d forward");
        if (ok && low)
            cu_widen(st, y_out, y, y_count(s), 0);
        if (ok && bias)
            add_bias(st, s, bias, y);
    }
}

/* dx += the data gradient (float32, or a half result widened and added). 1 on success. */
static int backward_data(cu_state *st, const cx_conv_shape *s, int low, const float *w,
                         const float *dy, float *dx) {
    void *workspace = NULL;
    const cu_conv_choice *choice = prepare(st, s, DIR_BACKWARD_DATA, low, &workspace);
    if (choice && choice->direct)
        return direct_backward_data(st, s, w, dy, dx);
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
                                           st->cudnn, &one, choice->w, w_in, choice->y, dy_in,
                                           choice->conv,
                                           (cudnnConvolutionBwdDataAlgo_t)choice->algo,
                                           workspace, choice->workspace_bytes, &beta, choice->x,
                                           dx_out),
                                   "conv2d backward data");
    if (ok && low)
        cu_widen(st, dx_out, dx, x_count(s), 1);
    return ok;
}

/* dw += the filter gradient, in float32 in every precision: it sums over every pixel of
 * the batch, and a half result overflows at 65504, which under loss scaling (2^16 at the
 * start) it does at once, sending the scale down for no good reason. */
static int backward_filter(cu_state *st, const cx_conv_shape *s, const float *x,
                           const float *dy, float *dw) {
    void *workspace = NULL;
    const cu_conv_choice *choice = prepare(st, s, DIR_BACKWARD_FILTER, 0, &workspace);
    if (choice && choice->direct)
        return direct_backward_filter(st, s, x, dy, dw);
    const float one = 1.0f;
    return choice && cu_ok_cudnn(st, cudnnConvolutionBackwardFilter(
                                         st->cudnn, &one, choice->x, x, choice->y, dy,
                                         choice->conv,
                                         (cudnnConvolutionBwdFilterAlgo_t)choice->algo,
                                         workspace, choice->workspace_bytes, &one, choice->w,
                                         dw),
                                 "conv2d backward filter");
}

void cu_conv2d_backward(cx_backend *be, const cx_conv_shape *s, const float *x,
                        const float *w, const float *dy, float *dx, float *dw, float *dbias) {
    cu_state *st = cu_get(be);
    if (conv_is_empty(s))
        return;
    if (is_depthwise(s)) {
        if (dx && !direct_backward_data(st, s, w, dy, dx))
            return;
        if (dw && !direct_backward_filter(st, s, x, dy, dw))
            return;
    } else if (is_pointwise(s) && !st->own_conv) {
        if (dx && !pointwise(st, s, DIR_BACKWARD_DATA, NULL, w, dy, dx))
            return;
        if (dw && !pointwise(st, s, DIR_BACKWARD_FILTER, x, NULL, dy, dw))
            return;
    } else {
        int low = conv_low(st, s);
        if (dx && !backward_data(st, s, low, w, dy, dx))
            return;
        if (dw && !backward_filter(st, s, x, dy, dw))
            return;
    }
    if (dbias)
        cu_channel_sums(st, s->batch, s->out_ch, cx_conv_out_h(s) * cx_conv_out_w(s), dy, NULL,
                        NULL, dbias, NULL);
}
