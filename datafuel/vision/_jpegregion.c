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
 * plan_batch(items, indices, spec, seed, epoch, salt, params, status)
 *     What the batch path's Python drew per image, in one call, so that no Python runs
 *     per image: for each JPEG, its header as vision._jpeg.jpeg_header reads it, then
 *     vision._params.sample_params and draft_scale (the same splitmix64 draws, the same
 *     libm log/exp/sqrt and round-half-even, so the same boxes bit for bit; a test
 *     holds them equal) into params[i] = (x0, y0, x1, y1, scale, flip). status[i] = 1
 *     for a sample the per-image path takes (not a JPEG this reader understands, an
 *     APP1 segment, a rotation). spec = (random_crop, scale0, scale1, ratio0, ratio1,
 *     shorter, size, flip_p, max_degrees, draft). Runs with the GIL held (~0.3 us an
 *     image).
 *
 * The header is read with the GIL held (microseconds); the decode itself runs with
 * the GIL released, straight into the bytes object returned. Settings are libjpeg's
 * defaults, which are Pillow's (islow DCT, fancy upsampling), so the pixels match a
 * Pillow decode; only the column at a cut edge may differ (chroma upsampling there
 * has no neighbour), so callers decode a margin around what they read.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <math.h>
#include <pthread.h>
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
    PyObject *pixels;   /* Python mode: the bytes object decoded into (owned) */
    unsigned char *raw; /* native mode: malloc'd pixels (owned) */
    int native;         /* 1: called without the GIL (decode_batch's threads), no Python */
    PyThreadState *ts;  /* non-NULL while the GIL is released (Python mode) */
    JDIMENSION x0, y0, width, height;
} region_state;

enum { REGION_OK, REGION_UNSUPPORTED, REGION_OUTSIDE, REGION_PYERROR, REGION_NOMEM };

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
    unsigned char *out;
    if (st->native) {
        st->raw = malloc((size_t)w_max * 4 * (size_t)h);
        if (st->raw == NULL)
            return REGION_NOMEM;
        out = st->raw;
    } else {
        st->pixels = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)w_max * 4 * (Py_ssize_t)h);
        if (st->pixels == NULL)
            return REGION_PYERROR;
        out = (unsigned char *)PyBytes_AS_STRING(st->pixels);
        st->ts = PyEval_SaveThread();
    }
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
    if (!st->native) {
        PyEval_RestoreThread(st->ts);
        st->ts = NULL;
    }
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

/* ---- the batch path: decode, crop, resize and pack every image of a batch -------------
 *
 * decode_batch(items, params, out, threads, shifted_rows=False) -> list
 *     items: a sequence of B bytes-like JPEGs. params: a C-contiguous float64 (B, 6)
 *     buffer, per sample the crop box (x0, y0, x1, y1) in pixels of the full image, the
 *     DCT scale denominator (1, 2, 4, 8) and flip (0 or 1). out: a writable C-contiguous
 *     uint8 (B, S, S, 3) buffer. Every sample is decoded (only the rows and columns its
 *     resize reads, at its DCT scale), resized to S x S (Pillow's antialiased bilinear
 *     filter, horizontal pass first, 8-bit rounding between the passes: the arithmetic of
 *     Pillow's Resample.c) and packed as RGB (mirrored when flipped) into out[i], on
 *     `threads` native threads with the GIL released for the whole call. shifted_rows: round
 *     the vertical box as stock Pillow's two resize calls do (vision._cpu._resize_box), so
 *     the pixels equal the per-image path there too. Returns a list of
 *     B entries: None (done), 1 (a JPEG this path does not handle, such as CMYK: out[i] is
 *     untouched, the caller decodes it another way) or a str naming the libjpeg error
 *     (corrupt data: out[i] is untouched). Raises ValueError / TypeError for malformed
 *     arguments, before any decode.
 *
 * Why in C, not through Pillow: Pillow's resize releases the GIL, but the Python around
 * each image (open, frombuffer, resize, pack: ~10 calls) re-takes it every time, and
 * beside a training loop that holds the GIL each re-take waits up to the switch
 * interval: 900 images/s fell to 64 on 2 cores. Here no Python runs per image. */

#define BATCH_REGION_MARGIN 4.0 /* vision._cpu._REGION_MARGIN: rows and columns of context */
#define BATCH_MAX_SIZE 8192
#define PRECISION_BITS (32 - 8 - 2) /* Pillow's, for 8-bit images */

static double bilinear_filter(double x)
{
    if (x < 0.0)
        x = -x;
    return x < 1.0 ? 1.0 - x : 0.0;
}

