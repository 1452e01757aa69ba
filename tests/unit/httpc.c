/*
 * The HTTP client on a real loop against a real HTTP/1.1 server on loopback
 * (tests/unit/httpc_server.py, started per test): round trips, the pool
 * bound, timeouts, retry classification, keep-alive, SigV4 checked by
 * recomputing the signature, cancellation and clean loop teardown.
 */
#include <criterion/criterion.h>
#include <jansson.h>

#include "httpc.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include "pyserver.h"

#define AKID   "AKIDEXAMPLE"
#define SECRET "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
#define TOKEN  "FwoGZXIvYXdzEXAMPLE//////////session+token/with=chars"

/* ------------------------------------------------------------ the server */
static void peer_start(peer *s) {
    peer_start_script(s, "httpc_server.py", NULL);
}

/* ------------------------------------------------------------ the fixture */
typedef struct result {
    int calls;
    int status;
    int error;
    int retriable;
    char *body;
    size_t body_len;
    char *content_type;
    char *retry_after;
    char *error_message;
    double total_ms;
    json_t *json; /* body parsed, when it was JSON */
} result;

typedef struct fixture {
    uv_loop_t loop;
    httpc *c;
    httpc_pool *pool;
    peer srv;
    int done; /* callbacks so far, all results */
    int closed;
} fixture;

static fixture *cur; /* the running test's fixture, for callbacks */

static char *dup_or_null(const char *s) {
    return s ? strdup(s) : NULL;
}

static void result_clear(result *r) {
    free(r->body);
    free(r->content_type);
    free(r->retry_after);
    free(r->error_message);
    if (r->json) json_decref(r->json);
    memset(r, 0, sizeof(*r));
}

static void on_result(void *opaque, const httpc_response *resp) {
    result *r = opaque;
    r->calls++;
    cur->done++;
    cr_assert_eq(r->calls, 1, "callback called more than once");
    cr_assert((resp->status == 0) != (resp->error == 0), "exactly one of status and error");
    cr_assert_not_null(resp->body);
    r->status = resp->status;
    r->error = resp->error;
    r->retriable = httpc_retriable(resp);
    r->body = malloc(resp->body_len + 1);
    memcpy(r->body, resp->body, resp->body_len + 1);
    r->body_len = resp->body_len;
    r->content_type = dup_or_null(resp->content_type);
    r->retry_after = dup_or_null(resp->retry_after);
    r->error_message = dup_or_null(resp->error_message);
    r->total_ms = resp->total_ms;
    r->json = json_loadb(resp->body, resp->body_len, JSON_ALLOW_NUL, NULL);
}

static void fx_init(fixture *fx, size_t max_in_flight) {
    memset(fx, 0, sizeof(*fx));
    cur = fx;
    cr_assert_eq(uv_loop_init(&fx->loop), 0);
    char err[256];
    cr_assert_eq(httpc_new(&fx->c, &fx->loop, err, sizeof(err)), 0, "%s", err);
    fx->pool = httpc_pool_new(fx->c, max_in_flight);
    cr_assert_not_null(fx->pool);
    peer_start(&fx->srv);
}

/* Runs the loop until `want` callbacks arrived in all (or fails). */
static void fx_run_until(fixture *fx, int want) {
    uint64_t deadline = uv_now(&fx->loop) + 20000;
    while (fx->done < want) {
        int alive = uv_run(&fx->loop, UV_RUN_ONCE);
        cr_assert(alive || fx->done >= want, "loop ran dry with %d of %d callbacks", fx->done,
                  want);
        cr_assert(uv_now(&fx->loop) < deadline, "timed out with %d of %d callbacks", fx->done,
                  want);
    }
}

static void on_closed(void *opaque) {
    (*(int *)opaque)++;
}

/* Closes the client, runs the loop dry and proves nothing is left. */
static void fx_close(fixture *fx) {
    httpc_close(fx->c, on_closed, &fx->closed);
    uv_run(&fx->loop, UV_RUN_DEFAULT);
    cr_assert_eq(fx->closed, 1, "on_closed once");
    cr_assert_eq(uv_loop_close(&fx->loop), 0, "a handle outlived httpc_close");
    peer_stop(&fx->srv);
    cur = NULL;
}

static void url(fixture *fx, char *buf, size_t len, const char *path) {
    snprintf(buf, len, "http://127.0.0.1:%d%s", fx->srv.port, path);
}

static void submit_req(fixture *fx, httpc_pool *p, httpc_request *rq, const char *path,
                       result *res) {
    char u[256], err[256];
    url(fx, u, sizeof(u), path);
    rq->url = u;
    int r = httpc_submit(p, rq, on_result, res, err, sizeof(err));
    cr_assert_eq(r, 0, "submit %s: %s", path, err);
}

static void get(fixture *fx, const char *path, result *res) {
    httpc_request rq = {.method = "GET"};
    submit_req(fx, fx->pool, &rq, path, res);
}

static const char *jstr(json_t *obj, const char *path) {
    /* "a.b" walks objects */
    char key[128];
    snprintf(key, sizeof(key), "%s", path);
    json_t *v = obj;
    for (char *save = NULL, *k = strtok_r(key, ".", &save); k && v; k = strtok_r(NULL, ".", &save))
        v = json_object_get(v, k);
    return json_string_value(v);
}

