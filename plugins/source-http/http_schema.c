/*
 * source-http — event validation: JSON pointers and a small JSON Schema.
 *
 * Each topic's events are checked against pipelines/schemas/{topic}.json.
 * Only a subset of JSON Schema is implemented (README.md lists it), and a
 * schema using anything outside it is refused when the pipeline loads:
 * quietly ignoring "pattern" or "minimum" would let events through that the
 * schema's author meant to stop.  The subset is what the onboarding events
 * need: types, required and unknown members, enums, string lengths, and the
 * uuid and date-time formats.
 *
 * Validation stops at the first problem and names it by JSON pointer
 * ("/data/riskLevel"), which is what a client needs to fix its request.
 */
#include "http_schema.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------- JSON pointers */

void http_pointer_free(http_pointer *p) {
    for (size_t i = 0; i < p->ntokens; i++)
        free(p->tokens[i]);
    free(p->tokens);
    free(p->lens);
    free(p->text);
    *p = (http_pointer){0};
}

int http_pointer_parse(const char *text, http_pointer *out, char *errbuf, size_t errlen) {
    http_pointer p = {0};
    if (text[0] != '\0' && text[0] != '/') {
        snprintf(errbuf, errlen, "\"%s\" is not a JSON pointer (it must start with '/')", text);
        return CD_ERR_INVALID;
    }
    p.text = strdup(text);
    if (p.text == NULL) goto nomem;
    size_t max = 0;
    for (const char *s = text; *s; s++)
        if (*s == '/') max++;
    if (max) {
        p.tokens = calloc(max, sizeof(*p.tokens));
        p.lens = calloc(max, sizeof(*p.lens));
        if (p.tokens == NULL || p.lens == NULL) goto nomem;
    }
    const char *s = text;
    while (*s == '/') {
        s++;
        size_t n = strcspn(s, "/");
        char *tok = malloc(n + 1);
        if (tok == NULL) goto nomem;
        p.tokens[p.ntokens++] = tok;
        size_t k = 0;
        for (size_t i = 0; i < n; i++) {
            if (s[i] != '~') {
                tok[k++] = s[i];
            } else if (i + 1 < n && (s[i + 1] == '0' || s[i + 1] == '1')) {
                tok[k++] = s[i + 1] == '0' ? '~' : '/';
                i++;
            } else {
                snprintf(errbuf, errlen, "\"%s\": '~' must be followed by 0 or 1", text);
                http_pointer_free(&p);
                return CD_ERR_INVALID;
            }
        }
        tok[k] = '\0';
        p.lens[p.ntokens - 1] = k;
        s += n;
    }
    *out = p;
    return 0;
nomem:
    http_pointer_free(&p);
    snprintf(errbuf, errlen, "out of memory");
    return CD_ERR_NOMEM;
}

/* An array index per RFC 6901: "0" or digits without a leading zero. */
int http_pointer_index(const char *tok, size_t len, size_t *out) {
    if (len == 0 || len > 9 || (len > 1 && tok[0] == '0')) return -1;
    size_t v = 0;
    for (size_t i = 0; i < len; i++) {
        if (tok[i] < '0' || tok[i] > '9') return -1;
        v = v * 10 + (size_t)(tok[i] - '0');
    }
    *out = v;
    return 0;
}

const json_t *http_pointer_get(const http_pointer *p, const json_t *doc) {
    const json_t *cur = doc;
    for (size_t i = 0; i < p->ntokens && cur != NULL; i++) {
        if (json_is_object(cur)) {
            cur = json_object_getn(cur, p->tokens[i], p->lens[i]);
        } else if (json_is_array(cur)) {
            size_t idx;
            if (http_pointer_index(p->tokens[i], p->lens[i], &idx) < 0) return NULL;
            cur = json_array_get(cur, idx);
        } else {
            return NULL;
        }
    }
    return cur;
}

