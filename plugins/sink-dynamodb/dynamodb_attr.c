/*
 * sink-dynamodb — rendered JSON to DynamoDB AttributeValues (see
 * dynamodb_attr.h).  A small recursive scanner over JSON text the engine
 * rendered (so already valid); it still checks what it relies on and fails
 * with a message rather than reading past the end.
 */
#include "dynamodb_attr.h"

#include <jansson.h>
#include <stdint.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DDB_MAX_DEPTH 32 /* DynamoDB allows 32 levels of nesting */

/* ------------------------------------------------------------------ types */

static ddb_type ddb_type_from_name(const char *s) {
    static const struct {
        const char *name;
        ddb_type type;
    } names[] = {{"S", DDB_T_S}, {"N", DDB_T_N}, {"BOOL", DDB_T_BOOL}, {"NULL", DDB_T_NULL},
                 {"M", DDB_T_M}, {"L", DDB_T_L}, {"SS", DDB_T_SS},     {"NS", DDB_T_NS}};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (strcmp(s, names[i].name) == 0) return names[i].type;
    return DDB_T_AUTO;
}

int ddb_types_parse(const char *json, ddb_types *out, char *errbuf, size_t errlen) {
    *out = (ddb_types){0};
    if (json == NULL) return 0;
    json_error_t jerr;
    json_t *obj = json_loads(json, JSON_DECODE_ANY, &jerr);
    if (!json_is_object(obj)) {
        snprintf(errbuf, errlen, "types: must be an object of attribute path -> type");
        json_decref(obj);
        return -1;
    }
    size_t n = json_object_size(obj);
    out->rules = calloc(n ? n : 1, sizeof(*out->rules));
    if (out->rules == NULL) {
        json_decref(obj);
        snprintf(errbuf, errlen, "types: out of memory");
        return -1;
    }
    const char *k;
    json_t *v;
    json_object_foreach(obj, k, v) {
        ddb_type t = json_is_string(v) ? ddb_type_from_name(json_string_value(v)) : DDB_T_AUTO;
        if (t == DDB_T_AUTO) {
            snprintf(errbuf, errlen, "types.%s: must be one of S, N, BOOL, NULL, M, L, SS, NS", k);
            json_decref(obj);
            ddb_types_free(out);
            return -1;
        }
        out->rules[out->n].path = strdup(k);
        out->rules[out->n].type = t;
        if (out->rules[out->n++].path == NULL) {
            json_decref(obj);
            ddb_types_free(out);
            snprintf(errbuf, errlen, "types: out of memory");
            return -1;
        }
    }
    json_decref(obj);
    return 0;
}

void ddb_types_free(ddb_types *t) {
    for (size_t i = 0; i < t->n; i++)
        free(t->rules[i].path);
    free(t->rules);
    *t = (ddb_types){0};
}

static ddb_type ddb_types_find(const ddb_types *t, const char *path) {
    if (t == NULL) return DDB_T_AUTO;
    for (size_t i = 0; i < t->n; i++)
        if (strcmp(t->rules[i].path, path) == 0) return t->rules[i].type;
    return DDB_T_AUTO;
}

/* ---------------------------------------------------------------- scanner */

typedef struct ddb_seg {
    const char *p;
    size_t n;
} ddb_seg;

typedef struct ddb_scan {
    const char *s;
    size_t len;
    size_t pos;
    const ddb_types *types; /* NULL when there are no rules */
    pbuf *out;
    ddb_member_cb top_cb; /* each top-level member of ddb_attr_map, or NULL */
    void *top_opaque;
    /* The current value's path as segments (member names, "[]"), joined
     * into path only when a `types` rule or an error needs the text. */
    ddb_seg seg[DDB_MAX_DEPTH + 3];
    size_t nseg;
    char path[512];
    char *errbuf;
    size_t errlen;
} ddb_scan;

/* Joins the segments into sc->path ("a.b", "tags[]"); returns it. */
static const char *ddb_path(ddb_scan *sc) {
    size_t len = 0, room = sizeof(sc->path) - 1;
    for (size_t i = 0; i < sc->nseg; i++) {
        const ddb_seg *g = &sc->seg[i];
        if (len && g->n && g->p[0] != '[' && len < room) sc->path[len++] = '.';
        size_t n = g->n < room - len ? g->n : room - len;
        memcpy(sc->path + len, g->p, n);
        len += n;
    }
    sc->path[len] = '\0';
    return sc->path;
}