static json_int_t jint(json_t *obj, const char *key) {
    return json_integer_value(json_object_get(obj, key));
}

static json_t *server_stats(fixture *fx) {
    result r = {0};
    int before = fx->done;
    get(fx, "/stats", &r);
    fx_run_until(fx, before + 1);
    cr_assert_eq(r.status, 200);
    json_t *j = json_incref(r.json);
    result_clear(&r);
    return j;
}

static int json_array_has(json_t *arr, const char *s) {
    size_t i;
    json_t *v;
    json_array_foreach(arr, i, v) {
        if (json_string_value(v) && strcmp(json_string_value(v), s) == 0) return 1;
    }
    return 0;
}

/* ------------------------------------------------------------- the tests */
static void never_called(void *opaque, const httpc_response *resp) {
    cr_assert_fail("callback for a refused submit");
}

Test(httpc, get_and_post_round_trip_method_headers_and_body) {
    fixture fx;
    fx_init(&fx, 4);
    result g = {0}, p = {0}, put = {0}, del = {0}, head = {0};

    const char *hdrs[] = {"X-Test: one two", "Accept: application/json", NULL};
    httpc_request rg = {.method = "GET", .headers = hdrs};
    submit_req(&fx, fx.pool, &rg, "/echo?x=1", &g);
    cr_assert_eq(g.calls, 0, "never called back from inside httpc_submit");

    const char *json_hdrs[] = {"Content-Type: application/x-amz-json-1.0", NULL};
    static const char body[] = "{\"a\":1,\"text\":\"h\xc3\xa9llo\"}";
    httpc_request rp = {
        .method = "POST", .headers = json_hdrs, .body = body, .body_len = strlen(body)};
    submit_req(&fx, fx.pool, &rp, "/echo", &p);

    static const char binary[] = {'a', 0, 'b', 0, 'c'};
    httpc_request rput = {.method = "PUT", .body = binary, .body_len = sizeof(binary)};
    submit_req(&fx, fx.pool, &rput, "/echo", &put);
    httpc_request rdel = {.method = "DELETE"};
    submit_req(&fx, fx.pool, &rdel, "/echo", &del);
    httpc_request rhead = {.method = "HEAD"};
    submit_req(&fx, fx.pool, &rhead, "/echo", &head);
    cr_assert_eq(fx.done, 0);

    fx_run_until(&fx, 5);
    cr_assert_eq(g.status, 200);
    cr_assert_eq(g.error, 0);
    cr_assert_str_eq(g.content_type, "application/json");
    cr_assert_null(g.retry_after);
    cr_assert_not_null(g.json, "GET body is JSON: %s", g.body);
    cr_assert_str_eq(jstr(g.json, "method"), "GET");
    cr_assert_str_eq(jstr(g.json, "query"), "x=1");
    cr_assert_str_eq(jstr(g.json, "headers.x-test"), "one two");
    cr_assert_str_eq(jstr(g.json, "headers.accept"), "application/json");
    cr_assert_eq(jint(g.json, "body_len"), 0);
    cr_assert_gt(g.total_ms, 0.0);

    cr_assert_eq(p.status, 200);
    cr_assert_str_eq(jstr(p.json, "method"), "POST");
    cr_assert_str_eq(jstr(p.json, "body"), body);
    cr_assert_str_eq(jstr(p.json, "headers.content-type"), "application/x-amz-json-1.0");
    char clen[16];
    snprintf(clen, sizeof(clen), "%zu", strlen(body));
    cr_assert_str_eq(jstr(p.json, "headers.content-length"), clen);

    cr_assert_eq(put.status, 200);
    cr_assert_str_eq(jstr(put.json, "method"), "PUT");
    cr_assert_eq(jint(put.json, "body_len"), 5, "body with NUL bytes kept whole");
    cr_assert_eq(del.status, 200);
    cr_assert_str_eq(jstr(del.json, "method"), "DELETE");
    cr_assert_eq(head.status, 200);
    cr_assert_eq(head.body_len, 0);

    result *all[] = {&g, &p, &put, &del, &head};
    for (size_t i = 0; i < 5; i++)
        result_clear(all[i]);
    fx_close(&fx);
}

#define MANY 200
static size_t most_in_flight_seen;

static void on_many(void *opaque, const httpc_response *resp) {
    size_t n = httpc_pool_in_flight(cur->pool);
    if (n > most_in_flight_seen) most_in_flight_seen = n;
    on_result(opaque, resp);
}

Test(httpc, pool_of_8_completes_200_requests_never_more_than_8_in_flight) {
    fixture fx;
    fx_init(&fx, 8);
    most_in_flight_seen = 0;
    result *res = calloc(MANY, sizeof(*res));
    char u[256], err[256];
    for (int i = 0; i < MANY; i++) {
        snprintf(u, sizeof(u), "http://127.0.0.1:%d/slow?ms=5&i=%d", fx.srv.port, i);
        httpc_request rq = {.url = u};
        cr_assert_eq(httpc_submit(fx.pool, &rq, on_many, &res[i], err, sizeof(err)), 0, "%s", err);
    }
    cr_assert_eq(httpc_pool_in_flight(fx.pool), 8);
    cr_assert_eq(httpc_pool_queued(fx.pool), MANY - 8);
    fx_run_until(&fx, MANY);
    for (int i = 0; i < MANY; i++) {
        cr_assert_eq(res[i].calls, 1);
        cr_assert_eq(res[i].status, 200, "request %d: %d %s", i, res[i].error,
                     res[i].error_message ? res[i].error_message : "");
        result_clear(&res[i]);
    }
    free(res);
    cr_assert_eq(httpc_pool_in_flight(fx.pool), 0);
    cr_assert_eq(httpc_pool_queued(fx.pool), 0);
    cr_assert_leq(most_in_flight_seen, 8);

    json_t *st = server_stats(&fx);
    cr_assert_leq(jint(st, "max_in_flight"), 8, "server saw %lld at once",
                  (long long)jint(st, "max_in_flight"));
    cr_assert_geq(jint(st, "max_in_flight"), 2, "the pool did run requests side by side");
    cr_assert_leq(jint(st, "connections"), 8, "at most one connection per slot");
    json_decref(st);
    fx_close(&fx);
}

