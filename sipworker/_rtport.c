/* A pjmedia port whose audio never enters Python on the clock thread.
 *
 * Why: a pjsua2 AudioMediaPort calls into Python on pjmedia's clock thread twice per frame per
 * call (SWIG director, GIL hand-over), which is most of a SIP worker's CPU.  This port keeps a
 * playback queue and a receive buffer in C: the clock thread only copies 20 ms frames under a
 * mutex, and a Python thread of the worker drains received audio and learns where playback ended
 * a few times a second, for all calls of the process in one pass (sipworker/native.py).
 *
 * The port is a block whose first bytes are a pjmedia_port.  Its layout is not taken from
 * pjproject headers (the wheel ships none): sipworker/native.py probes a port made by the wheel
 * itself and hands the offsets of the three callbacks to setup(); everything before them (port
 * info, group lock) is filled by pjmedia's own functions.  Only the leading fields of
 * pjmedia_frame (type, buf, size) are used, which have kept their order since pjmedia began.
 *
 * Audio: 8 kHz mono 16-bit, 20 ms frames (160 samples, 320 bytes).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define HDR_BYTES 512          /* room reserved for the pjmedia_port at the start of a block */
#define SUB_BYTES 320          /* one 20 ms frame */
#define RX_CAP (150 * SUB_BYTES) /* 3 s of received audio between two drains */

typedef struct {
    int type;       /* pjmedia_frame_type: 0 none, 1 audio */
    void *buf;
    size_t size;
} frame_head;

typedef struct {
    unsigned char hdr[HDR_BYTES];
    pthread_mutex_t mu;
    /* playback: tx[tx_off, tx_off + tx_len) is queued, in whole frames */
    unsigned char *tx;
    size_t tx_cap, tx_off, tx_len;
    uint64_t sent;          /* frames handed to the bridge: the call's tx audio clock */
    int active;             /* audio was queued and has not yet run out */
    int64_t done_at;        /* tx clock (frames) where the queue ran dry, -1 until then */
    /* receive */
    int rx_on;              /* keep received audio (else only count it) */
    unsigned char rx[RX_CAP];
    size_t rx_len;
    uint64_t rx_frames;     /* frames received: the call's rx audio clock */
    uint64_t rx_dropped;    /* frames overwritten before a drain took them */
    int64_t rx_last_ns;     /* CLOCK_MONOTONIC of the last received frame */
} rtport;

static size_t off_put, off_get, off_destroy;
static int ready;

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int port_put_frame(void *port, frame_head *f) {
    rtport *p = (rtport *)port;
    if (f->type != 1 || f->size < SUB_BYTES)
        return 0; /* heart-beat frames of a port nobody transmits to */
    size_t n = f->size - f->size % SUB_BYTES;
    pthread_mutex_lock(&p->mu);
    p->rx_frames += n / SUB_BYTES;
    p->rx_last_ns = now_ns();
    if (p->rx_on) {
        size_t keep = n > RX_CAP ? RX_CAP : n; /* the newest audio wins */
        p->rx_dropped += (n - keep) / SUB_BYTES;
        const unsigned char *src = (const unsigned char *)f->buf + (n - keep);
        if (p->rx_len + keep > RX_CAP) {
            size_t drop = p->rx_len + keep - RX_CAP;
            memmove(p->rx, p->rx + drop, p->rx_len - drop);
            p->rx_len -= drop;
            p->rx_dropped += drop / SUB_BYTES;
        }
        memcpy(p->rx + p->rx_len, src, keep);
        p->rx_len += keep;
    }
    pthread_mutex_unlock(&p->mu);
    return 0;
}

