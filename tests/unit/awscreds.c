/*
 * The AWS credentials chain on a real loop: keys from the environment, and
 * from a container-credentials endpoint (tests/unit/awscreds_server.py,
 * started per test, reached through AWS_CONTAINER_CREDENTIALS_FULL_URI)
 * including the authorization token, expiry and refresh, retries and the
 * errors a start-up without credentials reports.  Every test closes its loop
 * with no handle left.
 */
#include <criterion/criterion.h>
#include <jansson.h>

#include "awscreds.h"
#include "httpc.h"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include "pyserver.h"

#define AUTH_TOKEN "Bearer c0nta1ner-t0ken/with+chars="

/* ------------------------------------------------------------ the server */
static void peer_start(peer *s) {
    peer_start_script(s, "awscreds_server.py", AUTH_TOKEN);
}

/* ------------------------------------------------------------ the fixture */
typedef struct fixture {
    uv_loop_t loop;
    httpc *http;
    httpc_pool *pool; /* the test's own requests (/stats) */
    aws_creds *creds;
    peer srv;
    int ready_calls;
    int ready_status;
    char ready_msg[1024];
    int closed;
} fixture;

static void clear_env(void) {
    static const char *const names[] = {"AWS_ACCESS_KEY_ID",
                                        "AWS_SECRET_ACCESS_KEY",
                                        "AWS_SESSION_TOKEN",
                                        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
                                        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                                        "AWS_CONTAINER_AUTHORIZATION_TOKEN",
                                        "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        unsetenv(names[i]);
}

static void fx_init(fixture *fx, int with_server) {
    memset(fx, 0, sizeof(*fx));
    clear_env();
    cr_assert_eq(uv_loop_init(&fx->loop), 0);
    char err[256];
    cr_assert_eq(httpc_new(&fx->http, &fx->loop, err, sizeof(err)), 0, "%s", err);
    fx->pool = httpc_pool_new(fx->http, 1);
    cr_assert_not_null(fx->pool);
    if (with_server) peer_start(&fx->srv);
}

/* Points the chain at the test server's /creds with these query options. */
static void fx_use_endpoint(fixture *fx, const char *query) {
    char uri[256];
    snprintf(uri, sizeof(uri), "http://127.0.0.1:%d/creds%s%s", fx->srv.port, *query ? "?" : "",
             query);
    setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", uri, 1);
    setenv("AWS_CONTAINER_AUTHORIZATION_TOKEN", AUTH_TOKEN, 1);
}

static void on_ready(void *opaque, int status, const char *errmsg) {
    fixture *fx = opaque;
    fx->ready_calls++;
    cr_assert_eq(fx->ready_calls, 1, "ready called more than once");
    fx->ready_status = status;
    snprintf(fx->ready_msg, sizeof(fx->ready_msg), "%s", errmsg ? errmsg : "");
    if (status == 0) cr_assert_null(errmsg);
}

static void fx_new_and_start(fixture *fx) {
    char err[512];
    int r = aws_creds_new(&fx->creds, &fx->loop, fx->http, err, sizeof(err));
    cr_assert_eq(r, 0, "aws_creds_new: %s", err);
    cr_assert_eq(aws_creds_start(fx->creds, on_ready, fx), 0);
    cr_assert_eq(fx->ready_calls, 0, "ready never runs inside aws_creds_start");
}

/* Runs the loop until *flag is non-zero (or fails after timeout_ms). */
static void fx_run_until(fixture *fx, const int *flag, uint64_t timeout_ms) {
    uint64_t deadline = uv_now(&fx->loop) + timeout_ms;
    while (!*flag) {
        int alive = uv_run(&fx->loop, UV_RUN_ONCE);
        cr_assert(alive || *flag, "loop ran dry");
        uv_update_time(&fx->loop);
        cr_assert(uv_now(&fx->loop) < deadline, "timed out");
    }
}

/* Runs the loop for ms milliseconds, whatever happens. */
static void on_sleep_timer(uv_timer_t *t) {
    *(int *)t->data = 1;
}
static void fx_run_for(fixture *fx, uint64_t ms) {
    uv_timer_t t;
    int done = 0;
    cr_assert_eq(uv_timer_init(&fx->loop, &t), 0);
    t.data = &done;
    cr_assert_eq(uv_timer_start(&t, on_sleep_timer, ms, 0), 0);
    fx_run_until(fx, &done, ms + 10000);
    uv_close((uv_handle_t *)&t, NULL);
    uv_run(&fx->loop, UV_RUN_NOWAIT);
}

static void on_closed(void *opaque) {
    (*(int *)opaque)++;
}

/* Closes the chain, then the client; proves nothing is left on the loop. */
static void fx_close(fixture *fx) {
    int http_closed = 0;
    if (fx->creds) {
        aws_creds_close(fx->creds, on_closed, &fx->closed);
        uv_run(&fx->loop, UV_RUN_DEFAULT);
        cr_assert_eq(fx->closed, 1, "on_closed once");
    }
    httpc_close(fx->http, on_closed, &http_closed);
    uv_run(&fx->loop, UV_RUN_DEFAULT);
    cr_assert_eq(http_closed, 1);
    cr_assert_eq(uv_loop_close(&fx->loop), 0, "a handle outlived aws_creds_close");
    peer_stop(&fx->srv);
}

typedef struct stats_req {
    int done;
    json_t *json;
} stats_req;

static void on_stats(void *opaque, const httpc_response *resp) {
    stats_req *s = opaque;
    cr_assert_eq(resp->status, 200, "GET /stats: %d %s", resp->status,
                 resp->error_message ? resp->error_message : "");
    s->json = json_loadb(resp->body, resp->body_len, 0, NULL);
    s->done = 1;
}

/* The server's counter `name` (fetches, ok, auth_failures). */
static int server_count(fixture *fx, const char *name) {
    char url[128], err[256];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/stats", fx->srv.port);
    httpc_request rq = {.url = url};
    stats_req s = {0};
    cr_assert_eq(httpc_submit(fx->pool, &rq, on_stats, &s, err, sizeof(err)), 0, "%s", err);
    fx_run_until(fx, &s.done, 10000);
    cr_assert_not_null(s.json);
    int n = (int)json_integer_value(json_object_get(s.json, name));
    json_decref(s.json);
    return n;
}

static void assert_keys(fixture *fx, const char *ak, const char *sk, const char *tok) {
    const char *a = NULL, *s = NULL, *t = "unset";
    int r = aws_creds_get(fx->creds, &a, &s, &t);
    cr_assert_eq(r, 0, "aws_creds_get: %d", r);
    cr_assert_str_eq(a, ak);
    cr_assert_str_eq(s, sk);
    if (tok)
        cr_assert_str_eq(t, tok);
    else
        cr_assert_null(t);
}

/* ------------------------------------------------------------- the tests */
Test(awscreds, environment_keys_and_session_token_are_ready_from_the_loop) {
    fixture fx;
    fx_init(&fx, 0);
    setenv("AWS_ACCESS_KEY_ID", "AKIDENV", 1);
    setenv("AWS_SECRET_ACCESS_KEY", "env/secret+key", 1);
    setenv("AWS_SESSION_TOKEN", "env-session-token", 1);
    /* The environment wins over a container endpoint, as in the SDKs. */
    setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", "http://127.0.0.1:1/never", 1);
    fx_new_and_start(&fx);
    cr_assert_str_eq(aws_creds_source_name(fx.creds), "environment");
    cr_assert_eq(aws_creds_start(fx.creds, on_ready, &fx), CD_ERR_BUSY, "started twice");
    fx_run_until(&fx, &fx.ready_calls, 5000);
    cr_assert_eq(fx.ready_status, 0);
    assert_keys(&fx, "AKIDENV", "env/secret+key", "env-session-token");
    fx_close(&fx);
}

Test(awscreds, environment_keys_without_session_token) {
    fixture fx;
    fx_init(&fx, 0);
    setenv("AWS_ACCESS_KEY_ID", "AKIDENV", 1);
    setenv("AWS_SECRET_ACCESS_KEY", "env-secret", 1);
    setenv("AWS_SESSION_TOKEN", "", 1); /* empty counts as unset */
    fx_new_and_start(&fx);
    fx_run_until(&fx, &fx.ready_calls, 5000);
    cr_assert_eq(fx.ready_status, 0);
    assert_keys(&fx, "AKIDENV", "env-secret", NULL);
    fx_close(&fx);
}

Test(awscreds, nothing_configured_fails_at_once_naming_what_was_tried) {
    fixture fx;
    fx_init(&fx, 0);
    char err[512] = "";
    aws_creds *c = (aws_creds *)1;
    cr_assert_eq(aws_creds_new(&c, &fx.loop, fx.http, err, sizeof(err)), CD_ERR_INVALID);
    cr_assert_null(c);
    cr_assert_str_eq(err, "no AWS credentials: AWS_ACCESS_KEY_ID not set; "
                          "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI/FULL_URI not set");
    fx_close(&fx);
}

Test(awscreds, access_key_without_secret_names_the_missing_secret_and_not_the_key) {
    fixture fx;
    fx_init(&fx, 0);
    setenv("AWS_ACCESS_KEY_ID", "AKIDLONELY", 1);
    char err[512] = "";
    aws_creds *c = NULL;
    cr_assert_eq(aws_creds_new(&c, &fx.loop, fx.http, err, sizeof(err)), CD_ERR_INVALID);
    cr_assert_str_eq(err, "no AWS credentials: AWS_ACCESS_KEY_ID set but AWS_SECRET_ACCESS_KEY "
                          "not set; AWS_CONTAINER_CREDENTIALS_RELATIVE_URI/FULL_URI not set");
    cr_assert_null(strstr(err, "AKIDLONELY"));
    fx_close(&fx);
}

Test(awscreds, plain_http_full_uri_to_a_remote_host_is_refused) {
    fixture fx;
    fx_init(&fx, 0);
    char err[512] = "";
    aws_creds *c = NULL;
    /* user-info tricks do not pass for loopback either */
    setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", "http://127.0.0.1@creds.example.com/x", 1);
    cr_assert_eq(aws_creds_new(&c, &fx.loop, fx.http, err, sizeof(err)), CD_ERR_INVALID);
    cr_assert(strstr(err, "want https, or http to a loopback address"), "%s", err);
    setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", "https://creds.example.com/x", 1);
    cr_assert_eq(aws_creds_new(&c, &fx.loop, fx.http, err, sizeof(err)), 0, "%s", err);
    cr_assert_str_eq(aws_creds_source_name(c), "container endpoint");
    aws_creds_close(c, on_closed, &fx.closed); /* never started: closes quietly */
    uv_run(&fx.loop, UV_RUN_DEFAULT);
    cr_assert_eq(fx.closed, 1);
    fx.closed = 0;
    setenv("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "v2/credentials/abc", 1);
    cr_assert_eq(aws_creds_new(&c, &fx.loop, fx.http, err, sizeof(err)), CD_ERR_INVALID);
    cr_assert(strstr(err, "RELATIVE_URI v2/credentials/abc: want a path starting with /"), "%s",
              err);
    fx_close(&fx);
}

Test(awscreds, container_endpoint_keys_are_refreshed_before_they_expire) {
    fixture fx;
    fx_init(&fx, 1);
    fx_use_endpoint(&fx, "lifetime=3");
    fx_new_and_start(&fx);
    const char *a;
    cr_assert_eq(aws_creds_get(fx.creds, &a, NULL, NULL), CD_ERR_BUSY, "nothing before ready");
    fx_run_until(&fx, &fx.ready_calls, 10000);
    cr_assert_eq(fx.ready_status, 0, "%s", fx.ready_msg);
    assert_keys(&fx, "AKID-1", "secret-1", "token-1");

    /* Expiration is 2-3 s ahead: the refresh comes after half of that. */
    uint64_t deadline = uv_now(&fx.loop) + 10000;
    for (;;) {
        cr_assert_eq(aws_creds_get(fx.creds, &a, NULL, NULL), 0, "never without keys");
        if (strcmp(a, "AKID-1") != 0) break;
        cr_assert_lt(uv_now(&fx.loop), deadline, "no refresh within 10 s");
        fx_run_for(&fx, 100);
    }
    assert_keys(&fx, "AKID-2", "secret-2", "token-2");
    cr_assert_eq(server_count(&fx, "auth_failures"), 0, "the token went with every fetch");
    cr_assert_eq(server_count(&fx, "ok"), 2);
    fx_close(&fx);
}

Test(awscreds, token_is_read_from_the_token_file) {
    fixture fx;
    fx_init(&fx, 1);
    fx_use_endpoint(&fx, "");
    unsetenv("AWS_CONTAINER_AUTHORIZATION_TOKEN");
    char path[] = "/tmp/awscreds-token-XXXXXX";
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    cr_assert_eq(write(fd, AUTH_TOKEN "\n", strlen(AUTH_TOKEN) + 1),
                 (ssize_t)strlen(AUTH_TOKEN) + 1);
    close(fd);
    setenv("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", path, 1);
    fx_new_and_start(&fx);
    fx_run_until(&fx, &fx.ready_calls, 10000);
    unlink(path);
    cr_assert_eq(fx.ready_status, 0, "%s", fx.ready_msg);
    assert_keys(&fx, "AKID-1", "secret-1", "token-1");
    fx_close(&fx);
}

Test(awscreds, wrong_authorization_token_fails_at_once_without_showing_it) {
    fixture fx;
    fx_init(&fx, 1);
    fx_use_endpoint(&fx, "");
    setenv("AWS_CONTAINER_AUTHORIZATION_TOKEN", "Bearer wrong-secret-token", 1);
    fx_new_and_start(&fx);
    fx_run_until(&fx, &fx.ready_calls, 10000);
    cr_assert_lt(fx.ready_status, 0);
    cr_assert(strstr(fx.ready_msg, "HTTP 401"), "%s", fx.ready_msg);
    cr_assert(strstr(fx.ready_msg, "(1 attempt)"), "a 401 is not retried: %s", fx.ready_msg);
    cr_assert_null(strstr(fx.ready_msg, "wrong-secret-token"), "%s", fx.ready_msg);
    cr_assert_eq(aws_creds_get(fx.creds, NULL, NULL, NULL), CD_ERR_BUSY);
    cr_assert_eq(server_count(&fx, "fetches"), 1);
    fx_close(&fx);
}

Test(awscreds, endpoint_answering_500_is_retried_then_start_fails) {
    fixture fx;
    fx_init(&fx, 1);
    fx_use_endpoint(&fx, "fail_first=100");
    fx_new_and_start(&fx);
    fx_run_until(&fx, &fx.ready_calls, 10000);
    cr_assert_lt(fx.ready_status, 0);
    char want[128];
    snprintf(want, sizeof(want), "http://127.0.0.1:%d/creds?fail_first=100: HTTP 500", fx.srv.port);
    cr_assert(strstr(fx.ready_msg, want), "%s", fx.ready_msg);
    cr_assert(strstr(fx.ready_msg, "(3 attempts)"), "%s", fx.ready_msg);
    cr_assert_eq(server_count(&fx, "fetches"), AWS_CREDS_FIRST_FETCH_ATTEMPTS);
    fx_close(&fx);
}

Test(awscreds, endpoint_recovering_after_start_failed_is_still_found) {
    fixture fx;
    fx_init(&fx, 1);
    fx_use_endpoint(&fx, "fail_first=4");
    fx_new_and_start(&fx);
    fx_run_until(&fx, &fx.ready_calls, 10000);
    cr_assert_lt(fx.ready_status, 0, "the first three attempts failed");
    cr_assert_eq(aws_creds_get(fx.creds, NULL, NULL, NULL), CD_ERR_BUSY);
    /* It goes on fetching with the refresh backoff (1 s, 2 s, ...). */
    uint64_t deadline = uv_now(&fx.loop) + 10000;
    while (aws_creds_get(fx.creds, NULL, NULL, NULL) != 0) {
        cr_assert_lt(uv_now(&fx.loop), deadline, "never fetched again (%d fetches)",
                     (int)server_count(&fx, "fetches"));
        fx_run_for(&fx, 50);
    }
    assert_keys(&fx, "AKID-1", "secret-1", "token-1");
    cr_assert_eq(server_count(&fx, "fetches"), 5);
    cr_assert_eq(fx.ready_calls, 1, "ready is not called again");
    fx_close(&fx);
}

Test(awscreds, endpoint_recovering_from_500_within_the_retries_starts) {
    fixture fx;
    fx_init(&fx, 1);
    fx_use_endpoint(&fx, "fail_first=2");
    fx_new_and_start(&fx);
    fx_run_until(&fx, &fx.ready_calls, 10000);
    cr_assert_eq(fx.ready_status, 0, "%s", fx.ready_msg);
    assert_keys(&fx, "AKID-1", "secret-1", "token-1");
    cr_assert_eq(server_count(&fx, "fetches"), 3);
    fx_close(&fx);
}

Test(awscreds, failed_refresh_keeps_the_old_keys_until_they_expire_and_retries) {
    fixture fx;
    fx_init(&fx, 1);
    fx_use_endpoint(&fx, "lifetime=2&fail_after=1");
    fx_new_and_start(&fx);
    fx_run_until(&fx, &fx.ready_calls, 10000);
    cr_assert_eq(fx.ready_status, 0, "%s", fx.ready_msg);
    assert_keys(&fx, "AKID-1", "secret-1", "token-1");
    /* Expiration is 1-2 s ahead; the refreshes fail; the keys stay usable
     * until Expiration and not after. */
    uint64_t deadline = uv_now(&fx.loop) + 10000;
    const char *a;
    while (aws_creds_get(fx.creds, &a, NULL, NULL) == 0) {
        cr_assert_str_eq(a, "AKID-1");
        cr_assert_lt(uv_now(&fx.loop), deadline, "keys never expired");
        fx_run_for(&fx, 50);
    }
    cr_assert_eq(aws_creds_get(fx.creds, &a, NULL, NULL), CD_ERR_IO);
    fx_run_for(&fx, 1200); /* the retry after 1 s */
    cr_assert_geq(server_count(&fx, "fetches"), 3, "first fetch, failed refresh, retry");
    cr_assert_eq(fx.ready_calls, 1, "ready is not called again");
    fx_close(&fx);
}

Test(awscreds, closing_before_the_first_keys_reports_cancelled_once) {
    fixture fx;
    fx_init(&fx, 1);
    fx_use_endpoint(&fx, "");
    fx_new_and_start(&fx);
    fx_close(&fx);
    cr_assert_eq(fx.ready_calls, 1);
    cr_assert_eq(fx.ready_status, HTTPC_ERR_CANCELED);
}