Test(httpc, beyond_the_per_host_connection_cap_transfers_wait_inside_curl) {
    /* A pool wider than HTTPC_MAX_HOST_CONNECTIONS: curl parks the excess
     * and hands each a connection the moment another transfer leaves it,
     * inside one socket_action: the socket is removed and watched again
     * before the old poll handle has finished closing. */
    fixture fx;
    fx_init(&fx, 2 * HTTPC_MAX_HOST_CONNECTIONS);
    enum { N = 3 * HTTPC_MAX_HOST_CONNECTIONS };
    result *res = calloc(N, sizeof(*res));
    char u[128], err[256];
    url(&fx, u, sizeof(u), "/slow?ms=20");
    for (int i = 0; i < N; i++) {
        httpc_request rq = {.url = u};
        cr_assert_eq(httpc_submit(fx.pool, &rq, on_result, &res[i], err, sizeof(err)), 0, "%s",
                     err);
    }
    fx_run_until(&fx, N);
    for (int i = 0; i < N; i++) {
        cr_assert_eq(res[i].status, 200, "%d: %d %s", i, res[i].error,
                     res[i].error_message ? res[i].error_message : "");
        result_clear(&res[i]);
    }
    free(res);
    json_t *st = server_stats(&fx);
    cr_assert_leq(jint(st, "connections"), HTTPC_MAX_HOST_CONNECTIONS);
    cr_assert_leq(jint(st, "max_in_flight"), HTTPC_MAX_HOST_CONNECTIONS);
    json_decref(st);
    fx_close(&fx);
}

static void count_close(uv_handle_t *h) {
    (*(int *)h->data)++;
}

Test(httpc, libuv_lets_a_socket_be_watched_again_while_its_old_poll_closes) {
    /* What the socket callback relies on when curl removes a socket and
     * asks to watch the same fd number again in one go: uv_close takes the
     * fd out of the loop at once, not in the close callback. */
    uv_loop_t loop;
    cr_assert_eq(uv_loop_init(&loop), 0);
    int sv[2];
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    int closed = 0;
    uv_poll_t a, b;
    a.data = b.data = &closed;
    cr_assert_eq(uv_poll_init_socket(&loop, &a, sv[0]), 0);
    cr_assert_eq(uv_poll_start(&a, UV_READABLE, NULL), 0);
    uv_poll_t dup;
    cr_assert_eq(uv_poll_init_socket(&loop, &dup, sv[0]), UV_EEXIST, "one live watcher per fd");
    uv_close((uv_handle_t *)&a, count_close);
    cr_assert_eq(closed, 0);
    cr_assert_eq(uv_poll_init_socket(&loop, &b, sv[0]), 0);
    cr_assert_eq(uv_poll_start(&b, UV_READABLE | UV_WRITABLE, NULL), 0);
    uv_close((uv_handle_t *)&b, count_close);
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_assert_eq(closed, 2);
    close(sv[0]);
    close(sv[1]);
    cr_assert_eq(uv_loop_close(&loop), 0);
}

static int order[10], order_n;
static void on_ordered(void *opaque, const httpc_response *resp) {
    order[order_n++] = (int)(intptr_t)opaque;
    cur->done++;
}

Test(httpc, a_pool_of_one_runs_requests_in_submission_order) {
    fixture fx;
    fx_init(&fx, 1);
    order_n = 0;
    char u[256], err[256];
    for (int i = 0; i < 10; i++) {
        /* Earlier requests are slower: only FIFO dispatch keeps the order. */
        snprintf(u, sizeof(u), "http://127.0.0.1:%d/slow?ms=%d", fx.srv.port, 30 - 3 * i);
        httpc_request rq = {.url = u};
        cr_assert_eq(httpc_submit(fx.pool, &rq, on_ordered, (void *)(intptr_t)i, err, sizeof(err)),
                     0);
    }
    fx_run_until(&fx, 10);
    for (int i = 0; i < 10; i++)
        cr_assert_eq(order[i], i);
    fx_close(&fx);
}

Test(httpc, a_request_over_its_timeout_fails_with_status_0_and_is_retriable) {
    fixture fx;
    fx_init(&fx, 2);
    result r = {0};
    httpc_request rq = {.timeout_ms = 200};
    submit_req(&fx, fx.pool, &rq, "/slow?ms=3000", &r);
    fx_run_until(&fx, 1);
    cr_assert_eq(r.status, 0);
    cr_assert_eq(r.error, HTTPC_ERR_TIMEOUT, "error %d: %s", r.error, r.error_message);
    cr_assert_not_null(r.error_message);
    cr_assert_eq(r.retriable, 1);
    cr_assert(r.total_ms >= 150 && r.total_ms < 2500, "took %.0f ms", r.total_ms);
    result_clear(&r);
    fx_close(&fx);
}

