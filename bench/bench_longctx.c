/* bench_longctx.c - long-context memory, speed and passkey accuracy of KV policies.
 *
 *   bench_longctx --model M speed   [--ctx 8192,32768,131072] [--policies full,retrieval]
 *                 [--full-max 32768] [--gen 16] [--filler heldout-public.txt]
 *   bench_longctx --model M passkey --filler heldout-public.txt [--lengths 480,1950,7800]
 *                 [--prompts 12] [--policies full,sink_window,retrieval]
 *   common: [--threads N] [--chunk 512] [--ram-mb 32] [--spill-dir D] [--top-k 8]
 *           [--block 64] [--window 512] [--sink 4] [--dense 0] [--positions window|original]
 *           [--landmark mean|bounds|representative] [--selection head|layer]
 *           [--sw-window 508] [--eviction lru|score_lru] [--profile heads.toml]
 *           [--kv-dtype T] [--k-dtype T] [--v-dtype T] [--kv-residual 128]   (KV storage types,
 *           kvtype.h; f16 by default; kivi types: last N tokens f16)
 *
 * speed: for each context length and policy, a fresh child process prefills that many tokens
 * (the --filler text repeated, else random ids) in chunks, then decodes --gen tokens; it
 * prints prefill and decode tokens/s, the child's peak RSS and, for retrieval, blocks in RAM / on
 * disk, hot-set hit rate and bytes read from the spill file. Full attention above --full-max is
 * skipped (quadratic). passkey: prompts in the exact wording of the kjv-tiny README, needle at
 * evenly spread depths, greedy decoding; prints correct/total per length and policy.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli/cli_util.h"
#include "kvserve/args.h"
#include "kvserve/engine.h"
#include "kvserve/policy_args.h"
#include "kvserve/spill.h"

typedef struct opts {
    const char *model, *filler, *mode;
    int64_t threads, chunk, gen, prompts, full_max;
    char ctx[256], lengths[256], policies[256];
    kv_policy_config pc;
    ks_dtype kv[2];      /* K and V storage types */
    int64_t kv_residual; /* kivi types: last N tokens in f16 */
} opts;

static int parse_list(const char *s, int64_t *out, int max)
{
    int n = 0;
    while (*s && n < max) {
        out[n++] = strtoll(s, NULL, 10);
        const char *c = strchr(s, ',');
        if (!c) break;
        s = c + 1;
    }
    return n;
}

static const kv_policy *policy_args(const opts *o, const char *name, const engine *e,
                                    kv_policy_args *a)
{
    const model_hparams *hp = model_get_hparams(e->m);
    *a = (kv_policy_args){.config = &o->pc,
                          .rope = model_rope_params(e->m, -1),
                          .rope_swa = model_rope_params_window(e->m),
                          .layer_window = model_layer_windows(e->m),
                          .n_layer = hp->n_layer,
                          .n_head_kv = hp->n_head_kv,
                          .head_dim = hp->head_dim,
                          .n_ctx_train = hp->n_ctx_train};
    return kv_policy_find(name);
}

/* The prefill chunk policy `name` accepts (its parameters resolved for the model), given the
 * --chunk asked for: retrieval with window positions needs window + chunk inside the trained
 * context. */
static int32_t policy_chunk(const opts *o, const char *name, const kv_policy_args *a)
{
    const kv_policy_desc *d = kv_policy_desc_find(name);
    if (!d || !d->prefill_chunk) return (int32_t)o->chunk;
    kv_policy_params p;
    kv_model_info mi = kv_policy_args_info(a);
    kv_policy_params_resolve(&o->pc, d, &mi, p.bytes);
    return d->prefill_chunk(p.bytes, (int32_t)o->chunk);
}

/* Prefills toks[0..n) in chunks; logits of the last token into `logits`. */
static int prefill(engine *e, kv_seq *seq, const int32_t *toks, int32_t n, int32_t chunk,
                   float *logits)
{
    for (int32_t i = 0; i < n; i += chunk) {
        int32_t m = KS_MIN(chunk, n - i);
        model_seq_batch b = {.kv = seq,
                             .tokens = toks + i,
                             .n_tokens = m,
                             .logits = i + m == n ? logits : NULL,
                             .prompt_chunk = true,
                             .prompt_last = i + m == n};
        int rc = model_forward(e->ctx, &b, 1);
        if (rc) return rc;
    }
    return 0;
}

