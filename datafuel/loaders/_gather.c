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
 * rows_at(srcs, offsets, idx, row_bytes, out)
 *     The whole gather of one fixed field, so that a batch costs one call and no Python
 *     per index: idx (int64, n entries) holds global sample indices (negative ones count
 *     from the end); offsets (int64, shards + 1 entries, from 0, not decreasing) the
 *     first global row of each shard and the total. Each row goes from srcs[k] (a
 *     bytes-like buffer per shard) straight to its slot of out (n * row_bytes bytes).
 *     Returns None once copied; an int i, copying nothing, when idx[i] is out of range;
 *     a tuple (k,), copying nothing, when srcs[k] is shorter than a row it must give
 *     (a shard not mapped yet: pass a placeholder such as b"" and map it when asked).
 *     Only the shards the batch reads are looked at. The GIL is released only for
 *     copies of at least 64 KiB (see RELEASE_BYTES). Malformed arguments raise ValueError
 *     (or TypeError, BufferError) before anything is copied.
 *
 * windows_at(srcs, offsets, starts, length, out, token_size)
 *     The token windows [s, s + length) of global token positions starts (int64, n),
 *     across shard boundaries: offsets (int64, shards + 1, from 0, not decreasing) are
 *     the shards' first tokens and the total; srcs[k] holds shard k's tokens (at least
 *     offsets[k + 1] - offsets[k] of token_size bytes, 2 or 4, else ValueError, or empty:
 *     see below); out a writable C-contiguous (n, length) buffer of unsigned or signed
 *     integers of 2, 4 or 8 bytes, at least as wide as the tokens (widened as they are
 *     copied). Returns None once copied; an int i, copying nothing, when window i does not fit in
 *     [0, total); a tuple (k,), copying nothing, when srcs[k] is empty but shard k holds
 *     tokens a window reads (a shard not mapped yet: pass b"" and map it when asked; a
 *     buffer that is not empty but short is still a ValueError). Only the shards the
 *     windows read are looked at.
 *
 * windows_at(srcs, offsets, starts, length, out, token_size, fields)
 *     The same, with the document fields of the same windows (seq_len = length - 1,
 *     total = offsets[-1]) written in the same release of the GIL, as document_fields
 *     writes them: fields = (boundaries, positions, mask, cu_seqlens, max_seqlen), the
 *     last a writable int32 buffer that receives max_seqlen. One call a batch instead of
 *     two: a release and re-take of the GIL fewer, and the batch's checks in one place.
 *     Fields that are wrong raise before anything is written (the windows included).
 *
 * document_fields(boundaries, starts, seq_len, total, positions, mask, cu_seqlens)
 *     The document fields of the windows [s, s + seq_len + 1) of starts (int64, n), in one
 *     pass over the outputs (FORMAT.md, "Document fields"): boundaries (int64, sorted,
 *     strictly increasing, inside (0, total)) are the document starts; the T = seq_len
 *     inputs of a window are cut before every boundary d with s < d < s + T. Writes
 *     positions (int64, n * T: each input's place in its segment), mask (1-byte bools,
 *     n * T: 0 on a segment's last input whose target starts the next document; a
 *     window's last input only when s + T is a boundary) and cu_seqlens (int32, at least
 *     one more entry than the batch has segments: the flat start of every segment, then
 *     n * T to the end). Returns max_seqlen, the longest segment (0 for no window).
 *     Every start must lie in [0, total - T - 1] and n * T must fit in int32. The
 *     boundaries are searched, not scanned (per window a binary search for its first
 *     one after s, then a walk), so their order is checked only where a batch reads
 *     them: entries found out of order raise. Malformed arguments raise ValueError
 *     (or TypeError, BufferError) before anything is written. As for the copies, the
 *     GIL is released only where the fields are at least 64 KiB (RELEASE_BYTES).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>
#include <string.h>

#define PREFETCH_AHEAD 8
/* __builtin_prefetch's locality: 3 (prefetcht0, into every cache level), not 0
 * (prefetchnta). Measured on this project's 2-core Xeon VM, 64 random windows of 1025
 * uint16 from a 16 MB stream: 5.7 -> 17.9 GB/s; 1024 random rows of 64 float32 + int64:
 * 4.4 -> 10.5 GB/s (benchmarks/bench_loader.py's bandwidth lines). The rows and windows are
 * copied right after, so the non-temporal hint only made the copy miss again. */
