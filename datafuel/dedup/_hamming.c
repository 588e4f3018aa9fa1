/*
 * datafuel.dedup._hamming: every pair of 64-bit hashes within a Hamming distance, one
 * pass over the upper triangle without the GIL.
 *
 * Written by hand because numpy's route (an XOR array of block x n words, then
 * bitwise_count and nonzero) needs block * n * 8 bytes of scratch (16 GB a block at a
 * million images) and computes the whole square. Here each pair i < j is one XOR and one
 * popcount, and memory is what the pairs found take (buffers grown geometrically).
 *
 * The popcount kernel is picked once at import from what the CPU has
 * (__builtin_cpu_supports), so the module builds with plain -O3 for any x86-64 and still
 * uses the instructions where they exist: AVX-512 VPOPCNTDQ (16 pairs a step), AVX2
 * (8 a step, bits counted by nibble look-up), POPCNT (one at a time), else the generic
 * __builtin_popcountll (without -mpopcnt gcc calls libgcc's bit-trick routine). One core
 * of an AMD EPYC (Zen 4), random hashes, pairs compared a second: generic 0.6 G, POPCNT
 * 1.5-3 G, AVX2 2.5-4.8 G, AVX-512 7-15 G (see benchmarks/bench_dedup.py --hamming).
 * Other architectures get the generic loop, which their compilers turn into their own
 * popcount. DATAFUEL_HAMMING_KERNEL=generic|popcnt|avx2 at import caps the choice (tests,
 * benchmarks); kernel() names the one in use.
 *
 * pairs(hashes, max_distance, row_start, row_stop)
 *     hashes: a C-contiguous buffer of n 64-bit integers (format Q, L, q or l; the bits
 *     are what count). Every pair (i, j) with row_start <= i < row_stop, i < j < n and
 *     popcount(h[i] ^ h[j]) <= max_distance (0..64), in (i, j) order. Returns a tuple of
 *     three bytearrays (i: int64, j: int64, d: uint8, native byte order), so that
 *     numpy.frombuffer reads them without a copy. Row ranges [row_start, row_stop)
 *     split the triangle: calls over consecutive ranges, concatenated, give the call
 *     over their union; the GIL is released for the whole scan, so ranges can run on
 *     threads at once. Bad arguments raise ValueError, TypeError or BufferError.
 *
 * cross(a, b, max_distance)
 *     Every pair (i, j), i over a and j over b (the same buffers as above, any sizes),
 *     within max_distance, in (i, j) order; same return as pairs(). For two sets
 *     compared with each other and not within themselves.
 *
 * kernel()
 *     "avx512vpopcntdq", "avx2", "popcnt" or "generic".
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__)
#define HAVE_X86_DISPATCH 1
#include <immintrin.h>
/* VPOPCNTQ's intrinsics and cpu-supports name: gcc 8, clang 6 */
#if defined(__clang__) ? __clang_major__ >= 6 : __GNUC__ >= 8
#define HAVE_AVX512_POPCNT 1
#endif
#endif

/* the pairs found: three arrays grown geometrically (never more than twice the output) */
typedef struct {
    int64_t *i;
    int64_t *j;
    uint8_t *d;
    Py_ssize_t len;
    Py_ssize_t cap;
} out_t;

static int out_grow(out_t *o)
{
    Py_ssize_t cap = o->cap ? o->cap * 2 : 4096;
    int64_t *ni = realloc(o->i, (size_t)cap * sizeof(int64_t));
    if (ni == NULL)
        return -1;
    o->i = ni;
    int64_t *nj = realloc(o->j, (size_t)cap * sizeof(int64_t));
    if (nj == NULL)
        return -1;
    o->j = nj;
    uint8_t *nd = realloc(o->d, (size_t)cap);
    if (nd == NULL)
        return -1;
    o->d = nd;
    o->cap = cap;
    return 0;
}

static inline int out_push(out_t *o, Py_ssize_t i, Py_ssize_t j, int d)
{
    if (__builtin_expect(o->len == o->cap, 0) && out_grow(o) != 0)
        return -1;
    o->i[o->len] = (int64_t)i;
    o->j[o->len] = (int64_t)j;
    o->d[o->len] = (uint8_t)d;
    o->len++;
    return 0;
}

static void out_free(out_t *o)
{
    free(o->i);
    free(o->j);
    free(o->d);
}

/*
 * A kernel scans rows [r0, r1) of a against columns of b: for row i the columns
 * [col0(i), nb), col0(i) = i + 1 for the triangle (a == b) and 0 for a cross scan.
 * Returns 0, or -1 when a buffer could not grow.
 */
