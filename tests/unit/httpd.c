/*
 * The HTTP server over real sockets: each test runs its own loop (server
 * and handler on the test's main thread) and a blocking client in a
 * thread; the client records what it saw and the assertions run after the
 * loop has ended, the server is closed and the loop closes clean.
 */
#include <criterion/criterion.h>

#include "httpd.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

/* ------------------------------------------------------------------ client */

typedef struct cl {
    int fd;
    size_t len;
    char buf[65536];
} cl;

typedef struct resp {
    int status;
    char head[2048];
    char body[8192];
    size_t body_len;
} resp;

static int cl_open(cl *c, int port) {
    c->len = 0;
    c->fd = socket(AF_INET, SOCK_STREAM, 0);
    if (c->fd < 0) return -errno;
    struct timeval tv = {5, 0};
    setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(c->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(c->fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
        int e = -errno;
        close(c->fd);
        c->fd = -1;
        return e;
    }
    return 0;
}

static void cl_close(cl *c) {
    if (c->fd >= 0) close(c->fd);
    c->fd = -1;
}

static int cl_send_n(cl *c, const void *p, size_t n) {
    const char *s = p;
    while (n) {
        ssize_t w = send(c->fd, s, n, MSG_NOSIGNAL);
        if (w <= 0) return -1;
        s += w;
        n -= (size_t)w;
    }
    return 0;
}

static int cl_send(cl *c, const char *s) {
    return cl_send_n(c, s, strlen(s));
}

static int cl_fill(cl *c) {
    if (c->len == sizeof(c->buf)) return -1;
    ssize_t n = recv(c->fd, c->buf + c->len, sizeof(c->buf) - c->len, 0);
    if (n <= 0) return -1;
    c->len += (size_t)n;
    return 0;
}

/* Reads one response; head_only for a response to HEAD.  0 or -1 (EOF,
 * timeout or not a response). */
static int cl_response_x(cl *c, resp *r, int head_only) {
    memset(r, 0, sizeof(*r));
    char *end;
    while (!(end = memmem(c->buf, c->len, "\r\n\r\n", 4)))
        if (cl_fill(c) < 0) return -1;
    size_t hlen = (size_t)(end - c->buf) + 4;
    size_t copy = hlen < sizeof(r->head) ? hlen : sizeof(r->head) - 1;
    memcpy(r->head, c->buf, copy);
    if (sscanf(r->head, "HTTP/1.1 %d", &r->status) != 1) return -1;
    size_t clen = 0;
    const char *h = strcasestr(r->head, "\r\ncontent-length:");
    if (h) clen = strtoul(h + 17, NULL, 10);
    if (head_only || r->status < 200) clen = 0;
    while (c->len < hlen + clen)
        if (cl_fill(c) < 0) return -1;
    r->body_len = clen;
    memcpy(r->body, c->buf + hlen, clen < sizeof(r->body) ? clen : sizeof(r->body) - 1);
    memmove(c->buf, c->buf + hlen + clen, c->len - hlen - clen);
    c->len -= hlen + clen;
    return 0;
}

static int cl_response(cl *c, resp *r) {
    return cl_response_x(c, r, 0);
}

/* Exactly n raw bytes (a stream after an upgrade). */
static int cl_read_exact(cl *c, char *out, size_t n) {
    while (c->len < n)
        if (cl_fill(c) < 0) return -1;
    memcpy(out, c->buf, n);
    out[n] = 0;
    memmove(c->buf, c->buf + n, c->len - n);
    c->len -= n;
    return 0;
}

/* 1 when the server closed (EOF or reset) with nothing more to read. */
static int cl_eof(cl *c) {
    if (c->len) return 0;
    char b[256];
    ssize_t n = recv(c->fd, b, sizeof(b), 0);
    return n == 0 || (n < 0 && errno == ECONNRESET);
}

static uint64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
    nanosleep(&ts, NULL);
}

/* A small seeded PRNG (xorshift64): the same inputs on every run. */
static uint64_t rng_state;

static uint64_t rng(void) {
    uint64_t x = rng_state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return rng_state = x;
}

/* ----------------------------------------------------------------- harness */

typedef struct harness harness;
typedef void (*client_fn)(harness *t);

struct harness {
    uv_loop_t loop;
    uv_async_t done;
    uv_timer_t timer;
    int timer_used;
    httpd *h;
    int port;
    pthread_t thread;
    client_fn client;
    int server_closed; /* httpd_close was called */
    int close_now;     /* the end of the client closes with httpd_close_now */
    int closed_calls;
    httpd_stats stats; /* copied when the client is done */

    /* written by the handler (loop thread) */
    int nreq;
    char seen[16][256];
    const char *null_param;
    httpd_req *held[16];
    int nheld, max_held, answered;
    int ret[8];
    int stream_closed;
    httpd_stream *stream;

    /* written by the client thread */
    resp res[12];
    int rc[12];
    int flag[8];
    uint64_t elapsed_ms;
    char note[512];
};

static harness T;

static void *client_main(void *arg) {
    harness *t = arg;
    t->client(t);
    uv_async_send(&t->done);
    return NULL;
}

static void on_server_closed(void *opaque) {
    harness *t = opaque;
    t->closed_calls++;
}

static void on_client_done(uv_async_t *a) {
    harness *t = a->data;
    uv_close((uv_handle_t *)a, NULL);
    if (t->timer_used && !uv_is_closing((uv_handle_t *)&t->timer))
        uv_close((uv_handle_t *)&t->timer, NULL);
    if (t->server_closed) return;
    t->stats = *httpd_get_stats(t->h);
    t->server_closed = 1;
    httpd_close(t->h, on_server_closed, t);
    if (t->close_now) httpd_close_now(t->h);
}

static void harness_timer(harness *t) {
    if (!t->timer_used) uv_timer_init(&t->loop, &t->timer);
    t->timer_used = 1;
}

static void run(const httpd_limits *lim, httpd_handler handler, client_fn client) {
    harness *t = &T;
    cr_assert_eq(uv_loop_init(&t->loop), 0);
    char err[256];
    int r = httpd_start(&t->h, &t->loop, "127.0.0.1:0", lim, handler, t, err, sizeof(err));
    cr_assert_eq(r, 0, "%s", err);
    t->port = httpd_port(t->h);
    cr_assert_gt(t->port, 0);
    uv_async_init(&t->loop, &t->done, on_client_done);
    t->done.data = t;
    t->client = client;
    cr_assert_eq(pthread_create(&t->thread, NULL, client_main, t), 0);
    uv_run(&t->loop, UV_RUN_DEFAULT);
    pthread_join(t->thread, NULL);
    cr_assert_eq(t->closed_calls, 1, "on_closed called %d times", t->closed_calls);
    cr_assert_eq(uv_loop_close(&t->loop), 0, "handles left on the loop");
}

static httpd_limits small_limits(void) {
    httpd_limits l;
    httpd_limits_default(&l);
    return l;
}

/* Answers 200 with the path as body. */
static void h_path(httpd_req *req, void *opaque) {
    harness *t = opaque;
    t->nreq++;
    const char *p = httpd_req_path(req);
    httpd_respond(req, 200, "text/plain", p, strlen(p), NULL);
}

/* Answers 200 echoing the body. */
static void h_echo(httpd_req *req, void *opaque) {
    harness *t = opaque;
    size_t len;
    const char *b = httpd_req_body(req, &len);
    if (t->nreq < 16) snprintf(t->seen[t->nreq], sizeof(t->seen[0]), "%zu", len);
    t->nreq++;
    httpd_respond(req, 200, "application/octet-stream", b, len, NULL);
}

/* ---------------------------------------------------------- plain requests */

