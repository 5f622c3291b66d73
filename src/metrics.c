/* The field's sample-quality metrics on feature vectors: feature statistics, the Fréchet distance (with a
 * bootstrap standard error), KID (subset mean and spread, jackknife standard error), precision and recall. */
#include "internal.h"

#include <cblas.h>
#include <math.h>
#include <string.h>

/* LAPACK (OpenBLAS builds it in): the symmetric eigensolver. The two trailing arguments are the hidden
 * lengths of the character arguments that gfortran-compiled LAPACK expects. */
extern void dsyevd_(const char *jobz, const char *uplo, const int *n, double *a, const int *lda, double *w,
                    double *work, const int *lwork, int *iwork, const int *liwork, int *info, size_t ljobz,
                    size_t luplo);

void df_fstats_free(df_fstats *s) {
    if (!s) return;
    free(s->mu), free(s->sigma);
    s->mu = s->sigma = NULL;
    s->d = 0, s->n = 0;
}

static df_status fstats_alloc(df_fstats *s, int d) {
    memset(s, 0, sizeof *s);
    s->d = d;
    s->mu = calloc((size_t)d, sizeof(double));
    s->sigma = calloc((size_t)d * d, sizeof(double));
    if (!s->mu || !s->sigma) {
        df_fstats_free(s);
        return df_fail(DF_ERR_NOMEM, "out of memory for %dx%d feature statistics", d, d);
    }
    return DF_OK;
}

/* Statistics of n vectors, each counted w[i] times (w NULL: once): the weighted mean and the covariance
 * with divisor sum(w) - 1. `centred` (n x d doubles) is scratch. */
static void weighted_stats(const float *f, long n, int d, const int *w, double *centred, df_fstats *s) {
    double total = 0;
    memset(s->mu, 0, sizeof(double) * (size_t)d);
    for (long i = 0; i < n; i++) {
        const double wi = w ? w[i] : 1;
        if (wi == 0) continue;
        total += wi;
        for (int j = 0; j < d; j++) s->mu[j] += wi * f[(size_t)i * d + j];
    }
    for (int j = 0; j < d; j++) s->mu[j] /= total;
    /* S = sum_i w_i (x_i - mu)(x_i - mu)^T / (W - 1) = Y^T Y / (W - 1) with rows y_i = sqrt(w_i) (x_i - mu) */
    for (long i = 0; i < n; i++) {
        const double r = w ? sqrt((double)w[i]) : 1;
        for (int j = 0; j < d; j++) centred[(size_t)i * d + j] = r * (f[(size_t)i * d + j] - s->mu[j]);
    }
    cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, d, (int)n, 1.0 / (total - 1), centred, d, 0.0, s->sigma, d);
    for (int a = 0; a < d; a++)
        for (int b = 0; b < a; b++) s->sigma[(size_t)a * d + b] = s->sigma[(size_t)b * d + a];
    s->n = (long)total;
}

df_status df_fstats_compute(const float *f, long n, int d, df_fstats *s) {
    if (!f || !s || n < 2 || d < 1) return df_fail(DF_ERR_ARG, "feature statistics need at least 2 vectors (got %ld)", n);
    df_status st = fstats_alloc(s, d);
    if (st) return st;
    double *centred = malloc(sizeof(double) * (size_t)n * d);
    if (!centred) {
        df_fstats_free(s);
        return df_fail(DF_ERR_NOMEM, "out of memory for %ld feature vectors", n);
    }
    weighted_stats(f, n, d, NULL, centred, s);
    free(centred);
    return DF_OK;
}

/* Eigenvalues (ascending) and, with vectors, eigenvectors (rows of a: a[k*n + j] is component j of vector
 * k, since LAPACK's column-major output read row-major is the transpose) of a symmetric n x n matrix,
 * overwritten. */
static df_status sym_eig(double *a, int n, double *w, int vectors) {
    int lwork = -1, liwork = -1, info = 0, iw;
    double wq;
    const char *job = vectors ? "V" : "N";
    dsyevd_(job, "U", &n, a, &n, w, &wq, &lwork, &iw, &liwork, &info, 1, 1);
    if (info) return df_fail(DF_ERR_ARG, "eigendecomposition workspace query failed (%d)", info);
    lwork = (int)wq, liwork = iw;
    double *work = malloc(sizeof(double) * (size_t)lwork);
    int *iwork = malloc(sizeof(int) * (size_t)liwork);
    if (!work || !iwork) {
        free(work), free(iwork);
        return df_fail(DF_ERR_NOMEM, "out of memory for an eigendecomposition of size %d", n);
    }
    dsyevd_(job, "U", &n, a, &n, w, work, &lwork, iwork, &liwork, &info, 1, 1);
    free(work), free(iwork);
    if (info) return df_fail(DF_ERR_ARG, "the eigendecomposition did not converge (LAPACK info %d)", info);
    return DF_OK;
}

