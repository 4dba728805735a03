/* cli_profile.c - `kvserve profile-heads`: which (layer, KV head) of a model retrieves.
 *
 * Retrieval heads (Wu et al., arXiv:2404.15574) are the few heads that look back at a far
 * token when the model copies it; DuoAttention (Xiao et al., arXiv:2410.10819) keeps full
 * KV only for such heads and sinks + a window for the rest. This command measures them on a
 * synthetic passkey task in the wording the model was trained on: filler (random word
 * pieces of the vocabulary, or --filler text), the needle sentence at spread depths, the
 * question, then the answer's digits fed one by one (teacher forcing, so a wrong guess does
 * not change what is measured). While the answer goes in, a probe policy (full attention
 * plus the key_mass hook) adds up each query head's attention on the needle's tokens; a KV
 * head's score is that mass averaged over its query heads, answer tokens and prompts, so it
 * lies in [0, 1]. The --top heads with the highest scores are marked `retrieval`.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "cli_util.h"
#include "kvserve/args.h"
#include "kvserve/engine.h"
#include "kvserve/head_profile.h"

typedef struct prof_opts {
    const char *model, *out, *filler;
    int64_t threads, prompts, length, top;
} prof_opts;

/* The probe: full attention that reports key_mass while `record` is set. */
typedef struct probe {
    int32_t n_layer, n_head_kv;
    int32_t needle0, needle1; /* sequence indices [needle0, needle1) */
    bool record;
    double *mass;  /* [n_layer * n_head_kv] needle mass, summed over query heads */
    double *total; /* [n_layer * n_head_kv] query heads * queries recorded */
} probe;

static int probe_init(kv_seq *seq, const void *config, void **state)
{
    (void)seq;
    *state = (void *)config;
    return 0;
}

static int32_t probe_mass_queries(kv_seq *seq, int32_t layer, int32_t kv_head, const kv_query *q)
{
    (void)layer;
    (void)kv_head;
    const probe *p = kv_seq_policy_state(seq);
    return p->record && q ? q->n_q : 0;
}

static int probe_after_attention(kv_seq *seq, int32_t layer, int32_t kv_head, const kv_query *q,
                                 const attn_span *spans, int32_t n_spans, const float *key_mass,
                                 int32_t n_mass)
{
    probe *p = kv_seq_policy_state(seq);
    int64_t n_keys = 0;
    for (int32_t i = 0; i < n_spans; i++)
        n_keys += spans[i].n;
    double m = 0.0;
    for (int32_t i = 0, j = 0; i < n_spans; j += spans[i].n, i++)
        for (int32_t r = 0; r < spans[i].n; r++) {
            int32_t x = spans[i].idx ? spans[i].idx[r] : -1;
            if (x < p->needle0 || x >= p->needle1) continue;
            for (int32_t g = 0; g < q->n_group; g++)
                m += key_mass[(size_t)g * n_keys + j + r];
        }
    size_t t = (size_t)layer * p->n_head_kv + kv_head;
    p->mass[t] += m;
    p->total[t] += (double)q->n_group * n_mass;
    return 0;
}

static const kv_policy probe_policy = {
    .name = "profile-heads probe",
    .init = probe_init,
    .mass_queries = probe_mass_queries,
    .after_attention = probe_after_attention,
};

/* ---- the synthetic task ---- */

typedef struct tok_buf {
    int32_t *ids;
    int32_t n, cap;
} tok_buf;

static int buf_text(tok_buf *b, const tok_vocab *v, const char *text, bool bos)
{
    int32_t n = tok_encode(v, text, strlen(text), bos, false, b->ids + b->n, b->cap - b->n);
    if (n < 0 || b->n + n > b->cap) return KS_ERR_RANGE;
    b->n += n;
    return 0;
}

/* Filler tokens: a window of the --filler text, else random word pieces ("▁" + letters). */
static void buf_filler(tok_buf *b, const tok_vocab *v, const int32_t *ft, int32_t nft, int32_t n,
                       uint64_t *rng)
{
    int32_t nv = tok_vocab_n_tokens(v), start = nft > 0 ? (int32_t)(*rng % (uint64_t)nft) : 0;
    char piece[64];
    for (int32_t i = 0; i < n && b->n < b->cap; i++) {
        if (nft > 0) {
            b->ids[b->n++] = ft[(start + i) % nft];
            continue;
        }
        for (;;) {
            *rng = *rng * 6364136223846793005ull + 1442695040888963407ull;
            int32_t t = (int32_t)((*rng >> 33) % (uint64_t)nv);
            int32_t m = tok_piece(v, t, false, piece, (int32_t)sizeof(piece) - 1);
            if (m >= 3 && piece[0] == ' ' &&
                strspn(piece + 1, "abcdefghijklmnopqrstuvwxyz") == (size_t)(m - 1)) {
                b->ids[b->n++] = t;
                break;
            }
        }
    }
}