static void ddb_ws(ddb_scan *sc) {
    while (sc->pos < sc->len && (sc->s[sc->pos] == ' ' || sc->s[sc->pos] == '\t' ||
                                 sc->s[sc->pos] == '\n' || sc->s[sc->pos] == '\r'))
        sc->pos++;
}

static int ddb_fail(ddb_scan *sc, const char *what) {
    const char *path = ddb_path(sc);
    snprintf(sc->errbuf, sc->errlen, "%s%s%s at offset %zu", what, path[0] ? " at " : "", path,
             sc->pos);
    return -1;
}

/* Scans the string token at pos; sets *end just past the closing quote.
 * The closing quote is the first '"' after an even run of backslashes.
 * The text is what the engine rendered: short strings are the rule, so
 * the candidates ('"' or '\\') are found 16 bytes at a time inline (SSE2)
 * or byte by byte, without a call. */
static int ddb_string_end(ddb_scan *sc, size_t *end) {
    const char *s = sc->s;
    size_t i = sc->pos + 1, n = sc->len;
    for (;;) {
#if defined(__SSE2__)
        const __m128i quote = _mm_set1_epi8('"'), bslash = _mm_set1_epi8('\\');
        while (n - i >= 16) {
            __m128i v = _mm_loadu_si128((const __m128i *)(const void *)(s + i));
            unsigned mask = (unsigned)_mm_movemask_epi8(
                _mm_or_si128(_mm_cmpeq_epi8(v, quote), _mm_cmpeq_epi8(v, bslash)));
            if (mask) {
                i += (size_t)__builtin_ctz(mask);
                break;
            }
            i += 16;
        }
#endif
        while (i < n && s[i] != '"' && s[i] != '\\')
            i++;
        if (i >= n) return ddb_fail(sc, "unterminated string");
        if (s[i] == '"') {
            *end = i + 1;
            return 0;
        }
        i += 2; /* a backslash and the byte it escapes */
        if (i > n) return ddb_fail(sc, "unterminated string");
    }
}

static int ddb_number_end(ddb_scan *sc, size_t *end) {
    size_t i = sc->pos;
    while (i < sc->len && strchr("0123456789+-.eE", sc->s[i]) != NULL)
        i++;
    if (i == sc->pos) return ddb_fail(sc, "not a JSON value");
    *end = i;
    return 0;
}

/* Skips any value; sets *end past it. */
static int ddb_skip(ddb_scan *sc, size_t *end) {
    ddb_ws(sc);
    if (sc->pos >= sc->len) return ddb_fail(sc, "unexpected end of JSON");
    char c = sc->s[sc->pos];
    if (c == '"') return ddb_string_end(sc, end);
    if (c == '{' || c == '[') {
        int depth = 0;
        size_t i = sc->pos;
        for (; i < sc->len; i++) {
            char d = sc->s[i];
            if (d == '"') {
                size_t save = sc->pos, e;
                sc->pos = i;
                if (ddb_string_end(sc, &e) < 0) return -1;
                sc->pos = save;
                i = e - 1;
            } else if (d == '{' || d == '[') {
                depth++;
            } else if (d == '}' || d == ']') {
                if (--depth == 0) break;
            }
        }
        if (i >= sc->len) return ddb_fail(sc, "unterminated object or array");
        *end = i + 1;
        return 0;
    }
    if (sc->len - sc->pos >= 4 && memcmp(sc->s + sc->pos, "true", 4) == 0) {
        *end = sc->pos + 4;
        return 0;
    }
    if (sc->len - sc->pos >= 5 && memcmp(sc->s + sc->pos, "false", 5) == 0) {
        *end = sc->pos + 5;
        return 0;
    }
    if (sc->len - sc->pos >= 4 && memcmp(sc->s + sc->pos, "null", 4) == 0) {
        *end = sc->pos + 4;
        return 0;
    }
    return ddb_number_end(sc, end);
}

/* Appends n bytes: in place when they fit (the common case, once the
 * reused output buffer has grown), through pbuf_append otherwise. */
static inline int ddb_put(ddb_scan *sc, const char *p, size_t n) {
    pbuf *b = sc->out;
    if (b->cap - b->len > n) {
        memcpy(b->data + b->len, p, n);
        b->len += n;
        b->data[b->len] = '\0';
        return 0;
    }
    if (pbuf_append(b, p, n) < 0) {
        snprintf(sc->errbuf, sc->errlen, "out of memory");
        return -1;
    }
    return 0;
}
#define DDB_PUTS(sc, s) ddb_put((sc), (s), strlen(s))

