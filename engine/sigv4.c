/*
 * AWS SigV4 with a cached signing key; see sigv4.h for the rules.
 */
#include "sigv4.h"

#include <connectd/plugin.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- SHA-256 */
typedef struct sha256_ctx {
    uint32_t h[8];
    uint64_t len; /* bytes hashed so far */
    size_t n;     /* bytes waiting in buf */
    uint8_t buf[64];
} sha256_ctx;

static const uint32_t sha256_k[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};

#define ROTR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))

static void sha256_blocks(uint32_t h[8], const uint8_t *p, size_t nblocks) {
    while (nblocks--) {
        uint32_t w[64];
        for (int i = 0; i < 16; i++)
            w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 |
                   (uint32_t)p[4 * i + 2] << 8 | (uint32_t)p[4 * i + 3];
        for (int i = 16; i < 64; i++) {
            uint32_t s0 = ROTR(w[i - 15], 7) ^ ROTR(w[i - 15], 18) ^ (w[i - 15] >> 3);
            uint32_t s1 = ROTR(w[i - 2], 17) ^ ROTR(w[i - 2], 19) ^ (w[i - 2] >> 10);
            w[i] = w[i - 16] + s0 + w[i - 7] + s1;
        }
        uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], hh = h[7];
        for (int i = 0; i < 64; i++) {
            uint32_t s1 = ROTR(e, 6) ^ ROTR(e, 11) ^ ROTR(e, 25);
            uint32_t ch = (e & f) ^ (~e & g);
            uint32_t t1 = hh + s1 + ch + sha256_k[i] + w[i];
            uint32_t s0 = ROTR(a, 2) ^ ROTR(a, 13) ^ ROTR(a, 22);
            uint32_t maj = (a & b) ^ (a & c) ^ (b & c);
            uint32_t t2 = s0 + maj;
            hh = g;
            g = f;
            f = e;
            e = d + t1;
            d = c;
            c = b;
            b = a;
            a = t1 + t2;
        }
        h[0] += a;
        h[1] += b;
        h[2] += c;
        h[3] += d;
        h[4] += e;
        h[5] += f;
        h[6] += g;
        h[7] += hh;
        p += 64;
    }
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <cpuid.h>
#include <immintrin.h>
#define SIGV4_SHANI 1

/* The same compression with the SHA extensions (Goldmont, Zen and later):
 * state kept as ABEF/CDGH, four rounds per step, the schedule by
 * sha256msg1/msg2. */
__attribute__((target("sha,sse4.1,ssse3"))) static void
sha256_blocks_shani(uint32_t h[8], const uint8_t *p, size_t nblocks) {
    const __m128i mask = _mm_set_epi64x(0x0c0d0e0f08090a0bULL, 0x0405060700010203ULL);
    __m128i tmp = _mm_loadu_si128((const __m128i *)&h[0]);
    __m128i st1 = _mm_loadu_si128((const __m128i *)&h[4]);
    tmp = _mm_shuffle_epi32(tmp, 0xB1);         /* CDAB */
    st1 = _mm_shuffle_epi32(st1, 0x1B);         /* EFGH */
    __m128i st0 = _mm_alignr_epi8(tmp, st1, 8); /* ABEF */
    st1 = _mm_blend_epi16(st1, tmp, 0xF0);      /* CDGH */
    while (nblocks--) {
        __m128i save0 = st0, save1 = st1;
        __m128i w0 = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(p + 0)), mask);
        __m128i w1 = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(p + 16)), mask);
        __m128i w2 = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(p + 32)), mask);
        __m128i w3 = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(p + 48)), mask);
        for (int i = 0; i < 16; i++) {
            __m128i w;
            if (i < 4) {
                w = i == 0 ? w0 : i == 1 ? w1 : i == 2 ? w2 : w3;
            } else {
                /* w0..w3 hold W[t-16..t-1] in four groups, oldest first. */
                __m128i t = _mm_sha256msg1_epu32(w0, w1);
                t = _mm_add_epi32(t, _mm_alignr_epi8(w3, w2, 4));
                w = _mm_sha256msg2_epu32(t, w3);
                w0 = w1;
                w1 = w2;
                w2 = w3;
                w3 = w;
            }
            __m128i msg = _mm_add_epi32(w, _mm_loadu_si128((const __m128i *)&sha256_k[4 * i]));
            st1 = _mm_sha256rnds2_epu32(st1, st0, msg);
            msg = _mm_shuffle_epi32(msg, 0x0E);
            st0 = _mm_sha256rnds2_epu32(st0, st1, msg);
        }
        st0 = _mm_add_epi32(st0, save0);
        st1 = _mm_add_epi32(st1, save1);
        p += 64;
    }
    tmp = _mm_shuffle_epi32(st0, 0x1B);    /* FEBA */
    st1 = _mm_shuffle_epi32(st1, 0xB1);    /* DCHG */
    st0 = _mm_blend_epi16(tmp, st1, 0xF0); /* DCBA */
    st1 = _mm_alignr_epi8(st1, tmp, 8);    /* HGFE */
    _mm_storeu_si128((__m128i *)&h[0], st0);
    _mm_storeu_si128((__m128i *)&h[4], st1);
}

