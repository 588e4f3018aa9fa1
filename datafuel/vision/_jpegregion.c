/*
 * datafuel.vision._jpegregion: decode one rectangle of a JPEG with libjpeg-turbo.
 *
 * Written by hand because it makes the CPU backend faster than any library here can:
 * Pillow decodes whole images, but a RandomResizedCrop needs only its box. libjpeg-turbo
 * can skip the inverse DCT, upsampling and colour conversion of the rows above the box
 * (jpeg_skip_scanlines), of the columns beside it (jpeg_crop_scanline), and stop after
 * its last row; DCT-domain scaling (scale_denom 2, 4, 8) works together with both.
 * Pillow does not expose these calls, so this is the one C file in datafuel.
 *
 * decode_region(data, x, y, w, h, scale_denom)
 *     data: a bytes-like JPEG. (x, y, w, h): the wanted rectangle in pixels of the
 *     image scaled by 1/scale_denom (clipped to the image). Returns
 *     (pixels, x0, y0, width, height): ``pixels`` holds ``height`` rows of ``width``
 *     RGBX pixels (4 bytes each, X = 255, packed rows) starting at (x0, y0) of the
 *     scaled image, the layout Pillow maps without a copy
 *     (Image.frombuffer("RGBX", ..., "raw", "RGBX", 0, 1)). x0 <= x and
 *     x0 + width >= min(x + w, scaled width): libjpeg-turbo widens the columns to its
 *     iMCU grid. Returns None for JPEGs this path does not handle (CMYK/YCCK, more
 *     than 8 bits, unusual component counts): the caller decodes those with Pillow.
 *     Raises ValueError naming libjpeg's message for corrupt data, including a file
 *     that ends before the last row needed.
 *
 * The header is read with the GIL held (microseconds); the decode itself runs with
 * the GIL released, straight into the bytes object returned. Settings are libjpeg's
 * defaults, which are Pillow's (islow DCT, fancy upsampling), so the pixels match a
 * Pillow decode; only the column at a cut edge may differ (chroma upsampling there
 * has no neighbour), so callers decode a margin around what they read.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>

#include <jpeglib.h>
#include <jerror.h>

typedef struct {
    struct jpeg_error_mgr pub;
    jmp_buf jump;
    char message[JMSG_LENGTH_MAX];
} region_error_mgr;

static void region_error_exit(j_common_ptr cinfo)
{
    region_error_mgr *err = (region_error_mgr *)cinfo->err;
    (*cinfo->err->format_message)(cinfo, err->message);
    longjmp(err->jump, 1);
}

static void region_emit_message(j_common_ptr cinfo, int msg_level)
{
    region_error_mgr *err = (region_error_mgr *)cinfo->err;
    if (msg_level >= 0)
        return; /* trace messages */
    /* Warnings. Running out of data means the file is truncated inside the rows we
     * need: an error, as Pillow reports it. Other warnings (e.g. extraneous bytes
     * before a marker) are recoverable and Pillow ignores them too. */
    if (err->pub.msg_code == JWRN_JPEG_EOF) {
        (*cinfo->err->format_message)(cinfo, err->message);
        longjmp(err->jump, 1);
    }
    err->pub.num_warnings++;
}

static void region_output_message(j_common_ptr cinfo)
{
    (void)cinfo; /* never print from a library */
}

typedef struct {
    struct jpeg_decompress_struct cinfo;
    region_error_mgr jerr;
    PyObject *pixels;  /* the bytes object decoded into (owned) */
    PyThreadState *ts; /* non-NULL while the GIL is released */
    JDIMENSION x0, y0, width, height;
} region_state;

enum { REGION_OK, REGION_UNSUPPORTED, REGION_OUTSIDE, REGION_PYERROR };

/* Everything from the header to the last row needed. A libjpeg error longjmps out to
 * decode(), which owns the cleanup; state that must survive the jump lives in *st. */
