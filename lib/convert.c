/* HF BitNetForCausalLM checkpoint -> bitnet-b1.58 GGUF, and HF LlamaForCausalLM with BitNet
 * quantization -> llama GGUF (see convert.h).
 *
 * What transformers does with the weights (src/transformers/integrations/bitnet.py at
 * huggingface/transformers 0b4060e7f247, read for this file; models/bitnet/modeling_bitnet.py
 * and configuration_bitnet.py for names and defaults):
 *  - pack_weights / unpack_weights pack along the OUTPUT dimension (dim 0 of the
 *    nn.Linear weight [out, in]) into uint8 [P = ceil(out/4), in]: the output rows are cut
 *    into four consecutive chunks of P rows, and row o = i*P + r is stored in packed row r,
 *    bits 2i..2i+1 (least significant pair first: i = 0 in bits 1:0), as code = value + 1.
 *    unpack: rows [i*P, (i+1)*P) = ((packed >> 2i) & 3) - 1. Not interleaved: the
 *    docstring's prose says otherwise, its code and example output do not. Code 3 (value
 *    +2) is never written by pack_weights; here it is refused as not ternary.
 *  - BitLinear.forward (linear_class "bitlinear", BitNetQuantConfig's default when
 *    quantization_config names none): y = F.linear(int8 activations, ternary) then
 *    post_quant_process: y / (input_scale * weight_scale), input_scale = 127/absmax. The
 *    weight_scale DIVIDES: the weight is ternary / weight_scale, so the GGUF scale is
 *    1 / weight_scale (the real quotient rounded once to f32).
 *  - AutoBitLinear.forward in offline mode (linear_class "autobitlinear"): unpacks packed
 *    weights on load, then output * weight_scale: the weight_scale MULTIPLIES. The packed
 *    microsoft/bitnet-b1.58-2B-4T reportedly declares autobitlinear/offline (seen only in
 *    third-party copies: a vLLM BitBLAS backend that multiplies by weight_scale; its
 *    -bf16 sibling declares autobitlinear/online). Whichever it is, the class comes from
 *    config.json here exactly as transformers takes it.
 *  - WeightQuant (online mode, the training rule): s = 1 / mean(|W|).clamp(min=1e-5),
 *    W_q = clamp(round(W * s), -1, 1) / s with torch's round (half to even), in f32.
 * Master weights are ternarized here as this project's trainer does it (tools/train/train.py
 * _QuantWeight: gamma = mean(|W|) clamped to >= 1e-5, codes = clamp(rint(W / gamma)), scale
 * = gamma; the brief's rule). WeightQuant's W * (1/gamma) and 1/(1/gamma) differ from that
 * by one f32 rounding: a code can differ only where W / gamma is within an ulp of +-0.5,
 * and bitnet.cpp's converter (which stores 1/s) gets a scale within one ulp of gamma.
 * gamma is the mean computed in double with compensated summation, rounded to f32.
 *
 * Names: model.embed_tokens.weight, model.norm.weight, lm_head.weight (absent when tied),
 * model.layers.N.{input_layernorm, post_attention_layernorm}.weight,
 * model.layers.N.self_attn.{q,k,v,o}_proj.weight, model.layers.N.self_attn.attn_sub_norm.weight,
 * model.layers.N.mlp.{gate,up,down}_proj.weight, model.layers.N.mlp.ffn_sub_norm.weight, and
 * <proj>.weight_scale beside packed weights. The rotary embedding is rotate_half (NEOX), as
 * in the engine, so q/k rows are not permuted.
 *
 * LlamaForCausalLM (models/llama/modeling_llama.py; transformers replaces its nn.Linear
 * projections by the same BitLinear / AutoBitLinear when quantization_config.quant_method is
 * "bitnet", as in tiiuae/Falcon3-*-1.58bit and HF1BitLLM/Llama3-8B-1.58-100B-tokens): the
 * same names without the two sub-norms, SiLU, and rotate_half RoPE. The GGUF is arch llama as
 * llama.cpp's (and bitnet.cpp's) converter writes it: q/k rows permuted per head so that
 * llama.cpp's LLAMA_ROPE_TYPE_NORM rope, pairs (2i, 2i+1), computes HF's rotation (src_row);
 * bitnet.cpp unpacks packed weights first and permutes the [out, in] result, as here. */
#include "convert.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <json-c/json.h>

#include "bitnet/kernel.h"
#include "gguf.h"
#include "gguf_write.h"
#include "quant.h"
#include "safetensors.h"
#include "tokjson.h"
#include "vocab.h"

#define MAX_CONFIG_BYTES (16u << 20)
#define MAX_TEMPLATE_BYTES (1u << 20)
#define IO_BUF (1u << 20)
#define PROGRESS_STEP (8u << 20)

/* ---- config.json --------------------------------------------------------------------- */

/* The checkpoint classes: what differs between them, and transformers' config defaults
 * (BitNetConfig; LlamaConfig at huggingface/transformers models/llama). */
struct hf_arch {
	const char *hf_class, *model_type;
	const char *gguf_arch;        /* general.architecture written */
	const char *act;              /* the only hidden_act the engine runs for it */
	bool sub_norms;               /* attn_sub_norm / ffn_sub_norm tensors */
	bool permute_qk;              /* q/k rows into llama.cpp's interleaved-RoPE order */
	bool need_bitnet_quant;       /* quantization_config.quant_method "bitnet" required */
	uint32_t hidden, ff, layers, heads, vocab, ctx;
	float eps, rope_theta;
};

static const struct hf_arch hf_archs[] = {
	{ "BitNetForCausalLM", "bitnet", "bitnet-b1.58", "relu2", true, false, false,
	  2560, 6912, 30, 20, 128256, 2048, 1e-5f, 500000.0f },
	/* a LlamaForCausalLM without BitNet quantization is a full-precision model: refused
	 * rather than ternarized */
	{ "LlamaForCausalLM", "llama", "llama", "silu", false, true, true,
	  4096, 11008, 32, 32, 32000, 2048, 1e-6f, 10000.0f },
};

struct hf_config {
	const struct hf_arch *arch;
	uint32_t hidden, ff, layers, heads, kv_heads, vocab, ctx;
	float eps, rope_theta;
	bool tie;
	bool autobitlinear;          /* weight_scale multiplies (else divides) */
	int32_t bos, eos, pad;       /* -1: not given */
};

static int cfg_u32(json_object *root, const char *path, const char *key, uint32_t def,
                   uint32_t *out, struct bn_error *err)
{
	json_object *v;
	*out = def;
	if (!json_object_object_get_ex(root, key, &v) || json_object_is_type(v, json_type_null))
		return 0;
	int64_t x = json_object_get_int64(v);
	if (!json_object_is_type(v, json_type_int) || x <= 0 || x > UINT32_MAX)
		return bn_err_set(err, -EBADMSG, "file %s: %s is not an integer in 1..%u", path, key,
		                  UINT32_MAX);
	*out = (uint32_t)x;
	return 0;
}

static int cfg_f32(json_object *root, const char *path, const char *key, float def, float *out,
                   struct bn_error *err)
{
	json_object *v;
	*out = def;
	if (!json_object_object_get_ex(root, key, &v) || json_object_is_type(v, json_type_null))
		return 0;
	if (!json_object_is_type(v, json_type_double) && !json_object_is_type(v, json_type_int))
		return bn_err_set(err, -EBADMSG, "file %s: %s is not a number", path, key);
	/* python writes the shortest repr of the double; the engine keeps an f32 */
	float f = (float)json_object_get_double(v);
	if (!isfinite(f) || f <= 0.0f)
		return bn_err_set(err, -EBADMSG, "file %s: %s = %g is not a finite positive f32", path,
		                  key, json_object_get_double(v));
	*out = f;
	return 0;
}

