/* The emulated cuDNN: the legacy convolution API that kernels/conv.cu calls, so that the
 * CUDA backend's convolutions run on the CUDA emulator (docs/emulator.md says what is
 * supported, what is refused and what is not modelled).
 *
 * Tensors are float, half or bf16 (one type for x, w and y; compute in float: cuDNN's
 * PSEUDO_HALF and PSEUDO_BFLOAT16 configurations); half inputs are read exactly and the
 * result rounded once to the output's type.
 *
 * The three convolutions are one reference loop over every (image, output channel,
 * output pixel, input channel of the group, kernel tap) whose input pixel lies inside the
 * image, accumulating in double into a host buffer, then written once as
 * alpha * sum + beta * out (out not read when beta is 0, as in cuDNN). Device memory is
 * read and written from host code between device_memory_open and device_memory_close,
 * after every buffer has been checked against its allocation. Anything the emulator does
 * not do exactly is refused with an error status and a message for
 * cudnnGetLastErrorString. The heuristics offer an unavailable algorithm first, then ones
 * that differ in determinism, math type and workspace, so that conv.cu's filters and its
 * workspace handling run; every algorithm computes the same loop. */
#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

#include <new>
#include <set>
#include <vector>

#include "emu_internal.h"
#include "include/cudnn.h"

struct cx_emu_cudnn_context {
    cudaStream_t stream;
};
struct cx_emu_cudnn_tensor {
    int set, n, c, h, w;
    cudnnDataType_t type;
};
struct cx_emu_cudnn_filter {
    int set, k, c, h, w;
    cudnnDataType_t type;
};
struct cx_emu_cudnn_convolution {
    int set, pad_h, pad_w, u, v, dilation_h, dilation_w, groups;
    cudnnMathType_t math;
};

using cx_emu::big_lock;

