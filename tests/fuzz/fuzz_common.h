/* Shared by the fuzz targets in tests/fuzz: a memfd for the APIs that only take a path, a
 * UTF-8 checker written independently of lib/ (so a harness does not test the library
 * against itself), and the replay main() of the standalone (gcc, `make check`) builds.
 *
 * Each target defines LLVMFuzzerTestOneInput. Built with clang -fsanitize=fuzzer, libFuzzer
 * supplies main(); built with -DBN_FUZZ_STANDALONE, the target's main() calls
 * fuzz_replay_main(), which feeds it every file named on the command line (a directory: each
 * regular file in it, in name order). A broken promise calls abort(), so a replay fails.
 * Include it first: it asks for the GNU extensions (memfd_create). */
#ifndef BN_FUZZ_COMMON_H
#define BN_FUZZ_COMMON_H

/* memfd_create; include this header before any system header */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <dirent.h>
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define FUZZ_UNUSED __attribute__((unused))

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Stops the run with a message: a contract the library documents does not hold. */
#define FUZZ_CHECK(cond) do { \
	if (!(cond)) { \
		fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
		abort(); \
	} \
} while (0)

/* Replay builds print what each input led to when FUZZ_VERBOSE is set (checking seeds). */
#ifdef BN_FUZZ_STANDALONE
#define FUZZ_NOTE(...) do { \
	if (getenv("FUZZ_VERBOSE")) \
		fprintf(stderr, __VA_ARGS__); \
} while (0)
#else
#define FUZZ_NOTE(...) do { } while (0)
#endif

/* The input as a file: one memfd per process, rewritten for every input. Valid until the
 * next call; whoever maps it must unmap before then. */
FUZZ_UNUSED static const char *fuzz_memfd_path(const uint8_t *data, size_t size)
{
	static int fd = -1;
	static char path[64];
	if (fd < 0) {
		fd = memfd_create("bitnet-fuzz", MFD_CLOEXEC);
		if (fd < 0) {
			perror("memfd_create");
			abort();
		}
		snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	}
	if (ftruncate(fd, 0) != 0) {
		perror("ftruncate");
		abort();
	}
	for (size_t off = 0; off < size;) {
		ssize_t w = pwrite(fd, data + off, size - off, (off_t)off);
		if (w <= 0) {
			perror("pwrite");
			abort();
		}
		off += (size_t)w;
	}
	return path;
}

/* Well-formed UTF-8 as Unicode defines it (no overlongs, surrogates or code points past
 * U+10FFFF). Returns the length of the sequence at s[0..n), 0 when it is not one. */
