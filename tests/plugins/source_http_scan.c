/*
 * source-http's per-event check: the fast path (plugins/source-http/
 * http_scan.c, a compiled schema walked over the raw text) against the
 * reference (http_event.c + http_schema.c: jansson's tree), compiled in
 * directly.
 *
 * The property that matters: whenever the fast path accepts an event, the
 * reference accepts it too, with the same Kafka key and the same eventId;
 * and what the plugin finally answers (http_event_check: the fast path,
 * then the reference when it gives up) is exactly the reference's verdict,
 * error text and field included.  Checked on a corpus of hand-written
 * events (malformed JSON, duplicate names at depth, deep nesting, huge
 * strings, bad UTF-8, escapes, number limits, every schema keyword) and on
 * generated and mutated ones (a fixed seed, so a failure repeats).  The
 * corpus also pins which events the fast path must take itself, so that it
 * cannot quietly hand everything to the reference.
 */
#include <criterion/criterion.h>

#include "../../plugins/source-http/http_event.c"
#include "../../plugins/source-http/http_scan.c"
#include "../../plugins/source-http/http_schema.c"

#include <stdarg.h>

#define SCHEMAS_DIR CONNECTD_SOURCE_DIR "/pipelines/schemas"

/* ------------------------------------------------------------ fixtures */

/* Deterministic eventIds (valid version 4 UUIDs), so that both paths,
 * run one after the other, assign the same one. */
typedef struct idgen {
    unsigned n;
    int broken; /* no randomness: every call fails */
} idgen;

static int test_gen(void *opaque, char *out) {
    idgen *g = opaque;
    if (g->broken) return -1;
    snprintf(out, HTTP_UUID_LEN + 1, "00000000-0000-4000-8000-%012x", g->n++);
    return 0;
}

typedef struct schema_fx {
    json_t *schema;
    http_cschema *cs;
    http_pointer key;
} schema_fx;

static void fx_open(schema_fx *fx, const char *schema_text, const char *key) {
    json_error_t jerr;
    fx->schema = json_loads(schema_text, JSON_REJECT_DUPLICATES, &jerr);
    cr_assert_not_null(fx->schema, "schema: %s", jerr.text);
    char err[512];
    cr_assert_eq(http_schema_check(fx->schema, err, sizeof(err)), 0, "schema: %s", err);
    fx->cs = http_cschema_compile(fx->schema);
    cr_assert_not_null(fx->cs);
    cr_assert_eq(http_pointer_parse(key, &fx->key, err, sizeof(err)), 0, "%s", err);
}

static void fx_open_file(schema_fx *fx, const char *name, const char *key) {
    char path[1024];
    snprintf(path, sizeof(path), "%s/%s.json", SCHEMAS_DIR, name);
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f, "%s", path);
    static char text[65536];
    size_t n = fread(text, 1, sizeof(text) - 1, f);
    fclose(f);
    text[n] = '\0';
    fx_open(fx, text, key);
}

static void fx_close(schema_fx *fx) {
    http_cschema_free(fx->cs);
    json_decref(fx->schema);
    http_pointer_free(&fx->key);
}

/* What one check decided, copied out of the verdict. */
typedef struct outcome {
    int status, field_null, has_field, assigned;
    char error[HTTP_ERROR_MAX];
    char field[HTTP_FIELD_MAX];
    char key[512];
    size_t keylen;
    char id[HTTP_EVENT_ID_MAX + 1];
    size_t idlen;
} outcome;

static void outcome_of(const http_verdict *v, outcome *o) {
    memset(o, 0, sizeof(*o));
    o->status = v->status;
    o->field_null = v->field_null;
    snprintf(o->error, sizeof(o->error), "%s", v->error);
    if (v->field) {
        o->has_field = 1;
        snprintf(o->field, sizeof(o->field), "%s", v->field);
    }
    if (v->status == 0) {
        cr_assert(v->keylen < sizeof(o->key));
        memcpy(o->key, v->key, v->keylen);
        o->keylen = v->keylen;
        cr_assert(v->event_id_len <= HTTP_EVENT_ID_MAX);
        memcpy(o->id, v->event_id, v->event_id_len);
        o->idlen = v->event_id_len;
        o->assigned = v->assigned;
    }
}

static int outcome_eq(const outcome *a, const outcome *b) {
    return a->status == b->status && a->field_null == b->field_null &&
           a->has_field == b->has_field && strcmp(a->error, b->error) == 0 &&
           strcmp(a->field, b->field) == 0 && a->keylen == b->keylen &&
           memcmp(a->key, b->key, a->keylen) == 0 && a->idlen == b->idlen &&
           memcmp(a->id, b->id, a->idlen) == 0 && a->assigned == b->assigned;
}

/* A printable excerpt of an event for failure messages. */
static const char *shown(const char *text, size_t len) {
    static char buf[400];
    size_t k = 0;
    for (size_t i = 0; i < len && k + 5 < sizeof(buf); i++) {
        unsigned char c = (unsigned char)text[i];
        if (c >= 0x20 && c < 0x7F) {
            buf[k++] = (char)c;
        } else {
            k += (size_t)snprintf(buf + k, sizeof(buf) - k, "\\x%02x", c);
        }
    }
    buf[k] = '\0';
    return buf;
}

typedef struct stats {
    size_t cases, fast, ref_ok;
} stats;

/* Runs both paths and the combined check on one event; asserts the
 * property.  Returns 1 when the fast path took it, 0 when it deferred;
 * *ref gets the reference's outcome. */
static int run_case(const schema_fx *fx, int batch, const char *text, size_t len, int broken_rng,
                    outcome *ref, stats *st) {
    http_verdict v;
    outcome fast, combined;
    idgen g = {.n = 7, .broken = broken_rng};
    int took = http_event_check_fast(fx->cs, &fx->key, text, len, test_gen, &g, &v) == 0;
    if (took) {
        cr_assert_eq(v.status, 0);
        cr_assert_null(v.doc);
        outcome_of(&v, &fast);
        http_verdict_release(&v);
    }
    g.n = 7;
    http_event_check_reference(fx->schema, &fx->key, batch, text, len, test_gen, &g, &v);
    outcome_of(&v, ref);
    http_verdict_release(&v);
    g.n = 7;
    http_event_check(fx->schema, fx->cs, &fx->key, batch, text, len, test_gen, &g, &v);
    cr_assert_eq(v.fast, took, "http_event_check and the fast path disagree on who decided");
    outcome_of(&v, &combined);
    http_verdict_release(&v);
    if (took)
        cr_assert(outcome_eq(&fast, ref),
                  "fast path accepted what the reference answers %d \"%s\" (field %s), or with "
                  "another key/eventId: %s",
                  ref->status, ref->error, ref->field, shown(text, len));
    cr_assert(outcome_eq(&combined, ref),
              "the combined check differs from the reference (%d \"%s\" vs %d \"%s\"): %s",
              combined.status, combined.error, ref->status, ref->error, shown(text, len));
    if (st) {
        st->cases++;
        st->fast += (size_t)took;
        st->ref_ok += ref->status == 0;
    }
    return took;
}

enum { DEFER = 0, FAST = 1, EITHER = 2 };

