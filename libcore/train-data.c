/*
 * train-data.c - training data (train.h): files into documents of tokens
 * with a loss mask, documents into fixed-length sequences, sequences into
 * micro-batches in a seeded order.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "llmkit/chat.h"
#include "llmkit/error.h"
#include "llmkit/tokenizer.h"
#include "llmkit/train.h"
#include "llmkit/util.h"

struct doc {
	int64_t off, len;
};

struct llm_train_data {
	int32_t *tok;
	uint8_t *mask;         /* 1: tok[i] is predicted (from tok[i - 1]) */
	int64_t n_tok, cap_tok;
	struct doc *docs;
	int64_t n_docs, cap_docs;
	int64_t n_bad;
	bool plain;
};

static int data_push(struct llm_train_data *d, const int32_t *tok, int n,
                     int64_t loss_from)
{
	if (n < 2)
		return 0;
	if (d->n_tok + n > d->cap_tok) {
		int64_t cap = d->cap_tok ? d->cap_tok : 4096;
		while (cap < d->n_tok + n)
			cap *= 2;
		int32_t *t = realloc(d->tok, cap * sizeof(*t));
		if (t)
			d->tok = t;
		uint8_t *m = realloc(d->mask, cap);
		if (m)
			d->mask = m;
		if (!t || !m)
			return llm_error(LLM_ENOMEM, "out of memory for training data");
		d->cap_tok = cap;
	}
	if (d->n_docs == d->cap_docs) {
		int64_t cap = d->cap_docs ? 2 * d->cap_docs : 256;
		struct doc *dd = realloc(d->docs, cap * sizeof(*dd));
		if (!dd)
			return llm_error(LLM_ENOMEM, "out of memory for training data");
		d->docs = dd;
		d->cap_docs = cap;
	}
	memcpy(d->tok + d->n_tok, tok, n * sizeof(*tok));
	for (int i = 0; i < n; i++)
		d->mask[d->n_tok + i] = i >= loss_from && i > 0;
	d->docs[d->n_docs++] = (struct doc){ d->n_tok, n };
	d->n_tok += n;
	return 0;
}

/* Tokens of text and how many of them its first prefix_len bytes give
 * (the longest common prefix of the two tokenizations). */
static int tokenize_split(const struct llm_tokenizer *tok, const char *text,
                          size_t len, size_t prefix_len, bool bos, bool special,
                          int32_t **ids, int *n, int *n_prefix)
{
	int32_t *p;
	int np, rc;
	if ((rc = llm_tokenize(tok, text, len, bos, special, ids, n)))
		return rc;
	if ((rc = llm_tokenize(tok, text, prefix_len, bos, special, &p, &np))) {
		free(*ids);
		return rc;
	}
	int k = 0;
	while (k < np && k < *n && p[k] == (*ids)[k])
		k++;
	*n_prefix = k;
	free(p);
	return 0;
}

static int append_eos(const struct llm_tokenizer *tok, int32_t **ids, int *n)
{
	int32_t eos = llm_token_eos(tok);
	if (eos < 0)
		return 0;
	int32_t *r = realloc(*ids, (*n + 1) * sizeof(int32_t));
	if (!r)
		return llm_error(LLM_ENOMEM, "out of memory");
	r[(*n)++] = eos;
	*ids = r;
	return 0;
}

/* One JSON object of a JSONL file into a document.  LLM_EFORMAT (message
 * without the file:line prefix) when it is not one of the known shapes. */