FUZZ_UNUSED static size_t fuzz_utf8_seq(const uint8_t *s, size_t n)
{
	if (n == 0)
		return 0;
	uint32_t c = s[0], cp;
	size_t len;
	if (c < 0x80)
		return 1;
	if ((c & 0xE0) == 0xC0) {
		len = 2;
		cp = c & 0x1F;
	} else if ((c & 0xF0) == 0xE0) {
		len = 3;
		cp = c & 0x0F;
	} else if ((c & 0xF8) == 0xF0) {
		len = 4;
		cp = c & 0x07;
	} else {
		return 0;
	}
	if (n < len)
		return 0;
	for (size_t i = 1; i < len; i++) {
		if ((s[i] & 0xC0) != 0x80)
			return 0;
		cp = (cp << 6) | (s[i] & 0x3F);
	}
	static const uint32_t min_cp[5] = { 0, 0, 0x80, 0x800, 0x10000 };
	if (cp < min_cp[len] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
		return 0;
	return len;
}

FUZZ_UNUSED static bool fuzz_utf8_valid(const void *p, size_t n)
{
	const uint8_t *s = p;
	for (size_t i = 0; i < n;) {
		size_t l = fuzz_utf8_seq(s + i, n - i);
		if (l == 0)
			return false;
		i += l;
	}
	return true;
}

/* Length of the maximal subpart of an ill-formed sequence at s[0..n) (Unicode 3.9, the
 * U+FFFD substitution practice): the longest prefix that starts a well-formed sequence,
 * at least 1. Only called where fuzz_utf8_seq returned 0. */
FUZZ_UNUSED static size_t fuzz_utf8_subpart(const uint8_t *s, size_t n)
{
	/* byte 2's range for each lead byte; later bytes are 80..BF */
	uint8_t c = s[0], lo = 0x80, hi = 0xBF;
	size_t len;
	if (c >= 0xC2 && c <= 0xDF)
		len = 2;
	else if (c >= 0xE0 && c <= 0xEF)
		len = 3;
	else if (c >= 0xF0 && c <= 0xF4)
		len = 4;
	else
		return 1;
	if (c == 0xE0)
		lo = 0xA0;
	else if (c == 0xED)
		hi = 0x9F;
	else if (c == 0xF0)
		lo = 0x90;
	else if (c == 0xF4)
		hi = 0x8F;
	size_t k = 1;
	if (k < n && s[k] >= lo && s[k] <= hi) {
		k++;
		while (k < len && k < n && (s[k] & 0xC0) == 0x80)
			k++;
	}
	return k;
}

/* s[0..n) with every maximal ill-formed subpart replaced by U+FFFD: what a streaming
 * decoder that follows the Unicode practice must print. *out malloc'd [*out_len + 1]. */
FUZZ_UNUSED static void fuzz_utf8_sanitize(const void *p, size_t n, char **out, size_t *out_len)
{
	const uint8_t *s = p;
	char *o = malloc(3 * n + 1);
	FUZZ_CHECK(o != NULL);
	size_t k = 0;
	for (size_t i = 0; i < n;) {
		size_t l = fuzz_utf8_seq(s + i, n - i);
		if (l) {
			memcpy(o + k, s + i, l);
			k += l;
			i += l;
		} else {
			memcpy(o + k, "\xEF\xBF\xBD", 3);
			k += 3;
			i += fuzz_utf8_subpart(s + i, n - i);
		}
	}
	o[k] = '\0';
	*out = o;
	*out_len = k;
}

/* An error return keeps its promise: a negative errno, the same code in err, a message. */
#define FUZZ_CHECK_ERROR(rc, err) do { \
	FUZZ_CHECK((rc) < 0 && (rc) > -4096); \
	FUZZ_CHECK((err).code == (rc)); \
	FUZZ_CHECK((err).msg[0] != '\0'); \
	FUZZ_CHECK(memchr((err).msg, '\0', sizeof((err).msg)) != NULL); \
} while (0)

#ifdef BN_FUZZ_STANDALONE
static int fuzz_replay_one(const char *path)
{
	FILE *f = fopen(path, "rb");
	if (!f) {
		fprintf(stderr, "%s: %s\n", path, strerror(errno));
		return -1;
	}
	struct stat st;
	if (fstat(fileno(f), &st) != 0 || st.st_size < 0) {
		fprintf(stderr, "%s: cannot stat\n", path);
		fclose(f);
		return -1;
	}
	size_t n = (size_t)st.st_size;
	/* exactly n bytes, so that a sanitizer sees a read past the input */
	uint8_t *buf = malloc(n ? n : 1);   /* [n] */
	if (!buf || fread(buf, 1, n, f) != n) {
		fprintf(stderr, "%s: read failed\n", path);
		fclose(f);
		free(buf);
		return -1;
	}
	fclose(f);
	LLVMFuzzerTestOneInput(buf, n);
	free(buf);
	return 0;
}

static int fuzz_replay_filter(const struct dirent *d)
{
	return d->d_name[0] != '.';
}

/* Replays every file named, and every regular file inside a directory named. */
FUZZ_UNUSED static int fuzz_replay_main(int argc, char **argv)
{
	size_t done = 0;
	for (int i = 1; i < argc; i++) {
		struct stat st;
		if (stat(argv[i], &st) != 0) {
			fprintf(stderr, "%s: %s\n", argv[i], strerror(errno));
			return 1;
		}
		if (!S_ISDIR(st.st_mode)) {
			if (fuzz_replay_one(argv[i]))
				return 1;
			done++;
			continue;
		}
		struct dirent **ents;
		int n = scandir(argv[i], &ents, fuzz_replay_filter, alphasort);
		if (n < 0) {
			fprintf(stderr, "%s: %s\n", argv[i], strerror(errno));
			return 1;
		}
		int rc = 0;
		for (int k = 0; k < n; k++) {
			char p[4096];
			snprintf(p, sizeof(p), "%s/%s", argv[i], ents[k]->d_name);
			if (!rc && stat(p, &st) == 0 && S_ISREG(st.st_mode)) {
				if (fuzz_replay_one(p))
					rc = 1;
				else
					done++;
			}
			free(ents[k]);
		}
		free(ents);
		if (rc)
			return 1;
	}
	fprintf(stderr, "%s: %zu input%s replayed\n", argv[0], done, done == 1 ? "" : "s");
	return 0;
}
#endif

#endif