/* -1: not probed yet; 0: portable; 1: SHA extensions. */
static int sha_mode = -1;

static int sha_probe(void) {
    unsigned a, b, c, d;
    int ok = __get_cpuid(1, &a, &b, &c, &d) && (c & (1u << 9)) && (c & (1u << 19)) &&
             __get_cpuid_count(7, 0, &a, &b, &c, &d) && (b & (1u << 29));
    return ok ? 1 : 0;
}
#endif

static void sha256_compress(uint32_t h[8], const uint8_t *p, size_t nblocks) {
#ifdef SIGV4_SHANI
    int mode = __atomic_load_n(&sha_mode, __ATOMIC_RELAXED);
    if (mode < 0) {
        mode = sha_probe();
        __atomic_store_n(&sha_mode, mode, __ATOMIC_RELAXED);
    }
    if (mode == 1) {
        sha256_blocks_shani(h, p, nblocks);
        return;
    }
#endif
    sha256_blocks(h, p, nblocks);
}

int sigv4_sha256_accelerated(int portable) {
#ifdef SIGV4_SHANI
    int have = sha_probe();
    __atomic_store_n(&sha_mode, portable ? 0 : have, __ATOMIC_RELAXED);
    return portable ? 0 : have;
#else
    (void)portable;
    return 0;
#endif
}

static void sha256_init(sha256_ctx *c) {
    static const uint32_t iv[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                   0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    memcpy(c->h, iv, sizeof(iv));
    c->len = 0;
    c->n = 0;
}

static void sha256_update(sha256_ctx *c, const void *data, size_t len) {
    const uint8_t *p = data;
    c->len += len;
    if (c->n) {
        size_t take = 64 - c->n < len ? 64 - c->n : len;
        memcpy(c->buf + c->n, p, take);
        c->n += take;
        p += take;
        len -= take;
        if (c->n < 64) return;
        sha256_compress(c->h, c->buf, 1);
        c->n = 0;
    }
    if (len >= 64) {
        sha256_compress(c->h, p, len / 64);
        p += len & ~(size_t)63;
        len &= 63;
    }
    if (len) {
        memcpy(c->buf, p, len);
        c->n = len;
    }
}

static void sha256_final(sha256_ctx *c, uint8_t out[32]) {
    uint64_t bits = c->len * 8;
    c->buf[c->n++] = 0x80;
    if (c->n > 56) {
        memset(c->buf + c->n, 0, 64 - c->n);
        sha256_compress(c->h, c->buf, 1);
        c->n = 0;
    }
    memset(c->buf + c->n, 0, 56 - c->n);
    for (int i = 0; i < 8; i++)
        c->buf[56 + i] = (uint8_t)(bits >> (56 - 8 * i));
    sha256_compress(c->h, c->buf, 1);
    for (int i = 0; i < 8; i++) {
        out[4 * i] = (uint8_t)(c->h[i] >> 24);
        out[4 * i + 1] = (uint8_t)(c->h[i] >> 16);
        out[4 * i + 2] = (uint8_t)(c->h[i] >> 8);
        out[4 * i + 3] = (uint8_t)c->h[i];
    }
}

void sigv4_sha256(const void *data, size_t len, uint8_t out[32]) {
    sha256_ctx c;
    sha256_init(&c);
    sha256_update(&c, data, len);
    sha256_final(&c, out);
}

static void hex_lower(const uint8_t *in, size_t n, char *out) {
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 15];
    }
    out[2 * n] = '\0';
}

void sigv4_sha256_hex(const void *data, size_t len, char out[SIGV4_HASH_HEX_LEN + 1]) {
    uint8_t d[32];
    sigv4_sha256(data, len, d);
    hex_lower(d, 32, out);
}

