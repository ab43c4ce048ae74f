/* The emulator's device memory: cudaMalloc/cudaFree, copies and memsets, pinned host
 * memory.
 *
 * Each allocation is its own mapping: [guard page][pages of data][guard page]. The data
 * ends at the second guard page, rounded up to 256 bytes (cudaMalloc's alignment); the
 * bytes between the size asked for and that end are poisoned for AddressSanitizer, so a
 * kernel or copy that runs past the allocation is reported (by ASan in the slack, by a
 * SIGSEGV on the guard page). The data pages are PROT_NONE except while a kernel runs
 * (every allocation opens) or a copy or memset touches them (those allocations open). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <iterator>
#include <map>

#include "emu_internal.h"

#if defined(__SANITIZE_ADDRESS__)
#define CX_EMU_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define CX_EMU_ASAN 1
#endif
#endif
#ifdef CX_EMU_ASAN
#include <sanitizer/asan_interface.h>
#endif

namespace cx_emu {
namespace {

struct allocation {
    char *mapping;
    size_t mapping_bytes;
    char *data;
    size_t bytes;      /* asked for */
    size_t data_bytes; /* rounded up to 256 */
    size_t open_pages; /* bytes from the first data page to the second guard page */
};

/* by the address of their data */
std::map<uintptr_t, allocation> allocations;
size_t bytes_in_use;
const size_t T4_MEMORY = (size_t)15360 << 20; /* what a T4 reports: 15 GiB */

size_t page_size(void) { return (size_t)sysconf(_SC_PAGESIZE); }

void set_access(const allocation &a, int prot) {
    mprotect(a.mapping + page_size(), a.open_pages, prot);
}

/* The allocation whose mapping holds p (data, slack or guard pages), or NULL. */
const allocation *find(const void *p) {
    uintptr_t at = (uintptr_t)p;
    auto holds = [at](const allocation &a) {
        return at >= (uintptr_t)a.mapping && at < (uintptr_t)a.mapping + a.mapping_bytes;
    };
    auto it = allocations.upper_bound(at); /* its leading guard page may hold p */
    if (it != allocations.end() && holds(it->second))
        return &it->second;
    if (it != allocations.begin() && holds(std::prev(it)->second))
        return &std::prev(it)->second;
    return nullptr;
}

/* Checks that [p, p + bytes) lies in one allocation's data; records an error naming
 * `what` otherwise. */
int check_device_range(const allocation *a, const void *p, size_t bytes, const char *call,
                       const char *what) {
    uintptr_t at = (uintptr_t)p, begin = (uintptr_t)a->data, end = begin + a->bytes;
    if (at < begin || at > end) {
        fail(cudaErrorInvalidValue, "%s: %s %p is not inside the %zu-byte allocation at %p", call,
             what, p, a->bytes, (void *)a->data);
        return 0;
    }
    if (bytes > end - at) {
        fail(cudaErrorInvalidValue,
             "%s: %s range of %zu bytes at offset %zu runs %zu bytes past the end of its %zu-byte "
             "allocation at %p",
             call, what, bytes, (size_t)(at - begin), (size_t)(bytes - (end - at)), a->bytes,
             (void *)a->data);
        return 0;
    }
    return 1;
}

/* One side of a copy: 1 device, 0 host, -1 error (recorded). */
int classify(const void *p, size_t bytes, const char *call, const char *what, const allocation **out) {
    *out = find(p);
    if (!*out)
        return 0;
    return check_device_range(*out, p, bytes, call, what) ? 1 : -1;
}

} // namespace

void device_memory_open(void) {
    for (auto &entry : allocations)
        set_access(entry.second, PROT_READ | PROT_WRITE);
}

void device_memory_close(void) {
    for (auto &entry : allocations)
        set_access(entry.second, PROT_NONE);
}

size_t device_bytes_in_use(void) { return bytes_in_use; }