static int cfg_bool(json_object *root, const char *path, const char *key, bool def, bool *out,
                    struct bn_error *err)
{
	json_object *v;
	*out = def;
	if (!json_object_object_get_ex(root, key, &v) || json_object_is_type(v, json_type_null))
		return 0;
	if (!json_object_is_type(v, json_type_boolean))
		return bn_err_set(err, -EBADMSG, "file %s: %s is not true or false", path, key);
	*out = json_object_get_boolean(v);
	return 0;
}

/* An id key: an integer, a list of them (the first counts) or null. */
static int cfg_id(json_object *root, const char *path, const char *key, int32_t *out,
                  struct bn_error *err)
{
	json_object *v;
	*out = -1;
	if (!json_object_object_get_ex(root, key, &v) || json_object_is_type(v, json_type_null))
		return 0;
	if (json_object_is_type(v, json_type_array) && json_object_array_length(v) > 0)
		v = json_object_array_get_idx(v, 0);
	int64_t x = json_object_get_int64(v);
	if (!json_object_is_type(v, json_type_int) || x < 0 || x > INT32_MAX)
		return bn_err_set(err, -EBADMSG, "file %s: %s is not a token id", path, key);
	*out = (int32_t)x;
	return 0;
}

static const char *cfg_str(json_object *root, const char *key)
{
	json_object *v;
	if (!json_object_object_get_ex(root, key, &v) || !json_object_is_type(v, json_type_string))
		return NULL;
	return json_object_get_string(v);
}

/* The architecture: a known class in architectures and/or its model_type; neither may name
 * another. */
static int cfg_arch(json_object *root, const char *path, const struct hf_arch **out,
                    struct bn_error *err)
{
	const char *mt = cfg_str(root, "model_type");
	const struct hf_arch *A = NULL;
	bool have_arch = false, other = false;
	json_object *v = NULL;
	if (json_object_object_get_ex(root, "architectures", &v) &&
	    json_object_is_type(v, json_type_array)) {
		have_arch = json_object_array_length(v) > 0;
		for (size_t i = 0; i < json_object_array_length(v); i++) {
			json_object *a = json_object_array_get_idx(v, i);
			const char *as = json_object_is_type(a, json_type_string) ?
			                 json_object_get_string(a) : "";
			const struct hf_arch *f = NULL;
			for (size_t k = 0; k < sizeof hf_archs / sizeof hf_archs[0]; k++)
				if (!strcmp(as, hf_archs[k].hf_class))
					f = &hf_archs[k];
			other |= !f || (A && f != A);
			A = A ? A : f;
		}
	}
	for (size_t k = 0; mt && !have_arch && k < sizeof hf_archs / sizeof hf_archs[0]; k++)
		if (!strcmp(mt, hf_archs[k].model_type))
			A = &hf_archs[k];
	if (!A || other || (mt && strcmp(mt, A->model_type))) {
		json_object *a0 = have_arch ? json_object_array_get_idx(v, 0) : NULL;
		return bn_err_set(err, -ENOTSUP, "file %s: architecture %s / model_type %s: only "
		                  "BitNetForCausalLM (model_type \"bitnet\") or LlamaForCausalLM "
		                  "(model_type \"llama\") with BitNet quantization can be converted",
		                  path, a0 && json_object_is_type(a0, json_type_string) ?
		                          json_object_get_string(a0) : "(none)",
		                  mt ? mt : "(none)");
	}
	*out = A;
	return 0;
}

/* The shape and the scalar hyper-parameters (defaults from the architecture), checked. */
static int cfg_shape(json_object *root, const char *path, struct hf_config *c,
                     struct bn_error *err)
{
	const struct hf_arch *A = c->arch;
	int rc;
	if ((rc = cfg_u32(root, path, "hidden_size", A->hidden, &c->hidden, err)) ||
	    (rc = cfg_u32(root, path, "intermediate_size", A->ff, &c->ff, err)) ||
	    (rc = cfg_u32(root, path, "num_hidden_layers", A->layers, &c->layers, err)) ||
	    (rc = cfg_u32(root, path, "num_attention_heads", A->heads, &c->heads, err)) ||
	    (rc = cfg_u32(root, path, "num_key_value_heads", c->heads, &c->kv_heads, err)) ||
	    (rc = cfg_u32(root, path, "vocab_size", A->vocab, &c->vocab, err)) ||
	    (rc = cfg_u32(root, path, "max_position_embeddings", A->ctx, &c->ctx, err)) ||
	    (rc = cfg_f32(root, path, "rms_norm_eps", A->eps, &c->eps, err)) ||
	    (rc = cfg_f32(root, path, "rope_theta", A->rope_theta, &c->rope_theta, err)) ||
	    (rc = cfg_bool(root, path, "tie_word_embeddings", false, &c->tie, err)) ||
	    (rc = cfg_id(root, path, "bos_token_id", &c->bos, err)) ||
	    (rc = cfg_id(root, path, "eos_token_id", &c->eos, err)) ||
	    (rc = cfg_id(root, path, "pad_token_id", &c->pad, err)))
		return rc;
	json_object *v;
	const char *act = cfg_str(root, "hidden_act");
	if (json_object_object_get_ex(root, "hidden_act", &v) && (!act || strcmp(act, A->act)))
		return bn_err_set(err, -ENOTSUP, "file %s: hidden_act %s: the engine runs %s only "
		                  "for %s", path, act ? act : "(not a string)", A->act, A->hf_class);
	bool bias = false, mlp_bias = false;
	if ((rc = cfg_bool(root, path, "attention_bias", false, &bias, err)) ||
	    (rc = cfg_bool(root, path, "mlp_bias", false, &mlp_bias, err)))
		return rc;
	if (bias || mlp_bias)
		return bn_err_set(err, -ENOTSUP, "file %s: biases are not supported", path);
	return 0;
}

/* rope_scaling (transformers 4) or rope_parameters (5, which also moves rope_theta there):
 * only the unscaled rope. */
static int cfg_rope(json_object *root, const char *path, struct hf_config *c,
                    struct bn_error *err)
{
	static const char *const rope_keys[] = { "rope_scaling", "rope_parameters" };
	for (int i = 0; i < 2; i++) {
		json_object *v;
		if (!json_object_object_get_ex(root, rope_keys[i], &v) ||
		    json_object_is_type(v, json_type_null))
			continue;
		const char *rt = cfg_str(v, "rope_type");
		rt = rt ? rt : cfg_str(v, "type");
		if (!json_object_is_type(v, json_type_object) || (rt && strcmp(rt, "default")) ||
		    (!rt && i == 0))
			return bn_err_set(err, -ENOTSUP, "file %s: %s (type %s) is not supported: only "
			                  "unscaled RoPE", path, rope_keys[i], rt ? rt : "(none)");
		int rc;
		if (i == 1 &&
		    (rc = cfg_f32(v, path, "rope_theta", c->rope_theta, &c->rope_theta, err)))
			return rc;
	}
	return 0;
}

/* The heads against the width, head_dim, and the ranges the engine accepts. */
static int cfg_check_heads(json_object *root, const char *path, const struct hf_config *c,
                           struct bn_error *err)
{
	if (c->hidden % c->heads || c->heads % c->kv_heads || (c->hidden / c->heads) % 2)
		return bn_err_set(err, -EBADMSG, "file %s: %u heads / %u kv heads do not fit width %u",
		                  path, c->heads, c->kv_heads, c->hidden);
	uint32_t hd;
	int rc = cfg_u32(root, path, "head_dim", c->hidden / c->heads, &hd, err);
	if (rc)
		return rc;
	if (hd != c->hidden / c->heads)
		return bn_err_set(err, -ENOTSUP, "file %s: head_dim %u is not hidden_size / "
		                  "num_attention_heads = %u", path, hd, c->hidden / c->heads);
	if (c->layers > 4096 || c->hidden > 65536 || c->ff > 262144 || c->ctx > (1u << 24) ||
	    c->vocab > (1u << 24))
		return bn_err_set(err, -EBADMSG, "file %s: hyper-parameters out of range", path);
	return 0;
}

