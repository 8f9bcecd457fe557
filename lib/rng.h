/* The project's one pseudo-random generator: xoshiro256** seeded through splitmix64.
 * Integer-only, so a seed gives the same stream on every platform (mkmodel files, sampling). */
#ifndef BN_RNG_H
#define BN_RNG_H

#include <stdint.h>

struct bn_rng {
	uint64_t s[4];
};

static inline uint64_t bn_splitmix64(uint64_t *x)
{
	uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static inline uint64_t bn_rotl64(uint64_t v, int k)
{
	return (v << k) | (v >> (64 - k));
}

static inline uint64_t bn_rng_next(struct bn_rng *r)
{
	uint64_t *s = r->s;
	uint64_t out = bn_rotl64(s[1] * 5, 7) * 9;
	uint64_t t = s[1] << 17;
	s[2] ^= s[0];
	s[3] ^= s[1];
	s[1] ^= s[2];
	s[0] ^= s[3];
	s[2] ^= t;
	s[3] = bn_rotl64(s[3], 45);
	return out;
}

/* State from splitmix64 steps starting at x. */
static inline void bn_rng_seed(struct bn_rng *r, uint64_t x)
{
	for (int i = 0; i < 4; i++)
		r->s[i] = bn_splitmix64(&x);
}

/* [0, 1) from the top 53 bits: exact in double on every platform */
static inline double bn_rng_double(struct bn_rng *r)
{
	return (double)(bn_rng_next(r) >> 11) * 0x1p-53;
}

#endif
