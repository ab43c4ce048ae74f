/* Mask files' levels to uint8 grey levels (see data.h, cx_mask_from_levels). */
#include "data.h"
#include "../core/mask.h"

#include <math.h>

/* Reads element i of src as a double (int64 values are exact below 2^53, which every
 * image format's levels are). */
static inline double level_at(const void *src, cx_level_dtype dtype, int64_t i) {
    switch (dtype) {
    case CX_LEVEL_U8: return (double)((const uint8_t *)src)[i];
    case CX_LEVEL_I64: return (double)((const int64_t *)src)[i];
    case CX_LEVEL_F64: return ((const double *)src)[i];
    }
    return 0.0;
}

cx_status cx_mask_from_levels(const void *src, cx_level_dtype dtype, int64_t n, uint8_t *dst) {
    if (n < 0)
        return cx_fail(CX_EINVAL, "mask_from_levels: negative size %lld", (long long)n);
    if (dtype != CX_LEVEL_U8 && dtype != CX_LEVEL_I64 && dtype != CX_LEVEL_F64)
        return cx_fail(CX_EINVAL, "mask_from_levels: unknown dtype code %d", (int)dtype);
    /* the maximum, NaN winning as in np.max */
    double top = 0.0;
    int have_nan = 0;
    for (int64_t i = 0; i < n; i++) {
        double v = level_at(src, dtype, i);
        if (isnan(v))
            have_nan = 1;
        else if (i == 0 || v > top)
            top = v;
    }
    if (n == 0)
        return CX_OK;
    if (!have_nan && top > 255.0) {
        /* deeper than 8 bits with levels above 255: foreground above half the maximum */
        double half = top / 2.0;
        for (int64_t i = 0; i < n; i++)
            dst[i] = level_at(src, dtype, i) > half ? 255 : 0;
    } else {
        /* clipped to 0..255 (fractions dropped, NaN read as 0) */
        for (int64_t i = 0; i < n; i++) {
            double v = level_at(src, dtype, i);
            dst[i] = isnan(v) || v <= 0.0 ? 0 : v >= 255.0 ? 255 : (uint8_t)v;
        }
    }
    /* 0 and one other value v <= 128 (masks saved as 0/1 or as palette indices): 0/255 */
    if (cx_mask_binary_level(dst, n))
        for (int64_t i = 0; i < n; i++)
            dst[i] = dst[i] ? 255 : 0;
    return CX_OK;
}

uint8_t cx_mask_binary_level(const uint8_t *mask, int64_t n) {
    uint8_t other = 0;
    int zero = 0;
    for (int64_t i = 0; i < n; i++) {
        uint8_t v = mask[i];
        if (v == 0) {
            zero = 1;
            continue;
        }
        if (v == other)
            continue;
        if (other != 0 || cx_mask_foreground(v))
            return 0; /* a second level, or a level that already reads as foreground */
        other = v;
    }
    /* one level everywhere (no 0) is read as it is: an all-128 GT stays empty, as in
     * PySODMetrics */
    return zero ? other : 0;
}