void http_pointer_append(char *buf, size_t bufsize, const char *name, size_t len) {
    size_t n = strlen(buf);
    if (n + 1 >= bufsize) return;
    buf[n++] = '/';
    for (size_t i = 0; i < len; i++) {
        const char *esc = name[i] == '~' ? "~0" : name[i] == '/' ? "~1" : NULL;
        size_t need = esc ? 2 : 1;
        if (n + need + 1 > bufsize) break;
        if (esc) {
            memcpy(buf + n, esc, 2);
        } else {
            buf[n] = name[i];
        }
        n += need;
    }
    buf[n] = '\0';
}

/* ------------------------------------------------------------- formats */

static int http_digits(const char *s, size_t n, int *out) {
    int v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') return -1;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return 0;
}

/* Whether s[0..n) are all hex digits, either case. */
static int http_hex_run(const char *s, size_t n) {
    static const unsigned char hex[256] = {
        ['0'] = 1, ['1'] = 1, ['2'] = 1, ['3'] = 1, ['4'] = 1, ['5'] = 1, ['6'] = 1, ['7'] = 1,
        ['8'] = 1, ['9'] = 1, ['a'] = 1, ['b'] = 1, ['c'] = 1, ['d'] = 1, ['e'] = 1, ['f'] = 1,
        ['A'] = 1, ['B'] = 1, ['C'] = 1, ['D'] = 1, ['E'] = 1, ['F'] = 1};
    unsigned all = 1;
    for (size_t i = 0; i < n; i++)
        all &= hex[(unsigned char)s[i]];
    return (int)all;
}

int http_is_uuid(const char *s, size_t len) {
    /* 8-4-4-4-12 hex digits, either case, any version (RFC 4122's text form). */
    return len == 36 && s[8] == '-' && s[13] == '-' && s[18] == '-' && s[23] == '-' &&
           http_hex_run(s, 8) && http_hex_run(s + 9, 4) && http_hex_run(s + 14, 4) &&
           http_hex_run(s + 19, 4) && http_hex_run(s + 24, 12);
}

/* RFC 3339 section 5.6 date-time, e.g. 2024-05-01T12:00:00.000Z or
 * 2024-05-01t14:00:00+02:00, with the calendar checked (no 31 April, 29
 * February only in leap years); a leap second (:60) is allowed. */
int http_is_date_time(const char *s, size_t len) {
    int y, mo, d, h, mi, se;
    if (len < 20) return 0;
    if (http_digits(s, 4, &y) || s[4] != '-' || http_digits(s + 5, 2, &mo) || s[7] != '-' ||
        http_digits(s + 8, 2, &d) || (s[10] != 'T' && s[10] != 't') || http_digits(s + 11, 2, &h) ||
        s[13] != ':' || http_digits(s + 14, 2, &mi) || s[16] != ':' || http_digits(s + 17, 2, &se))
        return 0;
    static const int mdays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (mo < 1 || mo > 12 || d < 1) return 0;
    int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    if (d > mdays[mo - 1] + (mo == 2 && leap)) return 0;
    if (h > 23 || mi > 59 || se > 60) return 0;
    size_t i = 19;
    if (i < len && s[i] == '.') {
        size_t start = ++i;
        while (i < len && s[i] >= '0' && s[i] <= '9')
            i++;
        if (i == start) return 0;
    }
    if (i < len && (s[i] == 'Z' || s[i] == 'z')) return i + 1 == len;
    if (i < len && (s[i] == '+' || s[i] == '-')) {
        int oh, om;
        if (len - i != 6 || http_digits(s + i + 1, 2, &oh) || s[i + 3] != ':' ||
            http_digits(s + i + 4, 2, &om))
            return 0;
        return oh <= 23 && om <= 59;
    }
    return 0;
}

/* -------------------------------------------------------------- schemas */

static const char *const http_schema_types[] = {"object",  "array",   "string", "number",
                                                "integer", "boolean", "null",   NULL};

/* Keywords with no effect on validation, accepted so that schemas can be
 * documented. */
