/*
 * JSON validation without building a tree: one pass, no allocation.  Every
 * record of a `value_format: json` pipeline goes through it, so it replaces
 * a parse-into-jansson-and-free that cost most of the engine's CPU.  Strict
 * RFC 8259: one value, optional surrounding whitespace, UTF-8 checked
 * (no overlongs, no surrogates), escapes checked, numbers by the grammar,
 * nesting bounded.
 */
#include "jsonscan.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#define JSONSCAN_MAX_DEPTH 512

typedef struct scan {
    const unsigned char *p, *end, *start;
    const char *err;
} scan;

static inline __attribute__((always_inline)) void scan_ws(scan *s) {
    /* Compact JSON has none: every byte above ' ' ends it at once. */
    while (s->p < s->end && *s->p <= ' ' &&
           (*s->p == ' ' || *s->p == '\t' || *s->p == '\n' || *s->p == '\r'))
        s->p++;
}

static int scan_fail(scan *s, const char *err) {
    s->err = err;
    return -1;
}

static int scan_hex4(scan *s, unsigned *out) {
    if (s->end - s->p < 4) return scan_fail(s, "truncated \\u escape");
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        unsigned c = s->p[i], d;
        if (c >= '0' && c <= '9')
            d = c - '0';
        else if (c >= 'a' && c <= 'f')
            d = c - 'a' + 10;
        else if (c >= 'A' && c <= 'F')
            d = c - 'A' + 10;
        else
            return scan_fail(s, "invalid \\u escape");
        v = v << 4 | d;
    }
    s->p += 4;
    *out = v;
    return 0;
}

/* Skipping the run of bytes that need no attention inside a string:
 * printable ASCII other than '"' and '\\'.  Most of a record's bytes are
 * such runs, so they go 16 (SSE2) or 8 (SWAR, any CPU) at a time; the byte
 * loop in scan_string handles quotes, escapes, control characters and
 * UTF-8.  Both may stop early (at a byte that needs no attention): never
 * late. */
static int scan_mode; /* jsonscan_set_mode: 0 best, 1 SWAR, 2 bytes */

void jsonscan_set_mode(int mode) {
    scan_mode = mode;
}

static const unsigned char *scan_run_swar(const unsigned char *p, const unsigned char *end) {
    const uint64_t ones = 0x0101010101010101ULL, highs = 0x8080808080808080ULL;
    while (end - p >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        uint64_t q = w ^ (ones * '"'), b = w ^ (ones * '\\');
        /* High bit set in a byte that is '"', '\\', < 0x20 or >= 0x80 (and
         * possibly in bytes above one of those: a false alarm only). */
        uint64_t hit = ((q - ones) & ~q) | ((b - ones) & ~b) | (w - ones * 0x20) | w;
        if (hit & highs) break;
        p += 8;
    }
    return p;
}

static inline const unsigned char *scan_plain_run(const unsigned char *p,
                                                  const unsigned char *end) {
    if (scan_mode == 2) return p;
#if defined(__SSE2__)
    if (scan_mode == 0) {
        const __m128i quote = _mm_set1_epi8('"'), bslash = _mm_set1_epi8('\\'),
                      space = _mm_set1_epi8(0x20);
        while (end - p >= 16) {
            __m128i v = _mm_loadu_si128((const __m128i *)(const void *)p);
            /* Signed compare: bytes >= 0x80 are negative, so "< 0x20"
             * catches them along with the control characters. */
            __m128i m =
                _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(v, quote), _mm_cmpeq_epi8(v, bslash)),
                             _mm_cmplt_epi8(v, space));
            unsigned mask = (unsigned)_mm_movemask_epi8(m);
            if (mask) return p + __builtin_ctz(mask);
            p += 16;
        }
        return p;
    }
#endif
    return scan_run_swar(p, end);
}