static int json_doc(struct llm_train_data *d, json_t *o,
                    const struct llm_tokenizer *tok, int tmpl)
{
	json_t *jp = json_object_get(o, "prompt"), *jc = json_object_get(o, "completion");
	json_t *jt = json_object_get(o, "text"), *jm = json_object_get(o, "messages");
	bool bos = llm_tokenizer_add_bos(tok);
	int32_t *ids = NULL;
	int n = 0, np = 0, rc;

	if (!json_is_object(o))
		return llm_error(LLM_EFORMAT, "not a JSON object");
	if (jp || jc) {
		if (!json_is_string(jp) || !json_is_string(jc))
			return llm_error(LLM_EFORMAT, "\"prompt\" and \"completion\" must "
			                 "both be strings");
		size_t lp = json_string_length(jp), lc = json_string_length(jc);
		if (!lc)
			return llm_error(LLM_EFORMAT, "empty \"completion\"");
		char *s = malloc(lp + lc + 1);
		if (!s)
			return llm_error(LLM_ENOMEM, "out of memory");
		memcpy(s, json_string_value(jp), lp);
		memcpy(s + lp, json_string_value(jc), lc);
		s[lp + lc] = 0;
		rc = tokenize_split(tok, s, lp + lc, lp, bos, false, &ids, &n, &np);
		free(s);
		if (!rc)
			rc = append_eos(tok, &ids, &n);
		if (!rc)
			rc = data_push(d, ids, n, np);
		free(ids);
		return rc;
	}
	if (jt) {
		if (!json_is_string(jt) || !json_string_length(jt))
			return llm_error(LLM_EFORMAT, "\"text\" must be a non-empty string");
		if ((rc = llm_tokenize(tok, json_string_value(jt), json_string_length(jt),
		                       bos, false, &ids, &n)))
			return rc;
		rc = append_eos(tok, &ids, &n);
		if (!rc)
			rc = data_push(d, ids, n, 0);
		free(ids);
		return rc;
	}
	if (jm) {
		size_t nm = json_array_size(jm);
		if (!json_is_array(jm) || !nm)
			return llm_error(LLM_EFORMAT, "\"messages\" must be a non-empty array");
		if (tmpl <= 0)
			return llm_error(LLM_EUNSUPPORTED, "the model has no chat template "
			                 "we know (give one with --chat-template)");
		struct llm_chat_msg *msgs = calloc(nm, sizeof(*msgs));
		uint8_t *loss = NULL;
		char *full = NULL;
		size_t flen;
		if (!msgs)
			return llm_error(LLM_ENOMEM, "out of memory");
		bool any = false;
		for (size_t i = 0; i < nm; i++) {
			json_t *m = json_array_get(jm, i);
			json_t *r = json_object_get(m, "role"), *c = json_object_get(m, "content");
			if (!json_is_string(r) || !json_is_string(c)) {
				free(msgs);
				return llm_error(LLM_EFORMAT, "messages[%zu]: \"role\" and "
				                 "\"content\" must be strings", i);
			}
			msgs[i].role = json_string_value(r);
			msgs[i].content = json_string_value(c);
			any |= !strcmp(msgs[i].role, "assistant");
		}
		if (!any) {
			free(msgs);
			return llm_error(LLM_EFORMAT, "no assistant message to learn from");
		}
		if ((rc = llm_chat_format(tmpl, msgs, (int)nm, false, &full, &flen)) ||
		    (rc = llm_tokenize(tok, full, flen, false, true, &ids, &n)))
			goto msg_done;
		if (!(loss = calloc(n ? n : 1, 1))) {
			rc = llm_error(LLM_ENOMEM, "out of memory");
			goto msg_done;
		}
		/* each assistant turn: tokens from the end of the text before it
		 * (with the assistant opening) to the end of the text through it */
		for (size_t i = 0; i < nm; i++) {
			if (strcmp(msgs[i].role, "assistant"))
				continue;
			int b[2];
			for (int e = 0; e < 2; e++) {
				char *s;
				size_t sl;
				int32_t *pi;
				int pn, k = 0;
				if ((rc = llm_chat_format(tmpl, msgs, (int)i + e, !e, &s, &sl)))
					goto msg_done;
				rc = llm_tokenize(tok, s, sl, false, true, &pi, &pn);
				free(s);
				if (rc)
					goto msg_done;
				while (k < pn && k < n && pi[k] == ids[k])
					k++;
				free(pi);
				b[e] = k;
			}
			for (int j = b[0]; j < b[1]; j++)
				loss[j] = 1;
		}
		{
			int64_t at = d->n_tok;
			if ((rc = data_push(d, ids, n, 0)) || n < 2)
				goto msg_done;
			for (int j = 0; j < n; j++)
				d->mask[at + j] = j > 0 && loss[j];
		}
msg_done:
		free(loss);
		free(full);
		free(ids);
		free(msgs);
		return rc;
	}
	return llm_error(LLM_EFORMAT, "expected \"prompt\"/\"completion\", \"text\" "
	                 "or \"messages\"");
}