/* One prompt + answer through the probe; adds to p's sums. */
static int prof_case(engine *e, probe *p, const prof_opts *o, const int32_t *ft, int32_t nft,
                     int32_t i, tok_buf *b)
{
    const tok_vocab *v = model_get_vocab(e->m);
    uint64_t rng = 0x9e3779b97f4a7c15ull * (uint64_t)(i + 1);
    int key = 10000 + (int)((i * 7919 + 4242) % 90000);
    char needle[128], answer[16];
    snprintf(needle, sizeof(needle), " The pass key is %d. Remember it. %d is the pass key.", key,
             key);
    snprintf(answer, sizeof(answer), " %d", key);
    int32_t body = (int32_t)o->length - 40;
    double depth = (i + 0.5) / (double)o->prompts;
    b->n = 0;
    int rc = buf_text(b, v, "", true);
    buf_filler(b, v, ft, nft, (int32_t)(depth * body), &rng);
    p->needle0 = b->n;
    rc = rc ? rc : buf_text(b, v, needle, false);
    p->needle1 = b->n;
    buf_filler(b, v, ft, nft, body - (int32_t)(depth * body), &rng);
    rc = rc ? rc : buf_text(b, v, " What is the pass key? The pass key is", false);
    int32_t n_prompt = b->n;
    rc = rc ? rc : buf_text(b, v, answer, false);
    if (rc) return rc;
    kv_seq *seq;
    if ((rc = engine_new_seq_args(e, &probe_policy, p, &seq))) return rc;
    p->record = false;
    model_seq_batch sb = {
        .kv = seq, .tokens = b->ids, .n_tokens = n_prompt - 1, .prompt_chunk = true};
    rc = model_forward(e->ctx, &sb, 1);
    /* The last question token and the answer's digits: the queries that must copy. */
    p->record = true;
    for (int32_t t = n_prompt - 1; t < b->n - 1 && !rc; t++) {
        sb = (model_seq_batch){.kv = seq, .tokens = b->ids + t, .n_tokens = 1};
        rc = model_forward(e->ctx, &sb, 1);
    }
    kv_seq_destroy(seq);
    return rc;
}

static int prof_parse(int argc, char **argv, prof_opts *o)
{
    *o = (prof_opts){
        .out = "heads.toml", .threads = cli_default_threads(), .prompts = 8, .length = 0, .top = 0};
    const ks_arg args[] = {
        {"model", 'm', KS_ARG_STRING, &o->model, .metavar = "FILE", .help = "GGUF model",
         .flags = KS_ARG_REQUIRED},
        {"out", 'o', KS_ARG_STRING, &o->out, .metavar = "FILE",
         .help = "head-profile file to write (TOML)"},
        {"filler", 0, KS_ARG_STRING, &o->filler, .metavar = "FILE",
         .help = "filler text (default: random word pieces of the vocabulary)"},
        {"prompts", 0, KS_ARG_INT, &o->prompts, 1, 1000,
         .help = "passkey prompts (needle at evenly spread depths)"},
        {"length", 0, KS_ARG_INT, &o->length, 0, 1 << 20,
         .help = "prompt tokens, 0 = 3/4 of the trained context"},
        {"top", 0, KS_ARG_INT, &o->top, 0, 4096,
         .help = "heads marked retrieval, 0 = one in eight (at least one)"},
        {"threads", 't', KS_ARG_INT, &o->threads, 1, 256, .help = "compute threads"},
    };
    const ks_args_spec spec = {
        "kvserve profile-heads",
        "Scores every (layer, KV head) by its attention on a passkey needle while the model "
        "copies it, and writes a head profile for the `hybrid` policy.",
        args, KS_ARRAY_LEN(args), NULL};
    return ks_args_parse(&spec, argc, argv);
}

/* Marks the `top` best-scored heads as retrieval heads. */
static void prof_classify(kv_head_profile *hp, int32_t top)
{
    int32_t n = hp->n_layer * hp->n_head_kv;
    for (int32_t k = 0; k < top && k < n; k++) {
        int32_t best = -1;
        for (int32_t i = 0; i < n; i++)
            if (!hp->keep_full[i] && (best < 0 || hp->score[i] > hp->score[best])) best = i;
        hp->keep_full[best] = 1;
    }
}

