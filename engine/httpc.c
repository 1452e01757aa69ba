/*
 * HTTP client room; see httpc.h.  The wiring, in curl's terms: curl tells
 * us which sockets to watch (socket callback) and when it next wants a
 * timeout (timer callback); we tell curl what happened with
 * curl_multi_socket_action and then collect finished transfers with
 * curl_multi_info_read.  User callbacks run only from that collection step
 * (or from cancellation), never from inside a curl callback, so a user may
 * submit, free a pool or close the client from inside a callback.
 */
#include "httpc.h"
#include "log.h"
#include "sigv4.h"

#include <curl/curl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define HTTPC_SPARE_EASY 64

#define container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

_Static_assert(HTTPC_ERR_TIMEOUT == HTTPC_ERR_CURL_BASE - CURLE_OPERATION_TIMEDOUT,
               "HTTPC_ERR_TIMEOUT must stay curl's timeout code");

typedef struct httpc_req httpc_req;

/* An intrusive doubly linked list of requests: a pool's queue or its
 * in-flight set.  Cancelling pops from the head, completion unlinks from
 * the middle. */
typedef struct httpc_req_list {
    httpc_req *head, *tail;
} httpc_req_list;

/* One socket curl asked us to watch.  Its memory goes only in the poll
 * handle's close callback, so curl (or a queued libuv event) may still
 * name it between uv_close and that callback. */
typedef struct httpc_sock {
    uv_poll_t poll;
    curl_socket_t fd;
    httpc *c;
    int closing;
    struct httpc_sock *prev, *next; /* live sockets of c */
} httpc_sock;

struct httpc {
    uv_loop_t *loop;
    CURLM *multi; /* NULL once cleaned up (closing) */
    uv_timer_t timer;
    httpc_sock *socks;
    httpc_pool *pools;
    size_t handles_open; /* uv handles whose close callback has not run yet */
    int closing;
    void (*on_closed)(void *opaque);
    void *closed_opaque;
    /* Finished easy handles, reset and kept for the next requests: a fresh
     * curl_easy_init per request allocates and clears tens of KiB. */
    CURL *spare[HTTPC_SPARE_EASY];
    size_t nspare;
};

struct httpc_pool {
    httpc *c;
    size_t max_in_flight;
    size_t in_flight;
    size_t queued;
    httpc_req_list queue;
    httpc_req_list active;
    /* Callbacks may free the pool while a frame of ours still uses it:
     * `dead` marks it freed, `depth` counts those frames, and the memory
     * goes when the last one leaves. */
    int dead;
    int depth;
    struct httpc_pool *prev, *next; /* open pools of c */
    sigv4_key_cache *keys;          /* SigV4 signing key, derived once a day */
};

struct httpc_req {
    httpc_pool *pool;
    CURL *easy;
    struct curl_slist *headers;
    char *body; /* ours: curl's CURLOPT_POSTFIELDS does not copy */
    httpc_cb cb;
    void *opaque;
    httpc_req *prev, *next;
    uint64_t submitted_ns, started_ns;

    char *resp;
    size_t resp_len, resp_alloc, resp_max;
    int too_large;
    int out_of_memory;
    char *content_type;
    char *retry_after;
    char errbuf[CURL_ERROR_SIZE];
};

/* ------------------------------------------------------------------- lists */
static void httpc_list_push(httpc_req_list *l, httpc_req *rq) {
    rq->next = NULL;
    rq->prev = l->tail;
    if (l->tail)
        l->tail->next = rq;
    else
        l->head = rq;
    l->tail = rq;
}

static void httpc_list_unlink(httpc_req_list *l, httpc_req *rq) {
    if (rq->prev)
        rq->prev->next = rq->next;
    else
        l->head = rq->next;
    if (rq->next)
        rq->next->prev = rq->prev;
    else
        l->tail = rq->prev;
    rq->prev = rq->next = NULL;
}

/* --------------------------------------------------------------- lifecycle */
static void httpc_finish_close(httpc *c) {
    void (*cb)(void *) = c->on_closed;
    void *opaque = c->closed_opaque;
    free(c);
    /* Paired with the curl_global_init in httpc_new: the last client gone
     * releases curl's global state, so nothing is left at exit. */
    curl_global_cleanup();
    if (cb) cb(opaque);
}

/* Called from every close callback: the client's memory goes with the last
 * handle, never earlier (a queued libuv callback may still reach it). */
static void httpc_handle_closed(httpc *c) {
    c->handles_open--;
    if (c->closing && c->handles_open == 0) httpc_finish_close(c);
}

static void httpc_pool_hold(httpc_pool *p) {
    p->depth++;
}

/* Returns 1 when the pool is still usable, 0 when it was freed. */
static int httpc_pool_release(httpc_pool *p) {
    p->depth--;
    if (!p->dead) return 1;
    if (p->depth == 0) {
        sigv4_key_cache_free(p->keys);
        free(p);
    }
    return 0;
}

static CURL *httpc_easy_get(httpc *c) {
    return c->nspare ? c->spare[--c->nspare] : curl_easy_init();
}

/* A finished handle (out of the multi) back to the spares, its options
 * reset; curl_easy_reset keeps nothing of the request. */
static void httpc_easy_put(httpc *c, CURL *e) {
    if (c->closing || c->nspare == HTTPC_SPARE_EASY) {
        curl_easy_cleanup(e);
        return;
    }
    curl_easy_reset(e);
    c->spare[c->nspare++] = e;
}

