/* CLIP's BPE tokenizer: against the Python reference (tests/ref/clip_bpe_ref.py, its own Unicode tables) on
 * hundreds of texts (Unicode, emoji, control characters, special tokens, invalid UTF-8), a merge worked by
 * hand, and bad tokenizer folders. */
#define _POSIX_C_SOURCE 200809L
#include "test.h"

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define DF_COUNTOF_T(a) ((int)(sizeof(a) / sizeof((a)[0])))

static void write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "wb");
    if (!f) return;
    fputs(text, f);
    fclose(f);
}

static int put_utf8(char *s, uint32_t c) {
    if (c < 0x80) return s[0] = (char)c, 1;
    if (c < 0x800) return s[0] = (char)(0xC0 | c >> 6), s[1] = (char)(0x80 | (c & 0x3F)), 2;
    if (c < 0x10000)
        return s[0] = (char)(0xE0 | c >> 12), s[1] = (char)(0x80 | ((c >> 6) & 0x3F)), s[2] = (char)(0x80 | (c & 0x3F)), 3;
    s[0] = (char)(0xF0 | c >> 18), s[1] = (char)(0x80 | ((c >> 12) & 0x3F)), s[2] = (char)(0x80 | ((c >> 6) & 0x3F));
    s[3] = (char)(0x80 | (c & 0x3F));
    return 4;
}

static const char *const words[] = {"a", "red", "heart", "grinning", "face", "with", "smiling", "eyes", "flag:",
                                    "japan", "food", "emoji", "apple", "blue", "circle", "square", "the", "of",
                                    "dress", "ankle", "boot", "don't", "it's", "we'll", "t-shirt/top", "2 bags"};

/* A corpus of captions to learn merges from. */
static void write_corpus(const char *path, df_rng *r) {
    FILE *f = fopen(path, "wb");
    if (!f) return;
    for (int line = 0; line < 400; line++) {
        const int n = 1 + (int)(df_rng_uniform(r) * 6);
        for (int k = 0; k < n; k++)
            fprintf(f, "%s%s", k ? " " : "", words[(int)(df_rng_uniform(r) * DF_COUNTOF_T(words))]);
        fputc('\n', f);
    }
    fclose(f);
}

/* Texts no random draw is sure to make. */
static const char *const fixed_texts[] = {
    "", " ", "a red heart", "A  Red\tHEART\n", "don't it'S we'LL 've 'd ''s", "12345 and 3.14",
    "Café naïve CAFÉ", "e\xcc\x81 (e and a combining acute)", "\xce\x9f\xce\x94\xce\x9f\xce\xa3 \xce\xa3\xce\x9f\xce\xa6\xce\x9f\xce\xa3 \xce\xa3",
    "\xc4\xb0stanbul", "stra\xc3\x9f" "e \xe1\xba\x9e", "\xe4\xbd\xa0\xe5\xa5\xbd\xe4\xb8\x96\xe7\x95\x8c!", "\xe3\x81\x93\xe3\x82\x93\xe3\x81\xab\xe3\x81\xa1\xe3\x81\xaf",
    "\xf0\x9f\x99\x82 \xf0\x9f\x91\x8d\xf0\x9f\x8f\xbd \xe2\x9d\xa4\xef\xb8\x8f red heart",
    "\xf0\x9f\x91\xa8\xe2\x80\x8d\xf0\x9f\x91\xa9\xe2\x80\x8d\xf0\x9f\x91\xa7 family", "\xf0\x9f\x87\xaf\xf0\x9f\x87\xb5 flag: japan",
    "ctrl\x01\x7f\x1f" "chars", "nbsp\xc2\xa0here", "line\xe2\x80\xa8sep", "zero\xe2\x80\x8bwidth", "\xef\xbb\xbf" "bom",
    "a<|endoftext|>b", "<|startoftext|>red<|endoftext|>", "<|ENDOFTEXT|> x", "!<|endoftext|>", "\xc5\xbf" "tart '\xc5\xbf",
    "hi! wow!! what?!", "\xef\xbf\xbd replacement", "Ⅻ roman ⓐ circled",
    "a very long caption about a red heart and a blue circle and a square of the dress with ankle boots and "
    "smiling eyes, repeated: a red heart and a blue circle and a square of the dress with ankle boots and "
    "smiling eyes; and again, a red heart and a blue circle and a square of the dress with ankle boots",
    "\xff", "ok\xc3\x28", "\xc0\xaf", "\xed\xa0\x80", "\xf4\x90\x80\x80", "trunc\xe2\x82",
};

/* A random text: characters from pools that cover what the cleaning and the pre-tokenizer tell apart, now
 * and then a corpus word, a special token or a bad byte. Only characters assigned before Unicode 14. */
