/*
 * AWS credentials chain (see awscreds.h): environment first, then the ECS/EKS
 * container endpoint fetched with httpc and refreshed on a uv_timer before
 * the keys expire.  One timer does all the waiting: delivering `ready` for
 * the environment source, retries of the first fetch, and refreshes.
 *
 * Secrets live only in this struct (and in the request curl copied); they
 * are wiped before their memory is freed and never formatted into a log
 * line or an error message.
 */
#include "awscreds.h"

#include "log.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <errno.h>
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

#define AWS_CREDS_ECS_HOST       "http://169.254.170.2"
#define AWS_CREDS_MAX_RESPONSE   (64 * 1024)
#define AWS_CREDS_MAX_TOKEN      (16 * 1024)
#define AWS_CREDS_MIN_REFRESH_MS 200
#define AWS_CREDS_NO_EXPIRY_MS   (60 * 60 * 1000) /* no Expiration: refetch hourly */
#define AWS_CREDS_SHORT_LIFE_MS  (2 * AWS_CREDS_REFRESH_BEFORE_MS)

typedef enum { AWS_CREDS_ENV, AWS_CREDS_CONTAINER } aws_creds_source;

typedef void (*aws_creds_ready_cb)(void *opaque, int status, const char *errmsg);

struct aws_creds {
    uv_loop_t *loop;
    uv_timer_t timer; /* ready for env, retries, refreshes */
    httpc_pool *pool; /* container source only; NULL once freed */
    aws_creds_source source;

    char *url;             /* container endpoint (no secret in it) */
    char *auth_token;      /* secret; may be NULL */
    char *auth_token_file; /* may be NULL; re-read on every fetch */

    char *access_key; /* current credentials, all secret; NULL until the first */
    char *secret_key;
    char *session_token; /* may be NULL */
    int64_t expires_ms;  /* wall clock, ms since the epoch; 0: no expiry */

    aws_creds_ready_cb ready;
    void *ready_opaque;
    int started;
    int ready_called;
    int closing;
    int fetching;
    int first_attempts;   /* tries of the first fetch so far */
    uint64_t retry_ms;    /* next wait after a failed refresh; 0: none failed */
    int expired_reported; /* "expired" logged once per outage */

    void (*on_closed)(void *opaque);
    void *closed_opaque;
};

/* ------------------------------------------------------------- helpers */
static int64_t aws_creds__wall_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Wipes and frees a secret string. */
static void aws_creds__wipe(char **s) {
    if (*s) {
        explicit_bzero(*s, strlen(*s));
        free(*s);
        *s = NULL;
    }
}

static char *aws_creds__dup(const char *s) {
    return s ? strdup(s) : NULL;
}

static const char *aws_creds__env(const char *name) {
    const char *v = getenv(name);
    return v && *v ? v : NULL;
}

/* A header value must be one line of visible ASCII (and space/tab): checked
 * here so that httpc's "bad header" message, which quotes the header, is
 * never reached with a token in it. */
static int aws_creds__token_ok(const char *t) {
    if (!*t) return 0;
    for (const unsigned char *p = (const unsigned char *)t; *p; p++)
        if ((*p < 0x20 && *p != '\t') || *p == 0x7f) return 0;
    return 1;
}

/* http:// is allowed only to hosts that cannot be somebody else's: loopback
 * and the ECS/EKS link-local agents (what the AWS SDKs allow too). */