static void h_get(httpd_req *req, void *opaque) {
    harness *t = opaque;
    t->nreq++;
    snprintf(t->seen[0], 256, "%s", httpd_req_method(req));
    snprintf(t->seen[1], 256, "%s", httpd_req_path(req));
    snprintf(t->seen[2], 256, "%s", httpd_req_query(req) ? httpd_req_query(req) : "(null)");
    snprintf(t->seen[3], 256, "%s", httpd_req_query_param(req, "x"));
    snprintf(t->seen[4], 256, "%s", httpd_req_query_param(req, "name"));
    snprintf(t->seen[5], 256, "[%s]", httpd_req_query_param(req, "flag"));
    t->null_param = httpd_req_query_param(req, "missing");
    snprintf(t->seen[6], 256, "%s", httpd_req_header(req, "x-CUSTOM"));
    snprintf(t->seen[7], 256, "%s", httpd_req_peer(req));
    snprintf(t->seen[8], 256, "%s", httpd_req_header(req, "X-Missing") ? "present" : "absent");
    size_t len = 99;
    httpd_req_body(req, &len);
    snprintf(t->seen[9], 256, "%zu", len);
    snprintf(t->seen[10], 256, "[%s]", httpd_req_header(req, "x-empty"));
    static const char *const extra[] = {"X-Reply: yes", "Cache-Control: no-store", NULL};
    t->ret[0] = httpd_respond(req, 200, "text/plain", "hello", 5, extra);
}

static void c_get(harness *t) {
    cl c;
    if (cl_open(&c, t->port) < 0) return;
    cl_send(&c, "GET /api/a%20b/c%2Fd?x=1&name=J%C3%B6rg+M&flag&empty= HTTP/1.1\r\n"
                "Host: test\r\nX-Custom:   Value 1\r\nX-Empty:\r\n\r\n");
    t->rc[0] = cl_response(&c, &t->res[0]);
    cl_close(&c);
}

Test(httpd, get_exposes_path_query_params_headers_and_peer) {
    run(NULL, h_get, c_get);
    cr_assert_eq(T.nreq, 1);
    cr_assert_str_eq(T.seen[0], "GET");
    cr_assert_str_eq(T.seen[1], "/api/a b/c/d");
    cr_assert_str_eq(T.seen[2], "x=1&name=J%C3%B6rg+M&flag&empty=");
    cr_assert_str_eq(T.seen[3], "1");
    cr_assert_str_eq(T.seen[4], "J\xc3\xb6rg M");
    cr_assert_str_eq(T.seen[5], "[]");
    cr_assert_null(T.null_param);
    cr_assert_str_eq(T.seen[6], "Value 1");
    cr_assert_eq(strncmp(T.seen[7], "127.0.0.1:", 10), 0, "%s", T.seen[7]);
    cr_assert_str_eq(T.seen[8], "absent");
    cr_assert_str_eq(T.seen[9], "0");
    cr_assert_str_eq(T.seen[10], "[]");
    cr_assert_eq(T.ret[0], 0);
    cr_assert_eq(T.rc[0], 0);
    cr_assert_eq(T.res[0].status, 200);
    cr_assert_str_eq(T.res[0].body, "hello");
    cr_assert_not_null(strstr(T.res[0].head, "\r\nContent-Length: 5\r\n"), "%s", T.res[0].head);
    cr_assert_not_null(strstr(T.res[0].head, "\r\nContent-Type: text/plain\r\n"));
    cr_assert_not_null(strstr(T.res[0].head, "\r\nX-Reply: yes\r\n"));
    cr_assert_not_null(strstr(T.res[0].head, "\r\nCache-Control: no-store\r\n"));
    cr_assert_not_null(strstr(T.res[0].head, "\r\nDate: "));
    cr_assert_null(strstr(T.res[0].head, "Connection: close"));
    cr_assert_eq(T.stats.requests_total, 1);
    cr_assert_eq(T.stats.responses_by_class[2], 1);
}

static void h_flags(httpd_req *req, void *opaque) {
    harness *t = opaque;
    t->nreq++;
    snprintf(t->seen[0], 256, "[%s]", httpd_req_query_param(req, "f999"));
    snprintf(t->seen[1], 256, "%s", httpd_req_query_param(req, "last"));
    t->null_param = httpd_req_query_param(req, "f1000");
    t->ret[0] = httpd_respond(req, 200, "text/plain", "ok", 2, NULL);
}

/* 1,000 parameters without '=' (each needs one byte more in the decoded
 * list than in the query: the list used to be sized for the query and
 * overflowed, which AddressSanitizer reports). */
static void c_flags(harness *t) {
    static char req[16384];
    size_t n = (size_t)snprintf(req, sizeof(req), "GET /flags?");
    for (int i = 0; i < 1000; i++)
        n += (size_t)snprintf(req + n, sizeof(req) - n, "f%d&", i);
    snprintf(req + n, sizeof(req) - n, "last=%%41Z HTTP/1.1\r\nHost: test\r\n\r\n");
    cl c;
    if (cl_open(&c, t->port) < 0) return;
    cl_send(&c, req);
    t->rc[0] = cl_response(&c, &t->res[0]);
    cl_close(&c);
}

Test(httpd, many_parameters_without_a_value_are_decoded_in_bounds) {
    run(NULL, h_flags, c_flags);
    cr_assert_eq(T.nreq, 1);
    cr_assert_str_eq(T.seen[0], "[]");
    cr_assert_str_eq(T.seen[1], "AZ");
    cr_assert_null(T.null_param);
    cr_assert_eq(T.res[0].status, 200);
}

