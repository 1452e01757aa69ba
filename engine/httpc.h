/*
 * HTTP client room: libcurl's multi interface driven by the libuv loop, so
 * sinks talk HTTP (and AWS APIs, signed with SigV4) without blocking and
 * without an SDK.  One httpc per loop owns one CURLM (and so one connection
 * cache: keep-alive connections are shared by every user of that loop), one
 * uv_timer for curl's timeouts and a uv_poll per socket curl asks to watch.
 * A pool bounds how many requests one user (typically one sink instance)
 * has in flight; the rest wait in the pool, first in, first out.
 *
 * Everything here runs on the loop's thread.  Callbacks follow libuv's rule:
 * a function that takes one either returns an error and never calls it, or
 * returns 0 and calls it exactly once, later, from the loop (or from
 * httpc_pool_free / httpc_close, which cancel).
 *
 * SigV4: a request with aws_sigv4 ("aws:amz:REGION:SERVICE") is signed by
 * engine/sigv4.c, not by libcurl 7.88's CURLOPT_AWS_SIGV4 (which signs the
 * path and query exactly as sent and sorts whole header lines, so API
 * Gateway's "/@connections/{id}" could never verify).  It signs `host`
 * (sent by us, so the signed value is the sent one), `x-amz-date`,
 * `x-amz-security-token` when there is a token, and every header in
 * httpc_request.headers (none of the ones curl adds itself: pass
 * Content-Type), and hashes the body (or takes an `x-amz-content-sha256`
 * header's value, as S3 wants).  The signing key is derived once per UTC
 * day and kept per pool.  Authorization and X-Amz-Date are the signer's:
 * httpc_submit refuses them in headers.
 */
#ifndef CONNECTD_HTTPC_H
#define CONNECTD_HTTPC_H

#include <connectd/plugin.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

/* Errors a response can carry besides the CD_ERR_* ones (all negative). */
enum {
    HTTPC_ERR_CANCELED = -125, /* ECANCELED: httpc_pool_free or httpc_close */
    HTTPC_ERR_TOO_LARGE = -27, /* EFBIG: the body went over max_response_bytes */
    /* Transport errors are -(1000 + CURLcode), so curl's own code survives. */
    HTTPC_ERR_CURL_BASE = -1000,
    HTTPC_ERR_TIMEOUT = -1028, /* CURLE_OPERATION_TIMEDOUT: timeout_ms expired */
};
#define HTTPC_ERR_FROM_CURL(code) (HTTPC_ERR_CURL_BASE - (int)(code))
#define HTTPC_ERR_IS_CURL(err)    ((err) <= HTTPC_ERR_CURL_BASE)
#define HTTPC_ERR_CURL_CODE(err)  (HTTPC_ERR_CURL_BASE - (err))

#define HTTPC_DEFAULT_TIMEOUT_MS     30000
#define HTTPC_DEFAULT_MAX_RESPONSE   (16u * 1024 * 1024)
#define HTTPC_MAX_HOST_CONNECTIONS   64
#define HTTPC_MAX_CACHED_CONNECTIONS 256

typedef struct httpc httpc;
typedef struct httpc_pool httpc_pool;

typedef struct httpc_request {
    const char *method;         /* NULL: GET */
    const char *url;            /* http:// or https:// only */
    const char *const *headers; /* "Name: value", NULL-terminated; may be NULL */
    const void *body;           /* may be NULL when body_len is 0 */
    size_t body_len;
    uint64_t timeout_ms;           /* once with curl, incl. connect; not the pool wait; 0: 30 s */
    size_t max_response_bytes;     /* body cap; 0: 16 MiB */
    const char *aws_sigv4;         /* e.g. "aws:amz:eu-west-1:dynamodb"; NULL: unsigned */
    const char *aws_access_key;    /* required with aws_sigv4 */
    const char *aws_secret_key;    /* required with aws_sigv4 */
    const char *aws_session_token; /* sent (and signed) as X-Amz-Security-Token; may be NULL */
} httpc_request;

/*
 * One outcome.  Exactly one of `status` and `error` is non-zero: a status
 * means a complete response arrived (whatever its code); an error means
 * none did (a response cut short, or over its cap, reports the error and
 * status 0).  Every pointer is valid only during the callback.
 */
typedef struct httpc_response {
    int status;                /* 0 when no (complete) HTTP response */
    int error;                 /* 0, or HTTPC_ERR_* / CD_ERR_* */
    const char *error_message; /* NULL when error is 0 */
    const char *body;          /* never NULL; NUL-terminated after body_len bytes */
    size_t body_len;
    const char *content_type; /* header value or NULL */
    const char *retry_after;  /* header value or NULL */
    double total_ms;          /* curl's transfer time (0 when it never started) */
    double queued_ms;         /* time spent waiting in the pool before that */
} httpc_response;

typedef void (*httpc_cb)(void *opaque, const httpc_response *resp);

/* Creates the client for `loop` (one per loop).  Returns 0 and sets *out,
 * or negative with errbuf.  The caller owns *out until httpc_close. */
int httpc_new(httpc **out, uv_loop_t *loop, char *errbuf, size_t errlen);

/* Starts closing: every pool still open is freed as by httpc_pool_free (so
 * each queued or in-flight request gets its callback once, with
 * HTTPC_ERR_CANCELED, before this returns), every uv handle is closed, and
 * once the last close callback ran the client is freed and on_closed (may
 * be NULL) is called once.  Pool pointers must not be used after this call;
 * a second call is ignored.  Safe from inside a response callback. */
void httpc_close(httpc *c, void (*on_closed)(void *opaque), void *opaque);

/* A concurrency bound for one user: at most max_in_flight (>= 1) requests of
 * this pool are with curl at once; later ones queue here in FIFO order.
 * Returns NULL when out of memory, max_in_flight is 0 or c is closing.  The
 * caller owns the pool until httpc_pool_free (or httpc_close). */
httpc_pool *httpc_pool_new(httpc *c, size_t max_in_flight);

/* Frees the pool.  Requests still queued or in flight are cancelled: each
 * gets its callback once, with HTTPC_ERR_CANCELED, before this returns.
 * Safe from inside the pool's own callbacks (the memory then goes when the
 * callback returns).  NULL is ignored. */
void httpc_pool_free(httpc_pool *p);

/* Requests of this pool with curl right now, and waiting behind them. */
size_t httpc_pool_in_flight(const httpc_pool *p);
size_t httpc_pool_queued(const httpc_pool *p);

/* Submits a request; everything in *r is copied before this returns.
 * Returns 0 and later calls cb exactly once from the loop, never from
 * inside httpc_submit; or returns negative with errbuf and never calls cb:
 * CD_ERR_INVALID (not an http(s) URL, a malformed header or method, SigV4
 * without keys or with an Authorization header), CD_ERR_UNSUPPORTED (a
 * signed request libcurl would sign wrongly, see above), CD_ERR_BUSY (the
 * client is closing, or the pool is being freed: from its own callbacks),
 * CD_ERR_NOMEM, CD_ERR_IO (curl refused the transfer). */
int httpc_submit(httpc_pool *p, const httpc_request *r, httpc_cb cb, void *opaque, char *errbuf,
                 size_t errlen);

/* Whether trying the same request again later may succeed: 1 for
 * connection errors and timeouts (status 0), 408, 429 and 5xx; 0 for other
 * statuses and for errors a retry cannot fix (body over its cap, a URL or
 * option curl rejects).  Cancellation counts as retriable: the request was
 * not done, and whoever owns the record decides what happens next. */
int httpc_retriable(const httpc_response *r);

#endif