static int aws_creds__host_allowed_for_http(const char *host) {
    if (strcasecmp(host, "localhost") == 0) return 1;
    if (strcmp(host, "169.254.170.2") == 0 || strcmp(host, "169.254.170.23") == 0) return 1;
    struct in_addr a4;
    if (inet_pton(AF_INET, host, &a4) == 1) return (ntohl(a4.s_addr) >> 24) == 127;
    size_t n = strlen(host);
    if (n > 2 && host[0] == '[' && host[n - 1] == ']') {
        char inner[64];
        if (n - 2 >= sizeof(inner)) return 0;
        memcpy(inner, host + 1, n - 2);
        inner[n - 2] = '\0';
        struct in6_addr a6, eks;
        if (inet_pton(AF_INET6, inner, &a6) != 1) return 0;
        if (memcmp(&a6, &in6addr_loopback, sizeof(a6)) == 0) return 1;
        return inet_pton(AF_INET6, "fd00:ec2::23", &eks) == 1 && memcmp(&a6, &eks, sizeof(a6)) == 0;
    }
    return 0;
}

static int aws_creds__check_full_uri(const char *uri, char *errbuf, size_t errlen) {
    CURLU *u = curl_url();
    if (!u) {
        snprintf(errbuf, errlen, "out of memory");
        return CD_ERR_NOMEM;
    }
    char *scheme = NULL, *host = NULL;
    int ret = 0;
    CURLUcode uc = curl_url_set(u, CURLUPART_URL, uri, 0);
    if (uc == CURLUE_OK) uc = curl_url_get(u, CURLUPART_SCHEME, &scheme, 0);
    if (uc == CURLUE_OK) uc = curl_url_get(u, CURLUPART_HOST, &host, 0);
    if (uc != CURLUE_OK) {
        snprintf(errbuf, errlen, "AWS_CONTAINER_CREDENTIALS_FULL_URI %s: %s", uri,
                 curl_url_strerror(uc));
        ret = CD_ERR_INVALID;
    } else if (strcasecmp(scheme, "https") != 0 &&
               !(strcasecmp(scheme, "http") == 0 && aws_creds__host_allowed_for_http(host))) {
        snprintf(errbuf, errlen,
                 "AWS_CONTAINER_CREDENTIALS_FULL_URI %s: want https, or http to a loopback "
                 "address or the ECS/EKS credentials agent (169.254.170.2, 169.254.170.23)",
                 uri);
        ret = CD_ERR_INVALID;
    }
    curl_free(scheme);
    curl_free(host);
    curl_url_cleanup(u);
    return ret;
}

/*
 * ISO-8601 as the container endpoint sends it: "2024-05-01T12:34:56Z",
 * optionally with fractional seconds and/or a "+hh:mm" offset instead of Z.
 * Returns 0 and ms since the epoch, or -1.
 */
static int aws_creds__parse_time(const char *s, int64_t *out_ms) {
    struct tm tm = {0};
    int n = 0;
    if (sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d%n", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &tm.tm_hour,
               &tm.tm_min, &tm.tm_sec, &n) != 6 ||
        n != 19)
        return -1;
    if (tm.tm_mon < 1 || tm.tm_mon > 12 || tm.tm_mday < 1 || tm.tm_mday > 31 || tm.tm_hour > 23 ||
        tm.tm_min > 59 || tm.tm_sec > 60)
        return -1;
    const char *p = s + n;
    int64_t ms = 0;
    if (*p == '.') {
        int64_t scale = 100;
        p++;
        if (*p < '0' || *p > '9') return -1;
        for (; *p >= '0' && *p <= '9'; p++) {
            ms += (*p - '0') * scale;
            scale /= 10;
        }
    }
    int64_t offset_s = 0;
    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        int oh, om, m = 0;
        if (sscanf(p + 1, "%2d:%2d%n", &oh, &om, &m) != 2 || m != 5 || oh > 23 || om > 59)
            return -1;
        offset_s = (int64_t)(oh * 3600 + om * 60) * (*p == '+' ? 1 : -1);
        p += 1 + m;
    } else {
        return -1;
    }
    if (*p) return -1;
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    time_t t = timegm(&tm);
    if (t == (time_t)-1) return -1;
    *out_ms = ((int64_t)t - offset_s) * 1000 + ms;
    return 0;
}