/* After the opening quote; leaves p after the closing quote. */
static int scan_string(scan *s) {
    while (s->p < s->end) {
        s->p = scan_plain_run(s->p, s->end);
        if (s->p >= s->end) break;
        unsigned c = *s->p;
        if (c == '"') {
            s->p++;
            return 0;
        }
        if (c < 0x20) return scan_fail(s, "control character in string");
        if (c == '\\') {
            if (++s->p >= s->end) break;
            c = *s->p++;
            if (c == 'u') {
                unsigned u;
                if (scan_hex4(s, &u) < 0) return -1;
                if (u >= 0xD800 && u <= 0xDBFF) {
                    unsigned lo;
                    if (s->end - s->p < 2 || s->p[0] != '\\' || s->p[1] != 'u')
                        return scan_fail(s, "unpaired surrogate escape");
                    s->p += 2;
                    if (scan_hex4(s, &lo) < 0) return -1;
                    if (lo < 0xDC00 || lo > 0xDFFF)
                        return scan_fail(s, "unpaired surrogate escape");
                } else if (u >= 0xDC00 && u <= 0xDFFF) {
                    return scan_fail(s, "unpaired surrogate escape");
                }
            } else if (!(c == '"' || c == '\\' || c == '/' || c == 'b' || c == 'f' || c == 'n' ||
                         c == 'r' || c == 't')) {
                return scan_fail(s, "invalid escape");
            }
            continue;
        }
        if (c < 0x80) {
            s->p++;
            continue;
        }
        /* UTF-8: lead byte, then continuation bytes; shortest form only. */
        int n;
        unsigned min, cp;
        if (c >= 0xC2 && c <= 0xDF)
            n = 1, min = 0x80, cp = c & 0x1F;
        else if (c >= 0xE0 && c <= 0xEF)
            n = 2, min = 0x800, cp = c & 0x0F;
        else if (c >= 0xF0 && c <= 0xF4)
            n = 3, min = 0x10000, cp = c & 0x07;
        else
            return scan_fail(s, "invalid UTF-8");
        if (s->end - s->p <= n) return scan_fail(s, "truncated UTF-8");
        for (int i = 1; i <= n; i++) {
            if ((s->p[i] & 0xC0) != 0x80) return scan_fail(s, "invalid UTF-8");
            cp = cp << 6 | (s->p[i] & 0x3F);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return scan_fail(s, "invalid UTF-8");
        s->p += n + 1;
    }
    return scan_fail(s, "unterminated string");
}

/* After the opening quote: the common string, with no escape, control
 * character or non-ASCII byte before its closing quote, ends in the plain
 * run (scan_plain_run inlined, no call); anything else goes to
 * scan_string. */
static inline int scan_string_fast(scan *s) {
    const unsigned char *p = scan_plain_run(s->p, s->end);
    if (p < s->end && *p == '"') {
        s->p = p + 1;
        return 0;
    }
    s->p = p;
    return scan_string(s);
}

static int scan_digits(scan *s) {
    const unsigned char *b = s->p;
    while (s->p < s->end && *s->p >= '0' && *s->p <= '9')
        s->p++;
    return s->p > b ? 0 : -1;
}

static int scan_number(scan *s) {
    if (s->p < s->end && *s->p == '-') s->p++;
    if (s->p < s->end && *s->p == '0') {
        s->p++;
    } else if (scan_digits(s) < 0) {
        return scan_fail(s, "invalid number");
    }
    if (s->p < s->end && *s->p == '.') {
        s->p++;
        if (scan_digits(s) < 0) return scan_fail(s, "invalid number");
    }
    if (s->p < s->end && (*s->p == 'e' || *s->p == 'E')) {
        s->p++;
        if (s->p < s->end && (*s->p == '+' || *s->p == '-')) s->p++;
        if (scan_digits(s) < 0) return scan_fail(s, "invalid number");
    }
    return 0;
}

static int scan_literal(scan *s, const char *lit, size_t n) {
    if ((size_t)(s->end - s->p) < n) return scan_fail(s, "invalid literal");
    for (size_t i = 0; i < n; i++)
        if (s->p[i] != (unsigned char)lit[i]) return scan_fail(s, "invalid literal");
    s->p += n;
    return 0;
}

/* Iterative: `stack` remembers whether each open container is an object. */
static int scan_value(scan *s) {
    unsigned char stack[JSONSCAN_MAX_DEPTH];
    int depth = 0;
    for (;;) {
        /* A value is expected here. */
        scan_ws(s);
        if (s->p >= s->end) return scan_fail(s, "unexpected end of input");
        unsigned c = *s->p;
        if (c == '{' || c == '[') {
            if (depth == JSONSCAN_MAX_DEPTH) return scan_fail(s, "nesting too deep");
            stack[depth++] = c == '{';
            s->p++;
            scan_ws(s);
            if (s->p < s->end && *s->p == (c == '{' ? '}' : ']')) {
                s->p++;
                depth--;
                goto after_value;
            }
            if (c == '{') goto member_key;
            continue;
        }
        if (c == '"') {
            s->p++;
            if (scan_string_fast(s) < 0) return -1;
        } else if (c == '-' || (c >= '0' && c <= '9')) {
            if (scan_number(s) < 0) return -1;
        } else if (c == 't') {
            if (scan_literal(s, "true", 4) < 0) return -1;
        } else if (c == 'f') {
            if (scan_literal(s, "false", 5) < 0) return -1;
        } else if (c == 'n') {
            if (scan_literal(s, "null", 4) < 0) return -1;
        } else {
            return scan_fail(s, "unexpected character");
        }
    after_value:
        for (;;) {
            if (depth == 0) return 0;
            scan_ws(s);
            if (s->p >= s->end) return scan_fail(s, "unexpected end of input");
            c = *s->p;
            if (c == ',') {
                s->p++;
                if (stack[depth - 1]) goto member_key;
                break; /* next array element */
            }
            if (c == (stack[depth - 1] ? '}' : ']')) {
                s->p++;
                depth--;
                continue;
            }
            return scan_fail(s, stack[depth - 1] ? "expected ',' or '}'" : "expected ',' or ']'");
        }
        continue;
    member_key:
        scan_ws(s);
        if (s->p >= s->end || *s->p != '"') return scan_fail(s, "expected a string key");
        s->p++;
        if (scan_string_fast(s) < 0) return -1;
        scan_ws(s);
        if (s->p >= s->end || *s->p != ':') return scan_fail(s, "expected ':'");
        s->p++;
    }
}

int json_validate(const void *data, size_t len, char *errbuf, size_t errlen) {
    scan s = {data, (const unsigned char *)data + len, data, NULL};
    if (scan_value(&s) == 0) {
        scan_ws(&s);
        if (s.p == s.end) return 0;
        s.err = "trailing data after the JSON value";
    }
    if (errbuf) snprintf(errbuf, errlen, "%s at byte %zu", s.err, (size_t)(s.p - s.start));
    return -1;
}

const char *json_skip_ws(const char *p, const char *end) {
    scan s = {(const unsigned char *)p, (const unsigned char *)end, (const unsigned char *)p, NULL};
    scan_ws(&s);
    return (const char *)s.p;
}

const char *json_skip_string(const char *p, const char *end) {
    scan s = {(const unsigned char *)p, (const unsigned char *)end, (const unsigned char *)p, NULL};
    return scan_string(&s) < 0 ? NULL : (const char *)s.p;
}

const char *json_skip_value(const char *p, const char *end) {
    scan s = {(const unsigned char *)p, (const unsigned char *)end, (const unsigned char *)p, NULL};
    return scan_value(&s) < 0 ? NULL : (const char *)s.p;
}

/* ------------------------------------------------- validated text, skipped
 * Only quotes, backslashes and brackets matter once a document is known to
 * be valid; the loops look for them 16 bytes at a time where SSE2 exists. */
static const unsigned char *valid_string_end(const unsigned char *p, const unsigned char *end) {
    for (;;) {
#if defined(__SSE2__)
        if (scan_mode == 0) {
            const __m128i quote = _mm_set1_epi8('"'), bslash = _mm_set1_epi8('\\');
            while (end - p >= 16) {
                __m128i v = _mm_loadu_si128((const __m128i *)(const void *)p);
                unsigned mask = (unsigned)_mm_movemask_epi8(
                    _mm_or_si128(_mm_cmpeq_epi8(v, quote), _mm_cmpeq_epi8(v, bslash)));
                if (mask) {
                    p += __builtin_ctz(mask);
                    break;
                }
                p += 16;
            }
        }
#endif
        while (p < end && *p != '"' && *p != '\\')
            p++;
        if (p >= end) return NULL;
        if (*p == '"') return p + 1;
        p += 2; /* an escape: "\\x"; \uXXXX's hex digits need no care */
        if (p > end) return NULL;
    }
}

const char *json_skip_string_valid(const char *p, const char *end) {
    return (const char *)valid_string_end((const unsigned char *)p, (const unsigned char *)end);
}

static int valid_structural(unsigned char c) {
    return c == '"' || c == '{' || c == '}' || c == '[' || c == ']';
}

const char *json_skip_value_valid(const char *cp, const char *cend) {
    const unsigned char *p = (const unsigned char *)json_skip_ws(cp, cend);
    const unsigned char *end = (const unsigned char *)cend;
    if (p >= end) return NULL;
    unsigned char c = *p;
    if (c == '"') return (const char *)valid_string_end(p + 1, end);
    if (c != '{' && c != '[') {
        /* A number or a literal: up to the next separator. */
        while (p < end && *p != ',' && *p != '}' && *p != ']' && *p != ' ' && *p != '\n' &&
               *p != '\t' && *p != '\r')
            p++;
        return (const char *)p;
    }
    size_t depth = 0;
    while (p < end) {
#if defined(__SSE2__)
        if (scan_mode == 0) {
            const __m128i q = _mm_set1_epi8('"'), ob = _mm_set1_epi8('{'), cb = _mm_set1_epi8('}'),
                          os = _mm_set1_epi8('['), cs = _mm_set1_epi8(']');
            while (end - p >= 16) {
                __m128i v = _mm_loadu_si128((const __m128i *)(const void *)p);
                __m128i m = _mm_or_si128(
                    _mm_or_si128(_mm_cmpeq_epi8(v, q), _mm_cmpeq_epi8(v, ob)),
                    _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(v, cb), _mm_cmpeq_epi8(v, os)),
                                 _mm_cmpeq_epi8(v, cs)));
                unsigned mask = (unsigned)_mm_movemask_epi8(m);
                if (mask) {
                    p += __builtin_ctz(mask);
                    break;
                }
                p += 16;
            }
        }
#endif
        while (p < end && !valid_structural(*p))
            p++;
        if (p >= end) return NULL;
        c = *p;
        if (c == '"') {
            p = valid_string_end(p + 1, end);
            if (!p) return NULL;
            continue;
        }
        if (c == '{' || c == '[') {
            depth++;
        } else if (--depth == 0) {
            return (const char *)p + 1;
        }
        p++;
    }
    return NULL;
}
