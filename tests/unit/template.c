/* Record templates: compile errors, every reference kind, whole-value vs
 * mixed rendering, escaping, text rendering, buffer reuse, and the raw-text
 * pointer scan checked against jansson on generated documents. */
#include <criterion/criterion.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "template.h"

/* --------------------------------------------------------------- fixtures */

static const char VALUE[] =
    "{ \"eventId\": \"e-1\", \"customerId\" : \"c-42\",\n"
    "  \"data\": {\"status\": \"VERIFIED\", \"score\": 0.5,\n"
    "            \"tags\": [ \"a\", \"b\" ], \"ok\": true, \"none\": null,\n"
    "            \"n\": 12345678901234},\n"
    "  \"a/b\": 1, \"m~n\": 2, \"\": \"empty-key\" }";

static const cd_header HEADERS[] = {
    {"trace-id", "t-1", 3},
    {"nullh", NULL, 0},
    {"dup", "first", 5},
    {"dup", "second", 6},
};

static template_record base_record(void) {
    template_record r = {0};
    r.topic = "kyc-verified";
    r.partition = 3;
    r.offset = 1234567890123LL;
    r.timestamp_ms = 1700000000000LL;
    r.key = "c-42";
    r.key_len = 4;
    r.headers = HEADERS;
    r.header_count = sizeof(HEADERS) / sizeof(HEADERS[0]);
    r.value = VALUE;
    r.value_len = strlen(VALUE);
    return r;
}

static json_t *parse(const char *text) {
    json_error_t e;
    json_t *j = json_loadb(text, strlen(text), JSON_DECODE_ANY | JSON_ALLOW_NUL, &e);
    cr_assert(j, "bad JSON in test: %s: %s", text, e.text);
    return j;
}

static template *compile(const char *spec_json) {
    json_t *spec = parse(spec_json);
    template *t = NULL;
    char err[256] = "";
    cr_assert_eq(template_compile(spec, &t, err, sizeof(err)), 0, "compile %s: %s", spec_json, err);
    json_decref(spec);
    return t;
}

static const char *compile_error(const char *spec_json) {
    static char err[256];
    json_t *spec = parse(spec_json);
    template *t = (template *)1;
    err[0] = '\0';
    cr_assert_eq(template_compile(spec, &t, err, sizeof(err)), -1, "should fail: %s", spec_json);
    cr_assert_null(t);
    json_decref(spec);
    return err;
}

/* Renders as JSON from the raw value and (when r->value is JSON) from a
 * parsed doc; both must agree and be valid JSON.  Returns a static copy. */
static const char *render_r(const char *spec_json, const template_record *r0) {
    static char out[4096];
    template *t = compile(spec_json);
    template_record r = *r0;
    tbuf b = {0};
    char err[256] = "";
    cr_assert_eq(template_render_json(t, &r, &b, err, sizeof(err)), 0, "%s: %s", spec_json, err);
    cr_assert_eq(strlen(b.p), b.len);
    json_error_t je;
    json_t *check = json_loadb(b.p, b.len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &je);
    cr_assert(check, "output is not JSON: %s (%s)", b.p, je.text);
    json_decref(check);
    /* ${now} may tick between two renderings: compare only the rest. */
    if (r.value && !r.doc && !strstr(spec_json, "${now}")) {
        json_t *doc = parse(r.value);
        r.doc = doc;
        tbuf b2 = {0};
        cr_assert_eq(template_render_json(t, &r, &b2, err, sizeof(err)), 0, "%s", err);
        cr_assert_str_eq(b2.p, b.p, "doc and raw renderings differ for %s", spec_json);
        tbuf_free(&b2);
        json_decref(doc);
    }
    snprintf(out, sizeof(out), "%s", b.p);
    tbuf_free(&b);
    template_free(t);
    return out;
}

static const char *render(const char *spec_json) {
    template_record r = base_record();
    return render_r(spec_json, &r);
}

static const char *render_text_r(const char *spec_json, const template_record *r) {
    static char out[4096];
    template *t = compile(spec_json);
    tbuf b = {0};
    char err[256] = "";
    cr_assert_eq(template_render_text(t, r, &b, err, sizeof(err)), 0, "%s: %s", spec_json, err);
    snprintf(out, sizeof(out), "%s", b.p);
    tbuf_free(&b);
    template_free(t);
    return out;
}

static const char *render_text(const char *spec_json) {
    template_record r = base_record();
    return render_text_r(spec_json, &r);
}

/* Expects a render failure; checks the buffer is left as it was. */
static const char *render_error_r(const char *spec_json, const template_record *r) {
    static char err[256];
    template *t = compile(spec_json);
    tbuf b = {0};
    tbuf_append(&b, "prefix", 6);
    err[0] = '\0';
    cr_assert_eq(template_render_json(t, r, &b, err, sizeof(err)), -1, "should fail: %s",
                 spec_json);
    cr_assert_str_eq(b.p, "prefix");
    cr_assert_eq(template_render_text(t, r, &b, err, sizeof(err)), -1);
    cr_assert_str_eq(b.p, "prefix");
    tbuf_free(&b);
    template_free(t);
    return err;
}

static const char *render_error(const char *spec_json) {
    template_record r = base_record();
    return render_error_r(spec_json, &r);
}

/* ------------------------------------------------------------ references */

Test(template, pointers_into_the_value) {
    cr_assert_str_eq(
        render("{\"customerId\": \"${/customerId}\", \"status\": \"${/data/status}\"}"),
        "{\"customerId\":\"c-42\",\"status\":\"VERIFIED\"}");
    cr_assert_str_eq(render("\"${/data/tags/1}\""), "\"b\"");
    cr_assert_str_eq(render("\"${/a~1b}\""), "1");
    cr_assert_str_eq(render("\"${/m~0n}\""), "2");
    cr_assert_str_eq(render("\"${/data/n}\""), "12345678901234");
}

Test(template, a_whole_reference_keeps_its_type) {
    cr_assert_str_eq(render("{\"type\": \"KYC_VERIFIED\", \"data\": \"${/data}\"}"),
                     "{\"type\":\"KYC_VERIFIED\",\"data\":{\"status\":\"VERIFIED\",\"score\":0.5,"
                     "\"tags\":[\"a\",\"b\"],\"ok\":true,\"none\":null,\"n\":12345678901234}}");
    cr_assert_str_eq(render("\"${/data/score}\""), "0.5");
    cr_assert_str_eq(render("\"${/data/ok}\""), "true");
    cr_assert_str_eq(render("\"${/data/none}\""), "null");
    cr_assert_str_eq(render("\"${/data/tags}\""), "[\"a\",\"b\"]");
    cr_assert_str_eq(render("[\"${/eventId}\", \"${partition}\"]"), "[\"e-1\",3]");
}

