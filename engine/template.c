/*
 * Record templates (see template.h).  A template compiles into a tree of
 * nodes; every subtree without a reference is folded into its compact JSON
 * text at compile time, so rendering appends precomputed text and resolves
 * only the references.  Rendering writes into a caller-owned tbuf and, when
 * the record comes without a parsed tree, finds pointer targets in the raw
 * value text (json_pointer_scan): no allocation once the tbuf has grown.
 *
 * Output escaping works in "levels": level 0 appends bytes as they are,
 * level 1 JSON-escapes them (string content), level 2 escapes twice (the
 * content of a string inside an object that is itself embedded as text in
 * a mixed template string), and so on.
 */
#include "template.h"
#include "jsonscan.h"

#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ------------------------------------------------------------------ tbuf */

void tbuf_reset(tbuf *b) {
    b->len = 0;
    if (b->p) b->p[0] = '\0';
}

void tbuf_free(tbuf *b) {
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}

int tbuf_reserve(tbuf *b, size_t n) {
    if (b->cap > b->len && n < b->cap - b->len) return 0;
    if (n > SIZE_MAX - b->len - 1) return -1;
    size_t need = b->len + n + 1;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < need)
        cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    char *p = realloc(b->p, cap);
    if (!p) return -1;
    b->p = p;
    b->cap = cap;
    return 0;
}

int tbuf_append(tbuf *b, const void *data, size_t n) {
    if (tbuf_reserve(b, n) < 0) return -1;
    if (n) memcpy(b->p + b->len, data, n);
    b->len += n;
    b->p[b->len] = '\0';
    return 0;
}

static void tbuf_truncate(tbuf *b, size_t len) {
    b->len = len;
    if (b->p) b->p[len] = '\0';
}

/* ----------------------------------------------------------- UTF-8, escapes */

