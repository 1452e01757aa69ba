/*
 * sink-websocket — the ws:// server: upgrade, frames, customers, fan-out.
 *
 * One server per listen address, shared by every sink instance that names
 * it (the six onboarding pipelines each have a websocket sink, and a browser
 * must not need six sockets): a process-wide table keyed by the address,
 * refcounted by the instances attached.  The first instance's options win;
 * a different JWT key or Redis key prefix is a start error.  Calls that need
 * an instance (Redis, metrics, logs) use the first instance still attached
 * (the "owner"); when the owner stops first, the next one takes over its
 * metrics and subscriptions.
 *
 * Frames are wslay's event API: wslay reads through recv_cb from the bytes
 * on_data hands us, and writes through send_cb into the engine's stream
 * queue (stream_write copies; a frame's header and payload go as one write),
 * so wslay's own queue is always empty and the stream's queue is the one
 * that is bounded (stream_pending against max_send_queue_bytes; a client
 * over it is closed with 1008).
 *
 * Memory.  A wslay context is 8.6 KiB (a 4 KiB read buffer, a 4 KiB write
 * buffer), several times what the rest of a connection costs, and most held
 * connections are idle: a push now and then, a ping every ping_interval_ms.
 * So a connection holds a context only while it has protocol work in
 * progress: one is made when bytes arrive or a frame must be sent, and freed
 * as soon as wslay is idle again: nothing queued or half written, no close,
 * and no frame or fragmented message half read.  wslay keeps the last one to
 * itself, so the connection counts what it handed wslay against the frames
 * wslay reported starting (on_frame_recv_start: a frame's length is its
 * header's, 2 + 0/2/8 + 4 mask bytes, plus its payload; wslay refuses any
 * other length form), and notes whether a data message's last frame (FIN)
 * has come.  Counting only: wslay parses and checks every byte.  Once a
 * connection closes (our close frame written, the stream closing) its
 * context goes too: what the client says after that is not read.
 *
 * Ordering and resume.  Every message carries the customer's seq.  With
 * Redis, a socket's server subscribes to {prefix}push:{customer} while it
 * holds a socket of that customer, and delivers from the subscription
 * callback only.  A new socket first waits until the subscription is
 * confirmed, then reads the seq counter and the replay list in one EVAL:
 * it is sent a hello (the counter, and where its replay starts), then with
 * ?since=N the replayed messages above N, then the live messages that
 * arrived meanwhile (held), dropping any seq it already sent; from then on
 * live ones.  Without Redis the same happens in memory, synchronously.
 * A live message whose seq skips numbers (Redis pub/sub loses what is
 * published while the subscriber connection is down) sends the socket
 * through the replay again, from its last seq: the gap is filled.
 */
#include "websocket.h"

#include <errno.h>
#include <inttypes.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <wslay/wslay.h>

enum { WS_CONN_WAIT_SUB = 0, WS_CONN_REPLAY = 1, WS_CONN_LIVE = 2 };

/* A live message that arrived while the socket's replay was being read. */
typedef struct ws_held {
    struct ws_held *next;
    uint64_t seq;
    size_t len;
    char msg[];
} ws_held;

typedef struct ws_slot {
    uint64_t seq;
    pbuf msg;
} ws_slot;

struct ws_customer {
    ws_customer *hnext;
    ws_server *srv;
    char *id; /* owned, NUL-terminated */
    size_t id_len;
    ws_conn *conns;
    size_t nconns;
    /* In-process: */
    uint64_t seq;
    ws_slot *ring; /* ring_cap slots, grown (by doubling) up to replay_size */
    size_t ring_cap, ring_start, ring_count;
    /* Redis: */
    cd_redis_sub *sub;
};

struct ws_conn {
    ws_server *srv;
    ws_customer *cust;
    cd_http_stream *stream;        /* NULL once on_closed came */
    ws_conn *prev, *next;          /* srv->conns */
    ws_conn *cprev, *cnext;        /* cust->conns */
    ws_conn *wnext;                /* srv->waiting */
    wslay_event_context_ptr wslay; /* NULL while idle (see the top of the file) */
    uint64_t since, last_sent;
    ws_held *held_head, *held_tail;
    size_t held_bytes;
    uint64_t last_recv, last_ping, wait_since;
    uint64_t refreshed; /* last registry refresh for a pong (at most one a second) */
    /* Bytes handed to wslay less the lengths of the frames it began: > 0
     * part of a header is in wslay's buffer, < 0 a frame's rest is to
     * come, 0 between frames. */
    int32_t unframed;
    uint8_t fragmented; /* a data message's frames are coming (no FIN yet) */
    uint8_t odd;        /* the count cannot be trusted: keep the context */
    uint8_t state;
    uint8_t has_since;
    uint8_t closing;        /* our close is written, or the stream is closing */
    uint8_t replay_pending; /* the replay EVAL is in flight */
    uint8_t hello_sent;
    uint8_t gone; /* on_closed came while replay_pending: its callback frees */
    char id[40];  /* "<iid>-<counter>": 16 + 1 + at most 20 digits */
};

struct ws_server {
    ws_server *next; /* ws_servers */
    const cd_host *host;
    cd_instance *inst; /* the owner's (see the top of the file) */
    uv_loop_t *loop;
    ws_server_opts opts; /* owned copy of the first instance's */
    ws_ctx *attached;    /* owner first */
    int refs;
    cd_http_server *http;
    int use_redis;
    char iid[17];
    uint64_t conn_counter;
    ws_customer **buckets;
    size_t nbuckets, ncustomers;
    ws_conn *conns;
    size_t nconns;
    ws_conn *waiting; /* WS_CONN_WAIT_SUB, via wnext */
    uv_timer_t tick, subwait;
    int handles_open;
    int http_open;
    int closing;
    cd_done_cb closed_cb;
    void *closed_opaque;
    uint64_t delivered, slow, auth_failures; /* totals, for an owner handover */
    pbuf scratch;                            /* in-process push without a ring */
    pbuf frame;                              /* a frame's header, until its payload */
    const char *in;                          /* on_data's bytes, for recv_cb */
    size_t in_len;
    size_t ncontexts; /* connections holding a wslay context */
};

/* The process-wide table.  Everything runs on the engine's loop thread. */
static ws_server *ws_servers;

static const char ws_replay_script[] =
    "return {tonumber(redis.call('GET', KEYS[1]) or '0'), redis.call('LRANGE', KEYS[2], 0, -1)}";

static void ws_conn_close(ws_conn *c, uint16_t code, const char *reason);
static void ws_server_maybe_closed(ws_server *srv);

/* ------------------------------------------------------------- helpers */

static ws_ctx *ws_owner(const ws_server *srv) {
    return srv->attached;
}

static void ws_count(ws_server *srv, size_t which, double delta) {
    ws_ctx *o = ws_owner(srv);
    if (o == NULL) return;
    cd_metric *m = which == 0   ? o->m_conns
                   : which == 1 ? o->m_delivered
                   : which == 2 ? o->m_slow
                   : which == 3 ? o->m_auth
                                : o->m_contexts;
    if (m == NULL) return;
    if (which == 0)
        srv->host->metric_set(m, (double)srv->nconns);
    else if (which == 4)
        srv->host->metric_set(m, (double)srv->ncontexts);
    else
        srv->host->metric_add(m, delta);
}

