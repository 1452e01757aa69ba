/*
 * source-http — the fast path of the event check: the topic's schema
 * compiled once, and each event's text walked once against it, with no
 * tree and no allocation.
 *
 * Its one job is to prove an event valid, with exactly the meaning of the
 * reference (http_event_check_reference: jansson with
 * JSON_REJECT_DUPLICATES, then http_schema_validate, then the eventId and
 * key rules).  Whenever it cannot, it returns -1 and the reference decides:
 * so every 400 and its text come from the reference, and this file only
 * has to be exact about what it accepts.  It gives up on:
 *
 *   - anything that is not strict RFC 8259 JSON, and what jansson refuses
 *     on top of that: a duplicate member name at any depth, "\u0000",
 *     integers beyond 64 bits, reals that overflow a double (here: any
 *     whose magnitude could reach 1e308);
 *   - any violation of the schema (type, enum, required, unknown member,
 *     length, format) or of the eventId / key rules;
 *   - what it does not handle itself: member names with escapes, strings
 *     with escapes where the schema looks at their content (enum, lengths,
 *     format; also a client's eventId and a string key), enum values that
 *     are objects or arrays, objects whose schema names more than
 *     HS_MAX_NAMES members, nesting beyond HS_MAX_DEPTH, more than
 *     HS_MAX_KEYS member names outside the schema in the open objects,
 *     and numbers longer than HS_NUM_MAX bytes where their value matters.
 *
 * The walk checks, per value, what http_schema_validate checks per node
 * (type, enum; a string's lengths and format; an object's required and
 * member schemas, additionalProperties; an array's items) and, since the
 * reference would only accept the event if all of them pass, the order in
 * which it meets them does not matter here.
 */
#include "http_schema.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

/* The scanner's small helpers are inlined where GCC and Clang would not on
 * their own: a call per string is a tenth of the walk. */
#if defined(__GNUC__)
#define HS_INLINE static inline __attribute__((always_inline))
#else
#define HS_INLINE static inline
#endif

#define HS_MAX_DEPTH 64  /* nesting the fast path follows (jansson: 2048) */
#define HS_MAX_NAMES 64  /* member names one schema object knows (a bit each) */
#define HS_MAX_KEYS  256 /* member names outside the schema, over the open objects */
#define HS_NUM_MAX   63  /* longest number text converted with strtod */

/* Types a schema allows ("type"), as bits. */
enum {
    HS_T_OBJECT = 1,
    HS_T_ARRAY = 2,
    HS_T_STRING = 4,
    HS_T_INTEGER = 8,
    HS_T_NUMBER = 16,
    HS_T_BOOLEAN = 32,
    HS_T_NULL = 64,
    HS_T_ANY = 127,
};

/* What a scanned value is: jansson's types (an integer is a number without
 * fraction or exponent). */
enum { HS_OBJECT, HS_ARRAY, HS_STRING, HS_INT, HS_REAL, HS_TRUE, HS_FALSE, HS_NULL };

enum { HS_FMT_NONE, HS_FMT_UUID, HS_FMT_DATE_TIME };

/* additionalProperties: absent or true, false, or a schema. */
enum { HS_EXTRA_ANY, HS_EXTRA_NONE, HS_EXTRA_SCHEMA };

typedef struct hs_enum {
    int kind; /* HS_*; HS_OBJECT stands for any object or array */
    char *s;  /* HS_STRING (owned) */
    size_t len;
    json_int_t i;
    double d;
} hs_enum;

typedef struct hs_node hs_node;

/* A member name a schema object knows: in "properties", in "required", or
 * both.  Its index is its bit in the walk's `seen` and in `required`. */
typedef struct hs_name {
    char *name; /* owned */
    size_t len;
    hs_node *schema; /* from "properties"; NULL: only in "required" */
} hs_name;

struct hs_node {
    unsigned types;
    int has_enum;
    size_t nenum;
    hs_enum *enums;
    int has_min, has_max;
    size_t min_len, max_len;
    int format;
    int object_slow; /* more names than HS_MAX_NAMES: objects here go to the reference */
    size_t nnames;
    hs_name *names;
    uint64_t required; /* bits of the names in "required" */
    int extra;
    hs_node *extra_schema;
    hs_node *items;
};