Test(template, slash_is_the_whole_value) {
    const char *whole = render("{\"message\": \"${/}\"}");
    json_t *got = parse(whole), *want = json_pack("{s:o}", "message", parse(VALUE));
    cr_assert(json_equal(got, want), "%s", whole);
    cr_assert_null(strchr(whole, '\n'), "compact: %s", whole);
    cr_assert_null(strstr(whole, ": "), "compact: %s", whole);
    json_decref(got);
    json_decref(want);
}

Test(template, mixed_strings_convert_each_reference_to_text) {
    cr_assert_str_eq(render("\"s=${/data/status} score=${/data/score} ok=${/data/ok} "
                            "none=${/data/none} tags=${/data/tags} p=${partition}\""),
                     "\"s=VERIFIED score=0.5 ok=true none=null tags=[\\\"a\\\",\\\"b\\\"] p=3\"");
    /* an object embedded as text, holding a string with a quote: escaped twice */
    template_record r = base_record();
    const char *v = "{\"o\": {\"k\": \"a\\\"b\\\\c\", \"n\": [1, 2.5]}}";
    r.value = v;
    r.value_len = strlen(v);
    const char *out = render_r("\"x${/o}y\"", &r);
    cr_assert_str_eq(out, "\"x{\\\"k\\\":\\\"a\\\\\\\"b\\\\\\\\c\\\",\\\"n\\\":[1,2.5]}y\"");
    json_t *s = parse(out);
    cr_assert_str_eq(json_string_value(s), "x{\"k\":\"a\\\"b\\\\c\",\"n\":[1,2.5]}y");
    json_decref(s);
}

Test(template, record_variables) {
    cr_assert_str_eq(render("{\"t\": \"${topic}\", \"p\": \"${partition}\", \"o\": \"${offset}\", "
                            "\"k\": \"${key}\", \"ts\": \"${timestamp}\", "
                            "\"h\": \"${headers.trace-id}\", \"hn\": \"${headers.nullh}\", "
                            "\"dup\": \"${headers.dup}\"}"),
                     "{\"t\":\"kyc-verified\",\"p\":3,\"o\":1234567890123,\"k\":\"c-42\","
                     "\"ts\":1700000000000,\"h\":\"t-1\",\"hn\":null,\"dup\":\"second\"}");
    cr_assert_str_eq(render("\"${topic}/${partition}/${offset}@${timestamp} k=${key} "
                            "h=${headers.trace-id} hn=${headers.nullh}\""),
                     "\"kyc-verified/3/1234567890123@1700000000000 k=c-42 h=t-1 hn=null\"");
}

Test(template, absent_key_and_timestamp_are_null_or_the_default) {
    template_record r = base_record();
    r.key = NULL;
    r.key_len = 0;
    r.timestamp_ms = -1;
    cr_assert_str_eq(render_r("[\"${key}\", \"${timestamp}\", \"k=${key}\"]", &r),
                     "[null,null,\"k=null\"]");
    cr_assert_str_eq(render_r("[\"${key:-none}\", \"${timestamp:-0}\", \"k=${key:-}\"]", &r),
                     "[\"none\",\"0\",\"k=\"]");
    /* an empty key is a key */
    r.key = "";
    cr_assert_str_eq(render_r("\"${key:-none}\"", &r), "\"\"");
}

Test(template, now_is_milliseconds_since_the_epoch) {
    const char *out = render("\"${now}\"");
    long long ms = atoll(out);
    cr_assert_gt(ms, 1600000000000LL, "%s", out);
}

Test(template, env_is_read_at_compile_time) {
    setenv("CONNECTD_TPL_TEST_ENV", "from-env", 1);
    template *t = compile("\"a-${env:CONNECTD_TPL_TEST_ENV}-b\"");
    setenv("CONNECTD_TPL_TEST_ENV", "changed", 1);
    tbuf b = {0};
    template_record r = base_record();
    cr_assert_eq(template_render_json(t, &r, &b, NULL, 0), 0);
    cr_assert_str_eq(b.p, "\"a-from-env-b\"");
    cr_assert_eq(template_references_value(t), 0);
    tbuf_free(&b);
    template_free(t);
    unsetenv("CONNECTD_TPL_TEST_ENV_UNSET");
    cr_assert_str_eq(render("\"${env:CONNECTD_TPL_TEST_ENV_UNSET:-dflt}\""), "\"dflt\"");
    cr_assert_str_eq(compile_error("\"${env:CONNECTD_TPL_TEST_ENV_UNSET}\""),
                     "environment variable CONNECTD_TPL_TEST_ENV_UNSET is not set "
                     "(in ${env:CONNECTD_TPL_TEST_ENV_UNSET})");
}

Test(template, nested_specs_and_literals) {
    cr_assert_str_eq(
        render("{\"a\": [1, \"x\", {\"b\": \"${/customerId}\"}, [true, null, 2.5, -3]],"
               " \"lit\": {\"x\": [1, {\"y\": \"z\"}], \"e\": {}, \"f\": []},"
               " \"n\": 0.1, \"s\": \"plain\"}"),
        "{\"a\":[1,\"x\",{\"b\":\"c-42\"},[true,null,2.5,-3]],"
        "\"lit\":{\"x\":[1,{\"y\":\"z\"}],\"e\":{},\"f\":[]},\"n\":0.1,\"s\":\"plain\"}");
    cr_assert_str_eq(render("42"), "42");
    cr_assert_str_eq(render("null"), "null");
    cr_assert_str_eq(render("[]"), "[]");
    cr_assert_str_eq(render("\"\""), "\"\"");
}

Test(template, dollar_dollar_brace_is_a_literal) {
    cr_assert_str_eq(render("\"cost $${topic} ${topic}\""), "\"cost ${topic} kyc-verified\"");
    cr_assert_str_eq(render("\"$${/x}\""), "\"${/x}\"");
    cr_assert_str_eq(render("\"$$ $ a$b $}\""), "\"$$ $ a$b $}\"");
    cr_assert_str_eq(render("\"$$${topic}\""), "\"$${topic}\"");
    cr_assert_str_eq(render_text("\"$${topic}\""), "${topic}");
}