#define PREFETCH_HINT 3

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

/* ---- rows_at: the whole gather of one fixed field from global sample indices --------- */

/* the shard of global row g: the last k with offsets[k] <= g (offsets ascending, n + 1
 * entries from 0 to the total; empty shards are skipped by taking the last) */
static inline Py_ssize_t shard_of(const int64_t *offsets, Py_ssize_t n_shards, int64_t g)
{
    Py_ssize_t lo = 0, hi = n_shards; /* offsets[lo] <= g < offsets[hi] */
    while (hi - lo > 1) {
        Py_ssize_t mid = lo + (hi - lo) / 2;
        if (offsets[mid] <= g)
            lo = mid;
        else
            hi = mid;
    }
    return lo;
}

/* Release the GIL only for copies that take long enough to matter (a release and re-take
 * costs a few microseconds when another thread wants the GIL). Measured on 2 cores with 2
 * worker threads (64 windows of 1025 tokens, 525 kB a batch): releasing from 64 KiB made
 * plain windows 103 -> 80 us a batch with no step, and left starvation beside a
 * GIL-holding 2 ms step unchanged (1.8%); holding it made the threads' copies run one at a
 * time. A cc -DRELEASE_BYTES=... build overrides it. */
#ifndef RELEASE_BYTES
#define RELEASE_BYTES ((Py_ssize_t)64 << 10)
#endif

/* What both entry points take: the shards' buffers (taken only as a batch reads them),
 * the offsets (checked: one entry per shard and one more, from 0, not decreasing), an
 * int64 index of n entries and the output buffer. */
typedef struct {
    PyObject *seq;
    Py_buffer offb, ib, ob;
    int got_off, got_idx, got_out;
    Py_buffer *views;
    char *taken;
    Py_ssize_t n_shards;
} global_args;