static void httpc_req_free(httpc_req *rq) {
    if (rq->easy) curl_easy_cleanup(rq->easy);
    curl_slist_free_all(rq->headers);
    free(rq->body);
    free(rq->resp);
    free(rq->content_type);
    free(rq->retry_after);
    free(rq);
}

static double httpc_ms_between(uint64_t from_ns, uint64_t to_ns) {
    return from_ns && to_ns > from_ns ? (double)(to_ns - from_ns) / 1e6 : 0.0;
}

/* Hands the outcome to the user and frees the request.  The caller holds
 * the pool (the callback may free it). */
static void httpc_req_deliver(httpc_req *rq, int status, int error, const char *message,
                              double total_ms) {
    httpc_response resp = {
        .status = error ? 0 : status,
        .error = error,
        .error_message = error ? message : NULL,
        .body = rq->resp ? rq->resp : "",
        .body_len = rq->resp ? rq->resp_len : 0,
        .content_type = rq->content_type,
        .retry_after = rq->retry_after,
        .total_ms = total_ms,
        .queued_ms =
            httpc_ms_between(rq->submitted_ns, rq->started_ns ? rq->started_ns : uv_hrtime()),
    };
    /* The connection goes back to curl's cache before the user runs, so a
     * follow-up request submitted from the callback can reuse it. */
    if (rq->easy) {
        httpc_easy_put(rq->pool->c, rq->easy);
        rq->easy = NULL;
    }
    rq->cb(rq->opaque, &resp);
    httpc_req_free(rq);
}

/* Detaches an in-flight request from curl and from its pool. */
static void httpc_req_detach_active(httpc_req *rq) {
    httpc_pool *p = rq->pool;
    httpc_list_unlink(&p->active, rq);
    p->in_flight--;
    if (p->c->multi) {
        CURLMcode mc = curl_multi_remove_handle(p->c->multi, rq->easy);
        if (mc != CURLM_OK)
            LOG_WARN("httpc: curl_multi_remove_handle: %s", curl_multi_strerror(mc));
    }
}

/* ------------------------------------------------------------ dispatching */
static int httpc_req_start(httpc_req *rq, char *errbuf, size_t errlen) {
    httpc_pool *p = rq->pool;
    CURLMcode mc = curl_multi_add_handle(p->c->multi, rq->easy);
    if (mc != CURLM_OK) {
        snprintf(errbuf, errlen, "curl_multi_add_handle: %s", curl_multi_strerror(mc));
        return CD_ERR_IO;
    }
    rq->started_ns = uv_hrtime();
    httpc_list_push(&p->active, rq);
    p->in_flight++;
    return 0;
}

/* Moves queued requests to curl while the pool has room.  Runs on the loop
 * only (never inside httpc_submit), so a start failure may call back. */
static void httpc_pool_dispatch(httpc_pool *p) {
    httpc_pool_hold(p);
    while (!p->dead && !p->c->closing && p->in_flight < p->max_in_flight && p->queue.head) {
        httpc_req *rq = p->queue.head;
        httpc_list_unlink(&p->queue, rq);
        p->queued--;
        char err[256];
        if (httpc_req_start(rq, err, sizeof(err)) < 0) httpc_req_deliver(rq, 0, CD_ERR_IO, err, 0);
    }
    httpc_pool_release(p);
}

/* Collects finished transfers.  Stops as soon as a callback closed the
 * client: the multi handle is gone then. */
static void httpc_check_done(httpc *c) {
    CURLMsg *m;
    int left;
    while (!c->closing && (m = curl_multi_info_read(c->multi, &left))) {
        if (m->msg != CURLMSG_DONE) continue;
        /* m is invalid after curl_multi_remove_handle: copy what we need. */
        CURL *easy = m->easy_handle;
        CURLcode res = m->data.result;
        char *priv = NULL;
        if (curl_easy_getinfo(easy, CURLINFO_PRIVATE, &priv) != CURLE_OK || !priv) {
            LOG_ERROR("httpc: finished transfer without its request");
            curl_multi_remove_handle(c->multi, easy);
            continue;
        }
        httpc_req *rq = (httpc_req *)(void *)priv;
        httpc_pool *p = rq->pool;
        long status = 0;
        curl_off_t total_us = 0;
        if (res == CURLE_OK && curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &status) != CURLE_OK)
            status = 0;
        if (curl_easy_getinfo(easy, CURLINFO_TOTAL_TIME_T, &total_us) != CURLE_OK) total_us = 0;

        httpc_pool_hold(p);
        httpc_req_detach_active(rq);
        int error = 0;
        const char *message = NULL;
        if (rq->too_large) {
            error = HTTPC_ERR_TOO_LARGE;
            snprintf(rq->errbuf, sizeof(rq->errbuf), "response body over %zu bytes", rq->resp_max);
            message = rq->errbuf;
        } else if (rq->out_of_memory) {
            error = CD_ERR_NOMEM;
            message = "out of memory reading the response";
        } else if (res != CURLE_OK) {
            error = HTTPC_ERR_FROM_CURL(res);
            message = rq->errbuf[0] ? rq->errbuf : curl_easy_strerror(res);
        } else if (status <= 0) {
            error = CD_ERR_IO;
            message = "no HTTP status";
        }
        httpc_req_deliver(rq, (int)status, error, message, (double)total_us / 1000.0);
        if (httpc_pool_release(p)) httpc_pool_dispatch(p);
    }
}