Test(template, references_value) {
    template *t = compile("{\"a\": \"${topic}\", \"b\": [\"${key}\", \"${headers.x:-y}\"]}");
    cr_assert_eq(template_references_value(t), 0);
    template_free(t);
    t = compile("{\"a\": \"${topic}\", \"b\": [\"x ${/id}\"]}");
    cr_assert_eq(template_references_value(t), 1);
    template_free(t);
    t = compile("\"${/}\"");
    cr_assert_eq(template_references_value(t), 1);
    template_free(t);
}

/* ---------------------------------------------------------------- errors */

Test(template, compile_errors_name_the_problem) {
    cr_assert_str_eq(compile_error("\"${foo}\""), "unknown template variable ${foo}");
    cr_assert_str_eq(compile_error("{\"a\": [1, {\"b\": \"x ${Topic} y\"}]}"),
                     "unknown template variable ${Topic}");
    cr_assert_str_eq(compile_error("\"${bar:-x}\""), "unknown template variable ${bar:-x}");
    cr_assert_str_eq(compile_error("\"${}\""), "unknown template variable ${}");
    cr_assert_str_eq(compile_error("\"${headers.}\""), "unknown template variable ${headers.}");
    cr_assert_str_eq(compile_error("\"${ topic}\""), "unknown template variable ${ topic}");
    cr_assert_str_eq(compile_error("\"abc ${/x\""), "unterminated ${ in \"abc ${/x\"");
    cr_assert_str_eq(compile_error("\"out/${topic\""), "unterminated ${ in \"out/${topic\"");
    cr_assert_str_eq(compile_error("\"${\""), "unterminated ${ in \"${\"");
    cr_assert_str_eq(compile_error("\"${/a~2}\""),
                     "invalid JSON pointer ${/a~2}: \"~\" must be followed by 0 or 1");
    cr_assert_str_eq(compile_error("\"${/a~}\""),
                     "invalid JSON pointer ${/a~}: \"~\" must be followed by 0 or 1");
    template *t = NULL;
    cr_assert_eq(template_compile(NULL, &t, NULL, 0), -1);
}

Test(template, a_missing_field_fails_the_render) {
    cr_assert_str_eq(render_error("{\"item\": {\"s\": \"${/data/missing}\"}}"),
                     "template: /data/missing: no such field");
    cr_assert_str_eq(render_error("\"status is ${/data/status/deeper}\""),
                     "template: /data/status/deeper: no such field");
    cr_assert_str_eq(render_error("[\"${/data/tags/2}\"]"),
                     "template: /data/tags/2: no such field");
    cr_assert_str_eq(render_error("\"${/data/tags/01}\""),
                     "template: /data/tags/01: no such field");
    cr_assert_str_eq(render_error("\"${/data/tags/-}\""), "template: /data/tags/-: no such field");
    cr_assert_str_eq(render_error("\"${headers.nope}\""),
                     "template: ${headers.nope}: no such header");
    /* the same with a parsed doc */
    template_record r = base_record();
    json_t *doc = parse(VALUE);
    r.doc = doc;
    cr_assert_str_eq(render_error_r("{\"s\": \"${/data/status2}\"}", &r),
                     "template: /data/status2: no such field");
    json_decref(doc);
    /* a tombstone */
    r = base_record();
    r.value = NULL;
    r.value_len = 0;
    cr_assert_str_eq(render_error_r("\"${/data}\"", &r),
                     "template: /data: no such field (the record has no value)");
    cr_assert_str_eq(render_r("\"${/data:-gone}\"", &r), "\"gone\"");
    /* a value that is not JSON */
    r.value = "{\"data\": nope}";
    r.value_len = strlen(r.value);
    cr_assert_str_eq(render_error_r("\"${/data}\"", &r),
                     "template: /data: the record value is not valid JSON");
}

Test(template, defaults) {
    cr_assert_str_eq(render("\"${/data/missing:-n/a}\""), "\"n/a\"");
    cr_assert_str_eq(render("\"${/data/status:-x}\""), "\"VERIFIED\"");
    cr_assert_str_eq(render("\"${/data/missing:-0}\""), "\"0\"");
    cr_assert_str_eq(render("\"s=${/nope:-} t=${/data/status:-}\""), "\"s= t=VERIFIED\"");
    cr_assert_str_eq(render("\"${/data/none:-x}\""), "null"); /* present, though null */
    cr_assert_str_eq(render("\"${headers.nope:-h}|${headers.nullh:-n}\""), "\"h|n\"");
    cr_assert_str_eq(render("\"${/nope:-a \\\"q\\\"}\""), "\"a \\\"q\\\"\"");
    cr_assert_str_eq(render_text("\"${/nope:-a \\\"q\\\"}\""), "a \"q\"");
}

/* ------------------------------------------------------------ text output */

Test(template, text_rendering) {
    cr_assert_str_eq(render_text("\"out/${topic}/${/customerId}.ndjson\""),
                     "out/kyc-verified/c-42.ndjson");
    cr_assert_str_eq(render_text("\"KYC alert\""), "KYC alert");
    cr_assert_str_eq(render_text("\"${/data/status}\""), "VERIFIED");
    cr_assert_str_eq(render_text("\"${partition}\""), "3");
    cr_assert_str_eq(render_text("\"${/data/tags}\""), "[\"a\",\"b\"]");
    cr_assert_str_eq(render_text("\"${/data/none}\""), "null");
    cr_assert_str_eq(render_text("{\"a\": \"${/data/status}\", \"b\": [1]}"),
                     "{\"a\":\"VERIFIED\",\"b\":[1]}");
    cr_assert_str_eq(render_text("12"), "12");
    template_record r = base_record();
    const char *v = "{\"s\": \"q\\\"b\\\\ \\u00e9\\n\"}";
    r.value = v;
    r.value_len = strlen(v);
    cr_assert_str_eq(render_text_r("\"<${/s}>\"", &r), "<q\"b\\ \xc3\xa9\n>");
    cr_assert_str_eq(render_text_r("\"${/}\"", &r), "{\"s\":\"q\\\"b\\\\ \xc3\xa9\\n\"}");
    /* appends */
    template *t = compile("\"/${topic}\"");
    tbuf b = {0};
    tbuf_append(&b, "dir", 3);
    cr_assert_eq(template_render_text(t, &r, &b, NULL, 0), 0);
    cr_assert_str_eq(b.p, "dir/kyc-verified");
    tbuf_free(&b);
    template_free(t);
}