Test(httpc, status_codes_carry_retry_after_and_classify_for_retry) {
    fixture fx;
    fx_init(&fx, 8);
    struct {
        const char *path;
        int status, retriable;
        const char *retry_after;
    } cases[] = {
        {"/status/503?retry_after=7", 503, 1, "7"},
        {"/status/429?retry_after=Wed%2C%2021%20Oct%202015%2007%3A28%3A00%20GMT", 429, 1,
         "Wed, 21 Oct 2015 07:28:00 GMT"},
        {"/status/408", 408, 1, NULL},
        {"/status/500", 500, 1, NULL},
        {"/status/404", 404, 0, NULL},
        {"/status/400", 400, 0, NULL},
        {"/status/410", 410, 0, NULL},
        {"/status/204", 204, 0, NULL},
    };
    enum { N = sizeof(cases) / sizeof(cases[0]) };
    result res[N] = {0};
    for (size_t i = 0; i < N; i++)
        get(&fx, cases[i].path, &res[i]);
    fx_run_until(&fx, N);
    for (size_t i = 0; i < N; i++) {
        cr_assert_eq(res[i].status, cases[i].status, "%s", cases[i].path);
        cr_assert_eq(res[i].error, 0);
        cr_assert_eq(res[i].retriable, cases[i].retriable, "%s", cases[i].path);
        if (cases[i].retry_after)
            cr_assert_str_eq(res[i].retry_after, cases[i].retry_after);
        else
            cr_assert_null(res[i].retry_after);
        result_clear(&res[i]);
    }
    fx_close(&fx);
}

Test(httpc, retriable_classification_without_a_server) {
    httpc_response r = {0};
    int yes[] = {408, 429, 500, 502, 503, 504, 599};
    int no[] = {200, 201, 204, 301, 400, 401, 403, 404, 409, 410, 413};
    for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
        r.status = yes[i];
        cr_assert_eq(httpc_retriable(&r), 1, "%d", yes[i]);
    }
    for (size_t i = 0; i < sizeof(no) / sizeof(no[0]); i++) {
        r.status = no[i];
        cr_assert_eq(httpc_retriable(&r), 0, "%d", no[i]);
    }
    r.status = 0;
    int retry_errors[] = {HTTPC_ERR_TIMEOUT,
                          HTTPC_ERR_FROM_CURL(7) /* couldn't connect */,
                          HTTPC_ERR_FROM_CURL(52) /* empty reply */,
                          HTTPC_ERR_FROM_CURL(56) /* recv failure */,
                          HTTPC_ERR_CANCELED,
                          CD_ERR_IO};
    for (size_t i = 0; i < sizeof(retry_errors) / sizeof(retry_errors[0]); i++) {
        r.error = retry_errors[i];
        cr_assert_eq(httpc_retriable(&r), 1, "%d", retry_errors[i]);
    }
    r.error = HTTPC_ERR_TOO_LARGE;
    cr_assert_eq(httpc_retriable(&r), 0);
    r.error = HTTPC_ERR_FROM_CURL(3); /* URL malformed */
    cr_assert_eq(httpc_retriable(&r), 0);
}

/* 50 requests one after another, each submitted from the previous one's
 * callback (as a sink that retries would). */
typedef struct chain {
    int left;
    int conns[50];
    int n;
} chain;

static void on_chain(void *opaque, const httpc_response *resp) {
    chain *ch = opaque;
    cr_assert_eq(resp->status, 200, "%d %s", resp->error,
                 resp->error_message ? resp->error_message : "");
    json_t *j = json_loadb(resp->body, resp->body_len, 0, NULL);
    ch->conns[ch->n++] = (int)jint(j, "conn");
    json_decref(j);
    cur->done++;
    if (--ch->left > 0) {
        char u[128], err[256];
        url(cur, u, sizeof(u), "/echo");
        httpc_request rq = {.url = u};
        cr_assert_eq(httpc_submit(cur->pool, &rq, on_chain, ch, err, sizeof(err)), 0, "%s", err);
    }
}

Test(httpc, sequential_requests_reuse_one_keep_alive_connection) {
    fixture fx;
    fx_init(&fx, 4);
    chain ch = {.left = 50};
    char u[128], err[256];
    url(&fx, u, sizeof(u), "/echo");
    httpc_request rq = {.url = u};
    cr_assert_eq(httpc_submit(fx.pool, &rq, on_chain, &ch, err, sizeof(err)), 0);
    fx_run_until(&fx, 50);
    for (int i = 1; i < 50; i++)
        cr_assert_eq(ch.conns[i], ch.conns[0], "request %d used connection %d, not %d", i,
                     ch.conns[i], ch.conns[0]);
    json_t *st = server_stats(&fx);
    cr_assert_eq(jint(st, "connections"), 1, "50 requests + stats over one connection");
    json_decref(st);
    fx_close(&fx);
}

