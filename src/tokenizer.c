/* CLIP's byte-level BPE tokenizer, as transformers' CLIPTokenizer runs it without ftfy (its BasicTokenizer
 * clean-up, NFC, lower case, CLIP's pre-tokenizer pattern, byte-to-unicode symbols, merges by rank). */
#define _POSIX_C_SOURCE 200809L
#include "internal.h"

#include <cjson/cJSON.h>
#include <string.h>
#include <utf8proc.h>

#define DEFAULT_CONTEXT 77
/* transformers' CLIPTokenizer reads at most this many merges (49152 - 256 - 2 of merges.txt's lines after its
 * header): CLIP's vocabulary is 256 bytes, 256 word-final bytes, the merges and two special tokens */
#define MAX_MERGES (49152 - 256 - 2)

enum { SPECIAL_BOS, SPECIAL_EOS, SPECIAL_UNK, SPECIAL_PAD, SPECIAL_COUNT };
static const char *const special_keys[SPECIAL_COUNT] = {"bos_token", "eos_token", "unk_token", "pad_token"};
static const char *const special_defaults[SPECIAL_COUNT] = {"<|startoftext|>", "<|endoftext|>", "<|endoftext|>",
                                                            "<|endoftext|>"};

/* Symbols are the strings the vocabulary and the merges name, interned once: a word is an array of symbol
 * numbers, and a merge maps a pair of symbols to its rank and the merged symbol. */
struct df_tokenizer {
    char   **sym;        /* symbol strings */
    int     *sym_id;     /* each symbol's vocabulary id, -1 when the vocabulary lacks it */
    int      nsym, capsym;
    int     *sym_hash;   /* open addressing: symbol + 1, 0 for empty */
    size_t   sym_hcap;
    uint64_t *pair_key;  /* (left << 32 | right) + 1, 0 for empty */
    int32_t *pair_rank, *pair_out;
    size_t   pair_hcap;
    int32_t *merges;     /* the merges in rank order: left and right symbol of each */
    int      nmerges;
    int      byte_sym[256], byte_end_sym[256];   /* a byte's symbol, alone and ending a word */
    char   **id_str;     /* the token of each id (NULL for gaps) */
    int      nid;
    int      context;
    char    *special[SPECIAL_COUNT];
    int32_t *special_cp[SPECIAL_COUNT];   /* their code points, for finding them in a text */
    long     special_len[SPECIAL_COUNT];
    int      special_id[SPECIAL_COUNT];
};

/* ---- interning --------------------------------------------------------------------------------------- */

static uint64_t hash_bytes(const char *s, size_t n) {   /* FNV-1a */
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
    return h;
}

