/* The emulator's runtime: errors, the device (a T4), streams, events and the checks of a
 * launch before its blocks run (docs/emulator.md). */
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <atomic>
#include <map>
#include <set>
#include <string>

#include "emu_internal.h"

namespace cx_emu {
namespace {

cudaError_t last_error = cudaSuccess;
cudaError_t message_code = cudaSuccess; /* the code the message below belongs to */
char message[2048];
thread_local char described[2400]; /* cudaGetErrorString's answer with the message */
int current_device;
std::set<const void *> streams, events;
std::map<const void *, double> event_times; /* ms on the host clock when recorded */
std::map<const void *, size_t> shared_limits;

struct error_name {
    cudaError_t code;
    const char *name, *text;
};
const error_name ERRORS[] = {
    {cudaSuccess, "cudaSuccess", "no error"},
    {cudaErrorInvalidValue, "cudaErrorInvalidValue", "invalid argument"},
    {cudaErrorMemoryAllocation, "cudaErrorMemoryAllocation", "out of memory"},
    {cudaErrorInitializationError, "cudaErrorInitializationError", "initialization error"},
    {cudaErrorInvalidConfiguration, "cudaErrorInvalidConfiguration", "invalid configuration argument"},
    {cudaErrorInvalidDevicePointer, "cudaErrorInvalidDevicePointer", "invalid device pointer"},
    {cudaErrorInvalidMemcpyDirection, "cudaErrorInvalidMemcpyDirection", "invalid copy direction for memcpy"},
    {cudaErrorInsufficientDriver, "cudaErrorInsufficientDriver", "CUDA driver version is insufficient for CUDA runtime version"},
    {cudaErrorNoDevice, "cudaErrorNoDevice", "no CUDA-capable device is detected"},
    {cudaErrorInvalidDevice, "cudaErrorInvalidDevice", "invalid device ordinal"},
    {cudaErrorInvalidResourceHandle, "cudaErrorInvalidResourceHandle", "invalid resource handle"},
    {cudaErrorNotReady, "cudaErrorNotReady", "device not ready"},
    {cudaErrorIllegalAddress, "cudaErrorIllegalAddress", "an illegal memory access was encountered"},
    {cudaErrorLaunchOutOfResources, "cudaErrorLaunchOutOfResources", "too many resources requested for launch"},
    {cudaErrorNoKernelImageForDevice, "cudaErrorNoKernelImageForDevice", "no kernel image is available for execution on the device"},
    {cudaErrorLaunchFailure, "cudaErrorLaunchFailure", "unspecified launch failure"},
    {cudaErrorNotSupported, "cudaErrorNotSupported", "operation not supported"},
    {cudaErrorUnknown, "cudaErrorUnknown", "unknown error"},
};

const error_name *lookup(cudaError_t code) {
    for (const error_name &e : ERRORS)
        if (e.code == code)
            return &e;
    return nullptr;
}

double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
}

cudaError_t check_dims(const char *name, dim3 grid, dim3 block) {
    unsigned long long threads = (unsigned long long)block.x * block.y * block.z;
    if (!block.x || !block.y || !block.z || block.x > 1024 || block.y > 1024 || block.z > 64 ||
        threads > CX_EMU_MAX_THREADS)
        return fail(cudaErrorInvalidConfiguration,
                    "kernel '%s': block (%u,%u,%u) is outside the device's limits (each of x, y "
                    "at most 1024, z at most 64, at most %d threads in all, none 0)",
                    name, block.x, block.y, block.z, CX_EMU_MAX_THREADS);
    if (!grid.x || !grid.y || !grid.z || grid.x > 2147483647u || grid.y > 65535 || grid.z > 65535)
        return fail(cudaErrorInvalidConfiguration,
                    "kernel '%s': grid (%u,%u,%u) is outside the device's limits (x at most "
                    "2^31-1, y and z at most 65535, none 0)",
                    name, grid.x, grid.y, grid.z);
    return cudaSuccess;
}

} // namespace

std::recursive_mutex &big_lock(void) {
    static std::recursive_mutex lock;
    return lock;
}

cudaError_t vfail(cudaError_t code, const char *fmt, va_list args) {
    std::lock_guard<std::recursive_mutex> hold(big_lock());
    if (last_error == cudaSuccess)
        last_error = code;
    vsnprintf(message, sizeof message, fmt, args);
    message_code = code;
    return code;
}

