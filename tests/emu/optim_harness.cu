/* Runs a sequence of optimizer steps of kernels/optim.cu (the device optimizer step, C ABI
 * in ops/cuda_optim.h) on the CUDA emulator, for comparison with the CPU reference
 * (csrc/train/clip.c, optim.c, ema.c) by tests/test_emu_optim.py.
 *
 * Usage: optim_harness DIR COUNT TOTAL NSTEPS
 * Reads (raw little-endian files in DIR):
 *   table.i64            [COUNT, 4]: offset, numel, group, decay
 *   values.f32, exp_avg.f32, exp_avg_sq.f32, ema.f32 [TOTAL]; steps.i64 [COUNT]
 *   step<k>.cfg.f64      reset (1: cu_optim_reset first), has_mask, lr_backbone, lr_head,
 *                        weight_decay, beta1, beta2, eps, max_norm, ema_decay
 *   step<k>.grads.f32 [TOTAL], step<k>.mask.u8 [COUNT] (read when has_mask)
 * Writes after each step k: out<k>.values.f32, .exp_avg.f32, .exp_avg_sq.f32, .ema.f32,
 * .steps.i64 and out<k>.result.f64 (norm, clip_scale, applied).
 * Prints bad_config=<code> (a config with beta1 = 1 must be refused) and error=none, or
 * error=<text> at the first failing call. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <string>
#include <vector>

#include <cuda_runtime.h>

#include "ops/cuda_optim.h"

static std::string dir;

static void read_file(const std::string &name, void *data, size_t bytes) {
    std::string path = dir + "/" + name;
    FILE *f = fopen(path.c_str(), "rb");
    if (!f || fread(data, 1, bytes, f) != bytes) {
        fprintf(stderr, "cannot read %zu bytes from %s\n", bytes, path.c_str());
        exit(2);
    }
    fclose(f);
}

static void write_file(const std::string &name, const void *data, size_t bytes) {
    std::string path = dir + "/" + name;
    FILE *f = fopen(path.c_str(), "wb");
    if (!f || fwrite(data, 1, bytes, f) != bytes) {
        fprintf(stderr, "cannot write %s\n", path.c_str());
        exit(2);
    }
    fclose(f);
}

static int failed(const char *what, int code) {
    printf("error=%s: %s\n", what, cudaGetErrorString((cudaError_t)code));
    return 1;
}

/* device buffer of `bytes` (at least 1), filled from file `name` when given */
static void *device_buffer(size_t bytes, const char *name) {
    void *d = NULL;
    if (cudaMalloc(&d, bytes ? bytes : 1) != cudaSuccess) {
        fprintf(stderr, "cudaMalloc(%zu) failed\n", bytes);
        exit(2);
    }
    if (name && bytes) {
        std::vector<char> host(bytes);
        read_file(name, host.data(), bytes);
        cudaMemcpy(d, host.data(), bytes, cudaMemcpyHostToDevice);
    }
    return d;
}