/* Appends a, b and c (a token between its wrapping) with one room check. */
static inline int ddb_put3(ddb_scan *sc, const char *a, size_t an, const char *b, size_t bn,
                           const char *c, size_t cn) {
    pbuf *o = sc->out;
    size_t n = an + bn + cn;
    if (o->cap - o->len <= n && pbuf_reserve(o, n) < 0) {
        snprintf(sc->errbuf, sc->errlen, "out of memory");
        return -1;
    }
    char *w = o->data + o->len;
    memcpy(w, a, an);
    memcpy(w + an, b, bn);
    memcpy(w + an + bn, c, cn);
    o->len += n;
    o->data[o->len] = '\0';
    return 0;
}

/* Pushes a path segment (a member name without quotes, or "[]"); returns
 * the old depth to restore.  The depth is bounded by DDB_MAX_DEPTH, checked
 * before any push. */
static size_t ddb_path_push(ddb_scan *sc, const char *seg, size_t n) {
    size_t old = sc->nseg;
    if (sc->nseg < sizeof(sc->seg) / sizeof(sc->seg[0])) {
        sc->seg[sc->nseg].p = seg;
        sc->seg[sc->nseg].n = n;
        sc->nseg++;
    }
    return old;
}

static void ddb_path_pop(ddb_scan *sc, size_t old) {
    sc->nseg = old;
}

static int ddb_value(ddb_scan *sc, int depth);

/* A string token's content is a valid DynamoDB number when it is plain JSON
 * number text (no escapes). */
static int ddb_numeric_text(const char *p, size_t n) {
    if (n == 0) return 0;
    for (size_t i = 0; i < n; i++)
        if (strchr("0123456789+-.eE", p[i]) == NULL) return 0;
    return 1;
}

/* An array as SS or NS: every element a string (SS) or a number or numeric
 * string (NS). */
static int ddb_set(ddb_scan *sc, ddb_type t) {
    if (DDB_PUTS(sc, t == DDB_T_SS ? "{\"SS\":[" : "{\"NS\":[") < 0) return -1;
    sc->pos++; /* '[' */
    size_t n = 0;
    for (;;) {
        ddb_ws(sc);
        if (sc->pos < sc->len && sc->s[sc->pos] == ']') {
            sc->pos++;
            break;
        }
        if (n > 0) {
            if (sc->s[sc->pos] != ',') return ddb_fail(sc, "expected ',' in array");
            sc->pos++;
            ddb_ws(sc);
        }
        if (n > 0 && DDB_PUTS(sc, ",") < 0) return -1;
        size_t end;
        char c = sc->pos < sc->len ? sc->s[sc->pos] : 0;
        if (c == '"') {
            if (ddb_string_end(sc, &end) < 0) return -1;
            if (t == DDB_T_NS && !ddb_numeric_text(sc->s + sc->pos + 1, end - sc->pos - 2))
                return ddb_fail(sc, "NS element is not a number");
            if (ddb_put(sc, sc->s + sc->pos, end - sc->pos) < 0) return -1;
        } else if (t == DDB_T_NS && ((c >= '0' && c <= '9') || c == '-')) {
            if (ddb_number_end(sc, &end) < 0) return -1;
            if (DDB_PUTS(sc, "\"") < 0 || ddb_put(sc, sc->s + sc->pos, end - sc->pos) < 0 ||
                DDB_PUTS(sc, "\"") < 0)
                return -1;
        } else {
            return ddb_fail(sc, t == DDB_T_SS ? "SS element is not a string"
                                              : "NS element is not a number");
        }
        sc->pos = end;
        n++;
    }
    if (n == 0) return ddb_fail(sc, "empty set (DynamoDB has no empty SS/NS)");
    return DDB_PUTS(sc, "]}");
}

