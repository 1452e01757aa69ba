/*
 * source-http — what an event must be: JSON pointers, the JSON Schema subset,
 * and the per-event check (eventId, schema, key) that decides 400 or produce.
 *
 * Private to the plugin.  Kept apart from http.h (the context, the server,
 * auth) so that a test can compile http_schema.c, http_scan.c and
 * http_event.c against jansson alone.
 *
 * Two implementations of one decision:
 *
 *   http_schema.c  the reference: jansson parses the event into a tree and
 *                  the tree is walked against the schema (a tree per event)
 *   http_scan.c    the fast path: the schema compiled once, at load, into
 *                  an http_cschema; each event's text walked once by a
 *                  scanner that allocates nothing
 *
 * http_event_check() (http_event.c) runs the fast path and falls back on
 * the reference whenever the fast path cannot prove the event valid: bad
 * JSON, a schema violation, or anything it does not handle itself (escaped
 * member names, very deep nesting, numbers near the limits, ...).  So every
 * 400 and every error text comes from the reference, and the fast path only
 * has to be right about what it accepts.
 */
#ifndef CONNECTD_SOURCE_HTTP_SCHEMA_H
#define CONNECTD_SOURCE_HTTP_SCHEMA_H

#include <connectd/plugin.h>

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

/* Longest eventId a client may send (bytes).  Ours are 36. */
#define HTTP_EVENT_ID_MAX 128

/* Room for a validation problem: the field (a JSON pointer) and what is
 * wrong with it.  Longer ones are cut, which only shortens a message. */
#define HTTP_FIELD_MAX 256
#define HTTP_ERROR_MAX 256

/* An assigned eventId: a version 4 UUID in its 36-character text form. */
#define HTTP_UUID_LEN 36

/* ------------------------------------------------------- JSON pointers */

/* An RFC 6901 JSON pointer, split and unescaped once (in init) so that
 * resolving it per event is a few hash lookups. */
typedef struct http_pointer {
    char *text;     /* as configured, e.g. "/customerId" (owned) */
    size_t ntokens; /* 0: the whole document */
    char **tokens;  /* unescaped reference tokens (owned) */
    size_t *lens;
} http_pointer;

/* Parses `text` into *out.  Returns 0, or CD_ERR_INVALID with errbuf saying
 * why (a pointer must be "" or start with '/'; '~' must be "~0" or "~1"). */
int http_pointer_parse(const char *text, http_pointer *out, char *errbuf, size_t errlen);
void http_pointer_free(http_pointer *p);
/* The value `p` points at in doc, or NULL. */
const json_t *http_pointer_get(const http_pointer *p, const json_t *doc);
/* An array index per RFC 6901 ("0", or digits without a leading zero, at
 * most 9 of them): 0 and *out, or -1. */
int http_pointer_index(const char *tok, size_t len, size_t *out);

/* Appends the RFC 6901 escape of name[0..len) to a pointer being built in
 * buf (NUL-terminated, bufsize bytes); cuts it when it does not fit. */
void http_pointer_append(char *buf, size_t bufsize, const char *name, size_t len);

/* ------------------------------------------------------ http_schema.c */

/* What is wrong with an event: `field` is a JSON pointer into it ("" for the
 * event as a whole). */
typedef struct http_problem {
    char field[HTTP_FIELD_MAX];
    char error[HTTP_ERROR_MAX];
} http_problem;

/* Checks that `schema` uses only the subset of JSON Schema that
 * http_schema_validate implements (see README.md), so that a schema never
 * silently means less than its author thinks.  Returns 0, or CD_ERR_INVALID
 * with errbuf like "properties.data.type: unknown type \"strng\"". */
int http_schema_check(const json_t *schema, char *errbuf, size_t errlen);

/* Validates `value` against a checked schema.  Returns 0, or -1 with the
 * first problem found in *pr (required members first, then members in
 * document order). */
int http_schema_validate(const json_t *schema, const json_t *value, http_problem *pr);

/* The string formats the subset knows (also used for eventIds). */
int http_is_uuid(const char *s, size_t len);
int http_is_date_time(const char *s, size_t len);