struct http_cschema {
    hs_node *root;
};

/* ------------------------------------------------------------- compile */

static void hs_node_free(hs_node *n) {
    if (n == NULL) return;
    for (size_t i = 0; i < n->nenum; i++)
        free(n->enums[i].s);
    free(n->enums);
    for (size_t i = 0; i < n->nnames; i++) {
        free(n->names[i].name);
        hs_node_free(n->names[i].schema);
    }
    free(n->names);
    hs_node_free(n->extra_schema);
    hs_node_free(n->items);
    free(n);
}

static unsigned hs_type_bit(const char *t) {
    if (t == NULL) return 0;
    if (strcmp(t, "object") == 0) return HS_T_OBJECT;
    if (strcmp(t, "array") == 0) return HS_T_ARRAY;
    if (strcmp(t, "string") == 0) return HS_T_STRING;
    if (strcmp(t, "integer") == 0) return HS_T_INTEGER;
    if (strcmp(t, "number") == 0) return HS_T_NUMBER;
    if (strcmp(t, "boolean") == 0) return HS_T_BOOLEAN;
    if (strcmp(t, "null") == 0) return HS_T_NULL;
    return 0;
}

/* memcmp(a, b, n) == 0 for the short names of a schema, without a call. */
static inline int hs_eq(const char *a, const char *b, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (a[i] != b[i]) return 0;
    return 1;
}

/* Index of name in n->names, or -1. */
HS_INLINE int hs_name_find(const hs_node *n, const char *name, size_t len) {
    for (size_t i = 0; i < n->nnames; i++)
        if (n->names[i].len == len && hs_eq(n->names[i].name, name, len)) return (int)i;
    return -1;
}

/* Adds name (or finds it); its index, -1 (out of memory) or -2 (too many). */
static int hs_name_add(hs_node *n, const char *name, size_t cap) {
    size_t len = strlen(name);
    int i = hs_name_find(n, name, len);
    if (i >= 0) return i;
    if (n->nnames == HS_MAX_NAMES || n->nnames == cap) return -2;
    hs_name *e = &n->names[n->nnames];
    e->name = malloc(len + 1);
    if (e->name == NULL) return -1;
    memcpy(e->name, name, len + 1);
    e->len = len;
    e->schema = NULL;
    return (int)n->nnames++;
}

static hs_node *hs_compile(const json_t *s);

static int hs_compile_enum(hs_node *n, const json_t *list) {
    size_t count = json_array_size(list);
    n->has_enum = 1;
    n->enums = calloc(count ? count : 1, sizeof(*n->enums));
    if (n->enums == NULL) return -1;
    size_t i;
    const json_t *c;
    json_array_foreach(list, i, c) {
        hs_enum *e = &n->enums[n->nenum++];
        switch (json_typeof(c)) {
        case JSON_STRING:
            e->kind = HS_STRING;
            e->len = json_string_length(c);
            e->s = malloc(e->len + 1);
            if (e->s == NULL) return -1;
            memcpy(e->s, json_string_value(c), e->len + 1);
            break;
        case JSON_INTEGER:
            e->kind = HS_INT;
            e->i = json_integer_value(c);
            break;
        case JSON_REAL:
            e->kind = HS_REAL;
            e->d = json_real_value(c);
            break;
        case JSON_TRUE:
            e->kind = HS_TRUE;
            break;
        case JSON_FALSE:
            e->kind = HS_FALSE;
            break;
        case JSON_NULL:
            e->kind = HS_NULL;
            break;
        default:
            e->kind = HS_OBJECT;
            break;
        }
    }
    return 0;
}

