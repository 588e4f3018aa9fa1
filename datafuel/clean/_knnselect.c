/*
 * datafuel.clean._knnselect: the kk smallest quotients num / cnt of each row, without the GIL.
 *
 * The screening step of datafuel.clean.KNNImputer. Written by hand because the library
 * route costs four passes over a block of receivers x donors (divide, NaN to inf, a
 * top-k that reads every entry twice, a gather): ~3.5 ms per 256 x 5000 float32 block,
 * twice the matrix product that made it. This is one pass that compares each entry
 * against the row's current kk-th best (a multiplication, no division, 16 entries at a
 * time so that the compiler vectorizes it) and touches a heap only for the few entries
 * that pass: ~0.5 ms for the same block.
 *
 * update(num, cnt, heap_v, heap_i, offset)
 *     num, cnt: C-contiguous 2-D buffers of shape (b, m) and the same format, float32
 *     ('f') or float64 ('d'): the numerators and the counts of the distances of b
 *     receivers to m donors. heap_v: a writable C-contiguous (b, kk) buffer of num's
 *     format; heap_i: a writable C-contiguous (b, kk) int64 buffer. Each row of the pair
 *     holds the kk smallest quotients seen so far and their donors (start with +inf and
 *     -1), in no order except that the largest is first; update adds the donors of this
 *     block, as column index + offset. A quotient that is NaN (cnt 0: no coordinate in
 *     common) never enters. Returns None; raises ValueError or TypeError (naming what
 *     was seen) for anything else, before touching a buffer.
 *
 * exact(R, F, cand, out)
 *     The exact nan-euclidean quotients the re-rank needs, without gathering the
 *     candidates' rows into a (b, w, d) array first (that gather and the three passes
 *     over it were half of a block's time). R: (b, d) float64 receivers, F: (n, d)
 *     float64 donors, cand: (b, w) int64 donor rows, each in [0, n), out: writable (b, w)
 *     float64. out[i, j] = sum of (F[c] - R[i])**2 over the coordinates both have /
 *     their count (+inf where they have none), c = cand[i, j]. The sum is numpy's
 *     pairwise summation of the d squares with zeros where a coordinate is missing,
 *     so the result equals datafuel.clean._knn._exact_dist bit for bit (a test holds
 *     them to that). d is at most 8192. Raises ValueError for anything else, or an
 *     index out of range, before writing.
 *
 * rank(X, blk, F, P, cand, special, todo, bounds, means, out, unsafe, retry, k, distance)
 *     The exact re-rank and the imputation of one block of receivers, the rows blk
 *     (int64, 1 x b) of X (N x d float64), from donors F (n x d float64, P its presence,
 *     bool): each receiver's candidates (cand, b x w int64, -1 padding) and the special
 *     donors (1 x s int64), each once, ranked by their exact quotient (as exact computes
 *     it; ties by donor index). Each entry of todo (N x d bool) in the block is written
 *     to out (N x d float64): the mean (distance: the inverse-distance mean) of the
 *     first k ranked donors with its column, means[c] when none has it. bounds (4 x b
 *     float64) holds per receiver the screen's k-th value, the bound of its rounding,
 *     that of a float64 product, and the float64 product's error: an entry whose k-th
 *     donor is not nearer than the bound is marked in unsafe (b x d int8: 1, or 2 where
 *     the float64 bound would have held) and raises retry[0, i] (float64, as given) to
 *     k-th distance + 2 error (+inf without k donors). Written by hand because the
 *     numpy equivalent (gathers, a lexsort and masks over every candidate) was a
 *     quarter of a transform and held the GIL the other blocks' threads waited for.
 *     Everything is checked, indices included, before anything is written.
 *
 * Afterwards heap_v[r, 0] is the largest kept quotient (+inf while fewer than kk
 * finite quotients were seen), and every quotient left out, as fl(num / cnt), is at
 * least it: an entry is skipped only when num >= fl(fl(root * (1 +- 8u)) * cnt), which
 * implies fl(num / cnt) >= root for unit roundoff u (cnt >= 0; the sign widens the root).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <float.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

/* 32-byte vectors (GCC/clang extensions): SSE pairs on the baseline build, AVX2 registers
 * on the avx2 one */
typedef float vec_float __attribute__((vector_size(32)));
typedef double vec_double __attribute__((vector_size(32)));
typedef int32_t vmask_float __attribute__((vector_size(32)));
typedef int64_t vmask_double __attribute__((vector_size(32)));

/* One row's candidates: a buffer of up to 2 kk (value, index) pairs, of which the kk
 * smallest are kept by a quickselect whenever it fills (amortized O(1) per entry, and
 * far fewer mispredicted branches than a heap, which cost ~1.5 us per row at kk = 26). */
/* entry j of the row: into the buffer if its quotient beats the bound (a select when
 * the buffer is full, which tightens the bound). Inside row_T. */
#define PUSH_ENTRY(T, j)                                                                   \
    do {                                                                                   \
        T q_ = nr[j] / cr[j];                                                              \
        if (q_ < root) {                                                                   \
            bv[count] = q_;                                                                \
            bi[count++] = (int64_t)(j) + offset;                                           \
            if (count == 2 * kk) {                                                         \
                select_##T(bv, bi, count, kk);                                             \
                count = kk;                                                                \
                root = bv[kk - 1];                                                         \
                ts = widen_##T(root);                                                      \
            }                                                                              \
        }                                                                                  \
    } while (0)