/* -------------------------------------------------------------- escaping */

Test(template, escaping_in_json_output) {
    template_record r = base_record();
    const char *v = "{\"s\": \"q\\\"b\\\\ nl\\n tab\\t ctl\\u0001\\u001f del\\u007f "
                    "\\u00e9 \\ud83d\\ude00 \\/ \xe2\x82\xac \\u2028\"}";
    r.value = v;
    r.value_len = strlen(v);
    const char *want = "\"q\\\"b\\\\ nl\\n tab\\t ctl\\u0001\\u001f del\x7f \xc3\xa9 "
                       "\xf0\x9f\x98\x80 / \xe2\x82\xac \xe2\x80\xa8\"";
    cr_assert_str_eq(render_r("\"${/s}\"", &r), want);
    cr_assert_str_eq(render_r("{\"m\": \"[${/s}]\"}", &r),
                     "{\"m\":\"[q\\\"b\\\\ nl\\n tab\\t ctl\\u0001\\u001f del\x7f \xc3\xa9 "
                     "\xf0\x9f\x98\x80 / \xe2\x82\xac \xe2\x80\xa8]\"}");
    /* key, header and topic bytes: control characters escaped, bad UTF-8 replaced */
    static const cd_header h[] = {{"x", "\"\x01\xff\xc3\xa9", 5}};
    r.key = "k\"\\\n\xc0\xaf";
    r.key_len = 6;
    r.headers = h;
    r.header_count = 1;
    r.topic = "t\xe2\x82";
    cr_assert_str_eq(
        render_r("[\"${key}\", \"${headers.x}\", \"${topic}\", \"${key}|${topic}\"]", &r),
        "[\"k\\\"\\\\\\n\xef\xbf\xbd\xef\xbf\xbd\",\"\\\"\\u0001\xef\xbf\xbd\xc3\xa9\","
        "\"t\xef\xbf\xbd\xef\xbf\xbd\",\"k\\\"\\\\\\n\xef\xbf\xbd\xef\xbf\xbd|"
        "t\xef\xbf\xbd\xef\xbf\xbd\"]");
    /* text output keeps the bytes */
    cr_assert_str_eq(render_text_r("\"${key}\"", &r), "k\"\\\n\xc0\xaf");
    /* template literals and keys with specials */
    cr_assert_str_eq(render("{\"k\\\"\\u0002\": \"a\\\"b\\n\\u00e9 ${topic}\", \"l\": \"\\t\"}"),
                     "{\"k\\\"\\u0002\":\"a\\\"b\\n\xc3\xa9 kyc-verified\",\"l\":\"\\t\"}");
}

Test(template, nul_in_strings) {
    template_record r = base_record();
    const char *v = "{\"s\": \"a\\u0000b\"}";
    r.value = v;
    r.value_len = strlen(v);
    cr_assert_str_eq(render_r("\"${/s}\"", &r), "\"a\\u0000b\"");
    cr_assert_str_eq(render_r("\"<${/s}>\"", &r), "\"<a\\u0000b>\"");
}

/* --------------------------------------------------- buffers and jansson */

Test(template, buffer_is_reused_without_growth) {
    template *t = compile("{\"customerId\": \"${/customerId}\", \"data\": \"${/data}\", "
                          "\"where\": \"${topic}/${partition}/${offset}\", \"k\": \"${key}\"}");
    template_record r = base_record();
    tbuf b = {0};
    char err[256];
    cr_assert_eq(template_render_json(t, &r, &b, err, sizeof(err)), 0, "%s", err);
    char *first = strdup(b.p);
    char *p = b.p;
    size_t cap = b.cap;
    for (int i = 0; i < 10000; i++) {
        tbuf_reset(&b);
        cr_assert_eq(b.len, 0);
        cr_assert_eq(template_render_json(t, &r, &b, err, sizeof(err)), 0, "%s", err);
        cr_assert_eq(b.p, p);
        cr_assert_eq(b.cap, cap);
    }
    cr_assert_str_eq(b.p, first);
    free(first);
    tbuf_free(&b);
    cr_assert_null(b.p);
    cr_assert_eq(b.cap, 0);
    template_free(t);
}

Test(template, tbuf_grows_and_stays_terminated) {
    tbuf b = {0};
    for (int i = 0; i < 1000; i++)
        cr_assert_eq(tbuf_append(&b, "0123456789", 10), 0);
    cr_assert_eq(b.len, 10000);
    cr_assert_eq(strlen(b.p), 10000);
    cr_assert_geq(b.cap, 10001);
    tbuf_reset(&b);
    cr_assert_str_eq(b.p, "");
    tbuf_free(&b);
    tbuf_free(&b);
}

Test(template, render_value_builds_a_tree) {
    template *t =
        compile("{\"id\": \"${/customerId}\", \"data\": \"${/data}\", \"p\": \"${partition}\"}");
    template_record r = base_record();
    json_t *out = NULL;
    char err[256];
    cr_assert_eq(template_render_value(t, &r, &out, err, sizeof(err)), 0, "%s", err);
    cr_assert_str_eq(json_string_value(json_object_get(out, "id")), "c-42");
    cr_assert_eq(json_integer_value(json_object_get(out, "p")), 3);
    cr_assert_str_eq(json_string_value(json_object_get(json_object_get(out, "data"), "status")),
                     "VERIFIED");
    json_decref(out);
    template_free(t);
    t = compile("\"${/zzz}\"");
    cr_assert_eq(template_render_value(t, &r, &out, err, sizeof(err)), -1);
    cr_assert_null(out);
    cr_assert_str_eq(err, "template: /zzz: no such field");
    template_free(t);
}