/* Formats a wall-clock time for log lines. */
static void aws_creds__fmt_time(int64_t ms, char *buf, size_t len) {
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    if (!gmtime_r(&t, &tm) || !strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm))
        snprintf(buf, len, "?");
}

/* ------------------------------------------------------- the lifecycle */
static void aws_creds__fetch(aws_creds *c);

static void aws_creds__call_ready(aws_creds *c, int status, const char *errmsg) {
    if (c->ready_called || !c->ready) return;
    c->ready_called = 1;
    c->ready(c->ready_opaque, status, errmsg);
}

static void aws_creds__arm(aws_creds *c, uint64_t ms);

static void aws_creds__on_timer(uv_timer_t *t) {
    aws_creds *c = container_of(t, aws_creds, timer);
    if (c->closing) return;
    if (c->source == AWS_CREDS_ENV) {
        aws_creds__call_ready(c, 0, NULL);
        return;
    }
    aws_creds__fetch(c);
}

static void aws_creds__arm(aws_creds *c, uint64_t ms) {
    /* Cannot fail for an initialised, open timer with a callback. */
    (void)uv_timer_start(&c->timer, aws_creds__on_timer, ms, 0);
}

/* After a successful fetch: when to fetch again. */
static uint64_t aws_creds__refresh_delay(const aws_creds *c, int64_t now) {
    if (!c->expires_ms) return AWS_CREDS_NO_EXPIRY_MS;
    int64_t left = c->expires_ms - now;
    int64_t delay = left > AWS_CREDS_SHORT_LIFE_MS ? left - AWS_CREDS_REFRESH_BEFORE_MS : left / 2;
    return delay < AWS_CREDS_MIN_REFRESH_MS ? AWS_CREDS_MIN_REFRESH_MS : (uint64_t)delay;
}

/*
 * A fetch failed (msg says how, without secrets).  Before the first
 * credentials: retry a retriable failure a few times, then report through
 * ready.  After: keep the old keys, warn, retry with backoff.
 */
static void aws_creds__fetch_failed(aws_creds *c, int err, int retriable, const char *msg) {
    if (!c->ready_called) {
        c->first_attempts++;
        if (retriable && c->first_attempts < AWS_CREDS_FIRST_FETCH_ATTEMPTS) {
            uint64_t wait = (uint64_t)AWS_CREDS_FIRST_RETRY_MS << (c->first_attempts - 1);
            LOG_DEBUG("AWS credentials from %s: %s; retrying in %llu ms", c->url, msg,
                      (unsigned long long)wait);
            aws_creds__arm(c, wait);
            return;
        }
        char full[768];
        snprintf(full, sizeof(full),
                 "AWS credentials from the container endpoint %s: %s (%d attempt%s)", c->url, msg,
                 c->first_attempts, c->first_attempts == 1 ? "" : "s");
        /* Start-up hears of the failure, but an agent that comes back later
         * (it was restarting, the task role arrived late) must still be
         * found: go on fetching with the refresh backoff. */
        if (c->pool) {
            c->retry_ms = AWS_CREDS_REFRESH_RETRY_MS;
            aws_creds__arm(c, c->retry_ms);
        }
        aws_creds__call_ready(c, err, full); /* last: ready may close c */
        return;
    }
    if (!c->pool) return; /* the HTTP client is gone: nothing can be fetched */
    c->retry_ms = c->retry_ms ? c->retry_ms * 2 : AWS_CREDS_REFRESH_RETRY_MS;
    if (c->retry_ms > AWS_CREDS_REFRESH_RETRY_MAX) c->retry_ms = AWS_CREDS_REFRESH_RETRY_MAX;
    int64_t now = aws_creds__wall_ms();
    char until[32];
    aws_creds__fmt_time(c->expires_ms, until, sizeof(until));
    if (!c->access_key) {
        /* Never had keys: start-up was told; say it once more per outage. */
        if (!c->expired_reported)
            LOG_WARN("AWS credentials from %s: still none (%s); calls that need them are retried; "
                     "fetching again with backoff up to %llu ms",
                     c->url, msg, (unsigned long long)AWS_CREDS_REFRESH_RETRY_MAX);
        c->expired_reported = 1;
    } else if (c->expires_ms && now >= c->expires_ms) {
        if (!c->expired_reported)
            LOG_ERROR("AWS credentials expired at %s and refreshing from %s fails: %s; "
                      "retrying every %llu ms at most",
                      until, c->url, msg, (unsigned long long)AWS_CREDS_REFRESH_RETRY_MAX);
        c->expired_reported = 1;
    } else {
        LOG_WARN("AWS credentials refresh from %s failed: %s; the current ones stay in use "
                 "until %s; retrying in %llu ms",
                 c->url, msg, c->expires_ms ? until : "further notice",
                 (unsigned long long)c->retry_ms);
    }
    aws_creds__arm(c, c->retry_ms);
}