#define ROW_SELECT(T, EPS, NEXTUP)                                                                 \
    /* the entries among the 16 at nr, cr with nr < ts * cr, as bits (0: none, the usual \
     * case, found with vector compares and one test) */                                  \
    static inline __attribute__((always_inline)) unsigned mask16_##T(const T *nr, const T *cr, \
                                                                    T ts)                  \
    {                                                                                      \
        enum { LANES = 32 / sizeof(T) };                                                   \
        vmask_##T mk[16 / LANES], acc = {0};                                               \
        for (int t = 0; t < 16 / LANES; t++) {                                             \
            vec_##T a, c;                                                                  \
            memcpy(&a, nr + t * LANES, 32);                                                \
            memcpy(&c, cr + t * LANES, 32);                                                \
            mk[t] = (vmask_##T)(a < ts * c);                                               \
            acc |= mk[t];                                                                  \
        }                                                                                  \
        uint64_t w[4];                                                                     \
        memcpy(w, &acc, 32);                                                               \
        if ((w[0] | w[1] | w[2] | w[3]) == 0)                                              \
            return 0;                                                                      \
        unsigned bits = 0;                                                                 \
        for (int t = 0; t < 16 / LANES; t++)                                               \
            for (int l = 0; l < LANES; l++)                                                \
                bits |= (unsigned)(mk[t][l] & 1) << (t * LANES + l);                       \
        return bits;                                                                       \
    }                                                                                      \
    /* reorder v[0..n) (with ix, unless NULL) so that v[0..kk) are the kk smallest, v[kk-1] largest */  \
    static void select_##T(T *v, int64_t *ix, Py_ssize_t n, Py_ssize_t kk)                 \
    {                                                                                      \
        Py_ssize_t lo = 0, hi = n - 1, want = kk - 1;                                      \
        while (lo < hi) {                                                                  \
            Py_ssize_t mid = lo + (hi - lo) / 2;                                           \
            T a = v[lo], b = v[mid], c = v[hi];                                            \
            T pivot = a < b ? (b < c ? b : (a < c ? c : a)) : (a < c ? a : (b < c ? c : b)); \
            Py_ssize_t i = lo, j = hi;                                                     \
            while (i <= j) {                                                               \
                while (v[i] < pivot)                                                       \
                    i++;                                                                   \
                while (pivot < v[j])                                                       \
                    j--;                                                                   \
                if (i <= j) {                                                              \
                    T tv = v[i];                                                           \
                    v[i] = v[j];                                                           \
                    v[j] = tv;                                                             \
                    if (ix != NULL) {                                                      \
                        int64_t ti = ix[i];                                                \
                        ix[i] = ix[j];                                                     \
                        ix[j] = ti;                                                        \
                    }                                                                      \
                    i++;                                                                   \
                    j--;                                                                   \
                }                                                                          \
            }                                                                              \
            if (want <= j)                                                                 \
                hi = j;                                                                    \
            else if (want >= i)                                                            \
                lo = i;                                                                    \
            else                                                                           \
                break;                                                                     \
        }                                                                                  \
        /* v[kk-1] is now the kk-th smallest and nothing before it is larger */            \
    }                                                                                      \
    /* Minima of disjoint groups of the row's quotients into gm; returns how many (0 when \
     * the row is too short for kk of them). A group is one SIMD lane across `per`         \
     * consecutive vectors (per = 16 on long rows, 4 on short ones): vertical vector       \
     * divisions and minima only. A NaN quotient (no coordinate in common) never counts. */\
    static inline __attribute__((always_inline)) Py_ssize_t group_mins_##T(                \
        const T *nr, const T *cr, Py_ssize_t m, Py_ssize_t kk, T *gm)                      \
    {                                                                                      \
        enum { LANES = 32 / sizeof(T) };                                                   \
        Py_ssize_t per = (m / (16 * LANES)) * LANES >= 2 * kk ? 16 : 4;                    \
        Py_ssize_t chunk = per * LANES, g = 0;                                             \
        if ((m / chunk) * LANES < kk)                                                      \
            return 0;                                                                      \
        for (Py_ssize_t j0 = 0; j0 + chunk <= m; j0 += chunk) {                            \
            vec_##T lo = (vec_##T){0} + (T)INFINITY;                                       \
            for (Py_ssize_t t = 0; t < per; t++) {                                         \
                vec_##T a, c;                                                              \
                memcpy(&a, nr + j0 + t * LANES, 32);                                       \
                memcpy(&c, cr + j0 + t * LANES, 32);                                       \
                vec_##T q = a / c;                                                         \
                vmask_##T lt = (vmask_##T)(q < lo);                                        \
                lo = (vec_##T)(((vmask_##T)q & lt) | ((vmask_##T)lo & ~lt));               \
            }                                                                              \
            memcpy(gm + g, &lo, 32);                                                       \
            g += LANES;                                                                    \
        }                                                                                  \
        return g;                                                                          \
    }                                                                                      \
    static inline T widen_##T(T root)                                                      \
    {                                                                                      \
        /* the root widened by 8 units of roundoff, away from the side of zero it is on */ \
        return root * (root >= 0 ? (T)1 + (T)4 * (EPS) : (T)1 - (T)4 * (EPS));             \
    }                                                                                      \
    static inline __attribute__((always_inline)) void row_##T(                             \
        const T *nr, const T *cr, T *v, int64_t *ix, Py_ssize_t m,                         \
                        Py_ssize_t kk, int64_t offset, T *bv, int64_t *bi, T *gm)          \
    {                                                                                      \
        Py_ssize_t count = 0;                                                              \
        for (Py_ssize_t e = 0; e < kk; e++)                                                \
            if (v[e] < (T)INFINITY) {                                                      \
                bv[count] = v[e];                                                          \
                bi[count++] = ix[e];                                                       \
            }                                                                              \
        T root = (T)INFINITY;                                                              \
        if (count == kk) {                                                                 \
            root = bv[0];                                                                  \
            for (Py_ssize_t e = 1; e < kk; e++)                                            \
                root = bv[e] > root ? bv[e] : root;                                        \
        }                                                                                  \
        if (count < kk) {                                                                  \
            /* A seed for the bound, so that the scan below admits ~kk entries, not the   \
             * kk ln(m / kk) of a bound that starts at +inf (later blocks of the row      \
             * start from the kept kk): the kk-th smallest of the minima of disjoint      \
             * groups of quotients. kk groups have a minimum at most that, so at least kk \
             * entries are: every one of them is taken (the seed is the next value up,    \
             * the bound being strict). */                                                \
            Py_ssize_t G = group_mins_##T(nr, cr, m, kk, gm);                              \
            if (G >= kk) {                                                                 \
                select_##T(gm, NULL, G, kk);                                               \
                T seed = NEXTUP((T)gm[kk - 1], (T)INFINITY);                               \
                root = seed < root ? seed : root;                                          \
            }                                                                              \
        }                                                                                  \
        T ts = widen_##T(root);                                                            \
        Py_ssize_t j0 = 0;                                                                 \
        for (; j0 + 16 <= m; j0 += 16) {                                                   \
            /* the lanes that pass, as bits: only those are looked at one by one */        \
            unsigned bits = mask16_##T(nr + j0, cr + j0, ts);                              \
            while (bits) {                                                                 \
                Py_ssize_t j = j0 + __builtin_ctz(bits);                                   \
                bits &= bits - 1;                                                          \
                PUSH_ENTRY(T, j);                                                          \
            }                                                                              \
        }                                                                                  \
        for (Py_ssize_t j = j0; j < m; j++)                                                \
            if (nr[j] < ts * cr[j])                                                        \
                PUSH_ENTRY(T, j);                                                          \
        if (count > kk) {                                                                  \
            select_##T(bv, bi, count, kk);                                                 \
            count = kk;                                                                    \
        }                                                                                  \
        /* write back: the largest kept first (+inf while fewer than kk) */                \
        Py_ssize_t top = 0;                                                                \
        for (Py_ssize_t e = 1; e < count; e++)                                             \
            top = bv[e] > bv[top] ? e : top;                                               \
        for (Py_ssize_t e = 0; e < kk; e++) {                                              \
            v[e] = e < count ? bv[e] : (T)INFINITY;                                        \
            ix[e] = e < count ? bi[e] : -1;                                                \
        }                                                                                  \
        Py_ssize_t first = count < kk ? count : top;                                       \
        T tv = v[0];                                                                       \
        v[0] = v[first];                                                                   \
        v[first] = tv;                                                                     \
        int64_t ti = ix[0];                                                                \
        ix[0] = ix[first];                                                                 \
        ix[first] = ti;                                                                    \
    }                                                                                      \
    __attribute__((target_clones("avx2", "default"))) static void update_##T(              \
        const T *num, const T *cnt, T *hv, int64_t *hi, Py_ssize_t b, Py_ssize_t m,        \
        Py_ssize_t kk, int64_t offset, T *bv, int64_t *bi, T *gm)                          \
    {                                                                                      \
        for (Py_ssize_t r = 0; r < b; r++)                                                 \
            row_##T(num + r * m, cnt + r * m, hv + r * kk, hi + r * kk, m, kk, offset, bv, \
                    bi, gm);                                                               \
    }                                                                                      \
    /* update from the partial product: each row's numerators and counts rebuilt from   \
     * ab + sd - (the F0**2 of its missing features) and cd - (their presence), in rn/rc */\
    __attribute__((target_clones("avx2", "default"))) static void partial_##T(             \
        const T *ab, const int64_t *miss, Py_ssize_t mw, const T *sd, const T *cd,         \
        const T *qt, const T *pt, Py_ssize_t n, T *hv, int64_t *hi, Py_ssize_t b,          \
        Py_ssize_t m, Py_ssize_t kk, int64_t offset, T *bv, int64_t *bi, T *gm, T *rn,     \
        T *rc)                                                                             \
    {                                                                                      \
        for (Py_ssize_t r = 0; r < b; r++) {                                               \
            const T *a = ab + r * m;                                                       \
            for (Py_ssize_t j = 0; j < m; j++) {                                           \
                rn[j] = a[j] + sd[offset + j];                                             \
                rc[j] = cd[offset + j];                                                    \
            }                                                                              \
            for (Py_ssize_t t = 0; t < mw; t++) {                                          \
                int64_t f = miss[r * mw + t];                                              \
                if (f < 0)                                                                 \
                    break;                                                                 \
                const T *q = qt + f * n + offset, *p = pt + f * n + offset;                \
                for (Py_ssize_t j = 0; j < m; j++) {                                       \
                    rn[j] -= q[j];                                                         \
                    rc[j] -= p[j];                                                         \
                }                                                                          \
            }                                                                              \
            /* no coordinate in common: 0 / 0, a NaN that never enters (the rebuilt      \
             * numerator is a rounding residue there, whose sign would give -inf) */      \
            for (Py_ssize_t j = 0; j < m; j++)                                             \
                rn[j] = rc[j] > 0 ? rn[j] : 0;                                             \
            row_##T(rn, rc, hv + r * kk, hi + r * kk, m, kk, offset, bv, bi, gm);          \
        }                                                                                  \
    }