/* quantization_config: BitNetQuantConfig (q: the object). */
static int cfg_quant(json_object *q, const char *path, struct hf_config *c,
                     struct bn_error *err)
{
	const char *qm = cfg_str(q, "quant_method");
	const char *lc = cfg_str(q, "linear_class");
	bool rms = false;
	if (!json_object_is_type(q, json_type_object) || !qm || strcmp(qm, "bitnet"))
		return bn_err_set(err, -ENOTSUP, "file %s: quantization_config.quant_method %s is "
		                  "not bitnet", path, qm ? qm : "(missing)");
	if (lc && strcmp(lc, "bitlinear") && strcmp(lc, "autobitlinear"))
		return bn_err_set(err, -ENOTSUP, "file %s: quantization_config.linear_class %s",
		                  path, lc);
	c->autobitlinear = lc && !strcmp(lc, "autobitlinear");
	int rc = cfg_bool(q, path, "use_rms_norm", false, &rms, err);
	if (rc)
		return rc;
	if (rms)
		return bn_err_set(err, -ENOTSUP, "file %s: quantization_config.use_rms_norm (a norm "
		                  "inside every BitLinear) is not supported", path);
	/* modules left as nn.Linear keep full-precision weights, which would be ternarized
	 * here: only the head and the embedding (never BitLinear anyway) may be named */
	json_object *keep;
	if (!json_object_object_get_ex(q, "modules_to_not_convert", &keep) ||
	    !json_object_is_type(keep, json_type_array))
		return 0;
	for (size_t i = 0; i < json_object_array_length(keep); i++) {
		json_object *e = json_object_array_get_idx(keep, i);
		const char *es = json_object_is_type(e, json_type_string) ?
		                 json_object_get_string(e) : "(not a string)";
		if (strcmp(es, "lm_head") && strcmp(es, "embed_tokens") &&
		    strcmp(es, "model.embed_tokens"))
			return bn_err_set(err, -ENOTSUP, "file %s: quantization_config."
			                  "modules_to_not_convert names %.64s: full-precision "
			                  "projections are not supported", path, es);
	}
	return 0;
}

static int load_config(const char *path, struct hf_config *c, struct bn_error *err)
{
	void *jv;
	int rc = bn_st_json_load(path, MAX_CONFIG_BYTES, &jv, err);
	if (rc)
		return rc;
	json_object *root = jv, *q;
	if (!json_object_is_type(root, json_type_object)) {
		rc = bn_err_set(err, -EBADMSG, "file %s: not a JSON object", path);
		goto out;
	}
	if ((rc = cfg_arch(root, path, &c->arch, err)) || (rc = cfg_shape(root, path, c, err)) ||
	    (rc = cfg_rope(root, path, c, err)) || (rc = cfg_check_heads(root, path, c, err)))
		goto out;
	c->autobitlinear = false;
	bool quant = json_object_object_get_ex(root, "quantization_config", &q) &&
	             !json_object_is_type(q, json_type_null);
	if (!quant && c->arch->need_bitnet_quant)
		rc = bn_err_set(err, -ENOTSUP, "file %s: %s without quantization_config.quant_method "
		                "\"bitnet\" is a full-precision model; only BitNet-quantized (ternary) "
		                "checkpoints are converted", path, c->arch->hf_class);
	else if (quant)
		rc = cfg_quant(q, path, c, err);
out:
	json_object_put(root);
	return rc;
}

/* ---- tokenizer ------------------------------------------------------------------------- */

static int32_t find_token(const struct bn_vocab *v, const char *s)
{
	for (uint32_t i = 0; i < v->n_tokens; i++)
		if (!strcmp(v->tokens[i], s))
			return (int32_t)i;
	return -1;
}

/* A tokenizer_config token: "text" or {"content": "text", ...}. NULL when absent. */
static const char *tc_token(json_object *root, const char *key)
{
	json_object *v, *c;
	if (!json_object_object_get_ex(root, key, &v))
		return NULL;
	if (json_object_is_type(v, json_type_string))
		return json_object_get_string(v);
	if (json_object_is_type(v, json_type_object) && json_object_object_get_ex(v, "content", &c) &&
	    json_object_is_type(c, json_type_string))
		return json_object_get_string(c);
	return NULL;
}

static int tc_id(const struct bn_vocab *v, json_object *tc, const char *path, const char *key,
                 int32_t *out, struct bn_error *err)
{
	const char *s = tc_token(tc, key);
	*out = -1;
	if (!s)
		return 0;
	if ((*out = find_token(v, s)) < 0)
		return bn_err_set(err, -EBADMSG, "file %s: %s '%.64s' is not in the vocabulary", path,
		                  key, s);
	return 0;
}

static char *read_text(const char *path, size_t max, struct bn_error *err)
{
	FILE *f = fopen(path, "rb");
	if (!f) {
		bn_err_set(err, -errno, "file %s: %s", path, strerror(errno));
		return NULL;
	}
	char *b = malloc(max + 1);
	size_t n = b ? fread(b, 1, max + 1, f) : 0;
	fclose(f);
	if (!b || n > max || memchr(b, '\0', n)) {
		free(b);
		bn_err_set(err, -EBADMSG, "file %s: not a text of at most %zu bytes", path, max);
		return NULL;
	}
	b[n] = '\0';
	return b;
}

struct tok {
	struct bn_vocab v;
	char *chat_template;         /* NULL: none */
};

/* tokenizer.json through bn_tokjson_load, then the special ids: config.json's ids first,
 * then tokenizer_config.json's texts, then the LLaMA-3 texts tokjson found. */
static int load_tokenizer(const struct bn_convert_opts *o, const struct hf_config *c,
                          struct tok *t, struct bn_error *err)
{
	char path[4096];
	const char *tj = o->tokenizer_json;
	if (!tj) {
		snprintf(path, sizeof path, "%s/tokenizer.json", o->hf_dir);
		tj = path;
	}
	int rc = bn_tokjson_load(tj, &t->v, err);
	if (rc)
		return rc;
	struct bn_vocab *v = &t->v;
	int32_t bos = -1, eos = -1, pad = -1;
	bool add_bos = true;
	snprintf(path, sizeof path, "%s/tokenizer_config.json", o->hf_dir);
	struct stat st;
	if (stat(path, &st) == 0) {
		void *jv;
		if ((rc = bn_st_json_load(path, MAX_CONFIG_BYTES, &jv, err)))
			return rc;
		json_object *tc = jv, *ct;
		if (!json_object_is_type(tc, json_type_object))
			rc = bn_err_set(err, -EBADMSG, "file %s: not a JSON object", path);
		if (!rc && !(rc = tc_id(v, tc, path, "bos_token", &bos, err)) &&
		    !(rc = tc_id(v, tc, path, "eos_token", &eos, err)) &&
		    !(rc = tc_id(v, tc, path, "pad_token", &pad, err)))
			rc = cfg_bool(tc, path, "add_bos_token", true, &add_bos, err);
		if (!rc && json_object_object_get_ex(tc, "chat_template", &ct)) {
			const char *s = NULL;
			if (json_object_is_type(ct, json_type_string)) {
				s = json_object_get_string(ct);
			} else if (json_object_is_type(ct, json_type_array)) {
				/* [{"name": "default", "template": "..."}, ...] */
				for (size_t i = 0; i < json_object_array_length(ct); i++) {
					json_object *e = json_object_array_get_idx(ct, i);
					const char *nm = cfg_str(e, "name"), *tp = cfg_str(e, "template");
					if (nm && tp && !strcmp(nm, "default"))
						s = tp;
				}
			}
			if (s && !(t->chat_template = strdup(s)))
				rc = bn_err_set(err, -ENOMEM, "out of memory");
		}
		json_object_put(tc);
		if (rc)
			return rc;
	}
	if (!t->chat_template) {
		snprintf(path, sizeof path, "%s/chat_template.jinja", o->hf_dir);
		if (stat(path, &st) == 0 && !(t->chat_template = read_text(path, MAX_TEMPLATE_BYTES, err)))
			return err->code;
	}
	/* eot: "<|eot_id|>" when present (tokjson found it), else a tokenizer_config eos that
	 * is not the model's eos (LLaMA-3 chat configs name the turn end there) */
	int32_t model_eos = c->eos >= 0 ? c->eos : eos >= 0 ? eos : v->eos;
	if (v->eot < 0 && eos >= 0 && eos != model_eos)
		v->eot = eos;
	v->bos = c->bos >= 0 ? c->bos : bos >= 0 ? bos : v->bos;
	v->eos = model_eos;
	v->pad = c->pad >= 0 ? c->pad : pad;
	v->add_bos = add_bos;
	return 0;
}