static int hs_compile_object(hs_node *n, const json_t *s) {
    const json_t *props = json_object_get(s, "properties");
    const json_t *req = json_object_get(s, "required");
    size_t cap = json_object_size(props) + json_array_size(req);
    if (cap > HS_MAX_NAMES) cap = HS_MAX_NAMES;
    if (cap) {
        n->names = calloc(cap, sizeof(*n->names));
        if (n->names == NULL) return -1;
    }
    const char *name;
    const json_t *sub;
    json_object_foreach((json_t *)props, name, sub) {
        int i = hs_name_add(n, name, cap);
        if (i == -1) return -1;
        if (i == -2) {
            n->object_slow = 1;
            break;
        }
        n->names[i].schema = hs_compile(sub);
        if (n->names[i].schema == NULL) return -1;
    }
    size_t k;
    const json_t *r;
    json_array_foreach(req, k, r) {
        if (n->object_slow) break;
        int i = hs_name_add(n, json_string_value(r), cap);
        if (i == -1) return -1;
        if (i == -2) {
            n->object_slow = 1;
            break;
        }
        n->required |= (uint64_t)1 << i;
    }
    const json_t *extra = json_object_get(s, "additionalProperties");
    if (json_is_false(extra)) {
        n->extra = HS_EXTRA_NONE;
    } else if (json_is_object(extra)) {
        n->extra = HS_EXTRA_SCHEMA;
        n->extra_schema = hs_compile(extra);
        if (n->extra_schema == NULL) return -1;
    }
    return 0;
}

/* s passed http_schema_check: an object of known keywords. */
static hs_node *hs_compile(const json_t *s) {
    hs_node *n = calloc(1, sizeof(*n));
    if (n == NULL) return NULL;
    const json_t *type = json_object_get(s, "type");
    if (json_is_string(type)) {
        n->types = hs_type_bit(json_string_value(type));
    } else if (json_is_array(type)) {
        size_t i;
        const json_t *t;
        json_array_foreach(type, i, t) n->types |= hs_type_bit(json_string_value(t));
    } else {
        n->types = HS_T_ANY;
    }
    const json_t *list = json_object_get(s, "enum");
    if (list && hs_compile_enum(n, list) < 0) goto fail;
    const json_t *min = json_object_get(s, "minLength"), *max = json_object_get(s, "maxLength");
    if (min) n->has_min = 1, n->min_len = (size_t)json_integer_value(min);
    if (max) n->has_max = 1, n->max_len = (size_t)json_integer_value(max);
    const char *format = json_string_value(json_object_get(s, "format"));
    if (format && strcmp(format, "uuid") == 0) n->format = HS_FMT_UUID;
    if (format && strcmp(format, "date-time") == 0) n->format = HS_FMT_DATE_TIME;
    if (hs_compile_object(n, s) < 0) goto fail;
    const json_t *items = json_object_get(s, "items");
    if (items) {
        n->items = hs_compile(items);
        if (n->items == NULL) goto fail;
    }
    return n;
fail:
    hs_node_free(n);
    return NULL;
}

http_cschema *http_cschema_compile(const json_t *schema) {
    http_cschema *cs = calloc(1, sizeof(*cs));
    if (cs == NULL) return NULL;
    cs->root = hs_compile(schema);
    if (cs->root == NULL) {
        free(cs);
        return NULL;
    }
    return cs;
}

void http_cschema_free(http_cschema *cs) {
    if (cs == NULL) return;
    hs_node_free(cs->root);
    free(cs);
}

/* ---------------------------------------------------------------- scan */

typedef struct hs_span {
    const char *p;
    size_t n;
} hs_span;

typedef struct hs_walk {
    const unsigned char *p, *end;
    int depth;
    size_t nkeys;
    hs_span keys[HS_MAX_KEYS]; /* names outside the schema, of the open objects */
    /* What the caller needs from the root object. */
    const char *tok0; /* the key pointer's first token */
    size_t tok0_len;
    const unsigned char *id_at, *key_at; /* where those members' values start */
    uint64_t root_seen;
} hs_walk;

static void hs_ws(hs_walk *w) {
    while (w->p < w->end && (*w->p == ' ' || *w->p == '\n' || *w->p == '\t' || *w->p == '\r'))
        w->p++;
}

/* The run of string bytes that need no attention (printable ASCII other
 * than '"' and '\\'): 16 at a time with SSE2, 8 with SWAR elsewhere.  May
 * stop early, never late. */
static const unsigned char *hs_plain_run(const unsigned char *p, const unsigned char *end) {
#if defined(__SSE2__)
    const __m128i quote = _mm_set1_epi8('"'), bslash = _mm_set1_epi8('\\'),
                  space = _mm_set1_epi8(0x20);
    while (end - p >= 16) {
        __m128i v = _mm_loadu_si128((const __m128i *)(const void *)p);
        /* Signed: bytes >= 0x80 are negative, "< 0x20" catches them too. */
        __m128i m = _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(v, quote), _mm_cmpeq_epi8(v, bslash)),
                                 _mm_cmplt_epi8(v, space));
        unsigned mask = (unsigned)_mm_movemask_epi8(m);
        if (mask) return p + __builtin_ctz(mask);
        p += 16;
    }