/* -------------------------------------------------------- http_scan.c */

/* A checked schema compiled for the fast path (opaque; http_scan.c). */
typedef struct http_cschema http_cschema;

/* Compiles a schema that passed http_schema_check.  Returns NULL only when
 * memory runs out (the fast path is then simply not used). */
http_cschema *http_cschema_compile(const json_t *schema);
void http_cschema_free(http_cschema *cs);

/* Fills out[0..HTTP_UUID_LEN) with a fresh eventId and NUL-terminates it;
 * 0, or -1 when there is no randomness. */
typedef int (*http_id_fn)(void *opaque, char *out);

/* ------------------------------------------------------- http_event.c */

/* The outcome of checking one event (the body of an application/json POST,
 * or one NDJSON line). */
typedef struct http_verdict {
    int status;        /* 0: valid, produce it; otherwise 400 or 503 */
    int field_null;    /* 400 about the text as a whole (bad JSON): "field": null */
    const char *field; /* 400: the JSON pointer at fault (points into the verdict or the
                          configuration), or NULL */
    char error[HTTP_ERROR_MAX];
    char field_buf[HTTP_FIELD_MAX];

    /* Status 0 only; valid until http_verdict_release. */
    const char *event_id; /* the client's or the assigned one; event_id_len bytes */
    size_t event_id_len;
    int assigned; /* event_id was assigned here: it goes into the record value */
    const char *key;
    size_t keylen;
    char id_buf[HTTP_UUID_LEN + 1];
    char num_buf[32];
    int fast;    /* decided by the fast path (no tree was built) */
    json_t *doc; /* the reference's tree, which key and event_id may point into */
} http_verdict;

/* Checks one event: it must be one JSON object (no duplicate member names),
 * with an eventId that is a string of 1 to HTTP_EVENT_ID_MAX bytes (or none:
 * then `gen` assigns one, before the schema sees the event), valid against
 * `schema`, and with a non-empty string or a number at `key`.  `cs` (may be
 * NULL) is `schema` compiled; `batch` only changes how a JSON syntax error
 * is located (NDJSON lines: column only).  Always fills *v; the caller calls
 * http_verdict_release(v) when done with it. */
void http_event_check(const json_t *schema, const http_cschema *cs, const http_pointer *key,
                      int batch, const char *text, size_t len, http_id_fn gen, void *opaque,
                      http_verdict *v);

/* The two halves, for tests.  The reference always decides.  The fast path
 * returns 0 with *v filled (status 0) when it proved the event valid, and -1
 * when the reference must decide (*v then holds nothing to release; when
 * v->assigned is set, v->id_buf holds the eventId it assigned, which the
 * reference should assign again). */
void http_event_check_reference(const json_t *schema, const http_pointer *key, int batch,
                                const char *text, size_t len, http_id_fn gen, void *opaque,
                                http_verdict *v);
int http_event_check_fast(const http_cschema *cs, const http_pointer *key, const char *text,
                          size_t len, http_id_fn gen, void *opaque, http_verdict *v);

void http_verdict_release(http_verdict *v);

/* Length of the UTF-8 sequence at p (n bytes available): shortest form, no
 * surrogates, at most U+10FFFF; 0 when there is none. */
static inline size_t http_utf8_len(const unsigned char *p, size_t n) {
    unsigned c = p[0];
    if (c < 0x80) return 1;
    size_t len;
    unsigned min, cp;
    if (c >= 0xC2 && c <= 0xDF)
        len = 2, min = 0x80, cp = c & 0x1F;
    else if (c >= 0xE0 && c <= 0xEF)
        len = 3, min = 0x800, cp = c & 0x0F;
    else if (c >= 0xF0 && c <= 0xF4)
        len = 4, min = 0x10000, cp = c & 0x07;
    else
        return 0;
    if (n < len) return 0;
    for (size_t i = 1; i < len; i++) {
        if ((p[i] & 0xC0) != 0x80) return 0;
        cp = cp << 6 | (p[i] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
    return len;
}

#endif /* CONNECTD_SOURCE_HTTP_SCHEMA_H */
