/*
 * rtopus: an Opus codec factory for the pjsua2-python wheel (pjproject 2.15.1, built without Opus).
 *
 * pjmedia's stream and SDP code already know Opus by its encoding name (RTP clock always 48 kHz,
 * rtpmap "opus/48000/2", the real rate and channel count negotiated from the fmtp); what the wheel
 * lacks is only a codec factory.  This file is one, on top of Debian's libopus, and the worker
 * registers it with pjmedia's own codec manager through ctypes (sipworker/opus/README.md).
 *
 * Rules this module keeps:
 *  1. It links against libopus only: every pjmedia call goes through the wheel's exported C API,
 *     made by the caller (pjmedia_codec_mgr_register_factory), never from here.
 *  2. The pjmedia structs below are declared here because the wheel ships no headers.  They are the
 *     x86_64 layout of pjproject 2.15.1; the _Static_asserts pin the sizes measured against the real
 *     2.15.1 headers, and the Python loader refuses any other pjproject version.
 *  3. One codec: "opus", clock 48000, 2 channels in the rtpmap (RFC 7587), payload type set by
 *     rtopus_configure (default 119, pjproject's own slot for Opus, free in the wheel).
 *  4. Streams are mono PCM16 at the negotiated rate: the offer says "sprop-stereo=0; stereo=0", so
 *     pjmedia opens the codec with one channel and the conference bridge needs no channel mixing.
 *  5. One Opus packet is one jitter-buffer frame; a packet whose duration differs from the current
 *     decoder ptime is flagged to the stream (bit_info 0x10000 | samples), as pjmedia expects.
 *  6. Lost packets are concealed by libopus (op recover), not by pjmedia's generic PLC.
 *  7. No allocation from pj pools and no pj mutex: each codec instance is calloc'ed and freed by its
 *     factory, and the stream serialises calls on one codec.
 */
#include <opus/opus.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ---- pjproject 2.15.1 ABI (rule 2) ---------------------------------------------------------- */
typedef int pj_status_t;
typedef int pj_bool_t;
typedef long pj_ssize_t;
typedef size_t pj_size_t;
typedef struct pj_str_t { char *ptr; pj_ssize_t slen; } pj_str_t;
typedef union pj_timestamp { struct { uint32_t lo, hi; } u32; uint64_t u64; } pj_timestamp;
typedef struct pj_pool_t pj_pool_t;

enum { PJ_SUCCESS = 0, PJ_EINVAL = 70004, PJ_ENOMEM = 70007 };
enum { PJMEDIA_CODEC_EUNSUP = 220080, PJMEDIA_CODEC_EFAILED = 220081, PJMEDIA_CODEC_EFRMTOOSHORT = 220082 };
enum { PJMEDIA_TYPE_AUDIO = 1 };
enum { PJMEDIA_FRAME_TYPE_NONE = 0, PJMEDIA_FRAME_TYPE_AUDIO = 1 };
enum { PJMEDIA_FORMAT_L16 = 0 };
#define PJMEDIA_CODEC_MAX_FMTP_CNT 16

typedef struct pjmedia_frame {
    int type;
    void *buf;
    pj_size_t size;
    pj_timestamp timestamp;
    uint32_t bit_info;
} pjmedia_frame;

typedef struct pjmedia_codec_info {
    int type;
    unsigned pt;
    pj_str_t encoding_name;
    unsigned clock_rate;
    unsigned channel_cnt;
} pjmedia_codec_info;

typedef struct pjmedia_codec_fmtp {
    uint8_t cnt;
    struct { pj_str_t name; pj_str_t val; } param[PJMEDIA_CODEC_MAX_FMTP_CNT];
} pjmedia_codec_fmtp;

