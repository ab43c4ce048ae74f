/* TEMPORARY scaffold: weak no-op definitions of every CPU op so the extension links
 * while the op families are being written. Each real definition overrides its stub.
 * This file is deleted once every op exists. */
#include "cpu_ops.h"

__attribute__((weak)) void * cpu_alloc(cx_backend *be, size_t bytes) { return 0; }
__attribute__((weak)) void cpu_free(cx_backend *be, void *ptr) {}
__attribute__((weak)) void cpu_zero(cx_backend *be, float *ptr, size_t n) {}
__attribute__((weak)) void cpu_copy(cx_backend *be, float *dst, const float *src, size_t n) {}
__attribute__((weak)) void cpu_upload(cx_backend *be, float *dst, const float *host, size_t n) {}
__attribute__((weak)) void cpu_download(cx_backend *be, float *host, const float *src, size_t n) {}
__attribute__((weak)) cx_status cpu_sync(cx_backend *be) { return CX_OK; }
__attribute__((weak)) void cpu_conv2d_forward(cx_backend *be, const cx_conv_shape *s, const float *x, const float *w, const float *bias, float *y) {}
__attribute__((weak)) void cpu_conv2d_backward(cx_backend *be, const cx_conv_shape *s, const float *x, const float *w, const float *dy, float *dx, float *dw, float *dbias) {}
__attribute__((weak)) void cpu_linear_forward(cx_backend *be, int rows, int in_features, int out_features, const float *x, const float *w, const float *bias, float *y) {}
__attribute__((weak)) void cpu_linear_backward(cx_backend *be, int rows, int in_features, int out_features, const float *x, const float *w, const float *dy, float *dx, float *dw, float *dbias) {}
__attribute__((weak)) void cpu_layernorm_forward(cx_backend *be, int rows, int cols, float eps, const float *x, const float *weight, const float *bias, float *y, float *saved) {}
__attribute__((weak)) void cpu_layernorm_backward(cx_backend *be, int rows, int cols, const float *x, const float *weight, const float *saved, const float *dy, float *dx, float *dweight, float *dbias) {}
__attribute__((weak)) void cpu_layernorm2d_forward(cx_backend *be, int batch, int channels, int hw, float eps, const float *x, const float *weight, const float *bias, float *y, float *saved) {}
__attribute__((weak)) void cpu_layernorm2d_backward(cx_backend *be, int batch, int channels, int hw, const float *x, const float *weight, const float *saved, const float *dy, float *dx, float *dweight, float *dbias) {}
__attribute__((weak)) void cpu_l2norm_forward(cx_backend *be, int rows, int cols, float eps, const float *x, float *y, float *saved) {}
__attribute__((weak)) void cpu_l2norm_backward(cx_backend *be, int rows, int cols, float eps, const float *x, const float *saved, const float *dy, float *dx) {}
__attribute__((weak)) void cpu_gelu_forward(cx_backend *be, size_t n, const float *x, float *y) {}
__attribute__((weak)) void cpu_gelu_backward(cx_backend *be, size_t n, const float *x, const float *dy, float *dx) {}
__attribute__((weak)) void cpu_sigmoid_forward(cx_backend *be, size_t n, const float *x, float *y) {}
__attribute__((weak)) void cpu_sigmoid_backward(cx_backend *be, size_t n, const float *y, const float *dy, float *dx) {}
__attribute__((weak)) void cpu_softmax_forward(cx_backend *be, int rows, int cols, const float *x, float *y) {}
__attribute__((weak)) void cpu_softmax_backward(cx_backend *be, int rows, int cols, const float *y, const float *dy, float *dx) {}
__attribute__((weak)) void cpu_add(cx_backend *be, size_t n, const float *a, const float *b, float *y) {}
__attribute__((weak)) void cpu_axpy(cx_backend *be, size_t n, float alpha, const float *x, float *y) {}
__attribute__((weak)) void cpu_mul_forward(cx_backend *be, size_t n, const float *a, const float *b, float *y) {}
__attribute__((weak)) void cpu_mul_backward(cx_backend *be, size_t n, const float *a, const float *b, const float *dy, float *da, float *db) {}
__attribute__((weak)) void cpu_affine(cx_backend *be, size_t n, float alpha, float beta, const float *x, float *y) {}
__attribute__((weak)) void cpu_scale_mid_forward(cx_backend *be, int outer, int mid, int inner, const float *x, const float *s, float *y) {}
__attribute__((weak)) void cpu_scale_mid_backward(cx_backend *be, int outer, int mid, int inner, const float *x, const float *s, const float *dy, float *dx, float *ds) {}
__attribute__((weak)) void cpu_scale_outer_inner_forward(cx_backend *be, int outer, int mid, int inner, const float *x, const float *s, float *y) {}
__attribute__((weak)) void cpu_scale_outer_inner_backward(cx_backend *be, int outer, int mid, int inner, const float *x, const float *s, const float *dy, float *dx, float *ds) {}
__attribute__((weak)) void cpu_transpose(cx_backend *be, int batch, int a, int b, const float *x, float *y) {}
__attribute__((weak)) void cpu_transpose_accumulate(cx_backend *be, int batch, int a, int b, const float *x, float *y) {}
__attribute__((weak)) void cpu_copy_channels(cx_backend *be, int batch, int hw, int n_channels, const float *src, int src_channels, int src_offset, float *dst, int dst_channels, int dst_offset, int accumulate) {}
__attribute__((weak)) void cpu_avgpool2d_forward(cx_backend *be, const cx_pool_shape *s, const float *x, float *y) {}
__attribute__((weak)) void cpu_avgpool2d_backward(cx_backend *be, const cx_pool_shape *s, const float *dy, float *dx) {}
__attribute__((weak)) void cpu_adaptive_avgpool2d_forward(cx_backend *be, const cx_pool_shape *s, const float *x, float *y) {}
__attribute__((weak)) void cpu_adaptive_avgpool2d_backward(cx_backend *be, const cx_pool_shape *s, const float *dy, float *dx) {}
__attribute__((weak)) void cpu_global_avgpool_forward(cx_backend *be, int planes, int hw, const float *x, float *y) {}
__attribute__((weak)) void cpu_global_avgpool_backward(cx_backend *be, int planes, int hw, const float *dy, float *dx) {}
__attribute__((weak)) void cpu_resize_bilinear_forward(cx_backend *be, const cx_pool_shape *s, const float *x, float *y) {}
__attribute__((weak)) void cpu_resize_bilinear_backward(cx_backend *be, const cx_pool_shape *s, const float *dy, float *dx) {}
__attribute__((weak)) void cpu_xca_forward(cx_backend *be, int batch, int tokens, int channels, int heads, const float *qkv, const float *temperature, float *out, float *saved) {}
__attribute__((weak)) void cpu_xca_backward(cx_backend *be, int batch, int tokens, int channels, int heads, const float *qkv, const float *temperature, const float *saved, const float *dout, float *dqkv, float *dtemperature) {}
__attribute__((weak)) void cpu_posenc_fourier(cx_backend *be, int hidden, float temperature, int h, int w, float *out) {}
__attribute__((weak)) void cpu_structure_loss_forward(cx_backend *be, int batch, int h, int w, const float *logits, const float *target, float *loss, float *saved) {}
__attribute__((weak)) void cpu_structure_loss_backward(cx_backend *be, int batch, int h, int w, const float *logits, const float *target, const float *saved, const float *dloss, float *dlogits) {}