/* Pillow's precompute_coeffs + normalize_coeffs_8bpc (Resample.c) for the bilinear filter:
 * per output pixel, the first input pixel, the tap count and ksize fixed-point weights.
 * Returns ksize, or 0 when out of memory. */
static int resample_coeffs(int in_size, double in0, double in1, int out_size, int **bounds_out,
                           int **kk_out)
{
    /* Pillow takes in0 and in1 as C floats and subtracts them as floats */
    double scale = (double)((float)in1 - (float)in0) / out_size;
    double filterscale = scale < 1.0 ? 1.0 : scale;
    double support = 1.0 * filterscale;
    int ksize = (int)ceil(support) * 2 + 1;
    double *prekk = malloc((size_t)out_size * (size_t)ksize * sizeof(double));
    int *kk = malloc((size_t)out_size * (size_t)ksize * sizeof(int));
    int *bounds = malloc((size_t)out_size * 2 * sizeof(int));
    if (prekk == NULL || kk == NULL || bounds == NULL) {
        free(prekk);
        free(kk);
        free(bounds);
        return 0;
    }
    for (int xx = 0; xx < out_size; xx++) {
        double center = in0 + (xx + 0.5) * scale;
        double ww = 0.0, ss = 1.0 / filterscale;
        int xmin = (int)(center - support + 0.5);
        if (xmin < 0)
            xmin = 0;
        int xmax = (int)(center + support + 0.5);
        if (xmax > in_size)
            xmax = in_size;
        xmax -= xmin;
        double *k = &prekk[(size_t)xx * ksize];
        int x = 0;
        for (; x < xmax; x++) {
            double w = bilinear_filter((x + xmin - center + 0.5) * ss);
            k[x] = w;
            ww += w;
        }
        for (x = 0; x < xmax; x++)
            if (ww != 0.0)
                k[x] /= ww;
        for (; x < ksize; x++)
            k[x] = 0;
        bounds[xx * 2 + 0] = xmin;
        bounds[xx * 2 + 1] = xmax < 0 ? 0 : xmax;
    }
    for (size_t t = 0; t < (size_t)out_size * ksize; t++)
        kk[t] = prekk[t] < 0 ? (int)(-0.5 + prekk[t] * (1 << PRECISION_BITS))
                             : (int)(0.5 + prekk[t] * (1 << PRECISION_BITS));
    free(prekk);
    *bounds_out = bounds;
    *kk_out = kk;
    return ksize;
}

static inline unsigned char clip8(int v)
{
    v >>= PRECISION_BITS;
    return (unsigned char)(v < 0 ? 0 : (v > 255 ? 255 : v));
}

/* Resize the RGBX image src (w pixels wide) over the box (in0..in1 across, y0..y1 down,
 * the latter counted from row row0, in an image of vh rows from there) to size x size,
 * and write it as RGB rows into dst (mirrored if flip). Returns 0, or -1 when out of
 * memory. */
typedef int v4si __attribute__((vector_size(16)));
typedef unsigned char v4qu __attribute__((vector_size(4)));
typedef int v8si __attribute__((vector_size(32)));
typedef unsigned char v8qu __attribute__((vector_size(8)));
typedef unsigned char v32qu __attribute__((vector_size(32)));

