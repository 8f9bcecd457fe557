/* Fuzz target for model loading: lib/gguf.c's reader, lib/model.c (hyper-parameters,
 * tensor shapes and types, conversion of non-I2_S weights, the norm gate and gamma
 * rescale of lib/norms.c) and lib/vocab.c + lib/tokenizer.c (the GGUF vocabulary), the
 * way bitnetd loads a model. bn_model_load takes a path, so the input goes through a memfd
 * (/proc/self/fd/N) and is mapped as a model file would be.
 *
 * Each input is loaded with the daemon's default options (norm gate warn); a model that
 * loads is loaded again with the strict gate and the gamma rescale.
 *
 * A refusal must say why. An accepted model keeps the loader's promises: hyper-parameters
 * within the checked ranges, every weight of the expected shape, pointers into the map
 * inside it, a known projection type, the identity of the file read.
 *
 *   scripts/fuzz.sh model 60            (libFuzzer, see tests/fuzz/README)
 *   build/tests/fuzz/fuzz_model FILE|DIR...     (replay; -DBN_FUZZ_STANDALONE)
 *   build/tests/fuzz/fuzz_model --vocab-gguf OUT  (writes corpus/model/vocab-only.gguf:
 *                                                  fixed_vocab.h's tokenizer, no tensors) */
#include "fuzz_common.h"

#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "bitnet/bitnet.h"
#include "chat.h"
#include "error.h"
#include "gguf.h"
#include "model.h"
#include "quant.h"
#include "vocab.h"
#include "vocab_check.h"

static bool in_map(const struct bn_gguf *g, const void *p, uint64_t bytes)
{
	const uint8_t *b = p;
	return b >= g->base && b <= g->base + g->size && bytes <= (uint64_t)(g->base + g->size - b);
}

static uint64_t type_bytes(uint32_t type)
{
	return type == BN_TYPE_F32 ? 4 : 2;
}

/* A norm vector: n floats, in the map (f32) or converted at load. */
static void check_norm(const struct bn_model *m, const float *w, uint32_t n)
{
	FUZZ_CHECK(w != NULL);
	if ((const uint8_t *)w >= m->g->base && (const uint8_t *)w < m->g->base + m->g->size)
		FUZZ_CHECK(in_map(m->g, w, (uint64_t)n * sizeof(float)));
}

static void check_tmat(const struct bn_model *m, const struct bn_tmat *w, uint32_t k,
		       uint32_t rows)
{
	FUZZ_CHECK(w->codes != NULL && w->k == k && w->rows == rows);
	FUZZ_CHECK(k % BN_I2S_BLOCK == 0);
	if (w->src_type == BN_TYPE_I2_S)
		FUZZ_CHECK(in_map(m->g, w->codes, (uint64_t)rows * k / 4));
	FUZZ_CHECK(isfinite(w->scale) && isfinite(w->out_scale));
	FUZZ_CHECK(w->has_out_scale || w->out_scale == 1.0f);
	FUZZ_CHECK(!w->has_out_scale || m->hp.arch == BN_ARCH_BITNET);
}

