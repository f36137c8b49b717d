/*
 * nvml-double: an ABI-level stand-in for libnvidia-ml.so.1 that serves a recorded trace.
 *
 * Built as a shared library named libnvidia-ml.so.1; the unmodified nvidia-ml-py (pynvml) loads it
 * through the normal loader search (LD_LIBRARY_PATH). It exports the NVML C symbols flopwatch's
 * NVML backend reaches through pynvml, with the struct layouts of nvml.h (the ones pynvml's
 * ctypes definitions expect), and answers from a trace in this repository's format
 * (tests/fixtures/h100-trace-1/README.md). Semantics, switches and layouts: README.md beside this
 * file. C11, libc/libm/pthread only.
 */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define EXPORT __attribute__((visibility("default")))

/* ---- NVML types and constants (nvml.h) ------------------------------------------------------ */

typedef unsigned int nvmlReturn_t;
enum {
    NVML_SUCCESS = 0,
    NVML_ERROR_UNINITIALIZED = 1,
    NVML_ERROR_INVALID_ARGUMENT = 2,
    NVML_ERROR_NOT_SUPPORTED = 3,
    NVML_ERROR_NOT_FOUND = 6,
    NVML_ERROR_INSUFFICIENT_SIZE = 7,
    NVML_ERROR_DRIVER_NOT_LOADED = 9,
    NVML_ERROR_IN_USE = 19,
    NVML_ERROR_MEMORY = 20,
    NVML_ERROR_ARGUMENT_VERSION_MISMATCH = 25,
    NVML_ERROR_UNKNOWN = 999,
};

enum { NVML_CLOCK_GRAPHICS = 0, NVML_CLOCK_SM = 1, NVML_CLOCK_MEM = 2, NVML_CLOCK_VIDEO = 3 };
enum { NVML_GPU_UTILIZATION_SAMPLES = 1 };
enum { NVML_VALUE_TYPE_UNSIGNED_INT = 1 };
enum { NVML_GPM_METRICS_GET_VERSION = 1, NVML_GPM_SUPPORT_VERSION = 1 };
#define NVML_GPM_METRIC_MAX 477 /* metrics[] capacity of the newest header; callers pass fewer */
#define NVML_MEMORY_V2_VERSION 0x02000028u /* NVML_STRUCT_VERSION(Memory, 2): sizeof | 2 << 24 */
#define NVML_VALUE_NOT_AVAILABLE_UINT 0xFFFFFFFFu
#define NVML_CC_GPU_CEC_NONCE_SIZE 0x20
#define NVML_CC_GPU_ATTESTATION_REPORT_SIZE 0x2000
#define NVML_CC_GPU_CEC_ATTESTATION_REPORT_SIZE 0x1000
#define NVML_GPU_CERT_CHAIN_SIZE 0x1000
#define NVML_GPU_ATTESTATION_CERT_CHAIN_SIZE 0x1400

typedef struct nvmlDevice_st *nvmlDevice_t;
typedef struct nvmlGpmSample_st *nvmlGpmSample_t;

typedef struct { /* nvmlProcessInfo_t == nvmlProcessInfo_v2_t (24 bytes), what _v2 and _v3 fill */
    unsigned int pid;
    unsigned long long usedGpuMemory;
    unsigned int gpuInstanceId;
    unsigned int computeInstanceId;
} nvmlProcessInfo_t;

typedef struct { /* 32 bytes */
    unsigned int pid;
    unsigned long long timeStamp;
    unsigned int smUtil, memUtil, encUtil, decUtil;
} nvmlProcessUtilizationSample_t;

typedef union {
    double dVal;
    unsigned int uiVal;
    unsigned long ulVal;
    unsigned long long ullVal;
    signed long long sllVal;
    signed int siVal;
    unsigned short usVal;
} nvmlValue_t;

typedef struct {
    unsigned long long timeStamp;
    nvmlValue_t sampleValue;
} nvmlSample_t;

typedef struct {
    unsigned int multiprocessorCount;
    unsigned int sharedCopyEngineCount;
    unsigned int sharedDecoderCount;
    unsigned int sharedEncoderCount;
    unsigned int sharedJpegCount;
    unsigned int sharedOfaCount;
    unsigned int gpuInstanceSliceCount;
    unsigned int computeInstanceSliceCount;
    unsigned long long memorySizeMB;
} nvmlDeviceAttributes_t;

typedef struct {
    unsigned long long total, free, used;
} nvmlMemory_t;

typedef struct {
    unsigned int version;
    unsigned long long total, reserved, free, used;
} nvmlMemory_v2_t;

typedef struct {
    unsigned int version;
    unsigned int isSupportedDevice;
} nvmlGpmSupport_t;

typedef struct {
    char *shortName;
    char *longName;
    char *unit;
} nvmlGpmMetricInfo_t;

typedef struct { /* 40 bytes */
    unsigned int metricId;
    nvmlReturn_t nvmlReturn;
    double value;
    nvmlGpmMetricInfo_t metricInfo;
} nvmlGpmMetric_t;

typedef struct {
    unsigned int version;
    unsigned int numMetrics;
    nvmlGpmSample_t sample1;
    nvmlGpmSample_t sample2;
    nvmlGpmMetric_t metrics[NVML_GPM_METRIC_MAX];
} nvmlGpmMetricsGet_t;

typedef struct {
    unsigned int environment;
    unsigned int ccFeature;
    unsigned int devToolsMode;
} nvmlConfComputeSystemState_t;

typedef struct {
    unsigned int isCecAttestationReportPresent;
    unsigned int attestationReportSize;
    unsigned int cecAttestationReportSize;
    unsigned char nonce[NVML_CC_GPU_CEC_NONCE_SIZE];
    unsigned char attestationReport[NVML_CC_GPU_ATTESTATION_REPORT_SIZE];
    unsigned char cecAttestationReport[NVML_CC_GPU_CEC_ATTESTATION_REPORT_SIZE];
} nvmlConfComputeGpuAttestationReport_t;

typedef struct {
    unsigned int certChainSize;
    unsigned int attestationCertChainSize;
    unsigned char certChain[NVML_GPU_CERT_CHAIN_SIZE];
    unsigned char attestationCertChain[NVML_GPU_ATTESTATION_CERT_CHAIN_SIZE];
} nvmlConfComputeGpuCertificate_t;

/* ---- bounds ----------------------------------------------------------------------------------- */

#define MAX_GPUS 8 /* served pids stay below 32768 (PID_STRIDE_GPU) */
#define MIG_SLICES 7          /* an H100 holds at most 7 GPU-instance slices */
#define MAX_LINE (4u << 20)   /* one trace line */
#define MAX_INTERVALS 1000000 /* trace lines */
#define MAX_ITEMS 100000      /* elements of one JSON array or object */
#define MAX_DEPTH 8
#define MAX_LIVE_SAMPLES 4096 /* GPM sample buffers allocated at once */
#define UTIL_PERIOD_S (1.0 / 6.0)
#define UTIL_MAX_SAMPLES 100  /* utilization samples the "driver" keeps */
#define GPM_MIN_GAP_S 0.1     /* GPM samples closer than this (served time) give no metrics */
/* Served pids stay plausible (below the smallest pid_max a kernel runs with, 32768) so that the
 * backend's filter of impossible pids keeps them: GPU i serves pid + i x 2048, GPU instance g
 * pid + g x 256. Distinct as long as a trace's pids lie below 2048 and span less than 256. */
#define PID_LIMIT 2048u
#define PID_STRIDE_GI 256u
#define PID_STRIDE_GPU 2048u
#define GI_ID_BASE 7u /* GPU instance ids 7, 8, ...: never equal to an index */
#define N_GPM 13      /* metric ids 1..13 come from the trace */

/* ---- tiny JSON reader (one trace line) -------------------------------------------------------- */

enum { J_NULL, J_BOOL, J_NUM, J_STR, J_ARR, J_OBJ };

typedef struct jv {
    int t;
    double num;
    char *s;
    int n;
    struct jv *a; /* items (arrays) or values (objects) */
    char **k;     /* keys (objects) */
} jv;

typedef struct {
    const char *p;
    const char *err;
} jp;

static void j_free(jv *v) {
    if (v->t == J_STR) free(v->s);
    if (v->t == J_ARR || v->t == J_OBJ) {
        for (int i = 0; i < v->n; i++) {
            j_free(&v->a[i]);
            if (v->k) free(v->k[i]);
        }
        free(v->a);
        free(v->k);
    }
    memset(v, 0, sizeof *v);
}