/* root = S^(1/2) for a symmetric positive semi-definite S (d x d): V diag(sqrt(max(l, 0))) V^T. Rounding
 * can make the smallest eigenvalues slightly negative; they are zero in exact arithmetic. */
static df_status sym_sqrt(const double *S, int d, double *root) {
    double *v = malloc(sizeof(double) * (size_t)d * d), *l = malloc(sizeof(double) * (size_t)d);
    df_status st = v && l ? DF_OK : df_fail(DF_ERR_NOMEM, "out of memory for a matrix square root");
    if (!st) {
        memcpy(v, S, sizeof(double) * (size_t)d * d);
        st = sym_eig(v, d, l, 1);
    }
    if (!st) {
        /* rows of v are eigenvectors: root = V^T diag(sqrt l) V with V's rows scaled */
        double *vs = malloc(sizeof(double) * (size_t)d * d);
        if (!vs) st = df_fail(DF_ERR_NOMEM, "out of memory for a matrix square root");
        for (int k = 0; vs && k < d; k++) {
            const double r = sqrt(sqrt(fmax(l[k], 0)));
            for (int j = 0; j < d; j++) vs[(size_t)k * d + j] = r * v[(size_t)k * d + j];
        }
        if (vs) cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, d, d, d, 1.0, vs, d, vs, d, 0.0, root, d);
        free(vs);
    }
    free(v), free(l);
    return st;
}

/* tr((A S A)^(1/2)) for symmetric PSD S and A: the sum of the square roots of A S A's eigenvalues. tmp is
 * 2 d^2 doubles of scratch. */
static df_status trace_sqrt_sandwich(const double *A, const double *S, int d, double *tmp, double *out) {
    double *as = tmp, *asa = tmp + (size_t)d * d, *l = malloc(sizeof(double) * (size_t)d);
    if (!l) return df_fail(DF_ERR_NOMEM, "out of memory");
    cblas_dsymm(CblasRowMajor, CblasLeft, CblasUpper, d, d, 1.0, A, d, S, d, 0.0, as, d);
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, d, d, d, 1.0, as, d, A, d, 0.0, asa, d);
    for (int a = 0; a < d; a++)   /* exact symmetry for the solver */
        for (int b = 0; b < a; b++) {
            double m = 0.5 * (asa[(size_t)a * d + b] + asa[(size_t)b * d + a]);
            asa[(size_t)a * d + b] = asa[(size_t)b * d + a] = m;
        }
    df_status st = sym_eig(asa, d, l, 0);
    double t = 0;
    for (int k = 0; k < d && !st; k++) t += sqrt(fmax(l[k], 0));
    free(l);
    *out = t;
    return st;
}

static df_status check_pair(const df_fstats *a, const df_fstats *b) {
    if (!a || !b || !a->mu || !b->mu) return df_fail(DF_ERR_ARG, "Fréchet distance: missing statistics");
    if (a->d != b->d) return df_fail(DF_ERR_SHAPE, "Fréchet distance: %d-d and %d-d features", a->d, b->d);
    const df_fstats *s = a->n <= b->n ? a : b;
    if (s->n <= s->d)
        return df_fail(DF_ERR_ARG, "%ld images give a singular covariance of %d-d features: the Fréchet distance "
                       "needs more images than feature dimensions (at least %d; 1000 or more for a stable value)",
                       s->n, s->d, s->d + 1);
    return DF_OK;
}

