/* Runtime cases for tests/test_emu.py (see emu_cases.cu): launch checks, copies, streams,
 * events and the device the emulator reports. Each prints key=value lines. */
#include <stdio.h>
#include <string.h>

#include "launch.cuh"

static void show(const char *what, cudaError_t status) {
    printf("%s=%s\n", what, cudaGetErrorName(status));
    if (status != cudaSuccess)
        printf("%s_message=%s\n", what, cx_emu_last_message());
    cudaGetLastError(); /* each check starts clean */
}

__global__ void fill(float *p, float value) { p[threadIdx.x] = value; }

__global__ void fill_dynamic(float *p) {
    CX_DYNAMIC_SHARED(float, scratch);
    scratch[threadIdx.x] = 2.0f;
    p[threadIdx.x] = scratch[threadIdx.x];
}

static void launch_checks(void) {
    float *p;
    cudaMalloc(&p, 64 * sizeof(float));
    CX_LAUNCH(fill, 1, 2048)(p, 1.0f);
    show("block_2048", cudaGetLastError());
    CX_LAUNCH(fill, dim3(1, 70000), 32)(p, 1.0f);
    show("grid_y_70000", cudaGetLastError());
    CX_LAUNCH(fill, 0, 32)(p, 1.0f);
    show("grid_0", cudaGetLastError());
    CX_LAUNCH(fill_dynamic, 1, 32, 49152)(p);
    show("shared_48k", cudaGetLastError());
    CX_LAUNCH(fill_dynamic, 1, 32, 49153)(p);
    show("shared_48k_plus_1", cudaGetLastError());
    show("optin_64k", cudaFuncSetAttribute(fill_dynamic, cudaFuncAttributeMaxDynamicSharedMemorySize, 65536));
    CX_LAUNCH(fill_dynamic, 1, 32, 65536)(p);
    show("shared_64k_opted_in", cudaGetLastError());
    show("optin_64k_plus_1",
         cudaFuncSetAttribute(fill_dynamic, cudaFuncAttributeMaxDynamicSharedMemorySize, 65537));
    CX_LAUNCH(fill, 1, 32, 0, (cudaStream_t)0x1234)(p, 1.0f);
    show("bad_stream", cudaGetLastError());
    cudaFree(p);
}

static void copy_checks(void) {
    float *a, *b, host[64] = {0};
    cudaMalloc(&a, 64 * sizeof(float));
    cudaMalloc(&b, 64 * sizeof(float));
    show("h2d", cudaMemcpy(a, host, sizeof host, cudaMemcpyHostToDevice));
    show("h2d_past_end", cudaMemcpy(a + 1, host, sizeof host, cudaMemcpyHostToDevice));
    show("d2h_as_h2d", cudaMemcpy(host, a, sizeof host, cudaMemcpyHostToDevice));
    show("d2d", cudaMemcpy(b, a, sizeof host, cudaMemcpyDeviceToDevice));
    show("default", cudaMemcpy(host, b, sizeof host, cudaMemcpyDefault));
    show("memset_past_end", cudaMemset(a + 60, 0, 5 * sizeof(float)));
    show("memset_host", cudaMemset(host, 0, sizeof host));
    show("free_inside", cudaFree(a + 1));
    /* a memset then a kernel then a copy back: the values arrive */
    cudaMemset(a, 0, sizeof host);
    CX_LAUNCH(fill, 1, 32)(a, 3.0f);
    cudaMemcpy(host, a, sizeof host, cudaMemcpyDeviceToHost);
    printf("filled=%g,%g,%g\n", host[0], host[31], host[32]);
    size_t free_bytes = 0, total = 0;
    cudaMemGetInfo(&free_bytes, &total);
    printf("in_use=%zu\n", total - free_bytes);
    show("free", cudaFree(a));
    show("free_twice", cudaFree(a));
    cudaFree(b);
}

static void stream_checks(void) {
    cudaStream_t stream;
    cudaEvent_t start, end;
    float *p, host[32];
    show("stream_create", cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
    show("event_create", cudaEventCreate(&start));
    cudaEventCreate(&end);
    cudaMalloc(&p, sizeof host);
    show("record", cudaEventRecord(start, stream));
    CX_LAUNCH(fill, 1, 32, 0, stream)(p, 5.0f);
    show("launch_on_stream", cudaGetLastError());
    show("async_copy", cudaMemcpyAsync(host, p, sizeof host, cudaMemcpyDeviceToHost, stream));
    cudaEventRecord(end, stream);
    show("wait_event", cudaStreamWaitEvent(0, end, 0));
    show("sync", cudaStreamSynchronize(stream));
    float ms = -1.0f;
    show("elapsed", cudaEventElapsedTime(&ms, start, end));
    printf("elapsed_nonnegative=%d\nvalue=%g\n", ms >= 0.0f, host[7]);
    show("stream_destroy", cudaStreamDestroy(stream));
    show("stream_destroy_twice", cudaStreamDestroy(stream));
    show("sync_dead_stream", cudaStreamSynchronize(stream));
    cudaEventDestroy(start);
    show("record_dead_event", cudaEventRecord(start, 0));
    cudaEventDestroy(end);
    cudaFree(p);
}

static void device_checks(void) {
    cudaDeviceProp prop;
    int count = 0, value = 0;
    cudaGetDeviceCount(&count);
    cudaGetDeviceProperties(&prop, 0);
    cudaDeviceGetAttribute(&value, cudaDevAttrMaxSharedMemoryPerBlockOptin, 0);
    printf("count=%d\nname=%s\ncc=%d.%d\nsms=%d\nwarp=%d\nshared_per_block=%zu\noptin=%d\n", count,
           prop.name, prop.major, prop.minor, prop.multiProcessorCount, prop.warpSize,
           prop.sharedMemPerBlock, value);
    show("set_device_1", cudaSetDevice(1));
}

int run_runtime_case(const char *name) {
    if (!strcmp(name, "launch_checks"))
        launch_checks();
    else if (!strcmp(name, "copy_checks"))
        copy_checks();
    else if (!strcmp(name, "stream_checks"))
        stream_checks();
    else if (!strcmp(name, "device_checks"))
        device_checks();
    else
        return 0;
    return 1;
}
