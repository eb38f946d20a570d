/*
 * deeparch.layers._convpool: convolution -> max-pool -> ReLU [-> dropout] as one pass.
 *
 * Built at install time as an optional extension (setup.py); deeparch.layers.fast falls
 * back to its PyTorch formulation when it is missing. Only float32, contiguous buffers.
 *
 * Why a kernel of our own: for a first layer with one or two input channels (fashion_cnn:
 * 1 -> 32 maps, 3x3, then a 2x2 max-pool) the arithmetic is tiny (10 multiply-adds per
 * output) but the convolution's output is large (22 MB per batch of 256) and every
 * library formulation writes it to memory, reads it back to pool it, and in the backward
 * pass zero-fills and scatters a gradient of the same size. Here each pooling window's
 * conv outputs live in registers: computed, compared, and only the pooled output and the
 * index of the winning window position (one byte) are stored: the map never exists.
 *
 * Layouts (N samples, Cin input channels, C output channels, T = Cin*KH*KW taps):
 *   x      N x Cin x H x W            (NCHW)
 *   wt     T x C                      (the weight transposed: tap-major, channel inner)
 *   bias   C or NULL
 *   dropout (seed, thr, scale): output element e is kept iff the 16-bit lane e % 4 of
 *          splitmix64(seed, e / 4) is >= thr, and kept values are scaled by `scale`;
 *          thr = 0 means no dropout. A counter-based generator: the backward pass
 *          recomputes the mask instead of storing it, and threads draw independently.
 *   out    N x HP x WP x C            (channels-last)
 *   arg    N x HP x WP x C uint8      (winning position in the pool window, row-major;
 *                                      255 where the maximum is <= 0: ReLU's zero gradient)
 * Semantics follow PyTorch: the first maximum of a window wins, NaN wins and propagates,
 * ReLU's gradient at 0 is 0.
 *
 * Work is split by samples over `threads` threads - PyTorch's own OpenMP threads when
 * deeparch found its runtime (set_openmp), else POSIX threads of ours; the backward pass
 * keeps one weight-gradient accumulator per thread, summed by the caller (deterministic
 * for a given thread count).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    /* geometry */
    Py_ssize_t n, cin, h, w, c, kh, kw, sh, sw, ph, pw, dh, dw;
    Py_ssize_t ho, wo, pkh, pkw, psh, psw, hp, wp;
    /* buffers */
    const float *x, *wt, *bias, *g;
    uint64_t seed;                      /* dropout: see above */
    uint32_t thr;
    float scale;
    float *out, *gx, *gw, *gb;          /* gw, gb: threads x (T*C), threads x C */
    uint8_t *arg;
    Py_ssize_t n0, n1;                  /* this thread's samples */
    int tid;
    int status;
} Job;

#if defined(__GNUC__) && defined(__x86_64__) && !defined(__clang__)
#define CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define CLONES
#endif
#define INLINE static inline __attribute__((always_inline))

/* the input values under every tap for the conv output at (oh, ow); 0 outside.
 * off[t] is tap t's offset from the window's top-left input pixel; a window that lies
 * wholly inside the input (always, without padding) takes the fast path */
INLINE void gather(const Job *j, const float *xn, const Py_ssize_t *off, Py_ssize_t oh,
                   Py_ssize_t ow, float *xv, Py_ssize_t *pos)
{
    const Py_ssize_t T = j->cin * j->kh * j->kw;
    const Py_ssize_t ih0 = oh * j->sh - j->ph, iw0 = ow * j->sw - j->pw;
    if (ih0 >= 0 && iw0 >= 0 && ih0 + (j->kh - 1) * j->dh < j->h &&
        iw0 + (j->kw - 1) * j->dw < j->w) {
        const Py_ssize_t base = ih0 * j->w + iw0;
        for (Py_ssize_t t = 0; t < T; t++) xv[t] = xn[base + off[t]];
        if (pos)
            for (Py_ssize_t t = 0; t < T; t++) pos[t] = base + off[t];
        return;
    }
    Py_ssize_t t = 0;
    for (Py_ssize_t ci = 0; ci < j->cin; ci++)
        for (Py_ssize_t u = 0; u < j->kh; u++) {
            Py_ssize_t ih = ih0 + u * j->dh;
            for (Py_ssize_t v = 0; v < j->kw; v++, t++) {
                Py_ssize_t iw = iw0 + v * j->dw;
                const int in = ih >= 0 && ih < j->h && iw >= 0 && iw < j->w;
                const Py_ssize_t p = (ci * j->h + ih) * j->w + iw;
                xv[t] = in ? xn[p] : 0.0f;
                if (pos) pos[t] = in ? p : -1;
            }
        }
}