__attribute__((target_clones("avx2", "default"))) static int resize_rgbx(
    const unsigned char *src, int w, int row0, int vh, const double box[4], int size, int flip,
    unsigned char *dst)
{
    /* the vertical box is in the frame of rows row0 .. row0 + vh of src */
    int *hb = NULL, *hk = NULL, *vb = NULL, *vk = NULL;
    int hks = resample_coeffs(w, box[0], box[2], size, &hb, &hk);
    int vks = hks ? resample_coeffs(vh, box[1], box[3], size, &vb, &vk) : 0;
    if (!hks || !vks) {
        free(hb);
        free(hk);
        return -1;
    }
    /* the rows the vertical pass reads, and the horizontal pass over just those */
    int first = vb[0], last = vb[(size - 1) * 2] + vb[(size - 1) * 2 + 1];
    if (last < first)
        last = first;
    int rows = last - first;
    unsigned char *tmp = malloc((size_t)(rows ? rows : 1) * (size_t)size * 4);
    if (tmp == NULL) {
        free(hb);
        free(hk);
        free(vb);
        free(vk);
        return -1;
    }
    /* horizontal: each source row widened to int32 once (a vectorized pass, zero-padded by
     * ksize pixels: every output pixel then runs all ksize taps, the ones past its window
     * having weight 0 as in Pillow), then two output pixels per step in one 8-lane vector,
     * one multiply-add per tap */
    size_t wide_n = ((size_t)w + (size_t)hks + 1) * 4;
    int *wide = calloc(wide_n, sizeof(int));
    /* the weights of output pixels 2i and 2i + 1, tap by tap, as the 8 lanes they multiply */
    v8si *pairs = aligned_alloc(32, ((size_t)(size / 2 + 1) * hks * sizeof(v8si) + 31) / 32 * 32);
    if (pairs != NULL)
        for (int q = 0; q + 1 < size; q += 2)
            for (int x = 0; x < hks; x++) {
                int a = hk[(size_t)q * hks + x], b = hk[(size_t)(q + 1) * hks + x];
                v8si kk = {a, a, a, a, b, b, b, b};
                pairs[(size_t)(q / 2) * hks + x] = kk;
            }
    if (wide == NULL || pairs == NULL) {
        free(wide);
        free(pairs);
        free(tmp);
        free(hb);
        free(hk);
        free(vb);
        free(vk);
        return -1;
    }
    const v8si half = {1 << (PRECISION_BITS - 1), 1 << (PRECISION_BITS - 1),
                       1 << (PRECISION_BITS - 1), 1 << (PRECISION_BITS - 1),
                       1 << (PRECISION_BITS - 1), 1 << (PRECISION_BITS - 1),
                       1 << (PRECISION_BITS - 1), 1 << (PRECISION_BITS - 1)};
    for (int yy = 0; yy < rows; yy++) {
        const unsigned char *in = src + (size_t)(row0 + yy + first) * (size_t)w * 4;
        for (int j = 0; j < w * 4; j++)
            wide[j] = in[j];
        unsigned char *o = tmp + (size_t)yy * size * 4;
        int xx = 0;
        for (; xx + 1 < size; xx += 2) {
            const int *p0 = wide + (size_t)hb[xx * 2] * 4, *p1 = wide + (size_t)hb[xx * 2 + 2] * 4;
            const v8si *kp = pairs + (size_t)(xx / 2) * hks;
            int taps = hb[xx * 2 + 1] > hb[xx * 2 + 3] ? hb[xx * 2 + 1] : hb[xx * 2 + 3];
            v8si acc = half;
            for (int x = 0; x < taps; x++) {
                v4si a, b;
                memcpy(&a, p0 + x * 4, sizeof(a));
                memcpy(&b, p1 + x * 4, sizeof(b));
                v8si ab = __builtin_shufflevector(a, b, 0, 1, 2, 3, 4, 5, 6, 7);
                acc += ab * kp[x];
            }
            acc >>= PRECISION_BITS;
            acc &= (v8si)(acc > 0);
            v8si big = (v8si)(acc > 255);
            acc = (acc & ~big) | (255 & big);
            /* the low byte of each lane (0..255 now): one shuffle, not eight extracts */
            v32qu bytes = (v32qu)acc;
            v8qu px = __builtin_shufflevector(bytes, bytes, 0, 4, 8, 12, 16, 20, 24, 28);
            memcpy(o + xx * 4, &px, 8);
        }
        for (; xx < size; xx++) {
            const int *p = wide + (size_t)hb[xx * 2] * 4;
            const int *k = &hk[(size_t)xx * hks];
            v4si acc = {1 << (PRECISION_BITS - 1), 1 << (PRECISION_BITS - 1),
                        1 << (PRECISION_BITS - 1), 1 << (PRECISION_BITS - 1)};
            for (int x = 0; x < hks; x++) {
                v4si px;
                memcpy(&px, p + x * 4, sizeof(px));
                acc += px * k[x];
            }
            for (int c = 0; c < 4; c++)
                o[xx * 4 + c] = clip8(acc[c]);
        }
    }
    free(wide);
    free(pairs);
    /* vertical: whole rows at a time, tap by tap (contiguous, vectorized by the compiler) */
    int *acc = malloc((size_t)size * 4 * sizeof(int));
    unsigned char *line = malloc((size_t)size * 4);
    if (acc == NULL || line == NULL) {
        free(acc);
        free(line);
        free(tmp);
        free(hb);
        free(hk);
        free(vb);
        free(vk);
        return -1;
    }
    for (int yy = 0; yy < size; yy++) {
        int ymin = vb[yy * 2] - first, ymax = vb[yy * 2 + 1];
        const int *k = &vk[(size_t)yy * vks];
        for (int j = 0; j < size * 4; j++)
            acc[j] = 1 << (PRECISION_BITS - 1);
        for (int y = 0; y < ymax; y++) {
            const unsigned char *row = tmp + (size_t)(ymin + y) * size * 4;
            int ky = k[y];
            for (int j = 0; j < size * 4; j++)
                acc[j] += row[j] * ky;
        }
        for (int j = 0; j < size * 4; j++) { /* clip8, vectorized */
            int v = acc[j] >> PRECISION_BITS;
            line[j] = (unsigned char)(v < 0 ? 0 : (v > 255 ? 255 : v));
        }
        /* RGBX to RGB: 4 bytes per pixel, in increasing output order, so that each X byte
         * is overwritten by the next pixel's R; the last pixel's 3 bytes on their own */
        unsigned char *o = dst + (size_t)yy * size * 3;
        for (int q = 0; q < size - 1; q++)
            memcpy(o + (size_t)q * 3, line + (size_t)(flip ? size - 1 - q : q) * 4, 4);
        memcpy(o + (size_t)(size - 1) * 3, line + (size_t)(flip ? 0 : size - 1) * 4, 3);
    }
    free(acc);
    free(line);
    free(tmp);
    free(hb);
    free(hk);
    free(vb);
    free(vk);
    return 0;
}

