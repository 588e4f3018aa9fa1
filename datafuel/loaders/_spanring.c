/* The per-stage spans' rings, in C: what a batch's spans cost is the Loader's overhead.
 *
 * Written by hand because the pure-Python recorder (datafuel/loaders/_spans.py, still the
 * fallback when this extension did not build) spent ~1.4 us a batch: a 12-int list built,
 * converted int by int into an array('Q') and trimmed, plus a tuple per wait. On the token
 * benchmark's 50 us batches that was ~3% of the Loader's throughput (the target is < 2%).
 *
 * A Ring is a fixed block of `capacity` rows of `width` uint64 values, allocated once and
 * overwritten in place (oldest first): no allocation, conversion or trimming per batch.
 * Each row starts on its own 64-byte cache line (rows are padded to whole lines): two
 * workers stamping consecutive batches never write one line from two cores (with 96-byte
 * rows they did, and the line bounced between the cores at every stamp).
 *
 *   ring.begin(pass, job, epoch, index) -> Marks
 *       reserves the next row (a batch's record), writes its key, the calling thread's
 *       ident and the first stage boundary (CLOCK_MONOTONIC ns, the clock of
 *       time.perf_counter_ns on Linux), and returns a Marks: a view of that row whose
 *       `marks[k] = ns` stores go straight into the ring. While `flag._is_profiler_enabled`
 *       is true (a torch.profiler is on), begin() calls `hook(pass, job, epoch, index)`
 *       instead, which returns a Marks subclass that also opens record_function ranges.
 *   ring.begin_as(cls, pass, job, epoch, index) -> a `cls` (a Marks subclass) on a new row
 *   ring.put(v0, ..., v{width-2})  -> one row: the values, then the calling thread's ident
 *   ring.waiter(pass, epoch, first) -> w, where w(job, t0, t1) puts the row
 *       (pass, job, epoch, first + job, t0, t1, ident) (a ring of width 7): the loop's
 *       wait record with the pass's key bound once, one call of three ints per batch
 *   ring.waiter(pass, epoch, first, tally, last) -> w, where w(job, t0, t1, samples, nbytes)
 *       puts that row and also adds the batch to `tally` (below): the loop's whole record
 *       of a batch, spans and starvation meter, in one call
 *   ring.snapshot() -> (bytes, rows): the rows, oldest first, copied under the GIL
 *   ring.reset()
 *
 * A Tally is the starvation meter's store (datafuel/loaders/_stats.py): per batch the loop's
 * wait and wall time (s, float64, in growable arrays) and running totals of samples and
 * bytes.
 *   tally.add(wait, wall, samples, nbytes)       one batch (StarvationMeter.record)
 *   tally.recorder(last) -> w, w(job, t0, t1, samples, nbytes): adds wait (t1 - t0) / 1e9
 *       and wall (t1 - last) / 1e9 (then last = t1): the meter's per-batch record from
 *       the loop's two clock reads, without the spans
 *   tally.snapshot() -> (wait bytes, wall bytes, samples, nbytes); tally.reset(); len(tally)
 * Merged with the span's wait row in one Waiter call, the loop pays one C call a batch
 * for both (before: a Python call with four keyword arguments, then the waiter's).
 *
 * Every call runs with the GIL held and none releases it, so rows are reserved and written
 * atomically with respect to other Python threads: no lock. A Marks keeps its Ring alive and
 * only ever writes inside its own row, so a stale Marks (its row reused after `capacity` newer
 * batches, or after reset()) can only write a wrong value, never out of bounds.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <pythread.h>
#include <structmember.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#define KEY 4 /* pass, job, epoch, index */

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

typedef struct {
    PyObject_HEAD
    uint64_t *buf;       /* 64-byte aligned, inside `raw` */
    void *raw;           /* what was allocated */
    Py_ssize_t capacity; /* rows */
    Py_ssize_t width;    /* values per row */
    Py_ssize_t stride;   /* values from one row's start to the next: width rounded up to 8 */
    uint64_t count;      /* rows written since the last reset */
    PyObject *flag;      /* an object with _is_profiler_enabled, or NULL */
    PyObject *hook;      /* callable(pass, job, epoch, index) -> Marks, or NULL */
} Ring;

