/* The CUDA backend, loaded lazily.
 *
 * The CUDA ops live in codext/libcodext_cuda.so (built from kernels/ by setup.py), not
 * in codext._C: `import codext` must never load a CUDA library, because a notebook
 * process shares its address space with torch and may have no GPU driver at all. The
 * library is opened with dlopen() the first time a caller asks for a CUDA backend (a GPU
 * worker, or the GPU tests) and stays loaded for the life of the process.
 *
 * Two halves share this header:
 *   - the loader (cuda_loader.c, compiled into _C, plain C): finds the library next to
 *     the loaded _C module (dladdr), opens it and resolves its one exported entry point;
 *   - the library (kernels/, C++/CUDA): exports cx_cuda_get_api(), which returns the
 *     table cx_cuda_api below.
 * The library has no copy of _C's error state: the loader hands it _C's cx_fail through
 * cx_cuda_config so that device errors land in the message Python raises. */
#ifndef CX_CUDA_LOADER_H
#define CX_CUDA_LOADER_H

#include "cx.h"
#include "../ops/ops.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Bumped whenever cx_cuda_api, cx_cuda_config or cx_backend change shape, so a stale
 * libcodext_cuda.so next to a newer _C is refused with a clear message. */
#define CX_CUDA_ABI_VERSION 2
#define CX_CUDA_ENTRY_POINT "cx_cuda_get_api"
#define CX_CUDA_LIBRARY_NAME "libcodext_cuda.so"

typedef cx_status (*cx_fail_fn)(cx_status code, const char *fmt, ...);

typedef struct {
    int device;        /* CUDA device ordinal */
    int deterministic; /* 1: only bit-reproducible algorithms (cuDNN, cuBLAS atomics off) */
    int allow_tf32;    /* 0 (default): fp32 products stay fp32 (no TF32 tensor cores) */
    cx_fail_fn fail;   /* the caller's cx_fail: receives every error message */
} cx_cuda_config;

typedef struct {
    int abi_version;    /* CX_CUDA_ABI_VERSION of the library */
    size_t backend_size;/* sizeof(cx_backend) the library was compiled with */
    const char *build;  /* "CUDA 13.0, cuDNN 9.19.0, archs sm_75" (compile time) */
    /* Number of usable devices. Fails (through `fail`) with cudaGetDeviceCount's error
     * text when there is no driver or no device; never creates a context. */
    cx_status (*device_count)(cx_fail_fn fail, int *count);
    /* Driver, runtime, cuBLAS and cuDNN versions and the device's name and arch, as one
     * line of text (creates no context). */
    cx_status (*runtime_info)(cx_fail_fn fail, int device, char *text, size_t size);
    /* A CUDA backend on config->device: its own stream, cuBLAS and cuDNN handles. Sets
     * the calling thread's current device; its ops run on the calling thread's current
     * device, so a process drives one device (one worker per GPU). */
    cx_status (*backend_create)(const cx_cuda_config *config, cx_backend **out);
    void (*backend_destroy)(cx_backend *be); /* waits for queued work; NULL is fine */
} cx_cuda_api;

/* The library's one exported symbol. NULL when abi_version differs from its own. */
typedef const cx_cuda_api *(*cx_cuda_get_api_fn)(int abi_version);

/* ---- the loader (in _C) ------------------------------------------------------------- */

/* Opens libcodext_cuda.so once (later calls return the cached result, success or
 * failure). The library is looked up next to the _C module, or at $CODEXT_CUDA_LIBRARY
 * when set. Errors (CX_ERUNTIME) say which of these happened: a CPU-only build (no
 * library), a dlopen failure (with dlerror's text: usually a missing libcudnn.so.9 or
 * libcublas), or a library from another build (ABI mismatch). */
cx_status cx_cuda_load(const cx_cuda_api **api);

/* 1 when the library loads and at least one CUDA device is usable, else 0 with the reason
 * written to `reason` (also on success: a line naming the library and the devices).
 * Loads CUDA libraries into this process: for GPU workers and tests, never the notebook. */
int cx_cuda_available(char *reason, size_t size);

/* Creates and destroys a CUDA backend through the loaded library. */
cx_status cx_cuda_backend_create(int device, int deterministic, int allow_tf32,
                                 cx_backend **out);
void cx_cuda_backend_destroy(cx_backend *be);

/* A process-wide CUDA backend for the tests: device $CODEXT_CUDA_DEVICE (default 0),
 * deterministic, no TF32. Created on first use and kept until the process exits. */
cx_status cx_cuda_shared_backend(cx_backend **out);

#ifdef __cplusplus
}
#endif
#endif