static const char *const http_schema_annotations[] = {
    "$schema", "$id", "$comment", "title", "description", "examples", "default", NULL};

static int http_in(const char *s, const char *const *set) {
    for (size_t i = 0; set[i]; i++)
        if (strcmp(s, set[i]) == 0) return 1;
    return 0;
}

static int http_schema_check_at(const json_t *s, char *path, size_t pathsize, char *errbuf,
                                size_t errlen);

/* Extends the dotted path for an error message, runs the check, restores it. */
static int http_schema_check_child(const json_t *s, char *path, size_t pathsize, const char *a,
                                   const char *b, char *errbuf, size_t errlen) {
    size_t n = strlen(path);
    snprintf(path + n, pathsize - n, "%s%s%s%s", n ? "." : "", a, b ? "." : "", b ? b : "");
    int r = http_schema_check_at(s, path, pathsize, errbuf, errlen);
    path[n] = '\0';
    return r;
}

#define HTTP_SCHEMA_FAIL(...)                                                                      \
    do {                                                                                           \
        char why_[256];                                                                            \
        snprintf(why_, sizeof(why_), __VA_ARGS__);                                                 \
        snprintf(errbuf, errlen, "%s%s%s%s", path, *path ? "." : "", kw, why_);                    \
        return CD_ERR_INVALID;                                                                     \
    } while (0)

static int http_schema_check_at(const json_t *s, char *path, size_t pathsize, char *errbuf,
                                size_t errlen) {
    if (!json_is_object(s)) {
        snprintf(errbuf, errlen, "%s%sa schema must be a JSON object", path, *path ? ": " : "");
        return CD_ERR_INVALID;
    }
    const char *kw;
    json_t *v;
    json_object_foreach((json_t *)s, kw, v) {
        if (http_in(kw, http_schema_annotations)) continue;
        if (strcmp(kw, "type") == 0) {
            if (json_is_string(v)) {
                if (!http_in(json_string_value(v), http_schema_types))
                    HTTP_SCHEMA_FAIL(": unknown type \"%s\"", json_string_value(v));
            } else if (json_is_array(v) && json_array_size(v) > 0) {
                size_t i;
                json_t *t;
                json_array_foreach(v, i, t) {
                    if (!json_is_string(t) || !http_in(json_string_value(t), http_schema_types))
                        HTTP_SCHEMA_FAIL("[%zu]: not a type name", i);
                }
            } else {
                HTTP_SCHEMA_FAIL(": must be a type name or a non-empty array of them");
            }
        } else if (strcmp(kw, "required") == 0) {
            size_t i;
            json_t *t;
            if (!json_is_array(v)) HTTP_SCHEMA_FAIL(": must be an array of member names");
            json_array_foreach(v, i, t) {
                if (!json_is_string(t)) HTTP_SCHEMA_FAIL("[%zu]: must be a string", i);
            }
        } else if (strcmp(kw, "properties") == 0) {
            const char *name;
            json_t *sub;
            if (!json_is_object(v)) HTTP_SCHEMA_FAIL(": must be an object of schemas");
            json_object_foreach(v, name, sub) {
                int r = http_schema_check_child(sub, path, pathsize, "properties", name, errbuf,
                                                errlen);
                if (r < 0) return r;
            }
        } else if (strcmp(kw, "additionalProperties") == 0) {
            if (!json_is_boolean(v)) {
                int r = http_schema_check_child(v, path, pathsize, kw, NULL, errbuf, errlen);
                if (r < 0) return r;
            }
        } else if (strcmp(kw, "items") == 0) {
            int r = http_schema_check_child(v, path, pathsize, kw, NULL, errbuf, errlen);
            if (r < 0) return r;
        } else if (strcmp(kw, "enum") == 0) {
            if (!json_is_array(v) || json_array_size(v) == 0)
                HTTP_SCHEMA_FAIL(": must be a non-empty array");
        } else if (strcmp(kw, "format") == 0) {
            const char *f = json_string_value(v);
            if (f == NULL || (strcmp(f, "uuid") != 0 && strcmp(f, "date-time") != 0))
                HTTP_SCHEMA_FAIL(": only \"uuid\" and \"date-time\" are supported");
        } else if (strcmp(kw, "minLength") == 0 || strcmp(kw, "maxLength") == 0) {
            if (!json_is_integer(v) || json_integer_value(v) < 0)
                HTTP_SCHEMA_FAIL(": must be a non-negative integer");
        } else {
            HTTP_SCHEMA_FAIL(": keyword not supported by source-http (see its README)");
        }
    }
    return 0;
}