/* Takes the keys out of a 200 answer; 0, or -1 with a reason (no secrets). */
static int aws_creds__take(aws_creds *c, const httpc_response *resp, char *why, size_t whylen) {
    json_error_t jerr;
    json_t *j = json_loadb(resp->body, resp->body_len, 0, &jerr);
    if (!j || !json_is_object(j)) {
        snprintf(why, whylen, "the answer is not a JSON object");
        json_decref(j);
        return -1;
    }
    const char *ak = json_string_value(json_object_get(j, "AccessKeyId"));
    const char *sk = json_string_value(json_object_get(j, "SecretAccessKey"));
    const char *tok = json_string_value(json_object_get(j, "Token"));
    json_t *jexp = json_object_get(j, "Expiration");
    const char *exp = json_string_value(jexp);
    int64_t expires = 0, now = aws_creds__wall_ms();
    int ret = -1;
    if (!ak || !*ak || !sk || !*sk) {
        snprintf(why, whylen, "the answer lacks AccessKeyId or SecretAccessKey");
    } else if (jexp && (!exp || aws_creds__parse_time(exp, &expires) != 0)) {
        snprintf(why, whylen, "the answer's Expiration is not an ISO-8601 time");
    } else if (exp && expires <= now) {
        snprintf(why, whylen, "the answer's credentials already expired (at %s)", exp);
    } else {
        char *nak = strdup(ak), *nsk = strdup(sk), *ntok = tok && *tok ? strdup(tok) : NULL;
        if (!nak || !nsk || (tok && *tok && !ntok)) {
            aws_creds__wipe(&nak);
            aws_creds__wipe(&nsk);
            aws_creds__wipe(&ntok);
            snprintf(why, whylen, "out of memory");
        } else {
            aws_creds__wipe(&c->access_key);
            aws_creds__wipe(&c->secret_key);
            aws_creds__wipe(&c->session_token);
            c->access_key = nak;
            c->secret_key = nsk;
            c->session_token = ntok;
            c->expires_ms = expires;
            ret = 0;
        }
    }
    json_decref(j);
    return ret;
}