static int decode_body(region_state *st, const unsigned char *data, size_t size, long x,
                       long y, long w, long h, int denom)
{
    j_decompress_ptr cinfo = &st->cinfo;
    jpeg_mem_src(cinfo, data, (unsigned long)size);
    jpeg_read_header(cinfo, TRUE);
    if (cinfo->data_precision != 8 ||
        !((cinfo->num_components == 3 && cinfo->jpeg_color_space == JCS_YCbCr) ||
          (cinfo->num_components == 3 && cinfo->jpeg_color_space == JCS_RGB) ||
          (cinfo->num_components == 1 && cinfo->jpeg_color_space == JCS_GRAYSCALE)))
        return REGION_UNSUPPORTED;
    cinfo->out_color_space = JCS_EXT_RGBX;
    cinfo->scale_num = 1;
    cinfo->scale_denom = (unsigned int)denom;
    jpeg_calc_output_dimensions(cinfo);

    long out_w = (long)cinfo->output_width, out_h = (long)cinfo->output_height;
    if (x < 0) { w += x; x = 0; }
    if (y < 0) { h += y; y = 0; }
    if (x + w > out_w) w = out_w - x;
    if (y + h > out_h) h = out_h - y;
    if (w <= 0 || h <= 0)
        return REGION_OUTSIDE;
    /* jpeg_crop_scanline moves x left to its iMCU grid (at most 4 x 8 pixels) */
    long w_max = w + 32 < out_w ? w + 32 : out_w;
    st->pixels = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)w_max * 4 * (Py_ssize_t)h);
    if (st->pixels == NULL)
        return REGION_PYERROR;
    unsigned char *out = (unsigned char *)PyBytes_AS_STRING(st->pixels);

    st->ts = PyEval_SaveThread();
    jpeg_start_decompress(cinfo); /* a progressive file is entropy-decoded whole here */
    JDIMENSION x0 = (JDIMENSION)x, cw = (JDIMENSION)w;
    if (cw < cinfo->output_width)
        jpeg_crop_scanline(cinfo, &x0, &cw);
    if ((long)cw > w_max)
        ERREXIT(cinfo, JERR_BAD_CROP_SPEC); /* cannot happen: libjpeg-turbo's grid is <= 32 */
    if (y > 0 && jpeg_skip_scanlines(cinfo, (JDIMENSION)y) != (JDIMENSION)y)
        ERREXIT(cinfo, JERR_INPUT_EMPTY);
    size_t stride = (size_t)cw * 4;
    JSAMPROW rows[16];
    long done = 0;
    while (done < h) {
        int n = 0;
        for (; n < 16 && done + n < h; n++)
            rows[n] = out + (size_t)(done + n) * stride;
        JDIMENSION got = jpeg_read_scanlines(cinfo, rows, (JDIMENSION)n);
        if (got == 0)
            ERREXIT(cinfo, JERR_INPUT_EMPTY);
        done += (long)got;
    }
    /* the rows below are not needed: stop here, without reading the rest of the file */
    jpeg_abort_decompress(cinfo);
    PyEval_RestoreThread(st->ts);
    st->ts = NULL;
    st->x0 = x0;
    st->y0 = (JDIMENSION)y;
    st->width = cw;
    st->height = (JDIMENSION)h;
    return REGION_OK;
}

static PyObject *decode(const unsigned char *data, size_t size, long x, long y, long w, long h,
                        int denom)
{
    region_state st;
    memset(&st, 0, sizeof(st));
    st.cinfo.err = jpeg_std_error(&st.jerr.pub);
    st.jerr.pub.error_exit = region_error_exit;
    st.jerr.pub.emit_message = region_emit_message;
    st.jerr.pub.output_message = region_output_message;
    if (setjmp(st.jerr.jump)) {
        region_state *sp = &st; /* read back through memory, never from registers */
        if (sp->ts != NULL)
            PyEval_RestoreThread(sp->ts);
        jpeg_destroy_decompress(&sp->cinfo);
        Py_XDECREF(sp->pixels);
        PyErr_Format(PyExc_ValueError, "libjpeg: %s", sp->jerr.message);
        return NULL;
    }
    jpeg_create_decompress(&st.cinfo);
    int status = decode_body(&st, data, size, x, y, w, h, denom);
    jpeg_destroy_decompress(&st.cinfo);
    switch (status) {
    case REGION_OK: {
        Py_ssize_t n = (Py_ssize_t)st.width * 4 * (Py_ssize_t)st.height;
        if (PyBytes_GET_SIZE(st.pixels) != n && _PyBytes_Resize(&st.pixels, n) < 0)
            return NULL;
        return Py_BuildValue("(Nkkkk)", st.pixels, (unsigned long)st.x0, (unsigned long)st.y0,
                             (unsigned long)st.width, (unsigned long)st.height);
    }
    case REGION_UNSUPPORTED:
        Py_RETURN_NONE;
    case REGION_OUTSIDE:
        PyErr_Format(PyExc_ValueError, "region (%ld, %ld, %ld, %ld) lies outside the image",
                     x, y, w, h);
        return NULL;
    default:
        return NULL;
    }
}

static PyObject *decode_region(PyObject *self, PyObject *args)
{
    Py_buffer buf;
    long x, y, w, h;
    int denom;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*lllli:decode_region", &buf, &x, &y, &w, &h, &denom))
        return NULL;
    PyObject *result = NULL;
    if (denom != 1 && denom != 2 && denom != 4 && denom != 8)
        PyErr_Format(PyExc_ValueError, "scale_denom must be 1, 2, 4 or 8, got %d", denom);
    else if (w <= 0 || h <= 0)
        PyErr_Format(PyExc_ValueError, "empty region %ldx%ld", w, h);
    else
        result = decode((const unsigned char *)buf.buf, (size_t)buf.len, x, y, w, h, denom);
    PyBuffer_Release(&buf);
    return result;
}

