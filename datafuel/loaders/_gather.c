/*
 * datafuel.loaders._gather: a batch's rows (or token windows) from several shards into
 * their final batch slots, in one pass without the GIL.
 *
 * Written by hand because numpy's route for a batch of random rows from several shards is
 * a sort by shard, one np.take per shard into a staging buffer and a second take back
 * into batch order: two copies and a Python call per shard. Here every row goes straight
 * from its shard to its slot, with the next rows' cache lines requested ahead
 * (__builtin_prefetch): random rows cost memory latency, and overlapping the misses is
 * what brings a gather near memcpy's bandwidth.
 *
 * rows(srcs, shard, local, row_bytes, out)
 *     srcs: a sequence of bytes-like buffers (each shard's field data). shard, local:
 *     C-contiguous int64 buffers of n entries: row i of the batch is row local[i] of
 *     srcs[shard[i]]. out: a writable C-contiguous buffer of exactly n * row_bytes bytes.
 *
 * windows(srcs, shard, local, length, out, token_size)
 *     srcs: token buffers per shard, of unsigned tokens of token_size bytes (2 or 4);
 *     window i is the `length` tokens from token
 *     local[i] of srcs[shard[i]]. out: a writable C-contiguous (n, length) buffer of
 *     unsigned or signed integers of 2, 4 or 8 bytes, at least as wide as the tokens
 *     (they are widened as they are copied).
 *
 * Both check every index against its shard (ValueError naming the first bad entry)
 * before copying anything. Return None.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>
#include <string.h>

#define PREFETCH_AHEAD 8

typedef struct {
    Py_buffer *views;
    Py_ssize_t count;
    PyObject *seq;
} shard_views;

static void release_views(shard_views *sv)
{
    for (Py_ssize_t i = 0; i < sv->count; i++)
        PyBuffer_Release(&sv->views[i]);
    PyMem_Free(sv->views);
    Py_XDECREF(sv->seq);
}

static int get_views(PyObject *obj, shard_views *sv)
{
    sv->views = NULL;
    sv->count = 0;
    sv->seq = PySequence_Fast(obj, "srcs must be a sequence of buffers");
    if (sv->seq == NULL)
        return -1;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(sv->seq);
    sv->views = PyMem_Calloc((size_t)(n ? n : 1), sizeof(Py_buffer));
    if (sv->views == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    for (; sv->count < n; sv->count++)
        if (PyObject_GetBuffer(PySequence_Fast_GET_ITEM(sv->seq, sv->count),
                               &sv->views[sv->count], PyBUF_C_CONTIGUOUS) != 0)
            return -1;
    return 0;
}

static int get_index(PyObject *obj, Py_buffer *view, const char *name)
{
    if (PyObject_GetBuffer(obj, view, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) != 0)
        return -1;
    const char *f = view->format ? view->format : "B";
    if (*f == '=' || *f == '@')
        f++;
    if (view->itemsize != 8 || !(strcmp(f, "q") == 0 || strcmp(f, "l") == 0)) {
        PyErr_Format(PyExc_ValueError, "%s must be a contiguous int64 array", name);
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

/* what both entry points take: the shards' buffers, the shard and local indices, out */
typedef struct {
    shard_views sv;
    Py_buffer sb, lb, ob;
    int got_s, got_l, got_o;
} gather_args;

static int open_args(gather_args *a, PyObject *srcs, PyObject *shard, PyObject *local,
                     PyObject *out, int out_flags)
{
    a->got_s = a->got_l = a->got_o = 0;
    if (get_views(srcs, &a->sv) != 0)
        return -1;
    if (get_index(shard, &a->sb, "shard") != 0)
        return -1;
    a->got_s = 1;
    if (get_index(local, &a->lb, "local") != 0)
        return -1;
    a->got_l = 1;
    if (PyObject_GetBuffer(out, &a->ob, PyBUF_C_CONTIGUOUS | PyBUF_WRITABLE | out_flags) != 0)
        return -1;
    a->got_o = 1;
    return 0;
}

static void close_args(gather_args *a)
{
    if (a->got_o)
        PyBuffer_Release(&a->ob);
    if (a->got_l)
        PyBuffer_Release(&a->lb);
    if (a->got_s)
        PyBuffer_Release(&a->sb);
    release_views(&a->sv);
}

