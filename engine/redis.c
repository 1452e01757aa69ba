/*
 * Redis client room; see redis.h.  The wiring, in hiredis's terms: each
 * redisAsyncContext gets our own event adapter (a heap "link" holding a
 * uv_poll_t on the context's socket; hiredis calls addRead/addWrite/...
 * on it and cleanup when it frees the context), and we feed readiness back
 * with redisAsyncHandleRead/Write.  hiredis frees a context by itself when
 * the connection fails; it first calls every pending reply callback with a
 * NULL reply, then the disconnect callback, then cleanup.  The link's
 * memory goes only in the poll handle's close callback, and the client's
 * only when the last handle closed, so no queued libuv event and no hiredis
 * frame still on the stack can reach freed memory.
 *
 * We never free a context from inside a hiredis connect or disconnect
 * callback (hiredis frees it itself right after); from inside a reply
 * callback redisAsyncFree is safe (hiredis defers it until the callback
 * returns).
 */
#include "redis.h"
#include "log.h"

#include <connectd/plugin.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

typedef struct redis_conn redis_conn;

/* One context's socket watch (our hiredis event adapter). */
typedef struct redis_link {
    uv_poll_t poll;
    redis *r;
    redisAsyncContext *ac; /* NULL once hiredis called cleanup */
    int events;            /* UV_READABLE | UV_WRITABLE wanted by hiredis */
} redis_link;

/* One logical connection (commands, or pub/sub) across reconnects. */
struct redis_conn {
    redis *r;
    const char *name;
    int is_sub;
    int started;           /* a connect was ever attempted */
    redisAsyncContext *ac; /* the live context (connecting or up), or NULL */
    int connected;
    int down_logged;   /* the loss was logged; recovery will be */
    unsigned failures; /* consecutive, for the backoff */
    const char *why;   /* why we dropped ac ourselves (connect timeout) */
    uv_timer_t timer;  /* connect timeout while connecting, backoff while down,
                          command watchdog (cmd) while up */
};

typedef struct redis_cmd {
    redis *r;
    redis_conn *conn;
    redis_reply_cb cb;
    void *opaque;
} redis_cmd;

/* Subscriptions live in a hash table keyed by (pattern flag, name): with
 * one channel per customer (sink-websocket) there are thousands, and every
 * message and confirmation looks its name up. */
struct redis_sub {
    struct redis_sub *hnext; /* same bucket, in subscription order */
    struct redis_sub *dnext; /* unsubscribed during a dispatch, freed after it */
    uint64_t hash;
    redis *r;
    char *name;
    size_t name_len;
    int pattern;
    int confirmed;       /* the server confirmed it on the current connection */
    redis_message_cb cb; /* NULL once unsubscribed (freed after the dispatch) */
    void *opaque;
};

/* An UNSUBSCRIBE sent and not yet confirmed.  hiredis drops a channel's
 * callback when the confirmation arrives, so a SUBSCRIBE to the same name
 * sent before then would lose its own confirmation and messages: it waits
 * for this one instead. */
typedef struct redis_unsub {
    struct redis_unsub *next;
    int pattern;
    size_t name_len;
    char name[];
} redis_unsub;

struct redis {
    uv_loop_t *loop;
    char *host;
    int port;
    int db;
    redis_conn cmd, sub;
    redis_sub **buckets; /* nbuckets, a power of two (0: none yet) */
    size_t nbuckets, nsubs;
    redis_sub *dead; /* unsubscribed during a dispatch */
    redis_unsub *unsubs;
    int dispatching;      /* inside subscription callbacks: unsubscribed entries wait */
    size_t pending;       /* commands whose callback has not run yet */
    uint64_t progress_ms; /* last reply, or when pending left 0 */
    size_t handles_open;  /* uv handles whose close callback has not run yet */
    int closing;
    uint64_t rng;
    void (*on_closed)(void *opaque);
    void *closed_opaque;
};

static void redis_conn_connect(redis_conn *c);

static void redis_unsubs_clear(redis *r) {
    while (r->unsubs) {
        redis_unsub *u = r->unsubs;
        r->unsubs = u->next;
        free(u);
    }
}

/* --------------------------------------------------------------- lifecycle */
static void redis_finish_close(redis *r) {
    void (*cb)(void *) = r->on_closed;
    void *opaque = r->closed_opaque;
    for (size_t i = 0; i < r->nbuckets; i++) {
        redis_sub *s = r->buckets[i];
        while (s) {
            redis_sub *next = s->hnext;
            free(s->name);
            free(s);
            s = next;
        }
    }
    free(r->buckets);
    redis_unsubs_clear(r);
    free(r->host);
    free(r);
    if (cb) cb(opaque);
}

static void redis_handle_closed(redis *r) {
    r->handles_open--;
    if (r->closing && r->handles_open == 0) redis_finish_close(r);
}

