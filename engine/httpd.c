/*
 * HTTP server room; see httpd.h.
 *
 * One hd_conn per accepted socket, with its uv_tcp, timer, write and
 * shutdown requests embedded; it is freed only when both handles have run
 * their close callbacks.  A connection's requests form one queue in arrival
 * order: a request joins it when its head is complete, is handed to the
 * handler when its body is, and leaves it when its response has been
 * written.  Responses are written from the front of the queue only, so they
 * leave in request order however late they are answered; whatever is ready
 * is written with one uv_write, once per loop pass (at the end of a read,
 * or from an idle handle for answers that come from elsewhere).
 *
 * Reading stops (uv_read_stop, the parser paused) while the queue holds
 * max_pipelined requests and resumes when a write drains it, so a client
 * that pipelines without reading costs bounded memory.  Every way a request
 * can go wrong ends the same way: an error response queued behind the
 * requests already being handled, no more reading, and a lingering close
 * (FIN, then read and discard for a moment) so that the kernel does not
 * reset the connection over unread bytes before the client saw the answer.
 *
 * A request the handler holds is never freed under it: when its connection
 * goes it is orphaned (conn = NULL) and answering it just frees it.
 */
#include "httpd.h"
#include "log.h"

#include <connectd/plugin.h>
#include <errno.h>
#include <http_parser.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

#define HD_READ_BUF        (64 * 1024)
#define HD_WRITE_BATCH     64 /* buffers per uv_write */
#define HD_LINGER_MS       1000
#define HD_STREAM_CLOSE_MS 5000         /* a closed stream's queued bytes must be read by then */
#define HD_LINGER_MAX      (256 * 1024) /* bytes discarded before giving up on a lingering close */
#define HD_INLINE_HEADERS  16
#define HD_BODY_PREALLOC   (64 * 1024)
#define HD_BACKLOG         511
/* Connections beyond max_connections still get a 503; beyond this many more
 * they are closed unanswered, so a connect flood cannot grow memory. */
#define HD_REJECT_SLACK 1024

typedef struct httpd_stream hd_conn;

typedef enum hd_req_state {
    HD_RECEIVING, /* head read, body arriving */
    HD_COMPLETE,  /* read whole, not yet handed to the handler */
    HD_HANDLING,  /* the handler's until answered */
    HD_ANSWERED,  /* response built, waiting for its turn */
    HD_WRITING,   /* in the connection's uv_write */
} hd_req_state;

typedef enum hd_phase {
    HD_PHASE_IDLE, /* between requests */
    HD_PHASE_HEAD, /* first byte of a request seen, head not complete */
    HD_PHASE_BODY, /* head complete, body arriving */
} hd_phase;

/* Offsets into httpd_req.head: the buffer grows while the head arrives, so
 * pointers into it would not survive. */
typedef struct hd_header {
    uint32_t name, value;
} hd_header;

struct httpd_req {
    hd_conn *conn; /* NULL once the connection is gone (the req is orphaned) */
    httpd_req *next;
    hd_req_state state;
    unsigned char method, http_major, http_minor;
    unsigned close_after : 1;     /* the connection closes once this response is written */
    unsigned is_head : 1;         /* HEAD: no body in the response */
    unsigned continue_wanted : 1; /* Expect: 100-continue not yet answered */
    unsigned upgrade : 1;
    unsigned in_value : 1; /* the parser's last header callback was a value */
    unsigned queued : 1;
    unsigned resp_inline : 1; /* resp lives in this allocation (stream writes) */
    /* url '\0' (name '\0' value '\0')* path '\0' query '\0' */
    char *head;
    size_t head_len, head_cap;
    uint32_t path_off, query_off; /* query_off 0: no query */
    hd_header *hdrs;
    size_t nhdrs, hdrs_cap;
    hd_header hdrs_inline[HD_INLINE_HEADERS];
    char *params; /* decoded query parameters, "name\0value\0"... (lazily) */
    size_t params_len;
    char *body;
    size_t body_len, body_cap;
    char *resp; /* the whole response, head and body */
    size_t resp_len;
    char peer[64];
};

struct httpd_stream {
    uv_tcp_t tcp;
    uv_timer_t timer;
    uv_write_t wr;
    uv_shutdown_t shut;
    httpd *h;
    hd_conn *prev, *next;             /* h->conns */
    hd_conn *flush_prev, *flush_next; /* h->flush_head */
    http_parser parser;
    httpd_req *cur;             /* being read (also queued once its head is complete) */
    httpd_req *q_head, *q_tail; /* not yet written, in request order */
    httpd_req *w_head;          /* in the uv_write under way */
    size_t q_len;               /* requests in q and w */
    size_t pending_bytes;       /* response bytes in q and w */
    char *pending;              /* read but not parsed while paused (or after an upgrade) */
    size_t pending_len;
    hd_phase phase;
    uint64_t phase_since, idle_since, write_since, linger_since, deadline;
    size_t head_bytes;
    uint64_t served;
    size_t linger_bytes;
    int fail_status;
    char fail_reason[96];
    int handles; /* open uv handles: tcp and timer */
    int in_feed;
    unsigned flush_linked : 1, reading : 1, paused : 1, no_more : 1, writing : 1, draining : 1,
        lingering : 1, closing : 1, peer_eof : 1, rejected : 1, stream : 1, stream_live : 1,
        stream_closing : 1;
    httpd_stream_cbs stream_cbs;
    void *stream_opaque;
    char peer[64];
};

struct httpd {
    uv_loop_t *loop;
    uv_tcp_t listener;
    uv_idle_t flush_idle;
    httpd_limits lim;
    httpd_handler handler;
    void *opaque;
    httpd_stats stats;
    hd_conn *conns;      /* every connection not yet freed */
    hd_conn *flush_head; /* connections with answers to write at the next idle pass */
    size_t conn_count;
    size_t serving; /* open and not 503-rejected */
    int port;
    unsigned listener_open : 1, listener_closing : 1, idle_open : 1, idle_closing : 1,
        idle_active : 1, closing : 1, finishing : 1;
    void (*on_closed)(void *opaque);
    void *closed_opaque;
    time_t date_at;
    char date[40];
    char rbuf[HD_READ_BUF]; /* shared: every read is parsed before the next one */
};

static const char HD_CONTINUE[] = "HTTP/1.1 100 Continue\r\n\r\n";

static void hd_conn_close(hd_conn *c);
static void hd_conn_flush(hd_conn *c);
static void hd_conn_arm_timer(hd_conn *c);
static void hd_conn_feed(hd_conn *c, const char *data, size_t len);
static void hd_maybe_finish(httpd *h);

void httpd_limits_default(httpd_limits *l) {
    l->max_body = 1024 * 1024;
    l->max_header_bytes = 16 * 1024;
    l->max_headers = 100;
    l->max_connections = 10000;
    l->header_timeout_ms = 10 * 1000;
    l->body_timeout_ms = 30 * 1000;
    l->idle_timeout_ms = 60 * 1000;
    l->max_pipelined = 64;
}

/* ------------------------------------------------------------------ helpers */

static int hd_lower(int ch) {
    return ch >= 'A' && ch <= 'Z' ? ch + 32 : ch;
}

/* ASCII only: header names are tokens, and strcasecmp follows the locale. */
static int hd_ieq(const char *a, const char *b) {
    while (*a && hd_lower((unsigned char)*a) == hd_lower((unsigned char)*b)) {
        a++;
        b++;
    }
    return *a == 0 && *b == 0;
}

static int hd_unhex(int ch) {
    if (ch >= '0' && ch <= '9') return ch - '0';
    ch = hd_lower(ch);
    if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
    return -1;
}