#else
    const uint64_t ones = 0x0101010101010101ULL, highs = 0x8080808080808080ULL;
    while (end - p >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        uint64_t q = w ^ (ones * '"'), b = w ^ (ones * '\\');
        uint64_t hit = ((q - ones) & ~q) | ((b - ones) & ~b) | (w - ones * 0x20) | w;
        if (hit & highs) break;
        p += 8;
    }
#endif
    return p;
}

static int hs_hex4(const unsigned char *p, unsigned *out) {
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        unsigned c = p[i], d;
        if (c >= '0' && c <= '9')
            d = c - '0';
        else if (c >= 'a' && c <= 'f')
            d = c - 'a' + 10;
        else if (c >= 'A' && c <= 'F')
            d = c - 'A' + 10;
        else
            return -1;
        v = v << 4 | d;
    }
    *out = v;
    return 0;
}

/* w->p is just after the opening quote.  Leaves it after the closing one;
 * *out is the raw text between them, *esc whether it has an escape. */
HS_INLINE int hs_string(hs_walk *w, hs_span *out, int *esc) {
    const unsigned char *p = w->p, *end = w->end, *start = p;
    int e = 0;
    for (;;) {
        p = hs_plain_run(p, end);
        if (p >= end) return -1;
        unsigned c = *p;
        if (c == '"') break;
        if (c < 0x20) return -1;
        if (c == '\\') {
            e = 1;
            if (end - p < 2) return -1;
            c = p[1];
            if (c == 'u') {
                unsigned u;
                if (end - p < 6 || hs_hex4(p + 2, &u) < 0) return -1;
                p += 6;
                if (u == 0) return -1; /* jansson: "\u0000 is not allowed" */
                if (u >= 0xDC00 && u <= 0xDFFF) return -1;
                if (u >= 0xD800) {
                    if (u > 0xDBFF) continue;
                    unsigned lo;
                    if (end - p < 6 || p[0] != '\\' || p[1] != 'u' || hs_hex4(p + 2, &lo) < 0 ||
                        lo < 0xDC00 || lo > 0xDFFF)
                        return -1;
                    p += 6;
                }
                continue;
            }
            if (!(c == '"' || c == '\\' || c == '/' || c == 'b' || c == 'f' || c == 'n' ||
                  c == 'r' || c == 't'))
                return -1;
            p += 2;
            continue;
        }
        if (c < 0x80) {
            p++;
            continue;
        }
        /* UTF-8, shortest form, no surrogates, at most U+10FFFF (the
         * closing quote must still follow). */
        size_t n = http_utf8_len(p, (size_t)(end - p));
        if (n == 0 || (size_t)(end - p) <= n) return -1;
        p += n;
    }
    out->p = (const char *)start;
    out->n = (size_t)(p - start);
    *esc = e;
    w->p = p + 1;
    return 0;
}

static size_t hs_digits(const unsigned char **pp, const unsigned char *end) {
    const unsigned char *p = *pp;
    while (p < end && *p >= '0' && *p <= '9')
        p++;
    size_t n = (size_t)(p - *pp);
    *pp = p;
    return n;
}

/* A number by the grammar, as jansson reads it.  *kind is HS_INT or
 * HS_REAL; -1 also for an integer beyond 64 bits or a real whose
 * magnitude could reach 1e308 (jansson refuses both on overflow). */