static void redis_timer_closed(uv_handle_t *h) {
    redis_conn *c = container_of((uv_timer_t *)h, redis_conn, timer);
    redis_handle_closed(c->r);
}

static void redis_link_closed(uv_handle_t *h) {
    redis_link *l = container_of((uv_poll_t *)h, redis_link, poll);
    redis *r = l->r;
    free(l);
    redis_handle_closed(r);
}

/* ------------------------------------------------------- hiredis adapter */
static void redis_poll_cb(uv_poll_t *h, int status, int events) {
    redis_link *l = container_of(h, redis_link, poll);
    /* On a poll error let hiredis try what it wanted: the read or write
     * then fails and hiredis reports the connection as lost. */
    int ev = status < 0 ? l->events : events;
    if (l->ac && (ev & UV_READABLE)) redisAsyncHandleRead(l->ac);
    if (l->ac && (ev & UV_WRITABLE)) redisAsyncHandleWrite(l->ac);
}

static void redis_link_update(redis_link *l, int events) {
    if (events == l->events || uv_is_closing((uv_handle_t *)&l->poll)) return;
    l->events = events;
    int rc = events ? uv_poll_start(&l->poll, events, redis_poll_cb) : uv_poll_stop(&l->poll);
    if (rc < 0) LOG_ERROR("redis: uv_poll_start: %s", uv_strerror(rc));
}

static void redis_ev_add_read(void *p) {
    redis_link *l = p;
    redis_link_update(l, l->events | UV_READABLE);
}

static void redis_ev_del_read(void *p) {
    redis_link *l = p;
    redis_link_update(l, l->events & ~UV_READABLE);
}

static void redis_ev_add_write(void *p) {
    redis_link *l = p;
    redis_link_update(l, l->events | UV_WRITABLE);
}

static void redis_ev_del_write(void *p) {
    redis_link *l = p;
    redis_link_update(l, l->events & ~UV_WRITABLE);
}

/* hiredis is freeing the context (and closes its socket right after). */
static void redis_ev_cleanup(void *p) {
    redis_link *l = p;
    l->ac = NULL;
    uv_close((uv_handle_t *)&l->poll, redis_link_closed);
}

/* -------------------------------------------------------------- reconnect */
static uint64_t redis_rand(redis *r) {
    /* xorshift64*: jitter only, no need for anything stronger. */
    r->rng ^= r->rng >> 12;
    r->rng ^= r->rng << 25;
    r->rng ^= r->rng >> 27;
    return r->rng * 2685821657736338717ULL;
}

static void redis_timer_cb(uv_timer_t *t);
static void redis_watchdog_arm(redis_conn *c);
#define REDIS_STR2(x) #x
#define REDIS_STR(x)  REDIS_STR2(x)

/* The connection is gone (or never came): log once, retry after a backoff.
 * c->ac is already NULL (hiredis, or we, free the context). */
static void redis_conn_down(redis_conn *c, int was_up, const char *why) {
    redis *r = c->r;
    c->connected = 0;
    c->ac = NULL;
    if (r->closing) return;
    if (!c->down_logged) {
        LOG_WARN("redis: %s connection to %s:%d %s: %s; reconnecting in the background", c->name,
                 r->host, r->port, was_up ? "lost" : "failed", why && *why ? why : "unknown error");
        c->down_logged = 1;
    }
    uint64_t delay = REDIS_BACKOFF_MAX_MS;
    if (c->failures < 16) {
        delay = (uint64_t)REDIS_BACKOFF_MIN_MS << c->failures;
        if (delay > REDIS_BACKOFF_MAX_MS) delay = REDIS_BACKOFF_MAX_MS;
    }
    c->failures++;
    delay = delay / 2 + redis_rand(r) % (delay / 2 + 1);
    int rc = uv_timer_start(&c->timer, redis_timer_cb, delay, 0);
    if (rc < 0) LOG_ERROR("redis: uv_timer_start: %s", uv_strerror(rc));
}

static void redis_sub_send(redis *r, redis_sub *s);

static void redis_on_connect(const redisAsyncContext *ac, int status) {
    redis_conn *c = ac->data;
    if (c == NULL) return; /* a context we dropped */
    if (status != REDIS_OK) {
        /* hiredis frees the context when this returns. */
        uv_timer_stop(&c->timer);
        redis_conn_down(c, 0, ac->errstr);
        return;
    }
    redis *r = c->r;
    c->connected = 1;
    c->failures = 0;
    uv_timer_stop(&c->timer);
    if (!c->is_sub) {
        r->progress_ms = uv_now(r->loop); /* commands waiting for the connect */
        redis_watchdog_arm(c);
    }
    if (c->down_logged) {
        LOG_INFO("redis: %s connection to %s:%d restored", c->name, r->host, r->port);
        c->down_logged = 0;
    }
    if (c->is_sub) {
        redis_unsubs_clear(r); /* a new connection has no subscriptions */
        for (size_t i = 0; i < r->nbuckets; i++)
            for (redis_sub *s = r->buckets[i]; s; s = s->hnext) {
                s->confirmed = 0;
                if (s->cb) redis_sub_send(r, s);
            }
    }
}