static void ws_on_ignore(void *opaque, const cd_redis_reply *reply) {
    (void)opaque;
    (void)reply;
}

/* A registry command whose answer does not matter (the 24 h TTL mends a
 * lost one). */
static void ws_redis_fire(ws_server *srv, int argc, const char **argv, const size_t *lens) {
    char err[256];
    if (srv->host->redis_command(srv->inst, ws_on_ignore, NULL, argc, argv, lens, err,
                                 sizeof(err)) < 0 &&
        srv->host->log_enabled(srv->inst, CD_LOG_DEBUG))
        srv->host->log(srv->inst, CD_LOG_DEBUG, "registry %s: %s", argv[0], err);
}

static char *ws_key_new(const ws_server *srv, const char *kind, const char *id, size_t n) {
    size_t p = strlen(srv->opts.prefix), k = strlen(kind);
    char *s = malloc(p + k + n + 1);
    if (s == NULL) return NULL;
    memcpy(s, srv->opts.prefix, p);
    memcpy(s + p, kind, k);
    memcpy(s + p + k, id, n);
    s[p + k + n] = '\0';
    return s;
}

/* --------------------------------------------------------- customers */

static uint64_t ws_hash(const char *s, size_t n) {
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 1099511628211ULL;
    }
    return h;
}

static ws_customer *ws_customer_find(ws_server *srv, const char *id, size_t n) {
    ws_customer *c = srv->buckets[ws_hash(id, n) & (srv->nbuckets - 1)];
    for (; c; c = c->hnext)
        if (c->id_len == n && memcmp(c->id, id, n) == 0) return c;
    return NULL;
}

static void ws_customer_grow(ws_server *srv) {
    size_t nb = srv->nbuckets * 2;
    ws_customer **b = calloc(nb, sizeof(*b));
    if (b == NULL) return; /* longer chains, still correct */
    for (size_t i = 0; i < srv->nbuckets; i++) {
        ws_customer *c = srv->buckets[i];
        while (c) {
            ws_customer *next = c->hnext;
            size_t j = ws_hash(c->id, c->id_len) & (nb - 1);
            c->hnext = b[j];
            b[j] = c;
            c = next;
        }
    }
    free(srv->buckets);
    srv->buckets = b;
    srv->nbuckets = nb;
}

static ws_customer *ws_customer_get(ws_server *srv, const char *id, size_t n) {
    ws_customer *c = ws_customer_find(srv, id, n);
    if (c) return c;
    c = calloc(1, sizeof(*c));
    if (c == NULL) return NULL;
    c->id = malloc(n + 1);
    if (c->id == NULL) {
        free(c);
        return NULL;
    }
    memcpy(c->id, id, n);
    c->id[n] = '\0';
    c->id_len = n;
    c->srv = srv;
    if (srv->ncustomers >= srv->nbuckets) ws_customer_grow(srv);
    size_t j = ws_hash(id, n) & (srv->nbuckets - 1);
    c->hnext = srv->buckets[j];
    srv->buckets[j] = c;
    srv->ncustomers++;
    return c;
}

static void ws_customer_free(ws_customer *c) {
    ws_server *srv = c->srv;
    if (c->sub) srv->host->redis_unsubscribe(c->sub);
    for (size_t i = 0; i < c->ring_cap; i++)
        pbuf_free(&c->ring[i].msg);
    free(c->ring);
    free(c->id);
    free(c);
}

static void ws_customer_remove(ws_customer *c) {
    ws_server *srv = c->srv;
    ws_customer **pp = &srv->buckets[ws_hash(c->id, c->id_len) & (srv->nbuckets - 1)];
    while (*pp && *pp != c)
        pp = &(*pp)->hnext;
    if (*pp) *pp = c->hnext;
    srv->ncustomers--;
    ws_customer_free(c);
}

/* -------------------------------------------------------------- frames */

/* The length of a client frame with an n-byte payload: wslay takes a
 * length only in its shortest form, and a client's frames are masked (an
 * unmasked one is closed with 1002 before it is reported). */
static int32_t ws_client_frame_len(uint64_t n) {
    return (int32_t)(2 + (n < 126 ? 0 : n < 65536 ? 2 : 8) + 4 + n);
}

static ssize_t ws_recv_cb(wslay_event_context_ptr w, uint8_t *buf, size_t len, int flags,
                          void *user) {
    ws_conn *c = user;
    ws_server *srv = c->srv;
    if (srv->in_len == 0) {
        wslay_event_set_error(w, WSLAY_ERR_WOULDBLOCK);
        return -1;
    }
    size_t n = len < srv->in_len ? len : srv->in_len; /* len: at most wslay's 4 KiB */
    memcpy(buf, srv->in, n);
    srv->in += n;
    srv->in_len -= n;
    c->unframed += (int32_t)n;
    return (ssize_t)n;
}

/* A frame's header is handed over with WSLAY_MSG_MORE, its payload right
 * after (send_cb never blocks): both go into the stream as one write. */
static ssize_t ws_send_cb(wslay_event_context_ptr w, const uint8_t *data, size_t len, int flags,
                          void *user) {
    ws_conn *c = user;
    ws_server *srv = c->srv;
    pbuf *f = &srv->frame;
    int r = -1;
    if (flags & WSLAY_MSG_MORE) {
        f->len = 0;
        if (pbuf_append(f, data, len) == 0) return (ssize_t)len;
    } else if (c->stream != NULL) {
        if (f->len == 0)
            r = srv->host->stream_write(c->stream, data, len);
        else if (pbuf_append(f, data, len) == 0)
            r = srv->host->stream_write(c->stream, f->data, f->len);
    }
    f->len = 0;
    if (r < 0) {
        wslay_event_set_error(w, WSLAY_ERR_CALLBACK_FAILURE);
        return -1;
    }
    return (ssize_t)len;
}

/* wslay has read a frame's header: count the frame's bytes as framed. */
static void ws_on_frame_start(wslay_event_context_ptr w,
                              const struct wslay_event_on_frame_recv_start_arg *arg, void *user) {
    ws_conn *c = user;
    if (arg->payload_length > WS_MAX_RECV) {
        c->odd = 1; /* wslay refuses these first: never free on doubt */
        return;
    }
    c->unframed -= ws_client_frame_len(arg->payload_length);
    if (!(arg->opcode & 0x8)) c->fragmented = !arg->fin; /* control frames do not count */
}

static void ws_registry_refresh(ws_conn *c) {
    ws_server *srv = c->srv;
    if (!srv->use_redis || c->cust == NULL) return;
    char *ckey = ws_key_new(srv, "customer:", c->cust->id, c->cust->id_len);
    char *nkey = ws_key_new(srv, "connection:", c->id, strlen(c->id));
    char ttl[24];
    snprintf(ttl, sizeof(ttl), "%d", WS_REGISTRY_TTL_S);
    if (ckey && nkey) {
        const char *e1[] = {"EXPIRE", ckey, ttl};
        const char *e2[] = {"EXPIRE", nkey, ttl};
        ws_redis_fire(srv, 3, e1, NULL);
        ws_redis_fire(srv, 3, e2, NULL);
    }
    free(ckey);
    free(nkey);
}