static int32_t argmax(const float *x, int32_t n)
{
    int32_t b = 0;
    for (int32_t i = 1; i < n; i++)
        if (x[i] > x[b]) b = i;
    return b;
}

static long peak_rss_kb_self(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss;
}

/* ---------------------------------------------------------------------------------------- */

static int speed_child(const opts *o, const char *pol_name, int32_t n_ctx)
{
    engine e;
    engine_params ep = {.model_path = o->model,
                        .n_threads = (int32_t)o->threads,
                        .n_ctx = n_ctx + (int32_t)o->gen + 64,
                        .n_batch = (int32_t)o->chunk,
                        .n_seqs = 1,
                        .k_dtype = o->kv[0],
                        .v_dtype = o->kv[1],
                        .kv_residual = (int32_t)o->kv_residual};
    if (engine_open(&ep, &e)) return 1;
    const model_hparams *hp = model_get_hparams(e.m);
    fprintf(stderr, "KV %s/%s: KV %zu bytes/token\n", ks_dtype_name(o->kv[0]),
            ks_dtype_name(o->kv[1]),
            (size_t)hp->n_layer * hp->n_head_kv *
                (kv_pool_k_row_bytes(e.pool) + kv_pool_v_row_bytes(e.pool)));
    kv_policy_args a;
    const kv_policy *pol = policy_args(o, pol_name, &e, &a);
    kv_seq *seq;
    if (!pol || engine_new_seq_args(&e, pol, &a, &seq)) {
        fprintf(stderr, "bad policy %s\n", pol_name);
        return 1;
    }
    /* Tokens are made chunk by chunk so the harness adds nothing that grows with n_ctx. */
    int32_t chunk = policy_chunk(o, pol_name, &a);
    int32_t *toks = malloc((size_t)chunk * sizeof(int32_t));
    float *logits = malloc((size_t)hp->n_vocab * sizeof(float));
    /* Filler prose repeated (random ids drive a real model into denormal-heavy, unnatural
     * activations and distort timings); random ordinary ids without --filler. */
    char *text = NULL;
    size_t len = 0;
    ks_diag d;
    int32_t *ft = NULL, nft = 0;
    if (o->filler && ks_read_file(o->filler, &text, &len, &d) == 0) {
        ft = malloc((len + 16) * sizeof(int32_t));
        nft = tok_encode(model_get_vocab(e.m), text, len, false, false, ft, (int32_t)len + 16);
        free(text);
    }
    uint64_t r = 7;
    int32_t bos = tok_bos(model_get_vocab(e.m));
    double t0 = ks_time_now();
    int rc = 0;
    for (int32_t c0 = 0; c0 < n_ctx && !rc; c0 += chunk) {
        int32_t m = KS_MIN(chunk, n_ctx - c0);
        for (int32_t i = 0; i < m; i++) {
            r = r * 6364136223846793005ull + 1442695040888963407ull;
            toks[i] = nft > 0 ? ft[(c0 + i) % nft]
                              : 3 + (int32_t)((r >> 33) % (uint64_t)(hp->n_vocab - 3));
        }
        if (c0 == 0 && bos >= 0) toks[0] = bos;
        model_seq_batch b = {.kv = seq,
                             .tokens = toks,
                             .n_tokens = m,
                             .logits = c0 + m == n_ctx ? logits : NULL,
                             .prompt_chunk = true,
                             .prompt_last = c0 + m == n_ctx};
        rc = model_forward(e.ctx, &b, 1);
    }
    free(ft);
    double t1 = ks_time_now();
    for (int32_t i = 0; i < o->gen && !rc; i++) {
        int32_t t = argmax(logits, hp->n_vocab);
        model_seq_batch b = {.kv = seq, .tokens = &t, .n_tokens = 1, .logits = logits};
        rc = model_forward(e.ctx, &b, 1);
    }
    double t2 = ks_time_now();
    if (rc) {
        fprintf(stderr, "%s at %d: %s\n", pol_name, n_ctx, ks_status_str(rc));
        return 1;
    }
    kv_retrieval_stats st;
    bool rt = kv_retrieval_get_stats(seq, &st) == 0;
    printf("| %7d | %-9s | %9.0f | %8.1f | %8.1f | ", n_ctx, pol_name, n_ctx / (t1 - t0),
           o->gen / (t2 - t1), peak_rss_kb_self() / 1024.0);
    if (rt)
        printf("%7lld | %7lld | %5.1f%% | %8.1f |\n", (long long)st.blocks_ram,
               (long long)st.blocks_disk, 100.0 * st.hot_hit_rate, st.bytes_read / 1048576.0);
    else
        printf("%7s | %7s | %6s | %8s |\n", "-", "-", "-", "-");
    fflush(stdout);
    kv_seq_destroy(seq);
    free(toks);
    free(logits);
    engine_close(&e);
    return 0;
}