int http_schema_check(const json_t *schema, char *errbuf, size_t errlen) {
    char path[512] = "";
    return http_schema_check_at(schema, path, sizeof(path), errbuf, errlen);
}

/* ----------------------------------------------------------- validation */

static const char *http_type_of(const json_t *v) {
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        return "object";
    case JSON_ARRAY:
        return "array";
    case JSON_STRING:
        return "string";
    case JSON_INTEGER:
        return "integer";
    case JSON_REAL:
        return "number";
    case JSON_TRUE:
    case JSON_FALSE:
        return "boolean";
    default:
        return "null";
    }
}

static int http_type_matches(const char *type, const json_t *v) {
    if (strcmp(type, "object") == 0) return json_is_object(v);
    if (strcmp(type, "array") == 0) return json_is_array(v);
    if (strcmp(type, "string") == 0) return json_is_string(v);
    if (strcmp(type, "number") == 0) return json_is_number(v);
    if (strcmp(type, "integer") == 0) {
        /* JSON Schema counts 1.0 as an integer. */
        if (json_is_integer(v)) return 1;
        if (!json_is_real(v)) return 0;
        double d = json_real_value(v);
        return isfinite(d) && floor(d) == d;
    }
    if (strcmp(type, "boolean") == 0) return json_is_boolean(v);
    return json_is_null(v);
}

/* Code points in a UTF-8 string (jansson checked that it is UTF-8). */
static size_t http_utf8_count(const char *s, size_t len) {
    size_t n = 0;
    for (size_t i = 0; i < len; i++)
        if (((unsigned char)s[i] & 0xC0) != 0x80) n++;
    return n;
}

static int http_problem_at(http_problem *pr, const char *path, const char *fmt, ...)
    CD_PRINTF(3, 4);

static int http_problem_at(http_problem *pr, const char *path, const char *fmt, ...) {
    snprintf(pr->field, sizeof(pr->field), "%s", path);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(pr->error, sizeof(pr->error), fmt, ap);
    va_end(ap);
    return -1;
}

static int http_validate_at(const json_t *s, const json_t *v, char *path, size_t pathsize,
                            http_problem *pr);

static int http_validate_child(const json_t *s, const json_t *v, char *path, size_t pathsize,
                               const char *name, size_t len, http_problem *pr) {
    size_t n = strlen(path);
    http_pointer_append(path, pathsize, name, len);
    int r = http_validate_at(s, v, path, pathsize, pr);
    path[n] = '\0';
    return r;
}

static int http_validate_type(const json_t *type, const json_t *v, const char *path,
                              http_problem *pr) {
    if (type == NULL) return 0;
    if (json_is_string(type)) {
        if (http_type_matches(json_string_value(type), v)) return 0;
        return http_problem_at(pr, path, "expected %s, got %s", json_string_value(type),
                               http_type_of(v));
    }
    char expected[160] = "";
    size_t i;
    json_t *t;
    json_array_foreach(type, i, t) {
        if (http_type_matches(json_string_value(t), v)) return 0;
        size_t n = strlen(expected);
        snprintf(expected + n, sizeof(expected) - n, "%s%s", i ? " or " : "", json_string_value(t));
    }
    return http_problem_at(pr, path, "expected %s, got %s", expected, http_type_of(v));
}

