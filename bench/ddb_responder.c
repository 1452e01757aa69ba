/* ddb_responder: a fast loopback stand-in for DynamoDB's BatchWriteItem, for
 * bench.py's consume → sink-dynamodb scenario and its Node.js reference.
 *
 *   ddb_responder PORTFILE
 *
 * Listens on 127.0.0.1:<free port> (written to PORTFILE), answers every POST
 * (any method but GET) with 200 and a valid empty BatchWriteItem response
 * ({"UnprocessedItems":{}}), HTTP/1.1 keep-alive, pipelining-safe, without
 * checking signatures.  Bodies are read whole: Content-Length, chunked
 * transfer coding, and "Expect: 100-continue" (answered with 100 Continue).
 * It counts what it was sent: every PutRequest's "eventId" (an S attribute,
 * found as by the regex
 *   "eventId"\s*:\s*\{\s*"S"\s*:\s*"((?:[^"\\]|\\.)*)"
 * and kept as written, JSON escapes included), so bench.py can check that
 * every record arrived, and how many times.
 *   GET /_count  {"requests": N, "items": N, "last_item_wall": F, "distinct": N}
 *                (last_item_wall: wall-clock seconds of the request that
 *                brought the last new eventId, null before the first)
 *   GET /_ids    the distinct eventIds, sorted, one a line
 * Single-threaded libuv; SIGTERM or SIGINT stops it (exit status 0). */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <uv.h>

#define READ_CHUNK   (64 * 1024)
#define MAX_HEAD     (64 * 1024)
#define MAX_BODY     (256u * 1024 * 1024)
#define RESPONSE_MAX 512

static const char BODY[] = "{\"UnprocessedItems\":{}}";
static char answer[RESPONSE_MAX];
static size_t answer_len;

/* ------------------------------------------------------------ the id set */

typedef struct {
    uint64_t off;  /* into arena */
    uint32_t hash; /* 0: empty slot */
    uint32_t len;
} slot_t;

static struct {
    slot_t *slots;
    size_t cap; /* power of two */
    size_t count;
    char *arena;
    size_t arena_len, arena_cap;
} ids;

static uint64_t requests, items;
static double last_item_wall = -1;

static void *xrealloc(void *p, size_t n) {
    void *q = realloc(p, n);
    if (!q) {
        fprintf(stderr, "ddb_responder: out of memory (%zu bytes)\n", n);
        exit(1);
    }
    return q;
}

static uint32_t hash_bytes(const char *s, size_t n) {
    uint64_t h = 1469598103934665603ull; /* FNV-1a, then a final mix */
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    return (uint32_t)h ? (uint32_t)h : 1;
}

static void ids_grow(void) {
    size_t ncap = ids.cap ? ids.cap * 2 : 1 << 16;
    slot_t *ns = calloc(ncap, sizeof *ns);
    if (!ns) {
        fprintf(stderr, "ddb_responder: out of memory (id set of %zu)\n", ncap);
        exit(1);
    }
    for (size_t i = 0; i < ids.cap; i++) {
        if (!ids.slots[i].hash) continue;
        size_t j = ids.slots[i].hash & (ncap - 1);
        while (ns[j].hash)
            j = (j + 1) & (ncap - 1);
        ns[j] = ids.slots[i];
    }
    free(ids.slots);
    ids.slots = ns;
    ids.cap = ncap;
}