Test(httpc, connection_close_each_time_opens_fresh_sockets_cleanly) {
    /* Each response closes its connection: curl removes the socket and
     * usually gets the same fd number back for the next one. */
    fixture fx;
    fx_init(&fx, 1);
    enum { N = 30 };
    result res[N] = {0};
    for (int i = 0; i < N; i++)
        get(&fx, "/close", &res[i]);
    fx_run_until(&fx, N);
    for (int i = 0; i < N; i++) {
        cr_assert_eq(res[i].status, 200, "%d: %d %s", i, res[i].error,
                     res[i].error_message ? res[i].error_message : "");
        result_clear(&res[i]);
    }
    json_t *st = server_stats(&fx);
    cr_assert_eq(jint(st, "connections"), N + 1);
    json_decref(st);
    fx_close(&fx);
}

Test(httpc, a_dropped_or_refused_connection_is_a_retriable_error) {
    fixture fx;
    fx_init(&fx, 2);
    /* A port nobody listens on: bind, learn it, close. */
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof(a);
    cr_assert_eq(bind(s, (struct sockaddr *)&a, sizeof(a)), 0);
    cr_assert_eq(getsockname(s, (struct sockaddr *)&a, &al), 0);
    close(s);
    char u[128], err[256];
    snprintf(u, sizeof(u), "http://127.0.0.1:%d/echo", ntohs(a.sin_port));
    result refused = {0}, dropped = {0};
    httpc_request rq = {.url = u};
    cr_assert_eq(httpc_submit(fx.pool, &rq, on_result, &refused, err, sizeof(err)), 0);
    get(&fx, "/drop", &dropped);
    fx_run_until(&fx, 2);
    cr_assert_eq(refused.status, 0);
    cr_assert_eq(refused.error, HTTPC_ERR_FROM_CURL(7), "%d %s", refused.error,
                 refused.error_message);
    cr_assert_eq(refused.retriable, 1);
    cr_assert_eq(dropped.status, 0);
    cr_assert(HTTPC_ERR_IS_CURL(dropped.error), "%d", dropped.error);
    cr_assert_eq(dropped.retriable, 1);
    cr_assert_not_null(dropped.error_message);
    result_clear(&refused);
    result_clear(&dropped);
    fx_close(&fx);
}

Test(httpc, large_bodies_arrive_whole_and_the_cap_is_an_error) {
    fixture fx;
    fx_init(&fx, 4);
    result big = {0}, at_cap = {0}, over = {0};
    get(&fx, "/big?n=3000000", &big);
    httpc_request capped = {.max_response_bytes = 1000};
    submit_req(&fx, fx.pool, &capped, "/big?n=1000", &at_cap);
    httpc_request capped2 = {.max_response_bytes = 1000};
    submit_req(&fx, fx.pool, &capped2, "/big?n=5000", &over);
    fx_run_until(&fx, 3);
    cr_assert_eq(big.status, 200);
    cr_assert_eq(big.body_len, 3000000);
    cr_assert_eq(big.body[0], 'x');
    cr_assert_eq(big.body[2999999], 'x');
    cr_assert_eq(big.body[3000000], '\0');
    cr_assert_eq(at_cap.status, 200);
    cr_assert_eq(at_cap.body_len, 1000);
    cr_assert_eq(over.status, 0);
    cr_assert_eq(over.error, HTTPC_ERR_TOO_LARGE);
    cr_assert_eq(over.retriable, 0);
    cr_assert_not_null(strstr(over.error_message, "1000"));
    result_clear(&big);
    result_clear(&at_cap);
    result_clear(&over);
    fx_close(&fx);
}

/* ------------------------------------------------------------------ SigV4 */
static void sigv4_post(fixture *fx, const char *path, const char *sigv4, const char *secret,
                       const char *token, result *res) {
    static const char *hdrs[] = {"Content-Type: application/x-amz-json-1.0",
                                 "X-Amz-Target: DynamoDB_20120810.PutItem", NULL};
    static const char body[] =
        "{\"TableName\":\"users\",\"Item\":{\"customerId\":{\"S\":\"c-1\"}}}";
    httpc_request rq = {.method = "POST",
                        .headers = hdrs,
                        .body = body,
                        .body_len = strlen(body),
                        .aws_sigv4 = sigv4,
                        .aws_access_key = AKID,
                        .aws_secret_key = secret,
                        .aws_session_token = token};
    submit_req(fx, fx->pool, &rq, path, res);
}

