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
    uint8_t other = 0;
    int one_value = 1;
    for (int64_t i = 0; i < n && one_value; i++) {
        uint8_t v = dst[i];
        if (v == 0)
            continue;
        if (other == 0)
            other = v;
        else if (v != other)
            one_value = 0;
    }
    if (one_value && other > 0 && !cx_mask_foreground(other))
        for (int64_t i = 0; i < n; i++)
            dst[i] = dst[i] ? 255 : 0;
    return CX_OK;
}