/* One corpus case: the reference's status (and error text when want_error
 * is not NULL, as a prefix) and who must decide. */
static void expect(const schema_fx *fx, const char *text, int want_status, const char *want_error,
                   int who) {
    outcome ref;
    int took = run_case(fx, 0, text, strlen(text), 0, &ref, NULL);
    cr_assert_eq(ref.status, want_status, "status %d (\"%s\", field %s), expected %d: %s",
                 ref.status, ref.error, ref.field, want_status, shown(text, strlen(text)));
    if (want_error)
        cr_assert(strncmp(ref.error, want_error, strlen(want_error)) == 0,
                  "error \"%s\", expected \"%s...\": %s", ref.error, want_error,
                  shown(text, strlen(text)));
    if (who != EITHER)
        cr_assert_eq(took, who, "the fast path %s: %s", took ? "took it" : "deferred",
                     shown(text, strlen(text)));
}

static const char *fmt(const char *f, ...) CD_PRINTF(1, 2);

static const char *fmt(const char *f, ...) {
    static char bufs[4][8192];
    static int which;
    char *b = bufs[which++ & 3];
    va_list ap;
    va_start(ap, f);
    vsnprintf(b, sizeof(bufs[0]), f, ap);
    va_end(ap);
    return b;
}

#define KYC_DATA "\"data\":{\"status\":\"VERIFIED\",\"riskLevel\":\"LOW\"}"
#define KYC_HEAD                                                                                   \
    "\"customerId\":\"cust-0001\",\"applicationId\":\"app-1\",\"timestamp\":\"2024-05-01T12:00:"   \
    "00.000Z\""
#define KYC_ID "\"eventId\":\"6f1c2a9e-4b3d-4e5f-8a7b-0c1d2e3f4a5b\""

/* --------------------------------------------------- the onboarding events */

Test(source_http_scan, valid_kyc_events_take_the_fast_path) {
    schema_fx fx;
    fx_open_file(&fx, "kyc-verified", "/customerId");
    expect(&fx, "{" KYC_HEAD "," KYC_DATA "}", 0, NULL, FAST);
    expect(&fx, "{" KYC_ID "," KYC_HEAD "," KYC_DATA "}", 0, NULL, FAST);
    expect(&fx, " \r\n\t{ " KYC_HEAD " , " KYC_DATA " } \n", 0, NULL, FAST);
    expect(&fx,
           "{\"eventType\":\"kyc-verified\"," KYC_HEAD ",\"data\":{\"status\":\"PENDING_REVIEW\","
           "\"riskLevel\":\"HIGH\",\"score\":0.731,\"checks\":{\"document\":\"passport\","
           "\"country\":\"GB\",\"note\":\"Mozilla/5.0 (X11; Linux x86_64) \\\"quoted\\\" "
           "caf\xc3\xa9 \xf0\x9f\x98\x80 \\u00e9\\ud83d\\ude00\",\"n\":[1,-2,3.5e-3,true,null,{}]"
           "}}}",
           0, NULL, FAST);
    /* Offsets into the bench's own event shape: the whole value must match. */
    outcome ref;
    const char *ev = "{" KYC_HEAD "," KYC_DATA "}";
    cr_assert_eq(run_case(&fx, 0, ev, strlen(ev), 0, &ref, NULL), 1);
    cr_assert_eq(ref.keylen, 9);
    cr_assert_eq(memcmp(ref.key, "cust-0001", 9), 0);
    cr_assert_eq(ref.assigned, 1);
    cr_assert_eq(ref.idlen, 36);
    cr_assert_eq(memcmp(ref.id, "00000000-0000-4000-8000-000000000007", 36), 0);
    fx_close(&fx);
}

Test(source_http_scan, schema_violations_are_answered_by_the_reference) {
    schema_fx fx;
    fx_open_file(&fx, "kyc-verified", "/customerId");
    expect(&fx, "{" KYC_HEAD "}", 400, "required field is missing", DEFER);
    expect(&fx, "{" KYC_HEAD "," KYC_DATA ",\"customerID\":\"x\"}", 400, "unknown field", DEFER);
    expect(&fx, "{" KYC_HEAD ",\"data\":{\"status\":\"DONE\",\"riskLevel\":\"LOW\"}}", 400,
           "must be one of [\"VERIFIED\"", DEFER);
    expect(&fx, "{" KYC_HEAD ",\"data\":{\"status\":\"VERIFIED\"}}", 400,
           "required field is missing", DEFER);
    expect(&fx,
           "{" KYC_HEAD ",\"data\":{\"status\":\"VERIFIED\",\"riskLevel\":\"LOW\",\"score\":"
           "\"1\"}}",
           400, "expected number, got string", DEFER);
    expect(&fx, "{" KYC_HEAD ",\"data\":[]}", 400, "expected object, got array", DEFER);
    expect(&fx,
           "{\"customerId\":\"\",\"applicationId\":\"a\",\"timestamp\":\"2024-05-01T12:00:00Z\","
           "" KYC_DATA "}",
           400, "must be at least 1 character(s) long", DEFER);
    expect(&fx,
           "{\"customerId\":\"c\",\"applicationId\":\"a\",\"timestamp\":\"2024-02-30T12:00:00Z\","
           "" KYC_DATA "}",
           400, "must be an RFC 3339 date-time", DEFER);
    expect(&fx, "{\"eventId\":\"not-a-uuid\"," KYC_HEAD "," KYC_DATA "}", 400, "must be a UUID",
           DEFER);
    expect(&fx, "{\"eventId\":7," KYC_HEAD "," KYC_DATA "}", 400, "must be a string (a UUID)",
           DEFER);
    expect(&fx, "{\"eventId\":\"\"," KYC_HEAD "," KYC_DATA "}", 400, "must be 1 to 128 bytes",
           DEFER);
    char longid[300];
    memset(longid, 'a', 129);
    longid[129] = '\0';
    expect(&fx, fmt("{\"eventId\":\"%s\"," KYC_HEAD "," KYC_DATA "}", longid), 400,
           "must be 1 to 128 bytes", DEFER);
    /* 129 characters, 128 code points: the length limits count code points. */
    char cps[300];
    memset(cps, 'c', 126);
    memcpy(cps + 126, "\xc3\xa9", 3);
    expect(&fx,
           fmt("{\"customerId\":\"%s\",\"applicationId\":\"a\",\"timestamp\":\"2024-05-01T12:00:"
               "00Z\"," KYC_DATA "}",
               cps),
           0, NULL, FAST);
    memcpy(cps + 126, "\xc3\xa9x", 4);
    expect(&fx,
           fmt("{\"customerId\":\"%s\",\"applicationId\":\"a\",\"timestamp\":\"2024-05-01T12:00:"
               "00Z\"," KYC_DATA "}",
               cps),
           0, NULL, FAST);
    memcpy(cps + 126, "\xc3\xa9xy", 5);
    expect(&fx,
           fmt("{\"customerId\":\"%s\",\"applicationId\":\"a\",\"timestamp\":\"2024-05-01T12:00:"
               "00Z\"," KYC_DATA "}",
               cps),
           400, "must be at most 128 character(s) long", DEFER);
    fx_close(&fx);
}

