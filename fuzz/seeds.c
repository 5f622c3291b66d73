/* Writes the starting corpus of every fuzz target into fuzz/corpus/<target>/seed-*: small valid files
 * of each kind and layout (PNG palette, 16-bit, interlaced, alpha; JPEG gray, colour, progressive, CMYK;
 * safetensors of every dtype; .npy uint8/float32/float64, versions 1-3; real model configs and
 * checkpoints). Usage: fuzz_seeds OUT_DIR */
#define _POSIX_C_SOURCE 200809L
#include "diffuse.h"
#include "internal.h"
#include "npy.h"
#include "safetensors.h"

#include <jpeglib.h>
#include <png.h>
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

static const char *out_root;

static void put(const char *target, const char *name, const void *data, size_t n) {
    char p[1200];
    snprintf(p, sizeof p, "%s/%s", out_root, target);
    df_mkdir_p(p);
    snprintf(p, sizeof p, "%s/%s/seed-%s", out_root, target, name);
    FILE *f = fopen(p, "wb");
    if (!f || fwrite(data, 1, n, f) != n || fclose(f)) {
        perror(p);
        exit(1);
    }
}

static void put_file_copy(const char *target, const char *name, const char *src) {
    char *d;
    size_t n;
    if (df_read_file(src, &d, &n)) {
        fprintf(stderr, "%s\n", df_error());
        exit(1);
    }
    put(target, name, d, n);
    free(d);
}

/* ---- PNG ---- */

typedef struct { unsigned char *p; size_t n, cap; } membuf;

static void mem_write(png_structp png, png_bytep d, size_t n) {
    membuf *b = png_get_io_ptr(png);
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2;
        b->p = realloc(b->p, b->cap);
    }
    memcpy(b->p + b->n, d, n);
    b->n += n;
}
static void mem_flush(png_structp png) { (void)png; }