static void aws_creds__on_response(void *opaque, const httpc_response *resp) {
    aws_creds *c = opaque;
    c->fetching = 0;
    if (resp->error == HTTPC_ERR_CANCELED) {
        if (c->closing) return;
        /* httpc_close freed our pool under us: nothing more can be fetched. */
        c->pool = NULL;
        LOG_WARN("AWS credentials from %s: the HTTP client closed; no more refreshes", c->url);
        aws_creds__call_ready(c, HTTPC_ERR_CANCELED,
                              "AWS credentials: the HTTP client closed before they arrived");
        return;
    }
    char msg[512];
    if (resp->error) {
        snprintf(msg, sizeof(msg), "%s", resp->error_message ? resp->error_message : "failed");
        aws_creds__fetch_failed(c, resp->error, httpc_retriable(resp), msg);
        return;
    }
    if (resp->status != 200) {
        /* The body of an error answer is the agent's message, not keys: show
         * its start, unless it looks like it holds some anyway. */
        int show = resp->body_len > 0 && !memmem(resp->body, resp->body_len, "Secret", 6) &&
                   !memmem(resp->body, resp->body_len, "Token", 5);
        int n = (int)(resp->body_len > 160 ? 160 : resp->body_len);
        snprintf(msg, sizeof(msg), "HTTP %d%s%.*s", resp->status, show ? ": " : "", show ? n : 0,
                 resp->body);
        aws_creds__fetch_failed(c, resp->status >= 500 ? CD_ERR_IO : CD_ERR_INVALID,
                                httpc_retriable(resp), msg);
        return;
    }
    char why[256];
    if (aws_creds__take(c, resp, why, sizeof(why)) != 0) {
        snprintf(msg, sizeof(msg), "HTTP 200 but %s", why);
        /* Retried as a refresh, not as the first fetch: a broken agent will
         * not mend itself within the first second. */
        aws_creds__fetch_failed(c, CD_ERR_IO, 0, msg);
        return;
    }
    int64_t now = aws_creds__wall_ms();
    uint64_t next = aws_creds__refresh_delay(c, now);
    char until[32];
    aws_creds__fmt_time(c->expires_ms, until, sizeof(until));
    if (c->ready_called)
        LOG_INFO("AWS credentials refreshed from %s (valid until %s)", c->url,
                 c->expires_ms ? until : "further notice");
    else
        LOG_DEBUG("AWS credentials from %s (valid until %s)", c->url,
                  c->expires_ms ? until : "further notice");
    c->retry_ms = 0;
    c->expired_reported = 0;
    aws_creds__arm(c, next);
    aws_creds__call_ready(c, 0, NULL); /* last: ready may close c */
}

/* Reads the token file (it rotates, so on every fetch); NULL with why. */
static char *aws_creds__read_token_file(const char *path, char *why, size_t whylen) {
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(why, whylen, "cannot open AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE %s: %s", path,
                 strerror(errno));
        return NULL;
    }
    char *buf = malloc(AWS_CREDS_MAX_TOKEN + 1);
    if (!buf) {
        fclose(f);
        snprintf(why, whylen, "out of memory");
        return NULL;
    }
    size_t n = fread(buf, 1, AWS_CREDS_MAX_TOKEN + 1, f);
    int bad = ferror(f);
    fclose(f);
    if (bad || n > AWS_CREDS_MAX_TOKEN) {
        explicit_bzero(buf, AWS_CREDS_MAX_TOKEN + 1);
        free(buf);
        snprintf(why, whylen, "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE %s: %s", path,
                 bad ? "read error" : "larger than 16 KiB");
        return NULL;
    }
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' '))
        n--;
    buf[n] = '\0';
    return buf;
}