typedef struct {
    const unsigned char *data;
    size_t size;
    double params[6];
    int status; /* 0 done, 1 unsupported, 2 error (message) */
    char message[JMSG_LENGTH_MAX + 96];
} batch_item;

typedef struct {
    batch_item *items;
    Py_ssize_t n;
    int size;
    int shifted_rows; /* stock Pillow's two resize calls (see batch_one) */
    unsigned char *out;
    Py_ssize_t next; /* the next sample to take (atomic) */
} batch_job;

/* decode() without Python: st is the caller's (see decode() on setjmp) */
static int decode_native(region_state *st, const unsigned char *data, size_t size, long x,
                         long y, long w, long h, int denom)
{
    memset(st, 0, sizeof(*st));
    st->native = 1;
    st->cinfo.err = jpeg_std_error(&st->jerr.pub);
    st->jerr.pub.error_exit = region_error_exit;
    st->jerr.pub.emit_message = region_emit_message;
    st->jerr.pub.output_message = region_output_message;
    if (setjmp(st->jerr.jump)) {
        jpeg_destroy_decompress(&st->cinfo);
        free(st->raw);
        st->raw = NULL;
        return REGION_PYERROR; /* the message is in st->jerr.message */
    }
    jpeg_create_decompress(&st->cinfo);
    int status = decode_body(st, data, size, x, y, w, h, denom);
    jpeg_destroy_decompress(&st->cinfo);
    if (status != REGION_OK) {
        free(st->raw);
        st->raw = NULL;
    }
    return status;
}

static void batch_one(batch_item *it, int size, int shifted_rows, unsigned char *dst)
{
    const double *p = it->params;
    int a = (int)p[4];
    /* what vision._cpu._region_resize computes: the box at DCT scale 1/a, and the region
     * its resize reads plus BATCH_REGION_MARGIN */
    double x0 = p[0] / a, y0 = p[1] / a, x1 = p[2] / a, y1 = p[3] / a;
    double rx = fmax(1.0, (x1 - x0) / size) + BATCH_REGION_MARGIN;
    double ry = fmax(1.0, (y1 - y0) / size) + BATCH_REGION_MARGIN;
    long left = (long)fmax(0.0, floor(x0 - rx)), top = (long)fmax(0.0, floor(y0 - ry));
    long w = (long)ceil(x1 + rx) - left, h = (long)ceil(y1 + ry) - top;
    region_state st;
    int status = decode_native(&st, it->data, it->size, left, top, w, h, a);
    if (status == REGION_UNSUPPORTED) {
        it->status = 1;
        return;
    }
    if (status != REGION_OK) {
        it->status = 2;
        if (status == REGION_OUTSIDE)
            snprintf(it->message, sizeof(it->message), "the crop box lies outside the image");
        else if (status == REGION_NOMEM)
            snprintf(it->message, sizeof(it->message), "out of memory");
        else
            snprintf(it->message, sizeof(it->message), "libjpeg: %s", st.jerr.message);
        return;
    }
    /* the box as Pillow's resize(box=...) receives it: rounded to a C float, shifted by
     * the region's origin, rounded to a C float again (vision._cpu._resize_box) */
    double box[4] = {
        (double)(float)((double)(float)x0 - (double)st.x0),
        (double)(float)((double)(float)y0 - (double)st.y0),
        (double)(float)((double)(float)x1 - (double)st.x0),
        (double)(float)((double)(float)y1 - (double)st.y0),
    };
    int row0 = 0, vh = (int)st.height;
    if (shifted_rows) {
        /* stock Pillow's order, as vision._cpu._resize_box makes it: a horizontal call
         * over the rows r0 .. r1 the vertical filter reads, then a vertical call whose box
         * is counted from r0 (rounded to a C float from there) */
        double y0d = (double)(float)y0 - (double)st.y0, y1d = (double)(float)y1 - (double)st.y0;
        double support = fmax(1.0, (y1d - y0d) / size);
        long r0 = (long)floor(y0d - support) - 1, r1 = (long)ceil(y1d + support) + 1;
        r0 = r0 < 0 ? 0 : r0;
        r1 = r1 > (long)st.height ? (long)st.height : r1;
        if (4 * ((long)st.height - (r1 - r0)) <= r1 - r0) {
            r0 = 0;
            r1 = (long)st.height;
        }
        row0 = (int)r0;
        vh = (int)(r1 - r0);
        box[1] = (double)(float)(y0d - (double)r0);
        box[3] = (double)(float)(y1d - (double)r0);
    }
    /* what Pillow's resize checks of a box (its filter then reads only inside the image) */
    if (!(box[0] >= 0 && box[1] >= 0 && box[2] <= (double)st.width && box[3] <= (double)vh &&
          box[2] > box[0] && box[3] > box[1])) {
        it->status = 2;
        snprintf(it->message, sizeof(it->message),
                 "the crop box (%.6g, %.6g, %.6g, %.6g) exceeds the image", p[0], p[1], p[2], p[3]);
        free(st.raw);
        return;
    }
    if (resize_rgbx(st.raw, (int)st.width, row0, vh, box, size, p[5] != 0.0, dst) != 0) {
        it->status = 2;
        snprintf(it->message, sizeof(it->message), "out of memory");
    }
    free(st.raw);
}