static bool ends_with(const char *s, const char *suf)
{
	size_t a = strlen(s), b = strlen(suf);
	return a >= b && !strcmp(s + a - b, suf);
}

int llm_data_load(struct llm_train_data **out, const char *path,
                  const struct llm_tokenizer *tok, const struct llm_gguf *g,
                  const struct llm_data_params *p)
{
	struct llm_data_params dp = { 0 };
	struct llm_train_data *d;
	char *text;
	size_t size;
	int rc;

	if (p)
		dp = *p;
	if ((rc = llm_read_file(path, &text, &size)))
		return rc;
	if (!(d = calloc(1, sizeof(*d)))) {
		free(text);
		return llm_error(LLM_ENOMEM, "out of memory");
	}
	size_t i0 = 0;
	while (i0 < size && (text[i0] == ' ' || text[i0] == '\n' || text[i0] == '\t' ||
	                     text[i0] == '\r'))
		i0++;
	bool jsonl = ends_with(path, ".jsonl") || ends_with(path, ".jsonl.gz") ||
	             ends_with(path, ".json") || (i0 < size && text[i0] == '{');
	if (!jsonl) {
		int32_t *ids;
		int n;
		d->plain = true;
		if ((rc = llm_tokenize(tok, text, size, llm_tokenizer_add_bos(tok), false,
		                       &ids, &n)))
			goto fail;
		rc = data_push(d, ids, n, 0);
		free(ids);
		if (rc)
			goto fail;
	} else {
		int tmpl = -1;
		if (dp.chat_template) {
			if ((tmpl = llm_chat_template_from_name(dp.chat_template)) < 0) {
				rc = llm_error(LLM_EINVAL, "unknown chat template \"%s\"",
				               dp.chat_template);
				goto fail;
			}
		} else if (g) {
			tmpl = llm_chat_from_gguf(g);
		}
		char *line = text;
		for (int64_t ln = 1; line < text + size; ln++) {
			char *nl = memchr(line, '\n', text + size - line);
			size_t len = nl ? (size_t)(nl - line) : (size_t)(text + size - line);
			char *next = nl ? nl + 1 : text + size;
			size_t k = 0;
			while (k < len && (line[k] == ' ' || line[k] == '\t' || line[k] == '\r'))
				k++;
			if (k == len) {   /* blank line */
				line = next;
				continue;
			}
			json_error_t je;
			json_t *o = json_loadb(line, len, 0, &je);
			if (!o)
				rc = llm_error(LLM_EFORMAT, "invalid JSON: %s", je.text);
			else
				rc = json_doc(d, o, tok, tmpl);
			json_decref(o);
			if (rc == LLM_EFORMAT || rc == LLM_EUNSUPPORTED || rc == LLM_EINVAL) {
				char msg[512];
				snprintf(msg, sizeof(msg), "%s:%lld: %s", path, (long long)ln,
				         llm_errmsg());
				if (!dp.skip_bad) {
					rc = llm_error(LLM_EFORMAT, "%s", msg);
					goto fail;
				}
				d->n_bad++;
				if (dp.warn)
					dp.warn(dp.warn_user, msg);
				rc = 0;
			} else if (rc) {
				goto fail;
			}
			line = next;
		}
	}
	free(text);
	if (!d->n_docs) {
		llm_data_free(d);
		return llm_error(LLM_EFORMAT, "%s: no training examples", path);
	}
	*out = d;
	return 0;
fail:
	free(text);
	llm_data_free(d);
	return rc;
}