static void check_model(const struct bn_model *m, size_t size)
{
	const struct bn_hparams *hp = bn_model_hparams(m);
	FUZZ_CHECK(hp->n_embd && hp->n_ff && hp->n_layer && hp->n_head && hp->n_head_kv &&
		   hp->n_ctx_train);
	FUZZ_CHECK(hp->n_layer <= 4096 && hp->n_embd <= 65536 && hp->n_ff <= 262144 &&
		   hp->n_ctx_train <= (1u << 24));
	FUZZ_CHECK(hp->n_embd % hp->n_head == 0 && hp->n_head % hp->n_head_kv == 0);
	FUZZ_CHECK(hp->head_dim * hp->n_head == hp->n_embd && hp->head_dim % 2 == 0);
	FUZZ_CHECK(hp->eps > 0.0f && hp->eps < 1.0f && hp->rope_base > 1.0f &&
		   isfinite(hp->rope_base));
	FUZZ_CHECK((unsigned)hp->arch <= BN_ARCH_LLAMA &&
		   hp->silu == (hp->arch == BN_ARCH_BITNET || hp->arch == BN_ARCH_LLAMA));
	FUZZ_CHECK(hp->sub_norms == (hp->arch != BN_ARCH_LLAMA) &&
		   hp->rope_interleaved == (hp->arch == BN_ARCH_LLAMA));
	struct bn_gguf_str arch;
	FUZZ_CHECK(bn_gguf_get_str(m->g, "general.architecture", &arch) == 0 &&
		   bn_gguf_str_eq(arch, hp->arch_name));

	FUZZ_CHECK(strcmp(bn_model_weight_type(m), "unknown") != 0);
	FUZZ_CHECK(m->embd_type == BN_TYPE_F32 || m->embd_type == BN_TYPE_F16 ||
		   m->embd_type == BN_TYPE_BF16);
	FUZZ_CHECK(m->head_type == BN_TYPE_F32 || m->head_type == BN_TYPE_F16 ||
		   m->head_type == BN_TYPE_BF16);
	uint64_t rows = (uint64_t)hp->n_vocab * hp->n_embd;
	FUZZ_CHECK(in_map(m->g, m->tok_embd, rows * type_bytes(m->embd_type)));
	FUZZ_CHECK(in_map(m->g, m->head, rows * type_bytes(m->head_type)));
	check_norm(m, m->output_norm, hp->n_embd);

	uint32_t kvd = hp->head_dim * hp->n_head_kv;
	for (uint32_t l = 0; l < hp->n_layer; l++) {
		const struct bn_layer *L = &m->layers[l];
		check_norm(m, L->attn_norm, hp->n_embd);
		check_norm(m, L->ffn_norm, hp->n_embd);
		if (hp->sub_norms) {
			check_norm(m, L->attn_sub_norm, hp->n_embd);
			check_norm(m, L->ffn_sub_norm, hp->n_ff);
		} else {
			FUZZ_CHECK(!L->attn_sub_norm && !L->ffn_sub_norm);
		}
		check_tmat(m, &L->wq, hp->n_embd, hp->n_embd);
		check_tmat(m, &L->wk, hp->n_embd, kvd);
		check_tmat(m, &L->wv, hp->n_embd, kvd);
		check_tmat(m, &L->wo, hp->n_embd, hp->n_embd);
		check_tmat(m, &L->wgate, hp->n_embd, hp->n_ff);
		check_tmat(m, &L->wup, hp->n_embd, hp->n_ff);
		check_tmat(m, &L->wdown, hp->n_ff, hp->n_embd);
	}

	struct bn_model_identity id;
	bn_model_identity(m, &id);
	FUZZ_CHECK(id.size == size && strlen(id.header_sha256) == 64);
	FUZZ_CHECK(strspn(id.header_sha256, "0123456789abcdef") == 64);
	size_t nc;
	const struct bn_correction *c = bn_model_corrections(m, &nc);
	for (size_t i = 0; i < nc; i++)
		FUZZ_CHECK(isfinite(c[i].factor) && memchr(c[i].tensor, '\0', sizeof(c[i].tensor)));
}

/* The vocabulary of any GGUF the reader accepts, as the daemon and `bitnet tokenize`
 * read it, whether or not the tensors make a model. */
static void check_vocab(const uint8_t *data, size_t size)
{
	struct bn_gguf *g = NULL;
	struct bn_error err = { 0 };
	if (bn_gguf_parse(&g, data, size, &err) != 0)
		return;   /* fuzz_gguf checks the reader's refusals */
	struct bn_vocab v;
	memset(&v, 0x5a, sizeof(v));
	int rc = bn_vocab_from_gguf(&v, g, &err);
	FUZZ_NOTE("vocab: %d %s\n", rc, err.msg);
	if (rc != 0) {
		FUZZ_CHECK_ERROR(rc, err);
		FUZZ_CHECK(v.n_tokens == 0 && v.tokens == NULL && v.types == NULL &&
			   v.n_merges == 0 && v.merges == NULL && v.bos == -1 && v.eot == -1);
	} else {
		vc_check_vocab(&v);
		struct bn_gguf_str a;
		char arch[64] = "";
		if (bn_gguf_get_str(g, "general.architecture", &a) == 0 && a.len < sizeof(arch) &&
		    !memchr(a.ptr, '\0', a.len)) {
			memcpy(arch, a.ptr, a.len);
			arch[a.len] = '\0';
		}
		vc_check_tokenizer(&v, arch[0] ? arch : NULL, false, NULL, 0);
	}
	bn_vocab_free(&v);
	bn_gguf_close(g);
}