namespace {

std::set<const void *> live; /* handles and descriptors */
char last_message[1024];

cudnnStatus_t refuse(cudnnStatus_t status, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
cudnnStatus_t refuse(cudnnStatus_t status, const char *fmt, ...) {
    va_list args;
    va_start(args, fmt);
    vsnprintf(last_message, sizeof last_message, fmt, args);
    va_end(args);
    return status;
}

template <class T> cudnnStatus_t create(T **out, const char *call) {
    if (!out)
        return refuse(CUDNN_STATUS_BAD_PARAM_NULL_POINTER, "%s: NULL result pointer", call);
    *out = new T();
    live.insert(*out);
    return CUDNN_STATUS_SUCCESS;
}

template <class T> cudnnStatus_t destroy(T *p, const char *call) {
    if (!p)
        return CUDNN_STATUS_SUCCESS;
    if (!live.erase(p))
        return refuse(CUDNN_STATUS_BAD_PARAM, "%s: %p is not live", call, (const void *)p);
    delete p;
    return CUDNN_STATUS_SUCCESS;
}

/* 1 when p is a live object that has been set (descriptors) */
template <class T> int usable(const T *p) {
    return p && live.count(p) && p->set;
}
int usable(const cx_emu_cudnn_context *p) {
    return p && live.count(p);
}

enum { FORWARD = 0, BACKWARD_DATA = 1, BACKWARD_FILTER = 2 };

/* One convolution as the descriptors give it. */
struct problem {
    int batch, in_c, in_h, in_w, out_c, out_h, out_w, k_h, k_w, groups;
    int pad_h, pad_w, u, v, dilation_h, dilation_w;
    cudnnDataType_t type; /* of x, w and y alike (float, or half / bf16 with float compute) */
    size_t element_bytes() const {
        return type == CUDNN_DATA_FLOAT ? sizeof(float) : sizeof(uint16_t);
    }
    size_t x_count() const {
        return (size_t)batch * in_c * in_h * in_w;
    }
    size_t w_count() const {
        return (size_t)out_c * (in_c / groups) * k_h * k_w;
    }
    size_t y_count() const {
        return (size_t)batch * out_c * out_h * out_w;
    }
};

int out_size(int in, int pad, int k, int dilation, int stride) {
    long span = (long)in + 2L * pad - (long)dilation * (k - 1) - 1;
    return span < 0 ? 0 : (int)(span / stride + 1);
}

/* Checks that x, w, conv (and y, when given) describe one convolution; fills p. */
cudnnStatus_t describe(const char *call, const cx_emu_cudnn_tensor *x, const cx_emu_cudnn_filter *w,
                       const cx_emu_cudnn_convolution *conv, const cx_emu_cudnn_tensor *y,
                       problem *p) {
    if (!usable(x) || !usable(w) || !usable(conv) || (y && !usable(y)))
        return refuse(CUDNN_STATUS_BAD_PARAM, "%s: a descriptor is NULL, destroyed or never set",
                      call);
    if (x->c != w->c * conv->groups || w->k % conv->groups)
        return refuse(CUDNN_STATUS_BAD_PARAM,
                      "%s: x has %d channels and the filter [%d, %d, %d, %d] with %d groups needs "
                      "%d, and its %d outputs divisible by the groups",
                      call, x->c, w->k, w->c, w->h, w->w, conv->groups, w->c * conv->groups, w->k);
    if (x->type != w->type || (y && y->type != x->type))
        return refuse(CUDNN_STATUS_NOT_SUPPORTED, "%s: data types x %d, w %d, y %d: the "
                      "emulator has one data type for all three", call, (int)x->type,
                      (int)w->type, y ? (int)y->type : (int)x->type);
    *p = problem{x->n, x->c, x->h, x->w, w->k, 0, 0, w->h, w->w, conv->groups, conv->pad_h,
                 conv->pad_w, conv->u, conv->v, conv->dilation_h, conv->dilation_w, x->type};
    p->out_h = out_size(x->h, conv->pad_h, w->h, conv->dilation_h, conv->u);
    p->out_w = out_size(x->w, conv->pad_w, w->w, conv->dilation_w, conv->v);
    if (p->out_h <= 0 || p->out_w <= 0)
        return refuse(CUDNN_STATUS_BAD_PARAM, "%s: the dilated %dx%d filter does not fit the "
                      "padded %dx%d image", call, w->h, w->w, x->h, x->w);
    if (y && (y->n != p->batch || y->c != p->out_c || y->h != p->out_h || y->w != p->out_w))
        return refuse(CUDNN_STATUS_BAD_PARAM, "%s: the output descriptor is [%d, %d, %d, %d], "
                      "the convolution gives [%d, %d, %d, %d]", call, y->n, y->c, y->h, y->w,
                      p->batch, p->out_c, p->out_h, p->out_w);
    return CUDNN_STATUS_SUCCESS;
}

/* ---- the algorithms the heuristics offer ---- */

struct algo_info {
    int algo;
    cudnnStatus_t status; /* NOT_SUPPORTED: offered as unavailable, never runs */
    cudnnDeterminism_t determinism;
    cudnnMathType_t math;
    int workspace; /* 0 none; 1 an index table for the forward; 2 a copy of dw */
};
const algo_info ALGOS[3][3] = {
    {{CUDNN_CONVOLUTION_FWD_ALGO_FFT, CUDNN_STATUS_NOT_SUPPORTED, CUDNN_DETERMINISTIC,
      CUDNN_DEFAULT_MATH, 0},
     {CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM, CUDNN_STATUS_SUCCESS, CUDNN_DETERMINISTIC,
      CUDNN_TENSOR_OP_MATH, 1},
     {CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM, CUDNN_STATUS_SUCCESS, CUDNN_DETERMINISTIC,
      CUDNN_DEFAULT_MATH, 0}},
    {{CUDNN_CONVOLUTION_BWD_DATA_ALGO_FFT, CUDNN_STATUS_NOT_SUPPORTED, CUDNN_DETERMINISTIC,
      CUDNN_DEFAULT_MATH, 0},
     {CUDNN_CONVOLUTION_BWD_DATA_ALGO_0, CUDNN_STATUS_SUCCESS, CUDNN_NON_DETERMINISTIC,
      CUDNN_DEFAULT_MATH, 0},
     {CUDNN_CONVOLUTION_BWD_DATA_ALGO_1, CUDNN_STATUS_SUCCESS, CUDNN_DETERMINISTIC,
      CUDNN_DEFAULT_MATH, 0}},
    {{CUDNN_CONVOLUTION_BWD_FILTER_ALGO_FFT, CUDNN_STATUS_NOT_SUPPORTED, CUDNN_DETERMINISTIC,
      CUDNN_DEFAULT_MATH, 0},
     {CUDNN_CONVOLUTION_BWD_FILTER_ALGO_0, CUDNN_STATUS_SUCCESS, CUDNN_NON_DETERMINISTIC,
      CUDNN_DEFAULT_MATH, 0},
     {CUDNN_CONVOLUTION_BWD_FILTER_ALGO_1, CUDNN_STATUS_SUCCESS, CUDNN_DETERMINISTIC,
      CUDNN_DEFAULT_MATH, 2}},
};
const int ALGO_COUNTS[3] = {CUDNN_CONVOLUTION_FWD_ALGO_COUNT, CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT,
                            CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT};
const char *const DIRECTIONS[3] = {"forward", "backward data", "backward filter"};

size_t workspace_bytes(const algo_info &a, const problem &p) {
    if (a.workspace == 1)
        return (size_t)p.out_h * p.out_w * p.k_h * p.k_w * sizeof(int);
    if (a.workspace == 2)
        return p.w_count() * p.element_bytes();
    return 0;
}

/* The runnable algorithm `algo` of `direction`, or NULL (refused, naming call). */
const algo_info *find_algo(int direction, int algo, const char *call) {
    for (const algo_info &a : ALGOS[direction])
        if (a.algo == algo && a.status == CUDNN_STATUS_SUCCESS)
            return &a;
    refuse(CUDNN_STATUS_NOT_SUPPORTED, "%s: %s algorithm %d is not one the emulator runs", call,
           DIRECTIONS[direction], algo);
    return nullptr;
}

/* The handle's problem, else the descriptors' (already recorded), else success. */
cudnnStatus_t first_problem(const char *call, cudnnHandle_t handle, cudnnStatus_t described) {
    if (!usable(handle))
        return refuse(CUDNN_STATUS_BAD_PARAM, "%s: %p is not a live handle", call, (void *)handle);
    return described;
}

template <class Perf>
cudnnStatus_t heuristics(int direction, const char *call, cudnnHandle_t handle, const problem &p,
                         cudnnStatus_t described, int requested, int *returned, Perf *perf) {
    if (cudnnStatus_t status = first_problem(call, handle, described))
        return status;
    if (requested < 1 || !returned || !perf)
        return refuse(CUDNN_STATUS_BAD_PARAM, "%s: requested %d algorithms into %p (count %p)",
                      call, requested, (void *)perf, (void *)returned);
    int n = 0;
    for (const algo_info &a : ALGOS[direction]) {
        if (n == requested)
            break;
        memset(&perf[n], 0, sizeof perf[n]);
        perf[n].algo = (decltype(perf[n].algo))a.algo;
        perf[n].status = a.status;
        perf[n].time = -1.0f; /* heuristics: nothing was timed */
        perf[n].memory = workspace_bytes(a, p);
        /* CODEXT_EMU_CUDNN_NONDETERMINISTIC=1: no algorithm is deterministic (tests of the
         * backend's fallback to its direct kernels) */
        const char *nondet = getenv("CODEXT_EMU_CUDNN_NONDETERMINISTIC");
        perf[n].determinism = nondet && strcmp(nondet, "1") == 0 ? CUDNN_NON_DETERMINISTIC
                                                                 : a.determinism;
        perf[n].mathType = a.math;
        n++;
    }
    *returned = n;
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t workspace_size(int direction, const char *call, cudnnHandle_t handle,
                             const problem &p, cudnnStatus_t described, int algo, size_t *bytes) {
    if (cudnnStatus_t status = first_problem(call, handle, described))
        return status;
    if (!bytes)
        return refuse(CUDNN_STATUS_BAD_PARAM_NULL_POINTER, "%s: NULL size", call);
    const algo_info *a = find_algo(direction, algo, call);
    if (!a)
        return CUDNN_STATUS_NOT_SUPPORTED;
    *bytes = workspace_bytes(*a, p);
    return CUDNN_STATUS_SUCCESS;
}

/* The three convolutions: out = alpha * sum + beta * out over the products of in1 and in2,
 * where (forward) y += x * w, (backward data) dx += dy * w, (backward filter)
 * dw += dy * x. */
cudnnStatus_t convolve(int direction, const char *call, cudnnHandle_t handle, const problem &p,
                       cudnnStatus_t described, int algo, void *workspace, size_t workspace_size,
                       const void *alpha, const void *beta, const void *x, const void *w,
                       const void *y, void *out) {
    if (cudnnStatus_t status = first_problem(call, handle, described))
        return status;
    const algo_info *a = find_algo(direction, algo, call);
    if (!a)
        return CUDNN_STATUS_NOT_SUPPORTED;
    if (!alpha || !beta)
        return refuse(CUDNN_STATUS_BAD_PARAM_NULL_POINTER, "%s: alpha or beta is NULL", call);
    if (!cx_emu::stream_valid(handle->stream))
        return refuse(CUDNN_STATUS_EXECUTION_FAILED, "%s: the handle's stream %p is no longer live",
                      call, (void *)handle->stream);
    size_t need = workspace_bytes(*a, p);
    char why[512];
    if (workspace_size < need)
        return refuse(CUDNN_STATUS_BAD_PARAM, "%s: algorithm %d needs %zu bytes of workspace, "
                      "%zu were given", call, algo, need, workspace_size);
    if (need && !cx_emu::device_range_ok(workspace, need, "the workspace", why, sizeof why))
        return refuse(CUDNN_STATUS_EXECUTION_FAILED, "%s: %s", call, why);
    /* the buffers: x, w and y (dy) with the output among them */
    const void *ptrs[3] = {x, w, y};
    size_t es = p.element_bytes();
    size_t bytes[3] = {p.x_count() * es, p.w_count() * es, p.y_count() * es};
    const char *names[3][3] = {{"x", "w", "y"}, {"dx", "w", "dy"}, {"x", "dw", "dy"}};
    int out_slot = direction == FORWARD ? 2 : direction == BACKWARD_DATA ? 0 : 1;
    ptrs[out_slot] = out;
    for (int i = 0; i < 3; i++)
        if (!cx_emu::device_range_ok(ptrs[i], bytes[i], names[direction][i], why, sizeof why))
            return refuse(CUDNN_STATUS_EXECUTION_FAILED, "%s: %s", call, why);
    for (int i = 0; i < 3; i++)
        if (i != out_slot && cx_emu::ranges_overlap(out, bytes[out_slot], ptrs[i], bytes[i]))
            return refuse(CUDNN_STATUS_BAD_PARAM, "%s: the output %s overlaps the input %s", call,
                          names[direction][out_slot], names[direction][i]);
    std::vector<double> sum;
    try {
        sum.assign(bytes[out_slot] / es, 0.0);
    } catch (const std::bad_alloc &) {
        return refuse(CUDNN_STATUS_ALLOC_FAILED, "%s: no host memory for the reference sums", call);
    }
    float a_scale = *(const float *)alpha, b_scale = *(const float *)beta;
    cx_emu::device_memory_open();
    if (need)
        memset(workspace, 0xFF, need);
    /* the inputs as floats: in place for float data, else widened copies (exact) */
    std::vector<float> widened[3];
    const float *in[3] = {(const float *)ptrs[0], (const float *)ptrs[1], (const float *)ptrs[2]};
    for (int i = 0; i < 3 && p.type != CUDNN_DATA_FLOAT; i++)
        if (i != out_slot) {
            widened[i].resize(bytes[i] / es);
            for (size_t j = 0; j < widened[i].size(); j++)
                widened[i][j] = cx_emu::load_low(ptrs[i], p.type == CUDNN_DATA_BFLOAT16, j);
            in[i] = widened[i].data();
        }
    const float *in_x = in[0], *in_w = in[1], *in_y = in[2];
    int cin_g = p.in_c / p.groups, cout_g = p.out_c / p.groups;
    for (int b = 0; b < p.batch; b++)
        for (int oc = 0; oc < p.out_c; oc++)
            for (int oy = 0; oy < p.out_h; oy++)
                for (int ox = 0; ox < p.out_w; ox++) {
                    size_t yi = (((size_t)b * p.out_c + oc) * p.out_h + oy) * p.out_w + ox;
                    for (int icl = 0; icl < cin_g; icl++) {
                        int ic = oc / cout_g * cin_g + icl;
                        for (int ky = 0; ky < p.k_h; ky++) {
                            int iy = oy * p.u - p.pad_h + ky * p.dilation_h;
                            if (iy < 0 || iy >= p.in_h)
                                continue;
                            for (int kx = 0; kx < p.k_w; kx++) {
                                int ix = ox * p.v - p.pad_w + kx * p.dilation_w;
                                if (ix < 0 || ix >= p.in_w)
                                    continue;
                                size_t xi = (((size_t)b * p.in_c + ic) * p.in_h + iy) * p.in_w + ix;
                                size_t wi = (((size_t)oc * cin_g + icl) * p.k_h + ky) * p.k_w + kx;
                                if (direction == FORWARD)
                                    sum[yi] += (double)in_x[xi] * (double)in_w[wi];
                                else if (direction == BACKWARD_DATA)
                                    sum[xi] += (double)in_y[yi] * (double)in_w[wi];
                                else
                                    sum[wi] += (double)in_y[yi] * (double)in_x[xi];
                            }
                        }
                    }
                }
    bool bf16 = p.type == CUDNN_DATA_BFLOAT16;
    for (size_t i = 0; i < sum.size(); i++) {
        double result = (double)a_scale * sum[i];
        if (p.type == CUDNN_DATA_FLOAT) {
            float *o = (float *)out;
            if (b_scale != 0.0f)
                result += (double)b_scale * (double)o[i];
            o[i] = (float)result;
        } else {
            if (b_scale != 0.0f)
                result += (double)b_scale * (double)cx_emu::load_low(out, bf16, i);
            cx_emu::store_low(out, bf16, i, (float)result);
        }
    }
    cx_emu::device_memory_close();
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t check_dims(const char *call, int a, int b, int c, int d) {
    if (a <= 0 || b <= 0 || c <= 0 || d <= 0)
        return refuse(CUDNN_STATUS_BAD_PARAM, "%s: dimensions [%d, %d, %d, %d] must be positive",
                      call, a, b, c, d);
    if ((double)a * b * c * d > (double)INT_MAX)
        return refuse(CUDNN_STATUS_NOT_SUPPORTED, "%s: [%d, %d, %d, %d] has more than 2^31-1 "
                      "elements", call, a, b, c, d);
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t check_layout(const char *call, cudnnTensorFormat_t format, cudnnDataType_t type) {
    if (format != CUDNN_TENSOR_NCHW ||
        (type != CUDNN_DATA_FLOAT && type != CUDNN_DATA_HALF && type != CUDNN_DATA_BFLOAT16))
        return refuse(CUDNN_STATUS_NOT_SUPPORTED,
                      "%s: format %d, data type %d: the emulator has NCHW (0) in float (0), "
                      "half (2) or bfloat16 (9) only",
                      call, (int)format, (int)type);
    return CUDNN_STATUS_SUCCESS;
}

} // namespace

size_t cudnnGetVersion(void) {
    return CUDNN_VERSION;
}

const char *cudnnGetErrorString(cudnnStatus_t status) {
    switch (status) {
    case CUDNN_STATUS_SUCCESS: return "CUDNN_STATUS_SUCCESS";
    case CUDNN_STATUS_NOT_INITIALIZED: return "CUDNN_STATUS_NOT_INITIALIZED";
    case CUDNN_STATUS_BAD_PARAM: return "CUDNN_STATUS_BAD_PARAM";
    case CUDNN_STATUS_BAD_PARAM_NULL_POINTER: return "CUDNN_STATUS_BAD_PARAM_NULL_POINTER";
    case CUDNN_STATUS_NOT_SUPPORTED: return "CUDNN_STATUS_NOT_SUPPORTED";
    case CUDNN_STATUS_INTERNAL_ERROR: return "CUDNN_STATUS_INTERNAL_ERROR";
    case CUDNN_STATUS_ALLOC_FAILED: return "CUDNN_STATUS_INTERNAL_ERROR_HOST_ALLOCATION_FAILED";
    case CUDNN_STATUS_EXECUTION_FAILED: return "CUDNN_STATUS_EXECUTION_FAILED";
    }
    return "CUDNN_STATUS_UNKNOWN";
}

void cudnnGetLastErrorString(char *message, size_t max_size) {
    std::lock_guard<std::recursive_mutex> hold(big_lock());
    if (message && max_size) {
        if (last_message[0])
            snprintf(message, max_size, "%s [CUDA emulator]", last_message);
        else
            message[0] = '\0';
    }
    last_message[0] = '\0';
}

cudnnStatus_t cudnnCreate(cudnnHandle_t *handle) {
    std::lock_guard<std::recursive_mutex> hold(big_lock());
    return create(handle, "cudnnCreate");
}

cudnnStatus_t cudnnDestroy(cudnnHandle_t handle) {
    std::lock_guard<std::recursive_mutex> hold(big_lock());
    return destroy(handle, "cudnnDestroy");
}

cudnnStatus_t cudnnSetStream(cudnnHandle_t handle, cudaStream_t stream) {
    std::lock_guard<std::recursive_mutex> hold(big_lock());
    if (!usable(handle))
        return refuse(CUDNN_STATUS_BAD_PARAM, "cudnnSetStream: %p is not a live handle",
                      (void *)handle);
    if (!cx_emu::stream_valid(stream))
        return refuse(CUDNN_STATUS_BAD_PARAM, "cudnnSetStream: %p is not a live stream",
                      (void *)stream);
    handle->stream = stream;
    return CUDNN_STATUS_SUCCESS;
}

#define DESCRIPTOR_LIFETIME(Name, Type)                                                            \
    cudnnStatus_t cudnnCreate##Name##Descriptor(Type **desc) {                                     \
        std::lock_guard<std::recursive_mutex> hold(big_lock());                                    \
        return create(desc, "cudnnCreate" #Name "Descriptor");                                     \
    }                                                                                              \
    cudnnStatus_t cudnnDestroy##Name##Descriptor(Type *desc) {                                     \
        std::lock_guard<std::recursive_mutex> hold(big_lock());                                    \
        return destroy(desc, "cudnnDestroy" #Name "Descriptor");                                   \
    }
DESCRIPTOR_LIFETIME(Tensor, cx_emu_cudnn_tensor)
DESCRIPTOR_LIFETIME(Filter, cx_emu_cudnn_filter)
DESCRIPTOR_LIFETIME(Convolution, cx_emu_cudnn_convolution)
#undef DESCRIPTOR_LIFETIME

/* The 4-d descriptors: tensors [n, c, h, w] and filters [k, c, h, w], NCHW float. */
template <class T>
static cudnnStatus_t set_4d(T *desc, const char *call, cudnnTensorFormat_t format,
                            cudnnDataType_t type, int n, int c, int h, int w) {
    std::lock_guard<std::recursive_mutex> hold(big_lock());
    if (!desc || !live.count(desc))
        return refuse(CUDNN_STATUS_BAD_PARAM, "%s: %p is not live", call, (void *)desc);
    cudnnStatus_t status = check_layout(call, format, type);
    if (status == CUDNN_STATUS_SUCCESS)
        status = check_dims(call, n, c, h, w);
    if (status == CUDNN_STATUS_SUCCESS)
        *desc = T{1, n, c, h, w, type};
    return status;
}

cudnnStatus_t cudnnSetTensor4dDescriptor(cudnnTensorDescriptor_t desc, cudnnTensorFormat_t format,
                                         cudnnDataType_t type, int n, int c, int h, int w) {
    return set_4d(desc, "cudnnSetTensor4dDescriptor", format, type, n, c, h, w);
}

cudnnStatus_t cudnnSetFilter4dDescriptor(cudnnFilterDescriptor_t desc, cudnnDataType_t type,
                                         cudnnTensorFormat_t format, int k, int c, int h, int w) {
    return set_4d(desc, "cudnnSetFilter4dDescriptor", format, type, k, c, h, w);
}

cudnnStatus_t cudnnSetConvolution2dDescriptor(cudnnConvolutionDescriptor_t desc, int pad_h,
                                              int pad_w, int u, int v, int dilation_h,
                                              int dilation_w, cudnnConvolutionMode_t mode,
                                              cudnnDataType_t compute_type) {
    std::lock_guard<std::recursive_mutex> hold(big_lock());
    const char *call = "cudnnSetConvolution2dDescriptor";
    if (!desc || !live.count(desc))
        return refuse(CUDNN_STATUS_BAD_PARAM, "%s: %p is not live", call, (void *)desc);
    if (pad_h < 0 || pad_w < 0 || u <= 0 || v <= 0 || dilation_h <= 0 || dilation_w <= 0)
        return refuse(CUDNN_STATUS_BAD_PARAM, "%s: padding %d/%d, stride %d/%d, dilation %d/%d",
                      call, pad_h, pad_w, u, v, dilation_h, dilation_w);
    if (mode != CUDNN_CROSS_CORRELATION || compute_type != CUDNN_DATA_FLOAT)
        return refuse(CUDNN_STATUS_NOT_SUPPORTED, "%s: mode %d, compute type %d: the emulator "
                      "has CUDNN_CROSS_CORRELATION in float only", call, (int)mode,
                      (int)compute_type);
    int groups = desc->set ? desc->groups : 1;
    cudnnMathType_t math = desc->set ? desc->math : CUDNN_DEFAULT_MATH;
    *desc = cx_emu_cudnn_convolution{1, pad_h, pad_w, u, v, dilation_h, dilation_w, groups, math};
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnSetConvolutionGroupCount(cudnnConvolutionDescriptor_t desc, int groups) {
    std::lock_guard<std::recursive_mutex> hold(big_lock());
    if (!usable(desc) || groups < 1)
        return refuse(CUDNN_STATUS_BAD_PARAM, "cudnnSetConvolutionGroupCount: %d groups on %p "
                      "(a live, set descriptor and at least one group)", groups, (void *)desc);
    desc->groups = groups;
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnSetConvolutionMathType(cudnnConvolutionDescriptor_t desc, cudnnMathType_t math) {
    std::lock_guard<std::recursive_mutex> hold(big_lock());
    if (!usable(desc) || (unsigned)math > CUDNN_FMA_MATH)
        return refuse(CUDNN_STATUS_BAD_PARAM, "cudnnSetConvolutionMathType: math type %d on %p",
                      (int)math, (void *)desc);
    desc->math = math; /* recorded; the reference loop computes the same in every math type */
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnGetConvolution2dForwardOutputDim(const cudnnConvolutionDescriptor_t conv,
                                                    const cudnnTensorDescriptor_t x,
                                                    const cudnnFilterDescriptor_t w, int *n, int *c,
                                                    int *h, int *wd) {
    std::lock_guard<std::recursive_mutex> hold(big_lock());
    const char *call = "cudnnGetConvolution2dForwardOutputDim";
    if (!n || !c || !h || !wd)
        return refuse(CUDNN_STATUS_BAD_PARAM_NULL_POINTER, "%s: NULL result pointer", call);
    problem p;
    cudnnStatus_t status = describe(call, x, w, conv, nullptr, &p);
    if (status == CUDNN_STATUS_SUCCESS) {
        *n = p.batch;
        *c = p.out_c;
        *h = p.out_h;
        *wd = p.out_w;
    }
    return status;
}

static cudnnStatus_t max_count(int direction, const char *call, cudnnHandle_t handle, int *count) {
    std::lock_guard<std::recursive_mutex> hold(big_lock());
    if (!usable(handle) || !count)
        return refuse(CUDNN_STATUS_BAD_PARAM, "%s: handle %p, count %p", call, (void *)handle,
                      (void *)count);
    *count = ALGO_COUNTS[direction];
    return CUDNN_STATUS_SUCCESS;
}

/* ---- forward: x, w -> y ---- */

cudnnStatus_t cudnnGetConvolutionForwardAlgorithmMaxCount(cudnnHandle_t handle, int *count) {
    return max_count(FORWARD, "cudnnGetConvolutionForwardAlgorithmMaxCount", handle, count);
}

static long convolutions_run, heuristic_queries; /* under big_lock */

long codext_emu_cudnn_calls(int heuristics) {
    std::lock_guard<std::recursive_mutex> hold(big_lock());
    return heuristics ? heuristic_queries : convolutions_run;
}

cudnnStatus_t cudnnGetConvolutionForwardAlgorithm_v7(
    cudnnHandle_t handle, const cudnnTensorDescriptor_t x, const cudnnFilterDescriptor_t w,
    const cudnnConvolutionDescriptor_t conv, const cudnnTensorDescriptor_t y, const int requested,
    int *returned, cudnnConvolutionFwdAlgoPerf_t *perf) {
    std::lock_guard<std::recursive_mutex> hold(big_lock());
    heuristic_queries++;
    problem p;
    cudnnStatus_t described = describe(__func__, x, w, conv, y, &p);
    return heuristics(FORWARD, __func__, handle, p, described, requested, returned, perf);
}

cudnnStatus_t cudnnGetConvolutionForwardWorkspaceSize(
    cudnnHandle_t handle, const cudnnTensorDescriptor_t x, const cudnnFilterDescriptor_t w,
    const cudnnConvolutionDescriptor_t conv, const cudnnTensorDescriptor_t y,
    cudnnConvolutionFwdAlgo_t algo, size_t *bytes) {
    std::lock_guard<std::recursive_mutex> hold(big_lock());
    problem p;
    cudnnStatus_t described = describe(__func__, x, w, conv, y, &p);
    return workspace_size(FORWARD, __func__, handle, p, described, algo, bytes);
}


cudnnStatus_t cudnnConvolutionForward(cudnnHandle_t handle, const void *alpha,
                                      const cudnnTensorDescriptor_t x_desc, const void *x,
                                      const cudnnFilterDescriptor_t w_desc, const void *w,
                                      const cudnnConvolutionDescriptor_t conv,
                                      cudnnConvolutionFwdAlgo_t algo, void *workspace,
                                      size_t workspace_bytes, const void *beta,
                                      const cudnnTensorDescriptor_t y_desc, void *y) {
    std::lock_guard<std::recursive_mutex> hold(big_lock());
    convolutions_run++;
    problem p;
    cudnnStatus_t described = describe(__func__, x_desc, w_desc, conv, y_desc, &p);
    return convolve(FORWARD, __func__, handle, p, described, algo, workspace, workspace_bytes,
                    alpha, beta, x, w, nullptr, y);
}

/* ---- backward data: w, dy -> dx ---- */

cudnnStatus_t cudnnGetConvolutionBackwardDataAlgorithmMaxCount(cudnnHandle_t handle, int *count) {
    return max_count(BACKWARD_DATA, "cudnnGetConvolutionBackwardDataAlgorithmMaxCount", handle,
                     count);
}

cudnnStatus_t cudnnGetConvolutionBackwardDataAlgorithm_v7(
    cudnnHandle_t handle, const cudnnFilterDescriptor_t w, const cudnnTensorDescriptor_t dy,
    const cudnnConvolutionDescriptor_t conv, const cudnnTensorDescriptor_t dx, const int requested,
    int *returned, cudnnConvolutionBwdDataAlgoPerf_t *perf) {
    std::lock_guard<std::recursive_mutex> hold(big_lock());
    heuristic_queries++;
    problem p;
    cudnnStatus_t described = describe(__func__, dx, w, conv, dy, &p);
    return heuristics(BACKWARD_DATA, __func__, handle, p, described, requested, returned, perf);
}

cudnnStatus_t cudnnGetConvolutionBackwardDataWorkspaceSize(
    cudnnHandle_t handle, const cudnnFilterDescriptor_t w, const cudnnTensorDescriptor_t dy,
    const cudnnConvolutionDescriptor_t conv, const cudnnTensorDescriptor_t dx,
    cudnnConvolutionBwdDataAlgo_t algo, size_t *bytes) {
    std::lock_guard<std::recursive_mutex> hold(big_lock());
    problem p;
    cudnnStatus_t described = describe(__func__, dx, w, conv, dy, &p);
    return workspace_size(BACKWARD_DATA, __func__, handle, p, described, algo, bytes);
}

cudnnStatus_t cudnnConvolutionBackwardData(cudnnHandle_t handle, const void *alpha,
                                           const cudnnFilterDescriptor_t w_desc, const void *w,
                                           const cudnnTensorDescriptor_t dy_desc, const void *dy,
                                           const cudnnConvolutionDescriptor_t conv,
                                           cudnnConvolutionBwdDataAlgo_t algo, void *workspace,
                                           size_t workspace_bytes, const void *beta,
                                           const cudnnTensorDescriptor_t dx_desc, void *dx) {
    std::lock_guard<std::recursive_mutex> hold(big_lock());
    convolutions_run++;
    problem p;
    cudnnStatus_t described = describe(__func__, dx_desc, w_desc, conv, dy_desc, &p);
    return convolve(BACKWARD_DATA, __func__, handle, p, described, algo, workspace, workspace_bytes,
                    alpha, beta, nullptr, w, dy, dx);
}

/* ---- backward filter: x, dy -> dw ---- */

cudnnStatus_t cudnnGetConvolutionBackwardFilterAlgorithmMaxCount(cudnnHandle_t handle, int *count) {
    return max_count(BACKWARD_FILTER, "cudnnGetConvolutionBackwardFilterAlgorithmMaxCount", handle,
                     count);
}

cudnnStatus_t cudnnGetConvolutionBackwardFilterAlgorithm_v7(
    cudnnHandle_t handle, const cudnnTensorDescriptor_t x, const cudnnTensorDescriptor_t dy,
    const cudnnConvolutionDescriptor_t conv, const cudnnFilterDescriptor_t dw, const int requested,
    int *returned, cudnnConvolutionBwdFilterAlgoPerf_t *perf) {
    std::lock_guard<std::recursive_mutex> hold(big_lock());
    heuristic_queries++;
    problem p;
    cudnnStatus_t described = describe(__func__, x, dw, conv, dy, &p);
    return heuristics(BACKWARD_FILTER, __func__, handle, p, described, requested, returned, perf);
}

cudnnStatus_t cudnnGetConvolutionBackwardFilterWorkspaceSize(
    cudnnHandle_t handle, const cudnnTensorDescriptor_t x, const cudnnTensorDescriptor_t dy,
    const cudnnConvolutionDescriptor_t conv, const cudnnFilterDescriptor_t dw,
    cudnnConvolutionBwdFilterAlgo_t algo, size_t *bytes) {
    std::lock_guard<std::recursive_mutex> hold(big_lock());
    problem p;
    cudnnStatus_t described = describe(__func__, x, dw, conv, dy, &p);
    return workspace_size(BACKWARD_FILTER, __func__, handle, p, described, algo, bytes);
}

cudnnStatus_t cudnnConvolutionBackwardFilter(cudnnHandle_t handle, const void *alpha,
                                             const cudnnTensorDescriptor_t x_desc, const void *x,
                                             const cudnnTensorDescriptor_t dy_desc, const void *dy,
                                             const cudnnConvolutionDescriptor_t conv,
                                             cudnnConvolutionBwdFilterAlgo_t algo, void *workspace,
                                             size_t workspace_bytes, const void *beta,
                                             const cudnnFilterDescriptor_t dw_desc, void *dw) {
    std::lock_guard<std::recursive_mutex> hold(big_lock());
    convolutions_run++;
    problem p;
    cudnnStatus_t described = describe(__func__, x_desc, dw_desc, conv, dy_desc, &p);
    return convolve(BACKWARD_FILTER, __func__, handle, p, described, algo, workspace,
                    workspace_bytes, alpha, beta, x, nullptr, dy, dw);
}