Test(template, doc_numbers_are_printed_exactly) {
    template_record r = base_record();
    const char *v = "{\"a\": [0.1, 1.5, -2.25, 3.0, 1e300, 123456789012345678, -0.001]}";
    r.value = v;
    r.value_len = strlen(v);
    json_t *doc = parse(v);
    r.doc = doc;
    cr_assert_str_eq(render_r("\"${/a}\"", &r),
                     "[0.1,1.5,-2.25,3.0,1e+300,123456789012345678,-0.001]");
    json_decref(doc);
    /* from the raw text, numbers keep their text */
    r.doc = NULL;
    template *t = compile("\"${/a}\"");
    tbuf b = {0};
    cr_assert_eq(template_render_json(t, &r, &b, NULL, 0), 0);
    cr_assert_str_eq(b.p, "[0.1,1.5,-2.25,3.0,1e300,123456789012345678,-0.001]");
    tbuf_free(&b);
    template_free(t);
}

/* ------------------------------------------------------ json_pointer_scan */

static const char *scan(const char *json, const char *ptr) {
    static char out[1024];
    const char *start = NULL;
    size_t n = 0;
    int rc = json_pointer_scan(json, strlen(json), ptr, &start, &n);
    if (rc == JSON_POINTER_NOT_FOUND) return "<not found>";
    if (rc == JSON_POINTER_MALFORMED) return "<malformed>";
    cr_assert_eq(rc, 0);
    snprintf(out, sizeof(out), "%.*s", (int)n, start);
    return out;
}

Test(json_pointer_scan, finds_raw_spans) {
    const char *d = " { \"a\" : [ 1 , { \"b\" : \"x\\\"y\" } , [ ] ] , \"c~/\":{\"\":null} } ";
    cr_assert_str_eq(scan(d, ""), "{ \"a\" : [ 1 , { \"b\" : \"x\\\"y\" } , [ ] ] , "
                                  "\"c~/\":{\"\":null} }");
    cr_assert_str_eq(scan(d, "/a"), "[ 1 , { \"b\" : \"x\\\"y\" } , [ ] ]");
    cr_assert_str_eq(scan(d, "/a/0"), "1");
    cr_assert_str_eq(scan(d, "/a/1/b"), "\"x\\\"y\"");
    cr_assert_str_eq(scan(d, "/a/2"), "[ ]");
    cr_assert_str_eq(scan(d, "/a/3"), "<not found>");
    cr_assert_str_eq(scan(d, "/a/2/0"), "<not found>");
    cr_assert_str_eq(scan(d, "/a/-"), "<not found>");
    cr_assert_str_eq(scan(d, "/a/01"), "<not found>");
    cr_assert_str_eq(scan(d, "/a/+1"), "<not found>");
    cr_assert_str_eq(scan(d, "/a/99999999999999999999999"), "<not found>");
    cr_assert_str_eq(scan(d, "/c~0~1"), "{\"\":null}");
    cr_assert_str_eq(scan(d, "/c~0~1/"), "null");
    cr_assert_str_eq(scan(d, "/c~/"), "<not found>");
    cr_assert_str_eq(scan(d, "/a/0/x"), "<not found>");
    cr_assert_str_eq(scan(d, "a"), "<not found>");
    cr_assert_str_eq(scan(d, "/zz"), "<not found>");
    /* escaped keys match their decoded text; the last duplicate wins */
    cr_assert_str_eq(scan("{\"\\u0061\\/\": 1}", "/a~1"), "1");
    cr_assert_str_eq(scan("{\"\\u00e9\": 1}", "/\xc3\xa9"), "1");
    cr_assert_str_eq(scan("{\"\\ud83d\\ude00\": 2}", "/\xf0\x9f\x98\x80"), "2");
    cr_assert_str_eq(scan("{\"a\": 1, \"b\": 2, \"a\": {\"c\": 3}}", "/a/c"), "3");
    cr_assert_str_eq(scan("[10, 20]", "/1"), "20");
    cr_assert_str_eq(scan("\"s\"", ""), "\"s\"");
    cr_assert_str_eq(scan("\"s\"", "/0"), "<not found>");
}

Test(json_pointer_scan, rejects_malformed_input_on_the_way) {
    cr_assert_str_eq(scan("{\"a\": nope}", "/a"), "<malformed>");
    cr_assert_str_eq(scan("{\"a\": 1", "/a"), "<malformed>");
    cr_assert_str_eq(scan("{\"a\": 1", "/b"), "<malformed>");
    cr_assert_str_eq(scan("{\"a\" 1}", "/a"), "<malformed>");
    cr_assert_str_eq(scan("[1,,2]", "/2"), "<malformed>");
    cr_assert_str_eq(scan("{\"a\": [1, 2}", "/a"), "<malformed>");
    cr_assert_str_eq(scan("{\"a\": \"\xff\"}", "/a"), "<malformed>");
    cr_assert_str_eq(scan("", ""), "<malformed>");
    cr_assert_str_eq(scan("{} x", ""), "<malformed>");
    cr_assert_str_eq(scan("?", "/a"), "<malformed>");
    const char *start;
    size_t n;
    cr_assert_eq(json_pointer_scan(NULL, 0, "", &start, &n), JSON_POINTER_NOT_FOUND);
    /* truncated buffers never read past len */
    const char *d = "{\"a\": {\"b\": [1, 2, \"three\"]}}";
    for (size_t len = 0; len < strlen(d); len++) {
        char *copy = malloc(len ? len : 1);
        memcpy(copy, d, len);
        int rc = json_pointer_scan(copy, len, "/a/b/2", &start, &n);
        cr_assert_neq(rc, 0, "len %zu", len);
        free(copy);
    }
}

/* ----------------------------------------------- differential, generated */

static unsigned long long rng_state;

static unsigned rnd(unsigned n) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (unsigned)(rng_state % n);
}

typedef struct gbuf {
    char *p;
    size_t len, cap;
} gbuf;

static void gput(gbuf *g, const char *s, size_t n) {
    if (g->len + n + 1 > g->cap) {
        g->cap = (g->len + n + 1) * 2;
        g->p = realloc(g->p, g->cap);
    }
    memcpy(g->p + g->len, s, n);
    g->len += n;
    g->p[g->len] = '\0';
}

static void gs(gbuf *g, const char *s) {
    gput(g, s, strlen(s));
}

static void gws(gbuf *g) {
    static const char *ws[] = {"", "", "", " ", "\n  ", "\t", "\r\n"};
    gs(g, ws[rnd(7)]);
}

/* A JSON string with a mix of plain, escaped and multi-byte characters;
 * no NUL in keys (pointers are C strings). */
