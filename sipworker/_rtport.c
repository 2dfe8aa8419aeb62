/* A pjmedia port whose audio never enters Python on the clock thread.
 *
 * Why: a pjsua2 AudioMediaPort calls into Python on pjmedia's clock thread twice per frame per
 * call (SWIG director, GIL hand-over), which is most of a SIP worker's CPU.  This port keeps a
 * playback queue and a receive buffer in C: the clock thread only copies 20 ms frames under a
 * mutex, and a Python thread of the worker polls all the process's ports in one call a few times
 * a second (poll), getting back only those with something to act on (sipworker/native.py).
 *
 * The port is a block whose first bytes are a pjmedia_port.  Its layout is not taken from
 * pjproject headers (the wheel ships none): sipworker/native.py probes a port made by the wheel
 * itself and hands the offsets of the three callbacks to setup(); everything before them (port
 * info, group lock) is filled by pjmedia's own functions.  Only the leading fields of
 * pjmedia_frame (type, buf, size) are used, which have kept their order since pjmedia began.
 *
 * The clock thread also analyses each received frame, so that nothing reads the audio in Python
 * unless it is kept (a recording, a turn's audio): first audio (the first frame whose peak
 * reaches a threshold, with its arrival time) and speech decisions (webrtcvad's, through the entry points of the webrtcvad
 * extension that Python already loaded, gated by an energy floor), one per frame since the last
 * drain.  The decisions are sipworker/turns.py's frame rule (FrameClassifier: webrtcvad on every
 * frame, then the floor), so a call decides turns as the WebSocket path does; the turn-taking state
 * machine stays in Python (sipworker/turns.py TurnTracker, fed by sipworker/media.py TurnDetector).
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
#define SUB_SAMPLES (SUB_BYTES / 2)
#define RX_FRAMES 150          /* 3 s of received audio (and speech decisions) between two drains */
#define RX_CAP (RX_FRAMES * SUB_BYTES)
#define RX_NEWS (RX_CAP / 2)   /* kept audio alone is news once this much waits (see has_news) */

typedef int (*vad_process_fn)(void *inst, int fs, const int16_t *audio, size_t samples);
typedef int (*vad_init_fn)(void *inst);
typedef int (*vad_set_mode_fn)(void *inst, int mode);

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
    /* first audio: the first received frame whose |sample| reaches peak (peak 0: not looking) */
    int peak;
    int64_t loud_frame, loud_ns;
    /* speech decisions (webrtcvad instance vad, NULL: none), dec[0, dec_len) from frame dec_start */
    void *vad;
    PyObject *vad_owner;    /* the capsule vad came from, kept alive while in use (GIL held to change) */
    double floor;           /* mean square a voiced frame must exceed */
    unsigned char dec[RX_FRAMES];
    size_t dec_len;
    uint64_t dec_start;
    int follow;             /* Python's detector is mid-turn: unvoiced decisions matter too (poll) */
    uint64_t dropped_told;  /* rx_dropped as of the last drain */
} rtport;

static size_t off_put, off_get, off_destroy;
static int ready;
static vad_process_fn vad_process;
static vad_init_fn vad_init;
static vad_set_mode_fn vad_set_mode;

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* First audio and the speech decision of one received frame (mutex held, frame not yet counted). */
static void analyse(rtport *p, const unsigned char *frame, int64_t now) {
    int16_t x[SUB_SAMPLES];
    memcpy(x, frame, SUB_BYTES); /* the bridge's buffer need not be aligned */
    if (p->peak > 0 && p->loud_frame < 0) {
        for (int i = 0; i < SUB_SAMPLES; i++) {
            if (x[i] >= p->peak || x[i] <= -p->peak) {
                p->loud_frame = (int64_t)p->rx_frames;
                p->loud_ns = now;
                break;
            }
        }
    }
    if (p->vad == NULL)
        return;
    /* int16_t: older webrtcvad builds return a 16-bit result */
    int voiced = (int16_t)vad_process(p->vad, 8000, x, SUB_SAMPLES) == 1;
    if (voiced) {
        double sq = 0;
        for (int i = 0; i < SUB_SAMPLES; i++)
            sq += (double)x[i] * x[i];
        voiced = sq / SUB_SAMPLES > p->floor;
    }
    if (p->dec_len == RX_FRAMES) { /* a drain came too late: the newest decisions win */
        memmove(p->dec, p->dec + 1, RX_FRAMES - 1);
        p->dec_len--;
        p->dec_start++;
    }
    if (p->dec_len == 0)
        p->dec_start = p->rx_frames;
    p->dec[p->dec_len++] = (unsigned char)voiced;
}

