/*
 * source-http, loaded as the engine loads it (the real build/plugins/
 * source-http.so through the plugin registry, its options through the
 * engine's config map), on a test host: the engine's host table with the
 * producer and the HTTP server replaced by recorders.  A test hands the
 * plugin requests, decides when (and how) each delivery report arrives, and
 * reads the answers.  That reaches what real servers make hard to arrange:
 * a delivery report that comes after the ack timeout, after stop, even
 * after destroy; a producer that refuses the second line of a batch.
 *
 * Each test runs its own loop and checks that it closes with no live
 * handles; under the sanitizer build a leaked request or a use after free
 * fails the test.
 */
#include <criterion/criterion.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "configmap.h"
#include "engine.h"
#include "log.h"
#include "metrics.h"
#include "plugin.h"

#define SOURCE_HTTP_SO CONNECTD_BUILD_PLUGIN_DIR "/source-http.so"
#define SCHEMAS_DIR    CONNECTD_SOURCE_DIR "/pipelines/schemas"

#define MAX_REQS     32
#define MAX_PRODUCED 64

/* The plugin-facing request and server types are opaque to plugins; the
 * test host defines them. */
struct cd_http_request {
    const char *method, *path, *content_type, *auth;
    const char *body;
    size_t body_len;
    int handed, answered, status;
    char *resp;             /* the answer's body (owned) */
    char resp_headers[512]; /* extra headers, "\n"-joined */
};

struct cd_http_server {
    int closing;
    cd_done_cb closed_cb;
    void *closed_opaque;
    uv_idle_t idle; /* calls closed_cb from the loop once every request is answered */
};

typedef struct produced {
    char topic[64];
    char key[64];
    char *value;
    cd_produce_cb cb;
    void *opaque;
    int reported;
} produced;

typedef struct source_fixture {
    uv_loop_t loop;
    engine eng;
    cd_instance inst;
    cd_host host;
    plugin_registry reg;
    const cd_plugin_desc *desc;
    cd_config *cfg;
    void *ctx;
    char errbuf[512];
    int started, stopped, destroyed;
    int stop_calls;

    struct cd_http_server server;
    int listening;
    cd_http_handler handler;
    void *handler_opaque;
    struct cd_http_request reqs[MAX_REQS];
    size_t nreqs;

    produced prod[MAX_PRODUCED];
    size_t nprod;
    int refuse_from; /* produce returns CD_ERR_BUSY from this call on (-1: never) */
} source_fixture;

static source_fixture fx;

/* ----------------------------------------------------------- test host */

static int t_produce(cd_instance *inst, const char *topic, const void *key, size_t key_len,
                     const void *value, size_t value_len, const cd_header *headers,
                     size_t header_count, cd_produce_cb cb, void *opaque, char *errbuf,
                     size_t errlen) {
    if (fx.refuse_from >= 0 && (int)fx.nprod >= fx.refuse_from) {
        snprintf(errbuf, errlen, "Local: Queue full");
        return CD_ERR_BUSY;
    }
    cr_assert(fx.nprod < MAX_PRODUCED);
    produced *p = &fx.prod[fx.nprod++];
    snprintf(p->topic, sizeof(p->topic), "%s", topic);
    snprintf(p->key, sizeof(p->key), "%.*s", (int)key_len, (const char *)key);
    p->value = strndup(value, value_len);
    p->cb = cb;
    p->opaque = opaque;
    return 0;
}

static void t_server_idle(uv_idle_t *h) {
    struct cd_http_server *s = h->data;
    for (size_t i = 0; i < fx.nreqs; i++)
        if (fx.reqs[i].handed && !fx.reqs[i].answered) return;
    uv_idle_stop(h);
    uv_close((uv_handle_t *)h, NULL);
    fx.listening = 0;
    s->closed_cb(s->closed_opaque, 0);
}

