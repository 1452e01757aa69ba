/*
 * Record templates: JSON from a pipeline file whose strings reference the
 * record being written, compiled once when a sink initialises and rendered
 * per record without re-parsing the template.
 *
 * References, inside any JSON string of the template:
 *   ${/json/pointer}   RFC 6901 pointer into the record value (~0 is "~",
 *                      ~1 is "/"); ${/} is the whole value
 *   ${topic} ${partition} ${offset} ${timestamp} (ms; null when the record
 *                      has none) ${key} (null when the record has none)
 *   ${headers.NAME}    the last header called NAME (case-sensitive; null for
 *                      a header with a null value)
 *   ${now}             the time of rendering, ms since the epoch
 *   ${env:NAME}        environment variable NAME, read at compile time
 *   ${REF:-default}    REF, or the literal text `default` when REF is missing
 *                      (a pointer with no target, a header that is absent
 *                      or null, no key, no timestamp, a record without a
 *                      value); a pointer to a JSON null is not missing
 *   $${                a literal "${"
 * Anything else inside ${...} is a compile error naming it ("unknown
 * template variable ${foo}"), and so is an unterminated "${".  A reference
 * ends at the first "}", so neither a pointer nor a default can hold "}", and
 * a pointer cannot hold ":-".  Object keys of the template are literal.
 *
 * Note: pipeline files go through config-time expansion (expand.h) first,
 * which also turns "$${" into "${"; a literal "${" in a rendered record
 * therefore takes "$$${" in the file.
 *
 * Rendering:
 *   - a string that is exactly one reference renders as the referenced value
 *     itself, with its JSON type ("${/data}" copies the subtree, "${offset}"
 *     is a number, "${key}" a string or null); with a default that applies,
 *     the default is a string;
 *   - a string mixing text and references renders as a JSON string, each
 *     reference converted to text (strings as their content, numbers as JSON
 *     number text, true/false/null as words, objects and arrays as compact
 *     JSON text);
 *   - any other JSON value renders as itself.
 * A pointer with no target and no default fails the render with
 * "template: /data/status: no such field".
 *
 * The record value: when template_record.doc is set, pointers are looked up
 * in that jansson tree; otherwise they are found in the raw value text with
 * json_pointer_scan (no allocation, no tree; each pointer scans from the
 * start of the value, and only the part of the value up to the target (the
 * whole object holding it, for duplicate keys) is examined).  From raw text,
 * numbers keep their exact text; from a tree they are printed by the
 * module (integers exactly, reals in the shortest form that round-trips).
 * A subtree copied from raw text keeps any duplicate keys it has (a pointer
 * lookup takes the last, as jansson does).
 * Output is compact, valid JSON for any input: strings are re-escaped
 * canonically (", \ and control characters escaped, everything else as
 * UTF-8), and invalid UTF-8 in keys, headers or the topic becomes U+FFFD.
 *
 * A compiled template is immutable: one template may be rendered from
 * several threads at once, each with its own tbuf.
 */
#ifndef CONNECTD_TEMPLATE_H
#define CONNECTD_TEMPLATE_H

#include <connectd/plugin.h>
#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

typedef struct template template; /* opaque, immutable once compiled */

/* The record a template is rendered against.  Every pointer is borrowed. */
/* The members of a record's top-level object, found once per record and
 * shared by every reference the renders of that record resolve (each would
 * otherwise scan the object from its start).  Zero it before the record's
 * first render; only used for validated values. */
#define TEMPLATE_INDEX_MAX 32
typedef struct template_index {
    const void *value; /* the value it was built for */
    int state;         /* 0 not built, 1 built, -1 not usable (not an object, too many) */
    size_t n;
    struct {
        const char *key; /* raw (escaped) key text, without quotes */
        size_t key_len;
        int key_escaped; /* the key holds a backslash escape */
        const char *val; /* the member's value text */
        size_t val_len;
    } m[TEMPLATE_INDEX_MAX];
} template_index;

typedef struct template_record {
    const char *topic;
    int32_t partition;
    int64_t offset;
    int64_t timestamp_ms; /* < 0: none */
    const void *key;      /* NULL: none */
    size_t key_len;
    const cd_header *headers;
    size_t header_count;
    const void *value; /* NULL: none (a tombstone) */
    size_t value_len;
    const json_t *doc;     /* parsed value, may be NULL: then the raw value is scanned */
    int value_valid;       /* value passed json_validate: scans skip structure only */
    template_index *index; /* may be NULL: no index (used with value_valid) */
} template_record;

/* A growable output buffer, reused across records: reset between records
 * and the steady state allocates nothing.  Always NUL-terminated once it
 * holds anything (p[len] == '\0'); {0} is an empty buffer. */
typedef struct tbuf {
    char *p;
    size_t len, cap;
} tbuf;

void tbuf_reset(tbuf *b); /* len = 0, memory kept */
void tbuf_free(tbuf *b);  /* frees, back to {0} */
/* Makes room for n more bytes (plus the terminator); 0 or -1 (out of memory). */
int tbuf_reserve(tbuf *b, size_t n);
int tbuf_append(tbuf *b, const void *data, size_t n);

/* Compiles spec (any JSON value; not retained).  0 with *out set, or -1 with
 * the reason in errbuf. */
int template_compile(const json_t *spec, template **out, char *errbuf, size_t errlen);
void template_free(template *t);

/* 1 when the template reads the record value (any ${/pointer}), so the value
 * must be JSON; 0 otherwise. */
int template_references_value(const template *t);

/* Appends the rendering as compact JSON text to out.  0, or -1 with the
 * reason in errbuf ("template: /data/status: no such field"); on error out
 * is left as it was. */
int template_render_json(const template *t, const template_record *r, tbuf *out, char *errbuf,
                         size_t errlen);
/* Appends the rendering as plain text (a file path, an SNS subject): a
 * string template without JSON quoting or escaping; any other template as
 * its compact JSON.  Same errors as template_render_json. */
int template_render_text(const template *t, const template_record *r, tbuf *out, char *errbuf,
                         size_t errlen);
/* Renders into a new jansson tree (*out, caller decrefs).  Not the hot path:
 * it renders JSON text and parses it. */
int template_render_value(const template *t, const template_record *r, json_t **out, char *errbuf,
                          size_t errlen);

/* Finds the value a JSON pointer (RFC 6901, "" = the whole text) refers to
 * in JSON text, without allocating.  On success returns 0 with *start and
 * *vlen the value's raw text (no surrounding whitespace).  Returns
 * JSON_POINTER_NOT_FOUND when the target does not exist (or the pointer is
 * not a valid RFC 6901 pointer), JSON_POINTER_MALFORMED when the text on the
 * way to it is not valid JSON.  With duplicate object keys the last wins,
 * as in jansson. */
#define JSON_POINTER_NOT_FOUND (-1)
#define JSON_POINTER_MALFORMED (-2)
int json_pointer_scan(const char *json, size_t len, const char *pointer, const char **start,
                      size_t *vlen);

#endif