static int port_put_frame(void *port, frame_head *f) {
    rtport *p = (rtport *)port;
    if (f->type != 1 || f->size < SUB_BYTES)
        return 0; /* heart-beat frames of a port nobody transmits to */
    size_t n = f->size - f->size % SUB_BYTES;
    int64_t now = now_ns();
    pthread_mutex_lock(&p->mu);
    if (p->vad != NULL || (p->peak > 0 && p->loud_frame < 0)) {
        for (size_t at = 0; at < n; at += SUB_BYTES) {
            analyse(p, (const unsigned char *)f->buf + at, now);
            p->rx_frames++;
        }
    } else {
        p->rx_frames += n / SUB_BYTES;
    }
    p->rx_last_ns = now;
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
    p->loud_frame = -1;
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

/* What a drain hands to Python, copied out under the mutex and built into a tuple after it. */
typedef struct {
    unsigned char rx[RX_CAP];
    size_t rx_len;
    uint64_t rx_frames, dropped, sent;
    int64_t last, done;
    size_t pending;
    unsigned char dec[RX_FRAMES];
    size_t dec_len;
    uint64_t dec_start;
    int64_t loud_frame, loud_ns;
} snapshot;

static void take(rtport *p, snapshot *s) { /* mutex held */
    s->rx_len = p->rx_len;
    memcpy(s->rx, p->rx, p->rx_len);
    p->rx_len = 0;
    s->rx_frames = p->rx_frames;
    s->dropped = p->dropped_told = p->rx_dropped;
    s->sent = p->sent;
    s->last = p->rx_last_ns;
    s->done = p->done_at;
    s->pending = p->tx_len / SUB_BYTES;
    p->done_at = -1;
    s->dec_len = p->dec_len;
    s->dec_start = p->dec_start;
    memcpy(s->dec, p->dec, p->dec_len);
    p->dec_len = 0;
    s->loud_frame = -1;
    s->loud_ns = 0;
    if (p->peak > 0 && p->loud_frame >= 0) { /* reported once */
        s->loud_frame = p->loud_frame;
        s->loud_ns = p->loud_ns;
        p->peak = 0;
    }
}

static PyObject *build(const snapshot *s) {
    return Py_BuildValue("(y#KLLKKny#KLL)", (const char *)s->rx, (Py_ssize_t)s->rx_len,
                         (unsigned long long)s->rx_frames, (long long)s->last, (long long)s->done,
                         (unsigned long long)s->sent, (unsigned long long)s->dropped, (Py_ssize_t)s->pending,
                         (const char *)s->dec, (Py_ssize_t)s->dec_len, (unsigned long long)s->dec_start,
                         (long long)s->loud_frame, (long long)s->loud_ns);
}

/* Anything Python must act on?  Unvoiced decisions while the detector is idle are not: they are
 * dropped here, as TurnDetector.feed_voiced would ignore them.  Kept audio (a recording, the turn
 * audio of a call with VAD) is not urgent either: it goes along with the next news, or on its
 * own once half the buffer is used, so an idle call with VAD costs Python a pass every 1.5 s, not
 * every 20 ms; the audio stays contiguous and ends at rx_frames whenever it is taken. (mutex held) */
static int has_news(rtport *p) {
    if (p->done_at >= 0 || (p->peak > 0 && p->loud_frame >= 0) || p->rx_dropped != p->dropped_told ||
        p->rx_len >= RX_NEWS)
        return 1;
    if (p->dec_len == 0)
        return 0;
    if (p->follow || memchr(p->dec, 1, p->dec_len) != NULL)
        return 1;
    p->dec_len = 0;
    return 0;
}

static PyObject *py_drain(PyObject *self, PyObject *addr) {
    rtport *p = as_port(addr);
    if (p == NULL)
        return NULL;
    snapshot *s = malloc(sizeof *s);
    if (s == NULL)
        return PyErr_NoMemory();
    pthread_mutex_lock(&p->mu);
    take(p, s);
    pthread_mutex_unlock(&p->mu);
    PyObject *out = build(s);
    free(s);
    return out;
}

static PyObject *py_poll(PyObject *self, PyObject *ports) {
    PyObject *seq = PySequence_Fast(ports, "poll() takes a sequence of ports");
    if (seq == NULL)
        return NULL;
    PyObject *out = PyList_New(0);
    snapshot *s = malloc(sizeof *s);
    if (out == NULL || s == NULL) {
        Py_DECREF(seq);
        Py_XDECREF(out);
        free(s);
        return PyErr_NoMemory();
    }
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    for (Py_ssize_t i = 0; i < n; i++) {
        rtport *p = as_port(PySequence_Fast_GET_ITEM(seq, i));
        if (p == NULL)
            goto fail;
        pthread_mutex_lock(&p->mu);
        int news = has_news(p);
        if (news)
            take(p, s);
        pthread_mutex_unlock(&p->mu);
        if (!news)
            continue;
        PyObject *item = build(s);
        PyObject *pair = item ? Py_BuildValue("(nN)", i, item) : NULL;
        if (pair == NULL || PyList_Append(out, pair) < 0) {
            Py_XDECREF(pair);
            goto fail;
        }
        Py_DECREF(pair);
    }
    Py_DECREF(seq);
    free(s);
    return out;
fail:
    Py_DECREF(seq);
    Py_DECREF(out);
    free(s);
    return NULL;
}

static PyObject *py_clocks(PyObject *self, PyObject *addr) {
    rtport *p = as_port(addr);
    if (p == NULL)
        return NULL;
    pthread_mutex_lock(&p->mu);
    uint64_t rx = p->rx_frames, tx = p->sent;
    pthread_mutex_unlock(&p->mu);
    return Py_BuildValue("(KK)", (unsigned long long)rx, (unsigned long long)tx);
}

/* The (port, int) arguments of the setters below; NULL with the exception set on bad input. */
static rtport *port_and_int(PyObject *args, const char *format, int *value) {
    PyObject *addr;
    if (!PyArg_ParseTuple(args, format, &addr, value))
        return NULL;
    return as_port(addr);
}

static PyObject *py_set_follow(PyObject *self, PyObject *args) {
    int on;
    rtport *p = port_and_int(args, "Op", &on);
    if (p == NULL)
        return NULL;
    pthread_mutex_lock(&p->mu);
    p->follow = on;
    pthread_mutex_unlock(&p->mu);
    Py_RETURN_NONE;
}

static PyObject *py_set_rx(PyObject *self, PyObject *args) {
    int on;
    rtport *p = port_and_int(args, "Op", &on);
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
    p->peak = 0;
    p->loud_frame = -1;
    p->vad = NULL;
    PyObject *owner = p->vad_owner;
    p->vad_owner = NULL;
    p->dec_len = 0;
    p->follow = 0;
    p->dropped_told = 0;
    pthread_mutex_unlock(&p->mu);
    Py_XDECREF(owner);
    Py_RETURN_NONE;
}

static PyObject *py_vad_setup(PyObject *self, PyObject *args) {
    PyObject *process, *init, *set_mode;
    if (!PyArg_ParseTuple(args, "OOO", &process, &init, &set_mode))
        return NULL;
    void *fp = PyLong_AsVoidPtr(process), *fi = PyLong_AsVoidPtr(init), *fm = PyLong_AsVoidPtr(set_mode);
    if (PyErr_Occurred())
        return NULL;
    if (fp == NULL || fi == NULL || fm == NULL) {
        PyErr_SetString(PyExc_ValueError, "null webrtcvad entry point");
        return NULL;
    }
    vad_process = (vad_process_fn)fp;
    vad_init = (vad_init_fn)fi;
    vad_set_mode = (vad_set_mode_fn)fm;
    Py_RETURN_NONE;
}

static PyObject *py_set_vad(PyObject *self, PyObject *args) {
    PyObject *addr, *capsule;
    int mode;
    double floor;
    if (!PyArg_ParseTuple(args, "OOid", &addr, &capsule, &mode, &floor))
        return NULL;
    rtport *p = as_port(addr);
    if (p == NULL)
        return NULL;
    void *inst = NULL;
    if (capsule != Py_None) {
        if (vad_process == NULL) {
            PyErr_SetString(PyExc_RuntimeError, "vad_setup() first");
            return NULL;
        }
        inst = PyCapsule_GetPointer(capsule, PyCapsule_GetName(capsule));
        if (inst == NULL)
            return NULL;
    }
    pthread_mutex_lock(&p->mu);
    int err = 0;
    if (inst != NULL && inst != p->vad)
        err = (int16_t)vad_init(inst) != 0; /* a fresh noise model for each call */
    if (inst != NULL && !err)
        err = (int16_t)vad_set_mode(inst, mode) != 0;
    p->vad = err ? NULL : inst;
    PyObject *old = p->vad_owner;
    p->vad_owner = p->vad != NULL ? capsule : NULL;
    Py_XINCREF(p->vad_owner);
    p->floor = floor;
    if (p->vad == NULL)
        p->dec_len = 0;
    pthread_mutex_unlock(&p->mu);
    Py_XDECREF(old);
    if (err) {
        PyErr_Format(PyExc_ValueError, "webrtcvad refused mode %d", mode);
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *py_set_peak(PyObject *self, PyObject *args) {
    int peak;
    rtport *p = port_and_int(args, "Oi", &peak);
    if (p == NULL)
        return NULL;
    pthread_mutex_lock(&p->mu);
    p->peak = peak > 0 ? peak : 0;
    p->loud_frame = -1;
    pthread_mutex_unlock(&p->mu);
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"setup", py_setup, METH_VARARGS, "setup(put_off, get_off, destroy_off): where the callbacks go"},
    {"new", py_new, METH_NOARGS, "new() -> address of a port block (pjmedia_port first)"},
    {"push", py_push, METH_VARARGS, "push(port, pcm, clear) -> frames queued (the tail padded)"},
    {"clear", py_clear, METH_O, "clear(port) -> frames dropped"},
    {"drain", py_drain, METH_O,
     "drain(port) -> (rx_pcm, rx_frames, rx_last_ns, done_at, sent, rx_dropped, pending, "
     "voiced, voiced_from, loud_frame, loud_ns)"},
    {"poll", py_poll, METH_O,
     "poll(ports) -> [(index, drain tuple)] for the ports with something to act on; the rest keep "
     "their clocks and lose only unvoiced decisions nobody follows"},
    {"clocks", py_clocks, METH_O, "clocks(port) -> (rx_frames, sent), without draining"},
    {"set_follow", py_set_follow, METH_VARARGS,
     "set_follow(port, on): poll reports unvoiced decisions too (the detector is mid-turn)"},
    {"set_rx", py_set_rx, METH_VARARGS, "set_rx(port, on): keep received audio or only count it"},
    {"reset", py_reset, METH_O, "reset(port): empty and zeroed, for the next call"},
    {"vad_setup", py_vad_setup, METH_VARARGS, "vad_setup(process, init, set_mode): webrtcvad's entry points"},
    {"set_vad", py_set_vad, METH_VARARGS,
     "set_vad(port, vad_capsule | None, mode, floor): speech decisions on received frames, or none"},
    {"set_peak", py_set_peak, METH_VARARGS, "set_peak(port, peak): look for first audio (0: stop looking)"},
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