static int t_http_listen(cd_instance *inst, const char *addr, const cd_http_limits *limits,
                         cd_http_handler handler, void *opaque, cd_http_server **out, char *errbuf,
                         size_t errlen) {
    cr_assert_not(fx.listening, "listen twice");
    cr_assert_not_null(limits);
    fx.handler = handler;
    fx.handler_opaque = opaque;
    fx.listening = 1;
    *out = &fx.server;
    return 0;
}

static int t_http_port(const cd_http_server *srv) {
    return 4242;
}

static void t_http_close(cd_http_server *srv, cd_done_cb cb, void *opaque) {
    cr_assert_not(srv->closing, "http_close twice");
    srv->closing = 1;
    srv->closed_cb = cb;
    srv->closed_opaque = opaque;
    uv_idle_init(&fx.loop, &srv->idle);
    srv->idle.data = srv;
    uv_idle_start(&srv->idle, t_server_idle);
}

static const char *t_http_method(const cd_http_request *r) {
    return r->method;
}
static const char *t_http_path(const cd_http_request *r) {
    return r->path;
}
static const char *t_http_header(const cd_http_request *r, const char *name) {
    if (strcasecmp(name, "content-type") == 0) return r->content_type;
    if (strcasecmp(name, "authorization") == 0) return r->auth;
    return NULL;
}
static const char *t_http_body(const cd_http_request *r, size_t *len) {
    *len = r->body_len;
    return r->body;
}
static const char *t_http_peer(const cd_http_request *r) {
    return "127.0.0.1:1";
}

static int t_http_respond(cd_http_request *r, int status, const char *content_type,
                          const void *body, size_t len, const char *const *extra_headers) {
    cr_assert(r->handed, "answer to a request never handed over");
    cr_assert_not(r->answered, "request answered twice");
    r->answered = 1;
    r->status = status;
    r->resp = strndup(body ? body : "", len);
    size_t n = 0;
    for (size_t i = 0; extra_headers && extra_headers[i]; i++)
        n += (size_t)snprintf(r->resp_headers + n, sizeof(r->resp_headers) - n, "%s\n",
                              extra_headers[i]);
    return 0;
}

static void t_on_stop(void *opaque, int status) {
    fx.stop_calls++;
    cr_assert_eq(status, 0);
}

/* ------------------------------------------------------------- fixture */

static void fx_setup(void) {
    memset(&fx, 0, sizeof(fx));
    fx.refuse_from = -1;
    log_set_level(CD_LOG_WARN);
    cr_assert_eq(uv_loop_init(&fx.loop), 0);
    fx.eng.loop = &fx.loop;
    char err[512];
    cr_assert_eq(plugin_registry_load(&fx.reg, SOURCE_HTTP_SO, err, sizeof(err)), 0, "%s: %s",
                 SOURCE_HTTP_SO, err);
    const plugin *p = plugin_find(&fx.reg, "http");
    cr_assert_not_null(p);
    cr_assert_eq(p->desc->kind, CD_PLUGIN_SOURCE);
    fx.desc = p->desc;
    instance_init(&fx.inst, &fx.eng, NULL, "ingest", "http");
    fx.host = engine_host;
    fx.host.produce = t_produce;
    fx.host.http_listen = t_http_listen;
    fx.host.http_port = t_http_port;
    fx.host.http_close = t_http_close;
    fx.host.http_method = t_http_method;
    fx.host.http_path = t_http_path;
    fx.host.http_header = t_http_header;
    fx.host.http_body = t_http_body;
    fx.host.http_peer = t_http_peer;
    fx.host.http_respond = t_http_respond;
}

static void fx_stop(void) {
    cr_assert_eq(fx.desc->source->stop(fx.ctx, t_on_stop, NULL), 0);
    uv_run(&fx.loop, UV_RUN_DEFAULT);
    cr_assert_eq(fx.stop_calls, 1, "stop callback came %d times", fx.stop_calls);
    fx.stopped = 1;
}

static void fx_destroy(void) {
    if (fx.ctx) fx.desc->source->destroy(fx.ctx);
    fx.ctx = NULL;
    fx.destroyed = 1;
}

