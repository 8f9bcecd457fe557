#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bitnet/kernel.h"
#include "cpu.h"

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>

/* XGETBV by opcode, so this file needs no -mxsave. */
static uint64_t xgetbv0(void)
{
	uint32_t eax, edx;
	__asm__ volatile(".byte 0x0f, 0x01, 0xd0" : "=a"(eax), "=d"(edx) : "c"(0));
	return ((uint64_t)edx << 32) | eax;
}

static uint64_t detect(void)
{
	unsigned a, b, c, d;
	uint64_t f = 0;
	if (!__get_cpuid(1, &a, &b, &c, &d))
		return 0;
	int osxsave = (c >> 27) & 1, avx = (c >> 28) & 1;
	int fma = (c >> 12) & 1, f16c = (c >> 29) & 1;
	if (!osxsave || !avx)
		return 0;
	uint64_t xcr0 = xgetbv0();
	int ymm_ok = (xcr0 & 0x6) == 0x6;              /* SSE + AVX state saved by the OS */
	int zmm_ok = ymm_ok && (xcr0 & 0xe0) == 0xe0;  /* opmask, ZMM_Hi256, Hi16_ZMM */
	int tile_ok = (xcr0 & 0x60000) == 0x60000;     /* XTILECFG, XTILEDATA */
	if (!ymm_ok)
		return 0;
	if (fma)
		f |= BN_CPU_FMA;
	if (f16c)
		f |= BN_CPU_F16C;
	if (__get_cpuid_max(0, NULL) >= 7) {
		__cpuid_count(7, 0, a, b, c, d);
		if ((b >> 5) & 1)
			f |= BN_CPU_AVX2;
		if (zmm_ok) {
			if ((b >> 16) & 1)
				f |= BN_CPU_AVX512F;
			if ((b >> 30) & 1)
				f |= BN_CPU_AVX512BW;
			if ((b >> 31) & 1)
				f |= BN_CPU_AVX512VL;
			if ((c >> 11) & 1)
				f |= BN_CPU_AVX512VNNI;
		}
		/* AMX-TILE (EDX 24) and AMX-INT8 (EDX 25). Linux also wants a per-process
		 * arch_prctl permission for the tile data; plugins ask for it when they open. */
		if (tile_ok && ((d >> 24) & 1) && ((d >> 25) & 1))
			f |= BN_CPU_AMXINT8;
		__cpuid_count(7, 1, a, b, c, d);
		if ((a >> 4) & 1)
			f |= BN_CPU_AVXVNNI;
	}
	return f;
}
#elif defined(__aarch64__)
#include <sys/auxv.h>
#ifndef HWCAP_ASIMD
#define HWCAP_ASIMD (1 << 1)
#endif
#ifndef HWCAP_ASIMDDP
#define HWCAP_ASIMDDP (1 << 20)
#endif
static uint64_t detect(void)
{
	unsigned long hw = getauxval(AT_HWCAP);
	uint64_t f = 0;
	if (hw & HWCAP_ASIMD)
		f |= BN_CPU_ASIMD;
	if (hw & HWCAP_ASIMDDP)
		f |= BN_CPU_ASIMDDP;
	return f;
}
#else
static uint64_t detect(void)
{
	return 0;
}
#endif

uint64_t bn_cpu_features(void)
{
	static uint64_t cached;
	static int done;
	if (!done) {
		cached = detect();
		/* an invalid list masks nothing here; bitnet refuses it, bitnetd logs it */
		const char *off;
		uint64_t mask;
		if (bn_cpu_disable_env(&off, &mask) == 1)
			cached &= ~mask;
		done = 1;
	}
	return cached;
}

int bn_cpu_disable_env(const char **value, uint64_t *mask)
{
	*value = getenv("BITNET_CPU_DISABLE");
	*mask = 0;
	if (!*value)
		return 0;
	return bn_cpu_features_parse(*value, mask) ? -EINVAL : 1;
}

static const struct {
	uint64_t bit;
	const char *name;
} feature_names[] = {
	{ BN_CPU_AVX2, "avx2" }, { BN_CPU_FMA, "fma" }, { BN_CPU_F16C, "f16c" },
	{ BN_CPU_AVX512F, "avx512f" }, { BN_CPU_AVX512BW, "avx512bw" },
	{ BN_CPU_AVX512VL, "avx512vl" }, { BN_CPU_AVX512VNNI, "avx512vnni" },
	{ BN_CPU_AVXVNNI, "avxvnni" }, { BN_CPU_AMXINT8, "amxint8" },
	{ BN_CPU_ASIMD, "asimd" }, { BN_CPU_ASIMDDP, "asimddp" },
};

char *bn_cpu_features_str(uint64_t f, char *buf, size_t len)
{
	size_t used = 0;
	if (len)
		buf[0] = '\0';
	for (size_t i = 0; i < sizeof(feature_names) / sizeof(feature_names[0]); i++) {
		if (!(f & feature_names[i].bit))
			continue;
		int w = snprintf(buf + used, len > used ? len - used : 0, "%s%s",
		                 used ? " " : "", feature_names[i].name);
		if (w < 0 || (size_t)w >= len - used)
			break;
		used += (size_t)w;
	}
	return buf;
}

int bn_cpu_features_parse(const char *s, uint64_t *out)
{
	uint64_t f = 0;
	char tok[32];
	while (*s) {
		size_t n = strcspn(s, " ,");
		if (n && n < sizeof(tok)) {
			memcpy(tok, s, n);
			tok[n] = '\0';
			size_t i;
			for (i = 0; i < sizeof(feature_names) / sizeof(feature_names[0]); i++)
				if (!strcmp(tok, feature_names[i].name))
					break;
			if (i == sizeof(feature_names) / sizeof(feature_names[0]))
				return -EINVAL;
			f |= feature_names[i].bit;
		} else if (n) {
			return -EINVAL;
		}
		s += n;
		s += strspn(s, " ,");
	}
	*out = f;
	return 0;
}