static void redis_on_disconnect(const redisAsyncContext *ac, int status) {
    redis_conn *c = ac->data;
    if (c == NULL) return; /* we freed it ourselves */
    redis_conn_down(c, 1, ac->err ? ac->errstr : "connection closed");
}

static void redis_select_cb(redisAsyncContext *ac, void *reply, void *privdata) {
    redisReply *rep = reply;
    redis_conn *c = privdata;
    if (rep && rep->type == REDIS_REPLY_ERROR)
        LOG_ERROR("redis: SELECT %d on %s:%d: %s", c->r->db, c->r->host, c->r->port, rep->str);
}

/* Drops the context we hold (connect timeout, close): its pending commands
 * get their callbacks with an error from inside this call. */
static void redis_conn_drop(redis_conn *c, const char *why) {
    redisAsyncContext *ac = c->ac;
    c->ac = NULL;
    c->connected = 0;
    if (ac == NULL) return;
    ac->data = NULL;
    c->why = why;
    /* Already being freed by hiredis (we are inside one of its callbacks):
     * it finishes on its own. */
    if (!(ac->c.flags & (REDIS_FREEING | REDIS_DISCONNECTING))) redisAsyncFree(ac);
}

/* While the command connection is up and commands are pending: no reply
 * at all for REDIS_COMMAND_TIMEOUT_MS drops it (see redis.h). */
static void redis_watchdog_arm(redis_conn *c) {
    redis *r = c->r;
    if (c->is_sub || !c->connected || r->pending == 0 || r->closing) return;
    uint64_t now = uv_now(r->loop), idle = now - r->progress_ms;
    if (idle >= REDIS_COMMAND_TIMEOUT_MS) {
        static const char why[] = "no answer within " REDIS_STR(REDIS_COMMAND_TIMEOUT_MS) " ms";
        redis_conn_drop(c, why);
        redis_conn_down(c, 1, why);
        return;
    }
    int rc = uv_timer_start(&c->timer, redis_timer_cb, REDIS_COMMAND_TIMEOUT_MS - idle, 0);
    if (rc < 0) LOG_ERROR("redis: uv_timer_start: %s", uv_strerror(rc));
}

static void redis_timer_cb(uv_timer_t *t) {
    redis_conn *c = container_of(t, redis_conn, timer);
    if (c->r->closing) return;
    if (c->ac == NULL) {
        redis_conn_connect(c); /* the backoff ran out */
        return;
    }
    if (c->connected) {
        redis_watchdog_arm(c);
        return;
    }
    redis_conn_drop(c, "connect timed out");
    redis_conn_down(c, 0, "connect timed out");
}

static void redis_conn_connect(redis_conn *c) {
    redis *r = c->r;
    char why[160];
    c->started = 1;
    c->why = NULL;
    redisAsyncContext *ac = redisAsyncConnect(r->host, r->port);
    if (ac == NULL) {
        redis_conn_down(c, 0, "out of memory");
        return;
    }
    if (ac->err) {
        snprintf(why, sizeof why, "%s", ac->errstr);
        redisAsyncFree(ac);
        redis_conn_down(c, 0, why);
        return;
    }
    redis_link *l = calloc(1, sizeof *l);
    int rc = l ? uv_poll_init(r->loop, &l->poll, ac->c.fd) : UV_ENOMEM;
    if (rc < 0) {
        snprintf(why, sizeof why, "uv_poll_init: %s", uv_strerror(rc));
        free(l);
        redisAsyncFree(ac);
        redis_conn_down(c, 0, why);
        return;
    }
    r->handles_open++;
    l->r = r;
    l->ac = ac;
    ac->ev.data = l;
    ac->ev.addRead = redis_ev_add_read;
    ac->ev.delRead = redis_ev_del_read;
    ac->ev.addWrite = redis_ev_add_write;
    ac->ev.delWrite = redis_ev_del_write;
    ac->ev.cleanup = redis_ev_cleanup;
    ac->data = c;
    c->ac = ac;
    /* Setting the connect callback asks for the first write event, which
     * tells when the connection is made. */
    if (redisAsyncSetConnectCallback(ac, redis_on_connect) != REDIS_OK ||
        redisAsyncSetDisconnectCallback(ac, redis_on_disconnect) != REDIS_OK) {
        redis_conn_drop(c, "cannot set callbacks");
        redis_conn_down(c, 0, "cannot set hiredis callbacks");
        return;
    }
    /* Queued before any user command, so it runs first. */
    if (!c->is_sub && r->db != 0 &&
        redisAsyncCommand(ac, redis_select_cb, c, "SELECT %d", r->db) != REDIS_OK) {
        redis_conn_drop(c, "cannot queue SELECT");
        redis_conn_down(c, 0, "cannot queue SELECT");
        return;
    }
    rc = uv_timer_start(&c->timer, redis_timer_cb, REDIS_CONNECT_TIMEOUT_MS, 0);
    if (rc < 0) LOG_ERROR("redis: uv_timer_start: %s", uv_strerror(rc));
}

