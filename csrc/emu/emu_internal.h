/* Shared between the emulator's sources (not for kernel code). */
#ifndef CX_EMU_INTERNAL_H
#define CX_EMU_INTERNAL_H

#include <stdarg.h>

#include <mutex>

#include "emu_device.h"

namespace cx_emu {
/* Held by every runtime call that reads or changes emulator state: launches, copies and
 * memory management from several host threads run one at a time. */
std::recursive_mutex &big_lock(void);

/* Records `code` with a message (printf-style) as the last error; returns code. */
cudaError_t fail(cudaError_t code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
cudaError_t vfail(cudaError_t code, const char *fmt, va_list args);
/* 1 when `stream` is 0, a legacy/per-thread handle or a live stream. */
int stream_valid(cudaStream_t stream);
/* The dynamic shared memory limit set for `kernel` (cudaFuncSetAttribute), else the
 * default. */
size_t dynamic_shared_limit(const void *kernel);

/* Device memory (emu_memory.cc). open: every live allocation readable and writable (for
 * a launch); close: all back to PROT_NONE. */
void device_memory_open(void);
void device_memory_close(void);
size_t device_bytes_in_use(void);
/* For the emulated cuBLAS and cuDNN (emu_cublas.cc, emu_cudnn.cc), which read and write
 * device memory from host code between device_memory_open() and device_memory_close():
 * 1 when [p, p + bytes) lies inside the data of one live allocation; else 0, with the
 * reason in `why` (naming `what`). Records no CUDA error. */
int device_range_ok(const void *p, size_t bytes, const char *what, char *why, size_t why_size);
/* 1 when [a, a + a_bytes) and [b, b + b_bytes) share a byte. */
static inline int ranges_overlap(const void *a, size_t a_bytes, const void *b, size_t b_bytes) {
    uintptr_t x = (uintptr_t)a, y = (uintptr_t)b;
    return a_bytes && b_bytes && x < y + b_bytes && y < x + a_bytes;
}

/* Work that a library outside the runtime queued on a stream: the emulated NCCL's
 * collectives (emu_nccl.cc), which wait for other processes and so cannot finish inside
 * the call that queued them. `pending(stream)` makes what progress it can without
 * waiting and returns 1 while such work on `stream` is unfinished (stream 0 or the legacy
 * stream: on any stream); `finish(stream)` waits until it has finished (or its
 * communicator failed or was aborted). The runtime calls these without holding
 * big_lock(): cudaStreamQuery answers cudaErrorNotReady while work is pending, and
 * copies, memsets, launches, event records and synchronizations finish it first, so
 * the stream's order holds. */
void set_stream_hooks(int (*pending)(cudaStream_t), void (*finish)(cudaStream_t));
int stream_work_pending(cudaStream_t stream);
void stream_work_finish(cudaStream_t stream);

/* Counts one host wait for the GPU (codext_emu_host_waits below): event 0, a stream or
 * device synchronization or a synchronous cudaMemcpy; event 1, cudaEventSynchronize. */
void count_host_wait(int event);

/* Runs the blocks of a checked launch (emu_sched.cc); returns cudaSuccess or the error
 * it recorded. */
cudaError_t run_grid(const char *name, dim3 grid, dim3 block, size_t shared_bytes,
                     const kernel_call *call);
} // namespace cx_emu

/* Host waits so far in this process (tests: how often a training step waits for the GPU).
 * events 0: the waits that drain a stream (synchronizations, synchronous copies): a real
 * GPU idles while the host then queues more work. events 1: waits for one event
 * (cudaEventSynchronize), which need not drain the stream that records it. Exported from
 * the emulated library only. */
extern "C" __attribute__((visibility("default"))) long codext_emu_host_waits(int events);
/* heuristics 0: cuDNN convolutions run so far (forward, backward data and filter): tests
 * see whether a backend used cuDNN or our direct kernels (a deterministic backend when the
 * emulated cuDNN offers no deterministic algorithm, CODEXT_EMU_CUDNN_NONDETERMINISTIC=1).
 * heuristics 1: algorithm queries (cudnnGetConvolution*Algorithm_v7): once per shape and
 * direction when the backend caches its choices. */
extern "C" __attribute__((visibility("default"))) long codext_emu_cudnn_calls(int heuristics);

#endif