/* |mu1 - mu2|^2 + tr S1 + tr S2 - 2 tr((S1 S2)^(1/2)) with root1 = S1^(1/2) (Heusel et al. 2017, eq. 6). */
static df_status fd_with_root(const df_fstats *a, const double *root_a, const df_fstats *b, double *tmp, double *fd) {
    const int d = a->d;
    double m = 0, tr = 0, cross = 0;
    for (int j = 0; j < d; j++) {
        const double diff = a->mu[j] - b->mu[j];
        m += diff * diff;
        tr += a->sigma[(size_t)j * d + j] + b->sigma[(size_t)j * d + j];
    }
    df_status st = trace_sqrt_sandwich(root_a, b->sigma, d, tmp, &cross);
    /* a distance: rounding may leave -1e-12 for identical statistics */
    if (!st) *fd = fmax(m + tr - 2 * cross, 0);
    return st;
}

df_status df_frechet_distance(const df_fstats *a, const df_fstats *b, double *fd) {
    df_status st = check_pair(a, b);
    if (st) return st;
    const int d = a->d;
    double *root = malloc(sizeof(double) * (size_t)d * d), *tmp = malloc(sizeof(double) * 2 * (size_t)d * d);
    st = root && tmp ? sym_sqrt(a->sigma, d, root) : df_fail(DF_ERR_NOMEM, "out of memory");
    if (!st) st = fd_with_root(a, root, b, tmp, fd);
    free(root), free(tmp);
    return st;
}

df_status df_fd_bootstrap(const float *gen, long n, int d, const df_fstats *ref, int resamples, df_rng *rng,
                          double *fd, double *se) {
    if (!gen || !ref || !fd || n < 2 || d != ref->d || (resamples > 0 && (!rng || !se)))
        return df_fail(DF_ERR_ARG, "FD bootstrap: bad arguments (n = %ld, d = %d)", n, d);
    df_fstats g = {0}, b = {0};
    double *root = NULL, *groot = NULL, *tmp = NULL, *centred = NULL;
    int *w = NULL;
    df_status st = fstats_alloc(&g, d);
    if (!st) st = fstats_alloc(&b, d);
    if (!st) {
        root = malloc(sizeof(double) * (size_t)d * d), groot = malloc(sizeof(double) * (size_t)d * d);
        tmp = malloc(sizeof(double) * 2 * (size_t)d * d);
        centred = malloc(sizeof(double) * (size_t)n * d), w = malloc(sizeof(int) * (size_t)n);
        if (!root || !groot || !tmp || !centred || !w) st = df_fail(DF_ERR_NOMEM, "out of memory for %ld feature vectors", n);
    }
    if (!st) {
        weighted_stats(gen, n, d, NULL, centred, &g);
        st = check_pair(&g, ref);
    }
    /* the square roots once; every resample costs one covariance and two eigendecompositions */
    if (!st) st = sym_sqrt(ref->sigma, d, root);
    if (!st && resamples > 0) st = sym_sqrt(g.sigma, d, groot);
    if (!st) st = fd_with_root(ref, root, &g, tmp, fd);
    /* The plain bootstrap variance of FD(resample, ref) overstates the error when the two distributions are
     * close: FD is quadratic in the sample's deviation, and the resamples vary around the observed statistics,
     * which already hold one draw of that deviation, so its second-order part is counted three times instead
     * of once (for |mean - mu|^2 the bootstrap variance is 4 e'S e / n + 2 tr(S^2) / n^2 with e the observed
     * difference, whose own expectation brings another 4 tr(S^2) / n^2). The distance of each resample to the
     * observed statistics themselves carries only that second-order part, so its variance, taken twice, is
     * subtracted. When the distributions are far apart the correction vanishes and this is the plain bootstrap. */
    double s1 = 0, q1 = 0, s2 = 0, q2 = 0;
    for (int r = 0; r < resamples && !st; r++) {
        memset(w, 0, sizeof(int) * (size_t)n);
        for (long i = 0; i < n; i++) w[(long)(df_rng_uniform(rng) * n)]++;
        weighted_stats(gen, n, d, w, centred, &b);
        double v, u;
        st = fd_with_root(ref, root, &b, tmp, &v);
        if (!st) st = fd_with_root(&g, groot, &b, tmp, &u);
        s1 += v, q1 += v * v, s2 += u, q2 += u * u;
    }
    if (!st && se) {
        if (resamples > 1) {
            const double v1 = fmax(q1 - s1 * s1 / resamples, 0) / (resamples - 1);
            const double v2 = fmax(q2 - s2 * s2 / resamples, 0) / (resamples - 1);
            /* at least a third of the plain variance: all that remains when FD is purely second order */
            *se = sqrt(fmax(v1 - 2 * v2, v1 / 3));
        } else {
            *se = NAN;
        }
    }
    df_fstats_free(&g), df_fstats_free(&b);
    free(root), free(groot), free(tmp), free(centred), free(w);
    return st;
}