typedef struct pjmedia_codec_param {
    struct {
        unsigned clock_rate;
        unsigned channel_cnt;
        uint32_t avg_bps;
        uint32_t max_bps;
        unsigned max_rx_frame_size;
        uint16_t frm_ptime;
        uint8_t frm_ptime_denum;
        uint16_t enc_ptime;
        uint8_t enc_ptime_denum;
        uint8_t pcm_bits_per_sample;
        uint8_t pt;
        uint32_t fmt_id;
    } info;
    struct {
        uint8_t frm_per_pkt;
        unsigned vad:1;
        unsigned cng:1;
        unsigned penh:1;
        unsigned plc:1;
        unsigned reserved:1;
        pjmedia_codec_fmtp enc_fmtp;
        pjmedia_codec_fmtp dec_fmtp;
        unsigned packet_loss;
        unsigned complexity;
        pj_bool_t cbr;
    } setting;
} pjmedia_codec_param;

typedef struct pjmedia_codec pjmedia_codec;
typedef struct pjmedia_codec_factory pjmedia_codec_factory;

typedef struct pjmedia_codec_op {
    pj_status_t (*init)(pjmedia_codec *codec, pj_pool_t *pool);
    pj_status_t (*open)(pjmedia_codec *codec, pjmedia_codec_param *param);
    pj_status_t (*close)(pjmedia_codec *codec);
    pj_status_t (*modify)(pjmedia_codec *codec, const pjmedia_codec_param *param);
    pj_status_t (*parse)(pjmedia_codec *codec, void *pkt, pj_size_t pkt_size, const pj_timestamp *ts,
                         unsigned *frame_cnt, pjmedia_frame frames[]);
    pj_status_t (*encode)(pjmedia_codec *codec, const pjmedia_frame *input, unsigned out_size,
                          pjmedia_frame *output);
    pj_status_t (*decode)(pjmedia_codec *codec, const pjmedia_frame *input, unsigned out_size,
                          pjmedia_frame *output);
    pj_status_t (*recover)(pjmedia_codec *codec, unsigned out_size, pjmedia_frame *output);
} pjmedia_codec_op;

struct pjmedia_codec {
    pjmedia_codec *prev, *next;
    void *codec_data;
    pjmedia_codec_factory *factory;
    pjmedia_codec_op *op;
};

typedef struct pjmedia_codec_factory_op {
    pj_status_t (*test_alloc)(pjmedia_codec_factory *factory, const pjmedia_codec_info *info);
    pj_status_t (*default_attr)(pjmedia_codec_factory *factory, const pjmedia_codec_info *info,
                                pjmedia_codec_param *attr);
    pj_status_t (*enum_info)(pjmedia_codec_factory *factory, unsigned *count, pjmedia_codec_info codecs[]);
    pj_status_t (*alloc_codec)(pjmedia_codec_factory *factory, const pjmedia_codec_info *info,
                               pjmedia_codec **p_codec);
    pj_status_t (*dealloc_codec)(pjmedia_codec_factory *factory, pjmedia_codec *codec);
    pj_status_t (*destroy)(void);
} pjmedia_codec_factory_op;

struct pjmedia_codec_factory {
    pjmedia_codec_factory *prev, *next;
    void *factory_data;
    pjmedia_codec_factory_op *op;
};

/* Sizes measured with the real pjproject 2.15.1 headers (gcc 12, x86_64). */
_Static_assert(sizeof(pjmedia_frame) == 40, "pjmedia_frame layout");
_Static_assert(sizeof(pjmedia_codec_info) == 32, "pjmedia_codec_info layout");
_Static_assert(sizeof(pjmedia_codec_fmtp) == 520, "pjmedia_codec_fmtp layout");
_Static_assert(sizeof(pjmedia_codec_param) == 1104, "pjmedia_codec_param layout");
_Static_assert(offsetof(pjmedia_codec_param, info.fmt_id) == 32, "info.fmt_id offset");
_Static_assert(offsetof(pjmedia_codec_param, setting.enc_fmtp) == 48, "setting.enc_fmtp offset");
_Static_assert(offsetof(pjmedia_codec_param, setting.dec_fmtp) == 568, "setting.dec_fmtp offset");
_Static_assert(offsetof(pjmedia_codec_param, setting.packet_loss) == 1088, "setting.packet_loss offset");
_Static_assert(sizeof(pjmedia_codec) == 40 && sizeof(pjmedia_codec_factory) == 32, "list members");
_Static_assert(sizeof(pjmedia_codec_op) == 64 && sizeof(pjmedia_codec_factory_op) == 48, "op tables");