/* Pads the vocabulary up to the embedding's rows with unused "[PAD<id>]" tokens. */
static int pad_vocab(struct bn_vocab *v, uint32_t rows, struct bn_error *err)
{
	if (v->n_tokens >= rows)
		return 0;
	char **t = realloc(v->tokens, rows * sizeof *t);
	if (!t)
		return bn_err_set(err, -ENOMEM, "out of memory");
	v->tokens = t;
	int32_t *ty = realloc(v->types, rows * sizeof *ty);
	if (!ty)
		return bn_err_set(err, -ENOMEM, "out of memory");
	v->types = ty;
	while (v->n_tokens < rows) {
		char buf[32];
		snprintf(buf, sizeof buf, "[PAD%u]", v->n_tokens);
		if (!(v->tokens[v->n_tokens] = strdup(buf)))
			return bn_err_set(err, -ENOMEM, "out of memory");
		v->types[v->n_tokens++] = BN_TOKEN_UNUSED;
	}
	return 0;
}

/* ---- the plan: every output tensor with its source -------------------------------------- */

enum kind { K_EMBD, K_NORM, K_PROJ };
enum form { F_PACKED, F_MASTER, F_TERNARY };

struct item {
	char name[64];                    /* GGUF name */
	enum kind kind;
	uint32_t n_dims;
	uint64_t ne[2];                   /* ggml order: ne[0] the row length */
	uint32_t type;
	const struct bn_st_tensor *src;   /* the weight */
	const struct bn_st_file *file;
	const struct bn_st_tensor *ws;    /* projections: weight_scale, NULL for master weights */
	enum form form;
	uint32_t perm_heads;              /* q/k of arch llama: heads whose rows are permuted, 0:
	                                   * none */
};

struct conv {
	const struct bn_convert_opts *o;
	struct hf_config cfg;
	struct bn_st_model *m;
	bool *used;                       /* [m->n_tensors] consumed by the plan */
	struct item *items;               /* [n_items] */
	size_t n_items;
	struct bn_ggufw *w;
	uint64_t done, total, last_report;
	int8_t *tern;                     /* [max_k] a ternary row */
	float *f;                         /* [max_k] a float row */
	uint8_t *row;                     /* [max_k * 4] an encoded row */
	struct bn_convert_report *rep;
};

static bool is_float(enum bn_st_dtype d)
{
	return d == BN_ST_F32 || d == BN_ST_F16 || d == BN_ST_BF16;
}

/* Element i of a float tensor (F32, F16, BF16, F64), as float. */
static float load_f(const struct bn_st_tensor *t, uint64_t i)
{
	const uint8_t *p = t->data + i * bn_st_dtype_size(t->dtype);
	switch (t->dtype) {
	case BN_ST_F32: {
		float f;
		memcpy(&f, p, 4);
		return f;
	}
	case BN_ST_F64: {
		double d;
		memcpy(&d, p, 8);
		return (float)d;
	}
	default: {
		uint16_t h;
		memcpy(&h, p, 2);
		return t->dtype == BN_ST_F16 ? bn_f16_to_f32(h) : bn_bf16_to_f32(h);
	}
	}
}

static double load_d(const struct bn_st_tensor *t, uint64_t i)
{
	if (t->dtype == BN_ST_F64) {
		double d;
		memcpy(&d, t->data + i * 8, 8);
		return d;
	}
	return (double)load_f(t, i);
}

/* Drops a tensor's pages from the resident set as it is consumed front to back, a few MiB
 * at a time, so that one big tensor (the embedding) does not stay resident either. */
#define DROP_STEP (8u << 20)

struct drop {
	const struct bn_st_file *f;
	const uint8_t *from;     /* consumed and not yet dropped from here */
};

static void drop_upto(struct drop *d, const uint8_t *to)
{
	if ((size_t)(to - d->from) >= DROP_STEP) {
		bn_st_release_bytes(d->f, d->from, (size_t)(to - d->from));
		d->from = to;
	}
}

static const char *shape_str(const struct bn_st_tensor *t, char *buf, size_t cap)
{
	size_t n = (size_t)snprintf(buf, cap, "[");
	for (uint32_t d = 0; d < t->n_dims && n < cap; d++)
		n += (size_t)snprintf(buf + n, cap - n, "%s%llu", d ? ", " : "",
		                      (unsigned long long)t->shape[d]);
	if (n < cap)
		snprintf(buf + n, cap - n, "]");
	return buf;
}

static int ref_cmp(const void *key, const void *elem)
{
	return strcmp(key, ((const struct bn_st_ref *)elem)->t->name);
}

/* Looks a tensor up and marks it consumed. */
static const struct bn_st_tensor *take(struct conv *cv, const char *name,
                                       const struct bn_st_file **file)
{
	const struct bn_st_ref *r = bsearch(name, cv->m->index, cv->m->n_tensors,
	                                    sizeof *cv->m->index, ref_cmp);
	if (!r)
		return NULL;
	cv->used[r - cv->m->index] = true;
	if (file)
		*file = r->f;
	return r->t;
}

static int need_float(const struct conv *cv, const struct bn_st_file *f,
                      const struct bn_st_tensor *t, uint64_t d0, uint64_t d1, struct bn_error *err)
{
	char sh[96];
	(void)cv;
	if (!is_float(t->dtype))
		return bn_err_set(err, -ENOTSUP, "file %s: tensor %s: dtype %s (F32, F16 or BF16 "
		                  "expected)", f->path, t->name, bn_st_dtype_name(t->dtype));
	bool ok = d1 ? t->n_dims == 2 && t->shape[0] == d0 && t->shape[1] == d1
	             : t->n_dims == 1 && t->shape[0] == d0;
	if (!ok) {
		if (d1)
			return bn_err_set(err, -EBADMSG, "file %s: tensor %s: shape %s, expected [%llu, %llu]",
			                  f->path, t->name, shape_str(t, sh, sizeof sh),
			                  (unsigned long long)d0, (unsigned long long)d1);
		return bn_err_set(err, -EBADMSG, "file %s: tensor %s: shape %s, expected [%llu]",
		                  f->path, t->name, shape_str(t, sh, sizeof sh), (unsigned long long)d0);
	}
	return 0;
}

/* GGUF name: "blk.<layer>.<name>", or name itself for layer < 0 */
static struct item *new_item(struct conv *cv, enum kind k, const char *name, int layer)
{
	struct item *it = &cv->items[cv->n_items++];
	memset(it, 0, sizeof *it);
	it->kind = k;
	if (layer < 0)
		snprintf(it->name, sizeof it->name, "%s", name);
	else
		snprintf(it->name, sizeof it->name, "blk.%d.%s", layer, name);
	return it;
}