Test(httpc, sigv4_signature_verifies_with_and_without_session_token) {
    fixture fx;
    fx_init(&fx, 4);
    result plain = {0}, token = {0}, get_q = {0}, edge = {0};
    sigv4_post(&fx, "/sigv4?region=eu-west-1&service=dynamodb", "aws:amz:eu-west-1:dynamodb",
               SECRET, NULL, &plain);
    sigv4_post(&fx, "/sigv4?region=eu-west-1&service=dynamodb", "aws:amz:eu-west-1:dynamodb",
               SECRET, TOKEN, &token);
    /* A GET with an empty body and a (canonically ordered) query. */
    httpc_request rq = {
        .aws_sigv4 = "aws:amz:us-east-1:sns", .aws_access_key = AKID, .aws_secret_key = SECRET};
    submit_req(&fx, fx.pool, &rq, "/sigv4?Action=ListTopics&region=us-east-1&service=sns", &get_q);
    /* Header names that are prefixes of one another, and folded white space. */
    const char *near[] = {"X-Amz-Meta: a", "X-Amz-Metab:   b   c ", NULL};
    httpc_request rn = {.headers = near,
                        .aws_sigv4 = "aws:amz:eu-west-1:dynamodb",
                        .aws_access_key = AKID,
                        .aws_secret_key = SECRET};
    submit_req(&fx, fx.pool, &rn, "/sigv4?a=1&a-=1&a~=%2F&region=eu-west-1", &edge);
    fx_run_until(&fx, 4);

    cr_assert_eq(plain.status, 200, "server: %s", plain.body);
    json_t *sh = json_object_get(plain.json, "signed_headers");
    cr_assert(json_array_has(sh, "host") && json_array_has(sh, "x-amz-date"));
    cr_assert(json_array_has(sh, "content-type") && json_array_has(sh, "x-amz-target"),
              "headers we pass are signed");
    cr_assert_not(json_array_has(sh, "x-amz-security-token"));
    cr_assert_str_eq(jstr(plain.json, "service"), "dynamodb");
    cr_assert_str_eq(jstr(plain.json, "region"), "eu-west-1");

    cr_assert_eq(token.status, 200, "server: %s", token.body);
    cr_assert(
        json_array_has(json_object_get(token.json, "signed_headers"), "x-amz-security-token"));
    cr_assert_str_eq(jstr(token.json, "security_token"), TOKEN);

    cr_assert_eq(get_q.status, 200, "server: %s", get_q.body);
    cr_assert_eq(edge.status, 200, "server: %s", edge.body);
    result_clear(&edge);
    result_clear(&plain);
    result_clear(&token);
    result_clear(&get_q);
    fx_close(&fx);
}

Test(httpc, sigv4_with_a_wrong_secret_or_region_is_refused) {
    fixture fx;
    fx_init(&fx, 4);
    result wrong_secret = {0}, wrong_region = {0};
    sigv4_post(&fx, "/sigv4", "aws:amz:eu-west-1:dynamodb", "not-the-secret", TOKEN, &wrong_secret);
    sigv4_post(&fx, "/sigv4?region=eu-west-1&service=dynamodb", "aws:amz:us-east-1:dynamodb",
               SECRET, NULL, &wrong_region);
    fx_run_until(&fx, 2);
    cr_assert_eq(wrong_secret.status, 403);
    cr_assert_str_eq(jstr(wrong_secret.json, "reason"), "signature does not match");
    cr_assert_eq(wrong_secret.retriable, 0);
    cr_assert_eq(wrong_region.status, 403);
    cr_assert_not_null(strstr(jstr(wrong_region.json, "reason"), "us-east-1"));
    result_clear(&wrong_secret);
    result_clear(&wrong_region);
    fx_close(&fx);
}

Test(httpc, sigv4_s3_style_encoded_path_and_content_sha256_header_verify) {
    /* S3 signs the path as sent (no second encoding) and takes the payload
     * hash from x-amz-content-sha256, which curl 7.88 does not add itself. */
    fixture fx;
    fx_init(&fx, 1);
    result r = {0};
    const char *hdrs[] = {"x-amz-content-sha256: UNSIGNED-PAYLOAD", NULL};
    httpc_request rq = {.method = "PUT",
                        .headers = hdrs,
                        .body = "object",
                        .body_len = 6,
                        .aws_sigv4 = "aws:amz:eu-west-1:s3",
                        .aws_access_key = AKID,
                        .aws_secret_key = SECRET};
    submit_req(&fx, fx.pool, &rq, "/sigv4/bucket/key%3D1", &r);
    fx_run_until(&fx, 1);
    cr_assert_eq(r.status, 200, "server: %s", r.body);
    cr_assert(json_array_has(json_object_get(r.json, "signed_headers"), "x-amz-content-sha256"));
    result_clear(&r);
    fx_close(&fx);
}

/* What libcurl 7.88's own signer got wrong, and AWS would answer with a
 * bare 403: paths needing a second encoding (API Gateway's @connections),
 * unsorted or bare query parameters, header names that sort differently as
 * whole lines, a header given twice.  Ours signs them all as AWS does; the
 * test server recomputes each signature independently. */
