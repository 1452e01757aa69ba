/*
 * sink-sns.  Two halves:
 *   - the pure parts (plugins/sink-sns/sns_proto.c, compiled in): form
 *     encoding, the XML answers read with expat, a PublishBatch entry's
 *     outcome, SNS's error answers through plugins/common's classifier
 *     (tests/plugins/aws_common.c tests that one in full), batch planning,
 *     durations;
 *   - the real build/plugins/sink-sns.so, its options through the engine's
 *     config map, on a test host whose HTTP client records each request and
 *     lets the test answer it: option errors, how a batch is cut into
 *     PublishBatch requests, per-entry outcomes and the per-key order rule.
 * The integration tests (tests/integration/test_sink_sns.py) cover the
 * plugin against moto's SNS and SQS.
 */
#include <criterion/criterion.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../plugins/sink-sns/sns_proto.c"

#include "configmap.h"
#include "engine.h"
#include "log.h"
#include "metrics.h"
#include "plugin.h"

#define SNS_SO CONNECTD_BUILD_PLUGIN_DIR "/sink-sns.so"

/* ------------------------------------------------------------ form encoding */

static char *enc(const char *s) {
    pbuf b = {0};
    cr_assert_eq(sns_form_encode(&b, s, strlen(s)), 0);
    if (b.data == NULL) return strdup("");
    return b.data;
}

Test(sns_form, unreserved_bytes_stay_everything_else_is_percent_encoded) {
    char *e = enc("AZaz09-._~");
    cr_assert_str_eq(e, "AZaz09-._~");
    free(e);
    e = enc("a b+c&d=e/f?g:h{\"x\"}*'!");
    cr_assert_str_eq(e, "a%20b%2Bc%26d%3De%2Ff%3Fg%3Ah%7B%22x%22%7D%2A%27%21");
    free(e);
    e = enc("caf\xc3\xa9\n\x01\xff");
    cr_assert_str_eq(e, "caf%C3%A9%0A%01%FF");
    free(e);
    e = enc("");
    cr_assert_str_eq(e, "");
    free(e);
}

Test(sns_form, params_are_joined_with_ampersands_and_prefixed) {
    pbuf b = {0};
    cr_assert_eq(sns_form_param(&b, NULL, "Action", "Publish", 7), 0);
    cr_assert_eq(
        sns_form_param(&b, "PublishBatchRequestEntries.member.1.", "Message", "{\"a\":1}", 7), 0);
    cr_assert_str_eq(
        b.data, "Action=Publish&PublishBatchRequestEntries.member.1.Message=%7B%22a%22%3A1%7D");
    pbuf_free(&b);
}