static uint64_t hash_u64(uint64_t x) {   /* splitmix64's finaliser */
    x ^= x >> 30, x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27, x *= 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

/* The symbol spelled s[0..n), or -1. */
static int sym_find(const df_tokenizer *t, const char *s, size_t n) {
    if (!t->sym_hcap) return -1;
    for (size_t i = hash_bytes(s, n) & (t->sym_hcap - 1);; i = (i + 1) & (t->sym_hcap - 1)) {
        const int k = t->sym_hash[i];
        if (!k) return -1;
        const char *c = t->sym[k - 1];
        if (strlen(c) == n && !memcmp(c, s, n)) return k - 1;
    }
}

static df_status sym_rehash(df_tokenizer *t, size_t cap) {
    int *h = calloc(cap, sizeof *h);
    if (!h) return df_fail(DF_ERR_NOMEM, "tokenizer: out of memory");
    for (int k = 0; k < t->nsym; k++) {
        size_t i = hash_bytes(t->sym[k], strlen(t->sym[k])) & (cap - 1);
        while (h[i]) i = (i + 1) & (cap - 1);
        h[i] = k + 1;
    }
    free(t->sym_hash);
    t->sym_hash = h, t->sym_hcap = cap;
    return DF_OK;
}

/* The symbol spelled s[0..n), added if new. */
static df_status sym_intern(df_tokenizer *t, const char *s, size_t n, int *out) {
    int k = sym_find(t, s, n);
    if (k >= 0) return *out = k, DF_OK;
    if (t->nsym == t->capsym) {
        const int cap = t->capsym ? 2 * t->capsym : 1024;
        char **ns = realloc(t->sym, (size_t)cap * sizeof *ns);
        if (ns) t->sym = ns;
        int *ni = ns ? realloc(t->sym_id, (size_t)cap * sizeof *ni) : NULL;
        if (!ni) return df_fail(DF_ERR_NOMEM, "tokenizer: out of memory");
        t->sym_id = ni, t->capsym = cap;
    }
    if (2 * (size_t)(t->nsym + 1) > t->sym_hcap) {
        df_status st = sym_rehash(t, t->sym_hcap ? 2 * t->sym_hcap : 2048);
        if (st) return st;
    }
    char *c = malloc(n + 1);
    if (!c) return df_fail(DF_ERR_NOMEM, "tokenizer: out of memory");
    memcpy(c, s, n), c[n] = 0;
    k = t->nsym++;
    t->sym[k] = c, t->sym_id[k] = -1;
    size_t i = hash_bytes(s, n) & (t->sym_hcap - 1);
    while (t->sym_hash[i]) i = (i + 1) & (t->sym_hcap - 1);
    t->sym_hash[i] = k + 1;
    return *out = k, DF_OK;
}

static size_t pair_slot(const df_tokenizer *t, int a, int b) {
    const uint64_t key = ((uint64_t)(uint32_t)a << 32 | (uint32_t)b) + 1;
    size_t i = hash_u64(key) & (t->pair_hcap - 1);
    while (t->pair_key[i] && t->pair_key[i] != key) i = (i + 1) & (t->pair_hcap - 1);
    return i;
}

/* ---- loading ----------------------------------------------------------------------------------------- */

/* GPT-2's byte-to-unicode table: printable bytes stand for themselves, the other 68 for U+0100 on. */
static int byte_char(int b) {
    if ((b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF)) return b;
    int n = 0;
    for (int c = 0; c < b; c++)
        if (!((c >= '!' && c <= '~') || (c >= 0xA1 && c <= 0xAC) || (c >= 0xAE && c <= 0xFF))) n++;
    return 256 + n;
}

/* A special token's text from a tokenizer config: a string, or an AddedToken object's "content". */
static const char *special_text(const cJSON *v) {
    if (cJSON_IsString(v)) return v->valuestring;
    const cJSON *c = cJSON_IsObject(v) ? cJSON_GetObjectItemCaseSensitive(v, "content") : NULL;
    return cJSON_IsString(c) ? c->valuestring : NULL;
}

/* tokenizer_config.json, then special_tokens_map.json for what it left unset: the special tokens and the
 * context length; both files are optional. */
static df_status load_configs(df_tokenizer *t, const char *dir) {
    static const char *const files[] = {"tokenizer_config.json", "special_tokens_map.json"};
    for (int f = 0; f < 2; f++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, files[f]);
        FILE *probe = fopen(path, "rb");
        if (!probe) continue;
        fclose(probe);
        cJSON *j;
        df_status st = df_read_json_object(path, &j);
        if (st) return st;
        for (int s = 0; s < SPECIAL_COUNT; s++) {
            const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, special_keys[s]);
            if (!v || cJSON_IsNull(v) || t->special[s]) continue;
            const char *txt = special_text(v);
            if (!txt || !*txt) {
                cJSON_Delete(j);
                return df_fail(DF_ERR_FORMAT, "%s: \"%s\" is not a token", path, special_keys[s]);
            }
            if (!(t->special[s] = strdup(txt))) {
                cJSON_Delete(j);
                return df_fail(DF_ERR_NOMEM, "tokenizer: out of memory");
            }
        }
        const cJSON *m = cJSON_GetObjectItemCaseSensitive(j, "model_max_length");
        /* transformers writes a huge number when the length is unset: keep CLIP's 77 then */
        if (f == 0 && cJSON_IsNumber(m) && m->valuedouble < 1e6) {
            if (m->valuedouble < 3 || m->valuedouble != (int)m->valuedouble) {
                const double v = m->valuedouble;
                cJSON_Delete(j);
                return df_fail(DF_ERR_FORMAT, "%s: model_max_length %g is not a context length (3 or more)", path, v);
            }
            t->context = (int)m->valuedouble;
        }
        cJSON_Delete(j);
    }
    for (int s = 0; s < SPECIAL_COUNT; s++)
        if (!t->special[s] && !(t->special[s] = strdup(special_defaults[s])))
            return df_fail(DF_ERR_NOMEM, "tokenizer: out of memory");
    return DF_OK;
}

