/* Tests of the metrics on feature vectors against closed forms and brute-force double computations: the
 * Fréchet distance of Gaussians, KID's unbiased estimate and its jackknife, precision and recall. */
#include "test.h"
#include "internal.h"

#include <stdlib.h>
#include <string.h>

/* n vectors from N(mu, L L^T) (L lower triangular d x d, row-major), float rows. */
static void gaussian_draws(df_rng *r, int n, int d, const double *mu, const double *L, float *out) {
    double *z = malloc(sizeof(double) * d);
    for (int i = 0; i < n; i++) {
        for (int j = 0; j < d; j++) z[j] = df_rng_normal(r);
        for (int a = 0; a < d; a++) {
            double v = mu[a];
            for (int b = 0; b <= a; b++) v += L[a * d + b] * z[b];
            out[(size_t)i * d + a] = (float)v;
        }
    }
    free(z);
}

/* A random symmetric positive definite matrix A A^T / d + 0.1 I. */
static void random_spd(df_rng *r, int d, double *S) {
    double *A = malloc(sizeof(double) * d * d);
    for (int i = 0; i < d * d; i++) A[i] = df_rng_normal(r);
    for (int a = 0; a < d; a++)
        for (int b = 0; b < d; b++) {
            double v = a == b ? 0.1 : 0;
            for (int k = 0; k < d; k++) v += A[a * d + k] * A[b * d + k] / d;
            S[a * d + b] = v;
        }
    free(A);
}

static void matmul(const double *A, const double *B, int d, double *C) {
    for (int i = 0; i < d; i++)
        for (int j = 0; j < d; j++) {
            double v = 0;
            for (int k = 0; k < d; k++) v += A[i * d + k] * B[k * d + j];
            C[i * d + j] = v;
        }
}

/* tr((S1 S2)^(1/2)) by the Denman-Beavers iteration on the (non-symmetric) product, an independent route
 * from the library's eigendecompositions: Y -> M^(1/2), Z -> M^(-1/2). */
static double trace_sqrt_product(const double *S1, const double *S2, int d) {
    double *Y = malloc(sizeof(double) * d * d), *Z = malloc(sizeof(double) * d * d);
    double *Yi = malloc(sizeof(double) * d * d), *Zi = malloc(sizeof(double) * d * d), *aug = malloc(sizeof(double) * d * 2 * d);
    matmul(S1, S2, d, Y);
    for (int i = 0; i < d * d; i++) Z[i] = i % (d + 1) == 0;
    for (int it = 0; it < 60; it++) {
        /* invert Y and Z by Gauss-Jordan with partial pivoting */
        for (int which = 0; which < 2; which++) {
            const double *M = which ? Z : Y;
            double *inv = which ? Zi : Yi;
            for (int i = 0; i < d; i++)
                for (int j = 0; j < 2 * d; j++) aug[i * 2 * d + j] = j < d ? M[i * d + j] : (j - d == i);
            for (int c = 0; c < d; c++) {
                int p = c;
                for (int i = c + 1; i < d; i++)
                    if (fabs(aug[i * 2 * d + c]) > fabs(aug[p * 2 * d + c])) p = i;
                for (int j = 0; j < 2 * d; j++) {
                    double t = aug[c * 2 * d + j];
                    aug[c * 2 * d + j] = aug[p * 2 * d + j], aug[p * 2 * d + j] = t;
                }
                double piv = aug[c * 2 * d + c];
                for (int j = 0; j < 2 * d; j++) aug[c * 2 * d + j] /= piv;
                for (int i = 0; i < d; i++) {
                    if (i == c) continue;
                    double f = aug[i * 2 * d + c];
                    for (int j = 0; j < 2 * d; j++) aug[i * 2 * d + j] -= f * aug[c * 2 * d + j];
                }
            }
            for (int i = 0; i < d; i++)
                for (int j = 0; j < d; j++) inv[i * d + j] = aug[i * 2 * d + d + j];
        }
        for (int i = 0; i < d * d; i++) {
            double y = 0.5 * (Y[i] + Zi[i]), z = 0.5 * (Z[i] + Yi[i]);
            Y[i] = y, Z[i] = z;
        }
    }
    double t = 0;
    for (int i = 0; i < d; i++) t += Y[i * d + i];
    free(Y), free(Z), free(Yi), free(Zi), free(aug);
    return t;
}

static void stats_from(const double *mu, const double *S, int d, long n, df_fstats *s) {
    s->d = d, s->n = n;
    s->mu = malloc(sizeof(double) * d), s->sigma = malloc(sizeof(double) * d * d);
    memcpy(s->mu, mu, sizeof(double) * d), memcpy(s->sigma, S, sizeof(double) * d * d);
}