Test(httpc, sigv4_signs_paths_queries_and_headers_as_aws_does) {
    fixture fx;
    fx_init(&fx, 4);
    struct {
        const char *path;
        const char *header[3];
    } cases[] = {
        {"/sigv4/@connections/abc%3D", {NULL}},
        {"/sigv4/a%20b/c", {NULL}},
        {"/sigv4?service=execute-api&region=eu-west-1", {NULL}},
        {"/sigv4?a-=1&a=1", {NULL}},
        {"/sigv4?Action", {NULL}},
        {"/sigv4?a=%2f&b=%7E", {NULL}},
        {"/sigv4", {"X-Amz-Date-Extra: 1", "Host-Alias: x", NULL}},
        {"/sigv4", {"X-Dup: 1", "x-dup: 2", NULL}},
    };
    enum { N = sizeof(cases) / sizeof(cases[0]) };
    result res[N];
    memset(res, 0, sizeof(res));
    for (size_t i = 0; i < N; i++) {
        httpc_request rq = {.method = "POST",
                            .headers = cases[i].header[0] ? cases[i].header : NULL,
                            .body = "{}",
                            .body_len = 2,
                            .aws_sigv4 = "aws:amz:eu-west-1:execute-api",
                            .aws_access_key = AKID,
                            .aws_secret_key = SECRET,
                            .aws_session_token = (i % 2) ? TOKEN : NULL};
        submit_req(&fx, fx.pool, &rq, cases[i].path, &res[i]);
    }
    fx_run_until(&fx, N);
    for (size_t i = 0; i < N; i++) {
        cr_assert_eq(res[i].status, 200, "%s: %s", cases[i].path, res[i].body);
        cr_assert_str_eq(jstr(res[i].json, "service"), "execute-api");
        result_clear(&res[i]);
    }

    /* The signer's own headers cannot be supplied. */
    char err[256], u[256];
    url(&fx, u, sizeof(u), "/sigv4");
    const char *bad[][2] = {{"Authorization: Bearer x", NULL},
                            {"X-Amz-Date: 20260101T000000Z", NULL}};
    for (size_t i = 0; i < 2; i++) {
        httpc_request rq = {.url = u,
                            .headers = bad[i],
                            .aws_sigv4 = "aws:amz:eu-west-1:dynamodb",
                            .aws_access_key = AKID,
                            .aws_secret_key = SECRET};
        err[0] = '\0';
        cr_assert_eq(httpc_submit(fx.pool, &rq, never_called, NULL, err, sizeof(err)),
                     CD_ERR_INVALID, "%s", bad[i][0]);
        cr_assert_not_null(strstr(err, "signer"), "%s", err);
    }
    httpc_request odd = {.url = u,
                         .aws_sigv4 = "aws:amz:eu-west-1",
                         .aws_access_key = AKID,
                         .aws_secret_key = SECRET};
    cr_assert_eq(httpc_submit(fx.pool, &odd, never_called, NULL, err, sizeof(err)), CD_ERR_INVALID);
    cr_assert_not_null(strstr(err, "region:service"), "%s", err);
    fx_close(&fx);
}

/* --------------------------------------------------------- cancellation */
static int busy_submits;
static void on_cancel_try_submit(void *opaque, const httpc_response *resp) {
    on_result(opaque, resp);
    /* Submitting from a cancelled callback must fail, not call back. */
    char u[128], err[256];
    url(cur, u, sizeof(u), "/echo");
    httpc_request rq = {.url = u};
    static result never;
    if (httpc_submit(cur->pool, &rq, on_result, &never, err, sizeof(err)) == CD_ERR_BUSY)
        busy_submits++;
}

static void close_soon(uv_timer_t *t) {
    fixture *fx = t->data;
    httpc_close(fx->c, on_closed, &fx->closed);
    uv_close((uv_handle_t *)t, NULL);
}

Test(httpc, close_with_requests_in_flight_and_queued_calls_each_back_once) {
    fixture fx;
    fx_init(&fx, 2);
    httpc_pool *other = httpc_pool_new(fx.c, 1);
    busy_submits = 0;
    enum { N = 6 };
    result res[N] = {0};
    char u[128], err[256];
    url(&fx, u, sizeof(u), "/slow?ms=5000");
    for (int i = 0; i < N; i++) {
        httpc_request rq = {.url = u};
        httpc_pool *p = i < 4 ? fx.pool : other; /* 2 in flight + 2 queued; 1 + 1 */
        cr_assert_eq(httpc_submit(p, &rq, on_cancel_try_submit, &res[i], err, sizeof(err)), 0);
    }
    uv_timer_t t;
    uv_timer_init(&fx.loop, &t);
    t.data = &fx;
    uv_timer_start(&t, close_soon, 150, 0);
    uv_run(&fx.loop, UV_RUN_DEFAULT);
    cr_assert_eq(fx.closed, 1);
    for (int i = 0; i < N; i++) {
        cr_assert_eq(res[i].calls, 1, "request %d", i);
        cr_assert_eq(res[i].error, HTTPC_ERR_CANCELED);
        cr_assert_eq(res[i].status, 0);
        result_clear(&res[i]);
    }
    cr_assert_gt(busy_submits, 0);
    cr_assert_eq(uv_loop_close(&fx.loop), 0, "a handle outlived httpc_close");
    peer_stop(&fx.srv);
}

static void free_pool_soon(uv_timer_t *t) {
    httpc_pool_free(t->data);
    uv_close((uv_handle_t *)t, NULL);
}

Test(httpc, freeing_a_pool_cancels_only_its_own_requests) {
    fixture fx;
    fx_init(&fx, 1);
    httpc_pool *doomed = httpc_pool_new(fx.c, 1);
    result mine[3] = {0}, kept = {0};
    char u[128], err[256];
    url(&fx, u, sizeof(u), "/slow?ms=5000");
    for (int i = 0; i < 3; i++) {
        httpc_request rq = {.url = u};
        cr_assert_eq(httpc_submit(doomed, &rq, on_result, &mine[i], err, sizeof(err)), 0);
    }
    get(&fx, "/slow?ms=300", &kept);
    uv_timer_t t;
    uv_timer_init(&fx.loop, &t);
    t.data = doomed;
    uv_timer_start(&t, free_pool_soon, 100, 0);
    fx_run_until(&fx, 4);
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(mine[i].calls, 1);
        cr_assert_eq(mine[i].error, HTTPC_ERR_CANCELED);
        result_clear(&mine[i]);
    }
    cr_assert_eq(kept.status, 200);
    result_clear(&kept);
    fx_close(&fx);
}

