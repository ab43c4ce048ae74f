/* Kernels and host checks for tests/test_emu.py: each case runs on the CUDA emulator and
 * prints key=value lines that the test reads. Built as C++ (-x c++ -DCX_EMU) with the
 * emulator under AddressSanitizer and UBSan; the same source compiles with nvcc.
 *
 * Usage: emu_cases CASE   (CX_EMU_ORDER picks the thread order) */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <vector>

#include "launch.cuh"

#define BLOCK 256

static void report(const char *what, cudaError_t status) {
    printf("%s=%s\n", what, cudaGetErrorName(status));
    if (status != cudaSuccess)
        printf("%s_message=%s\n", what, cudaGetErrorString(status));
}

/* ---- reductions: in [n] -> out[blockIdx.x], one block of BLOCK threads per chunk ---- */

__global__ void reduce_static(int n, const float *in, float *out) {
    __shared__ float partial[BLOCK];
    int i = blockIdx.x * BLOCK + threadIdx.x;
    partial[threadIdx.x] = i < n ? in[i] : 0.0f;
    __syncthreads();
    for (int half = BLOCK / 2; half > 0; half /= 2) {
        if ((int)threadIdx.x < half)
            partial[threadIdx.x] += partial[threadIdx.x + half];
        __syncthreads();
    }
    if (threadIdx.x == 0)
        out[blockIdx.x] = partial[0];
}

__global__ void reduce_dynamic(int n, const float *in, float *out) {
    CX_DYNAMIC_SHARED(float, partial);
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    partial[threadIdx.x] = i < n ? in[i] : 0.0f;
    __syncthreads();
    for (int half = (int)blockDim.x / 2; half > 0; half /= 2) {
        if ((int)threadIdx.x < half)
            partial[threadIdx.x] += partial[threadIdx.x + half];
        __syncthreads();
    }
    if (threadIdx.x == 0)
        out[blockIdx.x] = partial[0];
}

/* The same reduction with its barriers dropped: a race the emulator must expose. */
__global__ void reduce_no_barrier(int n, const float *in, float *out) {
    CX_DYNAMIC_SHARED(float, partial);
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    partial[threadIdx.x] = i < n ? in[i] : 0.0f;
    for (int half = (int)blockDim.x / 2; half > 0; half /= 2) {
        if ((int)threadIdx.x < half)
            partial[threadIdx.x] += partial[threadIdx.x + half];
    }
    if (threadIdx.x == 0)
        out[blockIdx.x] = partial[0];
}

static void run_reduction(int which) {
    const int n = 1000, blocks = (n + BLOCK - 1) / BLOCK;
    std::vector<float> host(n), sums(blocks);
    double expected = 0.0;
    for (int i = 0; i < n; i++) {
        host[i] = (float)((i * 37) % 101 - 50); /* integers: every order sums exactly */
        expected += host[i];
    }
    float *in, *out;
    cudaMalloc(&in, n * sizeof(float));
    cudaMalloc(&out, blocks * sizeof(float));
    cudaMemcpy(in, host.data(), n * sizeof(float), cudaMemcpyHostToDevice);
    if (which == 0)
        CX_LAUNCH(reduce_static, blocks, BLOCK)(n, in, out);
    else if (which == 1)
        CX_LAUNCH(reduce_dynamic, blocks, BLOCK, BLOCK * sizeof(float))(n, in, out);
    else
        CX_LAUNCH(reduce_no_barrier, blocks, BLOCK, BLOCK * sizeof(float))(n, in, out);
    report("launch", cudaGetLastError());
    cudaMemcpy(sums.data(), out, blocks * sizeof(float), cudaMemcpyDeviceToHost);
    double total = 0.0;
    for (float s : sums)
        total += s;
    printf("sum=%.9g\nexpected=%.9g\n", total, expected);
    cudaFree(in);
    cudaFree(out);
}

/* ---- barriers reached by part of the block ---- */

__global__ void barrier_in_branch(float *out) {
    if (threadIdx.x < 16)
        __syncthreads();
    out[threadIdx.x] = 1.0f;
}

__global__ void barrier_at_two_sites(float *out) {
    if (threadIdx.x % 2)
        __syncthreads();
    else
        __syncthreads();
    out[threadIdx.x] = 1.0f;
}

static void run_divergent(int which) {
    float *out;
    cudaMalloc(&out, 32 * sizeof(float));
    if (which == 0)
        CX_LAUNCH(barrier_in_branch, 1, 32)(out);
    else
        CX_LAUNCH(barrier_at_two_sites, 1, 32)(out);
    report("launch", cudaGetLastError());
    /* the emulator goes on working after a failed launch */
    CX_LAUNCH(reduce_static, 1, BLOCK)(0, out, out);
    report("next_launch", cudaGetLastError());
    cudaFree(out);
}

/* ---- warp operations: out[tid * 8 + k] for 8 results per thread ---- */