/* ------------------------------------------------------------------ public */
static int redis_parse_url(redis *r, const char *url, char *errbuf, size_t errlen) {
    static const char scheme[] = "redis://";
    if (url == NULL || strncmp(url, scheme, sizeof scheme - 1) != 0) {
        snprintf(errbuf, errlen, "redis URL must start with redis://");
        return CD_ERR_INVALID;
    }
    const char *p = url + sizeof scheme - 1, *host, *end;
    if (strchr(p, '@')) {
        snprintf(errbuf, errlen, "redis URL: credentials are not supported");
        return CD_ERR_INVALID;
    }
    if (*p == '[') { /* [IPv6] */
        host = p + 1;
        end = strchr(host, ']');
        if (end == NULL) {
            snprintf(errbuf, errlen, "redis URL: unterminated [");
            return CD_ERR_INVALID;
        }
        p = end + 1;
    } else {
        host = p;
        end = p + strcspn(p, ":/");
        p = end;
    }
    if (end == host) {
        snprintf(errbuf, errlen, "redis URL: no host");
        return CD_ERR_INVALID;
    }
    r->host = strndup(host, (size_t)(end - host));
    if (r->host == NULL) {
        snprintf(errbuf, errlen, "out of memory");
        return CD_ERR_NOMEM;
    }
    long port = 6379, db = 0;
    char *num_end;
    if (*p == ':') {
        port = strtol(p + 1, &num_end, 10);
        if (num_end == p + 1 || port < 1 || port > 65535) {
            snprintf(errbuf, errlen, "redis URL: bad port");
            return CD_ERR_INVALID;
        }
        p = num_end;
    }
    if (*p == '/' && p[1] != '\0') {
        db = strtol(p + 1, &num_end, 10);
        if (num_end == p + 1 || db < 0 || db > INT_MAX || *num_end != '\0') {
            snprintf(errbuf, errlen, "redis URL: bad database number");
            return CD_ERR_INVALID;
        }
        p = num_end;
    } else if (*p == '/') {
        p++;
    }
    if (*p != '\0') {
        snprintf(errbuf, errlen, "redis URL: unexpected \"%s\"", p);
        return CD_ERR_INVALID;
    }
    r->port = (int)port;
    r->db = (int)db;
    return 0;
}

int redis_new(redis **out, uv_loop_t *loop, const char *url, char *errbuf, size_t errlen) {
    *out = NULL;
    redis *r = calloc(1, sizeof *r);
    if (r == NULL) {
        snprintf(errbuf, errlen, "out of memory");
        return CD_ERR_NOMEM;
    }
    int rc = redis_parse_url(r, url, errbuf, errlen);
    if (rc < 0) {
        free(r->host);
        free(r);
        return rc;
    }
    r->loop = loop;
    r->rng = uv_hrtime() ^ (uint64_t)(uintptr_t)r;
    if (r->rng == 0) r->rng = 1;
    redis_conn *conns[2] = {&r->cmd, &r->sub};
    for (int i = 0; i < 2; i++) {
        conns[i]->r = r;
        conns[i]->is_sub = i == 1;
        conns[i]->name = i == 1 ? "pub/sub" : "command";
        rc = uv_timer_init(loop, &conns[i]->timer);
        if (rc < 0) {
            snprintf(errbuf, errlen, "uv_timer_init: %s", uv_strerror(rc));
            if (i == 0) {
                free(r->host);
                free(r);
                return CD_ERR_IO;
            }
            /* The first timer is live: close it, freeing r from its callback. */
            r->closing = 1;
            uv_close((uv_handle_t *)&r->cmd.timer, redis_timer_closed);
            return CD_ERR_IO;
        }
        r->handles_open++;
    }
    redis_conn_connect(&r->cmd);
    *out = r;
    return 0;
}

void redis_close(redis *r, void (*on_closed)(void *opaque), void *opaque) {
    if (r == NULL || r->closing) return;
    r->closing = 1;
    r->on_closed = on_closed;
    r->closed_opaque = opaque;
    redis_conn *conns[2] = {&r->cmd, &r->sub};
    for (int i = 0; i < 2; i++) {
        uv_timer_stop(&conns[i]->timer);
        uv_close((uv_handle_t *)&conns[i]->timer, redis_timer_closed);
        redis_conn_drop(conns[i], "client closed");
    }
}

