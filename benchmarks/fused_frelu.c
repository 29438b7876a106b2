/* An experiment, not part of raylung: FReLU (max(x, BN(dw3x3(x)))) fused into four passes
   forward and backward, for NHWC float32 tensors whose channels are a multiple of 16.
   benchmarks/fused_frelu.py builds it with gcc and measures it against the eager model.

   Layout: x, d (the depthwise output), g (gradient of the FReLU output) are N*H*W*C; w9 is the
   depthwise weight tap-major (9*C: tap (di+1)*3 + (dj+1) reads x[h+di][w+dj]). Sums over
   pixels are accumulated in float vectors per row or chunk and in double across them. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef float vf __attribute__((vector_size(64), aligned(4)));
typedef int32_t vi __attribute__((vector_size(64), aligned(4)));
#define V 16
#define CHUNK 32

static inline vf ld(const float *p) { return *(const vf *)p; }
static inline void st(float *p, vf v) { *(vf *)p = v; }
static inline vf where(vi mask, vf a, vf b) { return (vf)(((vi)a & mask) | ((vi)b & ~mask)); }

/* Rows h-1, h, h+1 of image n (NULL outside: zero padding). */
static inline void row_ptrs(const float *x, int64_t n, int64_t h, int64_t H, int64_t W, int64_t C,
                            const float *rows[3]) {
  for (int di = -1; di <= 1; ++di) {
    int64_t hh = h + di;
    rows[di + 1] = (hh < 0 || hh >= H) ? NULL : x + ((n * H + hh) * W) * C;
  }
}

/* One output row of the 3x3 depthwise convolution, channels [cb, cb+16): out = (out +) taps.
   With s and q, also adds the written values and their squares. */
static inline void conv_row(const float *rows[3], const float *w9, int64_t W, int64_t C, int64_t cb,
                            float *out, int accumulate, vf *s, vf *q) {
  vf wv[9], zero = {0};
  for (int t = 0; t < 9; ++t) wv[t] = ld(w9 + t * C + cb);
  for (int64_t w = 0; w < W; ++w) {
    vf acc = accumulate ? ld(out + w * C + cb) : zero;
    for (int di = 0; di < 3; ++di) {
      const float *r = rows[di];
      if (!r) continue;
      if (w > 0) acc += wv[di * 3] * ld(r + (w - 1) * C + cb);
      acc += wv[di * 3 + 1] * ld(r + w * C + cb);
      if (w + 1 < W) acc += wv[di * 3 + 2] * ld(r + (w + 1) * C + cb);
    }
    st(out + w * C + cb, acc);
    if (s) {
      *s += acc;
      *q += acc * acc;
    }
  }
}

static void add_into(double *dst, const double *src, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] += src[i];
}

/* Adds a chunk's two per-lane sums to a thread's per-channel pair of sums (acc: 2*C). */
static inline void add_pair(double *acc, int64_t C, int64_t cb, vf s, vf q) {
  for (int k = 0; k < V; ++k) {
    acc[cb + k] += s[k];
    acc[C + cb + k] += q[k];
  }
}

/* Pass 1: d = dw3x3(x), with the per-channel sum and sum of squares of d (batch statistics). */
void frelu_forward_conv(const float *x, const float *w9, float *d, double *sum_sq, int64_t N, int64_t H,
                        int64_t W, int64_t C) {
  memset(sum_sq, 0, sizeof(double) * 2 * C);
#pragma omp parallel
  {
    double *acc = calloc(2 * C, sizeof(double));
    const float *rows[3];
#pragma omp for schedule(static)
    for (int64_t r = 0; r < N * H; ++r) {
      row_ptrs(x, r / H, r % H, H, W, C, rows);
      for (int64_t cb = 0; cb < C; cb += V) {
        vf s = {0}, q = {0};
        conv_row(rows, w9, W, C, cb, d + r * W * C, 0, &s, &q);
        add_pair(acc, C, cb, s, q);
      }
    }
#pragma omp critical
    add_into(sum_sq, acc, 2 * C);
    free(acc);
  }
}

/* Pass 2: out = max(x, d * scale + shift), the batch norm folded into scale and shift. */
void frelu_forward_max(const float *x, const float *d, const float *scale, const float *shift, float *out,
                       int64_t P, int64_t C) {
#pragma omp parallel for schedule(static)
  for (int64_t b = 0; b < (P + CHUNK - 1) / CHUNK; ++b) {
    int64_t end = (b + 1) * CHUNK < P ? (b + 1) * CHUNK : P;
    for (int64_t cb = 0; cb < C; cb += V) {
      vf sc = ld(scale + cb), sh = ld(shift + cb);
      for (int64_t i = b * CHUNK; i < end; ++i) {
        vf y = ld(d + i * C + cb) * sc + sh, xv = ld(x + i * C + cb);
        st(out + i * C + cb, where(xv >= y, xv, y));
      }
    }
  }
}