/* Percent-decodes n bytes of src into dst (which may be src: the output
 * never is longer); a '%' not followed by two hex digits stays as it is.
 * Returns the decoded length; *nul is set when a %00 was decoded. */
static size_t hd_pct_decode(char *dst, const char *src, size_t n, int plus_is_space, int *nul) {
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        int hi, lo;
        if (src[i] == '%' && i + 2 < n && (hi = hd_unhex((unsigned char)src[i + 1])) >= 0 &&
            (lo = hd_unhex((unsigned char)src[i + 2])) >= 0) {
            dst[o] = (char)(hi * 16 + lo);
            if (dst[o] == 0 && nul) *nul = 1;
            o++;
            i += 2;
        } else if (plus_is_space && src[i] == '+') {
            dst[o++] = ' ';
        } else {
            dst[o++] = src[i];
        }
    }
    return o;
}

static char *hd_put(char *p, const char *s, size_t n) {
    memcpy(p, s, n);
    return p + n;
}

static char *hd_put_str(char *p, const char *s) {
    return hd_put(p, s, strlen(s));
}

static char *hd_put_u64(char *p, uint64_t v) {
    char tmp[24];
    size_t n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (n)
        *p++ = tmp[--n];
    return p;
}

static const char *hd_reason(int status) {
    const char *s = http_status_str((enum http_status)status);
    return strcmp(s, "<unknown>") == 0 ? "" : s;
}

/* The Date header's value, formatted once a second. */
static const char *hd_date(httpd *h) {
    time_t now = time(NULL);
    if (now != h->date_at) {
        struct tm tm;
        gmtime_r(&now, &tm);
        strftime(h->date, sizeof(h->date), "%a, %d %b %Y %H:%M:%S GMT", &tm);
        h->date_at = now;
    }
    return h->date;
}

static int hd_name_is(const char *line, size_t n, const char *name) {
    if (strlen(name) != n) return 0;
    for (size_t i = 0; i < n; i++)
        if (hd_lower((unsigned char)line[i]) != name[i]) return 0;
    return 1;
}

/* A header line the caller gives us must be exactly one "Name: value" line:
 * anything with CR or LF would let a value smuggle headers or a body.  The
 * framing headers are the server's: a second Content-Length, or a
 * Connection it does not act on, would desynchronise the client.  Only a
 * protocol switch names Connection (Upgrade) itself. */
static int hd_header_line_ok(const char *line, int upgrading) {
    const char *colon = strchr(line, ':');
    if (!colon || colon == line) return 0;
    for (const char *p = line; *p; p++)
        if (*p == '\r' || *p == '\n') return 0;
    for (const char *p = line; p < colon; p++)
        if (*p == ' ' || *p == '\t') return 0;
    size_t n = (size_t)(colon - line);
    if (hd_name_is(line, n, "content-length") || hd_name_is(line, n, "transfer-encoding")) return 0;
    if (hd_name_is(line, n, "connection") && !upgrading) return 0;
    return 1;
}

static int hd_text_ok(const char *s) {
    return !s || (!strchr(s, '\r') && !strchr(s, '\n'));
}

/* ----------------------------------------------------------------- requests */

static httpd_req *hd_req_new(hd_conn *c) {
    httpd_req *r = calloc(1, sizeof(*r));
    if (!r) return NULL;
    r->conn = c;
    r->hdrs = r->hdrs_inline;
    r->hdrs_cap = HD_INLINE_HEADERS;
    memcpy(r->peer, c->peer, sizeof(r->peer));
    return r;
}

static void hd_req_free(httpd_req *r) {
    if (!r) return;
    if (r->hdrs != r->hdrs_inline) free(r->hdrs);
    free(r->head);
    free(r->params);
    free(r->body);
    if (!r->resp_inline) free(r->resp);
    free(r);
}

/* Room for len more bytes (and a NUL) in r->head; may move it. */
static int hd_head_reserve(httpd_req *r, size_t len) {
    if (r->head_len + len + 1 <= r->head_cap) return 0;
    size_t cap = r->head_cap ? r->head_cap : 512;
    while (cap < r->head_len + len + 1)
        cap *= 2;
    char *p = realloc(r->head, cap);
    if (!p) return -1;
    r->head = p;
    r->head_cap = cap;
    return 0;
}

/* `at` must not point into r->head (it may move). */
static int hd_head_append(httpd_req *r, const char *at, size_t len) {
    if (hd_head_reserve(r, len) < 0) return -1;
    memcpy(r->head + r->head_len, at, len);
    r->head_len += len;
    return 0;
}

/* Appends the copy of len bytes at offset off of r->head itself. */
static int hd_head_append_self(httpd_req *r, size_t off, size_t len) {
    if (hd_head_reserve(r, len) < 0) return -1;
    memcpy(r->head + r->head_len, r->head + off, len);
    r->head_len += len;
    return 0;
}

static int hd_head_nul(httpd_req *r) {
    return hd_head_append(r, "", 1);
}

/* Appends the queue; the queue owns r from now on. */
static void hd_queue_push(hd_conn *c, httpd_req *r) {
    r->next = NULL;
    r->queued = 1;
    if (c->q_tail)
        c->q_tail->next = r;
    else
        c->q_head = r;
    c->q_tail = r;
    c->q_len++;
}

/* Drops, from the tail, every queued request the handler has not seen.
 * They are always behind the ones it has: requests are handed out in
 * order. */
static void hd_queue_drop_unhandled(hd_conn *c) {
    httpd_req *keep_tail = NULL;
    for (httpd_req *r = c->q_head; r; r = r->next) {
        if (r->state == HD_RECEIVING || r->state == HD_COMPLETE) break;
        keep_tail = r;
    }
    httpd_req *r = keep_tail ? keep_tail->next : c->q_head;
    while (r) {
        httpd_req *next = r->next;
        if (r == c->cur) c->cur = NULL;
        c->q_len--;
        hd_req_free(r);
        r = next;
    }
    if (keep_tail)
        keep_tail->next = NULL;
    else
        c->q_head = NULL;
    c->q_tail = keep_tail;
}

/* Builds the whole response into r->resp.  Returns 0 or CD_ERR_NOMEM. */
static int hd_req_build(httpd *h, httpd_req *r, int status, const char *ctype, const void *body,
                        size_t len, const char *const *extra) {
    const char *reason = hd_reason(status);
    int with_length = status >= 200 && status != 204 && status != 304;
    int with_body = with_length && !r->is_head;
    size_t size = sizeof("HTTP/1.1 000 \r\n") + strlen(reason);
    size += sizeof("Date: \r\n") + 40;
    if (ctype) size += sizeof("Content-Type: \r\n") + strlen(ctype);
    if (with_length) size += sizeof("Content-Length: \r\n") + 20;
    for (size_t i = 0; extra && extra[i]; i++)
        size += strlen(extra[i]) + 2;
    size += sizeof("Connection: keep-alive\r\n") + 2;
    if (with_body) size += len;
    char *buf = malloc(size);
    if (!buf) return CD_ERR_NOMEM;

    char *p = hd_put_str(buf, "HTTP/1.1 ");
    p = hd_put_u64(p, (uint64_t)status);
    *p++ = ' ';
    p = hd_put_str(p, reason);
    p = hd_put_str(p, "\r\nDate: ");
    p = hd_put_str(p, hd_date(h));
    p = hd_put_str(p, "\r\n");
    if (ctype) {
        p = hd_put_str(p, "Content-Type: ");
        p = hd_put_str(p, ctype);
        p = hd_put_str(p, "\r\n");
    }
    if (with_length) {
        p = hd_put_str(p, "Content-Length: ");
        p = hd_put_u64(p, len);
        p = hd_put_str(p, "\r\n");
    }
    for (size_t i = 0; extra && extra[i]; i++) {
        p = hd_put_str(p, extra[i]);
        p = hd_put_str(p, "\r\n");
    }
    if (r->close_after && status != 101)
        p = hd_put_str(p, "Connection: close\r\n");
    else if (r->http_major == 1 && r->http_minor == 0)
        /* An HTTP/1.0 client that asked for keep-alive closes unless told. */
        p = hd_put_str(p, "Connection: keep-alive\r\n");
    p = hd_put_str(p, "\r\n");
    if (with_body && len) p = hd_put(p, body, len);

    r->resp = buf;
    r->resp_len = (size_t)(p - buf);
    h->stats.responses_by_class[status / 100]++;
    return 0;
}