/* Adds the id; returns 1 when it was new. */
static int ids_add(const char *s, size_t n) {
    if ((ids.count + 1) * 2 > ids.cap) ids_grow();
    uint32_t h = hash_bytes(s, n);
    size_t j = h & (ids.cap - 1);
    while (ids.slots[j].hash) {
        slot_t *e = &ids.slots[j];
        if (e->hash == h && e->len == n && memcmp(ids.arena + e->off, s, n) == 0) return 0;
        j = (j + 1) & (ids.cap - 1);
    }
    if (ids.arena_len + n > ids.arena_cap) {
        size_t ncap = ids.arena_cap ? ids.arena_cap : 1 << 20;
        while (ids.arena_len + n > ncap)
            ncap *= 2;
        ids.arena = xrealloc(ids.arena, ncap);
        ids.arena_cap = ncap;
    }
    memcpy(ids.arena + ids.arena_len, s, n);
    ids.slots[j] = (slot_t){.hash = h, .off = ids.arena_len, .len = (uint32_t)n};
    ids.arena_len += n;
    ids.count++;
    return 1;
}

/* ------------------------------------------------- the eventId "regex" */

static int is_space(char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

static const char *skip_space(const char *p, const char *end) {
    while (p < end && is_space(*p))
        p++;
    return p;
}

/* Matches :\s*\{\s*"S"\s*:\s*"((?:[^"\\]|\\.)*)" at p (just after
 * "eventId"); on success sets the id and returns the end of the match. */
static const char *match_rest(const char *p, const char *end, const char **id, size_t *idlen) {
    p = skip_space(p, end);
    if (p >= end || *p++ != ':') return NULL;
    p = skip_space(p, end);
    if (p >= end || *p++ != '{') return NULL;
    p = skip_space(p, end);
    if (end - p < 3 || memcmp(p, "\"S\"", 3) != 0) return NULL;
    p = skip_space(p + 3, end);
    if (p >= end || *p++ != ':') return NULL;
    p = skip_space(p, end);
    if (p >= end || *p++ != '"') return NULL;
    const char *start = p;
    while (p < end) {
        char c = *p;
        if (c == '"') {
            *id = start;
            *idlen = (size_t)(p - start);
            return p + 1;
        }
        if (c == '\\') {
            /* \\. : the regex's '.' matches any byte but a newline */
            if (p + 1 >= end || p[1] == '\n') return NULL;
            p += 2;
        } else {
            p++;
        }
    }
    return NULL;
}

static void handle_body(const char *body, size_t len) {
    static const char key[] = "\"eventId\"";
    const char *p = body, *end = body + len;
    int fresh = 0;
    requests++;
    while (p < end) {
        const char *k = memmem(p, (size_t)(end - p), key, sizeof key - 1);
        if (!k) break;
        const char *id;
        size_t idlen;
        const char *m = match_rest(k + sizeof key - 1, end, &id, &idlen);
        if (!m) {
            p = k + 1;
            continue;
        }
        items++;
        fresh |= ids_add(id, idlen);
        p = m;
    }
    if (fresh) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        last_item_wall = (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
    }
}

/* ------------------------------------------------------------- connections */

enum { ST_HEAD, ST_BODY, ST_CHUNK_SIZE, ST_CHUNK_DATA, ST_CHUNK_CRLF, ST_TRAILER };

typedef struct {
    uv_tcp_t tcp;
    char *in; /* received, not yet consumed: in[pos, len) */
    size_t pos, len, cap;
    size_t scanned; /* of the head: no "\r\n\r\n" before in + pos + scanned */
    int state;
    int is_get, want_close, expect_continue;
    char path[64];
    size_t clen, remaining; /* body length / left of the current chunk */
    char *body;             /* chunked bodies are decoded here */
    size_t body_len, body_cap;
    char *out; /* responses of this read, written at its end */
    size_t out_len, out_cap;
    int closing;
} conn_t;

typedef struct {
    uv_write_t req;
    size_t len;
    char data[];
} wreq_t;

static uv_loop_t *loop;
static uv_tcp_t server;
static uv_signal_t sigterm, sigint;

static void out_append(conn_t *c, const char *s, size_t n) {
    if (c->out_len + n > c->out_cap) {
        size_t ncap = c->out_cap ? c->out_cap : 4096;
        while (c->out_len + n > ncap)
            ncap *= 2;
        c->out = xrealloc(c->out, ncap);
        c->out_cap = ncap;
    }
    memcpy(c->out + c->out_len, s, n);
    c->out_len += n;
}

static void on_closed(uv_handle_t *h) {
    conn_t *c = h->data;
    free(c->in);
    free(c->body);
    free(c->out);
    free(c);
}

static void conn_close(conn_t *c) {
    if (c->closing) return;
    c->closing = 1;
    uv_close((uv_handle_t *)&c->tcp, on_closed);
}

static void on_written(uv_write_t *req, int status) {
    (void)status;
    free(req);
}

static void on_shutdown(uv_shutdown_t *req, int status) {
    (void)status;
    conn_t *c = req->handle->data;
    free(req);
    conn_close(c);
}

/* Writes what out holds: uv_try_write first, a queued copy of the rest when
 * the socket is full (or earlier writes are still queued). */
static void flush(conn_t *c) {
    if (!c->out_len || c->closing) return;
    size_t done = 0;
    if (uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp) == 0) {
        uv_buf_t b = uv_buf_init(c->out, (unsigned)c->out_len);
        int r = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
        if (r > 0)
            done = (size_t)r;
        else if (r != UV_EAGAIN) {
            c->out_len = 0;
            conn_close(c);
            return;
        }
    }
    if (done < c->out_len) {
        size_t n = c->out_len - done;
        wreq_t *w = xrealloc(NULL, sizeof *w + n);
        memcpy(w->data, c->out + done, n);
        w->len = n;
        uv_buf_t b = uv_buf_init(w->data, (unsigned)n);
        if (uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, on_written) != 0) {
            free(w);
            c->out_len = 0;
            conn_close(c);
            return;
        }
    }
    c->out_len = 0;
}