int redis_connected(const redis *r) {
    return r->cmd.connected;
}

int redis_subscribed(const redis *r) {
    if (!r->sub.connected) return 0;
    for (size_t i = 0; i < r->nbuckets; i++)
        for (const redis_sub *s = r->buckets[i]; s; s = s->hnext)
            if (s->cb && !s->confirmed) return 0;
    return 1;
}

/* --------------------------------------------------------------- commands */

/* Counts the views a reply needs below its root. */
static size_t redis_view_count(const redisReply *in) {
    size_t n = 0;
    if (in->type == REDIS_REPLY_ARRAY)
        for (size_t i = 0; i < in->elements; i++)
            n += 1 + redis_view_count(in->element[i]);
    return n;
}

static void redis_view_fill(redis_reply *v, const redisReply *in, redis_reply **pool) {
    memset(v, 0, sizeof *v);
    switch (in->type) {
    case REDIS_REPLY_STATUS:
        v->type = REDIS_T_STATUS;
        break;
    case REDIS_REPLY_STRING:
        v->type = REDIS_T_STRING;
        break;
    case REDIS_REPLY_ERROR:
        v->type = REDIS_T_ERROR;
        break;
    case REDIS_REPLY_INTEGER:
        v->type = REDIS_T_INTEGER;
        break;
    case REDIS_REPLY_ARRAY:
        v->type = REDIS_T_ARRAY;
        break;
    default:
        v->type = REDIS_T_NIL;
        break;
    }
    if (v->type == REDIS_T_STATUS || v->type == REDIS_T_STRING || v->type == REDIS_T_ERROR) {
        v->str = in->str ? in->str : "";
        v->len = in->str ? (size_t)in->len : 0;
    } else if (v->type == REDIS_T_INTEGER) {
        v->integer = in->integer;
    } else if (v->type == REDIS_T_ARRAY && in->elements > 0) {
        redis_reply *children = *pool;
        *pool += in->elements;
        v->elements = in->elements;
        v->element = children;
        for (size_t i = 0; i < in->elements; i++)
            redis_view_fill(&children[i], in->element[i], pool);
    }
}

static void redis_cmd_cb(redisAsyncContext *ac, void *reply, void *privdata) {
    redis_cmd *cmd = privdata;
    redis *r = cmd->r;
    redis_reply v;
    r->pending--;
    r->progress_ms = uv_now(r->loop);
    if (reply == NULL) {
        /* No answer: the connection failed, we dropped it, or we close. */
        const char *msg;
        int code = REDIS_E_DISCONNECTED;
        if (ac->err) {
            msg = ac->errstr;
        } else if (r->closing) {
            code = REDIS_E_CANCELED;
            msg = "redis client closed";
        } else {
            msg = cmd->conn->why ? cmd->conn->why : "connection lost";
        }
        memset(&v, 0, sizeof v);
        v.error = code;
        v.type = REDIS_T_ERROR;
        v.str = msg;
        v.len = strlen(msg);
        cmd->cb(cmd->opaque, &v);
        free(cmd);
        return;
    }
    size_t n = redis_view_count(reply);
    redis_reply *pool = n ? calloc(n, sizeof *pool) : NULL;
    if (n && pool == NULL) {
        memset(&v, 0, sizeof v);
        v.error = CD_ERR_NOMEM;
        v.type = REDIS_T_ERROR;
        v.str = "out of memory";
        v.len = strlen(v.str);
    } else {
        redis_reply *cursor = pool;
        redis_view_fill(&v, reply, &cursor);
    }
    cmd->cb(cmd->opaque, &v);
    free(pool);
    free(cmd);
}

/* The command name of a formatted (RESP) command. */
static int redis_formatted_name(const char *buf, size_t len, const char **name, size_t *name_len) {
    const char *end = buf + len;
    const char *p = memchr(buf, '\n', len);
    if (buf[0] != '*' || p == NULL || p + 1 >= end || p[1] != '$') return -1;
    char *num_end;
    long n = strtol(p + 2, &num_end, 10);
    if (n < 0 || num_end + 2 > end || num_end[0] != '\r' || num_end[1] != '\n') return -1;
    if (num_end + 2 + n > end) return -1;
    *name = num_end + 2;
    *name_len = (size_t)n;
    return 0;
}

/* Commands that would leave the command connection answering differently
 * (a subscriber, a monitor): their callbacks would run more than once. */
static int redis_command_refused(const char *name, size_t len) {
    static const char *const refused[] = {"subscribe", "psubscribe", "unsubscribe", "punsubscribe",
                                          "monitor",   "ssubscribe", "sunsubscribe"};
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++)
        if (strlen(refused[i]) == len && strncasecmp(name, refused[i], len) == 0) return 1;
    return 0;
}