static void ws_on_msg_cb(wslay_event_context_ptr w, const struct wslay_event_on_msg_recv_arg *arg,
                         void *user) {
    ws_conn *c = user;
    /* Clients have nothing to say; a pong keeps the registry entry alive
     * (once a second at most: unsolicited pongs must not flood Redis). */
    if (arg->opcode == WSLAY_PONG) {
        uint64_t now = uv_now(c->srv->loop);
        if (c->refreshed == 0 || now - c->refreshed >= 1000) {
            c->refreshed = now;
            ws_registry_refresh(c);
        }
    }
}

static const struct wslay_event_callbacks ws_wslay_cbs = {
    .recv_callback = ws_recv_cb,
    .send_callback = ws_send_cb,
    .on_frame_recv_start_callback = ws_on_frame_start,
    .on_msg_recv_callback = ws_on_msg_cb,
};

/* c's wslay context, made now if it has none; NULL without memory. */
static wslay_event_context_ptr ws_conn_wslay(ws_conn *c) {
    if (c->wslay) return c->wslay;
    if (wslay_event_context_server_init(&c->wslay, &ws_wslay_cbs, c) != 0) {
        c->wslay = NULL;
        return NULL;
    }
    wslay_event_config_set_max_recv_msg_length(c->wslay, WS_MAX_RECV);
    c->unframed = 0;
    c->fragmented = 0;
    c->srv->ncontexts++;
    ws_count(c->srv, 4, 0);
    return c->wslay;
}

static void ws_conn_free_wslay(ws_conn *c) {
    if (c->wslay == NULL) return;
    wslay_event_context_free(c->wslay);
    c->wslay = NULL;
    c->srv->ncontexts--;
    ws_count(c->srv, 4, 0);
}

/* Frees c's context once wslay has nothing in progress: nothing queued or
 * half written, no close, no frame or fragmented message half read (see
 * the top of the file).  A closing connection needs it no more. */
static void ws_conn_settle(ws_conn *c) {
    wslay_event_context_ptr w = c->wslay;
    if (w == NULL) return;
    if (c->closing || (c->unframed == 0 && !c->fragmented && !c->odd &&
                       wslay_event_get_queued_msg_count(w) == 0 && !wslay_event_want_write(w) &&
                       wslay_event_get_read_enabled(w) && wslay_event_get_write_enabled(w) &&
                       !wslay_event_get_close_sent(w) && !wslay_event_get_close_received(w)))
        ws_conn_free_wslay(c);
}

/* Ends c: the stream writes what is queued (a close frame, say), then
 * closes; on_closed follows. */
static void ws_conn_drop(ws_conn *c) {
    c->closing = 1;
    if (c->stream) c->srv->host->stream_close(c->stream);
    ws_conn_free_wslay(c);
}

/* Over max_send_queue_bytes (unsent, or held during a replay): counted,
 * logged, closed with 1008. */
static void ws_conn_close_slow(ws_conn *c, size_t unsent) {
    ws_server *srv = c->srv;
    srv->slow++;
    ws_count(srv, 2, 1);
    srv->host->log(srv->inst, CD_LOG_INFO,
                   "connection %s (%s): %zu bytes unsent, over max_send_queue_bytes: closing "
                   "with 1008",
                   c->id, c->stream ? srv->host->stream_peer(c->stream) : "-", unsent);
    ws_conn_close(c, 1008, "send queue full");
}

/* Queues one text message; -1 when the connection is (now) closing.  A
 * bounded send over max_send_queue_bytes closes the socket with 1008; a
 * replay is not bounded that way (it is at most replay_size messages, and a
 * resume should not fail because the client missed many). */
static int ws_conn_send(ws_conn *c, const char *msg, size_t len, int bounded) {
    ws_server *srv = c->srv;
    if (c->closing || c->stream == NULL) return -1;
    size_t pending = srv->host->stream_pending(c->stream);
    if (bounded && pending + len > srv->opts.max_send_queue) {
        ws_conn_close_slow(c, pending);
        return -1;
    }
    wslay_event_context_ptr w = ws_conn_wslay(c);
    struct wslay_event_msg m = {
        .opcode = WSLAY_TEXT_FRAME, .msg = (const uint8_t *)msg, .msg_length = len};
    if (w == NULL || wslay_event_queue_msg(w, &m) != 0 || wslay_event_send(w) != 0) {
        ws_conn_drop(c);
        return -1;
    }
    ws_conn_settle(c);
    srv->delivered++;
    ws_count(srv, 1, 1);
    return 0;
}

static void ws_conn_close(ws_conn *c, uint16_t code, const char *reason) {
    if (c->closing || c->stream == NULL) return;
    wslay_event_context_ptr w = ws_conn_wslay(c);
    if (w && wslay_event_queue_close(w, code, (const uint8_t *)reason, strlen(reason)) == 0)
        wslay_event_send(w);
    ws_conn_drop(c);
}

/* The first message of a socket: the customer's counter now (lastSeq) and
 * the seq its replay starts after (resumeFrom: since, the counter without
 * since, 0 when the counter started again). */
static void ws_conn_hello(ws_conn *c, uint64_t current) {
    pbuf *b = &c->srv->scratch;
    char tail[96];
    b->len = 0;
    c->hello_sent = 1;
    int n = snprintf(tail, sizeof(tail), ",\"lastSeq\":%" PRIu64 ",\"resumeFrom\":%" PRIu64 "}",
                     current, c->last_sent);
    if (pbuf_append(b, "{\"type\":\"connectd.hello\",\"connectionId\":", 40) < 0 ||
        pbuf_json_string(b, c->id, strlen(c->id)) < 0 ||
        pbuf_append(b, ",\"customerId\":", 14) < 0 ||
        pbuf_json_string(b, c->cust->id, c->cust->id_len) < 0 ||
        pbuf_append(b, tail, (size_t)n) < 0) {
        ws_conn_close(c, 1011, "out of memory");
        return;
    }
    ws_conn_send(c, b->data, b->len, 1);
}

static void ws_conn_fetch_replay(ws_conn *c);