static int missing(const struct conv *cv, const char *name, struct bn_error *err)
{
	return bn_err_set(err, -EBADMSG, "checkpoint %s: tensor %s is missing", cv->o->hf_dir, name);
}

/* A norm vector: HF name -> F32 [n]. */
static int plan_norm(struct conv *cv, const char *gg, int layer, const char *hf, uint32_t n,
                     struct bn_error *err)
{
	struct item *it = new_item(cv, K_NORM, gg, layer);
	if (!(it->src = take(cv, hf, &it->file)))
		return missing(cv, hf, err);
	it->n_dims = 1;
	it->ne[0] = n;
	it->ne[1] = 1;
	it->type = BN_TYPE_F32;
	return need_float(cv, it->file, it->src, n, 0, err);
}

/* The embedding or the head: [rows, n_embd] -> {n_embd, rows} in type (F16, or Q8_0 for
 * the head). */
static int plan_embd(struct conv *cv, const char *gg, const char *hf, uint32_t type,
                     struct bn_error *err)
{
	struct item *it = new_item(cv, K_EMBD, gg, -1);
	if (!(it->src = take(cv, hf, &it->file)))
		return missing(cv, hf, err);
	it->n_dims = 2;
	it->ne[0] = cv->cfg.hidden;
	it->ne[1] = cv->cfg.vocab;
	it->type = type;
	if (type == BN_TYPE_Q8_0 && cv->cfg.hidden % BN_Q8_0_BLOCK)
		return bn_err_set(err, -ENOTSUP, "file %s: tensor %s: hidden size %u is not a multiple "
		                  "of %d (q8_0 head)", it->file->path, hf, cv->cfg.hidden, BN_Q8_0_BLOCK);
	return need_float(cv, it->file, it->src, cv->cfg.vocab, cv->cfg.hidden, err);
}

/* A projection: HF prefix (no ".weight") -> {in, out} in the target type; perm_heads > 0
 * permutes the rows of that many heads (see src_row). */
static int plan_proj(struct conv *cv, const char *gg, int layer, const char *hf,
                     uint32_t in, uint32_t out, uint32_t perm_heads, struct bn_error *err)
{
	char wn[192], sn[192], sh[96];
	snprintf(wn, sizeof wn, "%s.weight", hf);
	snprintf(sn, sizeof sn, "%s.weight_scale", hf);
	struct item *it = new_item(cv, K_PROJ, gg, layer);
	if (!(it->src = take(cv, wn, &it->file)))
		return missing(cv, wn, err);
	const struct bn_st_file *sf = NULL;
	it->ws = take(cv, sn, &sf);
	it->n_dims = 2;
	it->ne[0] = in;
	it->ne[1] = out;
	it->type = cv->o->wtype;
	it->perm_heads = perm_heads;
	const struct bn_st_tensor *t = it->src;
	const char *p = it->file->path;
	if (t->dtype == BN_ST_U8) {
		if (!it->ws)
			return bn_err_set(err, -EBADMSG, "file %s: tensor %s: packed U8 weights but no %s",
			                  p, wn, sn);
		if (out % 4 || t->n_dims != 2 || t->shape[0] != out / 4 || t->shape[1] != in)
			return bn_err_set(err, -EBADMSG, "file %s: tensor %s: packed shape %s, expected "
			                  "[%u, %u] (4 values a byte along the %u outputs)", p, wn,
			                  shape_str(t, sh, sizeof sh), out / 4, in, out);
		it->form = F_PACKED;
	} else if (is_float(t->dtype)) {
		int rc = need_float(cv, it->file, t, out, in, err);
		if (rc)
			return rc;
		it->form = it->ws ? F_TERNARY : F_MASTER;
	} else {
		return bn_err_set(err, -ENOTSUP, "file %s: tensor %s: dtype %s (U8 packed or F32/F16/"
		                  "BF16 expected)", p, wn, bn_st_dtype_name(t->dtype));
	}
	if (it->ws && (it->ws->n_elems != 1 || it->ws->n_dims > 1 ||
	               (!is_float(it->ws->dtype) && it->ws->dtype != BN_ST_F64)))
		return bn_err_set(err, -EBADMSG, "file %s: tensor %s: %s %s, one float expected",
		                  sf->path, sn, bn_st_dtype_name(it->ws->dtype),
		                  shape_str(it->ws, sh, sizeof sh));
	uint32_t blk = it->type == BN_TYPE_I2_S ? BN_I2S_BLOCK : BN_QK_K;
	if (in % blk)
		return bn_err_set(err, -ENOTSUP, "file %s: tensor %s: input width %u is not a multiple of "
		                  "%u (%s blocks)", p, wn, in, blk, bn_ggml_type_name(it->type));
	return 0;
}

static bool ignorable(const char *name, bool tied)
{
	size_t n = strlen(name);
	static const char inv[] = ".rotary_emb.inv_freq";
	/* tied: transformers ties lm_head to the embedding after loading whatever is stored */
	return (tied && !strcmp(name, "lm_head.weight")) ||
	       (n >= sizeof inv - 1 && !strcmp(name + n - (sizeof inv - 1), inv));
}

static int build_plan(struct conv *cv, struct bn_error *err)
{
	const struct hf_config *c = &cv->cfg;
	const struct hf_arch *A = c->arch;
	uint32_t H = c->hidden, FF = c->ff, KV = c->hidden / c->heads * c->kv_heads;
	uint32_t qh = A->permute_qk ? c->heads : 0, kh = A->permute_qk ? c->kv_heads : 0;
	cv->items = calloc(3 + (size_t)c->layers * 11, sizeof *cv->items);
	if (!cv->items)
		return bn_err_set(err, -ENOMEM, "out of memory");
	int rc = plan_embd(cv, "token_embd.weight", "model.embed_tokens.weight", BN_TYPE_F16, err);
	for (uint32_t l = 0; !rc && l < c->layers; l++) {
		char hf[160];
#define HF(s) (snprintf(hf, sizeof hf, "model.layers.%u.%s", l, s), hf)
		if ((rc = plan_norm(cv, "attn_norm.weight", (int)l, HF("input_layernorm.weight"), H, err)) ||
		    (rc = plan_proj(cv, "attn_q.weight", (int)l, HF("self_attn.q_proj"), H, H, qh, err)) ||
		    (rc = plan_proj(cv, "attn_k.weight", (int)l, HF("self_attn.k_proj"), H, KV, kh, err)) ||
		    (rc = plan_proj(cv, "attn_v.weight", (int)l, HF("self_attn.v_proj"), H, KV, 0, err)) ||
		    (rc = plan_proj(cv, "attn_output.weight", (int)l, HF("self_attn.o_proj"), H, H, 0,
		                    err)) ||
		    (A->sub_norms &&
		     (rc = plan_norm(cv, "attn_sub_norm.weight", (int)l,
		                     HF("self_attn.attn_sub_norm.weight"), H, err))) ||
		    (rc = plan_norm(cv, "ffn_norm.weight", (int)l, HF("post_attention_layernorm.weight"),
		                    H, err)) ||
		    (rc = plan_proj(cv, "ffn_gate.weight", (int)l, HF("mlp.gate_proj"), H, FF, 0, err)) ||
		    (rc = plan_proj(cv, "ffn_up.weight", (int)l, HF("mlp.up_proj"), H, FF, 0, err)) ||
		    (rc = plan_proj(cv, "ffn_down.weight", (int)l, HF("mlp.down_proj"), FF, H, 0, err)) ||
		    (A->sub_norms &&
		     (rc = plan_norm(cv, "ffn_sub_norm.weight", (int)l, HF("mlp.ffn_sub_norm.weight"),
		                     FF, err))))
			break;
#undef HF
	}
	if (!rc)
		rc = plan_norm(cv, "output_norm.weight", -1, "model.norm.weight", H, err);
	/* the head: lm_head when untied; with --head q8_0 also a tied one, from the embedding
	 * (the engine then reads output.weight, the embedding stays for the input side) */
	uint32_t ht = cv->o->head_type ? cv->o->head_type : BN_TYPE_F16;
	if (!rc && !c->tie)
		rc = plan_embd(cv, "output.weight", "lm_head.weight", ht, err);
	else if (!rc && ht == BN_TYPE_Q8_0)
		rc = plan_embd(cv, "output.weight", "model.embed_tokens.weight", ht, err);
	for (size_t i = 0; !rc && i < cv->m->n_tensors; i++) {
		const struct bn_st_ref *r = &cv->m->index[i];
		if (!cv->used[i] && !ignorable(r->t->name, c->tie))
			rc = bn_err_set(err, -ENOTSUP, "file %s: tensor %s is not part of a %u-layer "
			                "%s; refusing to drop it", r->f->path, r->t->name, c->layers,
			                A->hf_class);
	}
	return rc;
}