static df_status load_vocab(df_tokenizer *t, const char *dir) {
    char path[4096];
    snprintf(path, sizeof path, "%s/vocab.json", dir);
    cJSON *j;
    df_status st = df_read_json_object(path, &j);
    if (st) return st;
    if (!j->child) {
        cJSON_Delete(j);
        return df_fail(DF_ERR_FORMAT, "%s: an empty vocabulary", path);
    }
    int n = 0, max_id = -1;
    for (const cJSON *e = j->child; e; e = e->next, n++) {
        if (!cJSON_IsNumber(e) || e->valuedouble < 0 || e->valuedouble >= (1 << 22) || e->valuedouble != (int)e->valuedouble) {
            cJSON_Delete(j);
            return df_fail(DF_ERR_FORMAT, "%s: the id of token %d is not an integer in [0, 2^22)", path, n);
        }
        max_id = DF_MAX(max_id, (int)e->valuedouble);
    }
    t->nid = max_id + 1;
    t->id_str = calloc((size_t)t->nid, sizeof *t->id_str);
    if (!t->id_str) st = df_fail(DF_ERR_NOMEM, "tokenizer: out of memory");
    for (const cJSON *e = j->child; e && !st; e = e->next) {
        const int id = (int)e->valuedouble;
        int k;
        if (!e->string || !*e->string) st = df_fail(DF_ERR_FORMAT, "%s: an empty token (id %d)", path, id);
        else if (t->id_str[id]) st = df_fail(DF_ERR_FORMAT, "%s: id %d is given to two tokens", path, id);
        else if (!(st = sym_intern(t, e->string, strlen(e->string), &k))) {
            if (t->sym_id[k] >= 0) st = df_fail(DF_ERR_FORMAT, "%s: token \"%s\" appears twice", path, e->string);
            t->sym_id[k] = id, t->id_str[id] = t->sym[k];
        }
    }
    cJSON_Delete(j);
    return st;
}

static df_status load_merges(df_tokenizer *t, const char *dir) {
    char path[4096], *text;
    size_t len;
    snprintf(path, sizeof path, "%s/merges.txt", dir);
    df_status st = df_read_file(path, &text, &len);
    if (st) return st;
    size_t lines = 1;
    for (size_t i = 0; i < len; i++) lines += text[i] == '\n';
    t->pair_hcap = 16;
    while (t->pair_hcap < 2 * lines) t->pair_hcap *= 2;
    t->pair_key = calloc(t->pair_hcap, sizeof *t->pair_key);
    t->pair_rank = malloc(t->pair_hcap * sizeof *t->pair_rank);
    t->pair_out = malloc(t->pair_hcap * sizeof *t->pair_out);
    t->merges = malloc(2 * lines * sizeof *t->merges);
    if (!t->pair_key || !t->pair_rank || !t->pair_out || !t->merges) {
        free(text);
        return df_fail(DF_ERR_NOMEM, "tokenizer: out of memory for %zu merges", lines);
    }
    if (memchr(text, 0, len)) {
        free(text);
        return df_fail(DF_ERR_FORMAT, "%s: holds a NUL byte: not a merges file", path);
    }
    /* a "#version" header line, then one merge per line: two symbols and one space; trailing blank lines end it */
    int rank = 0, lineno = 0;
    char *p = text, *end = text + len;
    while (!st && p < end && rank < MAX_MERGES) {
        char *nl = memchr(p, '\n', (size_t)(end - p));
        char *e = nl ? nl : end;
        lineno++;
        size_t n = (size_t)(e - p);
        if (n && p[n - 1] == '\r') n--;
        if (lineno == 1 && n >= 8 && !memcmp(p, "#version", 8)) {
            p = e + 1;
            continue;
        }
        if (!n) {   /* blank: only trailing blank lines are allowed */
            for (char *q = p; q < end; q++)
                if (*q != '\n' && *q != '\r') {
                    st = df_fail(DF_ERR_FORMAT, "%s:%d: a blank line between merges", path, lineno);
                    break;
                }
            break;
        }
        char *sp = memchr(p, ' ', n);
        if (!sp || sp == p || sp == p + n - 1 || memchr(sp + 1, ' ', (size_t)(p + n - sp - 1))) {
            st = df_fail(DF_ERR_FORMAT, "%s:%d: not a merge (two symbols and one space)", path, lineno);
            break;
        }
        int a, b, out;
        const size_t na = (size_t)(sp - p), nb = n - na - 1;
        char *joined = malloc(na + nb);
        if (!joined) {
            st = df_fail(DF_ERR_NOMEM, "tokenizer: out of memory");
            break;
        }
        memcpy(joined, p, na), memcpy(joined + na, sp + 1, nb);
        if (!(st = sym_intern(t, p, na, &a)) && !(st = sym_intern(t, sp + 1, nb, &b)) &&
            !(st = sym_intern(t, joined, na + nb, &out))) {
            const size_t i = pair_slot(t, a, b);
            /* a repeated pair takes its last rank, as transformers' dict of ranks does */
            t->pair_key[i] = ((uint64_t)(uint32_t)a << 32 | (uint32_t)b) + 1;
            t->pair_rank[i] = rank++, t->pair_out[i] = out;
            t->merges[2 * t->nmerges] = a, t->merges[2 * t->nmerges + 1] = b, t->nmerges++;
        }
        free(joined);
        p = e + 1;
    }
    free(text);
    return st;
}