static void fmt_wall(char *buf, size_t n) {
    /* Python's repr: the fewest decimals that read back as the same double */
    if (last_item_wall < 0) {
        snprintf(buf, n, "null");
        return;
    }
    for (int d = 1; d <= 17; d++) {
        snprintf(buf, n, "%.*f", d, last_item_wall);
        if (strtod(buf, NULL) == last_item_wall) return;
    }
}

/* Python sorts bytes: memcmp, then the shorter first */
static int id_cmp(const void *a, const void *b) {
    const slot_t *x = a, *y = b;
    size_t n = x->len < y->len ? x->len : y->len;
    int r = memcmp(ids.arena + x->off, ids.arena + y->off, n);
    if (r) return r;
    return (x->len > y->len) - (x->len < y->len);
}

static void respond_get(conn_t *c) {
    char head[160];
    if (strcmp(c->path, "/_ids") == 0) {
        size_t total = 0;
        for (size_t i = 0; i < ids.cap; i++)
            if (ids.slots[i].hash) total += ids.slots[i].len + 1;
        /* Python: b"\n".join(sorted(ids)) + b"\n" (so "\n" alone when empty) */
        if (!ids.count) total = 1;
        int hn = snprintf(head, sizeof head,
                          "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                          "Content-Length: %zu\r\n\r\n",
                          total);
        out_append(c, head, (size_t)hn);
        slot_t *sorted = xrealloc(NULL, (ids.count ? ids.count : 1) * sizeof *sorted);
        size_t k = 0;
        for (size_t i = 0; i < ids.cap; i++)
            if (ids.slots[i].hash) sorted[k++] = ids.slots[i];
        qsort(sorted, k, sizeof *sorted, id_cmp);
        for (size_t i = 0; i < k; i++) {
            out_append(c, ids.arena + sorted[i].off, sorted[i].len);
            out_append(c, "\n", 1);
        }
        if (!k) out_append(c, "\n", 1);
        free(sorted);
        return;
    }
    char wall[64], body[256];
    fmt_wall(wall, sizeof wall);
    int bn = snprintf(body, sizeof body,
                      "{\"requests\": %llu, \"items\": %llu, \"last_item_wall\": %s, "
                      "\"distinct\": %zu}",
                      (unsigned long long)requests, (unsigned long long)items, wall, ids.count);
    int hn = snprintf(head, sizeof head,
                      "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                      "Content-Length: %d\r\n\r\n",
                      bn);
    out_append(c, head, (size_t)hn);
    out_append(c, body, (size_t)bn);
}