/* ---------------------------------------------------------------- vector path
 * Channels in blocks of 8 floats (GCC/Clang vector extensions: AVX on x86-64-v3, two SSE
 * or NEON registers elsewhere), BW = 1 or 2 blocks at a time, and the pooling window's
 * conv positions 4 at a time: 4 x BW independent accumulators, so that the multiply-adds
 * of one position do not wait for each other. Fixed-size register arrays matter: with
 * arrays sized by a runtime count GCC kept the accumulators on the stack (a first
 * version, with per-channel scalar compares, ran 2-3x slower). */
typedef float v8f __attribute__((vector_size(32)));
typedef int32_t v8i __attribute__((vector_size(32)));
typedef uint8_t v8u8 __attribute__((vector_size(8)));
#define KC 4                                   /* window positions per pass */
#define BWMAX 2                                /* channel blocks per pass, at most */

INLINE v8f vload(const float *p) { v8f v; memcpy(&v, p, sizeof v); return v; }
INLINE void vstore(float *p, v8f v) { memcpy(p, &v, sizeof v); }
INLINE v8i vlive(v8f a) { return a > (v8f){0}; }
INLINE v8f vselect(v8i mask, v8f a, v8f b)            /* mask ? a : b, lane by lane */
{
    return (v8f)(((v8i)a & mask) | ((v8i)b & ~mask));
}

/* ---------------------------------------------------------------- dropout mask
 * splitmix64 (Steele, Lea & Flood 2014) as a counter-based generator: word w of a call's
 * stream is mix(seed + (w + 1) * golden). Four 16-bit lanes per word, one per element. */
#define GOLDEN 0x9E3779B97F4A7C15ULL
INLINE uint64_t mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}
INLINE uint32_t lane16(const Job *j, Py_ssize_t e)
{
    const uint64_t h = mix64(j->seed + ((uint64_t)(e >> 2) + 1) * GOLDEN);
    return (uint32_t)(h >> (16 * (e & 3))) & 0xFFFFu;
}
INLINE float drop1(const Job *j, Py_ssize_t e) { return lane16(j, e) >= j->thr ? j->scale : 0.0f; }
/* the multipliers (0 or scale) of elements e .. e+7, e a multiple of 4 */
INLINE v8f drop8(const Job *j, Py_ssize_t e)
{
    const uint64_t h0 = mix64(j->seed + ((uint64_t)(e >> 2) + 1) * GOLDEN);
    const uint64_t h1 = mix64(j->seed + ((uint64_t)(e >> 2) + 2) * GOLDEN);
    const v8i lanes = {(int32_t)(h0 & 0xFFFF), (int32_t)((h0 >> 16) & 0xFFFF),
                       (int32_t)((h0 >> 32) & 0xFFFF), (int32_t)(h0 >> 48),
                       (int32_t)(h1 & 0xFFFF), (int32_t)((h1 >> 16) & 0xFFFF),
                       (int32_t)((h1 >> 32) & 0xFFFF), (int32_t)(h1 >> 48)};
    const v8i keep = lanes >= (int32_t)j->thr;
    return (v8f)(keep & (v8i)((v8f){0} + j->scale));
}

/* the tap values of all K window positions of pooled output (i, q) into xv[k * T + t]
 * (rows K..KP-1 stay zero) and, when pos is given, their input offsets */
INLINE void gather_window(const Job *j, const float *xn, const Py_ssize_t *off,
                          Py_ssize_t i, Py_ssize_t q, float *xv, Py_ssize_t *pos)
{
    const Py_ssize_t T = j->cin * j->kh * j->kw;
    for (Py_ssize_t a = 0, k = 0; a < j->pkh; a++)
        for (Py_ssize_t e = 0; e < j->pkw; e++, k++)
            gather(j, xn, off, i * j->psh + a, q * j->psw + e, xv + k * T,
                   pos ? pos + k * T : NULL);
}