/* ---- streaming ----------------------------------------------------------------------- */

static int emit(struct conv *cv, const void *buf, size_t n, struct bn_error *err)
{
	int rc = bn_ggufw_write(cv->w, buf, n, err);
	if (rc)
		return rc;
	cv->done += n;
	if (cv->o->progress && cv->done - cv->last_report >= PROGRESS_STEP) {
		cv->last_report = cv->done;
		cv->o->progress(cv->o->user, cv->done, cv->total);
	}
	return 0;
}

static int not_finite(const struct item *it, uint64_t r, uint64_t c, float v,
                      struct bn_error *err)
{
	return bn_err_set(err, -EBADMSG, "file %s: tensor %s: element [%llu][%llu] = %g is not finite",
	                  it->file->path, it->src->name, (unsigned long long)r,
	                  (unsigned long long)c, (double)v);
}

/* F16 rows [ne1][ne0] from an F16 (bits copied), BF16 or F32 source; for a Q8_0 head, those
 * F16 rows quantized (the same bytes `bitnet requant --head q8_0` makes of the F16 file). */
static int write_embd(struct conv *cv, const struct item *it, struct bn_error *err)
{
	uint64_t n = it->ne[0];
	uint16_t *h = (uint16_t *)cv->row;   /* [n] */
	uint8_t *q8 = cv->row + n * 2;        /* [n/32 * 34] */
	struct drop dr = { it->file, it->src->data };
	size_t esz = bn_st_dtype_size(it->src->dtype);
	for (uint64_t r = 0; r < it->ne[1]; r++) {
		drop_upto(&dr, it->src->data + r * n * esz);
		for (uint64_t c = 0; c < n; c++) {
			uint64_t i = r * n + c;
			if (it->src->dtype == BN_ST_F16) {
				memcpy(&h[c], it->src->data + i * 2, 2);
				if ((h[c] & 0x7c00) == 0x7c00)
					return not_finite(it, r, c, bn_f16_to_f32(h[c]), err);
				continue;
			}
			float v = load_f(it->src, i);
			if (!isfinite(v))
				return not_finite(it, r, c, v, err);
			h[c] = bn_f32_to_f16(v);
			if (!isfinite(bn_f16_to_f32(h[c])))
				return bn_err_set(err, -ERANGE, "file %s: tensor %s: element [%llu][%llu] = %g "
				                  "overflows f16", it->file->path, it->src->name,
				                  (unsigned long long)r, (unsigned long long)c, (double)v);
		}
		if (it->type == BN_TYPE_Q8_0) {
			bn_f16_decode_row(h, n, cv->f);
			if (bn_q8_0_encode_row(cv->f, n, q8))   /* f16 values always fit */
				return bn_err_set(err, -ERANGE, "file %s: tensor %s: row %llu cannot be "
				                  "quantized to q8_0", it->file->path, it->src->name,
				                  (unsigned long long)r);
			int rc = emit(cv, q8, bn_q8_0_row_bytes(n), err);
			if (rc)
				return rc;
			continue;
		}
		int rc = emit(cv, h, n * 2, err);
		if (rc)
			return rc;
	}
	return 0;
}

static int write_norm(struct conv *cv, const struct item *it, struct bn_error *err)
{
	for (uint64_t c = 0; c < it->ne[0]; c++) {
		cv->f[c] = load_f(it->src, c);
		if (!isfinite(cv->f[c]))
			return not_finite(it, 0, c, cv->f[c], err);
	}
	return emit(cv, cv->f, it->ne[0] * sizeof(float), err);
}

/* The projection's f32 scale: from weight_scale (packed, ternary floats) or the absmean of
 * the master weights (one pass over the tensor). */
static int proj_scale(const struct conv *cv, const struct item *it, float *out,
                      struct bn_error *err)
{
	if (it->ws) {
		double w = load_d(it->ws, 0);
		double s = cv->cfg.autobitlinear ? w : 1.0 / w;
		float f = (float)s;
		if (!isfinite(w) || w == 0.0 || !isfinite(f) || f == 0.0f)
			return bn_err_set(err, -EBADMSG, "tensor %s: weight_scale %g gives no finite "
			                  "nonzero f32 scale (%s: the weight is ternary %s weight_scale)",
			                  it->ws->name, w, cv->cfg.autobitlinear ? "autobitlinear" :
			                  "bitlinear", cv->cfg.autobitlinear ? "x" : "/");
		*out = f;
		return 0;
	}
	/* Neumaier summation in double: the mean is the exact one rounded once to f32 (for
	 * bf16 weights of real sizes the sum is exact) */
	uint64_t k = it->ne[0], rows = it->ne[1];
	double sum = 0.0, comp = 0.0;
	struct drop dr = { it->file, it->src->data };
	for (uint64_t r = 0; r < rows; r++) {
		drop_upto(&dr, it->src->data + r * k * bn_st_dtype_size(it->src->dtype));
		for (uint64_t c = 0; c < k; c++) {
			float v = load_f(it->src, r * k + c);
			if (!isfinite(v))
				return not_finite(it, r, c, v, err);
			double a = fabs((double)v), t = sum + a;
			comp += fabs(sum) >= a ? (sum - t) + a : (a - t) + sum;
			sum = t;
		}
	}
	float mean = (float)((sum + comp) / (double)(k * rows));
	if (!isfinite(mean))
		return bn_err_set(err, -ERANGE, "file %s: tensor %s: mean |W| = %g overflows f32",
		                  it->file->path, it->src->name, (sum + comp) / (double)(k * rows));
	*out = mean >= 1e-5f ? mean : 1e-5f;   /* clamp(min=1e-5) as in training */
	return 0;
}

/* The checkpoint's row for GGUF row o. HF llama rotates q/k halves (pairs (i, i + d/2) of a
 * d-row head, rotate_half); llama.cpp's converter (LlamaModel.permute) reorders each head's
 * rows so that its interleaved RoPE rotates the same pairs as (2i, 2i+1): GGUF row 2i + j of
 * a head is HF row j * d/2 + i. q.k is unchanged, the same permutation being on both. */
static uint64_t src_row(const struct item *it, uint64_t o)
{
	if (!it->perm_heads)
		return o;
	uint64_t d = it->ne[1] / it->perm_heads, r = o % d;
	return o - r + (r % 2) * (d / 2) + r / 2;
}