static int run_speed(const opts *o)
{
    int64_t ctx[16], n_ctx = parse_list(o->ctx, ctx, 16);
    char pols[256];
    static const char *const keys[] = {"ram_mb", "top_k",  "block_tokens",
                                       "window", "n_sink", "dense_layers"};
    const kv_policy_desc *rd = kv_policy_desc_find("retrieval");
    kv_model_info mi = {0, 0, 0, 0}; /* the parameters as the children resolve them */
    model *m;
    ks_diag md;
    if (model_load(o->model, &m, &md) == 0) {
        const model_hparams *hp = model_get_hparams(m);
        mi = (kv_model_info){hp->n_ctx_train, hp->n_layer, hp->n_head_kv, hp->head_dim};
        model_free(m);
    }
    kv_policy_params rp;
    kv_policy_params_resolve(&o->pc, rd, &mi, rp.bytes);
    for (size_t k = 0; k < KS_ARRAY_LEN(keys); k++) {
        char v[64];
        kv_param_format(rp.bytes, kv_param_find(kv_policy_desc_index(rd), keys[k]), v, sizeof(v));
        printf("%s=%s ", keys[k], v);
    }
    printf("chunk=%d threads=%lld\n", rd->prefill_chunk(rp.bytes, (int32_t)o->chunk),
           (long long)o->threads);
    printf("| context | policy    | prefill/s | decode/s | RSS MiB  | blk RAM | blk disk | hit    "
           "| read MiB |\n|---|---|---|---|---|---|---|---|---|\n");
    fflush(stdout);
    for (int i = 0; i < n_ctx; i++) {
        snprintf(pols, sizeof(pols), "%s", o->policies);
        for (char *p = strtok(pols, ","); p; p = strtok(NULL, ",")) {
            if (!strcmp(p, "full") && ctx[i] > o->full_max) {
                printf("| %7lld | %-9s | (skipped: quadratic, above --full-max) |\n",
                       (long long)ctx[i], p);
                fflush(stdout);
                continue;
            }
            fflush(stdout);
            pid_t pid = fork();
            if (pid == 0) _exit(speed_child(o, p, (int32_t)ctx[i]));
            int status;
            waitpid(pid, &status, 0);
            if (!WIFEXITED(status) || WEXITSTATUS(status))
                printf("| %7lld | %-9s | failed |\n", (long long)ctx[i], p);
            fflush(stdout);
        }
    }
    return 0;
}

/* ---------------------------------------------------------------------------------------- */
/* Passkey                                                                                   */

typedef struct filler {
    char **sent; /* sentences, whitespace collapsed */
    int32_t *n_tok;
    int n;
} filler;