static int hs_number(hs_walk *w, hs_span *out, int *kind) {
    const unsigned char *p = w->p, *end = w->end, *start = p;
    if (p < end && *p == '-') p++;
    size_t ndig;
    if (p < end && *p == '0') {
        p++;
        ndig = 1;
    } else {
        ndig = hs_digits(&p, end);
        if (ndig == 0) return -1;
    }
    int real = 0;
    if (p < end && *p == '.') {
        p++;
        real = 1;
        if (hs_digits(&p, end) == 0) return -1;
    }
    long exp = 0;
    if (p < end && (*p == 'e' || *p == 'E')) {
        p++;
        real = 1;
        int neg = 0;
        if (p < end && (*p == '+' || *p == '-')) neg = *p++ == '-';
        const unsigned char *e = p;
        size_t nexp = hs_digits(&p, end);
        if (nexp == 0) return -1;
        /* Leading zeros say nothing about the exponent's size: 1e-0000001
         * is 0.1, and 1 with 400 zeros e-0000001 overflows. */
        while (nexp > 1 && *e == '0') {
            e++;
            nexp--;
        }
        if (nexp > 6) {
            if (!neg) return -1;
            exp = -1000000; /* underflows to 0 or a denormal: jansson takes it */
        } else {
            for (size_t i = 0; i < nexp; i++)
                exp = exp * 10 + (e[i] - '0');
            if (neg) exp = -exp;
        }
    }
    if (real) {
        if ((long)ndig + exp > 307) return -1;
    } else if (ndig > 18) {
        return -1;
    }
    out->p = (const char *)start;
    out->n = (size_t)(p - start);
    *kind = real ? HS_REAL : HS_INT;
    w->p = p;
    return 0;
}

/* The value of an integer hs_number accepted (at most 18 digits). */
static json_int_t hs_int_value(hs_span s) {
    size_t i = 0;
    int neg = s.p[0] == '-';
    i += (size_t)neg;
    json_int_t v = 0;
    for (; i < s.n; i++)
        v = v * 10 + (s.p[i] - '0');
    return neg ? -v : v;
}

/* The value of a real, as jansson's strtod reads it; -1 when its text is
 * too long for the buffer. */
static int hs_real_value(hs_span s, double *out) {
    char buf[HS_NUM_MAX + 1];
    if (s.n > HS_NUM_MAX) return -1;
    memcpy(buf, s.p, s.n);
    buf[s.n] = '\0';
    *out = strtod(buf, NULL);
    return 0;
}

static size_t hs_code_points(const char *s, size_t n) {
    size_t count = 0;
    for (size_t i = 0; i < n; i++)
        count += ((unsigned char)s[i] & 0xC0) != 0x80;
    return count;
}

/* -------------------------------------------------------------- checks */

static int hs_check_string(const hs_node *n, const char *s, size_t len, int esc) {
    if (!(n->types & HS_T_STRING)) return -1;
    if (!n->has_enum && !n->has_min && !n->has_max && n->format == HS_FMT_NONE) return 0;
    if (esc) return -1; /* its content would need decoding first */
    if (n->has_enum) {
        size_t i;
        for (i = 0; i < n->nenum; i++) {
            const hs_enum *e = &n->enums[i];
            if (e->kind == HS_STRING && e->len == len && hs_eq(e->s, s, len)) break;
        }
        if (i == n->nenum) return -1;
    }
    if (n->has_min || n->has_max) {
        size_t cps = hs_code_points(s, len);
        if (n->has_min && cps < n->min_len) return -1;
        if (n->has_max && cps > n->max_len) return -1;
    }
    if (n->format == HS_FMT_UUID && !http_is_uuid(s, len)) return -1;
    if (n->format == HS_FMT_DATE_TIME && !http_is_date_time(s, len)) return -1;
    return 0;
}

static int hs_check_number(const hs_node *n, hs_span s, int kind) {
    double d = 0;
    int have_d = 0;
    if (kind == HS_INT) {
        if (!(n->types & (HS_T_INTEGER | HS_T_NUMBER))) return -1;
    } else if (!(n->types & HS_T_NUMBER)) {
        /* "integer" takes a real without a fractional part (1.0, 1e2). */
        if (!(n->types & HS_T_INTEGER) || hs_real_value(s, &d) < 0) return -1;
        have_d = 1;
        if (!isfinite(d) || floor(d) != d) return -1;
    }
    if (!n->has_enum) return 0;
    json_int_t iv = 0;
    if (kind == HS_INT) {
        iv = hs_int_value(s);
    } else if (!have_d && hs_real_value(s, &d) < 0) {
        return -1;
    }
    for (size_t i = 0; i < n->nenum; i++) {
        const hs_enum *e = &n->enums[i];
        if (e->kind == HS_INT && kind == HS_INT && e->i == iv) return 0;
        if (e->kind == HS_REAL && kind == HS_REAL && e->d == d) return 0;
    }
    return -1;
}