static void j_ws(jp *j) {
    while (*j->p == ' ' || *j->p == '\t' || *j->p == '\r' || *j->p == '\n') j->p++;
}

static int j_value(jp *j, jv *out, int depth);

static char *j_string(jp *j) {
    if (*j->p != '"') {
        j->err = "expected a string";
        return NULL;
    }
    j->p++;
    size_t cap = 16, n = 0;
    char *s = malloc(cap);
    if (!s) {
        j->err = "out of memory";
        return NULL;
    }
    for (;;) {
        unsigned char c = (unsigned char)*j->p;
        if (c == 0 || c < 0x20) {
            j->err = "unterminated string";
            free(s);
            return NULL;
        }
        j->p++;
        if (c == '"') break;
        if (c == '\\') {
            char e = *j->p++;
            switch (e) {
                case '"': case '\\': case '/': c = (unsigned char)e; break;
                case 'b': c = '\b'; break;
                case 'f': c = '\f'; break;
                case 'n': c = '\n'; break;
                case 'r': c = '\r'; break;
                case 't': c = '\t'; break;
                case 'u':
                    for (int i = 0; i < 4; i++) {
                        char h = *j->p;
                        if (!((h >= '0' && h <= '9') || (h >= 'a' && h <= 'f') || (h >= 'A' && h <= 'F'))) {
                            j->err = "bad \\u escape";
                            free(s);
                            return NULL;
                        }
                        j->p++;
                    }
                    c = '?'; /* not needed by the trace format: kept as a placeholder */
                    break;
                default:
                    j->err = "bad escape";
                    free(s);
                    return NULL;
            }
        }
        if (n + 2 > cap) {
            if (cap > MAX_LINE) {
                j->err = "string too long";
                free(s);
                return NULL;
            }
            char *t = realloc(s, cap *= 2);
            if (!t) {
                free(s);
                j->err = "out of memory";
                return NULL;
            }
            s = t;
        }
        s[n++] = (char)c;
    }
    s[n] = 0;
    return s;
}

static int j_push(jp *j, jv *v, int *cap) {
    if (v->n >= MAX_ITEMS) {
        j->err = "too many items in an array or object";
        return -1;
    }
    if (v->n == *cap) {
        int nc = *cap ? *cap * 2 : 8;
        jv *a = realloc(v->a, (size_t)nc * sizeof *a);
        if (!a) {
            j->err = "out of memory";
            return -1;
        }
        v->a = a;
        if (v->t == J_OBJ) {
            char **k = realloc(v->k, (size_t)nc * sizeof *k);
            if (!k) {
                j->err = "out of memory";
                return -1;
            }
            v->k = k;
        }
        *cap = nc;
    }
    memset(&v->a[v->n], 0, sizeof v->a[0]);
    if (v->t == J_OBJ) v->k[v->n] = NULL;
    v->n++;
    return 0;
}

static int j_container(jp *j, jv *out, int depth, int obj) {
    char close = obj ? '}' : ']';
    int cap = 0;
    out->t = obj ? J_OBJ : J_ARR;
    j->p++;
    j_ws(j);
    if (*j->p == close) {
        j->p++;
        return 0;
    }
    for (;;) {
        j_ws(j);
        char *key = NULL;
        if (obj) {
            if (!(key = j_string(j))) return -1;
            j_ws(j);
            if (*j->p != ':') {
                free(key);
                j->err = "expected ':'";
                return -1;
            }
            j->p++;
        }
        if (j_push(j, out, &cap) < 0) {
            free(key);
            return -1;
        }
        if (obj) out->k[out->n - 1] = key;
        if (j_value(j, &out->a[out->n - 1], depth + 1) < 0) return -1;
        j_ws(j);
        if (*j->p == ',') {
            j->p++;
            continue;
        }
        if (*j->p == close) {
            j->p++;
            return 0;
        }
        j->err = obj ? "expected ',' or '}'" : "expected ',' or ']'";
        return -1;
    }
}

static int j_value(jp *j, jv *out, int depth) {
    if (depth > MAX_DEPTH) {
        j->err = "nested too deep";
        return -1;
    }
    j_ws(j);
    char c = *j->p;
    if (c == '{' || c == '[') return j_container(j, out, depth, c == '{');
    if (c == '"') {
        out->t = J_STR;
        return (out->s = j_string(j)) ? 0 : -1;
    }
    if (c == '-' || (c >= '0' && c <= '9')) {
        char *end;
        errno = 0;
        out->t = J_NUM;
        out->num = strtod(j->p, &end);
        if (end == j->p || errno == ERANGE || !isfinite(out->num)) {
            j->err = "bad number";
            return -1;
        }
        j->p = end;
        return 0;
    }
    static const struct { const char *w; int t; int b; } words[] = {
        {"true", J_BOOL, 1}, {"false", J_BOOL, 0}, {"null", J_NULL, 0}};
    for (size_t i = 0; i < sizeof words / sizeof words[0]; i++) {
        size_t n = strlen(words[i].w);
        if (strncmp(j->p, words[i].w, n) == 0) {
            out->t = words[i].t;
            out->num = words[i].b;
            j->p += n;
            return 0;
        }
    }
    j->err = "unexpected character";
    return -1;
}

static const jv *j_get(const jv *o, const char *key) {
    if (!o || o->t != J_OBJ) return NULL;
    for (int i = 0; i < o->n; i++)
        if (strcmp(o->k[i], key) == 0) return &o->a[i];
    return NULL;
}

static int j_num(const jv *v, double *out) {
    if (!v || v->t != J_NUM) return 0;
    *out = v->num;
    return 1;
}

/* ---- the trace -------------------------------------------------------------------------------- */

typedef struct {
    unsigned int pid;
    unsigned long long mem;
} proc_t;

typedef struct {
    unsigned int pid;
    double t; /* trace seconds */
    unsigned int sm, mem;
} putil_t;

typedef struct {
    double t0, t1;
    double gpm[N_GPM + 1]; /* percent by metric id; NAN where the line lacks it */
    unsigned int *clock;
    int n_clock;
    double e0, e1;
    int has_energy;
    double power_mw;
    proc_t *procs;
    int n_procs;
} interval_t;

static const char *const GPM_KEYS[N_GPM + 1] = {
    NULL,         "graphics",    "sm_util",     "sm_occ",      "integer", "any_tensor", "dfma_tensor",
    "hmma_tensor", "dmma_tensor", "imma_tensor", "dram_bw",     "fp64",    "fp32",       "fp16"};
static const char *const GPM_LONG[N_GPM + 1] = {
    NULL,
    "Graphics/compute engine active",
    "SM active",
    "SM occupancy",
    "Integer pipe active",
    "Any tensor pipe active",
    "DFMA tensor pipe active",
    "HMMA tensor pipe active",
    "DMMA tensor pipe active",
    "IMMA tensor pipe active",
    "DRAM bandwidth used",
    "FP64 pipe active",
    "FP32 pipe active",
    "FP16 pipe active"};

static struct {
    char name[96], uuid[96], driver[80];
    int cc_major, cc_minor;
    unsigned int cores, max_sm_clock;
    interval_t *iv;
    int n;
    putil_t *pu;
    int n_pu;
    int has_metric[N_GPM + 1];
} T;

static char g_err[512];

__attribute__((format(printf, 1, 2))) static int fail(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g_err, sizeof g_err, fmt, ap);
    va_end(ap);
    return -1;
}

static void copy_str(char *dst, size_t cap, const jv *v, const char *dflt) {
    snprintf(dst, cap, "%s", v && v->t == J_STR ? v->s : dflt);
}

static int load_meta(const jv *o) {
    const jv *cc = j_get(o, "cc");
    double cores = 0, clk = 0;
    copy_str(T.name, sizeof T.name, j_get(o, "name"), "NVIDIA H100 80GB HBM3");
    copy_str(T.uuid, sizeof T.uuid, j_get(o, "uuid"), "GPU-00000000-0000-0000-0000-000000000000");
    copy_str(T.driver, sizeof T.driver, j_get(o, "driver"), "580.159.04");
    if (!cc || cc->t != J_ARR || cc->n != 2 || cc->a[0].t != J_NUM || cc->a[1].t != J_NUM)
        return fail("trace: meta line: cc must be [major, minor]");
    T.cc_major = (int)cc->a[0].num;
    T.cc_minor = (int)cc->a[1].num;
    if (!j_num(j_get(o, "cores"), &cores) || cores < 1 || cores > 1e6 ||
        !j_num(j_get(o, "max_sm_clock_mhz"), &clk) || clk < 1 || clk > 1e5)
        return fail("trace: meta line: cores and max_sm_clock_mhz must be positive numbers");
    T.cores = (unsigned int)cores;
    T.max_sm_clock = (unsigned int)clk;
    return 0;
}