/* ------------------------------------------------------------ HMAC-SHA256 */
/* A key as HMAC's two states after their first (padded key) block. */
typedef struct hmac_key {
    sha256_ctx inner, outer;
} hmac_key;

static void hmac_key_init(hmac_key *k, const void *key, size_t key_len) {
    uint8_t block[64], pad[64];
    memset(block, 0, sizeof(block));
    if (key_len > 64)
        sigv4_sha256(key, key_len, block);
    else if (key_len)
        memcpy(block, key, key_len);
    for (int i = 0; i < 64; i++)
        pad[i] = block[i] ^ 0x36;
    sha256_init(&k->inner);
    sha256_update(&k->inner, pad, 64);
    for (int i = 0; i < 64; i++)
        pad[i] = block[i] ^ 0x5c;
    sha256_init(&k->outer);
    sha256_update(&k->outer, pad, 64);
    explicit_bzero(block, sizeof(block));
    explicit_bzero(pad, sizeof(pad));
}

/* out = HMAC(k, what `inner` (a copy of k->inner) has been fed). */
static void hmac_finish(const hmac_key *k, sha256_ctx *inner, uint8_t out[32]) {
    uint8_t ih[32];
    sha256_final(inner, ih);
    sha256_ctx o = k->outer;
    sha256_update(&o, ih, 32);
    sha256_final(&o, out);
    explicit_bzero(ih, sizeof(ih));
    explicit_bzero(&o, sizeof(o));
}

static void hmac_once(const void *key, size_t key_len, const void *data, size_t len,
                      uint8_t out[32]) {
    hmac_key k;
    hmac_key_init(&k, key, key_len);
    sha256_ctx in = k.inner;
    sha256_update(&in, data, len);
    hmac_finish(&k, &in, out);
    explicit_bzero(&k, sizeof(k));
    explicit_bzero(&in, sizeof(in));
}

void sigv4_hmac_sha256(const void *key, size_t key_len, const void *data, size_t len,
                       uint8_t out[32]) {
    hmac_once(key, key_len, data, len, out);
}

/* -------------------------------------------------------------- key cache */
struct sigv4_key_cache {
    int valid;
    char date[9];
    char *secret;
    size_t secret_len;
    char *region;
    char *service;
    hmac_key key; /* kSigning */
    uint64_t derivations;
};

sigv4_key_cache *sigv4_key_cache_new(void) {
    return calloc(1, sizeof(sigv4_key_cache));
}

static void wipe_str(char **s) {
    if (*s) {
        explicit_bzero(*s, strlen(*s));
        free(*s);
        *s = NULL;
    }
}

void sigv4_key_cache_clear(sigv4_key_cache *c) {
    if (!c) return;
    wipe_str(&c->secret);
    wipe_str(&c->region);
    wipe_str(&c->service);
    explicit_bzero(&c->key, sizeof(c->key));
    explicit_bzero(c->date, sizeof(c->date));
    c->secret_len = 0;
    c->valid = 0;
}

void sigv4_key_cache_free(sigv4_key_cache *c) {
    if (!c) return;
    sigv4_key_cache_clear(c);
    explicit_bzero(c, sizeof(*c));
    free(c);
}

uint64_t sigv4_key_cache_derivations(const sigv4_key_cache *c) {
    return c ? c->derivations : 0;
}

static void derive(hmac_key *out, const char *secret, size_t secret_len, const char *date,
                   const char *region, const char *service) {
    size_t kl = 4 + secret_len;
    uint8_t stackbuf[132], *k0 = kl <= sizeof(stackbuf) ? stackbuf : malloc(kl);
    uint8_t k[32];
    if (k0) {
        memcpy(k0, "AWS4", 4);
        memcpy(k0 + 4, secret, secret_len);
        hmac_once(k0, kl, date, 8, k);
        explicit_bzero(k0, kl);
        if (k0 != stackbuf) free(k0);
    } else {
        /* Out of memory for a long secret: HMAC hashes keys over 64 bytes
         * first, so hash "AWS4" secret incrementally instead. */
        sha256_ctx h;
        uint8_t hk[32];
        sha256_init(&h);
        sha256_update(&h, "AWS4", 4);
        sha256_update(&h, secret, secret_len);
        sha256_final(&h, hk);
        hmac_once(hk, 32, date, 8, k);
        explicit_bzero(&h, sizeof(h));
        explicit_bzero(hk, sizeof(hk));
    }
    hmac_once(k, 32, region, strlen(region), k);
    hmac_once(k, 32, service, strlen(service), k);
    hmac_once(k, 32, "aws4_request", 12, k);
    hmac_key_init(out, k, 32);
    explicit_bzero(k, sizeof(k));
}