TEST(metrics_frechet_distance_matches_closed_forms) {
    df_rng r;
    df_rng_init(&r, 11);
    /* 2 x 2: tr sqrt(M) = sqrt(tr M + 2 sqrt(det M)) for M with positive eigenvalues */
    for (int trial = 0; trial < 5; trial++) {
        double S1[4], S2[4], M[4], mu1[2] = {df_rng_normal(&r), df_rng_normal(&r)}, mu2[2] = {0, 1};
        random_spd(&r, 2, S1), random_spd(&r, 2, S2), matmul(S1, S2, 2, M);
        double cross = sqrt(M[0] + M[3] + 2 * sqrt(M[0] * M[3] - M[1] * M[2]));
        double want = (mu1[0] - mu2[0]) * (mu1[0] - mu2[0]) + (mu1[1] - mu2[1]) * (mu1[1] - mu2[1]) + S1[0] + S1[3] +
                      S2[0] + S2[3] - 2 * cross, got;
        df_fstats a, b;
        stats_from(mu1, S1, 2, 100, &a), stats_from(mu2, S2, 2, 100, &b);
        CHECK_OK(df_frechet_distance(&a, &b, &got));
        CHECK_NEAR(got, want, 1e-10 * (1 + want), "FD of 2x2 Gaussians");
        df_fstats_free(&a), df_fstats_free(&b);
    }
    /* d = 24, non-commuting covariances, against the Denman-Beavers square root of the product */
    const int d = 24;
    double *S1 = malloc(sizeof(double) * d * d), *S2 = malloc(sizeof(double) * d * d), mu1[24], mu2[24];
    random_spd(&r, d, S1), random_spd(&r, d, S2);
    double want = 0, got, self;
    for (int j = 0; j < d; j++) {
        mu1[j] = df_rng_normal(&r), mu2[j] = df_rng_normal(&r);
        want += (mu1[j] - mu2[j]) * (mu1[j] - mu2[j]) + S1[j * d + j] + S2[j * d + j];
    }
    want -= 2 * trace_sqrt_product(S1, S2, d);
    df_fstats a, b;
    stats_from(mu1, S1, d, 1000, &a), stats_from(mu2, S2, d, 1000, &b);
    CHECK_OK(df_frechet_distance(&a, &b, &got));
    CHECK_NEAR(got, want, 1e-9 * want, "FD of 24-d Gaussians");
    CHECK_OK(df_frechet_distance(&b, &a, &self));
    CHECK_NEAR(self, got, 1e-9 * want, "FD is symmetric");
    CHECK_OK(df_frechet_distance(&a, &a, &self));
    CHECK_NEAR(self, 0, 1e-9 * want, "FD of a distribution to itself");
    /* a singular covariance (no more vectors than dimensions) is refused with a message, not NaN */
    a.n = d;
    CHECK(df_frechet_distance(&a, &b, &got) == DF_ERR_ARG && strstr(df_error(), "singular"),
          "n = d accepted or unclear: %s", df_error());
    df_fstats_free(&a), df_fstats_free(&b);
    free(S1), free(S2);
}