/* Loads the model at path with opts; 0 when it loaded (and kept its promises). */
static int load(const char *path, size_t size, const struct bn_model_opts *opts)
{
	struct bn_model *m = (struct bn_model *)opts;   /* must be cleared */
	struct bn_error err = { 0 };
	int rc = bn_model_load(&m, path, opts, &err);
	FUZZ_NOTE("model (gate %d, rescale %d): %d %s\n", opts->gate, opts->rescale_gamma, rc,
		  err.msg);
	if (rc != 0) {
		FUZZ_CHECK_ERROR(rc, err);
		FUZZ_CHECK(m == NULL);
		return rc;
	}
	check_model(m, size);
	size_t nc;
	bn_model_corrections(m, &nc);
	FUZZ_CHECK(opts->rescale_gamma || nc == 0);
	/* the daemon's next step: the chat format from the embedded template */
	struct bn_gguf_str tmpl;
	char *embedded = NULL;
	if (bn_gguf_get_str(bn_model_gguf(m), "tokenizer.chat_template", &tmpl) == 0)
		embedded = strndup(tmpl.ptr, tmpl.len);
	enum bn_chat_format f = bn_chat_auto(bn_model_hparams(m)->arch_name, embedded);
	FUZZ_CHECK(f == BN_CHAT_RAW || f == BN_CHAT_BITNET || f == BN_CHAT_LLAMA3);
	free(embedded);
	bn_model_free(m);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	check_vocab(data, size);
	const char *path = fuzz_memfd_path(data, size);
	const struct bn_model_opts daemon_default = { .gate = 1 };
	const struct bn_model_opts strict_rescale = { .gate = 2, .rescale_gamma = true };
	if (load(path, size, &daemon_default) == 0)
		load(path, size, &strict_rescale);
	return 0;
}

#ifdef BN_FUZZ_STANDALONE
#include "fixed_vocab.h"
#include "gguf_write.h"

static int write_vocab_gguf(const char *path)
{
	struct bn_vocab v;
	struct bn_ggufw *w = NULL;
	struct bn_error err = { 0 };
	fixed_vocab(&v);
	int rc = bn_ggufw_open(&w, path, &err);
	if (!rc &&
	    !(rc = bn_ggufw_kv_str(w, "general.architecture", "bitnet-b1.58", &err)) &&
	    !(rc = bn_ggufw_kv_str(w, "tokenizer.ggml.model", v.model, &err)) &&
	    !(rc = bn_ggufw_kv_str(w, "tokenizer.ggml.pre", v.pre, &err)) &&
	    !(rc = bn_ggufw_kv_arr_str(w, "tokenizer.ggml.tokens", (const char *const *)v.tokens,
				       v.n_tokens, &err)) &&
	    !(rc = bn_ggufw_kv_arr_i32(w, "tokenizer.ggml.token_type", v.types, v.n_tokens,
				       &err)) &&
	    !(rc = bn_ggufw_kv_arr_str(w, "tokenizer.ggml.merges", (const char *const *)v.merges,
				       v.n_merges, &err)) &&
	    !(rc = bn_ggufw_kv_u32(w, "tokenizer.ggml.bos_token_id", (uint32_t)v.bos, &err)) &&
	    !(rc = bn_ggufw_kv_u32(w, "tokenizer.ggml.eos_token_id", (uint32_t)v.eos, &err)) &&
	    !(rc = bn_ggufw_kv_bool(w, "tokenizer.ggml.add_bos_token", true, &err)) &&
	    !(rc = bn_ggufw_kv_str(w, "tokenizer.chat_template",
				   "{% for m in messages %}<|start_header_id|>{{ m.role }}"
				   "<|end_header_id|>{% endfor %}", &err)))
		rc = bn_ggufw_close(w, &err);
	else
		bn_ggufw_abort(w);
	bn_vocab_free(&v);
	if (rc)
		fprintf(stderr, "%s\n", err.msg);
	return rc ? 1 : 0;
}

int main(int argc, char **argv)
{
	if (argc == 3 && strcmp(argv[1], "--vocab-gguf") == 0)
		return write_vocab_gguf(argv[2]);
	return fuzz_replay_main(argc, argv);
}
#endif
