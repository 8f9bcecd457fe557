/* SHA-256 (FIPS 180-4), for the model identity in receipts. */
#ifndef BN_SHA256_H
#define BN_SHA256_H

#include <stddef.h>
#include <stdint.h>

struct bn_sha256 {
	uint32_t h[8];
	uint64_t len;            /* bytes hashed */
	uint8_t buf[64];         /* pending partial block */
	size_t n;
};

void bn_sha256_init(struct bn_sha256 *s);
void bn_sha256_update(struct bn_sha256 *s, const void *data, size_t len);
void bn_sha256_final(struct bn_sha256 *s, uint8_t out[32]);
/* Hex digest of data: out has 65 bytes. */
void bn_sha256_hex(const void *data, size_t len, char out[65]);

#endif
