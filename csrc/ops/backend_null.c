/* The planning backend: every op does nothing. Models run their forward and backward
 * code once against it with a counting arena (arena.h) to learn how much activation
 * memory a (batch, size, mode) needs, so one definition of the model also plans it. */
#include "ops.h"

static void null_zero(cx_backend *be, float *ptr, size_t n) {}
static void null_copy(cx_backend *be, float *dst, const float *src, size_t n) {}
static void null_upload(cx_backend *be, float *dst, const float *host, size_t n) {}
static void null_download(cx_backend *be, float *host, const float *src, size_t n) {}
static void null_conv2d_forward(cx_backend *be, const cx_conv_shape *s, const float *x, const float *w, const float *bias, float *y) {}
static void null_conv2d_backward(cx_backend *be, const cx_conv_shape *s, const float *x, const float *w, const float *dy, float *dx, float *dw, float *dbias) {}
static void null_linear_forward(cx_backend *be, int rows, int in_features, int out_features, const float *x, const float *w, const float *bias, float *y) {}
static void null_linear_backward(cx_backend *be, int rows, int in_features, int out_features, const float *x, const float *w, const float *dy, float *dx, float *dw, float *dbias) {}
static void null_layernorm_forward(cx_backend *be, int rows, int cols, float eps, const float *x, const float *weight, const float *bias, float *y, float *saved) {}
static void null_layernorm_backward(cx_backend *be, int rows, int cols, const float *x, const float *weight, const float *saved, const float *dy, float *dx, float *dweight, float *dbias) {}
static void null_layernorm2d_forward(cx_backend *be, int batch, int channels, int hw, float eps, const float *x, const float *weight, const float *bias, float *y, float *saved) {}
static void null_layernorm2d_backward(cx_backend *be, int batch, int channels, int hw, const float *x, const float *weight, const float *saved, const float *dy, float *dx, float *dweight, float *dbias) {}
static void null_l2norm_forward(cx_backend *be, int rows, int cols, float eps, const float *x, float *y, float *saved) {}
static void null_l2norm_backward(cx_backend *be, int rows, int cols, float eps, const float *x, const float *saved, const float *dy, float *dx) {}
static void null_gelu_forward(cx_backend *be, size_t n, const float *x, float *y) {}
static void null_gelu_backward(cx_backend *be, size_t n, const float *x, const float *dy, float *dx) {}
static void null_sigmoid_forward(cx_backend *be, size_t n, const float *x, float *y) {}
static void null_sigmoid_backward(cx_backend *be, size_t n, const float *y, const float *dy, float *dx) {}
static void null_softmax_forward(cx_backend *be, int rows, int cols, const float *x, float *y) {}
static void null_softmax_backward(cx_backend *be, int rows, int cols, const float *y, const float *dy, float *dx) {}
static void null_add(cx_backend *be, size_t n, const float *a, const float *b, float *y) {}
static void null_axpy(cx_backend *be, size_t n, float alpha, const float *x, float *y) {}
static void null_mul_forward(cx_backend *be, size_t n, const float *a, const float *b, float *y) {}
static void null_mul_backward(cx_backend *be, size_t n, const float *a, const float *b, const float *dy, float *da, float *db) {}
static void null_affine(cx_backend *be, size_t n, float alpha, float beta, const float *x, float *y) {}
static void null_scale_mid_forward(cx_backend *be, int outer, int mid, int inner, const float *x, const float *s, float *y) {}
static void null_scale_mid_backward(cx_backend *be, int outer, int mid, int inner, const float *x, const float *s, const float *dy, float *dx, float *ds) {}
static void null_scale_outer_inner_forward(cx_backend *be, int outer, int mid, int inner, const float *x, const float *s, float *y) {}
static void null_scale_outer_inner_backward(cx_backend *be, int outer, int mid, int inner, const float *x, const float *s, const float *dy, float *dx, float *ds) {}
static void null_transpose(cx_backend *be, int batch, int a, int b, const float *x, float *y) {}
static void null_transpose_accumulate(cx_backend *be, int batch, int a, int b, const float *x, float *y) {}
static void null_copy_channels(cx_backend *be, int batch, int hw, int n_channels, const float *src, int src_channels, int src_offset, float *dst, int dst_channels, int dst_offset, int accumulate) {}
static void null_avgpool2d_forward(cx_backend *be, const cx_pool_shape *s, const float *x, float *y) {}
static void null_avgpool2d_backward(cx_backend *be, const cx_pool_shape *s, const float *dy, float *dx) {}
static void null_adaptive_avgpool2d_forward(cx_backend *be, const cx_pool_shape *s, const float *x, float *y) {}
static void null_adaptive_avgpool2d_backward(cx_backend *be, const cx_pool_shape *s, const float *dy, float *dx) {}
static void null_global_avgpool_forward(cx_backend *be, int planes, int hw, const float *x, float *y) {}
static void null_global_avgpool_backward(cx_backend *be, int planes, int hw, const float *dy, float *dx) {}
static void null_resize_bilinear_forward(cx_backend *be, const cx_pool_shape *s, const float *x, float *y) {}
static void null_resize_bilinear_backward(cx_backend *be, const cx_pool_shape *s, const float *dy, float *dx) {}
static void null_xca_forward(cx_backend *be, int batch, int tokens, int channels, int heads, const float *qkv, const float *temperature, float *out, float *saved) {}
static void null_xca_backward(cx_backend *be, int batch, int tokens, int channels, int heads, const float *qkv, const float *temperature, const float *saved, const float *dout, float *dqkv, float *dtemperature) {}
static void null_posenc_fourier(cx_backend *be, int hidden, float temperature, int h, int w, float *out) {}
static void null_structure_loss_forward(cx_backend *be, int batch, int h, int w, const float *logits, const float *target, float *loss, float *saved) {}
static void null_structure_loss_backward(cx_backend *be, int batch, int h, int w, const float *logits, const float *target, const float *saved, const float *dloss, float *dlogits) {}
static void *null_alloc(cx_backend *be, size_t bytes) { return NULL; }
static void null_free(cx_backend *be, void *ptr) {}
static cx_status null_sync(cx_backend *be) { return CX_OK; }