/* ------------------------------------------------------ curl -> libuv glue */
static void httpc_sock_on_closed(uv_handle_t *h) {
    httpc_sock *s = container_of((uv_poll_t *)h, httpc_sock, poll);
    httpc *c = s->c;
    free(s);
    httpc_handle_closed(c);
}

static void httpc_sock_close(httpc_sock *s) {
    if (s->closing) return;
    s->closing = 1;
    httpc *c = s->c;
    if (s->prev)
        s->prev->next = s->next;
    else
        c->socks = s->next;
    if (s->next) s->next->prev = s->prev;
    s->prev = s->next = NULL;
    /* uv_close stops the watcher at once, so curl may open (and ask us to
     * watch) a new socket with the same fd number before this one's close
     * callback has run. */
    uv_close((uv_handle_t *)&s->poll, httpc_sock_on_closed);
}

static void httpc_sock_on_event(uv_poll_t *h, int status, int events) {
    httpc_sock *s = container_of(h, httpc_sock, poll);
    httpc *c = s->c;
    if (s->closing || c->closing) return;
    int flags = 0;
    if (status < 0) {
        flags = CURL_CSELECT_ERR;
    } else {
        if (events & UV_READABLE) flags |= CURL_CSELECT_IN;
        if (events & UV_WRITABLE) flags |= CURL_CSELECT_OUT;
    }
    int running;
    /* s may be closed (not freed) by curl's socket callback in here. */
    CURLMcode mc = curl_multi_socket_action(c->multi, s->fd, flags, &running);
    if (mc != CURLM_OK) LOG_WARN("httpc: curl_multi_socket_action: %s", curl_multi_strerror(mc));
    httpc_check_done(c);
}

static httpc_sock *httpc_sock_find(httpc *c, curl_socket_t fd) {
    for (httpc_sock *s = c->socks; s; s = s->next)
        if (s->fd == fd) return s;
    return NULL;
}

/* CURLMOPT_SOCKETFUNCTION.  Returning -1 makes curl fail the transfers on
 * this multi handle (they complete with an error) rather than hang. */
static int httpc_on_socket(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp) {
    httpc *c = userp;
    httpc_sock *s = socketp;
    if (what == CURL_POLL_REMOVE) {
        if (s) httpc_sock_close(s);
        return 0;
    }
    if (c->closing) return 0;
    if (s && s->closing) s = NULL; /* never revive a handle that is closing */
    if (!s) {
        /* curl's hash forgot this fd but our live one did not (should not
         * happen; be robust): adopt it rather than fail with UV_EEXIST. */
        s = httpc_sock_find(c, fd);
    }
    if (!s) {
        s = calloc(1, sizeof(*s));
        if (!s) {
            LOG_ERROR("httpc: out of memory watching a socket");
            return -1;
        }
        int r = uv_poll_init_socket(c->loop, &s->poll, fd);
        if (r < 0) {
            LOG_ERROR("httpc: uv_poll_init_socket(%d): %s", (int)fd, uv_strerror(r));
            free(s);
            return -1;
        }
        s->fd = fd;
        s->c = c;
        s->next = c->socks;
        if (c->socks) c->socks->prev = s;
        c->socks = s;
        c->handles_open++;
    }
    CURLMcode mc = curl_multi_assign(c->multi, fd, s);
    if (mc != CURLM_OK) {
        LOG_ERROR("httpc: curl_multi_assign: %s", curl_multi_strerror(mc));
        httpc_sock_close(s);
        return -1;
    }
    int events = 0;
    if (what & CURL_POLL_IN) events |= UV_READABLE;
    if (what & CURL_POLL_OUT) events |= UV_WRITABLE;
    /* libuv asserts on a poll started with no events. */
    int r = events ? uv_poll_start(&s->poll, events, httpc_sock_on_event) : uv_poll_stop(&s->poll);
    if (r < 0) {
        LOG_ERROR("httpc: uv_poll_start(%d): %s", (int)fd, uv_strerror(r));
        curl_multi_assign(c->multi, fd, NULL);
        httpc_sock_close(s);
        return -1;
    }
    return 0;
}