/* Length of the valid, shortest-form UTF-8 sequence at u (u < end), or 0. */
static size_t utf8_seq(const unsigned char *u, const unsigned char *end) {
    unsigned c = u[0], cp, min;
    size_t n;
    if (c < 0x80) return 1;
    if (c >= 0xC2 && c <= 0xDF)
        n = 1, min = 0x80, cp = c & 0x1F;
    else if (c >= 0xE0 && c <= 0xEF)
        n = 2, min = 0x800, cp = c & 0x0F;
    else if (c >= 0xF0 && c <= 0xF4)
        n = 3, min = 0x10000, cp = c & 0x07;
    else
        return 0;
    if ((size_t)(end - u) <= n) return 0;
    for (size_t i = 1; i <= n; i++) {
        if ((u[i] & 0xC0) != 0x80) return 0;
        cp = cp << 6 | (u[i] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
    return n + 1;
}

static size_t utf8_encode(unsigned cp, unsigned char *o) {
    if (cp < 0x80) {
        o[0] = (unsigned char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (unsigned char)(0xC0 | cp >> 6);
        o[1] = (unsigned char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (unsigned char)(0xE0 | cp >> 12);
        o[1] = (unsigned char)(0x80 | (cp >> 6 & 0x3F));
        o[2] = (unsigned char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (unsigned char)(0xF0 | cp >> 18);
    o[1] = (unsigned char)(0x80 | (cp >> 12 & 0x3F));
    o[2] = (unsigned char)(0x80 | (cp >> 6 & 0x3F));
    o[3] = (unsigned char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Appends s escaped `level` times (level 0: as is).  Escaping emits valid
 * JSON string content: ", \ and control characters escaped, valid UTF-8 as
 * is, each byte of invalid UTF-8 as U+FFFD. */
static int put_esc(tbuf *b, const void *data, size_t n, int level) {
    if (level == 0) return tbuf_append(b, data, n);
    const unsigned char *u = data, *end = u + n;
    while (u < end) {
        const unsigned char *run = u;
        while (u < end) {
            unsigned c = *u;
            if (c >= 0x20 && c < 0x80 && c != '"' && c != '\\') {
                u++;
            } else if (c >= 0x80) {
                size_t l = utf8_seq(u, end);
                if (!l) break;
                u += l;
            } else {
                break;
            }
        }
        if (u > run && tbuf_append(b, run, (size_t)(u - run)) < 0) return -1;
        if (u >= end) break;
        char e[8];
        size_t el = 2;
        unsigned c = *u++;
        e[0] = '\\';
        switch (c) {
        case '"':
            e[1] = '"';
            break;
        case '\\':
            e[1] = '\\';
            break;
        case '\b':
            e[1] = 'b';
            break;
        case '\f':
            e[1] = 'f';
            break;
        case '\n':
            e[1] = 'n';
            break;
        case '\r':
            e[1] = 'r';
            break;
        case '\t':
            e[1] = 't';
            break;
        default:
            if (c < 0x20) {
                el = (size_t)snprintf(e, sizeof(e), "\\u%04x", c);
            } else { /* a byte of invalid UTF-8 */
                memcpy(e, "\xEF\xBF\xBD", 3);
                el = 3;
            }
        }
        if (put_esc(b, e, el, level - 1) < 0) return -1;
    }
    return 0;
}

static int hex4(const unsigned char *p, const unsigned char *end, unsigned *out) {
    if (end - p < 4) return -1;
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

/* Decodes the escape after a backslash at *pp into UTF-8 bytes in o;
 * advances *pp.  Malformed escapes decode as U+FFFD. */
static size_t decode_escape(const unsigned char **pp, const unsigned char *end, unsigned char *o) {
    const unsigned char *p = *pp;
    if (p >= end) return utf8_encode(0xFFFD, o);
    unsigned c = *p++, cp;
    switch (c) {
    case 'b':
        cp = '\b';
        break;
    case 'f':
        cp = '\f';
        break;
    case 'n':
        cp = '\n';
        break;
    case 'r':
        cp = '\r';
        break;
    case 't':
        cp = '\t';
        break;
    case 'u':
        if (hex4(p, end, &cp) < 0) {
            cp = 0xFFFD;
            break;
        }
        p += 4;
        if (cp >= 0xD800 && cp <= 0xDBFF) {
            unsigned lo;
            if (end - p >= 6 && p[0] == '\\' && p[1] == 'u' && hex4(p + 2, end, &lo) == 0 &&
                lo >= 0xDC00 && lo <= 0xDFFF) {
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                p += 6;
            } else {
                cp = 0xFFFD;
            }
        } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
            cp = 0xFFFD;
        }
        break;
    default:
        cp = c; /* " \ / */
    }
    *pp = p;
    return utf8_encode(cp, o);
}

/* Appends the decoded content of a JSON string (s..s+n, between the quotes),
 * escaped `level` times. */
static int put_json_string_content(tbuf *b, const char *s, size_t n, int level) {
    const unsigned char *p = (const unsigned char *)s, *end = p + n;
    while (p < end) {
        const unsigned char *bs = memchr(p, '\\', (size_t)(end - p));
        const unsigned char *stop = bs ? bs : end;
        if (stop > p && put_esc(b, p, (size_t)(stop - p), level) < 0) return -1;
        if (!bs) break;
        p = bs + 1;
        unsigned char o[4];
        size_t on = decode_escape(&p, end, o);
        if (put_esc(b, o, on, level) < 0) return -1;
    }
    return 0;
}

/* ------------------------------------------------ raw JSON scanning (RFC 8259)
 * The grammar of jsonscan.c: strict, bounds-checked, no allocation. */

typedef struct scan {
    const unsigned char *p, *end;
    int valid; /* the text passed json_validate: skip structure only */
} scan;

/* Thin adapters over jsonscan.c's scanner, so both rooms read one grammar. */
static void scan_ws(scan *s) {
    if (s->p < s->end && s->p[0] > ' ') return; /* no whitespace here: the common case */
    s->p = (const unsigned char *)json_skip_ws((const char *)s->p, (const char *)s->end);
}

/* After the opening quote; leaves p after the closing quote. */
static int scan_string(scan *s) {
    const char *q = s->valid ? json_skip_string_valid((const char *)s->p, (const char *)s->end)
                             : json_skip_string((const char *)s->p, (const char *)s->end);
    if (!q) return -1;
    s->p = (const unsigned char *)q;
    return 0;
}

/* Scans exactly one value (leading whitespace skipped); p ends after it. */
static int scan_value(scan *s) {
    const char *q = s->valid ? json_skip_value_valid((const char *)s->p, (const char *)s->end)
                             : json_skip_value((const char *)s->p, (const char *)s->end);
    if (!q) return -1;
    s->p = (const unsigned char *)q;
    return 0;
}

/* Does the raw (escaped) key k equal the pointer token t (~0 ~1 encoded)? */
static int key_eq(const unsigned char *k, size_t kl, const char *t, size_t tl) {
    if (!memchr(k, '\\', kl) && !memchr(t, '~', tl)) return kl == tl && memcmp(k, t, kl) == 0;
    const unsigned char *ke = k + kl;
    const char *te = t + tl;
    unsigned char buf[4];
    size_t bn = 0, bi = 0;
    for (;;) {
        if (bi == bn) {
            if (k >= ke) break;
            if (*k == '\\') {
                k++;
                bn = decode_escape(&k, ke, buf);
            } else {
                buf[0] = *k++;
                bn = 1;
            }
            bi = 0;
        }
        if (t >= te) return 0;
        unsigned char tc;
        if (*t == '~') {
            if (te - t < 2 || (t[1] != '0' && t[1] != '1')) return 0;
            tc = t[1] == '0' ? '~' : '/';
            t += 2;
        } else {
            tc = (unsigned char)*t++;
        }
        if (buf[bi++] != tc) return 0;
    }
    return t == te;
}

/* An RFC 6901 array index: "0" or digits without a leading zero. */
static int parse_index(const char *t, size_t n, size_t *out) {
    if (n == 0 || (n > 1 && t[0] == '0')) return -1;
    size_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (t[i] < '0' || t[i] > '9') return -1;
        if (v > (SIZE_MAX - 9) / 10) return -1;
        v = v * 10 + (size_t)(t[i] - '0');
    }
    *out = v;
    return 0;
}

/* Whether p[0..n) holds c (keys and pointer tokens are short: a plain
 * loop beats a call). */
static int has_byte(const unsigned char *p, size_t n, unsigned char c) {
    for (size_t i = 0; i < n; i++)
        if (p[i] == c) return 1;
    return 0;
}

/* Records the top-level object's members of a validated value. */
static void index_build(template_index *ix, const char *json, size_t len) {
    scan s = {(const unsigned char *)json, (const unsigned char *)json + len, 1};
    ix->value = json;
    ix->state = -1;
    ix->n = 0;
    scan_ws(&s);
    if (s.p >= s.end || *s.p != '{') return;
    s.p++;
    scan_ws(&s);
    if (s.p < s.end && *s.p == '}') {
        ix->state = 1;
        return;
    }
    for (;;) {
        scan_ws(&s);
        if (s.p >= s.end || *s.p != '"' || ix->n == TEMPLATE_INDEX_MAX) return;
        const unsigned char *k = ++s.p;
        if (scan_string(&s) < 0) return;
        size_t klen = (size_t)(s.p - 1 - k);
        scan_ws(&s);
        if (s.p >= s.end || *s.p != ':') return;
        s.p++;
        scan_ws(&s);
        const unsigned char *v = s.p;
        if (scan_value(&s) < 0) return;
        ix->m[ix->n].key = (const char *)k;
        ix->m[ix->n].key_len = klen;
        ix->m[ix->n].key_escaped = has_byte(k, klen, '\\');
        ix->m[ix->n].val = (const char *)v;
        ix->m[ix->n].val_len = (size_t)(s.p - v);
        ix->n++;
        scan_ws(&s);
        if (s.p >= s.end) return;
        if (*s.p == ',') {
            s.p++;
            continue;
        }
        if (*s.p == '}') break;
        return;
    }
    ix->state = 1;
}

static int pointer_scan_n(const char *json, size_t len, const char *ptr, size_t plen,
                          const char **start, size_t *vlen, int valid, template_index *ix) {
    scan s = {(const unsigned char *)json, (const unsigned char *)json + len, valid};
    const char *pp = ptr, *pend = ptr + plen;
    if (plen && *pp != '/') return JSON_POINTER_NOT_FOUND;
    if (ix && valid && plen) {
        if (ix->state == 0 || ix->value != json) index_build(ix, json, len);
        if (ix->state == 1) {
            /* The first token from the index (the last duplicate wins). */
            const char *tok = ++pp;
            while (pp < pend && *pp != '/')
                pp++;
            size_t tlen = (size_t)(pp - tok), i = ix->n;
            /* Byte equality decides unless a key escape or a ~ escape of the
             * token is involved. */
            const int tilde = has_byte((const unsigned char *)tok, tlen, '~');
            for (; i > 0; i--) {
                const char *k = ix->m[i - 1].key;
                size_t kl = ix->m[i - 1].key_len;
                if (!tilde && !ix->m[i - 1].key_escaped) {
                    if (kl == tlen && memcmp(k, tok, kl) == 0) break;
                } else if (key_eq((const unsigned char *)k, kl, tok, tlen)) {
                    break;
                }
            }
            if (i == 0) return JSON_POINTER_NOT_FOUND;
            if (pp == pend) {
                *start = ix->m[i - 1].val;
                *vlen = ix->m[i - 1].val_len;
                return 0;
            }
            s.p = (const unsigned char *)ix->m[i - 1].val;
        }
    }
    scan_ws(&s);
    while (pp < pend) {
        const char *tok = ++pp;
        while (pp < pend && *pp != '/')
            pp++;
        size_t tlen = (size_t)(pp - tok);
        if (s.p >= s.end) return JSON_POINTER_MALFORMED;
        unsigned c = *s.p;
        if (c == '{') {
            const unsigned char *found = NULL;
            s.p++;
            scan_ws(&s);
            if (s.p < s.end && *s.p == '}') return JSON_POINTER_NOT_FOUND;
            for (;;) {
                scan_ws(&s);
                if (s.p >= s.end || *s.p != '"') return JSON_POINTER_MALFORMED;
                const unsigned char *k = ++s.p;
                if (scan_string(&s) < 0) return JSON_POINTER_MALFORMED;
                size_t klen = (size_t)(s.p - 1 - k);
                scan_ws(&s);
                if (s.p >= s.end || *s.p != ':') return JSON_POINTER_MALFORMED;
                s.p++;
                scan_ws(&s);
                const unsigned char *v = s.p;
                if (scan_value(&s) < 0) return JSON_POINTER_MALFORMED;
                if (key_eq(k, klen, tok, tlen)) found = v; /* the last duplicate wins */
                scan_ws(&s);
                if (s.p >= s.end) return JSON_POINTER_MALFORMED;
                if (*s.p == ',') {
                    s.p++;
                    continue;
                }
                if (*s.p == '}') break;
                return JSON_POINTER_MALFORMED;
            }
            if (!found) return JSON_POINTER_NOT_FOUND;
            s.p = found;
        } else if (c == '[') {
            size_t idx;
            if (parse_index(tok, tlen, &idx) < 0) return JSON_POINTER_NOT_FOUND;
            s.p++;
            scan_ws(&s);
            if (s.p < s.end && *s.p == ']') return JSON_POINTER_NOT_FOUND;
            for (size_t i = 0; i < idx; i++) {
                if (scan_value(&s) < 0) return JSON_POINTER_MALFORMED;
                scan_ws(&s);
                if (s.p >= s.end) return JSON_POINTER_MALFORMED;
                if (*s.p == ']') return JSON_POINTER_NOT_FOUND;
                if (*s.p != ',') return JSON_POINTER_MALFORMED;
                s.p++;
            }
            scan_ws(&s);
        } else if (c == '"' || c == '-' || (c >= '0' && c <= '9') || c == 't' || c == 'f' ||
                   c == 'n') {
            return JSON_POINTER_NOT_FOUND; /* a scalar has no members */
        } else {
            return JSON_POINTER_MALFORMED;
        }
    }
    const unsigned char *v = s.p;
    if (scan_value(&s) < 0) return JSON_POINTER_MALFORMED;
    if (plen == 0) {
        const unsigned char *vend = s.p;
        scan_ws(&s);
        if (s.p != s.end) return JSON_POINTER_MALFORMED;
        s.p = vend;
    }
    *start = (const char *)v;
    *vlen = (size_t)(s.p - v);
    return 0;
}

int json_pointer_scan(const char *json, size_t len, const char *pointer, const char **start,
                      size_t *vlen) {
    if (!json || !pointer) return JSON_POINTER_NOT_FOUND;
    return pointer_scan_n(json, len, pointer, strlen(pointer), start, vlen, 0, NULL);
}

/* ------------------------------------------------------- compiled templates */

typedef enum ref_kind {
    REF_POINTER,
    REF_TOPIC,
    REF_PARTITION,
    REF_OFFSET,
    REF_KEY,
    REF_TIMESTAMP,
    REF_HEADER,
    REF_NOW,
} ref_kind;

typedef struct ptok {
    char *s; /* decoded, NUL-terminated */
    size_t len;
} ptok;

typedef struct tref {
    ref_kind kind;
    char *name; /* as written ("/data/status", "headers.x"), for messages */
    char *ptr;  /* REF_POINTER: encoded pointer, "" for the whole value */
    size_t ptr_len;
    ptok *toks; /* REF_POINTER: decoded tokens */
    size_t ntok;
    char *header; /* REF_HEADER: the header name */
    char *def;    /* default text or NULL */
    size_t def_len;
} tref;

typedef struct tseg {
    char *text; /* literal text, or NULL for a reference */
    size_t len;
    tref ref;
} tseg;

typedef enum node_kind { N_LIT, N_REF, N_STR, N_OBJ, N_ARR } node_kind;

typedef struct tnode tnode;
struct tnode {
    node_kind kind;
    int is_string; /* N_LIT: from a JSON string (text holds its content) */
    char *json;    /* N_LIT: compact JSON text */
    size_t json_len;
    char *text; /* N_LIT string: the content */
    size_t text_len;
    tref ref;   /* N_REF */
    tseg *segs; /* N_STR */
    size_t nseg;
    char **keys; /* N_OBJ: "\"key\":" pre-escaped */
    size_t *key_lens;
    tnode **kids; /* N_OBJ, N_ARR */
    size_t nkids;
};

struct template {
    tnode *root;
    int refs_value;
};

static void ref_free(tref *r) {
    free(r->name);
    free(r->ptr);
    for (size_t i = 0; i < r->ntok; i++)
        free(r->toks[i].s);
    free(r->toks);
    free(r->header);
    free(r->def);
}

static void node_free(tnode *n) {
    if (!n) return;
    free(n->json);
    free(n->text);
    ref_free(&n->ref);
    for (size_t i = 0; i < n->nseg; i++) {
        free(n->segs[i].text);
        ref_free(&n->segs[i].ref);
    }
    free(n->segs);
    for (size_t i = 0; i < n->nkids; i++) {
        if (n->keys) free(n->keys[i]);
        node_free(n->kids[i]);
    }
    free(n->keys);
    free(n->key_lens);
    free(n->kids);
    free(n);
}

void template_free(template *t) {
    if (!t) return;
    node_free(t->root);
    free(t);
}

int template_references_value(const template *t) {
    return t && t->refs_value;
}

typedef struct compiler {
    char *errbuf;
    size_t errlen;
    int refs_value;
} compiler;

static int oom(compiler *c) {
    snprintf(c->errbuf, c->errlen, "out of memory");
    return -1;
}

static char *memdup0(const char *s, size_t n) {
    char *d = malloc(n + 1);
    if (!d) return NULL;
    if (n) memcpy(d, s, n);
    d[n] = '\0';
    return d;
}

static int starts(const char *s, size_t n, const char *prefix) {
    size_t pl = strlen(prefix);
    return n >= pl && memcmp(s, prefix, pl) == 0;
}

static int is_word(const char *s, size_t n, const char *w) {
    return strlen(w) == n && memcmp(s, w, n) == 0;
}

/* Parses the inside of ${...} (in, n).  Returns 1 with *ref filled, 0 with
 * literal text appended to lit (${env:NAME}), or -1 on error. */
static int parse_ref(compiler *c, const char *in, size_t n, tref *ref, tbuf *lit) {
    const char *def = NULL;
    size_t name_len = n;
    for (size_t i = 0; i + 1 < n; i++) {
        if (in[i] == ':' && in[i + 1] == '-') {
            name_len = i;
            def = in + i + 2;
            break;
        }
    }
    size_t def_len = def ? n - (size_t)(def - in) : 0;
    const char *name = in;
    memset(ref, 0, sizeof(*ref));
    if (name_len >= 1 && name[0] == '/') {
        ref->kind = REF_POINTER;
        for (size_t i = 0; i < name_len; i++) {
            if (name[i] == '~' &&
                (i + 1 >= name_len || (name[i + 1] != '0' && name[i + 1] != '1'))) {
                snprintf(c->errbuf, c->errlen,
                         "invalid JSON pointer ${%.*s}: \"~\" must be followed by 0 or 1", (int)n,
                         in);
                return -1;
            }
        }
        /* "/" is the whole value here (the ARCHITECTURE's "message": "${/}"),
         * not the RFC's member named "" of the root. */
        size_t plen = name_len == 1 ? 0 : name_len;
        if (!(ref->ptr = memdup0(name, plen))) return oom(c);
        ref->ptr_len = plen;
        for (size_t i = 0; i < plen; i++)
            if (name[i] == '/') ref->ntok++;
        if (ref->ntok && !(ref->toks = calloc(ref->ntok, sizeof(*ref->toks)))) return oom(c);
        const char *p = name, *pend = name + plen;
        for (size_t t = 0; t < ref->ntok; t++) {
            const char *tok = ++p;
            while (p < pend && *p != '/')
                p++;
            char *d = malloc((size_t)(p - tok) + 1);
            if (!d) return oom(c);
            size_t dn = 0;
            for (const char *q = tok; q < p; q++) {
                if (*q == '~') {
                    d[dn++] = q[1] == '0' ? '~' : '/';
                    q++;
                } else {
                    d[dn++] = *q;
                }
            }
            d[dn] = '\0';
            ref->toks[t].s = d;
            ref->toks[t].len = dn;
        }
        c->refs_value = 1;
    } else if (is_word(name, name_len, "topic")) {
        ref->kind = REF_TOPIC;
    } else if (is_word(name, name_len, "partition")) {
        ref->kind = REF_PARTITION;
    } else if (is_word(name, name_len, "offset")) {
        ref->kind = REF_OFFSET;
    } else if (is_word(name, name_len, "key")) {
        ref->kind = REF_KEY;
    } else if (is_word(name, name_len, "timestamp")) {
        ref->kind = REF_TIMESTAMP;
    } else if (is_word(name, name_len, "now")) {
        ref->kind = REF_NOW;
    } else if (starts(name, name_len, "headers.") && name_len > 8) {
        ref->kind = REF_HEADER;
        if (!(ref->header = memdup0(name + 8, name_len - 8))) return oom(c);
    } else if (starts(name, name_len, "env:") && name_len > 4) {
        char var[256];
        if (name_len - 4 >= sizeof(var)) {
            snprintf(c->errbuf, c->errlen, "environment variable name too long in ${%.*s}", (int)n,
                     in);
            return -1;
        }
        memcpy(var, name + 4, name_len - 4);
        var[name_len - 4] = '\0';
        const char *v = getenv(var);
        if (!v || (def && !*v)) {
            if (!def) {
                snprintf(c->errbuf, c->errlen, "environment variable %s is not set (in ${%.*s})",
                         var, (int)n, in);
                return -1;
            }
            return tbuf_append(lit, def, def_len) < 0 ? oom(c) : 0;
        }
        return tbuf_append(lit, v, strlen(v)) < 0 ? oom(c) : 0;
    } else {
        snprintf(c->errbuf, c->errlen, "unknown template variable ${%.*s}", (int)n, in);
        return -1;
    }
    if (!(ref->name = memdup0(name, name_len))) return oom(c);
    if (def) {
        if (!(ref->def = memdup0(def, def_len))) return oom(c);
        ref->def_len = def_len;
    }
    return 1;
}

static int render_node(const tnode *n, const template_record *r, tbuf *b, char *errbuf,
                       size_t errlen);
static int emit_jansson(tbuf *b, const json_t *j, int level, int as_text);

static tnode *node_new(compiler *c, node_kind kind) {
    tnode *n = calloc(1, sizeof(*n));
    if (!n) oom(c);
    if (n) n->kind = kind;
    return n;
}

/* Takes the bytes of tbuf t into a malloc'd string (t is left empty). */
static char *tbuf_take(tbuf *t, size_t *len) {
    if (!t->p && tbuf_reserve(t, 0) < 0) return NULL;
    char *p = t->p;
    *len = t->len;
    t->p = NULL;
    t->len = t->cap = 0;
    return p;
}

static tnode *compile_string(compiler *c, const char *s, size_t n) {
    tnode *node = node_new(c, N_STR);
    tbuf lit = {0};
    size_t cap = 0;
    if (!node) return NULL;
    size_t i = 0;
    while (i < n) {
        if (s[i] == '$' && i + 2 < n && s[i + 1] == '$' && s[i + 2] == '{') {
            if (tbuf_append(&lit, "${", 2) < 0) goto nomem;
            i += 3;
            continue;
        }
        if (s[i] == '$' && i + 1 < n && s[i + 1] == '{') {
            const char *close = memchr(s + i + 2, '}', n - i - 2);
            if (!close) {
                snprintf(c->errbuf, c->errlen, "unterminated ${ in \"%.*s\"", (int)n, s);
                goto fail;
            }
            tref ref;
            int rc = parse_ref(c, s + i + 2, (size_t)(close - s - i - 2), &ref, &lit);
            if (rc < 0) {
                ref_free(&ref);
                goto fail;
            }
            i = (size_t)(close - s) + 1;
            if (rc == 0) continue;
            if (node->nseg + 2 > cap) {
                size_t ncap = cap ? cap * 2 : 4;
                tseg *segs = realloc(node->segs, ncap * sizeof(*segs));
                if (!segs) {
                    ref_free(&ref);
                    goto nomem;
                }
                node->segs = segs;
                cap = ncap;
            }
            if (lit.len) {
                tseg *t = &node->segs[node->nseg++];
                memset(t, 0, sizeof(*t));
                t->text = tbuf_take(&lit, &t->len);
                if (!t->text) {
                    ref_free(&ref);
                    goto nomem;
                }
            }
            tseg *t = &node->segs[node->nseg++];
            memset(t, 0, sizeof(*t));
            t->ref = ref;
            continue;
        }
        size_t j = i + 1;
        while (j < n && s[j] != '$')
            j++;
        if (tbuf_append(&lit, s + i, j - i) < 0) goto nomem;
        i = j;
    }
    if (node->nseg == 0) { /* no reference: a literal string */
        node->kind = N_LIT;
        node->is_string = 1;
        if (!(node->text = tbuf_take(&lit, &node->text_len))) goto nomem;
        tbuf js = {0};
        if (tbuf_append(&js, "\"", 1) < 0 || put_esc(&js, node->text, node->text_len, 1) < 0 ||
            tbuf_append(&js, "\"", 1) < 0) {
            tbuf_free(&js);
            goto nomem;
        }
        node->json = tbuf_take(&js, &node->json_len);
        return node;
    }
    if (lit.len) {
        if (node->nseg + 1 > cap) {
            tseg *segs = realloc(node->segs, (node->nseg + 1) * sizeof(*segs));
            if (!segs) goto nomem;
            node->segs = segs;
        }
        tseg *t = &node->segs[node->nseg++];
        memset(t, 0, sizeof(*t));
        if (!(t->text = tbuf_take(&lit, &t->len))) goto nomem;
    }
    if (node->nseg == 1 && !node->segs[0].text) { /* exactly one reference */
        node->kind = N_REF;
        node->ref = node->segs[0].ref;
        free(node->segs);
        node->segs = NULL;
        node->nseg = 0;
    }
    tbuf_free(&lit);
    return node;
nomem:
    oom(c);
fail:
    tbuf_free(&lit);
    node_free(node);
    return NULL;
}

static tnode *compile_node(compiler *c, const json_t *spec, int depth) {
    if (depth > 256) {
        snprintf(c->errbuf, c->errlen, "template nested too deeply");
        return NULL;
    }
    if (json_is_string(spec))
        return compile_string(c, json_string_value(spec), json_string_length(spec));
    tnode *node;
    int all_lit = 1;
    if (json_is_object(spec)) {
        if (!(node = node_new(c, N_OBJ))) return NULL;
        size_t n = json_object_size(spec);
        node->kids = calloc(n ? n : 1, sizeof(*node->kids));
        node->keys = calloc(n ? n : 1, sizeof(*node->keys));
        node->key_lens = calloc(n ? n : 1, sizeof(*node->key_lens));
        if (!node->kids || !node->keys || !node->key_lens) goto nomem;
        const char *key;
        size_t key_len;
        json_t *v;
        json_object_keylen_foreach((json_t *)spec, key, key_len, v) {
            tbuf kb = {0};
            if (tbuf_append(&kb, "\"", 1) < 0 || put_esc(&kb, key, key_len, 1) < 0 ||
                tbuf_append(&kb, "\":", 2) < 0) {
                tbuf_free(&kb);
                goto nomem;
            }
            size_t i = node->nkids++;
            node->keys[i] = tbuf_take(&kb, &node->key_lens[i]);
            if (!(node->kids[i] = compile_node(c, v, depth + 1))) goto fail;
            if (node->kids[i]->kind != N_LIT) all_lit = 0;
        }
    } else if (json_is_array(spec)) {
        if (!(node = node_new(c, N_ARR))) return NULL;
        size_t n = json_array_size(spec);
        node->kids = calloc(n ? n : 1, sizeof(*node->kids));
        if (!node->kids) goto nomem;
        size_t i;
        json_t *v;
        json_array_foreach(spec, i, v) {
            node->nkids++;
            if (!(node->kids[i] = compile_node(c, v, depth + 1))) goto fail;
            if (node->kids[i]->kind != N_LIT) all_lit = 0;
        }
    } else {
        if (!(node = node_new(c, N_LIT))) return NULL;
        tbuf js = {0};
        if (emit_jansson(&js, spec, 0, 0) < 0 || !(node->json = tbuf_take(&js, &node->json_len))) {
            tbuf_free(&js);
            goto nomem;
        }
        return node;
    }
    if (all_lit) { /* fold a reference-free subtree into its text */
        tbuf js = {0};
        char err[8];
        if (render_node(node, NULL, &js, err, sizeof(err)) < 0) {
            tbuf_free(&js);
            goto nomem;
        }
        tnode *lit = node_new(c, N_LIT);
        if (!lit) {
            tbuf_free(&js);
            goto fail;
        }
        lit->json = tbuf_take(&js, &lit->json_len);
        node_free(node);
        return lit;
    }
    return node;
nomem:
    oom(c);
fail:
    node_free(node);
    return NULL;
}

int template_compile(const json_t *spec, template **out, char *errbuf, size_t errlen) {
    char dummy[1];
    if (!errbuf) {
        errbuf = dummy;
        errlen = sizeof(dummy);
    }
    *out = NULL;
    if (!spec) {
        snprintf(errbuf, errlen, "no template");
        return -1;
    }
    compiler c = {errbuf, errlen, 0};
    template *t = calloc(1, sizeof(*t));
    if (!t) return oom(&c);
    if (!(t->root = compile_node(&c, spec, 0))) {
        free(t);
        return -1;
    }
    t->refs_value = c.refs_value;
    *out = t;
    return 0;
}

/* ------------------------------------------------------------------ values */

typedef enum rv_kind { RV_NULL, RV_JSON, RV_RAW, RV_BYTES, RV_NUM } rv_kind;

typedef struct rval {
    rv_kind kind;
    const json_t *j;
    const char *p; /* RV_RAW: JSON text; RV_BYTES: string bytes; RV_NUM: number text */
    size_t n;
    int valid; /* RV_RAW from a validated value */
    char num[40];
} rval;

/* The shortest "%.*g" that reads back as d, marked as a real like jansson. */
static size_t format_real(double d, char *out, size_t size) {
    int len = 0;
    for (int prec = 1; prec <= 17; prec++) {
        len = snprintf(out, size, "%.*g", prec, d);
        if (strtod(out, NULL) == d) {
            /* "%g" turns 30 into "3e+01": below 1e17, print all the digits */
            const char *e = strchr(out, 'e');
            int x = e ? atoi(e + 1) : 0;
            if (e && x >= prec && x < 17) len = snprintf(out, size, "%.*g", x + 1, d);
            break;
        }
    }
    if (len > 0 && (size_t)len + 2 < size && !strpbrk(out, ".eEni")) {
        memcpy(out + len, ".0", 3);
        len += 2;
    }
    return len > 0 ? (size_t)len : 0;
}

static int put_quote(tbuf *b, int level) {
    return put_esc(b, "\"", 1, level);
}

/* A jansson value as JSON text (as_text: a string as its bare content),
 * escaped `level` times. */
static int emit_jansson(tbuf *b, const json_t *j, int level, int as_text) {
    char num[40];
    switch (json_typeof(j)) {
    case JSON_OBJECT: {
        const char *key;
        size_t key_len;
        json_t *v;
        int first = 1;
        if (tbuf_append(b, "{", 1) < 0) return -1;
        json_object_keylen_foreach((json_t *)j, key, key_len, v) {
            if (!first && tbuf_append(b, ",", 1) < 0) return -1;
            first = 0;
            if (put_quote(b, level) < 0 || put_esc(b, key, key_len, level + 1) < 0 ||
                put_quote(b, level) < 0 || tbuf_append(b, ":", 1) < 0 ||
                emit_jansson(b, v, level, 0) < 0)
                return -1;
        }
        return tbuf_append(b, "}", 1);
    }
    case JSON_ARRAY: {
        size_t i;
        json_t *v;
        if (tbuf_append(b, "[", 1) < 0) return -1;
        json_array_foreach(j, i, v) {
            if (i && tbuf_append(b, ",", 1) < 0) return -1;
            if (emit_jansson(b, v, level, 0) < 0) return -1;
        }
        return tbuf_append(b, "]", 1);
    }
    case JSON_STRING:
        if (as_text) return put_esc(b, json_string_value(j), json_string_length(j), level);
        if (put_quote(b, level) < 0 ||
            put_esc(b, json_string_value(j), json_string_length(j), level + 1) < 0)
            return -1;
        return put_quote(b, level);
    case JSON_INTEGER: {
        int n = snprintf(num, sizeof(num), "%" JSON_INTEGER_FORMAT, json_integer_value(j));
        return tbuf_append(b, num, (size_t)n);
    }
    case JSON_REAL:
        return tbuf_append(b, num, format_real(json_real_value(j), num, sizeof(num)));
    case JSON_TRUE:
        return tbuf_append(b, "true", 4);
    case JSON_FALSE:
        return tbuf_append(b, "false", 5);
    case JSON_NULL:
    default:
        return tbuf_append(b, "null", 4);
    }
}

/* Raw JSON text (valid, as found by json_pointer_scan) made compact, its
 * strings re-escaped canonically; as_text: a string as its bare content. */
/* Validated JSON as compact JSON at level 0: strings are copied as they are
 * (already valid string text), only whitespace between tokens goes. */
static int emit_valid_compact(tbuf *b, const char *s, size_t n) {
    /* A scalar token of a validated value is compact already (a resolved
     * value has no surrounding whitespace). */
    if (n == 0 || (s[0] != '{' && s[0] != '[')) return tbuf_append(b, s, n);
    /* Copy runs between insignificant whitespace: a compact object or array
     * is one append. */
    const char *p = s, *end = s + n, *run = s;
    while (p < end) {
        char c = *p;
        if (c == '"') {
            const char *q = json_skip_string_valid(p + 1, end);
            p = q ? q : end;
        } else if (c == ' ' || c == '\t' || c == '\n' || c == '\r') {
            if (p > run && tbuf_append(b, run, (size_t)(p - run)) < 0) return -1;
            while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
                p++;
            run = p;
        } else {
            p++;
        }
    }
    if (p > run && tbuf_append(b, run, (size_t)(p - run)) < 0) return -1;
    return 0;
}

static int emit_raw(tbuf *b, const char *s, size_t n, int level, int as_text, int valid) {
    if (as_text && n >= 2 && s[0] == '"') return put_json_string_content(b, s + 1, n - 2, level);
    if (valid && level == 0 && !as_text) return emit_valid_compact(b, s, n);
    const char *p = s, *end = s + n;
    while (p < end) {
        char c = *p;
        if (c == ' ' || c == '\t' || c == '\n' || c == '\r') {
            p++;
        } else if (c == '"') {
            const char *q = ++p;
            while (q < end && *q != '"')
                q += *q == '\\' && q + 1 < end ? 2 : 1;
            if (put_quote(b, level) < 0 ||
                put_json_string_content(b, p, (size_t)(q - p), level + 1) < 0 ||
                put_quote(b, level) < 0)
                return -1;
            p = q < end ? q + 1 : end;
        } else {
            const char *q = p + 1;
            while (q < end && *q != '"' && *q != ' ' && *q != '\t' && *q != '\n' && *q != '\r')
                q++;
            if (tbuf_append(b, p, (size_t)(q - p)) < 0) return -1;
            p = q;
        }
    }
    return 0;
}

static int emit_rval(tbuf *b, const rval *v, int level, int as_text) {
    switch (v->kind) {
    case RV_JSON:
        return emit_jansson(b, v->j, level, as_text);
    case RV_RAW:
        return emit_raw(b, v->p, v->n, level, as_text, v->valid);
    case RV_BYTES:
        if (as_text) return put_esc(b, v->p, v->n, level);
        if (put_quote(b, level) < 0 || put_esc(b, v->p, v->n, level + 1) < 0) return -1;
        return put_quote(b, level);
    case RV_NUM:
        return tbuf_append(b, v->num, strlen(v->num));
    case RV_NULL:
    default:
        return tbuf_append(b, "null", 4);
    }
}

static const json_t *doc_lookup(const json_t *doc, const tref *ref) {
    const json_t *cur = doc;
    for (size_t i = 0; i < ref->ntok && cur; i++) {
        const ptok *t = &ref->toks[i];
        if (json_is_object(cur)) {
            cur = json_object_getn(cur, t->s, t->len);
        } else if (json_is_array(cur)) {
            size_t idx;
            if (parse_index(t->s, t->len, &idx) < 0) return NULL;
            cur = json_array_get(cur, idx);
        } else {
            return NULL;
        }
    }
    return cur;
}

enum { FOUND = 0, MISSING = 1, ABSENT_NULL = 2 };

/* Resolves a reference: FOUND with *v, MISSING (default or error), ABSENT_NULL
 * (default or null), or -1 with errbuf filled. */
static int resolve(const tref *ref, const template_record *r, rval *v, char *errbuf,
                   size_t errlen) {
    memset(v, 0, offsetof(rval, num));
    v->num[0] = '\0';
    switch (ref->kind) {
    case REF_POINTER: {
        if (r->doc) {
            if (!(v->j = doc_lookup(r->doc, ref))) return MISSING;
            v->kind = RV_JSON;
            return FOUND;
        }
        if (!r->value) return MISSING;
        int rc = pointer_scan_n(r->value, r->value_len, ref->ptr, ref->ptr_len, &v->p, &v->n,
                                r->value_valid, r->index);
        if (rc == JSON_POINTER_NOT_FOUND) return MISSING;
        if (rc < 0) {
            snprintf(errbuf, errlen, "template: %s: the record value is not valid JSON", ref->name);
            return -1;
        }
        v->kind = RV_RAW;
        v->valid = r->value_valid;
        return FOUND;
    }
    case REF_TOPIC:
        v->kind = RV_BYTES;
        v->p = r->topic ? r->topic : "";
        v->n = strlen(v->p);
        return FOUND;
    case REF_PARTITION:
        v->kind = RV_NUM;
        snprintf(v->num, sizeof(v->num), "%" PRId32, r->partition);
        return FOUND;
    case REF_OFFSET:
        v->kind = RV_NUM;
        snprintf(v->num, sizeof(v->num), "%" PRId64, r->offset);
        return FOUND;
    case REF_TIMESTAMP:
        if (r->timestamp_ms < 0) return ABSENT_NULL;
        v->kind = RV_NUM;
        snprintf(v->num, sizeof(v->num), "%" PRId64, r->timestamp_ms);
        return FOUND;
    case REF_NOW: {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        v->kind = RV_NUM;
        snprintf(v->num, sizeof(v->num), "%" PRId64,
                 (int64_t)ts.tv_sec * 1000 + (int64_t)(ts.tv_nsec / 1000000));
        return FOUND;
    }
    case REF_KEY:
        if (!r->key) return ABSENT_NULL;
        v->kind = RV_BYTES;
        v->p = r->key;
        v->n = r->key_len;
        return FOUND;
    case REF_HEADER: {
        const cd_header *h = NULL;
        for (size_t i = 0; i < r->header_count; i++)
            if (r->headers[i].name && strcmp(r->headers[i].name, ref->header) == 0)
                h = &r->headers[i];
        if (!h) return MISSING;
        if (!h->value) return ABSENT_NULL;
        v->kind = RV_BYTES;
        v->p = h->value;
        v->n = h->value_len;
        return FOUND;
    }
    }
    return MISSING;
}

/* Renders one reference: as_text 0 as a JSON value, 1 as text escaped
 * `level` times. */
static int render_ref(const tref *ref, const template_record *r, tbuf *b, int level, int as_text,
                      char *errbuf, size_t errlen) {
    rval v;
    int rc = resolve(ref, r, &v, errbuf, errlen);
    if (rc < 0) return -1;
    if (rc == FOUND) {
        if (emit_rval(b, &v, level, as_text) < 0) goto nomem;
        return 0;
    }
    if (ref->def) {
        if (as_text) {
            if (put_esc(b, ref->def, ref->def_len, level) < 0) goto nomem;
        } else if (put_quote(b, level) < 0 || put_esc(b, ref->def, ref->def_len, level + 1) < 0 ||
                   put_quote(b, level) < 0) {
            goto nomem;
        }
        return 0;
    }
    if (rc == ABSENT_NULL) {
        if (tbuf_append(b, "null", 4) < 0) goto nomem;
        return 0;
    }
    if (ref->kind == REF_HEADER)
        snprintf(errbuf, errlen, "template: ${%s}: no such header", ref->name);
    else if (!r->doc && !r->value)
        snprintf(errbuf, errlen, "template: %s: no such field (the record has no value)",
                 ref->name);
    else
        snprintf(errbuf, errlen, "template: %s: no such field", ref->name);
    return -1;
nomem:
    snprintf(errbuf, errlen, "template: out of memory");
    return -1;
}

static int render_segs(const tnode *n, const template_record *r, tbuf *b, int level, char *errbuf,
                       size_t errlen) {
    for (size_t i = 0; i < n->nseg; i++) {
        const tseg *s = &n->segs[i];
        if (s->text) {
            if (put_esc(b, s->text, s->len, level) < 0) {
                snprintf(errbuf, errlen, "template: out of memory");
                return -1;
            }
        } else if (render_ref(&s->ref, r, b, level, 1, errbuf, errlen) < 0) {
            return -1;
        }
    }
    return 0;
}

static int render_node(const tnode *n, const template_record *r, tbuf *b, char *errbuf,
                       size_t errlen) {
    switch (n->kind) {
    case N_LIT:
        if (tbuf_append(b, n->json, n->json_len) < 0) goto nomem;
        return 0;
    case N_REF:
        return render_ref(&n->ref, r, b, 0, 0, errbuf, errlen);
    case N_STR:
        if (tbuf_append(b, "\"", 1) < 0) goto nomem;
        if (render_segs(n, r, b, 1, errbuf, errlen) < 0) return -1;
        if (tbuf_append(b, "\"", 1) < 0) goto nomem;
        return 0;
    case N_OBJ:
    case N_ARR:
        if (tbuf_append(b, n->kind == N_OBJ ? "{" : "[", 1) < 0) goto nomem;
        for (size_t i = 0; i < n->nkids; i++) {
            if (i && tbuf_append(b, ",", 1) < 0) goto nomem;
            if (n->kind == N_OBJ && tbuf_append(b, n->keys[i], n->key_lens[i]) < 0) goto nomem;
            if (render_node(n->kids[i], r, b, errbuf, errlen) < 0) return -1;
        }
        if (tbuf_append(b, n->kind == N_OBJ ? "}" : "]", 1) < 0) goto nomem;
        return 0;
    }
nomem:
    snprintf(errbuf, errlen, "template: out of memory");
    return -1;
}

static const template_record empty_record = {.timestamp_ms = -1};

int template_render_json(const template *t, const template_record *r, tbuf *out, char *errbuf,
                         size_t errlen) {
    char dummy[1];
    if (!errbuf) errbuf = dummy, errlen = sizeof(dummy);
    size_t mark = out->len;
    if (render_node(t->root, r ? r : &empty_record, out, errbuf, errlen) < 0) {
        tbuf_truncate(out, mark);
        return -1;
    }
    if (!out->p && tbuf_reserve(out, 0) < 0) return -1;
    return 0;
}

int template_render_text(const template *t, const template_record *r, tbuf *out, char *errbuf,
                         size_t errlen) {
    char dummy[1];
    if (!errbuf) errbuf = dummy, errlen = sizeof(dummy);
    const tnode *n = t->root;
    if (!r) r = &empty_record;
    size_t mark = out->len;
    int rc;
    if (n->kind == N_LIT && n->is_string) {
        rc = tbuf_append(out, n->text, n->text_len);
        if (rc < 0) snprintf(errbuf, errlen, "template: out of memory");
    } else if (n->kind == N_REF) {
        rc = render_ref(&n->ref, r, out, 0, 1, errbuf, errlen);
    } else if (n->kind == N_STR) {
        rc = render_segs(n, r, out, 0, errbuf, errlen);
    } else {
        rc = render_node(n, r, out, errbuf, errlen);
    }
    if (rc < 0) {
        tbuf_truncate(out, mark);
        return -1;
    }
    if (!out->p && tbuf_reserve(out, 0) < 0) return -1;
    return 0;
}

int template_render_value(const template *t, const template_record *r, json_t **out, char *errbuf,
                          size_t errlen) {
    tbuf b = {0};
    json_error_t jerr;
    char dummy[1];
    if (!errbuf) errbuf = dummy, errlen = sizeof(dummy);
    *out = NULL;
    if (template_render_json(t, r, &b, errbuf, errlen) < 0) {
        tbuf_free(&b);
        return -1;
    }
    *out = json_loadb(b.p, b.len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);
    tbuf_free(&b);
    if (!*out) {
        snprintf(errbuf, errlen, "template: the rendering is not valid for jansson: %s", jerr.text);
        return -1;
    }
    return 0;
}
