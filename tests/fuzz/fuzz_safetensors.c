/* Fuzz target for the safetensors reader (lib/safetensors.c): bn_st_parse on the input,
 * and bn_st_json_load (config.json, shard indexes) on the same bytes through a memfd.
 *
 * A refusal must say why. An accepted file keeps safetensors.h's promises: names unique,
 * sorted and found by bn_st_find; every shape's product, byte size and extent checked;
 * the tensors cover the data section exactly, without overlap or holes.
 *
 *   scripts/fuzz.sh safetensors 60      (libFuzzer, see tests/fuzz/README)
 *   build/tests/fuzz/fuzz_safetensors FILE|DIR...   (replay; -DBN_FUZZ_STANDALONE) */
#include "fuzz_common.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "error.h"
#include "safetensors.h"

static int by_offset(const void *a, const void *b)
{
	const struct bn_st_tensor *x = *(const struct bn_st_tensor *const *)a;
	const struct bn_st_tensor *y = *(const struct bn_st_tensor *const *)b;
	if (x->offset != y->offset)
		return x->offset < y->offset ? -1 : 1;
	/* empty tensors may share an offset with the next one */
	return (x->size > y->size) - (x->size < y->size);
}

static void check_file(const struct bn_st_file *f, const uint8_t *data, size_t size)
{
	FUZZ_CHECK(f->base == data && f->size == size && !f->mapped);
	FUZZ_CHECK(f->header_len <= BN_ST_MAX_HEADER && f->data_start == 8 + f->header_len);
	FUZZ_CHECK(f->data_start <= size);
	FUZZ_CHECK(f->n_tensors == 0 || f->tensors != NULL);
	const struct bn_st_tensor **order = malloc((f->n_tensors ? f->n_tensors : 1) *
						   sizeof(*order));   /* [n_tensors] */
	FUZZ_CHECK(order != NULL);
	for (size_t i = 0; i < f->n_tensors; i++) {
		const struct bn_st_tensor *t = &f->tensors[i];
		FUZZ_CHECK(t->name != NULL);
		if (i > 0)
			FUZZ_CHECK(strcmp(f->tensors[i - 1].name, t->name) < 0);
		FUZZ_CHECK(bn_st_find(f, t->name) == t);
		FUZZ_CHECK(strcmp(bn_st_dtype_name(t->dtype), "") != 0);
		size_t es = bn_st_dtype_size(t->dtype);
		FUZZ_CHECK(es >= 1 && es <= 8);
		FUZZ_CHECK(t->n_dims <= BN_ST_MAX_DIMS);
		uint64_t n = 1;
		for (uint32_t d = 0; d < t->n_dims; d++)
			FUZZ_CHECK(!__builtin_mul_overflow(n, t->shape[d], &n));
		FUZZ_CHECK(n == t->n_elems);
		uint64_t bytes;
		FUZZ_CHECK(!__builtin_mul_overflow(n, (uint64_t)es, &bytes) && bytes == t->size);
		FUZZ_CHECK(t->offset <= size - f->data_start &&
			   t->size <= size - f->data_start - t->offset);
		FUZZ_CHECK(t->data == data + f->data_start + t->offset);
		order[i] = t;
	}
	/* the data section, covered exactly */
	qsort(order, f->n_tensors, sizeof(*order), by_offset);
	uint64_t at = 0;
	for (size_t i = 0; i < f->n_tensors; i++) {
		FUZZ_CHECK(order[i]->offset == at);
		at += order[i]->size;
	}
	FUZZ_CHECK(at == size - f->data_start);
	free(order);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct bn_st_file *f = (struct bn_st_file *)&size;   /* must be cleared */
	struct bn_error err = { 0 };
	int rc = bn_st_parse(&f, data, size, "fuzz-input", &err);
	FUZZ_NOTE("safetensors: %d %s\n", rc, err.msg);
	if (rc != 0) {
		FUZZ_CHECK_ERROR(rc, err);
		FUZZ_CHECK(f == NULL);
		FUZZ_CHECK(strstr(err.msg, "fuzz-input") != NULL);
	} else {
		check_file(f, data, size);
		bn_st_close(f);
	}

	/* the same bytes as a small JSON file */
	void *o = &size;
	memset(&err, 0, sizeof(err));
	rc = bn_st_json_load(fuzz_memfd_path(data, size), 1u << 20, &o, &err);
	FUZZ_NOTE("json: %d %s\n", rc, err.msg);
	if (rc != 0) {
		FUZZ_CHECK_ERROR(rc, err);
	} else {
		FUZZ_CHECK(o != NULL);
		json_object_put(o);
	}
	return 0;
}

#ifdef BN_FUZZ_STANDALONE
int main(int argc, char **argv)
{
	return fuzz_replay_main(argc, argv);
}
#endif