typedef int (*kernel_fn)(const uint64_t *a, const uint64_t *b, Py_ssize_t nb, int tri,
                         int md, Py_ssize_t r0, Py_ssize_t r1, out_t *o);

/* one body, compiled once per instruction set (the popcount is the builtin either way) */
#define SCALAR_BODY                                                                        \
    for (Py_ssize_t i = r0; i < r1; i++) {                                                 \
        const uint64_t x = a[i];                                                           \
        Py_ssize_t j = tri ? i + 1 : 0;                                                    \
        for (; j + 4 <= nb; j += 4) {                                                      \
            int d0 = __builtin_popcountll(x ^ b[j]);                                       \
            int d1 = __builtin_popcountll(x ^ b[j + 1]);                                   \
            int d2 = __builtin_popcountll(x ^ b[j + 2]);                                   \
            int d3 = __builtin_popcountll(x ^ b[j + 3]);                                   \
            if (__builtin_expect((d0 <= md) | (d1 <= md) | (d2 <= md) | (d3 <= md), 0)) {  \
                if ((d0 <= md && out_push(o, i, j, d0)) ||                                 \
                    (d1 <= md && out_push(o, i, j + 1, d1)) ||                             \
                    (d2 <= md && out_push(o, i, j + 2, d2)) ||                             \
                    (d3 <= md && out_push(o, i, j + 3, d3)))                               \
                    return -1;                                                             \
            }                                                                              \
        }                                                                                  \
        for (; j < nb; j++) {                                                              \
            int d = __builtin_popcountll(x ^ b[j]);                                        \
            if (d <= md && out_push(o, i, j, d))                                           \
                return -1;                                                                 \
        }                                                                                  \
    }                                                                                      \
    return 0;

static int scan_generic(const uint64_t *a, const uint64_t *b, Py_ssize_t nb, int tri, int md,
                        Py_ssize_t r0, Py_ssize_t r1, out_t *o)
{
    SCALAR_BODY
}

#ifdef HAVE_X86_DISPATCH
__attribute__((target("popcnt"))) static int scan_popcnt(const uint64_t *a, const uint64_t *b,
                                                         Py_ssize_t nb, int tri, int md,
                                                         Py_ssize_t r0, Py_ssize_t r1, out_t *o)
{
    SCALAR_BODY
}

/* eight columns a step without VPOPCNTQ: each byte's bits counted by two nibble look-ups
 * (VPSHUFB), the bytes of each word summed (VPSADBW), a signed compare into a mask */
__attribute__((target("avx2,popcnt"))) static int scan_avx2(const uint64_t *a, const uint64_t *b,
                                                             Py_ssize_t nb, int tri, int md,
                                                             Py_ssize_t r0, Py_ssize_t r1,
                                                             out_t *o)
{
    const __m256i lut = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4, 0, 1, 1,
                                         2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4);
    const __m256i low = _mm256_set1_epi8(0x0f);
    const __m256i zero = _mm256_setzero_si256();
    const __m256i lim = _mm256_set1_epi64x(md + 1);
    for (Py_ssize_t i = r0; i < r1; i++) {
        const uint64_t x = a[i];
        const __m256i vx = _mm256_set1_epi64x((long long)x);
        Py_ssize_t j = tri ? i + 1 : 0;
        for (; j + 8 <= nb; j += 8) {
            __m256i v0 = _mm256_xor_si256(vx, _mm256_loadu_si256((const __m256i *)(b + j)));
            __m256i v1 = _mm256_xor_si256(vx, _mm256_loadu_si256((const __m256i *)(b + j + 4)));
            __m256i c0 = _mm256_add_epi8(
                _mm256_shuffle_epi8(lut, _mm256_and_si256(v0, low)),
                _mm256_shuffle_epi8(lut, _mm256_and_si256(_mm256_srli_epi16(v0, 4), low)));
            __m256i c1 = _mm256_add_epi8(
                _mm256_shuffle_epi8(lut, _mm256_and_si256(v1, low)),
                _mm256_shuffle_epi8(lut, _mm256_and_si256(_mm256_srli_epi16(v1, 4), low)));
            __m256i s0 = _mm256_sad_epu8(c0, zero);
            __m256i s1 = _mm256_sad_epu8(c1, zero);
            unsigned m0 = (unsigned)_mm256_movemask_pd(
                _mm256_castsi256_pd(_mm256_cmpgt_epi64(lim, s0)));
            unsigned m1 = (unsigned)_mm256_movemask_pd(
                _mm256_castsi256_pd(_mm256_cmpgt_epi64(lim, s1)));
            if (__builtin_expect((m0 | m1) != 0, 0)) {
                unsigned m = m0 | (m1 << 4);
                while (m) {
                    int k = __builtin_ctz(m);
                    m &= m - 1;
                    if (out_push(o, i, j + k, __builtin_popcountll(x ^ b[j + k])))
                        return -1;
                }
            }
        }
        for (; j < nb; j++) {
            int d = __builtin_popcountll(x ^ b[j]);
            if (d <= md && out_push(o, i, j, d))
                return -1;
        }
    }
    return 0;
}