/* The cached key for these inputs, derived when they changed; NULL on OOM. */
static const hmac_key *cache_key(sigv4_key_cache *c, const char *secret, const char *date,
                                 const char *region, const char *service) {
    size_t sl = strlen(secret);
    if (c->valid && memcmp(c->date, date, 8) == 0 && c->secret_len == sl &&
        memcmp(c->secret, secret, sl) == 0 && strcmp(c->region, region) == 0 &&
        strcmp(c->service, service) == 0)
        return &c->key;
    sigv4_key_cache_clear(c);
    c->secret = strdup(secret);
    c->region = strdup(region);
    c->service = strdup(service);
    if (!c->secret || !c->region || !c->service) {
        sigv4_key_cache_clear(c);
        return NULL;
    }
    c->secret_len = sl;
    memcpy(c->date, date, 8);
    c->date[8] = '\0';
    derive(&c->key, secret, sl, date, region, service);
    c->derivations++;
    c->valid = 1;
    return &c->key;
}

/* ------------------------------------------------------------ the output */
/* Where canonical-request bytes go: a hash, a buffer, or both. */
typedef struct sink {
    sha256_ctx *sha;
    char *buf;
    size_t cap, len; /* len may pass cap: the size needed */
} sink;

static void put(sink *s, const char *p, size_t n) {
    if (s->sha) sha256_update(s->sha, p, n);
    if (s->buf) {
        if (s->len < s->cap) {
            size_t room = s->cap - s->len;
            memcpy(s->buf + s->len, p, n < room ? n : room);
        }
    }
    s->len += n;
}

static void putc_(sink *s, char ch) {
    put(s, &ch, 1);
}

static int unreserved(unsigned char ch) {
    return (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
           ch == '-' || ch == '.' || ch == '_' || ch == '~';
}

static int hexval(unsigned char ch) {
    if (ch >= '0' && ch <= '9') return ch - '0';
    if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
    return -1;
}

static const char HEXU[] = "0123456789ABCDEF";

/* Percent-encodes p[0..n) into s: unreserved kept, '/' kept when keep_slash,
 * an existing "%XX" kept when keep_escapes. */
static void put_encoded(sink *s, const char *p, size_t n, int keep_slash, int keep_escapes) {
    size_t run = 0; /* bytes copied as they are, flushed in one put */
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)p[i];
        if (unreserved(ch) || (keep_slash && ch == '/')) {
            run++;
            continue;
        }
        if (keep_escapes && ch == '%' && i + 2 < n && hexval((unsigned char)p[i + 1]) >= 0 &&
            hexval((unsigned char)p[i + 2]) >= 0) {
            run += 3;
            i += 2;
            continue;
        }
        if (run) put(s, p + i - run, run);
        run = 0;
        char e[3] = {'%', HEXU[ch >> 4], HEXU[ch & 15]};
        put(s, e, 3);
    }
    if (run) put(s, p + n - run, run);
}

/* --------------------------------------------------------- canonical URI */
typedef struct seg {
    const char *p;
    size_t n;
} seg;

static int put_path(sink *s, const char *path, int s3) {
    if (!path || !*path) {
        putc_(s, '/');
        return 0;
    }
    size_t plen = strlen(path);
    if (s3) {
        put_encoded(s, path, plen, 1, 1);
        return 0;
    }
    /* botocore's remove_dot_segments: drop empty and "." segments, ".."
     * pops; a leading and (when anything is left) a trailing "/" kept. */
    size_t max = plen / 2 + 1;
    seg stackseg[64], *segs = max <= 64 ? stackseg : malloc(max * sizeof(seg));
    if (!segs) return CD_ERR_NOMEM;
    size_t count = 0;
    for (const char *p = path; *p;) {
        size_t n = strcspn(p, "/");
        if (n == 2 && p[0] == '.' && p[1] == '.') {
            if (count) count--;
        } else if (n && !(n == 1 && p[0] == '.')) {
            segs[count].p = p;
            segs[count++].n = n;
        }
        p += n;
        if (*p == '/') p++;
    }
    if (path[0] == '/') putc_(s, '/');
    for (size_t i = 0; i < count; i++) {
        if (i) putc_(s, '/');
        put_encoded(s, segs[i].p, segs[i].n, 0, 0);
    }
    if (count && path[plen - 1] == '/') putc_(s, '/');
    if (segs != stackseg) free(segs);
    return 0;
}