/* conv rows oh0 .. oh0+R-1 in im2col form, tap-major: rows[(r * T + t) * Wo + ow] is
 * tap t's input value for conv output (oh0 + r, ow). With a horizontal stride of 1 each
 * (row, tap) is one contiguous copy of an input row segment, so the inner loops below
 * read taps at fixed strides instead of gathering scattered pixels per output */
INLINE void im2row(const Job *j, const float *xn, Py_ssize_t oh0, Py_ssize_t R, float *rows)
{
    const Py_ssize_t T = j->cin * j->kh * j->kw, Wo = j->wo;
    for (Py_ssize_t r = 0; r < R; r++) {
        const Py_ssize_t oh = oh0 + r;
        Py_ssize_t t = 0;
        for (Py_ssize_t ci = 0; ci < j->cin; ci++)
            for (Py_ssize_t u = 0; u < j->kh; u++) {
                const Py_ssize_t ih = oh * j->sh - j->ph + u * j->dh;
                const float *src = xn + (ci * j->h + ih) * j->w;
                for (Py_ssize_t v = 0; v < j->kw; v++, t++) {
                    float *dst = rows + (r * T + t) * Wo;
                    const Py_ssize_t shift = v * j->dw - j->pw;   /* iw = ow * sw + shift */
                    if (ih < 0 || ih >= j->h) {
                        memset(dst, 0, sizeof(float) * (size_t)Wo);
                    } else if (j->sw == 1) {
                        Py_ssize_t lo = shift < 0 ? -shift : 0;
                        Py_ssize_t hi = j->w - shift < Wo ? j->w - shift : Wo;
                        if (lo > Wo) lo = Wo;
                        if (hi < lo) hi = lo;
                        memset(dst, 0, sizeof(float) * (size_t)lo);
                        memcpy(dst + lo, src + lo + shift, sizeof(float) * (size_t)(hi - lo));
                        memset(dst + hi, 0, sizeof(float) * (size_t)(Wo - hi));
                    } else {
                        for (Py_ssize_t ow = 0; ow < Wo; ow++) {
                            const Py_ssize_t iw = ow * j->sw + shift;
                            dst[ow] = (iw >= 0 && iw < j->w) ? src[iw] : 0.0f;
                        }
                    }
                }
            }
    }
}

/* where the KC window positions k0 .. k0+KC-1 of pooled column q start in im2row's rows;
 * woff[k] (scratch) is position k's offset for column 0, positions past K repeating the
 * last one (computed, never used). (Computed here with k / pkw and k % pkw, the two
 * integer divisions per position made the forward pass ~10% slower.) */
INLINE void window_bases(const Job *j, const float *rows, const Py_ssize_t *woff,
                         Py_ssize_t q, Py_ssize_t k0, const float **base)
{
    for (int kk = 0; kk < KC; kk++) base[kk] = rows + woff[k0 + kk] + q * j->psw;
}