static void bad_request(conn_t *c, const char *why) {
    char msg[256];
    int n = snprintf(msg, sizeof msg,
                     "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\n"
                     "Content-Length: %zu\r\nConnection: close\r\n\r\n%s\n",
                     strlen(why) + 1, why);
    out_append(c, msg, (size_t)n);
    c->want_close = 1;
    fprintf(stderr, "ddb_responder: bad request: %s\n", why);
}

static int header_is(const char *name, size_t nlen, const char *want) {
    return nlen == strlen(want) && strncasecmp(name, want, nlen) == 0;
}

static int value_has(const char *v, size_t vlen, const char *token) {
    size_t tl = strlen(token);
    for (size_t i = 0; i + tl <= vlen; i++)
        if (strncasecmp(v + i, token, tl) == 0) return 1;
    return 0;
}

/* Parses the head in[pos, pos + hlen) (its "\r\n\r\n" included); returns 0,
 * or -1 after queueing a 400. */
static int parse_head(conn_t *c, const char *h, size_t hlen) {
    const char *end = h + hlen - 2; /* the last header line's "\r\n" stays */
    const char *eol = memchr(h, '\r', (size_t)(end - h));
    const char *sp1 = memchr(h, ' ', (size_t)(eol - h));
    if (!sp1) return bad_request(c, "no request line"), -1;
    const char *sp2 = memchr(sp1 + 1, ' ', (size_t)(eol - sp1 - 1));
    if (!sp2) sp2 = eol;
    c->is_get = (size_t)(sp1 - h) == 3 && memcmp(h, "GET", 3) == 0;
    size_t plen = (size_t)(sp2 - sp1 - 1);
    if (plen >= sizeof c->path) plen = sizeof c->path - 1;
    memcpy(c->path, sp1 + 1, plen);
    c->path[plen] = 0;
    int http10 = eol - sp2 >= 8 && memcmp(eol - 8, "HTTP/1.0", 8) == 0;
    c->want_close = http10;
    c->expect_continue = 0;
    c->clen = 0;
    int chunked = 0;
    const char *p = eol + 2;
    while (p < end) {
        const char *le = memchr(p, '\r', (size_t)(end - p));
        if (!le) le = end;
        const char *colon = memchr(p, ':', (size_t)(le - p));
        if (colon) {
            size_t nlen = (size_t)(colon - p);
            const char *v = colon + 1;
            while (v < le && (*v == ' ' || *v == '\t'))
                v++;
            size_t vlen = (size_t)(le - v);
            if (header_is(p, nlen, "content-length")) {
                char num[32];
                if (vlen == 0 || vlen >= sizeof num)
                    return bad_request(c, "bad Content-Length"), -1;
                memcpy(num, v, vlen);
                num[vlen] = 0;
                char *e;
                errno = 0;
                unsigned long long n = strtoull(num, &e, 10);
                while (*e == ' ' || *e == '\t')
                    e++;
                if (errno || *e || num[0] == '-' || n > MAX_BODY)
                    return bad_request(c, "bad Content-Length"), -1;
                c->clen = (size_t)n;
            } else if (header_is(p, nlen, "transfer-encoding")) {
                chunked = value_has(v, vlen, "chunked");
            } else if (header_is(p, nlen, "expect")) {
                c->expect_continue = value_has(v, vlen, "100-continue");
            } else if (header_is(p, nlen, "connection")) {
                if (value_has(v, vlen, "close"))
                    c->want_close = 1;
                else if (value_has(v, vlen, "keep-alive"))
                    c->want_close = 0;
            }
        }
        p = le + 2;
    }
    c->body_len = 0;
    c->state = chunked ? ST_CHUNK_SIZE : ST_BODY;
    return 0;
}