static void httpc_on_timer(uv_timer_t *t) {
    httpc *c = container_of(t, httpc, timer);
    if (c->closing) return;
    int running;
    CURLMcode mc = curl_multi_socket_action(c->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    if (mc != CURLM_OK) LOG_WARN("httpc: curl_multi_socket_action: %s", curl_multi_strerror(mc));
    httpc_check_done(c);
}

/* CURLMOPT_TIMERFUNCTION.  curl forbids calling socket_action from here, so
 * even "now" (0) goes through the loop. */
static int httpc_on_timer_change(CURLM *multi, long timeout_ms, void *userp) {
    httpc *c = userp;
    if (timeout_ms < 0 || c->closing) {
        uv_timer_stop(&c->timer);
        return 0;
    }
    int r = uv_timer_start(&c->timer, httpc_on_timer, (uint64_t)timeout_ms, 0);
    if (r < 0) {
        LOG_ERROR("httpc: uv_timer_start: %s", uv_strerror(r));
        return -1;
    }
    return 0;
}

/* ----------------------------------------------------- per-transfer input */
static size_t httpc_on_body(char *data, size_t size, size_t nmemb, void *userp) {
    httpc_req *rq = userp;
    size_t n = size * nmemb;
    if (n > rq->resp_max - rq->resp_len) {
        rq->too_large = 1;
        return 0; /* aborts the transfer: CURLE_WRITE_ERROR */
    }
    size_t need = rq->resp_len + n + 1; /* + NUL for callers that want a C string */
    if (need > rq->resp_alloc) {
        size_t alloc = rq->resp_alloc ? rq->resp_alloc : 4096;
        while (alloc < need)
            alloc *= 2;
        if (alloc > rq->resp_max + 1) alloc = rq->resp_max + 1;
        char *p = realloc(rq->resp, alloc);
        if (!p) {
            rq->out_of_memory = 1;
            return 0;
        }
        rq->resp = p;
        rq->resp_alloc = alloc;
    }
    memcpy(rq->resp + rq->resp_len, data, n);
    rq->resp_len += n;
    rq->resp[rq->resp_len] = '\0';
    return n;
}

static int httpc_header_is(const char *line, size_t len, const char *name, const char **value,
                           size_t *value_len) {
    size_t nl = strlen(name);
    if (len <= nl || line[nl] != ':' || strncasecmp(line, name, nl) != 0) return 0;
    const char *v = line + nl + 1, *end = line + len;
    while (v < end && (*v == ' ' || *v == '\t'))
        v++;
    while (end > v && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' ' || end[-1] == '\t'))
        end--;
    *value = v;
    *value_len = (size_t)(end - v);
    return 1;
}

/* Keeps the headers sinks need.  Called for the headers of every response
 * curl reads, interim ones (100 Continue) included, so a status line
 * forgets what an earlier response said. */
static size_t httpc_on_header(char *line, size_t size, size_t nitems, void *userp) {
    httpc_req *rq = userp;
    size_t n = size * nitems;
    const char *v;
    size_t vl;
    char **slot = NULL;
    if (n >= 5 && memcmp(line, "HTTP/", 5) == 0) {
        free(rq->content_type);
        free(rq->retry_after);
        rq->content_type = rq->retry_after = NULL;
        return n;
    }
    if (httpc_header_is(line, n, "content-type", &v, &vl))
        slot = &rq->content_type;
    else if (httpc_header_is(line, n, "retry-after", &v, &vl))
        slot = &rq->retry_after;
    if (slot) {
        char *copy = strndup(v, vl);
        if (!copy) {
            rq->out_of_memory = 1;
            return 0;
        }
        free(*slot);
        *slot = copy;
    }
    return n;
}