INLINE void forward_vec(Job *j, const int BW, float *rows, const Py_ssize_t *woff)
{
    const Py_ssize_t C = j->c, T = j->cin * j->kh * j->kw, L = j->hp * j->wp;
    const Py_ssize_t K = j->pkh * j->pkw, plane = j->cin * j->h * j->w;
    const float *wt = j->wt;
    const v8f ninf = (v8f){0} - INFINITY, zero = (v8f){0}, qnan = (v8f){0} + NAN;
    const Py_ssize_t Wo = j->wo;
    for (Py_ssize_t n = j->n0; n < j->n1; n++) {
        const float *xn = j->x + n * plane;
        for (Py_ssize_t i = 0; i < j->hp; i++) {
            im2row(j, xn, i * j->psh, j->pkh, rows);
            for (Py_ssize_t q = 0; q < j->wp; q++) {
                const Py_ssize_t o = (n * L + i * j->wp + q) * C;
                for (Py_ssize_t c0 = 0; c0 < C; c0 += 8 * BW) {
                    v8f best[BWMAX], bias[BWMAX], acc[KC][BWMAX];
                    v8i win[BWMAX], nan[BWMAX];
                    for (int b = 0; b < BW; b++) {
                        best[b] = ninf;
                        win[b] = (v8i){0};
                        nan[b] = (v8i){0};
                        bias[b] = j->bias ? vload(j->bias + c0 + 8 * b) : zero;
                    }
                    for (Py_ssize_t k0 = 0; k0 < K; k0 += KC) {
                        const float *base[KC];
                        window_bases(j, rows, woff, q, k0, base);
                        for (int kk = 0; kk < KC; kk++)
                            for (int b = 0; b < BW; b++) acc[kk][b] = bias[b];
                        for (Py_ssize_t t = 0; t < T; t++) {
                            v8f w[BWMAX];
                            for (int b = 0; b < BW; b++) w[b] = vload(wt + t * C + c0 + 8 * b);
                            for (int kk = 0; kk < KC; kk++) {
                                const float x = base[kk][t * Wo];
                                for (int b = 0; b < BW; b++) acc[kk][b] += x * w[b];
                            }
                        }
                        for (int kk = 0; kk < KC && k0 + kk < K; kk++) {
                            const v8i k = (v8i){0} + (int32_t)(k0 + kk);
                            for (int b = 0; b < BW; b++) {
                                /* strictly greater: the first maximum wins, as PyTorch */
                                const v8i take = acc[kk][b] > best[b];
                                best[b] = vselect(take, acc[kk][b], best[b]);
                                win[b] = (k & take) | (win[b] & ~take);
                                nan[b] |= acc[kk][b] != acc[kk][b];
                            }
                        }
                    }
                    for (int b = 0; b < BW; b++) {
                        /* ReLU after the max (exact: ReLU is monotone); a NaN anywhere in
                         * the window gives NaN, as PyTorch's max-pool does */
                        const Py_ssize_t oc = o + c0 + 8 * b;
                        const v8i live = vlive(best[b]) | nan[b];
                        v8f y = vselect(nan[b], qnan, vselect(live, best[b], zero));
                        if (j->thr) y *= drop8(j, oc);
                        vstore(j->out + oc, y);
                        if (j->arg) {
                            const v8i w = (win[b] & live) | (((v8i){0} + 255) & ~live);
                            const v8u8 w8 = __builtin_convertvector(w, v8u8);
                            memcpy(j->arg + oc, &w8, sizeof w8);
                        }
                    }
                }
            }
        }
    }
}

INLINE void backward_vec(Job *j, const int BW, float *rows, const Py_ssize_t *woff,
                         float *xv, Py_ssize_t *pos, const Py_ssize_t *off, float *ga)
{
    const Py_ssize_t C = j->c, T = j->cin * j->kh * j->kw, L = j->hp * j->wp;
    const Py_ssize_t K = j->pkh * j->pkw, plane = j->cin * j->h * j->w;
    float *gw = j->gw ? j->gw + (Py_ssize_t)j->tid * T * C : NULL;
    float *gb = j->gb ? j->gb + (Py_ssize_t)j->tid * C : NULL;
    const float *wt = j->wt;
    const v8f zero = (v8f){0};
    const Py_ssize_t Wo = j->wo;
    for (Py_ssize_t n = j->n0; n < j->n1; n++) {
        const float *xn = j->x + n * plane;
        float *gxn = j->gx ? j->gx + n * plane : NULL;
        for (Py_ssize_t i = 0; i < j->hp; i++) {
            if (gw) im2row(j, xn, i * j->psh, j->pkh, rows);
            for (Py_ssize_t q = 0; q < j->wp; q++) {
                const Py_ssize_t o = (n * L + i * j->wp + q) * C;
                /* ga[k * C + c]: the gradient reaching window position k of channel c */
                int any = 0;
                for (Py_ssize_t c = 0; c < C; c += 8) {
                    v8u8 w8;
                    memcpy(&w8, j->arg + o + c, sizeof w8);
                    const v8i win = __builtin_convertvector(w8, v8i);
                    v8f g = vselect(win != 255, vload(j->g + o + c), zero);
                    if (j->thr) g *= drop8(j, o + c);
                    if (gb) vstore(gb + c, vload(gb + c) + g);
                    for (Py_ssize_t k = 0; k < K; k++)
                        vstore(ga + k * C + c, vselect(win == (int32_t)k, g, zero));
                    v8i nz = g != zero;
                    for (int l = 0; l < 8; l++) any |= nz[l];
                }
                if (!any) continue;
                if (gw)
                    for (Py_ssize_t k0 = 0; k0 < K; k0 += KC) {
                        /* rows of ga past K are zero: the repeated last position adds 0 */
                        const float *base[KC];
                        window_bases(j, rows, woff, q, k0, base);
                        for (Py_ssize_t c0 = 0; c0 < C; c0 += 8 * BW) {
                            v8f gak[KC][BWMAX];
                            for (int kk = 0; kk < KC; kk++)
                                for (int b = 0; b < BW; b++)
                                    gak[kk][b] = vload(ga + (k0 + kk) * C + c0 + 8 * b);
                            for (Py_ssize_t t = 0; t < T; t++) {
                                float *grow = gw + t * C + c0;
                                v8f acc[BWMAX];
                                for (int b = 0; b < BW; b++) acc[b] = vload(grow + 8 * b);
                                for (int kk = 0; kk < KC; kk++) {
                                    const float x = base[kk][t * Wo];
                                    for (int b = 0; b < BW; b++) acc[b] += x * gak[kk][b];
                                }
                                for (int b = 0; b < BW; b++) vstore(grow + 8 * b, acc[b]);
                            }
                        }
                    }
                if (gxn) gather_window(j, xn, off, i, q, xv, pos);
                if (gxn)
                    for (Py_ssize_t k = 0; k < K; k++)
                        for (Py_ssize_t t = 0; t < T; t++) {
                            const Py_ssize_t p = pos[k * T + t];
                            if (p < 0) continue;
                            v8f s = zero;
                            for (Py_ssize_t c = 0; c < C; c += 8)
                                s += vload(wt + t * C + c) * vload(ga + k * C + c);
                            float sum = 0.0f;
                            for (int l = 0; l < 8; l++) sum += s[l];
                            gxn[p] += sum;
                        }
            }
        }
    }
}