static int random_text(df_rng *r, char *s) {
    static const uint32_t pools[][2] = {
        {'a', 'z'},        {'A', 'Z'},        {'0', '9'},        {'!', '/'},         {':', '@'},
        {0xC0, 0xFF},      {0x300, 0x36F},    {0x391, 0x3C9},    {0x410, 0x44F},     {0x4E00, 0x4E40},
        {0x3041, 0x3096},  {0xAC00, 0xAC40},  {0x1F600, 0x1F64F}, {0x1F3FB, 0x1F3FF}, {0x2160, 0x217F},
        {0x660, 0x669},    {0x900, 0x97F},    {0x1, 0x1F},       {0x7F, 0xA0},       {0x2000, 0x200F},
        {0xA0, 0xD7FF},    {0xE000, 0xFFFD},  {0x10000, 0x2FFFF},
    };
    static const uint32_t singles[] = {' ', ' ', '\t', '\n', '\'', '<', '|', '>', 0x200D, 0xFE0F, 0x2028, 0x2029,
                                       0x3A3, 0x130, 0x17F, 0xFFFD, 0x3000, 0xFEFF, 0x1E9E, 0x212A};
    int n = 0;
    const int len = (int)(df_rng_uniform(r) * 40);
    for (int k = 0; k < len; k++) {
        const double u = df_rng_uniform(r);
        if (u < 0.15) {
            const char *w = words[(int)(df_rng_uniform(r) * DF_COUNTOF_T(words))];
            memcpy(s + n, w, strlen(w)), n += (int)strlen(w);
        } else if (u < 0.17) {
            const char *w = df_rng_uniform(r) < 0.5 ? "<|endoftext|>" : "<|startoftext|>";
            memcpy(s + n, w, strlen(w)), n += (int)strlen(w);
        } else if (u < 0.175) {
            s[n++] = (char)(0x80 + (int)(df_rng_uniform(r) * 128));   /* a stray byte: usually invalid */
        } else if (u < 0.35) {
            n += put_utf8(s + n, singles[(int)(df_rng_uniform(r) * DF_COUNTOF_T(singles))]);
        } else {
            const uint32_t *p = pools[(int)(df_rng_uniform(r) * DF_COUNTOF_T(pools))];
            n += put_utf8(s + n, p[0] + (uint32_t)(df_rng_uniform(r) * (p[1] - p[0] + 1)));
        }
    }
    s[n] = 0;
    return n;
}

/* The C tokenizer's line for a text, in the reference's format. */
static void c_line(const df_tokenizer *t, const char *text, char *out, size_t cap) {
    int32_t ids[512];
    int length, dropped;
    if (df_tokenize(t, text, ids, &length, &dropped)) {
        snprintf(out, cap, "ERROR");
        return;
    }
    size_t o = 0;
    for (int i = 0; i < df_tokenizer_context(t) && o < cap; i++)
        o += (size_t)snprintf(out + o, cap - o, "%s%d", i ? " " : "", ids[i]);
    if (o < cap) snprintf(out + o, cap - o, " | %d %d", length, dropped);
}