/* ------------------------------------------------------------- validation */
/* RFC 9110 tchar: what methods and header names are made of. */
static int httpc_is_tchar(char ch) {
    return (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
           (ch && strchr("!#$%&'*+-.^_`|~", ch));
}

static int httpc_is_token(const char *s, size_t n) {
    if (n == 0) return 0;
    for (size_t i = 0; i < n; i++)
        if (!httpc_is_tchar(s[i])) return 0;
    return 1;
}

/* A header is "Name: value" on one line: anything else would either be
 * misread by curl ("Name;" / "Name:" mean other things to it) or smuggle a
 * second header. */
static int httpc_header_valid(const char *h) {
    const char *colon = strchr(h, ':');
    if (!colon || !httpc_is_token(h, (size_t)(colon - h)) || strpbrk(h, "\r\n")) return 0;
    const char *v = colon + 1;
    while (*v == ' ' || *v == '\t')
        v++;
    return *v != '\0';
}

static int httpc_check_url(CURLU *u, const char *url, char *errbuf, size_t errlen) {
    char *scheme = NULL;
    int ret = 0;
    CURLUcode uc = curl_url_set(u, CURLUPART_URL, url, 0);
    if (uc == CURLUE_OK) uc = curl_url_get(u, CURLUPART_SCHEME, &scheme, 0);
    if (uc != CURLUE_OK) {
        snprintf(errbuf, errlen, "bad URL: %s", curl_url_strerror(uc));
        ret = CD_ERR_INVALID;
    } else if (strcmp(scheme, "http") != 0 && strcmp(scheme, "https") != 0) {
        snprintf(errbuf, errlen, "unsupported URL scheme \"%s\" (http or https only)", scheme);
        ret = CD_ERR_INVALID;
    }
    curl_free(scheme);
    return ret;
}

static int httpc_check_request(const httpc_request *r, char *errbuf, size_t errlen) {
    if (!r->url) {
        snprintf(errbuf, errlen, "no URL");
        return CD_ERR_INVALID;
    }
    if (r->method && !httpc_is_token(r->method, strlen(r->method))) {
        snprintf(errbuf, errlen, "bad method \"%s\"", r->method);
        return CD_ERR_INVALID;
    }
    if (r->body_len && !r->body) {
        snprintf(errbuf, errlen, "body_len without body");
        return CD_ERR_INVALID;
    }
    for (const char *const *h = r->headers; h && *h; h++) {
        if (!httpc_header_valid(*h)) {
            snprintf(errbuf, errlen, "bad header (want \"Name: value\" on one line): %.60s", *h);
            return CD_ERR_INVALID;
        }
    }
    if (r->aws_sigv4) {
        if (!*r->aws_sigv4 || strpbrk(r->aws_sigv4, " \r\n")) {
            snprintf(errbuf, errlen, "bad aws_sigv4 \"%s\"", r->aws_sigv4);
            return CD_ERR_INVALID;
        }
        if (!r->aws_access_key || !*r->aws_access_key || !r->aws_secret_key ||
            !*r->aws_secret_key) {
            snprintf(errbuf, errlen, "aws_sigv4 needs an access key and a secret key");
            return CD_ERR_INVALID;
        }
        /* Never echo the token itself: it is a credential. */
        if (r->aws_session_token && strpbrk(r->aws_session_token, "\r\n")) {
            snprintf(errbuf, errlen, "aws_session_token holds a line break");
            return CD_ERR_INVALID;
        }
        for (const char *const *h = r->headers; h && *h; h++) {
            size_t n = strcspn(*h, ":");
            if ((n == 13 && strncasecmp(*h, "authorization", 13) == 0) ||
                (n == 10 && strncasecmp(*h, "x-amz-date", 10) == 0)) {
                snprintf(errbuf, errlen, "SigV4: the %.*s header is the signer's", (int)n, *h);
                return CD_ERR_INVALID;
            }
        }
    }
    CURLU *u = curl_url();
    if (!u) {
        snprintf(errbuf, errlen, "out of memory");
        return CD_ERR_NOMEM;
    }
    int ret = httpc_check_url(u, r->url, errbuf, errlen);
    curl_url_cleanup(u);
    return ret;
}

/* -------------------------------------------------------------- requests */
#define HTTPC_SETOPT(easy, opt, val)                                                               \
    do {                                                                                           \
        CURLcode setopt_rc_ = curl_easy_setopt((easy), (opt), (val));                              \
        if (setopt_rc_ != CURLE_OK) {                                                              \
            snprintf(errbuf, errlen, "curl option %s: %s", #opt, curl_easy_strerror(setopt_rc_));  \
            return setopt_rc_ == CURLE_OUT_OF_MEMORY ? CD_ERR_NOMEM : CD_ERR_INVALID;              \
        }                                                                                          \
    } while (0)

static int httpc_add_header(httpc_req *rq, const char *h, char *errbuf, size_t errlen) {
    struct curl_slist *l = curl_slist_append(rq->headers, h);
    if (!l) {
        snprintf(errbuf, errlen, "out of memory");
        return CD_ERR_NOMEM;
    }
    rq->headers = l;
    return 0;
}

/* ------------------------------------------------------------------ SigV4 */
/* The Host header curl would send for u: the host, plus the port when the
 * URL names one other than the scheme's default. */
static int httpc_host_value(CURLU *u, char *out, size_t outlen) {
    char *host = NULL, *port = NULL, *scheme = NULL;
    int ret = -1;
    if (curl_url_get(u, CURLUPART_HOST, &host, 0) == CURLUE_OK &&
        curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) == CURLUE_OK) {
        if (curl_url_get(u, CURLUPART_PORT, &port, 0) != CURLUE_OK) port = NULL;
        int dflt = !port || (strcmp(scheme, "http") == 0 && strcmp(port, "80") == 0) ||
                   (strcmp(scheme, "https") == 0 && strcmp(port, "443") == 0);
        int n =
            dflt ? snprintf(out, outlen, "%s", host) : snprintf(out, outlen, "%s:%s", host, port);
        ret = n > 0 && (size_t)n < outlen ? 0 : -1;
    }
    curl_free(host);
    curl_free(port);
    curl_free(scheme);
    return ret;
}

/*
 * Signs the request with our SigV4 signer (engine/sigv4.c) rather than
 * libcurl 7.88's, which signs the path and query exactly as sent and sorts
 * whole header lines: AWS encodes the path once more for every service but
 * S3 (API Gateway's "/@connections/{id}"), sorts query pairs and header
 * names, and answers anything else with a bare 403.  Every header we pass
 * is signed, plus Host (which we then send ourselves, so the signed value
 * is the sent one), X-Amz-Date and X-Amz-Security-Token.  The signing key
 * is derived once per day and kept in the pool.
 */
static int httpc_sign(httpc_req *rq, const httpc_request *r, const char *method, char *errbuf,
                      size_t errlen) {
    /* "provider1:provider2:region:service" */
    const char *f[4] = {r->aws_sigv4, NULL, NULL, NULL};
    for (int i = 1; i < 4 && f[i - 1]; i++) {
        f[i] = strchr(f[i - 1], ':');
        if (f[i]) f[i]++;
    }
    if (!f[3] || !*f[3] || strchr(f[3], ':') || f[3] - f[2] < 2) {
        snprintf(errbuf, errlen, "aws_sigv4 \"%s\": want provider1:provider2:region:service",
                 r->aws_sigv4);
        return CD_ERR_INVALID;
    }
    char region[64], service[64];
    size_t rl = (size_t)(f[3] - 1 - f[2]);
    if (rl >= sizeof(region) || strlen(f[3]) >= sizeof(service)) {
        snprintf(errbuf, errlen, "aws_sigv4 \"%s\": region or service too long", r->aws_sigv4);
        return CD_ERR_INVALID;
    }
    memcpy(region, f[2], rl);
    region[rl] = '\0';
    snprintf(service, sizeof(service), "%s", f[3]);

    httpc_pool *p = rq->pool;
    if (!p->keys && !(p->keys = sigv4_key_cache_new())) {
        snprintf(errbuf, errlen, "out of memory");
        return CD_ERR_NOMEM;
    }
    CURLU *u = curl_url();
    char *path = NULL, *query = NULL, *scratch = NULL;
    char host[320], auth[512], amz_date[SIGV4_AMZ_DATE_LEN + 1], line[400];
    sigv4_header hv[SIGV4_MAX_HEADERS];
    size_t n = 0;
    int ret = CD_ERR_INVALID, user_host = 0;
    const char *payload_hash = NULL;
    if (!u || curl_url_set(u, CURLUPART_URL, r->url, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_PATH, &path, 0) != CURLUE_OK ||
        httpc_host_value(u, host, sizeof(host)) < 0) {
        snprintf(errbuf, errlen, "SigV4: cannot take the URL apart");
        goto out;
    }
    if (curl_url_get(u, CURLUPART_QUERY, &query, 0) != CURLUE_OK) query = NULL;
    /* Names and values NUL-split in one copy of the header lines. */
    size_t total = 0;
    for (const char *const *h = r->headers; h && *h; h++)
        total += strlen(*h) + 1;
    if (total && !(scratch = malloc(total))) {
        ret = CD_ERR_NOMEM;
        snprintf(errbuf, errlen, "out of memory");
        goto out;
    }
    char *w = scratch;
    for (const char *const *h = r->headers; h && *h; h++) {
        if (n == SIGV4_MAX_HEADERS - 4) {
            snprintf(errbuf, errlen, "SigV4: more than %d headers", SIGV4_MAX_HEADERS - 4);
            goto out;
        }
        size_t len = strlen(*h), colon = strcspn(*h, ":");
        memcpy(w, *h, len + 1);
        w[colon] = '\0';
        const char *v = w + colon + 1;
        while (*v == ' ' || *v == '\t')
            v++;
        hv[n].name = w;
        hv[n].value = v;
        if (strcasecmp(w, "host") == 0) user_host = 1;
        if (strcasecmp(w, "x-amz-content-sha256") == 0) payload_hash = v;
        n++;
        w += len + 1;
    }
    if (!user_host) {
        hv[n].name = "host";
        hv[n].value = host;
        n++;
        snprintf(line, sizeof(line), "Host: %s", host);
        if ((ret = httpc_add_header(rq, line, errbuf, errlen)) < 0) goto out;
        ret = CD_ERR_INVALID;
    }
    sigv4_request sr = {
        .method = method,
        .path = path,
        .query = query,
        .headers = hv,
        .n_headers = n,
        .payload = r->body ? r->body : "",
        .payload_len = r->body_len,
        .payload_hash = payload_hash,
        .access_key = r->aws_access_key,
        .secret_key = r->aws_secret_key,
        .session_token = r->aws_session_token,
        .region = region,
        .service = service,
        .time = time(NULL),
    };
    ret = sigv4_sign(p->keys, &sr, auth, sizeof(auth), amz_date, errbuf, errlen);
    if (ret < 0) goto out;
    char authz[sizeof(auth) + 16];
    snprintf(authz, sizeof(authz), "Authorization: %s", auth);
    snprintf(line, sizeof(line), "X-Amz-Date: %s", amz_date);
    if ((ret = httpc_add_header(rq, authz, errbuf, errlen)) < 0 ||
        (ret = httpc_add_header(rq, line, errbuf, errlen)) < 0)
        goto out;
    if (r->aws_session_token && *r->aws_session_token) {
        static const char prefix[] = "X-Amz-Security-Token: ";
        size_t tl = strlen(r->aws_session_token);
        char *h = malloc(sizeof(prefix) + tl);
        if (!h) {
            ret = CD_ERR_NOMEM;
            snprintf(errbuf, errlen, "out of memory");
            goto out;
        }
        memcpy(h, prefix, sizeof(prefix) - 1);
        memcpy(h + sizeof(prefix) - 1, r->aws_session_token, tl + 1);
        ret = httpc_add_header(rq, h, errbuf, errlen);
        explicit_bzero(h, sizeof(prefix) + tl);
        free(h);
    }
out:
    free(scratch);
    curl_free(path);
    curl_free(query);
    curl_url_cleanup(u);
    return ret;
}

/* Sets up rq->easy from r.  On failure the caller frees rq. */
static int httpc_req_setup(httpc_req *rq, const httpc_request *r, char *errbuf, size_t errlen) {
    CURL *e = rq->easy;
    const char *method = r->method ? r->method : "GET";
    HTTPC_SETOPT(e, CURLOPT_URL, r->url);
    HTTPC_SETOPT(e, CURLOPT_PROTOCOLS_STR, "http,https");
    HTTPC_SETOPT(e, CURLOPT_PRIVATE, (void *)rq);
    HTTPC_SETOPT(e, CURLOPT_ERRORBUFFER, rq->errbuf);
    /* Signals would be the loop's business, and timeouts must not use
     * SIGALRM in a threaded resolver anyway. */
    HTTPC_SETOPT(e, CURLOPT_NOSIGNAL, 1L);
    uint64_t timeout = r->timeout_ms ? r->timeout_ms : HTTPC_DEFAULT_TIMEOUT_MS;
    if (timeout > (uint64_t)LONG_MAX) timeout = (uint64_t)LONG_MAX;
    HTTPC_SETOPT(e, CURLOPT_TIMEOUT_MS, (long)timeout);
    HTTPC_SETOPT(e, CURLOPT_TCP_KEEPALIVE, 1L);
    HTTPC_SETOPT(e, CURLOPT_USERAGENT, "connectd/" CONNECTD_VERSION);
    HTTPC_SETOPT(e, CURLOPT_WRITEFUNCTION, httpc_on_body);
    HTTPC_SETOPT(e, CURLOPT_WRITEDATA, (void *)rq);
    HTTPC_SETOPT(e, CURLOPT_HEADERFUNCTION, httpc_on_header);
    HTTPC_SETOPT(e, CURLOPT_HEADERDATA, (void *)rq);

    int has_body = r->body != NULL || strcmp(method, "POST") == 0 || strcmp(method, "PUT") == 0 ||
                   strcmp(method, "PATCH") == 0;
    if (strcmp(method, "HEAD") == 0 && !r->body) {
        HTTPC_SETOPT(e, CURLOPT_NOBODY, 1L);
    } else if (!has_body) {
        HTTPC_SETOPT(e, CURLOPT_HTTPGET, 1L);
        if (strcmp(method, "GET") != 0) HTTPC_SETOPT(e, CURLOPT_CUSTOMREQUEST, method);
    } else {
        /* Our own copy rather than CURLOPT_COPYPOSTFIELDS: that one must
         * follow POSTFIELDSIZE, and SigV4 hashes whatever POSTFIELDS
         * points at. */
        rq->body = malloc(r->body_len + 1);
        if (!rq->body) {
            snprintf(errbuf, errlen, "out of memory");
            return CD_ERR_NOMEM;
        }
        if (r->body_len) memcpy(rq->body, r->body, r->body_len);
        rq->body[r->body_len] = '\0';
        HTTPC_SETOPT(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)r->body_len);
        HTTPC_SETOPT(e, CURLOPT_POSTFIELDS, rq->body);
        if (strcmp(method, "POST") != 0) HTTPC_SETOPT(e, CURLOPT_CUSTOMREQUEST, method);
    }

    for (const char *const *h = r->headers; h && *h; h++) {
        int ret = httpc_add_header(rq, *h, errbuf, errlen);
        if (ret < 0) return ret;
    }
    if (r->aws_sigv4) {
        int ret = httpc_sign(rq, r, method, errbuf, errlen);
        if (ret < 0) return ret;
    }
    if (rq->headers) HTTPC_SETOPT(e, CURLOPT_HTTPHEADER, rq->headers);
    return 0;
}

