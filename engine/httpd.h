/*
 * HTTP server room: the engine's one HTTP/1.1 server on the libuv loop,
 * shared by the admin API, source-http and the WebSocket server.
 * http-parser reads requests off uv_tcp; a handler is called once per
 * complete request (head and whole body read) and answers it with
 * httpd_respond, right away or later from the loop (after a Kafka delivery
 * report, say).  Keep-alive and pipelining follow HTTP/1.1: responses on
 * one connection leave in request order whatever order they are answered
 * in.  Every limit (body, head, connections, read timeouts, pipelined
 * requests) is enforced with a response and a close, so a slow or hostile
 * client costs bounded memory and cannot hold a connection forever.
 *
 * Everything here runs on the loop thread; nothing is thread-safe.
 * Functions that can fail return 0 or a negative CD_ERR_* / libuv error.
 */
#ifndef CONNECTD_HTTPD_H
#define CONNECTD_HTTPD_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

typedef struct httpd httpd;
typedef struct httpd_req httpd_req;

typedef struct httpd_limits {
    size_t max_body;            /* bytes of request body (decoded, for chunked) */
    size_t max_header_bytes;    /* request line + header lines */
    size_t max_headers;         /* header lines per request */
    size_t max_connections;     /* open connections served; more get 503 */
    uint64_t header_timeout_ms; /* connect (or a request's first byte) to the end of its
                                   head; 0 = none */
    uint64_t body_timeout_ms;   /* end of the head to the end of the body; 0 = none */
    uint64_t idle_timeout_ms;   /* keep-alive wait for the next request, and a stalled
                                   response write; 0 = none */
    size_t max_pipelined;       /* requests queued per connection before reading pauses */
} httpd_limits;

/* 1 MiB body, 16 KiB of head in at most 100 headers, 10,000 connections,
 * 10 s to send a head, 30 s to send a body, 60 s keep-alive idle, 64
 * requests queued per connection. */
void httpd_limits_default(httpd_limits *l);

typedef struct httpd_stats {
    uint64_t connections_open;  /* accepted and not yet closed (503-rejected ones too) */
    uint64_t connections_total; /* accepted since start */
    uint64_t requests_total;    /* complete requests read */
    /* Responses queued on live connections (100 Continue included), by
     * class: [1] = 1xx .. [5] = 5xx; [0] is unused so that status / 100
     * indexes it. */
    uint64_t responses_by_class[6];
    uint64_t rejected_limits; /* 408, 411, 413, 431; 503 for too many connections */
    uint64_t bad_requests;    /* 400 (malformed) and 417 (unknown Expect) */
} httpd_stats;

/* Called on the loop once per complete request.  req is valid until it is
 * answered with httpd_respond (or httpd_respond_json_error), which must
 * happen exactly once, now or later; until then the req is the handler's,
 * even if the client goes away or the server is closed. */
typedef void (*httpd_handler)(httpd_req *req, void *opaque);

/* -------------------------------------------------------------- the request
 * Every string returned below is NUL-terminated, owned by req and valid
 * until req is answered. */

/* "GET", "POST", ... */
const char *httpd_req_method(const httpd_req *req);
/* The percent-decoded path without query or fragment, e.g. "/v1/events/a b";
 * an absolute-form target ("http://h/p") gives its path. */
const char *httpd_req_path(const httpd_req *req);
/* The request-target as sent, undecoded ("/v1/a%2Fb?x=1"): for logs, or to
 * tell an encoded '/' from a separator. */
const char *httpd_req_target(const httpd_req *req);
/* The raw query after '?' (not decoded), or NULL when the target has none. */
const char *httpd_req_query(const httpd_req *req);
/* The first query parameter named `name` (compared after decoding), its
 * value percent-decoded with '+' as space; "" for a bare "name"; NULL when
 * absent. */
const char *httpd_req_query_param(httpd_req *req, const char *name);
/* The first header named `name`, compared case-insensitively; NULL if absent. */
const char *httpd_req_header(const httpd_req *req, const char *name);
/* Number of header lines, and the i-th one (for logging or forwarding). */
size_t httpd_req_header_count(const httpd_req *req);
int httpd_req_header_at(const httpd_req *req, size_t i, const char **name, const char **value);
/* The whole body (chunked bodies decoded), NUL-terminated for convenience
 * (the NUL is not counted in *len); "" with *len = 0 when there is none. */
const char *httpd_req_body(const httpd_req *req, size_t *len);
/* The client's address, "127.0.0.1:51234" or "[::1]:51234". */
const char *httpd_req_peer(const httpd_req *req);

/* ------------------------------------------------------------- the answer */

/* Answers req: status (200..599), content_type (may be NULL: no
 * Content-Type), body of len bytes (may be NULL when len is 0) and
 * extra_headers, a NULL-terminated list of "Name: value" lines (may be
 * NULL; Content-Length, Transfer-Encoding and Connection are the server's
 * and refused).  Everything is copied.  Content-Length is always set
 * (except for 204 and 304), plus Date, and "Connection: close" when the
 * connection will close after this response; a HEAD request gets the
 * headers only.
 *
 * Call it from the handler or later from the loop.  Returns 0 and takes req
 * back: req must not be used again.  Returns CD_ERR_INVALID, sending nothing
 * and leaving req with the caller, for a bad status or a header that is not
 * one "Name: value" line; returns CD_ERR_INVALID for a req that was already
 * answered and whose response is still queued (a later double answer cannot
 * be detected: don't).  When the client is gone, or the server was closed,
 * this just frees req and returns 0. */