static int hs_check_literal(const hs_node *n, int kind) {
    if (!(n->types & (kind == HS_NULL ? HS_T_NULL : HS_T_BOOLEAN))) return -1;
    if (!n->has_enum) return 0;
    for (size_t i = 0; i < n->nenum; i++)
        if (n->enums[i].kind == kind) return 0;
    return -1;
}

/* ---------------------------------------------------------------- walk */

static int hs_value(hs_walk *w, const hs_node *n);

static int hs_literal(hs_walk *w, const char *lit, size_t len) {
    if ((size_t)(w->end - w->p) < len || memcmp(w->p, lit, len) != 0) return -1;
    w->p += len;
    return 0;
}

/* w->p is at '{'. */
static int hs_object(hs_walk *w, const hs_node *n) {
    if (n && (!(n->types & HS_T_OBJECT) || n->has_enum || n->object_slow)) return -1;
    if (++w->depth > HS_MAX_DEPTH) return -1;
    int root = w->depth == 1;
    size_t base = w->nkeys;
    uint64_t seen = 0;
    w->p++;
    hs_ws(w);
    if (w->p < w->end && *w->p == '}') {
        w->p++;
    } else {
        for (;;) {
            if (w->p >= w->end || *w->p != '"') return -1;
            w->p++;
            hs_span k;
            int esc;
            if (hs_string(w, &k, &esc) < 0 || esc) return -1;
            hs_ws(w);
            if (w->p >= w->end || *w->p != ':') return -1;
            w->p++;
            hs_ws(w);
            const hs_node *sub = NULL;
            int known = n && n->nnames ? hs_name_find(n, k.p, k.n) : -1;
            if (known >= 0) {
                uint64_t bit = (uint64_t)1 << known;
                if (seen & bit) return -1; /* a duplicate */
                seen |= bit;
                sub = n->names[known].schema;
            } else {
                for (size_t i = base; i < w->nkeys; i++)
                    if (w->keys[i].n == k.n && hs_eq(w->keys[i].p, k.p, k.n)) return -1;
                if (w->nkeys == HS_MAX_KEYS) return -1;
                w->keys[w->nkeys++] = k;
            }
            if (n && sub == NULL) {
                if (n->extra == HS_EXTRA_NONE) return -1;
                if (n->extra == HS_EXTRA_SCHEMA) sub = n->extra_schema;
            }
            if (root) {
                if (k.n == 7 && hs_eq(k.p, "eventId", 7)) w->id_at = w->p;
                if (k.n == w->tok0_len && hs_eq(k.p, w->tok0, k.n)) w->key_at = w->p;
            }
            if (hs_value(w, sub) < 0) return -1;
            hs_ws(w);
            if (w->p >= w->end) return -1;
            if (*w->p == '}') {
                w->p++;
                break;
            }
            if (*w->p != ',') return -1;
            w->p++;
            hs_ws(w);
        }
    }
    w->nkeys = base;
    w->depth--;
    if (root) {
        w->root_seen = seen; /* required is checked once eventId is settled */
        return 0;
    }
    return n && (seen & n->required) != n->required ? -1 : 0;
}

/* w->p is at '['. */
static int hs_array(hs_walk *w, const hs_node *n) {
    if (n && (!(n->types & HS_T_ARRAY) || n->has_enum)) return -1;
    if (++w->depth > HS_MAX_DEPTH) return -1;
    const hs_node *items = n ? n->items : NULL;
    w->p++;
    hs_ws(w);
    if (w->p < w->end && *w->p == ']') {
        w->p++;
    } else {
        for (;;) {
            if (hs_value(w, items) < 0) return -1;
            hs_ws(w);
            if (w->p >= w->end) return -1;
            if (*w->p == ']') {
                w->p++;
                break;
            }
            if (*w->p != ',') return -1;
            w->p++;
            hs_ws(w);
        }
    }
    w->depth--;
    return 0;
}

/* One value at w->p (no whitespace before it), checked against n (NULL:
 * anything goes, but it must still be JSON jansson takes). */