/* {"error":"<reason, JSON-escaped>"}; returns a malloc'd string or NULL. */
static char *hd_json_error_body(const char *reason, size_t *len) {
    size_t n = strlen(reason);
    char *out = malloc(n * 6 + sizeof("{\"error\":\"\"}"));
    if (!out) return NULL;
    char *p = hd_put_str(out, "{\"error\":\"");
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)reason[i];
        if (ch == '"' || ch == '\\') {
            *p++ = '\\';
            *p++ = (char)ch;
        } else if (ch == '\n') {
            p = hd_put_str(p, "\\n");
        } else if (ch == '\r') {
            p = hd_put_str(p, "\\r");
        } else if (ch == '\t') {
            p = hd_put_str(p, "\\t");
        } else if (ch < 0x20 || ch == 0x7f) {
            static const char hex[] = "0123456789abcdef";
            p = hd_put_str(p, "\\u00");
            *p++ = hex[ch >> 4];
            *p++ = hex[ch & 15];
        } else {
            *p++ = (char)ch;
        }
    }
    p = hd_put_str(p, "\"}");
    *len = (size_t)(p - out);
    return out;
}

/* -------------------------------------------------------- request accessors */

const char *httpd_req_method(const httpd_req *req) {
    return http_method_str((enum http_method)req->method);
}

const char *httpd_req_target(const httpd_req *req) {
    return req->head; /* the url, first in head */
}

const char *httpd_req_path(const httpd_req *req) {
    return req->head + req->path_off;
}

const char *httpd_req_query(const httpd_req *req) {
    return req->query_off ? req->head + req->query_off : NULL;
}

const char *httpd_req_header(const httpd_req *req, const char *name) {
    for (size_t i = 0; i < req->nhdrs; i++)
        if (hd_ieq(req->head + req->hdrs[i].name, name)) return req->head + req->hdrs[i].value;
    return NULL;
}

size_t httpd_req_header_count(const httpd_req *req) {
    return req->nhdrs;
}

int httpd_req_header_at(const httpd_req *req, size_t i, const char **name, const char **value) {
    if (i >= req->nhdrs) return CD_ERR_INVALID;
    *name = req->head + req->hdrs[i].name;
    *value = req->head + req->hdrs[i].value;
    return 0;
}

const char *httpd_req_body(const httpd_req *req, size_t *len) {
    if (len) *len = req->body_len;
    return req->body ? req->body : "";
}

const char *httpd_req_peer(const httpd_req *req) {
    return req->peer;
}

int httpd_req_is_upgrade(const httpd_req *req) {
    return req->upgrade;
}

/* Splits and decodes the query once, on first use: most requests never ask. */
static int hd_req_parse_params(httpd_req *r) {
    const char *q = httpd_req_query(r);
    size_t n = q ? strlen(q) : 0;
    /* Decoding never grows a byte, but each parameter adds two NULs and a
     * parameter without '=' has no '=' byte to pay for its second one: k
     * parameters need up to n + k + 1 bytes, and k <= n. */
    r->params = malloc(2 * n + 2);
    if (!r->params) return -1;
    char *out = r->params;
    size_t i = 0;
    while (i < n) {
        size_t end = i;
        while (end < n && q[end] != '&' && q[end] != ';')
            end++;
        if (end > i) {
            size_t eq = i;
            while (eq < end && q[eq] != '=')
                eq++;
            out += hd_pct_decode(out, q + i, eq - i, 1, NULL);
            *out++ = 0;
            if (eq < end) out += hd_pct_decode(out, q + eq + 1, end - eq - 1, 1, NULL);
            *out++ = 0;
        }
        i = end + 1;
    }
    r->params_len = (size_t)(out - r->params);
    return 0;
}

const char *httpd_req_query_param(httpd_req *req, const char *name) {
    if (!req->query_off) return NULL;
    if (!req->params && hd_req_parse_params(req) < 0) return NULL;
    const char *p = req->params, *end = req->params + req->params_len;
    while (p < end) {
        const char *value = p + strlen(p) + 1;
        if (strcmp(p, name) == 0) return value;
        p = value + strlen(value) + 1;
    }
    return NULL;
}

/* --------------------------------------------------------------- flushing */

static void hd_flush_unlink(hd_conn *c) {
    if (!c->flush_linked) return;
    if (c->flush_prev)
        c->flush_prev->flush_next = c->flush_next;
    else
        c->h->flush_head = c->flush_next;
    if (c->flush_next) c->flush_next->flush_prev = c->flush_prev;
    c->flush_prev = c->flush_next = NULL;
    c->flush_linked = 0;
}

static void hd_on_flush_idle(uv_idle_t *idle) {
    httpd *h = container_of(idle, httpd, flush_idle);
    while (h->flush_head) {
        hd_conn *c = h->flush_head;
        hd_flush_unlink(c);
        hd_conn_flush(c);
        hd_conn_arm_timer(c);
    }
    uv_idle_stop(idle);
    h->idle_active = 0;
}

/* Something became writable on c.  Inside a read the read writes it at its
 * end; otherwise the idle handle does, once for every answer given in this
 * loop pass (an idle handle also keeps the loop from blocking in poll
 * before it runs). */
static void hd_conn_want_flush(hd_conn *c) {
    if (c->closing || c->in_feed || c->flush_linked) return;
    httpd *h = c->h;
    c->flush_prev = NULL;
    c->flush_next = h->flush_head;
    if (h->flush_head) h->flush_head->flush_prev = c;
    h->flush_head = c;
    c->flush_linked = 1;
    if (!h->idle_active && h->idle_open && !h->idle_closing) {
        uv_idle_start(&h->flush_idle, hd_on_flush_idle);
        h->idle_active = 1;
    }
}

/* ----------------------------------------------------------- connections */

static void hd_on_alloc(uv_handle_t *handle, size_t suggested, uv_buf_t *buf) {
    hd_conn *c = container_of((uv_tcp_t *)handle, hd_conn, tcp);
    buf->base = c->h->rbuf;
    buf->len = sizeof(c->h->rbuf);
}

static void hd_on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);

static void hd_conn_start_reading(hd_conn *c) {
    if (c->reading || c->closing) return;
    int r = uv_read_start((uv_stream_t *)&c->tcp, hd_on_alloc, hd_on_read);
    if (r < 0) {
        LOG_DEBUG("httpd %s: read: %s", c->peer, uv_strerror(r));
        hd_conn_close(c);
        return;
    }
    c->reading = 1;
}

static void hd_conn_stop_reading(hd_conn *c) {
    if (!c->reading) return;
    uv_read_stop((uv_stream_t *)&c->tcp);
    c->reading = 0;
}

static void hd_conn_drop_pending(hd_conn *c) {
    free(c->pending);
    c->pending = NULL;
    c->pending_len = 0;
}