static int load_interval(const jv *o, long line) {
    interval_t iv;
    memset(&iv, 0, sizeof iv);
    if (!j_num(j_get(o, "t0"), &iv.t0) || !j_num(j_get(o, "t1"), &iv.t1) || !(iv.t1 > iv.t0))
        return fail("trace line %ld: t0 and t1 must be numbers with t1 > t0", line);
    const jv *gpm = j_get(o, "gpm");
    for (int id = 1; id <= N_GPM; id++) {
        double x;
        iv.gpm[id] = NAN;
        if (j_num(j_get(gpm, GPM_KEYS[id]), &x)) {
            iv.gpm[id] = fmin(fmax(x, 0.0), 100.0);
            T.has_metric[id] = 1;
        }
    }
    const jv *e = j_get(o, "energy_mj");
    if (e && e->t == J_ARR && e->n == 2 && e->a[0].t == J_NUM && e->a[1].t == J_NUM) {
        iv.e0 = e->a[0].num;
        iv.e1 = e->a[1].num;
        iv.has_energy = 1;
    }
    j_num(j_get(o, "power_mw"), &iv.power_mw);
    const jv *clk = j_get(o, "clock_polled_mhz");
    if (clk && clk->t == J_ARR && clk->n > 0) {
        if (!(iv.clock = malloc((size_t)clk->n * sizeof *iv.clock))) return fail("out of memory");
        for (int i = 0; i < clk->n; i++) {
            if (clk->a[i].t != J_NUM || clk->a[i].num < 0 || clk->a[i].num > 1e5) {
                free(iv.clock);
                return fail("trace line %ld: clock_polled_mhz holds a non-number", line);
            }
            iv.clock[i] = (unsigned int)clk->a[i].num;
        }
        iv.n_clock = clk->n;
    }
    const jv *procs = j_get(o, "procs");
    if (procs && procs->t == J_ARR && procs->n > 0) {
        if (!(iv.procs = calloc((size_t)procs->n, sizeof *iv.procs))) {
            free(iv.clock);
            return fail("out of memory");
        }
        for (int i = 0; i < procs->n; i++) {
            double pid = 0, mem = 0;
            if (!j_num(j_get(&procs->a[i], "pid"), &pid) || pid < 0 || pid >= PID_LIMIT) {
                free(iv.clock);
                free(iv.procs);
                return fail("trace line %ld: a process pid is missing or not below 2048", line);
            }
            j_num(j_get(&procs->a[i], "mem"), &mem);
            iv.procs[i].pid = (unsigned int)pid;
            iv.procs[i].mem = mem > 0 ? (unsigned long long)mem : 0;
        }
        iv.n_procs = procs->n;
    }
    const jv *pu = j_get(o, "proc_util");
    for (int i = 0; pu && pu->t == J_ARR && i < pu->n; i++) {
        double pid = 0, ts = 0, sm = 0, mem = 0;
        if (!j_num(j_get(&pu->a[i], "pid"), &pid) || !j_num(j_get(&pu->a[i], "ts"), &ts) || pid < 0 ||
            pid >= PID_LIMIT || ts <= 0) {
            free(iv.clock);
            free(iv.procs);
            return fail("trace line %ld: a proc_util entry lacks pid (below 2048) or ts", line);
        }
        j_num(j_get(&pu->a[i], "sm"), &sm);
        j_num(j_get(&pu->a[i], "mem"), &mem);
        putil_t *grown = realloc(T.pu, (size_t)(T.n_pu + 1) * sizeof *T.pu);
        if (!grown) {
            free(iv.clock);
            free(iv.procs);
            return fail("out of memory");
        }
        T.pu = grown;
        T.pu[T.n_pu++] = (putil_t){(unsigned int)pid, ts / 1e6, (unsigned int)fmin(fmax(sm, 0), 100),
                                   (unsigned int)fmin(fmax(mem, 0), 100)};
    }
    if (T.n >= MAX_INTERVALS) {
        free(iv.clock);
        free(iv.procs);
        return fail("trace: more than %d intervals", MAX_INTERVALS);
    }
    interval_t *grown = realloc(T.iv, (size_t)(T.n + 1) * sizeof *T.iv);
    if (!grown) {
        free(iv.clock);
        free(iv.procs);
        return fail("out of memory");
    }
    T.iv = grown;
    T.iv[T.n++] = iv;
    return 0;
}

static int cmp_interval(const void *a, const void *b) {
    double x = ((const interval_t *)a)->t0, y = ((const interval_t *)b)->t0;
    return (x > y) - (x < y);
}

static int cmp_putil(const void *a, const void *b) {
    double x = ((const putil_t *)a)->t, y = ((const putil_t *)b)->t;
    return (x > y) - (x < y);
}

static int load_trace(const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) return fail("cannot open NVML_DOUBLE_TRACE %s: %s", path, strerror(errno));
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    long no = 0;
    int meta = 0, rc = 0;
    while (rc == 0 && (len = getline(&line, &cap, f)) >= 0) {
        no++;
        if ((size_t)len > MAX_LINE) {
            rc = fail("%s line %ld: longer than 4 MiB", "trace", no);
            break;
        }
        jp j = {line, NULL};
        j_ws(&j);
        if (*j.p == 0) continue;
        jv v;
        memset(&v, 0, sizeof v);
        if (j_value(&j, &v, 0) < 0 || (j_ws(&j), *j.p != 0)) {
            snprintf(g_err, sizeof g_err, "trace line %ld: not JSON: %s", no, j.err ? j.err : "trailing text");
            rc = -1;
        } else if (v.t != J_OBJ) {
            rc = fail("%s line %ld: not a JSON object", "trace", no);
        } else {
            const jv *type = j_get(&v, "type");
            if (type && type->t == J_STR && strcmp(type->s, "meta") == 0) {
                rc = load_meta(&v);
                meta = 1;
            } else if (type && type->t == J_STR && strcmp(type->s, "interval") == 0) {
                rc = load_interval(&v, no);
            }
        }
        j_free(&v);
    }
    free(line);
    fclose(f);
    if (rc == 0 && !meta) rc = fail("trace: no meta line");
    if (rc == 0 && T.n == 0) rc = fail("trace: no interval line");
    if (rc == 0) {
        qsort(T.iv, (size_t)T.n, sizeof *T.iv, cmp_interval);
        qsort(T.pu, (size_t)T.n_pu, sizeof *T.pu, cmp_putil);
    }
    return rc;
}

/* Index of the interval holding t (t0 <= t < t1), or -1; *before: the last interval with t0 <= t. */
static int interval_at(double t, int *before) {
    int lo = 0, hi = T.n - 1, found = -1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2;
        if (T.iv[mid].t0 <= t) {
            found = mid;
            lo = mid + 1;
        } else {
            hi = mid - 1;
        }
    }
    if (before) *before = found;
    return found >= 0 && t < T.iv[found].t1 ? found : -1;
}

/* Mean percent of a GPM metric over [a, b]: piecewise constant per interval, 0 outside them. */
static double gpm_mean(int id, double a, double b) {
    double sum = 0;
    for (int i = 0; i < T.n; i++) {
        double lo = fmax(a, T.iv[i].t0), hi = fmin(b, T.iv[i].t1);
        if (hi > lo && !isnan(T.iv[i].gpm[id])) sum += (hi - lo) * T.iv[i].gpm[id];
    }
    return b > a ? sum / (b - a) : 0.0;
}

static unsigned int clock_at(double t) {
    int before, i = interval_at(t, &before);
    if (i >= 0 && T.iv[i].n_clock > 0) {
        const interval_t *v = &T.iv[i];
        int k = (int)((t - v->t0) / (v->t1 - v->t0) * v->n_clock);
        return v->clock[k < 0 ? 0 : k >= v->n_clock ? v->n_clock - 1 : k];
    }
    for (int j = before; j >= 0; j--) /* idle after (or between) intervals: the last clock */
        if (T.iv[j].n_clock > 0) return T.iv[j].clock[T.iv[j].n_clock - 1];
    for (int j = 0; j < T.n; j++) /* idle before the trace: the first clock */
        if (T.iv[j].n_clock > 0) return T.iv[j].clock[0];
    return T.max_sm_clock;
}