static int filler_load(const char *path, const tok_vocab *v, filler *f)
{
    char *text;
    size_t len;
    ks_diag d;
    if (ks_read_file(path, &text, &len, &d)) return 1;
    /* collapse whitespace */
    size_t w = 0;
    for (size_t i = 0; i < len; i++) {
        char c = isspace((unsigned char)text[i]) ? ' ' : text[i];
        if (c == ' ' && (w == 0 || text[w - 1] == ' ')) continue;
        text[w++] = c;
    }
    text[w] = 0;
    f->sent = calloc(w / 2 + 1, sizeof(char *));
    f->n_tok = calloc(w / 2 + 1, sizeof(int32_t));
    char *s = text;
    while (*s) {
        char *e = strstr(s, ". ");
        size_t n = e ? (size_t)(e - s) + 1 : strlen(s);
        f->sent[f->n] = strndup(s, n);
        int32_t ids[4096];
        f->n_tok[f->n] = tok_encode(v, f->sent[f->n], n, false, false, ids, 4096);
        f->n++;
        s += n;
        while (*s == ' ')
            s++;
    }
    free(text);
    return f->n > 0 ? 0 : 1;
}

/* Builds a prompt of about n_target tokens with the needle at `depth`. Returns tokens. */
static int32_t build_prompt(const filler *f, const tok_vocab *v, int32_t n_target, double depth,
                            int key, int start, int32_t *out, int32_t cap)
{
    char needle[128], question[] = "What is the pass key? The pass key is";
    snprintf(needle, sizeof(needle), "The pass key is %d. Remember it. %d is the pass key.", key,
             key);
    int32_t budget = n_target - 40, n_s = 0, got = 0;
    while (got < budget) {
        got += f->n_tok[(start + n_s) % f->n] + 1;
        n_s++;
    }
    int at = (int)(depth * n_s);
    size_t cap_txt = 64 + sizeof(needle) + sizeof(question);
    for (int i = 0; i < n_s; i++)
        cap_txt += strlen(f->sent[(start + i) % f->n]) + 1;
    char *txt = malloc(cap_txt), *p = txt;
    for (int i = 0; i <= n_s; i++) {
        if (i == at) p += sprintf(p, "%s ", needle);
        if (i < n_s) p += sprintf(p, "%s ", f->sent[(start + i) % f->n]);
    }
    strcpy(p, question);
    int32_t n = tok_encode(v, txt, strlen(txt), true, false, out, cap);
    free(txt);
    return n;
}

static int run_passkey(const opts *o)
{
    int64_t lens[16], n_len = parse_list(o->lengths, lens, 16);
    int32_t max_len = 0;
    for (int i = 0; i < n_len; i++)
        max_len = KS_MAX(max_len, (int32_t)lens[i] + 64);
    engine e;
    engine_params ep = {.model_path = o->model,
                        .n_threads = (int32_t)o->threads,
                        .n_ctx = max_len + 16,
                        .n_batch = (int32_t)o->chunk,
                        .n_seqs = 1,
                        .k_dtype = o->kv[0],
                        .v_dtype = o->kv[1],
                        .kv_residual = (int32_t)o->kv_residual};
    if (engine_open(&ep, &e)) return 1;
    const model_hparams *hp = model_get_hparams(e.m);
    const tok_vocab *v = model_get_vocab(e.m);
    filler f = {0};
    if (!o->filler || filler_load(o->filler, v, &f)) {
        fprintf(stderr, "cannot read --filler\n");
        return 1;
    }
    int32_t *toks = malloc((size_t)max_len * 2 * sizeof(int32_t));
    float *logits = malloc((size_t)hp->n_vocab * sizeof(float));
    printf("| prompt tokens | policy | correct |\n|---|---|---|\n");
    char pols[256];
    for (int li = 0; li < n_len; li++) {
        snprintf(pols, sizeof(pols), "%s", o->policies);
        for (char *pn = strtok(pols, ","); pn; pn = strtok(NULL, ",")) {
            kv_policy_args a;
            const kv_policy *pol = policy_args(o, pn, &e, &a);
            int ok = 0, n_tok_sum = 0;
            double t0 = ks_time_now();
            for (int i = 0; i < o->prompts; i++) {
                int key = 10000 + (int)((i * 7919 + li * 104729 + 12345) % 90000);
                int32_t n = build_prompt(&f, v, (int32_t)lens[li], (i + 0.5) / o->prompts, key,
                                         i * 37, toks, max_len * 2);
                n_tok_sum += n;
                kv_seq *seq;
                if (!pol || n > max_len * 2 || engine_new_seq_args(&e, pol, &a, &seq)) return 1;
                int rc = prefill(&e, seq, toks, n, policy_chunk(o, pn, &a), logits);
                char outbuf[64] = "", *w = outbuf;
                for (int g = 0; g < 7 && !rc; g++) {
                    int32_t t = argmax(logits, hp->n_vocab);
                    int32_t m = tok_piece(v, t, false, w, (int32_t)(outbuf + 60 - w));
                    if (m > 0 && w + m < outbuf + 60) w += m;
                    model_seq_batch b = {.kv = seq, .tokens = &t, .n_tokens = 1, .logits = logits};
                    rc = model_forward(e.ctx, &b, 1);
                }
                *w = 0;
                char want[16];
                snprintf(want, sizeof(want), "%d", key);
                const char *s = outbuf;
                while (*s == ' ')
                    s++;
                ok += rc == 0 && strncmp(s, want, 5) == 0;
                if (rc) fprintf(stderr, "%s: %s\n", pn, ks_status_str(rc));
                kv_seq_destroy(seq);
            }
            printf("| %d | %s | %d/%lld | (%.1fs)\n", n_tok_sum / (int)o->prompts, pn, ok,
                   (long long)o->prompts, ks_time_now() - t0);
            fflush(stdout);
        }
    }
    free(toks);
    free(logits);
    engine_close(&e);
    return 0;
}