static void aws_creds__fetch(aws_creds *c) {
    if (c->fetching || c->closing) return;
    if (!c->pool) {
        aws_creds__fetch_failed(c, CD_ERR_BUSY, 0, "the HTTP client is closed");
        return;
    }
    char why[384];
    char *token = c->auth_token;
    char *from_file = NULL;
    if (c->auth_token_file) {
        from_file = aws_creds__read_token_file(c->auth_token_file, why, sizeof(why));
        if (!from_file) {
            aws_creds__fetch_failed(c, CD_ERR_IO, 0, why);
            return;
        }
        token = from_file;
    }
    if (token && !aws_creds__token_ok(token)) {
        aws_creds__wipe(&from_file);
        aws_creds__fetch_failed(c, CD_ERR_INVALID, 0,
                                c->auth_token_file
                                    ? "the token in AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE is "
                                      "empty or not one line of text"
                                    : "AWS_CONTAINER_AUTHORIZATION_TOKEN is not one line of text");
        return;
    }
    char *auth = NULL;
    if (token) {
        size_t len = strlen("Authorization: ") + strlen(token) + 1;
        auth = malloc(len);
        if (auth) snprintf(auth, len, "Authorization: %s", token);
    }
    aws_creds__wipe(&from_file);
    if (token && !auth) {
        aws_creds__fetch_failed(c, CD_ERR_NOMEM, 1, "out of memory");
        return;
    }
    const char *headers[] = {"Accept: application/json", auth, NULL};
    httpc_request rq = {
        .method = "GET",
        .url = c->url,
        .headers = headers,
        .timeout_ms = AWS_CREDS_FETCH_TIMEOUT_MS,
        .max_response_bytes = AWS_CREDS_MAX_RESPONSE,
    };
    char err[256];
    int r = httpc_submit(c->pool, &rq, aws_creds__on_response, c, err, sizeof(err));
    aws_creds__wipe(&auth);
    if (r != 0) {
        aws_creds__fetch_failed(c, r, r == CD_ERR_NOMEM, err);
        return;
    }
    c->fetching = 1;
}

/* ------------------------------------------------------------ the API */
int aws_creds_new(aws_creds **out, uv_loop_t *loop, httpc *http, char *errbuf, size_t errlen) {
    *out = NULL;
    const char *ak = aws_creds__env("AWS_ACCESS_KEY_ID");
    const char *sk = aws_creds__env("AWS_SECRET_ACCESS_KEY");
    const char *rel = aws_creds__env("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI");
    const char *full = aws_creds__env("AWS_CONTAINER_CREDENTIALS_FULL_URI");
    const char *env_why = NULL;
    if (!ak && !sk)
        env_why = "AWS_ACCESS_KEY_ID not set";
    else if (!sk)
        env_why = "AWS_ACCESS_KEY_ID set but AWS_SECRET_ACCESS_KEY not set";
    else if (!ak)
        env_why = "AWS_SECRET_ACCESS_KEY set but AWS_ACCESS_KEY_ID not set";
    if (env_why && !rel && !full) {
        snprintf(errbuf, errlen,
                 "no AWS credentials: %s; AWS_CONTAINER_CREDENTIALS_RELATIVE_URI/FULL_URI not set",
                 env_why);
        return CD_ERR_INVALID;
    }

    aws_creds *c = calloc(1, sizeof(*c));
    if (!c) {
        snprintf(errbuf, errlen, "out of memory");
        return CD_ERR_NOMEM;
    }
    c->loop = loop;
    int ret = 0;
    if (!env_why) {
        c->source = AWS_CREDS_ENV;
        const char *tok = aws_creds__env("AWS_SESSION_TOKEN");
        c->access_key = strdup(ak);
        c->secret_key = strdup(sk);
        c->session_token = aws_creds__dup(tok);
        if (!c->access_key || !c->secret_key || (tok && !c->session_token)) ret = CD_ERR_NOMEM;
    } else {
        c->source = AWS_CREDS_CONTAINER;
        if (rel) {
            if (rel[0] != '/') {
                snprintf(errbuf, errlen,
                         "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI %s: want a path starting "
                         "with /",
                         rel);
                ret = CD_ERR_INVALID;
            } else if ((c->url = malloc(strlen(AWS_CREDS_ECS_HOST) + strlen(rel) + 1))) {
                strcpy(c->url, AWS_CREDS_ECS_HOST);
                strcat(c->url, rel);
            } else {
                ret = CD_ERR_NOMEM;
            }
        } else {
            ret = aws_creds__check_full_uri(full, errbuf, errlen);
            if (ret == 0 && !(c->url = strdup(full))) ret = CD_ERR_NOMEM;
        }
        const char *tfile = aws_creds__env("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE");
        const char *tok = aws_creds__env("AWS_CONTAINER_AUTHORIZATION_TOKEN");
        if (ret == 0 && tfile) {
            if (!(c->auth_token_file = strdup(tfile))) ret = CD_ERR_NOMEM;
        } else if (ret == 0 && tok) {
            if (!(c->auth_token = strdup(tok))) ret = CD_ERR_NOMEM;
        }
        if (ret == 0 && !http) {
            snprintf(errbuf, errlen,
                     "AWS credentials from the container endpoint need an HTTP "
                     "client");
            ret = CD_ERR_INVALID;
        }
        if (ret == 0 && !(c->pool = httpc_pool_new(http, 1))) {
            snprintf(errbuf, errlen,
                     "AWS credentials: no HTTP pool (client closing, or out of "
                     "memory)");
            ret = CD_ERR_BUSY;
        }
    }
    if (ret == 0) {
        int r = uv_timer_init(loop, &c->timer);
        if (r != 0) {
            snprintf(errbuf, errlen, "uv_timer_init: %s", uv_strerror(r));
            ret = r;
        }
    }
    if (ret != 0) {
        if (ret == CD_ERR_NOMEM) snprintf(errbuf, errlen, "out of memory");
        httpc_pool_free(c->pool);
        aws_creds__wipe(&c->access_key);
        aws_creds__wipe(&c->secret_key);
        aws_creds__wipe(&c->session_token);
        aws_creds__wipe(&c->auth_token);
        free(c->auth_token_file);
        free(c->url);
        free(c);
        return ret;
    }
    *out = c;
    return 0;
}