cudaError_t fail(cudaError_t code, const char *fmt, ...) {
    va_list args;
    va_start(args, fmt);
    vfail(code, fmt, args);
    va_end(args);
    return code;
}

static int (*hook_pending)(cudaStream_t);
static void (*hook_finish)(cudaStream_t);

void set_stream_hooks(int (*pending)(cudaStream_t), void (*finish)(cudaStream_t)) {
    hook_pending = pending;
    hook_finish = finish;
}

int stream_work_pending(cudaStream_t stream) { return hook_pending ? hook_pending(stream) : 0; }

void stream_work_finish(cudaStream_t stream) {
    if (hook_finish)
        hook_finish(stream);
}

int stream_valid(cudaStream_t stream) {
    return !stream || stream == cudaStreamLegacy || stream == cudaStreamPerThread ||
           streams.count(stream);
}

size_t dynamic_shared_limit(const void *kernel) {
    auto it = shared_limits.find(kernel);
    return it == shared_limits.end() ? CX_EMU_SHARED_DEFAULT : it->second;
}

cudaError_t launch(const char *name, const void *kernel, dim3 grid, dim3 block, size_t shared_bytes,
                   cudaStream_t stream, const kernel_call *call) {
    stream_work_finish(stream);
    std::lock_guard<std::recursive_mutex> hold(big_lock());
    /* CODEXT_EMU_NO_KERNEL_IMAGE=1: the library was "built" for other GPUs (tests of the
     * backend's probe at creation) */
    const char *no_image = getenv("CODEXT_EMU_NO_KERNEL_IMAGE");
    if (no_image && strcmp(no_image, "1") == 0)
        return fail(cudaErrorNoKernelImageForDevice, "kernel '%s': no kernel image for this "
                    "device (CODEXT_EMU_NO_KERNEL_IMAGE=1)", name);
    cudaError_t status = check_dims(name, grid, block);
    if (status != cudaSuccess)
        return status;
    size_t limit = dynamic_shared_limit(kernel);
    if (shared_bytes > limit)
        return fail(cudaErrorInvalidValue,
                    "kernel '%s': %zu bytes of dynamic shared memory requested, the limit is %zu "
                    "(%d by default, up to %d with cudaFuncSetAttribute)",
                    name, shared_bytes, limit, CX_EMU_SHARED_DEFAULT, CX_EMU_SHARED_OPTIN);
    if (!stream_valid(stream))
        return fail(cudaErrorInvalidResourceHandle, "kernel '%s': stream %p is not a live stream",
                    name, (void *)stream);
    device_memory_open();
    status = run_grid(name, grid, block, shared_bytes, call);
    device_memory_close();
    return status;
}

std::atomic<long> host_waits[2];

void count_host_wait(int event) { host_waits[event ? 1 : 0]++; }

} // namespace cx_emu

long codext_emu_host_waits(int events) { return cx_emu::host_waits[events ? 1 : 0].load(); }

using namespace cx_emu;

const char *cx_emu_last_message(void) {
    std::lock_guard<std::recursive_mutex> hold(big_lock());
    return message_code == cudaSuccess ? "" : message;
}

cudaError_t cudaGetLastError(void) {
    std::lock_guard<std::recursive_mutex> hold(big_lock());
    cudaError_t code = last_error;
    last_error = cudaSuccess;
    return code;
}

cudaError_t cudaPeekAtLastError(void) {
    std::lock_guard<std::recursive_mutex> hold(big_lock());
    return last_error;
}

const char *cudaGetErrorName(cudaError_t error) {
    const error_name *e = lookup(error);
    return e ? e->name : "cudaErrorUnknown";
}

const char *cudaGetErrorString(cudaError_t error) {
    std::lock_guard<std::recursive_mutex> hold(big_lock());
    const error_name *e = lookup(error);
    const char *text = e ? e->text : "unrecognized error code";
    if (error == cudaSuccess || error != message_code)
        return text;
    snprintf(described, sizeof described, "%s: %s [CUDA emulator]", text, message);
    return described;
}