static int http_validate_string(const json_t *s, const json_t *v, const char *path,
                                http_problem *pr) {
    const char *str = json_string_value(v);
    size_t len = json_string_length(v);
    const json_t *min = json_object_get(s, "minLength");
    const json_t *max = json_object_get(s, "maxLength");
    if (min || max) {
        size_t chars = http_utf8_count(str, len);
        if (min && chars < (size_t)json_integer_value(min))
            return http_problem_at(pr, path, "must be at least %lld character(s) long",
                                   (long long)json_integer_value(min));
        if (max && chars > (size_t)json_integer_value(max))
            return http_problem_at(pr, path, "must be at most %lld character(s) long",
                                   (long long)json_integer_value(max));
    }
    const char *format = json_string_value(json_object_get(s, "format"));
    if (format && strcmp(format, "uuid") == 0 && !http_is_uuid(str, len))
        return http_problem_at(pr, path, "must be a UUID (8-4-4-4-12 hex digits)");
    if (format && strcmp(format, "date-time") == 0 && !http_is_date_time(str, len))
        return http_problem_at(pr, path,
                               "must be an RFC 3339 date-time (e.g. 2024-05-01T12:00:00Z)");
    return 0;
}

static int http_validate_object(const json_t *s, const json_t *v, char *path, size_t pathsize,
                                http_problem *pr) {
    size_t i;
    json_t *req;
    json_array_foreach(json_object_get(s, "required"), i, req) {
        const char *name = json_string_value(req);
        if (json_object_get(v, name) == NULL) {
            size_t n = strlen(path);
            http_pointer_append(path, pathsize, name, strlen(name));
            http_problem_at(pr, path, "required field is missing");
            path[n] = '\0';
            return -1;
        }
    }
    const json_t *props = json_object_get(s, "properties");
    const json_t *extra = json_object_get(s, "additionalProperties");
    const char *name;
    json_t *member;
    json_object_foreach((json_t *)v, name, member) {
        size_t len = strlen(name);
        const json_t *sub = props ? json_object_get(props, name) : NULL;
        if (sub == NULL && json_is_false(extra)) {
            size_t n = strlen(path);
            http_pointer_append(path, pathsize, name, len);
            http_problem_at(pr, path, "unknown field (not in the topic's schema)");
            path[n] = '\0';
            return -1;
        }
        if (sub == NULL && json_is_object(extra)) sub = extra;
        if (sub && http_validate_child(sub, member, path, pathsize, name, len, pr) < 0) return -1;
    }
    return 0;
}

static int http_validate_at(const json_t *s, const json_t *v, char *path, size_t pathsize,
                            http_problem *pr) {
    if (http_validate_type(json_object_get(s, "type"), v, path, pr) < 0) return -1;
    const json_t *choices = json_object_get(s, "enum");
    if (choices) {
        size_t i;
        json_t *c;
        int found = 0;
        json_array_foreach(choices, i, c) {
            if (json_equal(c, (json_t *)v)) {
                found = 1;
                break;
            }
        }
        if (!found) {
            char *list = json_dumps(choices, JSON_COMPACT | JSON_ENCODE_ANY);
            http_problem_at(pr, path, "must be one of %s", list ? list : "the schema's enum");
            free(list);
            return -1;
        }
    }
    if (json_is_string(v)) return http_validate_string(s, v, path, pr);
    if (json_is_object(v)) return http_validate_object(s, v, path, pathsize, pr);
    if (json_is_array(v)) {
        const json_t *items = json_object_get(s, "items");
        if (items == NULL) return 0;
        size_t i;
        json_t *el;
        json_array_foreach(v, i, el) {
            char idx[24];
            int n = snprintf(idx, sizeof(idx), "%zu", i);
            if (http_validate_child(items, el, path, pathsize, idx, (size_t)n, pr) < 0) return -1;
        }
    }
    return 0;
}

int http_schema_validate(const json_t *schema, const json_t *value, http_problem *pr) {
    char path[HTTP_FIELD_MAX] = "";
    return http_validate_at(schema, value, path, sizeof(path), pr);
}