static void fx_teardown(void) {
    if (fx.started && !fx.stopped) fx_stop();
    if (!fx.destroyed) fx_destroy();
    /* Delivery reports still due arrive now, after destroy. */
    for (size_t i = 0; i < fx.nprod; i++)
        if (!fx.prod[i].reported) fx.prod[i].cb(fx.prod[i].opaque, CD_ERR_IO, "purged", 0, -1);
    uv_run(&fx.loop, UV_RUN_DEFAULT);
    configmap_free(fx.cfg);
    instance_release(&fx.inst);
    metrics_free(&fx.eng.metrics);
    plugin_registry_free(&fx.reg);
    for (size_t i = 0; i < fx.nprod; i++)
        free(fx.prod[i].value);
    for (size_t i = 0; i < fx.nreqs; i++)
        free(fx.reqs[i].resp);
    cr_assert_eq(uv_loop_close(&fx.loop), 0, "the loop still has live handles");
}

TestSuite(source_http, .init = fx_setup, .fini = fx_teardown, .timeout = 30);

/* Validates `src` (stolen) with the engine's config map and runs init. */
static int fx_init(json_t *src) {
    static const char *const engine_keys[] = {"plugin", "name", NULL};
    diag d = {0};
    int nerr =
        configmap_apply(fx.desc->options, src, engine_keys, "test.json", "source", &d, &fx.cfg);
    cr_assert_eq(nerr, 0, "%s", d.count ? d.lines[0] : "?");
    diag_free(&d);
    json_decref(src);
    fx.errbuf[0] = '\0';
    return fx.desc->source->init(&fx.host, &fx.inst, fx.cfg, &fx.ctx, fx.errbuf, sizeof(fx.errbuf));
}

/* init + start with the repository's kyc-verified schema, plus `extra`
 * options (stolen; may be NULL). */
static void fx_start(json_t *extra) {
    json_t *src = json_pack("{s:s, s:[s], s:s}", "plugin", "http", "topics", "kyc-verified",
                            "schemas_dir", SCHEMAS_DIR);
    if (extra) json_object_update(src, extra);
    json_decref(extra);
    cr_assert_eq(fx_init(src), 0, "init: %s", fx.errbuf);
    cr_assert_eq(fx.desc->source->start(fx.ctx, fx.errbuf, sizeof(fx.errbuf)), 0, "start: %s",
                 fx.errbuf);
    fx.started = 1;
}

/* Hands the plugin one request; returns it (answered or not). */
static struct cd_http_request *fx_request(const char *method, const char *path, const char *ctype,
                                          const char *body) {
    cr_assert(fx.nreqs < MAX_REQS);
    struct cd_http_request *r = &fx.reqs[fx.nreqs++];
    r->method = method;
    r->path = path;
    r->content_type = ctype;
    r->body = body ? body : "";
    r->body_len = strlen(r->body);
    r->handed = 1;
    fx.handler(r, fx.handler_opaque);
    return r;
}

static struct cd_http_request *fx_post(const char *body) {
    return fx_request("POST", "/v1/events/kyc-verified", "application/json", body);
}

/* The same with an Authorization header. */
static struct cd_http_request *fx_post_auth(const char *body, const char *authorization) {
    cr_assert(fx.nreqs < MAX_REQS);
    fx.reqs[fx.nreqs].auth = authorization;
    return fx_post(body);
}

static void fx_report(size_t i, int status, int32_t partition, int64_t offset) {
    cr_assert(i < fx.nprod && !fx.prod[i].reported);
    fx.prod[i].reported = 1;
    fx.prod[i].cb(fx.prod[i].opaque, status, status ? "Broker: Not enough in-sync replicas" : NULL,
                  partition, offset);
}

static json_t *fx_answer(const struct cd_http_request *r) {
    cr_assert(r->answered);
    json_t *j = json_loads(r->resp, 0, NULL);
    cr_assert_not_null(j, "answer is not JSON: %s", r->resp);
    return j;
}