/* ---------------------------------------------------------------- scalar path
 * Any channel count; the same arithmetic one channel at a time. */
INLINE void forward_scalar(Job *j, float *xv, const Py_ssize_t *off)
{
    const Py_ssize_t C = j->c, T = j->cin * j->kh * j->kw, L = j->hp * j->wp;
    const Py_ssize_t K = j->pkh * j->pkw, plane = j->cin * j->h * j->w;
    for (Py_ssize_t n = j->n0; n < j->n1; n++) {
        const float *xn = j->x + n * plane;
        for (Py_ssize_t i = 0; i < j->hp; i++)
            for (Py_ssize_t q = 0; q < j->wp; q++) {
                const Py_ssize_t o = (n * L + i * j->wp + q) * C;
                gather_window(j, xn, off, i, q, xv, NULL);       /* once for all channels */
                for (Py_ssize_t c = 0; c < C; c++) {
                    float best = -INFINITY;
                    int win = 0, nan = 0;
                    for (Py_ssize_t k = 0; k < K; k++) {
                        float acc = j->bias ? j->bias[c] : 0.0f;
                        for (Py_ssize_t t = 0; t < T; t++)
                            acc += xv[k * T + t] * j->wt[t * C + c];
                        if (acc > best) { best = acc; win = (int)k; }
                        nan |= acc != acc;
                    }
                    const int live = best > 0.0f || nan;
                    float y = nan ? NAN : (live ? best : 0.0f);
                    if (j->thr) y *= drop1(j, o + c);
                    j->out[o + c] = y;
                    if (j->arg) j->arg[o + c] = (uint8_t)(live ? win : 255);
                }
            }
    }
}

INLINE void backward_scalar(Job *j, float *xv, Py_ssize_t *pos, const Py_ssize_t *off)
{
    const Py_ssize_t C = j->c, T = j->cin * j->kh * j->kw, L = j->hp * j->wp;
    const Py_ssize_t plane = j->cin * j->h * j->w;
    float *gw = j->gw ? j->gw + (Py_ssize_t)j->tid * T * C : NULL;
    float *gb = j->gb ? j->gb + (Py_ssize_t)j->tid * C : NULL;
    for (Py_ssize_t n = j->n0; n < j->n1; n++) {
        const float *xn = j->x + n * plane;
        float *gxn = j->gx ? j->gx + n * plane : NULL;
        for (Py_ssize_t i = 0; i < j->hp; i++)
            for (Py_ssize_t q = 0; q < j->wp; q++) {
                const Py_ssize_t o = (n * L + i * j->wp + q) * C;
                for (Py_ssize_t c = 0; c < C; c++) {
                    const int win = j->arg[o + c];
                    if (win == 255) continue;
                    float g = j->g[o + c];
                    if (j->thr) g *= drop1(j, o + c);
                    if (gb) gb[c] += g;
                    gather(j, xn, off, i * j->psh + win / j->pkw, q * j->psw + win % j->pkw,
                           xv, pos);
                    for (Py_ssize_t t = 0; t < T; t++) {
                        if (gw) gw[t * C + c] += xv[t] * g;
                        if (gxn && pos[t] >= 0) gxn[pos[t]] += j->wt[t * C + c] * g;
                    }
                }
            }
    }
}