/* A message for c's customer, in seq order. */
static void ws_conn_deliver(ws_conn *c, uint64_t seq, const char *msg, size_t len) {
    if (c->closing) return;
    if (c->state == WS_CONN_LIVE) {
        if (seq <= c->last_sent) {
            /* Behind what was sent: a message seen twice (two engines'
             * publishes crossing), or the customer's counter started again
             * (Redis restarted without its data).  Only the counter tells:
             * the replay read fetches it, and closes the socket with 1012
             * when it is below what was sent (ws_on_replay). */
            if (c->srv->use_redis) ws_conn_fetch_replay(c);
            return;
        }
        if (seq == c->last_sent + 1 || !c->srv->use_redis) {
            if (ws_conn_send(c, msg, len, 1) == 0) c->last_sent = seq;
            return;
        }
        /* Messages were lost on the way (a Redis reconnect): read them back
         * from the replay list, holding this one meanwhile. */
        c->srv->host->log(c->srv->inst, CD_LOG_INFO,
                          "connection %s: seq %" PRIu64 " after %" PRIu64 ": replaying the gap",
                          c->id, seq, c->last_sent);
        c->state = WS_CONN_REPLAY;
        ws_conn_fetch_replay(c);
        if (c->closing) return;
    }
    /* Replay under way: hold it (bounded like the send queue). */
    if (c->held_bytes + len > c->srv->opts.max_send_queue) {
        ws_conn_close_slow(c, c->held_bytes);
        return;
    }
    ws_held *h = malloc(sizeof(*h) + len);
    if (h == NULL) {
        ws_conn_close(c, 1011, "out of memory");
        return;
    }
    h->next = NULL;
    h->seq = seq;
    h->len = len;
    memcpy(h->msg, msg, len);
    if (c->held_tail)
        c->held_tail->next = h;
    else
        c->held_head = h;
    c->held_tail = h;
    c->held_bytes += len;
}

static void ws_conn_free_held(ws_conn *c) {
    while (c->held_head) {
        ws_held *h = c->held_head;
        c->held_head = h->next;
        free(h);
    }
    c->held_tail = NULL;
    c->held_bytes = 0;
}

/* The replay is sent: the held live messages, then live. */
static void ws_conn_go_live(ws_conn *c) {
    for (ws_held *h = c->held_head; h && !c->closing; h = h->next)
        if (h->seq > c->last_sent && ws_conn_send(c, h->msg, h->len, 1) == 0) c->last_sent = h->seq;
    ws_conn_free_held(c);
    c->state = WS_CONN_LIVE;
}

/* Where a resume starts: since, unless the counter is behind it (it
 * started again: Redis lost it, or an in-process server restarted), in
 * which case everything kept is new to the client. */
static uint64_t ws_resume_from(const ws_conn *c, uint64_t current) {
    if (!c->has_since) return current;
    return c->since > current ? 0 : c->since;
}

static void ws_conn_replay_local(ws_conn *c) {
    ws_customer *cu = c->cust;
    c->last_sent = ws_resume_from(c, cu->seq);
    ws_conn_hello(c, cu->seq);
    if (c->has_since)
        for (size_t i = 0; i < cu->ring_count && !c->closing; i++) {
            ws_slot *s = &cu->ring[(cu->ring_start + i) % cu->ring_cap];
            if (s->seq > c->last_sent && ws_conn_send(c, s->msg.data, s->msg.len, 0) == 0)
                c->last_sent = s->seq;
        }
    ws_conn_go_live(c);
}

static void ws_on_replay(void *opaque, const cd_redis_reply *reply) {
    ws_conn *c = opaque;
    c->replay_pending = 0;
    if (c->gone) {
        free(c);
        return;
    }
    if (c->closing) return;
    if (reply->error < 0 || reply->type != CD_REDIS_ARRAY || reply->elements != 2 ||
        reply->element[0].type != CD_REDIS_INTEGER || reply->element[1].type != CD_REDIS_ARRAY) {
        c->srv->host->log(c->srv->inst, CD_LOG_WARN, "connection %s: replay read failed: %s", c->id,
                          reply->str ? reply->str : "unexpected reply");
        ws_conn_close(c, 1011, "replay unavailable");
        return;
    }
    uint64_t current = (uint64_t)reply->element[0].integer;
    if (c->hello_sent && current < c->last_sent) {
        /* The counter started again: what this socket was sent and what
         * Redis numbers now no longer line up.  The client resumes with
         * since, and the hello tells it where the replay starts. */
        c->srv->host->log(c->srv->inst, CD_LOG_INFO,
                          "connection %s: the customer's counter is %" PRIu64 ", below the %" PRIu64
                          " already sent (Redis lost its data): closing with 1012 so the client "
                          "resumes",
                          c->id, current, c->last_sent);
        ws_conn_close(c, 1012, "message counter restarted: resume with since");
        return;
    }
    if (c->hello_sent) {
        /* Filling a gap: from the last seq sent. */
        c->has_since = 1;
        c->since = c->last_sent;
    }
    c->last_sent = ws_resume_from(c, current);
    if (!c->hello_sent) ws_conn_hello(c, current);
    const cd_redis_reply *list = &reply->element[1];
    /* LPUSH keeps the newest first: send from the end. */
    for (size_t i = list->elements; c->has_since && i-- > 0 && !c->closing;) {
        const cd_redis_reply *e = &list->element[i];
        uint64_t seq;
        if (e->type != CD_REDIS_STRING || ws_json_seq(e->str, e->len, &seq) < 0) continue;
        if (seq > c->last_sent && ws_conn_send(c, e->str, e->len, 0) == 0) c->last_sent = seq;
    }
    ws_conn_go_live(c);
}

static void ws_conn_fetch_replay(ws_conn *c) {
    ws_server *srv = c->srv;
    c->state = WS_CONN_REPLAY;
    char *k1 = ws_key_new(srv, "seq:", c->cust->id, c->cust->id_len);
    char *k2 = ws_key_new(srv, "replay:", c->cust->id, c->cust->id_len);
    char err[256] = "out of memory";
    int r = CD_ERR_NOMEM;
    if (k1 && k2) {
        const char *argv[] = {"EVAL", ws_replay_script, "2", k1, k2};
        size_t lens[] = {4, sizeof(ws_replay_script) - 1, 1, strlen(k1), strlen(k2)};
        r = srv->host->redis_command(srv->inst, ws_on_replay, c, 5, argv, lens, err, sizeof(err));
    }
    free(k1);
    free(k2);
    if (r < 0) {
        srv->host->log(srv->inst, CD_LOG_WARN, "connection %s: replay read failed: %s", c->id, err);
        ws_conn_close(c, 1011, "Redis unavailable");
        return;
    }
    c->replay_pending = 1;
}

/* ------------------------------------------------------- subscriptions */

static void ws_on_push_message(void *opaque, const cd_redis_message *m) {
    ws_customer *cu = opaque;
    uint64_t seq;
    if (ws_json_seq(m->payload, m->payload_len, &seq) < 0) return;
    for (ws_conn *c = cu->conns; c; c = c->cnext)
        ws_conn_deliver(c, seq, m->payload, m->payload_len);
}

static int ws_customer_subscribe(ws_server *srv, ws_customer *cu, char *err, size_t errlen) {
    char *chan = ws_key_new(srv, "push:", cu->id, cu->id_len);
    if (chan == NULL) {
        snprintf(err, errlen, "out of memory");
        return CD_ERR_NOMEM;
    }
    cd_redis_sub *sub = NULL;
    int r =
        srv->host->redis_subscribe(srv->inst, chan, 0, ws_on_push_message, cu, &sub, err, errlen);
    free(chan);
    if (r < 0) return r;
    cu->sub = sub;
    return 0;
}

