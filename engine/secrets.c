/* Secrets room: ${secret:ARN[#key]} from AWS Secrets Manager; see secrets.h. */
#include "secrets.h"
#include "awscreds.h"
#include "expand.h"
#include "httpc.h"
#include "log.h"

#include <jansson.h>
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SECRETS_MAX_RESPONSE (1024u * 1024) /* 64 KiB secret, JSON-escaped */

typedef struct secret_entry {
    struct secret_entry *next;
    char *arn;
    char *value; /* SecretString; NULL when the fetch failed */
    char *error; /* why it failed, without the "${secret:...}: " prefix */
} secret_entry;

static struct {
    int installed;
    secret_entry *cache;
} secrets_state;

/* ------------------------------------------------------------ wiping */
static void secrets_wipe_str(char *s) {
    if (s) explicit_bzero(s, strlen(s));
    free(s);
}

/* free() that wipes first: jansson's trees hold copies of the secret. */
static void secrets_wiping_free(void *p) {
    if (!p) return;
    explicit_bzero(p, malloc_usable_size(p));
    free(p);
}

typedef struct json_alloc_saved {
    json_malloc_t m;
    json_free_t f;
    int swapped;
} json_alloc_saved;

/* While a secret is parsed, jansson frees through secrets_wiping_free.  Only
 * when jansson uses the C allocator (its default): the two frees are then
 * interchangeable for any block, whoever allocated it. */
static void secrets_json_wipe_begin(json_alloc_saved *s) {
    json_get_alloc_funcs(&s->m, &s->f);
    s->swapped = s->f == free;
    if (s->swapped) json_set_alloc_funcs(s->m, secrets_wiping_free);
}

static void secrets_json_wipe_end(const json_alloc_saved *s) {
    if (s->swapped) json_set_alloc_funcs(s->m, s->f);
}

/* --------------------------------------------------------- one fetch */
typedef struct secrets_fetch {
    uv_loop_t loop;
    uv_timer_t timer;
    httpc *http;
    httpc_pool *pool;
    aws_creds *creds;
    const char *arn;
    char region[64];
    char url[512];
    uint64_t deadline;
    int done;
    int status; /* HTTP status of the answer */
    char *body; /* its body (NUL-terminated), wiped when freed */
    size_t body_len;
    char err[768];
} secrets_fetch;

static void secrets_fetch_fail(secrets_fetch *f, const char *fmt, const char *a, const char *b) {
    if (f->done) return;
    f->done = 1;
    snprintf(f->err, sizeof(f->err), fmt, a, b);
}

static void secrets_on_response(void *opaque, const httpc_response *resp) {
    secrets_fetch *f = opaque;
    if (resp->body_len) {
        if (!f->done && !resp->error) {
            f->body = malloc(resp->body_len + 1);
            if (f->body) {
                memcpy(f->body, resp->body, resp->body_len);
                f->body[resp->body_len] = '\0';
                f->body_len = resp->body_len;
            }
        }
        /* httpc's buffer is freed after this returns: wipe it first. */
        explicit_bzero((char *)resp->body, resp->body_len);
    }
    if (f->done) return; /* cancelled after a timeout */
    if (resp->error) {
        secrets_fetch_fail(f, "cannot reach Secrets Manager at %s: %s", f->url,
                           resp->error_message ? resp->error_message : "request failed");
        return;
    }
    if (!f->body && resp->body_len) {
        secrets_fetch_fail(f, "out of memory reading the answer from %s%s", f->url, "");
        return;
    }
    f->status = resp->status;
    f->done = 1;
}