static void gen_string(gbuf *g, int key, const char *suffix) {
    static const char *pieces[] = {"a",
                                   "b",
                                   "id",
                                   "~",
                                   "/",
                                   "~1",
                                   "x y",
                                   "\\\"",
                                   "\\\\",
                                   "\\/",
                                   "\\n",
                                   "\\t",
                                   "\\u0001",
                                   "\\u001f",
                                   "\\u00e9",
                                   "\xc3\xa9",
                                   "\xe2\x82\xac",
                                   "\xf0\x9f\x98\x80",
                                   "\\ud83d\\ude00",
                                   "\\u20ac",
                                   "\\u0041",
                                   "0",
                                   "1",
                                   "}",
                                   ":-",
                                   "$",
                                   "{",
                                   "\x7f",
                                   "\\u007F",
                                   "\\u2028"};
    size_t np = sizeof(pieces) / sizeof(pieces[0]);
    gs(g, "\"");
    unsigned n = rnd(key ? 3 : 5);
    for (unsigned i = 0; i < n; i++)
        gs(g, pieces[rnd((unsigned)np)]);
    if (!key && rnd(8) == 0) gs(g, "\\u0000");
    if (suffix) gs(g, suffix);
    gs(g, "\"");
}

enum { GEN_CANONICAL = 1, GEN_NO_DUPLICATES = 2 };

static void gen_value(gbuf *g, int depth, int flags) {
    int canonical = flags & GEN_CANONICAL;
    unsigned k = rnd(depth > 4 ? 6 : 9);
    char num[64];
    switch (k) {
    case 0:
        gs(g, "null");
        break;
    case 1:
        gs(g, rnd(2) ? "true" : "false");
        break;
    case 2:
        snprintf(num, sizeof(num), "%d", (int)rnd(2000000) - 1000000);
        gs(g, num);
        break;
    case 3:
        if (canonical || rnd(2)) {
            /* quarters print the same from the text and from a double */
            snprintf(num, sizeof(num), "%d.%s", (int)rnd(2000) - 1000,
                     (const char *[]){"25", "5", "75", "0"}[rnd(4)]);
        } else {
            snprintf(num, sizeof(num), "%s",
                     (const char *[]){"1E2", "-0.5e-3", "2e+10", "0.1"}[rnd(4)]);
        }
        gs(g, num);
        break;
    case 4:
    case 5:
        gen_string(g, 0, NULL);
        break;
    case 6:
    case 7: {
        gs(g, "[");
        unsigned n = rnd(5);
        for (unsigned i = 0; i < n; i++) {
            if (i) gs(g, ",");
            gws(g);
            gen_value(g, depth + 1, flags);
            gws(g);
        }
        gs(g, "]");
        break;
    }
    default: {
        gs(g, "{");
        unsigned n = rnd(6);
        size_t key_at[8];
        size_t key_len[8];
        for (unsigned i = 0; i < n; i++) {
            if (i) gs(g, ",");
            gws(g);
            if (i && !(flags & GEN_NO_DUPLICATES) && rnd(6) == 0) { /* a duplicate key */
                unsigned j = rnd(i);
                char *dup = strndup(g->p + key_at[j], key_len[j]);
                key_at[i] = g->len;
                gs(g, dup);
                free(dup);
            } else {
                key_at[i] = g->len;
                char suffix[16];
                snprintf(suffix, sizeof(suffix), "#%u", i);
                gen_string(g, 1, flags & GEN_NO_DUPLICATES ? suffix : NULL);
            }
            key_len[i] = g->len - key_at[i];
            gws(g);
            gs(g, ":");
            gws(g);
            gen_value(g, depth + 1, flags);
            gws(g);
        }
        gs(g, "}");
    }
    }
}

/* Reference lookup on the jansson tree (RFC 6901, written separately). */
static json_t *jansson_lookup(json_t *doc, const char *ptr) {
    if (!*ptr) return doc;
    json_t *cur = doc;
    const char *p = ptr;
    char tok[512];
    while (*p == '/' && cur) {
        size_t n = 0;
        p++;
        while (*p && *p != '/') {
            if (p[0] == '~') {
                tok[n++] = p[1] == '0' ? '~' : '/';
                p += 2;
            } else {
                tok[n++] = *p++;
            }
        }
        if (json_is_object(cur)) {
            cur = json_object_getn(cur, tok, n);
        } else if (json_is_array(cur)) {
            if (n == 0 || (n > 1 && tok[0] == '0')) return NULL;
            size_t idx = 0;
            for (size_t i = 0; i < n; i++) {
                if (tok[i] < '0' || tok[i] > '9') return NULL;
                idx = idx * 10 + (size_t)(tok[i] - '0');
            }
            cur = json_array_get(cur, idx);
        } else {
            return NULL;
        }
    }
    return cur;
}

typedef struct plist {
    char **v;
    size_t n, cap;
} plist;

static void padd(plist *l, const char *s) {
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 64;
        l->v = realloc(l->v, l->cap * sizeof(*l->v));
    }
    l->v[l->n++] = strdup(s);
}

/* Every pointer into j, plus a few that miss. */
static void all_pointers(json_t *j, char *prefix, size_t plen, plist *out) {
    padd(out, prefix);
    char child[4096];
    if (json_is_object(j)) {
        const char *key;
        size_t key_len;
        json_t *v;
        json_object_keylen_foreach(j, key, key_len, v) {
            size_t n = plen;
            memcpy(child, prefix, plen);
            child[n++] = '/';
            for (size_t i = 0; i < key_len && n + 3 < sizeof(child); i++) {
                if (key[i] == '~') {
                    child[n++] = '~';
                    child[n++] = '0';
                } else if (key[i] == '/') {
                    child[n++] = '~';
                    child[n++] = '1';
                } else {
                    child[n++] = key[i];
                }
            }
            child[n] = '\0';
            all_pointers(v, child, n, out);
        }
        snprintf(child, sizeof(child), "%s/no-such-key", prefix);
        padd(out, child);
    } else if (json_is_array(j)) {
        size_t i;
        json_t *v;
        json_array_foreach(j, i, v) {
            int n = snprintf(child, sizeof(child), "%s/%zu", prefix, i);
            all_pointers(v, child, (size_t)n, out);
        }
        snprintf(child, sizeof(child), "%s/%zu", prefix, json_array_size(j));
        padd(out, child);
        snprintf(child, sizeof(child), "%s/-", prefix);
        padd(out, child);
        if (json_array_size(j)) {
            snprintf(child, sizeof(child), "%s/00", prefix);
            padd(out, child);
        }
    } else {
        snprintf(child, sizeof(child), "%s/0", prefix);
        padd(out, child);
    }
}