static void request_done(conn_t *c, const char *body, size_t len) {
    if (c->is_get)
        respond_get(c);
    else {
        handle_body(body, len);
        out_append(c, answer, answer_len);
    }
    c->state = ST_HEAD;
    c->scanned = 0;
}

static void body_append(conn_t *c, const char *s, size_t n) {
    if (c->body_len + n > c->body_cap) {
        size_t ncap = c->body_cap ? c->body_cap : 16384;
        while (c->body_len + n > ncap)
            ncap *= 2;
        c->body = xrealloc(c->body, ncap);
        c->body_cap = ncap;
    }
    memcpy(c->body + c->body_len, s, n);
    c->body_len += n;
}

/* Consumes whole requests from in[pos, len); returns -1 when the connection
 * should close once the queued output is written. */
static int process(conn_t *c) {
    for (;;) {
        char *p = c->in + c->pos;
        size_t avail = c->len - c->pos;
        switch (c->state) {
        case ST_HEAD: {
            size_t from = c->scanned > 3 ? c->scanned - 3 : 0;
            if (avail < 4) return 0;
            char *e = memmem(p + from, avail - from, "\r\n\r\n", 4);
            if (!e) {
                c->scanned = avail;
                if (avail > MAX_HEAD) return bad_request(c, "request head too large"), -1;
                return 0;
            }
            /* tolerate blank lines between pipelined requests */
            if (e == p) {
                c->pos += 4;
                continue;
            }
            size_t hlen = (size_t)(e - p) + 4;
            if (parse_head(c, p, hlen) != 0) return -1;
            c->pos += hlen;
            /* curl waits for this (or a timeout) before sending the body */
            if (c->expect_continue &&
                (c->state == ST_BODY ? c->len - c->pos < c->clen : c->len == c->pos)) {
                static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
                out_append(c, cont, sizeof cont - 1);
            }
            break;
        }
        case ST_BODY:
            if (avail < c->clen) return 0;
            c->pos += c->clen;
            request_done(c, p, c->clen);
            if (c->want_close) return -1;
            break;
        case ST_CHUNK_SIZE:
        case ST_TRAILER: {
            char *le = memmem(p, avail, "\r\n", 2);
            if (!le) {
                if (avail > MAX_HEAD) return bad_request(c, "chunk line too long"), -1;
                return 0;
            }
            size_t ll = (size_t)(le - p);
            c->pos += ll + 2;
            if (c->state == ST_TRAILER) {
                if (ll == 0) {
                    request_done(c, c->body, c->body_len);
                    if (c->want_close) return -1;
                }
                break;
            }
            char *e;
            errno = 0;
            unsigned long long n = strtoull(p, &e, 16);
            if (e == p || errno || (*e != '\r' && *e != ';' && *e != ' ') ||
                c->body_len + n > MAX_BODY)
                return bad_request(c, "bad chunk size"), -1;
            c->remaining = (size_t)n;
            c->state = n ? ST_CHUNK_DATA : ST_TRAILER;
            break;
        }
        case ST_CHUNK_DATA: {
            if (!avail) return 0;
            size_t n = avail < c->remaining ? avail : c->remaining;
            body_append(c, p, n);
            c->pos += n;
            c->remaining -= n;
            if (!c->remaining) c->state = ST_CHUNK_CRLF;
            break;
        }
        case ST_CHUNK_CRLF:
            if (avail < 2) return 0;
            if (p[0] != '\r' || p[1] != '\n') return bad_request(c, "no CRLF after chunk data"), -1;
            c->pos += 2;
            c->state = ST_CHUNK_SIZE;
            break;
        }
    }
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
    (void)suggested;
    conn_t *c = h->data;
    if (c->pos && c->pos == c->len) c->pos = c->len = 0;
    if (c->cap - c->len < READ_CHUNK) {
        if (c->pos) { /* compact */
            memmove(c->in, c->in + c->pos, c->len - c->pos);
            c->len -= c->pos;
            c->pos = 0;
        }
        if (c->cap - c->len < READ_CHUNK) {
            size_t ncap = c->cap ? c->cap * 2 : 2 * READ_CHUNK;
            while (ncap - c->len < READ_CHUNK)
                ncap *= 2;
            c->in = xrealloc(c->in, ncap);
            c->cap = ncap;
        }
    }
    *buf = uv_buf_init(c->in + c->len, (unsigned)(c->cap - c->len));
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
    (void)buf; /* in->data + len: see on_alloc */
    conn_t *c = s->data;
    if (nread < 0) {
        conn_close(c);
        return;
    }
    c->len += (size_t)nread;
    int r = process(c);
    flush(c);
    if (r < 0 && !c->closing) {
        uv_read_stop(s);
        uv_shutdown_t *req = xrealloc(NULL, sizeof *req);
        if (uv_shutdown(req, s, on_shutdown) != 0) {
            free(req);
            conn_close(c);
        }
    }
}