#define KYC(cust, ts)                                                                              \
    "{\"customerId\":\"" cust "\",\"applicationId\":\"a-1\",\"timestamp\":\"" ts "\","             \
    "\"data\":{\"status\":\"VERIFIED\",\"riskLevel\":\"LOW\"}}"

/* --------------------------------------------------------------- tests */

Test(source_http, a_202_comes_only_from_the_delivery_report) {
    fx_start(NULL);
    struct cd_http_request *r = fx_post(KYC("c-1", "2024-05-01T12:00:00Z"));
    cr_assert_not(r->answered, "answered before the delivery report");
    cr_assert_eq(fx.nprod, 1);
    cr_assert_str_eq(fx.prod[0].topic, "kyc-verified");
    cr_assert_str_eq(fx.prod[0].key, "c-1");
    cr_assert(strncmp(fx.prod[0].value, "{\"eventId\":\"", 12) == 0, "%s", fx.prod[0].value);
    uv_run(&fx.loop, UV_RUN_NOWAIT);
    cr_assert_not(r->answered);
    fx_report(0, 0, 2, 41);
    cr_assert_eq(r->status, 202);
    json_t *a = fx_answer(r);
    cr_assert_str_eq(json_string_value(json_object_get(a, "topic")), "kyc-verified");
    cr_assert_eq(json_integer_value(json_object_get(a, "partition")), 2);
    cr_assert_eq(json_integer_value(json_object_get(a, "offset")), 41);
    const char *id = json_string_value(json_object_get(a, "eventId"));
    cr_assert(id && strlen(id) == 36 && id[14] == '4', "%s", id ? id : "(none)");
    cr_assert(strstr(fx.prod[0].value, id) != NULL);
    json_decref(a);
}

Test(source_http, a_failed_delivery_is_503_with_retry_after_and_the_event_id) {
    fx_start(json_pack("{s:i}", "retry_after_s", 5));
    struct cd_http_request *r =
        fx_post("{\"eventId\":\"6f1c2a9e-3b8d-4c1e-9f2a-0123456789ab\",\"customerId\":\"c-1\","
                "\"applicationId\":\"a-1\",\"timestamp\":\"2024-05-01T12:00:00Z\","
                "\"data\":{\"status\":\"VERIFIED\",\"riskLevel\":\"LOW\"}}");
    cr_assert_eq(fx.nprod, 1);
    cr_assert(strncmp(fx.prod[0].value, "{\"eventId\":\"6f1c", 16) == 0, "the client's bytes");
    fx_report(0, CD_ERR_IO, -1, -1);
    cr_assert_eq(r->status, 503);
    cr_assert(strstr(r->resp_headers, "Retry-After: 5\n") != NULL, "%s", r->resp_headers);
    json_t *a = fx_answer(r);
    cr_assert_str_eq(json_string_value(json_object_get(a, "eventId")),
                     "6f1c2a9e-3b8d-4c1e-9f2a-0123456789ab");
    cr_assert(strstr(json_string_value(json_object_get(a, "error")), "in-sync replicas"));
    json_decref(a);
}

Test(source_http, the_ack_timeout_answers_503_and_late_reports_are_harmless_even_after_destroy) {
    fx_start(json_pack("{s:i}", "ack_timeout_ms", 30));
    struct cd_http_request *r1 = fx_post(KYC("c-1", "2024-05-01T12:00:00Z"));
    struct cd_http_request *r2 =
        fx_request("POST", "/v1/events/kyc-verified", "application/x-ndjson",
                   KYC("c-1", "2024-05-01T12:00:01Z") "\n" KYC("c-2", "2024-05-01T12:00:02Z") "\n");
    cr_assert_eq(fx.nprod, 3);
    fx_report(1, 0, 0, 7); /* one line of the batch is stored in time */
    while (!(r1->answered && r2->answered))
        uv_run(&fx.loop, UV_RUN_ONCE);
    cr_assert_eq(r1->status, 503);
    cr_assert_eq(r2->status, 503, "a batch with a line to retry says 503");
    json_t *a = fx_answer(r2);
    cr_assert_eq(json_integer_value(json_object_get(json_array_get(a, 0), "status")), 202);
    cr_assert_eq(json_integer_value(json_object_get(json_array_get(a, 1), "status")), 503);
    cr_assert(strstr(json_string_value(json_object_get(json_array_get(a, 1), "error")),
                     "may still be stored"));
    json_decref(a);
    /* One late report before stop, the others after destroy (teardown). */
    fx_report(0, 0, 1, 1);
    fx_stop();
    fx_destroy();
}

