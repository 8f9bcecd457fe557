/* CPU feature detection. cpu.c is compiled without ISA flags so no wide instruction can run
 * before the features are known. */
#ifndef BN_CPU_H
#define BN_CPU_H

#include <stddef.h>
#include <stdint.h>

/* BN_CPU_* bits (include/bitnet/kernel.h) this CPU and OS support. */
uint64_t bn_cpu_features(void);
/* "avx2 fma f16c ..." for the bits set in f. Returns buf. */
char *bn_cpu_features_str(uint64_t f, char *buf, size_t len);
/* Parses a space/comma separated list of feature names; -EINVAL names the bad one in *bad. */
int bn_cpu_features_parse(const char *s, uint64_t *out);

#endif