/* ------------------------------------------------------- canonical query */
typedef struct param {
    char *name, *value; /* encoded, NUL-terminated, in the scratch buffer */
} param;

/* Decodes %XX in p[0..n) and encodes the result into out; returns the end. */
static char *recode(char *out, const char *p, size_t n) {
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)p[i];
        if (ch == '%' && i + 2 < n && hexval((unsigned char)p[i + 1]) >= 0 &&
            hexval((unsigned char)p[i + 2]) >= 0) {
            ch = (unsigned char)(hexval((unsigned char)p[i + 1]) << 4 |
                                 hexval((unsigned char)p[i + 2]));
            i += 2;
        }
        if (unreserved(ch)) {
            *out++ = (char)ch;
        } else {
            *out++ = '%';
            *out++ = HEXU[ch >> 4];
            *out++ = HEXU[ch & 15];
        }
    }
    *out++ = '\0';
    return out;
}

static int param_cmp(const void *a, const void *b) {
    const param *x = a, *y = b;
    int r = strcmp(x->name, y->name);
    return r ? r : strcmp(x->value, y->value);
}

static int put_query(sink *s, const char *query, char *errbuf, size_t errlen) {
    if (!query || !*query) return 0;
    size_t qlen = strlen(query);
    /* Each byte grows to at most 3, plus a NUL for each name and value. */
    size_t need = 3 * qlen + 2 * (qlen + 1);
    char stackbuf[1024], *scratch = need <= sizeof(stackbuf) ? stackbuf : malloc(need);
    param stackpar[32], *params = stackpar;
    size_t nparams = 0, maxparams = 32;
    if (!scratch) return CD_ERR_NOMEM;
    char *w = scratch;
    int ret = 0;
    for (const char *q = query;; q++) {
        size_t n = strcspn(q, "&");
        if (n) {
            if (nparams == maxparams) {
                if (maxparams == SIGV4_MAX_PARAMS) {
                    snprintf(errbuf, errlen, "SigV4: more than %d query parameters",
                             SIGV4_MAX_PARAMS);
                    ret = CD_ERR_INVALID;
                    goto out;
                }
                param *np = malloc(SIGV4_MAX_PARAMS * sizeof(param));
                if (!np) {
                    ret = CD_ERR_NOMEM;
                    goto out;
                }
                memcpy(np, params, nparams * sizeof(param));
                params = np;
                maxparams = SIGV4_MAX_PARAMS;
            }
            const char *eq = memchr(q, '=', n);
            size_t nl = eq ? (size_t)(eq - q) : n;
            params[nparams].name = w;
            w = recode(w, q, nl);
            params[nparams].value = w;
            w = eq ? recode(w, eq + 1, n - nl - 1) : recode(w, "", 0);
            nparams++;
        }
        q += n;
        if (!*q) break;
    }
    qsort(params, nparams, sizeof(param), param_cmp);
    for (size_t i = 0; i < nparams; i++) {
        if (i) putc_(s, '&');
        put(s, params[i].name, strlen(params[i].name));
        putc_(s, '=');
        put(s, params[i].value, strlen(params[i].value));
    }
out:
    if (params != stackpar) free(params);
    if (scratch != stackbuf) free(scratch);
    return ret;
}

/* ----------------------------------------------------- canonical headers */
typedef struct hdr {
    const char *name, *value;
    size_t nlen;
} hdr;

static int lc(unsigned char ch) {
    return ch >= 'A' && ch <= 'Z' ? ch + 32 : ch;
}

static int name_cmp(const hdr *a, const hdr *b) {
    size_t n = a->nlen < b->nlen ? a->nlen : b->nlen;
    for (size_t i = 0; i < n; i++) {
        int d = lc((unsigned char)a->name[i]) - lc((unsigned char)b->name[i]);
        if (d) return d;
    }
    return a->nlen < b->nlen ? -1 : a->nlen > b->nlen;
}

static int name_is(const char *name, size_t n, const char *lower) {
    if (strlen(lower) != n) return 0;
    for (size_t i = 0; i < n; i++)
        if (lc((unsigned char)name[i]) != (unsigned char)lower[i]) return 0;
    return 1;
}

