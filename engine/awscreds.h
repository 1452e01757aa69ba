/*
 * AWS credentials room: the chain every signed request takes its keys from,
 * resolved the way the AWS SDKs do, without one.
 *
 *   1. environment: AWS_ACCESS_KEY_ID + AWS_SECRET_ACCESS_KEY (and optional
 *      AWS_SESSION_TOKEN).  Static: read once, never refreshed.
 *   2. the ECS/EKS container endpoint:
 *      AWS_CONTAINER_CREDENTIALS_RELATIVE_URI -> http://169.254.170.2<uri>,
 *      else AWS_CONTAINER_CREDENTIALS_FULL_URI (https, or http to a loopback
 *      address or the ECS/EKS link-local hosts only, as the SDKs allow), with
 *      AWS_CONTAINER_AUTHORIZATION_TOKEN (or the contents of
 *      AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE, re-read on every fetch) as the
 *      Authorization header.  The JSON answer {"AccessKeyId",
 *      "SecretAccessKey", "Token", "Expiration": ISO-8601} is fetched with
 *      httpc on the loop and refreshed before Expiration: 5 minutes before,
 *      or after half the remaining lifetime when less than 10 minutes are
 *      left.  A failed refresh is retried with backoff (1 s doubling to 60 s)
 *      while the old keys stay in use until their Expiration.
 *
 * The first source configured wins (as in the SDKs, setting only one of the
 * two environment keys skips the environment).  Nothing is configured ->
 * aws_creds_new fails at once, naming everything it looked for, rather than
 * the first write failing later.  Secrets (keys, tokens, the authorization
 * token) never reach a log line or an error message.
 *
 * Everything runs on the loop's thread.
 */
#ifndef CONNECTD_AWSCREDS_H
#define CONNECTD_AWSCREDS_H

#include "httpc.h"

#include <stddef.h>
#include <uv.h>

/* The first fetch from the container endpoint: how often it is tried (a
 * response httpc_retriable calls retriable: 5xx, 408, 429, connection
 * errors and timeouts) before start-up fails, and the first wait between
 * tries (doubling).  A 4xx such as a wrong authorization token fails at
 * once. */
#define AWS_CREDS_FIRST_FETCH_ATTEMPTS 3
#define AWS_CREDS_FIRST_RETRY_MS       200
#define AWS_CREDS_FETCH_TIMEOUT_MS     5000
/* Refresh this long before Expiration; retries after a failed refresh. */
#define AWS_CREDS_REFRESH_BEFORE_MS (5 * 60 * 1000)
#define AWS_CREDS_REFRESH_RETRY_MS  1000
#define AWS_CREDS_REFRESH_RETRY_MAX (60 * 1000)

typedef struct aws_creds aws_creds;

/*
 * Reads the environment and picks the source; does no I/O.  Returns 0 and
 * sets *out (the caller owns it until aws_creds_close), or negative with
 * errbuf: CD_ERR_INVALID when no source is configured ("no AWS credentials:
 * AWS_ACCESS_KEY_ID not set; AWS_CONTAINER_CREDENTIALS_RELATIVE_URI/FULL_URI
 * not set") or the container URI is unusable, CD_ERR_NOMEM.  `http` is
 * borrowed, only for the container source (may be NULL otherwise), and must
 * outlive this object: close this one first.
 */
int aws_creds_new(aws_creds **out, uv_loop_t *loop, httpc *http, char *errbuf, size_t errlen);

/*
 * Starts resolving.  Returns 0 and later calls ready exactly once, from the
 * loop (never from inside this call): status 0 once the first credentials
 * are available, or negative with errmsg (valid during the call) saying
 * what was tried and why it failed; HTTPC_ERR_CANCELED when closed first.
 * Refreshes go on after that without calling ready again.  Returns negative
 * and never calls ready: CD_ERR_INVALID (ready is NULL), CD_ERR_BUSY
 * (already started, or closing), or a uv error.
 */
int aws_creds_start(aws_creds *c, void (*ready)(void *opaque, int status, const char *errmsg),
                    void *opaque);

/*
 * The current credentials.  Returns 0 and sets the pointers (session_token
 * to NULL when there is none; any out-pointer may be NULL), valid until the
 * next loop callback: copy them, or pass them straight into httpc_submit,
 * which copies.  Environment keys are there from aws_creds_new on.
 * Negative when there are none: CD_ERR_BUSY before the first fetch from the
 * container endpoint completed (or while closing), CD_ERR_IO when the last
 * ones expired and no refresh succeeded since.
 */
int aws_creds_get(const aws_creds *c, const char **access_key, const char **secret_key,
                  const char **session_token);

/* "environment" or "container endpoint": for log lines. */
const char *aws_creds_source_name(const aws_creds *c);

/*
 * Stops refreshing, cancels a fetch in flight, calls ready (with
 * HTTPC_ERR_CANCELED) if it was not called yet, and frees everything once
 * the timer's close callback ran; then on_closed (may be NULL) is called
 * once.  The secrets are wiped from memory.  A second call is ignored.
 * Safe from inside ready.  NULL is ignored.
 */
void aws_creds_close(aws_creds *c, void (*on_closed)(void *opaque), void *opaque);

#endif