static void on_connection(uv_stream_t *srv, int status) {
    if (status < 0) return;
    conn_t *c = calloc(1, sizeof *c);
    if (!c) {
        fprintf(stderr, "ddb_responder: out of memory\n");
        exit(1);
    }
    uv_tcp_init(loop, &c->tcp);
    c->tcp.data = c;
    if (uv_accept(srv, (uv_stream_t *)&c->tcp) != 0) {
        conn_close(c);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
}

static void close_walk(uv_handle_t *h, void *arg) {
    (void)arg;
    if (uv_is_closing(h)) return;
    if (h->type == UV_TCP && h != (uv_handle_t *)&server)
        conn_close(h->data);
    else
        uv_close(h, NULL);
}

static void on_signal(uv_signal_t *s, int signum) {
    (void)s;
    (void)signum;
    uv_walk(loop, close_walk, NULL);
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s PORTFILE\n", argv[0]);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    int n = snprintf(answer, sizeof answer,
                     "HTTP/1.1 200 OK\r\nContent-Type: application/x-amz-json-1.0\r\n"
                     "x-amzn-RequestId: bench\r\nContent-Length: %zu\r\n\r\n%s",
                     sizeof BODY - 1, BODY);
    answer_len = (size_t)n;

    loop = uv_default_loop();
    struct sockaddr_in addr;
    uv_ip4_addr("127.0.0.1", 0, &addr);
    uv_tcp_init(loop, &server);
    int r = uv_tcp_bind(&server, (const struct sockaddr *)&addr, 0);
    if (r == 0) r = uv_listen((uv_stream_t *)&server, 1024, on_connection);
    if (r != 0) {
        fprintf(stderr, "ddb_responder: cannot listen on 127.0.0.1: %s\n", uv_strerror(r));
        return 1;
    }
    struct sockaddr_storage bound;
    int blen = sizeof bound;
    uv_tcp_getsockname(&server, (struct sockaddr *)&bound, &blen);
    int port = ntohs(((struct sockaddr_in *)&bound)->sin_port);

    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp", argv[1]);
    FILE *f = fopen(tmp, "w");
    if (!f || fprintf(f, "%d", port) < 0 || fclose(f) != 0 || rename(tmp, argv[1]) != 0) {
        fprintf(stderr, "ddb_responder: cannot write %s: %s\n", argv[1], strerror(errno));
        return 1;
    }

    uv_signal_init(loop, &sigterm);
    uv_signal_start(&sigterm, on_signal, SIGTERM);
    uv_signal_init(loop, &sigint);
    uv_signal_start(&sigint, on_signal, SIGINT);
    uv_run(loop, UV_RUN_DEFAULT);
    uv_loop_close(loop);
    return 0;
}