static cx_backend null_backend = {
    .name = "plan",
    .zero = null_zero,
    .copy = null_copy,
    .upload = null_upload,
    .download = null_download,
    .conv2d_forward = null_conv2d_forward,
    .conv2d_backward = null_conv2d_backward,
    .linear_forward = null_linear_forward,
    .linear_backward = null_linear_backward,
    .layernorm_forward = null_layernorm_forward,
    .layernorm_backward = null_layernorm_backward,
    .layernorm2d_forward = null_layernorm2d_forward,
    .layernorm2d_backward = null_layernorm2d_backward,
    .l2norm_forward = null_l2norm_forward,
    .l2norm_backward = null_l2norm_backward,
    .gelu_forward = null_gelu_forward,
    .gelu_backward = null_gelu_backward,
    .sigmoid_forward = null_sigmoid_forward,
    .sigmoid_backward = null_sigmoid_backward,
    .softmax_forward = null_softmax_forward,
    .softmax_backward = null_softmax_backward,
    .add = null_add,
    .axpy = null_axpy,
    .mul_forward = null_mul_forward,
    .mul_backward = null_mul_backward,
    .affine = null_affine,
    .scale_mid_forward = null_scale_mid_forward,
    .scale_mid_backward = null_scale_mid_backward,
    .scale_outer_inner_forward = null_scale_outer_inner_forward,
    .scale_outer_inner_backward = null_scale_outer_inner_backward,
    .transpose = null_transpose,
    .transpose_accumulate = null_transpose_accumulate,
    .copy_channels = null_copy_channels,
    .avgpool2d_forward = null_avgpool2d_forward,
    .avgpool2d_backward = null_avgpool2d_backward,
    .adaptive_avgpool2d_forward = null_adaptive_avgpool2d_forward,
    .adaptive_avgpool2d_backward = null_adaptive_avgpool2d_backward,
    .global_avgpool_forward = null_global_avgpool_forward,
    .global_avgpool_backward = null_global_avgpool_backward,
    .resize_bilinear_forward = null_resize_bilinear_forward,
    .resize_bilinear_backward = null_resize_bilinear_backward,
    .xca_forward = null_xca_forward,
    .xca_backward = null_xca_backward,
    .posenc_fourier = null_posenc_fourier,
    .structure_loss_forward = null_structure_loss_forward,
    .structure_loss_backward = null_structure_loss_backward,
    .alloc = null_alloc,
    .free = null_free,
    .sync = null_sync,
};

cx_backend *cx_backend_null(void) { return &null_backend; }
