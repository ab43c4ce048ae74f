/* The CUDA emulator's device side: what kernel code uses (qualifiers, the built-in
 * indices, barriers, warp shuffles and votes, atomics, CUDA's extra math) and the launch
 * of a kernel on emulated threads (docs/emulator.md).
 *
 * Threads: the blocks of a launch run one after another; the threads of a block are
 * fibers on the launching host thread, started and resumed in the order CX_EMU_ORDER
 * chooses (forward, reverse, random:SEED). A thread runs until it finishes or waits at
 * __syncthreads or a warp operation; __syncthreads releases the block when every thread
 * of the block waits at that same call; a warp operation (__shfl*_sync, __ballot_sync,
 * __any_sync, __all_sync, __syncwarp) completes when every lane its mask names has
 * reached it with the same mask. Anything else (a thread that exited or waits elsewhere)
 * stops the launch with an error naming the kernel, the block and the call sites.
 *
 * Shared memory: static __shared__ variables (built with clang++) and the dynamic buffer
 * (CX_DYNAMIC_SHARED in kernels/launch.cuh) are filled with 0xFF bytes (a NaN in every
 * float and double) before each block. With g++, static __shared__ variables are plain
 * statics: still one copy for the block (blocks run one after another) but not refilled
 * (g++ drops the section attribute this needs from statics in function templates).
 *
 * Atomics are plain read-modify-writes: the threads of a launch never run at once. */
#ifndef CX_EMU_DEVICE_H
#define CX_EMU_DEVICE_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#include <tuple>
#include <utility>

#include "emu_runtime.h"

/* ---- qualifiers ---- */
#define __global__
#define __device__
#define __host__
#define __constant__
#define __forceinline__ inline
#define __noinline__ __attribute__((noinline))
#define __align__(n) __attribute__((aligned(n)))
#define __launch_bounds__(...)
#if defined(__clang__)
/* One section holds every static __shared__ variable; the emulator fills it with 0xFF
 * before each block (__start_/__stop_ symbols bound it). */
#define __shared__ static __attribute__((section("cx_emu_shared")))
#else
#define __shared__ static
#endif