int httpc_submit(httpc_pool *p, const httpc_request *r, httpc_cb cb, void *opaque, char *errbuf,
                 size_t errlen) {
    if (!p || !r || !cb) {
        snprintf(errbuf, errlen, "httpc_submit: pool, request and callback are required");
        return CD_ERR_INVALID;
    }
    if (p->dead || p->c->closing) {
        snprintf(errbuf, errlen, "HTTP client is closing");
        return CD_ERR_BUSY;
    }
    int ret = httpc_check_request(r, errbuf, errlen);
    if (ret < 0) return ret;

    httpc_req *rq = calloc(1, sizeof(*rq));
    if (!rq) {
        snprintf(errbuf, errlen, "out of memory");
        return CD_ERR_NOMEM;
    }
    rq->pool = p;
    rq->cb = cb;
    rq->opaque = opaque;
    rq->resp_max = r->max_response_bytes ? r->max_response_bytes : HTTPC_DEFAULT_MAX_RESPONSE;
    if (rq->resp_max > SIZE_MAX / 4)
        rq->resp_max = SIZE_MAX / 4; /* growth arithmetic stays exact */
    rq->submitted_ns = uv_hrtime();
    rq->easy = httpc_easy_get(p->c);
    if (!rq->easy) {
        snprintf(errbuf, errlen, "curl_easy_init failed");
        httpc_req_free(rq);
        return CD_ERR_NOMEM;
    }
    ret = httpc_req_setup(rq, r, errbuf, errlen);
    if (ret < 0) {
        httpc_req_free(rq);
        return ret;
    }
    /* Adding to curl only arms its timer (at 0 ms): the transfer starts,
     * and can finish, only on a later loop iteration. */
    if (p->in_flight < p->max_in_flight && !p->queue.head) {
        ret = httpc_req_start(rq, errbuf, errlen);
        if (ret < 0) {
            httpc_req_free(rq);
            return ret;
        }
    } else {
        httpc_list_push(&p->queue, rq);
        p->queued++;
    }
    return 0;
}