/* An object's members as name: AttributeValue, braces included. */
static int ddb_members(ddb_scan *sc, int depth, const char *extra) {
    if (DDB_PUTS(sc, "{") < 0) return -1;
    sc->pos++; /* '{' */
    size_t n = 0;
    for (;;) {
        ddb_ws(sc);
        if (sc->pos < sc->len && sc->s[sc->pos] == '}') {
            sc->pos++;
            break;
        }
        if (n > 0) {
            if (sc->pos >= sc->len || sc->s[sc->pos] != ',')
                return ddb_fail(sc, "expected ',' in object");
            sc->pos++;
            ddb_ws(sc);
        }
        if (sc->pos >= sc->len || sc->s[sc->pos] != '"')
            return ddb_fail(sc, "expected a member name");
        size_t end;
        if (ddb_string_end(sc, &end) < 0) return -1;
        const char *name = sc->s + sc->pos;
        size_t name_len = end - sc->pos;
        if (ddb_put3(sc, ",", n > 0, name, name_len, ":", 1) < 0) return -1;
        sc->pos = end;
        ddb_ws(sc);
        if (sc->pos >= sc->len || sc->s[sc->pos] != ':') return ddb_fail(sc, "expected ':'");
        sc->pos++;
        size_t old = ddb_path_push(sc, name + 1, name_len - 2);
        ddb_ws(sc);
        size_t vstart = sc->pos;
        int rc = ddb_value(sc, depth + 1);
        ddb_path_pop(sc, old);
        if (rc < 0) return -1;
        if (depth == 0 && sc->top_cb != NULL &&
            (rc = sc->top_cb(sc->top_opaque, name, name_len, sc->s + vstart, sc->pos - vstart)) !=
                0)
            return rc;
        n++;
    }
    if (extra != NULL &&
        ((n > 0 && DDB_PUTS(sc, ",") < 0) || ddb_put(sc, extra, strlen(extra)) < 0))
        return -1;
    return DDB_PUTS(sc, "}");
}

static int ddb_value(ddb_scan *sc, int depth) {
    if (depth > DDB_MAX_DEPTH) return ddb_fail(sc, "nested deeper than 32 levels");
    ddb_ws(sc);
    if (sc->pos >= sc->len) return ddb_fail(sc, "unexpected end of JSON");
    ddb_type want = sc->types ? ddb_types_find(sc->types, ddb_path(sc)) : DDB_T_AUTO;
    char c = sc->s[sc->pos];
    size_t end;
    if (want == DDB_T_SS || want == DDB_T_NS) {
        if (c != '[')
            return ddb_fail(sc, want == DDB_T_SS ? "SS needs an array" : "NS needs an array");
        return ddb_set(sc, want);
    }
    if (want == DDB_T_NULL) {
        if (ddb_skip(sc, &end) < 0) return -1;
        sc->pos = end;
        return DDB_PUTS(sc, "{\"NULL\":true}");
    }
    if (c == '{') {
        if (want != DDB_T_AUTO && want != DDB_T_M) return ddb_fail(sc, "an object cannot be typed");
        if (DDB_PUTS(sc, "{\"M\":") < 0 || ddb_members(sc, depth, NULL) < 0) return -1;
        return DDB_PUTS(sc, "}");
    }
    if (c == '[') {
        if (want != DDB_T_AUTO && want != DDB_T_L) return ddb_fail(sc, "an array cannot be typed");
        if (DDB_PUTS(sc, "{\"L\":[") < 0) return -1;
        sc->pos++;
        size_t old = ddb_path_push(sc, "[]", 2);
        size_t n = 0;
        for (;;) {
            ddb_ws(sc);
            if (sc->pos < sc->len && sc->s[sc->pos] == ']') {
                sc->pos++;
                break;
            }
            if (n > 0) {
                if (sc->pos >= sc->len || sc->s[sc->pos] != ',')
                    return ddb_fail(sc, "expected ',' in array");
                sc->pos++;
                if (DDB_PUTS(sc, ",") < 0) return -1;
            }
            if (ddb_value(sc, depth + 1) < 0) return -1;
            n++;
        }
        ddb_path_pop(sc, old);
        return DDB_PUTS(sc, "]}");
    }
    if (c == '"') {
        if (ddb_string_end(sc, &end) < 0) return -1;
        const char *tok = sc->s + sc->pos;
        size_t n = end - sc->pos;
        sc->pos = end;
        if (want == DDB_T_N) {
            if (!ddb_numeric_text(tok + 1, n - 2)) return ddb_fail(sc, "not a number for type N");
            return DDB_PUTS(sc, "{\"N\":") < 0 || ddb_put(sc, tok, n) < 0 ? -1 : DDB_PUTS(sc, "}");
        }
        if (want == DDB_T_BOOL) {
            if (n == 6 && memcmp(tok, "\"true\"", 6) == 0) return DDB_PUTS(sc, "{\"BOOL\":true}");
            if (n == 7 && memcmp(tok, "\"false\"", 7) == 0) return DDB_PUTS(sc, "{\"BOOL\":false}");
            return ddb_fail(sc, "not a boolean for type BOOL");
        }
        if (want != DDB_T_AUTO && want != DDB_T_S) return ddb_fail(sc, "a string cannot be typed");
        return ddb_put3(sc, "{\"S\":", 5, tok, n, "}", 1);
    }
    if (c == 't' || c == 'f') {
        if (ddb_skip(sc, &end) < 0) return -1;
        int t = c == 't';
        sc->pos = end;
        if (want == DDB_T_S) return DDB_PUTS(sc, t ? "{\"S\":\"true\"}" : "{\"S\":\"false\"}");
        if (want != DDB_T_AUTO && want != DDB_T_BOOL)
            return ddb_fail(sc, "a boolean cannot be typed");
        return DDB_PUTS(sc, t ? "{\"BOOL\":true}" : "{\"BOOL\":false}");
    }
    if (c == 'n') {
        if (ddb_skip(sc, &end) < 0) return -1;
        sc->pos = end;
        return DDB_PUTS(sc, "{\"NULL\":true}");
    }
    if (ddb_number_end(sc, &end) < 0) return -1;
    const char *num = sc->s + sc->pos;
    size_t n = end - sc->pos;
    sc->pos = end;
    if (want != DDB_T_AUTO && want != DDB_T_N && want != DDB_T_S)
        return ddb_fail(sc, "a number cannot be typed");
    return ddb_put3(sc, want == DDB_T_S ? "{\"S\":\"" : "{\"N\":\"", 6, num, n, "\"}", 2);
}