/* ------------------------------------------------------------ JSON itself */

Test(source_http_scan, malformed_json_is_the_references_400) {
    schema_fx fx;
    fx_open(&fx, "{\"type\":\"object\"}", "/k");
    static const char *const bad[] = {
        "",
        "   ",
        "{",
        "}",
        "{\"k\":\"v\"",
        "{\"k\":\"v\"}}",
        "{\"k\":\"v\"} x",
        "{\"k\" \"v\"}",
        "{\"k\":\"v\",}",
        "{,\"k\":\"v\"}",
        "{\"k\":\"v\" \"l\":1}",
        "{k:\"v\"}",
        "{'k':'v'}",
        "\xef\xbb\xbf{\"k\":\"v\"}",
        "{\"k\":truex}",
        "{\"k\":tru}",
        "{\"k\":nul}",
        "{\"k\":True}",
        "{\"k\":01}",
        "{\"k\":1.}",
        "{\"k\":.5}",
        "{\"k\":-}",
        "{\"k\":1e}",
        "{\"k\":1e+}",
        "{\"k\":+1}",
        "{\"k\":0x10}",
        "{\"k\":NaN}",
        "{\"k\":Infinity}",
        "{\"k\":1-2}",
        "{\"k\":[1,]}",
        "{\"k\":[,1]}",
        "{\"k\":[1 2]}",
        "{\"k\":\"a\nb\"}",
        "{\"k\":\"a\tb\"}",
        "{\"k\":\"a\x01\"}",
        "{\"k\":\"\\x41\"}",
        "{\"k\":\"\\u12\"}",
        "{\"k\":\"\\u12G4\"}",
        "{\"k\":\"\\\"}",
        "{\"k\":\"v\\\"}",
        "{\"k\":\"\\u0000\"}",
        "{\"k\":\"a\\u0000b\"}",
        "{\"k\\u0000\":\"v\"}",
        "{\"k\":\"\\ud800\"}",
        "{\"k\":\"\\udc00\\ud800\"}",
        "{\"k\":\"\\ud800\\u0041\"}",
        "{\"k\":\"\\ud800x\"}",
        "{\"k\":\"\xc0\x80\"}",
        "{\"k\":\"\xc1\xbf\"}",
        "{\"k\":\"\xe0\x80\x80\"}",
        "{\"k\":\"\xed\xa0\x80\"}",
        "{\"k\":\"\xf4\x90\x80\x80\"}",
        "{\"k\":\"\xf5\x80\x80\x80\"}",
        "{\"k\":\"\xff\"}",
        "{\"k\":\"\x80\"}",
        "{\"k\":\"\xc3\"}",
        "{\"k\":\"\xe2\x82\"}",
        "{\"k\":\"v\"}\xc3\xa9",
        "{\"k\":9223372036854775808}",
        "{\"k\":-9223372036854775809}",
        "{\"k\":123456789012345678901234567890}",
        "{\"k\":1e309}",
        "{\"k\":-1.8e308}",
        "{\"k\":1e400000000}",
        "{\"k\":\"v\",\"k\":\"v\"}",
        "{\"k\":\"v\",\"a\":{\"x\":1,\"y\":2,\"x\":3}}",
        "{\"k\":\"v\",\"a\":[{\"x\":1},{\"x\":1,\"x\":1}]}",
        "[]",
        "[{\"k\":\"v\"}]",
        "\"k\"",
        "42",
        "null",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        outcome ref;
        int took = run_case(&fx, 0, bad[i], strlen(bad[i]), 0, &ref, NULL);
        cr_assert_eq(ref.status, 400, "accepted: %s", shown(bad[i], strlen(bad[i])));
        cr_assert_eq(took, 0);
    }
    /* NUL bytes, outside and inside a string; jansson skips one right after
     * a number or a literal (and takes the event, NUL included in the
     * record): the fast path leaves all of them to it. */
    static const char nul1[] = "{\"k\":\"v\"}\0", nul2[] = "{\"k\":\"v\0\"}",
                      nul3[] = "{\"k\":\"v\",\"n\":1\0}", nul4[] = "{\"k\":\"v\",\"n\":true\0}",
                      nul5[] = "{\"k\":\"v\",\"n\":1 \0}";
    outcome ref;
    cr_assert_eq(run_case(&fx, 0, nul1, sizeof(nul1) - 1, 0, &ref, NULL), 0);
    cr_assert_eq(ref.status, 400);
    cr_assert_eq(run_case(&fx, 0, nul2, sizeof(nul2) - 1, 0, &ref, NULL), 0);
    cr_assert_eq(ref.status, 400);
    cr_assert_eq(run_case(&fx, 0, nul3, sizeof(nul3) - 1, 0, &ref, NULL), 0);
    cr_assert_eq(ref.status, 0);
    cr_assert_eq(run_case(&fx, 0, nul4, sizeof(nul4) - 1, 0, &ref, NULL), 0);
    cr_assert_eq(ref.status, 0);
    cr_assert_eq(run_case(&fx, 0, nul5, sizeof(nul5) - 1, 0, &ref, NULL), 0);
    cr_assert_eq(ref.status, 400);
    /* Where jansson draws the line, and the fast path with it. */
    expect(&fx, "{\"k\":\"v\",\"n\":9223372036854775807}", 0, NULL, EITHER);
    expect(&fx, "{\"k\":\"v\",\"n\":-9223372036854775808}", 0, NULL, EITHER);
    expect(&fx, "{\"k\":\"v\",\"n\":999999999999999999}", 0, NULL, FAST);
    expect(&fx, "{\"k\":\"v\",\"n\":1.7e308}", 0, NULL, EITHER);
    expect(&fx, "{\"k\":\"v\",\"n\":1e307,\"m\":-1e-400,\"o\":0e99999999}", 0, NULL, EITHER);
    expect(&fx, "{\"k\":\"v\",\"n\":1e-400}", 0, NULL, FAST);
    /* An exponent padded with zeros is as small as its value: 1 and 400
     * zeros e-0000001 is 1e399, which jansson refuses, and the fast path
     * must not take it for an underflow; 1e-0000001 is just 0.1. */
    {
        char big[512];
        size_t n = (size_t)snprintf(big, sizeof(big), "{\"k\":\"v\",\"n\":1");
        memset(big + n, '0', 400);
        snprintf(big + n + 400, sizeof(big) - n - 400, "e-0000001}");
        expect(&fx, big, 400, "invalid JSON", DEFER);
    }
    expect(&fx, "{\"k\":\"v\",\"n\":1e-0000001,\"m\":2E+000000300}", 0, NULL, FAST);
    expect(&fx, "{\"k\":\"v\",\"n\":-0,\"m\":-0.0,\"o\":0E+0,\"p\":1E-2}", 0, NULL, FAST);
    expect(&fx, "{\"k\":\"v\",\"s\":\"\\u0001\\ud83d\\ude00\\/\\b\\f\\n\\r\\t\\\"\\\\\"}", 0, NULL,
           FAST);
    expect(&fx, "{\"k\":\"v\",\"s\":\"\x7f\xf4\x8f\xbf\xbf\xef\xbf\xbf\"}", 0, NULL, FAST);
    expect(&fx, "{\"k\":\"v\",\"a\":{\"x\":1,\"y\":{\"x\":1}},\"b\":{\"x\":1}}", 0, NULL, FAST);
    /* Escaped member names: the fast path leaves them to the reference,
     * which also catches a duplicate spelled two ways. */
    expect(&fx, "{\"k\":\"v\",\"\\u0061\":1}", 0, NULL, DEFER);
    expect(&fx, "{\"k\":\"v\",\"a\":1,\"\\u0061\":1}", 400,
           "invalid JSON at line 1, column 23: duplicate object key", DEFER);
    expect(&fx, "{\"\\u006b\":\"v\"}", 0, NULL, DEFER);
    fx_close(&fx);
}