int device_range_ok(const void *p, size_t bytes, const char *what, char *why, size_t why_size) {
    std::lock_guard<std::recursive_mutex> hold(big_lock());
    const allocation *a = find(p);
    if (!a) {
        snprintf(why, why_size, "%s %p is not device memory (no live cudaMalloc allocation holds it)",
                 what, p);
        return 0;
    }
    uintptr_t at = (uintptr_t)p, begin = (uintptr_t)a->data, end = begin + a->bytes;
    if (at < begin || at > end) {
        snprintf(why, why_size, "%s %p is outside the %zu-byte allocation at %p", what, p, a->bytes,
                 (void *)a->data);
        return 0;
    }
    if (bytes > end - at) {
        snprintf(why, why_size,
                 "%s: %zu bytes at offset %zu run %zu bytes past the end of its %zu-byte "
                 "allocation at %p",
                 what, bytes, (size_t)(at - begin), (size_t)(bytes - (end - at)), a->bytes,
                 (void *)a->data);
        return 0;
    }
    return 1;
}

} // namespace cx_emu

using namespace cx_emu;

cudaError_t cudaMalloc(void **ptr, size_t bytes) {
    std::lock_guard<std::recursive_mutex> hold(big_lock());
    if (!ptr)
        return fail(cudaErrorInvalidValue, "cudaMalloc: the result pointer is NULL");
    *ptr = nullptr;
    if (bytes == 0)
        return cudaSuccess;
    size_t page = page_size();
    size_t data_bytes = (bytes + 255) / 256 * 256;
    if (data_bytes < bytes || data_bytes > T4_MEMORY - bytes_in_use)
        return fail(cudaErrorMemoryAllocation,
                    "cudaMalloc: %zu bytes do not fit in the emulated T4's %zu free bytes", bytes,
                    T4_MEMORY - bytes_in_use);
    size_t open_pages = (data_bytes + page - 1) / page * page;
    size_t mapping_bytes = open_pages + 2 * page;
    void *mapping = mmap(nullptr, mapping_bytes, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                         -1, 0);
    if (mapping == MAP_FAILED)
        return fail(cudaErrorMemoryAllocation, "cudaMalloc: mapping %zu bytes failed", mapping_bytes);
    allocation a;
    a.mapping = (char *)mapping;
    a.mapping_bytes = mapping_bytes;
    a.data = a.mapping + page + open_pages - data_bytes;
    a.bytes = bytes;
    a.data_bytes = data_bytes;
    a.open_pages = open_pages;
#ifdef CX_EMU_ASAN
    ASAN_POISON_MEMORY_REGION(a.mapping, mapping_bytes);
    ASAN_UNPOISON_MEMORY_REGION(a.data, bytes);
#endif
    allocations[(uintptr_t)a.data] = a;
    bytes_in_use += data_bytes;
    *ptr = a.data;
    return cudaSuccess;
}

cudaError_t cudaFree(void *ptr) {
    std::lock_guard<std::recursive_mutex> hold(big_lock());
    if (!ptr)
        return cudaSuccess;
    auto it = allocations.find((uintptr_t)ptr);
    if (it == allocations.end())
        return fail(cudaErrorInvalidDevicePointer,
                    "cudaFree: %p is not the start of a live device allocation", ptr);
    allocation a = it->second;
    allocations.erase(it);
    bytes_in_use -= a.data_bytes;
#ifdef CX_EMU_ASAN
    ASAN_UNPOISON_MEMORY_REGION(a.mapping, a.mapping_bytes);
#endif
    munmap(a.mapping, a.mapping_bytes);
    return cudaSuccess;
}

cudaError_t cudaMallocHost(void **ptr, size_t bytes) {
    if (!ptr)
        return fail(cudaErrorInvalidValue, "cudaMallocHost: the result pointer is NULL");
    *ptr = malloc(bytes ? bytes : 1);
    return *ptr ? cudaSuccess
                : fail(cudaErrorMemoryAllocation, "cudaMallocHost: %zu bytes failed", bytes);
}