/* ------------------------------------------------------------------ pools */
httpc_pool *httpc_pool_new(httpc *c, size_t max_in_flight) {
    if (!c || c->closing || max_in_flight == 0) return NULL;
    httpc_pool *p = calloc(1, sizeof(*p));
    if (!p) return NULL;
    p->c = c;
    p->max_in_flight = max_in_flight;
    p->next = c->pools;
    if (c->pools) c->pools->prev = p;
    c->pools = p;
    return p;
}

void httpc_pool_free(httpc_pool *p) {
    if (!p || p->dead) return;
    httpc *c = p->c;
    p->dead = 1;
    if (p->prev)
        p->prev->next = p->next;
    else
        c->pools = p->next;
    if (p->next) p->next->prev = p->prev;
    p->prev = p->next = NULL;

    httpc_pool_hold(p);
    /* Queued first, so none of them can slip into a slot freed below. */
    httpc_req *rq;
    while ((rq = p->queue.head)) {
        httpc_list_unlink(&p->queue, rq);
        p->queued--;
        httpc_req_deliver(rq, 0, HTTPC_ERR_CANCELED, "request cancelled", 0);
    }
    while ((rq = p->active.head)) {
        httpc_req_detach_active(rq);
        httpc_req_deliver(rq, 0, HTTPC_ERR_CANCELED, "request cancelled", 0);
    }
    httpc_pool_release(p);
}