/* Takes ownership of buf (a hiredis-formatted command). */
static int redis_send_formatted(redis *r, redis_reply_cb cb, void *opaque, char *buf, int len) {
    if (len <= 0 || buf == NULL) {
        redisFreeCommand(buf);
        return len == -1 || buf == NULL ? CD_ERR_NOMEM : CD_ERR_INVALID;
    }
    const char *name;
    size_t name_len;
    if (redis_formatted_name(buf, (size_t)len, &name, &name_len) < 0 ||
        redis_command_refused(name, name_len)) {
        redisFreeCommand(buf);
        return CD_ERR_INVALID;
    }
    redis_conn *c = &r->cmd;
    if (c->ac == NULL || (c->ac->c.flags & (REDIS_FREEING | REDIS_DISCONNECTING))) {
        redisFreeCommand(buf);
        return REDIS_E_DISCONNECTED;
    }
    redis_cmd *cmd = malloc(sizeof *cmd);
    if (cmd == NULL) {
        redisFreeCommand(buf);
        return CD_ERR_NOMEM;
    }
    *cmd = (redis_cmd){.r = r, .conn = c, .cb = cb, .opaque = opaque};
    int rc = redisAsyncFormattedCommand(c->ac, redis_cmd_cb, cmd, buf, (size_t)len);
    redisFreeCommand(buf);
    if (rc != REDIS_OK) {
        free(cmd);
        return REDIS_E_DISCONNECTED;
    }
    if (r->pending++ == 0) {
        r->progress_ms = uv_now(r->loop);
        redis_watchdog_arm(c);
    }
    return 0;
}

static int redis_command_check(redis *r, redis_reply_cb cb) {
    if (r == NULL || cb == NULL) return CD_ERR_INVALID;
    if (r->closing || r->pending >= REDIS_MAX_PENDING) return CD_ERR_BUSY;
    if (r->cmd.ac == NULL) return REDIS_E_DISCONNECTED;
    return 0;
}

int redis_command(redis *r, redis_reply_cb cb, void *opaque, const char *fmt, ...) {
    int rc = redis_command_check(r, cb);
    if (rc < 0) return rc;
    if (fmt == NULL) return CD_ERR_INVALID;
    char *buf = NULL;
    va_list ap;
    va_start(ap, fmt);
    int len = redisvFormatCommand(&buf, fmt, ap);
    va_end(ap);
    return redis_send_formatted(r, cb, opaque, buf, len);
}

int redis_command_argv(redis *r, redis_reply_cb cb, void *opaque, int argc, const char **argv,
                       const size_t *argvlen) {
    int rc = redis_command_check(r, cb);
    if (rc < 0) return rc;
    if (argc < 1 || argv == NULL) return CD_ERR_INVALID;
    for (int i = 0; i < argc; i++)
        if (argv[i] == NULL) return CD_ERR_INVALID;
    char *buf = NULL;
    int len = redisFormatCommandArgv(&buf, argc, argv, argvlen);
    return redis_send_formatted(r, cb, opaque, buf, len);
}

/* ---------------------------------------------------------------- pub/sub */
static int redis_str_is(const redisReply *e, const char *s) {
    return e && e->type == REDIS_REPLY_STRING && (size_t)e->len == strlen(s) &&
           strncasecmp(e->str, s, (size_t)e->len) == 0;
}

/* FNV-1a over the pattern flag and the name. */
static uint64_t redis_sub_hash(int pattern, const char *name, size_t len) {
    uint64_t h = 0xcbf29ce484222325ULL ^ (uint64_t)(pattern != 0);
    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)name[i];
        h *= 0x100000001b3ULL;
    }
    return h;
}

static int redis_sub_is(const redis_sub *s, uint64_t h, int pattern, const char *name, size_t len) {
    return s->hash == h && s->pattern == pattern && s->name_len == len &&
           memcmp(s->name, name, len) == 0;
}

/* The first entry of that name (live or not), or NULL; its bucket chain
 * holds the others after it. */
static redis_sub *redis_sub_first(const redis *r, int pattern, const char *name, size_t len,
                                  uint64_t *hash) {
    uint64_t h = redis_sub_hash(pattern, name, len);
    if (hash) *hash = h;
    if (r->nbuckets == 0) return NULL;
    for (redis_sub *s = r->buckets[h & (r->nbuckets - 1)]; s; s = s->hnext)
        if (redis_sub_is(s, h, pattern, name, len)) return s;
    return NULL;
}