Test(source_http_scan, nesting_and_size_limits) {
    schema_fx fx;
    fx_open(&fx, "{\"type\":\"object\"}", "/k");
    static char doc[1 << 16];
    /* Depth: the fast path follows HS_MAX_DEPTH open containers; jansson
     * refuses a value below more than 2047 of them. */
    int depths[] = {2, 63, 64, 65, 100, 2047, 2048, 3000};
    for (size_t d = 0; d < sizeof(depths) / sizeof(depths[0]); d++) {
        int depth = depths[d];
        size_t n = (size_t)sprintf(doc, "{\"k\":\"v\",\"a\":");
        for (int i = 1; i < depth; i++) {
            if (i & 1) {
                doc[n++] = '[';
            } else {
                n += (size_t)sprintf(doc + n, "{\"x\":");
            }
        }
        doc[n++] = '1';
        for (int i = depth - 1; i >= 1; i--)
            doc[n++] = (i & 1) ? ']' : '}';
        doc[n++] = '}';
        outcome ref;
        int took = run_case(&fx, 0, doc, n, 0, &ref, NULL);
        cr_assert_eq(ref.status, depth <= 2047 ? 0 : 400, "depth %d: %s", depth, ref.error);
        cr_assert_eq(took, depth <= HS_MAX_DEPTH, "depth %d", depth);
    }
    /* A 1 MiB string, and a 1 MiB string of multi-byte characters. */
    size_t big = 1 << 20;
    char *huge = malloc(big + 64);
    cr_assert_not_null(huge);
    for (int pass = 0; pass < 2; pass++) {
        size_t n = (size_t)sprintf(huge, "{\"k\":\"v\",\"s\":\"");
        while (n < big) {
            if (pass == 0) {
                huge[n] = (char)('a' + n % 26);
                n++;
            } else {
                memcpy(huge + n, "\xe2\x82\xac", 3);
                n += 3;
            }
        }
        memcpy(huge + n, "\"}", 2);
        n += 2;
        outcome ref;
        cr_assert_eq(run_case(&fx, 0, huge, n, 0, &ref, NULL), 1);
        cr_assert_eq(ref.status, 0);
        /* Cut inside the string: unterminated. */
        cr_assert_eq(run_case(&fx, 0, huge, n - 2, 0, &ref, NULL), 0);
        cr_assert_eq(ref.status, 400);
    }
    free(huge);
    /* Many members: distinct ones within HS_MAX_KEYS go fast, a duplicate
     * among them does not, and beyond the limit the reference decides. */
    for (int count = 10; count <= 400; count += 130) {
        for (int dup = 0; dup < 2; dup++) {
            size_t n = (size_t)sprintf(doc, "{\"k\":\"v\"");
            for (int i = 0; i < count; i++)
                n += (size_t)sprintf(doc + n, ",\"m%d\":%d", dup && i == count - 1 ? 3 : i, i);
            doc[n++] = '}';
            outcome ref;
            int took = run_case(&fx, 0, doc, n, 0, &ref, NULL);
            cr_assert_eq(ref.status, dup ? 400 : 0);
            cr_assert_eq(took, !dup && count + 1 <= HS_MAX_KEYS, "count %d", count);
        }
    }
    fx_close(&fx);
}

/* --------------------------------------------------------- every keyword */

static const char *const rich_schema =
    "{\"type\":\"object\",\"required\":[\"n\",\"tags\"],"
    "\"properties\":{"
    "\"eventId\":{\"type\":\"string\",\"minLength\":3},"
    "\"n\":{\"type\":[\"integer\",\"null\"]},"
    "\"x\":{\"type\":[\"number\",\"string\",\"boolean\",\"null\",\"object\",\"array\"],"
    "\"enum\":[1,2.5,-3,\"a\",true,null,{\"k\":1},[1]]},"
    "\"i\":{\"type\":\"integer\"},"
    "\"s\":{\"type\":\"string\",\"minLength\":2,\"maxLength\":4},"
    "\"when\":{\"type\":\"string\",\"format\":\"date-time\"},"
    "\"u\":{\"format\":\"uuid\"},"
    "\"b\":{\"type\":\"boolean\",\"enum\":[false]},"
    "\"tags\":{\"type\":\"array\",\"items\":{\"type\":\"string\",\"enum\":[\"a\",\"b\","
    "\"\xc3\xa9\"]}},"
    "\"obj\":{\"type\":\"object\",\"required\":[\"r\"],\"properties\":{\"r\":{\"type\":"
    "\"string\"}},\"additionalProperties\":{\"type\":\"integer\"}},"
    "\"any\":{\"title\":\"anything\"},"
    "\"grid\":{\"items\":{\"items\":{\"type\":\"number\"}}},"
    "\"a/b\":{\"type\":\"number\"}"
    "},"
    "\"additionalProperties\":{\"type\":[\"string\",\"object\",\"array\"]}}";