void llm_data_free(struct llm_train_data *d)
{
	if (!d)
		return;
	free(d->tok);
	free(d->mask);
	free(d->docs);
	free(d);
}

int64_t llm_data_n_docs(const struct llm_train_data *d) { return d->n_docs; }
int64_t llm_data_n_tokens(const struct llm_train_data *d) { return d->n_tok; }
int64_t llm_data_n_bad(const struct llm_train_data *d) { return d->n_bad; }

int llm_data_split(struct llm_train_data *d, double fraction,
                   struct llm_train_data **heldout)
{
	struct llm_train_data *h;
	int rc;
	if (!(fraction > 0 && fraction < 1))
		return llm_error(LLM_EINVAL, "held-out fraction %g is outside (0, 1)",
		                 fraction);
	if (!(h = calloc(1, sizeof(*h))))
		return llm_error(LLM_ENOMEM, "out of memory");
	h->plain = d->plain;
	if (d->n_docs == 1) {
		struct doc *dc = &d->docs[0];
		int64_t keep = (int64_t)((1.0 - fraction) * (double)dc->len);
		if (keep < 2 || dc->len - keep < 2) {
			free(h);
			return llm_error(LLM_EINVAL, "too little data to hold out %g of it",
			                 fraction);
		}
		/* the held-out part starts with the last kept token as context */
		if ((rc = data_push(h, d->tok + dc->off + keep - 1, (int)(dc->len - keep + 1),
		                    0))) {
			llm_data_free(h);
			return rc;
		}
		dc->len = keep;
		d->n_tok = dc->off + keep;
	} else {
		int64_t nh = (int64_t)(fraction * (double)d->n_docs + 0.5);
		if (nh < 1)
			nh = 1;
		if (nh >= d->n_docs) {
			free(h);
			return llm_error(LLM_EINVAL, "too few examples (%lld) to hold out %g "
			                 "of them", (long long)d->n_docs, fraction);
		}
		for (int64_t i = d->n_docs - nh; i < d->n_docs; i++) {
			struct doc *dc = &d->docs[i];
			int64_t at = h->n_tok;
			if ((rc = data_push(h, d->tok + dc->off, (int)dc->len, 0))) {
				llm_data_free(h);
				return rc;
			}
			memcpy(h->mask + at, d->mask + dc->off, dc->len);
		}
		d->n_tok = d->docs[d->n_docs - nh].off;
		d->n_docs -= nh;
	}
	*heldout = h;
	return 0;
}

/* ---------------------------------------------------------------- sequences */

struct seg {
	int64_t off;    /* first token in the data */
	int len;        /* tokens (len - 1 input slots) */
};

struct llm_seqs {
	const struct llm_train_data *d;
	int T;                  /* input slots per sequence */
	struct seg *segs;
	int64_t n_segs;
	int64_t *first;         /* (n + 1) first segment of each sequence */
	int64_t *targets;       /* (n) targets per sequence */
	int64_t n;
	uint64_t seed;
	bool shuffle;
	int64_t *perm;          /* order of the cached epoch */
	int64_t perm_epoch;
};

