/* The `real` type of a *_real.c file: float32 for the library's compute, float64 for the reference
 * path that gradient checks run in. Set DF_REAL_F64 to 0 or 1 before including. */
#ifndef DF_REAL_H
#define DF_REAL_H

#ifndef DF_REAL_F64
#error "define DF_REAL_F64 (0: float, 1: double) before including real.h"
#endif

#include <cblas.h>

#if DF_REAL_F64
typedef double real;
#define RF(name) name##_f64
#define GEMM cblas_dgemm
#define REXP exp
#else
typedef float real;
#define RF(name) name##_f32
#define GEMM cblas_sgemm
#define REXP expf
#endif

#endif