static void *batch_worker(void *arg)
{
    batch_job *job = arg;
    size_t stride = (size_t)job->size * job->size * 3;
    for (;;) {
        Py_ssize_t i = __atomic_fetch_add(&job->next, 1, __ATOMIC_RELAXED);
        if (i >= job->n)
            break;
        batch_one(&job->items[i], job->size, job->shifted_rows, job->out + (size_t)i * stride);
    }
    return NULL;
}

/* the params of sample i are usable: a finite box inside [-2**30, 2**30], a scale of
 * 1, 2, 4 or 8 and a flip of 0 or 1 */
static const char *bad_params(const double *p)
{
    for (int t = 0; t < 4; t++)
        if (!(p[t] >= -1073741824.0 && p[t] <= 1073741824.0))
            return "the box must be finite, within +-2**30";
    if (!(p[2] > p[0] && p[3] > p[1]))
        return "the box must have x1 > x0 and y1 > y0";
    if (!(p[4] == 1 || p[4] == 2 || p[4] == 4 || p[4] == 8))
        return "the scale must be 1, 2, 4 or 8";
    if (!(p[5] == 0 || p[5] == 1))
        return "flip must be 0 or 1";
    return NULL;
}

static PyObject *decode_batch(PyObject *self, PyObject *args)
{
    PyObject *items_obj, *params_obj, *out_obj;
    int threads, shifted_rows = 0;
    (void)self;
    if (!PyArg_ParseTuple(args, "OOOi|p:decode_batch", &items_obj, &params_obj, &out_obj, &threads,
                          &shifted_rows))
        return NULL;
    PyObject *seq = PySequence_Fast(items_obj, "items must be a sequence of bytes-like objects");
    if (seq == NULL)
        return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    Py_buffer pb, ob;
    if (PyObject_GetBuffer(params_obj, &pb, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) != 0) {
        Py_DECREF(seq);
        return NULL;
    }
    if (PyObject_GetBuffer(out_obj, &ob, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | PyBUF_WRITABLE) !=
        0) {
        PyBuffer_Release(&pb);
        Py_DECREF(seq);
        return NULL;
    }
    PyObject *result = NULL;
    Py_buffer *bufs = NULL;
    batch_item *items = NULL;
    Py_ssize_t got = 0;
    const char *pf = pb.format ? pb.format : "B", *of = ob.format ? ob.format : "B";
    if (*pf == '=' || *pf == '@')
        pf++;
    if (*of == '=' || *of == '@')
        of++;
    if (pb.ndim != 2 || pb.shape[0] != n || pb.shape[1] != 6 || strcmp(pf, "d") != 0) {
        PyErr_Format(PyExc_ValueError, "params must be float64 of shape (%zd, 6)", n);
        goto done;
    }
    if (ob.ndim != 4 || ob.shape[0] != n || ob.shape[1] != ob.shape[2] || ob.shape[3] != 3 ||
        ob.shape[1] < 1 || ob.shape[1] > BATCH_MAX_SIZE || strcmp(of, "B") != 0) {
        PyErr_Format(PyExc_ValueError,
                     "out must be uint8 of shape (%zd, S, S, 3) with S in [1, %d]", n,
                     BATCH_MAX_SIZE);
        goto done;
    }
    if (threads < 1 || threads > 1024) {
        PyErr_Format(PyExc_ValueError, "threads must be in [1, 1024], got %d", threads);
        goto done;
    }
    items = PyMem_Calloc((size_t)(n ? n : 1), sizeof(batch_item));
    bufs = PyMem_Calloc((size_t)(n ? n : 1), sizeof(Py_buffer));
    if (items == NULL || bufs == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (; got < n; got++) {
        const double *p = (const double *)pb.buf + got * 6;
        const char *why = bad_params(p);
        if (why != NULL) {
            PyErr_Format(PyExc_ValueError, "params of sample %zd: %s", got, why);
            goto done;
        }
        if (PyObject_GetBuffer(PySequence_Fast_GET_ITEM(seq, got), &bufs[got], PyBUF_SIMPLE) != 0)
            goto done;
        items[got].data = bufs[got].buf;
        items[got].size = (size_t)bufs[got].len;
        memcpy(items[got].params, p, sizeof(items[got].params));
    }
    batch_job job = {items, n, (int)ob.shape[1], shifted_rows, (unsigned char *)ob.buf, 0};
    int workers = threads < n ? threads : (int)n;
    Py_BEGIN_ALLOW_THREADS
    pthread_t tids[64];
    int started = 0;
    for (; started < workers - 1 && started < 64; started++)
        if (pthread_create(&tids[started], NULL, batch_worker, &job) != 0)
            break;
    batch_worker(&job); /* this thread works too */
    for (int t = 0; t < started; t++)
        pthread_join(tids[t], NULL);
    Py_END_ALLOW_THREADS
    result = PyList_New(n);
    if (result == NULL)
        goto done;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *v;
        if (items[i].status == 0) {
            v = Py_None;
            Py_INCREF(v);
        } else if (items[i].status == 1) {
            v = PyLong_FromLong(1);
        } else {
            v = PyUnicode_DecodeUTF8(items[i].message, (Py_ssize_t)strlen(items[i].message),
                                     "replace");
        }
        if (v == NULL) {
            Py_CLEAR(result);
            goto done;
        }
        PyList_SET_ITEM(result, i, v);
    }
done:
    for (Py_ssize_t i = 0; i < got; i++)
        PyBuffer_Release(&bufs[i]);
    PyMem_Free(bufs);
    PyMem_Free(items);
    PyBuffer_Release(&pb);
    PyBuffer_Release(&ob);
    Py_DECREF(seq);
    return result;
}