/* Devices this process sees: CODEXT_EMU_DEVICES (1..8, default 1), so that a test can start
 * one data-parallel worker per "GPU". Each is the same emulated T4 (one memory, one queue):
 * a process uses one of them, as a worker does. */
static int device_count(void) {
    const char *text = getenv("CODEXT_EMU_DEVICES");
    int n = text ? atoi(text) : 1;
    return n >= 1 && n <= 8 ? n : 1;
}

/* The driver's CUDA version: CODEXT_EMU_DRIVER (e.g. 11080; 0: no driver installed),
 * else 12.8, Kaggle's. Below the runtime's own (CUDART_VERSION), the runtime refuses to
 * start as CUDA's does, so that tests can see the error a too-old driver gives. */
static int driver_version(void) {
    const char *text = getenv("CODEXT_EMU_DRIVER");
    if (!text || !*text || strspn(text, "0123456789") != strlen(text) || strlen(text) > 6)
        return 12080;
    return atoi(text);
}

cudaError_t cudaGetDeviceCount(int *count) {
    if (!count)
        return fail(cudaErrorInvalidValue, "cudaGetDeviceCount: NULL count");
    *count = 0;
    if (driver_version() < CUDART_VERSION)
        return fail(cudaErrorInsufficientDriver, "cudaGetDeviceCount: the driver supports "
                    "CUDA %d (CODEXT_EMU_DRIVER), the runtime is %d", driver_version(),
                    CUDART_VERSION);
    *count = device_count();
    return cudaSuccess;
}

cudaError_t cudaSetDevice(int device) {
    if (device < 0 || device >= device_count())
        return fail(cudaErrorInvalidDevice, "cudaSetDevice(%d): the emulator has %d device(s) "
                    "(CODEXT_EMU_DEVICES)", device, device_count());
    current_device = device;
    return cudaSuccess;
}

cudaError_t cudaGetDevice(int *device) {
    if (!device)
        return fail(cudaErrorInvalidValue, "cudaGetDevice: NULL device");
    *device = current_device;
    return cudaSuccess;
}

cudaError_t cudaGetDeviceProperties(cudaDeviceProp *prop, int device) {
    if (!prop)
        return fail(cudaErrorInvalidValue, "cudaGetDeviceProperties: NULL prop");
    if (device < 0 || device >= device_count())
        return fail(cudaErrorInvalidDevice, "cudaGetDeviceProperties(%d): the emulator has %d "
                    "device(s) (CODEXT_EMU_DEVICES)", device, device_count());
    memset(prop, 0, sizeof *prop);
    /* a T4 (sm_75); CODEXT_EMU_SM=80 (two or three digits) reports another architecture,
     * so tests reach what depends on it (bf16 needs sm_80) */
    const char *sm = getenv("CODEXT_EMU_SM");
    int arch = sm && strlen(sm) >= 2 && strlen(sm) <= 3 && strspn(sm, "0123456789") == strlen(sm)
                   ? atoi(sm) : 75;
    prop->major = arch / 10;
    prop->minor = arch % 10;
    if (arch == 75)
        snprintf(prop->name, sizeof prop->name, "Tesla T4 (CUDA emulator)");
    else
        snprintf(prop->name, sizeof prop->name, "sm_%d GPU (CUDA emulator)", arch);
    size_t free_bytes = 0;
    cudaMemGetInfo(&free_bytes, &prop->totalGlobalMem);
    prop->sharedMemPerBlock = CX_EMU_SHARED_DEFAULT;
    prop->regsPerBlock = 65536;
    prop->warpSize = CX_EMU_WARP;
    prop->maxThreadsPerBlock = CX_EMU_MAX_THREADS;
    prop->maxThreadsDim[0] = 1024;
    prop->maxThreadsDim[1] = 1024;
    prop->maxThreadsDim[2] = 64;
    prop->maxGridSize[0] = 2147483647;
    prop->maxGridSize[1] = 65535;
    prop->maxGridSize[2] = 65535;
    prop->clockRate = 1590000;
    prop->totalConstMem = 65536;
    prop->multiProcessorCount = 40;
    prop->memoryClockRate = 5001000;
    prop->memoryBusWidth = 256;
    prop->l2CacheSize = 4194304;
    prop->maxThreadsPerMultiProcessor = 1024;
    prop->sharedMemPerMultiprocessor = 65536;
    prop->regsPerMultiprocessor = 65536;
    prop->sharedMemPerBlockOptin = CX_EMU_SHARED_OPTIN;
    prop->concurrentKernels = 1;
    prop->asyncEngineCount = 3;
    prop->unifiedAddressing = 1;
    return cudaSuccess;
}