static PyObject *rows(PyObject *self, PyObject *args)
{
    PyObject *srcs_obj, *shard_obj, *local_obj, *out_obj;
    Py_ssize_t row_bytes;
    (void)self;
    if (!PyArg_ParseTuple(args, "OOOnO:rows", &srcs_obj, &shard_obj, &local_obj, &row_bytes,
                          &out_obj))
        return NULL;
    gather_args a;
    PyObject *result = NULL;
    if (open_args(&a, srcs_obj, shard_obj, local_obj, out_obj, 0) != 0)
        goto done;
    shard_views sv = a.sv;
    Py_buffer sb = a.sb, lb = a.lb, ob = a.ob;
    Py_ssize_t n = sb.len / 8;
    if (lb.len / 8 != n || row_bytes < 1 || ob.len / row_bytes != n || ob.len % row_bytes) {
        PyErr_Format(PyExc_ValueError,
                     "shard and local must have n entries and out n * row_bytes bytes (n %zd, "
                     "local %zd, row_bytes %zd, out %zd bytes)",
                     n, lb.len / 8, row_bytes, ob.len);
        goto done;
    }
    const int64_t *sh = sb.buf, *lo = lb.buf;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (sh[i] < 0 || sh[i] >= sv.count || lo[i] < 0 ||
            lo[i] >= sv.views[sh[i]].len / row_bytes) {
            PyErr_Format(PyExc_ValueError,
                         "entry %zd: row %lld of shard %lld is not there (%zd shards)", i,
                         (long long)lo[i], (long long)sh[i], sv.count);
            goto done;
        }
    }
    Py_BEGIN_ALLOW_THREADS
    char *dst = ob.buf;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (i + PREFETCH_AHEAD < n) {
            const char *next = (const char *)sv.views[sh[i + PREFETCH_AHEAD]].buf +
                               lo[i + PREFETCH_AHEAD] * row_bytes;
            for (Py_ssize_t b = 0; b < row_bytes; b += 64)
                __builtin_prefetch(next + b, 0, 0);
        }
        memcpy(dst + i * row_bytes, (const char *)sv.views[sh[i]].buf + lo[i] * row_bytes,
               (size_t)row_bytes);
    }
    Py_END_ALLOW_THREADS
    result = Py_None;
    Py_INCREF(result);
done:
    close_args(&a);
    return result;
}

/* one window of `length` tokens of size `in` into out items of size `os` (widened) */
static void copy_window(const char *src, char *dst, Py_ssize_t length, int in, int os)
{
    if (in == os) {
        memcpy(dst, src, (size_t)length * (size_t)in);
        return;
    }
    for (Py_ssize_t t = 0; t < length; t++) {
        uint64_t v = in == 2 ? ((const uint16_t *)src)[t] : ((const uint32_t *)src)[t];
        if (os == 4)
            ((uint32_t *)dst)[t] = (uint32_t)v;
        else
            ((uint64_t *)dst)[t] = v;
    }
}

static PyObject *windows(PyObject *self, PyObject *args)
{
    PyObject *srcs_obj, *shard_obj, *local_obj, *out_obj;
    Py_ssize_t length;
    int item;
    (void)self;
    if (!PyArg_ParseTuple(args, "OOOnOi:windows", &srcs_obj, &shard_obj, &local_obj, &length,
                          &out_obj, &item))
        return NULL;
    gather_args a;
    PyObject *result = NULL;
    if (open_args(&a, srcs_obj, shard_obj, local_obj, out_obj, PyBUF_FORMAT) != 0)
        goto done;
    shard_views sv = a.sv;
    Py_buffer sb = a.sb, lb = a.lb, ob = a.ob;
    Py_ssize_t n = sb.len / 8;
    int os = (int)ob.itemsize;
    if (item != 2 && item != 4) {
        PyErr_Format(PyExc_ValueError, "the token size must be 2 or 4 bytes, got %d", item);
        goto done;
    }
    if (lb.len / 8 != n || length < 1 || (os != 2 && os != 4 && os != 8) || os < item ||
        ob.len != n * length * os) {
        PyErr_Format(PyExc_ValueError,
                     "out must be (n, length) integers of 2, 4 or 8 bytes, at least the token "
                     "size (n %zd, length %zd, out %zd bytes of items of %d, tokens of %d)",
                     n, length, ob.len, os, item);
        goto done;
    }
    const int64_t *sh = sb.buf, *lo = lb.buf;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (sh[i] < 0 || sh[i] >= sv.count || lo[i] < 0 ||
            lo[i] > sv.views[sh[i]].len / item - length) {
            PyErr_Format(PyExc_ValueError,
                         "entry %zd: tokens [%lld, %lld + %zd) are not all in shard %lld "
                         "(%zd shards)",
                         i, (long long)lo[i], (long long)lo[i], length, (long long)sh[i],
                         sv.count);
            goto done;
        }
    }
    Py_BEGIN_ALLOW_THREADS
    char *dst = ob.buf;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (i + 2 < n) {
            const char *next = (const char *)sv.views[sh[i + 2]].buf + lo[i + 2] * item;
            for (Py_ssize_t b = 0; b < length * item && b < 4096; b += 64)
                __builtin_prefetch(next + b, 0, 0);
        }
        copy_window((const char *)sv.views[sh[i]].buf + lo[i] * item, dst + i * length * os,
                    length, item, os);
    }
    Py_END_ALLOW_THREADS
    result = Py_None;
    Py_INCREF(result);
done:
    close_args(&a);
    return result;
}

static PyMethodDef methods[] = {
    {"rows", rows, METH_VARARGS,
     "rows(srcs, shard, local, row_bytes, out): rows of several shards into batch order."},
    {"windows", windows, METH_VARARGS,
     "windows(srcs, shard, local, length, out, token_size): token windows into batch order."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_gather",
    "A batch's rows or token windows from several shards into their slots, GIL released.", -1,
    methods,
};

PyMODINIT_FUNC PyInit__gather(void) { return PyModule_Create(&module); }