TEST(metrics_feature_statistics_and_bootstrap) {
    const int d = 6, n = 4000;
    df_rng r;
    df_rng_init(&r, 5);
    double mu[6], L[36] = {0}, S[36];
    for (int a = 0; a < d; a++) {
        mu[a] = a - 2.5;
        for (int b = 0; b <= a; b++) L[a * d + b] = a == b ? 1 + 0.2 * a : 0.3 * df_rng_normal(&r);
    }
    for (int a = 0; a < d; a++)
        for (int b = 0; b < d; b++) {
            double v = 0;
            for (int k = 0; k < d; k++) v += L[a * d + k] * L[b * d + k];
            S[a * d + b] = v;
        }
    float *f = malloc(sizeof(float) * n * d);
    gaussian_draws(&r, n, d, mu, L, f);
    /* the statistics equal a direct double computation */
    df_fstats s;
    CHECK_OK(df_fstats_compute(f, n, d, &s));
    double err = 0;
    for (int a = 0; a < d; a++) {
        double m = 0;
        for (int i = 0; i < n; i++) m += f[i * d + a];
        m /= n;
        err = fmax(err, fabs(m - s.mu[a]));
        for (int b = 0; b < d; b++) {
            double mb = 0, c = 0;
            for (int i = 0; i < n; i++) mb += f[i * d + b];
            mb /= n;
            for (int i = 0; i < n; i++) c += (f[i * d + a] - m) * (f[i * d + b] - mb);
            err = fmax(err, fabs(c / (n - 1) - s.sigma[a * d + b]));
        }
    }
    CHECK(err < 1e-10, "statistics differ from the direct computation by %g", err);
    df_fstats_free(&s);
    /* the bootstrap standard error against the spread over independent draws of the generated set, with the
     * exact statistics of the reference: one that differs (mean moved, covariance scaled, as a model's samples
     * differ from the data) and the generating distribution itself, where FD is purely second order and a
     * plain bootstrap overstates the error by about sqrt(3). They agree within a factor of 1.5. */
    for (int same = 0; same < 2; same++) {
        double mu_ref[6], S_ref[36];
        for (int a = 0; a < d; a++) mu_ref[a] = mu[a] + (same ? 0 : 0.3);
        for (int a = 0; a < d * d; a++) S_ref[a] = (same ? 1 : 1.3) * S[a];
        df_fstats ref;
        stats_from(mu_ref, S_ref, d, 1000000, &ref);
        const int draws = 120, m = 500;
        double vals[120], sum = 0, sq = 0, se_mean = 0;
        for (int k = 0; k < draws; k++) {
            gaussian_draws(&r, m, d, mu, L, f);
            double se = 0;
            CHECK_OK(df_fd_bootstrap(f, m, d, &ref, k < 20 ? 200 : 0, &r, &vals[k], k < 20 ? &se : NULL));
            if (k < 20) se_mean += se / 20;
            sum += vals[k];
        }
        for (int k = 0; k < draws; k++) sq += (vals[k] - sum / draws) * (vals[k] - sum / draws);
        double spread = sqrt(sq / (draws - 1));
        printf("    FD at n = %d (%s): mean %.4f, spread over %d draws %.4f, bootstrap standard error %.4f\n", m,
               same ? "the same distribution" : "a different one", sum / draws, draws, spread, se_mean);
        CHECK(se_mean < 1.5 * spread && spread < 1.5 * se_mean, "bootstrap error %g vs spread %g", se_mean, spread);
        df_fstats_free(&ref);
    }
    free(f);
}

/* The unbiased MMD^2 of whole sets written out with plain loops. */
static double mmd2_direct(const float *x, int nx, const float *y, int ny, int d) {
    double sxx = 0, syy = 0, sxy = 0;
    for (int i = 0; i < nx; i++)
        for (int j = 0; j < nx; j++)
            if (i != j) {
                double dot = 0;
                for (int k = 0; k < d; k++) dot += (double)x[i * d + k] * x[j * d + k];
                sxx += pow(dot / d + 1, 3);
            }
    for (int i = 0; i < ny; i++)
        for (int j = 0; j < ny; j++)
            if (i != j) {
                double dot = 0;
                for (int k = 0; k < d; k++) dot += (double)y[i * d + k] * y[j * d + k];
                syy += pow(dot / d + 1, 3);
            }
    for (int i = 0; i < nx; i++)
        for (int j = 0; j < ny; j++) {
            double dot = 0;
            for (int k = 0; k < d; k++) dot += (double)x[i * d + k] * y[j * d + k];
            sxy += pow(dot / d + 1, 3);
        }
    return sxx / ((double)nx * (nx - 1)) + syy / ((double)ny * (ny - 1)) - 2 * sxy / ((double)nx * ny);
}