/* ---- plan_batch: each sample's box, flip and DCT scale, drawn as vision._params does --- */

/* jpeg_header (vision/_jpeg.py) in C: width, height and whether an APP1 segment (EXIF or
 * XMP, either may carry an orientation) comes before the SOF; 0 when the simple reader
 * does not understand the file (the per-image path then lets Pillow read it) */
static int plan_header(const unsigned char *p, Py_ssize_t n, long *w, long *h, int *exif)
{
    if (n < 4 || p[0] != 0xFF || p[1] != 0xD8)
        return 0;
    Py_ssize_t i = 2;
    *exif = 0;
    while (i + 4 <= n) {
        if (p[i] != 0xFF)
            return 0;
        int marker = p[i + 1];
        if (marker == 0xFF) {
            i += 1;
            continue;
        }
        if (marker == 0x01 || (marker >= 0xD0 && marker <= 0xD7)) {
            i += 2;
            continue;
        }
        if (marker == 0xDA || marker == 0xD9)
            return 0;
        long length = ((long)p[i + 2] << 8) | p[i + 3];
        if (marker == 0xE1)
            *exif = 1;
        if (marker >= 0xC0 && marker <= 0xCF && marker != 0xC4 && marker != 0xC8 &&
            marker != 0xCC) {
            if (i + 9 > n)
                return 0;
            *h = ((long)p[i + 5] << 8) | p[i + 6];
            *w = ((long)p[i + 7] << 8) | p[i + 8];
            return *w != 0 && *h != 0;
        }
        i += 2 + length;
    }
    return 0;
}

/* vision._params.SampleRandom: splitmix64 keyed by a few integers */
#define PLAN_GOLDEN 0x9E3779B97F4A7C15ULL
static inline uint64_t plan_mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}
static inline uint64_t plan_next(uint64_t *state)
{
    *state += PLAN_GOLDEN;
    return plan_mix64(*state);
}
static inline double plan_random(uint64_t *state)
{
    return (double)(plan_next(state) >> 11) * (1.0 / 9007199254740992.0);
}
static inline double plan_uniform(uint64_t *state, double lo, double hi)
{
    return lo + (hi - lo) * plan_random(state);
}
static inline long plan_integers(uint64_t *state, long lo, long hi)
{
    unsigned __int128 x = (unsigned __int128)plan_next(state) * (uint64_t)(hi - lo);
    return lo + (long)(x >> 64);
}
/* Python's round() of a float: to nearest, ties to even (the default rounding mode) */
static inline long plan_round(double x) { return (long)nearbyint(x); }

