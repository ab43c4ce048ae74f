/* The planning backend: every op does nothing. Models run their forward and backward
 * code once against it with a counting arena (arena.h) to learn how much activation
 * memory a (batch, size, mode) needs, so one definition of the model also plans it.
 * A recording copy (cx_backend_null_recording) also notes every op called, so a model
 * learns which ops it needs from the same code. */
#include "ops.h"

#include <string.h>

static void note(cx_backend *be, cx_op_id op) {
    if (be->impl)
        ((cx_op_set *)be->impl)->has[op] = 1;
}

#define CX_OP(name, params) static void null_##name params { note(be, CX_OP_##name); }
#include "op_list.h"
#undef CX_OP

static void null_zero(cx_backend *be, float *ptr, size_t n) {}
static void null_copy(cx_backend *be, float *dst, const float *src, size_t n) {}
static void null_upload(cx_backend *be, float *dst, const float *host, size_t n) {}
static void null_download(cx_backend *be, float *host, const float *src, size_t n) {}
static void *null_alloc(cx_backend *be, size_t bytes) { return NULL; }
static void null_free(cx_backend *be, void *ptr) {}
static cx_status null_sync(cx_backend *be) { return CX_OK; }
static int null_supports(const cx_backend *be, cx_op_id op) { return op >= 0 && op < CX_OP_COUNT; }

static cx_backend null_backend = {
    .name = "plan",
    .alloc = null_alloc,
    .free = null_free,
    .zero = null_zero,
    .copy = null_copy,
    .upload = null_upload,
    .download = null_download,
    .sync = null_sync,
    .supports = null_supports,
#define CX_OP(name, params) .name = null_##name,
#include "op_list.h"
#undef CX_OP
};

cx_backend *cx_backend_null(void) { return &null_backend; }

void cx_backend_null_recording(cx_backend *be, cx_op_set *used) {
    *be = null_backend;
    be->impl = used;
}