ROW_SELECT(float, FLT_EPSILON, nextafterf)
ROW_SELECT(double, DBL_EPSILON, nextafter)

/* a C-contiguous 2-D buffer of the given item format; fills shape. -1 with an exception */
static int get2d(PyObject *obj, Py_buffer *view, int writable, const char *name,
                 Py_ssize_t *rows, Py_ssize_t *cols)
{
    int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(obj, view, flags) != 0) {
        PyErr_Clear();
        PyErr_Format(PyExc_TypeError, "%s must be a %sC-contiguous buffer", name,
                     writable ? "writable " : "");
        return -1;
    }
    if (view->ndim != 2) {
        PyErr_Format(PyExc_ValueError, "%s must be 2-D, got %d dimensions", name, view->ndim);
        PyBuffer_Release(view);
        return -1;
    }
    *rows = view->shape[0];
    *cols = view->shape[1];
    return 0;
}

/* the item format without a byte-order prefix of native order ('=', '@') */
static char fmt_char(const Py_buffer *view)
{
    const char *f = view->format ? view->format : "B";
    if (*f == '@' || *f == '=')
        f++;
    return (f[0] != '\0' && f[1] == '\0') ? f[0] : '?';
}

/* n 2-D buffers (get2d) in one go; on failure the ones already taken are released */
static int get2d_all(PyObject *const *objs, Py_buffer *views, const int *writable,
                     const char *const *names, Py_ssize_t *rows, Py_ssize_t *cols, int n)
{
    for (int i = 0; i < n; i++)
        if (get2d(objs[i], &views[i], writable[i], names[i], &rows[i], &cols[i]) != 0) {
            while (i-- > 0)
                PyBuffer_Release(&views[i]);
            return -1;
        }
    return 0;
}