static long utf8_decode(const unsigned char *s, size_t n, int32_t *cp);

static int char_utf8(int cp, char out[4]) { return (int)utf8proc_encode_char(cp, (utf8proc_uint8_t *)out); }

df_status df_tokenizer_load(const char *dir, df_tokenizer **out) {
    *out = NULL;
    if (!dir) return df_fail(DF_ERR_ARG, "tokenizer: no folder given");
    df_tokenizer *t = calloc(1, sizeof *t);
    if (!t) return df_fail(DF_ERR_NOMEM, "tokenizer: out of memory");
    t->context = DEFAULT_CONTEXT;
    df_status st = load_vocab(t, dir);
    if (!st) st = load_merges(t, dir);
    if (!st) st = load_configs(t, dir);
    for (int b = 0; b < 256 && !st; b++) {   /* every byte must spell a symbol, alone and word-final */
        char s[12];
        const int n = char_utf8(byte_char(b), s);
        memcpy(s + n, "</w>", 4);
        if (!(st = sym_intern(t, s, (size_t)n, &t->byte_sym[b]))) st = sym_intern(t, s, (size_t)n + 4, &t->byte_end_sym[b]);
    }
    for (int s = 0; s < SPECIAL_COUNT && !st; s++) {
        const size_t len = strlen(t->special[s]);
        const int k = sym_find(t, t->special[s], len);
        t->special_id[s] = k >= 0 ? t->sym_id[k] : -1;
        if (t->special_id[s] < 0) {
            st = df_fail(DF_ERR_FORMAT, "%s/vocab.json: has no id for the %s \"%s\"", dir, special_keys[s], t->special[s]);
        } else if (!(t->special_cp[s] = malloc((len + 1) * sizeof(int32_t)))) {
            st = df_fail(DF_ERR_NOMEM, "tokenizer: out of memory");
        } else if ((t->special_len[s] = utf8_decode((const unsigned char *)t->special[s], len, t->special_cp[s])) < 0) {
            st = df_fail(DF_ERR_FORMAT, "%s: the %s is not valid UTF-8", dir, special_keys[s]);
        }
    }
    if (st) {
        df_tokenizer_free(t);
        return st;
    }
    *out = t;
    return DF_OK;
}

void df_tokenizer_free(df_tokenizer *t) {
    if (!t) return;
    for (int k = 0; k < t->nsym; k++) free(t->sym[k]);
    for (int s = 0; s < SPECIAL_COUNT; s++) free(t->special[s]), free(t->special_cp[s]);
    free(t->sym), free(t->sym_id), free(t->sym_hash), free(t->pair_key), free(t->pair_rank), free(t->pair_out);
    free(t->merges);
    free(t->id_str);
    free(t);
}

df_status df_tokenizer_save(const df_tokenizer *t, const char *dir) {
    df_status st = df_mkdir_p(dir);
    if (st) return st;
    char path[4096];
    /* vocab.json: tokens by id */
    cJSON *v = cJSON_CreateObject();
    for (int id = 0; v && id < t->nid; id++)
        if (t->id_str[id] && !cJSON_AddNumberToObject(v, t->id_str[id], id)) cJSON_Delete(v), v = NULL;
    if (!v) return df_fail(DF_ERR_NOMEM, "tokenizer: out of memory");
    snprintf(path, sizeof path, "%s/vocab.json", dir);
    char *text = cJSON_PrintUnformatted(v);
    cJSON_Delete(v);
    if (!text) return df_fail(DF_ERR_NOMEM, "tokenizer: out of memory");
    st = df_write_file_atomic(path, text, strlen(text));
    cJSON_free(text);
    if (st) return st;
    /* merges.txt: the header, then the merges by rank */
    size_t len = 16;
    for (int k = 0; k < t->nmerges; k++) len += strlen(t->sym[t->merges[2 * k]]) + strlen(t->sym[t->merges[2 * k + 1]]) + 2;
    char *m = malloc(len + 1);
    if (!m) return df_fail(DF_ERR_NOMEM, "tokenizer: out of memory");
    size_t o = (size_t)sprintf(m, "#version: 0.2\n");
    for (int k = 0; k < t->nmerges; k++)
        o += (size_t)sprintf(m + o, "%s %s\n", t->sym[t->merges[2 * k]], t->sym[t->merges[2 * k + 1]]);
    snprintf(path, sizeof path, "%s/merges.txt", dir);
    st = df_write_file_atomic(path, m, o);
    free(m);
    if (st) return st;
    /* the special tokens and the context, in both files transformers reads */
    for (int f = 0; f < 2; f++) {
        cJSON *j = cJSON_CreateObject();
        for (int s = 0; j && s < SPECIAL_COUNT; s++) cJSON_AddStringToObject(j, special_keys[s], t->special[s]);
        if (j && f == 0) {
            cJSON_AddNumberToObject(j, "model_max_length", t->context);
            cJSON_AddStringToObject(j, "tokenizer_class", "CLIPTokenizer");
            cJSON_AddBoolToObject(j, "do_lower_case", 1);
            cJSON_AddStringToObject(j, "errors", "replace");
        }
        if (!j) return df_fail(DF_ERR_NOMEM, "tokenizer: out of memory");
        snprintf(path, sizeof path, "%s/%s", dir, f ? "special_tokens_map.json" : "tokenizer_config.json");
        if ((st = df_write_json_atomic(path, j))) return st;
    }
    return DF_OK;
}