/* ---- KID ------------------------------------------------------------------------------------------------ */

/* k(x, y) = (x.y / d + 1)^3 for the dot products in g (rows x cols), in place. */
static void poly_kernel(double *g, size_t count, int d) {
    const double inv = 1.0 / d;
    for (size_t i = 0; i < count; i++) {
        const double v = g[i] * inv + 1;
        g[i] = v * v * v;
    }
}

/* Kernel sums between row blocks, streamed so no n x n matrix is held: for each row i of a, rowsum[i] =
 * sum_j k(a_i, b_j) (skipping j == i when same). a, b are (n, d) doubles. */
static df_status kernel_row_sums(const double *a, long na, const double *b, long nb, int d, int same, double *rowsum) {
    const long B = 512;
    double *g = malloc(sizeof(double) * (size_t)B * B);
    if (!g) return df_fail(DF_ERR_NOMEM, "out of memory for kernel blocks");
    memset(rowsum, 0, sizeof(double) * (size_t)na);
    for (long i0 = 0; i0 < na; i0 += B) {
        const long bi = DF_MIN(B, na - i0);
        for (long j0 = 0; j0 < nb; j0 += B) {
            const long bj = DF_MIN(B, nb - j0);
            cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)bi, (int)bj, d, 1.0, a + (size_t)i0 * d, d,
                        b + (size_t)j0 * d, d, 0.0, g, (int)bj);
            poly_kernel(g, (size_t)bi * bj, d);
            for (long i = 0; i < bi; i++) {
                double s = 0;
                for (long j = 0; j < bj; j++)
                    if (!same || i0 + i != j0 + j) s += g[(size_t)i * bj + j];
                rowsum[i0 + i] += s;
            }
        }
    }
    free(g);
    return DF_OK;
}

/* The unbiased MMD^2 of two sets of m vectors each (rows of x and y, doubles): Bińkowski et al. 2018, eq. 2
 * with the cubic polynomial kernel. g is 3 m^2 doubles of scratch. */
static double mmd2_unbiased(const double *x, const double *y, int m, int d, double *g) {
    double *kxx = g, *kyy = g + (size_t)m * m, *kxy = g + 2 * (size_t)m * m;
    cblas_dsyrk(CblasRowMajor, CblasUpper, CblasNoTrans, m, d, 1.0, x, d, 0.0, kxx, m);
    cblas_dsyrk(CblasRowMajor, CblasUpper, CblasNoTrans, m, d, 1.0, y, d, 0.0, kyy, m);
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, m, d, 1.0, x, d, y, d, 0.0, kxy, m);
    double sxx = 0, syy = 0, sxy = 0;
    const double inv = 1.0 / d;
    for (int i = 0; i < m; i++) {
        for (int j = i + 1; j < m; j++) {   /* upper triangles: each unordered pair once */
            double a = kxx[(size_t)i * m + j] * inv + 1, b = kyy[(size_t)i * m + j] * inv + 1;
            sxx += a * a * a, syy += b * b * b;
        }
        for (int j = 0; j < m; j++) {
            double c = kxy[(size_t)i * m + j] * inv + 1;
            sxy += c * c * c;
        }
    }
    return 2 * (sxx + syy) / ((double)m * (m - 1)) - 2 * sxy / ((double)m * m);
}

static double *to_double(const float *f, long n, int d) {
    double *out = malloc(sizeof(double) * (size_t)n * d);
    for (size_t i = 0; out && i < (size_t)n * d; i++) out[i] = f[i];
    return out;
}