Test(source_http, stop_answers_requests_in_flight_before_it_completes) {
    fx_start(NULL);
    struct cd_http_request *r = fx_post(KYC("c-1", "2024-05-01T12:00:00Z"));
    cr_assert_eq(fx.desc->source->stop(fx.ctx, t_on_stop, NULL), 0);
    for (int i = 0; i < 5; i++)
        uv_run(&fx.loop, UV_RUN_NOWAIT);
    cr_assert_eq(fx.stop_calls, 0, "stop completed with a request unanswered");
    /* A request still handed over while stopping is refused. */
    struct cd_http_request *late = fx_post(KYC("c-1", "2024-05-01T12:00:01Z"));
    cr_assert_eq(late->status, 503);
    cr_assert_eq(fx.nprod, 1);
    fx_report(0, 0, 0, 3);
    cr_assert_eq(r->status, 202);
    uv_run(&fx.loop, UV_RUN_DEFAULT);
    cr_assert_eq(fx.stop_calls, 1);
    fx.stopped = 1;
}

Test(source_http, a_refused_line_stops_the_rest_of_the_batch_but_not_validation) {
    fx_start(NULL);
    fx.refuse_from = 1;
    struct cd_http_request *r =
        fx_request("POST", "/v1/events/kyc-verified", "application/x-ndjson",
                   KYC("c-1", "2024-05-01T12:00:00Z") "\n" KYC(
                       "c-1", "2024-05-01T12:00:01Z") "\n{}\n" KYC("c-1", "2024-05-01T12:00:02Z"));
    cr_assert_eq(fx.nprod, 1);
    fx_report(0, 0, 0, 1);
    cr_assert_eq(r->status, 503);
    json_t *a = fx_answer(r);
    int want[] = {202, 503, 400, 503};
    for (size_t i = 0; i < 4; i++)
        cr_assert_eq(json_integer_value(json_object_get(json_array_get(a, i), "status")), want[i],
                     "line %zu", i + 1);
    cr_assert(
        strstr(json_string_value(json_object_get(json_array_get(a, 3), "error")), "not produced"));
    json_decref(a);
}

Test(source_http, date_times_are_checked_against_the_calendar) {
    fx_start(NULL);
    static const struct {
        const char *ts;
        int ok;
    } cases[] = {
        {"2024-02-29T00:00:00Z", 1},      {"2023-02-29T00:00:00Z", 0},
        {"2000-02-29T23:59:60.5Z", 1},    {"1900-02-29T00:00:00Z", 0},
        {"2024-04-31T00:00:00Z", 0},      {"2024-05-01t12:00:00z", 1},
        {"2024-05-01T12:00:00+02:00", 1}, {"2024-05-01T12:00:00+24:00", 0},
        {"2024-05-01 12:00:00Z", 0},      {"2024-05-01T12:00:00.Z", 0},
        {"2024-05-01T12:00:00", 0},       {"2024-05-01T24:00:00Z", 0},
        {"2024-13-01T00:00:00Z", 0},      {"2024-05-01T12:00:00Zjunk", 0},
    };
    char body[512];
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        snprintf(body, sizeof(body),
                 "{\"customerId\":\"c\",\"applicationId\":\"a\",\"timestamp\":\"%s\",\"data\":{"
                 "\"status\":\"VERIFIED\",\"riskLevel\":\"LOW\"}}",
                 cases[i].ts);
        size_t before = fx.nprod;
        struct cd_http_request *r = fx_post(body);
        if (cases[i].ok) {
            cr_assert_eq(fx.nprod, before + 1, "%s should pass", cases[i].ts);
            fx_report(before, 0, 0, (int64_t)i);
            cr_assert_eq(r->status, 202);
        } else {
            cr_assert_eq(r->status, 400, "%s should be refused", cases[i].ts);
            json_t *a = fx_answer(r);
            cr_assert_str_eq(json_string_value(json_object_get(a, "field")), "/timestamp");
            json_decref(a);
        }
    }
}