/* per-thread scratch: every tap's offset from a window's top-left input pixel; the tap
 * values of all window positions (rounded up to KC positions, zero-filled) and their input
 * offsets; the per-position gradients of the backward pass */
typedef struct { float *xv, *ga, *rows; Py_ssize_t *pos, *off, *woff; } Scratch;

static int scratch(const Job *j, Scratch *s)
{
    const Py_ssize_t T = j->cin * j->kh * j->kw, K = j->pkh * j->pkw;
    const Py_ssize_t KP = (K + KC - 1) / KC * KC;
    s->xv = calloc((size_t)(KP * T), sizeof(float));
    s->pos = calloc((size_t)(KP * T), sizeof(Py_ssize_t));
    s->off = malloc(sizeof(Py_ssize_t) * (size_t)T);
    s->ga = calloc((size_t)(KP * j->c), sizeof(float));
    s->rows = malloc(sizeof(float) * (size_t)(j->pkh * T * j->wo));
    s->woff = malloc(sizeof(Py_ssize_t) * (size_t)KP);
    if (!s->xv || !s->pos || !s->off || !s->ga || !s->rows || !s->woff) {
        free(s->xv); free(s->pos); free(s->off); free(s->ga); free(s->rows); free(s->woff);
        return -1;
    }
    for (Py_ssize_t k = 0; k < KP; k++) {
        const Py_ssize_t kc = k < K ? k : K - 1;
        s->woff[k] = (kc / j->pkw) * T * j->wo + kc % j->pkw;
    }
    Py_ssize_t t = 0;
    for (Py_ssize_t ci = 0; ci < j->cin; ci++)
        for (Py_ssize_t u = 0; u < j->kh; u++)
            for (Py_ssize_t v = 0; v < j->kw; v++, t++)
                s->off[t] = (ci * j->h + u * j->dh) * j->w + v * j->dw;
    return 0;
}

static void release(Scratch *s)
{
    free(s->xv); free(s->pos); free(s->off); free(s->ga); free(s->rows); free(s->woff);
}

CLONES static void forward_job(Job *j)
{
    Scratch s;
    if (scratch(j, &s)) { j->status = -1; return; }
    if (j->c % 16 == 0) forward_vec(j, 2, s.rows, s.woff);
    else if (j->c % 8 == 0) forward_vec(j, 1, s.rows, s.woff);
    else forward_scalar(j, s.xv, s.off);
    release(&s);
}

CLONES static void backward_job(Job *j)
{
    Scratch s;
    if (scratch(j, &s)) { j->status = -1; return; }
    if (j->c % 16 == 0) backward_vec(j, 2, s.rows, s.woff, s.xv, s.pos, s.off, s.ga);
    else if (j->c % 8 == 0) backward_vec(j, 1, s.rows, s.woff, s.xv, s.pos, s.off, s.ga);
    else backward_scalar(j, s.xv, s.pos, s.off);
    release(&s);
}

static void *forward_thread(void *p) { forward_job((Job *)p); return NULL; }
static void *backward_thread(void *p) { backward_job((Job *)p); return NULL; }

/* PyTorch's own OpenMP runtime, when deeparch found it (set_openmp): the kernel then runs
 * on the threads of torch's intra-op pool, which would otherwise spin or sleep beside
 * threads of ours on the same cores (measured: the kernel took 2x longer inside a training
 * step than alone when it started threads of its own) */
typedef void (*gomp_parallel_fn)(void (*)(void *), void *, unsigned, unsigned);
typedef int (*omp_int_fn)(void);
static gomp_parallel_fn gomp_parallel = NULL;
static omp_int_fn omp_thread_num = NULL, omp_num_threads = NULL;

typedef struct { Job *jobs; int count; void *(*fn)(void *); } Team;

static void team_body(void *p)
{
    Team *team = (Team *)p;
    const int me = omp_thread_num(), size = omp_num_threads();
    for (int k = me; k < team->count; k += size) team->fn(&team->jobs[k]);
}