/* ---- configuration (set once, before registration) ----------------------------------------- */
#define RTOPUS_PTIME_MS 20
#define RTOPUS_MAX_PACKET 1275  /* RFC 6716: largest single Opus frame */

static struct {
    unsigned pt;
    unsigned rate;       /* rate advertised (maxplaybackrate/sprop-maxcapturerate) and used at most */
    unsigned bitrate;    /* encoder target, bits/s */
    unsigned complexity; /* 0..10 */
    int fec;             /* offer and use in-band FEC */
} cfg = { 119, 48000, 32000, 5, 1 };

static char fmtp_rate[16];

static int valid_rate(unsigned rate)
{
    return rate == 8000 || rate == 12000 || rate == 16000 || rate == 24000 || rate == 48000;
}

/* Set the codec's parameters; returns 0, or PJ_EINVAL for a value libopus or RTP cannot take. */
int rtopus_configure(unsigned pt, unsigned rate, unsigned bitrate, unsigned complexity, int fec)
{
    if (pt < 96 || pt > 127 || !valid_rate(rate) || bitrate < 6000 || bitrate > 510000 || complexity > 10)
        return PJ_EINVAL;
    cfg.pt = pt;
    cfg.rate = rate;
    cfg.bitrate = bitrate;
    cfg.complexity = complexity;
    cfg.fec = fec != 0;
    return PJ_SUCCESS;
}

/* libopus's version string, for the worker's journal. */
const char *rtopus_libopus_version(void) { return opus_get_version_string(); }

static pj_str_t cstr(const char *s) { pj_str_t r = { (char *)s, (pj_ssize_t)strlen(s) }; return r; }

static int str_eq(const pj_str_t *a, const char *b)
{
    size_t n = strlen(b);
    return a->slen == (pj_ssize_t)n && strncasecmp(a->ptr, b, n) == 0;
}

static long fmtp_long(const pjmedia_codec_fmtp *fmtp, const char *name, long fallback)
{
    for (unsigned i = 0; i < fmtp->cnt && i < PJMEDIA_CODEC_MAX_FMTP_CNT; ++i) {
        if (str_eq(&fmtp->param[i].name, name)) {
            char buf[24];
            size_t n = (size_t)fmtp->param[i].val.slen;
            if (n >= sizeof(buf)) n = sizeof(buf) - 1;
            memcpy(buf, fmtp->param[i].val.ptr, n);
            buf[n] = 0;
            return strtol(buf, NULL, 10);
        }
    }
    return fallback;
}

static void fmtp_add(pjmedia_codec_fmtp *fmtp, const char *name, const char *val)
{
    if (fmtp->cnt >= PJMEDIA_CODEC_MAX_FMTP_CNT) return;
    fmtp->param[fmtp->cnt].name = cstr(name);
    fmtp->param[fmtp->cnt].val = cstr(val);
    fmtp->cnt++;
}

/* ---- one codec instance ---------------------------------------------------------------------- */
typedef struct rtopus_codec {
    pjmedia_codec base;     /* first: pjmedia hands back this pointer */
    OpusEncoder *enc;
    OpusDecoder *dec;
    unsigned rate;
    unsigned channels;
    unsigned frame_samples; /* per channel, one RTOPUS_PTIME_MS frame */
    int dec_samples;        /* duration of the last parsed packet (rule 5) */
} rtopus_codec;

static pj_status_t codec_init(pjmedia_codec *codec, pj_pool_t *pool)
{
    (void)codec; (void)pool;
    return PJ_SUCCESS;
}