/* 0, or -1 with an exception set (close_global releases what was taken either way) */
static int open_global(global_args *a, PyObject *srcs, PyObject *off, PyObject *idx,
                       const char *idx_name, PyObject *out, int out_flags)
{
    memset(a, 0, sizeof *a);
    if ((a->seq = PySequence_Fast(srcs, "srcs must be a sequence of buffers")) == NULL)
        return -1;
    a->n_shards = PySequence_Fast_GET_SIZE(a->seq);
    if (get_index(off, &a->offb, "offsets") != 0)
        return -1;
    a->got_off = 1;
    if (get_index(idx, &a->ib, idx_name) != 0)
        return -1;
    a->got_idx = 1;
    if (PyObject_GetBuffer(out, &a->ob, PyBUF_C_CONTIGUOUS | PyBUF_WRITABLE | out_flags) != 0)
        return -1;
    a->got_out = 1;
    const int64_t *o = a->offb.buf;
    if (a->n_shards < 1 || a->offb.len / 8 != a->n_shards + 1 || o[0] != 0) {
        PyErr_Format(PyExc_ValueError,
                     "offsets must have one entry per shard and one more, from 0 (%zd shards, "
                     "%zd offsets)",
                     a->n_shards, a->offb.len / 8);
        return -1;
    }
    for (Py_ssize_t k = 0; k < a->n_shards; k++)
        if (o[k + 1] < o[k]) {
            PyErr_Format(PyExc_ValueError, "offsets must not decrease (entry %zd)", k + 1);
            return -1;
        }
    a->views = PyMem_Calloc((size_t)a->n_shards, sizeof(Py_buffer));
    a->taken = PyMem_Calloc((size_t)a->n_shards, 1);
    if (a->views == NULL || a->taken == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    return 0;
}

/* shard k's buffer, taken once; -1 with an exception */
static int take_shard(global_args *a, Py_ssize_t k)
{
    if (a->taken[k])
        return 0;
    if (PyObject_GetBuffer(PySequence_Fast_GET_ITEM(a->seq, k), &a->views[k],
                           PyBUF_C_CONTIGUOUS) != 0)
        return -1;
    a->taken[k] = 1;
    return 0;
}

static void close_global(global_args *a)
{
    if (a->views != NULL && a->taken != NULL)
        for (Py_ssize_t k = 0; k < a->n_shards; k++)
            if (a->taken[k])
                PyBuffer_Release(&a->views[k]);
    PyMem_Free(a->views);
    PyMem_Free(a->taken);
    if (a->got_out)
        PyBuffer_Release(&a->ob);
    if (a->got_idx)
        PyBuffer_Release(&a->ib);
    if (a->got_off)
        PyBuffer_Release(&a->offb);
    Py_XDECREF(a->seq);
}

static PyObject *rows_at(PyObject *self, PyObject *args)
{
    PyObject *srcs_obj, *off_obj, *idx_obj, *out_obj;
    Py_ssize_t row_bytes;
    (void)self;
    if (!PyArg_ParseTuple(args, "OOOnO:rows_at", &srcs_obj, &off_obj, &idx_obj, &row_bytes,
                          &out_obj))
        return NULL;
    PyObject *result = NULL;
    int64_t *where = NULL;
    global_args a;
    if (open_global(&a, srcs_obj, off_obj, idx_obj, "idx", out_obj, 0) != 0)
        goto done;
    const int64_t *off = a.offb.buf, *idx = a.ib.buf;
    const Py_ssize_t n = a.ib.len / 8, n_shards = a.n_shards;
    Py_buffer *views = a.views;
    if (row_bytes < 1 || a.ob.len / row_bytes != n || a.ob.len % row_bytes) {
        PyErr_Format(PyExc_ValueError,
                     "out must be n * row_bytes bytes (n %zd, row_bytes %zd, out %zd bytes)", n,
                     row_bytes, a.ob.len);
        goto done;
    }
    const int64_t total = off[n_shards];
    if ((where = PyMem_Malloc((size_t)(2 * n + 1) * sizeof(int64_t))) == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    /* every index located and checked, and each shard it needs taken once, before any copy */
    for (Py_ssize_t i = 0; i < n; i++) {
        int64_t g = idx[i];
        if (g < 0 && g >= -total)
            g += total;
        if (g < 0 || g >= total) {
            result = PyLong_FromSsize_t(i); /* the caller names the index and the set */
            goto done;
        }
        Py_ssize_t k = shard_of(off, n_shards, g);
        if (take_shard(&a, k) != 0)
            goto done;
        int64_t local = g - off[k];
        if (local >= views[k].len / row_bytes) {
            /* the buffer is short for its shard: not mapped yet (the caller maps it and
             * calls again), or a shard whose file is shorter than its manifest says */
            result = Py_BuildValue("(n)", k);
            goto done;
        }
        where[2 * i] = k;
        where[2 * i + 1] = local;
    }
    {
        PyThreadState *save = a.ob.len >= RELEASE_BYTES ? PyEval_SaveThread() : NULL;
        char *dst = a.ob.buf;
        for (Py_ssize_t i = 0; i < n; i++) {
            if (i + PREFETCH_AHEAD < n) {
                const char *next = (const char *)views[where[2 * (i + PREFETCH_AHEAD)]].buf +
                                   where[2 * (i + PREFETCH_AHEAD) + 1] * row_bytes;
                for (Py_ssize_t b = 0; b < row_bytes; b += 64)
                    __builtin_prefetch(next + b, 0, PREFETCH_HINT);
            }
            memcpy(dst + i * row_bytes,
                   (const char *)views[where[2 * i]].buf + where[2 * i + 1] * row_bytes,
                   (size_t)row_bytes);
        }
        if (save != NULL)
            PyEval_RestoreThread(save);
    }
    result = Py_None;
    Py_INCREF(result);
done:
    PyMem_Free(where);
    close_global(&a);
    return result;
}

/* ---- document_fields: position_ids, loss_mask, cu_seqlens of token windows ----------- */

/* a writable C-contiguous buffer of `count` items of `size` bytes whose format is one of
 * `formats` (one letter each); -1 with an exception */
static int get_out(PyObject *obj, Py_buffer *view, const char *name, Py_ssize_t size,
                   const char *formats, Py_ssize_t count)
{
    if (PyObject_GetBuffer(obj, view, PyBUF_C_CONTIGUOUS | PyBUF_WRITABLE | PyBUF_FORMAT) != 0)
        return -1;
    const char *f = view->format ? view->format : "B";
    if (*f == '=' || *f == '@' || *f == '<')
        f++;
    if (view->itemsize != size || f[0] == '\0' || f[1] != '\0' || strchr(formats, f[0]) == NULL ||
        view->len / size < count) {
        PyErr_Format(PyExc_ValueError,
                     "%s must be a writable contiguous buffer of at least %zd items of %zd bytes "
                     "(format one of '%s'); got %zd bytes of items of %zd, format '%s'",
                     name, count, size, formats, view->len, view->itemsize, view->format);
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

/* index of the first boundary > s (u ascending): branch-free so that a batch's searches,
 * run in lockstep, overlap their cache misses */
static void first_after(const int64_t *u, Py_ssize_t nu, const int64_t *s, Py_ssize_t n,
                        Py_ssize_t *lo)
{
    if (nu == 0) {
        for (Py_ssize_t j = 0; j < n; j++)
            lo[j] = 0;
        return;
    }
    for (Py_ssize_t j = 0; j < n; j++)
        lo[j] = 0;
    /* invariant: the answer lies in [lo, lo + len] (u[lo - 1] <= s where lo > 0) */
    Py_ssize_t len = nu;
    while (len > 1) {
        Py_ssize_t half = len / 2;
        for (Py_ssize_t j = 0; j < n; j++)
            lo[j] += half & -(Py_ssize_t)(u[lo[j] + half - 1] <= s[j]);
        len -= half;
    }
    for (Py_ssize_t j = 0; j < n; j++)
        lo[j] += u[lo[j]] <= s[j];
}

/* What document_fields and windows_at's fields share: the boundaries, the three outputs
 * and the scratch of one batch of n windows of t inputs (fields_open, then without the
 * GIL fields_plan and fields_write, then fields_close) */
typedef struct {
    Py_buffer ub, pb, mb, cb;
    int got; /* how many of the four views are held, in that order */
    const int64_t *u;
    Py_ssize_t nu, t, flat, n_cu;
    Py_ssize_t *lo;
    int64_t *ramp;
    Py_ssize_t bad, segments; /* what fields_plan found wrong, for fields_raise */
} fields_args;

static void fields_close(fields_args *f)
{
    PyMem_Free(f->lo);
    PyMem_Free(f->ramp);
    f->lo = NULL;
    f->ramp = NULL;
    Py_buffer *views[] = {&f->ub, &f->pb, &f->mb, &f->cb};
    for (int k = 0; k < f->got; k++)
        PyBuffer_Release(views[k]);
    f->got = 0;
}

/* 0, or -1 with an exception (fields_close releases what was taken either way): every
 * check that needs no start */
static int fields_open(fields_args *f, PyObject *u_obj, PyObject *pos_obj, PyObject *mask_obj,
                       PyObject *cu_obj, Py_ssize_t n, Py_ssize_t t, long long total)
{
    memset(f, 0, sizeof *f);
    if (get_index(u_obj, &f->ub, "boundaries") != 0)
        return -1;
    f->got++;
    f->u = f->ub.buf;
    f->nu = f->ub.len / 8;
    f->t = t;
    if (t < 1 || total < 0 || (n > 0 && t > (INT32_MAX - 1) / n)) {
        PyErr_Format(PyExc_ValueError,
                     "seq_len must be >= 1, total >= 0 and n * seq_len < 2**31 (n %zd, seq_len "
                     "%zd, total %lld)",
                     n, t, total);
        return -1;
    }
    f->flat = n * t;
    if (get_out(pos_obj, &f->pb, "positions", 8, "ql", f->flat) != 0)
        return -1;
    f->got++;
    if (get_out(mask_obj, &f->mb, "mask", 1, "?Bb", f->flat) != 0)
        return -1;
    f->got++;
    if (get_out(cu_obj, &f->cb, "cu_seqlens", 4, "iI", 1) != 0)
        return -1;
    f->got++;
    f->n_cu = f->cb.len / 4;
    if (f->nu > 0 && (f->u[0] <= 0 || f->u[f->nu - 1] >= total)) {
        PyErr_Format(PyExc_ValueError,
                     "boundaries must lie inside (0, total) (total %lld; first %lld, last %lld)",
                     total, (long long)f->u[0], (long long)f->u[f->nu - 1]);
        return -1;
    }
    /* lo: each window's first boundary after its start; ramp: 0 .. T - 1, the positions
     * of a segment copied (memcpy's wide stores) rather than counted */
    f->lo = PyMem_Malloc((size_t)(n > 0 ? n : 1) * sizeof(Py_ssize_t));
    f->ramp = PyMem_Malloc((size_t)(n > 0 ? t : 1) * sizeof(int64_t));
    if (f->lo == NULL || f->ramp == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t k = 0; k < (n > 0 ? t : 0); k++)
        f->ramp[k] = k;
    return 0;
}

/* the bytes fields_write writes (for the GIL's release threshold) */
static Py_ssize_t fields_bytes(const fields_args *f) { return f->flat * 9; }

/* Without the GIL: each window's first boundary found, and checked before anything is
 * written: every boundary a window reads in order, and the batch's segments fit in
 * cu_seqlens. 0, else 1 (f->bad or f->segments say which, for fields_raise). */
static int fields_plan(fields_args *f, const int64_t *st, Py_ssize_t n)
{
    const int64_t *u = f->u;
    const Py_ssize_t nu = f->nu, t = f->t;
    first_after(u, nu, st, n, f->lo);
    Py_ssize_t segments = 0, bad = -1;
    for (Py_ssize_t j = 0; j < n && bad < 0; j++) {
        const int64_t s = st[j], end = s + t;
        Py_ssize_t i = f->lo[j];
        if ((i > 0 && u[i - 1] > s) || (i < nu && u[i] <= s))
            bad = i;
        for (int64_t prev = s; bad < 0 && i < nu && u[i] < end; prev = u[i], i++) {
            if (u[i] <= prev)
                bad = i;
            segments++;
        }
        segments++;
    }
    f->bad = bad;
    f->segments = segments;
    return bad >= 0 || segments > f->n_cu - 1;
}

/* with the GIL: the error fields_plan found */
static void fields_raise(const fields_args *f)
{
    if (f->bad >= 0)
        PyErr_Format(PyExc_ValueError,
                     "boundaries must be sorted and strictly increasing (entry %zd is out of "
                     "order)",
                     f->bad);
    else
        PyErr_Format(PyExc_ValueError,
                     "cu_seqlens holds %zd entries; the batch has %zd segments and needs one "
                     "more",
                     f->n_cu, f->segments);
}

/* Without the GIL, after fields_plan: positions, mask and cu_seqlens written; returns
 * max_seqlen */
static int64_t fields_write(fields_args *f, const int64_t *st, Py_ssize_t n)
{
    const int64_t *u = f->u;
    const Py_ssize_t nu = f->nu, t = f->t, n_cu = f->n_cu;
    int64_t *pos = f->pb.buf;
    char *mask = f->mb.buf;
    int32_t *cu = f->cb.buf;
    Py_ssize_t c = 0;
    int64_t longest = 0;
    for (Py_ssize_t j = 0; j < n; j++) {
        const int64_t s = st[j], end = s + t;
        const Py_ssize_t base = j * t;
        Py_ssize_t i = f->lo[j];
        int64_t a = 0; /* the segment's first input in the window */
        for (;;) {
            const int inner = i < nu && u[i] < end;
            const int64_t z = inner ? u[i] - s : t; /* its end */
            memcpy(pos + base + a, f->ramp, (size_t)(z - a) * sizeof(int64_t));
            memset(mask + base + a, 1, (size_t)(z - a));
            cu[c++] = (int32_t)(base + a);
            if (z - a > longest)
                longest = z - a;
            if (!inner) {
                if (i < nu && u[i] == end)
                    mask[base + t - 1] = 0; /* the last target starts a document */
                break;
            }
            mask[base + z - 1] = 0;
            a = z;
            i++;
        }
    }
    for (; c < n_cu; c++)
        cu[c] = (int32_t)f->flat;
    return longest;
}

static PyObject *document_fields(PyObject *self, PyObject *args)
{
    PyObject *u_obj, *st_obj, *pos_obj, *mask_obj, *cu_obj;
    Py_ssize_t t;
    long long total;
    (void)self;
    if (!PyArg_ParseTuple(args, "OOnLOOO:document_fields", &u_obj, &st_obj, &t, &total,
                          &pos_obj, &mask_obj, &cu_obj))
        return NULL;
    PyObject *result = NULL;
    Py_buffer sb;
    fields_args f;
    memset(&f, 0, sizeof f);
    if (get_index(st_obj, &sb, "starts") != 0)
        return NULL;
    const int64_t *st = sb.buf;
    const Py_ssize_t n = sb.len / 8;
    if (fields_open(&f, u_obj, pos_obj, mask_obj, cu_obj, n, t, total) != 0)
        goto done;
    for (Py_ssize_t j = 0; j < n; j++)
        if (st[j] < 0 || st[j] > total - t - 1) {
            PyErr_Format(PyExc_ValueError,
                         "starts[%zd] = %lld is not a window start: windows of %zd tokens of a "
                         "stream of %lld need starts in [0, %lld]",
                         j, (long long)st[j], t + 1, total, total - t - 1);
            goto done;
        }
    PyThreadState *save = fields_bytes(&f) >= RELEASE_BYTES ? PyEval_SaveThread() : NULL;
    if (fields_plan(&f, st, n) != 0) {
        if (save != NULL)
            PyEval_RestoreThread(save);
        fields_raise(&f);
        goto done;
    }
    const int64_t longest = fields_write(&f, st, n);
    if (save != NULL)
        PyEval_RestoreThread(save);
    result = PyLong_FromLongLong(longest);
done:
    fields_close(&f);
    PyBuffer_Release(&sb);
    return result;
}

/* ---- windows_at: token windows of global starts, across shard boundaries -------------- */

static PyObject *windows_at(PyObject *self, PyObject *args)
{
    PyObject *srcs_obj, *off_obj, *st_obj, *out_obj, *fields_obj = NULL;
    Py_ssize_t length;
    int item;
    (void)self;
    if (!PyArg_ParseTuple(args, "OOOnOi|O:windows_at", &srcs_obj, &off_obj, &st_obj, &length,
                          &out_obj, &item, &fields_obj))
        return NULL;
    PyObject *result = NULL;
    global_args a;
    fields_args *f = NULL;
    Py_buffer xb;
    int got_x = 0;
    if (open_global(&a, srcs_obj, off_obj, st_obj, "starts", out_obj, PyBUF_FORMAT) != 0)
        goto done;
    const int64_t *off = a.offb.buf, *st = a.ib.buf;
    const Py_ssize_t n = a.ib.len / 8, n_shards = a.n_shards;
    Py_buffer *views = a.views;
    const int os = (int)a.ob.itemsize;
    if (item != 2 && item != 4) {
        PyErr_Format(PyExc_ValueError, "the token size must be 2 or 4 bytes, got %d", item);
        goto done;
    }
    if (length < 1 || (os != 2 && os != 4 && os != 8) || os < item ||
        a.ob.len / length / os != n || a.ob.len != n * length * os) {
        PyErr_Format(PyExc_ValueError,
                     "out must be (n, length) integers of 2, 4 or 8 bytes, at least the token "
                     "size (n %zd, length %zd, out %zd bytes of items of %d, tokens of %d)",
                     n, length, a.ob.len, os, item);
        goto done;
    }
    const int64_t total = off[n_shards];
    /* every window checked, and each shard piece it reads taken and checked, before any copy */
    for (Py_ssize_t i = 0; i < n; i++) {
        int64_t s = st[i];
        if (s < 0 || s > total - length) {
            result = PyLong_FromSsize_t(i); /* the caller names the start */
            goto done;
        }
        for (int64_t pos = s, left = length; left > 0;) {
            Py_ssize_t k = shard_of(off, n_shards, pos);
            int64_t piece = off[k + 1] - pos < left ? off[k + 1] - pos : left;
            if (!a.taken[k]) {
                if (take_shard(&a, k) != 0)
                    goto done;
                if (views[k].len / item < off[k + 1] - off[k]) {
                    if (views[k].len == 0) {
                        /* an empty placeholder (b""): a shard not mapped yet, which the
                         * caller maps before calling again */
                        result = Py_BuildValue("(n)", k);
                        goto done;
                    }
                    PyErr_Format(PyExc_ValueError,
                                 "shard %zd holds %zd tokens, fewer than its offsets say (%lld)",
                                 k, views[k].len / item, (long long)(off[k + 1] - off[k]));
                    goto done;
                }
            }
            pos += piece;
            left -= piece;
        }
    }
    if (fields_obj != NULL && fields_obj != Py_None) {
        /* the document fields of the same windows, written in the same release of the GIL */
        PyObject *u_obj, *pos_obj, *mask_obj, *cu_obj, *x_obj;
        if (!PyTuple_Check(fields_obj)) {
            PyErr_SetString(PyExc_TypeError,
                            "fields must be a tuple (boundaries, positions, mask, cu_seqlens, "
                            "max_seqlen) or None");
            goto done;
        }
        if (!PyArg_ParseTuple(fields_obj, "OOOOO:fields", &u_obj, &pos_obj, &mask_obj, &cu_obj,
                              &x_obj))
            goto done;
        if (length < 2) {
            PyErr_Format(PyExc_ValueError,
                         "document fields need windows of at least 2 tokens (length %zd)",
                         length);
            goto done;
        }
        if ((f = PyMem_Calloc(1, sizeof(fields_args))) == NULL) {
            PyErr_NoMemory();
            goto done;
        }
        if (fields_open(f, u_obj, pos_obj, mask_obj, cu_obj, n, length - 1, (long long)total) !=
            0)
            goto done;
        if (get_out(x_obj, &xb, "max_seqlen", 4, "iI", 1) != 0)
            goto done;
        got_x = 1;
    }
    {
        const Py_ssize_t work = a.ob.len + (f != NULL ? fields_bytes(f) : 0);
        PyThreadState *save = work >= RELEASE_BYTES ? PyEval_SaveThread() : NULL;
        if (f != NULL && fields_plan(f, st, n) != 0) {
            /* boundaries out of order, or cu_seqlens short: nothing written */
            if (save != NULL)
                PyEval_RestoreThread(save);
            fields_raise(f);
            goto done;
        }
        char *dst = a.ob.buf;
        for (Py_ssize_t i = 0; i < n; i++) {
            if (i + 2 < n) {
                Py_ssize_t k = shard_of(off, n_shards, st[i + 2]);
                const char *next = (const char *)views[k].buf + (st[i + 2] - off[k]) * item;
                Py_ssize_t reach = (off[k + 1] - st[i + 2]) * item;
                for (Py_ssize_t b = 0; b < length * item && b < 4096 && b < reach; b += 64)
                    __builtin_prefetch(next + b, 0, PREFETCH_HINT);
            }
            char *d = dst + i * length * os;
            for (int64_t pos = st[i], left = length; left > 0;) {
                Py_ssize_t k = shard_of(off, n_shards, pos);
                int64_t piece = off[k + 1] - pos < left ? off[k + 1] - pos : left;
                copy_window((const char *)views[k].buf + (pos - off[k]) * item, d, piece, item,
                            os);
                d += piece * os;
                pos += piece;
                left -= piece;
            }
        }
        const int64_t longest = f != NULL ? fields_write(f, st, n) : 0;
        if (save != NULL)
            PyEval_RestoreThread(save);
        if (got_x)
            *(int32_t *)xb.buf = (int32_t)longest;
    }
    result = Py_None;
    Py_INCREF(result);
done:
    if (got_x)
        PyBuffer_Release(&xb);
    if (f != NULL) {
        fields_close(f);
        PyMem_Free(f);
    }
    close_global(&a);
    return result;
}


static PyMethodDef methods[] = {
    {"windows_at", windows_at, METH_VARARGS,
     "windows_at(srcs, offsets, starts, length, out, token_size): windows of global starts."},
    {"rows_at", rows_at, METH_VARARGS,
     "rows_at(srcs, offsets, idx, row_bytes, out): rows of global indices into batch order."},
    {"document_fields", document_fields, METH_VARARGS,
     "document_fields(boundaries, starts, seq_len, total, positions, mask, cu_seqlens): "
     "the document fields of token windows; returns max_seqlen."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_gather",
    "A batch's rows or token windows from several shards into their slots.", -1,
    methods,
};

PyMODINIT_FUNC PyInit__gather(void) { return PyModule_Create(&module); }