static int tchar(unsigned char ch) {
    return ch > 32 && ch < 127 && !strchr("\"(),/:;<=>?@[\\]{}", ch);
}

static void put_lower(sink *s, const char *p, size_t n) {
    char tmp[64];
    while (n) {
        size_t k = n < sizeof(tmp) ? n : sizeof(tmp);
        for (size_t i = 0; i < k; i++)
            tmp[i] = (char)lc((unsigned char)p[i]);
        put(s, tmp, k);
        p += k;
        n -= k;
    }
}

static int ws(unsigned char ch) {
    return ch == ' ' || ch == '\t' || ch == '\v' || ch == '\f';
}

/* The value trimmed, inner runs of white space as one space. */
static void put_trimmed(sink *s, const char *v) {
    while (ws((unsigned char)*v))
        v++;
    while (*v) {
        size_t n = 0;
        while (v[n] && !ws((unsigned char)v[n]))
            n++;
        put(s, v, n);
        v += n;
        while (ws((unsigned char)*v))
            v++;
        if (*v) putc_(s, ' ');
    }
}

/* ----------------------------------------------------------------- sign */
static void amz_date_of(time_t t, char out[17]) {
    long long secs = (long long)t;
    long long days = secs / 86400, rem = secs % 86400;
    if (rem < 0) {
        rem += 86400;
        days--;
    }
    /* Howard Hinnant's civil_from_days. */
    long long z = days + 719468;
    long long era = (z >= 0 ? z : z - 146096) / 146097;
    long long doe = z - era * 146097;
    long long yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    long long y = yoe + era * 400;
    long long doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    long long mp = (5 * doy + 2) / 153;
    long long d = doy - (153 * mp + 2) / 5 + 1;
    long long m = mp < 10 ? mp + 3 : mp - 9;
    if (m <= 2) y++;
    if (y < 0) y = 0;
    if (y > 9999) y = 9999;
    int hh = (int)(rem / 3600), mm = (int)(rem / 60 % 60), ss = (int)(rem % 60);
    snprintf(out, 17, "%04d%02d%02dT%02d%02d%02dZ", (int)y, (int)m, (int)d, hh, mm, ss);
}

static int bad_field(const char *v, const char *reject) {
    return !v || !*v || strpbrk(v, reject) != NULL;
}

typedef struct prepared {
    hdr h[SIGV4_MAX_HEADERS];
    size_t n;
    char amz_date[17];
    char payload_hash[SIGV4_HASH_HEX_LEN + 1];
    const char *payload_hash_value;
    int s3;
} prepared;