int llm_seqs_new(struct llm_seqs **out, const struct llm_train_data *d,
                 int seq_len, uint64_t seed, bool shuffle)
{
	struct llm_seqs *s = calloc(1, sizeof(*s));
	int64_t cap_segs = 0, cap_seq = 0;
	int T = seq_len;
	if (!s)
		return llm_error(LLM_ENOMEM, "out of memory");
	s->d = d;
	s->T = T;
	s->seed = seed;
	s->shuffle = shuffle;
	s->perm_epoch = -1;
	int used = T;   /* slots used in the open sequence (T: none open) */
	for (int64_t di = 0; di < d->n_docs; di++) {
		const struct doc *dc = &d->docs[di];
		for (int64_t o = 0; o + 1 < dc->len; o += T) {
			int64_t len = dc->len - o < T + 1 ? dc->len - o : T + 1;
			if (used + (len - 1) > T) {   /* new sequence */
				if (s->n + 2 > cap_seq) {
					cap_seq = cap_seq ? 2 * cap_seq : 1024;
					int64_t *f = realloc(s->first, cap_seq * sizeof(*f));
					if (!f)
						goto nomem;
					s->first = f;
				}
				s->first[s->n++] = s->n_segs;
				used = 0;
			}
			if (s->n_segs == cap_segs) {
				cap_segs = cap_segs ? 2 * cap_segs : 1024;
				struct seg *g = realloc(s->segs, cap_segs * sizeof(*g));
				if (!g)
					goto nomem;
				s->segs = g;
			}
			s->segs[s->n_segs++] = (struct seg){ dc->off + o, (int)len };
			used += (int)len - 1;
		}
	}
	if (!s->n) {
		llm_seqs_free(s);
		return llm_error(LLM_EINVAL, "no training sequences");
	}
	s->first[s->n] = s->n_segs;
	s->targets = calloc(s->n, sizeof(*s->targets));
	s->perm = malloc(s->n * sizeof(*s->perm));
	if (!s->targets || !s->perm)
		goto nomem;
	for (int64_t q = 0; q < s->n; q++)
		for (int64_t g = s->first[q]; g < s->first[q + 1]; g++)
			for (int j = 1; j < s->segs[g].len; j++)
				s->targets[q] += d->mask[s->segs[g].off + j];
	*out = s;
	return 0;
nomem:
	llm_seqs_free(s);
	return llm_error(LLM_ENOMEM, "out of memory");
}

void llm_seqs_free(struct llm_seqs *s)
{
	if (!s)
		return;
	free(s->segs);
	free(s->first);
	free(s->targets);
	free(s->perm);
	free(s);
}

int64_t llm_seqs_count(const struct llm_seqs *s) { return s->n; }

static uint64_t mix(uint64_t *st)
{
	uint64_t z = (*st += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

/* Sequence index of cursor c. */
static int64_t seq_at(const struct llm_seqs *cs, int64_t c)
{
	struct llm_seqs *s = (struct llm_seqs *)cs;   /* the cached order */
	int64_t epoch = c / s->n, i = c % s->n;
	if (!s->shuffle)
		return i;
	if (s->perm_epoch != epoch) {
		uint64_t st = s->seed * 0x2545f4914f6cdd1dull + (uint64_t)epoch;
		for (int64_t k = 0; k < s->n; k++)
			s->perm[k] = k;
		for (int64_t k = s->n - 1; k > 0; k--) {
			int64_t j = (int64_t)(mix(&st) % (uint64_t)(k + 1));
			int64_t tmp = s->perm[k];
			s->perm[k] = s->perm[j];
			s->perm[j] = tmp;
		}
		s->perm_epoch = epoch;
	}
	return s->perm[i];
}

void llm_seqs_fill(const struct llm_seqs *s, int64_t cursor, int n,
                   int32_t *tokens, int32_t *targets, int32_t *start)
{
	const struct llm_train_data *d = s->d;
	int T = s->T;
	for (int b = 0; b < n; b++) {
		int64_t q = seq_at(s, cursor + b);
		int32_t *tk = tokens + (int64_t)b * T, *tg = targets + (int64_t)b * T;
		int32_t *st = start + (int64_t)b * T;
		int j = 0;
		for (int64_t g = s->first[q]; g < s->first[q + 1]; g++) {
			const struct seg *sg = &s->segs[g];
			int o = j;
			for (int k = 0; k + 1 < sg->len; k++, j++) {
				tk[j] = d->tok[sg->off + k];
				tg[j] = d->mask[sg->off + k + 1] ? d->tok[sg->off + k + 1] : -1;
				st[j] = o;
			}
		}
		for (; j < T; j++) {   /* padding: attends only itself, no loss */
			tk[j] = 0;
			tg[j] = -1;
			st[j] = j;
		}
	}
}

int64_t llm_seqs_targets(const struct llm_seqs *s, int64_t cursor, int n)
{
	int64_t t = 0;
	for (int b = 0; b < n; b++)
		t += s->targets[seq_at(s, cursor + b)];
	return t;
}