Test(source_http, keys_come_from_the_pointer_and_numbers_use_their_text) {
    char dir[] = "/tmp/connectd-source-http-XXXXXX";
    cr_assert_not_null(mkdtemp(dir));
    char path[128];
    snprintf(path, sizeof(path), "%s/t.json", dir);
    FILE *f = fopen(path, "w");
    fputs("{\"type\":\"object\",\"additionalProperties\":{\"type\":[\"string\",\"number\","
          "\"object\"]}}",
          f);
    fclose(f);
    cr_assert_eq(fx_init(json_pack("{s:s, s:[s], s:s, s:s}", "plugin", "http", "topics", "t",
                                   "schemas_dir", dir, "key", "/a~1b/n")),
                 0, "%s", fx.errbuf);
    unlink(path);
    rmdir(dir);
    cr_assert_eq(fx.desc->source->start(fx.ctx, fx.errbuf, sizeof(fx.errbuf)), 0);
    fx.started = 1;
    const char *bodies[] = {"{\"a/b\":{\"n\":42}}", "{\"a/b\":{\"n\":1.5}}",
                            "{\"a/b\":{\"n\":\"k\"}}"};
    const char *keys[] = {"42", "1.5", "k"};
    for (size_t i = 0; i < 3; i++) {
        fx_request("POST", "/v1/events/t", "application/json", bodies[i]);
        cr_assert_eq(fx.nprod, i + 1);
        cr_assert_str_eq(fx.prod[i].key, keys[i]);
        fx_report(i, 0, 0, (int64_t)i);
    }
    struct cd_http_request *r = fx_request("POST", "/v1/events/t", "application/json", "{}");
    cr_assert_eq(r->status, 400);
    json_t *a = fx_answer(r);
    cr_assert_str_eq(json_string_value(json_object_get(a, "field")), "/a~1b/n");
    cr_assert_str_eq(json_string_value(json_object_get(a, "error")),
                     "the Kafka key field is missing");
    json_decref(a);
}

Test(source_http, pause_refuses_new_events_and_resume_takes_them_again) {
    fx_start(NULL);
    fx.desc->source->pause(fx.ctx);
    struct cd_http_request *r = fx_post(KYC("c-1", "2024-05-01T12:00:00Z"));
    cr_assert_eq(r->status, 503);
    cr_assert(strstr(r->resp_headers, "Retry-After: 1\n"));
    cr_assert_eq(fx_request("GET", "/healthz", NULL, NULL)->status, 503);
    fx.desc->source->resume(fx.ctx);
    r = fx_post(KYC("c-1", "2024-05-01T12:00:00Z"));
    cr_assert_eq(fx.nprod, 1);
    fx_report(0, 0, 0, 0);
    cr_assert_eq(r->status, 202);
    cr_assert_eq(fx_request("GET", "/healthz", NULL, NULL)->status, 200);
}