static void secrets_on_creds(void *opaque, int status, const char *errmsg) {
    secrets_fetch *f = opaque;
    if (f->done) return;
    if (status < 0) {
        secrets_fetch_fail(f, "no AWS credentials for Secrets Manager: %s%s",
                           errmsg ? errmsg : "credentials chain failed", "");
        return;
    }
    const char *ak = NULL, *sk = NULL, *tok = NULL;
    if (aws_creds_get(f->creds, &ak, &sk, &tok) < 0) {
        secrets_fetch_fail(f, "no AWS credentials for Secrets Manager%s%s", "", "");
        return;
    }
    json_t *req = json_pack("{s:s}", "SecretId", f->arn);
    char *body = req ? json_dumps(req, JSON_COMPACT) : NULL;
    json_decref(req);
    if (!body) {
        secrets_fetch_fail(f, "out of memory%s%s", "", "");
        return;
    }
    char sigv4[128];
    snprintf(sigv4, sizeof(sigv4), "aws:amz:%s:secretsmanager", f->region);
    static const char *const headers[] = {"Content-Type: application/x-amz-json-1.1",
                                          "X-Amz-Target: secretsmanager.GetSecretValue", NULL};
    uint64_t now = uv_now(&f->loop);
    httpc_request r = {
        .method = "POST",
        .url = f->url,
        .headers = headers,
        .body = body,
        .body_len = strlen(body),
        .timeout_ms = f->deadline > now ? f->deadline - now : 1,
        .max_response_bytes = SECRETS_MAX_RESPONSE,
        .aws_sigv4 = sigv4,
        .aws_access_key = ak,
        .aws_secret_key = sk,
        .aws_session_token = tok,
    };
    char err[512];
    int rc = httpc_submit(f->pool, &r, secrets_on_response, f, err, sizeof(err));
    free(body);
    if (rc < 0) secrets_fetch_fail(f, "cannot call Secrets Manager at %s: %s", f->url, err);
}

static void secrets_on_timeout(uv_timer_t *t) {
    secrets_fetch *f = t->data;
    char ms[32];
    snprintf(ms, sizeof(ms), "%d", SECRETS_TIMEOUT_MS);
    secrets_fetch_fail(f, "no answer from Secrets Manager at %s within %s ms", f->url, ms);
}

static void secrets_noop_close(uv_handle_t *h) {
    (void)h;
}
static void secrets_noop_closed(void *opaque) {
    (void)opaque;
}

static int secrets_valid_region(const char *s, size_t n) {
    if (n == 0 || n >= 64) return 0;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '-'))
            return 0;
    return 1;
}

/* Region: the ARN's fourth field, else the environment. */
static int secrets_region(const char *arn, char *out, size_t outlen, char *errbuf, size_t errlen) {
    if (strncmp(arn, "arn:", 4) == 0) {
        const char *p = arn;
        for (int field = 0; field < 3 && p; field++) {
            p = strchr(p, ':');
            if (p) p++;
        }
        const char *end = p ? strchr(p, ':') : NULL;
        if (p && end && end > p) {
            if (!secrets_valid_region(p, (size_t)(end - p))) {
                snprintf(errbuf, errlen, "the ARN's region field is not a region name");
                return -1;
            }
            snprintf(out, outlen, "%.*s", (int)(end - p), p);
            return 0;
        }
    }
    const char *env = getenv("AWS_REGION");
    if (!env || !*env) env = getenv("AWS_DEFAULT_REGION");
    if (!env || !*env) {
        snprintf(errbuf, errlen,
                 "no region: not in the ARN, and AWS_REGION / AWS_DEFAULT_REGION are not set");
        return -1;
    }
    if (!secrets_valid_region(env, strlen(env))) {
        snprintf(errbuf, errlen, "AWS_REGION is not a region name");
        return -1;
    }
    snprintf(out, outlen, "%s", env);
    return 0;
}

static void secrets_endpoint(const char *region, char *out, size_t outlen) {
    const char *ep = getenv("AWS_ENDPOINT_URL_SECRETSMANAGER");
    if (!ep || !*ep) ep = getenv("AWS_ENDPOINT_URL");
    if (ep && *ep) {
        size_t n = strlen(ep);
        while (n && ep[n - 1] == '/')
            n--;
        snprintf(out, outlen, "%.*s/", (int)n, ep);
    } else {
        snprintf(out, outlen, "https://secretsmanager.%s.amazonaws.com%s/", region,
                 strncmp(region, "cn-", 3) == 0 ? ".cn" : "");
    }
}