int df_tokenizer_context(const df_tokenizer *t) { return t->context; }
int df_tokenizer_vocab_size(const df_tokenizer *t) { return t->nid; }
const char *df_tokenizer_token(const df_tokenizer *t, int id) {
    return id >= 0 && id < t->nid ? t->id_str[id] : NULL;
}

/* ---- normalisation ----------------------------------------------------------------------------------- */

/* Strict UTF-8 (no overlong forms, surrogates or code points past U+10FFFF, as Python's decoder): the code
 * points of s into cp (room for strlen(s)); the count, or -1 - (offset of the first bad byte). */
static long utf8_decode(const unsigned char *s, size_t n, int32_t *cp) {
    long k = 0;
    for (size_t i = 0; i < n;) {
        const unsigned c = s[i];
        int len, min;
        uint32_t v;
        if (c < 0x80) len = 1, v = c, min = 0;
        else if (c >= 0xC2 && c <= 0xDF) len = 2, v = c & 0x1F, min = 0x80;
        else if (c >= 0xE0 && c <= 0xEF) len = 3, v = c & 0x0F, min = 0x800;
        else if (c >= 0xF0 && c <= 0xF4) len = 4, v = c & 0x07, min = 0x10000;
        else return -1 - (long)i;
        if (i + (size_t)len > n) return -1 - (long)i;
        for (int j = 1; j < len; j++) {
            if ((s[i + j] & 0xC0) != 0x80) return -1 - (long)i;
            v = v << 6 | (s[i + j] & 0x3F);
        }
        if ((int)v < min || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF)) return -1 - (long)i;
        cp[k++] = (int32_t)v, i += (size_t)len;
    }
    return k;
}

long df_utf8_invalid_at(const char *s, size_t n) {
    for (size_t i = 0; i < n;) {   /* the decoder's rules, a character at a time */
        int32_t cp[4];
        size_t len = 1;
        const unsigned char c = (unsigned char)s[i];
        if (c >= 0xF0) len = 4;
        else if (c >= 0xE0) len = 3;
        else if (c >= 0xC0) len = 2;
        if (i + len > n || utf8_decode((const unsigned char *)s + i, len, cp) != 1) return (long)i;
        i += len;
    }
    return -1;
}

static int is_control(int32_t c) {   /* BasicTokenizer: category C*, except tab, newline and return */
    if (c == '\t' || c == '\n' || c == '\r') return 0;
    const utf8proc_category_t k = utf8proc_category(c);
    return k == UTF8PROC_CATEGORY_CC || k == UTF8PROC_CATEGORY_CF || k == UTF8PROC_CATEGORY_CN ||
           k == UTF8PROC_CATEGORY_CO || k == UTF8PROC_CATEGORY_CS;
}

static int is_space(int32_t c) {   /* Python's str.isspace: category Zs, or bidirectional class WS, B or S */
    if (utf8proc_category(c) == UTF8PROC_CATEGORY_ZS) return 1;
    const int b = utf8proc_get_property(c)->bidi_class;
    return b == UTF8PROC_BIDI_CLASS_WS || b == UTF8PROC_BIDI_CLASS_B || b == UTF8PROC_BIDI_CLASS_S;
}

static int is_cjk(int32_t c) {   /* BasicTokenizer's CJK ideographs, which it spaces apart */
    return (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0x3400 && c <= 0x4DBF) || (c >= 0x20000 && c <= 0x2A6DF) ||
           (c >= 0x2A700 && c <= 0x2B73F) || (c >= 0x2B740 && c <= 0x2B81F) || (c >= 0x2B820 && c <= 0x2CEAF) ||
           (c >= 0xF900 && c <= 0xFAFF) || (c >= 0x2F800 && c <= 0x2FA1F);
}