typedef struct {
    int random_crop; /* 1: RandomResizedCrop(scale, ratio); 0: Resize(shorter) + CenterCrop */
    double scale0, scale1, ratio0, ratio1;
    long shorter, size;
    double flip_p, max_degrees;
    int draft;
} plan_spec;

/* sample_params + draft_scale for one w x h image: box, DCT scale, flip; the angle */
static void plan_one(const plan_spec *sp, long w, long h, uint64_t key0, int64_t index,
                     uint64_t salt, double *row, double *angle)
{
    uint64_t st = key0;
    st = plan_mix64((st ^ (uint64_t)index) + PLAN_GOLDEN);
    st = plan_mix64((st ^ salt) + PLAN_GOLDEN);
    double x0, y0, x1, y1;
    int use_rng = 1;
    if (sp->random_crop) {
        double area = (double)(w * h);
        double lr0 = log(sp->ratio0), lr1 = log(sp->ratio1);
        int found = 0;
        long bw = 0, bh = 0, top = 0, left = 0;
        for (int t = 0; t < 10 && !found; t++) {
            double target = area * plan_uniform(&st, sp->scale0, sp->scale1);
            double aspect = exp(plan_uniform(&st, lr0, lr1));
            long cw = plan_round(sqrt(target * aspect));
            long ch = plan_round(sqrt(target / aspect));
            if (0 < cw && cw <= w && 0 < ch && ch <= h) {
                top = plan_integers(&st, 0, h - ch + 1);
                left = plan_integers(&st, 0, w - cw + 1);
                bw = cw, bh = ch, found = 1;
            }
        }
        if (!found) {
            double in_ratio = (double)w / (double)h;
            double rmin = sp->ratio0 < sp->ratio1 ? sp->ratio0 : sp->ratio1;
            double rmax = sp->ratio0 < sp->ratio1 ? sp->ratio1 : sp->ratio0;
            if (in_ratio < rmin) {
                bw = w;
                bh = plan_round((double)bw / rmin);
            } else if (in_ratio > rmax) {
                bh = h;
                bw = plan_round((double)bh * rmax);
            } else {
                bw = w, bh = h;
            }
            top = (h - bh) >= 0 ? (h - bh) / 2 : -((-(h - bh) + 1) / 2);
            left = (w - bw) >= 0 ? (w - bw) / 2 : -((-(w - bw) + 1) / 2);
        }
        x0 = (double)left, y0 = (double)top, x1 = (double)(left + bw), y1 = (double)(top + bh);
    } else {
        long rw, rh;
        if (w <= h) {
            rw = sp->shorter;
            rh = (long)((double)(sp->shorter * h) / (double)w);
        } else {
            rw = (long)((double)(sp->shorter * w) / (double)h);
            rh = sp->shorter;
        }
        long top = plan_round((double)(rh - sp->size) / 2.0);
        long left = plan_round((double)(rw - sp->size) / 2.0);
        double sx = (double)w / (double)rw, sy = (double)h / (double)rh;
        x0 = (double)left * sx, y0 = (double)top * sy;
        x1 = (double)(left + sp->size) * sx, y1 = (double)(top + sp->size) * sy;
        use_rng = sp->flip_p != 0. || sp->max_degrees != 0.;
    }
    int flip = 0;
    *angle = 0.;
    if (use_rng) {
        if (sp->flip_p != 0.)
            flip = plan_random(&st) < sp->flip_p;
        if (sp->max_degrees != 0.)
            *angle = plan_uniform(&st, -sp->max_degrees, sp->max_degrees);
    }
    double a = 1.;
    if (sp->draft) {
        double side = (x1 - x0) < (y1 - y0) ? (x1 - x0) : (y1 - y0);
        a = side >= 8. * (double)sp->size   ? 8.
            : side >= 4. * (double)sp->size ? 4.
            : side >= 2. * (double)sp->size ? 2.
                                             : 1.;
    }
    row[0] = x0, row[1] = y0, row[2] = x1, row[3] = y1, row[4] = a, row[5] = flip ? 1. : 0.;
}