__global__ void warp_ops(int *out) {
    int lane = threadIdx.x % 32, tid = threadIdx.x;
    int *mine = out + tid * 8;
    mine[0] = __shfl_sync(0xffffffffu, lane * 10, 3);          /* broadcast lane 3 */
    int sum = lane;
    for (int offset = 16; offset > 0; offset /= 2)
        sum += __shfl_down_sync(0xffffffffu, sum, offset);
    mine[1] = sum;                                            /* lane 0: 0 + ... + 31 */
    int butterfly = lane;
    for (int offset = 16; offset > 0; offset /= 2)
        butterfly += __shfl_xor_sync(0xffffffffu, butterfly, offset);
    mine[2] = butterfly;                                      /* every lane: 496 */
    mine[3] = __shfl_up_sync(0xffffffffu, lane, 1);           /* lane - 1, lane 0 keeps 0 */
    mine[4] = (int)__ballot_sync(0xffffffffu, lane % 3 == 0); /* lanes 0, 3, ..., 30 */
    mine[5] = __any_sync(0xffffffffu, lane == 7) + 2 * __all_sync(0xffffffffu, lane < 32);
    mine[6] = __shfl_xor_sync(0xffffffffu, lane, 1, 16);      /* pairs swap */
    mine[7] = 0;
    if (lane < 16) /* a half-warp exchange names only its lanes */
        mine[7] = __shfl_sync(0x0000ffffu, lane, 15 - lane);
}

__global__ void warp_divergent(int *out) {
    int lane = threadIdx.x % 32;
    if (lane < 16)
        out[lane] = __shfl_xor_sync(0xffffffffu, lane, 1);
}

static void run_warp(int which) {
    const int threads = 64;
    int *out;
    cudaMalloc(&out, threads * 8 * sizeof(int));
    cudaMemset(out, 0, threads * 8 * sizeof(int));
    if (which == 1) {
        CX_LAUNCH(warp_divergent, 1, threads)(out);
        report("launch", cudaGetLastError());
        cudaFree(out);
        return;
    }
    CX_LAUNCH(warp_ops, 1, threads)(out);
    report("launch", cudaGetLastError());
    std::vector<int> got(threads * 8);
    cudaMemcpy(got.data(), out, got.size() * sizeof(int), cudaMemcpyDeviceToHost);
    int wrong = 0;
    for (int tid = 0; tid < threads; tid++) {
        int lane = tid % 32, expect[8];
        expect[0] = 30;
        expect[1] = 496; /* lane 0 only: the other lanes' tree sums are partial */
        expect[2] = 496;
        expect[3] = lane == 0 ? 0 : lane - 1;
        expect[4] = 0;
        for (int k = 0; k < 32; k += 3)
            expect[4] |= 1 << k;
        expect[5] = 1 + 2;
        expect[6] = lane ^ 1;
        expect[7] = lane < 16 ? 15 - lane : 0;
        for (int k = 0; k < 8; k++) {
            if (k == 1 && lane != 0)
                continue;
            if (got[tid * 8 + k] != expect[k]) {
                printf("mismatch=thread %d result %d: %d, expected %d\n", tid, k, got[tid * 8 + k], expect[k]);
                wrong++;
            }
        }
    }
    printf("wrong=%d\n", wrong);
    cudaFree(out);
}

/* ---- atomics ---- */

__global__ void atomics(int *counter, float *fsum, int *maximum, unsigned *wrap, int *cas_sum) {
    int tid = blockIdx.x * blockDim.x + threadIdx.x;
    atomicAdd(counter, 1);
    atomicAdd(fsum, 0.5f);
    atomicMax(maximum, (tid * 7919) % 1000);
    atomicInc(wrap, 9u); /* counts 0..9, then wraps to 0 */
    int old = *cas_sum, seen;
    while ((seen = atomicCAS(cas_sum, old, old + tid)) != old)
        old = seen;
}

static void run_atomics(void) {
    int *counter, *maximum, *cas_sum;
    float *fsum;
    unsigned *wrap;
    cudaMalloc(&counter, sizeof(int));
    cudaMalloc(&maximum, sizeof(int));
    cudaMalloc(&cas_sum, sizeof(int));
    cudaMalloc(&fsum, sizeof(float));
    cudaMalloc(&wrap, sizeof(unsigned));
    cudaMemset(counter, 0, sizeof(int));
    cudaMemset(maximum, 0, sizeof(int));
    cudaMemset(cas_sum, 0, sizeof(int));
    cudaMemset(fsum, 0, sizeof(float));
    cudaMemset(wrap, 0, sizeof(unsigned));
    CX_LAUNCH(atomics, 4, 128)(counter, fsum, maximum, wrap, cas_sum);
    report("launch", cudaGetLastError());
    int c, m, s;
    float f;
    unsigned w;
    cudaMemcpy(&c, counter, sizeof c, cudaMemcpyDeviceToHost);
    cudaMemcpy(&m, maximum, sizeof m, cudaMemcpyDeviceToHost);
    cudaMemcpy(&s, cas_sum, sizeof s, cudaMemcpyDeviceToHost);
    cudaMemcpy(&f, fsum, sizeof f, cudaMemcpyDeviceToHost);
    cudaMemcpy(&w, wrap, sizeof w, cudaMemcpyDeviceToHost);
    int expect_max = 0;
    for (int tid = 0; tid < 512; tid++)
        expect_max = (tid * 7919) % 1000 > expect_max ? (tid * 7919) % 1000 : expect_max;
    printf("counter=%d\nfsum=%g\nmaximum=%d\nexpected_maximum=%d\nwrap=%u\ncas_sum=%d\n", c, f, m,
           expect_max, w, s);
}