/* Backward pass 1: where the funnel won (x < y), sum g and g * d per channel. */
void frelu_backward_sums(const float *x, const float *d, const float *scale, const float *shift,
                         const float *g, double *sums, int64_t P, int64_t C) {
  memset(sums, 0, sizeof(double) * 2 * C);
#pragma omp parallel
  {
    double *acc = calloc(2 * C, sizeof(double));
#pragma omp for schedule(static)
    for (int64_t b = 0; b < (P + CHUNK - 1) / CHUNK; ++b) {
      int64_t end = (b + 1) * CHUNK < P ? (b + 1) * CHUNK : P;
      for (int64_t cb = 0; cb < C; cb += V) {
        vf sc = ld(scale + cb), sh = ld(shift + cb), s = {0}, q = {0}, zero = {0};
        for (int64_t i = b * CHUNK; i < end; ++i) {
          vf dv = ld(d + i * C + cb), gv = ld(g + i * C + cb);
          vf gy = where(ld(x + i * C + cb) >= dv * sc + sh, zero, gv);
          s += gy;
          q += gy * dv;
        }
        add_pair(acc, C, cb, s, q);
      }
    }
#pragma omp critical
    add_into(sums, acc, 2 * C);
    free(acc);
  }
}

/* Backward pass 2: gx = g where x won; gd = k1 * gy + a * d + b (the batch norm's input
   gradient, gy = g where the funnel won, with k1, a, b from the sums). */
void frelu_backward_split(const float *x, const float *d, const float *scale, const float *shift,
                          const float *g, const float *k1, const float *a, const float *b, float *gd,
                          float *gx, int64_t P, int64_t C) {
#pragma omp parallel for schedule(static)
  for (int64_t blk = 0; blk < (P + CHUNK - 1) / CHUNK; ++blk) {
    int64_t end = (blk + 1) * CHUNK < P ? (blk + 1) * CHUNK : P;
    for (int64_t cb = 0; cb < C; cb += V) {
      vf sc = ld(scale + cb), sh = ld(shift + cb), kv = ld(k1 + cb), av = ld(a + cb), bv = ld(b + cb);
      vf zero = {0};
      for (int64_t i = blk * CHUNK; i < end; ++i) {
        vf dv = ld(d + i * C + cb), gv = ld(g + i * C + cb);
        vf gy = where(ld(x + i * C + cb) >= dv * sc + sh, zero, gv);
        st(gx + i * C + cb, gv - gy);
        st(gd + i * C + cb, kv * gy + av * dv + bv);
      }
    }
  }
}

/* Backward pass 3, the depthwise convolution's: gx += transposed conv of gd (flipped taps);
   gw9 = per tap, sum over pixels of x[p + tap] * gd[p]. */
void frelu_backward_conv(const float *x, const float *w9, const float *gd, float *gx, double *gw9,
                         int64_t N, int64_t H, int64_t W, int64_t C) {
  memset(gw9, 0, sizeof(double) * 9 * C);
  float *flip = malloc(sizeof(float) * 9 * C);
  for (int t = 0; t < 9; ++t) memcpy(flip + t * C, w9 + (8 - t) * C, sizeof(float) * C);
#pragma omp parallel
  {
    double *acc = calloc(9 * C, sizeof(double));
    const float *grows[3], *xrows[3];
#pragma omp for schedule(static)
    for (int64_t r = 0; r < N * H; ++r) {
      row_ptrs(gd, r / H, r % H, H, W, C, grows);
      row_ptrs(x, r / H, r % H, H, W, C, xrows);
      const float *gh = gd + r * W * C;
      for (int64_t cb = 0; cb < C; cb += V) {
        conv_row(grows, flip, W, C, cb, gx + r * W * C, 1, NULL, NULL);
        vf wa[9] = {{0}};
        for (int64_t w = 0; w < W; ++w) {
          vf gv = ld(gh + w * C + cb);
          for (int di = 0; di < 3; ++di) {
            const float *xr = xrows[di];
            if (!xr) continue;
            if (w > 0) wa[di * 3] += ld(xr + (w - 1) * C + cb) * gv;
            wa[di * 3 + 1] += ld(xr + w * C + cb) * gv;
            if (w + 1 < W) wa[di * 3 + 2] += ld(xr + (w + 1) * C + cb) * gv;
          }
        }
        for (int t = 0; t < 9; ++t)
          for (int k = 0; k < V; ++k) acc[t * C + cb + k] += wa[t][k];
      }
    }
#pragma omp critical
    add_into(gw9, acc, 9 * C);
    free(acc);
  }
  free(flip);
}