static PyObject *update(PyObject *self, PyObject *args)
{
    PyObject *o_num, *o_cnt, *o_hv, *o_hi;
    long long offset;
    (void)self;
    if (!PyArg_ParseTuple(args, "OOOOL:update", &o_num, &o_cnt, &o_hv, &o_hi, &offset))
        return NULL;
    PyObject *const objs[4] = {o_num, o_cnt, o_hv, o_hi};
    static const int writable[4] = {0, 0, 1, 1};
    static const char *const names[4] = {"num", "cnt", "heap_v", "heap_i"};
    Py_buffer v[4];
    Py_ssize_t rows[4], cols[4];
    if (get2d_all(objs, v, writable, names, rows, cols, 4) != 0)
        return NULL;
    Py_buffer num = v[0], cnt = v[1], hv = v[2], hi = v[3];
    Py_ssize_t b = rows[0], m = cols[0], b2 = rows[1], m2 = cols[1], b3 = rows[2], kk = cols[2],
               b4 = rows[3], kk2 = cols[3];
    char f = fmt_char(&num);
    const char *err = NULL;
    if (f != 'f' && f != 'd')
        err = "num must hold float32 or float64";
    else if (fmt_char(&cnt) != f || fmt_char(&hv) != f)
        err = "cnt and heap_v must have num's format";
    else if ((fmt_char(&hi) != 'q' && fmt_char(&hi) != 'l') || hi.itemsize != 8)
        err = "heap_i must hold int64";
    else if (b2 != b || m2 != m || b3 != b || b4 != b || kk2 != kk)
        err = "shapes must be num (b, m), cnt (b, m), heap_v (b, kk), heap_i (b, kk)";
    else if (kk < 1)
        err = "heap_v must have at least one column";
    else if (offset < 0 || (long long)m > INT64_MAX - offset)
        err = "offset must be >= 0 and offset + m must fit in int64";
    if (err != NULL) {
        PyErr_Format(PyExc_ValueError,
                     "%s (got num %zd x %zd '%s', cnt %zd x %zd '%s', heap_v %zd x %zd '%s', "
                     "heap_i %zd x %zd '%s', offset %lld)",
                     err, b, m, num.format ? num.format : "B", b2, m2,
                     cnt.format ? cnt.format : "B", b3, kk, hv.format ? hv.format : "B", b4,
                     kk2, hi.format ? hi.format : "B", offset);
    }
    void *bv = NULL, *gm = NULL;
    int64_t *bi = NULL;
    if (err == NULL) {
        bv = PyMem_RawMalloc((size_t)(2 * kk) * (size_t)num.itemsize);
        bi = PyMem_RawMalloc((size_t)(2 * kk) * sizeof(int64_t));
        gm = PyMem_RawMalloc((size_t)(m + 8) * (size_t)num.itemsize);
        if (bv == NULL || bi == NULL || gm == NULL) {
            PyErr_NoMemory();
            err = "no memory";
        }
    }
    if (err == NULL) {
        Py_BEGIN_ALLOW_THREADS
        if (f == 'f')
            update_float((const float *)num.buf, (const float *)cnt.buf, (float *)hv.buf,
                         (int64_t *)hi.buf, b, m, kk, (int64_t)offset, (float *)bv, bi,
                         (float *)gm);
        else
            update_double((const double *)num.buf, (const double *)cnt.buf, (double *)hv.buf,
                          (int64_t *)hi.buf, b, m, kk, (int64_t)offset, (double *)bv, bi,
                          (double *)gm);
        Py_END_ALLOW_THREADS
    }
    PyMem_RawFree(bv);
    PyMem_RawFree(bi);
    PyMem_RawFree(gm);
    PyBuffer_Release(&num);
    PyBuffer_Release(&cnt);
    PyBuffer_Release(&hv);
    PyBuffer_Release(&hi);
    if (err != NULL)
        return NULL;
    Py_RETURN_NONE;
}

/* numpy's pairwise summation of a contiguous float64 run (numpy/_core/src/umath/
 * loops_utils.h.src), so that the native distances equal numpy's bit for bit */
static double pairwise_sum(const double *a, Py_ssize_t n);

/* pairwise_sum for n <= 128 (every realistic table width), inlined into the loop below */
static inline __attribute__((always_inline)) double short_sum(const double *a, Py_ssize_t n)
{
    if (n < 8) {
        double res = 0.;
        for (Py_ssize_t i = 0; i < n; i++)
            res += a[i];
        return res;
    }
    if (n > 128)
        return pairwise_sum(a, n);
    double r[8];
    Py_ssize_t i;
    for (int j = 0; j < 8; j++)
        r[j] = a[j];
    for (i = 8; i < n - (n % 8); i += 8)
        for (int j = 0; j < 8; j++)
            r[j] += a[i + j];
    double res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
    for (; i < n; i++)
        res += a[i];
    return res;
}

static double pairwise_sum(const double *a, Py_ssize_t n)
{
    if (n < 8) {
        double res = 0.;
        for (Py_ssize_t i = 0; i < n; i++)
            res += a[i];
        return res;
    }
    if (n <= 128) {
        double r[8];
        Py_ssize_t i;
        for (int j = 0; j < 8; j++)
            r[j] = a[j];
        for (i = 8; i < n - (n % 8); i += 8)
            for (int j = 0; j < 8; j++)
                r[j] += a[i + j];
        double res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        for (; i < n; i++)
            res += a[i];
        return res;
    }
    Py_ssize_t n2 = n / 2;
    n2 -= n2 % 8;
    return pairwise_sum(a, n2) + pairwise_sum(a + n2, n - n2);
}

#define EXACT_MAX_D 8192