df_status df_kid(const float *gen, long ng, const float *ref, long nr, int d, int subsets, int subset_size,
                 df_rng *rng, double *mean, double *std, double *se) {
    if (!gen || !ref || !rng || !mean || d < 1 || subsets < 1 || subset_size < 2)
        return df_fail(DF_ERR_ARG, "KID: bad arguments");
    if (ng < 2 || nr < 2) return df_fail(DF_ERR_ARG, "KID needs at least 2 images in each set (have %ld and %ld)", ng, nr);
    const int m = (int)DF_MIN((long)subset_size, DF_MIN(ng, nr));
    double *g = to_double(gen, ng, d), *r = to_double(ref, nr, d);
    double *xs = malloc(sizeof(double) * (size_t)m * d), *ys = malloc(sizeof(double) * (size_t)m * d);
    double *scratch = malloc(sizeof(double) * 3 * (size_t)m * m), *vals = malloc(sizeof(double) * (size_t)subsets);
    int *pg = malloc(sizeof(int) * (size_t)ng), *pr = malloc(sizeof(int) * (size_t)nr);
    df_status st = g && r && xs && ys && scratch && vals && pg && pr ? DF_OK
                                                                      : df_fail(DF_ERR_NOMEM, "out of memory for KID");
    /* Bińkowski et al.'s estimate: subsets of m vectors drawn without replacement from each set */
    for (int s = 0; s < subsets && !st; s++) {
        df_shuffle(pg, (int)ng, rng);
        df_shuffle(pr, (int)nr, rng);
        for (int i = 0; i < m; i++) {
            memcpy(xs + (size_t)i * d, g + (size_t)pg[i] * d, sizeof(double) * d);
            memcpy(ys + (size_t)i * d, r + (size_t)pr[i] * d, sizeof(double) * d);
        }
        vals[s] = mmd2_unbiased(xs, ys, m, d, scratch);
    }
    if (!st) {
        double sum = 0, sq = 0;
        for (int s = 0; s < subsets; s++) sum += vals[s];
        *mean = sum / subsets;
        for (int s = 0; s < subsets; s++) sq += (vals[s] - *mean) * (vals[s] - *mean);
        if (std) *std = sqrt(sq / subsets);   /* over subsets, as the paper and its reference code report it */
    }
    /* The standard error over the generated set: the jackknife of the all-vectors estimate
     * MMD^2 = Kgg / (ng (ng - 1)) + Krr / (nr (nr - 1)) - 2 Kgr / (ng nr), K. the kernel sums off the diagonal.
     * Leaving out generated vector i removes 2 rg_i from Kgg and rx_i from Kgr; the Krr part is constant. */
    if (!st && se) {
        double *rg = malloc(sizeof(double) * (size_t)ng), *rx = malloc(sizeof(double) * (size_t)ng);
        if (!rg || !rx) st = df_fail(DF_ERR_NOMEM, "out of memory for KID");
        if (!st) st = kernel_row_sums(g, ng, g, ng, d, 1, rg);
        if (!st) st = kernel_row_sums(g, ng, r, nr, d, 0, rx);
        if (!st && ng < 3) *se = NAN;
        else if (!st) {
            double kgg = 0, kgx = 0;
            for (long i = 0; i < ng; i++) kgg += rg[i], kgx += rx[i];
            const double n1 = (double)(ng - 1);
            double sum = 0, sq = 0;
            for (long i = 0; i < ng; i++) {   /* the parts that depend on the generated set */
                double v = (kgg - 2 * rg[i]) / (n1 * (n1 - 1)) - 2 * (kgx - rx[i]) / (n1 * nr);
                sum += v, sq += v * v;
            }
            double mv = sum / ng;
            *se = sqrt(fmax(sq / ng - mv * mv, 0) * (double)(ng - 1));   /* sqrt((n-1)/n sum (v_i - mean)^2) */
        }
        free(rg), free(rx);
    }
    free(g), free(r), free(xs), free(ys), free(scratch), free(vals), free(pg), free(pr);
    return st;
}

/* ---- precision and recall -------------------------------------------------------------------------------- */

/* Squared distances of rows a[i0 .. i0 + bi) to rows b[j0 .. j0 + bj) into dist (bi x bj), from dot products
 * and squared norms, in double. */
static void sq_dist_block(const double *a, const double *na, long i0, long bi, const double *b, const double *nb,
                          long j0, long bj, int d, double *dist) {
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)bi, (int)bj, d, -2.0, a + (size_t)i0 * d, d,
                b + (size_t)j0 * d, d, 0.0, dist, (int)bj);
    for (long i = 0; i < bi; i++)
        for (long j = 0; j < bj; j++) {
            double v = dist[(size_t)i * bj + j] + na[i0 + i] + nb[j0 + j];
            dist[(size_t)i * bj + j] = v > 0 ? v : 0;
        }
}

static void sq_norms(const double *a, long n, int d, double *out) {
    for (long i = 0; i < n; i++) {
        double s = 0;
        for (int j = 0; j < d; j++) s += a[(size_t)i * d + j] * a[(size_t)i * d + j];
        out[i] = s;
    }
}

