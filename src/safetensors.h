/* safetensors files: a validating reader (F32, F16, BF16, F64, I64, I32, U8) and an atomic writer.
 * Format: 8-byte little-endian header length, a JSON header {name: {dtype, shape, data_offsets}}, data. */
#ifndef DF_SAFETENSORS_H
#define DF_SAFETENSORS_H

#include "internal.h"
#include <stdint.h>

typedef enum { ST_F32, ST_F16, ST_BF16, ST_F64, ST_I64, ST_I32, ST_U8, ST_BOOL, ST_DTYPE_COUNT } st_dtype;

#define ST_MAX_DIMS 8

typedef struct {
    char    *name;
    st_dtype dtype;
    int      ndim;
    int64_t  shape[ST_MAX_DIMS];
    size_t   begin, end;    /* byte range inside the data section */
} st_tensor;

typedef struct st_file {
    char      *path;        /* copy of the path, for messages */
    uint8_t   *file;        /* whole file in memory */
    size_t     file_len;
    uint8_t   *data;        /* start of the data section (file + 8 + header length) */
    size_t     data_len;
    st_tensor *tensors;     /* sorted by name */
    int        n;
} st_file;

/* Read and validate a whole file: header length inside the file, valid JSON object, known dtypes,
 * shapes whose byte size matches the offsets (no overflow), offsets inside the data section, no two
 * tensors overlapping. The "__metadata__" entry is skipped. On failure *f is left empty. */
df_status st_open(const char *path, st_file *f);
/* The same on a buffer the caller owns (copied); `name` is used in messages. */
df_status st_open_memory(const void *buf, size_t len, const char *name, st_file *f);
void      st_close(st_file *f);   /* accepts an empty or zeroed st_file */

const char      *st_dtype_name(st_dtype d);
size_t           st_dtype_size(st_dtype d);
int64_t          st_numel(const st_tensor *t);
const st_tensor *st_find(const st_file *f, const char *name);   /* NULL if absent */

/* Copy a tensor out converted to float32 (from F32, F16, BF16 or F64) or int64 (from I64, I32, U8 or
 * integral floats); `count` must equal the tensor's element count. */
df_status st_read_f32(const st_file *f, const st_tensor *t, float *dst, size_t count);
df_status st_read_i64(const st_file *f, const st_tensor *t, int64_t *dst, size_t count);

/* One tensor to write: F32 from `f32`, or I64 from `i64` (exactly one non-NULL). */
typedef struct {
    const char    *name;
    int            ndim;
    int64_t        shape[ST_MAX_DIMS];
    const float   *f32;
    const int64_t *i64;
} st_entry;

/* Write tensors (in the order given; names must be unique) with an optional "__metadata__" of string
 * pairs meta[0..2*nmeta) = {key, value, key, value...}. Atomic: temporary file, fsync, rename. */
df_status st_write(const char *path, const st_entry *e, int n, const char *const *meta, int nmeta);

#endif