static void hd_conn_timer_closed(uv_handle_t *handle);
static void hd_conn_tcp_closed(uv_handle_t *handle);

/* Closes at once.  Requests the handler holds are orphaned, the rest freed;
 * those in the uv_write under way are freed by its callback, which libuv
 * runs (cancelled) before the close callbacks. */
static void hd_conn_close(hd_conn *c) {
    if (c->closing) return;
    httpd *h = c->h;
    c->closing = 1;
    h->stats.connections_open--;
    if (!c->rejected) h->serving--;
    hd_flush_unlink(c);
    hd_conn_drop_pending(c);
    if (c->cur && !c->cur->queued) hd_req_free(c->cur);
    c->cur = NULL;
    for (httpd_req *r = c->q_head, *next; r; r = next) {
        next = r->next;
        c->q_len--;
        if (r->state == HD_HANDLING) {
            r->conn = NULL;
            r->next = NULL;
            r->queued = 0;
        } else {
            hd_req_free(r);
        }
    }
    c->q_head = c->q_tail = NULL;
    uv_close((uv_handle_t *)&c->timer, hd_conn_timer_closed);
    uv_close((uv_handle_t *)&c->tcp, hd_conn_tcp_closed);
}

static void hd_conn_release(hd_conn *c) {
    if (--c->handles > 0) return;
    httpd *h = c->h;
    if (c->stream && c->stream_cbs.on_closed) c->stream_cbs.on_closed(c, c->stream_opaque);
    if (c->prev)
        c->prev->next = c->next;
    else
        h->conns = c->next;
    if (c->next) c->next->prev = c->prev;
    h->conn_count--;
    free(c);
    hd_maybe_finish(h);
}

static void hd_conn_timer_closed(uv_handle_t *handle) {
    hd_conn_release(container_of((uv_timer_t *)handle, hd_conn, timer));
}

static void hd_conn_tcp_closed(uv_handle_t *handle) {
    hd_conn_release(container_of((uv_tcp_t *)handle, hd_conn, tcp));
}

static void hd_on_shutdown(uv_shutdown_t *req, int status) {
    hd_conn *c = container_of(req, hd_conn, shut);
    if (status < 0 && !c->closing) hd_conn_close(c);
}

/* The last response is written: send FIN, then read and discard what the
 * client still sends until it closes too (or a moment passes).  Closing
 * with unread bytes would make the kernel answer with a reset, which can
 * destroy the response before the client reads it. */
static void hd_conn_linger(hd_conn *c) {
    if (c->closing || c->lingering) return;
    c->lingering = 1;
    c->paused = 0;
    hd_conn_drop_pending(c);
    if (c->peer_eof) {
        hd_conn_close(c);
        return;
    }
    int r = uv_shutdown(&c->shut, (uv_stream_t *)&c->tcp, hd_on_shutdown);
    if (r < 0) {
        hd_conn_close(c);
        return;
    }
    c->linger_since = uv_now(c->h->loop);
    hd_conn_start_reading(c);
    hd_conn_arm_timer(c);
}

/* Queues an error response behind the requests already being handled and
 * stops reading: nothing after a broken request can be trusted. */
static void hd_conn_fail(hd_conn *c, int status, const char *reason) {
    httpd *h = c->h;
    httpd_req *r = c->cur;
    c->cur = NULL;
    c->no_more = 1;
    c->paused = 0;
    c->phase = HD_PHASE_IDLE;
    hd_conn_stop_reading(c);
    hd_conn_drop_pending(c);
    if (status == 400 || status == 417)
        h->stats.bad_requests++;
    else
        h->stats.rejected_limits++;
    LOG_DEBUG("httpd %s: %d: %s", c->peer, status, reason);
    if (!r && !(r = hd_req_new(c))) {
        hd_conn_close(c);
        return;
    }
    if (!r->queued) hd_queue_push(c, r);
    r->close_after = 1;
    r->continue_wanted = 0;
    size_t len = 0;
    char *body = hd_json_error_body(reason, &len);
    static const char *const retry[] = {"Retry-After: 1", NULL};
    if (!body || hd_req_build(h, r, status, "application/json", body, len,
                              status == 503 ? retry : NULL) < 0) {
        free(body);
        hd_conn_close(c);
        return;
    }
    free(body);
    r->state = HD_ANSWERED;
    hd_conn_want_flush(c);
}

static void hd_on_timer(uv_timer_t *t) {
    hd_conn *c = container_of(t, hd_conn, timer);
    c->deadline = 0;
    if (c->closing) return;
    if (c->lingering) {
        hd_conn_close(c);
        return;
    }
    if (c->phase != HD_PHASE_IDLE && !c->no_more) {
        hd_conn_fail(c, 408,
                     c->phase == HD_PHASE_HEAD ? "request head not received in time"
                                               : "request body not received in time");
        hd_conn_flush(c);
        hd_conn_arm_timer(c);
        return;
    }
    /* An idle keep-alive connection, a fresh one that sent nothing, or a
     * client that stopped reading its responses. */
    LOG_DEBUG("httpd %s: %s, closing", c->peer, c->writing ? "write stalled" : "idle");
    hd_conn_close(c);
}

/* One timer per connection; which deadline it holds depends on what the
 * connection waits for.  Deadlines run from the start of a phase, not from
 * the last byte: a client trickling one byte at a time gains nothing. */
static void hd_conn_arm_timer(hd_conn *c) {
    if (c->closing) return;
    const httpd_limits *l = &c->h->lim;
    uint64_t ms = 0, since = 0;
    if (c->lingering) {
        ms = HD_LINGER_MS;
        since = c->linger_since;
    } else if (c->stream) {
        /* The stream's owner keeps its own time (pings); once it closes the
         * stream, a peer that does not read what is queued has
         * HD_STREAM_CLOSE_MS before the connection is dropped. */
        if (c->stream_closing && c->writing) {
            ms = HD_STREAM_CLOSE_MS;
            since = c->linger_since;
        }
    } else if (c->phase == HD_PHASE_HEAD && !c->no_more) {
        ms = l->header_timeout_ms;
        since = c->phase_since;
    } else if (c->phase == HD_PHASE_BODY && !c->no_more) {
        ms = l->body_timeout_ms;
        since = c->phase_since;
    } else if (c->writing) {
        ms = l->idle_timeout_ms;
        since = c->write_since;
    } else if (c->q_len == 0 && !c->no_more && !c->draining) {
        ms = c->served ? l->idle_timeout_ms : l->header_timeout_ms;
        since = c->idle_since;
    }
    if (ms == 0) {
        if (c->deadline) uv_timer_stop(&c->timer);
        c->deadline = 0;
        return;
    }
    uint64_t deadline = since + ms;
    if (deadline == c->deadline) return;
    c->deadline = deadline;
    uint64_t now = uv_now(c->h->loop);
    uv_timer_start(&c->timer, hd_on_timer, deadline > now ? deadline - now : 0, 0);
}

static void hd_on_write(uv_write_t *w, int status);

/* Writes, with one uv_write, every response ready at the front of the
 * queue (and a 100 Continue owed to the request being received, whose turn
 * comes only after every earlier response). */
