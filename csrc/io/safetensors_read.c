/* safetensors: tensors of an opened file read as float32 (see safetensors.h). The
 * reader (safetensors.c) validated every entry against the data block, so the offsets
 * and sizes used here are trusted. */
#include "safetensors.h"

#include "safetensors_limits.h"

#include <string.h>

static uint16_t load_le16(const unsigned char *b) { return (uint16_t)(b[0] | (b[1] << 8)); }

static uint64_t load_le64(const unsigned char *b) {
    uint64_t v = 0;
    for (int k = 7; k >= 0; k--)
        v = (v << 8) | b[k];
    return v;
}

static float float_from_bits(uint32_t bits) {
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

/* IEEE binary16 -> binary32, exact (subnormals, infinities and NaN payloads kept). */
static float half_to_float(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exponent = (h >> 10) & 0x1F, mantissa = h & 0x3FF;
    if (exponent == 0) {
        /* zero or subnormal: mantissa * 2^-24, exact in float32 */
        float magnitude = (float)mantissa * 0x1p-24f;
        uint32_t bits;
        memcpy(&bits, &magnitude, sizeof bits);
        return float_from_bits(sign | bits);
    }
    if (exponent == 31)
        return float_from_bits(sign | 0x7F800000u | (mantissa << 13));
    return float_from_bits(sign | ((exponent + 112) << 23) | (mantissa << 13));
}

int64_t cx_st_numel(const cx_st_file *file, int i) {
    if (!file || i < 0 || i >= file->n_tensors)
        return -1;
    const cx_st_tensor *t = &file->tensors[i];
    int64_t numel = 1;
    for (int d = 0; d < t->ndim; d++)
        numel *= t->shape[d];
    return numel;
}

cx_status cx_st_read_f32(const cx_st_file *file, int i, float *out) {
    if (!file || i < 0 || i >= file->n_tensors)
        return cx_fail(CX_EINVAL, "cx_st_read_f32: tensor index %d out of range", i);
    const cx_st_tensor *t = &file->tensors[i];
    int64_t numel = cx_st_numel(file, i);
    if (numel > 0 && !out)
        return cx_fail(CX_EINVAL, "cx_st_read_f32: out is NULL");
    const unsigned char *src = file->data + t->begin;
    if (!strcmp(t->dtype, "F32")) {
        if (ST_LITTLE_ENDIAN) {
            if (numel > 0)
                memcpy(out, src, (size_t)numel * 4);
        } else {
            for (int64_t k = 0; k < numel; k++) {
                const unsigned char *b = src + 4 * k;
                out[k] = float_from_bits((uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 |
                                         (uint32_t)b[3] << 24);
            }
        }
    } else if (!strcmp(t->dtype, "F16")) {
        for (int64_t k = 0; k < numel; k++)
            out[k] = half_to_float(load_le16(src + 2 * k));
    } else if (!strcmp(t->dtype, "BF16")) {
        for (int64_t k = 0; k < numel; k++)
            out[k] = float_from_bits((uint32_t)load_le16(src + 2 * k) << 16);
    } else if (!strcmp(t->dtype, "F64")) {
        for (int64_t k = 0; k < numel; k++) {
            uint64_t bits = load_le64(src + 8 * k);
            double value;
            memcpy(&value, &bits, sizeof value);
            out[k] = (float)value;
        }
    } else {
        return cx_fail(CX_EIO, "%s: tensor '%.200s' has dtype %s, which cannot be read as float32 "
                       "(supported: F32, F16, BF16, F64)", file->path, t->name, t->dtype);
    }
    return CX_OK;
}
