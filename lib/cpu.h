/* CPU feature detection. cpu.c is compiled without ISA flags so no wide instruction can run
 * before the features are known. */
#ifndef BN_CPU_H
#define BN_CPU_H

#include <stddef.h>
#include <stdint.h>

/* BN_CPU_* bits (include/bitnet/kernel.h) this CPU and OS support, less those named by
 * BITNET_CPU_DISABLE. */
uint64_t bn_cpu_features(void);
/* BITNET_CPU_DISABLE=amxint8,avx512vnni...: run as if the CPU lacked these (A/B benchmarks,
 * or a path suspected of trouble). Returns 0 when unset, 1 when set and valid (*mask the
 * bits), -EINVAL when it names an unknown feature; *value is the variable or NULL. */
int bn_cpu_disable_env(const char **value, uint64_t *mask);
/* "avx2 fma f16c ..." for the bits set in f. Returns buf. */
char *bn_cpu_features_str(uint64_t f, char *buf, size_t len);
/* Parses a space/comma separated list of feature names; -EINVAL names the bad one in *bad. */
int bn_cpu_features_parse(const char *s, uint64_t *out);

#endif