size_t httpc_pool_in_flight(const httpc_pool *p) {
    return p->in_flight;
}

size_t httpc_pool_queued(const httpc_pool *p) {
    return p->queued;
}

/* ----------------------------------------------------------------- client */
#define HTTPC_MSETOPT(multi, opt, val)                                                             \
    do {                                                                                           \
        CURLMcode msetopt_rc_ = curl_multi_setopt((multi), (opt), (val));                          \
        if (msetopt_rc_ != CURLM_OK) {                                                             \
            snprintf(errbuf, errlen, "curl multi option %s: %s", #opt,                             \
                     curl_multi_strerror(msetopt_rc_));                                            \
            goto fail;                                                                             \
        }                                                                                          \
    } while (0)

int httpc_new(httpc **out, uv_loop_t *loop, char *errbuf, size_t errlen) {
    *out = NULL;
    CURLcode gc = curl_global_init(CURL_GLOBAL_DEFAULT);
    if (gc != CURLE_OK) {
        snprintf(errbuf, errlen, "curl_global_init: %s", curl_easy_strerror(gc));
        return CD_ERR_IO;
    }
    httpc *c = calloc(1, sizeof(*c));
    if (!c) {
        snprintf(errbuf, errlen, "out of memory");
        curl_global_cleanup();
        return CD_ERR_NOMEM;
    }
    c->loop = loop;
    c->multi = curl_multi_init();
    if (!c->multi) {
        snprintf(errbuf, errlen, "curl_multi_init failed");
        goto fail;
    }
    HTTPC_MSETOPT(c->multi, CURLMOPT_SOCKETFUNCTION, httpc_on_socket);
    HTTPC_MSETOPT(c->multi, CURLMOPT_SOCKETDATA, (void *)c);
    HTTPC_MSETOPT(c->multi, CURLMOPT_TIMERFUNCTION, httpc_on_timer_change);
    HTTPC_MSETOPT(c->multi, CURLMOPT_TIMERDATA, (void *)c);
    /* Pools bound each user; this bounds what all of them open to one
     * endpoint together (more wait inside curl, within their timeouts). */
    HTTPC_MSETOPT(c->multi, CURLMOPT_MAX_HOST_CONNECTIONS, (long)HTTPC_MAX_HOST_CONNECTIONS);
    /* curl's default cache (4 x the easy handles added) shrinks whenever
     * the load dips, closing connections we are about to want again. */
    HTTPC_MSETOPT(c->multi, CURLMOPT_MAXCONNECTS, (long)HTTPC_MAX_CACHED_CONNECTIONS);
    int r = uv_timer_init(loop, &c->timer);
    if (r < 0) {
        snprintf(errbuf, errlen, "uv_timer_init: %s", uv_strerror(r));
        goto fail;
    }
    c->handles_open = 1;
    *out = c;
    return 0;
fail:
    if (c->multi) curl_multi_cleanup(c->multi);
    free(c);
    curl_global_cleanup();
    return CD_ERR_IO;
}

static void httpc_timer_on_closed(uv_handle_t *h) {
    httpc *c = container_of((uv_timer_t *)h, httpc, timer);
    httpc_handle_closed(c);
}

void httpc_close(httpc *c, void (*on_closed)(void *opaque), void *opaque) {
    if (!c || c->closing) return;
    c->closing = 1;
    c->on_closed = on_closed;
    c->closed_opaque = opaque;
    while (c->pools)
        httpc_pool_free(c->pools);
    /* Every transfer is gone; what is left are idle cached connections.
     * Stop watching their sockets before curl closes them (libuv wants the
     * watcher gone before the fd), then let curl close them. */
    while (c->socks)
        httpc_sock_close(c->socks);
    while (c->nspare)
        curl_easy_cleanup(c->spare[--c->nspare]);
    CURLMcode mc = curl_multi_cleanup(c->multi);
    if (mc != CURLM_OK) LOG_WARN("httpc: curl_multi_cleanup: %s", curl_multi_strerror(mc));
    c->multi = NULL;
    uv_timer_stop(&c->timer);
    uv_close((uv_handle_t *)&c->timer, httpc_timer_on_closed);
}

int httpc_retriable(const httpc_response *r) {
    if (r->error) {
        if (r->error == HTTPC_ERR_TOO_LARGE || r->error == CD_ERR_INVALID) return 0;
        if (HTTPC_ERR_IS_CURL(r->error)) {
            switch (HTTPC_ERR_CURL_CODE(r->error)) {
            case CURLE_UNSUPPORTED_PROTOCOL:
            case CURLE_URL_MALFORMAT:
            case CURLE_NOT_BUILT_IN:
            case CURLE_BAD_FUNCTION_ARGUMENT:
            case CURLE_UNKNOWN_OPTION:
                return 0;
            default:
                return 1;
            }
        }
        return 1;
    }
    return r->status == 408 || r->status == 429 || (r->status >= 500 && r->status <= 599) ||
           r->status == 0;
}