cudaError_t cudaDeviceGetAttribute(int *value, cudaDeviceAttr attr, int device) {
    cudaDeviceProp prop;
    cudaError_t status = cudaGetDeviceProperties(&prop, device);
    if (status != cudaSuccess)
        return status;
    if (!value)
        return fail(cudaErrorInvalidValue, "cudaDeviceGetAttribute: NULL value");
    switch (attr) {
    case cudaDevAttrMaxThreadsPerBlock: *value = prop.maxThreadsPerBlock; break;
    case cudaDevAttrMaxSharedMemoryPerBlock: *value = (int)prop.sharedMemPerBlock; break;
    case cudaDevAttrWarpSize: *value = prop.warpSize; break;
    case cudaDevAttrMultiProcessorCount: *value = prop.multiProcessorCount; break;
    case cudaDevAttrComputeCapabilityMajor: *value = prop.major; break;
    case cudaDevAttrComputeCapabilityMinor: *value = prop.minor; break;
    case cudaDevAttrMaxSharedMemoryPerBlockOptin: *value = (int)prop.sharedMemPerBlockOptin; break;
    default:
        return fail(cudaErrorInvalidValue, "cudaDeviceGetAttribute: attribute %d is not emulated", (int)attr);
    }
    return cudaSuccess;
}

cudaError_t cudaDeviceSynchronize(void) {
    count_host_wait(0);
    stream_work_finish(0);
    return cudaSuccess;
}

cudaError_t cudaDriverGetVersion(int *version) {
    if (!version)
        return fail(cudaErrorInvalidValue, "cudaDriverGetVersion: NULL version");
    *version = driver_version();
    return cudaSuccess;
}

cudaError_t cudaRuntimeGetVersion(int *version) {
    if (!version)
        return fail(cudaErrorInvalidValue, "cudaRuntimeGetVersion: NULL version");
    *version = CUDART_VERSION;
    return cudaSuccess;
}

cudaError_t cx_emu_func_set_attribute(const void *kernel, cudaFuncAttribute attr, int value) {
    std::lock_guard<std::recursive_mutex> hold(big_lock());
    if (attr == cudaFuncAttributePreferredSharedMemoryCarveout)
        return cudaSuccess;
    if (attr != cudaFuncAttributeMaxDynamicSharedMemorySize)
        return fail(cudaErrorInvalidValue, "cudaFuncSetAttribute: attribute %d is not emulated", (int)attr);
    if (value < 0 || value > CX_EMU_SHARED_OPTIN)
        return fail(cudaErrorInvalidValue,
                    "cudaFuncSetAttribute: %d bytes of dynamic shared memory; the device allows 0..%d",
                    value, CX_EMU_SHARED_OPTIN);
    shared_limits[kernel] = (size_t)value;
    return cudaSuccess;
}

/* ---- streams and events: work has finished when its call returns ---- */

cudaError_t cudaStreamCreateWithFlags(cudaStream_t *stream, unsigned flags) {
    std::lock_guard<std::recursive_mutex> hold(big_lock());
    (void)flags;
    if (!stream)
        return fail(cudaErrorInvalidValue, "cudaStreamCreate: NULL stream");
    *stream = reinterpret_cast<cudaStream_t>(new char[1]);
    streams.insert(*stream);
    return cudaSuccess;
}

cudaError_t cudaStreamCreate(cudaStream_t *stream) { return cudaStreamCreateWithFlags(stream, 0); }

cudaError_t cudaStreamDestroy(cudaStream_t stream) {
    std::lock_guard<std::recursive_mutex> hold(big_lock());
    if (!streams.erase(stream))
        return fail(cudaErrorInvalidResourceHandle, "cudaStreamDestroy: %p is not a live stream",
                    (void *)stream);
    delete[] reinterpret_cast<char *>(stream);
    return cudaSuccess;
}