/* radius[i] = squared distance from a_i to its k-th nearest neighbour among the other rows of a. */
static df_status knn_radii(const double *a, const double *na, long n, int d, int k, double *radius, double *block) {
    const long B = 256;
    double *best = malloc(sizeof(double) * (size_t)n * k);   /* the k smallest per row, ascending */
    if (!best) return df_fail(DF_ERR_NOMEM, "out of memory for nearest neighbours");
    for (size_t i = 0; i < (size_t)n * k; i++) best[i] = INFINITY;
    for (long i0 = 0; i0 < n; i0 += B) {
        const long bi = DF_MIN(B, n - i0);
        for (long j0 = 0; j0 < n; j0 += B) {
            const long bj = DF_MIN(B, n - j0);
            sq_dist_block(a, na, i0, bi, a, na, j0, bj, d, block);
            for (long i = 0; i < bi; i++) {
                double *bb = best + (size_t)(i0 + i) * k;
                for (long j = 0; j < bj; j++) {
                    if (i0 + i == j0 + j) continue;   /* a vector is not its own neighbour */
                    double v = block[(size_t)i * bj + j];
                    if (v >= bb[k - 1]) continue;
                    int p = k - 1;
                    while (p > 0 && bb[p - 1] > v) bb[p] = bb[p - 1], p--;
                    bb[p] = v;
                }
            }
        }
    }
    for (long i = 0; i < n; i++) radius[i] = best[(size_t)i * k + k - 1];
    free(best);
    return DF_OK;
}

/* The share of rows of q inside at least one ball (centre m_j, squared radius rad_j). */
static double coverage(const double *q, const double *nq, long n, const double *m, const double *nm,
                       const double *rad, long nb, int d, double *block) {
    const long B = 256;
    long inside = 0;
    for (long i0 = 0; i0 < n; i0 += B) {
        const long bi = DF_MIN(B, n - i0);
        char hit[256] = {0};
        for (long j0 = 0; j0 < nb; j0 += B) {
            const long bj = DF_MIN(B, nb - j0);
            sq_dist_block(q, nq, i0, bi, m, nm, j0, bj, d, block);
            for (long i = 0; i < bi; i++)
                for (long j = 0; j < bj && !hit[i]; j++) hit[i] = block[(size_t)i * bj + j] <= rad[j0 + j];
        }
        for (long i = 0; i < bi; i++) inside += hit[i];
    }
    return (double)inside / n;
}

df_status df_precision_recall(const float *real, long nr, const float *gen, long ng, int d, int k, double *precision,
                              double *recall) {
    if (!real || !gen || !precision || !recall || d < 1 || k < 1)
        return df_fail(DF_ERR_ARG, "precision/recall: bad arguments");
    if (nr <= k || ng <= k)
        return df_fail(DF_ERR_ARG, "precision/recall with k = %d needs more than %d images in each set (have %ld real, "
                       "%ld generated)", k, k, nr, ng);
    double *r = to_double(real, nr, d), *g = to_double(gen, ng, d);
    double *nrm = malloc(sizeof(double) * (size_t)nr), *ngm = malloc(sizeof(double) * (size_t)ng);
    double *rr = malloc(sizeof(double) * (size_t)nr), *rg = malloc(sizeof(double) * (size_t)ng);
    double *block = malloc(sizeof(double) * 256 * 256);
    df_status st = r && g && nrm && ngm && rr && rg && block ? DF_OK
                                                              : df_fail(DF_ERR_NOMEM, "out of memory for precision/recall");
    if (!st) {
        sq_norms(r, nr, d, nrm), sq_norms(g, ng, d, ngm);
        st = knn_radii(r, nrm, nr, d, k, rr, block);
    }
    if (!st) st = knn_radii(g, ngm, ng, d, k, rg, block);
    if (!st) {
        /* Kynkäänniemi et al. 2019, eqs. 1-2: a sample is in a set's manifold when it lies within the k-NN
         * radius of one of the set's vectors */
        *precision = coverage(g, ngm, ng, r, nrm, rr, nr, d, block);
        *recall = coverage(r, nrm, nr, g, ngm, rg, ng, d, block);
    }
    free(r), free(g), free(nrm), free(ngm), free(rr), free(rg), free(block);
    return st;
}
