/* Counter-based random numbers (see rng.h). */
#include "rng.h"

#include <math.h>

uint64_t cx_rng_u64(uint64_t seed, uint64_t stream, uint64_t index) {
    uint64_t z = seed * 0x9E3779B97F4A7C15ull ^ (stream + 0x632BE59BD9B4E019ull) * 0xBF58476D1CE4E5B9ull;
    z ^= index * 0x94D049BB133111EBull + 0x2545F4914F6CDD1Dull;
    for (int round = 0; round < 2; round++) {
        z ^= z >> 30;
        z *= 0xBF58476D1CE4E5B9ull;
        z ^= z >> 27;
        z *= 0x94D049BB133111EBull;
        z ^= z >> 31;
    }
    return z;
}

double cx_rng_uniform(uint64_t seed, uint64_t stream, uint64_t index) {
    return (double)(cx_rng_u64(seed, stream, index) >> 11) * (1.0 / 9007199254740992.0);
}

double cx_rng_normal(uint64_t seed, uint64_t stream, uint64_t index) {
    /* Box-Muller on two counter draws */
    double u1 = cx_rng_uniform(seed, stream, 2 * index);
    double u2 = cx_rng_uniform(seed, stream, 2 * index + 1);
    if (u1 < 1e-300)
        u1 = 1e-300;
    return sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2);
}