static void hd_conn_flush(hd_conn *c) {
    if (c->closing || c->writing) return;
    uv_buf_t bufs[HD_WRITE_BATCH];
    unsigned n = 0;
    httpd_req *r = c->q_head;
    while (r && n < HD_WRITE_BATCH) {
        if (r->state == HD_ANSWERED) {
            bufs[n++] = uv_buf_init(r->resp, (unsigned)r->resp_len);
            r->state = HD_WRITING;
            if (r->close_after) break;
            r = r->next;
            continue;
        }
        if (r->state == HD_RECEIVING && r->continue_wanted) {
            bufs[n++] = uv_buf_init((char *)HD_CONTINUE, sizeof(HD_CONTINUE) - 1);
            r->continue_wanted = 0;
            c->h->stats.responses_by_class[1]++;
        }
        break;
    }
    if (n == 0) return;
    /* The written requests are a prefix of the queue: move it to w. */
    httpd_req **tail = &c->w_head;
    while (c->q_head && c->q_head->state == HD_WRITING) {
        httpd_req *w = c->q_head;
        c->q_head = w->next;
        w->next = NULL;
        *tail = w;
        tail = &w->next;
    }
    if (!c->q_head) c->q_tail = NULL;
    int e = uv_write(&c->wr, (uv_stream_t *)&c->tcp, bufs, n, hd_on_write);
    if (e < 0) {
        LOG_DEBUG("httpd %s: write: %s", c->peer, uv_strerror(e));
        /* No callback will come: free what would have been written. */
        for (httpd_req *w = c->w_head, *next; w; w = next) {
            next = w->next;
            c->q_len--;
            c->pending_bytes -= w->resp_len;
            hd_req_free(w);
        }
        c->w_head = NULL;
        hd_conn_close(c);
        return;
    }
    c->writing = 1;
    c->write_since = uv_now(c->h->loop);
}

static void hd_conn_resume(hd_conn *c);

static void hd_on_write(uv_write_t *w, int status) {
    hd_conn *c = container_of(w, hd_conn, wr);
    int last = 0, switched = 0;
    for (httpd_req *r = c->w_head, *next; r; r = next) {
        next = r->next;
        last |= r->close_after;
        switched |= r->upgrade && c->stream;
        c->q_len--;
        c->pending_bytes -= r->resp_len;
        hd_req_free(r);
    }
    c->w_head = NULL;
    c->writing = 0;
    if (c->closing) return;
    if (status < 0) {
        LOG_DEBUG("httpd %s: write: %s", c->peer, uv_strerror(status));
        hd_conn_close(c);
        return;
    }
    if (switched && !c->stream_live) {
        /* The 101 is out: from here on the bytes are the new protocol's. */
        c->stream_live = 1;
        if (c->pending) {
            char *p = c->pending;
            size_t n = c->pending_len;
            c->pending = NULL;
            c->pending_len = 0;
            c->stream_cbs.on_data(c, p, n, c->stream_opaque);
            free(p);
            if (c->closing) return;
        }
        if (!c->lingering) hd_conn_start_reading(c);
        if (c->closing) return;
    }
    if (last || (c->q_len == 0 && (c->draining || c->peer_eof))) {
        hd_conn_linger(c);
        return;
    }
    if (c->q_len == 0) c->idle_since = uv_now(c->h->loop);
    hd_conn_flush(c);
    if (c->paused && !c->no_more && c->q_len < c->h->lim.max_pipelined) hd_conn_resume(c);
    hd_conn_arm_timer(c);
}

/* The queue has room again: parse what was read while paused, then read. */
static void hd_conn_resume(hd_conn *c) {
    c->paused = 0;
    http_parser_pause(&c->parser, 0);
    if (c->pending) {
        char *p = c->pending;
        size_t n = c->pending_len;
        c->pending = NULL;
        c->pending_len = 0;
        hd_conn_feed(c, p, n);
        free(p);
    }
    if (!c->paused && !c->no_more && !c->closing) hd_conn_start_reading(c);
}

/* Hands every complete request to the handler, in order.  The handler may
 * answer, close the server, or anything else: re-check after each call. */
static void hd_conn_dispatch(hd_conn *c) {
    httpd *h = c->h;
    for (;;) {
        if (c->closing || c->draining) return;
        httpd_req *r = c->q_head;
        while (r && r->state != HD_COMPLETE)
            r = r->next;
        if (!r) return;
        r->state = HD_HANDLING;
        h->handler(r, h->opaque);
    }
}

static void hd_conn_save_pending(hd_conn *c, const char *data, size_t len) {
    if (len == 0) return;
    char *p = malloc(len);
    if (!p) {
        hd_conn_close(c);
        return;
    }
    memcpy(p, data, len);
    c->pending = p;
    c->pending_len = len;
}

static const http_parser_settings hd_settings;

static void hd_conn_feed(hd_conn *c, const char *data, size_t len) {
    c->in_feed++;
    if (!c->no_more) {
        size_t n = http_parser_execute(&c->parser, &hd_settings, data, len);
        enum http_errno e = HTTP_PARSER_ERRNO(&c->parser);
        if (c->closing) {
            /* out of memory in a callback */
        } else if (e == HPE_PAUSED || (e == HPE_OK && c->parser.upgrade)) {
            /* Paused for a full queue (keep the rest for later), or the last
             * request this connection reads as HTTP (keep the rest only if
             * it may become a stream). */
            hd_conn_stop_reading(c);
            if (!c->no_more) {
                c->paused = 1;
                hd_conn_save_pending(c, data + n, len - n);
            } else if (c->q_tail && c->q_tail->upgrade) {
                hd_conn_save_pending(c, data + n, len - n);
            }
        } else if (e != HPE_OK) {
            if (c->fail_status)
                hd_conn_fail(c, c->fail_status, c->fail_reason);
            else if (e == HPE_HEADER_OVERFLOW)
                hd_conn_fail(c, 431, "request head too large");
            else
                hd_conn_fail(c, 400, http_errno_description(e));
        }
    }
    hd_conn_dispatch(c);
    c->in_feed--;
    hd_conn_flush(c);
    hd_conn_arm_timer(c);
}

static void hd_on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
    hd_conn *c = container_of((uv_tcp_t *)s, hd_conn, tcp);
    if (nread == 0 || c->closing) return;
    if (nread < 0) {
        hd_conn_stop_reading(c);
        if (nread != UV_EOF || c->lingering || c->stream || c->phase != HD_PHASE_IDLE ||
            c->q_len == 0) {
            /* Reset, a lingering close done, or EOF in the middle of a
             * request or with nothing left to answer. */
            hd_conn_close(c);
            return;
        }
        /* A half-close after the last request: answer what was asked. */
        c->peer_eof = 1;
        c->no_more = 1;
        hd_conn_drop_pending(c);
        if (c->q_tail && c->q_tail->state == HD_HANDLING) c->q_tail->close_after = 1;
        hd_conn_arm_timer(c);
        return;
    }
    if (c->lingering) {
        c->linger_bytes += (size_t)nread;
        if (c->linger_bytes > HD_LINGER_MAX) hd_conn_close(c);
        return;
    }
    if (c->stream) {
        if (c->stream_live) c->stream_cbs.on_data(c, buf->base, (size_t)nread, c->stream_opaque);
        return;
    }
    hd_conn_feed(c, buf->base, (size_t)nread);
}

/* ----------------------------------------------------- parser callbacks */

static int hd_set_fail(hd_conn *c, int status, const char *fmt, ...) CD_PRINTF(3, 4);
static int hd_set_fail(hd_conn *c, int status, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->fail_reason, sizeof(c->fail_reason), fmt, ap);
    va_end(ap);
    c->fail_status = status;
    return -1;
}

static int hd_oom(hd_conn *c) {
    return hd_set_fail(c, 503, "out of memory");
}

static int hd_on_message_begin(http_parser *p) {
    hd_conn *c = p->data;
    httpd_req *r = hd_req_new(c);
    if (!r) return hd_oom(c);
    c->cur = r;
    c->phase = HD_PHASE_HEAD;
    c->phase_since = uv_now(c->h->loop);
    c->head_bytes = 0;
    return 0;
}