__attribute__((target_clones("avx2", "default"))) static void exact_rows(
    const double *R, const double *F, const int64_t *cand, double *out, Py_ssize_t b,
    Py_ssize_t w, Py_ssize_t d, double *sq)
{
    for (Py_ssize_t i = 0; i < b; i++) {
        const double *r = R + i * d;
        for (Py_ssize_t j = 0; j < w; j++) {
            const double *f = F + cand[i * w + j] * d;
            Py_ssize_t missing = 0;
            for (Py_ssize_t t = 0; t < d; t++) {
                double x = f[t] - r[t];
                x *= x;
                int gap = x != x; /* NaN: a coordinate one of the two lacks (branch-free) */
                missing += gap;
                sq[t] = gap ? 0. : x;
            }
            Py_ssize_t count = d - missing;
            out[i * w + j] = count ? short_sum(sq, d) / (double)count : INFINITY;
        }
    }
}

static PyObject *exact(PyObject *self, PyObject *args)
{
    PyObject *o_r, *o_f, *o_c, *o_out;
    (void)self;
    if (!PyArg_ParseTuple(args, "OOOO:exact", &o_r, &o_f, &o_c, &o_out))
        return NULL;
    PyObject *const objs[4] = {o_r, o_f, o_c, o_out};
    static const int writable[4] = {0, 0, 0, 1};
    static const char *const names[4] = {"R", "F", "cand", "out"};
    Py_buffer v[4];
    Py_ssize_t rows[4], cols[4];
    if (get2d_all(objs, v, writable, names, rows, cols, 4) != 0)
        return NULL;
    Py_buffer R = v[0], F = v[1], C = v[2], O = v[3];
    Py_ssize_t b = rows[0], d = cols[0], n = rows[1], d2 = cols[1], b2 = rows[2], w = cols[2],
               b3 = rows[3], w2 = cols[3];
    const char *err = NULL;
    Py_ssize_t bad = -1;
    if (fmt_char(&R) != 'd' || fmt_char(&F) != 'd' || fmt_char(&O) != 'd')
        err = "R, F and out must hold float64";
    else if ((fmt_char(&C) != 'q' && fmt_char(&C) != 'l') || C.itemsize != 8)
        err = "cand must hold int64";
    else if (d2 != d || b2 != b || b3 != b || w2 != w)
        err = "shapes must be R (b, d), F (n, d), cand (b, w), out (b, w)";
    else if (d < 1 || d > EXACT_MAX_D)
        err = "d must be in [1, 8192]";
    else {
        const int64_t *c = (const int64_t *)C.buf;
        for (Py_ssize_t t = 0; t < b * w; t++)
            if (c[t] < 0 || c[t] >= n) {
                bad = t;
                err = "every cand entry must be a row of F";
                break;
            }
    }
    double *sq = NULL;
    if (err == NULL && (sq = PyMem_RawMalloc((size_t)d * sizeof(double))) == NULL) {
        PyErr_NoMemory();
    } else if (err != NULL) {
        PyErr_Format(PyExc_ValueError,
                     "%s (got R %zd x %zd '%s', F %zd x %zd '%s', cand %zd x %zd '%s', "
                     "out %zd x %zd '%s'; first bad cand entry %zd)",
                     err, b, d, R.format ? R.format : "B", n, d2, F.format ? F.format : "B",
                     b2, w, C.format ? C.format : "B", b3, w2, O.format ? O.format : "B", bad);
    } else {
        Py_BEGIN_ALLOW_THREADS
        exact_rows((const double *)R.buf, (const double *)F.buf, (const int64_t *)C.buf,
                   (double *)O.buf, b, w, d, sq);
        Py_END_ALLOW_THREADS
    }
    PyMem_RawFree(sq);
    PyBuffer_Release(&R);
    PyBuffer_Release(&F);
    PyBuffer_Release(&C);
    PyBuffer_Release(&O);
    if (err != NULL || sq == NULL)
        return NULL;
    Py_RETURN_NONE;
}