/* Learn a tokenizer with the reference, then encode every text both ways. */
static void compare_with_reference(const char *name, const char *learn_opts) {
    char dir[512], corpus[600], strings[600], out[600], cmd[2400];
    snprintf(dir, sizeof dir, "%s/%s", test_tmp_dir(), name);
    snprintf(corpus, sizeof corpus, "%s.corpus", dir);
    snprintf(strings, sizeof strings, "%s.strings", dir);
    snprintf(out, sizeof out, "%s.ref", dir);
    df_rng r;
    df_rng_init(&r, 7);
    write_corpus(corpus, &r);
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 tests/ref/clip_bpe_ref.py learn %s %s %s", corpus, dir, learn_opts);
    CHECK(system(cmd) == 0, "%s failed", cmd);

    enum { N_RANDOM = 1000 };
    const int n_fixed = DF_COUNTOF_T(fixed_texts), n = n_fixed + N_RANDOM;
    char **texts = calloc((size_t)n, sizeof *texts);
    FILE *f = fopen(strings, "wb");
    CHECK(texts && f, "cannot write %s", strings);
    if (!texts || !f) return;
    for (int i = 0; i < n; i++) {
        char buf[4096];
        if (i < n_fixed) snprintf(buf, sizeof buf, "%s", fixed_texts[i]);
        else random_text(&r, buf);
        texts[i] = strdup(buf);
        for (const unsigned char *p = (const unsigned char *)buf; *p; p++) fprintf(f, "%02x", *p);
        fputc('\n', f);
    }
    fclose(f);
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 tests/ref/clip_bpe_ref.py encode %s %s %s", dir, strings, out);
    CHECK(system(cmd) == 0, "%s failed", cmd);

    df_tokenizer *t = NULL, *again = NULL;
    CHECK_OK(df_tokenizer_load(dir, &t));
    /* saved and loaded back: the same tokenizer */
    char dir2[600];
    snprintf(dir2, sizeof dir2, "%s.saved", dir);
    if (t) CHECK_OK(df_tokenizer_save(t, dir2));
    CHECK_OK(df_tokenizer_load(dir2, &again));
    FILE *ref = fopen(out, "rb");
    CHECK(ref, "no reference output %s", out);
    int same = 0, errors = 0, truncated = 0, fails = 0, newer = 0, saved_fails = 0;
    static char want[16384], got[16384];
    for (int i = 0; t && ref && i < n; i++) {
        if (!fgets(want, sizeof want, ref)) {
            CHECK(0, "%s: the reference wrote %d lines of %d", name, i, n);
            break;
        }
        want[strcspn(want, "\n")] = 0;
        if (!strcmp(want, "NEWER")) {   /* characters Python's Unicode version does not have yet */
            newer++;
            continue;
        }
        c_line(t, texts[i], got, sizeof got);
        if (again) {
            static char got2[16384];
            c_line(again, texts[i], got2, sizeof got2);
            if (strcmp(got, got2) && saved_fails++ < 2) CHECK(0, "%s text %d: the saved tokenizer gives %s", name, i, got2);
        }
        if (!strcmp(want, got)) {
            same++, errors += !strcmp(got, "ERROR");
            truncated += strstr(got, "| ") && atoi(strrchr(got, ' ') + 1) > 0;
        } else if (fails++ < 3) {
            char hex[2100] = "";
            for (size_t k = 0; texts[i][k] && k < 1000; k++) sprintf(hex + 2 * k, "%02x", (unsigned char)texts[i][k]);
            CHECK(0, "%s text %d (hex %s):\n      reference %s\n      diffuse   %s", name, i, hex, want, got);
        }
    }
    printf("    %s: %d of %d texts tokenized as the reference does (%d invalid UTF-8 refused by both, %d truncated; "
           "%d with characters newer than Python's Unicode tables left out)\n", name, same, n - newer, errors, truncated,
           newer);
    CHECK(same == n - newer && newer < n / 10, "%s: %d texts differ (%d left out)", name, n - newer - same, newer);
    CHECK(errors >= 6 && truncated >= 1, "%s: the texts should include invalid UTF-8 and a truncation", name);
    if (ref) fclose(ref);
    CHECK(again && !saved_fails, "%s: the saved tokenizer differs on %d texts", name, saved_fails);
    df_tokenizer_free(again);
    df_tokenizer_free(t);
    for (int i = 0; i < n; i++) free(texts[i]);
    free(texts);
}

TEST(tokenizer_matches_python_reference) {
    if (system("/usr/bin/python3 -c 'import regex' >/dev/null 2>&1") != 0) {
        CHECK(0, "the reference needs Debian's python3-regex (make deps installs it)");
        return;
    }
    compare_with_reference("clip-tok", "--merges 300");
    /* Stable Diffusion 2's layout: "!" pads (so a "!" in the text is that token), and a short context */
    compare_with_reference("clip-tok-pad", "--merges 120 --pad ! --context 16");
}

/* Writes a tokenizer folder with the 512 byte symbols, the given merges and the two special tokens. */
static void write_tiny(const char *dir, const char *const *merges, int n_merges) {
    mkdir(dir, 0755);
    char path[600];
    static const int keep_lo[] = {33, 161, 174}, keep_hi[] = {126, 172, 255};
    int order[256], n = 0, used[256] = {0};
    for (int r = 0; r < 3; r++)
        for (int b = keep_lo[r]; b <= keep_hi[r]; b++) order[n++] = b, used[b] = 1;
    for (int b = 0; b < 256; b++)
        if (!used[b]) order[n++] = b;
    snprintf(path, sizeof path, "%s/vocab.json", dir);
    FILE *f = fopen(path, "wb");
    if (!f) return;
    fputc('{', f);
    int id = 0, extra = 0, cp_of[256];
    for (int b = 0; b < 256; b++) cp_of[b] = used[b] ? b : 256 + extra++;
    for (int pass = 0; pass < 2; pass++)
        for (int k = 0; k < 256; k++) {
            char s[8];
            const int len = put_utf8(s, (uint32_t)cp_of[order[k]]);
            fprintf(f, "%s\"%s%.*s%s\": %d", id ? ", " : "", cp_of[order[k]] == '"' || cp_of[order[k]] == '\\' ? "\\" : "",
                    len, s, pass ? "</w>" : "", id);
            id++;
        }
    for (int m = 0; m < n_merges; m++) {
        char tok[64];
        snprintf(tok, sizeof tok, "%s", merges[m]);
        char *sp = strchr(tok, ' ');
        memmove(sp, sp + 1, strlen(sp));
        fprintf(f, ", \"%s\": %d", tok, id++);
    }
    fprintf(f, ", \"<|startoftext|>\": %d, \"<|endoftext|>\": %d}", id, id + 1);
    fclose(f);
    snprintf(path, sizeof path, "%s/merges.txt", dir);
    f = fopen(path, "wb");
    if (!f) return;
    fputs("#version: 0.2\n", f);
    for (int m = 0; m < n_merges; m++) fprintf(f, "%s\n", merges[m]);
    fclose(f);
}