/* Identity of a model for the profile: FNV-1a over its shape and vocabulary. */
static uint64_t prof_model_hash(const model *m)
{
    const model_hparams *h = model_get_hparams(m);
    int32_t shape[] = {h->n_vocab, h->n_ctx_train, h->n_embd,   h->n_layer,
                       h->n_head,  h->n_head_kv,   h->head_dim, h->n_ff};
    uint64_t x =
        kv_head_profile_hash_bytes(KV_HEAD_PROFILE_HASH_INIT, h->arch_name, strlen(h->arch_name));
    x = kv_head_profile_hash_bytes(x, shape, sizeof(shape));
    const tok_vocab *v = model_get_vocab(m);
    char piece[256];
    for (int32_t t = 0; t < tok_vocab_n_tokens(v); t++) {
        int32_t n = tok_piece(v, t, true, piece, (int32_t)sizeof(piece));
        x = kv_head_profile_hash_bytes(x, piece, n > 0 ? (size_t)n : 0);
    }
    return x;
}

int cli_profile_heads_main(int argc, char **argv)
{
    prof_opts o;
    int prc = prof_parse(argc, argv, &o);
    if (prc) return prc == KS_ARGS_HELP ? 0 : 2;
    engine_params ep = {.model_path = o.model,
                        .n_threads = (int32_t)o.threads,
                        .n_seqs = 1,
                        .n_batch = 512,
                        .k_dtype = KS_DTYPE_F16,
                        .v_dtype = KS_DTYPE_F16};
    engine e;
    if (engine_open(&ep, &e)) return 1;
    const model_hparams *h = model_get_hparams(e.m);
    if (!o.length) o.length = KS_MAX(64, h->n_ctx_train * 3 / 4);
    if (o.length + 32 > e.n_ctx) {
        fprintf(stderr, "kvserve: --length %lld does not fit the context of %d tokens\n",
                (long long)o.length, e.n_ctx);
        engine_close(&e);
        return 2;
    }
    int32_t *ft = NULL, nft = 0;
    char *text = NULL;
    size_t len = 0;
    ks_diag d;
    int rc = 0;
    if (o.filler && (rc = ks_read_file(o.filler, &text, &len, &d)) == 0) {
        ft = malloc((len + 16) * sizeof(int32_t));
        nft = ft ? tok_encode(model_get_vocab(e.m), text, len, false, false, ft, (int32_t)len + 16)
                 : 0;
        free(text);
    } else if (o.filler) {
        fprintf(stderr, "kvserve: %s\n", d.msg);
    }
    kv_head_profile hp = {0};
    int32_t n = h->n_layer * h->n_head_kv;
    probe p = {.n_layer = h->n_layer, .n_head_kv = h->n_head_kv};
    p.mass = calloc((size_t)n, sizeof(double));
    p.total = calloc((size_t)n, sizeof(double));
    tok_buf b = {.cap = (int32_t)o.length + 256};
    b.ids = malloc((size_t)b.cap * sizeof(int32_t));
    if (!rc)
        rc = p.mass && p.total && b.ids ? kv_head_profile_alloc(&hp, h->n_layer, h->n_head_kv)
                                        : KS_ERR_NOMEM;
    for (int32_t i = 0; i < o.prompts && !rc; i++)
        rc = prof_case(&e, &p, &o, ft, nft, i, &b);
    if (!rc) {
        snprintf(hp.model, sizeof(hp.model), "%s", h->name[0] ? h->name : h->arch_name);
        for (char *c = hp.model; *c; c++)
            if (*c == '"' || *c == '\\' || (unsigned char)*c < 0x20) *c = '_';
        hp.hash = prof_model_hash(e.m);
        for (int32_t i = 0; i < n; i++)
            hp.score[i] = p.total[i] > 0 ? (float)KS_MIN(1.0, p.mass[i] / p.total[i]) : 0.0f;
        prof_classify(&hp, o.top ? (int32_t)o.top : KS_MAX(1, n / 8));
        rc = kv_head_profile_save(&hp, o.out, &d);
        if (rc) fprintf(stderr, "kvserve: %s\n", d.msg);
    }
    for (int32_t i = 0; !rc && i < n; i++)
        printf("layer %d KV head %d: score %.4f%s\n", i / h->n_head_kv, i % h->n_head_kv,
               (double)hp.score[i], hp.keep_full[i] ? "  retrieval head (keep_full)" : "");
    if (!rc)
        printf("wrote %s\n", o.out);
    else if (rc != KS_ERR_IO)
        fprintf(stderr, "kvserve: profile-heads failed: %s\n", ks_status_str(rc));
    kv_head_profile_free(&hp);
    free(p.mass);
    free(p.total);
    free(b.ids);
    free(ft);
    engine_close(&e);
    return rc ? 1 : 0;
}