/* the work buffers of a row select; NULL (with MemoryError set) when out of memory */
static int alloc_row_buffers(Py_ssize_t kk, Py_ssize_t m, Py_ssize_t itemsize, void **bv,
                             int64_t **bi, void **gm)
{
    *bv = PyMem_RawMalloc((size_t)(2 * kk) * (size_t)itemsize);
    *bi = PyMem_RawMalloc((size_t)(2 * kk) * sizeof(int64_t));
    *gm = PyMem_RawMalloc((size_t)(m + 8) * (size_t)itemsize);
    if (*bv == NULL || *bi == NULL || *gm == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    return 0;
}

static PyObject *update_partial(PyObject *self, PyObject *args)
{
    static const char *const names[8] = {"ab", "miss", "sd", "cd", "qt", "pt", "heap_v", "heap_i"};
    static const int writable[8] = {0, 0, 0, 0, 0, 0, 1, 1};
    PyObject *objs[8];
    long long offset;
    (void)self;
    if (!PyArg_ParseTuple(args, "OOOOOOOOL:update_partial", &objs[0], &objs[1], &objs[2],
                          &objs[3], &objs[4], &objs[5], &objs[6], &objs[7], &offset))
        return NULL;
    Py_buffer v[8];
    Py_ssize_t rows[8], cols[8];
    if (get2d_all(objs, v, writable, names, rows, cols, 8) != 0)
        return NULL;
    const char *err = NULL;
    char f = '?';
    Py_ssize_t b = 0, m = 0, mw = 0, n = 0, d = 0, kk = 0, bad = -1;
    {
        f = fmt_char(&v[0]);
        b = rows[0], m = cols[0], mw = cols[1], n = cols[2], d = rows[4], kk = cols[6];
        if (f != 'f' && f != 'd')
            err = "ab must hold float32 or float64";
        else if (fmt_char(&v[2]) != f || fmt_char(&v[3]) != f || fmt_char(&v[4]) != f ||
                 fmt_char(&v[5]) != f || fmt_char(&v[6]) != f)
            err = "sd, cd, qt, pt and heap_v must have ab's format";
        else if ((fmt_char(&v[1]) != 'q' && fmt_char(&v[1]) != 'l') || v[1].itemsize != 8 ||
                 (fmt_char(&v[7]) != 'q' && fmt_char(&v[7]) != 'l') || v[7].itemsize != 8)
            err = "miss and heap_i must hold int64";
        else if (rows[1] != b || rows[2] != 1 || rows[3] != 1 || cols[3] != n ||
                 rows[5] != d || cols[4] != n || cols[5] != n || rows[6] != b ||
                 rows[7] != b || cols[7] != kk)
            err = "shapes must be ab (b, m), miss (b, M), sd (1, n), cd (1, n), qt (d, n), "
                  "pt (d, n), heap_v (b, kk), heap_i (b, kk)";
        else if (kk < 1)
            err = "heap_v must have at least one column";
        else if (offset < 0 || offset > n || m > n - offset)
            err = "offset + m must be at most n";
        else {
            const int64_t *mi = (const int64_t *)v[1].buf;
            for (Py_ssize_t t = 0; t < b * mw; t++)
                if (mi[t] < -1 || mi[t] >= d) {
                    bad = t;
                    err = "every miss entry must be a feature of qt (or -1)";
                    break;
                }
        }
        if (err != NULL)
            PyErr_Format(PyExc_ValueError,
                         "%s (got ab %zd x %zd, miss %zd x %zd, sd %zd x %zd, qt %zd x %zd, "
                         "heap_v %zd x %zd, offset %lld; first bad miss entry %zd)",
                         err, b, m, rows[1], mw, rows[2], n, d, cols[4], rows[6], kk, offset,
                         bad);
    }
    void *bv = NULL, *gm = NULL, *rn = NULL, *rc = NULL;
    int64_t *bi = NULL;
    int ok = err == NULL;
    if (ok && alloc_row_buffers(kk, m, v[0].itemsize, &bv, &bi, &gm) != 0)
        ok = 0;
    if (ok) {
        rn = PyMem_RawMalloc((size_t)(m + 1) * (size_t)v[0].itemsize);
        rc = PyMem_RawMalloc((size_t)(m + 1) * (size_t)v[0].itemsize);
        if (rn == NULL || rc == NULL) {
            PyErr_NoMemory();
            ok = 0;
        }
    }
    if (ok) {
        Py_BEGIN_ALLOW_THREADS
        if (f == 'f')
            partial_float((const float *)v[0].buf, (const int64_t *)v[1].buf, mw,
                          (const float *)v[2].buf, (const float *)v[3].buf,
                          (const float *)v[4].buf, (const float *)v[5].buf, n,
                          (float *)v[6].buf, (int64_t *)v[7].buf, b, m, kk, (int64_t)offset,
                          (float *)bv, bi, (float *)gm, (float *)rn, (float *)rc);
        else
            partial_double((const double *)v[0].buf, (const int64_t *)v[1].buf, mw,
                           (const double *)v[2].buf, (const double *)v[3].buf,
                           (const double *)v[4].buf, (const double *)v[5].buf, n,
                           (double *)v[6].buf, (int64_t *)v[7].buf, b, m, kk,
                           (int64_t)offset, (double *)bv, bi, (double *)gm, (double *)rn,
                           (double *)rc);
        Py_END_ALLOW_THREADS
    }
    PyMem_RawFree(bv);
    PyMem_RawFree(bi);
    PyMem_RawFree(gm);
    PyMem_RawFree(rn);
    PyMem_RawFree(rc);
    for (int t = 0; t < 8; t++)
        PyBuffer_Release(&v[t]);
    if (!ok)
        return NULL;
    Py_RETURN_NONE;
}

/* ---- rank: the exact re-rank and the imputation of a block of receivers ------------- */

/* (distance, donor) pairs in the re-rank's order: by distance, ties by donor index (the
 * order of numpy's lexsort((cand, exact)) in the Python path) */
typedef struct {
    double d;
    int64_t i;
} ranked_t;

static inline int ranked_lt(ranked_t a, ranked_t b) { return a.d < b.d || (a.d == b.d && a.i < b.i); }

static void heap_down(ranked_t *h, Py_ssize_t n, Py_ssize_t at)
{
    for (;;) {
        Py_ssize_t l = 2 * at + 1, s = at;
        if (l < n && ranked_lt(h[l], h[s]))
            s = l;
        if (l + 1 < n && ranked_lt(h[l + 1], h[s]))
            s = l + 1;
        if (s == at)
            return;
        ranked_t t = h[at];
        h[at] = h[s];
        h[s] = t;
        at = s;
    }
}

/* the exact quotient of receiver r and donor f, as exact_rows computes it */
static inline __attribute__((always_inline)) double exact_one(const double *r, const double *f,
                                                             Py_ssize_t d, double *sq)
{
    Py_ssize_t missing = 0;
    for (Py_ssize_t t = 0; t < d; t++) {
        double x = f[t] - r[t];
        x *= x;
        int gap = x != x;
        missing += gap;
        sq[t] = gap ? 0. : x;
    }
    Py_ssize_t count = d - missing;
    return count ? short_sum(sq, d) / (double)count : INFINITY;
}

typedef struct {
    const double *X, *F, *bounds, *means;
    const uint8_t *P, *todo;
    const int64_t *blk, *cand, *special;
    double *out, *retry;
    int8_t *unsafe;
    Py_ssize_t b, w, s, d, n, N, k;
    int distance;
} rank_args;

enum { RANK_MISS = 1, RANK_MISS_PRECISION = 2 };

/* rank each receiver's candidates lazily (a binary heap popped only as far as some column
 * needs: about k / (share of donors with the column) pops, not a sort of every candidate),
 * then impute each entry to do from the first k ranked donors that have its column */
/* The (weighted) mean of an entry's taken donors, bit for bit as the numpy path's
 * (w * values).sum(axis=1) / w.sum(axis=1): the products sit at the donors' ranks in a
 * row of the re-rank's full width (w + s, zeros elsewhere) summed in numpy's pairwise
 * order, and the weights are numpy's (1 / sqrt(distance * d), or 1 for the donors at
 * distance 0 when there are any). */
static double mean_of(const rank_args *a, Py_ssize_t taken, const Py_ssize_t *tpos,
                      const double *tval, const double *tdist, double *sv, double *sw)
{
    const Py_ssize_t W = a->w + a->s;
    memset(sv, 0, (size_t)W * sizeof(double));
    if (!a->distance) {
        for (Py_ssize_t t = 0; t < taken; t++)
            sv[tpos[t]] = tval[t];
        return short_sum(sv, W) / (double)taken;
    }
    memset(sw, 0, (size_t)W * sizeof(double));
    int zero = 0;
    for (Py_ssize_t t = 0; t < taken; t++)
        zero |= sqrt(tdist[t] * (double)a->d) == 0.;
    for (Py_ssize_t t = 0; t < taken; t++) {
        double dist = sqrt(tdist[t] * (double)a->d);
        double wt = zero ? (dist == 0. ? 1. : 0.) : 1. / dist;
        sv[tpos[t]] = wt * tval[t];
        sw[tpos[t]] = wt;
    }
    return short_sum(sv, W) / short_sum(sw, W);
}

__attribute__((target_clones("avx2", "default"))) static void rank_rows(
    const rank_args *a, ranked_t *heap, ranked_t *order, uint8_t *seen, double *sq,
    Py_ssize_t *tpos, double *tval, double *tdist, double *sv, double *sw)
{
    const Py_ssize_t d = a->d, w = a->w, k = a->k;
    for (Py_ssize_t i = 0; i < a->b; i++) {
        const int64_t row = a->blk[i];
        const double *r = a->X + row * d;
        const uint8_t *todo = a->todo + row * d;
        const int64_t *cand = a->cand + i * w;
        Py_ssize_t h = 0;
        /* the candidates and the special donors, each once (seen: a bitmap over donors) */
        for (Py_ssize_t t = 0; t < w + a->s; t++) {
            int64_t c = t < w ? cand[t] : a->special[t - w];
            if (c < 0 || (seen[c >> 3] >> (c & 7)) & 1)
                continue;
            seen[c >> 3] |= (uint8_t)(1u << (c & 7));
            double q = exact_one(r, a->F + c * d, d, sq);
            if (q < INFINITY) /* no coordinate in common: never a donor */
                heap[h++] = (ranked_t){q, c};
        }
        for (Py_ssize_t t = 0; t < w + a->s; t++) {
            int64_t c = t < w ? cand[t] : a->special[t - w];
            if (c >= 0)
                seen[c >> 3] = 0;
        }
        for (Py_ssize_t t = h / 2; t-- > 0;)
            heap_down(heap, h, t);
        Py_ssize_t popped = 0;
        const double kth = a->bounds[i], bound = a->bounds[a->b + i],
                     bound64 = a->bounds[2 * a->b + i], tol = a->bounds[3 * a->b + i];
        double retry = a->retry[i];
        for (Py_ssize_t c = 0; c < d; c++) {
            if (!todo[c])
                continue;
            Py_ssize_t taken = 0, j = 0;
            double last = -INFINITY;
            while (taken < k) {
                if (j == popped) {
                    if (h == 0)
                        break;
                    order[popped++] = heap[0];
                    heap[0] = heap[--h];
                    heap_down(heap, h, 0);
                }
                ranked_t e = order[j++];
                if (!a->P[e.i * d + c])
                    continue;
                tpos[taken] = j - 1;
                tval[taken] = a->F[e.i * d + c];
                tdist[taken] = e.d;
                taken++;
                last = e.d;
            }
            a->out[row * d + c] = taken ? mean_of(a, taken, tpos, tval, tdist, sv, sw)
                                        : a->means[c];
            int full = taken >= k;
            int safe = full ? last < bound : isinf(kth);
            if (!safe) {
                a->unsafe[i * d + c] =
                    (full && last < bound64) ? RANK_MISS_PRECISION : RANK_MISS;
                double want = full ? last + 2.0 * tol : INFINITY;
                retry = want > retry ? want : retry;
            }
        }
        a->retry[i] = retry;
    }
}

static int fmt_is(const Py_buffer *v, const char *allowed, Py_ssize_t itemsize)
{
    /* fmt_char's '?' also stands for a format it cannot read: look at the string itself */
    const char *f = v->format ? v->format : "B";
    if (*f == '@' || *f == '=')
        f++;
    return f[0] != '\0' && f[1] == '\0' && strchr(allowed, f[0]) != NULL &&
           v->itemsize == itemsize;
}

static PyObject *rank(PyObject *self, PyObject *args)
{
    enum { NB = 12 };
    static const char *const names[NB] = {"X",      "blk",   "F",   "P",    "cand", "special",
                                          "todo",   "bounds", "means", "out", "unsafe", "retry"};
    static const int writable[NB] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1};
    PyObject *objs[NB];
    Py_ssize_t k;
    int distance;
    (void)self;
    if (!PyArg_ParseTuple(args, "OOOOOOOOOOOOnp:rank", &objs[0], &objs[1], &objs[2], &objs[3],
                          &objs[4], &objs[5], &objs[6], &objs[7], &objs[8], &objs[9], &objs[10],
                          &objs[11], &k, &distance))
        return NULL;
    Py_buffer v[NB];
    Py_ssize_t rows[NB], cols[NB];
    if (get2d_all(objs, v, writable, names, rows, cols, NB) != 0)
        return NULL;
    const Py_ssize_t N = rows[0], d = cols[0], b = cols[1], n = rows[2], w = cols[4],
                     s = cols[5];
    const char *err = NULL;
    Py_ssize_t bad = -1;
    if (!fmt_is(&v[0], "d", 8) || !fmt_is(&v[2], "d", 8) || !fmt_is(&v[7], "d", 8) ||
        !fmt_is(&v[8], "d", 8) || !fmt_is(&v[9], "d", 8) || !fmt_is(&v[11], "d", 8))
        err = "X, F, bounds, means, out and retry must hold float64";
    else if (!fmt_is(&v[1], "ql", 8) || !fmt_is(&v[4], "ql", 8) || !fmt_is(&v[5], "ql", 8))
        err = "blk, cand and special must hold int64";
    else if (!fmt_is(&v[3], "?B", 1) || !fmt_is(&v[6], "?B", 1) || !fmt_is(&v[10], "bB", 1))
        err = "P and todo must hold bool, unsafe int8";
    else if (rows[1] != 1 || cols[2] != d || rows[3] != n || cols[3] != d || rows[4] != b ||
             rows[5] != 1 || rows[6] != N || cols[6] != d || rows[7] != 4 || cols[7] != b ||
             rows[8] != 1 || cols[8] != d || rows[9] != N || cols[9] != d || rows[10] != b ||
             cols[10] != d || rows[11] != 1 || cols[11] != b)
        err = "shapes must be X (N, d), blk (1, b), F (n, d), P (n, d), cand (b, w), special "
              "(1, s), todo (N, d), bounds (4, b), means (1, d), out (N, d), unsafe (b, d), "
              "retry (1, b)";
    else if (d < 1 || d > EXACT_MAX_D)
        err = "d must be in [1, 8192]";
    else if (k < 1)
        err = "k must be at least 1";
    else {
        const int64_t *bl = (const int64_t *)v[1].buf, *c = (const int64_t *)v[4].buf,
                      *sp = (const int64_t *)v[5].buf;
        for (Py_ssize_t t = 0; t < b && err == NULL; t++)
            if (bl[t] < 0 || bl[t] >= N)
                bad = t, err = "every blk entry must be a row of X";
        for (Py_ssize_t t = 0; t < b * w && err == NULL; t++)
            if (c[t] < -1 || c[t] >= n)
                bad = t, err = "every cand entry must be a row of F (or -1)";
        for (Py_ssize_t t = 0; t < s && err == NULL; t++)
            if (sp[t] < 0 || sp[t] >= n)
                bad = t, err = "every special entry must be a row of F";
    }
    ranked_t *heap = NULL, *order = NULL;
    uint8_t *seen = NULL;
    double *sq = NULL, *tval = NULL, *tdist = NULL, *sv = NULL, *sw = NULL;
    Py_ssize_t *tpos = NULL;
    int ok = err == NULL;
    if (!ok) {
        PyErr_Format(PyExc_ValueError,
                     "%s (got X %zd x %zd, blk %zd x %zd, F %zd x %zd, P %zd x %zd, cand %zd x "
                     "%zd, special %zd x %zd, todo %zd x %zd, bounds %zd x %zd, out %zd x %zd, "
                     "unsafe %zd x %zd, retry %zd x %zd, k %zd; first bad entry %zd)",
                     err, N, d, rows[1], b, n, cols[2], rows[3], cols[3], rows[4], w, rows[5],
                     s, rows[6], cols[6], rows[7], cols[7], rows[9], cols[9], rows[10],
                     cols[10], rows[11], cols[11], k, bad);
    } else {
        heap = PyMem_RawMalloc((size_t)(w + s + 1) * sizeof(ranked_t));
        order = PyMem_RawMalloc((size_t)(w + s + 1) * sizeof(ranked_t));
        seen = PyMem_RawCalloc((size_t)(n / 8 + 1), 1);
        sq = PyMem_RawMalloc((size_t)d * sizeof(double));
        /* an entry takes at most min(k, its candidates) donors */
        size_t nt = (size_t)(k < w + s + 1 ? k : w + s + 1);
        tpos = PyMem_RawMalloc(nt * sizeof(Py_ssize_t));
        tval = PyMem_RawMalloc(nt * sizeof(double));
        tdist = PyMem_RawMalloc(nt * sizeof(double));
        sv = PyMem_RawMalloc((size_t)(w + s + 1) * sizeof(double));
        sw = PyMem_RawMalloc((size_t)(w + s + 1) * sizeof(double));
        if (heap == NULL || order == NULL || seen == NULL || sq == NULL || tpos == NULL ||
            tval == NULL || tdist == NULL || sv == NULL || sw == NULL) {
            PyErr_NoMemory();
            ok = 0;
        }
    }
    if (ok) {
        rank_args a = {
            .X = v[0].buf, .blk = v[1].buf, .F = v[2].buf, .P = v[3].buf, .cand = v[4].buf,
            .special = v[5].buf, .todo = v[6].buf, .bounds = v[7].buf, .means = v[8].buf,
            .out = v[9].buf, .unsafe = v[10].buf, .retry = v[11].buf, .b = b, .w = w, .s = s,
            .d = d, .n = n, .N = N, .k = k, .distance = distance,
        };
        Py_BEGIN_ALLOW_THREADS
        rank_rows(&a, heap, order, seen, sq, tpos, tval, tdist, sv, sw);
        Py_END_ALLOW_THREADS
    }
    PyMem_RawFree(heap);
    PyMem_RawFree(order);
    PyMem_RawFree(seen);
    PyMem_RawFree(sq);
    PyMem_RawFree(tpos);
    PyMem_RawFree(tval);
    PyMem_RawFree(tdist);
    PyMem_RawFree(sv);
    PyMem_RawFree(sw);
    for (int t = 0; t < NB; t++)
        PyBuffer_Release(&v[t]);
    if (!ok)
        return NULL;
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"rank", rank, METH_VARARGS,
     "rank(X, blk, F, P, cand, special, todo, bounds, means, out, unsafe, retry, k, "
     "distance): re-rank a block's candidates exactly and impute its entries."},
    {"update_partial", update_partial, METH_VARARGS,
     "update_partial(ab, miss, sd, cd, qt, pt, heap_v, heap_i, offset): update from the "
     "partial product."},
    {"exact", exact, METH_VARARGS,
     "exact(R, F, cand, out): the nan-euclidean quotients of each receiver's candidates."},
    {"update", update, METH_VARARGS,
     "update(num, cnt, heap_v, heap_i, offset): keep the kk smallest num / cnt per row."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_knnselect",
    "The k smallest quotients num / cnt of each row (KNNImputer's screen), GIL released.",
    -1, methods,
};

PyMODINIT_FUNC PyInit__knnselect(void) { return PyModule_Create(&module); }