TEST(tokenizer_merges_worked_by_hand) {
    char dir[512];
    snprintf(dir, sizeof dir, "%s/tiny-tok", test_tmp_dir());
    /* ids: bytes' symbols in CLIP's order ('!' .. '~' are 0 .. 93), the word-final ones from 256, then the
     * merges from 512: "a b" -> 512 "ab", "ab c</w>" -> 513 "abc</w>"; <|startoftext|> 514, <|endoftext|> 515 */
    static const char *const merges[] = {"a b", "ab c</w>"};
    write_tiny(dir, merges, 2);
    df_tokenizer *t = NULL;
    CHECK_OK(df_tokenizer_load(dir, &t));
    if (!t) return;
    CHECK(df_tokenizer_context(t) == 77 && df_tokenizer_vocab_size(t) == 516, "context %d, vocabulary %d",
          df_tokenizer_context(t), df_tokenizer_vocab_size(t));
    int32_t ids[77];
    int length, dropped;
    /* "ABC abd!" -> "abc</w>" | "ab" "d</w>" | "!</w>" */
    CHECK_OK(df_tokenize(t, "ABC abd!", ids, &length, &dropped));
    const int want[] = {514, 513, 512, 256 + 'd' - 33, 256 + '!' - 33, 515, 515};
    for (int i = 0; i < DF_COUNTOF_T(want); i++) CHECK(ids[i] == want[i], "id %d: %d, want %d", i, ids[i], want[i]);
    CHECK(length == 6 && dropped == 0, "length %d dropped %d", length, dropped);
    CHECK(!strcmp(df_tokenizer_token(t, 513), "abc</w>") && df_tokenizer_token(t, 9999) == NULL, "token names");
    CHECK(df_tokenize(t, "bad \xc3", ids, &length, &dropped) == DF_ERR_ARG && strstr(df_error(), "byte 4"),
          "invalid UTF-8: %s", df_error());
    df_tokenizer_free(t);
}

TEST(tokenizer_bad_folders) {
    static const char *const merges[] = {"a b"};
    char dir[512], path[600];
    struct {
        const char *file, *text, *want;
    } cases[] = {
        {"vocab.json", NULL, "vocab.json"},
        {"vocab.json", "{\"a\": 1, ", "vocab.json: not a JSON object"},
        {"vocab.json", "{\"a\": 0, \"b\": 0}", "id 0 is given to two tokens"},
        {"vocab.json", "{\"a\": -3}", "not an integer"},
        {"vocab.json", "{\"<|endoftext|>\": 0}", "no id for the bos_token"},
        {"merges.txt", NULL, "merges.txt"},
        {"merges.txt", "#version: 0.2\na b c\n", "merges.txt:2: not a merge"},
        {"merges.txt", "#version: 0.2\na b\n\nb c\n", "merges.txt:3: a blank line"},
        {"tokenizer_config.json", "[1, 2]", "tokenizer_config.json: not a JSON object"},
        {"tokenizer_config.json", "{\"model_max_length\": 2}", "model_max_length 2"},
        {"tokenizer_config.json", "{\"pad_token\": \"<|pad|>\"}", "no id for the pad_token \"<|pad|>\""},
        {"special_tokens_map.json", "{\"bos_token\": {\"content\": 5}}", "\"bos_token\" is not a token"},
    };
    for (int c = 0; c < DF_COUNTOF_T(cases); c++) {
        snprintf(dir, sizeof dir, "%s/bad-tok-%d", test_tmp_dir(), c);
        write_tiny(dir, merges, 1);
        snprintf(path, sizeof path, "%s/%s", dir, cases[c].file);
        if (cases[c].text) write_text(path, cases[c].text);
        else remove(path);
        df_tokenizer *t = (df_tokenizer *)1;
        const df_status st = df_tokenizer_load(dir, &t);
        CHECK(st != DF_OK && t == NULL && strstr(df_error(), cases[c].want), "case %d (%s): status %d, \"%s\", want \"%s\"",
              c, cases[c].file, st, df_error(), cases[c].want);
    }
    df_tokenizer_free(NULL);
}