namespace cx_emu {
/* The running thread's indices (set by the scheduler before it runs a thread). */
extern uint3 thread_idx, block_idx;
extern dim3 block_dim, grid_dim;

/* Waits at a __syncthreads (file:line names it in errors); returns how many threads of
 * the block passed a nonzero `predicate`. */
int syncthreads(int predicate, const char *file, int line);
/* The warp rendezvous: every lane in `mask` posts `value`; when all have, each gets the
 * 32 posted values in `all` (lanes outside the mask: 0). `op` names the call. */
void warp_exchange(unsigned mask, uint64_t value, uint64_t all[CX_EMU_WARP], const char *op,
                   const char *file, int line);
/* Stops the launch with an error (a misuse found inside a kernel); does not return. */
[[noreturn]] void kernel_error(const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
unsigned lane_id(void);
unsigned live_lanes(void); /* lanes of the calling warp that have not exited */
void *dynamic_shared(void);
long long clock_ticks(void);
} // namespace cx_emu

#define threadIdx (static_cast<const uint3 &>(::cx_emu::thread_idx))
#define blockIdx (static_cast<const uint3 &>(::cx_emu::block_idx))
#define blockDim (static_cast<const dim3 &>(::cx_emu::block_dim))
#define gridDim (static_cast<const dim3 &>(::cx_emu::grid_dim))
static constexpr int warpSize = CX_EMU_WARP;

/* ---- barriers and fences ---- */
static inline void __syncthreads(const char *file = __builtin_FILE(), int line = __builtin_LINE()) {
    cx_emu::syncthreads(0, file, line);
}
static inline int __syncthreads_count(int predicate, const char *file = __builtin_FILE(),
                                      int line = __builtin_LINE()) {
    return cx_emu::syncthreads(predicate != 0, file, line);
}
static inline int __syncthreads_and(int predicate, const char *file = __builtin_FILE(),
                                    int line = __builtin_LINE()) {
    return cx_emu::syncthreads(predicate != 0, file, line) == (int)(blockDim.x * blockDim.y * blockDim.z);
}
static inline int __syncthreads_or(int predicate, const char *file = __builtin_FILE(),
                                   int line = __builtin_LINE()) {
    return cx_emu::syncthreads(predicate != 0, file, line) > 0;
}
static inline void __threadfence(void) {}
static inline void __threadfence_block(void) {}
static inline long long clock64(void) { return cx_emu::clock_ticks(); }

/* ---- warp operations ---- */
namespace cx_emu {
template <class T> static inline uint64_t to_bits(T v) {
    static_assert(sizeof(T) <= 8, "warp operations move at most 8 bytes");
    uint64_t bits = 0;
    memcpy(&bits, &v, sizeof v);
    return bits;
}
template <class T> static inline T from_bits(uint64_t bits) {
    T v;
    memcpy(&v, &bits, sizeof v);
    return v;
}
/* Shuffle from `src` (a lane of the warp) or, when src is -1, keep the caller's value. */
template <class T>
static inline T shuffle(unsigned mask, T var, int src, int width, const char *op, const char *file,
                        int line) {
    uint64_t all[CX_EMU_WARP];
    if (width <= 0 || width > CX_EMU_WARP || (width & (width - 1)))
        kernel_error(file, line, "%s: width %d is not a power of two in 1..32", op, width);
    warp_exchange(mask, to_bits(var), all, op, file, line);
    if (src < 0)
        return var;
    if (!(mask >> src & 1u))
        kernel_error(file, line, "%s: lane %u reads lane %d, which the mask 0x%08x leaves out", op,
                     lane_id(), src, mask);
    return from_bits<T>(all[src]);
}
} // namespace cx_emu

template <class T>
static inline T __shfl_sync(unsigned mask, T var, int src_lane, int width = CX_EMU_WARP,
                            const char *file = __builtin_FILE(), int line = __builtin_LINE()) {
    int lane = (int)cx_emu::lane_id(), base = lane / width * width;
    return cx_emu::shuffle(mask, var, base + ((src_lane % width) + width) % width, width,
                           "__shfl_sync", file, line);
}
template <class T>
static inline T __shfl_up_sync(unsigned mask, T var, unsigned delta, int width = CX_EMU_WARP,
                               const char *file = __builtin_FILE(), int line = __builtin_LINE()) {
    int lane = (int)cx_emu::lane_id(), base = lane / width * width;
    int src = lane - (int)delta;
    return cx_emu::shuffle(mask, var, src >= base ? src : -1, width, "__shfl_up_sync", file, line);
}
template <class T>
static inline T __shfl_down_sync(unsigned mask, T var, unsigned delta, int width = CX_EMU_WARP,
                                 const char *file = __builtin_FILE(), int line = __builtin_LINE()) {
    int lane = (int)cx_emu::lane_id(), base = lane / width * width;
    int src = lane + (int)delta;
    return cx_emu::shuffle(mask, var, src < base + width ? src : -1, width, "__shfl_down_sync",
                           file, line);
}
template <class T>
static inline T __shfl_xor_sync(unsigned mask, T var, int lane_mask, int width = CX_EMU_WARP,
                                const char *file = __builtin_FILE(), int line = __builtin_LINE()) {
    int lane = (int)cx_emu::lane_id(), base = lane / width * width;
    int src = lane ^ lane_mask;
    /* a later group answers with the caller's own value, an earlier one with its lane's */
    return cx_emu::shuffle(mask, var, src < base + width ? src : -1, width, "__shfl_xor_sync",
                           file, line);
}
static inline unsigned __ballot_sync(unsigned mask, int predicate, const char *file = __builtin_FILE(),
                                     int line = __builtin_LINE()) {
    uint64_t all[CX_EMU_WARP];
    cx_emu::warp_exchange(mask, predicate != 0, all, "__ballot_sync", file, line);
    unsigned bits = 0;
    for (int lane = 0; lane < CX_EMU_WARP; lane++)
        if ((mask >> lane & 1u) && all[lane])
            bits |= 1u << lane;
    return bits;
}
static inline int __any_sync(unsigned mask, int predicate, const char *file = __builtin_FILE(),
                             int line = __builtin_LINE()) {
    uint64_t all[CX_EMU_WARP];
    cx_emu::warp_exchange(mask, predicate != 0, all, "__any_sync", file, line);
    for (int lane = 0; lane < CX_EMU_WARP; lane++)
        if ((mask >> lane & 1u) && all[lane])
            return 1;
    return 0;
}
static inline int __all_sync(unsigned mask, int predicate, const char *file = __builtin_FILE(),
                             int line = __builtin_LINE()) {
    uint64_t all[CX_EMU_WARP];
    cx_emu::warp_exchange(mask, predicate != 0, all, "__all_sync", file, line);
    for (int lane = 0; lane < CX_EMU_WARP; lane++)
        if ((mask >> lane & 1u) && !all[lane])
            return 0;
    return 1;
}
static inline void __syncwarp(unsigned mask = 0xffffffffu, const char *file = __builtin_FILE(),
                              int line = __builtin_LINE()) {
    uint64_t all[CX_EMU_WARP];
    cx_emu::warp_exchange(mask, 0, all, "__syncwarp", file, line);
}
static inline unsigned __activemask(void) { return cx_emu::live_lanes(); }

/* ---- atomics: return the old value ---- */
#define CX_EMU_ATOMIC(name, type, expr)                                                      \
    static inline type name(type *address, type val) {                                      \
        type old = *address;                                                                 \
        *address = (expr);                                                                   \
        return old;                                                                          \
    }
#define CX_EMU_ATOMIC_INTEGER(type)                                                          \
    CX_EMU_ATOMIC(atomicAdd, type, old + val)                                                \
    CX_EMU_ATOMIC(atomicSub, type, old - val)                                                \
    CX_EMU_ATOMIC(atomicExch, type, val)                                                     \
    CX_EMU_ATOMIC(atomicMin, type, val < old ? val : old)                                    \
    CX_EMU_ATOMIC(atomicMax, type, val > old ? val : old)                                    \
    CX_EMU_ATOMIC(atomicAnd, type, old &val)                                                 \
    CX_EMU_ATOMIC(atomicOr, type, old | val)                                                 \
    CX_EMU_ATOMIC(atomicXor, type, old ^ val)                                                \
    static inline type atomicCAS(type *address, type compare, type val) {                   \
        type old = *address;                                                                 \
        if (old == compare)                                                                  \
            *address = val;                                                                  \
        return old;                                                                          \
    }
CX_EMU_ATOMIC_INTEGER(int)
CX_EMU_ATOMIC_INTEGER(unsigned)
CX_EMU_ATOMIC_INTEGER(unsigned long long)
CX_EMU_ATOMIC(atomicAdd, float, old + val)
CX_EMU_ATOMIC(atomicExch, float, val)
CX_EMU_ATOMIC(atomicAdd, double, old + val)
/* atomicInc: old >= val ? 0 : old + 1; atomicDec: (old == 0 || old > val) ? val : old - 1 */
CX_EMU_ATOMIC(atomicInc, unsigned, old >= val ? 0u : old + 1u)
CX_EMU_ATOMIC(atomicDec, unsigned, (old == 0u || old > val) ? val : old - 1u)
#undef CX_EMU_ATOMIC_INTEGER
#undef CX_EMU_ATOMIC

/* ---- CUDA's math and bit functions beyond <math.h> ---- */
#define CX_EMU_MINMAX(type)                                                                  \
    static inline type min(type a, type b) { return b < a ? b : a; }                         \
    static inline type max(type a, type b) { return a < b ? b : a; }
CX_EMU_MINMAX(int)
CX_EMU_MINMAX(unsigned)
CX_EMU_MINMAX(long)
CX_EMU_MINMAX(unsigned long)
CX_EMU_MINMAX(long long)
CX_EMU_MINMAX(unsigned long long)
static inline float min(float a, float b) { return fminf(a, b); }
static inline float max(float a, float b) { return fmaxf(a, b); }
static inline double min(double a, double b) { return fmin(a, b); }
static inline double max(double a, double b) { return fmax(a, b); }
#undef CX_EMU_MINMAX
static inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
static inline double rsqrt(double x) { return 1.0 / sqrt(x); }
/* __expf, __logf, __powf, __sinf, __cosf, __tanhf: glibc's libm has them (exact forms) */
static inline float __fdividef(float x, float y) { return x / y; }
static inline float __saturatef(float x) { return x > 0.0f ? (x < 1.0f ? x : 1.0f) : 0.0f; }
static inline float __fmaf_rn(float a, float b, float c) { return fmaf(a, b, c); }
static inline float __fadd_rn(float a, float b) { return a + b; }
static inline float __fmul_rn(float a, float b) { return a * b; }
static inline float __fdiv_rn(float a, float b) { return a / b; }
static inline float __fsqrt_rn(float x) { return sqrtf(x); }
static inline float __frcp_rn(float x) { return 1.0f / x; }
static inline float normcdff(float x) { return 0.5f * erfcf(-x * 0.70710678118654752f); }
static inline int __float2int_rn(float x) { return (int)nearbyintf(x); }
static inline int __float2int_rz(float x) { return (int)x; }
static inline int __float2int_rd(float x) { return (int)floorf(x); }
static inline int __float2int_ru(float x) { return (int)ceilf(x); }
static inline int __float_as_int(float x) { return cx_emu::from_bits<int>(cx_emu::to_bits(x)); }
static inline unsigned __float_as_uint(float x) { return cx_emu::from_bits<unsigned>(cx_emu::to_bits(x)); }
static inline float __int_as_float(int x) { return cx_emu::from_bits<float>(cx_emu::to_bits(x)); }
static inline float __uint_as_float(unsigned x) { return cx_emu::from_bits<float>(cx_emu::to_bits(x)); }
static inline long long __double_as_longlong(double x) {
    return cx_emu::from_bits<long long>(cx_emu::to_bits(x));
}
static inline double __longlong_as_double(long long x) { return cx_emu::from_bits<double>(cx_emu::to_bits(x)); }
static inline int __popc(unsigned x) { return __builtin_popcount(x); }
static inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
static inline int __clz(int x) { return x ? __builtin_clz((unsigned)x) : 32; }
static inline int __clzll(long long x) { return x ? __builtin_clzll((unsigned long long)x) : 64; }
static inline int __ffs(int x) { return __builtin_ffs(x); }
static inline int __ffsll(long long x) { return __builtin_ffsll(x); }
static inline unsigned __brev(unsigned x) {
    unsigned r = 0;
    for (int i = 0; i < 32; i++, x >>= 1)
        r = (r << 1) | (x & 1u);
    return r;
}
template <class T> static inline T __ldg(const T *p) { return *p; }

/* ---- launching: CX_LAUNCH(kernel, grid, block[, shared_bytes[, stream]])(args...) ----
 * (kernels/launch.cuh) builds a launcher; calling it converts the arguments to the
 * kernel's parameter types as a call would, and every emulated thread gets its own copy. */
namespace cx_emu {
struct kernel_call {
    void (*run)(const kernel_call *self); /* runs the kernel body on the current thread */
};
/* Runs `call` on grid x block threads; returns (and records) the launch's error. */
cudaError_t launch(const char *name, const void *kernel, dim3 grid, dim3 block, size_t shared_bytes,
                   cudaStream_t stream, const kernel_call *call);

template <class... P> struct typed_call : kernel_call {
    void (*kernel)(P...);
    std::tuple<P...> args;
    typed_call(void (*k)(P...), P... a) : kernel_call{&typed_call::invoke}, kernel(k), args(a...) {}
    static void invoke(const kernel_call *self) {
        const typed_call *me = static_cast<const typed_call *>(self);
        std::tuple<P...> mine = me->args; /* each thread's parameters are its own */
        std::apply(me->kernel, mine);
    }
};

template <class... P> struct launcher {
    void (*kernel)(P...);
    const char *name;
    dim3 grid, block;
    size_t shared_bytes;
    cudaStream_t stream;
    void operator()(P... args) const {
        typed_call<P...> call(kernel, args...);
        launch(name, reinterpret_cast<const void *>(kernel), grid, block, shared_bytes, stream, &call);
    }
};

template <class... P>
static inline launcher<P...> make_launcher(void (*kernel)(P...), const char *name, dim3 grid,
                                           dim3 block, size_t shared_bytes = 0,
                                           cudaStream_t stream = 0) {
    return launcher<P...>{kernel, name, grid, block, shared_bytes, stream};
}
} // namespace cx_emu

#endif
