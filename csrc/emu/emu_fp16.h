/* The CUDA emulator's half types: __half (IEEE binary16) and __nv_bfloat16, stored as
 * their 16 bits, converted with round-to-nearest-even (cuda_fp16.h's and cuda_bf16.h's
 * default). Arithmetic converts to float, computes and rounds once: for +, -, * and / of
 * two 11-bit (8-bit) significands float's 24 bits are enough that rounding twice gives
 * the correctly rounded result, as the GPU's half instructions do. __hfma rounds the
 * float fma to half, which can differ from a fused half fma in the last bit in rare
 * cases. Not emulated: __half2 / __nv_bfloat162 vector types, half math functions
 * (hexp, ...), atomics on halves. */
#ifndef CX_EMU_FP16_H
#define CX_EMU_FP16_H

#include <math.h>
#include <stdint.h>
#include <string.h>

namespace cx_emu {
static inline uint32_t float_bits(float f) {
    uint32_t x;
    memcpy(&x, &f, sizeof x);
    return x;
}
static inline float bits_float(uint32_t x) {
    float f;
    memcpy(&f, &x, sizeof f);
    return f;
}

static inline uint16_t float_to_half_bits(float f) {
    uint32_t x = float_bits(f), sign = (x >> 16) & 0x8000u;
    x &= 0x7fffffffu;
    if (x >= 0x7f800000u) /* infinity, or NaN (kept quiet) */
        return (uint16_t)(sign | (x > 0x7f800000u ? 0x7e00u : 0x7c00u));
    if (x >= 0x477ff000u) /* 65520 and above round to infinity */
        return (uint16_t)(sign | 0x7c00u);
    if (x < 0x38800000u) /* below 2^-14: a subnormal half, in units of 2^-24 (exact scaling) */
        return (uint16_t)(sign | (uint32_t)nearbyintf(bits_float(x) * 16777216.0f));
    uint32_t mantissa = x & 0x7fffffu, exponent = (x >> 23) - 127u + 15u;
    uint32_t h = (exponent << 10) | (mantissa >> 13), rest = mantissa & 0x1fffu;
    if (rest > 0x1000u || (rest == 0x1000u && (h & 1u)))
        h++; /* a carry into the exponent is right, up to infinity */
    return (uint16_t)(sign | h);
}

static inline float half_bits_to_float(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, exponent = (h >> 10) & 0x1fu, mantissa = h & 0x3ffu;
    if (exponent == 0) {
        float magnitude = (float)mantissa * (1.0f / 16777216.0f);
        return sign ? -magnitude : magnitude;
    }
    if (exponent == 31)
        return bits_float(sign | 0x7f800000u | (mantissa << 13));
    return bits_float(sign | ((exponent - 15u + 127u) << 23) | (mantissa << 13));
}

static inline uint16_t float_to_bfloat16_bits(float f) {
    uint32_t x = float_bits(f);
    if ((x & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((x >> 16) | 0x0040u); /* NaN stays NaN (quiet) */
    return (uint16_t)((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
}

static inline float bfloat16_bits_to_float(uint16_t b) { return bits_float((uint32_t)b << 16); }

/* Element i of an array of half (bf16 = true: bfloat16) values, as a float (exact); and
 * the store that rounds a float to it (to nearest even). */
static inline float load_low(const void *data, bool bf16, size_t i) {
    uint16_t bits = ((const uint16_t *)data)[i];
    return bf16 ? bfloat16_bits_to_float(bits) : half_bits_to_float(bits);
}
static inline void store_low(void *data, bool bf16, size_t i, float value) {
    ((uint16_t *)data)[i] = bf16 ? float_to_bfloat16_bits(value) : float_to_half_bits(value);
}
} // namespace cx_emu

/* Both types: construction from float rounds; conversion to float is exact. */
#define CX_EMU_HALF_TYPE(type, to_bits, from_bits)                                           \
    struct type {                                                                            \
        uint16_t __x;                                                                        \
        type() = default;                                                                    \
        type(float f) : __x(cx_emu::to_bits(f)) {}                                           \
        type(double d) : __x(cx_emu::to_bits((float)d)) {}                                   \
        type(int i) : __x(cx_emu::to_bits((float)i)) {}                                      \
        operator float() const { return cx_emu::from_bits(__x); }                            \
        type &operator+=(type o) { return *this = type((float)*this + (float)o); }           \
        type &operator-=(type o) { return *this = type((float)*this - (float)o); }           \
        type &operator*=(type o) { return *this = type((float)*this * (float)o); }           \
        type &operator/=(type o) { return *this = type((float)*this / (float)o); }           \
    };                                                                                       \
    static inline type operator+(type a, type b) { return type((float)a + (float)b); }       \
    static inline type operator-(type a, type b) { return type((float)a - (float)b); }       \
    static inline type operator*(type a, type b) { return type((float)a * (float)b); }       \
    static inline type operator/(type a, type b) { return type((float)a / (float)b); }       \
    static inline type operator-(type a) {                                                   \
        type r = a;                                                                          \
        r.__x ^= 0x8000u;                                                                    \
        return r;                                                                            \
    }                                                                                        \
    static inline bool operator==(type a, type b) { return (float)a == (float)b; }           \
    static inline bool operator!=(type a, type b) { return (float)a != (float)b; }           \
    static inline bool operator<(type a, type b) { return (float)a < (float)b; }             \
    static inline bool operator>(type a, type b) { return (float)a > (float)b; }             \
    static inline bool operator<=(type a, type b) { return (float)a <= (float)b; }           \
    static inline bool operator>=(type a, type b) { return (float)a >= (float)b; }
CX_EMU_HALF_TYPE(__half, float_to_half_bits, half_bits_to_float)
CX_EMU_HALF_TYPE(__nv_bfloat16, float_to_bfloat16_bits, bfloat16_bits_to_float)
#undef CX_EMU_HALF_TYPE
typedef __half half;

static inline __half __float2half(float f) { return __half(f); }
static inline __half __float2half_rn(float f) { return __half(f); }
static inline float __half2float(__half h) { return (float)h; }
static inline __half __hadd(__half a, __half b) { return a + b; }
static inline __half __hsub(__half a, __half b) { return a - b; }
static inline __half __hmul(__half a, __half b) { return a * b; }
static inline __half __hdiv(__half a, __half b) { return a / b; }
static inline __half __hneg(__half a) { return -a; }
static inline __half __habs(__half a) {
    a.__x &= 0x7fffu;
    return a;
}
static inline __half __hfma(__half a, __half b, __half c) { return __half(fmaf(a, b, c)); }
static inline bool __hisnan(__half a) { return (a.__x & 0x7fffu) > 0x7c00u; }
static inline bool __hisinf(__half a) { return (a.__x & 0x7fffu) == 0x7c00u; }
static inline unsigned short __half_as_ushort(__half h) { return h.__x; }
static inline __half __ushort_as_half(unsigned short x) {
    __half h;
    h.__x = x;
    return h;
}

static inline __nv_bfloat16 __float2bfloat16(float f) { return __nv_bfloat16(f); }
static inline __nv_bfloat16 __float2bfloat16_rn(float f) { return __nv_bfloat16(f); }
static inline float __bfloat162float(__nv_bfloat16 b) { return (float)b; }
static inline unsigned short __bfloat16_as_ushort(__nv_bfloat16 b) { return b.__x; }
static inline __nv_bfloat16 __ushort_as_bfloat16(unsigned short x) {
    __nv_bfloat16 b;
    b.__x = x;
    return b;
}

#endif