/* Output row o of a projection as ternary values. t: [k] */
static int proj_row(const struct item *it, float scale, uint64_t o, int8_t *t,
                    struct bn_error *err)
{
	uint64_t k = it->ne[0];
	const struct bn_st_tensor *s = it->src;
	o = src_row(it, o);   /* from here on the checkpoint's row */
	switch (it->form) {
	case F_PACKED: {
		uint64_t P = it->ne[1] / 4, r = o % P;
		unsigned shift = (unsigned)(o / P) * 2;
		const uint8_t *src = s->data + r * k;   /* packed row r: [k] */
		for (uint64_t c = 0; c < k; c++) {
			unsigned code = (src[c] >> shift) & 3u;
			if (code == 3)
				return bn_err_set(err, -EBADMSG, "file %s: tensor %s: packed byte [%llu][%llu] "
				                  "= 0x%02x holds code 3 (value +2, not ternary) for output "
				                  "row %llu", it->file->path, s->name, (unsigned long long)r,
				                  (unsigned long long)c, src[c], (unsigned long long)o);
			t[c] = (int8_t)((int)code - 1);
		}
		return 0;
	}
	case F_TERNARY:
		for (uint64_t c = 0; c < k; c++) {
			float v = load_f(s, o * k + c);
			if (v != 0.0f && v != 1.0f && v != -1.0f)
				return bn_err_set(err, -EBADMSG, "file %s: tensor %s: element [%llu][%llu] = %g "
				                  "is not -1, 0 or +1 (weights stored beside a weight_scale "
				                  "must be ternary)", it->file->path, s->name,
				                  (unsigned long long)o, (unsigned long long)c, (double)v);
			t[c] = (int8_t)v;
		}
		return 0;
	case F_MASTER:
		for (uint64_t c = 0; c < k; c++) {
			float q = nearbyintf(load_f(s, o * k + c) / scale);   /* ties to even */
			t[c] = (int8_t)(q > 1.0f ? 1 : q < -1.0f ? -1 : (int)q);
		}
		return 0;
	}
	return -EINVAL;
}

static int write_proj(struct conv *cv, const struct item *it, struct bn_error *err)
{
	float scale = 0.0f;
	int rc = proj_scale(cv, it, &scale, err);
	if (rc)
		return rc;
	uint64_t k = it->ne[0];
	uint16_t d[262144 / BN_QK_K];   /* [k/256] per-block f16 d; config caps k at 262144 */
	if (it->type != BN_TYPE_I2_S) {
		uint16_t d16 = bn_f32_to_f16(scale);
		float back = bn_f16_to_f32(d16);
		if (!isfinite(back) || back == 0.0f)
			return bn_err_set(err, -ERANGE, "tensor %s: scale %g is outside f16's range (%s "
			                  "stores an f16 scale)", it->src->name, (double)scale,
			                  bn_ggml_type_name(it->type));
		if (back != scale) {
			double rel = fabs((double)back - scale) / fabs((double)scale);
			cv->rep->n_scales_rounded++;
			if (rel > cv->rep->max_scale_rel_change)
				cv->rep->max_scale_rel_change = rel;
		}
		for (uint64_t b = 0; b < k / BN_QK_K; b++)
			d[b] = d16;
	}
	bool nonzero = false;
	struct drop dr = { it->file, it->src->data };
	for (uint64_t o = 0; o < it->ne[1]; o++) {
		/* packed rows are read four times over (one bit pair each): drop them at the end;
		 * permuted rows are read in order only from one head to the next */
		uint64_t first = it->perm_heads ? o - o % (it->ne[1] / it->perm_heads) : o;
		if (it->form != F_PACKED)
			drop_upto(&dr, it->src->data + first * k * bn_st_dtype_size(it->src->dtype));
		if ((rc = proj_row(it, scale, o, cv->tern, err)))
			return rc;
		for (uint64_t c = 0; c < k && !nonzero; c++)
			nonzero = cv->tern[c] != 0;
		size_t nb;
		switch (it->type) {
		case BN_TYPE_I2_S:
			rc = bn_i2s_encode_row(cv->tern, k, cv->row);
			nb = bn_i2s_row_bytes(k);
			break;
		case BN_TYPE_TQ2_0:
			rc = bn_tq2_encode_row(cv->tern, k, d, cv->row);
			nb = bn_tq2_row_bytes(k);
			break;
		default:
			rc = bn_tq1_encode_row(cv->tern, k, d, cv->row);
			nb = bn_tq1_row_bytes(k);
			break;
		}
		if (rc)
			return bn_err_set(err, rc, "tensor %s: encoding row %llu failed", it->name,
			                  (unsigned long long)o);
		if ((rc = emit(cv, cv->row, nb, err)))
			return rc;
	}
	if (!nonzero)
		cv->rep->n_zero_tensors++;
	if (it->type == BN_TYPE_I2_S) {
		uint8_t tail[BN_I2S_TAIL];
		bn_i2s_write_tail(scale, tail);
		rc = emit(cv, tail, sizeof tail, err);
	}
	return rc;
}

/* ---- metadata ---------------------------------------------------------------------------- */

static uint32_t file_type(uint32_t t)
{
	/* general.file_type as llama_ftype: MOSTLY_TQ1_0 36, MOSTLY_TQ2_0 37, bitnet.cpp I2_S 40 */
	return t == BN_TYPE_TQ1_0 ? 36 : t == BN_TYPE_TQ2_0 ? 37 : 40;
}

/* Only keys the engine reads (lib/model.c, lib/vocab.c, lib/gguf.c, the chat template). */
static int write_kvs(struct bn_ggufw *w, const struct hf_config *c, const struct tok *tk,
                     uint32_t wtype, struct bn_error *err)
{
	const struct bn_vocab *v = &tk->v;
	const char *a = c->arch->gguf_arch;
	char key[96];
	int rc;
#define KEY(suffix) (snprintf(key, sizeof key, "%s.%s", a, suffix), key)
	if ((rc = bn_ggufw_kv_str(w, "general.architecture", a, err)) ||
	    (rc = bn_ggufw_kv_u32(w, "general.alignment", 32, err)) ||
	    (rc = bn_ggufw_kv_u32(w, "general.file_type", file_type(wtype), err)) ||
	    (rc = bn_ggufw_kv_u32(w, KEY("vocab_size"), c->vocab, err)) ||
	    (rc = bn_ggufw_kv_u32(w, KEY("context_length"), c->ctx, err)) ||
	    (rc = bn_ggufw_kv_u32(w, KEY("embedding_length"), c->hidden, err)) ||
	    (rc = bn_ggufw_kv_u32(w, KEY("block_count"), c->layers, err)) ||
	    (rc = bn_ggufw_kv_u32(w, KEY("feed_forward_length"), c->ff, err)) ||
	    (rc = bn_ggufw_kv_u32(w, KEY("rope.dimension_count"), c->hidden / c->heads, err)) ||
	    (rc = bn_ggufw_kv_u32(w, KEY("attention.head_count"), c->heads, err)) ||
	    (rc = bn_ggufw_kv_u32(w, KEY("attention.head_count_kv"), c->kv_heads, err)) ||
	    (rc = bn_ggufw_kv_f32(w, KEY("attention.layer_norm_rms_epsilon"), c->eps, err)) ||
	    (rc = bn_ggufw_kv_f32(w, KEY("rope.freq_base"), c->rope_theta, err)) ||
	    (rc = bn_ggufw_vocab(w, v, err)))
		return rc;
#undef KEY
	if (tk->chat_template &&
	    (rc = bn_ggufw_kv_str(w, "tokenizer.chat_template", tk->chat_template, err)))
		return rc;
	return 0;
}

/* ---- the whole conversion ------------------------------------------------------------- */

