/* Prototypes of the CPU backend's ops: one per field of cx_backend (ops.h), where
 * the shapes and conventions are documented. Implementations live in one file per op
 * family: backend_cpu.c (memory), conv.c, linear.c (and gemm.c), norm.c, pointwise.c, pool.c,
 * attention.c. backend_cpu.c fills the table. */
#ifndef CX_CPU_OPS_H
#define CX_CPU_OPS_H

#include "../ops/ops.h"

/* Hot loops marked VECTOR_CLONES are compiled for AVX2 and for the baseline ISA and
 * picked at load time. Both clones do the same IEEE operations in the same order
 * (-std=c11 turns off FMA contraction), so results do not depend on the machine. */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define VECTOR_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define VECTOR_CLONES
#endif

void * cpu_alloc(cx_backend *be, size_t bytes);
void cpu_free(cx_backend *be, void *ptr);
void cpu_zero(cx_backend *be, float *ptr, size_t n);
void cpu_copy(cx_backend *be, float *dst, const float *src, size_t n);
void cpu_upload(cx_backend *be, float *dst, const float *host, size_t n);
void cpu_download(cx_backend *be, float *host, const float *src, size_t n);
cx_status cpu_sync(cx_backend *be);
void cpu_conv2d_forward(cx_backend *be, const cx_conv_shape *s, const float *x, const float *w, const float *bias, float *y);
void cpu_conv2d_backward(cx_backend *be, const cx_conv_shape *s, const float *x, const float *w, const float *dy, float *dx, float *dw, float *dbias);
void cpu_linear_forward(cx_backend *be, int rows, int in_features, int out_features, const float *x, const float *w, const float *bias, float *y);
void cpu_linear_backward(cx_backend *be, int rows, int in_features, int out_features, const float *x, const float *w, const float *dy, float *dx, float *dw, float *dbias);
void cpu_layernorm_forward(cx_backend *be, int rows, int cols, float eps, const float *x, const float *weight, const float *bias, float *y, float *saved);
void cpu_layernorm_backward(cx_backend *be, int rows, int cols, const float *x, const float *weight, const float *saved, const float *dy, float *dx, float *dweight, float *dbias);
void cpu_layernorm2d_forward(cx_backend *be, int batch, int channels, int hw, float eps, const float *x, const float *weight, const float *bias, float *y, float *saved);
void cpu_layernorm2d_backward(cx_backend *be, int batch, int channels, int hw, const float *x, const float *weight, const float *saved, const float *dy, float *dx, float *dweight, float *dbias);
void cpu_l2norm_forward(cx_backend *be, int rows, int cols, float eps, const float *x, float *y, float *saved);
void cpu_l2norm_backward(cx_backend *be, int rows, int cols, float eps, const float *x, const float *saved, const float *dy, float *dx);
void cpu_gelu_forward(cx_backend *be, size_t n, const float *x, float *y);
void cpu_gelu_backward(cx_backend *be, size_t n, const float *x, const float *dy, float *dx);
void cpu_sigmoid_forward(cx_backend *be, size_t n, const float *x, float *y);
void cpu_sigmoid_backward(cx_backend *be, size_t n, const float *y, const float *dy, float *dx);
void cpu_softmax_forward(cx_backend *be, int rows, int cols, const float *x, float *y);
void cpu_softmax_backward(cx_backend *be, int rows, int cols, const float *y, const float *dy, float *dx);
void cpu_add(cx_backend *be, size_t n, const float *a, const float *b, float *y);
void cpu_axpy(cx_backend *be, size_t n, float alpha, const float *x, float *y);
void cpu_mul_forward(cx_backend *be, size_t n, const float *a, const float *b, float *y);
void cpu_mul_backward(cx_backend *be, size_t n, const float *a, const float *b, const float *dy, float *da, float *db);
void cpu_affine(cx_backend *be, size_t n, float alpha, float beta, const float *x, float *y);
void cpu_scale_mid_forward(cx_backend *be, int outer, int mid, int inner, const float *x, const float *s, float *y);
void cpu_scale_mid_backward(cx_backend *be, int outer, int mid, int inner, const float *x, const float *s, const float *dy, float *dx, float *ds);
void cpu_scale_outer_inner_forward(cx_backend *be, int outer, int mid, int inner, const float *x, const float *s, float *y);
void cpu_scale_outer_inner_backward(cx_backend *be, int outer, int mid, int inner, const float *x, const float *s, const float *dy, float *dx, float *ds);
void cpu_transpose(cx_backend *be, int batch, int a, int b, const float *x, float *y);
void cpu_transpose_accumulate(cx_backend *be, int batch, int a, int b, const float *x, float *y);
void cpu_copy_channels(cx_backend *be, int batch, int hw, int n_channels, const float *src, int src_channels, int src_offset, float *dst, int dst_channels, int dst_offset, int accumulate);
void cpu_avgpool2d_forward(cx_backend *be, const cx_pool_shape *s, const float *x, float *y);
void cpu_avgpool2d_backward(cx_backend *be, const cx_pool_shape *s, const float *dy, float *dx);
void cpu_adaptive_avgpool2d_forward(cx_backend *be, const cx_pool_shape *s, const float *x, float *y);
void cpu_adaptive_avgpool2d_backward(cx_backend *be, const cx_pool_shape *s, const float *dy, float *dx);
void cpu_global_avgpool_forward(cx_backend *be, int planes, int hw, const float *x, float *y);
void cpu_global_avgpool_backward(cx_backend *be, int planes, int hw, const float *dy, float *dx);
void cpu_resize_bilinear_forward(cx_backend *be, const cx_pool_shape *s, const float *x, float *y);
void cpu_resize_bilinear_backward(cx_backend *be, const cx_pool_shape *s, const float *dy, float *dx);
void cpu_xca_forward(cx_backend *be, int batch, int tokens, int channels, int heads, const float *qkv, const float *temperature, float *out, float *saved);
void cpu_xca_backward(cx_backend *be, int batch, int tokens, int channels, int heads, const float *qkv, const float *temperature, const float *saved, const float *dout, float *dqkv, float *dtemperature);
void cpu_posenc_fourier(cx_backend *be, int hidden, float temperature, int h, int w, float *out);
void cpu_structure_loss_forward(cx_backend *be, int batch, int h, int w, const float *logits, const float *target, float *loss, float *saved);
void cpu_structure_loss_backward(cx_backend *be, int batch, int h, int w, const float *logits, const float *target, const float *saved, const float *dloss, float *dlogits);

#endif