/* Counts head bytes (and the ": " and CRLF around each header) against the
 * limit; trailers of a chunked body count too. */
static int hd_count_head(hd_conn *c, size_t n) {
    c->head_bytes += n;
    if (c->head_bytes > c->h->lim.max_header_bytes)
        return hd_set_fail(c, 431, "request head larger than %zu bytes",
                           c->h->lim.max_header_bytes);
    return 0;
}

static int hd_on_url(http_parser *p, const char *at, size_t len) {
    hd_conn *c = p->data;
    if (hd_count_head(c, len) < 0) return -1;
    if (hd_head_append(c->cur, at, len) < 0) return hd_oom(c);
    return 0;
}

static int hd_on_header_field(http_parser *p, const char *at, size_t len) {
    hd_conn *c = p->data;
    httpd_req *r = c->cur;
    int starts = r->nhdrs == 0 || r->in_value;
    if (hd_count_head(c, len + (starts ? 4 : 0)) < 0) return -1;
    if (c->phase != HD_PHASE_HEAD) return 0; /* trailers: counted, not kept */
    if (starts) {
        if (r->nhdrs >= c->h->lim.max_headers)
            return hd_set_fail(c, 431, "more than %zu header lines", c->h->lim.max_headers);
        if (r->nhdrs == r->hdrs_cap) {
            size_t cap = r->hdrs_cap * 2;
            hd_header *n = malloc(cap * sizeof(*n));
            if (!n) return hd_oom(c);
            memcpy(n, r->hdrs, r->nhdrs * sizeof(*n));
            if (r->hdrs != r->hdrs_inline) free(r->hdrs);
            r->hdrs = n;
            r->hdrs_cap = cap;
        }
        if (hd_head_nul(r) < 0) return hd_oom(c); /* ends the url or the last value */
        r->hdrs[r->nhdrs].name = (uint32_t)r->head_len;
        r->hdrs[r->nhdrs].value = 0;
        r->nhdrs++;
        r->in_value = 0;
    }
    if (hd_head_append(r, at, len) < 0) return hd_oom(c);
    return 0;
}

static int hd_on_header_value(http_parser *p, const char *at, size_t len) {
    hd_conn *c = p->data;
    httpd_req *r = c->cur;
    if (hd_count_head(c, len) < 0) return -1;
    if (c->phase != HD_PHASE_HEAD) return 0;
    if (!r->in_value) {
        if (hd_head_nul(r) < 0) return hd_oom(c); /* ends the name */
        r->hdrs[r->nhdrs - 1].value = (uint32_t)r->head_len;
        r->in_value = 1;
    }
    if (hd_head_append(r, at, len) < 0) return hd_oom(c);
    return 0;
}

static int hd_method_needs_length(unsigned m) {
    return m == HTTP_POST || m == HTTP_PUT || m == HTTP_PATCH;
}

/* Splits the target into a decoded path and the raw query, appended to the
 * head so that they live (and die) with it. */
static int hd_req_split_target(hd_conn *c, httpd_req *r) {
    size_t url_len = strlen(r->head); /* the url ends at the first NUL */
    struct http_parser_url u;
    http_parser_url_init(&u);
    if (url_len == 0 || http_parser_parse_url(r->head, url_len, r->method == HTTP_CONNECT, &u))
        return hd_set_fail(c, 400, "invalid request target");
    size_t poff = 0, plen = 0;
    if (u.field_set & (1 << UF_PATH)) {
        poff = u.field_data[UF_PATH].off;
        plen = u.field_data[UF_PATH].len;
    } else if (r->method == HTTP_CONNECT) {
        plen = url_len; /* host:port */
    }
    r->path_off = (uint32_t)(r->head_len);
    if (plen == 0) {
        if (hd_head_append(r, "/", 1) < 0) return hd_oom(c);
    } else {
        if (hd_head_append_self(r, poff, plen) < 0) return hd_oom(c);
        int nul = 0;
        size_t n = hd_pct_decode(r->head + r->path_off, r->head + r->path_off, plen, 0, &nul);
        if (nul) return hd_set_fail(c, 400, "NUL byte in the request path");
        r->head_len = r->path_off + n;
    }
    if (hd_head_nul(r) < 0) return hd_oom(c);
    if (u.field_set & (1 << UF_QUERY)) {
        size_t qoff = u.field_data[UF_QUERY].off, qlen = u.field_data[UF_QUERY].len;
        r->query_off = (uint32_t)r->head_len;
        if (hd_head_append_self(r, qoff, qlen) < 0 || hd_head_nul(r) < 0) return hd_oom(c);
    }
    return 0;
}

static int hd_on_headers_complete(http_parser *p) {
    hd_conn *c = p->data;
    httpd *h = c->h;
    httpd_req *r = c->cur;
    if (hd_head_nul(r) < 0) return hd_oom(c);
    r->method = (unsigned char)p->method;
    r->http_major = (unsigned char)p->http_major;
    r->http_minor = (unsigned char)p->http_minor;
    r->is_head = p->method == HTTP_HEAD;
    r->upgrade = p->upgrade && p->method != HTTP_CONNECT;
    r->close_after = !http_should_keep_alive(p) || p->upgrade;
    /* Queued now, not when complete, so that errors and a 100 Continue for
     * this request take their turn behind earlier responses. */
    r->state = HD_RECEIVING;
    hd_queue_push(c, r);
    if (hd_req_split_target(c, r) < 0) return -1;

    int has_length = (p->flags & F_CONTENTLENGTH) != 0;
    int chunked = (p->flags & F_CHUNKED) != 0;
    if (has_length && p->content_length > h->lim.max_body) {
        /* Refused before a byte of it is read. */
        hd_set_fail(c, 413, "request body larger than %zu bytes", h->lim.max_body);
        return -1;
    }
    /* Another Transfer-Encoding is the parser's to refuse (400), below. */
    if (!has_length && !chunked && !p->uses_transfer_encoding && hd_method_needs_length(p->method))
        return hd_set_fail(c, 411, "%s needs Content-Length or chunked Transfer-Encoding",
                           http_method_str((enum http_method)p->method));
    int has_body = chunked || (has_length && p->content_length > 0);
    const char *expect = httpd_req_header(r, "expect");
    if (expect && (r->http_major > 1 || r->http_minor >= 1)) {
        if (!hd_ieq(expect, "100-continue")) return hd_set_fail(c, 417, "unsupported expectation");
        r->continue_wanted = has_body;
    }
    if (has_length && p->content_length > 0) {
        /* Sized by what was announced, up to a point: an announcement alone
         * must not make every connection allocate max_body. */
        size_t cap = (size_t)p->content_length + 1;
        if (cap > HD_BODY_PREALLOC) cap = HD_BODY_PREALLOC;
        r->body = malloc(cap);
        if (!r->body) return hd_oom(c);
        r->body_cap = cap;
    }
    c->phase = HD_PHASE_BODY;
    c->phase_since = uv_now(h->loop);
    return 0;
}

static int hd_on_body(http_parser *p, const char *at, size_t len) {
    hd_conn *c = p->data;
    httpd_req *r = c->cur;
    size_t max = c->h->lim.max_body;
    if (len > max || r->body_len > max - len)
        return hd_set_fail(c, 413, "request body larger than %zu bytes", max);
    if (r->body_len + len + 1 > r->body_cap) {
        size_t cap = r->body_cap ? r->body_cap * 2 : 4096;
        while (cap < r->body_len + len + 1)
            cap *= 2;
        if (cap > max + 1) cap = max + 1;
        /* p->content_length counts down what is still to come. */
        if (!(p->flags & F_CHUNKED) && r->body_len + len + p->content_length + 1 < cap)
            cap = r->body_len + len + p->content_length + 1;
        char *b = realloc(r->body, cap);
        if (!b) return hd_oom(c);
        r->body = b;
        r->body_cap = cap;
    }
    memcpy(r->body + r->body_len, at, len);
    r->body_len += len;
    r->continue_wanted = 0; /* the client did not wait for it */
    return 0;
}