Test(source_http_scan, every_keyword_means_what_the_reference_says) {
    schema_fx fx;
    fx_open(&fx, rich_schema, "/obj/r");
    const char *base = "\"n\":1,\"tags\":[\"a\"],\"obj\":{\"r\":\"key-1\"}";
    expect(&fx, fmt("{%s}", base), 0, NULL, FAST);
    /* type: integer takes 1.0 and 1e2, not 1.5; an array of types. */
    expect(&fx, fmt("{%s,\"i\":1.0}", base), 0, NULL, FAST);
    expect(&fx, fmt("{%s,\"i\":1e2}", base), 0, NULL, FAST);
    expect(&fx, fmt("{%s,\"i\":-0.0}", base), 0, NULL, FAST);
    expect(&fx, fmt("{%s,\"i\":1.5}", base), 400, "expected integer, got number", DEFER);
    expect(&fx, fmt("{%s,\"i\":\"1\"}", base), 400, "expected integer, got string", DEFER);
    expect(&fx, "{\"n\":null,\"tags\":[],\"obj\":{\"r\":\"k\"}}", 0, NULL, FAST);
    expect(&fx, "{\"n\":true,\"tags\":[],\"obj\":{\"r\":\"k\"}}", 400,
           "expected integer or null, got boolean", DEFER);
    expect(&fx, "{\"n\":2.0,\"tags\":[],\"obj\":{\"r\":\"k\"}}", 0, NULL, FAST);
    /* enum: JSON equality, so 1 is not 1.0 and 2.5 is 2.50. */
    expect(&fx, fmt("{%s,\"x\":1}", base), 0, NULL, FAST);
    expect(&fx, fmt("{%s,\"x\":1.0}", base), 400, "must be one of", DEFER);
    expect(&fx, fmt("{%s,\"x\":2.50}", base), 0, NULL, FAST);
    expect(&fx, fmt("{%s,\"x\":25e-1}", base), 0, NULL, FAST);
    expect(&fx, fmt("{%s,\"x\":-3}", base), 0, NULL, FAST);
    expect(&fx, fmt("{%s,\"x\":3}", base), 400, "must be one of", DEFER);
    expect(&fx, fmt("{%s,\"x\":\"a\"}", base), 0, NULL, FAST);
    expect(&fx, fmt("{%s,\"x\":\"\\u0061\"}", base), 0, NULL, DEFER);
    expect(&fx, fmt("{%s,\"x\":\"b\"}", base), 400, "must be one of", DEFER);
    expect(&fx, fmt("{%s,\"x\":true}", base), 0, NULL, FAST);
    expect(&fx, fmt("{%s,\"x\":false}", base), 400, "must be one of", DEFER);
    expect(&fx, fmt("{%s,\"x\":null}", base), 0, NULL, FAST);
    expect(&fx, fmt("{%s,\"x\":{\"k\":1}}", base), 0, NULL, DEFER);
    expect(&fx, fmt("{%s,\"x\":{\"k\":2}}", base), 400, "must be one of", DEFER);
    expect(&fx, fmt("{%s,\"x\":[1]}", base), 0, NULL, DEFER);
    expect(&fx, fmt("{%s,\"b\":false}", base), 0, NULL, FAST);
    expect(&fx, fmt("{%s,\"b\":true}", base), 400, "must be one of [false]", DEFER);
    /* minLength / maxLength in code points; escapes go to the reference. */
    expect(&fx, fmt("{%s,\"s\":\"ab\"}", base), 0, NULL, FAST);
    expect(&fx, fmt("{%s,\"s\":\"\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\"}", base), 0, NULL, FAST);
    expect(&fx, fmt("{%s,\"s\":\"\xf0\x9f\x98\x80\xf0\x9f\x98\x80\"}", base), 0, NULL, FAST);
    expect(&fx, fmt("{%s,\"s\":\"a\"}", base), 400, "must be at least 2", DEFER);
    expect(&fx, fmt("{%s,\"s\":\"abcde\"}", base), 400, "must be at most 4", DEFER);
    expect(&fx, fmt("{%s,\"s\":\"\\ud83d\\ude00\\n\"}", base), 0, NULL, DEFER);
    expect(&fx, fmt("{%s,\"s\":\"\\ud83d\\ude00\"}", base), 400, "must be at least 2", DEFER);
    /* format */
    expect(&fx, fmt("{%s,\"when\":\"2024-02-29T23:59:60.5+02:00\"}", base), 0, NULL, FAST);
    expect(&fx, fmt("{%s,\"when\":\"2023-02-29T00:00:00Z\"}", base), 400, "must be an RFC 3339",
           DEFER);
    expect(&fx, fmt("{%s,\"u\":\"6F1C2A9E-4B3D-4E5F-8A7B-0C1D2E3F4A5B\"}", base), 0, NULL, FAST);
    expect(&fx, fmt("{%s,\"u\":42}", base), 0, NULL, FAST); /* format only asserts on strings */
    expect(&fx, fmt("{%s,\"u\":\"6f1c2a9e\"}", base), 400, "must be a UUID", DEFER);
    /* items, nested */
    expect(&fx, fmt("{%s,\"tags\":[\"a\",\"\xc3\xa9\",\"b\"]}", "\"n\":1,\"obj\":{\"r\":\"k\"}"), 0,
           NULL, FAST);
    expect(&fx, "{\"n\":1,\"tags\":[\"a\",\"c\"],\"obj\":{\"r\":\"k\"}}", 400, "must be one of",
           DEFER);
    expect(&fx, fmt("{%s,\"grid\":[[1,2.5],[],[-1e5]]}", base), 0, NULL, FAST);
    expect(&fx, fmt("{%s,\"grid\":[[1,\"2\"]]}", base), 400, "expected number, got string", DEFER);
    expect(&fx, fmt("{%s,\"grid\":{\"not\":\"an array\"}}", base), 0, NULL, FAST);
    /* required, additionalProperties as a schema, at the root and below */
    expect(&fx, "{\"n\":1,\"obj\":{\"r\":\"k\"}}", 400, "required field is missing", DEFER);
    expect(&fx, fmt("{%s,\"extra\":\"s\",\"more\":{},\"list\":[]}", base), 0, NULL, FAST);
    expect(&fx, fmt("{%s,\"extra\":1}", base), 400,
           "expected string or object or array, got integer", DEFER);
    expect(&fx, "{\"n\":1,\"tags\":[],\"obj\":{\"r\":\"k\",\"z\":3}}", 0, NULL, FAST);
    expect(&fx, "{\"n\":1,\"tags\":[],\"obj\":{\"r\":\"k\",\"z\":\"3\"}}", 400,
           "expected integer, got string", DEFER);
    expect(&fx, "{\"n\":1,\"tags\":[],\"obj\":{\"z\":3}}", 400, "required field is missing", DEFER);
    expect(&fx, fmt("{%s,\"any\":[{\"a\":[{\"b\":null}]},\"\\u00e9\",1e-5]}", base), 0, NULL, FAST);
    expect(&fx, fmt("{%s,\"a/b\":1}", base), 0, NULL, FAST);
    /* eventId: assigned (3+ characters: the UUID passes) or the client's. */
    expect(&fx, fmt("{%s,\"eventId\":\"abc\"}", base), 0, NULL, FAST);
    expect(&fx, fmt("{%s,\"eventId\":\"ab\"}", base), 400, "must be at least 3", DEFER);
    expect(&fx, fmt("{%s,\"eventId\":\"a\\u0062c\"}", base), 0, NULL, DEFER);
    fx_close(&fx);
}