static void codec_free_state(rtopus_codec *c)
{
    if (c->enc) opus_encoder_destroy(c->enc);
    if (c->dec) opus_decoder_destroy(c->dec);
    c->enc = NULL;
    c->dec = NULL;
}

static void apply_encoder_settings(rtopus_codec *c, const pjmedia_codec_param *param)
{
    const pjmedia_codec_fmtp *remote = &param->setting.enc_fmtp;
    long bitrate = param->info.avg_bps ? (long)param->info.avg_bps : (long)cfg.bitrate;
    long cap = fmtp_long(remote, "maxaveragebitrate", 0);
    if (cap >= 6000 && cap < bitrate) bitrate = cap;
    int fec = cfg.fec && fmtp_long(remote, "useinbandfec", 0) == 1;
    opus_encoder_ctl(c->enc, OPUS_SET_BITRATE((opus_int32)bitrate));
    opus_encoder_ctl(c->enc, OPUS_SET_COMPLEXITY((opus_int32)cfg.complexity));
    opus_encoder_ctl(c->enc, OPUS_SET_VBR(fmtp_long(remote, "cbr", 0) == 1 ? 0 : 1));
    opus_encoder_ctl(c->enc, OPUS_SET_INBAND_FEC(fec));
    opus_encoder_ctl(c->enc, OPUS_SET_PACKET_LOSS_PERC(fec ? 10 : 0));
    opus_encoder_ctl(c->enc, OPUS_SET_DTX(0));
}

static pj_status_t codec_open(pjmedia_codec *codec, pjmedia_codec_param *param)
{
    rtopus_codec *c = (rtopus_codec *)codec->codec_data;
    int err = 0;
    if (!valid_rate(param->info.clock_rate) || param->info.channel_cnt < 1 || param->info.channel_cnt > 2)
        return PJMEDIA_CODEC_EUNSUP;
    codec_free_state(c);
    c->rate = param->info.clock_rate;
    c->channels = param->info.channel_cnt;
    c->frame_samples = c->rate * RTOPUS_PTIME_MS / 1000;
    c->dec_samples = (int)c->frame_samples;
    c->enc = opus_encoder_create((opus_int32)c->rate, (int)c->channels, OPUS_APPLICATION_VOIP, &err);
    if (err != OPUS_OK) { codec_free_state(c); return PJMEDIA_CODEC_EFAILED; }
    c->dec = opus_decoder_create((opus_int32)c->rate, (int)c->channels, &err);
    if (err != OPUS_OK) { codec_free_state(c); return PJMEDIA_CODEC_EFAILED; }
    apply_encoder_settings(c, param);
    param->info.frm_ptime = RTOPUS_PTIME_MS;
    param->info.frm_ptime_denum = 1;
    return PJ_SUCCESS;
}

static pj_status_t codec_close(pjmedia_codec *codec)
{
    codec_free_state((rtopus_codec *)codec->codec_data);
    return PJ_SUCCESS;
}

static pj_status_t codec_modify(pjmedia_codec *codec, const pjmedia_codec_param *param)
{
    rtopus_codec *c = (rtopus_codec *)codec->codec_data;
    if (!c->enc) return PJ_EINVAL;
    apply_encoder_settings(c, param);
    return PJ_SUCCESS;
}