static PyObject *plan_batch(PyObject *self, PyObject *args)
{
    PyObject *items_obj, *idx_obj, *params_obj, *status_obj, *seed_obj, *epoch_obj, *salt_obj;
    plan_spec sp;
    (void)self;
    if (!PyArg_ParseTuple(args, "OO(iddddllddp)OOOOO:plan_batch", &items_obj, &idx_obj,
                          &sp.random_crop, &sp.scale0, &sp.scale1, &sp.ratio0, &sp.ratio1,
                          &sp.shorter, &sp.size, &sp.flip_p, &sp.max_degrees, &sp.draft,
                          &seed_obj, &epoch_obj, &salt_obj, &params_obj, &status_obj))
        return NULL;
    /* the key's integers as Python's `int(k) & MASK64` takes them (any size, any sign) */
    uint64_t seed = PyLong_AsUnsignedLongLongMask(seed_obj);
    uint64_t epoch = PyLong_AsUnsignedLongLongMask(epoch_obj);
    uint64_t salt = PyLong_AsUnsignedLongLongMask(salt_obj);
    if (PyErr_Occurred())
        return NULL;
    if (sp.random_crop ? !(sp.scale0 >= 0 && sp.scale1 >= 0 && isfinite(sp.scale0) &&
                           isfinite(sp.scale1) && sp.ratio0 > 0 && sp.ratio1 > 0 &&
                           isfinite(sp.ratio0) && isfinite(sp.ratio1))
                       : !(sp.shorter >= 1 && sp.shorter <= (1L << 24)))
        return PyErr_Format(PyExc_ValueError, "plan_batch: a crop spec out of range");
    if (sp.size < 1 || sp.size > (1L << 24) || !(sp.flip_p >= 0 && sp.flip_p <= 1) ||
        !(sp.max_degrees >= 0 && sp.max_degrees <= 360))
        return PyErr_Format(PyExc_ValueError, "plan_batch: size, flip_p or max_degrees out of range");
    PyObject *seq = PySequence_Fast(items_obj, "items must be a sequence of bytes-like objects");
    if (seq == NULL)
        return NULL;
    Py_buffer ib = {0}, pb = {0}, sb = {0};
    int got_i = 0, got_p = 0, got_s = 0;
    PyObject *result = NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    if (PyObject_GetBuffer(idx_obj, &ib, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) != 0)
        goto done;
    got_i = 1;
    if (PyObject_GetBuffer(params_obj, &pb, PyBUF_C_CONTIGUOUS | PyBUF_WRITABLE | PyBUF_FORMAT) != 0)
        goto done;
    got_p = 1;
    if (PyObject_GetBuffer(status_obj, &sb, PyBUF_C_CONTIGUOUS | PyBUF_WRITABLE | PyBUF_FORMAT) != 0)
        goto done;
    got_s = 1;
    if (ib.itemsize != 8 || ib.len != n * 8 || pb.itemsize != 8 || pb.len != n * 6 * 8 ||
        sb.itemsize != 1 || sb.len != n) {
        PyErr_Format(PyExc_ValueError,
                     "plan_batch: indices must be n int64, params n x 6 float64 and status n "
                     "int8 (n %zd; got %zd, %zd and %zd bytes)",
                     n, ib.len, pb.len, sb.len);
        goto done;
    }
    const int64_t *idx = ib.buf;
    double *params = pb.buf;
    int8_t *status = sb.buf;
    uint64_t key0 = PLAN_GOLDEN;
    key0 = plan_mix64((key0 ^ seed) + PLAN_GOLDEN);
    key0 = plan_mix64((key0 ^ epoch) + PLAN_GOLDEN);
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_buffer v;
        if (PyObject_GetBuffer(PySequence_Fast_GET_ITEM(seq, i), &v, PyBUF_SIMPLE) != 0)
            goto done;
        long w = 0, h = 0;
        int exif = 0;
        int ok = plan_header(v.buf, v.len, &w, &h, &exif);
        PyBuffer_Release(&v);
        double angle = 0.;
        if (ok && !exif) {
            plan_one(&sp, w, h, key0, idx[i], salt, params + 6 * i, &angle);
            status[i] = angle != 0. ? 1 : 0;
        } else {
            for (int t = 0; t < 6; t++)
                params[6 * i + t] = 0.;
            status[i] = 1;
        }
    }
    result = Py_None;
    Py_INCREF(result);
done:
    if (got_s)
        PyBuffer_Release(&sb);
    if (got_p)
        PyBuffer_Release(&pb);
    if (got_i)
        PyBuffer_Release(&ib);
    Py_DECREF(seq);
    return result;
}

static PyMethodDef methods[] = {
    {"plan_batch", plan_batch, METH_VARARGS,
     "plan_batch(items, indices, spec, seed, epoch, salt, params, status): each sample's "
     "box, DCT scale and flip (vision._params' draws), and whether it goes per image."},
    {"decode_batch", decode_batch, METH_VARARGS,
     "decode_batch(items, params, out, threads) -> list: decode, crop, resize, pack a batch."},
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