Test(source_http_scan, keys_are_the_references_keys) {
    schema_fx fx;
    fx_open(&fx, rich_schema, "/obj/r");
    const char *tail = "\"n\":1,\"tags\":[\"a\"]";
    outcome ref;
    const char *d = fmt("{%s,\"obj\":{\"q\":1,\"r\":\"k\\u00e9\"}}", tail);
    cr_assert_eq(run_case(&fx, 0, d, strlen(d), 0, &ref, NULL), 0); /* escaped key: reference */
    cr_assert_eq(ref.status, 0);
    cr_assert_eq(ref.keylen, 3);
    expect(&fx, fmt("{%s,\"obj\":{\"r\":\"\"}}", tail), 400, "the Kafka key must not be empty",
           DEFER);
    fx_close(&fx);

    /* Numbers: their text as the reference prints it. */
    static const char *const nums[] = {"0",    "-0",    "42",     "-42",       "999999999999999999",
                                       "1.0",  "1.5",   "-2.5e3", "1e-7",      "0.1",
                                       "1E+2", "1e300", "1e-400", "123.456e-2"};
    fx_open(&fx, "{\"type\":\"object\"}", "/k");
    for (size_t i = 0; i < sizeof(nums) / sizeof(nums[0]); i++) {
        d = fmt("{\"k\":%s}", nums[i]);
        cr_assert_eq(run_case(&fx, 0, d, strlen(d), 0, &ref, NULL), 1, "%s", d);
        cr_assert_eq(ref.status, 0);
    }
    expect(&fx, "{\"k\":true}", 400, "the Kafka key must be a string or a number", DEFER);
    expect(&fx, "{\"k\":{}}", 400, "the Kafka key must be a string or a number", DEFER);
    expect(&fx, "{\"j\":1}", 400, "the Kafka key field is missing", DEFER);
    expect(&fx, "{\"k\":\"a\\\"b\"}", 0, NULL, DEFER);
    fx_close(&fx);

    /* Pointers through arrays and escaped names; the eventId as the key. */
    static const struct {
        const char *ptr, *doc;
        int status, who;
        const char *key;
    } cases[] = {
        {"/a/1", "{\"a\":[\"x\",\"y\"]}", 0, FAST, "y"},
        {"/a/0", "{\"a\":[ \"x\" , \"y\"]}", 0, FAST, "x"},
        {"/a/2", "{\"a\":[\"x\",\"y\"]}", 400, DEFER, NULL},
        {"/a/01", "{\"a\":[\"x\",\"y\"]}", 400, DEFER, NULL},
        {"/a/-", "{\"a\":[\"x\",\"y\"]}", 400, DEFER, NULL},
        {"/a/0", "{\"a\":[]}", 400, DEFER, NULL},
        {"/a/b", "{\"a\":{\"c\":[1,{\"b\":2}],\"b\":{\"x\":\"}\"},\"d\":3}}", 400, DEFER, NULL},
        {"/a/d", "{\"a\":{\"c\":[1,{\"b\":2}],\"b\":{\"x\":\"}]\\\"\"},\"d\":3}}", 0, FAST, "3"},
        {"/a~1b/c~0d", "{\"a/b\":{\"c~d\":\"k\"}}", 0, FAST, "k"},
        {"/", "{\"\":\"empty name\"}", 0, FAST, "empty name"},
        {"/eventId", "{\"x\":1}", 0, FAST, "00000000-0000-4000-8000-000000000007"},
        {"/eventId", "{\"eventId\":\"mine\"}", 0, FAST, "mine"},
        {"/eventId/x", "{\"x\":1}", 400, DEFER, NULL},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        fx_open(&fx, "{\"type\":\"object\"}", cases[i].ptr);
        expect(&fx, cases[i].doc, cases[i].status, NULL, cases[i].who);
        if (cases[i].key) {
            run_case(&fx, 0, cases[i].doc, strlen(cases[i].doc), 0, &ref, NULL);
            cr_assert_eq(ref.keylen, strlen(cases[i].key), "%s", cases[i].ptr);
            cr_assert_eq(memcmp(ref.key, cases[i].key, ref.keylen), 0, "%s", cases[i].ptr);
        }
        fx_close(&fx);
    }
}

Test(source_http_scan, schemas_that_refuse_every_assigned_id) {
    schema_fx fx;
    /* A name only in "required" is still unknown to additionalProperties. */
    fx_open(&fx,
            "{\"type\":\"object\",\"required\":[\"a\",\"ghost\"],\"properties\":{\"a\":{}},"
            "\"additionalProperties\":false}",
            "/a");
    expect(&fx, "{\"a\":\"k\"}", 400, "required field is missing", DEFER);
    expect(&fx, "{\"a\":\"k\",\"ghost\":1}", 400, "unknown field", DEFER);
    fx_close(&fx);
    fx_open(&fx, "{\"type\":\"object\",\"properties\":{\"eventId\":{\"enum\":[\"fixed\"]}}}", "/k");
    expect(&fx, "{\"k\":\"v\"}", 400, "must be one of [\"fixed\"]", DEFER);
    expect(&fx, "{\"k\":\"v\",\"eventId\":\"fixed\"}", 0, NULL, FAST);
    fx_close(&fx);
    fx_open(&fx, "{\"type\":\"object\",\"additionalProperties\":false,\"properties\":{\"k\":{}}}",
            "/k");
    expect(&fx, "{\"k\":\"v\"}", 400, "unknown field", DEFER);
    fx_close(&fx);
    fx_open(&fx,
            "{\"type\":\"object\",\"properties\":{\"k\":{}},\"additionalProperties\":{\"type\":"
            "\"string\",\"maxLength\":36,\"format\":\"uuid\"}}",
            "/k");
    expect(&fx, "{\"k\":\"v\"}", 0, NULL, FAST);
    expect(&fx, "{\"k\":\"v\",\"x\":\"y\"}", 400, "must be a UUID", DEFER);
    fx_close(&fx);
    /* No randomness: the reference's 503, whoever looks first. */
    fx_open_file(&fx, "kyc-verified", "/customerId");
    outcome ref;
    const char *d = "{" KYC_HEAD "," KYC_DATA "}";
    cr_assert_eq(run_case(&fx, 0, d, strlen(d), 1, &ref, NULL), 0);
    cr_assert_eq(ref.status, 503);
    d = "{" KYC_ID "," KYC_HEAD "," KYC_DATA "}";
    cr_assert_eq(run_case(&fx, 0, d, strlen(d), 1, &ref, NULL), 1);
    cr_assert_eq(ref.status, 0);
    fx_close(&fx);
}

Test(source_http_scan, batch_lines_report_columns) {
    schema_fx fx;
    fx_open(&fx, "{\"type\":\"object\"}", "/k");
    outcome ref;
    const char *d = "{\"k\":\"v\",}\r";
    run_case(&fx, 1, d, strlen(d), 0, &ref, NULL);
    cr_assert_eq(ref.status, 400);
    cr_assert(strncmp(ref.error, "invalid JSON at column ", 23) == 0, "%s", ref.error);
    d = "{\"k\":\"v\"}\r";
    cr_assert_eq(run_case(&fx, 1, d, strlen(d), 0, &ref, NULL), 1);
    fx_close(&fx);
}

/* ------------------------------------------------- generated and mutated */

static uint64_t rng_state;