static void ws_on_subwait(uv_timer_t *t) {
    ws_server *srv = ws_container_of(t, ws_server, subwait);
    uint64_t now = uv_now(srv->loop);
    /* A host that knows each subscription's state (ABI 1.6) lets a socket
     * go on as soon as its own customer's channel is confirmed, whatever
     * other customers connecting at the same moment are waiting for. */
    const cd_host *h = srv->host;
    int each = CD_HOST_HAS(h, redis_sub_confirmed);
    int all = each ? 0 : h->redis_subscribed(srv->inst);
    ws_conn **pp = &srv->waiting;
    while (*pp) {
        ws_conn *c = *pp;
        int confirmed = each ? c->cust->sub && h->redis_sub_confirmed(c->cust->sub) : all;
        if (c->closing || confirmed || now - c->wait_since >= WS_SUB_WAIT_MS) {
            *pp = c->wnext;
            c->wnext = NULL;
            if (!c->closing) ws_conn_fetch_replay(c);
        } else {
            pp = &c->wnext;
        }
    }
    if (srv->waiting == NULL) uv_timer_stop(t);
}

/* ---------------------------------------------------------- connections */

static void ws_conn_begin(ws_conn *c) {
    ws_server *srv = c->srv;
    if (!srv->use_redis) {
        ws_conn_replay_local(c);
        return;
    }
    char ttl[24];
    snprintf(ttl, sizeof(ttl), "%d", WS_REGISTRY_TTL_S);
    char *ckey = ws_key_new(srv, "customer:", c->cust->id, c->cust->id_len);
    char *nkey = ws_key_new(srv, "connection:", c->id, strlen(c->id));
    if (ckey && nkey) {
        const char *sadd[] = {"SADD", ckey, c->id};
        const char *exp[] = {"EXPIRE", ckey, ttl};
        const char *set[] = {"SET", nkey, c->cust->id, "EX", ttl};
        size_t setl[] = {3, strlen(nkey), c->cust->id_len, 2, strlen(ttl)};
        ws_redis_fire(srv, 3, sadd, NULL);
        ws_redis_fire(srv, 3, exp, NULL);
        ws_redis_fire(srv, 5, set, setl);
    }
    free(ckey);
    free(nkey);
    c->state = WS_CONN_WAIT_SUB;
    c->wait_since = uv_now(srv->loop);
    c->wnext = srv->waiting;
    srv->waiting = c;
    if (!uv_is_active((uv_handle_t *)&srv->subwait))
        uv_timer_start(&srv->subwait, ws_on_subwait, 0, 5);
}

static void ws_on_data(cd_http_stream *s, const char *data, size_t len, void *opaque) {
    ws_conn *c = opaque;
    ws_server *srv = c->srv;
    c->last_recv = uv_now(srv->loop);
    /* Once our close is written, what the client still says changes
     * nothing. */
    if (c->closing) return;
    /* A client that sends (pings, say) but does not read what it is
     * answered: the answers are bounded like messages are. */
    size_t pending = srv->host->stream_pending(c->stream);
    if (c->state == WS_CONN_LIVE && pending > srv->opts.max_send_queue) {
        ws_conn_close_slow(c, pending);
        return;
    }
    wslay_event_context_ptr w = ws_conn_wslay(c);
    if (w == NULL) {
        ws_conn_drop(c);
        return;
    }
    srv->in = data;
    srv->in_len = len;
    int r = wslay_event_recv(w);
    srv->in = NULL;
    srv->in_len = 0;
    /* Broken framing (r != 0) ends the connection without a close frame.
     * Else pongs go out, and the close wslay queued: the answer to the
     * client's, or 1002 / 1007 / 1009 for a rule broken; then the socket
     * goes. */
    if (r != 0 || (wslay_event_want_write(w) && wslay_event_send(w) != 0) ||
        wslay_event_get_close_sent(w) || wslay_event_get_close_received(w) ||
        !wslay_event_get_read_enabled(w)) {
        ws_conn_drop(c);
        return;
    }
    ws_conn_settle(c);
}

static void ws_conn_unlink(ws_conn *c) {
    ws_server *srv = c->srv;
    if (c->prev)
        c->prev->next = c->next;
    else
        srv->conns = c->next;
    if (c->next) c->next->prev = c->prev;
    srv->nconns--;
    for (ws_conn **pp = &srv->waiting; *pp; pp = &(*pp)->wnext)
        if (*pp == c) {
            *pp = c->wnext;
            break;
        }
    ws_customer *cu = c->cust;
    if (cu) {
        if (c->cprev)
            c->cprev->cnext = c->cnext;
        else
            cu->conns = c->cnext;
        if (c->cnext) c->cnext->cprev = c->cprev;
        cu->nconns--;
        if (srv->use_redis) {
            char *ckey = ws_key_new(srv, "customer:", cu->id, cu->id_len);
            char *nkey = ws_key_new(srv, "connection:", c->id, strlen(c->id));
            if (ckey && nkey) {
                const char *srem[] = {"SREM", ckey, c->id};
                const char *del[] = {"DEL", nkey};
                ws_redis_fire(srv, 3, srem, NULL);
                ws_redis_fire(srv, 2, del, NULL);
            }
            free(ckey);
            free(nkey);
            /* Nobody here wants this customer's pushes any more. */
            if (cu->nconns == 0) ws_customer_remove(cu);
        }
        c->cust = NULL;
    }
}

static void ws_on_closed(cd_http_stream *s, void *opaque) {
    ws_conn *c = opaque;
    ws_server *srv = c->srv;
    c->stream = NULL;
    c->closing = 1;
    ws_conn_unlink(c);
    ws_count(srv, 0, 0);
    ws_conn_free_held(c);
    ws_conn_free_wslay(c);
    if (c->replay_pending)
        c->gone = 1;
    else
        free(c);
    if (srv->closing) ws_server_maybe_closed(srv);
}

static void ws_on_tick(uv_timer_t *t) {
    ws_server *srv = ws_container_of(t, ws_server, tick);
    uint64_t now = uv_now(srv->loop);
    for (ws_conn *c = srv->conns; c; c = c->next) {
        if (c->closing) continue;
        if (now - c->last_recv >= srv->opts.idle_timeout_ms) {
            ws_conn_close(c, 1000, "idle timeout");
            continue;
        }
        if (now - c->last_ping >= srv->opts.ping_interval_ms) {
            c->last_ping = now;
            wslay_event_context_ptr w = ws_conn_wslay(c);
            struct wslay_event_msg m = {.opcode = WSLAY_PING, .msg = NULL, .msg_length = 0};
            if (w == NULL || wslay_event_queue_msg(w, &m) != 0 || wslay_event_send(w) != 0)
                ws_conn_drop(c);
            else
                ws_conn_settle(c);
        }
    }
}

/* ------------------------------------------------------------- the door */