TEST(metrics_kid_matches_direct_sums_and_jackknife) {
    const int d = 5, n = 40;
    df_rng r;
    df_rng_init(&r, 3);
    float x[40 * 5], y[40 * 5];
    for (int i = 0; i < n * d; i++) x[i] = (float)df_rng_normal(&r), y[i] = (float)(0.8 * df_rng_normal(&r) + 0.3);
    /* one subset of all vectors: the estimate on whole sets */
    double mean, sd, se;
    CHECK_OK(df_kid(x, n, y, n, d, 1, n, &r, &mean, &sd, &se));
    double want = mmd2_direct(x, n, y, n, d);
    CHECK_NEAR(mean, want, 1e-10 * fabs(want) + 1e-12, "KID on whole sets");
    CHECK(sd == 0, "one subset has no spread (%g)", sd);
    /* the jackknife by leaving each generated vector out and recomputing */
    double loo[40], s = 0, sq = 0;
    float xl[39 * 5];
    for (int i = 0; i < n; i++) {
        for (int j = 0, k = 0; j < n; j++)
            if (j != i) memcpy(xl + (size_t)k++ * d, x + (size_t)j * d, sizeof(float) * d);
        loo[i] = mmd2_direct(xl, n - 1, y, n, d);
        s += loo[i];
    }
    for (int i = 0; i < n; i++) sq += (loo[i] - s / n) * (loo[i] - s / n);
    CHECK_NEAR(se, sqrt((n - 1.0) / n * sq), 1e-8 * sqrt(sq), "KID jackknife standard error");
    /* subsets: the mean of subset estimates, each an unbiased MMD^2 */
    CHECK_OK(df_kid(x, n, y, n, d, 50, 20, &r, &mean, &sd, NULL));
    CHECK(sd > 0 && fabs(mean - want) < 4 * sd, "subset mean %g (std %g) far from %g", mean, sd, want);
    /* the same distribution: KID near 0 (unbiased, so it can be negative) */
    CHECK_OK(df_kid(x, 20, x + 20 * d, 20, d, 1, 20, &r, &mean, NULL, &se));
    CHECK(fabs(mean) < 4 * se + 1e-12, "KID of two halves of one sample: %g (se %g)", mean, se);
}

TEST(metrics_precision_recall_brute_force) {
    const int d = 3, nr = 60, ng = 50, k = 3;
    df_rng r;
    df_rng_init(&r, 8);
    float real[60 * 3], gen[50 * 3];
    for (int i = 0; i < nr * d; i++) real[i] = (float)df_rng_normal(&r);
    for (int i = 0; i < ng * d; i++) gen[i] = (float)(1.5 * df_rng_normal(&r) + (i % d == 0 ? 1.0 : 0.0));
    /* brute force: k-th neighbour radii by sorting all distances */
    double rad_r[60], rad_g[50];
    for (int pass = 0; pass < 2; pass++) {
        const float *a = pass ? gen : real;
        int n = pass ? ng : nr;
        double *rad = pass ? rad_g : rad_r;
        for (int i = 0; i < n; i++) {
            double dist[60];
            int c = 0;
            for (int j = 0; j < n; j++) {
                if (j == i) continue;
                double s = 0;
                for (int q = 0; q < d; q++) s += ((double)a[i * d + q] - a[j * d + q]) * ((double)a[i * d + q] - a[j * d + q]);
                dist[c++] = s;
            }
            for (int x = 0; x < c; x++)
                for (int y = x + 1; y < c; y++)
                    if (dist[y] < dist[x]) {
                        double t = dist[x];
                        dist[x] = dist[y], dist[y] = t;
                    }
            rad[i] = dist[k - 1];
        }
    }
    int pin = 0, rin = 0;
    for (int j = 0; j < ng; j++) {
        int hit = 0;
        for (int i = 0; i < nr && !hit; i++) {
            double s = 0;
            for (int q = 0; q < d; q++) s += ((double)gen[j * d + q] - real[i * d + q]) * ((double)gen[j * d + q] - real[i * d + q]);
            hit = s <= rad_r[i];
        }
        pin += hit;
    }
    for (int i = 0; i < nr; i++) {
        int hit = 0;
        for (int j = 0; j < ng && !hit; j++) {
            double s = 0;
            for (int q = 0; q < d; q++) s += ((double)gen[j * d + q] - real[i * d + q]) * ((double)gen[j * d + q] - real[i * d + q]);
            hit = s <= rad_g[j];
        }
        rin += hit;
    }
    double p, rc;
    CHECK_OK(df_precision_recall(real, nr, gen, ng, d, k, &p, &rc));
    CHECK_NEAR(p, (double)pin / ng, 1e-12, "precision");
    CHECK_NEAR(rc, (double)rin / nr, 1e-12, "recall");
    CHECK(p > 0.2 && p < 1 && rc > 0.2 && rc < 1, "a shifted, wider set should be neither 0 nor 1: %g %g", p, rc);
    /* a collapsed generated set (one vector repeated) covers almost nothing of the real set */
    float one[50 * 3];
    for (int i = 0; i < ng; i++) memcpy(one + i * d, real + 7 * d, sizeof(float) * d);
    CHECK_OK(df_precision_recall(real, nr, one, ng, d, k, &p, &rc));
    CHECK(rc <= 1.0 / nr + 1e-12, "recall of a collapsed set %g", rc);
    CHECK(p == 1, "the repeated real vector lies in the real manifold: precision %g", p);
    CHECK(df_precision_recall(real, nr, gen, 3, d, 3, &p, &rc) == DF_ERR_ARG, "k >= n accepted");
}
