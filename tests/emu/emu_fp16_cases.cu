/* Half-precision cases for tests/test_emu.py (see emu_cases.cu): conversions and
 * arithmetic of __half and __nv_bfloat16 in a kernel, printed as hex bit patterns.
 * <cuda_fp16.h> and <cuda_bf16.h> are the toolkit's under nvcc, csrc/emu/include's here. */
#include <stdio.h>
#include <string.h>

#include <vector>

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "launch.cuh"

#define N_FLOATS 8192

/* The float inputs: spread bit patterns plus the edge cases (ties, limits, NaN). */
static std::vector<unsigned> float_inputs(void) {
    static const unsigned edges[] = {
        0x00000000u, 0x80000000u, 0x3f800000u, 0x477fe000u, 0x477ff000u, 0x477fefffu, 0x47800000u,
        0x7f800000u, 0xff800000u, 0x7fc00000u, 0x38800000u, 0x387fe000u, 0x33800000u, 0x33800001u,
        0x33000000u, 0x33000001u, 0x3f801000u, 0x3f803000u, 0x3f800fffu, 0x3f801001u};
    std::vector<unsigned> bits(edges, edges + sizeof edges / sizeof edges[0]);
    for (unsigned i = 0; bits.size() < N_FLOATS; i++)
        bits.push_back(i * 2654435761u);
    return bits;
}

/* out16[i]: float -> half bits; back[i]: those halves -> float; sums/products/quotients of
 * neighbouring halves; bf16[i]: float -> bfloat16 bits. */
__global__ void fp16_kernel(int n, const float *in, unsigned short *out16, float *back,
                            unsigned short *sums, unsigned short *products,
                            unsigned short *quotients, unsigned short *bf16) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += blockDim.x * gridDim.x) {
        __half h = __float2half(in[i]), next = __float2half(in[(i + 1) % n]);
        out16[i] = __half_as_ushort(h);
        back[i] = __half2float(h);
        sums[i] = __half_as_ushort(__hadd(h, next));
        products[i] = __half_as_ushort(__hmul(h, next));
        quotients[i] = __half_as_ushort(__hdiv(h, next));
        bf16[i] = __bfloat16_as_ushort(__float2bfloat16(in[i]));
    }
}

template <class T> static void print_hex(const char *key, const std::vector<T> &values) {
    printf("%s=", key);
    for (size_t i = 0; i < values.size(); i++)
        printf("%x%s", (unsigned)values[i], i + 1 < values.size() ? "," : "\n");
}

template <class T> static T *device_array(size_t n) {
    T *p = NULL;
    cudaMalloc(&p, n * sizeof(T));
    return p;
}

static void run_fp16(void) {
    std::vector<unsigned> bits = float_inputs();
    int n = (int)bits.size();
    std::vector<float> in(n);
    memcpy(in.data(), bits.data(), n * sizeof(float));
    float *d_in = device_array<float>(n), *d_back = device_array<float>(n);
    unsigned short *d16 = device_array<unsigned short>(n), *dsum = device_array<unsigned short>(n);
    unsigned short *dprod = device_array<unsigned short>(n), *dquot = device_array<unsigned short>(n);
    unsigned short *dbf = device_array<unsigned short>(n);
    cudaMemcpy(d_in, in.data(), n * sizeof(float), cudaMemcpyHostToDevice);
    CX_LAUNCH(fp16_kernel, 8, 256)(n, d_in, d16, d_back, dsum, dprod, dquot, dbf);
    printf("launch=%s\n", cudaGetErrorName(cudaGetLastError()));
    std::vector<unsigned short> h16(n), sums(n), products(n), quotients(n), bf16(n);
    std::vector<float> back(n);
    cudaMemcpy(h16.data(), d16, n * 2, cudaMemcpyDeviceToHost);
    cudaMemcpy(sums.data(), dsum, n * 2, cudaMemcpyDeviceToHost);
    cudaMemcpy(products.data(), dprod, n * 2, cudaMemcpyDeviceToHost);
    cudaMemcpy(quotients.data(), dquot, n * 2, cudaMemcpyDeviceToHost);
    cudaMemcpy(bf16.data(), dbf, n * 2, cudaMemcpyDeviceToHost);
    cudaMemcpy(back.data(), d_back, n * sizeof(float), cudaMemcpyDeviceToHost);
    std::vector<unsigned> back_bits(n);
    memcpy(back_bits.data(), back.data(), n * sizeof(float));
    print_hex("inputs", bits);
    print_hex("half", h16);
    print_hex("back", back_bits);
    print_hex("sum", sums);
    print_hex("product", products);
    print_hex("quotient", quotients);
    print_hex("bfloat16", bf16);
}

int run_fp16_case(const char *name) {
    if (strcmp(name, "fp16"))
        return 0;
    run_fp16();
    return 1;
}