typedef struct {
    PyObject_HEAD
    Ring *ring;
    Py_ssize_t off; /* the row starts at ring->buf[off] */
} Marks;

typedef struct {
    PyObject_HEAD
    double *wait, *wall; /* per batch, n of cap kept */
    Py_ssize_t n, cap;
    long long samples, bytes;
} Tally;

typedef struct {
    PyObject_HEAD
    Ring *ring;   /* the spans' wait ring, or NULL (a tally's recorder) */
    Tally *tally; /* the meter's, or NULL (a ring's plain waiter) */
    uint64_t pass, epoch, first;
    uint64_t last; /* the previous record's t1 (the pass's start at first): wall time */
    vectorcallfunc vectorcall;
} Waiter;

static PyTypeObject RingType;
static PyTypeObject MarksType;
static PyTypeObject WaiterType;
static PyTypeObject TallyType;
static PyObject *enabled_name; /* "_is_profiler_enabled", interned once */

/* -- Marks: a view of one row ------------------------------------------------------------- */

/* Not GC-tracked: a Marks refers only to its Ring, which never refers back (a Marks is made
 * per batch, and untracked objects do not count toward the collector's thresholds). */
static void marks_dealloc(Marks *self)
{
    Py_CLEAR(self->ring);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static Py_ssize_t marks_index(Marks *self, PyObject *key)
{
    if (self->ring == NULL) {
        PyErr_SetString(PyExc_ValueError, "these marks are not attached to a ring");
        return -1;
    }
    Py_ssize_t k = PyNumber_AsSsize_t(key, PyExc_IndexError);
    if (k == -1 && PyErr_Occurred())
        return -1;
    if (k < 0)
        k += self->ring->width;
    if (k < 0 || k >= self->ring->width) {
        PyErr_SetString(PyExc_IndexError, "marks index out of range");
        return -1;
    }
    return k;
}

static PyObject *marks_getitem(Marks *self, PyObject *key)
{
    Py_ssize_t k = marks_index(self, key);
    if (k < 0)
        return NULL;
    return PyLong_FromUnsignedLongLong(self->ring->buf[self->off + k]);
}

static int marks_setitem(Marks *self, PyObject *key, PyObject *value)
{
    if (value == NULL) {
        PyErr_SetString(PyExc_TypeError, "marks cannot be deleted");
        return -1;
    }
    Py_ssize_t k = marks_index(self, key);
    if (k < 0)
        return -1;
    unsigned long long v = PyLong_AsUnsignedLongLong(value);
    if (v == (unsigned long long)-1 && PyErr_Occurred())
        return -1;
    self->ring->buf[self->off + k] = (uint64_t)v;
    return 0;
}

static Py_ssize_t marks_len(Marks *self)
{
    return self->ring == NULL ? 0 : self->ring->width;
}

/* marks.stamp(k, ...): the clock now into each index given (one stage ends, the next begins) */
static PyObject *marks_stamp(Marks *self, PyObject *const *args, Py_ssize_t nargs)
{
    uint64_t t = now_ns();
    for (Py_ssize_t i = 0; i < nargs; i++) {
        Py_ssize_t k = marks_index(self, args[i]);
        if (k < 0)
            return NULL;
        self->ring->buf[self->off + k] = t;
    }
    Py_RETURN_NONE;
}

static PyObject *marks_key(Marks *self, PyObject *Py_UNUSED(ignored))
{
    if (self->ring == NULL)
        return PyTuple_New(0);
    uint64_t *row = self->ring->buf + self->off;
    return Py_BuildValue("(KKKK)", (unsigned long long)row[0], (unsigned long long)row[1],
                         (unsigned long long)row[2], (unsigned long long)row[3]);
}

static PyObject *marks_tolist(Marks *self, PyObject *Py_UNUSED(ignored))
{
    Py_ssize_t n = marks_len(self);
    PyObject *out = PyList_New(n);
    if (out == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *v = PyLong_FromUnsignedLongLong(self->ring->buf[self->off + i]);
        if (v == NULL) {
            Py_DECREF(out);
            return NULL;
        }
        PyList_SET_ITEM(out, i, v);
    }
    return out;
}

static PyMappingMethods marks_mapping = {
    (lenfunc)marks_len,
    (binaryfunc)marks_getitem,
    (objobjargproc)marks_setitem,
};

static PyMethodDef marks_methods[] = {
    {"stamp", (PyCFunction)(void (*)(void))marks_stamp, METH_FASTCALL,
     "stamp(k, ...): the clock now (ns) into marks[k] for each k given."},
    {"key", (PyCFunction)marks_key, METH_NOARGS, "The row's key: (pass, job, epoch, index)."},
    {"tolist", (PyCFunction)marks_tolist, METH_NOARGS, "The row's values as a list."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject MarksType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "datafuel.loaders._spanring.Marks",
    .tp_basicsize = sizeof(Marks),
    .tp_dealloc = (destructor)marks_dealloc,
    .tp_as_mapping = &marks_mapping,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_methods = marks_methods,
    .tp_doc = "One batch's record in a Ring: marks[k] = ns stores into the ring's row.",
};

/* -- Ring --------------------------------------------------------------------------------- */

/* A Ring made with Ring.__new__ and never initialised has no rows: every call refuses it. */
static int not_ready(Ring *self)
{
    if (self->buf != NULL)
        return 0;
    PyErr_SetString(PyExc_RuntimeError, "Ring is not initialised (call Ring(capacity, width))");
    return 1;
}

static uint64_t *next_row(Ring *self)
{
    uint64_t *row = self->buf + (Py_ssize_t)(self->count % (uint64_t)self->capacity) * self->stride;
    self->count++;
    return row;
}

/* args[0..n) as uint64 (an OverflowError or TypeError for anything else) */
static int read_u64s(PyObject *const *args, int n, uint64_t *out)
{
    for (int i = 0; i < n; i++) {
        unsigned long long v = PyLong_AsUnsignedLongLong(args[i]);
        if (v == (unsigned long long)-1 && PyErr_Occurred())
            return -1;
        out[i] = (uint64_t)v;
    }
    return 0;
}

static PyObject *new_marks(Ring *self, PyTypeObject *cls, PyObject *const *args)
{
    uint64_t key[KEY];
    if (read_u64s(args, KEY, key) < 0)
        return NULL;
    Marks *m = (Marks *)cls->tp_alloc(cls, 0);
    if (m == NULL)
        return NULL;
    uint64_t *row = next_row(self);
    memset(row, 0, (size_t)self->width * sizeof(uint64_t));
    memcpy(row, key, sizeof key);
    row[KEY] = (uint64_t)PyThread_get_thread_ident();
    row[KEY + 1] = now_ns();
    Py_INCREF(self);
    m->ring = self;
    m->off = row - self->buf;
    return (PyObject *)m;
}

static PyObject *ring_begin(Ring *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (not_ready(self))
        return NULL;
    if (nargs != KEY) {
        PyErr_SetString(PyExc_TypeError, "begin(pass, job, epoch, index)");
        return NULL;
    }
    if (self->flag != NULL && self->hook != NULL) {
        PyObject *on = PyObject_GetAttr(self->flag, enabled_name);
        if (on == NULL)
            PyErr_Clear();
        else {
            int yes = PyObject_IsTrue(on);
            Py_DECREF(on);
            if (yes < 0)
                return NULL;
            if (yes)
                return PyObject_Vectorcall(self->hook, args, (size_t)nargs, NULL);
        }
    }
    return new_marks(self, &MarksType, args);
}

static PyObject *ring_begin_as(Ring *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (not_ready(self))
        return NULL;
    if (nargs != KEY + 1 || !PyType_Check(args[0]) ||
        !PyType_IsSubtype((PyTypeObject *)args[0], &MarksType)) {
        PyErr_SetString(PyExc_TypeError, "begin_as(MarksSubclass, pass, job, epoch, index)");
        return NULL;
    }
    return new_marks(self, (PyTypeObject *)args[0], args + 1);
}

static PyObject *ring_put(Ring *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (not_ready(self))
        return NULL;
    if (nargs != self->width - 1) {
        PyErr_Format(PyExc_TypeError, "put() takes %zd values (the row, less the thread ident)",
                     self->width - 1);
        return NULL;
    }
    uint64_t vals[64];
    if (read_u64s(args, (int)nargs, vals) < 0) /* nargs = width - 1 <= 63 */
        return NULL;
    uint64_t *row = next_row(self);
    memcpy(row, vals, (size_t)nargs * sizeof(uint64_t));
    row[nargs] = (uint64_t)PyThread_get_thread_ident();
    Py_RETURN_NONE;
}

/* -- Waiter: ring.put with the pass's key bound ------------------------------------------- */

/* one batch into a tally: its arrays grow by doubling (a failed growth keeps what is there) */
static int tally_add(Tally *t, double wait, double wall, long long samples, long long nbytes)
{
    if (t->n == t->cap) {
        Py_ssize_t cap = t->cap ? t->cap * 2 : 1024;
        if ((size_t)cap > PY_SSIZE_T_MAX / sizeof(double)) {
            PyErr_NoMemory();
            return -1;
        }
        double *a = PyMem_Realloc(t->wait, (size_t)cap * sizeof(double));
        if (a == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        t->wait = a;
        double *b = PyMem_Realloc(t->wall, (size_t)cap * sizeof(double));
        if (b == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        t->wall = b;
        t->cap = cap;
    }
    t->wait[t->n] = wait;
    t->wall[t->n] = wall;
    t->n++;
    t->samples += samples;
    t->bytes += nbytes;
    return 0;
}

static PyObject *waiter_call(Waiter *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    Py_ssize_t want = self->tally != NULL ? 5 : 3;
    if (nargs != want || (kwnames != NULL && PyTuple_GET_SIZE(kwnames) != 0)) {
        PyErr_SetString(PyExc_TypeError, self->tally != NULL
                                             ? "w(job, t0, t1, samples, nbytes)"
                                             : "waiter(job, t0, t1)");
        return NULL;
    }
    uint64_t v[3];
    if (read_u64s(args, 3, v) < 0)
        return NULL;
    long long samples = 0, nbytes = 0;
    if (self->tally != NULL) {
        samples = PyLong_AsLongLong(args[3]);
        if (samples == -1 && PyErr_Occurred())
            return NULL;
        nbytes = PyLong_AsLongLong(args[4]);
        if (nbytes == -1 && PyErr_Occurred())
            return NULL;
        double wait = (double)(int64_t)(v[2] - v[1]) / 1e9;
        double wall = (double)(int64_t)(v[2] - self->last) / 1e9;
        if (tally_add(self->tally, wait, wall, samples, nbytes) < 0)
            return NULL;
        self->last = v[2];
    }
    if (self->ring != NULL) {
        if (not_ready(self->ring))
            return NULL;
        uint64_t *row = next_row(self->ring);
        row[0] = self->pass;
        row[1] = v[0];
        row[2] = self->epoch;
        row[3] = self->first + v[0];
        row[4] = v[1];
        row[5] = v[2];
        row[6] = (uint64_t)PyThread_get_thread_ident();
    }
    Py_RETURN_NONE;
}

static void waiter_dealloc(Waiter *self)
{
    Py_CLEAR(self->ring);
    Py_CLEAR(self->tally);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyTypeObject WaiterType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "datafuel.loaders._spanring.Waiter",
    .tp_basicsize = sizeof(Waiter),
    .tp_dealloc = (destructor)waiter_dealloc,
    /* not GC-tracked: it refers only to its Ring and Tally, which never refer back */
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_vectorcall_offset = offsetof(Waiter, vectorcall),
    .tp_call = PyVectorcall_Call,
    .tp_doc = "w(job, t0, t1[, samples, nbytes]): the loop's record of batch `job` of a pass "
              "(from Ring.waiter or Tally.recorder).",
};

static Waiter *new_waiter(Ring *ring, Tally *tally, const uint64_t key[3], uint64_t last)
{
    Waiter *w = PyObject_New(Waiter, &WaiterType);
    if (w == NULL)
        return NULL;
    Py_XINCREF(ring);
    Py_XINCREF(tally);
    w->ring = ring;
    w->tally = tally;
    w->pass = key[0];
    w->epoch = key[1];
    w->first = key[2];
    w->last = last;
    w->vectorcall = (vectorcallfunc)waiter_call;
    return w;
}

static PyObject *ring_waiter(Ring *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (not_ready(self))
        return NULL;
    if (nargs != 3 && nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "waiter(pass, epoch, first[, tally, last])");
        return NULL;
    }
    if (self->width != KEY + 3) {
        PyErr_SetString(PyExc_ValueError, "waiter() needs a ring of width 7");
        return NULL;
    }
    uint64_t key[4] = {0, 0, 0, 0};
    if (read_u64s(args, 3, key) < 0)
        return NULL;
    Tally *tally = NULL;
    if (nargs == 5) {
        if (!PyObject_TypeCheck(args[3], &TallyType)) {
            PyErr_SetString(PyExc_TypeError, "waiter()'s tally must be a Tally");
            return NULL;
        }
        tally = (Tally *)args[3];
        if (read_u64s(args + 4, 1, key + 3) < 0)
            return NULL;
    }
    return (PyObject *)new_waiter(self, tally, key, key[3]);
}

static PyObject *ring_snapshot(Ring *self, PyObject *Py_UNUSED(ignored))
{
    if (not_ready(self))
        return NULL;
    Py_ssize_t rows = self->count < (uint64_t)self->capacity ? (Py_ssize_t)self->count
                                                              : self->capacity;
    size_t row_bytes = (size_t)self->width * sizeof(uint64_t);
    PyObject *out = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)(rows * row_bytes));
    if (out == NULL)
        return NULL;
    char *dst = PyBytes_AS_STRING(out);
    uint64_t first = self->count - (uint64_t)rows; /* the oldest row kept */
    for (Py_ssize_t r = 0; r < rows; r++) {
        Py_ssize_t slot = (Py_ssize_t)((first + (uint64_t)r) % (uint64_t)self->capacity);
        memcpy(dst + (size_t)r * row_bytes, self->buf + slot * self->stride, row_bytes);
    }
    return Py_BuildValue("(Nn)", out, rows);
}

static PyObject *ring_reset(Ring *self, PyObject *Py_UNUSED(ignored))
{
    if (not_ready(self))
        return NULL;
    self->count = 0;
    memset(self->buf, 0, (size_t)self->capacity * (size_t)self->stride * sizeof(uint64_t));
    Py_RETURN_NONE;
}

static PyObject *ring_get_count(Ring *self, void *Py_UNUSED(closure))
{
    return PyLong_FromUnsignedLongLong(self->count);
}

static int ring_init(Ring *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"capacity", "width", "flag", "hook", NULL};
    Py_ssize_t capacity, width;
    PyObject *flag = Py_None, *hook = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "nn|OO", kwlist, &capacity, &width, &flag, &hook))
        return -1;
    if (capacity < 1 || width < KEY + 2 || width > 64) {
        PyErr_SetString(PyExc_ValueError, "Ring needs capacity >= 1 and 6 <= width <= 64");
        return -1;
    }
    if (hook != Py_None && !PyCallable_Check(hook)) {
        PyErr_SetString(PyExc_TypeError, "hook must be callable");
        return -1;
    }
    if (self->raw != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Ring is already initialised");
        return -1;
    }
    Py_ssize_t stride = (width + 7) / 8 * 8;
    if ((size_t)capacity > (PY_SSIZE_T_MAX - 64) / sizeof(uint64_t) / (size_t)stride) {
        PyErr_NoMemory();
        return -1;
    }
    self->raw = PyMem_Calloc((size_t)capacity * (size_t)stride * sizeof(uint64_t) + 64, 1);
    if (self->raw == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    self->buf = (uint64_t *)(((uintptr_t)self->raw + 63) & ~(uintptr_t)63);
    self->capacity = capacity;
    self->width = width;
    self->stride = stride;
    self->count = 0;
    if (flag != Py_None && hook != Py_None) {
        Py_INCREF(flag);
        Py_INCREF(hook);
        self->flag = flag;
        self->hook = hook;
    }
    return 0;
}