static int is_letter(int32_t c) {
    const utf8proc_category_t k = utf8proc_category(c);
    return k >= UTF8PROC_CATEGORY_LU && k <= UTF8PROC_CATEGORY_LO;
}

static int is_number(int32_t c) {
    const utf8proc_category_t k = utf8proc_category(c);
    return k == UTF8PROC_CATEGORY_ND || k == UTF8PROC_CATEGORY_NL || k == UTF8PROC_CATEGORY_NO;
}

/* Unicode's Cased and Case_Ignorable, for the final-sigma rule of Python's str.lower: letters with case plus
 * the few other characters with case mappings; marks, format characters, modifiers and the word-internal
 * punctuation Word_Break names. */
static int is_cased(int32_t c) {
    const utf8proc_category_t k = utf8proc_category(c);
    return k == UTF8PROC_CATEGORY_LU || k == UTF8PROC_CATEGORY_LL || k == UTF8PROC_CATEGORY_LT || c == 0xAA ||
           c == 0xBA || (c >= 0x2160 && c <= 0x217F) || (c >= 0x24B6 && c <= 0x24E9) ||
           (c >= 0x1F130 && c <= 0x1F149) || (c >= 0x1F150 && c <= 0x1F169) || (c >= 0x1F170 && c <= 0x1F189);
}

static int is_case_ignorable(int32_t c) {
    const utf8proc_category_t k = utf8proc_category(c);
    if (k == UTF8PROC_CATEGORY_MN || k == UTF8PROC_CATEGORY_ME || k == UTF8PROC_CATEGORY_CF ||
        k == UTF8PROC_CATEGORY_LM || k == UTF8PROC_CATEGORY_SK)
        return 1;
    static const int32_t mid[] = {0x27,   0x2E,   0x3A,   0xB7,   0x387,  0x55F,  0x5F4,  0x2018, 0x2019,
                                  0x2024, 0x2027, 0xFE13, 0xFE52, 0xFE55, 0xFF07, 0xFF0E, 0xFF1A};
    for (int i = 0; i < DF_COUNTOF(mid); i++)
        if (c == mid[i]) return 1;
    return 0;
}

/* BasicTokenizer(strip_accents=False, do_split_on_punc=False) on cp[0..n): drop NUL, U+FFFD and control
 * characters, whitespace to spaces, spaces around CJK ideographs, NFC, then the words (split at
 * whitespace) lower-cased as Python's str.lower does, joined by single spaces. Returns the new length in
 * *out (malloc'd), or a status. */
static df_status basic_clean(const int32_t *cp, long n, int32_t **out, long *nout) {
    *out = NULL, *nout = 0;
    int32_t *a = malloc((size_t)(3 * n + 1) * sizeof *a);
    if (!a) return df_fail(DF_ERR_NOMEM, "tokenizer: out of memory");
    long m = 0;
    for (long i = 0; i < n; i++) {
        const int32_t c = cp[i];
        if (c == 0 || c == 0xFFFD || is_control(c)) continue;
        if (c == ' ' || c == '\t' || c == '\n' || c == '\r' || utf8proc_category(c) == UTF8PROC_CATEGORY_ZS) a[m++] = ' ';
        else if (is_cjk(c)) a[m++] = ' ', a[m++] = c, a[m++] = ' ';
        else a[m++] = c;
    }
    /* NFC through UTF-8 (utf8proc composes strings); nothing here is NUL any more */
    unsigned char *u8 = malloc((size_t)(4 * m + 1));
    if (!u8) {
        free(a);
        return df_fail(DF_ERR_NOMEM, "tokenizer: out of memory");
    }
    size_t len = 0;
    for (long i = 0; i < m; i++) len += (size_t)utf8proc_encode_char(a[i], u8 + len);
    utf8proc_uint8_t *nfc = NULL;
    const utf8proc_ssize_t nl = utf8proc_map(u8, (utf8proc_ssize_t)len, &nfc, UTF8PROC_STABLE | UTF8PROC_COMPOSE);
    free(u8);
    if (nl < 0) {
        free(a);
        return df_fail(DF_ERR_ARG, "tokenizer: cannot normalise the text: %s", utf8proc_errmsg(nl));
    }
    int32_t *b = malloc((size_t)(2 * nl + 1) * sizeof *b);   /* the lower case of U+0130 is two characters */
    const long nb = b ? utf8_decode(nfc, (size_t)nl, b) : 0;
    free(nfc);
    if (!b || nb < 0) {
        free(a), free(b);
        return b ? df_fail(DF_ERR_ARG, "tokenizer: normalisation gave invalid UTF-8")
                 : df_fail(DF_ERR_NOMEM, "tokenizer: out of memory");
    }
    /* words, lower-cased, joined by one space (into a, which has room: at most 2 * nb + 1) */
    free(a);
    a = malloc((size_t)(2 * nb + 1) * sizeof *a);
    if (!a) {
        free(b);
        return df_fail(DF_ERR_NOMEM, "tokenizer: out of memory");
    }
    m = 0;
    for (long i = 0; i < nb;) {
        while (i < nb && is_space(b[i])) i++;
        if (i == nb) break;
        long j = i;
        while (j < nb && !is_space(b[j])) j++;
        if (m) a[m++] = ' ';
        for (long k = i; k < j; k++) {
            const int32_t c = b[k];
            if (c == 0x130) {   /* I with dot above: "i" and a combining dot, Python's full mapping */
                a[m++] = 'i', a[m++] = 0x307;
            } else if (c == 0x3A3) {   /* sigma: final after a cased letter not followed by one (Final_Sigma) */
                long p = k - 1, q = k + 1;
                while (p >= i && is_case_ignorable(b[p])) p--;
                while (q < j && is_case_ignorable(b[q])) q++;
                a[m++] = p >= i && is_cased(b[p]) && !(q < j && is_cased(b[q])) ? 0x3C2 : 0x3C3;
            } else {
                a[m++] = utf8proc_tolower(c);
            }
        }
        i = j;
    }
    free(b);
    *out = a, *nout = m;
    return DF_OK;
}