/* split samples over threads; thread 0 is the caller */
static int run_jobs(const Job *proto, int threads, void *(*fn)(void *))
{
    Job jobs[64];
    pthread_t tids[64];
    int started[64] = {0};
    if (threads < 1) threads = 1;
    if (threads > 64) threads = 64;
    if (threads > proto->n) threads = (int)(proto->n > 0 ? proto->n : 1);
    for (int t = 0; t < threads; t++) {
        jobs[t] = *proto;
        jobs[t].tid = t;
        jobs[t].n0 = proto->n * t / threads;
        jobs[t].n1 = proto->n * (t + 1) / threads;
        jobs[t].status = 0;
    }
    int status = 0;
    if (threads == 1) {
        fn(&jobs[0]);
    } else if (gomp_parallel) {
        Team team = {jobs, threads, fn};
        gomp_parallel(team_body, &team, (unsigned)threads, 0);
    } else {
        for (int t = 1; t < threads; t++)
            started[t] = pthread_create(&tids[t], NULL, fn, &jobs[t]) == 0;
        fn(&jobs[0]);
        /* a thread that could not start runs here, after our own share */
        for (int t = 1; t < threads; t++) {
            if (started[t]) pthread_join(tids[t], NULL);
            else fn(&jobs[t]);
        }
    }
    for (int t = 0; t < threads; t++) status |= jobs[t].status;
    return status;
}

static int parse_geometry(PyObject *geom, Job *j)
{
    Py_ssize_t *f[] = {&j->n, &j->cin, &j->h, &j->w, &j->c, &j->kh, &j->kw, &j->sh, &j->sw,
                       &j->ph, &j->pw, &j->dh, &j->dw, &j->pkh, &j->pkw, &j->psh, &j->psw};
    const Py_ssize_t nf = (Py_ssize_t)(sizeof f / sizeof f[0]);
    if (!PyTuple_Check(geom) || PyTuple_GET_SIZE(geom) != nf) {
        PyErr_SetString(PyExc_ValueError, "geometry must be a tuple of 17 integers");
        return -1;
    }
    for (Py_ssize_t i = 0; i < nf; i++) {
        *f[i] = PyLong_AsSsize_t(PyTuple_GET_ITEM(geom, i));
        if (*f[i] == -1 && PyErr_Occurred()) return -1;
    }
    if (j->n < 0 || j->cin < 1 || j->c < 1 || j->kh < 1 || j->kw < 1 || j->sh < 1 ||
        j->sw < 1 || j->dh < 1 || j->dw < 1 || j->ph < 0 || j->pw < 0 || j->pkh < 1 ||
        j->pkw < 1 || j->psh < 1 || j->psw < 1 || j->pkh * j->pkw > 255) {
        PyErr_SetString(PyExc_ValueError, "invalid convolution or pooling geometry");
        return -1;
    }
    j->ho = (j->h + 2 * j->ph - j->dh * (j->kh - 1) - 1) / j->sh + 1;
    j->wo = (j->w + 2 * j->pw - j->dw * (j->kw - 1) - 1) / j->sw + 1;
    if (j->ho < j->pkh || j->wo < j->pkw) {
        PyErr_SetString(PyExc_ValueError, "the pooling window is larger than the conv output");
        return -1;
    }
    j->hp = (j->ho - j->pkh) / j->psh + 1;
    j->wp = (j->wo - j->pkw) / j->psw + 1;
    return 0;
}

#define PTR(v) ((void *)(uintptr_t)(v))

/* dropout arguments: (seed, thr, scale), thr in [0, 65536) */
static int parse_dropout(PyObject *drop, Job *j)
{
    unsigned long long seed;
    unsigned int thr;
    float scale;
    if (!PyArg_ParseTuple(drop, "KIf", &seed, &thr, &scale)) return -1;
    if (thr > 65535) {
        PyErr_SetString(PyExc_ValueError, "dropout threshold must be < 65536");
        return -1;
    }
    j->seed = seed; j->thr = thr; j->scale = scale;
    return 0;
}