static void png_seed(const char *name, int w, int h, int color, int depth, int interlace, int trns) {
    membuf b = {0};
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop info = png_create_info_struct(png);
    if (setjmp(png_jmpbuf(png))) exit(1);
    png_set_write_fn(png, &b, mem_write, mem_flush);
    png_set_IHDR(png, info, w, h, depth, color, interlace, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    if (color == PNG_COLOR_TYPE_PALETTE) {
        png_color pal[4] = {{0, 0, 0}, {255, 0, 0}, {0, 255, 0}, {40, 80, 200}};
        png_set_PLTE(png, info, pal, 4);
        if (trns) {
            png_byte a[2] = {0, 128};
            png_set_tRNS(png, info, a, 2, NULL);
        }
    } else if (trns && (color == PNG_COLOR_TYPE_GRAY || color == PNG_COLOR_TYPE_RGB)) {
        png_color_16 t = {0, 7, 7, 7, 7};
        png_set_tRNS(png, info, NULL, 0, &t);
    }
    png_write_info(png, info);
    int passes = png_set_interlace_handling(png);
    size_t rowbytes = png_get_rowbytes(png, info);
    unsigned char *row = malloc(rowbytes);
    for (int pass = 0; pass < passes; pass++)
        for (int y = 0; y < h; y++) {
            for (size_t i = 0; i < rowbytes; i++) row[i] = (unsigned char)(i * 37 + y * 11 + (depth < 8 ? 0 : i));
            if (color == PNG_COLOR_TYPE_PALETTE && depth == 8)
                for (size_t i = 0; i < rowbytes; i++) row[i] &= 3;
            png_write_row(png, row);
        }
    png_write_end(png, info);
    png_destroy_write_struct(&png, &info);
    free(row);
    put("png", name, b.p, b.n);
    free(b.p);
}

/* ---- JPEG ---- */

static void jpeg_seed(const char *name, int w, int h, int comps, J_COLOR_SPACE cs, int progressive) {
    struct jpeg_compress_struct c;
    struct jpeg_error_mgr e;
    c.err = jpeg_std_error(&e);
    jpeg_create_compress(&c);
    unsigned char *mem = NULL;
    unsigned long n = 0;
    jpeg_mem_dest(&c, &mem, &n);
    c.image_width = w, c.image_height = h, c.input_components = comps, c.in_color_space = cs;
    jpeg_set_defaults(&c);
    jpeg_set_quality(&c, 75, TRUE);
    if (progressive) jpeg_simple_progression(&c);
    if (cs == JCS_CMYK) c.write_Adobe_marker = TRUE;
    jpeg_start_compress(&c, TRUE);
    unsigned char *row = malloc((size_t)w * comps);
    while (c.next_scanline < c.image_height) {
        for (int i = 0; i < w * comps; i++) row[i] = (unsigned char)(i * 9 + c.next_scanline * 5);
        JSAMPROW r = row;
        jpeg_write_scanlines(&c, &r, 1);
    }
    jpeg_finish_compress(&c);
    jpeg_destroy_compress(&c);
    free(row);
    put("jpeg", name, mem, n);
    free(mem);
}

/* ---- NumPy .npy ---- */

/* "\x93NUMPY", the version, the header length (2 bytes in 1.0, 4 after), the dict padded with spaces and
 * a newline to a multiple of 64 bytes, then the data. */
static void npy_seed(const char *name, int major, const char *dict, const void *data, size_t n) {
    size_t pre = major == 1 ? 10 : 12, hl = strlen(dict), total = (pre + hl + 1 + 63) / 64 * 64;
    unsigned char *b = malloc(total + n);
    memcpy(b, "\x93NUMPY", 6);
    b[6] = (unsigned char)major, b[7] = 0;
    for (size_t i = 0; i < pre - 8; i++) b[8 + i] = (unsigned char)((total - pre) >> (8 * i));
    memcpy(b + pre, dict, hl);
    memset(b + pre + hl, ' ', total - pre - hl);
    b[total - 1] = '\n';
    memcpy(b + total, data, n);
    put("npy", name, b, total + n);
    free(b);
}

/* ---- containers ---- */

static void put_split(const char *target, const char *name, const void *a, size_t na, const void *b, size_t nb) {
    unsigned char *d = malloc(2 + na + nb);
    d[0] = (unsigned char)(na & 255), d[1] = (unsigned char)(na >> 8);
    memcpy(d + 2, a, na);
    memcpy(d + 2 + na, b, nb);
    put(target, name, d, 2 + na + nb);
    free(d);
}

static void gz_bytes(const void *in, size_t n, unsigned char **out, size_t *on) {
    char tmp[] = "/tmp/diffuse-seed-XXXXXX";
    int fd = mkstemp(tmp);
    gzFile g = gzdopen(fd, "wb");
    gzwrite(g, in, (unsigned)n);
    gzclose(g);
    df_read_file(tmp, (char **)out, on);
    unlink(tmp);
}

/* records (id, u16 length, bytes) for fuzz_checkpoint; ids follow its table */
static void ckpt_seed(const char *name, const char *dir, int raw, int with_raw) {
    static const char *const files[] = {
        "model_index.json",     "unet/config.json",     "unet/diffusion_pytorch_model.safetensors",
        "scheduler/scheduler_config.json", "unet_raw/config.json", "unet_raw/diffusion_pytorch_model.safetensors",
    };
    unsigned char *d = malloc(1 << 20);
    size_t n = 0;
    d[n++] = (unsigned char)raw;
    for (int i = 0; i < 6; i++) {
        if (i >= 4 && !with_raw) continue;
        char p[1200], *c;
        size_t len;
        snprintf(p, sizeof p, "%s/%s", dir, i >= 4 ? files[i - 3] : files[i]);
        if (df_read_file(p, &c, &len) || len > 65535) {
            fprintf(stderr, "%s: missing or too large\n", p);
            exit(1);
        }
        d[n++] = (unsigned char)i, d[n++] = (unsigned char)(len & 255), d[n++] = (unsigned char)(len >> 8);
        memcpy(d + n, c, len);
        n += len;
        free(c);
    }
    put("checkpoint", name, d, n);
    free(d);
}

/* Tokenizer folders as fuzz_tokenizer reads them: vocab.json (the 512 byte symbols in GPT-2's order, a few
 * merges, the special tokens), merges.txt and a text, each after its 2-byte length. */
static void tokenizer_seeds(void) {
    static const char *const merges[] = {"r e", "re d</w>", "h e", "a r", "ar t</w>", "he art</w>"};
    static const char *const texts[] = {"A red heart", "heart\xf0\x9f\x99\x82 <|endoftext|> don't", ""};
    char vocab[16384], merge_txt[256];
    size_t v = 0, m = 0;
    int id = 0, cp[256], extra = 0;
    for (int b = 0; b < 256; b++) {
        const int printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
        cp[b] = printable ? b : 256 + extra++;
    }
    v += (size_t)snprintf(vocab + v, sizeof vocab - v, "{");
    for (int pass = 0; pass < 2; pass++)
        for (int k = 0; k < 512; k++) {   /* the printable bytes first, then the others: CLIP's order */
            const int b = k < 256 ? k : k - 256, printable = cp[b] == b;
            if ((k < 256) != printable) continue;
            unsigned char u[4];
            const int c = cp[b], n = c < 0x80 ? 1 : 2;
            if (n == 1) u[0] = (unsigned char)c;
            else u[0] = (unsigned char)(0xC0 | c >> 6), u[1] = (unsigned char)(0x80 | (c & 0x3F));
            v += (size_t)snprintf(vocab + v, sizeof vocab - v, "%s\"%s%.*s%s\": %d", id ? ", " : "",
                                  c == '"' || c == '\\' ? "\\" : "", n, (const char *)u, pass ? "</w>" : "", id);
            id++;
        }
    m += (size_t)snprintf(merge_txt + m, sizeof merge_txt - m, "#version: 0.2\n");
    for (int k = 0; k < DF_COUNTOF(merges); k++) {
        char tok[32];
        snprintf(tok, sizeof tok, "%s", merges[k]);
        char *sp = strchr(tok, ' ');
        memmove(sp, sp + 1, strlen(sp));
        v += (size_t)snprintf(vocab + v, sizeof vocab - v, ", \"%s\": %d", tok, id++);
        m += (size_t)snprintf(merge_txt + m, sizeof merge_txt - m, "%s\n", merges[k]);
    }
    v += (size_t)snprintf(vocab + v, sizeof vocab - v, ", \"<|startoftext|>\": %d, \"<|endoftext|>\": %d}", id, id + 1);
    for (int k = 0; k < DF_COUNTOF(texts); k++) {
        static unsigned char buf[20000];
        size_t n = 0;
        buf[n++] = (unsigned char)(v & 0xFF), buf[n++] = (unsigned char)(v >> 8);
        memcpy(buf + n, vocab, v), n += v;
        buf[n++] = (unsigned char)(m & 0xFF), buf[n++] = (unsigned char)(m >> 8);
        memcpy(buf + n, merge_txt, m), n += m;
        memcpy(buf + n, texts[k], strlen(texts[k])), n += strlen(texts[k]);
        char name[16];
        snprintf(name, sizeof name, "clip-%d", k);
        put("tokenizer", name, buf, n);
    }
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: fuzz_seeds OUT_DIR\n");
        return 2;
    }
    out_root = argv[1];
    char tmp[] = "/tmp/diffuse-seeds-XXXXXX";
    if (!mkdtemp(tmp)) return 1;
    char p[1200];

    /* a tiny model (one level with attention, class embedding) and its checkpoint */
    df_unet_config cfg;
    df_unet_config_default(&cfg);
    cfg.sample_size = 4, cfg.in_channels = cfg.out_channels = 1, cfg.num_levels = 2;
    cfg.block_out_channels[0] = 4, cfg.block_out_channels[1] = 8;
    cfg.down_attn[0] = 0, cfg.down_attn[1] = 1, cfg.up_attn[0] = 1, cfg.up_attn[1] = 0;
    cfg.layers_per_block = 1, cfg.norm_num_groups = 2, cfg.attention_head_dim = 4;
    df_model *m;
    df_scheduler_config sc;
    df_scheduler_config_default(&sc);
    if (df_model_create(&cfg, 1, &m) || df_pipeline_save(tmp, m, &sc)) {
        fprintf(stderr, "%s\n", df_error());
        return 1;
    }
    snprintf(p, sizeof p, "%s/unet/config.json", tmp);
    put_file_copy("unet_config", "tiny", p);
    snprintf(p, sizeof p, "%s/unet/diffusion_pytorch_model.safetensors", tmp);
    put_file_copy("safetensors", "tiny-model", p);
    snprintf(p, sizeof p, "%s/scheduler/scheduler_config.json", tmp);
    put_file_copy("scheduler_config", "default", p);
    ckpt_seed("pipeline", tmp, 0, 0);
    ckpt_seed("pipeline-raw", tmp, 1, 1);
    df_model_free(m);
    cfg.num_class_embeds = 3, cfg.num_levels = 1, cfg.down_attn[0] = 1, cfg.up_attn[0] = 1;
    cfg.block_out_channels[0] = 8;
    snprintf(p, sizeof p, "%s/cls", tmp);
    if (df_model_create(&cfg, 2, &m) || df_pipeline_save(p, m, &sc)) return 1;
    ckpt_seed("class-conditional", p, 0, 0);
    snprintf(p, sizeof p, "%s/cls/unet/config.json", tmp);
    put_file_copy("unet_config", "class-conditional", p);
    df_model_free(m);
    {   /* a tiny UNet2DConditionModel: per-block heads and transformer layers, linear projections */
        df_unet_config_default_condition(&cfg);
        cfg.num_levels = 2, cfg.block_out_channels[0] = 8, cfg.block_out_channels[1] = 16, cfg.norm_num_groups = 4;
        cfg.down_attn[0] = 1, cfg.down_attn[1] = 0, cfg.up_attn[0] = 0, cfg.up_attn[1] = 1;
        cfg.cross_attention_dim = 12, cfg.use_linear_projection = 1;
        cfg.attention_heads[0] = 2, cfg.attention_heads[1] = 4, cfg.transformer_layers[1] = 2;
        for (int i = 2; i < DF_MAX_LEVELS; i++) cfg.block_out_channels[i] = cfg.down_attn[i] = cfg.up_attn[i] = 0;
        snprintf(p, sizeof p, "%s/cond.json", tmp);
        if (df_unet_config_save(&cfg, p)) return 1;
        put_file_copy("unet_config", "condition", p);
    }
    for (int k = 0; k < 2; k++) {
        const char *preset = k ? "cifar10" : "fmnist-s";
        df_unet_config_preset(preset, &cfg);
        snprintf(p, sizeof p, "%s/%s.json", tmp, preset);
        df_unet_config_save(&cfg, p);
        put_file_copy("unet_config", preset, p);
    }
    const char *sched[] = {
        "{\"num_train_timesteps\": 1000, \"beta_schedule\": \"squaredcos_cap_v2\", \"prediction_type\": \"v_prediction\"}",
        "{\"beta_start\": 0.00085, \"beta_end\": 0.012, \"beta_schedule\": \"scaled_linear\", \"rescale_betas_zero_snr\": true}",
        "{\"_class_name\": \"DDPMScheduler\", \"trained_betas\": null, \"variance_type\": \"fixed_small\"}",
    };
    for (int i = 0; i < 3; i++) {
        char nm[16];
        snprintf(nm, sizeof nm, "kinds-%d", i);
        put("scheduler_config", nm, sched[i], strlen(sched[i]));
    }

    /* safetensors of every dtype, with metadata */
    {
        float f[6] = {1, -2, 0.5f, 3, 1e-3f, -7};
        int64_t i6[3] = {1, -5, 1 << 20};
        st_entry e[2] = {{.name = "w", .ndim = 2, .shape = {2, 3}, .f32 = f},
                         {.name = "steps", .ndim = 1, .shape = {3}, .i64 = i6}};
        const char *meta[2] = {"format", "pt"};
        snprintf(p, sizeof p, "%s/t.safetensors", tmp);
        st_write(p, e, 2, meta, 1);
        put_file_copy("safetensors", "f32-i64-meta", p);
        /* F16, BF16, F64, I32, U8, BOOL and a scalar, hand-assembled */
        const char *hdr = "{\"a\":{\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[0,4]},"
                          "\"b\":{\"dtype\":\"BF16\",\"shape\":[2],\"data_offsets\":[4,8]},"
                          "\"c\":{\"dtype\":\"F64\",\"shape\":[],\"data_offsets\":[8,16]},"
                          "\"d\":{\"dtype\":\"I32\",\"shape\":[1,1],\"data_offsets\":[16,20]},"
                          "\"e\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[20,22]},"
                          "\"f\":{\"dtype\":\"BOOL\",\"shape\":[2],\"data_offsets\":[22,24]},"
                          "\"z\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[24,24]}}";
        size_t hl = strlen(hdr);
        unsigned char buf[1024] = {0};
        for (int i = 0; i < 8; i++) buf[i] = (unsigned char)(hl >> (8 * i));
        memcpy(buf + 8, hdr, hl);
        unsigned char data[24] = {0x00, 0x3c, 0x00, 0xc0, 0x80, 0x3f, 0x00, 0xc0, 0, 0, 0, 0, 0, 0, 0xf0, 0x3f,
                                  7,    0,    0,    0,    5,    250,  1,    0};
        memcpy(buf + 8 + hl, data, sizeof data);
        put("safetensors", "all-dtypes", buf, 8 + hl + sizeof data);
    }

    /* IDX: three 4x5 images with labels, plain and gzipped */
    {
        unsigned char img[16 + 60], lab[8 + 3];
        memcpy(img, "\0\0\x08\x03\0\0\0\x03\0\0\0\x04\0\0\0\x05", 16);
        for (int i = 0; i < 60; i++) img[16 + i] = (unsigned char)(i * 17);
        memcpy(lab, "\0\0\x08\x01\0\0\0\x03", 8);
        lab[8] = 0, lab[9] = 9, lab[10] = 4;
        put_split("idx", "labelled", img, sizeof img, lab, sizeof lab);
        put_split("idx", "unlabelled", img, sizeof img, NULL, 0);
        unsigned char *gi, *gl;
        size_t ngi, ngl;
        gz_bytes(img, sizeof img, &gi, &ngi);
        gz_bytes(lab, sizeof lab, &gl, &ngl);
        put_split("idx", "gzipped", gi, ngi, gl, ngl);
        free(gi);
        free(gl);
    }
    /* CIFAR-10: two records, with and without class names */
    {
        static unsigned char rec[2 * 3073];
        for (int i = 0; i < 2 * 3073; i++) rec[i] = (unsigned char)(i * 7);
        rec[0] = 3, rec[3073] = 9;
        const char *meta = "airplane\nautomobile\nbird\ncat\ndeer\ndog\nfrog\nhorse\nship\ntruck\n";
        put_split("cifar", "two-records", rec, sizeof rec, meta, strlen(meta));
        put_split("cifar", "one-record", rec, 3073, NULL, 0);
    }
    /* NumPy .npy: uint8 gray (N, H, W), what `diffuse sample --npy` writes (RGB), float32, float64, and
     * versions 2.0 and 3.0 with the keys in another order and double quotes */
    {
        unsigned char u8[48];
        for (int i = 0; i < 48; i++) u8[i] = (unsigned char)(i * 29 + 3);
        npy_seed("u8-gray", 1, "{'descr': '|u1', 'fortran_order': False, 'shape': (2, 3, 4), }", u8, 24);
        float x[2 * 3 * 2 * 2], f[12];
        double d[8];
        for (int i = 0; i < 24; i++) x[i] = (float)(i % 9) / 4 - 1;
        unsigned char *b;
        size_t n;
        if (df_npy_encode_images("u8-rgb", x, 2, 3, 2, 2, &b, &n)) {
            fprintf(stderr, "%s\n", df_error());
            return 1;
        }
        put("npy", "u8-rgb", b, n);
        free(b);
        for (int i = 0; i < 12; i++) f[i] = (float)i / 11;
        npy_seed("f32-rgb", 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 2, 2, 3), }", f, sizeof f);
        for (int i = 0; i < 8; i++) d[i] = i / 8.0;
        npy_seed("f64-gray", 1, "{'descr': '<f8', 'fortran_order': False, 'shape': (2, 2, 2), }", d, sizeof d);
        npy_seed("v2-u8", 2, "{\"shape\": (3, 4, 4, 1), \"fortran_order\": False, \"descr\": \"|u1\"}", u8, 48);
        npy_seed("v3-f32", 3, "{'fortran_order': False, 'descr': '<f4', 'shape': (3, 2, 2,)}", f, sizeof f);
    }
    /* reference features: 5 vectors of 3 values with their hashes; a bits/dim state half done */
    {
        float feats[15];
        for (int i = 0; i < 15; i++) feats[i] = (float)((i * 37) % 11) / 5 - 1;
        df_ref_features r = {.n = 5, .d = 3, .feats = feats};
        snprintf(r.net_sha256, sizeof r.net_sha256, "%064d", 1);
        snprintf(r.data_sha256, sizeof r.data_sha256, "%064d", 2);
        snprintf(r.desc, sizeof r.desc, "five vectors");
        char rp[1200];
        snprintf(rp, sizeof rp, "%s/ref_features", out_root);
        df_mkdir_p(rp);
        snprintf(rp, sizeof rp, "%s/ref_features/seed-five", out_root);
        if (df_ref_features_save(&r, rp)) {
            fprintf(stderr, "%s\n", df_error());
            return 1;
        }
        const char *state = "{\"format\": \"diffuse bits/dim state\", \"model_sha256\": "
                            "\"0000000000000000000000000000000000000000000000000000000000000000\", \"data_sha256\": "
                            "\"0000000000000000000000000000000000000000000000000000000000000000\", \"n\": 64, "
                            "\"timesteps\": 10, \"chunk\": 8, \"seed\": \"0\", \"bpd\": [3.1, 2.9, 3.3, 3.0, 2.8, 3.2, "
                            "3.1, 3.05, 2.7]}";
        put("bpd_state", "half", state, strlen(state));
    }
    tokenizer_seeds();
    {   /* text encoder configs: Stable Diffusion 1.5's text encoder, and a tiny one with the newer end token */
        const char *sd = "{\"architectures\": [\"CLIPTextModel\"], \"attention_dropout\": 0.0, \"bos_token_id\": 0, "
                         "\"dropout\": 0.0, \"eos_token_id\": 2, \"hidden_act\": \"quick_gelu\", \"hidden_size\": 768, "
                         "\"initializer_factor\": 1.0, \"initializer_range\": 0.02, \"intermediate_size\": 3072, "
                         "\"layer_norm_eps\": 1e-05, \"max_position_embeddings\": 77, \"model_type\": "
                         "\"clip_text_model\", \"num_attention_heads\": 12, \"num_hidden_layers\": 12, "
                         "\"pad_token_id\": 1, \"projection_dim\": 768, \"torch_dtype\": \"float32\", "
                         "\"transformers_version\": \"4.22.0.dev0\", \"vocab_size\": 49408}";
        const char *tiny = "{\"hidden_act\": \"gelu\", \"hidden_size\": 32, \"intermediate_size\": 64, "
                           "\"num_attention_heads\": 2, \"num_hidden_layers\": 2, \"vocab_size\": 1000, "
                           "\"max_position_embeddings\": 16, \"eos_token_id\": 999, \"bos_token_id\": 998}";
        put("text_config", "sd15", sd, strlen(sd));
        const char *meta = "{\"file_name\": \"img0.png\", \"text\": \"a red heart\"}\n"
                           "{\"file_name\": \"img1.png\", \"text\": [\"a blue circle\", \"caf\\u00e9\"]}\n";
        put("metadata", "two", meta, strlen(meta));
        put("text_config", "tiny", tiny, strlen(tiny));
    }
    /* PNG layouts */
    png_seed("gray8", 5, 4, PNG_COLOR_TYPE_GRAY, 8, PNG_INTERLACE_NONE, 0);
    png_seed("gray1", 9, 3, PNG_COLOR_TYPE_GRAY, 1, PNG_INTERLACE_NONE, 0);
    png_seed("gray16-trns", 3, 3, PNG_COLOR_TYPE_GRAY, 16, PNG_INTERLACE_NONE, 1);
    png_seed("gray-alpha", 4, 4, PNG_COLOR_TYPE_GRAY_ALPHA, 8, PNG_INTERLACE_NONE, 0);
    png_seed("rgb8-adam7", 9, 9, PNG_COLOR_TYPE_RGB, 8, PNG_INTERLACE_ADAM7, 0);
    png_seed("rgb16", 3, 2, PNG_COLOR_TYPE_RGB, 16, PNG_INTERLACE_NONE, 1);
    png_seed("rgba8", 4, 3, PNG_COLOR_TYPE_RGB_ALPHA, 8, PNG_INTERLACE_NONE, 0);
    png_seed("palette-trns", 6, 5, PNG_COLOR_TYPE_PALETTE, 8, PNG_INTERLACE_NONE, 1);
    png_seed("palette2", 7, 3, PNG_COLOR_TYPE_PALETTE, 2, PNG_INTERLACE_ADAM7, 0);
    /* JPEG kinds */
    jpeg_seed("gray", 8, 8, 1, JCS_GRAYSCALE, 0);
    jpeg_seed("rgb", 17, 9, 3, JCS_RGB, 0);
    jpeg_seed("rgb-progressive", 16, 16, 3, JCS_RGB, 1);
    jpeg_seed("cmyk", 8, 8, 4, JCS_CMYK, 0);

    snprintf(p, sizeof p, "rm -rf '%s'", tmp);
    return system(p) == 0 ? 0 : 1;
}