cudaError_t cudaHostAlloc(void **ptr, size_t bytes, unsigned flags) {
    (void)flags;
    return cudaMallocHost(ptr, bytes);
}

cudaError_t cudaFreeHost(void *ptr) {
    free(ptr);
    return cudaSuccess;
}

cudaError_t cudaMemGetInfo(size_t *free_bytes, size_t *total_bytes) {
    std::lock_guard<std::recursive_mutex> hold(big_lock());
    if (free_bytes)
        *free_bytes = T4_MEMORY - bytes_in_use;
    if (total_bytes)
        *total_bytes = T4_MEMORY;
    return cudaSuccess;
}

static const char *const KIND_NAMES[] = {"cudaMemcpyHostToHost", "cudaMemcpyHostToDevice",
                                         "cudaMemcpyDeviceToHost", "cudaMemcpyDeviceToDevice",
                                         "cudaMemcpyDefault"};

cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind,
                            cudaStream_t stream) {
    stream_work_finish(stream);
    std::lock_guard<std::recursive_mutex> hold(big_lock());
    const char *call = "cudaMemcpy";
    if (!stream_valid(stream))
        return fail(cudaErrorInvalidResourceHandle, "%s: stream %p is not a live stream", call,
                    (void *)stream);
    if ((unsigned)kind > cudaMemcpyDefault)
        return fail(cudaErrorInvalidMemcpyDirection, "%s: direction %d is not a cudaMemcpyKind",
                    call, (int)kind);
    if (bytes == 0)
        return cudaSuccess;
    if (!dst || !src)
        return fail(cudaErrorInvalidValue, "%s: %s pointer is NULL", call, dst ? "source" : "destination");
    const allocation *da, *sa;
    int dst_device = classify(dst, bytes, call, "destination", &da);
    int src_device = classify(src, bytes, call, "source", &sa);
    if (dst_device < 0 || src_device < 0)
        return cudaErrorInvalidValue;
    if (kind != cudaMemcpyDefault && (dst_device != (kind == cudaMemcpyHostToDevice ||
                                                     kind == cudaMemcpyDeviceToDevice) ||
                                      src_device != (kind == cudaMemcpyDeviceToHost ||
                                                     kind == cudaMemcpyDeviceToDevice)))
        return fail(cudaErrorInvalidValue, "%s: %s, but the destination is %s memory and the source %s memory",
                    call, KIND_NAMES[kind], dst_device ? "device" : "host", src_device ? "device" : "host");
    if (da)
        set_access(*da, PROT_READ | PROT_WRITE);
    if (sa)
        set_access(*sa, PROT_READ | PROT_WRITE);
    memmove(dst, src, bytes);
    if (da)
        set_access(*da, PROT_NONE);
    if (sa)
        set_access(*sa, PROT_NONE);
    return cudaSuccess;
}

cudaError_t cudaMemcpy(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind) {
    count_host_wait(0);
    return cudaMemcpyAsync(dst, src, bytes, kind, 0);
}

cudaError_t cudaMemsetAsync(void *ptr, int value, size_t bytes, cudaStream_t stream) {
    stream_work_finish(stream);
    std::lock_guard<std::recursive_mutex> hold(big_lock());
    if (!stream_valid(stream))
        return fail(cudaErrorInvalidResourceHandle, "cudaMemset: stream %p is not a live stream",
                    (void *)stream);
    if (bytes == 0)
        return cudaSuccess;
    const allocation *a = find(ptr);
    if (!a)
        return fail(cudaErrorInvalidValue, "cudaMemset: %p is not device memory", ptr);
    if (!check_device_range(a, ptr, bytes, "cudaMemset", "destination"))
        return cudaErrorInvalidValue;
    set_access(*a, PROT_READ | PROT_WRITE);
    memset(ptr, value, bytes);
    set_access(*a, PROT_NONE);
    return cudaSuccess;
}

cudaError_t cudaMemset(void *ptr, int value, size_t bytes) { return cudaMemsetAsync(ptr, value, bytes, 0); }