#ifdef HAVE_AVX512_POPCNT
/* sixteen columns a step (two vectors of eight): XOR, VPOPCNTQ, an unsigned compare into
 * a mask; the rare hits are pushed in column order from the mask's bits */
__attribute__((target("avx512f,avx512vpopcntdq,popcnt"))) static int
scan_avx512(const uint64_t *a, const uint64_t *b, Py_ssize_t nb, int tri, int md, Py_ssize_t r0,
            Py_ssize_t r1, out_t *o)
{
    const __m512i lim = _mm512_set1_epi64(md);
    for (Py_ssize_t i = r0; i < r1; i++) {
        const uint64_t x = a[i];
        const __m512i vx = _mm512_set1_epi64((long long)x);
        Py_ssize_t j = tri ? i + 1 : 0;
        for (; j + 16 <= nb; j += 16) {
            __m512i c0 = _mm512_popcnt_epi64(_mm512_xor_si512(vx, _mm512_loadu_si512(b + j)));
            __m512i c1 =
                _mm512_popcnt_epi64(_mm512_xor_si512(vx, _mm512_loadu_si512(b + j + 8)));
            __mmask8 m0 = _mm512_cmple_epu64_mask(c0, lim);
            __mmask8 m1 = _mm512_cmple_epu64_mask(c1, lim);
            if (__builtin_expect((m0 | m1) != 0, 0)) {
                unsigned m = (unsigned)m0 | ((unsigned)m1 << 8);
                while (m) {
                    int k = __builtin_ctz(m);
                    m &= m - 1;
                    if (out_push(o, i, j + k, __builtin_popcountll(x ^ b[j + k])))
                        return -1;
                }
            }
        }
        for (; j < nb; j++) {
            int d = __builtin_popcountll(x ^ b[j]);
            if (d <= md && out_push(o, i, j, d))
                return -1;
        }
    }
    return 0;
}
#endif
#endif

static kernel_fn KERNEL = scan_generic;
static const char *KERNEL_NAME = "generic";

/* the best kernel the CPU runs; DATAFUEL_HAMMING_KERNEL=generic|popcnt|avx2|avx512vpopcntdq
 * (tests, benchmarks) asks for one, granted when the CPU has it */
static void pick_kernel(void)
{
    const char *want = getenv("DATAFUEL_HAMMING_KERNEL");
    if (want != NULL && strcmp(want, "generic") == 0)
        return;
#ifdef HAVE_X86_DISPATCH
    __builtin_cpu_init();
    if (__builtin_cpu_supports("popcnt")) {
        KERNEL = scan_popcnt;
        KERNEL_NAME = "popcnt";
    }
    if (want != NULL && strcmp(want, "popcnt") == 0)
        return;
    if (__builtin_cpu_supports("popcnt") && __builtin_cpu_supports("avx2")) {
        KERNEL = scan_avx2;
        KERNEL_NAME = "avx2";
    }
    if (want != NULL && strcmp(want, "avx2") == 0)
        return;
#ifdef HAVE_AVX512_POPCNT
    if (__builtin_cpu_supports("popcnt") && __builtin_cpu_supports("avx512f") &&
        __builtin_cpu_supports("avx512vpopcntdq")) {
        KERNEL = scan_avx512;
        KERNEL_NAME = "avx512vpopcntdq";
    }
#endif
#endif
}

