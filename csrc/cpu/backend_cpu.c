/* The CPU backend: the table of csrc/cpu ops. */
#include "cpu_ops.h"
#include "cpu_error.h"

/* ---- memory: host memory, so copies are memcpy ---- */
#include <string.h>

void *cpu_alloc(cx_backend *be, size_t bytes) { return cx_aligned_alloc(bytes); }
void cpu_free(cx_backend *be, void *ptr) { cx_aligned_free(ptr); }
void cpu_zero(cx_backend *be, float *ptr, size_t n) { memset(ptr, 0, n * sizeof(float)); }
void cpu_copy(cx_backend *be, float *dst, const float *src, size_t n) {
    if (dst != src)
        memmove(dst, src, n * sizeof(float));
}
void cpu_upload(cx_backend *be, float *dst, const float *host, size_t n) { cpu_copy(be, dst, host, n); }
void cpu_download(cx_backend *be, float *host, const float *src, size_t n) { cpu_copy(be, host, src, n); }
/* The CPU ops run to completion on the calling thread: sync only reports their first
 * error (cpu_error.h). */
cx_status cpu_sync(cx_backend *be) { return cx_cpu_take_error(); }

static cx_backend cpu_backend = {
    .name = "cpu",
    .impl = 0,
    .alloc = cpu_alloc,
    .free = cpu_free,
    .zero = cpu_zero,
    .copy = cpu_copy,
    .upload = cpu_upload,
    .download = cpu_download,
    .sync = cpu_sync,
    .conv2d_forward = cpu_conv2d_forward,
    .conv2d_backward = cpu_conv2d_backward,
    .linear_forward = cpu_linear_forward,
    .linear_backward = cpu_linear_backward,
    .layernorm_forward = cpu_layernorm_forward,
    .layernorm_backward = cpu_layernorm_backward,
    .layernorm2d_forward = cpu_layernorm2d_forward,
    .layernorm2d_backward = cpu_layernorm2d_backward,
    .l2norm_forward = cpu_l2norm_forward,
    .l2norm_backward = cpu_l2norm_backward,
    .gelu_forward = cpu_gelu_forward,
    .gelu_backward = cpu_gelu_backward,
    .sigmoid_forward = cpu_sigmoid_forward,
    .sigmoid_backward = cpu_sigmoid_backward,
    .softmax_forward = cpu_softmax_forward,
    .softmax_backward = cpu_softmax_backward,
    .add = cpu_add,
    .axpy = cpu_axpy,
    .mul_forward = cpu_mul_forward,
    .mul_backward = cpu_mul_backward,
    .affine = cpu_affine,
    .scale_mid_forward = cpu_scale_mid_forward,
    .scale_mid_backward = cpu_scale_mid_backward,
    .scale_outer_inner_forward = cpu_scale_outer_inner_forward,
    .scale_outer_inner_backward = cpu_scale_outer_inner_backward,
    .transpose = cpu_transpose,
    .transpose_accumulate = cpu_transpose_accumulate,
    .copy_channels = cpu_copy_channels,
    .avgpool2d_forward = cpu_avgpool2d_forward,
    .avgpool2d_backward = cpu_avgpool2d_backward,
    .adaptive_avgpool2d_forward = cpu_adaptive_avgpool2d_forward,
    .adaptive_avgpool2d_backward = cpu_adaptive_avgpool2d_backward,
    .global_avgpool_forward = cpu_global_avgpool_forward,
    .global_avgpool_backward = cpu_global_avgpool_backward,
    .resize_bilinear_forward = cpu_resize_bilinear_forward,
    .resize_bilinear_backward = cpu_resize_bilinear_backward,
    .xca_forward = cpu_xca_forward,
    .xca_backward = cpu_xca_backward,
    .posenc_fourier = cpu_posenc_fourier,
    .structure_loss_forward = cpu_structure_loss_forward,
    .structure_loss_backward = cpu_structure_loss_backward,
};

cx_backend *cx_backend_cpu(void) { return &cpu_backend; }