static int hs_value(hs_walk *w, const hs_node *n) {
    if (w->p >= w->end) return -1;
    hs_span s;
    int kind, esc;
    switch (*w->p) {
    case '{':
        return hs_object(w, n);
    case '[':
        return hs_array(w, n);
    case '"':
        w->p++;
        if (hs_string(w, &s, &esc) < 0) return -1;
        return n ? hs_check_string(n, s.p, s.n, esc) : 0;
    case 't':
        if (hs_literal(w, "true", 4) < 0) return -1;
        return n ? hs_check_literal(n, HS_TRUE) : 0;
    case 'f':
        if (hs_literal(w, "false", 5) < 0) return -1;
        return n ? hs_check_literal(n, HS_FALSE) : 0;
    case 'n':
        if (hs_literal(w, "null", 4) < 0) return -1;
        return n ? hs_check_literal(n, HS_NULL) : 0;
    default:
        if (*w->p != '-' && (*w->p < '0' || *w->p > '9')) return -1;
        if (hs_number(w, &s, &kind) < 0) return -1;
        return n ? hs_check_number(n, s, kind) : 0;
    }
}

/* --------------------------------------------------------- key pointer
 * Runs on text the walk accepted, so it only follows structure. */

static const char *hs_skip_string(const char *p, const char *end) {
    while (p < end) {
        if (*p == '"') return p + 1;
        p += *p == '\\' ? 2 : 1;
    }
    return NULL;
}

static const char *hs_skip_ws(const char *p, const char *end) {
    while (p < end && (*p == ' ' || *p == '\n' || *p == '\t' || *p == '\r'))
        p++;
    return p;
}

static const char *hs_skip_value(const char *p, const char *end) {
    if (p >= end) return NULL;
    if (*p == '"') return hs_skip_string(p + 1, end);
    if (*p != '{' && *p != '[') {
        while (p < end && *p != ',' && *p != '}' && *p != ']' && *p != ' ' && *p != '\n' &&
               *p != '\t' && *p != '\r')
            p++;
        return p;
    }
    size_t depth = 0;
    while (p < end) {
        char c = *p;
        if (c == '"') {
            p = hs_skip_string(p + 1, end);
            if (p == NULL) return NULL;
            continue;
        }
        if (c == '{' || c == '[') {
            depth++;
        } else if (c == '}' || c == ']') {
            if (--depth == 0) return p + 1;
        }
        p++;
    }
    return NULL;
}

/* The value of member / element tok of the container at p, or NULL. */
static const char *hs_descend(const char *p, const char *end, const char *tok, size_t len) {
    if (*p == '{') {
        p = hs_skip_ws(p + 1, end);
        while (p && p < end && *p == '"') {
            const char *k = p + 1;
            const char *ke = hs_skip_string(k, end);
            if (ke == NULL) return NULL;
            p = hs_skip_ws(ke, end);
            p = hs_skip_ws(p + 1, end); /* the ':' */
            /* Member names here have no escapes (the walk refused them). */
            if ((size_t)(ke - 1 - k) == len && memcmp(k, tok, len) == 0) return p;
            p = hs_skip_value(p, end);
            if (p == NULL) return NULL;
            p = hs_skip_ws(p, end);
            if (p < end && *p == ',') p = hs_skip_ws(p + 1, end);
        }
        return NULL;
    }
    if (*p == '[') {
        size_t idx;
        if (http_pointer_index(tok, len, &idx) < 0) return NULL;
        p = hs_skip_ws(p + 1, end);
        if (p < end && *p == ']') return NULL;
        for (size_t i = 0; i < idx; i++) {
            p = hs_skip_value(p, end);
            if (p == NULL) return NULL;
            p = hs_skip_ws(p, end);
            if (p >= end || *p != ',') return NULL;
            p = hs_skip_ws(p + 1, end);
        }
        return p;
    }
    return NULL;
}

/* The Kafka key at `at` (a value's first byte): a string as is (escapes:
 * -1), a number as its text. */