static int prepare(const sigv4_request *r, prepared *pr, char *errbuf, size_t errlen) {
    if (!r || bad_field(r->method, " \t\r\n")) {
        snprintf(errbuf, errlen, "SigV4: bad or missing method");
        return CD_ERR_INVALID;
    }
    for (const char *m = r->method; *m; m++) {
        if (!tchar((unsigned char)*m)) {
            snprintf(errbuf, errlen, "SigV4: bad method");
            return CD_ERR_INVALID;
        }
    }
    if (bad_field(r->access_key, "/, \t\r\n") || !r->secret_key || !*r->secret_key) {
        snprintf(errbuf, errlen, "SigV4: needs an access key and a secret key");
        return CD_ERR_INVALID;
    }
    if (bad_field(r->region, "/, \t\r\n") || bad_field(r->service, "/, \t\r\n")) {
        snprintf(errbuf, errlen, "SigV4: bad or missing region or service");
        return CD_ERR_INVALID;
    }
    if (r->session_token && strpbrk(r->session_token, "\r\n")) {
        snprintf(errbuf, errlen, "SigV4: session token holds a line break");
        return CD_ERR_INVALID;
    }
    if ((r->path && strpbrk(r->path, "?#\r\n")) || (r->query && strpbrk(r->query, "#\r\n"))) {
        snprintf(errbuf, errlen, "SigV4: path or query holds '?', '#' or a line break");
        return CD_ERR_INVALID;
    }
    if (r->payload_hash && bad_field(r->payload_hash, " \t\r\n")) {
        snprintf(errbuf, errlen, "SigV4: bad payload_hash");
        return CD_ERR_INVALID;
    }
    if (!r->payload && r->payload_len) {
        snprintf(errbuf, errlen, "SigV4: payload is NULL with a length");
        return CD_ERR_INVALID;
    }
    int token = r->session_token && *r->session_token;
    int host = 0;
    pr->n = 0;
    pr->s3 = strcmp(r->service, "s3") == 0;
    amz_date_of(r->time, pr->amz_date);
    if (r->payload_hash) {
        pr->payload_hash_value = r->payload_hash;
    } else {
        sigv4_sha256_hex(r->payload ? r->payload : "", r->payload_len, pr->payload_hash);
        pr->payload_hash_value = pr->payload_hash;
    }
    if (r->n_headers && !r->headers) {
        snprintf(errbuf, errlen, "SigV4: headers is NULL with a count");
        return CD_ERR_INVALID;
    }
    if (r->n_headers + 3 > SIGV4_MAX_HEADERS) {
        snprintf(errbuf, errlen, "SigV4: more than %d headers", SIGV4_MAX_HEADERS - 3);
        return CD_ERR_INVALID;
    }
    for (size_t i = 0; i < r->n_headers; i++) {
        const char *name = r->headers[i].name, *value = r->headers[i].value;
        size_t nl = name ? strlen(name) : 0;
        int ok = nl > 0 && value && !strpbrk(value, "\r\n");
        for (size_t j = 0; ok && j < nl; j++)
            ok = tchar((unsigned char)name[j]);
        if (!ok) {
            snprintf(errbuf, errlen, "SigV4: bad header %.*s", (int)(nl < 64 ? nl : 64),
                     name ? name : "(null)");
            return CD_ERR_INVALID;
        }
        if (name_is(name, nl, "authorization") || name_is(name, nl, "x-amz-date") ||
            (token && name_is(name, nl, "x-amz-security-token")) ||
            (r->content_sha256 && name_is(name, nl, "x-amz-content-sha256"))) {
            snprintf(errbuf, errlen, "SigV4: header %s is the signer's to set", name);
            return CD_ERR_INVALID;
        }
        if (name_is(name, nl, "host")) host = 1;
        pr->h[pr->n++] = (hdr){name, value, nl};
    }
    if (!host) {
        snprintf(errbuf, errlen, "SigV4: a host header is required");
        return CD_ERR_INVALID;
    }
    pr->h[pr->n++] = (hdr){"x-amz-date", pr->amz_date, 10};
    if (token) pr->h[pr->n++] = (hdr){"x-amz-security-token", r->session_token, 20};
    if (r->content_sha256)
        pr->h[pr->n++] = (hdr){"x-amz-content-sha256", pr->payload_hash_value, 20};
    /* Stable insertion sort: values of one name keep their order. */
    for (size_t i = 1; i < pr->n; i++) {
        hdr x = pr->h[i];
        size_t j = i;
        while (j > 0 && name_cmp(&pr->h[j - 1], &x) > 0) {
            pr->h[j] = pr->h[j - 1];
            j--;
        }
        pr->h[j] = x;
    }
    return 0;
}

static void put_signed_headers(sink *s, const prepared *pr) {
    for (size_t i = 0; i < pr->n; i++) {
        if (i && name_cmp(&pr->h[i - 1], &pr->h[i]) == 0) continue;
        if (i) putc_(s, ';');
        put_lower(s, pr->h[i].name, pr->h[i].nlen);
    }
}

/* The canonical request into s; signed_headers as already built. */
static int put_canonical(sink *s, const sigv4_request *r, const prepared *pr,
                         const char *signed_headers, size_t sh_len, char *errbuf, size_t errlen) {
    put(s, r->method, strlen(r->method));
    putc_(s, '\n');
    int ret = put_path(s, r->path, pr->s3);
    if (ret < 0) {
        snprintf(errbuf, errlen, "out of memory");
        return ret;
    }
    putc_(s, '\n');
    ret = put_query(s, r->query, errbuf, errlen);
    if (ret < 0) {
        if (ret == CD_ERR_NOMEM) snprintf(errbuf, errlen, "out of memory");
        return ret;
    }
    putc_(s, '\n');
    for (size_t i = 0; i < pr->n; i++) {
        if (i && name_cmp(&pr->h[i - 1], &pr->h[i]) == 0) {
            putc_(s, ',');
        } else {
            if (i) putc_(s, '\n');
            put_lower(s, pr->h[i].name, pr->h[i].nlen);
            putc_(s, ':');
        }
        put_trimmed(s, pr->h[i].value);
    }
    put(s, "\n\n", 2);
    put(s, signed_headers, sh_len);
    putc_(s, '\n');
    put(s, pr->payload_hash_value, strlen(pr->payload_hash_value));
    return 0;
}