/* A flag that sets one parameter of one or two policies (by name, through the descriptors). */
typedef struct knob {
    kv_policy_config *pc;
    const char *policy, *key, *policy2;
} knob;

static int knob_arg(const char *v, void *dst, char *err, size_t err_len)
{
    const knob *k = dst;
    int rc = kv_policy_config_set(k->pc, k->policy, k->key, v);
    if (!rc && k->policy2) rc = kv_policy_config_set(k->pc, k->policy2, k->key, v);
    if (rc) snprintf(err, err_len, "expected a value of %s.%s, got '%s'", k->policy, k->key, v);
    return rc;
}

int main(int argc, char **argv)
{
    opts o = {.threads = cli_default_threads(),
              .chunk = 512,
              .gen = 16,
              .prompts = 12,
              .full_max = 32768,
              .ctx = "8192,32768,131072",
              .lengths = "480,1950,7800",
              .policies = "full,retrieval",
              .kv = {KS_DTYPE_F16, KS_DTYPE_F16},
              .kv_residual = 128};
    kv_policy_config_defaults(&o.pc);
    const char *rt = "retrieval", *sw = "sink_window";
    if (kv_policy_config_set(&o.pc, rt, "ram_mb", "32")) return 1;
    static const char *const kModes[] = {"speed", "passkey", NULL};
    const char *ctx = o.ctx, *lengths = o.lengths, *policies = o.policies;
    int mode = 0;
    knob k[] = {{&o.pc, rt, "ram_mb", NULL},          {&o.pc, rt, "spill_dir", NULL},
                {&o.pc, rt, "top_k", NULL},           {&o.pc, rt, "block_tokens", NULL},
                {&o.pc, rt, "window", NULL},          {&o.pc, rt, "n_sink", sw},
                {&o.pc, rt, "dense_layers", NULL},    {&o.pc, sw, "window", NULL},
                {&o.pc, rt, "representatives", NULL}, {&o.pc, rt, "positions", NULL},
                {&o.pc, rt, "landmark", NULL},        {&o.pc, rt, "selection", NULL},
                {&o.pc, rt, "eviction", NULL},        {&o.pc, "hybrid", "profile", NULL}};
#define KNOB(name, i, h)                                                                           \
    {                                                                                              \
        name, 0, KS_ARG_FUNC, &k[i], .parse = knob_arg, .help = h                                  \
    }
    const ks_arg args[] = {
        {"MODE", 0, KS_ARG_ENUM, &mode, .choices = kModes, .help = "what to measure",
         .flags = KS_ARG_POSITIONAL},
        {"model", 'm', KS_ARG_STRING, &o.model, .metavar = "FILE", .help = "GGUF model",
         .flags = KS_ARG_REQUIRED},
        {"filler", 0, KS_ARG_STRING, &o.filler, .metavar = "FILE",
         .help = "filler text (speed: random ids without it; passkey: required)"},
        {"ctx", 0, KS_ARG_STRING, &ctx, .metavar = "A,B,C", .help = "speed: context lengths"},
        {"lengths", 0, KS_ARG_STRING, &lengths, .metavar = "A,B,C",
         .help = "passkey: prompt lengths"},
        {"policies", 0, KS_ARG_STRING, &policies, .metavar = "P,Q", .help = "policies compared"},
        {"threads", 't', KS_ARG_INT, &o.threads, 1, 256, .help = "compute threads"},
        KS_DTYPE_ARG_ROWS(o.kv),
        {"kv-residual", 0, KS_ARG_INT, &o.kv_residual, 0, KV_RESIDUAL_MAX,
         .help = "kivi4/kivi2: the last N tokens of a sequence stay f16"},
        {"chunk", 0, KS_ARG_INT, &o.chunk, 1, 8192, .help = "prefill chunk tokens"},
        {"gen", 0, KS_ARG_INT, &o.gen, 1, 4096, .help = "speed: decoded tokens"},
        {"prompts", 0, KS_ARG_INT, &o.prompts, 1, 1000, .help = "passkey: prompts per length"},
        {"full-max", 0, KS_ARG_INT, &o.full_max, 0, 1 << 30,
         .help = "speed: skip full attention above this context"},
        KNOB("ram-mb", 0, "retrieval ram_mb (default here 32)"),
        KNOB("spill-dir", 1, "retrieval spill_dir"),
        KNOB("top-k", 2, "retrieval top_k"),
        KNOB("block", 3, "retrieval block_tokens"),
        KNOB("window", 4, "retrieval window"),
        KNOB("sink", 5, "retrieval and sink_window n_sink"),
        KNOB("dense", 6, "retrieval dense_layers"),
        KNOB("sw-window", 7, "sink_window window"),
        KNOB("reps", 8, "retrieval representatives"),
        KNOB("positions", 9, "retrieval positions"),
        KNOB("landmark", 10, "retrieval landmark"),
        KNOB("selection", 11, "retrieval selection"),
        KNOB("eviction", 12, "retrieval eviction"),
        KNOB("profile", 13, "hybrid head-profile file (kvserve profile-heads)"),
    };
#undef KNOB
    const ks_args_spec spec = {
        "bench_longctx", "Memory and speed by context length, or passkey accuracy.", args,
        KS_ARRAY_LEN(args), "Policy parameters default to the policy's (docs/policies.md)."};
    int exit_code = ks_args_run(&spec, argc, argv);
    if (exit_code >= 0) return exit_code;
    o.mode = kModes[mode];
    snprintf(o.ctx, sizeof(o.ctx), "%s", ctx);
    snprintf(o.lengths, sizeof(o.lengths), "%s", lengths);
    snprintf(o.policies, sizeof(o.policies), "%s", policies);
    ks_diag d;
    ks_diag_clear(&d);
    if (kv_policy_config_validate(&o.pc, &d)) {
        fprintf(stderr, "bench_longctx: %s\n", d.msg);
        return 2;
    }
    const kv_policy_desc *rd = kv_policy_desc_find(rt);
    char spill_dir[KV_PARAM_PATH_MAX];
    kv_param_format(kv_policy_config_params(&o.pc, rd),
                    kv_param_find(kv_policy_desc_index(rd), "spill_dir"), spill_dir,
                    sizeof(spill_dir));
    if (kv_spill_cleanup_dir(spill_dir) < 0)
        fprintf(stderr, "warning: cannot clean %s\n", spill_dir);
    return !strcmp(o.mode, "passkey") ? run_passkey(&o) : run_speed(&o);
}