static void plist_free(plist *l) {
    for (size_t i = 0; i < l->n; i++)
        free(l->v[i]);
    free(l->v);
}

Test(json_pointer_scan, agrees_with_jansson_on_generated_documents) {
    rng_state = 0x9E3779B97F4A7C15ULL;
    size_t found = 0, missing = 0;
    for (int doc_i = 0; doc_i < 4000; doc_i++) {
        gbuf g = {0};
        gws(&g);
        gen_value(&g, 0, 0);
        gws(&g);
        json_error_t je;
        json_t *doc = json_loadb(g.p, g.len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &je);
        cr_assert(doc, "generator produced invalid JSON: %s: %s", g.p, je.text);
        plist ptrs = {0};
        char root[1] = "";
        all_pointers(doc, root, 0, &ptrs);
        for (size_t i = 0; i < ptrs.n; i++) {
            const char *ptr = ptrs.v[i];
            json_t *want = jansson_lookup(doc, ptr);
            const char *start = NULL;
            size_t n = 0;
            int rc = json_pointer_scan(g.p, g.len, ptr, &start, &n);
            if (!want) {
                cr_assert_eq(rc, JSON_POINTER_NOT_FOUND, "doc %s pointer %s: rc %d", g.p, ptr, rc);
                missing++;
                continue;
            }
            cr_assert_eq(rc, 0, "doc %s pointer %s: rc %d", g.p, ptr, rc);
            cr_assert(start >= g.p && start + n <= g.p + g.len);
            json_t *got = json_loadb(start, n, JSON_DECODE_ANY | JSON_ALLOW_NUL, &je);
            cr_assert(got, "span is not JSON: %.*s", (int)n, start);
            cr_assert(json_equal(got, want), "doc %s pointer %s: got %.*s", g.p, ptr, (int)n,
                      start);
            json_decref(got);
            found++;
        }
        plist_free(&ptrs);
        json_decref(doc);
        free(g.p);
    }
    cr_log_info("pointer scan: %zu targets found, %zu missing, all as jansson", found, missing);
    cr_assert_gt(found, 10000, "found %zu", found);
    cr_assert_gt(missing, 5000, "missing %zu", missing);
}

/* The renderer gives the same bytes from the raw value and from a jansson
 * tree, for whole-value and mixed references, in JSON and text output.
 * (Without duplicate keys: a subtree copied from the raw text keeps them
 * all, jansson keeps the last.) */
Test(template, raw_and_doc_renderings_agree_on_generated_documents) {
    rng_state = 0xD1B54A32D192ED03ULL;
    size_t checked = 0;
    for (int doc_i = 0; doc_i < 3000; doc_i++) {
        gbuf g = {0};
        gen_value(&g, 0, GEN_CANONICAL | GEN_NO_DUPLICATES);
        json_error_t je;
        json_t *doc = json_loadb(g.p, g.len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &je);
        cr_assert(doc, "%s", je.text);
        plist ptrs = {0};
        char root[1] = "";
        all_pointers(doc, root, 0, &ptrs);
        for (size_t i = 0; i < ptrs.n; i++) {
            const char *ptr = ptrs.v[i];
            /* not expressible in a template: "}" ends the reference, ":-"
             * starts a default, "/" is the whole value */
            if (strchr(ptr, '}') || strstr(ptr, ":-") || strcmp(ptr, "/") == 0) continue;
            char spec_text[4096];
            snprintf(spec_text, sizeof(spec_text), "${%s}", *ptr ? ptr : "/");
            const char *forms[] = {"%s", "<%s>", "%s|%s"};
            for (size_t f = 0; f < 3; f++) {
                char s[8192];
                snprintf(s, sizeof(s), forms[f], spec_text, spec_text);
                json_t *spec = json_stringn(s, strlen(s));
                template *t = NULL;
                char err[512];
                cr_assert_eq(template_compile(spec, &t, err, sizeof(err)), 0, "%s: %s", s, err);
                json_decref(spec);
                template_record r = {.topic = "t", .timestamp_ms = -1};
                r.value = g.p;
                r.value_len = g.len;
                tbuf raw = {0}, tree = {0}, rawt = {0}, treet = {0};
                char e1[256] = "", e2[256] = "";
                int rc1 = template_render_json(t, &r, &raw, e1, sizeof(e1));
                int rc3 = template_render_text(t, &r, &rawt, e1, sizeof(e1));
                r.doc = doc;
                int rc2 = template_render_json(t, &r, &tree, e2, sizeof(e2));
                int rc4 = template_render_text(t, &r, &treet, e2, sizeof(e2));
                cr_assert_eq(rc1, rc2, "%s in %s: %s / %s", s, g.p, e1, e2);
                cr_assert_eq(rc3, rc4);
                if (rc1 == 0) {
                    cr_assert_eq(raw.len, tree.len, "%s in %s:\n%s\n%s", s, g.p, raw.p, tree.p);
                    cr_assert(memcmp(raw.p, tree.p, raw.len) == 0, "%s in %s:\n%s\n%s", s, g.p,
                              raw.p, tree.p);
                    cr_assert_eq(rawt.len, treet.len, "%s", s);
                    cr_assert(memcmp(rawt.p, treet.p, rawt.len) == 0, "%s", s);
                    json_t *check =
                        json_loadb(raw.p, raw.len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &je);
                    cr_assert(check, "not JSON: %s (%s)", raw.p, je.text);
                    if (f == 0) {
                        json_t *want = jansson_lookup(doc, ptr);
                        cr_assert(json_equal(check, want), "%s: %s", s, raw.p);
                    }
                    json_decref(check);
                    checked++;
                } else {
                    cr_assert_str_eq(e1, e2);
                }
                tbuf_free(&raw);
                tbuf_free(&tree);
                tbuf_free(&rawt);
                tbuf_free(&treet);
                template_free(t);
            }
        }
        plist_free(&ptrs);
        json_decref(doc);
        free(g.p);
    }
    cr_log_info("raw vs doc renderings: %zu identical", checked);
    cr_assert_gt(checked, 10000, "checked %zu", checked);
}

