/* The CPU backend: the table of csrc/cpu ops. */
#include "cpu_ops.h"
#include "cpu_error.h"

/* ---- memory: host memory, so copies are memcpy ---- */
#include <string.h>

static void *cpu_alloc(cx_backend *be, size_t bytes) { return cx_aligned_alloc(bytes); }
static void cpu_free(cx_backend *be, void *ptr) { cx_aligned_free(ptr); }
static void cpu_zero(cx_backend *be, float *ptr, size_t n) { memset(ptr, 0, n * sizeof(float)); }
static void cpu_copy(cx_backend *be, float *dst, const float *src, size_t n) {
    if (dst != src)
        memmove(dst, src, n * sizeof(float));
}
static void cpu_upload(cx_backend *be, float *dst, const float *host, size_t n) { cpu_copy(be, dst, host, n); }
static void cpu_download(cx_backend *be, float *host, const float *src, size_t n) { cpu_copy(be, host, src, n); }
/* The CPU ops run to completion on the calling thread: sync only reports their first
 * error (cpu_error.h). */
static cx_status cpu_sync(cx_backend *be) { return cx_cpu_take_error(); }

static int cpu_supports(const cx_backend *be, cx_op_id op) { return op >= 0 && op < CX_OP_COUNT; }

/* The CPU backend implements every op of the table. */
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
    .supports = cpu_supports,
#define CX_OP(name, params) .name = cpu_##name,
#include "../ops/op_list.h"
#undef CX_OP
};

cx_backend *cx_backend_cpu(void) { return &cpu_backend; }