static int hd_on_message_complete(http_parser *p) {
    hd_conn *c = p->data;
    httpd_req *r = c->cur;
    if (r->body) r->body[r->body_len] = 0;
    r->state = HD_COMPLETE;
    r->continue_wanted = 0;
    c->cur = NULL;
    c->phase = HD_PHASE_IDLE;
    c->served++;
    c->h->stats.requests_total++;
    if (r->close_after) {
        /* Nothing after this request is read as HTTP. */
        c->no_more = 1;
        http_parser_pause(p, 1);
    } else if (c->q_len >= c->h->lim.max_pipelined) {
        http_parser_pause(p, 1);
    }
    return 0;
}

static const http_parser_settings hd_settings = {
    .on_message_begin = hd_on_message_begin,
    .on_url = hd_on_url,
    .on_header_field = hd_on_header_field,
    .on_header_value = hd_on_header_value,
    .on_headers_complete = hd_on_headers_complete,
    .on_body = hd_on_body,
    .on_message_complete = hd_on_message_complete,
};

/* ---------------------------------------------------------------- answers */

int httpd_respond(httpd_req *req, int status, const char *content_type, const void *body,
                  size_t len, const char *const *extra_headers) {
    if (!req || req->state != HD_HANDLING) return CD_ERR_INVALID;
    if (status < 200 || status > 599 || !hd_text_ok(content_type) || (len && !body))
        return CD_ERR_INVALID;
    for (size_t i = 0; extra_headers && extra_headers[i]; i++)
        if (!hd_header_line_ok(extra_headers[i], 0)) return CD_ERR_INVALID;
    hd_conn *c = req->conn;
    if (!c) {
        hd_req_free(req);
        return 0;
    }
    if (c->draining && c->q_tail == req) req->close_after = 1;
    int e = hd_req_build(c->h, req, status, content_type, body, len, extra_headers);
    if (e < 0) return e;
    req->state = HD_ANSWERED;
    c->pending_bytes += req->resp_len;
    hd_conn_want_flush(c);
    return 0;
}

int httpd_respond_json_error(httpd_req *req, int status, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    char *reason = NULL;
    int n = vasprintf(&reason, fmt, ap);
    va_end(ap);
    if (n < 0) return CD_ERR_NOMEM;
    size_t len = 0;
    char *body = hd_json_error_body(reason, &len);
    free(reason);
    if (!body) return CD_ERR_NOMEM;
    int e = httpd_respond(req, status, "application/json", body, len, NULL);
    free(body);
    return e;
}

/* ---------------------------------------------------------------- streams */

int httpd_upgrade(httpd_req *req, const char *const *extra_headers, const httpd_stream_cbs *cbs,
                  void *opaque, httpd_stream **out) {
    if (!req || req->state != HD_HANDLING || !req->upgrade || !cbs || !cbs->on_data)
        return CD_ERR_INVALID;
    for (size_t i = 0; extra_headers && extra_headers[i]; i++)
        if (!hd_header_line_ok(extra_headers[i], 1)) return CD_ERR_INVALID;
    hd_conn *c = req->conn;
    if (!c) {
        hd_req_free(req);
        return CD_ERR_IO;
    }
    req->close_after = 0;
    int e = hd_req_build(c->h, req, 101, NULL, NULL, 0, extra_headers);
    if (e < 0) return e;
    req->state = HD_ANSWERED;
    c->pending_bytes += req->resp_len;
    c->stream = 1;
    c->stream_cbs = *cbs;
    c->stream_opaque = opaque;
    hd_conn_want_flush(c);
    hd_conn_arm_timer(c);
    *out = c;
    return 0;
}

int httpd_stream_write(httpd_stream *s, const void *data, size_t len) {
    if (s->closing || s->lingering || s->draining || (s->q_tail && s->q_tail->close_after))
        return CD_ERR_IO;
    if (len == 0) return 0;
    /* One allocation per write: the bytes live behind the queue entry. */
    httpd_req *r = malloc(sizeof(*r) + len);
    if (!r) return CD_ERR_NOMEM;
    memset(r, 0, sizeof(*r));
    r->conn = s;
    r->resp = (char *)(r + 1);
    r->resp_inline = 1;
    memcpy(r->resp, data, len);
    r->resp_len = len;
    r->state = HD_ANSWERED;
    hd_queue_push(s, r);
    s->pending_bytes += len;
    hd_conn_want_flush(s);
    return 0;
}

size_t httpd_stream_pending(const httpd_stream *s) {
    return s->pending_bytes;
}

const char *httpd_stream_peer(const httpd_stream *s) {
    return s->peer;
}

void httpd_stream_close(httpd_stream *s) {
    if (s->closing || s->lingering || s->stream_closing) return;
    s->stream_closing = 1;
    s->linger_since = uv_now(s->h->loop);
    if (s->q_tail) {
        s->q_tail->close_after = 1; /* after the last queued write */
        hd_conn_want_flush(s);
    } else if (!s->writing) {
        hd_conn_linger(s);
    } else {
        s->draining = 1; /* on_write lingers once the queue is empty */
    }
    hd_conn_arm_timer(s);
}

/* ------------------------------------------------------------------ server */

static void hd_conn_reject(hd_conn *c) {
    c->rejected = 1;
    c->phase = HD_PHASE_IDLE;
    c->fail_status = 503;
    hd_conn_fail(c, 503, "too many connections");
    hd_conn_flush(c);
    hd_conn_arm_timer(c);
}

static void hd_format_peer(hd_conn *c) {
    struct sockaddr_storage ss;
    int len = sizeof(ss);
    char ip[64] = "?";
    int port = 0;
    if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &len) == 0) {
        if (ss.ss_family == AF_INET6) {
            struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
            uv_ip6_name(a, ip, sizeof(ip));
            port = ntohs(a->sin6_port);
            snprintf(c->peer, sizeof(c->peer), "[%s]:%d", ip, port);
            return;
        }
        struct sockaddr_in *a = (struct sockaddr_in *)&ss;
        uv_ip4_name(a, ip, sizeof(ip));
        port = ntohs(a->sin_port);
    }
    snprintf(c->peer, sizeof(c->peer), "%s:%d", ip, port);
}

static void hd_on_connection(uv_stream_t *server, int status) {
    httpd *h = container_of((uv_tcp_t *)server, httpd, listener);
    if (status < 0) {
        /* EMFILE and friends: the connection waits in the backlog. */
        LOG_WARN("httpd: accept: %s", uv_strerror(status));
        return;
    }
    hd_conn *c = calloc(1, sizeof(*c));
    if (!c) {
        LOG_WARN("httpd: accept: out of memory");
        return;
    }
    c->h = h;
    uv_tcp_init(h->loop, &c->tcp);
    uv_timer_init(h->loop, &c->timer);
    c->handles = 2;
    c->next = h->conns;
    if (h->conns) h->conns->prev = c;
    h->conns = c;
    h->conn_count++;
    h->serving++;
    h->stats.connections_open++;
    c->idle_since = uv_now(h->loop);
    int e = uv_accept(server, (uv_stream_t *)&c->tcp);
    if (e < 0) {
        LOG_WARN("httpd: accept: %s", uv_strerror(e));
        hd_conn_close(c);
        return;
    }
    h->stats.connections_total++;
    uv_tcp_nodelay(&c->tcp, 1);
    hd_format_peer(c);
    if (h->serving > h->lim.max_connections) {
        h->serving--;
        if (h->stats.connections_open > h->lim.max_connections + HD_REJECT_SLACK) {
            c->rejected = 1;
            h->stats.rejected_limits++;
            hd_conn_close(c);
            return;
        }
        hd_conn_reject(c);
        return;
    }
    http_parser_init(&c->parser, HTTP_REQUEST);
    c->parser.data = c;
    hd_conn_start_reading(c);
    hd_conn_arm_timer(c);
}