/* ---- pack_rgb: an RGBX image (exported by Pillow through the Arrow C data interface)
 * into packed RGB rows of a caller's buffer, mirrored or not, without the GIL. It replaces
 * Image.transpose + Image.tobytes("raw", "RGB") + a numpy copy: two allocations, two
 * passes and ~45 us per 224x224 image become one pass of ~10 us. The Arrow structs are
 * the stable ABI of https://arrow.apache.org/docs/format/CDataInterface.html. */
struct ArrowSchema {
    const char *format;
    const char *name;
    const char *metadata;
    int64_t flags;
    int64_t n_children;
    struct ArrowSchema **children;
    struct ArrowSchema *dictionary;
    void (*release)(struct ArrowSchema *);
    void *private_data;
};

struct ArrowArray {
    int64_t length;
    int64_t null_count;
    int64_t offset;
    int64_t n_buffers;
    int64_t n_children;
    const void **buffers;
    struct ArrowArray **children;
    struct ArrowArray *dictionary;
    void (*release)(struct ArrowArray *);
    void *private_data;
};

static PyObject *pack_rgb(PyObject *self, PyObject *args)
{
    PyObject *schema_capsule, *array_capsule;
    Py_buffer dst;
    long width, height;
    int flip;
    (void)self;
    if (!PyArg_ParseTuple(args, "OOw*llp:pack_rgb", &schema_capsule, &array_capsule, &dst, &width,
                          &height, &flip))
        return NULL;
    PyObject *result = NULL;
    struct ArrowSchema *schema = PyCapsule_GetPointer(schema_capsule, "arrow_schema");
    struct ArrowArray *array =
        schema == NULL ? NULL : PyCapsule_GetPointer(array_capsule, "arrow_array");
    if (array == NULL)
        goto done;
    /* one RGBX pixel per list entry: fixed_size_list<uint8>[4], no nulls */
    if (schema->format == NULL || strcmp(schema->format, "+w:4") != 0 || schema->n_children != 1 ||
        schema->children[0]->format == NULL || strcmp(schema->children[0]->format, "C") != 0 ||
        array->release == NULL || array->n_children != 1 || array->null_count != 0 ||
        array->children[0]->n_buffers != 2 || array->children[0]->null_count != 0 ||
        array->children[0]->buffers[1] == NULL) {
        PyErr_SetString(PyExc_ValueError, "pack_rgb: not an RGBX image exported by Pillow");
        goto done;
    }
    if (width <= 0 || height <= 0 || array->length != (int64_t)width * height ||
        dst.len != (Py_ssize_t)width * height * 3 || !PyBuffer_IsContiguous(&dst, 'C')) {
        PyErr_Format(PyExc_ValueError,
                     "pack_rgb: %ld x %ld pixels, %lld in the image, %zd bytes in the output",
                     width, height, (long long)array->length, dst.len);
        goto done;
    }
    const struct ArrowArray *child = array->children[0];
    const unsigned char *src =
        (const unsigned char *)child->buffers[1] + (child->offset + array->offset * 4);
    unsigned char *out = (unsigned char *)dst.buf;
    Py_BEGIN_ALLOW_THREADS
    for (long y = 0; y < height; y++) {
        const unsigned char *s = src + (size_t)y * width * 4;
        unsigned char *d = out + (size_t)y * width * 3;
        if (flip) {
            for (long x = 0; x < width; x++) {
                const unsigned char *p = s + (size_t)(width - 1 - x) * 4;
                d[3 * x] = p[0];
                d[3 * x + 1] = p[1];
                d[3 * x + 2] = p[2];
            }
        } else {
            for (long x = 0; x < width; x++) {
                d[3 * x] = s[4 * x];
                d[3 * x + 1] = s[4 * x + 1];
                d[3 * x + 2] = s[4 * x + 2];
            }
        }
    }
    Py_END_ALLOW_THREADS
    Py_INCREF(Py_None);
    result = Py_None;
done:
    PyBuffer_Release(&dst);
    return result;
}

static PyMethodDef methods[] = {
    {"decode_region", decode_region, METH_VARARGS,
     "decode_region(data, x, y, w, h, scale_denom) -> (rgbx_bytes, x0, y0, width, height) | None"},
    {"pack_rgb", pack_rgb, METH_VARARGS,
     "pack_rgb(arrow_schema, arrow_array, out, width, height, flip) -> None: RGBX image to RGB rows"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_jpegregion",
    "Decode one rectangle of a JPEG with libjpeg-turbo (skip rows, crop columns, DCT scale).",
    -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__jpegregion(void)
{
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddIntConstant(m, "LIBJPEG_VERSION", JPEG_LIB_VERSION) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