/* Doubles the table (never during a dispatch: it walks a chain). */
static void redis_subs_grow(redis *r) {
    if (r->dispatching || r->nsubs < r->nbuckets) return;
    size_t n = r->nbuckets ? r->nbuckets * 2 : 64;
    redis_sub **b = calloc(n, sizeof(*b));
    if (b == NULL) return; /* longer chains, still correct */
    for (size_t i = 0; i < r->nbuckets; i++) {
        redis_sub *s = r->buckets[i];
        while (s) {
            redis_sub *next = s->hnext, **tail = &b[s->hash & (n - 1)];
            while (*tail)
                tail = &(*tail)->hnext;
            s->hnext = NULL;
            *tail = s;
            s = next;
        }
    }
    free(r->buckets);
    r->buckets = b;
    r->nbuckets = n;
}

static void redis_sub_unlink_free(redis *r, redis_sub *s) {
    redis_sub **pp = &r->buckets[s->hash & (r->nbuckets - 1)];
    while (*pp && *pp != s)
        pp = &(*pp)->hnext;
    if (*pp) *pp = s->hnext;
    r->nsubs--;
    free(s->name);
    free(s);
}

static redis_unsub **redis_unsub_find(redis *r, int pattern, const char *name, size_t len) {
    for (redis_unsub **u = &r->unsubs; *u; u = &(*u)->next)
        if ((*u)->pattern == pattern && (*u)->name_len == len && memcmp((*u)->name, name, len) == 0)
            return u;
    return NULL;
}

/* Frees the entries unsubscribed during a dispatch. */
static void redis_subs_sweep(redis *r) {
    while (r->dead) {
        redis_sub *s = r->dead;
        r->dead = s->dnext;
        redis_sub_unlink_free(r, s);
    }
}

/* The server confirmed an UNSUBSCRIBE: a subscription to the same name
 * made meanwhile can go out now. */
static void redis_unsub_confirmed(redis *r, int pattern, const redisReply *name) {
    if (name->type != REDIS_REPLY_STRING) return;
    redis_unsub **u = redis_unsub_find(r, pattern, name->str, (size_t)name->len);
    if (!u) return;
    redis_unsub *gone = *u;
    *u = gone->next;
    free(gone);
    uint64_t h;
    size_t len = (size_t)name->len;
    for (redis_sub *s = redis_sub_first(r, pattern, name->str, len, &h); s; s = s->hnext)
        if (s->cb && redis_sub_is(s, h, pattern, name->str, len)) {
            redis_sub_send(r, s);
            break; /* one SUBSCRIBE confirms every entry of that name */
        }
}

/* Every reply of the subscriber connection lands here: subscription
 * confirmations and messages.  hiredis calls it with NULL when it frees
 * the context; the subscriptions are ours and survive that. */
static void redis_sub_cb(redisAsyncContext *ac, void *reply, void *privdata) {
    redis *r = privdata;
    const redisReply *rep = reply;
    if (rep == NULL || r->closing || rep->type != REDIS_REPLY_ARRAY || rep->elements < 3) return;
    const redisReply *const *e = (const redisReply *const *)rep->element;
    int pattern = redis_str_is(e[0], "psubscribe") || redis_str_is(e[0], "pmessage") ||
                  redis_str_is(e[0], "punsubscribe");
    if (redis_str_is(e[0], "subscribe") || redis_str_is(e[0], "psubscribe")) {
        if (e[1]->type != REDIS_REPLY_STRING) return;
        uint64_t h;
        size_t len = (size_t)e[1]->len;
        for (redis_sub *s = redis_sub_first(r, pattern, e[1]->str, len, &h); s; s = s->hnext)
            if (redis_sub_is(s, h, pattern, e[1]->str, len)) s->confirmed = 1;
        return;
    }
    if (redis_str_is(e[0], "unsubscribe") || redis_str_is(e[0], "punsubscribe")) {
        redis_unsub_confirmed(r, pattern, e[1]);
        return;
    }
    const redisReply *chan, *payload;
    if (redis_str_is(e[0], "message") && rep->elements == 3) {
        chan = e[1];
        payload = e[2];
    } else if (pattern && rep->elements == 4) {
        chan = e[2];
        payload = e[3];
    } else {
        return;
    }
    if (chan->type != REDIS_REPLY_STRING || payload->type != REDIS_REPLY_STRING) return;
    /* A callback may subscribe (appending), unsubscribe (the entry stays
     * until the walk is over) or close (subscriptions stay until the last
     * handle closed), so walking on is safe. */
    const redisReply *key = pattern ? e[1] : chan;
    if (key->type != REDIS_REPLY_STRING) return;
    uint64_t h;
    size_t klen = (size_t)key->len;
    r->dispatching++;
    for (redis_sub *s = redis_sub_first(r, pattern, key->str, klen, &h); s && !r->closing;
         s = s->hnext) {
        if (!s->cb || !redis_sub_is(s, h, pattern, key->str, klen)) continue;
        redis_message m = {
            .pattern = pattern ? s->name : NULL,
            .channel = chan->str,
            .channel_len = (size_t)chan->len,
            .payload = payload->str,
            .payload_len = (size_t)payload->len,
        };
        s->cb(s->opaque, &m);
    }
    if (--r->dispatching == 0) redis_subs_sweep(r);
}