int aws_creds_start(aws_creds *c, aws_creds_ready_cb ready, void *opaque) {
    if (!ready) return CD_ERR_INVALID;
    if (c->started || c->closing) return CD_ERR_BUSY;
    c->ready = ready;
    c->ready_opaque = opaque;
    c->started = 1;
    /* Both sources begin from the loop, so ready never runs inside this call. */
    aws_creds__arm(c, 0);
    return 0;
}

int aws_creds_get(const aws_creds *c, const char **access_key, const char **secret_key,
                  const char **session_token) {
    if (c->closing || !c->access_key || !c->secret_key) return CD_ERR_BUSY;
    if (c->source == AWS_CREDS_CONTAINER && !c->ready_called) return CD_ERR_BUSY;
    if (c->expires_ms && aws_creds__wall_ms() >= c->expires_ms) return CD_ERR_IO;
    if (access_key) *access_key = c->access_key;
    if (secret_key) *secret_key = c->secret_key;
    if (session_token) *session_token = c->session_token;
    return 0;
}

const char *aws_creds_source_name(const aws_creds *c) {
    return c->source == AWS_CREDS_ENV ? "environment" : "container endpoint";
}

static void aws_creds__on_closed(uv_handle_t *h) {
    aws_creds *c = container_of((uv_timer_t *)h, aws_creds, timer);
    if (c->started)
        aws_creds__call_ready(c, HTTPC_ERR_CANCELED,
                              "AWS credentials: closed before they were available");
    void (*on_closed)(void *) = c->on_closed;
    void *opaque = c->closed_opaque;
    aws_creds__wipe(&c->access_key);
    aws_creds__wipe(&c->secret_key);
    aws_creds__wipe(&c->session_token);
    aws_creds__wipe(&c->auth_token);
    free(c->auth_token_file);
    free(c->url);
    free(c);
    if (on_closed) on_closed(opaque);
}

void aws_creds_close(aws_creds *c, void (*on_closed)(void *opaque), void *opaque) {
    if (!c || c->closing) return;
    c->closing = 1;
    c->on_closed = on_closed;
    c->closed_opaque = opaque;
    uv_timer_stop(&c->timer);
    httpc_pool *p = c->pool;
    c->pool = NULL;
    httpc_pool_free(p); /* a fetch in flight calls back now, and is ignored */
    uv_close((uv_handle_t *)&c->timer, aws_creds__on_closed);
}