static int ring_traverse(Ring *self, visitproc visit, void *arg)
{
    Py_VISIT(self->flag);
    Py_VISIT(self->hook);
    return 0;
}

static int ring_clear(Ring *self)
{
    Py_CLEAR(self->flag);
    Py_CLEAR(self->hook);
    return 0;
}

static void ring_dealloc(Ring *self)
{
    PyObject_GC_UnTrack(self);
    ring_clear(self);
    PyMem_Free(self->raw);
    self->raw = NULL;
    self->buf = NULL;
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef ring_methods[] = {
    {"begin", (PyCFunction)(void (*)(void))ring_begin, METH_FASTCALL,
     "begin(pass, job, epoch, index) -> Marks on a new row (or the hook's, while profiling)."},
    {"begin_as", (PyCFunction)(void (*)(void))ring_begin_as, METH_FASTCALL,
     "begin_as(cls, pass, job, epoch, index) -> a cls (Marks subclass) on a new row."},
    {"put", (PyCFunction)(void (*)(void))ring_put, METH_FASTCALL,
     "put(v0, ...) -> one row: the values, then the calling thread's ident."},
    {"waiter", (PyCFunction)(void (*)(void))ring_waiter, METH_FASTCALL,
     "waiter(pass, epoch, first) -> w: w(job, t0, t1) puts (pass, job, epoch, first + job, t0, t1, ident)."},
    {"snapshot", (PyCFunction)ring_snapshot, METH_NOARGS,
     "(bytes, rows): the kept rows, oldest first, as native uint64."},
    {"reset", (PyCFunction)ring_reset, METH_NOARGS, "Forget every row."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef ring_getset[] = {
    {"count", (getter)ring_get_count, NULL, "Rows written since the last reset.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMemberDef ring_members[] = {
    {"capacity", T_PYSSIZET, offsetof(Ring, capacity), READONLY, "Rows kept."},
    {"width", T_PYSSIZET, offsetof(Ring, width), READONLY, "Values per row."},
    {NULL, 0, 0, 0, NULL},
};

static PyTypeObject RingType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "datafuel.loaders._spanring.Ring",
    .tp_basicsize = sizeof(Ring),
    .tp_dealloc = (destructor)ring_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_traverse = (traverseproc)ring_traverse,
    .tp_clear = (inquiry)ring_clear,
    .tp_methods = ring_methods,
    .tp_members = ring_members,
    .tp_getset = ring_getset,
    .tp_init = (initproc)ring_init,
    .tp_new = PyType_GenericNew,
    .tp_doc = "Ring(capacity, width, flag=None, hook=None): rows of uint64 spans, overwritten oldest first.",
};

/* -- Tally: the starvation meter's per-batch store ------------------------------------------ */

static PyObject *tally_add_py(Tally *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "add(wait, wall, samples, nbytes)");
        return NULL;
    }
    double wait = PyFloat_AsDouble(args[0]);
    if (wait == -1.0 && PyErr_Occurred())
        return NULL;
    double wall = PyFloat_AsDouble(args[1]);
    if (wall == -1.0 && PyErr_Occurred())
        return NULL;
    long long samples = PyLong_AsLongLong(args[2]);
    if (samples == -1 && PyErr_Occurred())
        return NULL;
    long long nbytes = PyLong_AsLongLong(args[3]);
    if (nbytes == -1 && PyErr_Occurred())
        return NULL;
    if (tally_add(self, wait, wall, samples, nbytes) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *tally_recorder(Tally *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 1) {
        PyErr_SetString(PyExc_TypeError, "recorder(last)");
        return NULL;
    }
    uint64_t key[3] = {0, 0, 0}, last;
    if (read_u64s(args, 1, &last) < 0)
        return NULL;
    return (PyObject *)new_waiter(NULL, self, key, last);
}

static PyObject *tally_snapshot(Tally *self, PyObject *Py_UNUSED(ignored))
{
    Py_ssize_t nb = self->n * (Py_ssize_t)sizeof(double);
    const char *wait = self->wait != NULL ? (const char *)self->wait : ""; /* NULL: None */
    const char *wall = self->wall != NULL ? (const char *)self->wall : "";
    return Py_BuildValue("(y#y#LL)", wait, nb, wall, nb, self->samples, self->bytes);
}

static PyObject *tally_reset(Tally *self, PyObject *Py_UNUSED(ignored))
{
    self->n = 0;
    self->samples = 0;
    self->bytes = 0;
    Py_RETURN_NONE;
}

static Py_ssize_t tally_len(Tally *self)
{
    return self->n;
}

static void tally_dealloc(Tally *self)
{
    PyMem_Free(self->wait);
    PyMem_Free(self->wall);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef tally_methods[] = {
    {"add", (PyCFunction)(void (*)(void))tally_add_py, METH_FASTCALL,
     "add(wait, wall, samples, nbytes): one batch (seconds, seconds, ints)."},
    {"recorder", (PyCFunction)(void (*)(void))tally_recorder, METH_FASTCALL,
     "recorder(last) -> w: w(job, t0, t1, samples, nbytes) adds wait (t1 - t0) and wall "
     "(t1 - last) in s (ns clock), then last = t1."},
    {"snapshot", (PyCFunction)tally_snapshot, METH_NOARGS,
     "(wait bytes, wall bytes, samples, nbytes): native float64 per batch, and the totals."},
    {"reset", (PyCFunction)tally_reset, METH_NOARGS, "Forget every batch."},
    {NULL, NULL, 0, NULL},
};

static PySequenceMethods tally_as_sequence = {
    .sq_length = (lenfunc)tally_len,
};

static PyTypeObject TallyType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "datafuel.loaders._spanring.Tally",
    .tp_basicsize = sizeof(Tally),
    .tp_dealloc = (destructor)tally_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_methods = tally_methods,
    .tp_as_sequence = &tally_as_sequence,
    .tp_new = PyType_GenericNew,
    .tp_doc = "Tally(): per-batch wait and wall times and sample and byte totals (the meter's).",
};

static PyObject *mod_now(PyObject *self, PyObject *Py_UNUSED(ignored))
{
    return PyLong_FromUnsignedLongLong(now_ns());
}

static PyMethodDef module_methods[] = {
    {"now", (PyCFunction)mod_now, METH_NOARGS, "The ring's clock (CLOCK_MONOTONIC), in ns."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_spanring",
    "Fixed rings of per-stage span rows for the Loader (see _spans.py).", -1, module_methods,
};

PyMODINIT_FUNC PyInit__spanring(void)
{
    if (PyType_Ready(&RingType) < 0 || PyType_Ready(&MarksType) < 0 ||
        PyType_Ready(&WaiterType) < 0 || PyType_Ready(&TallyType) < 0)
        return NULL;
    if (enabled_name == NULL && (enabled_name = PyUnicode_InternFromString("_is_profiler_enabled")) == NULL)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&RingType);
    Py_INCREF(&MarksType);
    Py_INCREF(&TallyType);
    if (PyModule_AddObject(m, "Ring", (PyObject *)&RingType) < 0 ||
        PyModule_AddObject(m, "Marks", (PyObject *)&MarksType) < 0 ||
        PyModule_AddObject(m, "Tally", (PyObject *)&TallyType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