int httpd_respond(httpd_req *req, int status, const char *content_type, const void *body,
                  size_t len, const char *const *extra_headers);
/* Answers req with {"error": "<printf-formatted reason, JSON-escaped>"} as
 * application/json; same contract as httpd_respond. */
int httpd_respond_json_error(httpd_req *req, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* ------------------------------------------------- protocol switch (WebSocket)
 * A request carrying "Connection: upgrade" + "Upgrade: x" is the last one
 * its connection reads as HTTP.  The handler either answers it normally
 * (the connection then closes after the response) or switches protocols
 * with httpd_upgrade: the connection becomes a raw byte stream whose bytes
 * go to on_data and whose writes keep their order after the 101 response.
 * A stream has no timeouts and reads without pause: its owner keeps time
 * (pings) and bounds its send queue with httpd_stream_pending. */
typedef struct httpd_stream httpd_stream;

typedef struct httpd_stream_cbs {
    /* Bytes from the peer, valid only during the call.  Not called before
     * the 101 response is written. */
    void (*on_data)(httpd_stream *s, const char *data, size_t len, void *opaque);
    /* Called exactly once, from the loop, when the stream is gone (the peer
     * closed, an I/O error, httpd_stream_close, or the server closed);
     * s must not be used afterwards. */
    void (*on_closed)(httpd_stream *s, void *opaque);
} httpd_stream_cbs;

/* Non-zero when req asked to switch protocols ("Connection: upgrade" and an
 * "Upgrade" header); httpd_req_header(req, "upgrade") names the protocol. */
int httpd_req_is_upgrade(const httpd_req *req);
/* Answers req with "101 Switching Protocols" plus extra_headers (as for
 * httpd_respond) and turns its connection into a stream.  cbs is copied;
 * opaque is borrowed until on_closed.  Returns 0, *out and takes req back;
 * CD_ERR_INVALID when req is not an unanswered upgrade request or a header
 * is bad (req stays the caller's); CD_ERR_IO when the client is gone (req is
 * freed, no callback will come). */
int httpd_upgrade(httpd_req *req, const char *const *extra_headers, const httpd_stream_cbs *cbs,
                  void *opaque, httpd_stream **out);
/* Queues len bytes (copied) after everything written before; one uv_write
 * per loop pass carries what is queued.  Returns 0, or CD_ERR_IO once the
 * stream is closing. */
int httpd_stream_write(httpd_stream *s, const void *data, size_t len);
/* Bytes queued and not yet handed to the kernel: a caller bounds its send
 * queue with this (close a client that does not read). */
size_t httpd_stream_pending(const httpd_stream *s);
/* Writes what is queued, then closes; on_closed follows.  A peer that has
 * not read what is queued within 5 s is dropped (a client that stopped
 * reading cannot hold the connection). */
void httpd_stream_close(httpd_stream *s);
/* The client's address, as httpd_req_peer. */
const char *httpd_stream_peer(const httpd_stream *s);

/* ------------------------------------------------------------- the server */

/* Binds addr ("127.0.0.1:8083", "[::1]:8083", "0.0.0.0:0" for any free
 * port; numeric addresses only, so nothing blocks on DNS) with SO_REUSEADDR
 * and starts accepting on loop.  limits may be NULL for the defaults (it is
 * copied).  handler and opaque are borrowed until on_closed.  Returns 0 and
 * *out, or a negative error with errbuf like "listen 127.0.0.1:8083: address
 * already in use" and nothing to close. */
int httpd_start(httpd **out, uv_loop_t *loop, const char *addr, const httpd_limits *limits,
                httpd_handler handler, void *opaque, char *errbuf, size_t errlen);
/* The port actually bound (useful after listening on port 0). */
int httpd_port(const httpd *h);
/* Stops accepting new connections (closes the listening socket); open
 * connections go on being served. */
void httpd_stop_accepting(httpd *h);
/* Graceful close: stops accepting, closes idle connections at once and every
 * other one as soon as the requests it has already handed to the handler are
 * answered and written (a request still being received is dropped; a stream
 * closes once what is queued to it is written, so say goodbye in its
 * protocol first), then closes every handle, frees h and calls
 * on_closed(opaque) exactly once (may be NULL), always from a loop callback.
 * Requests still unanswered when their connection closes stay valid until
 * answered.  h must not be used after on_closed, nor passed here twice;
 * httpd_close_now may follow to cut the grace period short. */
void httpd_close(httpd *h, void (*on_closed)(void *opaque), void *opaque);
/* Drops every connection now (unanswered requests stay the handler's, and
 * answering them just frees them), then finishes as httpd_close does and
 * calls its on_closed.  Called without httpd_close first, it behaves as
 * httpd_close(h, NULL, NULL) followed by this. */
void httpd_close_now(httpd *h);
/* Counters, live; valid until h is freed. */
const httpd_stats *httpd_get_stats(const httpd *h);

#endif