static void ws_respond_json(ws_server *srv, cd_http_request *req, int status, const char *error,
                            const char *const *headers) {
    pbuf b = {0};
    int ok = pbuf_append(&b, "{\"error\":", 9) == 0 &&
             pbuf_json_string(&b, error, strlen(error)) == 0 && pbuf_append(&b, "}", 1) == 0;
    srv->host->http_respond(req, status, "application/json", ok ? b.data : "{}", ok ? b.len : 2,
                            headers);
    pbuf_free(&b);
}

/* Sec-WebSocket-Accept for key (RFC 6455 section 4.2.2). */
static void ws_accept_value(const char *key, char out[64]) {
    static const char guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    char text[24 + sizeof(guid)];
    size_t n = strlen(key);
    memcpy(text, key, n);
    memcpy(text + n, guid, sizeof(guid));
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    EVP_Digest(text, n + sizeof(guid) - 1, md, &mdlen, EVP_sha1(), NULL);
    EVP_EncodeBlock((unsigned char *)out, md, (int)mdlen);
}

static int ws_key_ok(const char *key) {
    /* base64 of 16 bytes: 22 characters and "==". */
    if (key == NULL || strlen(key) != 24 || strcmp(key + 22, "==") != 0) return 0;
    for (size_t i = 0; i < 22; i++) {
        char ch = key[i];
        if (!((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
              ch == '+' || ch == '/'))
            return 0;
    }
    return 1;
}

static int ws_parse_u64(const char *s, uint64_t *out) {
    if (s == NULL || *s == '\0' || strlen(s) > 19) return -1;
    uint64_t v = 0;
    for (; *s; s++) {
        if (*s < '0' || *s > '9') return -1;
        v = v * 10 + (uint64_t)(*s - '0');
    }
    *out = v;
    return 0;
}

static void ws_handle_upgrade(ws_server *srv, cd_http_request *req) {
    const cd_host *h = srv->host;
    static const char *const h_upgrade[] = {"Upgrade: websocket", NULL};
    static const char *const h_version[] = {"Sec-WebSocket-Version: 13", NULL};
    static const char *const h_retry[] = {"Retry-After: 1", NULL};
    static const char *const h_auth[] = {"WWW-Authenticate: Bearer realm=\"connectd\"", NULL};
    static const char *const h_bad[] = {
        "WWW-Authenticate: Bearer realm=\"connectd\", error=\"invalid_token\"", NULL};
    if (srv->closing) {
        ws_respond_json(srv, req, 503, "shutting down", h_retry);
        return;
    }
    const char *up = h->http_header(req, "upgrade");
    if (!h->http_is_upgrade(req) || up == NULL || strcasecmp(up, "websocket") != 0) {
        ws_respond_json(srv, req, 426, "GET /ws must be a WebSocket upgrade", h_upgrade);
        return;
    }
    const char *version = h->http_header(req, "sec-websocket-version");
    if (version == NULL || strcmp(version, "13") != 0) {
        ws_respond_json(srv, req, 426, "Sec-WebSocket-Version must be 13", h_version);
        return;
    }
    const char *key = h->http_header(req, "sec-websocket-key");
    if (!ws_key_ok(key)) {
        ws_respond_json(srv, req, 400, "Sec-WebSocket-Key is missing or malformed", NULL);
        return;
    }
    size_t token_len = 0;
    const char *token = ws_auth_token(h->http_header(req, "authorization"),
                                      h->http_query_param(req, "token"), &token_len);
    char why[WS_REASON_MAX] = "";
    char *sub = NULL;
    ws_auth_result ar =
        ws_auth_verify(&srv->opts.auth, token, token_len, time(NULL), &sub, why, sizeof(why));
    if (ar != WS_AUTH_OK) {
        srv->auth_failures++;
        ws_count(srv, 3, 1);
        if (h->log_enabled(srv->inst, CD_LOG_DEBUG))
            h->log(srv->inst, CD_LOG_DEBUG, "401 for %s: %s", h->http_peer(req), why);
        ws_respond_json(srv, req, 401, why, ar == WS_AUTH_MISSING ? h_auth : h_bad);
        return;
    }
    uint64_t since = 0;
    const char *since_text = h->http_query_param(req, "since");
    if (since_text && ws_parse_u64(since_text, &since) < 0) {
        free(sub);
        ws_respond_json(srv, req, 400, "since must be a sequence number (digits)", NULL);
        return;
    }
    if (srv->nconns >= srv->opts.max_connections) {
        free(sub);
        ws_respond_json(srv, req, 503, "too many connections", h_retry);
        return;
    }
    ws_conn *c = calloc(1, sizeof(*c));
    ws_customer *cu = c ? ws_customer_get(srv, sub, strlen(sub)) : NULL;
    free(sub);
    if (c == NULL || cu == NULL) {
        free(c);
        ws_respond_json(srv, req, 503, "out of memory", h_retry);
        return;
    }
    char err[256];
    if (srv->use_redis && cu->sub == NULL && ws_customer_subscribe(srv, cu, err, sizeof(err)) < 0) {
        h->log(srv->inst, CD_LOG_WARN, "subscribe for %s: %s", cu->id, err);
        free(c);
        if (cu->nconns == 0) ws_customer_remove(cu);
        ws_respond_json(srv, req, 503, "Redis unavailable", h_retry);
        return;
    }
    char accept[64], accept_line[96];
    ws_accept_value(key, accept);
    snprintf(accept_line, sizeof(accept_line), "Sec-WebSocket-Accept: %s", accept);
    const char *const headers[] = {"Upgrade: websocket", "Connection: Upgrade", accept_line, NULL};
    static const cd_http_stream_cbs cbs = {.on_data = ws_on_data, .on_closed = ws_on_closed};
    cd_http_stream *stream = NULL;
    int r = h->http_upgrade(req, headers, &cbs, c, &stream);
    if (r < 0) {
        if (r == CD_ERR_INVALID) ws_respond_json(srv, req, 500, "upgrade failed", NULL);
        free(c);
        if (cu->nconns == 0 && srv->use_redis) ws_customer_remove(cu);
        return;
    }
    c->srv = srv;
    c->stream = stream;
    c->cust = cu;
    c->has_since = since_text != NULL;
    c->since = since;
    c->last_recv = c->last_ping = uv_now(srv->loop);
    snprintf(c->id, sizeof(c->id), "%s-%" PRIu64, srv->iid, ++srv->conn_counter);
    c->next = srv->conns;
    if (srv->conns) srv->conns->prev = c;
    srv->conns = c;
    srv->nconns++;
    c->cnext = cu->conns;
    if (cu->conns) cu->conns->cprev = c;
    cu->conns = c;
    cu->nconns++;
    ws_count(srv, 0, 0);
    ws_conn_begin(c);
}

static void ws_handler(cd_http_request *req, void *opaque) {
    ws_server *srv = opaque;
    const cd_host *h = srv->host;
    const char *path = h->http_path(req);
    const char *method = h->http_method(req);
    static const char *const h_allow[] = {"Allow: GET, HEAD", NULL};
    if (strcmp(path, "/connectd-ws.js") == 0) {
        if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0) {
            ws_respond_json(srv, req, 405, "method not allowed", h_allow);
            return;
        }
        /* A module script from another origin (the web app's) is fetched
         * with CORS: the client holds nothing secret. */
        static const char *const h_js[] = {"Cache-Control: no-cache",
                                           "Access-Control-Allow-Origin: *", NULL};
        h->http_respond(req, 200, "text/javascript; charset=utf-8", ws_client_js, ws_client_js_len,
                        h_js);
        return;
    }
    if (strcmp(path, "/demo") == 0) {
        if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0) {
            ws_respond_json(srv, req, 405, "method not allowed", h_allow);
            return;
        }
        /* The onboarding journey page: its token arrives in the fragment,
         * so it never reaches a log; the page talks only to this origin. */
        static const char *const h_html[] = {
            "Cache-Control: no-cache", "X-Content-Type-Options: nosniff",
            "Content-Security-Policy: default-src 'none'; script-src 'self' 'unsafe-inline'; "
            "style-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:",
            NULL};
        h->http_respond(req, 200, "text/html; charset=utf-8", ws_demo_html, ws_demo_html_len,
                        h_html);
        return;
    }
    if (strcmp(path, "/ws") != 0) {
        ws_respond_json(srv, req, 404, "not found (GET /ws, GET /demo, GET /connectd-ws.js)", NULL);
        return;
    }
    if (strcmp(method, "GET") != 0) {
        static const char *const h_get[] = {"Allow: GET", NULL};
        ws_respond_json(srv, req, 405, "method not allowed", h_get);
        return;
    }
    ws_handle_upgrade(srv, req);
}