/* A new file beside out, honouring the umask (mkstemp would make it 0600). */
static int stream_all(struct conv *cv, struct bn_error *err)
{
	for (size_t i = 0; i < cv->n_items; i++) {
		const struct item *it = &cv->items[i];
		int rc;
		switch (it->kind) {
		case K_EMBD: rc = write_embd(cv, it, err); break;
		case K_NORM: rc = write_norm(cv, it, err); break;
		default: rc = write_proj(cv, it, err); break;
		}
		if (rc)
			return rc;
		bn_st_release(it->file, it->src);
		if (cv->o->progress) {
			cv->last_report = cv->done;
			cv->o->progress(cv->o->user, cv->done, cv->total);
		}
	}
	return 0;
}

static int check_opts(const struct bn_convert_opts *o, struct bn_error *err)
{
	if (o->head_type && o->head_type != BN_TYPE_F16 && o->head_type != BN_TYPE_Q8_0)
		return bn_err_set(err, -EINVAL, "option head: %s is not f16 or q8_0",
		                  bn_ggml_type_name(o->head_type));
	if (o->wtype != BN_TYPE_I2_S && o->wtype != BN_TYPE_TQ2_0 && o->wtype != BN_TYPE_TQ1_0)
		return bn_err_set(err, -EINVAL, "option type: %s is not i2_s, tq2_0 or tq1_0",
		                  bn_ggml_type_name(o->wtype));
	if (!o->hf_dir || !o->out)
		return bn_err_set(err, -EINVAL, "an input directory and an output file are required");
	return 0;
}

/* The tokenizer against the embedding: no more tokens than rows, special ids inside, then
 * padded to the rows. */
static int fit_vocab(const struct hf_config *c, struct tok *tk, struct bn_convert_report *rep,
                     struct bn_error *err)
{
	uint32_t n_tok = tk->v.n_tokens;
	if (n_tok > c->vocab)
		return bn_err_set(err, -EBADMSG, "tokenizer: %u tokens but the embedding has %u rows "
		                  "(vocab_size)", n_tok, c->vocab);
	const int32_t ids[4] = { tk->v.bos, tk->v.eos, tk->v.eot, tk->v.pad };
	for (int i = 0; i < 4; i++)
		if (ids[i] >= (int32_t)n_tok)
			return bn_err_set(err, -EBADMSG, "tokenizer: special token id %d is outside its "
			                  "%u tokens", ids[i], n_tok);
	int rc = pad_vocab(&tk->v, c->vocab, err);
	if (rc)
		return rc;
	rep->n_pad_tokens = c->vocab - n_tok;
	return 0;
}

/* The GGUF file: written to a temporary beside o->out, renamed over it when complete, removed
 * on any error. */
static int write_file(struct conv *cv, const struct tok *tk, struct bn_error *err)
{
	const struct bn_convert_opts *o = cv->o;
	char tmp[4200] = "";
	char *iobuf = malloc(IO_BUF);
	if (!iobuf)
		return bn_err_set(err, -ENOMEM, "out of memory");
	int rc;
	FILE *fp = bn_ggufw_open_temp(o->out, tmp, sizeof tmp, err);
	if (!fp) {
		rc = err->code;
		goto out;
	}
	setvbuf(fp, iobuf, _IOFBF, IO_BUF);
	if ((rc = bn_ggufw_open_fp(&cv->w, fp, o->out, err)) ||
	    (rc = write_kvs(cv->w, &cv->cfg, tk, o->wtype, err)))
		goto fail;
	for (size_t i = 0; i < cv->n_items; i++) {
		const struct item *it = &cv->items[i];
		if ((rc = bn_ggufw_tensor(cv->w, it->name, it->n_dims, it->ne, it->type, err)))
			goto fail;
		cv->total += bn_ggufw_tensor_nbytes(it->type, it->n_dims, it->ne);
	}
	if ((rc = bn_ggufw_begin_data(cv->w, err)) || (rc = stream_all(cv, err)))
		goto fail;
	cv->rep->bytes = bn_ggufw_file_size(cv->w);
	rc = bn_ggufw_close(cv->w, err);
	cv->w = NULL;
	if (rc)
		goto fail;
	rc = bn_ggufw_commit_temp(fp, tmp, o->out, err);
	fp = NULL;
	if (rc)
		goto fail;
	goto out;
fail:
	bn_ggufw_abort(cv->w);   /* opened on our stream: neither closes nor removes it */
	if (fp)
		fclose(fp);
	if (tmp[0])   /* "": a device or FIFO written in place */
		unlink(tmp);
out:
	free(iobuf);   /* after fp's last use: it was fp's buffer */
	return rc;
}

static void fill_report(const struct conv *cv, struct bn_convert_report *rep)
{
	const struct hf_config *c = &cv->cfg;
	rep->arch = c->arch->gguf_arch;
	rep->hf_class = c->arch->hf_class;
	rep->n_layer = c->layers;
	rep->n_embd = c->hidden;
	rep->n_ff = c->ff;
	rep->n_head = c->heads;
	rep->n_head_kv = c->kv_heads;
	rep->n_vocab = c->vocab;
	rep->n_ctx = c->ctx;
	rep->n_tensors = (uint32_t)cv->n_items;
	rep->n_files = (uint32_t)cv->m->n_files;
	rep->untied_head = !c->tie;
	rep->head_type = cv->o->head_type ? cv->o->head_type : BN_TYPE_F16;
	rep->linear_class = NULL;
	rep->form = NULL;
	for (size_t i = 0; i < cv->n_items; i++) {
		if (cv->items[i].kind != K_PROJ)
			continue;
		if (cv->items[i].ws)
			rep->linear_class = c->autobitlinear ? "autobitlinear" : "bitlinear";
		static const char *const names[] = { "packed", "master weights", "ternary floats" };
		const char *f = names[cv->items[i].form];
		rep->form = !rep->form || !strcmp(rep->form, f) ? f : "mixed";
	}
}

int bn_convert(const struct bn_convert_opts *opts, struct bn_convert_report *rep,
               struct bn_error *err)
{
	struct bn_convert_opts o = *opts;
	struct bn_convert_report dummy;
	if (!rep)
		rep = &dummy;
	memset(rep, 0, sizeof *rep);
	if (!o.wtype)
		o.wtype = BN_TYPE_I2_S;
	int rc = check_opts(&o, err);
	if (rc)
		return rc;

	struct conv cv;
	memset(&cv, 0, sizeof cv);
	cv.o = &o;
	cv.rep = rep;
	struct tok tk;
	memset(&tk, 0, sizeof tk);
	char cfg_path[4096];
	snprintf(cfg_path, sizeof cfg_path, "%s/config.json", o.hf_dir);
	if ((rc = load_config(cfg_path, &cv.cfg, err)))
		return rc;
	const struct hf_config *c = &cv.cfg;
	if ((rc = bn_st_model_open(&cv.m, o.hf_dir, err)))
		return rc;
	if (!(cv.used = calloc(cv.m->n_tensors ? cv.m->n_tensors : 1, sizeof *cv.used))) {
		rc = bn_err_set(err, -ENOMEM, "out of memory");
		goto out;
	}
	if ((rc = build_plan(&cv, err)) || (rc = load_tokenizer(&o, c, &tk, err)) ||
	    (rc = fit_vocab(c, &tk, rep, err)))
		goto out;
	size_t max_k = c->hidden > c->ff ? c->hidden : c->ff;
	cv.tern = malloc(max_k);
	cv.f = malloc(max_k * sizeof(float));
	cv.row = malloc(max_k * 4);
	if (!cv.tern || !cv.f || !cv.row) {
		rc = bn_err_set(err, -ENOMEM, "out of memory");
		goto out;
	}
	if (!(rc = write_file(&cv, &tk, err)))
		fill_report(&cv, rep);
out:
	free(cv.tern);
	free(cv.f);
	free(cv.row);
	free(cv.items);
	free(cv.used);
	bn_vocab_free(&tk.v);
	free(tk.chat_template);
	bn_st_model_close(cv.m);
	return rc;
}
