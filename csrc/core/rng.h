/* Counter-based random numbers, shared by every layer that draws (parameter init in
 * model/, augmentation and synthetic images in data/, shuffling in train/).
 *
 * A SplitMix64 finaliser over a key: the same (seed, stream, index) always gives the
 * same number, so results never depend on the thread count or on call order. */
#ifndef CX_RNG_H
#define CX_RNG_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

uint64_t cx_rng_u64(uint64_t seed, uint64_t stream, uint64_t index);
double cx_rng_uniform(uint64_t seed, uint64_t stream, uint64_t index);  /* [0, 1) */
double cx_rng_normal(uint64_t seed, uint64_t stream, uint64_t index);   /* N(0, 1) */

#ifdef __cplusplus
}
#endif
#endif