/* The error of a non-200 answer: "Type: message". */
static void secrets_aws_error(const secrets_fetch *f, char *out, size_t outlen) {
    json_t *j = json_loadb(f->body ? f->body : "", f->body_len, 0, NULL);
    const char *type = json_string_value(json_object_get(j, "__type"));
    const char *msg = json_string_value(json_object_get(j, "message"));
    if (!msg) msg = json_string_value(json_object_get(j, "Message"));
    if (type) {
        const char *hash = strrchr(type, '#');
        if (hash) type = hash + 1;
        snprintf(out, outlen, "%s: %s", type, msg ? msg : "(no message)");
    } else {
        snprintf(out, outlen, "HTTP %d from Secrets Manager at %s", f->status, f->url);
    }
    json_decref(j);
}

/* Fetches one secret.  Returns its SecretString (malloc'd) or NULL with why. */
static char *secrets_fetch_one(const char *arn, char *why, size_t whylen) {
    secrets_fetch *f = calloc(1, sizeof(*f));
    if (!f) {
        snprintf(why, whylen, "out of memory");
        return NULL;
    }
    f->arn = arn;
    if (secrets_region(arn, f->region, sizeof(f->region), why, whylen) < 0) {
        free(f);
        return NULL;
    }
    secrets_endpoint(f->region, f->url, sizeof(f->url));
    int rc = uv_loop_init(&f->loop);
    if (rc < 0) {
        snprintf(why, whylen, "uv_loop_init: %s", uv_strerror(rc));
        free(f);
        return NULL;
    }
    uv_timer_init(&f->loop, &f->timer);
    f->timer.data = f;
    f->deadline = uv_now(&f->loop) + SECRETS_TIMEOUT_MS;
    uv_timer_start(&f->timer, secrets_on_timeout, SECRETS_TIMEOUT_MS, 0);

    char err[512];
    if (httpc_new(&f->http, &f->loop, err, sizeof(err)) < 0) {
        secrets_fetch_fail(f, "HTTP client: %s%s", err, "");
    } else if (!(f->pool = httpc_pool_new(f->http, 1))) {
        secrets_fetch_fail(f, "HTTP client: out of memory%s%s", "", "");
    } else if (aws_creds_new(&f->creds, &f->loop, f->http, err, sizeof(err)) < 0) {
        f->creds = NULL;
        secrets_fetch_fail(f, "%s%s", err, "");
    } else if ((rc = aws_creds_start(f->creds, secrets_on_creds, f)) < 0) {
        secrets_fetch_fail(f, "AWS credentials: %s%s", uv_strerror(rc), "");
    }
    while (!f->done && uv_run(&f->loop, UV_RUN_ONCE))
        ;
    if (!f->done) secrets_fetch_fail(f, "no answer from Secrets Manager at %s%s", f->url, "");

    /* Close everything on the private loop, then the loop. */
    uv_timer_stop(&f->timer);
    uv_close((uv_handle_t *)&f->timer, secrets_noop_close);
    if (f->creds) aws_creds_close(f->creds, secrets_noop_closed, NULL);
    if (f->http) httpc_close(f->http, secrets_noop_closed, NULL);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    if (uv_loop_close(&f->loop) != 0) {
        uv_run(&f->loop, UV_RUN_DEFAULT);
        if (uv_loop_close(&f->loop) != 0)
            LOG_WARN("secrets: a handle outlived the Secrets Manager client");
    }

    char *value = NULL;
    if (f->err[0]) {
        snprintf(why, whylen, "%s", f->err);
    } else if (f->status != 200) {
        secrets_aws_error(f, why, whylen);
    } else {
        json_t *j = json_loadb(f->body ? f->body : "", f->body_len, 0, NULL);
        json_t *s = json_object_get(j, "SecretString");
        if (json_is_string(s)) {
            value = strdup(json_string_value(s));
            if (!value) snprintf(why, whylen, "out of memory");
        } else if (json_object_get(j, "SecretBinary")) {
            snprintf(why, whylen, "the secret has no SecretString (SecretBinary is not supported)");
        } else {
            snprintf(why, whylen, "Secrets Manager at %s answered without a SecretString", f->url);
        }
        json_decref(j);
    }
    if (f->body) explicit_bzero(f->body, f->body_len);
    free(f->body);
    free(f);
    return value;
}