static int hs_key_value(const char *at, const char *end, http_verdict *v) {
    hs_walk w = {.p = (const unsigned char *)at, .end = (const unsigned char *)end};
    hs_span s;
    int esc, kind;
    if (*at == '"') {
        w.p++;
        if (hs_string(&w, &s, &esc) < 0 || esc || s.n == 0) return -1;
        v->key = s.p;
        v->keylen = s.n;
        return 0;
    }
    if (*at != '-' && (*at < '0' || *at > '9')) return -1;
    if (hs_number(&w, &s, &kind) < 0) return -1;
    if (kind == HS_INT) {
        /* "%lld" of its value, without snprintf. */
        json_int_t iv = hs_int_value(s);
        char tmp[24];
        size_t n = 0;
        unsigned long long u = iv < 0 ? 0ULL - (unsigned long long)iv : (unsigned long long)iv;
        do {
            tmp[n++] = (char)('0' + u % 10);
            u /= 10;
        } while (u);
        size_t k = 0;
        if (iv < 0) v->num_buf[k++] = '-';
        while (n)
            v->num_buf[k++] = tmp[--n];
        v->num_buf[k] = '\0';
        v->key = v->num_buf;
        v->keylen = k;
        return 0;
    }
    double d;
    if (hs_real_value(s, &d) < 0) return -1;
    int n = snprintf(v->num_buf, sizeof(v->num_buf), "%.17g", d);
    if (n <= 0 || (size_t)n >= sizeof(v->num_buf)) return -1;
    v->key = v->num_buf;
    v->keylen = (size_t)n;
    return 0;
}

/* ---------------------------------------------------------------- event */

int http_event_check_fast(const http_cschema *cs, const http_pointer *key, const char *text,
                          size_t len, http_id_fn gen, void *opaque, http_verdict *v) {
    v->assigned = 0;
    if (cs == NULL || key->ntokens == 0) return -1;
    const hs_node *root = cs->root;
    hs_walk w;
    w.p = (const unsigned char *)text;
    w.end = w.p + len;
    w.depth = 0;
    w.nkeys = 0;
    w.tok0 = key->tokens[0];
    w.tok0_len = key->lens[0];
    w.id_at = w.key_at = NULL;
    w.root_seen = 0;
    hs_ws(&w);
    if (w.p >= w.end || *w.p != '{') return -1;
    if (hs_object(&w, root) < 0) return -1;
    hs_ws(&w);
    if (w.p != w.end) return -1;

    /* eventId: the client's (a string of 1 to HTTP_EVENT_ID_MAX bytes), or
     * one assigned now and checked as the member the reference inserts. */
    uint64_t seen = w.root_seen;
    if (w.id_at) {
        hs_walk iw = {.p = w.id_at + 1, .end = w.end};
        hs_span s;
        int esc;
        if (*w.id_at != '"' || hs_string(&iw, &s, &esc) < 0 || esc || s.n == 0 ||
            s.n > HTTP_EVENT_ID_MAX)
            return -1;
        v->event_id = s.p;
        v->event_id_len = s.n;
        v->assigned = 0;
    } else {
        if (gen(opaque, v->id_buf) < 0) return -1;
        v->assigned = 1; /* from here on, also when returning -1 */
        int known = hs_name_find(root, "eventId", 7);
        const hs_node *sub = NULL;
        if (known >= 0) {
            seen |= (uint64_t)1 << known;
            sub = root->names[known].schema;
        }
        if (sub == NULL) {
            if (root->extra == HS_EXTRA_NONE) return -1;
            if (root->extra == HS_EXTRA_SCHEMA) sub = root->extra_schema;
        }
        if (sub && hs_check_string(sub, v->id_buf, HTTP_UUID_LEN, 0) < 0) return -1;
        v->event_id = v->id_buf;
        v->event_id_len = HTTP_UUID_LEN;
    }
    if ((seen & root->required) != root->required) return -1;

    /* The key. */
    const char *end = (const char *)w.end;
    if (v->assigned && w.tok0_len == 7 && memcmp(w.tok0, "eventId", 7) == 0) {
        if (key->ntokens != 1) return -1;
        v->key = v->id_buf;
        v->keylen = HTTP_UUID_LEN;
    } else {
        const char *at = (const char *)w.key_at;
        for (size_t i = 1; at && i < key->ntokens; i++)
            at = hs_descend(at, end, key->tokens[i], key->lens[i]);
        if (at == NULL || at >= end || hs_key_value(at, end, v) < 0) return -1;
    }
    v->status = 0;
    v->field_null = 0;
    v->field = NULL;
    v->error[0] = '\0';
    v->fast = 1;
    v->doc = NULL;
    return 0;
}