long sigv4_canonical_request(const sigv4_request *req, char *out, size_t outlen, char *errbuf,
                             size_t errlen) {
    prepared pr;
    int ret = prepare(req, &pr, errbuf, errlen);
    if (ret < 0) return ret;
    char sh[SIGV4_MAX_HEADERS * 64];
    sink shs = {NULL, sh, sizeof(sh), 0};
    put_signed_headers(&shs, &pr);
    if (shs.len >= sizeof(sh)) {
        snprintf(errbuf, errlen, "SigV4: header names too long");
        return CD_ERR_INVALID;
    }
    sink s = {NULL, out, outlen, 0};
    ret = put_canonical(&s, req, &pr, sh, shs.len, errbuf, errlen);
    if (ret < 0) return ret;
    if (s.len >= outlen) {
        if (outlen) out[outlen - 1] = '\0';
        snprintf(errbuf, errlen, "SigV4: canonical request needs %zu bytes", s.len + 1);
        return -E2BIG;
    }
    out[s.len] = '\0';
    return (long)s.len;
}

int sigv4_sign(sigv4_key_cache *c, const sigv4_request *req, char *authorization, size_t alen,
               char *amz_date, char *errbuf, size_t errlen) {
    prepared pr;
    int ret = prepare(req, &pr, errbuf, errlen);
    if (ret < 0) return ret;

    /* Authorization up to the signature; its SignedHeaders part is also
     * what the canonical request names. */
    sink a = {NULL, authorization, alen, 0};
    static const char alg[] = "AWS4-HMAC-SHA256";
    put(&a, alg, sizeof(alg) - 1);
    put(&a, " Credential=", 12);
    put(&a, req->access_key, strlen(req->access_key));
    putc_(&a, '/');
    size_t scope_at = a.len;
    put(&a, pr.amz_date, 8);
    putc_(&a, '/');
    put(&a, req->region, strlen(req->region));
    putc_(&a, '/');
    put(&a, req->service, strlen(req->service));
    put(&a, "/aws4_request", 13);
    size_t scope_len = a.len - scope_at;
    put(&a, ", SignedHeaders=", 16);
    size_t sh_at = a.len;
    put_signed_headers(&a, &pr);
    size_t sh_len = a.len - sh_at;
    put(&a, ", Signature=", 12);
    if (a.len + SIGV4_HASH_HEX_LEN + 1 > alen) {
        snprintf(errbuf, errlen, "SigV4: Authorization needs %zu bytes",
                 a.len + SIGV4_HASH_HEX_LEN + 1);
        return -E2BIG;
    }

    sha256_ctx h;
    sha256_init(&h);
    sink s = {&h, NULL, 0, 0};
    ret = put_canonical(&s, req, &pr, authorization + sh_at, sh_len, errbuf, errlen);
    if (ret < 0) return ret;
    uint8_t digest[32];
    char creq_hex[SIGV4_HASH_HEX_LEN + 1];
    sha256_final(&h, digest);
    hex_lower(digest, 32, creq_hex);

    hmac_key local;
    const hmac_key *key;
    if (c) {
        key = cache_key(c, req->secret_key, pr.amz_date, req->region, req->service);
        if (!key) {
            snprintf(errbuf, errlen, "out of memory");
            return CD_ERR_NOMEM;
        }
    } else {
        derive(&local, req->secret_key, strlen(req->secret_key), pr.amz_date, req->region,
               req->service);
        key = &local;
    }
    sha256_ctx in = key->inner;
    sha256_update(&in, alg, sizeof(alg) - 1);
    sha256_update(&in, "\n", 1);
    sha256_update(&in, pr.amz_date, SIGV4_AMZ_DATE_LEN);
    sha256_update(&in, "\n", 1);
    sha256_update(&in, authorization + scope_at, scope_len);
    sha256_update(&in, "\n", 1);
    sha256_update(&in, creq_hex, SIGV4_HASH_HEX_LEN);
    uint8_t sig[32];
    hmac_finish(key, &in, sig);
    if (!c) explicit_bzero(&local, sizeof(local));
    explicit_bzero(&in, sizeof(in));
    hex_lower(sig, 32, authorization + a.len);
    memcpy(amz_date, pr.amz_date, SIGV4_AMZ_DATE_LEN + 1);
    return 0;
}