Test(source_http, init_refuses_what_it_cannot_serve) {
    cr_assert_lt(fx_init(json_pack("{s:s, s:[s], s:s}", "plugin", "http", "topics", "no-schema",
                                   "schemas_dir", SCHEMAS_DIR)),
                 0);
    cr_assert(strstr(fx.errbuf, "schemas_dir: no schema for topic no-schema"), "%s", fx.errbuf);
    configmap_free(fx.cfg);
    fx.cfg = NULL;
    cr_assert_lt(
        fx_init(json_pack("{s:s, s:[s], s:s, s:[s]}", "plugin", "http", "topics", "kyc-verified",
                          "schemas_dir", SCHEMAS_DIR, "api_keys", "sha256:abc")),
        0);
    cr_assert(strstr(fx.errbuf, "api_keys[0]"), "%s", fx.errbuf);
    configmap_free(fx.cfg);
    fx.cfg = NULL;
    cr_assert_lt(fx_init(json_pack("{s:s, s:[s], s:s, s:s}", "plugin", "http", "topics",
                                   "kyc-verified", "schemas_dir", SCHEMAS_DIR, "key", "")),
                 0);
    cr_assert(strstr(fx.errbuf, "key:"), "%s", fx.errbuf);
    cr_assert_null(fx.ctx);
}

/* sha256 of "k-1". */
#define K1_HASH "sha256:7c35c5a1785d20704e44d5de4beb81c1fce91b6fe48ed7c3159af6f7f832078b"

Test(source_http, bearer_credentials_are_api_keys_then_jwts) {
    fx_start(json_pack("{s:[s], s:s}", "api_keys", K1_HASH, "jwt_secret", "s3cret"));
    /* The key, blanks around it left out. */
    struct cd_http_request *r = fx_post_auth(KYC("c-1", "2024-05-01T12:00:00Z"), "Bearer  k-1 \t");
    cr_assert_not(r->answered, "refused: %d %s", r->status, r->resp);
    cr_assert_eq(fx.nprod, 1);
    fx_report(0, 0, 0, 1);
    cr_assert_eq(r->status, 202);
    /* Not the key, not a JWT either (the shared verifier's "not a JWT"),
     * a JWT whose signature does not verify: 401 invalid; nothing: 401
     * asking for credentials. */
    const char *refused[] = {"Bearer k-2", "Bearer a.b.c", "Basic k-1",
                             "Bearer eyJhbGciOiJIUzI1NiJ9.e30.AAAA"};
    for (size_t i = 0; i < sizeof(refused) / sizeof(*refused); i++) {
        r = fx_post_auth(KYC("c-1", "2024-05-01T12:00:00Z"), refused[i]);
        cr_assert(r->answered, "%s", refused[i]);
        cr_assert_eq(r->status, 401, "%s", refused[i]);
        json_t *a = fx_answer(r);
        cr_assert_str_eq(json_string_value(json_object_get(a, "error")), "invalid credentials");
        json_decref(a);
    }
    r = fx_post(KYC("c-1", "2024-05-01T12:00:00Z"));
    cr_assert_eq(r->status, 401);
    json_t *a = fx_answer(r);
    cr_assert_str_eq(json_string_value(json_object_get(a, "error")), "authentication required");
    json_decref(a);
    cr_assert_eq(fx.nprod, 1);
}

Test(source_http, a_jwt_public_key_must_be_a_pem_rsa_public_key) {
    cr_assert_lt(
        fx_init(json_pack("{s:s, s:[s], s:s, s:s}", "plugin", "http", "topics", "kyc-verified",
                          "schemas_dir", SCHEMAS_DIR, "jwt_public_key", "not a key")),
        0);
    cr_assert(strstr(fx.errbuf, "jwt_public_key: not a PEM RSA public key"), "%s", fx.errbuf);
    cr_assert_null(fx.ctx);
}

Test(source_http, a_permanent_failure_from_the_host_is_400_not_503) {
    fx_start(NULL);
    struct cd_http_request *r = fx_post(KYC("c-1", "2024-05-01T12:00:00Z"));
    fx.prod[0].reported = 1;
    fx.prod[0].cb(fx.prod[0].opaque, CD_ERR_INVALID, "Broker: Message size too large", 0, -1);
    cr_assert_eq(r->status, 400);
    cr_assert_null(strstr(r->resp_headers, "Retry-After"));
    json_t *a = fx_answer(r);
    cr_assert(json_is_null(json_object_get(a, "field")));
    cr_assert(strstr(json_string_value(json_object_get(a, "error")), "too large"));
    json_decref(a);
}