/* a C-contiguous buffer of 64-bit integers (the bits are the hash; sign is ignored) */
static int get_hashes(PyObject *obj, Py_buffer *view, const char *name)
{
    if (PyObject_GetBuffer(obj, view, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) != 0)
        return -1;
    const char *f = view->format ? view->format : "B";
    if (*f == '=' || *f == '@' || (PY_LITTLE_ENDIAN && *f == '<') ||
        (!PY_LITTLE_ENDIAN && (*f == '>' || *f == '!')))
        f++;
    if (view->itemsize != 8 || !(strcmp(f, "Q") == 0 || strcmp(f, "L") == 0 ||
                                 strcmp(f, "q") == 0 || strcmp(f, "l") == 0)) {
        PyErr_Format(PyExc_ValueError,
                     "%s must be a C-contiguous array of 64-bit integers (uint64); got format "
                     "'%s' with %zd-byte items",
                     name, view->format ? view->format : "B", view->itemsize);
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

static PyObject *to_result(out_t *o)
{
    PyObject *bi = PyByteArray_FromStringAndSize(NULL, o->len * (Py_ssize_t)sizeof(int64_t));
    PyObject *bj = PyByteArray_FromStringAndSize(NULL, o->len * (Py_ssize_t)sizeof(int64_t));
    PyObject *bd = PyByteArray_FromStringAndSize(NULL, o->len);
    if (bi == NULL || bj == NULL || bd == NULL) {
        Py_XDECREF(bi);
        Py_XDECREF(bj);
        Py_XDECREF(bd);
        out_free(o);
        return NULL;
    }
    if (o->len) {
        memcpy(PyByteArray_AS_STRING(bi), o->i, (size_t)o->len * sizeof(int64_t));
        memcpy(PyByteArray_AS_STRING(bj), o->j, (size_t)o->len * sizeof(int64_t));
        memcpy(PyByteArray_AS_STRING(bd), o->d, (size_t)o->len);
    }
    out_free(o);
    PyObject *t = PyTuple_Pack(3, bi, bj, bd);
    Py_DECREF(bi);
    Py_DECREF(bj);
    Py_DECREF(bd);
    return t;
}

static int check_distance(int md)
{
    if (md < 0 || md > 64) {
        PyErr_Format(PyExc_ValueError,
                     "max_distance must be an int in the range [0, 64]. Got %d instead.", md);
        return -1;
    }
    return 0;
}

static PyObject *run_scan(const uint64_t *a, const uint64_t *b, Py_ssize_t nb, int tri, int md,
                          Py_ssize_t r0, Py_ssize_t r1)
{
    out_t o = {NULL, NULL, NULL, 0, 0};
    int rc;
    kernel_fn k = KERNEL;
    Py_BEGIN_ALLOW_THREADS
    rc = k(a, b, nb, tri, md, r0, r1, &o);
    Py_END_ALLOW_THREADS
    if (rc != 0) {
        out_free(&o);
        return PyErr_NoMemory();
    }
    return to_result(&o);
}

static PyObject *py_pairs(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *obj;
    int md;
    Py_ssize_t r0, r1;
    if (!PyArg_ParseTuple(args, "Oinn:pairs", &obj, &md, &r0, &r1))
        return NULL;
    if (check_distance(md) != 0)
        return NULL;
    Py_buffer v;
    if (get_hashes(obj, &v, "hashes") != 0)
        return NULL;
    Py_ssize_t n = v.len / 8;
    if (r0 < 0 || r1 < r0 || r1 > n) {
        PyErr_Format(PyExc_ValueError,
                     "rows [row_start, row_stop) must satisfy 0 <= row_start <= row_stop <= n "
                     "(%zd). Got [%zd, %zd) instead.",
                     n, r0, r1);
        PyBuffer_Release(&v);
        return NULL;
    }
    const uint64_t *h = (const uint64_t *)v.buf;
    PyObject *res = run_scan(h, h, n, 1, md, r0, r1);
    PyBuffer_Release(&v);
    return res;
}

static PyObject *py_cross(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *oa, *ob;
    int md;
    if (!PyArg_ParseTuple(args, "OOi:cross", &oa, &ob, &md))
        return NULL;
    if (check_distance(md) != 0)
        return NULL;
    Py_buffer va, vb;
    if (get_hashes(oa, &va, "a") != 0)
        return NULL;
    if (get_hashes(ob, &vb, "b") != 0) {
        PyBuffer_Release(&va);
        return NULL;
    }
    PyObject *res = run_scan((const uint64_t *)va.buf, (const uint64_t *)vb.buf, vb.len / 8, 0,
                             md, 0, va.len / 8);
    PyBuffer_Release(&va);
    PyBuffer_Release(&vb);
    return res;
}

static PyObject *py_kernel(PyObject *self, PyObject *noargs)
{
    (void)self;
    (void)noargs;
    return PyUnicode_FromString(KERNEL_NAME);
}

static PyMethodDef methods[] = {
    {"pairs", py_pairs, METH_VARARGS,
     "pairs(hashes, max_distance, row_start, row_stop) -> (i, j, d) bytearrays: every pair "
     "i < j of the rows given within max_distance bits, in (i, j) order; GIL released."},
    {"cross", py_cross, METH_VARARGS,
     "cross(a, b, max_distance) -> (i, j, d) bytearrays: every pair (a[i], b[j]) within "
     "max_distance bits, in (i, j) order; GIL released."},
    {"kernel", py_kernel, METH_NOARGS, "kernel() -> the popcount kernel in use."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_hamming",
    "All pairs of 64-bit hashes within a Hamming distance (see _hamming.c).", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__hamming(void)
{
    pick_kernel();
    return PyModule_Create(&module);
}