static void ddb_scan_init(ddb_scan *sc, const char *text, size_t len, const char *path,
                          const ddb_types *types, pbuf *out, char *errbuf, size_t errlen) {
    sc->s = text;
    sc->len = len;
    sc->pos = 0;
    sc->types = types && types->n ? types : NULL;
    sc->out = out;
    sc->top_cb = NULL;
    sc->top_opaque = NULL;
    sc->nseg = 0;
    sc->path[0] = '\0';
    sc->errbuf = errbuf;
    sc->errlen = errlen;
    if (path && path[0]) ddb_path_push(sc, path, strlen(path));
}

static int ddb_trailing(ddb_scan *sc) {
    ddb_ws(sc);
    return sc->pos == sc->len ? 0 : ddb_fail(sc, "trailing text after JSON value");
}

int ddb_attr_value(const char *text, size_t len, const char *path, const ddb_types *types,
                   pbuf *out, char *errbuf, size_t errlen) {
    ddb_scan sc;
    ddb_scan_init(&sc, text, len, path, types, out, errbuf, errlen);
    if (ddb_value(&sc, 0) < 0) return -1;
    return ddb_trailing(&sc);
}

int ddb_attr_map(const char *text, size_t len, const ddb_types *types, const char *extra, pbuf *out,
                 ddb_member_cb cb, void *opaque, char *errbuf, size_t errlen) {
    ddb_scan sc;
    ddb_scan_init(&sc, text, len, NULL, types, out, errbuf, errlen);
    sc.top_cb = cb;
    sc.top_opaque = opaque;
    ddb_ws(&sc);
    if (sc.pos >= len || text[sc.pos] != '{') return ddb_fail(&sc, "must render to a JSON object");
    int rc = ddb_members(&sc, 0, extra);
    if (rc != 0) return rc;
    return ddb_trailing(&sc);
}

int ddb_json_members(const char *text, size_t len, ddb_member_cb cb, void *opaque, char *errbuf,
                     size_t errlen) {
    ddb_scan sc;
    ddb_scan_init(&sc, text, len, NULL, NULL, NULL, errbuf, errlen);
    ddb_ws(&sc);
    if (sc.pos >= len || text[sc.pos] != '{') return ddb_fail(&sc, "must render to a JSON object");
    sc.pos++;
    for (size_t n = 0;; n++) {
        ddb_ws(&sc);
        if (sc.pos < len && text[sc.pos] == '}') return 0;
        if (n > 0) {
            if (sc.pos >= len || text[sc.pos] != ',') return ddb_fail(&sc, "expected ','");
            sc.pos++;
            ddb_ws(&sc);
        }
        if (sc.pos >= len || text[sc.pos] != '"') return ddb_fail(&sc, "expected a member name");
        size_t nend, vend;
        if (ddb_string_end(&sc, &nend) < 0) return -1;
        const char *name = text + sc.pos;
        size_t name_len = nend - sc.pos;
        sc.pos = nend;
        ddb_ws(&sc);
        if (sc.pos >= len || text[sc.pos] != ':') return ddb_fail(&sc, "expected ':'");
        sc.pos++;
        ddb_ws(&sc);
        if (ddb_skip(&sc, &vend) < 0) return -1;
        int rc = cb(opaque, name, name_len, text + sc.pos, vend - sc.pos);
        if (rc != 0) return rc;
        sc.pos = vend;
    }
}
