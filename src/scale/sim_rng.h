/* sim_rng.h: the simulator's random numbers: splitmix64, seeded, the same on every platform. */
#ifndef PINGVAS_SIM_RNG_H
#define PINGVAS_SIM_RNG_H

#include <math.h>
#include <stdint.h>

static inline uint64_t sim_rng_next(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* Uniform in [0, 1). */
static inline double sim_rng_unit(uint64_t *state)
{
    return (double)(sim_rng_next(state) >> 11) * (1.0 / 9007199254740992.0);
}

/* Exponential with the given rate (> 0): the wait to the next event of a Poisson process. */
static inline double sim_rng_exp(uint64_t *state, double rate)
{
    return -log1p(-sim_rng_unit(state)) / rate;
}

#endif