static pj_status_t codec_parse(pjmedia_codec *codec, void *pkt, pj_size_t pkt_size, const pj_timestamp *ts,
                               unsigned *frame_cnt, pjmedia_frame frames[])
{
    rtopus_codec *c = (rtopus_codec *)codec->codec_data;
    if (*frame_cnt < 1) return PJ_EINVAL;
    if (pkt_size == 0 || pkt_size > RTOPUS_MAX_PACKET * 3) return PJMEDIA_CODEC_EFRMTOOSHORT;
    int samples = opus_packet_get_nb_samples((const unsigned char *)pkt, (opus_int32)pkt_size,
                                             (opus_int32)c->rate);
    if (samples <= 0) return PJMEDIA_CODEC_EFAILED;
    frames[0].type = PJMEDIA_FRAME_TYPE_AUDIO;
    frames[0].buf = pkt;
    frames[0].size = pkt_size;
    frames[0].timestamp = *ts;
    frames[0].bit_info = 0;
    if (samples != c->dec_samples) {
        c->dec_samples = samples;
        frames[0].bit_info = 0x10000u | (uint32_t)samples;
    }
    *frame_cnt = 1;
    return PJ_SUCCESS;
}

static pj_status_t codec_encode(pjmedia_codec *codec, const pjmedia_frame *input, unsigned out_size,
                                pjmedia_frame *output)
{
    rtopus_codec *c = (rtopus_codec *)codec->codec_data;
    unsigned samples = (unsigned)(input->size / (2 * c->channels));
    if (!c->enc || input->type != PJMEDIA_FRAME_TYPE_AUDIO || samples == 0) {
        output->type = PJMEDIA_FRAME_TYPE_NONE;
        output->size = 0;
        return PJ_SUCCESS;
    }
    opus_int32 n = opus_encode(c->enc, (const opus_int16 *)input->buf, (int)samples,
                               (unsigned char *)output->buf, (opus_int32)out_size);
    if (n < 0) return PJMEDIA_CODEC_EFAILED;
    output->type = PJMEDIA_FRAME_TYPE_AUDIO;
    output->size = (pj_size_t)n;
    output->timestamp = input->timestamp;
    return PJ_SUCCESS;
}

static pj_status_t decode_into(rtopus_codec *c, const unsigned char *data, opus_int32 len, unsigned out_size,
                               pjmedia_frame *output)
{
    int max_samples = (int)(out_size / (2 * c->channels));
    int n;
    if (!c->dec) return PJ_EINVAL;
    if (data == NULL && max_samples > (int)c->frame_samples) max_samples = (int)c->frame_samples;
    n = opus_decode(c->dec, data, len, (opus_int16 *)output->buf, max_samples, 0);
    if (n < 0) return PJMEDIA_CODEC_EFAILED;
    output->type = PJMEDIA_FRAME_TYPE_AUDIO;
    output->size = (pj_size_t)n * 2 * c->channels;
    return PJ_SUCCESS;
}

static pj_status_t codec_decode(pjmedia_codec *codec, const pjmedia_frame *input, unsigned out_size,
                                pjmedia_frame *output)
{
    rtopus_codec *c = (rtopus_codec *)codec->codec_data;
    pj_status_t st = input->size ? decode_into(c, (const unsigned char *)input->buf, (opus_int32)input->size,
                                               out_size, output)
                                 : decode_into(c, NULL, 0, out_size, output);
    output->timestamp = input->timestamp;
    return st;
}

static pj_status_t codec_recover(pjmedia_codec *codec, unsigned out_size, pjmedia_frame *output)
{
    return decode_into((rtopus_codec *)codec->codec_data, NULL, 0, out_size, output);
}

static pjmedia_codec_op codec_op = {
    codec_init, codec_open, codec_close, codec_modify, codec_parse, codec_encode, codec_decode, codec_recover,
};

/* ---- the factory ---------------------------------------------------------------------------- */
/* pjmedia asks for "opus" at 48000 Hz while negotiating, and allocates the stream's codec with the
 * rate and channel count it derived from the fmtp (rule 3), so any Opus rate is ours. */
static int is_ours(const pjmedia_codec_info *info)
{
    return info->type == PJMEDIA_TYPE_AUDIO && str_eq(&info->encoding_name, "opus") && valid_rate(info->clock_rate);
}

static pj_status_t f_test_alloc(pjmedia_codec_factory *factory, const pjmedia_codec_info *info)
{
    (void)factory;
    return is_ours(info) ? PJ_SUCCESS : PJMEDIA_CODEC_EUNSUP;
}