static void on_result_then_free_pool(void *opaque, const httpc_response *resp) {
    on_result(opaque, resp);
    httpc_pool_free(cur->pool); /* ignored after the first time */
}

Test(httpc, a_callback_may_free_its_own_pool) {
    fixture fx;
    fx_init(&fx, 1);
    result res[4] = {0};
    char u[128], err[256];
    url(&fx, u, sizeof(u), "/echo");
    for (int i = 0; i < 4; i++) {
        httpc_request rq = {.url = u};
        cr_assert_eq(
            httpc_submit(fx.pool, &rq, on_result_then_free_pool, &res[i], err, sizeof(err)), 0);
    }
    fx_run_until(&fx, 4);
    cr_assert_eq(res[0].status, 200);
    for (int i = 1; i < 4; i++)
        cr_assert_eq(res[i].error, HTTPC_ERR_CANCELED);
    for (int i = 0; i < 4; i++)
        result_clear(&res[i]);
    fx_close(&fx); /* pool already freed: close must not touch it */
}

static void on_result_then_close(void *opaque, const httpc_response *resp) {
    on_result(opaque, resp);
    httpc_close(cur->c, on_closed, &cur->closed);
}

Test(httpc, a_callback_may_close_the_client) {
    fixture fx;
    fx_init(&fx, 4);
    result fast = {0}, slow[3] = {{0}};
    char u[128], err[256];
    url(&fx, u, sizeof(u), "/echo");
    httpc_request rq = {.url = u};
    cr_assert_eq(httpc_submit(fx.pool, &rq, on_result_then_close, &fast, err, sizeof(err)), 0);
    url(&fx, u, sizeof(u), "/slow?ms=5000");
    for (int i = 0; i < 3; i++) {
        httpc_request rs = {.url = u};
        cr_assert_eq(httpc_submit(fx.pool, &rs, on_result, &slow[i], err, sizeof(err)), 0);
    }
    uv_run(&fx.loop, UV_RUN_DEFAULT);
    cr_assert_eq(fx.closed, 1);
    cr_assert_eq(fast.status, 200);
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(slow[i].calls, 1);
        cr_assert_eq(slow[i].error, HTTPC_ERR_CANCELED);
        result_clear(&slow[i]);
    }
    result_clear(&fast);
    cr_assert_eq(uv_loop_close(&fx.loop), 0);
    peer_stop(&fx.srv);
}

/* ------------------------------------------------------------ bad input */
Test(httpc, submit_refuses_bad_input_without_calling_back) {
    fixture fx;
    fx_init(&fx, 2);
    char err[256], u[128];
    url(&fx, u, sizeof(u), "/echo");
    const char *bad_urls[] = {
        "ftp://127.0.0.1/file", "file:///etc/passwd", "gopher://x/", "not a url", "",
        "127.0.0.1:80/echo"};
    for (size_t i = 0; i < sizeof(bad_urls) / sizeof(bad_urls[0]); i++) {
        httpc_request rq = {.url = bad_urls[i]};
        err[0] = '\0';
        cr_assert_eq(httpc_submit(fx.pool, &rq, never_called, NULL, err, sizeof(err)),
                     CD_ERR_INVALID, "%s", bad_urls[i]);
        cr_assert_neq(err[0], '\0');
    }
    const char *no_colon[] = {"X-Bad", NULL};
    const char *smuggle[] = {"X-Ok: a\r\nX-Evil: b", NULL};
    const char *empty_value[] = {"X-Empty:", NULL};
    const char *const *bad_headers[] = {no_colon, smuggle, empty_value};
    for (size_t i = 0; i < 3; i++) {
        httpc_request rq = {.url = u, .headers = bad_headers[i]};
        cr_assert_eq(httpc_submit(fx.pool, &rq, never_called, NULL, err, sizeof(err)),
                     CD_ERR_INVALID);
    }
    httpc_request bad_method = {.url = u, .method = "GE T"};
    cr_assert_eq(httpc_submit(fx.pool, &bad_method, never_called, NULL, err, sizeof(err)),
                 CD_ERR_INVALID);
    httpc_request no_keys = {.url = u, .aws_sigv4 = "aws:amz:eu-west-1:dynamodb"};
    cr_assert_eq(httpc_submit(fx.pool, &no_keys, never_called, NULL, err, sizeof(err)),
                 CD_ERR_INVALID);
    cr_assert_not_null(strstr(err, "key"));
    httpc_request no_body = {.url = u, .method = "POST", .body_len = 3};
    cr_assert_eq(httpc_submit(fx.pool, &no_body, never_called, NULL, err, sizeof(err)),
                 CD_ERR_INVALID);
    cr_assert_eq(httpc_submit(fx.pool, &no_body, NULL, NULL, err, sizeof(err)), CD_ERR_INVALID);
    cr_assert_eq(httpc_pool_in_flight(fx.pool), 0);
    cr_assert_eq(httpc_pool_queued(fx.pool), 0);
    cr_assert_null(httpc_pool_new(fx.c, 0));
    for (int i = 0; i < 5; i++)
        uv_run(&fx.loop, UV_RUN_NOWAIT);
    cr_assert_eq(fx.done, 0);
    fx_close(&fx);
}