static int energy_at(double t, unsigned long long *mj) {
    int before, i = interval_at(t, &before);
    if (i >= 0 && T.iv[i].has_energy) {
        const interval_t *v = &T.iv[i];
        *mj = (unsigned long long)(v->e0 + (v->e1 - v->e0) * (t - v->t0) / (v->t1 - v->t0));
        return 1;
    }
    for (int j = before; j >= 0; j--)
        if (T.iv[j].has_energy) return *mj = (unsigned long long)T.iv[j].e1, 1;
    for (int j = 0; j < T.n; j++)
        if (T.iv[j].has_energy) return *mj = (unsigned long long)T.iv[j].e0, 1;
    return 0;
}

/* ---- configuration and time ------------------------------------------------------------------- */

static struct {
    int gpus;
    int fail_metric[NVML_GPM_METRIC_MAX];
    int no_gpm, sample_fails, in_use, frozen;
    int cc; /* 0 off, 1 production, 2 devtools */
    int mig_g, mig_c;
    double epoch, speed;
} C;

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static int g_loaded; /* configuration and trace read (once per process) */
static int g_refcount;
static double g_frozen_t; /* trace time while NVML_DOUBLE_FROZEN=1 */

static double now_unix(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static double first_t0(void) { return T.iv[0].t0; }

static double trace_now(void) {
    return C.frozen ? g_frozen_t : first_t0() + (now_unix() - C.epoch) * C.speed;
}

/* Unix time the served GPU shows for trace time t, in microseconds. */
static unsigned long long served_us(double t) {
    double s = C.epoch + (t - first_t0()) / C.speed;
    return s > 0 ? (unsigned long long)llround(s * 1e6) : 0;
}

static int env_num(const char *name, double *out, double lo, double hi) {
    const char *s = getenv(name);
    if (!s || !*s) return 0;
    char *end;
    double x = strtod(s, &end);
    if (*end || !isfinite(x) || x < lo || x > hi) return fail("%s=%s: expected a number in [%g, %g]", name, s, lo, hi);
    *out = x;
    return 1;
}

static int env_flag(const char *name) {
    const char *s = getenv(name);
    return s && *s && strcmp(s, "0") != 0;
}

static int load_config(void) {
    double x;
    int r;
    const char *trace = getenv("NVML_DOUBLE_TRACE");
    if (!trace || !*trace) return fail("NVML_DOUBLE_TRACE is not set: the double has no trace to serve");
    C.gpus = 1;
    if ((r = env_num("NVML_DOUBLE_GPUS", &x, 1, MAX_GPUS)) < 0) return -1;
    if (r) C.gpus = (int)x;
    C.speed = 1.0;
    if ((r = env_num("NVML_DOUBLE_SPEED", &x, 1e-6, 1e6)) < 0) return -1;
    if (r) C.speed = x;
    C.epoch = now_unix();
    if ((r = env_num("NVML_DOUBLE_EPOCH", &x, 0, 1e11)) < 0) return -1;
    if (r) C.epoch = x;
    C.frozen = env_flag("NVML_DOUBLE_FROZEN");
    C.no_gpm = env_flag("NVML_DOUBLE_NO_GPM");
    C.sample_fails = env_flag("NVML_DOUBLE_GPM_SAMPLE_FAILS");
    C.in_use = env_flag("NVML_DOUBLE_IN_USE");
    const char *cc = getenv("NVML_DOUBLE_CC");
    C.cc = !cc || !*cc || strcmp(cc, "0") == 0 ? 0 : strcmp(cc, "devtools") == 0 ? 2 : 1;
    const char *fm = getenv("NVML_DOUBLE_FAIL_METRIC");
    while (fm && *fm) {
        char *end;
        long id = strtol(fm, &end, 10);
        if (end == fm || id < 1 || id >= NVML_GPM_METRIC_MAX || (*end && *end != ','))
            return fail("NVML_DOUBLE_FAIL_METRIC=%s: expected metric ids 1..%d separated by commas",
                        getenv("NVML_DOUBLE_FAIL_METRIC"), NVML_GPM_METRIC_MAX - 1);
        C.fail_metric[id] = 1;
        fm = *end ? end + 1 : end;
    }
    const char *mig = getenv("NVML_DOUBLE_MIG");
    if (mig && *mig) {
        int g, c, n = 0;
        if (sscanf(mig, "%d:%d%n", &g, &c, &n) != 2 || mig[n] || g < 1 || g > MIG_SLICES || c < 1 ||
            c > MIG_SLICES / g)
            return fail("NVML_DOUBLE_MIG=%s: expected G:C with 1 <= G <= 7 and 1 <= C <= 7 / G", mig);
        C.mig_g = g;
        C.mig_c = c;
    }
    if (load_trace(trace) < 0) return -1;
    g_frozen_t = first_t0() + (now_unix() - C.epoch) * C.speed;
    return 0;
}

/* ---- devices ---------------------------------------------------------------------------------- */

struct nvmlDevice_st {
    int gpu;
    int gi; /* -1: the whole GPU */
    int ci;
};

static struct nvmlDevice_st g_phys[MAX_GPUS];
static struct nvmlDevice_st g_mig[MAX_GPUS][MIG_SLICES];

static unsigned int sm_count(void) {
    int cps = (T.cc_major == 7 || (T.cc_major == 8 && T.cc_minor == 0)) ? 64 : 128;
    return T.cores / (unsigned int)cps;
}

static unsigned int gi_slices(void) { return MIG_SLICES / (unsigned int)C.mig_g; }
static unsigned int ci_slices(void) { return gi_slices() / (unsigned int)C.mig_c; }
static unsigned int ci_sms(void) {
    unsigned int per_slice = sm_count() / 8;
    return ci_slices() * (per_slice ? per_slice : 1);
}

/* Busy scale of compute instance k: (k + 1) / C. A GPU instance is the SM-weighted mean of its
 * compute instances (equal SMs here): the per-CI figures times their SMs sum to the GI's exactly. */
static double ci_scale(int k) { return (double)(k + 1) / C.mig_c; }
static double gi_scale(void) {
    double s = 0;
    for (int k = 0; k < C.mig_c; k++) s += ci_scale(k) * ci_sms();
    return s / ((double)C.mig_c * ci_sms());
}

static struct nvmlDevice_st *dev_of(nvmlDevice_t h) {
    uintptr_t p = (uintptr_t)h;
    uintptr_t a = (uintptr_t)&g_phys[0], b = (uintptr_t)&g_mig[0][0];
    if (p >= a && p < (uintptr_t)&g_phys[C.gpus] && (p - a) % sizeof g_phys[0] == 0) return h;
    if (C.mig_g && p >= b && p < b + sizeof g_mig && (p - b) % sizeof g_phys[0] == 0) {
        struct nvmlDevice_st *d = h;
        if (d->gpu < C.gpus && d->gi >= 0 && d->gi < C.mig_g) return d;
    }
    return NULL;
}

static void device_uuid(const struct nvmlDevice_st *d, char *out, size_t cap) {
    if (d->gi < 0) {
        snprintf(out, cap, "%s", T.uuid);
        size_t n = strlen(out);
        if (d->gpu > 0 && n >= 4) {
            unsigned long last = strtoul(out + n - 4, NULL, 16);
            snprintf(out + n - 4, cap - (n - 4), "%04lx", (last ^ (unsigned long)d->gpu) & 0xffff);
        }
        return;
    }
    snprintf(out, cap, "MIG-00d0b1e0-%04x-%04x-%04x-%012x", (unsigned)d->gpu, (unsigned)d->gi,
             (unsigned)d->ci, (unsigned)(GI_ID_BASE + (unsigned)d->gi));
}

static unsigned int gi_mem_gb(void) {
    static const unsigned int by_slices[8] = {0, 10, 20, 40, 40, 40, 40, 80};
    return by_slices[gi_slices()];
}

static void device_name(const struct nvmlDevice_st *d, char *out, size_t cap) {
    if (d->gi < 0)
        snprintf(out, cap, "%s", T.name);
    else if (C.mig_c > 1)
        snprintf(out, cap, "%s MIG %uc.%ug.%ugb", T.name, ci_slices(), gi_slices(), gi_mem_gb());
    else
        snprintf(out, cap, "%s MIG %ug.%ugb", T.name, gi_slices(), gi_mem_gb());
}

/* ---- the exported API ------------------------------------------------------------------------- */

/* Every NVML entry point: under the one lock, UNINITIALIZED unless nvmlInit succeeded. */
#define LOCKED(expr)                                                     \
    do {                                                                 \
        pthread_mutex_lock(&g_lock);                                     \
        nvmlReturn_t rc_ = g_refcount == 0 ? NVML_ERROR_UNINITIALIZED : (expr); \
        pthread_mutex_unlock(&g_lock);                                   \
        return rc_;                                                      \
    } while (0)

static void forget_trace(void) {
    for (int i = 0; i < T.n; i++) {
        free(T.iv[i].clock);
        free(T.iv[i].procs);
    }
    free(T.iv);
    free(T.pu);
    memset(&T, 0, sizeof T);
    memset(&C, 0, sizeof C);
}

static nvmlReturn_t do_init(void) {
    pthread_mutex_lock(&g_lock);
    nvmlReturn_t rc = NVML_SUCCESS;
    if (!g_loaded) {
        if (load_config() < 0) {
            fprintf(stderr, "nvml-double: %s\n", g_err);
            forget_trace();
            rc = NVML_ERROR_UNKNOWN;
        } else {
            g_loaded = 1;
            for (int i = 0; i < MAX_GPUS; i++) {
                g_phys[i] = (struct nvmlDevice_st){i, -1, -1};
                for (int m = 0; m < MIG_SLICES; m++)
                    g_mig[i][m] = (struct nvmlDevice_st){i, C.mig_c ? m / C.mig_c : -1, C.mig_c ? m % C.mig_c : -1};
            }
        }
    }
    if (rc == NVML_SUCCESS) g_refcount++;
    pthread_mutex_unlock(&g_lock);
    return rc;
}

EXPORT nvmlReturn_t nvmlInitWithFlags(unsigned int flags) {
    (void)flags;
    return do_init();
}

EXPORT nvmlReturn_t nvmlInit_v2(void) { return do_init(); }

EXPORT nvmlReturn_t nvmlShutdown(void) {
    LOCKED((g_refcount--, NVML_SUCCESS));
}

EXPORT const char *nvmlErrorString(nvmlReturn_t r) {
    switch (r) {
        case NVML_SUCCESS: return "Success";
        case NVML_ERROR_UNINITIALIZED: return "Uninitialized";
        case NVML_ERROR_INVALID_ARGUMENT: return "Invalid Argument";
        case NVML_ERROR_NOT_SUPPORTED: return "Not Supported";
        case NVML_ERROR_NOT_FOUND: return "Not Found";
        case NVML_ERROR_INSUFFICIENT_SIZE: return "Insufficient Size";
        case NVML_ERROR_DRIVER_NOT_LOADED: return "Driver Not Loaded";
        case NVML_ERROR_IN_USE: return "In use by another client";
        case NVML_ERROR_MEMORY: return "Insufficient Memory";
        case NVML_ERROR_ARGUMENT_VERSION_MISMATCH: return "Argument version mismatch";
        default: return "Unknown Error";
    }
}

static nvmlReturn_t put_str(char *buf, unsigned int len, const char *s) {
    if (!buf) return NVML_ERROR_INVALID_ARGUMENT;
    if (strlen(s) + 1 > len) return NVML_ERROR_INSUFFICIENT_SIZE;
    memcpy(buf, s, strlen(s) + 1);
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlSystemGetDriverVersion(char *version, unsigned int length) {
    LOCKED(put_str(version, length, T.driver));
}

EXPORT nvmlReturn_t nvmlDeviceGetCount_v2(unsigned int *count) {
    LOCKED(count ? (*count = (unsigned int)C.gpus, NVML_SUCCESS) : NVML_ERROR_INVALID_ARGUMENT);
}

EXPORT nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned int index, nvmlDevice_t *device) {
    LOCKED(!device || index >= (unsigned int)C.gpus ? NVML_ERROR_INVALID_ARGUMENT
                                                     : (*device = &g_phys[index], NVML_SUCCESS));
}

#define DEV_OR_FAIL(h, d) \
    struct nvmlDevice_st *d = dev_of(h); \
    if (!d) return NVML_ERROR_INVALID_ARGUMENT

static nvmlReturn_t get_name(nvmlDevice_t h, char *name, unsigned int length) {
    DEV_OR_FAIL(h, d);
    char buf[160];
    device_name(d, buf, sizeof buf);
    return put_str(name, length, buf);
}

EXPORT nvmlReturn_t nvmlDeviceGetName(nvmlDevice_t h, char *name, unsigned int length) {
    LOCKED(get_name(h, name, length));
}

static nvmlReturn_t get_uuid(nvmlDevice_t h, char *uuid, unsigned int length) {
    DEV_OR_FAIL(h, d);
    char buf[96];
    device_uuid(d, buf, sizeof buf);
    return put_str(uuid, length, buf);
}

EXPORT nvmlReturn_t nvmlDeviceGetUUID(nvmlDevice_t h, char *uuid, unsigned int length) {
    LOCKED(get_uuid(h, uuid, length));
}

static nvmlReturn_t get_serial(nvmlDevice_t h, char *serial, unsigned int length) {
    DEV_OR_FAIL(h, d);
    char buf[32];
    snprintf(buf, sizeof buf, "%013llu", 1650000000000ULL + (unsigned long long)d->gpu);
    return put_str(serial, length, buf);
}

EXPORT nvmlReturn_t nvmlDeviceGetSerial(nvmlDevice_t h, char *serial, unsigned int length) {
    LOCKED(get_serial(h, serial, length));
}

static nvmlReturn_t get_cc(nvmlDevice_t h, int *major, int *minor) {
    DEV_OR_FAIL(h, d);
    (void)d;
    if (!major || !minor) return NVML_ERROR_INVALID_ARGUMENT;
    *major = T.cc_major;
    *minor = T.cc_minor;
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetCudaComputeCapability(nvmlDevice_t h, int *major, int *minor) {
    LOCKED(get_cc(h, major, minor));
}

static nvmlReturn_t get_cores(nvmlDevice_t h, unsigned int *cores) {
    DEV_OR_FAIL(h, d);
    if (!cores) return NVML_ERROR_INVALID_ARGUMENT;
    *cores = d->gi < 0 ? T.cores : ci_sms() * (T.cores / sm_count());
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetNumGpuCores(nvmlDevice_t h, unsigned int *cores) {
    LOCKED(get_cores(h, cores));
}

static nvmlReturn_t get_attributes(nvmlDevice_t h, nvmlDeviceAttributes_t *a) {
    DEV_OR_FAIL(h, d);
    if (!a) return NVML_ERROR_INVALID_ARGUMENT;
    memset(a, 0, sizeof *a);
    if (d->gi < 0) {
        a->multiprocessorCount = sm_count();
        a->sharedCopyEngineCount = 8;
        a->sharedDecoderCount = 7;
        a->sharedJpegCount = 7;
        a->sharedOfaCount = 1;
        a->gpuInstanceSliceCount = MIG_SLICES;
        a->computeInstanceSliceCount = MIG_SLICES;
        a->memorySizeMB = 81559;
    } else {
        a->multiprocessorCount = ci_sms();
        a->sharedCopyEngineCount = gi_slices();
        a->sharedDecoderCount = 1;
        a->sharedJpegCount = 1;
        a->gpuInstanceSliceCount = gi_slices();
        a->computeInstanceSliceCount = ci_slices();
        a->memorySizeMB = gi_mem_gb() * 1024ULL;
    }
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetAttributes_v2(nvmlDevice_t h, nvmlDeviceAttributes_t *a) {
    LOCKED(get_attributes(h, a));
}

static nvmlReturn_t get_clock(nvmlDevice_t h, unsigned int type, unsigned int *mhz, int max) {
    DEV_OR_FAIL(h, d);
    if (!mhz || type > NVML_CLOCK_VIDEO) return NVML_ERROR_INVALID_ARGUMENT;
    if (d->gi >= 0) return NVML_ERROR_NOT_SUPPORTED; /* clocks belong to the physical GPU */
    if (type == NVML_CLOCK_MEM)
        *mhz = 2619;
    else if (type == NVML_CLOCK_VIDEO)
        *mhz = max ? 1980 : 1155;
    else
        *mhz = max ? T.max_sm_clock : clock_at(trace_now());
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetClockInfo(nvmlDevice_t h, unsigned int type, unsigned int *mhz) {
    LOCKED(get_clock(h, type, mhz, 0));
}

EXPORT nvmlReturn_t nvmlDeviceGetMaxClockInfo(nvmlDevice_t h, unsigned int type, unsigned int *mhz) {
    LOCKED(get_clock(h, type, mhz, 1));
}

static nvmlReturn_t get_energy(nvmlDevice_t h, unsigned long long *mj) {
    DEV_OR_FAIL(h, d);
    if (!mj) return NVML_ERROR_INVALID_ARGUMENT;
    if (d->gi >= 0) return NVML_ERROR_NOT_SUPPORTED;
    return energy_at(trace_now(), mj) ? NVML_SUCCESS : NVML_ERROR_NOT_SUPPORTED;
}

EXPORT nvmlReturn_t nvmlDeviceGetTotalEnergyConsumption(nvmlDevice_t h, unsigned long long *mj) {
    LOCKED(get_energy(h, mj));
}

static nvmlReturn_t get_power(nvmlDevice_t h, unsigned int *mw) {
    DEV_OR_FAIL(h, d);
    if (!mw) return NVML_ERROR_INVALID_ARGUMENT;
    if (d->gi >= 0) return NVML_ERROR_NOT_SUPPORTED;
    int before, i = interval_at(trace_now(), &before);
    *mw = (unsigned int)T.iv[i >= 0 ? i : before >= 0 ? before : 0].power_mw;
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetPowerUsage(nvmlDevice_t h, unsigned int *mw) {
    LOCKED(get_power(h, mw));
}

/* The processes a device runs now: the interval's `procs`, pids offset per GPU (and per GPU
 * instance under MIG, where they run on compute instance 0 of each GPU instance). */
static int procs_now(const struct nvmlDevice_st *d, nvmlProcessInfo_t *out, int cap) {
    int i = interval_at(trace_now(), NULL), n = 0;
    if (i < 0) return 0;
    const interval_t *v = &T.iv[i];
    int gis = C.mig_g ? C.mig_g : 1;
    for (int g = 0; g < gis; g++) {
        if (d->gi >= 0 && (d->gi != g || d->ci != 0)) continue;
        for (int p = 0; p < v->n_procs; p++, n++) {
            if (n >= cap) continue;
            out[n].pid = v->procs[p].pid + PID_STRIDE_GPU * (unsigned)d->gpu + PID_STRIDE_GI * (unsigned)g;
            out[n].usedGpuMemory = v->procs[p].mem;
            out[n].gpuInstanceId = C.mig_g ? GI_ID_BASE + (unsigned)g : NVML_VALUE_NOT_AVAILABLE_UINT;
            out[n].computeInstanceId = C.mig_g ? 0 : NVML_VALUE_NOT_AVAILABLE_UINT;
        }
    }
    return n;
}

static nvmlReturn_t running_procs(nvmlDevice_t h, unsigned int *count, nvmlProcessInfo_t *infos) {
    DEV_OR_FAIL(h, d);
    if (!count) return NVML_ERROR_INVALID_ARGUMENT;
    int n = procs_now(d, NULL, 0);
    if (n > (int)*count || (n > 0 && !infos)) {
        *count = (unsigned int)n;
        return NVML_ERROR_INSUFFICIENT_SIZE;
    }
    *count = (unsigned int)procs_now(d, infos, n);
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetComputeRunningProcesses_v2(nvmlDevice_t h, unsigned int *count,
                                                            nvmlProcessInfo_t *infos) {
    LOCKED(running_procs(h, count, infos));
}

#ifndef NVML_DOUBLE_NO_V3
EXPORT nvmlReturn_t nvmlDeviceGetComputeRunningProcesses_v3(nvmlDevice_t h, unsigned int *count,
                                                            nvmlProcessInfo_t *infos) {
    LOCKED(running_procs(h, count, infos));
}
#endif

static nvmlReturn_t memory(nvmlDevice_t h, unsigned long long *total, unsigned long long *used) {
    DEV_OR_FAIL(h, d);
    nvmlProcessInfo_t p[64];
    int n = procs_now(d, p, 64);
    *total = (d->gi < 0 ? 81559ULL : gi_mem_gb() * 1024ULL) << 20;
    *used = 0;
    for (int i = 0; i < n && i < 64; i++) *used += p[i].usedGpuMemory;
    if (*used > *total) *used = *total;
    return NVML_SUCCESS;
}

static nvmlReturn_t memory_v1(nvmlDevice_t h, nvmlMemory_t *m) {
    if (!m) return NVML_ERROR_INVALID_ARGUMENT;
    nvmlReturn_t r = memory(h, &m->total, &m->used);
    m->free = m->total - m->used;
    return r;
}

static nvmlReturn_t memory_v2(nvmlDevice_t h, nvmlMemory_v2_t *m) {
    if (!m) return NVML_ERROR_INVALID_ARGUMENT;
    if (m->version != NVML_MEMORY_V2_VERSION) return NVML_ERROR_ARGUMENT_VERSION_MISMATCH;
    nvmlReturn_t r = memory(h, &m->total, &m->used);
    m->reserved = 0;
    m->free = m->total - m->used;
    return r;
}

EXPORT nvmlReturn_t nvmlDeviceGetMemoryInfo(nvmlDevice_t h, nvmlMemory_t *m) { LOCKED(memory_v1(h, m)); }

EXPORT nvmlReturn_t nvmlDeviceGetMemoryInfo_v2(nvmlDevice_t h, nvmlMemory_v2_t *m) {
    LOCKED(memory_v2(h, m));
}

/* Per-process utilization: per pid, the newest trace sample with lastSeen < ts (served us) and
 * ts <= now. Not in MIG mode (the real driver has none there either). */
static int putil_now(const struct nvmlDevice_st *d, unsigned long long last, nvmlProcessUtilizationSample_t *out,
                     int cap) {
    double now = trace_now();
    int n = 0;
    for (int i = T.n_pu - 1; i >= 0; i--) {
        const putil_t *s = &T.pu[i];
        if (s->t > now) continue;
        unsigned long long ts = served_us(s->t);
        if (ts <= last) break; /* sorted by time: everything older was seen */
        unsigned int pid = s->pid + PID_STRIDE_GPU * (unsigned)d->gpu;
        int dup = 0;
        for (int k = 0; k < n && k < cap; k++) dup |= out[k].pid == pid;
        if (dup) continue;
        if (n < cap) out[n] = (nvmlProcessUtilizationSample_t){pid, ts, s->sm, s->mem, 0, 0};
        n++;
    }
    return n;
}

static nvmlReturn_t process_util(nvmlDevice_t h, nvmlProcessUtilizationSample_t *u, unsigned int *count,
                                 unsigned long long last) {
    DEV_OR_FAIL(h, d);
    if (!count) return NVML_ERROR_INVALID_ARGUMENT;
    if (C.mig_g) return NVML_ERROR_NOT_SUPPORTED;
    nvmlProcessUtilizationSample_t buf[256];
    int n = putil_now(d, last, buf, 256);
    if (n == 0) return NVML_ERROR_NOT_FOUND;
    if (!u || (unsigned int)n > *count) {
        *count = (unsigned int)n;
        return NVML_ERROR_INSUFFICIENT_SIZE;
    }
    memcpy(u, buf, (size_t)(n < 256 ? n : 256) * sizeof *u);
    *count = (unsigned int)(n < 256 ? n : 256);
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetProcessUtilization(nvmlDevice_t h, nvmlProcessUtilizationSample_t *u,
                                                    unsigned int *count, unsigned long long lastSeen) {
    LOCKED(process_util(h, u, count, lastSeen));
}

/* Utilization samples every 1/6 s of trace time (the grid first_t0 + k/6); sample k holds the
 * mean `graphics` percent (a kernel was running) over its period ((k-1)/6, k/6]. */
static nvmlReturn_t samples(nvmlDevice_t h, unsigned int type, unsigned long long last, unsigned int *vtype,
                            unsigned int *count, nvmlSample_t *out) {
    DEV_OR_FAIL(h, d);
    if (!vtype || !count) return NVML_ERROR_INVALID_ARGUMENT;
    if (type != NVML_GPU_UTILIZATION_SAMPLES || C.mig_g) return NVML_ERROR_NOT_SUPPORTED;
    (void)d;
    double t0 = first_t0();
    long newest = (long)floor((trace_now() - t0) / UTIL_PERIOD_S + 1e-9);
    long oldest = newest - UTIL_MAX_SAMPLES + 1;
    long k = oldest;
    while (k <= newest && served_us(t0 + k * UTIL_PERIOD_S) <= last) k++;
    long n = newest - k + 1;
    *vtype = NVML_VALUE_TYPE_UNSIGNED_INT;
    if (n <= 0) return NVML_ERROR_NOT_FOUND;
    if (!out) {
        *count = (unsigned int)n;
        return NVML_SUCCESS;
    }
    if ((long)*count < n) n = *count; /* the oldest first: the rest comes with the next call */
    for (long i = 0; i < n; i++, k++) {
        double hi = t0 + k * UTIL_PERIOD_S;
        out[i].timeStamp = served_us(hi);
        out[i].sampleValue.ullVal = 0;
        out[i].sampleValue.uiVal = (unsigned int)lround(gpm_mean(1, hi - UTIL_PERIOD_S, hi));
    }
    *count = (unsigned int)n;
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetSamples(nvmlDevice_t h, unsigned int type, unsigned long long lastSeen,
                                         unsigned int *sampleValType, unsigned int *sampleCount,
                                         nvmlSample_t *samples_out) {
    LOCKED(samples(h, type, lastSeen, sampleValType, sampleCount, samples_out));
}

/* ---- MIG -------------------------------------------------------------------------------------- */

static nvmlReturn_t mig_mode(nvmlDevice_t h, unsigned int *cur, unsigned int *pending) {
    DEV_OR_FAIL(h, d);
    if (!cur || !pending) return NVML_ERROR_INVALID_ARGUMENT;
    if (d->gi >= 0) return NVML_ERROR_NOT_SUPPORTED;
    *cur = *pending = C.mig_g ? 1 : 0;
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetMigMode(nvmlDevice_t h, unsigned int *cur, unsigned int *pending) {
    LOCKED(mig_mode(h, cur, pending));
}

static nvmlReturn_t max_mig(nvmlDevice_t h, unsigned int *count) {
    DEV_OR_FAIL(h, d);
    if (!count) return NVML_ERROR_INVALID_ARGUMENT;
    if (d->gi >= 0) return NVML_ERROR_NOT_SUPPORTED;
    *count = MIG_SLICES;
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetMaxMigDeviceCount(nvmlDevice_t h, unsigned int *count) {
    LOCKED(max_mig(h, count));
}

static nvmlReturn_t mig_handle(nvmlDevice_t h, unsigned int index, nvmlDevice_t *out) {
    DEV_OR_FAIL(h, d);
    if (!out || d->gi >= 0 || !C.mig_g || index >= MIG_SLICES) return NVML_ERROR_INVALID_ARGUMENT;
    if (index >= (unsigned int)(C.mig_g * C.mig_c)) return NVML_ERROR_NOT_FOUND;
    *out = &g_mig[d->gpu][index];
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetMigDeviceHandleByIndex(nvmlDevice_t h, unsigned int index, nvmlDevice_t *out) {
    LOCKED(mig_handle(h, index, out));
}

static nvmlReturn_t parent_handle(nvmlDevice_t h, nvmlDevice_t *out) {
    DEV_OR_FAIL(h, d);
    if (!out || d->gi < 0) return NVML_ERROR_INVALID_ARGUMENT;
    *out = &g_phys[d->gpu];
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetDeviceHandleFromMigDeviceHandle(nvmlDevice_t h, nvmlDevice_t *out) {
    LOCKED(parent_handle(h, out));
}

static nvmlReturn_t is_mig(nvmlDevice_t h, unsigned int *yes) {
    DEV_OR_FAIL(h, d);
    if (!yes) return NVML_ERROR_INVALID_ARGUMENT;
    *yes = d->gi >= 0;
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceIsMigDeviceHandle(nvmlDevice_t h, unsigned int *isMig) { LOCKED(is_mig(h, isMig)); }

static nvmlReturn_t instance_id(nvmlDevice_t h, unsigned int *id, int compute) {
    DEV_OR_FAIL(h, d);
    if (!id) return NVML_ERROR_INVALID_ARGUMENT;
    if (d->gi < 0) return NVML_ERROR_NOT_SUPPORTED;
    *id = compute ? (unsigned int)d->ci : GI_ID_BASE + (unsigned int)d->gi;
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetGpuInstanceId(nvmlDevice_t h, unsigned int *id) { LOCKED(instance_id(h, id, 0)); }

EXPORT nvmlReturn_t nvmlDeviceGetComputeInstanceId(nvmlDevice_t h, unsigned int *id) {
    LOCKED(instance_id(h, id, 1));
}

/* ---- confidential computing ------------------------------------------------------------------- */

static nvmlReturn_t cc_state(nvmlConfComputeSystemState_t *s) {
    if (!s) return NVML_ERROR_INVALID_ARGUMENT;
    s->environment = C.cc ? 2 : 0; /* NVML_CC_SYSTEM_ENVIRONMENT_PROD / _UNAVAILABLE */
    s->ccFeature = C.cc ? 1 : 0;
    s->devToolsMode = C.cc == 2;
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlSystemGetConfComputeState(nvmlConfComputeSystemState_t *s) { LOCKED(cc_state(s)); }

static uint64_t fnv(uint64_t h, const unsigned char *p, size_t n) {
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 0x100000001b3ULL;
    return h;
}

/* A report of `magic`, the GPU's UUID, the nonce and a 32-byte digest over both (not a real
 * SPDM report: it only has to depend on the nonce and the GPU). Returns its size. */
static unsigned int fake_report(unsigned char *out, const char *magic, const char *uuid, const unsigned char *nonce) {
    unsigned char *p = out;
    memcpy(p, magic, 8);
    p += 8;
    memset(p, 0, 96);
    memcpy(p, uuid, strlen(uuid));
    p += 96;
    memcpy(p, nonce, NVML_CC_GPU_CEC_NONCE_SIZE);
    p += NVML_CC_GPU_CEC_NONCE_SIZE;
    for (int i = 0; i < 4; i++) { /* four FNV-1a hashes with different seeds */
        uint64_t h = fnv(0xcbf29ce484222325ULL + (uint64_t)i, out, (size_t)(p - out));
        memcpy(p + 8 * i, &h, 8);
    }
    return (unsigned int)(8 + 96 + NVML_CC_GPU_CEC_NONCE_SIZE + 32);
}

static nvmlReturn_t attestation(nvmlDevice_t h, nvmlConfComputeGpuAttestationReport_t *r) {
    DEV_OR_FAIL(h, d);
    if (!r) return NVML_ERROR_INVALID_ARGUMENT;
    if (!C.cc || d->gi >= 0) return NVML_ERROR_NOT_SUPPORTED;
    char uuid[96];
    device_uuid(d, uuid, sizeof uuid);
    r->attestationReportSize = fake_report(r->attestationReport, "NVDBLATT", uuid, r->nonce);
    r->cecAttestationReportSize = fake_report(r->cecAttestationReport, "NVDBLCEC", uuid, r->nonce);
    r->isCecAttestationReportPresent = 1;
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetConfComputeGpuAttestationReport(nvmlDevice_t h,
                                                                 nvmlConfComputeGpuAttestationReport_t *r) {
    LOCKED(attestation(h, r));
}

static nvmlReturn_t certificate(nvmlDevice_t h, nvmlConfComputeGpuCertificate_t *c) {
    DEV_OR_FAIL(h, d);
    if (!c) return NVML_ERROR_INVALID_ARGUMENT;
    if (!C.cc || d->gi >= 0) return NVML_ERROR_NOT_SUPPORTED;
    char uuid[96];
    device_uuid(d, uuid, sizeof uuid);
    c->certChainSize = (unsigned int)snprintf(
        (char *)c->certChain, sizeof c->certChain,
        "-----BEGIN CERTIFICATE-----\nnvml-double device certificate %s\n-----END CERTIFICATE-----\n", uuid);
    c->attestationCertChainSize = (unsigned int)snprintf(
        (char *)c->attestationCertChain, sizeof c->attestationCertChain,
        "-----BEGIN CERTIFICATE-----\nnvml-double attestation certificate %s\n-----END CERTIFICATE-----\n", uuid);
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetConfComputeGpuCertificate(nvmlDevice_t h, nvmlConfComputeGpuCertificate_t *c) {
    LOCKED(certificate(h, c));
}

/* ---- GPM -------------------------------------------------------------------------------------- */

#define SAMPLE_MAGIC 0x47504d53414d504cULL

struct nvmlGpmSample_st {
    uint64_t magic;
    int taken;
    int gpu, gi, ci; /* the source: whole GPU (gi -1), GPU instance (ci -1) or compute instance */
    double t;        /* trace time it was taken */
};

static nvmlGpmSample_t g_samples[MAX_LIVE_SAMPLES];
static unsigned int g_live;

static int sample_slot(nvmlGpmSample_t s) {
    for (int i = 0; s && i < MAX_LIVE_SAMPLES; i++)
        if (g_samples[i] == s) return i;
    return -1;
}

static nvmlReturn_t support(nvmlDevice_t h, nvmlGpmSupport_t *s) {
    DEV_OR_FAIL(h, d);
    (void)d;
    if (!s) return NVML_ERROR_INVALID_ARGUMENT;
    if (s->version != NVML_GPM_SUPPORT_VERSION) return NVML_ERROR_ARGUMENT_VERSION_MISMATCH;
    s->isSupportedDevice = !C.no_gpm && T.cc_major >= 9;
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlGpmQueryDeviceSupport(nvmlDevice_t h, nvmlGpmSupport_t *s) { LOCKED(support(h, s)); }

static nvmlReturn_t sample_alloc(nvmlGpmSample_t *out) {
    if (!out) return NVML_ERROR_INVALID_ARGUMENT;
    int slot = -1;
    for (int i = 0; i < MAX_LIVE_SAMPLES && slot < 0; i++)
        if (!g_samples[i]) slot = i;
    if (slot < 0) return NVML_ERROR_MEMORY;
    struct nvmlGpmSample_st *s = calloc(1, sizeof *s);
    if (!s) return NVML_ERROR_MEMORY;
    s->magic = SAMPLE_MAGIC;
    g_samples[slot] = s;
    g_live++;
    *out = s;
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlGpmSampleAlloc(nvmlGpmSample_t *out) { LOCKED(sample_alloc(out)); }

static nvmlReturn_t sample_free(nvmlGpmSample_t s) {
    int slot = sample_slot(s);
    if (slot < 0) return NVML_ERROR_INVALID_ARGUMENT; /* never allocated, or freed already */
    s->magic = 0;
    free(s);
    g_samples[slot] = NULL;
    g_live--;
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlGpmSampleFree(nvmlGpmSample_t s) { LOCKED(sample_free(s)); }

static nvmlReturn_t take(nvmlGpmSample_t s, int gpu, int gi, int ci) {
    if (sample_slot(s) < 0) return NVML_ERROR_INVALID_ARGUMENT;
    if (C.no_gpm || T.cc_major < 9) return NVML_ERROR_NOT_SUPPORTED;
    if (C.sample_fails) return NVML_ERROR_NOT_SUPPORTED;
    if (C.in_use) return NVML_ERROR_IN_USE;
    s->taken = 1;
    s->gpu = gpu;
    s->gi = gi;
    s->ci = ci;
    s->t = trace_now();
    return NVML_SUCCESS;
}

static nvmlReturn_t sample_get(nvmlDevice_t h, nvmlGpmSample_t s) {
    DEV_OR_FAIL(h, d);
    if (d->gi < 0 && C.mig_g) return NVML_ERROR_NOT_SUPPORTED; /* MIG mode: per instance only */
    return take(s, d->gpu, d->gi, d->ci);
}

EXPORT nvmlReturn_t nvmlGpmSampleGet(nvmlDevice_t h, nvmlGpmSample_t s) { LOCKED(sample_get(h, s)); }

static nvmlReturn_t mig_sample_get(nvmlDevice_t h, unsigned int gi_id, nvmlGpmSample_t s) {
    DEV_OR_FAIL(h, d);
    if (d->gi >= 0 || !C.mig_g) return NVML_ERROR_INVALID_ARGUMENT;
    if (gi_id < GI_ID_BASE || gi_id >= GI_ID_BASE + (unsigned int)C.mig_g) return NVML_ERROR_NOT_FOUND;
    return take(s, d->gpu, (int)(gi_id - GI_ID_BASE), -1);
}

EXPORT nvmlReturn_t nvmlGpmMigSampleGet(nvmlDevice_t h, unsigned int gpuInstanceId, nvmlGpmSample_t s) {
    LOCKED(mig_sample_get(h, gpuInstanceId, s));
}

static nvmlReturn_t metrics_get(nvmlGpmMetricsGet_t *mg) {
    if (!mg) return NVML_ERROR_INVALID_ARGUMENT;
    if (mg->version != NVML_GPM_METRICS_GET_VERSION) return NVML_ERROR_ARGUMENT_VERSION_MISMATCH;
    if (mg->numMetrics > NVML_GPM_METRIC_MAX) return NVML_ERROR_INVALID_ARGUMENT;
    const struct nvmlGpmSample_st *a = mg->sample1, *b = mg->sample2;
    if (sample_slot(mg->sample1) < 0 || sample_slot(mg->sample2) < 0 || !a->taken || !b->taken)
        return NVML_ERROR_INVALID_ARGUMENT;
    if (a->gpu != b->gpu || a->gi != b->gi || a->ci != b->ci) return NVML_ERROR_INVALID_ARGUMENT;
    double scale = a->gi < 0 ? 1.0 : a->ci < 0 ? gi_scale() : ci_scale(a->ci);
    int too_close = (b->t - a->t) / C.speed < GPM_MIN_GAP_S - 1e-9;
    for (unsigned int i = 0; i < mg->numMetrics; i++) {
        nvmlGpmMetric_t *m = &mg->metrics[i];
        unsigned int id = m->metricId;
        m->value = 0;
        memset(&m->metricInfo, 0, sizeof m->metricInfo);
        if (id == 0 || id >= NVML_GPM_METRIC_MAX)
            m->nvmlReturn = NVML_ERROR_INVALID_ARGUMENT;
        else if (C.fail_metric[id] || id > N_GPM || !T.has_metric[id])
            m->nvmlReturn = NVML_ERROR_NOT_SUPPORTED;
        else if (too_close)
            m->nvmlReturn = NVML_ERROR_INVALID_ARGUMENT; /* the counters refresh every 100 ms */
        else {
            m->nvmlReturn = NVML_SUCCESS;
            m->value = gpm_mean((int)id, a->t, b->t) * scale;
            m->metricInfo.shortName = (char *)GPM_KEYS[id];
            m->metricInfo.longName = (char *)GPM_LONG[id];
            m->metricInfo.unit = (char *)"%";
        }
    }
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlGpmMetricsGet(nvmlGpmMetricsGet_t *mg) { LOCKED(metrics_get(mg)); }

/* ---- test-only controls (not NVML) ------------------------------------------------------------ */

/* Set the served trace time (seconds, the trace's clock); only with NVML_DOUBLE_FROZEN=1. */
EXPORT nvmlReturn_t nvmlDoubleSetTime(double trace_t) {
    LOCKED(!C.frozen || !isfinite(trace_t) ? NVML_ERROR_NOT_SUPPORTED : (g_frozen_t = trace_t, NVML_SUCCESS));
}

/* The trace time served now (NAN before nvmlInit). */
EXPORT double nvmlDoubleTraceTime(void) {
    pthread_mutex_lock(&g_lock);
    double t = g_loaded ? trace_now() : NAN;
    pthread_mutex_unlock(&g_lock);
    return t;
}

/* GPM sample buffers allocated and not freed. */
EXPORT unsigned int nvmlDoubleLiveSamples(void) {
    pthread_mutex_lock(&g_lock);
    unsigned int n = g_live;
    pthread_mutex_unlock(&g_lock);
    return n;
}

/* sizeof of the named NVML struct as this library lays it out (0: unknown name); tests compare
 * it with ctypes.sizeof of pynvml's class. */
EXPORT unsigned int nvmlDoubleSizeof(const char *name) {
    static const struct { const char *name; unsigned int size; } sizes[] = {
        {"nvmlProcessInfo_t", sizeof(nvmlProcessInfo_t)},
        {"nvmlProcessUtilizationSample_t", sizeof(nvmlProcessUtilizationSample_t)},
        {"nvmlSample_t", sizeof(nvmlSample_t)},
        {"nvmlValue_t", sizeof(nvmlValue_t)},
        {"nvmlDeviceAttributes_t", sizeof(nvmlDeviceAttributes_t)},
        {"nvmlMemory_t", sizeof(nvmlMemory_t)},
        {"nvmlMemory_v2_t", sizeof(nvmlMemory_v2_t)},
        {"nvmlGpmSupport_t", sizeof(nvmlGpmSupport_t)},
        {"nvmlGpmMetric_t", sizeof(nvmlGpmMetric_t)},
        {"nvmlGpmMetricsGet_t header", (unsigned int)offsetof(nvmlGpmMetricsGet_t, metrics)},
        {"nvmlConfComputeSystemState_t", sizeof(nvmlConfComputeSystemState_t)},
        {"nvmlConfComputeGpuAttestationReport_t", sizeof(nvmlConfComputeGpuAttestationReport_t)},
        {"nvmlConfComputeGpuCertificate_t", sizeof(nvmlConfComputeGpuCertificate_t)},
    };
    for (size_t i = 0; name && i < sizeof sizes / sizeof sizes[0]; i++)
        if (strcmp(name, sizes[i].name) == 0) return sizes[i].size;
    return 0;
}
