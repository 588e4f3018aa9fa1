/*
 * datafuel.vision._jpegregion: decode one rectangle of a JPEG with libjpeg-turbo.
 *
 * This module holds only the region decoder, decode_region (and LIBJPEG_VERSION); the
 * RGBX-to-RGB packer the CPU backend also uses is datafuel.vision._pack (_pack.c), which
 * needs no libjpeg.
 *
 * Written by hand because it makes the CPU backend faster than any library here can:
 * Pillow decodes whole images, but a RandomResizedCrop needs only its box. libjpeg-turbo
 * can skip the inverse DCT, upsampling and colour conversion of the rows above the box
 * (jpeg_skip_scanlines), of the columns beside it (jpeg_crop_scanline), and stop after
 * its last row; DCT-domain scaling (scale_denom 2, 4, 8) works together with both.
 * Pillow does not expose these calls.
 *
 * decode_region(data, x, y, w, h, scale_denom)
 *     data: a bytes-like JPEG. (x, y, w, h): the wanted rectangle in pixels of the
 *     image scaled by 1/scale_denom (clipped to the image). Returns
 *     (pixels, x0, y0, width, height): ``pixels`` holds ``height`` rows of ``width``
 *     RGBX pixels (4 bytes each, X = 255, packed rows) starting at (x0, y0) of the
 *     scaled image, the layout Pillow maps without a copy
 *     (Image.frombuffer("RGBX", ..., "raw", "RGBX", 0, 1)). x0 <= x and
 *     x0 + width >= min(x + w, scaled width): libjpeg-turbo widens the columns to its
 *     iMCU grid (or, for 4x2 and 2x4 luma sampling at scale 1/2 or 1/4, where its column
 *     crop is wrong, the full width is decoded: x0 = 0). Returns None for JPEGs this path does not handle (CMYK/YCCK, more
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
    /* w, h > 0 here, so w + x and h + y cannot overflow; x + w and y + h could (a caller may
     * pass any long), so they are never computed: clamp against what is left of the image */
    if (x < 0) { w += x; x = 0; }
    if (y < 0) { h += y; y = 0; }
    if (x >= out_w || y >= out_h)
        return REGION_OUTSIDE;
    if (w > out_w - x) w = out_w - x;
    if (h > out_h - y) h = out_h - y;
    if (w <= 0 || h <= 0)
        return REGION_OUTSIDE;
    /* libjpeg-turbo 2.1's jpeg_crop_scanline gives wrong pixels when the luma sampling is
     * 4x2 or 2x4 and the DCT scale is 1/2 or 1/4 (up to 255 off, against a whole decode):
     * there, decode the full width (the rows above are still skipped) */
    int h_samp = cinfo->comp_info[0].h_samp_factor, v_samp = cinfo->comp_info[0].v_samp_factor;
    int full_width = cinfo->num_components == 3 && (denom == 2 || denom == 4) &&
                     ((h_samp == 4 && v_samp == 2) || (h_samp == 2 && v_samp == 4));
    /* jpeg_crop_scanline moves x left to its iMCU grid (at most 4 x 8 pixels) */
    long w_max = full_width ? out_w : (w + 32 < out_w ? w + 32 : out_w);
    st->pixels = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)w_max * 4 * (Py_ssize_t)h);
    if (st->pixels == NULL)
        return REGION_PYERROR;
    unsigned char *out = (unsigned char *)PyBytes_AS_STRING(st->pixels);

    st->ts = PyEval_SaveThread();
    jpeg_start_decompress(cinfo); /* a progressive file is entropy-decoded whole here */
    JDIMENSION x0 = (JDIMENSION)x, cw = (JDIMENSION)w;
    if (full_width) {
        x0 = 0;
        cw = cinfo->output_width;
    } else if (cw < cinfo->output_width) {
        jpeg_crop_scanline(cinfo, &x0, &cw);
    }
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

/* st is modified between setjmp and a longjmp (jpeg_create_decompress, decode_body), so
 * it must not be a local of this function: C leaves such a local indeterminate after the
 * jump unless it is volatile, and a volatile struct cannot be handed to libjpeg (reading
 * it through libjpeg's non-volatile pointers is itself undefined). The caller owns it; the
 * pointer st is never modified here, so it stays determinate. */
static PyObject *decode(region_state *st, const unsigned char *data, size_t size, long x, long y,
                        long w, long h, int denom)
{
    memset(st, 0, sizeof(*st));
    st->cinfo.err = jpeg_std_error(&st->jerr.pub);
    st->jerr.pub.error_exit = region_error_exit;
    st->jerr.pub.emit_message = region_emit_message;
    st->jerr.pub.output_message = region_output_message;
    if (setjmp(st->jerr.jump)) {
        if (st->ts != NULL)
            PyEval_RestoreThread(st->ts);
        jpeg_destroy_decompress(&st->cinfo);
        Py_XDECREF(st->pixels);
        PyErr_Format(PyExc_ValueError, "libjpeg: %s", st->jerr.message);
        return NULL;
    }
    jpeg_create_decompress(&st->cinfo);
    int status = decode_body(st, data, size, x, y, w, h, denom);
    jpeg_destroy_decompress(&st->cinfo);
    switch (status) {
    case REGION_OK: {
        Py_ssize_t n = (Py_ssize_t)st->width * 4 * (Py_ssize_t)st->height;
        if (PyBytes_GET_SIZE(st->pixels) != n && _PyBytes_Resize(&st->pixels, n) < 0)
            return NULL;
        return Py_BuildValue("(Nkkkk)", st->pixels, (unsigned long)st->x0, (unsigned long)st->y0,
                             (unsigned long)st->width, (unsigned long)st->height);
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
    else {
        region_state st; /* outlives decode()'s setjmp: see decode() */
        result = decode(&st, (const unsigned char *)buf.buf, (size_t)buf.len, x, y, w, h, denom);
    }
    PyBuffer_Release(&buf);
    return result;
}

static PyMethodDef methods[] = {
    {"decode_region", decode_region, METH_VARARGS,
     "decode_region(data, x, y, w, h, scale_denom) -> (rgbx_bytes, x0, y0, width, height) | None"},
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