static int port_get_frame(void *port, frame_head *f) {
    rtport *p = (rtport *)port;
    unsigned char *out = (unsigned char *)f->buf;
    size_t want = f->size - f->size % SUB_BYTES;
    pthread_mutex_lock(&p->mu);
    for (size_t at = 0; at < want; at += SUB_BYTES) {
        if (p->tx_len >= SUB_BYTES) {
            memcpy(out + at, p->tx + p->tx_off, SUB_BYTES);
            p->tx_off += SUB_BYTES;
            p->tx_len -= SUB_BYTES;
        } else {
            memset(out + at, 0, SUB_BYTES);
            if (p->active) {
                p->active = 0;
                p->done_at = (int64_t)p->sent;
            }
        }
        p->sent++;
    }
    pthread_mutex_unlock(&p->mu);
    f->type = 1;
    f->size = want;
    return 0;
}

static int port_on_destroy(void *port) {
    (void)port; /* blocks live as long as the process: pjmedia may still hold a reference */
    return 0;
}

static rtport *as_port(PyObject *addr) {
    void *ptr = PyLong_AsVoidPtr(addr);
    if (ptr == NULL && !PyErr_Occurred())
        PyErr_SetString(PyExc_ValueError, "null port");
    return (rtport *)ptr;
}

static PyObject *py_setup(PyObject *self, PyObject *args) {
    Py_ssize_t put, get, destroy;
    if (!PyArg_ParseTuple(args, "nnn", &put, &get, &destroy))
        return NULL;
    if (put < 0 || get < 0 || destroy < 0 || put + 8 > HDR_BYTES || get + 8 > HDR_BYTES ||
        destroy + 8 > HDR_BYTES) {
        PyErr_SetString(PyExc_ValueError, "callback offsets outside the reserved header");
        return NULL;
    }
    off_put = (size_t)put;
    off_get = (size_t)get;
    off_destroy = (size_t)destroy;
    ready = 1;
    Py_RETURN_NONE;
}

static PyObject *py_new(PyObject *self, PyObject *noargs) {
    if (!ready) {
        PyErr_SetString(PyExc_RuntimeError, "setup() first");
        return NULL;
    }
    rtport *p = calloc(1, sizeof(rtport));
    if (p == NULL)
        return PyErr_NoMemory();
    pthread_mutex_init(&p->mu, NULL);
    p->done_at = -1;
    p->rx_on = 1;
    void *put = (void *)port_put_frame, *get = (void *)port_get_frame, *destroy = (void *)port_on_destroy;
    memcpy(p->hdr + off_put, &put, sizeof put);
    memcpy(p->hdr + off_get, &get, sizeof get);
    memcpy(p->hdr + off_destroy, &destroy, sizeof destroy);
    return PyLong_FromVoidPtr(p);
}

static PyObject *py_push(PyObject *self, PyObject *args) {
    PyObject *addr;
    Py_buffer pcm;
    int clear;
    if (!PyArg_ParseTuple(args, "Oy*p", &addr, &pcm, &clear))
        return NULL;
    rtport *p = as_port(addr);
    if (p == NULL) {
        PyBuffer_Release(&pcm);
        return NULL;
    }
    size_t len = (size_t)pcm.len, padded = (len + SUB_BYTES - 1) / SUB_BYTES * SUB_BYTES;
    pthread_mutex_lock(&p->mu);
    if (clear)
        p->tx_off = p->tx_len = 0;
    if (p->tx_off + p->tx_len + padded > p->tx_cap) {
        if (p->tx_off) { /* compact before growing */
            memmove(p->tx, p->tx + p->tx_off, p->tx_len);
            p->tx_off = 0;
        }
        if (p->tx_len + padded > p->tx_cap) {
            size_t cap = p->tx_cap ? p->tx_cap : 64 * SUB_BYTES;
            while (cap < p->tx_len + padded)
                cap *= 2;
            unsigned char *grown = realloc(p->tx, cap);
            if (grown == NULL) {
                pthread_mutex_unlock(&p->mu);
                PyBuffer_Release(&pcm);
                return PyErr_NoMemory();
            }
            p->tx = grown;
            p->tx_cap = cap;
        }
    }
    unsigned char *end = p->tx + p->tx_off + p->tx_len;
    memcpy(end, pcm.buf, len);
    memset(end + len, 0, padded - len);
    p->tx_len += padded;
    if (padded)
        p->active = 1;
    pthread_mutex_unlock(&p->mu);
    PyBuffer_Release(&pcm);
    return PyLong_FromSize_t(padded / SUB_BYTES);
}