/* ---- pre-tokens and merges --------------------------------------------------------------------------- */

/* 1 when cp[i..] starts with the ASCII string s, where "s" also matches U+017F (long s), as the
 * pre-tokenizer's case-insensitive pattern does (simple case folding). */
static int starts_fold(const int32_t *cp, long i, long n, const char *s) {
    for (long k = 0; s[k]; k++) {
        if (i + k >= n) return 0;
        const int32_t c = cp[i + k];
        if (c != (unsigned char)s[k] && !(s[k] == 's' && c == 0x17F)) return 0;
    }
    return 1;
}

/* The length of the pre-token at cp[i] (CLIP's pattern: the two special tokens, 's 't 're 've 'm 'll 'd, a
 * run of letters, one number, a run of anything else but spaces), or 0 for a character it skips. *special: 1 for
 * <|startoftext|>, 2 for <|endoftext|>, spelled exactly (so transformers' BPE cache holds them whole). */
static long pretoken(const int32_t *cp, long i, long n, int *special) {
    static const char *const contractions[] = {"'s", "'t", "'re", "'ve", "'m", "'ll", "'d"};
    static const char *const specials[] = {"<|startoftext|>", "<|endoftext|>"};
    *special = 0;
    for (int s = 0; s < 2; s++)
        if (starts_fold(cp, i, n, specials[s])) {
            const long len = (long)strlen(specials[s]);
            int exact = 1;
            for (long k = 0; k < len; k++) exact &= cp[i + k] == (unsigned char)specials[s][k];
            *special = exact ? s + 1 : 0;
            return len;
        }
    for (int k = 0; k < DF_COUNTOF(contractions); k++)
        if (starts_fold(cp, i, n, contractions[k])) return (long)strlen(contractions[k]);
    long j = i;
    if (is_letter(cp[i])) {
        while (j < n && is_letter(cp[j])) j++;
        return j - i;
    }
    if (is_number(cp[i])) return 1;
    /* U+0345 (a Greek mark whose case partners are letters) matches no class of the case-insensitive pattern,
     * and is dropped like a space */
    while (j < n && cp[j] != ' ' && cp[j] != 0x345 && !is_letter(cp[j]) && !is_number(cp[j])) j++;
    return j - i;
}

/* BPE on one word of nw symbols (w, in place): merge the lowest-ranked adjacent pair, every occurrence left
 * to right, until no pair is a merge. Returns the new length. */
static int bpe(const df_tokenizer *t, int *w, int nw) {
    while (nw > 1) {
        int best = -1, left = 0, right = 0, out = 0;
        for (int i = 0; i + 1 < nw; i++) {
            const size_t s = pair_slot(t, w[i], w[i + 1]);
            if (t->pair_key[s] && (best < 0 || t->pair_rank[s] < best))
                best = t->pair_rank[s], left = w[i], right = w[i + 1], out = t->pair_out[s];
        }
        if (best < 0) break;
        int m = 0;
        for (int i = 0; i < nw;) {
            if (i + 1 < nw && w[i] == left && w[i + 1] == right) w[m++] = out, i += 2;
            else w[m++] = w[i++];
        }
        nw = m;
    }
    return nw;
}

/* Append the ids of text cp[0..n) (a piece between special tokens) to ids (room for cap), counting every
 * token in *count even past cap. */
