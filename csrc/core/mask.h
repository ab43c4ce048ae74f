/* The one rule for reading a uint8 mask or ground-truth pixel, shared by the data path
 * (resizing, augmentation, the original-size masks) and the metrics: foreground where
 * the value is above 128 (PySODMetrics' gt > 128). */
#ifndef CX_MASK_H
#define CX_MASK_H

#include <stdint.h>

#define CX_MASK_THRESHOLD 128

static inline int cx_mask_foreground(uint8_t value) { return value > CX_MASK_THRESHOLD; }

#endif