static pj_status_t f_default_attr(pjmedia_codec_factory *factory, const pjmedia_codec_info *info,
                                  pjmedia_codec_param *attr)
{
    (void)factory;
    if (!is_ours(info)) return PJMEDIA_CODEC_EUNSUP;
    memset(attr, 0, sizeof(*attr));
    attr->info.clock_rate = cfg.rate;
    attr->info.channel_cnt = 1;
    attr->info.avg_bps = cfg.bitrate;
    attr->info.max_bps = 2 * 48000;  /* sizes pjmedia's RTP buffer: 240 bytes per 20 ms */
    attr->info.max_rx_frame_size = RTOPUS_MAX_PACKET;
    attr->info.frm_ptime = RTOPUS_PTIME_MS;
    attr->info.frm_ptime_denum = 1;
    attr->info.pcm_bits_per_sample = 16;
    attr->info.pt = (uint8_t)cfg.pt;
    attr->info.fmt_id = PJMEDIA_FORMAT_L16;
    attr->setting.frm_per_pkt = 1;
    attr->setting.plc = 1;
    attr->setting.complexity = cfg.complexity;
    /* rule 4, and the rate we can take and send (RFC 7587 section 6.1) */
    if (cfg.rate != 48000) {
        fmtp_add(&attr->setting.dec_fmtp, "maxplaybackrate", fmtp_rate);
        fmtp_add(&attr->setting.dec_fmtp, "sprop-maxcapturerate", fmtp_rate);
    }
    fmtp_add(&attr->setting.dec_fmtp, "sprop-stereo", "0");
    fmtp_add(&attr->setting.dec_fmtp, "stereo", "0");
    if (cfg.fec) fmtp_add(&attr->setting.dec_fmtp, "useinbandfec", "1");
    return PJ_SUCCESS;
}

static pj_status_t f_enum_info(pjmedia_codec_factory *factory, unsigned *count, pjmedia_codec_info codecs[])
{
    (void)factory;
    if (*count < 1) return PJ_SUCCESS;
    memset(&codecs[0], 0, sizeof(codecs[0]));
    codecs[0].type = PJMEDIA_TYPE_AUDIO;
    codecs[0].pt = cfg.pt;
    codecs[0].encoding_name = cstr("opus");
    codecs[0].clock_rate = 48000;
    codecs[0].channel_cnt = 2;
    *count = 1;
    return PJ_SUCCESS;
}

static pj_status_t f_alloc_codec(pjmedia_codec_factory *factory, const pjmedia_codec_info *info,
                                 pjmedia_codec **p_codec)
{
    rtopus_codec *c;
    if (!is_ours(info)) return PJMEDIA_CODEC_EUNSUP;
    c = (rtopus_codec *)calloc(1, sizeof(*c));
    if (!c) return PJ_ENOMEM;
    c->base.codec_data = c;
    c->base.factory = factory;
    c->base.op = &codec_op;
    *p_codec = &c->base;
    return PJ_SUCCESS;
}

static pj_status_t f_dealloc_codec(pjmedia_codec_factory *factory, pjmedia_codec *codec)
{
    rtopus_codec *c = (rtopus_codec *)codec->codec_data;
    (void)factory;
    codec_free_state(c);
    free(c);
    return PJ_SUCCESS;
}

static pj_status_t f_destroy(void) { return PJ_SUCCESS; }

static pjmedia_codec_factory_op factory_op = {
    f_test_alloc, f_default_attr, f_enum_info, f_alloc_codec, f_dealloc_codec, f_destroy,
};

static pjmedia_codec_factory factory = { NULL, NULL, NULL, &factory_op };

/* The factory to hand to pjmedia_codec_mgr_register_factory (one per process, like the endpoint). */
void *rtopus_factory(void)
{
    snprintf(fmtp_rate, sizeof(fmtp_rate), "%u", cfg.rate);
    return &factory;
}