static df_status encode_piece(const df_tokenizer *t, const int32_t *cp0, long n0, int32_t *ids, int cap, int *count) {
    int32_t *cp;
    long n;
    df_status st = basic_clean(cp0, n0, &cp, &n);
    if (st) return st;
    int *w = malloc((size_t)(4 * n + 1) * sizeof *w);
    unsigned char *bytes = malloc((size_t)(4 * n + 1));
    if (!w || !bytes) st = df_fail(DF_ERR_NOMEM, "tokenizer: out of memory");
    for (long i = 0; i < n && !st;) {
        int special;
        const long len = pretoken(cp, i, n, &special);
        if (!len) {
            i++;
            continue;
        }
        int nw = 0;
        if (special) {   /* one token, the unknown one if the vocabulary lacks it */
            w[nw++] = special == 1 ? sym_find(t, "<|startoftext|>", 15) : sym_find(t, "<|endoftext|>", 13);
        } else {
            size_t nbyte = 0;
            for (long k = i; k < i + len; k++) nbyte += (size_t)utf8proc_encode_char(cp[k], bytes + nbyte);
            for (size_t k = 0; k < nbyte; k++) w[nw++] = k + 1 < nbyte ? t->byte_sym[bytes[k]] : t->byte_end_sym[bytes[k]];
            nw = bpe(t, w, nw);
        }
        for (int k = 0; k < nw; k++) {
            const int id = w[k] >= 0 && t->sym_id[w[k]] >= 0 ? t->sym_id[w[k]] : t->special_id[SPECIAL_UNK];
            if (*count < cap) ids[*count] = id;
            ++*count;
        }
        i += len;
    }
    free(w), free(bytes), free(cp);
    return st;
}

/* ---- the whole text ---------------------------------------------------------------------------------- */

df_status df_tokenize(const df_tokenizer *t, const char *text, int32_t *ids, int *length, int *dropped) {
    if (length) *length = 0;
    if (dropped) *dropped = 0;
    if (!t || !text || !ids) return df_fail(DF_ERR_ARG, "tokenize: no tokenizer, text or output");
    const size_t nbyte = strlen(text);
    int32_t *cp = malloc((nbyte + 1) * sizeof *cp);
    if (!cp) return df_fail(DF_ERR_NOMEM, "tokenize: out of memory for %zu bytes of text", nbyte);
    const long n = utf8_decode((const unsigned char *)text, nbyte, cp);
    if (n < 0) {
        free(cp);
        return df_fail(DF_ERR_ARG, "the text is not valid UTF-8 (byte %ld)", -1 - n);
    }
    /* the text holds at most 4 tokens per byte */
    const int room = (int)DF_MIN((size_t)4 * nbyte + 2, (size_t)1 << 30);
    int32_t *all = malloc((size_t)room * sizeof *all);
    if (!all) {
        free(cp);
        return df_fail(DF_ERR_NOMEM, "tokenize: out of memory");
    }
    /* special tokens in the raw text are tokens of their own (transformers' added-token split: the earliest,
     * then the longest, match) and cut the text into pieces tokenized apart */
    int count = 0;
    df_status st = DF_OK;
    long start = 0;
    for (long i = 0; i < n && !st;) {
        int hit = -1;
        for (int s = 0; s < SPECIAL_COUNT; s++) {
            const long sl = t->special_len[s];
            if (sl > 0 && i + sl <= n && (hit < 0 || sl > t->special_len[hit]) &&
                !memcmp(cp + i, t->special_cp[s], (size_t)sl * sizeof *cp))
                hit = s;
        }
        if (hit < 0) {
            i++;
            continue;
        }
        if (i > start && (st = encode_piece(t, cp + start, i - start, all, room, &count))) break;
        if (count < room) all[count] = t->special_id[hit];
        count++;
        i += t->special_len[hit], start = i;
    }
    if (!st && n > start) st = encode_piece(t, cp + start, n - start, all, room, &count);
    free(cp);
    if (st) {
        free(all);
        return st;
    }
    /* <start> the first context - 2 tokens <end>, then padding (truncation from the right, as CLIP's) */
    const int keep = DF_MIN(count, t->context - 2);
    ids[0] = t->special_id[SPECIAL_BOS];
    memcpy(ids + 1, all, (size_t)keep * sizeof *ids);
    ids[keep + 1] = t->special_id[SPECIAL_EOS];
    for (int i = keep + 2; i < t->context; i++) ids[i] = t->special_id[SPECIAL_PAD];
    free(all);
    if (length) *length = keep + 2;
    if (dropped) *dropped = count - keep;
    return DF_OK;
}
