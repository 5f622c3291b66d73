/* Animated GIFs through giflib: gray frames keep all 256 levels, colour frames share one palette
 * quantised from the whole animation. Written to a temporary name and renamed into place. */
#define _POSIX_C_SOURCE 200809L
#include "internal.h"

#include <gif_lib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static GifByteType to_byte(float v) {
    float b = (v + 1) * 127.5f + 0.5f;
    return (GifByteType)(b < 0 ? 0 : b > 255 ? 255 : b);
}

/* Application extension that makes browsers loop the animation forever. */
static int put_loop(GifFileType *g) {
    static const GifByteType app[] = "NETSCAPE2.0", sub[] = {1, 0, 0};
    return EGifPutExtensionLeader(g, APPLICATION_EXT_FUNC_CODE) == GIF_OK &&
           EGifPutExtensionBlock(g, 11, app) == GIF_OK && EGifPutExtensionBlock(g, 3, sub) == GIF_OK &&
           EGifPutExtensionTrailer(g) == GIF_OK;
}

static int put_delay(GifFileType *g, int ms) {
    GraphicsControlBlock gcb = {.DisposalMode = DISPOSE_DO_NOT, .DelayTime = ms / 10, .TransparentColor = NO_TRANSPARENT_COLOR};
    GifByteType ext[4];
    EGifGCBToExtension(&gcb, ext);
    return EGifPutExtension(g, GRAPHICS_EXT_FUNC_CODE, 4, ext) == GIF_OK;
}

df_status df_image_save_gif(const char *path, const float *frames, int nframes, int c, int h, int w, int delay_ms,
                            int hold_ms) {
    if (nframes < 1 || (c != 1 && c != 3) || h < 1 || w < 1 || h > 65535 || w > 65535)
        return df_fail(DF_ERR_ARG, "%s: cannot write %d frames of %dx%dx%d as a GIF", path, nframes, w, h, c);
    const size_t hw = (size_t)h * w;
    GifByteType *idx = malloc(hw * (size_t)nframes);
    ColorMapObject *map = GifMakeMapObject(256, NULL);
    df_status st = (!idx || !map) ? df_fail(DF_ERR_NOMEM, "%s: out of memory", path) : DF_OK;
    if (!st && c == 1) {
        for (int i = 0; i < 256; i++) map->Colors[i].Red = map->Colors[i].Green = map->Colors[i].Blue = (GifByteType)i;
        for (size_t j = 0; j < hw * nframes; j++) idx[j] = to_byte(frames[j]);
    } else if (!st) {
        /* one palette for all frames: quantise the frames stacked as one tall image */
        GifByteType *r = malloc(hw * nframes), *gg = malloc(hw * nframes), *b = malloc(hw * nframes);
        int size = 256;
        if (!r || !gg || !b) st = df_fail(DF_ERR_NOMEM, "%s: out of memory", path);
        for (int f = 0; !st && f < nframes; f++)
            for (size_t j = 0; j < hw; j++) {
                const float *fr = frames + (size_t)f * 3 * hw;
                r[f * hw + j] = to_byte(fr[j]);
                gg[f * hw + j] = to_byte(fr[hw + j]);
                b[f * hw + j] = to_byte(fr[2 * hw + j]);
            }
        if (!st && GifQuantizeBuffer((unsigned)w, (unsigned)(h * nframes), &size, r, gg, b, idx, map->Colors) != GIF_OK)
            st = df_fail(DF_ERR_ARG, "%s: colour quantisation failed", path);
        free(r), free(gg), free(b);
    }
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    int err = 0;
    GifFileType *g = st ? NULL : EGifOpenFileName(tmp, false, &err);
    if (!st && !g) st = df_fail(DF_ERR_IO, "%s: cannot create: %s", tmp, GifErrorString(err));
    int ok = !st;
    if (ok) {
        EGifSetGifVersion(g, true);
        ok = EGifPutScreenDesc(g, w, h, 8, 0, map) == GIF_OK && put_loop(g);
    }
    for (int f = 0; ok && f < nframes; f++) {
        ok = put_delay(g, f == nframes - 1 ? hold_ms : delay_ms) && EGifPutImageDesc(g, 0, 0, w, h, false, NULL) == GIF_OK;
        for (int y = 0; ok && y < h; y++) ok = EGifPutLine(g, idx + (size_t)f * hw + (size_t)y * w, w) == GIF_OK;
    }
    if (g) {
        int cerr = 0;
        if (EGifCloseFile(g, &cerr) != GIF_OK) ok = 0;
        if (!ok && !st) st = df_fail(DF_ERR_IO, "%s: write failed: %s", path, GifErrorString(g ? cerr : err));
    }
    if (!st) {   /* giflib creates the file owner-only; give it the usual mode */
        mode_t mask = umask(0);
        umask(mask);
        chmod(tmp, 0666 & ~mask);
    }
    if (!st && rename(tmp, path) != 0) st = df_fail(DF_ERR_IO, "%s: cannot rename into place", path);
    if (st) unlink(tmp);
    free(idx);
    GifFreeMapObject(map);
    return st;
}