Test(sns_form, base64_pads_like_rfc_4648) {
    const char *in[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
    const char *want[] = {"", "Zg==", "Zm8=", "Zm9v", "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy"};
    for (size_t i = 0; i < 7; i++) {
        pbuf b = {0};
        cr_assert_eq(sns_base64(&b, in[i], strlen(in[i])), 0);
        cr_assert_str_eq(b.data, want[i]);
        pbuf_free(&b);
    }
}

/* ---------------------------------------------------------------- XML */

static const char publish_ok[] =
    "<PublishResponse xmlns=\"http://sns.amazonaws.com/doc/2010-03-31/\">\n"
    "  <PublishResult>\n    <MessageId>94f20ce6-13c5-43a0-9a9e-ca52d816e90b</MessageId>\n"
    "  </PublishResult>\n  <ResponseMetadata><RequestId>f187a3c1</RequestId></ResponseMetadata>\n"
    "</PublishResponse>\n";

static const char batch_partial[] =
    "<?xml version=\"1.0\"?>\n"
    "<PublishBatchResponse xmlns=\"http://sns.amazonaws.com/doc/2010-03-31/\">"
    "<PublishBatchResult>"
    "<Successful><member><Id>r0</Id><MessageId>m-0</MessageId></member>"
    "<member><MessageId>m-2</MessageId><Id>r2</Id></member></Successful>"
    "<Failed><member><Id>r1</Id><Code>InvalidParameter</Code>"
    "<Message>Invalid parameter: Message too long &amp; odd</Message>"
    "<SenderFault>true</SenderFault></member>"
    "<member><Id>r3</Id><Code>InternalError</Code><Message>oops</Message>"
    "<SenderFault>false</SenderFault></member></Failed>"
    "</PublishBatchResult><ResponseMetadata><RequestId>x</RequestId></ResponseMetadata>"
    "</PublishBatchResponse>";

static const char error_resp[] =
    "<ErrorResponse xmlns=\"http://sns.amazonaws.com/doc/2010-03-31/\">\n"
    "  <Error>\n    <Type>Sender</Type>\n    <Code>NotFound</Code>\n"
    "    <Message>Topic does not exist</Message>\n  </Error>\n"
    "  <RequestId>9dd01905-5012-5f99-8663-4b3ecd0dfaef</RequestId>\n</ErrorResponse>";

Test(sns_xml, publish_answer_gives_the_message_id) {
    sns_response r;
    char err[200];
    cr_assert_eq(sns_xml_parse(publish_ok, strlen(publish_ok), &r, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(r.kind, SNS_XML_PUBLISH);
    cr_assert_str_eq(r.message_id, "94f20ce6-13c5-43a0-9a9e-ca52d816e90b");
}

Test(sns_xml, batch_answer_gives_each_entry_in_either_order_of_children) {
    sns_response r;
    char err[200];
    cr_assert_eq(sns_xml_parse(batch_partial, strlen(batch_partial), &r, err, sizeof(err)), 0, "%s",
                 err);
    cr_assert_eq(r.kind, SNS_XML_BATCH);
    cr_assert_eq(r.nentries, 4);
    cr_assert_str_eq(r.entries[0].id, "r0");
    cr_assert(r.entries[0].ok);
    cr_assert_str_eq(r.entries[0].message_id, "m-0");
    cr_assert_str_eq(r.entries[1].id, "r2");
    cr_assert_str_eq(r.entries[1].message_id, "m-2");
    cr_assert_str_eq(r.entries[2].id, "r1");
    cr_assert_not(r.entries[2].ok);
    cr_assert_str_eq(r.entries[2].code, "InvalidParameter");
    cr_assert_str_eq(r.entries[2].message, "Invalid parameter: Message too long & odd");
    cr_assert(r.entries[2].sender_fault);
    cr_assert_not(r.entries[3].sender_fault);

    aws_error v;
    cr_assert_eq(sns_classify_entry(&r.entries[0], &v), CD_RECORD_OK);
    cr_assert_eq(sns_classify_entry(&r.entries[2], &v), CD_RECORD_FATAL);
    cr_assert_str_eq(v.reason, "InvalidParameter: Invalid parameter: Message too long & odd");
    cr_assert_eq(sns_classify_entry(&r.entries[3], &v), CD_RECORD_RETRY);
    cr_assert_str_eq(v.type, "InternalError");
}

Test(sns_xml, an_error_answer_is_told_apart_from_the_publish_answers) {
    /* Its Code and Message are aws_error_classify_xml's to read. */
    sns_response r;
    char err[200];
    cr_assert_eq(sns_xml_parse(error_resp, strlen(error_resp), &r, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(r.kind, SNS_XML_ERROR);
    cr_assert_eq(r.nentries, 0);
    cr_assert_str_eq(r.message_id, "");
}

Test(sns_xml, malformed_or_foreign_bodies_are_errors_not_crashes) {
    const char *bad[] = {
        "",
        "<PublishResponse><PublishResult><MessageId>x",
        "<<<>>>",
        "{\"__type\":\"Throttling\"}",
        "<ErrorResponse><Error><Code>X</Error></Code></ErrorResponse>",
        "<html><body>502 Bad Gateway</body></html>",
        "<?xml version=\"1.0\"?><!DOCTYPE x [<!ENTITY a \"aaaaaaaaaa\">"
        "<!ENTITY b \"&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;\">]><x>&b;</x>",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        sns_response r;
        char err[200] = "";
        cr_assert_lt(sns_xml_parse(bad[i], strlen(bad[i]), &r, err, sizeof(err)), 0, "#%zu", i);
        cr_assert(strncmp(err, "XML: ", 5) == 0, "#%zu: %s", i, err);
    }
    /* Deep nesting, a huge text and too many members are read safely. */
    pbuf b = {0};
    for (int i = 0; i < 5000; i++)
        pbuf_puts(&b, "<a>");
    for (int i = 0; i < 5000; i++)
        pbuf_puts(&b, "</a>");
    sns_response r;
    char err[200];
    cr_assert_lt(sns_xml_parse(b.data, b.len, &r, err, sizeof(err)), 0); /* not an SNS answer */
    b.len = 0;
    pbuf_puts(&b, "<ErrorResponse><Error><Code>");
    for (int i = 0; i < 100000; i++)
        pbuf_puts(&b, "Z");
    pbuf_puts(&b, "</Code></Error></ErrorResponse>");
    cr_assert_eq(sns_xml_parse(b.data, b.len, &r, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(r.kind, SNS_XML_ERROR);
    b.len = 0;
    pbuf_puts(&b, "<PublishBatchResponse><PublishBatchResult><Successful>");
    for (int i = 0; i < 40; i++) {
        char m[80];
        snprintf(m, sizeof(m), "<member><Id>r%d</Id><MessageId>m</MessageId></member>", i);
        pbuf_puts(&b, m);
    }
    pbuf_puts(&b, "</Successful></PublishBatchResult></PublishBatchResponse>");
    cr_assert_eq(sns_xml_parse(b.data, b.len, &r, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(r.nentries, SNS_XML_MAX_ENTRIES);
    cr_assert_eq(r.extra_entries, 40 - SNS_XML_MAX_ENTRIES);
    pbuf_free(&b);
}

/* ------------------------------------------------------- classification */

static cd_outcome classify(int status, const char *body, const char *retry_after, aws_error *v) {
    cd_http_result res = {
        .status = status, .body = body, .body_len = strlen(body), .retry_after = retry_after};
    return aws_error_classify_xml(&res, v);
}

#define ERRXML(code)                                                                               \
    "<ErrorResponse><Error><Type>Sender</Type><Code>" code "</Code><Message>m</Message></Error>"   \
    "</ErrorResponse>"

Test(sns_classify, sender_errors_are_fatal_with_the_code_throttling_and_5xx_retry) {
    aws_error v;
    cr_assert_eq(classify(404, ERRXML("NotFound"), NULL, &v), CD_RECORD_FATAL);
    cr_assert_str_eq(v.reason, "NotFound: m");
    cr_assert_eq(classify(400, ERRXML("InvalidParameter"), NULL, &v), CD_RECORD_FATAL);
    cr_assert_eq(classify(403, ERRXML("AuthorizationError"), NULL, &v), CD_RECORD_FATAL);
    cr_assert_eq(classify(400, ERRXML("KMSDisabled"), NULL, &v), CD_RECORD_FATAL);
    cr_assert_str_eq(v.type, "KMSDisabled");
    cr_assert_eq(classify(400, ERRXML("Throttling"), "3", &v), CD_RECORD_RETRY);
    cr_assert_eq(v.retry_after_ms, 3000);
    cr_assert_eq(classify(400, ERRXML("Throttled"), NULL, &v), CD_RECORD_RETRY);
    cr_assert_eq(classify(400, ERRXML("KMSThrottling"), NULL, &v), CD_RECORD_RETRY);
    cr_assert_eq(classify(503, "<html>busy</html>", "Wed, 21 Oct 2015 07:28:00 GMT", &v),
                 CD_RECORD_RETRY);
    cr_assert_eq(v.retry_after_ms, 0);
    cr_assert_str_eq(v.type, "HTTP 503");
    cr_assert_eq(classify(429, "", NULL, &v), CD_RECORD_RETRY);
    cr_assert_eq(classify(200, publish_ok, NULL, &v), CD_RECORD_OK);
    cd_http_result conn = {
        .error = -5, .error_message = "Connection refused", .body = "", .retriable = 1};
    cr_assert_eq(aws_error_classify_xml(&conn, &v), CD_RECORD_RETRY);
    cr_assert_str_eq(v.reason, "connection: Connection refused");
}

/* -------------------------------------------------------------- planning */

Test(sns_plan, batches_hold_at_most_ten_entries) {
    size_t sizes[25];
    for (size_t i = 0; i < 25; i++)
        sizes[i] = 100;
    size_t off = 0, got[5], n = 0;
    while (off < 25) {
        got[n] = sns_plan_next(sizes + off, 25 - off, SNS_BATCH_MAX_ENTRIES, SNS_BATCH_MAX_BYTES);
        off += got[n++];
    }
    cr_assert_eq(n, 3);
    cr_assert_eq(got[0], 10);
    cr_assert_eq(got[1], 10);
    cr_assert_eq(got[2], 5);
}

Test(sns_plan, batches_hold_at_most_256_kib) {
    size_t sizes[] = {100000, 100000, 62144, 1, 262144, 200000, 70000};
    /* 100000+100000+62144 = 262144 fits exactly; the next byte does not. */
    cr_assert_eq(sns_plan_next(sizes, 7, 10, SNS_BATCH_MAX_BYTES), 3);
    cr_assert_eq(sns_plan_next(sizes + 3, 4, 10, SNS_BATCH_MAX_BYTES), 1);
    cr_assert_eq(sns_plan_next(sizes + 4, 3, 10, SNS_BATCH_MAX_BYTES), 1);
    cr_assert_eq(sns_plan_next(sizes + 5, 2, 10, SNS_BATCH_MAX_BYTES), 1);
    cr_assert_eq(sns_plan_next(sizes + 6, 1, 10, SNS_BATCH_MAX_BYTES), 1);
    cr_assert_eq(sns_plan_next(sizes, 7, 1, SNS_BATCH_MAX_BYTES), 1);
    cr_assert_eq(sns_plan_next(sizes, 0, 10, SNS_BATCH_MAX_BYTES), 0);
}

Test(sns_plan, durations) {
    int64_t ms;
    char err[200];
    cr_assert_eq(sns_parse_duration("\"24h\"", &ms, err, sizeof(err)), 0);
    cr_assert_eq(ms, 86400000);
    cr_assert_eq(sns_parse_duration("\"90m\"", &ms, err, sizeof(err)), 0);
    cr_assert_eq(ms, 5400000);
    cr_assert_eq(sns_parse_duration("\"30s\"", &ms, err, sizeof(err)), 0);
    cr_assert_eq(ms, 30000);
    cr_assert_eq(sns_parse_duration("\"500ms\"", &ms, err, sizeof(err)), 0);
    cr_assert_eq(ms, 500);
    cr_assert_eq(sns_parse_duration("1500", &ms, err, sizeof(err)), 0);
    cr_assert_eq(ms, 1500);
    cr_assert_eq(sns_parse_duration("0", &ms, err, sizeof(err)), 0);
    cr_assert_eq(ms, 0);
    cr_assert_eq(sns_parse_duration("\"off\"", &ms, err, sizeof(err)), 0);
    cr_assert_eq(ms, 0);
    const char *bad[] = {"\"5 minutes\"", "\"h\"", "-1", "1.5", "true", "\"9999d\"", "\"\""};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        cr_assert_lt(sns_parse_duration(bad[i], &ms, err, sizeof(err)), 0, "%s", bad[i]);
}

/* ------------------------------------------------- the plugin on a test host */

#define MAX_CALLS 64

typedef struct call_rec {
    char *body;
    cd_http_result_cb cb;
    void *opaque;
    int answered;
    char service[16], region[32];
} call_rec;

typedef struct done_rec {
    int reported;
    cd_outcome outcome;
    char reason[512];
} done_rec;

static struct {
    uv_loop_t loop;
    engine eng;
    cd_instance inst;
    cd_host host;
    plugin_registry reg;
    const cd_plugin_desc *desc;
    cd_config *cfg;
    void *ctx;
    char errbuf[512];
    int started, stop_calls;
    int pool_live;
    call_rec calls[MAX_CALLS];
    size_t ncalls;
    done_rec done[64];
    cd_record recs[64];
    char values[64][256];
    char keys[64][16];
    cd_batch batch;
} sx;

static int t_creds(cd_instance *inst, char *errbuf, size_t errlen) {
    return 0;
}
static cd_http_pool *t_pool_new(cd_instance *inst, size_t max, char *errbuf, size_t errlen) {
    sx.pool_live = 1;
    return (cd_http_pool *)&sx.pool_live;
}
static void t_pool_free(cd_http_pool *p) {
    cr_assert_eq((void *)p, (void *)&sx.pool_live);
    sx.pool_live = 0;
}
static int t_http_call(cd_http_pool *pool, const cd_http_call *call, cd_http_result_cb cb,
                       void *opaque, char *errbuf, size_t errlen) {
    cr_assert(sx.ncalls < MAX_CALLS);
    call_rec *c = &sx.calls[sx.ncalls++];
    c->body = strndup(call->body, call->body_len);
    c->cb = cb;
    c->opaque = opaque;
    snprintf(c->service, sizeof(c->service), "%s", call->aws_service ? call->aws_service : "");
    snprintf(c->region, sizeof(c->region), "%s", call->aws_region ? call->aws_region : "");
    cr_assert_str_eq(call->method, "POST");
    cr_assert_str_eq(call->headers[0],
                     "Content-Type: application/x-www-form-urlencoded; charset=utf-8");
    return 0;
}
static int t_redis_none(cd_instance *inst, cd_redis_cb cb, void *opaque, int argc,
                        const char **argv, const size_t *argvlen, char *errbuf, size_t errlen) {
    snprintf(errbuf, errlen, "no redis_url in the engine config");
    return CD_ERR_UNSUPPORTED;
}
typedef struct redis_rec {
    char cmd[256];
    cd_redis_cb cb;
    void *opaque;
    int answered;
} redis_rec;

#define MAX_REDIS 64
static redis_rec t_redis[MAX_REDIS];
static size_t t_nredis;
static int t_redis_down;

/* A Redis that records each command for the test to answer, or refuses
 * them at once while t_redis_down (as the engine's does when the
 * connection is gone). */
static int t_redis_cmd(cd_instance *inst, cd_redis_cb cb, void *opaque, int argc, const char **argv,
                       const size_t *argvlen, char *errbuf, size_t errlen) {
    if (t_redis_down) {
        snprintf(errbuf, errlen, "redis redis://127.0.0.1:1: not connected");
        return CD_ERR_IO;
    }
    cr_assert(t_nredis < MAX_REDIS);
    redis_rec *r = &t_redis[t_nredis++];
    memset(r, 0, sizeof(*r));
    size_t n = 0;
    for (int i = 0; i < argc; i++)
        n += (size_t)snprintf(r->cmd + n, sizeof(r->cmd) - n, "%s%.*s", i ? " " : "",
                              (int)(argvlen ? argvlen[i] : strlen(argv[i])), argv[i]);
    r->cb = cb;
    r->opaque = opaque;
    return 0;
}

static void redis_answer(size_t i, cd_redis_type type, long long integer, int error) {
    redis_rec *r = &t_redis[i];
    cr_assert_not(r->answered, "%s answered twice", r->cmd);
    r->answered = 1;
    cd_redis_reply rep = {.error = error,
                          .type = type,
                          .integer = integer,
                          .str = type == CD_REDIS_ERROR ? "connection lost" : "OK",
                          .len = type == CD_REDIS_ERROR ? 15 : 2};
    r->cb(r->opaque, &rep);
}

static void t_record_done(cd_batch *batch, size_t index, cd_outcome outcome, int64_t hint,
                          const char *reason) {
    cr_assert_eq(batch, &sx.batch);
    cr_assert(index < batch->count);
    cr_assert_not(sx.done[index].reported, "record %zu reported twice", index);
    sx.done[index].reported = 1;
    sx.done[index].outcome = outcome;
    snprintf(sx.done[index].reason, sizeof(sx.done[index].reason), "%s", reason ? reason : "");
}
static void t_on_stop(void *opaque, int status) {
    sx.stop_calls++;
}

static void sx_setup(void) {
    memset(&sx, 0, sizeof(sx));
    t_nredis = 0;
    t_redis_down = 0;
    log_set_level(CD_LOG_WARN);
    cr_assert_eq(uv_loop_init(&sx.loop), 0);
    sx.eng.loop = &sx.loop;
    char err[512];
    cr_assert_eq(plugin_registry_load(&sx.reg, SNS_SO, err, sizeof(err)), 0, "%s: %s", SNS_SO, err);
    const plugin *p = plugin_find(&sx.reg, "sns");
    cr_assert_not_null(p);
    cr_assert_eq(p->desc->kind, CD_PLUGIN_SINK);
    sx.desc = p->desc;
    instance_init(&sx.inst, &sx.eng, NULL, "alerts", "notify");
    sx.host = engine_host;
    sx.host.aws_credentials_check = t_creds;
    sx.host.http_pool_new = t_pool_new;
    sx.host.http_pool_free = t_pool_free;
    sx.host.http_call = t_http_call;
    sx.host.redis_command = t_redis_none;
    sx.host.record_done = t_record_done;
}

static void sx_teardown(void) {
    if (sx.started) {
        cr_assert_eq(sx.desc->sink->stop(sx.ctx, t_on_stop, NULL), 0);
        uv_run(&sx.loop, UV_RUN_DEFAULT);
        cr_assert_eq(sx.stop_calls, 1);
        cr_assert_not(sx.pool_live, "the HTTP pool outlived stop");
    }
    if (sx.ctx) sx.desc->sink->destroy(sx.ctx);
    uv_run(&sx.loop, UV_RUN_DEFAULT);
    configmap_free(sx.cfg);
    instance_release(&sx.inst);
    metrics_free(&sx.eng.metrics);
    plugin_registry_free(&sx.reg);
    for (size_t i = 0; i < sx.ncalls; i++)
        free(sx.calls[i].body);
    cr_assert_eq(uv_loop_close(&sx.loop), 0, "the loop still has live handles");
}

TestSuite(sns_sink, .init = sx_setup, .fini = sx_teardown, .timeout = 30);

/* Validates the sink object `json` with the engine's config map; returns
 * the number of config map errors (first in errbuf), else init's result. */
static int sx_init(const char *json) {
    static const char *const engine_keys[] = {"plugin", "name", "when", "retry", NULL};
    json_t *src = json_loads(json, 0, NULL);
    cr_assert_not_null(src, "%s", json);
    diag d = {0};
    int nerr =
        configmap_apply(sx.desc->options, src, engine_keys, "p.json", "sinks[0]", &d, &sx.cfg);
    json_decref(src);
    if (nerr) {
        snprintf(sx.errbuf, sizeof(sx.errbuf), "%s", d.lines[0]);
        diag_free(&d);
        return 1000 + nerr;
    }
    diag_free(&d);
    sx.errbuf[0] = '\0';
    return sx.desc->sink->init(&sx.host, &sx.inst, sx.cfg, &sx.ctx, sx.errbuf, sizeof(sx.errbuf));
}

#define ARN      "arn:aws:sns:eu-west-1:123456789012:alerts"
#define FIFO_ARN "arn:aws:sns:us-east-2:123456789012:alerts.fifo"

static void expect_init_error(const char *json, const char *needle) {
    int rc = sx_init(json);
    cr_assert_neq(rc, 0, "accepted: %s", json);
    cr_assert(strstr(sx.errbuf, needle) != NULL, "%s: got \"%s\", want \"%s\"", json, sx.errbuf,
              needle);
    if (sx.cfg) {
        configmap_free(sx.cfg);
        sx.cfg = NULL;
    }
    sx.ctx = NULL;
}

Test(sns_sink, bad_options_are_refused_naming_the_option) {
    expect_init_error("{\"plugin\":\"sns\"}", "topic_arn");
    expect_init_error("{\"topic_arn\":\"alerts\"}",
                      "topic_arn: \"alerts\" is not an SNS topic ARN");
    expect_init_error("{\"topic_arn\":\"arn:aws:sqs:eu-west-1:1:q\"}", "not an SNS topic ARN");
    expect_init_error("{\"topic_arn\":\"" ARN "\",\"endpoint\":\"ftp://x\"}",
                      "endpoint: must start with http");
    expect_init_error("{\"topic_arn\":\"" ARN "\",\"message\":\"${/a\"}", "message: ");
    expect_init_error("{\"topic_arn\":\"" ARN "\",\"subject\":\"${nope}\"}", "subject: ");
    expect_init_error("{\"topic_arn\":\"" ARN "\",\"message_attributes\":[1]}",
                      "message_attributes: must be an object");
    expect_init_error("{\"topic_arn\":\"" ARN "\",\"message_attributes\":"
                      "{\"kind\":{\"type\":\"Int\",\"value\":\"x\"}}}",
                      "message_attributes.kind.type: must be String, Number, Binary or "
                      "String.Array, got \"Int\"");
    expect_init_error("{\"topic_arn\":\"" ARN "\",\"message_attributes\":"
                      "{\"kind\":{\"value\":\"x\"}}}",
                      "message_attributes.kind: must be {\"type\"");
    expect_init_error("{\"topic_arn\":\"" ARN "\",\"message_attributes\":"
                      "{\"AWS.x\":{\"type\":\"String\",\"value\":\"x\"}}}",
                      "message_attributes.AWS.x: not a valid attribute name");
    expect_init_error("{\"topic_arn\":\"" ARN "\",\"message_attributes\":"
                      "{\"k\":{\"type\":\"String\",\"value\":\"${/x\"}}}",
                      "message_attributes.k.value: ");
    expect_init_error("{\"topic_arn\":\"" ARN "\",\"dedupe_window\":\"5 minutes\"}",
                      "dedupe_window: ");
    expect_init_error("{\"topic_arn\":\"" ARN "\",\"dedupe_window\":-5}", "dedupe_window: ");
    expect_init_error("{\"topic_arn\":\"" ARN "\",\"on_redis_error\":\"ignore\"}",
                      "on_redis_error");
    expect_init_error("{\"topic_arn\":\"" FIFO_ARN "\",\"message_group_id\":\"\"}",
                      "message_group_id: required for a FIFO topic");
}

Test(sns_sink, defaults_come_from_the_arn) {
    cr_assert_eq(sx_init("{\"topic_arn\":\"" FIFO_ARN "\"}"), 0, "%s", sx.errbuf);
    sns_ctx *c = sx.ctx;
    cr_assert_str_eq(c->region, "us-east-2");
    cr_assert_str_eq(c->url, "https://sns.us-east-2.amazonaws.com/");
    cr_assert(c->fifo);
    cr_assert_eq(c->dedupe_window_ms, 0, "a FIFO topic needs no Redis");
    sx.desc->sink->destroy(sx.ctx);
    sx.ctx = NULL;
    configmap_free(sx.cfg);
    sx.cfg = NULL;
    cr_assert_eq(sx_init("{\"topic_arn\":\"" ARN "\",\"region\":\"eu-central-1\"}"), 0, "%s",
                 sx.errbuf);
    c = sx.ctx;
    cr_assert_str_eq(c->region, "eu-central-1");
    cr_assert_not(c->fifo);
    cr_assert_eq(c->dedupe_window_ms, 86400000);
    cr_assert_str_eq(c->dedupe_prefix, "sns:dedupe:alerts/notify:");
}

Test(sns_sink, dedupe_without_redis_url_fails_start_naming_both_options) {
    cr_assert_eq(sx_init("{\"topic_arn\":\"" ARN "\"}"), 0, "%s", sx.errbuf);
    cr_assert_lt(sx.desc->sink->start(sx.ctx, sx.errbuf, sizeof(sx.errbuf)), 0);
    cr_assert(strstr(sx.errbuf, "redis_url") && strstr(sx.errbuf, "dedupe_window"), "%s",
              sx.errbuf);
}

/* Starts a standard-topic sink without dedupe, with `extra` options. */
static void sx_start(const char *extra) {
    char json[1024];
    snprintf(json, sizeof(json),
             "{\"topic_arn\":\"" ARN "\",\"dedupe_window\":\"off\",\"endpoint\":"
             "\"http://127.0.0.1:9\"%s%s}",
             extra ? "," : "", extra ? extra : "");
    cr_assert_eq(sx_init(json), 0, "%s", sx.errbuf);
    cr_assert_eq(sx.desc->sink->start(sx.ctx, sx.errbuf, sizeof(sx.errbuf)), 0, "%s", sx.errbuf);
    sx.started = 1;
}

/* A batch of n records; keys[i] NULL: no key.  Values {"eventId":"e<i>"}. */
static void sx_write(size_t n, const char *const *keys) {
    cr_assert(n <= 64);
    for (size_t i = 0; i < n; i++) {
        char *v = sx.values[i];
        snprintf(v, sizeof(sx.values[i]), "{\"eventId\":\"e%zu\",\"n\":%zu}", i, i);
        sx.recs[i] = (cd_record){.topic = "t",
                                 .offset = (int64_t)i,
                                 .timestamp_ms = -1,
                                 .value = v,
                                 .value_len = strlen(v),
                                 .value_format = CD_VALUE_JSON};
        if (keys && keys[i]) {
            snprintf(sx.keys[i], sizeof(sx.keys[i]), "%s", keys[i]);
            sx.recs[i].key = sx.keys[i];
            sx.recs[i].key_len = strlen(sx.keys[i]);
        }
    }
    sx.batch = (cd_batch){.count = n, .records = sx.recs};
    cr_assert_eq(sx.desc->sink->write(sx.ctx, &sx.batch), 0);
}

static void sx_answer(size_t call, int status, const char *body) {
    call_rec *c = &sx.calls[call];
    cr_assert_not(c->answered);
    c->answered = 1;
    cd_http_result res = {.status = status, .body = body, .body_len = strlen(body)};
    c->cb(c->opaque, &res);
}

static size_t count_of(const char *s, const char *needle) {
    size_t n = 0;
    for (const char *p = strstr(s, needle); p; p = strstr(p + 1, needle))
        n++;
    return n;
}

/* A PublishBatch answer: every Id of the request successful. */
static char *batch_ok_for(const char *body) {
    pbuf b = {0};
    pbuf_puts(&b, "<PublishBatchResponse><PublishBatchResult><Successful>");
    for (const char *p = strstr(body, ".Id=r"); p; p = strstr(p + 1, ".Id=r")) {
        char m[96];
        snprintf(m, sizeof(m), "<member><Id>r%d</Id><MessageId>m</MessageId></member>",
                 atoi(p + 5));
        pbuf_puts(&b, m);
    }
    pbuf_puts(&b, "</Successful></PublishBatchResult></PublishBatchResponse>");
    return b.data;
}

Test(sns_sink, twenty_five_records_go_as_three_publish_batch_requests_of_10_10_5) {
    sx_start(NULL);
    sx_write(25, NULL);
    cr_assert_eq(sx.ncalls, 3);
    size_t want[] = {10, 10, 5};
    for (size_t c = 0; c < 3; c++) {
        const char *b = sx.calls[c].body;
        const char *head = "Action=PublishBatch&TopicArn=arn%3Aaws%3Asns%3Aeu-west-1%3A";
        cr_assert(strncmp(b, head, strlen(head)) == 0, "%s", b);
        cr_assert_eq(count_of(b, ".Id=r"), want[c], "%s", b);
        cr_assert_eq(count_of(b, ".Message=%7B%22eventId%22"), want[c]);
        cr_assert(strstr(b, "&Version=2010-03-31") != NULL);
        cr_assert_str_eq(sx.calls[c].service, "sns");
        cr_assert_str_eq(sx.calls[c].region, "eu-west-1");
    }
    cr_assert(strstr(sx.calls[0].body,
                     "PublishBatchRequestEntries.member.1.Id=r0&PublishBatchRequestEntries."
                     "member.1.Message=%7B%22eventId%22%3A%22e0%22%2C%22n%22%3A0%7D") != NULL,
              "%s", sx.calls[0].body);
    cr_assert(strstr(sx.calls[0].body, "member.11.") == NULL);
    for (size_t c = 0; c < 3; c++) {
        char *ok = batch_ok_for(sx.calls[c].body);
        sx_answer(c, 200, ok);
        free(ok);
    }
    for (size_t i = 0; i < 25; i++) {
        cr_assert(sx.done[i].reported, "record %zu", i);
        cr_assert_eq(sx.done[i].outcome, CD_RECORD_OK, "record %zu: %s", i, sx.done[i].reason);
    }
}

Test(sns_sink, a_lone_record_or_batch_off_uses_publish) {
    sx_start("\"batch\":false,\"subject\":\"Alert ${/eventId}\","
             "\"message_attributes\":{\"n\":{\"type\":\"Number\",\"value\":\"${/n}\"},"
             "\"b\":{\"type\":\"Binary\",\"value\":\"${/eventId}\"}}");
    sx_write(2, NULL);
    cr_assert_eq(sx.ncalls, 2);
    cr_assert_str_eq(sx.calls[1].body,
                     "Action=Publish&TopicArn=arn%3Aaws%3Asns%3Aeu-west-1%3A123456789012%3Aalerts"
                     "&Message=%7B%22eventId%22%3A%22e1%22%2C%22n%22%3A1%7D&Subject=Alert%20e1"
                     "&MessageAttributes.entry.1.Name=n"
                     "&MessageAttributes.entry.1.Value.DataType=Number"
                     "&MessageAttributes.entry.1.Value.StringValue=1"
                     "&MessageAttributes.entry.2.Name=b"
                     "&MessageAttributes.entry.2.Value.DataType=Binary"
                     "&MessageAttributes.entry.2.Value.BinaryValue=ZTE%3D"
                     "&Version=2010-03-31");
    sx_answer(0, 200, publish_ok);
    sx_answer(1, 200, "<PublishResponse><oops");
    cr_assert_eq(sx.done[0].outcome, CD_RECORD_OK);
    cr_assert_eq(sx.done[1].outcome, CD_RECORD_RETRY);
    cr_assert(strstr(sx.done[1].reason, "unreadable Publish answer: XML: ") != NULL, "%s",
              sx.done[1].reason);
}

Test(sns_sink, each_entry_of_a_partial_failure_gets_its_own_outcome) {
    sx_start(NULL);
    sx_write(4, NULL);
    cr_assert_eq(sx.ncalls, 1);
    sx_answer(0, 200, batch_partial);
    cr_assert_eq(sx.done[0].outcome, CD_RECORD_OK);
    cr_assert_eq(sx.done[2].outcome, CD_RECORD_OK);
    cr_assert_eq(sx.done[1].outcome, CD_RECORD_FATAL);
    cr_assert_str_eq(sx.done[1].reason,
                     "InvalidParameter: Invalid parameter: Message too long & odd");
    cr_assert_eq(sx.done[3].outcome, CD_RECORD_RETRY);
    cr_assert_str_eq(sx.done[3].reason, "InternalError: oops");
}

Test(sns_sink, after_a_retry_later_records_of_that_key_are_retried_unsent) {
    sx_start(NULL);
    const char *keys[] = {"a", "a", "b", "a", "b"};
    sx_write(5, keys);
    /* Round 0: the first "a" and the first "b" in one request. */
    cr_assert_eq(sx.ncalls, 1);
    cr_assert_eq(count_of(sx.calls[0].body, ".Id=r"), 2);
    cr_assert(strstr(sx.calls[0].body, ".Id=r0&") && strstr(sx.calls[0].body, ".Id=r2&"));
    sx_answer(0, 200,
              "<PublishBatchResponse><PublishBatchResult><Successful><member><Id>r2</Id>"
              "<MessageId>m</MessageId></member></Successful><Failed><member><Id>r0</Id>"
              "<Code>Throttled</Code><Message>slow</Message><SenderFault>false</SenderFault>"
              "</member></Failed></PublishBatchResult></PublishBatchResponse>");
    cr_assert_eq(sx.done[0].outcome, CD_RECORD_RETRY);
    cr_assert_eq(sx.done[2].outcome, CD_RECORD_OK);
    /* Round 1: "a" is held back, only the second "b" goes, alone: Publish. */
    cr_assert(sx.done[1].reported && sx.done[1].outcome == CD_RECORD_RETRY);
    cr_assert_eq(sx.ncalls, 2);
    cr_assert(strncmp(sx.calls[1].body, "Action=Publish&", 15) == 0, "%s", sx.calls[1].body);
    cr_assert(strstr(sx.calls[1].body, "e4") != NULL);
    sx_answer(1, 200, publish_ok);
    cr_assert_eq(sx.done[4].outcome, CD_RECORD_OK);
    cr_assert(sx.done[3].reported && sx.done[3].outcome == CD_RECORD_RETRY);
    cr_assert_eq(sx.ncalls, 2);
}

Test(sns_sink, a_whole_request_error_is_classified_for_every_entry) {
    sx_start(NULL);
    sx_write(3, NULL);
    sx_answer(0, 404, error_resp);
    for (size_t i = 0; i < 3; i++) {
        cr_assert_eq(sx.done[i].outcome, CD_RECORD_FATAL);
        cr_assert_str_eq(sx.done[i].reason, "NotFound: Topic does not exist");
    }
}

Test(sns_sink, an_oversized_message_is_fatal_before_any_request) {
    sx_start("\"message\":\"${/n}${/pad}\"");
    /* 300 KiB of padding in one record. */
    size_t big = 300 * 1024;
    char *v = malloc(big + 64);
    int n = snprintf(v, 64, "{\"n\":1,\"pad\":\"");
    memset(v + n, 'x', big);
    strcpy(v + n + big, "\"}");
    sx.recs[0] = (cd_record){.topic = "t",
                             .timestamp_ms = -1,
                             .value = v,
                             .value_len = strlen(v),
                             .value_format = CD_VALUE_JSON};
    const char *small = "{\"n\":2,\"pad\":\"y\"}";
    sx.recs[1] = (cd_record){.topic = "t",
                             .offset = 1,
                             .timestamp_ms = -1,
                             .value = small,
                             .value_len = strlen(small),
                             .value_format = CD_VALUE_JSON};
    sx.batch = (cd_batch){.count = 2, .records = sx.recs};
    cr_assert_eq(sx.desc->sink->write(sx.ctx, &sx.batch), 0);
    cr_assert_eq(sx.done[0].outcome, CD_RECORD_FATAL);
    cr_assert(strstr(sx.done[0].reason, "message too large") && strstr(sx.done[0].reason, "262144"),
              "%s", sx.done[0].reason);
    cr_assert_eq(sx.ncalls, 1);
    cr_assert(strncmp(sx.calls[0].body, "Action=Publish&", 15) == 0);
    cr_assert(strstr(sx.calls[0].body, "Message=2y&") != NULL, "%s", sx.calls[0].body);
    sx_answer(0, 200, publish_ok);
    cr_assert_eq(sx.done[1].outcome, CD_RECORD_OK);
    free(v);
}

Test(sns_sink, many_large_records_are_cut_by_bytes) {
    sx_start("\"message\":\"${/pad}\"");
    static char vals[6][110 * 1024];
    for (size_t i = 0; i < 6; i++) {
        int n = snprintf(vals[i], 32, "{\"pad\":\"");
        memset(vals[i] + n, 'a' + (int)i, 100 * 1024);
        strcpy(vals[i] + n + 100 * 1024, "\"}");
        sx.recs[i] = (cd_record){.topic = "t",
                                 .offset = (int64_t)i,
                                 .timestamp_ms = -1,
                                 .value = vals[i],
                                 .value_len = strlen(vals[i]),
                                 .value_format = CD_VALUE_JSON};
    }
    sx.batch = (cd_batch){.count = 6, .records = sx.recs};
    cr_assert_eq(sx.desc->sink->write(sx.ctx, &sx.batch), 0);
    /* 100 KiB each: two fit in 256 KiB, three do not. */
    cr_assert_eq(sx.ncalls, 3);
    for (size_t c = 0; c < 3; c++) {
        cr_assert_eq(count_of(sx.calls[c].body, ".Id=r"), 2);
        char *ok = batch_ok_for(sx.calls[c].body);
        sx_answer(c, 200, ok);
        free(ok);
    }
    for (size_t i = 0; i < 6; i++)
        cr_assert_eq(sx.done[i].outcome, CD_RECORD_OK);
}

Test(sns_sink, template_errors_and_bad_attribute_values_are_fatal_per_record) {
    sx_start("\"subject\":\"${/s}\",\"message_attributes\":{\"n\":{\"type\":\"Number\","
             "\"value\":\"${/n}\"}}");
    const char *vals[] = {"{\"s\":\"ok\",\"n\":5}", "{\"n\":5}", "{\"s\":\"ok\",\"n\":\"five\"}"};
    for (size_t i = 0; i < 3; i++)
        sx.recs[i] = (cd_record){.topic = "t",
                                 .offset = (int64_t)i,
                                 .timestamp_ms = -1,
                                 .value = vals[i],
                                 .value_len = strlen(vals[i]),
                                 .value_format = CD_VALUE_JSON};
    sx.batch = (cd_batch){.count = 3, .records = sx.recs};
    cr_assert_eq(sx.desc->sink->write(sx.ctx, &sx.batch), 0);
    cr_assert_eq(sx.done[1].outcome, CD_RECORD_FATAL);
    cr_assert(strstr(sx.done[1].reason, "subject: template: /s: no such field") != NULL, "%s",
              sx.done[1].reason);
    cr_assert_eq(sx.done[2].outcome, CD_RECORD_FATAL);
    cr_assert_str_eq(sx.done[2].reason,
                     "message_attributes.n: \"five\" is not a valid Number value");
    cr_assert_eq(sx.ncalls, 1);
    sx_answer(0, 200, publish_ok);
    cr_assert_eq(sx.done[0].outcome, CD_RECORD_OK);
}

/* Starts a standard-topic sink with Redis dedupe on. */
static void sx_start_dedupe(const char *extra) {
    char json[1024];
    snprintf(json, sizeof(json),
             "{\"topic_arn\":\"" ARN "\",\"dedupe_window\":\"90m\",\"endpoint\":"
             "\"http://127.0.0.1:9\"%s%s}",
             extra ? "," : "", extra ? extra : "");
    sx.host.redis_command = t_redis_cmd;
    cr_assert_eq(sx_init(json), 0, "%s", sx.errbuf);
    cr_assert_eq(sx.desc->sink->start(sx.ctx, sx.errbuf, sizeof(sx.errbuf)), 0, "%s", sx.errbuf);
    sx.started = 1;
    if (t_nredis == 1) {
        cr_assert_str_eq(t_redis[0].cmd, "PING");
        redis_answer(0, CD_REDIS_STATUS, 0, 0);
    }
}

/* Records with the given eventIds (no Kafka key). */
static void sx_write_ids(size_t n, const char *const *event_ids) {
    for (size_t i = 0; i < n; i++) {
        char *v = sx.values[i];
        snprintf(v, sizeof(sx.values[i]), "{\"eventId\":\"%s\"}", event_ids[i]);
        sx.recs[i] = (cd_record){.topic = "t",
                                 .offset = (int64_t)i,
                                 .timestamp_ms = -1,
                                 .value = v,
                                 .value_len = strlen(v),
                                 .value_format = CD_VALUE_JSON};
    }
    sx.batch = (cd_batch){.count = n, .records = sx.recs};
    cr_assert_eq(sx.desc->sink->write(sx.ctx, &sx.batch), 0);
}

#define KEYP "sns:dedupe:alerts/notify:"

Test(sns_sink, dedupe_checks_exists_first_and_sets_nx_px_only_after_the_publish) {
    sx_start_dedupe(NULL);
    const char *ids[] = {"e0", "e1", "e2", "e1"};
    sx_write_ids(4, ids);
    /* One EXISTS per event; the repeated e1 is not asked about. */
    cr_assert_eq(t_nredis, 4);
    cr_assert_str_eq(t_redis[1].cmd, "EXISTS " KEYP "e0");
    cr_assert_str_eq(t_redis[2].cmd, "EXISTS " KEYP "e1");
    cr_assert_str_eq(t_redis[3].cmd, "EXISTS " KEYP "e2");
    cr_assert_eq(sx.ncalls, 0, "published before Redis answered");
    redis_answer(1, CD_REDIS_INTEGER, 1, 0); /* e0 was published before */
    cr_assert_eq(sx.done[0].outcome, CD_RECORD_OK);
    cr_assert(sx.done[0].reported);
    redis_answer(2, CD_REDIS_INTEGER, 0, 0);
    redis_answer(3, CD_REDIS_INTEGER, 0, 0);
    cr_assert_eq(sx.ncalls, 1);
    cr_assert(strstr(sx.calls[0].body, "e0") == NULL, "%s", sx.calls[0].body);
    cr_assert_eq(count_of(sx.calls[0].body, ".Id=r"), 2);
    char *ok = batch_ok_for(sx.calls[0].body);
    sx_answer(0, 200, ok);
    free(ok);
    /* Published: the keys are written, and only then are the records OK. */
    cr_assert_eq(t_nredis, 6);
    cr_assert_str_eq(t_redis[4].cmd, "SET " KEYP "e1 1 NX PX 5400000");
    cr_assert_str_eq(t_redis[5].cmd, "SET " KEYP "e2 1 NX PX 5400000");
    cr_assert_not(sx.done[1].reported);
    redis_answer(4, CD_REDIS_STATUS, 0, 0);
    redis_answer(5, CD_REDIS_ERROR, 0, -5); /* a lost SET: published all the same */
    cr_assert_eq(sx.done[1].outcome, CD_RECORD_OK);
    cr_assert_eq(sx.done[2].outcome, CD_RECORD_OK);
    /* The second e1 of the batch followed the first: not published again. */
    cr_assert(sx.done[3].reported);
    cr_assert_eq(sx.done[3].outcome, CD_RECORD_OK);
    cr_assert_eq(sx.ncalls, 1);
}

Test(sns_sink, an_empty_dedupe_key_publishes_each_record_without_suppression) {
    sx_start_dedupe(NULL);
    const char *ids[] = {"", "e1", ""};
    sx_write_ids(3, ids);
    /* Only e1 is looked up; the two empty ones are not one event. */
    cr_assert_eq(t_nredis, 2);
    cr_assert_str_eq(t_redis[1].cmd, "EXISTS " KEYP "e1");
    redis_answer(1, CD_REDIS_INTEGER, 0, 0);
    cr_assert_eq(sx.ncalls, 1);
    cr_assert_eq(count_of(sx.calls[0].body, ".Id=r"), 3, "%s", sx.calls[0].body);
    char *ok = batch_ok_for(sx.calls[0].body);
    sx_answer(0, 200, ok);
    free(ok);
    cr_assert_eq(t_nredis, 3, "only e1's key is written");
    cr_assert_str_eq(t_redis[2].cmd, "SET " KEYP "e1 1 NX PX 5400000");
    redis_answer(2, CD_REDIS_STATUS, 0, 0);
    for (size_t i = 0; i < 3; i++)
        cr_assert_eq(sx.done[i].outcome, CD_RECORD_OK);
}

Test(sns_sink, a_failed_publish_writes_no_dedupe_key) {
    sx_start_dedupe(NULL);
    const char *ids[] = {"e7"};
    sx_write_ids(1, ids);
    redis_answer(1, CD_REDIS_INTEGER, 0, 0);
    cr_assert_eq(sx.ncalls, 1);
    sx_answer(0, 400, ERRXML("Throttling"));
    cr_assert_eq(sx.done[0].outcome, CD_RECORD_RETRY);
    cr_assert_eq(t_nredis, 2, "a key was written for a record SNS did not take");
}

Test(sns_sink, redis_down_with_on_redis_error_retry_retries_without_publishing) {
    sx_start_dedupe(NULL);
    t_redis_down = 1;
    const char *ids[] = {"e0", "e1"};
    sx_write_ids(2, ids);
    cr_assert_eq(sx.ncalls, 0);
    for (size_t i = 0; i < 2; i++) {
        cr_assert_eq(sx.done[i].outcome, CD_RECORD_RETRY);
        cr_assert(strstr(sx.done[i].reason, "redis unavailable for duplicate suppression: ") !=
                      NULL,
                  "%s", sx.done[i].reason);
    }
    /* An answer that never comes (the connection dropped) does the same. */
    t_redis_down = 0;
    memset(sx.done, 0, sizeof(sx.done));
    sx_write_ids(1, ids);
    redis_answer(t_nredis - 1, CD_REDIS_ERROR, 0, -5);
    cr_assert_eq(sx.done[0].outcome, CD_RECORD_RETRY);
    cr_assert_eq(sx.ncalls, 0);
}

Test(sns_sink, redis_down_with_on_redis_error_publish_publishes_without_dedupe) {
    sx_start_dedupe("\"on_redis_error\":\"publish\"");
    t_redis_down = 1;
    const char *ids[] = {"e0", "e1"};
    sx_write_ids(2, ids);
    cr_assert_eq(sx.ncalls, 1);
    char *ok = batch_ok_for(sx.calls[0].body);
    sx_answer(0, 200, ok);
    free(ok);
    cr_assert_eq(sx.done[0].outcome, CD_RECORD_OK);
    cr_assert_eq(sx.done[1].outcome, CD_RECORD_OK);
}