/* ------------------------------------------------------ pushes (local) */

int ws_server_uses_redis(const ws_server *srv) {
    return srv && srv->use_redis;
}

int ws_server_push_local(ws_server *srv, const char *cust, size_t cust_len, const char *msg,
                         size_t len, uint64_t *seq) {
    ws_customer *cu = ws_customer_get(srv, cust, cust_len);
    if (cu == NULL) return CD_ERR_NOMEM;
    pbuf *out = &srv->scratch;
    uint64_t n = cu->seq + 1;
    size_t size = srv->opts.replay_size;
    if (size) {
        /* The ring grows as the customer's messages come (most customers
         * get a few): full below replay_size, it doubles; it wraps only at
         * replay_size, so until then it starts at 0 and realloc keeps the
         * order. */
        if (cu->ring_count == cu->ring_cap && cu->ring_cap < size) {
            size_t cap = cu->ring_cap ? cu->ring_cap * 2 : 2;
            if (cap > size) cap = size;
            ws_slot *ring = realloc(cu->ring, cap * sizeof(*ring));
            if (ring == NULL) return CD_ERR_NOMEM;
            memset(ring + cu->ring_cap, 0, (cap - cu->ring_cap) * sizeof(*ring));
            cu->ring = ring;
            cu->ring_cap = cap;
        }
        ws_slot *s;
        if (cu->ring_count < cu->ring_cap) {
            s = &cu->ring[(cu->ring_start + cu->ring_count) % cu->ring_cap];
            cu->ring_count++;
        } else {
            s = &cu->ring[cu->ring_start];
            cu->ring_start = (cu->ring_start + 1) % cu->ring_cap;
        }
        out = &s->msg;
        s->seq = n;
    }
    if (ws_json_insert_seq(out, msg, len, n) < 0) return CD_ERR_NOMEM;
    cu->seq = n;
    *seq = n;
    for (ws_conn *c = cu->conns; c; c = c->cnext)
        ws_conn_deliver(c, n, out->data, out->len);
    return 0;
}

/* ------------------------------------------------------- attach, close */

static void ws_server_free(ws_server *srv) {
    for (size_t i = 0; i < srv->nbuckets; i++) {
        ws_customer *c = srv->buckets[i];
        while (c) {
            ws_customer *next = c->hnext;
            ws_customer_free(c);
            c = next;
        }
    }
    free(srv->buckets);
    pbuf_free(&srv->scratch);
    pbuf_free(&srv->frame);
    ws_server_opts_free(&srv->opts);
    free(srv);
}

static void ws_server_maybe_closed(ws_server *srv) {
    if (!srv->closing || srv->nconns || srv->http_open || srv->handles_open) return;
    cd_done_cb cb = srv->closed_cb;
    void *opaque = srv->closed_opaque;
    ws_server_free(srv);
    if (cb) cb(opaque, 0);
}

static void ws_on_handle_closed(uv_handle_t *h) {
    ws_server *srv = h->data;
    srv->handles_open--;
    ws_server_maybe_closed(srv);
}

static void ws_on_http_closed(void *opaque, int status) {
    ws_server *srv = opaque;
    srv->http_open = 0;
    ws_server_maybe_closed(srv);
}

static int ws_opts_copy(ws_server_opts *dst, const ws_server_opts *src, char *errbuf,
                        size_t errlen) {
    *dst = *src;
    dst->listen = strdup(src->listen);
    dst->prefix = strdup(src->prefix);
    int r = jwt_verifier_init(&dst->auth, src->auth.secret, src->auth.public_key,
                              JWT_KEYS_EXACTLY_ONE, errbuf, errlen);
    if (r < 0 || !dst->listen || !dst->prefix) {
        ws_server_opts_free(dst);
        if (r == 0) snprintf(errbuf, errlen, "out of memory");
        return r < 0 ? r : CD_ERR_NOMEM;
    }
    return 0;
}