/* ---- shared memory nobody wrote ---- */

__global__ void read_unwritten(float *out) {
    __shared__ float fixed[4];
    CX_DYNAMIC_SHARED(float, dynamic);
    if (blockIdx.x == 0 && threadIdx.x == 0) { /* block 0 writes; block 1 must not see it */
        fixed[1] = 1.0f;
        dynamic[1] = 1.0f;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        out[blockIdx.x * 2] = fixed[1];
        out[blockIdx.x * 2 + 1] = dynamic[1];
    }
}

static void run_unwritten(void) {
    float *out, got[4];
    cudaMalloc(&out, sizeof got);
    CX_LAUNCH(read_unwritten, 2, 32, 4 * sizeof(float))(out);
    report("launch", cudaGetLastError());
    cudaMemcpy(got, out, sizeof got, cudaMemcpyDeviceToHost);
    printf("static_block0=%g\ndynamic_block0=%g\nstatic_block1=%g\ndynamic_block1=%g\n", got[0], got[1],
           got[2], got[3]);
}

/* ---- the thread order: each thread appends its index to a log ---- */

__global__ void log_order(int *next, int *log) {
    log[atomicAdd(next, 1)] = (int)threadIdx.x;
}

static void run_order(void) {
    int *next, *log, got[64];
    cudaMalloc(&next, sizeof(int));
    cudaMalloc(&log, sizeof got);
    cudaMemset(next, 0, sizeof(int));
    CX_LAUNCH(log_order, 1, 64)(next, log);
    report("launch", cudaGetLastError());
    cudaMemcpy(got, log, sizeof got, cudaMemcpyDeviceToHost);
    printf("order=");
    for (int i = 0; i < 64; i++)
        printf("%d%s", got[i], i < 63 ? "," : "\n");
}

/* ---- memory faults: the process is expected to die ---- */

__global__ void write_past(float *p, int n) {
    if (threadIdx.x == 0)
        p[n] = 1.0f; /* one past the end */
}

static void run_fault(int which) {
    float *p;
    cudaMalloc(&p, 100 * sizeof(float));
    if (which == 0) {
        printf("host reads device memory\n");
        fflush(stdout);
        volatile float value = p[0]; /* SIGSEGV: device pages are PROT_NONE */
        printf("read=%g\n", (double)value);
    } else {
        printf("kernel writes past its allocation\n");
        fflush(stdout);
        CX_LAUNCH(write_past, 1, 32)(p, 100);
        report("launch", cudaGetLastError());
    }
}

int run_runtime_case(const char *name); /* emu_runtime_cases.cu */
int run_fp16_case(const char *name);    /* emu_fp16_cases.cu */
int run_library_case(const char *name); /* emu_library_cases.cu: cuBLAS and cuDNN */

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: emu_cases CASE\n");
        return 2;
    }
    const char *name = argv[1];
    setvbuf(stdout, nullptr, _IOLBF, 0);
    if (!strcmp(name, "reduce_static"))
        run_reduction(0);
    else if (!strcmp(name, "reduce_dynamic"))
        run_reduction(1);
    else if (!strcmp(name, "reduce_no_barrier"))
        run_reduction(2);
    else if (!strcmp(name, "barrier_in_branch"))
        run_divergent(0);
    else if (!strcmp(name, "barrier_at_two_sites"))
        run_divergent(1);
    else if (!strcmp(name, "warp_ops"))
        run_warp(0);
    else if (!strcmp(name, "warp_divergent"))
        run_warp(1);
    else if (!strcmp(name, "atomics"))
        run_atomics();
    else if (!strcmp(name, "unwritten_shared"))
        run_unwritten();
    else if (!strcmp(name, "order"))
        run_order();
    else if (!strcmp(name, "host_reads_device"))
        run_fault(0);
    else if (!strcmp(name, "kernel_writes_past"))
        run_fault(1);
    else if (!run_runtime_case(name) && !run_fp16_case(name) && !run_library_case(name)) {
        fprintf(stderr, "emu_cases: no case '%s'\n", name);
        return 2;
    }
    return 0;
}