static uint64_t rnd(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

static size_t rndn(size_t n) {
    return (size_t)(rnd() % n);
}

typedef struct gbuf {
    char *p;
    size_t n, cap;
} gbuf;

static void gput(gbuf *b, const char *s, size_t n) {
    if (b->n + n + 1 > b->cap) {
        b->cap = (b->n + n + 1) * 2;
        b->p = realloc(b->p, b->cap);
        cr_assert_not_null(b->p);
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = '\0';
}

static void gputs(gbuf *b, const char *s) {
    gput(b, s, strlen(s));
}

static void gws(gbuf *b) {
    static const char *const ws[] = {"", "", "", " ", "\n", "\t", "\r\n  "};
    gputs(b, ws[rndn(sizeof(ws) / sizeof(ws[0]))]);
}

static const char *const pieces[] = {"a",
                                     "b",
                                     "\xc3\xa9",
                                     "\xe2\x82\xac",
                                     "\xf0\x9f\x98\x80",
                                     "\\n",
                                     "\\\"",
                                     "\\u00e9",
                                     "\\u0061",
                                     "\\ud83d\\ude00",
                                     "\\/",
                                     "x y",
                                     "2024",
                                     "-",
                                     ":",
                                     "}",
                                     "]",
                                     "\\\\",
                                     "LOW",
                                     "a"};

static void gstring(gbuf *b, int allow_escapes) {
    gputs(b, "\"");
    size_t n = rndn(6);
    for (size_t i = 0; i < n; i++) {
        const char *p = pieces[rndn(sizeof(pieces) / sizeof(pieces[0]))];
        if (!allow_escapes && p[0] == '\\') p = "z";
        gputs(b, p);
    }
    gputs(b, "\"");
}

static const char *const numbers[] = {"0",
                                      "-0",
                                      "1",
                                      "-3",
                                      "2.5",
                                      "2.50",
                                      "25e-1",
                                      "1.0",
                                      "1e2",
                                      "1.5",
                                      "-1e5",
                                      "0.001",
                                      "1e-400",
                                      "1e307",
                                      "1.7e308",
                                      "9223372036854775807",
                                      "12345",
                                      "3.0e0",
                                      "-0.0",
                                      "7",
                                      "1E+1",
                                      "100",
                                      "123456789012345678"};

static void gvalue(gbuf *b, int depth);

static void gobject(gbuf *b, int depth) {
    gputs(b, "{");
    size_t n = rndn(4);
    static const char *const names[] = {"a", "b", "k", "r", "z", "\\u0061", "x", "n"};
    for (size_t i = 0; i < n; i++) {
        if (i) gputs(b, ",");
        gws(b);
        gputs(b, "\"");
        gputs(b, names[rndn(sizeof(names) / sizeof(names[0]))]);
        gputs(b, "\"");
        gws(b);
        gputs(b, ":");
        gws(b);
        gvalue(b, depth + 1);
        gws(b);
    }
    gputs(b, "}");
}

static void gvalue(gbuf *b, int depth) {
    size_t pick = rndn(depth > 4 ? 7 : 9);
    switch (pick) {
    case 0:
    case 1:
        gstring(b, rndn(4) == 0);
        break;
    case 2:
    case 3:
        gputs(b, numbers[rndn(sizeof(numbers) / sizeof(numbers[0]))]);
        break;
    case 4:
        gputs(b, rndn(2) ? "true" : "false");
        break;
    case 5:
        gputs(b, "null");
        break;
    case 6:
        gputs(b, "\"a\"");
        break;
    case 7:
        gobject(b, depth);
        break;
    default: {
        gputs(b, "[");
        size_t n = rndn(4);
        for (size_t i = 0; i < n; i++) {
            if (i) gputs(b, ",");
            gws(b);
            gvalue(b, depth + 1);
        }
        gputs(b, "]");
    }
    }
}

/* One member's value for rich_schema: usually valid, now and then not. */
static void gmember_value(gbuf *b, const char *m) {
    if (rndn(8) == 0) {
        gvalue(b, 1);
    } else if (strcmp(m, "n") == 0) {
        static const char *const v[] = {"1", "null", "2.0", "-7", "1e2"};
        gputs(b, v[rndn(5)]);
    } else if (strcmp(m, "tags") == 0) {
        static const char *const v[] = {"[]", "[\"a\"]", "[\"b\", \"\xc3\xa9\"]", "[\"\\u00e9\"]"};
        gputs(b, v[rndn(4)]);
    } else if (strcmp(m, "obj") == 0) {
        static const char *const v[] = {
            "{\"r\":\"key\"}",           "{\"z\":1,\"r\":\"k2\"}", "{\"r\":\"\\u00e9\"}",
            "{\"r\":\"r\",\"r\":\"r\"}", "{\"r\":\"\"}",           "{\"q\":2}",
            "{\"r\":\"k\", \"y\": 1e2}"};
        gputs(b, v[rndn(7)]);
    } else if (strcmp(m, "x") == 0) {
        static const char *const v[] = {"1",    "2.5",  "-3",        "\"a\"",
                                        "true", "null", "{\"k\":1}", "[1]"};
        gputs(b, v[rndn(8)]);
    } else if (strcmp(m, "s") == 0) {
        static const char *const v[] = {"\"ab\"", "\"\xc3\xa9\xc3\xa9\xc3\xa9\"", "\"abcd\"",
                                        "\"\\u0041b\""};
        gputs(b, v[rndn(4)]);
    } else if (strcmp(m, "when") == 0) {
        static const char *const v[] = {"\"2024-05-01T12:00:00Z\"",
                                        "\"2024-05-01T12:00:00.123+01:00\"",
                                        "\"2024-04-31T12:00:00Z\""};
        gputs(b, v[rndn(3)]);
    } else if (strcmp(m, "u") == 0) {
        gputs(b, rndn(2) ? "\"6f1c2a9e-4b3d-4e5f-8a7b-0c1d2e3f4a5b\"" : "17");
    } else if (strcmp(m, "b") == 0) {
        gputs(b, "false");
    } else if (strcmp(m, "eventId") == 0) {
        static const char *const v[] = {"\"evt-1\"", "\"ab\"", "\"\"", "7", "\"evt-\\u0032\""};
        gputs(b, v[rndn(5)]);
    } else if (strcmp(m, "grid") == 0) {
        gputs(b, rndn(2) ? "[[1, 2.5], []]" : "[[-1e-3,0],[7]]");
    } else if (strcmp(m, "i") == 0) {
        gputs(b, numbers[rndn(sizeof(numbers) / sizeof(numbers[0]))]);
    } else if (strcmp(m, "a/b") == 0) {
        gputs(b, numbers[rndn(sizeof(numbers) / sizeof(numbers[0]))]);
    } else if (strcmp(m, "extra") == 0) {
        gstring(b, rndn(2));
    } else {
        gvalue(b, 1);
    }
}

/* An event for rich_schema: the required members (now and then one
 * missing) and some of the others, in random order; now and then a
 * duplicate or a name spelled with an escape. */
static void gevent(gbuf *b) {
    const char *members[] = {"n", "tags", "obj", "x",    "i",   "s",       "when",
                             "u", "b",    "any", "grid", "a/b", "eventId", "extra"};
    size_t nm = sizeof(members) / sizeof(members[0]);
    /* Shuffle, keeping n, tags and obj in the chosen part. */
    for (size_t i = nm - 1; i > 0; i--) {
        size_t j = rndn(i + 1);
        const char *t = members[i];
        members[i] = members[j];
        members[j] = t;
    }
    const char *chosen[20];
    size_t count = 0;
    for (size_t i = 0; i < nm; i++) {
        int required = strcmp(members[i], "n") == 0 || strcmp(members[i], "tags") == 0 ||
                       strcmp(members[i], "obj") == 0;
        if (required ? rndn(25) != 0 : rndn(3) == 0) chosen[count++] = members[i];
    }
    if (count && rndn(12) == 0) {
        const char *again = chosen[rndn(count)];
        chosen[count++] = again;
    }
    if (rndn(15) == 0) chosen[count++] = "\\u006e";
    gws(b);
    gputs(b, "{");
    for (size_t i = 0; i < count; i++) {
        if (i) gputs(b, ",");
        gws(b);
        gputs(b, "\"");
        gputs(b, chosen[i]);
        gputs(b, "\":");
        gws(b);
        gmember_value(b, chosen[i]);
        gws(b);
    }
    gputs(b, "}");
    gws(b);
}

/* Damages an event the way bad clients and bad networks do. */
static void mutate(gbuf *b) {
    static const char *const inserts[] = {"\"",       "\\",       "{",
                                          "}",        "[",        "]",
                                          ",",        ":",        "\x00",
                                          "\x01",     "\n",       "\xc3",
                                          "\x80",     "\xff",     "\xed\xa0\x80",
                                          "\\u0000",  "\\ud800",  "1e999",
                                          "-",        "0",        "true",
                                          ",\"n\":1", "\"n\":1,", "\xef\xbb\xbf",
                                          "e",        ".",        "\\u",
                                          "\xf0\x9f", "\xc0\xaf", " "};
    size_t kind = rndn(4);
    if (b->n == 0) return;
    size_t at = rndn(b->n);
    if (kind == 0) {
        /* Truncate. */
        b->n = at;
        b->p[b->n] = '\0';
    } else if (kind == 1) {
        /* Delete a few bytes. */
        size_t k = 1 + rndn(3);
        if (at + k > b->n) k = b->n - at;
        memmove(b->p + at, b->p + at + k, b->n - at - k);
        b->n -= k;
        b->p[b->n] = '\0';
    } else {
        /* Insert something. */
        const char *s = inserts[rndn(sizeof(inserts) / sizeof(inserts[0]))];
        size_t k = s[0] == '\0' ? 1 : strlen(s);
        gbuf tail = {0};
        gput(&tail, b->p + at, b->n - at);
        b->n = at;
        gput(b, s, k);
        gput(b, tail.p, tail.n);
        free(tail.p);
    }
}

/* Whether a valid event is one the fast path must take: no NUL byte
 * (jansson skips one that follows a number or a literal, the fast path
 * leaves that to it), no escapes anywhere, no integer of 19 digits or more, no exponent of 3 digits
 * or more, no object or array for "x" (whose enum lists some: the reference compares those); and
 * the generator stays far from the nesting and member limits. */
static int fast_eligible(const char *p, size_t n) {
    size_t run = 0;
    for (size_t i = 0; i < n; i++) {
        if (p[i] == '\0') return 0;
        if (i + 3 < n && memcmp(p + i, "\"x\"", 3) == 0) {
            size_t j = i + 3;
            while (j < n && p[j] != '\0' && strchr(" \t\r\n:", p[j]))
                j++;
            if (j < n && (p[j] == '{' || p[j] == '[')) return 0;
        }
        if (p[i] == '\\') return 0;
        run = p[i] >= '0' && p[i] <= '9' ? run + 1 : 0;
        if (run >= 19) return 0;
        if ((p[i] == 'e' || p[i] == 'E') && i > 0 && p[i - 1] >= '0' && p[i - 1] <= '9') {
            size_t j = i + 1, d = 0;
            if (j < n && (p[j] == '+' || p[j] == '-')) j++;
            while (j < n && p[j] >= '0' && p[j] <= '9')
                j++, d++;
            if (d >= 3) return 0;
        }
    }
    return 1;
}

Test(source_http_scan, generated_and_mutated_events_agree_with_the_reference) {
    schema_fx fx;
    fx_open(&fx, rich_schema, "/obj/r");
    rng_state = 0x9E3779B97F4A7C15ULL;
    stats clean = {0}, damaged = {0};
    size_t eligible = 0;
    gbuf b = {0};
    for (int i = 0; i < 150000; i++) {
        b.n = 0;
        gevent(&b);
        int mutations = i % 3 == 0 ? 0 : (int)(1 + rndn(3));
        for (int m = 0; m < mutations; m++)
            mutate(&b);
        outcome ref;
        int took = run_case(&fx, i % 5 == 0, b.p, b.n, 0, &ref, mutations ? &damaged : &clean);
        if (ref.status == 0 && fast_eligible(b.p, b.n)) {
            eligible++;
            cr_assert(took, "the fast path gave a valid event to the reference: %s",
                      shown(b.p, b.n));
        }
    }
    free(b.p);
    /* The generator makes plenty of each: valid and invalid events, and
     * valid ones the fast path must take itself. */
    cr_log_info("clean: %zu cases, %zu valid, %zu fast; damaged: %zu cases, %zu valid, %zu fast; "
                "%zu valid without escapes or extreme numbers",
                clean.cases, clean.ref_ok, clean.fast, damaged.cases, damaged.ref_ok, damaged.fast,
                eligible);
    cr_assert_gt(clean.ref_ok, clean.cases / 10);
    cr_assert_gt(clean.cases - clean.ref_ok, clean.cases / 10);
    cr_assert_gt(damaged.ref_ok, 100);
    cr_assert_gt(eligible, clean.ref_ok / 4);
    fx_close(&fx);
}

/* Random JSON-ish text from a token alphabet against a schema that takes
 * any object: the fast path's JSON grammar, UTF-8 and limits alone. */
Test(source_http_scan, token_soup_agrees_with_jansson) {
    schema_fx fx;
    fx_open(&fx, "{\"type\":\"object\"}", "/k");
    static const char *const tokens[] = {"{",           "}",
                                         "[",           "]",
                                         ",",           ":",
                                         "\"k\"",       "\"v\"",
                                         "\"k\"",       "\"a\"",
                                         "1",           "-0",
                                         "1.5e3",       "01",
                                         "1.",          "true",
                                         "false",       "null",
                                         "nul",         " ",
                                         "\n",          "\"\\u0000\"",
                                         "\"\\ud800\"", "\"\xc3\xa9\"",
                                         "\"\xc3\"",    "\"\\ud83d\\ude00\"",
                                         "\"a\\\"b\"",  "\"\\q\"",
                                         "1e400",       "9223372036854775808",
                                         "\"\x7f\"",    "\"\x1f\"",
                                         "\"\\u0061\""};
    rng_state = 12345;
    stats st = {0};
    gbuf b = {0};
    for (int i = 0; i < 100000; i++) {
        b.n = 0;
        /* Mostly a well-formed start, so that many get far. */
        gputs(&b, "{\"k\":\"v\"");
        size_t n = rndn(12);
        for (size_t t = 0; t < n; t++)
            gputs(&b, tokens[rndn(sizeof(tokens) / sizeof(tokens[0]))]);
        if (rndn(2)) gputs(&b, "}");
        outcome ref;
        run_case(&fx, 0, b.p, b.n, 0, &ref, &st);
    }
    free(b.p);
    cr_log_info("token soup: %zu cases, %zu valid, %zu fast", st.cases, st.ref_ok, st.fast);
    cr_assert_gt(st.ref_ok, 1000);
    cr_assert_gt(st.fast, st.ref_ok / 2);
    fx_close(&fx);
}