static void store(const std::string &name, const void *device, size_t bytes) {
    std::vector<char> host(bytes ? bytes : 1);
    if (bytes)
        cudaMemcpy(host.data(), device, bytes, cudaMemcpyDeviceToHost);
    write_file(name, host.data(), bytes);
}

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: optim_harness DIR COUNT TOTAL NSTEPS\n");
        return 2;
    }
    dir = argv[1];
    int count = atoi(argv[2]), n_steps = atoi(argv[4]);
    size_t total = (size_t)atoll(argv[3]);

    std::vector<int64_t> table((size_t)count * 4);
    if (count)
        read_file("table.i64", table.data(), table.size() * sizeof(int64_t));
    std::vector<cu_optim_param> params((size_t)count);
    for (int i = 0; i < count; i++)
        params[i] = cu_optim_param{(uint64_t)table[4 * i], (uint64_t)table[4 * i + 1],
                                   (int32_t)table[4 * i + 2], (int32_t)table[4 * i + 3]};
    size_t fbytes = total * sizeof(float), pbytes = (size_t)count * sizeof(cu_optim_param);
    cu_optim_param *d_params = (cu_optim_param *)device_buffer(pbytes, NULL);
    if (pbytes)
        cudaMemcpy(d_params, params.data(), pbytes, cudaMemcpyHostToDevice);

    cu_optim_buffers b;
    memset(&b, 0, sizeof b);
    b.count = count;
    b.total = total;
    b.params = d_params;
    b.values = (float *)device_buffer(fbytes, "values.f32");
    b.exp_avg = (float *)device_buffer(fbytes, "exp_avg.f32");
    b.exp_avg_sq = (float *)device_buffer(fbytes, "exp_avg_sq.f32");
    b.ema = (float *)device_buffer(fbytes, "ema.f32");
    b.steps = (int64_t *)device_buffer((size_t)count * sizeof(int64_t), "steps.i64");
    float *d_grads = (float *)device_buffer(fbytes, NULL);
    b.grads = d_grads;
    b.workspace = device_buffer(cu_optim_workspace_bytes(count, total), NULL);
    unsigned char *d_mask = (unsigned char *)device_buffer((size_t)count, NULL);
    cudaStream_t stream;
    if (cudaStreamCreate(&stream) != cudaSuccess)
        return failed("cudaStreamCreate", (int)cudaGetLastError());

    cu_optim_config bad;
    memset(&bad, 0, sizeof bad);
    bad.beta1 = 1.0;
    bad.beta2 = 0.999;
    bad.eps = 1e-8;
    printf("bad_config=%d\n", cu_optim_step(&b, NULL, &bad, stream));

    std::vector<float> grads(total);
    std::vector<unsigned char> mask((size_t)count);
    for (int k = 0; k < n_steps; k++) {
        std::string step = "step" + std::to_string(k), out = "out" + std::to_string(k);
        double cfg[10];
        read_file(step + ".cfg.f64", cfg, sizeof cfg);
        if (total) {
            read_file(step + ".grads.f32", grads.data(), fbytes);
            cudaMemcpy(d_grads, grads.data(), fbytes, cudaMemcpyHostToDevice);
        }
        int has_mask = cfg[1] != 0.0;
        if (has_mask && count) {
            read_file(step + ".mask.u8", mask.data(), (size_t)count);
            cudaMemcpy(d_mask, mask.data(), (size_t)count, cudaMemcpyHostToDevice);
        }
        int code;
        if (cfg[0] != 0.0 && (code = cu_optim_reset(&b, stream)) != 0)
            return failed("cu_optim_reset", code);
        cu_optim_config c = {{cfg[2], cfg[3]}, cfg[4], cfg[5], cfg[6], cfg[7], cfg[8], cfg[9]};
        if ((code = cu_optim_step(&b, has_mask ? d_mask : NULL, &c, stream)) != 0)
            return failed("cu_optim_step", code);
        cu_optim_result r;
        if ((code = cu_optim_read_result(&b, &r, stream)) != 0)
            return failed("cu_optim_read_result", code);
        double result[3] = {r.norm, (double)r.clip_scale, (double)r.applied};
        write_file(out + ".result.f64", result, sizeof result);
        store(out + ".values.f32", b.values, fbytes);
        store(out + ".exp_avg.f32", b.exp_avg, fbytes);
        store(out + ".exp_avg_sq.f32", b.exp_avg_sq, fbytes);
        store(out + ".ema.f32", b.ema, fbytes);
        store(out + ".steps.i64", b.steps, (size_t)count * sizeof(int64_t));
    }
    cudaFree(b.values);
    cudaFree(b.exp_avg);
    cudaFree(b.exp_avg_sq);
    cudaFree(b.ema);
    cudaFree(b.steps);
    cudaFree(d_grads);
    cudaFree(b.workspace);
    cudaFree(d_mask);
    cudaFree(d_params);
    cudaStreamDestroy(stream);
    printf("error=none\n");
    return 0;
}