static int ws_server_create(ws_ctx *ctx, char *errbuf, size_t errlen) {
    const cd_host *h = ctx->host;
    if (!CD_HOST_HAS(h, http_listen) || !CD_HOST_HAS(h, http_upgrade) ||
        !CD_HOST_HAS(h, stream_write) || !CD_HOST_HAS(h, redis_subscribed)) {
        snprintf(errbuf, errlen,
                 "mode server: the engine has no HTTP upgrade / stream API (plugin ABI 1.5)");
        return CD_ERR_UNSUPPORTED;
    }
    ws_server *srv = calloc(1, sizeof(*srv));
    if (srv == NULL) {
        snprintf(errbuf, errlen, "out of memory");
        return CD_ERR_NOMEM;
    }
    srv->host = h;
    srv->inst = ctx->inst;
    srv->loop = ctx->loop;
    int r = ws_opts_copy(&srv->opts, &ctx->opts, errbuf, errlen);
    if (r < 0) {
        free(srv);
        return r;
    }
    srv->nbuckets = 64;
    srv->buckets = calloc(srv->nbuckets, sizeof(*srv->buckets));
    unsigned char rnd[8];
    if (srv->buckets == NULL || getrandom(rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd)) {
        snprintf(errbuf, errlen, "%s", srv->buckets ? "getrandom failed" : "out of memory");
        ws_server_free(srv);
        return CD_ERR_IO;
    }
    for (size_t i = 0; i < sizeof(rnd); i++)
        snprintf(srv->iid + 2 * i, 3, "%02x", rnd[i]);
    /* Redis when the engine has redis_url. */
    if (CD_HOST_HAS(h, redis_command)) {
        const char *ping[] = {"PING"};
        char err[256] = "";
        r = h->redis_command(ctx->inst, ws_on_ignore, NULL, 1, ping, NULL, err, sizeof(err));
        srv->use_redis = r != CD_ERR_UNSUPPORTED;
        if (r < 0 && srv->use_redis)
            h->log(ctx->inst, CD_LOG_WARN,
                   "Redis not reachable yet (%s): upgrades answer 503 and pushes RETRY until it is",
                   err);
    }
    cd_http_limits lim = {
        .max_body = 4096,
        .max_header_bytes = 16384,
        .max_headers = 100,
        /* Room above the WebSocket limit for requests on their way in. */
        .max_connections = srv->opts.max_connections + 256,
        .header_timeout_ms = 10000,
        .body_timeout_ms = 10000,
        .idle_timeout_ms = 60000,
    };
    r = h->http_listen(ctx->inst, srv->opts.listen, &lim, ws_handler, srv, &srv->http, errbuf,
                       errlen);
    if (r < 0) {
        ws_server_free(srv);
        return r;
    }
    srv->http_open = 1;
    h->log(ctx->inst, CD_LOG_INFO, "websocket server listening on %.*s:%d (%s)",
           (int)(strrchr(srv->opts.listen, ':') - srv->opts.listen), srv->opts.listen,
           h->http_port(srv->http), srv->use_redis ? "fan-out through Redis" : "in-process");
    uv_timer_init(srv->loop, &srv->tick);
    uv_timer_init(srv->loop, &srv->subwait);
    srv->tick.data = srv->subwait.data = srv;
    srv->handles_open = 2;
    uint64_t every = srv->opts.ping_interval_ms < srv->opts.idle_timeout_ms
                         ? srv->opts.ping_interval_ms
                         : srv->opts.idle_timeout_ms;
    every /= 4;
    if (every < 5) every = 5;
    if (every > 1000) every = 1000;
    uv_timer_start(&srv->tick, ws_on_tick, every, every);
    srv->refs = 1;
    srv->attached = ctx;
    ctx->next_attached = NULL;
    ctx->server = srv;
    srv->next = ws_servers;
    ws_servers = srv;
    return 0;
}

int ws_server_attach(ws_ctx *ctx, char *errbuf, size_t errlen) {
    ws_server *srv = ws_servers;
    while (srv && (srv->closing || strcmp(srv->opts.listen, ctx->opts.listen) != 0))
        srv = srv->next;
    if (srv == NULL) return ws_server_create(ctx, errbuf, errlen);
    const cd_host *h = ctx->host;
    ws_ctx *owner = ws_owner(srv);
    if (!jwt_verifier_same(&srv->opts.auth, &ctx->opts.auth)) {
        snprintf(errbuf, errlen,
                 "jwt_secret / jwt_public_key: differs from the sink that opened %s (%s/%s); "
                 "sinks sharing a listen address must share the JWT key",
                 ctx->opts.listen, owner ? h->pipeline_name(owner->inst) : "?",
                 owner ? h->instance_name(owner->inst) : "?");
        return CD_ERR_INVALID;
    }
    if (strcmp(srv->opts.prefix, ctx->opts.prefix) != 0) {
        snprintf(errbuf, errlen, "key_prefix: \"%s\" differs from \"%s\" of the server on %s",
                 ctx->opts.prefix, srv->opts.prefix, ctx->opts.listen);
        return CD_ERR_INVALID;
    }
    if (srv->opts.ping_interval_ms != ctx->opts.ping_interval_ms ||
        srv->opts.idle_timeout_ms != ctx->opts.idle_timeout_ms ||
        srv->opts.max_send_queue != ctx->opts.max_send_queue ||
        srv->opts.max_connections != ctx->opts.max_connections ||
        srv->opts.replay_size != ctx->opts.replay_size)
        h->log(ctx->inst, CD_LOG_WARN,
               "server options differ from those of the sink that opened %s: its options apply",
               ctx->opts.listen);
    ws_ctx **pp = &srv->attached;
    while (*pp)
        pp = &(*pp)->next_attached;
    *pp = ctx;
    ctx->next_attached = NULL;
    ctx->server = srv;
    srv->refs++;
    return 0;
}

/* The next instance takes the owner's part: its metrics carry on the
 * totals, and the subscriptions move to it (subscribe anew, then drop the
 * old: a message may come twice meanwhile, and seq drops the second). */
static void ws_server_handover(ws_server *srv) {
    ws_ctx *o = ws_owner(srv);
    srv->inst = o->inst;
    const cd_host *h = srv->host;
    if (o->m_conns) h->metric_set(o->m_conns, (double)srv->nconns);
    if (o->m_delivered) h->metric_add(o->m_delivered, (double)srv->delivered);
    if (o->m_slow) h->metric_add(o->m_slow, (double)srv->slow);
    if (o->m_auth) h->metric_add(o->m_auth, (double)srv->auth_failures);
    if (o->m_contexts) h->metric_set(o->m_contexts, (double)srv->ncontexts);
    if (!srv->use_redis) return;
    for (size_t i = 0; i < srv->nbuckets; i++)
        for (ws_customer *c = srv->buckets[i]; c; c = c->hnext) {
            cd_redis_sub *old = c->sub;
            char err[256];
            if (ws_customer_subscribe(srv, c, err, sizeof(err)) < 0) {
                h->log(srv->inst, CD_LOG_WARN, "resubscribe for %s: %s (keeping the old one)",
                       c->id, err);
                c->sub = old;
                continue;
            }
            if (old) h->redis_unsubscribe(old);
        }
}

void ws_server_detach(ws_ctx *ctx, cd_done_cb cb, void *opaque) {
    ws_server *srv = ctx->server;
    int was_owner = srv->attached == ctx;
    ws_ctx **pp = &srv->attached;
    while (*pp && *pp != ctx)
        pp = &(*pp)->next_attached;
    if (*pp) *pp = ctx->next_attached;
    ctx->next_attached = NULL;
    ctx->server = NULL;
    if (--srv->refs > 0) {
        if (was_owner) ws_server_handover(srv);
        cb(opaque, 0);
        return;
    }
    /* The last one: every socket gets 1001, then the server goes. */
    srv->closing = 1;
    srv->closed_cb = cb;
    srv->closed_opaque = opaque;
    for (ws_server **sp = &ws_servers; *sp; sp = &(*sp)->next)
        if (*sp == srv) {
            *sp = srv->next;
            break;
        }
    srv->host->log(srv->inst, CD_LOG_INFO, "websocket server on %s closing (%zu connections)",
                   srv->opts.listen, srv->nconns);
    for (ws_conn *c = srv->conns; c; c = c->next)
        ws_conn_close(c, 1001, "server shutting down");
    uv_timer_stop(&srv->tick);
    uv_timer_stop(&srv->subwait);
    uv_close((uv_handle_t *)&srv->tick, ws_on_handle_closed);
    uv_close((uv_handle_t *)&srv->subwait, ws_on_handle_closed);
    srv->host->http_close(srv->http, ws_on_http_closed, srv);
}