/* A value the engine validated is scanned for structure only and its JSON
 * copied without re-escaping: the output must mean exactly what the
 * validating path's does (same JSON after parsing), for whole-value,
 * nested, text and in-string references, over values with escapes,
 * whitespace everywhere and UTF-8. */
Test(template, validated_values_render_as_the_validating_path_does) {
    static const char *values[] = {
        VALUE,
        "{\"eventId\":\"e\\\"q\\\\b\\/s\\u00e9\\ud83d\\ude00\",\"customerId\":\"c\",\"data\":"
        "{\"s\":\"tab\\tnl\\n\",\"arr\":[ 1 , {\"x\" : [ ] } , \"]}\" ],\"e\":{}},\"z\":-0.5e-3}",
        " \n{\n \"data\" :\t[ \"caf\xc3\xa9\" , true,false ,null ] , \"eventId\" : \"\" ,"
        "\"customerId\":\"{[\\\"\"}\n ",
        /* duplicates: the last one wins */
        "{\"eventId\":\"first\",\"data\":{\"a\":1},\"eventId\":\"second\",\"customerId\":\"c\","
        "\"data\":[2]}",
        /* more members than the index holds (32) */
        "{\"m1\":1,\"m2\":2,\"m3\":3,\"m4\":4,\"m5\":5,\"m6\":6,\"m7\":7,\"m8\":8,\"m9\":9,\"m10\":"
        "10,"
        "\"m11\":1,\"m12\":2,\"m13\":3,\"m14\":4,\"m15\":5,\"m16\":6,\"m17\":7,\"m18\":8,\"m19\":9,"
        "\"m20\":1,\"m21\":2,\"m22\":3,\"m23\":4,\"m24\":5,\"m25\":6,\"m26\":7,\"m27\":8,\"m28\":9,"
        "\"m29\":1,\"m30\":2,\"m31\":3,\"m32\":4,\"eventId\":\"late\",\"customerId\":\"c\","
        "\"data\":{\"deep\":[1,{\"x\":\"y\"}]}}",
        /* escaped keys (found by their decoded name), keys that need ~
         * escapes in a pointer, and a key that only looks like one */
        "{\"e\\u0076entId\":\"esc\",\"a/b\":1,\"m~n\":2,\"customerId\":\"c\",\"data\":{},"
        "\"a~1b\":\"literal\"}",
    };
    static const char *specs[] = {
        "{\"id\": \"${/eventId}\", \"slash\": \"${/a~1b}\", \"tilde\": \"${/m~0n:-none}\", "
        "\"d\": \"${/data}\"}",
        "{\"id\": \"${/eventId}\", \"c\": \"${/customerId}\", \"d\": \"${/data}\", \"all\": "
        "\"${/}\"}",
        "{\"mixed\": \"id=${/eventId} c=${/customerId}\", \"arr\": [\"${/data}\", 1]}",
        "\"${/data}\"",
    };
    for (size_t v = 0; v < sizeof(values) / sizeof(values[0]); v++) {
        for (size_t s = 0; s < sizeof(specs) / sizeof(specs[0]); s++) {
            template *t = compile(specs[s]);
            for (int as_text = 0; as_text < 2; as_text++) {
                for (int use_index = 0; use_index < 2; use_index++) {
                    tbuf out[2] = {{0}, {0}};
                    char err[2][256] = {"", ""};
                    int rc[2];
                    for (int valid = 0; valid < 2; valid++) {
                        template_record r = base_record();
                        template_index ix = {0};
                        r.value = values[v];
                        r.value_len = strlen(values[v]);
                        r.value_valid = valid;
                        r.index = valid && use_index ? &ix : NULL;
                        rc[valid] = as_text
                                        ? template_render_text(t, &r, &out[valid], err[valid], 256)
                                        : template_render_json(t, &r, &out[valid], err[valid], 256);
                    }
                    cr_assert_eq(rc[0], rc[1], "value %zu spec %zu text %d: %s | %s", v, s, as_text,
                                 err[0], err[1]);
                    if (rc[0] == 0 && !as_text) {
                        json_t *a = parse(out[0].p), *b = parse(out[1].p);
                        cr_assert(json_equal(a, b), "value %zu spec %zu:\n%s\n%s", v, s, out[0].p,
                                  out[1].p);
                        cr_assert_null(strpbrk(out[1].p, "\n\t"), "not compact: %s", out[1].p);
                        json_decref(a);
                        json_decref(b);
                    } else if (rc[0] == 0) {
                        /* Text: the same string, or (an object rendered as
                         * text) the same JSON with escapes spelled either way. */
                        json_t *a = json_loads(out[0].p, JSON_DECODE_ANY, NULL);
                        json_t *b = json_loads(out[1].p, JSON_DECODE_ANY, NULL);
                        cr_assert((a && b && json_equal(a, b)) || strcmp(out[0].p, out[1].p) == 0,
                                  "value %zu spec %zu as text:\n%s\n%s", v, s, out[0].p, out[1].p);
                        json_decref(a);
                        json_decref(b);
                    }
                    tbuf_free(&out[0]);
                    tbuf_free(&out[1]);
                }
            }
            template_free(t);
        }
    }
}

/* The top-level index compares bytes unless an escape is involved: a key
 * spelled with \u escapes is still found by its decoded name, and ~0/~1 in
 * a pointer still mean ~ and /, on the validated path with its index. */
Test(template, the_member_index_decodes_escaped_keys_and_pointer_tokens) {
    const char *v = "{\"e\\u0076entId\":\"esc\",\"a/b\":1,\"m~n\":2,\"a~1b\":\"literal\"}";
    template *t = compile("{\"id\": \"${/eventId}\", \"slash\": \"${/a~1b}\", \"tilde\": "
                          "\"${/m~0n}\"}");
    for (int use_index = 0; use_index < 2; use_index++) {
        template_record r = base_record();
        template_index ix = {0};
        r.value = v;
        r.value_len = strlen(v);
        r.value_valid = 1;
        r.index = use_index ? &ix : NULL;
        tbuf out = {0};
        char err[256] = "";
        cr_assert_eq(template_render_json(t, &r, &out, err, sizeof(err)), 0, "%s", err);
        cr_assert_str_eq(out.p, "{\"id\":\"esc\",\"slash\":1,\"tilde\":2}");
        tbuf_free(&out);
    }
    template_free(t);
}