static PyObject *py_clear(PyObject *self, PyObject *addr) {
    rtport *p = as_port(addr);
    if (p == NULL)
        return NULL;
    pthread_mutex_lock(&p->mu);
    size_t dropped = p->tx_len / SUB_BYTES;
    p->tx_off = p->tx_len = 0; /* still active: the next frame reports where playback stopped */
    pthread_mutex_unlock(&p->mu);
    return PyLong_FromSize_t(dropped);
}

static PyObject *py_drain(PyObject *self, PyObject *addr) {
    rtport *p = as_port(addr);
    if (p == NULL)
        return NULL;
    unsigned char copy[RX_CAP];
    pthread_mutex_lock(&p->mu);
    size_t n = p->rx_len;
    memcpy(copy, p->rx, n);
    p->rx_len = 0;
    uint64_t rx_frames = p->rx_frames, dropped = p->rx_dropped, sent = p->sent;
    int64_t last = p->rx_last_ns, done = p->done_at;
    size_t pending = p->tx_len / SUB_BYTES;
    p->done_at = -1;
    pthread_mutex_unlock(&p->mu);
    return Py_BuildValue("(y#KLLKKn)", (const char *)copy, (Py_ssize_t)n, (unsigned long long)rx_frames,
                         (long long)last, (long long)done, (unsigned long long)sent,
                         (unsigned long long)dropped, (Py_ssize_t)pending);
}

static PyObject *py_set_rx(PyObject *self, PyObject *args) {
    PyObject *addr;
    int on;
    if (!PyArg_ParseTuple(args, "Op", &addr, &on))
        return NULL;
    rtport *p = as_port(addr);
    if (p == NULL)
        return NULL;
    pthread_mutex_lock(&p->mu);
    p->rx_on = on;
    if (!on)
        p->rx_len = 0;
    pthread_mutex_unlock(&p->mu);
    Py_RETURN_NONE;
}

static PyObject *py_reset(PyObject *self, PyObject *addr) {
    rtport *p = as_port(addr);
    if (p == NULL)
        return NULL;
    pthread_mutex_lock(&p->mu);
    free(p->tx); /* a long reply grew it: give the memory back between calls */
    p->tx = NULL;
    p->tx_cap = p->tx_off = p->tx_len = 0;
    p->sent = 0;
    p->active = 0;
    p->done_at = -1;
    p->rx_on = 1;
    p->rx_len = 0;
    p->rx_frames = p->rx_dropped = 0;
    p->rx_last_ns = 0;
    pthread_mutex_unlock(&p->mu);
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"setup", py_setup, METH_VARARGS, "setup(put_off, get_off, destroy_off): where the callbacks go"},
    {"new", py_new, METH_NOARGS, "new() -> address of a port block (pjmedia_port first)"},
    {"push", py_push, METH_VARARGS, "push(port, pcm, clear) -> frames queued (the tail padded)"},
    {"clear", py_clear, METH_O, "clear(port) -> frames dropped"},
    {"drain", py_drain, METH_O,
     "drain(port) -> (rx_pcm, rx_frames, rx_last_ns, done_at, sent, rx_dropped, pending)"},
    {"set_rx", py_set_rx, METH_VARARGS, "set_rx(port, on): keep received audio or only count it"},
    {"reset", py_reset, METH_O, "reset(port): empty and zeroed, for the next call"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_rtport", NULL, -1, methods};

PyMODINIT_FUNC PyInit__rtport(void) {
    PyObject *m = PyModule_Create(&module);
    if (m != NULL) {
        PyModule_AddIntConstant(m, "HDR_BYTES", HDR_BYTES);
        PyModule_AddIntConstant(m, "FRAME_BYTES", SUB_BYTES);
    }
    return m;
}