static void c_post(harness *t) {
    cl c;
    if (cl_open(&c, t->port) < 0) return;
    /* Head and body in separate segments, the body split as well. */
    cl_send(&c, "POST /events HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                "Content-Length: 24\r\n\r\n");
    sleep_ms(20);
    cl_send(&c, "{\"customerId\":");
    sleep_ms(20);
    cl_send(&c, "\"c-42\"}   ");
    t->rc[0] = cl_response(&c, &t->res[0]);
    cl_close(&c);
}

Test(httpd, post_with_content_length_delivers_the_whole_body) {
    run(NULL, h_echo, c_post);
    cr_assert_eq(T.nreq, 1);
    cr_assert_eq(T.rc[0], 0);
    cr_assert_eq(T.res[0].status, 200);
    cr_assert_str_eq(T.res[0].body, "{\"customerId\":\"c-42\"}   ");
}

static void c_chunked(harness *t) {
    cl c;
    if (cl_open(&c, t->port) < 0) return;
    cl_send(&c, "POST /c HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n");
    sleep_ms(20);
    cl_send(&c, "6;ext=1\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n");
    t->rc[0] = cl_response(&c, &t->res[0]);
    /* The connection is still usable after a chunked body. */
    cl_send(&c, "POST /c HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n");
    t->rc[1] = cl_response(&c, &t->res[1]);
    cl_close(&c);
}

Test(httpd, chunked_post_is_decoded) {
    run(NULL, h_echo, c_chunked);
    cr_assert_eq(T.rc[0], 0);
    cr_assert_eq(T.res[0].status, 200);
    cr_assert_str_eq(T.res[0].body, "hello world");
    cr_assert_eq(T.rc[1], 0);
    cr_assert_eq(T.res[1].status, 200);
    cr_assert_eq(T.res[1].body_len, 0);
}

static void c_bytewise(harness *t) {
    cl c;
    if (cl_open(&c, t->port) < 0) return;
    const char *req = "POST /slowly?k=v HTTP/1.1\r\nHost: t\r\nX-Long-Header-Name: some value\r\n"
                      "Content-Length: 11\r\n\r\nhello world";
    for (const char *p = req; *p; p++) {
        cl_send_n(&c, p, 1);
        usleep(300);
    }
    t->rc[0] = cl_response(&c, &t->res[0]);
    cl_close(&c);
}

Test(httpd, request_sent_one_byte_at_a_time_is_parsed_whole) {
    run(NULL, h_echo, c_bytewise);
    cr_assert_eq(T.rc[0], 0);
    cr_assert_eq(T.res[0].status, 200);
    cr_assert_str_eq(T.res[0].body, "hello world");
}

/* -------------------------------------------------- keep-alive and closing */

static void h_peer(httpd_req *req, void *opaque) {
    harness *t = opaque;
    if (t->nreq < 16) snprintf(t->seen[t->nreq], 256, "%s", httpd_req_peer(req));
    t->nreq++;
    httpd_respond(req, 200, "text/plain", "ok", 2, NULL);
}

static void c_keepalive(harness *t) {
    cl c;
    if (cl_open(&c, t->port) < 0) return;
    cl_send(&c, "GET /one HTTP/1.1\r\nHost: t\r\n\r\n");
    t->rc[0] = cl_response(&c, &t->res[0]);
    sleep_ms(20);
    cl_send(&c, "GET /two HTTP/1.1\r\nHost: t\r\n\r\n");
    t->rc[1] = cl_response(&c, &t->res[1]);
    cl_close(&c);
}

Test(httpd, keep_alive_serves_two_requests_on_one_connection) {
    run(NULL, h_peer, c_keepalive);
    cr_assert_eq(T.rc[0], 0);
    cr_assert_eq(T.rc[1], 0);
    cr_assert_eq(T.res[0].status, 200);
    cr_assert_eq(T.res[1].status, 200);
    cr_assert_eq(T.nreq, 2);
    cr_assert_str_eq(T.seen[0], T.seen[1]);
    cr_assert_eq(T.stats.connections_total, 1);
    cr_assert_eq(T.stats.requests_total, 2);
}

static void c_closing(harness *t) {
    cl c;
    /* HTTP/1.0 without keep-alive closes. */
    if (cl_open(&c, t->port) < 0) return;
    cl_send(&c, "GET /a HTTP/1.0\r\n\r\n");
    t->rc[0] = cl_response(&c, &t->res[0]);
    t->flag[0] = cl_eof(&c);
    cl_close(&c);
    /* HTTP/1.1 with Connection: close closes, and nothing pipelined after
     * it is answered. */
    if (cl_open(&c, t->port) < 0) return;
    cl_send(&c, "GET /b HTTP/1.1\r\nConnection: close\r\n\r\nGET /ignored HTTP/1.1\r\n\r\n");
    t->rc[1] = cl_response(&c, &t->res[1]);
    t->flag[1] = cl_eof(&c);
    cl_close(&c);
    /* HTTP/1.0 with keep-alive stays open and is told so. */
    if (cl_open(&c, t->port) < 0) return;
    cl_send(&c, "GET /c HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    t->rc[2] = cl_response(&c, &t->res[2]);
    cl_send(&c, "HEAD /d HTTP/1.1\r\nHost: t\r\n\r\n");
    t->rc[3] = cl_response_x(&c, &t->res[3], 1);
    cl_send(&c, "GET /e HTTP/1.1\r\nHost: t\r\n\r\n");
    t->rc[4] = cl_response(&c, &t->res[4]);
    cl_close(&c);
}

Test(httpd, connection_close_and_http10_are_honoured_and_head_has_no_body) {
    run(NULL, h_path, c_closing);
    cr_assert_eq(T.rc[0], 0);
    cr_assert_str_eq(T.res[0].body, "/a");
    cr_assert_not_null(strstr(T.res[0].head, "\r\nConnection: close\r\n"));
    cr_assert(T.flag[0], "HTTP/1.0 connection left open");
    cr_assert_eq(T.rc[1], 0);
    cr_assert_str_eq(T.res[1].body, "/b");
    cr_assert_not_null(strstr(T.res[1].head, "\r\nConnection: close\r\n"));
    cr_assert(T.flag[1], "Connection: close not honoured");
    cr_assert_eq(T.rc[2], 0);
    cr_assert_not_null(strstr(T.res[2].head, "\r\nConnection: keep-alive\r\n"));
    cr_assert_eq(T.rc[3], 0);
    cr_assert_eq(T.res[3].status, 200);
    cr_assert_not_null(strstr(T.res[3].head, "\r\nContent-Length: 2\r\n"), "%s", T.res[3].head);
    /* Had HEAD's response carried a body, this would read it as garbage. */
    cr_assert_eq(T.rc[4], 0);
    cr_assert_str_eq(T.res[4].body, "/e");
    cr_assert_eq(T.nreq, 5);
}

static void c_idle(harness *t) {
    cl c;
    if (cl_open(&c, t->port) < 0) return;
    cl_send(&c, "GET / HTTP/1.1\r\nHost: t\r\n\r\n");
    t->rc[0] = cl_response(&c, &t->res[0]);
    uint64_t start = now_ms();
    t->flag[0] = cl_eof(&c);
    t->elapsed_ms = now_ms() - start;
    cl_close(&c);
}

Test(httpd, idle_keep_alive_connection_is_closed_after_the_idle_timeout) {
    httpd_limits l = small_limits();
    l.idle_timeout_ms = 100;
    run(&l, h_path, c_idle);
    cr_assert_eq(T.rc[0], 0);
    cr_assert(T.flag[0]);
    cr_assert(T.elapsed_ms >= 50 && T.elapsed_ms < 3000, "%llu ms",
              (unsigned long long)T.elapsed_ms);
}

/* ---------------------------------------------------------------- pipelining */

static void answer_reverse(uv_timer_t *timer) {
    harness *t = &T;
    if (t->nheld == 0) {
        uv_timer_stop(timer);
        return;
    }
    httpd_req *req = t->held[--t->nheld];
    char body[64];
    int n = snprintf(body, sizeof(body), "%s", httpd_req_path(req));
    t->ret[t->answered++] = httpd_respond(req, 200, "text/plain", body, (size_t)n, NULL);
}

static void h_hold_three(httpd_req *req, void *opaque) {
    harness *t = opaque;
    t->nreq++;
    t->held[t->nheld++] = req;
    if (t->nheld == 3) {
        harness_timer(t);
        uv_timer_start(&t->timer, answer_reverse, 10, 10);
    }
}

static void c_pipeline(harness *t) {
    cl c;
    if (cl_open(&c, t->port) < 0) return;
    cl_send(&c, "GET /1 HTTP/1.1\r\nHost: t\r\n\r\n"
                "POST /2 HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc"
                "GET /3 HTTP/1.1\r\nHost: t\r\n\r\n");
    for (int i = 0; i < 3; i++)
        t->rc[i] = cl_response(&c, &t->res[i]);
    cl_close(&c);
}

Test(httpd, pipelined_requests_answered_in_reverse_are_written_in_request_order) {
    run(NULL, h_hold_three, c_pipeline);
    cr_assert_eq(T.nreq, 3);
    cr_assert_eq(T.answered, 3);
    for (int i = 0; i < 3; i++) {
        char want[8];
        snprintf(want, sizeof(want), "/%d", i + 1);
        cr_assert_eq(T.ret[i], 0);
        cr_assert_eq(T.rc[i], 0, "response %d missing", i);
        cr_assert_str_eq(T.res[i].body, want);
    }
}

static void answer_oldest(uv_timer_t *timer) {
    harness *t = &T;
    if (t->nheld == 0) return;
    httpd_req *req = t->held[0];
    memmove(t->held, t->held + 1, (size_t)(t->nheld - 1) * sizeof(t->held[0]));
    t->nheld--;
    const char *p = httpd_req_path(req);
    httpd_respond(req, 200, "text/plain", p, strlen(p), NULL);
}

static void h_hold_bounded(httpd_req *req, void *opaque) {
    harness *t = opaque;
    t->nreq++;
    if (t->nheld == 16) {
        httpd_respond(req, 500, NULL, NULL, 0, NULL);
        return;
    }
    t->held[t->nheld++] = req;
    if (t->nheld > t->max_held) t->max_held = t->nheld;
    if (!t->timer_used) {
        harness_timer(t);
        uv_timer_start(&t->timer, answer_oldest, 5, 5);
    }
}

static void c_pipeline_many(harness *t) {
    cl c;
    if (cl_open(&c, t->port) < 0) return;
    char all[4096];
    size_t n = 0;
    for (int i = 0; i < 10; i++)
        n += (size_t)snprintf(all + n, sizeof(all) - n, "GET /%d HTTP/1.1\r\nHost: t\r\n\r\n", i);
    cl_send_n(&c, all, n);
    for (int i = 0; i < 10; i++)
        t->rc[i] = cl_response(&c, &t->res[i]);
    cl_close(&c);
}

Test(httpd, pipelining_is_bounded_by_max_pipelined_and_resumes_in_order) {
    httpd_limits l = small_limits();
    l.max_pipelined = 2;
    run(&l, h_hold_bounded, c_pipeline_many);
    cr_assert_eq(T.nreq, 10);
    cr_assert_leq(T.max_held, 2, "%d requests queued at once", T.max_held);
    for (int i = 0; i < 10; i++) {
        char want[8];
        snprintf(want, sizeof(want), "/%d", i);
        cr_assert_eq(T.rc[i], 0, "response %d missing", i);
        cr_assert_str_eq(T.res[i].body, want);
    }
}

/* ------------------------------------------------------------------ limits */

static void c_413_length(harness *t) {
    cl c;
    if (cl_open(&c, t->port) < 0) return;
    /* No body follows: the answer must come from the head alone. */
    cl_send(&c, "POST /big HTTP/1.1\r\nHost: t\r\nContent-Length: 10000000\r\n\r\n");
    t->rc[0] = cl_response(&c, &t->res[0]);
    t->flag[0] = cl_eof(&c);
    cl_close(&c);
}

Test(httpd, oversized_content_length_gets_413_before_the_body_is_read) {
    httpd_limits l = small_limits();
    l.max_body = 1024;
    run(&l, h_echo, c_413_length);
    cr_assert_eq(T.nreq, 0);
    cr_assert_eq(T.rc[0], 0);
    cr_assert_eq(T.res[0].status, 413);
    cr_assert_not_null(strstr(T.res[0].head, "\r\nConnection: close\r\n"));
    cr_assert_not_null(strstr(T.res[0].head, "\r\nContent-Type: application/json\r\n"));
    cr_assert_str_eq(T.res[0].body, "{\"error\":\"request body larger than 1024 bytes\"}");
    cr_assert(T.flag[0], "connection not closed after 413");
    cr_assert_eq(T.stats.rejected_limits, 1);
    cr_assert_eq(T.stats.responses_by_class[4], 1);
}

static void c_413_chunked(harness *t) {
    cl c;
    if (cl_open(&c, t->port) < 0) return;
    cl_send(&c, "POST /big HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                "10\r\n0123456789abcdef\r\n10\r\n0123456789abcdef\r\n");
    t->rc[0] = cl_response(&c, &t->res[0]);
    t->flag[0] = cl_eof(&c);
    cl_close(&c);
}

Test(httpd, chunked_body_over_max_body_gets_413) {
    httpd_limits l = small_limits();
    l.max_body = 20;
    run(&l, h_echo, c_413_chunked);
    cr_assert_eq(T.nreq, 0);
    cr_assert_eq(T.rc[0], 0);
    cr_assert_eq(T.res[0].status, 413);
    cr_assert(T.flag[0]);
}

static void c_411(harness *t) {
    cl c;
    if (cl_open(&c, t->port) < 0) return;
    cl_send(&c, "POST /x HTTP/1.1\r\nHost: t\r\n\r\n");
    t->rc[0] = cl_response(&c, &t->res[0]);
    t->flag[0] = cl_eof(&c);
    cl_close(&c);
}

Test(httpd, post_without_length_or_chunked_gets_411) {
    run(NULL, h_echo, c_411);
    cr_assert_eq(T.nreq, 0);
    cr_assert_eq(T.rc[0], 0);
    cr_assert_eq(T.res[0].status, 411);
    cr_assert(T.flag[0]);
}

static void c_431(harness *t) {
    cl c;
    char req[4096];
    if (cl_open(&c, t->port) < 0) return;
    size_t n = (size_t)snprintf(req, sizeof(req), "GET / HTTP/1.1\r\n");
    for (int i = 0; i < 11; i++)
        n += (size_t)snprintf(req + n, sizeof(req) - n, "X-H%d: v\r\n", i);
    snprintf(req + n, sizeof(req) - n, "\r\n");
    cl_send(&c, req);
    t->rc[0] = cl_response(&c, &t->res[0]);
    t->flag[0] = cl_eof(&c);
    cl_close(&c);

    if (cl_open(&c, t->port) < 0) return;
    char big[600];
    memset(big, 'a', sizeof(big) - 1);
    big[sizeof(big) - 1] = 0;
    snprintf(req, sizeof(req), "GET / HTTP/1.1\r\nX-Big: %s\r\n\r\n", big);
    cl_send(&c, req);
    t->rc[1] = cl_response(&c, &t->res[1]);
    t->flag[1] = cl_eof(&c);
    cl_close(&c);

    /* Exactly at the limit is fine. */
    if (cl_open(&c, t->port) < 0) return;
    n = (size_t)snprintf(req, sizeof(req), "GET / HTTP/1.1\r\n");
    for (int i = 0; i < 10; i++)
        n += (size_t)snprintf(req + n, sizeof(req) - n, "X-H%d: v\r\n", i);
    snprintf(req + n, sizeof(req) - n, "\r\n");
    cl_send(&c, req);
    t->rc[2] = cl_response(&c, &t->res[2]);
    cl_close(&c);
}

Test(httpd, too_many_or_too_large_headers_get_431) {
    httpd_limits l = small_limits();
    l.max_headers = 10;
    l.max_header_bytes = 512;
    run(&l, h_path, c_431);
    cr_assert_eq(T.rc[0], 0);
    cr_assert_eq(T.res[0].status, 431);
    cr_assert_str_eq(T.res[0].body, "{\"error\":\"more than 10 header lines\"}");
    cr_assert(T.flag[0]);
    cr_assert_eq(T.rc[1], 0);
    cr_assert_eq(T.res[1].status, 431);
    cr_assert(T.flag[1]);
    cr_assert_eq(T.rc[2], 0);
    cr_assert_eq(T.res[2].status, 200);
    cr_assert_eq(T.nreq, 1);
    cr_assert_eq(T.stats.rejected_limits, 2);
}

static void c_400(harness *t) {
    static const char *bad[] = {
        "\x01\x02 garbage\r\n\r\n",
        "GET / HTTP/1.1\r\nHost t\r\n\r\n",
        "GET / HTTP/9.9.9\r\n\r\n",
        "POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
        "POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\nhello",
        "GET /%00 HTTP/1.1\r\n\r\n",
    };
    for (int i = 0; i < 6; i++) {
        cl c;
        if (cl_open(&c, t->port) < 0) return;
        cl_send(&c, bad[i]);
        t->rc[i] = cl_response(&c, &t->res[i]);
        t->flag[i] = cl_eof(&c);
        cl_close(&c);
    }
}

Test(httpd, malformed_requests_get_400_and_a_close) {
    run(NULL, h_path, c_400);
    cr_assert_eq(T.nreq, 0);
    for (int i = 0; i < 6; i++) {
        cr_assert_eq(T.rc[i], 0, "case %d: no response", i);
        cr_assert_eq(T.res[i].status, 400, "case %d: %d", i, T.res[i].status);
        cr_assert_not_null(strstr(T.res[i].head, "\r\nConnection: close\r\n"));
        cr_assert(T.flag[i], "case %d: not closed", i);
    }
    cr_assert_eq(T.stats.bad_requests, 6);
}

static void c_408(harness *t) {
    cl c;
    /* A head that never ends. */
    if (cl_open(&c, t->port) < 0) return;
    uint64_t start = now_ms();
    cl_send(&c, "GET / HTTP/1.1\r\nHost: t\r\n");
    t->rc[0] = cl_response(&c, &t->res[0]);
    t->elapsed_ms = now_ms() - start;
    t->flag[0] = cl_eof(&c);
    cl_close(&c);
    /* A body that stalls, trickled a byte at a time: the deadline counts
     * from the end of the head, not from the last byte. */
    if (cl_open(&c, t->port) < 0) return;
    cl_send(&c, "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n");
    for (int i = 0; i < 8; i++) {
        sleep_ms(25);
        if (cl_send(&c, "x") < 0) break;
    }
    t->rc[1] = cl_response(&c, &t->res[1]);
    t->flag[1] = cl_eof(&c);
    cl_close(&c);
    /* A connection that sends nothing is closed, unanswered. */
    if (cl_open(&c, t->port) < 0) return;
    t->flag[2] = cl_eof(&c);
    t->flag[3] = (int)c.len;
    cl_close(&c);
}

Test(httpd, slow_senders_get_408_and_a_close) {
    httpd_limits l = small_limits();
    l.header_timeout_ms = 100;
    l.body_timeout_ms = 100;
    run(&l, h_echo, c_408);
    cr_assert_eq(T.nreq, 0);
    cr_assert_eq(T.rc[0], 0);
    cr_assert_eq(T.res[0].status, 408);
    cr_assert(T.elapsed_ms >= 80 && T.elapsed_ms < 3000, "%llu ms",
              (unsigned long long)T.elapsed_ms);
    cr_assert(T.flag[0]);
    cr_assert_eq(T.rc[1], 0);
    cr_assert_eq(T.res[1].status, 408);
    cr_assert(T.flag[1]);
    cr_assert(T.flag[2], "silent connection not closed");
    cr_assert_eq(T.flag[3], 0);
}

static void c_503(harness *t) {
    cl a, b;
    if (cl_open(&a, t->port) < 0) return;
    cl_send(&a, "GET /a HTTP/1.1\r\nHost: t\r\n\r\n");
    t->rc[0] = cl_response(&a, &t->res[0]);
    if (cl_open(&b, t->port) < 0) return;
    cl_send(&b, "GET /b HTTP/1.1\r\nHost: t\r\n\r\n");
    t->rc[1] = cl_response(&b, &t->res[1]);
    t->flag[1] = cl_eof(&b);
    cl_close(&b);
    /* The connection already served is unaffected. */
    cl_send(&a, "GET /a2 HTTP/1.1\r\nHost: t\r\n\r\n");
    t->rc[2] = cl_response(&a, &t->res[2]);
    cl_close(&a);
}

Test(httpd, connections_over_the_limit_get_503_with_retry_after) {
    httpd_limits l = small_limits();
    l.max_connections = 1;
    run(&l, h_path, c_503);
    cr_assert_eq(T.rc[0], 0);
    cr_assert_eq(T.res[0].status, 200);
    cr_assert_eq(T.rc[1], 0);
    cr_assert_eq(T.res[1].status, 503);
    cr_assert_not_null(strstr(T.res[1].head, "\r\nRetry-After: 1\r\n"), "%s", T.res[1].head);
    cr_assert_not_null(strstr(T.res[1].head, "\r\nConnection: close\r\n"));
    cr_assert(T.flag[1]);
    cr_assert_eq(T.rc[2], 0);
    cr_assert_str_eq(T.res[2].body, "/a2");
    cr_assert_eq(T.nreq, 2);
    cr_assert_eq(T.stats.rejected_limits, 1);
    cr_assert_eq(T.stats.connections_total, 2);
}

/* --------------------------------------------------------- Expect: continue */

static void c_continue(harness *t) {
    cl c;
    if (cl_open(&c, t->port) < 0) return;
    cl_send(&c, "POST /e HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n");
    t->rc[0] = cl_response(&c, &t->res[0]);
    cl_send(&c, "hello");
    t->rc[1] = cl_response(&c, &t->res[1]);
    /* Too large: refused instead of invited. */
    cl_send(&c,
            "POST /e HTTP/1.1\r\nHost: t\r\nContent-Length: 5000\r\nExpect: 100-continue\r\n\r\n");
    t->rc[2] = cl_response(&c, &t->res[2]);
    cl_close(&c);
}

Test(httpd, expect_100_continue_is_answered_before_the_body) {
    httpd_limits l = small_limits();
    l.max_body = 100;
    run(&l, h_echo, c_continue);
    cr_assert_eq(T.rc[0], 0);
    cr_assert_eq(T.res[0].status, 100);
    cr_assert_eq(strncmp(T.res[0].head, "HTTP/1.1 100 Continue\r\n\r\n", 25), 0);
    cr_assert_eq(T.rc[1], 0);
    cr_assert_eq(T.res[1].status, 200);
    cr_assert_str_eq(T.res[1].body, "hello");
    cr_assert_eq(T.rc[2], 0);
    cr_assert_eq(T.res[2].status, 413);
    cr_assert_eq(T.stats.responses_by_class[1], 1);
}

/* ------------------------------------------------------------ graceful close */

static void answer_held(uv_timer_t *timer) {
    harness *t = &T;
    for (int i = 0; i < t->nheld; i++)
        t->ret[i] = httpd_respond(t->held[i], 200, "text/plain", "late", 4, NULL);
    t->nheld = 0;
}

static void h_close_in_flight(httpd_req *req, void *opaque) {
    harness *t = opaque;
    t->nreq++;
    if (strcmp(httpd_req_path(req), "/slow") != 0) {
        httpd_respond(req, 200, "text/plain", "fast", 4, NULL);
        return;
    }
    t->held[t->nheld++] = req;
    /* Shut down while this request is in flight. */
    t->stats = *httpd_get_stats(t->h);
    t->server_closed = 1;
    httpd_close(t->h, on_server_closed, t);
    harness_timer(t);
    uv_timer_start(&t->timer, answer_held, 50, 0);
}

static void c_close_in_flight(harness *t) {
    cl idle, busy;
    if (cl_open(&idle, t->port) < 0) return;
    cl_send(&idle, "GET /fast HTTP/1.1\r\nHost: t\r\n\r\n");
    t->rc[0] = cl_response(&idle, &t->res[0]);
    if (cl_open(&busy, t->port) < 0) return;
    cl_send(&busy, "GET /slow HTTP/1.1\r\nHost: t\r\n\r\n");
    uint64_t start = now_ms();
    t->flag[0] = cl_eof(&idle); /* idle keep-alive: closed at once */
    t->elapsed_ms = now_ms() - start;
    cl_close(&idle);
    t->rc[1] = cl_response(&busy, &t->res[1]);
    t->flag[1] = cl_eof(&busy);
    cl_close(&busy);
    /* No longer accepting. */
    cl c;
    t->flag[2] = cl_open(&c, t->port);
    if (t->flag[2] == 0) cl_close(&c);
}

Test(httpd, graceful_close_answers_the_request_in_flight_then_closes) {
    run(NULL, h_close_in_flight, c_close_in_flight);
    cr_assert_eq(T.rc[0], 0);
    cr_assert(T.flag[0], "idle connection not closed");
    cr_assert_lt(T.elapsed_ms, 1000);
    cr_assert_eq(T.ret[0], 0);
    cr_assert_eq(T.rc[1], 0, "in-flight request not answered");
    cr_assert_eq(T.res[1].status, 200);
    cr_assert_str_eq(T.res[1].body, "late");
    cr_assert_not_null(strstr(T.res[1].head, "\r\nConnection: close\r\n"));
    cr_assert(T.flag[1], "busy connection not closed after its answer");
    cr_assert_eq(T.flag[2], -ECONNREFUSED, "still accepting: %d", T.flag[2]);
}

static void h_hold(httpd_req *req, void *opaque) {
    harness *t = opaque;
    t->nreq++;
    t->held[t->nheld++] = req;
}

/* Leaves both connections open: the server drops them. */
static void c_send_and_leave(harness *t) {
    static cl a, b;
    if (cl_open(&a, t->port) < 0) return;
    cl_send(&a, "GET /held HTTP/1.1\r\nHost: t\r\n\r\n");
    if (cl_open(&b, t->port) < 0) return;
    cl_send(&b, "GET /partial HTTP/1.1\r\n");
    sleep_ms(50);
    t->flag[4] = a.fd;
    t->flag[5] = b.fd;
}

Test(httpd, close_now_drops_connections_and_a_late_answer_just_frees_the_request) {
    T.close_now = 1;
    run(NULL, h_hold, c_send_and_leave);
    cr_assert_eq(T.nreq, 1);
    cr_assert_eq(T.nheld, 1);
    /* The server is gone; the request is still the handler's. */
    cr_assert_str_eq(httpd_req_path(T.held[0]), "/held");
    cr_assert_eq(httpd_respond(T.held[0], 200, NULL, NULL, 0, NULL), 0);
    close(T.flag[4]);
    close(T.flag[5]);
}

static void answer_after_disconnect(uv_timer_t *timer) {
    harness *t = &T;
    if (t->nheld) t->ret[0] = httpd_respond(t->held[0], 200, "text/plain", "gone", 4, NULL);
    t->nheld = 0;
    t->answered = 1;
}

static void h_hold_then_answer(httpd_req *req, void *opaque) {
    harness *t = opaque;
    t->nreq++;
    t->held[t->nheld++] = req;
    harness_timer(t);
    uv_timer_start(&t->timer, answer_after_disconnect, 100, 0);
}

static void c_disconnect(harness *t) {
    cl c;
    if (cl_open(&c, t->port) < 0) return;
    cl_send(&c, "GET /x HTTP/1.1\r\nHost: t\r\n\r\n");
    sleep_ms(20);
    cl_close(&c);
    sleep_ms(200);
}

Test(httpd, answering_after_the_client_disconnected_is_safe) {
    run(NULL, h_hold_then_answer, c_disconnect);
    cr_assert_eq(T.nreq, 1);
    cr_assert_eq(T.answered, 1);
    cr_assert_eq(T.ret[0], 0);
}

/* -------------------------------------------------------- respond contract */

static void h_contract(httpd_req *req, void *opaque) {
    harness *t = opaque;
    t->nreq++;
    static const char *const smuggle[] = {"X-A: 1\r\nX-B: 2", NULL};
    static const char *const no_colon[] = {"X-A 1", NULL};
    t->ret[0] = httpd_respond(req, 200, NULL, "x", 1, smuggle);
    t->ret[1] = httpd_respond(req, 200, NULL, "x", 1, no_colon);
    t->ret[2] = httpd_respond(req, 99, NULL, NULL, 0, NULL);
    t->ret[3] = httpd_respond(req, 200, "text/plain\r\nX: y", NULL, 0, NULL);
    t->ret[4] = httpd_respond_json_error(req, 422, "field \"%s\": bad\n\t\x01", "customerId");
    t->ret[5] = httpd_respond(req, 200, NULL, NULL, 0, NULL); /* already answered */
}

static void c_one(harness *t) {
    cl c;
    if (cl_open(&c, t->port) < 0) return;
    cl_send(&c, "GET / HTTP/1.1\r\nHost: t\r\n\r\n");
    t->rc[0] = cl_response(&c, &t->res[0]);
    cl_close(&c);
}

Test(httpd, respond_refuses_bad_input_and_a_second_answer_and_escapes_json) {
    run(NULL, h_contract, c_one);
    cr_assert_lt(T.ret[0], 0);
    cr_assert_lt(T.ret[1], 0);
    cr_assert_lt(T.ret[2], 0);
    cr_assert_lt(T.ret[3], 0);
    cr_assert_eq(T.ret[4], 0);
    cr_assert_lt(T.ret[5], 0);
    cr_assert_eq(T.rc[0], 0);
    cr_assert_eq(T.res[0].status, 422);
    cr_assert_not_null(strstr(T.res[0].head, "\r\nContent-Type: application/json\r\n"));
    cr_assert_str_eq(T.res[0].body, "{\"error\":\"field \\\"customerId\\\": bad\\n\\t\\u0001\"}");
}

Test(httpd, start_reports_bad_addresses_and_ports_in_use) {
    uv_loop_t loop;
    uv_loop_init(&loop);
    httpd *a = NULL, *b = NULL;
    char err[256];
    cr_assert_eq(httpd_start(&a, &loop, "127.0.0.1:0", NULL, h_path, NULL, err, sizeof(err)), 0,
                 "%s", err);
    char addr[64], want[128];
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", httpd_port(a));
    cr_assert_lt(httpd_start(&b, &loop, addr, NULL, h_path, NULL, err, sizeof(err)), 0);
    snprintf(want, sizeof(want), "listen %s: address already in use", addr);
    cr_assert_str_eq(err, want);
    cr_assert_eq(httpd_start(&b, &loop, "localhost:80", NULL, h_path, NULL, err, sizeof(err)), -22);
    cr_assert_eq(httpd_start(&b, &loop, "127.0.0.1:70000", NULL, h_path, NULL, err, sizeof(err)),
                 -22);
    cr_assert_eq(httpd_start(&b, &loop, "[::1:80", NULL, h_path, NULL, err, sizeof(err)), -22);
    cr_assert_eq(strncmp(err, "listen [::1:80: ", 16), 0, "%s", err);
    if (httpd_start(&b, &loop, "[::1]:0", NULL, h_path, NULL, err, sizeof(err)) == 0) {
        cr_assert_gt(httpd_port(b), 0);
        httpd_close(b, NULL, NULL);
    }
    httpd_close(a, on_server_closed, &T);
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_assert_eq(T.closed_calls, 1);
    cr_assert_eq(uv_loop_close(&loop), 0);
}

/* -------------------------------------------------------------- upgrades */

static void s_on_data(httpd_stream *s, const char *data, size_t len, void *opaque) {
    httpd_stream_write(s, data, len);
    if (len >= 3 && memcmp(data + len - 3, "bye", 3) == 0) httpd_stream_close(s);
}

static void s_on_closed(httpd_stream *s, void *opaque) {
    harness *t = opaque;
    t->stream_closed++;
}

static void answer_first(uv_timer_t *timer) {
    harness *t = &T;
    t->ret[1] = httpd_respond(t->held[0], 200, "text/plain", "first", 5, NULL);
}

static void h_upgrade(httpd_req *req, void *opaque) {
    harness *t = opaque;
    t->nreq++;
    if (strcmp(httpd_req_path(req), "/first") == 0) {
        /* Answered late: the 101 behind it must wait its turn. */
        t->held[0] = req;
        harness_timer(t);
        uv_timer_start(&t->timer, answer_first, 30, 0);
        return;
    }
    if (!httpd_req_is_upgrade(req) || strcmp(httpd_req_path(req), "/echo") != 0) {
        httpd_respond(req, 426, "text/plain", "no", 2, NULL);
        return;
    }
    snprintf(t->seen[0], 256, "%s", httpd_req_header(req, "upgrade"));
    static const char *const hdrs[] = {"Upgrade: echo", "Connection: Upgrade", NULL};
    static const httpd_stream_cbs cbs = {s_on_data, s_on_closed};
    t->ret[0] = httpd_upgrade(req, hdrs, &cbs, t, &t->stream);
}

static void c_upgrade(harness *t) {
    cl c;
    char got[64];
    if (cl_open(&c, t->port) < 0) return;
    /* Bytes of the new protocol ride in the same segment as the head. */
    cl_send(&c, "GET /echo HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n"
                "early");
    t->rc[0] = cl_response(&c, &t->res[0]);
    t->rc[1] = cl_read_exact(&c, got, 5);
    snprintf(t->note, sizeof(t->note), "%s", got);
    cl_send(&c, "ping");
    t->rc[2] = cl_read_exact(&c, got, 4);
    t->flag[0] = strcmp(got, "ping") == 0;
    cl_send(&c, "bye");
    t->rc[3] = cl_read_exact(&c, got, 3);
    t->flag[1] = cl_eof(&c);
    cl_close(&c);
    /* An upgrade the handler declines is answered and closed. */
    if (cl_open(&c, t->port) < 0) return;
    cl_send(&c, "GET /other HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: x\r\n\r\n");
    t->rc[4] = cl_response(&c, &t->res[4]);
    t->flag[2] = cl_eof(&c);
    cl_close(&c);
}

Test(httpd, upgrade_turns_the_connection_into_an_ordered_byte_stream) {
    run(NULL, h_upgrade, c_upgrade);
    cr_assert_eq(T.ret[0], 0);
    cr_assert_str_eq(T.seen[0], "echo");
    cr_assert_eq(T.rc[0], 0);
    cr_assert_eq(T.res[0].status, 101);
    cr_assert_not_null(strstr(T.res[0].head, "\r\nUpgrade: echo\r\n"));
    cr_assert_null(strstr(T.res[0].head, "Content-Length"));
    cr_assert_eq(T.rc[1], 0);
    cr_assert_str_eq(T.note, "early");
    cr_assert_eq(T.rc[2], 0);
    cr_assert(T.flag[0]);
    cr_assert_eq(T.rc[3], 0);
    cr_assert(T.flag[1], "stream not closed");
    cr_assert_eq(T.stream_closed, 1);
    cr_assert_eq(T.rc[4], 0);
    cr_assert_eq(T.res[4].status, 426);
    cr_assert(T.flag[2]);
}

/* -------------------------------------------------------------------- fuzz */

static const char *const templates[] = {
    "GET /a?b=c HTTP/1.1\r\nHost: x\r\n\r\n",
    "POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
    "POST /p HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    "GET / HTTP/1.1\r\nHost: x\r\n\r\nGET /2 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    "PUT /x%41 HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nok",
};

/* Reads everything until the server closes; -1 on a timeout. */
static int cl_drain(cl *c) {
    for (;;) {
        if (c->len == sizeof(c->buf)) return 0;
        ssize_t n = recv(c->fd, c->buf + c->len, sizeof(c->buf) - c->len, 0);
        if (n == 0 || (n < 0 && errno == ECONNRESET)) return 0;
        if (n < 0) return -1;
        c->len += (size_t)n;
    }
}

static void c_fuzz(harness *t) {
    rng_state = 0x5eed5eed12345678ULL;
    static cl c;
    int failures = 0;
    for (int iter = 0; iter < 3000; iter++) {
        char buf[1024];
        size_t n;
        int garbage = iter % 2 == 0;
        if (garbage) {
            n = 1 + rng() % 512;
            for (size_t i = 0; i < n; i++)
                buf[i] = (char)rng();
            /* Start with something the parser cannot take for a method. */
            if (buf[0] >= 'A' && buf[0] <= 'Z') buf[0] = '~';
        } else {
            const char *tpl = templates[rng() % 5];
            n = strlen(tpl);
            memcpy(buf, tpl, n);
            int muts = 1 + (int)(rng() % 4);
            for (int m = 0; m < muts && n > 1; m++) {
                size_t at = rng() % n;
                switch (rng() % 4) {
                case 0:
                    buf[at] = (char)rng();
                    break;
                case 1:
                    if (n < sizeof(buf) - 1) {
                        memmove(buf + at + 1, buf + at, n - at);
                        buf[at] = (char)rng();
                        n++;
                    }
                    break;
                case 2:
                    memmove(buf + at, buf + at + 1, n - at - 1);
                    n--;
                    break;
                default:
                    n = at + 1;
                    break;
                }
            }
        }
        if (cl_open(&c, t->port) < 0) {
            failures++;
            continue;
        }
        /* In up to three pieces, so the parser also resumes mid-token. */
        size_t sent = 0;
        for (int piece = 0; piece < 2 && sent < n; piece++) {
            size_t k = rng() % (n - sent + 1);
            cl_send_n(&c, buf + sent, k);
            sent += k;
        }
        cl_send_n(&c, buf + sent, n - sent);
        shutdown(c.fd, SHUT_WR);
        int r = cl_drain(&c);
        int ok = r == 0;
        if (ok && c.len) {
            if (garbage)
                ok = c.len >= 13 && memcmp(c.buf, "HTTP/1.1 400 ", 13) == 0;
            else
                ok = c.len >= 13 && memcmp(c.buf, "HTTP/1.1 ", 9) == 0;
        }
        if (!ok && failures++ == 0)
            snprintf(t->note, sizeof(t->note), "iteration %d (%s): %.*s", iter,
                     garbage ? "garbage" : "mutated", (int)(c.len < 200 ? c.len : 200), c.buf);
        cl_close(&c);
    }
    t->flag[0] = failures;
    /* Still serving. */
    if (cl_open(&c, t->port) < 0) return;
    cl_send(&c, "GET /alive HTTP/1.1\r\nHost: t\r\n\r\n");
    t->rc[0] = cl_response(&c, &t->res[0]);
    cl_close(&c);
}

Test(httpd, random_bytes_never_crash_and_get_400_or_a_close) {
    run(NULL, h_echo, c_fuzz);
    cr_assert_eq(T.flag[0], 0, "%d failures, first: %s", T.flag[0], T.note);
    cr_assert_eq(T.rc[0], 0);
    cr_assert_eq(T.res[0].status, 200);
    cr_assert_geq(T.stats.connections_total, 3001);
}

/* ------------------------------------------------------ more edge cases */

static void h_target(httpd_req *req, void *opaque) {
    harness *t = opaque;
    t->nreq++;
    snprintf(t->note, sizeof(t->note), "%s", httpd_req_path(req));
    snprintf(t->seen[0], 256, "%.255s", httpd_req_target(req));
    snprintf(t->seen[1], 256, "%s", httpd_req_query_param(req, "q"));
    static const char *const cl_hdr[] = {"Content-Length: 0", NULL};
    static const char *const conn_hdr[] = {"connection: close", NULL};
    static const char *const te_hdr[] = {"Transfer-Encoding: chunked", NULL};
    t->ret[0] = httpd_respond(req, 200, NULL, NULL, 0, cl_hdr);
    t->ret[1] = httpd_respond(req, 200, NULL, NULL, 0, conn_hdr);
    t->ret[2] = httpd_respond(req, 200, NULL, NULL, 0, te_hdr);
    t->ret[3] = httpd_respond(req, 204, NULL, NULL, 0, NULL);
}

static void c_long_target(harness *t) {
    cl c;
    char req[2048], seg[401];
    memset(seg, 'p', 400);
    seg[400] = 0;
    snprintf(req, sizeof(req), "GET /%s%%21?q=%s HTTP/1.1\r\nHost: t\r\n\r\n", seg, seg);
    if (cl_open(&c, t->port) < 0) return;
    cl_send(&c, req);
    t->rc[0] = cl_response(&c, &t->res[0]);
    cl_close(&c);
}

Test(httpd, long_targets_are_split_and_framing_headers_are_refused) {
    run(NULL, h_target, c_long_target);
    cr_assert_eq(T.nreq, 1);
    char want[512];
    memset(want, 'p', 401);
    want[0] = '/';
    memset(want + 1, 'p', 400);
    strcpy(want + 401, "!");
    cr_assert_str_eq(T.note, want);
    cr_assert_eq(strncmp(T.seen[0], "/ppp", 4), 0);
    cr_assert_eq(strlen(T.seen[1]), 255); /* truncated copy of the 400-byte value */
    cr_assert_lt(T.ret[0], 0);
    cr_assert_lt(T.ret[1], 0);
    cr_assert_lt(T.ret[2], 0);
    cr_assert_eq(T.ret[3], 0);
    cr_assert_eq(T.rc[0], 0);
    cr_assert_eq(T.res[0].status, 204);
    cr_assert_null(strstr(T.res[0].head, "Content-Length"));
}

#define BIG_BODY (32 * 1024 * 1024)

static void close_later(uv_timer_t *timer) {
    harness *t = &T;
    t->stats = *httpd_get_stats(t->h);
    t->server_closed = 1;
    httpd_close(t->h, on_server_closed, t);
}

static void h_big(httpd_req *req, void *opaque) {
    harness *t = opaque;
    t->nreq++;
    char *body = malloc(BIG_BODY);
    memset(body, 'b', BIG_BODY);
    t->ret[0] = httpd_respond(req, 200, "application/octet-stream", body, BIG_BODY, NULL);
    free(body);
    /* Close while the response is still in the uv_write: the client is
     * not reading yet. */
    harness_timer(t);
    uv_timer_start(&t->timer, close_later, 30, 0);
}

static void c_big(harness *t) {
    cl c;
    if (cl_open(&c, t->port) < 0) return;
    cl_send(&c, "GET /big HTTP/1.1\r\nHost: t\r\n\r\n");
    sleep_ms(100);
    char *end;
    while (!(end = memmem(c.buf, c.len, "\r\n\r\n", 4)))
        if (cl_fill(&c) < 0) return;
    size_t hlen = (size_t)(end - c.buf) + 4;
    const char *h = strcasestr(c.buf, "\r\ncontent-length:");
    size_t want = h ? strtoul(h + 17, NULL, 10) : 0;
    size_t got = c.len - hlen;
    while (got < want) {
        ssize_t n = recv(c.fd, c.buf, sizeof(c.buf), 0);
        if (n <= 0) break;
        got += (size_t)n;
    }
    c.len = 0;
    t->elapsed_ms = got;
    t->flag[0] = cl_eof(&c);
    cl_close(&c);
}

Test(httpd, graceful_close_waits_for_a_response_still_being_written) {
    run(NULL, h_big, c_big);
    cr_assert_eq(T.ret[0], 0);
    cr_assert_eq(T.elapsed_ms, BIG_BODY, "got %llu bytes", (unsigned long long)T.elapsed_ms);
    cr_assert(T.flag[0]);
}

static void c_pipelined_upgrade(harness *t) {
    cl c;
    char got[64];
    if (cl_open(&c, t->port) < 0) return;
    cl_send(&c, "GET /first HTTP/1.1\r\nHost: t\r\n\r\n"
                "GET /echo HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n"
                "early");
    t->rc[0] = cl_response(&c, &t->res[0]);
    t->rc[1] = cl_response(&c, &t->res[1]);
    t->rc[2] = cl_read_exact(&c, got, 5);
    snprintf(t->note, sizeof(t->note), "%s", got);
    cl_send(&c, "bye");
    t->rc[3] = cl_read_exact(&c, got, 3);
    t->flag[0] = cl_eof(&c);
    cl_close(&c);
}

Test(httpd, upgrade_behind_a_pipelined_request_waits_for_its_answer) {
    run(NULL, h_upgrade, c_pipelined_upgrade);
    cr_assert_eq(T.ret[1], 0);
    cr_assert_eq(T.ret[0], 0);
    cr_assert_eq(T.rc[0], 0);
    cr_assert_eq(T.res[0].status, 200);
    cr_assert_str_eq(T.res[0].body, "first");
    cr_assert_eq(T.rc[1], 0);
    cr_assert_eq(T.res[1].status, 101);
    cr_assert_eq(T.rc[2], 0);
    cr_assert_str_eq(T.note, "early");
    cr_assert_eq(T.rc[3], 0);
    cr_assert(T.flag[0]);
    cr_assert_eq(T.stream_closed, 1);
}

static void answer_random(uv_timer_t *timer) {
    harness *t = &T;
    if (t->nheld == 0) return;
    int i = (int)(rng() % (uint64_t)t->nheld);
    httpd_req *req = t->held[i];
    t->held[i] = t->held[--t->nheld];
    const char *p = httpd_req_path(req);
    if (httpd_respond(req, 200, "text/plain", p, strlen(p), NULL) < 0) t->ret[0]++;
}

static void h_hold_random(httpd_req *req, void *opaque) {
    harness *t = opaque;
    t->nreq++;
    t->held[t->nheld++] = req;
    if (t->nheld > t->max_held) t->max_held = t->nheld;
    if (!t->timer_used) {
        harness_timer(t);
        uv_timer_start(&t->timer, answer_random, 1, 1);
    }
}

static void c_many_split(harness *t) {
    static cl c;
    static char all[65536];
    size_t n = 0;
    for (int i = 0; i < 300; i++) {
        if (i % 3 == 1)
            n += (size_t)snprintf(all + n, sizeof(all) - n,
                                  "POST /%d HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n\r\nbody",
                                  i);
        else if (i % 3 == 2)
            n += (size_t)snprintf(all + n, sizeof(all) - n,
                                  "POST /%d HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
                                  "2\r\nab\r\n0\r\n\r\n",
                                  i);
        else
            n += (size_t)snprintf(all + n, sizeof(all) - n, "GET /%d HTTP/1.1\r\nHost: t\r\n\r\n",
                                  i);
    }
    if (cl_open(&c, t->port) < 0) return;
    size_t sent = 0;
    while (sent < n) {
        size_t k = 1 + rng() % 700;
        if (k > n - sent) k = n - sent;
        cl_send_n(&c, all + sent, k);
        sent += k;
    }
    int bad = 0;
    for (int i = 0; i < 300; i++) {
        resp r;
        char want[16];
        snprintf(want, sizeof(want), "/%d", i);
        if (cl_response(&c, &r) < 0 || r.status != 200 || strcmp(r.body, want) != 0) {
            if (!bad++)
                snprintf(t->note, sizeof(t->note), "response %d: %d %s", i, r.status, r.body);
        }
    }
    t->flag[0] = bad;
    cl_close(&c);
}

Test(httpd, answers_in_random_order_leave_in_request_order_across_split_reads) {
    rng_state = 0xfeedface01234567ULL;
    httpd_limits l = small_limits();
    l.max_pipelined = 3;
    run(&l, h_hold_random, c_many_split);
    cr_assert_eq(T.flag[0], 0, "%d out of order, first: %s", T.flag[0], T.note);
    cr_assert_eq(T.nreq, 300);
    cr_assert_leq(T.max_held, 3);
    cr_assert_eq(T.ret[0], 0);
}

/* A stream closed while its peer reads nothing: what is queued cannot be
 * written, so the connection is dropped after HD_STREAM_CLOSE_MS (5 s)
 * instead of holding the queue forever. */
static void s_flood_data(httpd_stream *s, const char *data, size_t len, void *opaque) {
    (void)data;
    (void)len;
    harness *t = opaque;
    static char chunk[64 * 1024];
    for (int i = 0; i < 256; i++)
        httpd_stream_write(s, chunk, sizeof(chunk));
    t->ret[1] = httpd_stream_pending(s) > 0;
    httpd_stream_close(s);
}

static void h_flood(httpd_req *req, void *opaque) {
    harness *t = opaque;
    static const httpd_stream_cbs cbs = {s_flood_data, s_on_closed};
    t->ret[0] = httpd_upgrade(req, NULL, &cbs, t, &t->stream);
}

static void c_flood(harness *t) {
    cl c;
    if (cl_open(&c, t->port) < 0) return;
    int rcvbuf = 4096;
    setsockopt(c.fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
    cl_send(&c, "GET /flood HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: x\r\n\r\ngo");
    uint64_t start = now_ms();
    while (!__atomic_load_n(&t->stream_closed, __ATOMIC_SEQ_CST) && now_ms() - start < 15000)
        usleep(20 * 1000);
    t->elapsed_ms = now_ms() - start;
    cl_close(&c);
}

Test(httpd, a_closed_stream_whose_peer_does_not_read_is_dropped) {
    run(NULL, h_flood, c_flood);
    cr_assert_eq(T.ret[0], 0);
    cr_assert_eq(T.ret[1], 1, "16 MiB should not all fit in the socket buffers");
    cr_assert_eq(T.stream_closed, 1);
    cr_assert(T.elapsed_ms >= 4000 && T.elapsed_ms < 12000, "dropped after %llu ms",
              (unsigned long long)T.elapsed_ms);
}