static void redis_sub_send(redis *r, redis_sub *s) {
    redisAsyncContext *ac = r->sub.ac;
    if (ac == NULL || !r->sub.connected) return; /* sent when it (re)connects */
    if (redis_unsub_find(r, s->pattern, s->name, s->name_len))
        return; /* sent when the UNSUBSCRIBE before it is confirmed */
    const char *argv[2] = {s->pattern ? "PSUBSCRIBE" : "SUBSCRIBE", s->name};
    size_t argvlen[2] = {strlen(argv[0]), s->name_len};
    if (redisAsyncCommandArgv(ac, redis_sub_cb, r, 2, argv, argvlen) != REDIS_OK)
        LOG_WARN("redis: cannot send %s %s (connection going down; sent again on reconnect)",
                 argv[0], s->name);
}

int redis_subscribe(redis *r, const char *channel_or_pattern, int pattern, redis_message_cb cb,
                    void *opaque) {
    return redis_subscribe_handle(r, channel_or_pattern, pattern, cb, opaque, NULL);
}

int redis_sub_confirmed(const redis_sub *s) {
    return s && s->cb && s->confirmed && s->r->sub.connected;
}

int redis_subscribe_handle(redis *r, const char *channel_or_pattern, int pattern,
                           redis_message_cb cb, void *opaque, redis_sub **out) {
    if (r == NULL || cb == NULL || channel_or_pattern == NULL || *channel_or_pattern == '\0')
        return CD_ERR_INVALID;
    if (r->closing) return CD_ERR_BUSY;
    redis_sub *s = calloc(1, sizeof *s);
    if (s == NULL || (s->name = strdup(channel_or_pattern)) == NULL) {
        free(s);
        return CD_ERR_NOMEM;
    }
    s->name_len = strlen(s->name);
    s->r = r;
    s->pattern = pattern != 0;
    s->cb = cb;
    s->opaque = opaque;
    s->hash = redis_sub_hash(s->pattern, s->name, s->name_len);
    redis_subs_grow(r);
    if (r->nbuckets == 0) {
        free(s->name);
        free(s);
        return CD_ERR_NOMEM;
    }
    redis_sub **tail = &r->buckets[s->hash & (r->nbuckets - 1)];
    while (*tail)
        tail = &(*tail)->hnext;
    *tail = s;
    r->nsubs++;
    if (!r->sub.started)
        redis_conn_connect(&r->sub);
    else
        redis_sub_send(r, s);
    if (out) *out = s;
    return 0;
}

int redis_unsubscribe(redis *r, const char *channel_or_pattern, int pattern, redis_message_cb cb,
                      void *opaque) {
    if (r == NULL || channel_or_pattern == NULL) return CD_ERR_INVALID;
    pattern = pattern != 0;
    size_t len = strlen(channel_or_pattern);
    redis_sub *found = NULL;
    int others = 0;
    uint64_t h;
    for (redis_sub *s = redis_sub_first(r, pattern, channel_or_pattern, len, &h); s; s = s->hnext) {
        if (!s->cb || !redis_sub_is(s, h, pattern, channel_or_pattern, len)) continue;
        if (!found && s->cb == cb && s->opaque == opaque)
            found = s;
        else
            others = 1;
    }
    if (!found) return CD_ERR_INVALID;
    found->cb = NULL;
    if (r->dispatching == 0) {
        redis_sub_unlink_free(r, found);
    } else {
        found->dnext = r->dead;
        r->dead = found;
    }
    if (others || r->closing) return 0;
    redisAsyncContext *ac = r->sub.ac;
    if (ac == NULL || !r->sub.connected) return 0; /* nothing to undo on the server */
    if (redis_unsub_find(r, pattern, channel_or_pattern, len)) return 0;
    redis_unsub *u = malloc(sizeof(*u) + len + 1);
    if (u == NULL) return 0; /* the server keeps sending; nobody listens */
    u->pattern = pattern;
    u->name_len = len;
    memcpy(u->name, channel_or_pattern, len + 1);
    const char *argv[2] = {pattern ? "PUNSUBSCRIBE" : "UNSUBSCRIBE", channel_or_pattern};
    size_t argvlen[2] = {strlen(argv[0]), len};
    if (redisAsyncCommandArgv(ac, redis_sub_cb, r, 2, argv, argvlen) != REDIS_OK) {
        free(u);
        return 0;
    }
    u->next = r->unsubs;
    r->unsubs = u;
    return 0;
}
