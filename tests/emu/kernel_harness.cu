/* Runs ops of the CUDA backend (kernels/pointwise.cu, norm.cu, reduce.cu) on the CUDA
 * emulator, for comparison with the CPU backend by tests/test_emu_kernels.py. Provides the
 * few backend_cuda.cu helpers those files call.
 *
 * Usage: emu_kernels OP DIR INTS... [EPS]
 *   gelu_forward n                              x -> y
 *   gelu_backward n                             x, dy -> dx (from zeros)
 *   layernorm_forward rows cols eps             x, w, b -> y, saved
 *   layernorm_backward rows cols eps            x, w, b, dy -> dx, dw, db (from zeros)
 *   layernorm2d_forward batch channels hw eps   as layernorm
 *   layernorm2d_backward batch channels hw eps  as layernorm
 * Arrays are raw float32 files DIR/NAME.f32; the error, if any, is printed as error=... */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <string>
#include <vector>

#include "common.cuh"

/* ---- what backend_cuda.cu provides to the op files ---- */

void cu_record(cu_state *st, cx_status code, const char *fmt, ...) {
    if (st->error_code != CX_OK)
        return;
    va_list args;
    va_start(args, fmt);
    vsnprintf(st->error, sizeof st->error, fmt, args);
    va_end(args);
    st->error_code = code;
}

int cu_ok_cuda(cu_state *st, cudaError_t status, const char *what) {
    if (status == cudaSuccess)
        return 1;
    cu_record(st, CX_ERUNTIME, "CUDA error in %s: %s", what, cudaGetErrorString(status));
    return 0;
}

float *cu_scratch(cu_state *st, int slot, size_t n_floats) {
    if (n_floats > st->scratch_floats[slot]) {
        cudaFree(st->scratch[slot]);
        void *fresh = NULL;
        if (!cu_ok_cuda(st, cudaMalloc(&fresh, n_floats * sizeof(float)), "scratch"))
            return NULL;
        st->scratch[slot] = (float *)fresh;
        st->scratch_floats[slot] = n_floats;
    }
    return st->scratch[slot];
}

/* ---- arrays: host file <-> device ---- */

static std::string dir;

static float *load(const char *name, size_t n) {
    std::vector<float> host(n);
    std::string path = dir + "/" + name + ".f32";
    FILE *f = fopen(path.c_str(), "rb");
    if (!f || fread(host.data(), sizeof(float), n, f) != n) {
        fprintf(stderr, "cannot read %zu floats from %s\n", n, path.c_str());
        exit(2);
    }
    fclose(f);
    float *device = NULL;
    cudaMalloc(&device, n * sizeof(float));
    cudaMemcpy(device, host.data(), n * sizeof(float), cudaMemcpyHostToDevice);
    return device;
}

static float *zeros(size_t n) {
    float *device = NULL;
    cudaMalloc(&device, n * sizeof(float));
    cudaMemset(device, 0, n * sizeof(float));
    return device;
}

static void store(const char *name, const float *device, size_t n) {
    std::vector<float> host(n);
    cudaMemcpy(host.data(), device, n * sizeof(float), cudaMemcpyDeviceToHost);
    std::string path = dir + "/" + name + ".f32";
    FILE *f = fopen(path.c_str(), "wb");
    fwrite(host.data(), sizeof(float), n, f);
    fclose(f);
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: emu_kernels OP DIR INTS... [EPS]\n");
        return 2;
    }
    std::string op = argv[1];
    dir = argv[2];
    cu_state state;
    memset(&state, 0, sizeof state);
    cx_backend be;
    memset(&be, 0, sizeof be);
    be.impl = &state;
    int a = atoi(argv[3]), b = argc > 4 ? atoi(argv[4]) : 0, c = argc > 5 ? atoi(argv[5]) : 0;
    if (op == "gelu_forward" || op == "gelu_backward") {
        size_t n = (size_t)a;
        float *x = load("x", n);
        if (op == "gelu_forward") {
            float *y = zeros(n);
            cu_gelu_forward(&be, n, x, y);
            store("y", y, n);
        } else {
            float *dy = load("dy", n), *dx = zeros(n);
            cu_gelu_backward(&be, n, x, dy, dx);
            store("dx", dx, n);
        }
    } else if (op.rfind("layernorm", 0) == 0) {
        int is_2d = op.rfind("layernorm2d", 0) == 0;
        /* layernorm: a rows, b cols; layernorm2d: a batch, b channels, c hw */
        float eps = (float)atof(argv[is_2d ? 6 : 5]);
        size_t numel = is_2d ? (size_t)a * b * c : (size_t)a * b, groups = is_2d ? (size_t)a * c : (size_t)a;
        size_t params = (size_t)b;
        float *x = load("x", numel), *w = load("w", params), *bias = load("b", params);
        float *y = zeros(numel), *saved = zeros(2 * groups);
        if (is_2d)
            cu_layernorm2d_forward(&be, a, b, c, eps, x, w, bias, y, saved);
        else
            cu_layernorm_forward(&be, a, b, eps, x, w, bias, y, saved);
        if (op.find("_forward") != std::string::npos) {
            store("y", y, numel);
            store("saved", saved, 2 * groups);
        } else {
            float *dy = load("dy", numel), *dx = zeros(numel), *dw = zeros(params), *db = zeros(params);
            if (is_2d)
                cu_layernorm2d_backward(&be, a, b, c, x, w, saved, dy, dx, dw, db);
            else
                cu_layernorm_backward(&be, a, b, x, w, saved, dy, dx, dw, db);
            store("dx", dx, numel);
            store("dw", dw, params);
            store("db", db, params);
        }
    } else {
        fprintf(stderr, "emu_kernels: no op '%s'\n", op.c_str());
        return 2;
    }
    printf("error=%s\n", state.error_code == CX_OK ? "none" : state.error);
    return 0;
}