static int hd_parse_listen(const char *addr, struct sockaddr_storage *ss) {
    char host[64];
    const char *port_s;
    if (addr[0] == '[') {
        const char *end = strchr(addr, ']');
        if (!end || end[1] != ':' || (size_t)(end - addr - 1) >= sizeof(host)) return -1;
        memcpy(host, addr + 1, (size_t)(end - addr - 1));
        host[end - addr - 1] = 0;
        port_s = end + 2;
    } else {
        const char *colon = strrchr(addr, ':');
        if (!colon || colon == addr || (size_t)(colon - addr) >= sizeof(host)) return -1;
        memcpy(host, addr, (size_t)(colon - addr));
        host[colon - addr] = 0;
        port_s = colon + 1;
    }
    if (!*port_s || strlen(port_s) > 5) return -1;
    int port = 0;
    for (const char *p = port_s; *p; p++) {
        if (*p < '0' || *p > '9') return -1;
        port = port * 10 + (*p - '0');
    }
    if (port > 65535) return -1;
    if (addr[0] == '[') return uv_ip6_addr(host, port, (struct sockaddr_in6 *)ss);
    return uv_ip4_addr(host, port, (struct sockaddr_in *)ss);
}

int httpd_start(httpd **out, uv_loop_t *loop, const char *addr, const httpd_limits *limits,
                httpd_handler handler, void *opaque, char *errbuf, size_t errlen) {
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss));
    if (!addr || hd_parse_listen(addr, &ss) < 0) {
        snprintf(errbuf, errlen,
                 "listen %s: not a numeric host:port (\"127.0.0.1:8083\", "
                 "\"[::1]:8083\")",
                 addr ? addr : "(null)");
        return CD_ERR_INVALID;
    }
    if (!handler) {
        snprintf(errbuf, errlen, "listen %s: no handler", addr);
        return CD_ERR_INVALID;
    }
    /* Bound and listening before any libuv handle exists, so that a failure
     * leaves nothing on the loop to close. */
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(errbuf, errlen, "listen %s: %s", addr, uv_strerror(-errno));
        return -errno;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    socklen_t alen =
        ss.ss_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
    if (bind(fd, (struct sockaddr *)&ss, alen) < 0 || listen(fd, HD_BACKLOG) < 0) {
        int e = -errno;
        close(fd);
        snprintf(errbuf, errlen, "listen %s: %s", addr, uv_strerror(e));
        return e;
    }
    struct sockaddr_storage bound;
    socklen_t blen = sizeof(bound);
    getsockname(fd, (struct sockaddr *)&bound, &blen);

    httpd *h = calloc(1, sizeof(*h));
    if (!h) {
        close(fd);
        snprintf(errbuf, errlen, "listen %s: out of memory", addr);
        return CD_ERR_NOMEM;
    }
    h->loop = loop;
    if (limits)
        h->lim = *limits;
    else
        httpd_limits_default(&h->lim);
    if (h->lim.max_pipelined == 0) h->lim.max_pipelined = 1;
    h->handler = handler;
    h->opaque = opaque;
    h->port = ntohs(bound.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&bound)->sin6_port
                                                : ((struct sockaddr_in *)&bound)->sin_port);
    uv_tcp_init(loop, &h->listener);
    uv_idle_init(loop, &h->flush_idle);
    h->listener_open = 1;
    h->idle_open = 1;
    int e = uv_tcp_open(&h->listener, fd);
    if (e == 0) e = uv_listen((uv_stream_t *)&h->listener, HD_BACKLOG, hd_on_connection);
    if (e < 0) {
        /* Not expected once bind and listen worked; the handles are closed
         * on the loop and h goes with them. */
        snprintf(errbuf, errlen, "listen %s: %s", addr, uv_strerror(e));
        httpd_close(h, NULL, NULL);
        return e;
    }
    *out = h;
    return 0;
}

int httpd_port(const httpd *h) {
    return h->port;
}

const httpd_stats *httpd_get_stats(const httpd *h) {
    return &h->stats;
}

static void hd_listener_closed(uv_handle_t *handle) {
    httpd *h = container_of((uv_tcp_t *)handle, httpd, listener);
    h->listener_open = 0;
    hd_maybe_finish(h);
}

void httpd_stop_accepting(httpd *h) {
    if (!h->listener_open || h->listener_closing) return;
    h->listener_closing = 1;
    uv_close((uv_handle_t *)&h->listener, hd_listener_closed);
}

static void hd_idle_closed(uv_handle_t *handle) {
    httpd *h = container_of((uv_idle_t *)handle, httpd, flush_idle);
    h->idle_open = 0;
    hd_maybe_finish(h);
}

/* Frees h once it is closing and its last handle has closed.  Always the
 * last thing a caller does with h.  Never runs inside httpd_close itself:
 * at least the idle handle's close callback is still to come. */
static void hd_maybe_finish(httpd *h) {
    if (!h->closing || h->conn_count > 0 || h->listener_open) return;
    if (h->idle_open) {
        if (!h->idle_closing) {
            h->idle_closing = 1;
            uv_close((uv_handle_t *)&h->flush_idle, hd_idle_closed);
        }
        return;
    }
    void (*on_closed)(void *) = h->on_closed;
    void *opaque = h->closed_opaque;
    free(h);
    if (on_closed) on_closed(opaque);
}

/* Graceful close of one connection: read nothing more, drop what the
 * handler has not seen, and close once the rest is answered and written. */
static void hd_conn_drain(hd_conn *c) {
    if (c->closing || c->lingering || c->draining) return;
    if (c->stream) {
        httpd_stream_close(c);
        return;
    }
    c->draining = 1;
    c->no_more = 1;
    c->paused = 0;
    hd_conn_stop_reading(c);
    hd_conn_drop_pending(c);
    if (c->cur && !c->cur->queued) hd_req_free(c->cur);
    c->cur = NULL;
    c->phase = HD_PHASE_IDLE;
    hd_queue_drop_unhandled(c);
    if (c->q_len == 0) {
        hd_conn_close(c);
        return;
    }
    /* Everything left may already be in the uv_write (q_tail NULL). */
    if (c->q_tail && c->q_tail->state == HD_HANDLING) c->q_tail->close_after = 1;
    hd_conn_arm_timer(c);
}

void httpd_close(httpd *h, void (*on_closed)(void *opaque), void *opaque) {
    if (h->closing) return;
    h->closing = 1;
    h->on_closed = on_closed;
    h->closed_opaque = opaque;
    httpd_stop_accepting(h);
    /* Closing a connection only starts its handles' close: the list stays
     * intact until their callbacks run. */
    for (hd_conn *c = h->conns; c; c = c->next)
        hd_conn_drain(c);
    hd_maybe_finish(h);
}

void httpd_close_now(httpd *h) {
    if (!h->closing) httpd_close(h, NULL, NULL);
    for (hd_conn *c = h->conns; c; c = c->next)
        hd_conn_close(c);
    hd_maybe_finish(h);
}