/* forward(geometry, dropout, x, wt, bias, out, arg, threads); pointers as integers, 0 = NULL */
static PyObject *py_forward(PyObject *self, PyObject *args)
{
    PyObject *geom, *drop;
    unsigned long long x, wt, bias, out, arg;
    int threads, status;
    Job j;
    memset(&j, 0, sizeof j);
    if (!PyArg_ParseTuple(args, "OO!KKKKKi", &geom, &PyTuple_Type, &drop, &x, &wt, &bias, &out,
                          &arg, &threads))
        return NULL;
    if (parse_geometry(geom, &j) || parse_dropout(drop, &j)) return NULL;
    if (!x || !wt || !out) {
        PyErr_SetString(PyExc_ValueError, "x, wt and out are required");
        return NULL;
    }
    j.x = PTR(x); j.wt = PTR(wt); j.bias = PTR(bias); j.out = PTR(out); j.arg = PTR(arg);
    Py_BEGIN_ALLOW_THREADS
    status = run_jobs(&j, threads, forward_thread);
    Py_END_ALLOW_THREADS
    if (status) return PyErr_NoMemory();
    Py_RETURN_NONE;
}

/* backward(geometry, dropout, x, wt, g, arg, gx, gw, gb, threads): the forward's dropout;
 * gw is threads x T x C and gb threads x C, zero-filled by the caller (one partial sum per
 * thread); gx N x Cin x H x W zero-filled, or 0 when the input needs no gradient */
static PyObject *py_backward(PyObject *self, PyObject *args)
{
    PyObject *geom, *drop;
    unsigned long long x, wt, g, arg, gx, gw, gb;
    int threads, status;
    Job j;
    memset(&j, 0, sizeof j);
    if (!PyArg_ParseTuple(args, "OO!KKKKKKKi", &geom, &PyTuple_Type, &drop, &x, &wt, &g, &arg,
                          &gx, &gw, &gb, &threads))
        return NULL;
    if (parse_geometry(geom, &j) || parse_dropout(drop, &j)) return NULL;
    if (!x || !wt || !g || !arg) {
        PyErr_SetString(PyExc_ValueError, "x, wt, g and arg are required");
        return NULL;
    }
    j.x = PTR(x); j.wt = PTR(wt); j.g = PTR(g); j.arg = PTR(arg);
    j.gx = PTR(gx); j.gw = PTR(gw); j.gb = PTR(gb);
    Py_BEGIN_ALLOW_THREADS
    status = run_jobs(&j, threads, backward_thread);
    Py_END_ALLOW_THREADS
    if (status) return PyErr_NoMemory();
    Py_RETURN_NONE;
}

/* set_openmp(GOMP_parallel, omp_get_thread_num, omp_get_num_threads): addresses in the
 * OpenMP runtime PyTorch uses (all three, or 0, 0, 0 for POSIX threads of our own) */
static PyObject *py_set_openmp(PyObject *self, PyObject *args)
{
    unsigned long long par, num, size;
    if (!PyArg_ParseTuple(args, "KKK", &par, &num, &size)) return NULL;
    if (par && num && size) {
        gomp_parallel = (gomp_parallel_fn)PTR(par);
        omp_thread_num = (omp_int_fn)PTR(num);
        omp_num_threads = (omp_int_fn)PTR(size);
    } else {
        gomp_parallel = NULL;
        omp_thread_num = omp_num_threads = NULL;
    }
    return PyBool_FromLong(gomp_parallel != NULL);
}

/* the output geometry (hp, wp) for a geometry tuple, or ValueError */
static PyObject *py_output_size(PyObject *self, PyObject *args)
{
    PyObject *geom;
    Job j;
    memset(&j, 0, sizeof j);
    if (!PyArg_ParseTuple(args, "O", &geom)) return NULL;
    if (parse_geometry(geom, &j)) return NULL;
    return Py_BuildValue("nn", j.hp, j.wp);
}

static PyMethodDef methods[] = {
    {"forward", py_forward, METH_VARARGS, "Fused conv -> max-pool -> ReLU [-> dropout] forward."},
    {"backward", py_backward, METH_VARARGS, "Its gradients (weight, bias, input)."},
    {"output_size", py_output_size, METH_VARARGS, "(hp, wp) of a geometry tuple."},
    {"set_openmp", py_set_openmp, METH_VARARGS, "Run on PyTorch's OpenMP threads."},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_convpool",
    "Fused convolution -> max-pool -> ReLU kernels (see deeparch.layers.fast).", -1, methods};

PyMODINIT_FUNC PyInit__convpool(void) { return PyModule_Create(&module); }