/* ----------------------------------------------------------- resolver */
static secret_entry *secrets_lookup(const char *arn) {
    for (secret_entry *e = secrets_state.cache; e; e = e->next)
        if (strcmp(e->arn, arn) == 0) return e;
    secret_entry *e = calloc(1, sizeof(*e));
    if (!e) return NULL;
    e->arn = strdup(arn);
    if (!e->arn) {
        free(e);
        return NULL;
    }
    char why[768];
    json_alloc_saved saved;
    secrets_json_wipe_begin(&saved);
    e->value = secrets_fetch_one(arn, why, sizeof(why));
    secrets_json_wipe_end(&saved);
    if (!e->value) {
        e->error = strdup(why);
        if (!e->error) {
            free(e->arn);
            free(e);
            return NULL;
        }
    } else {
        LOG_INFO("${secret:%s}: read from AWS Secrets Manager", arn);
    }
    e->next = secrets_state.cache;
    secrets_state.cache = e;
    return e;
}

/* The value of `key` in the JSON object `text`, malloc'd, or NULL with why. */
static char *secrets_json_key(const char *text, const char *key, char *why, size_t whylen) {
    char *out = NULL;
    json_alloc_saved saved;
    secrets_json_wipe_begin(&saved);
    /* No json_error_t text: it quotes the input near the error. */
    json_t *j = json_loads(text, 0, NULL);
    if (!json_is_object(j)) {
        snprintf(why, whylen, "the SecretString is not a JSON object, so #%s cannot be read", key);
    } else {
        json_t *v = json_object_get(j, key);
        if (!v)
            snprintf(why, whylen, "key \"%s\" is not in the secret's JSON", key);
        else if (!json_is_string(v))
            snprintf(why, whylen, "key \"%s\" in the secret's JSON is not a string", key);
        else if (!(out = strdup(json_string_value(v))))
            snprintf(why, whylen, "out of memory");
    }
    json_decref(j);
    secrets_json_wipe_end(&saved);
    return out;
}

static char *secrets_resolve(void *opaque, const char *ref, char *errbuf, size_t errlen) {
    (void)opaque;
    const char *hash = strchr(ref, '#');
    size_t arn_len = hash ? (size_t)(hash - ref) : strlen(ref);
    if (arn_len == 0) {
        snprintf(errbuf, errlen, "${secret:%s}: needs a secret ARN (or name)", ref);
        return NULL;
    }
    if (hash && !hash[1]) {
        snprintf(errbuf, errlen, "${secret:%s}: empty JSON key after '#'", ref);
        return NULL;
    }
    char *arn = strndup(ref, arn_len);
    if (!arn) {
        snprintf(errbuf, errlen, "${secret:%s}: out of memory", ref);
        return NULL;
    }
    secret_entry *e = secrets_lookup(arn);
    free(arn);
    if (!e) {
        snprintf(errbuf, errlen, "${secret:%s}: out of memory", ref);
        return NULL;
    }
    if (!e->value) {
        snprintf(errbuf, errlen, "${secret:%s}: %s", ref, e->error);
        return NULL;
    }
    char why[512];
    char *out = hash ? secrets_json_key(e->value, hash + 1, why, sizeof(why)) : strdup(e->value);
    if (!out) {
        if (!hash) snprintf(why, sizeof(why), "out of memory");
        snprintf(errbuf, errlen, "${secret:%s}: %s", ref, why);
    }
    return out;
}

int secrets_install(char *errbuf, size_t errlen) {
    (void)errbuf;
    (void)errlen;
    if (!secrets_state.installed) {
        secrets_state.installed = 1;
        secrets_state.cache = NULL;
    }
    expand_set_secret_resolver(secrets_resolve, NULL);
    return 0;
}

void secrets_uninstall(void) {
    if (!secrets_state.installed) return;
    expand_set_secret_resolver(NULL, NULL);
    secret_entry *e = secrets_state.cache;
    while (e) {
        secret_entry *next = e->next;
        secrets_wipe_str(e->value);
        free(e->arn);
        free(e->error);
        free(e);
        e = next;
    }
    secrets_state.cache = NULL;
    secrets_state.installed = 0;
}