cudaError_t cudaStreamSynchronize(cudaStream_t stream) {
    count_host_wait(0);
    stream_work_finish(stream);
    std::lock_guard<std::recursive_mutex> hold(big_lock());
    return stream_valid(stream) ? cudaSuccess
                                : fail(cudaErrorInvalidResourceHandle,
                                       "cudaStreamSynchronize: %p is not a live stream", (void *)stream);
}

/* cudaErrorNotReady (not recorded as an error, as CUDA does) while a library's work on the
 * stream is pending; else cudaSuccess (all of it has finished; the stream was checked above). */
cudaError_t cudaStreamQuery(cudaStream_t stream) {
    {
        std::lock_guard<std::recursive_mutex> hold(big_lock());
        if (!stream_valid(stream))
            return fail(cudaErrorInvalidResourceHandle, "cudaStreamQuery: %p is not a live stream",
                        (void *)stream);
    }
    if (stream_work_pending(stream))
        return cudaErrorNotReady;
    stream_work_finish(stream); /* a query is no wait: everything else has finished */
    return cudaSuccess;
}

cudaError_t cudaStreamWaitEvent(cudaStream_t stream, cudaEvent_t event, unsigned flags) {
    std::lock_guard<std::recursive_mutex> hold(big_lock());
    (void)flags;
    if (!stream_valid(stream))
        return fail(cudaErrorInvalidResourceHandle, "cudaStreamWaitEvent: %p is not a live stream",
                    (void *)stream);
    if (!events.count(event))
        return fail(cudaErrorInvalidResourceHandle, "cudaStreamWaitEvent: %p is not a live event",
                    (void *)event);
    return cudaSuccess;
}

cudaError_t cudaEventCreateWithFlags(cudaEvent_t *event, unsigned flags) {
    std::lock_guard<std::recursive_mutex> hold(big_lock());
    (void)flags;
    if (!event)
        return fail(cudaErrorInvalidValue, "cudaEventCreate: NULL event");
    *event = reinterpret_cast<cudaEvent_t>(new char[1]);
    events.insert(*event);
    return cudaSuccess;
}

cudaError_t cudaEventCreate(cudaEvent_t *event) { return cudaEventCreateWithFlags(event, 0); }

cudaError_t cudaEventDestroy(cudaEvent_t event) {
    std::lock_guard<std::recursive_mutex> hold(big_lock());
    if (!events.erase(event))
        return fail(cudaErrorInvalidResourceHandle, "cudaEventDestroy: %p is not a live event",
                    (void *)event);
    event_times.erase(event);
    delete[] reinterpret_cast<char *>(event);
    return cudaSuccess;
}

cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t stream) {
    stream_work_finish(stream);
    std::lock_guard<std::recursive_mutex> hold(big_lock());
    if (!events.count(event))
        return fail(cudaErrorInvalidResourceHandle, "cudaEventRecord: %p is not a live event",
                    (void *)event);
    if (!stream_valid(stream))
        return fail(cudaErrorInvalidResourceHandle, "cudaEventRecord: %p is not a live stream",
                    (void *)stream);
    event_times[event] = now_ms();
    return cudaSuccess;
}

static cudaError_t event_done(cudaEvent_t event, const char *what) {
    std::lock_guard<std::recursive_mutex> hold(big_lock());
    return events.count(event) ? cudaSuccess
                               : fail(cudaErrorInvalidResourceHandle, "%s: %p is not a live event",
                                      what, (void *)event);
}

cudaError_t cudaEventSynchronize(cudaEvent_t event) {
    count_host_wait(1);
    return event_done(event, "cudaEventSynchronize");
}

cudaError_t cudaEventQuery(cudaEvent_t event) { return event_done(event, "cudaEventQuery"); }

cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t start, cudaEvent_t end) {
    std::lock_guard<std::recursive_mutex> hold(big_lock());
    if (!ms)
        return fail(cudaErrorInvalidValue, "cudaEventElapsedTime: NULL ms");
    auto a = event_times.find(start), b = event_times.find(end);
    if (a == event_times.end() || b == event_times.end())
        return fail(cudaErrorInvalidResourceHandle,
                    "cudaEventElapsedTime: an event is not live or was never recorded");
    *ms = (float)(b->second - a->second);
    return cudaSuccess;
}
