/* Kafka room; see kafka.h. */
#include "kafka.h"
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

static void kafka_queue_on_poll(uv_poll_t *h, int status, int events) {
    kafka_queue_watch *w = container_of(h, kafka_queue_watch, poll);
    char buf[256];
    /* Empty the pipe first: librdkafka writes again only on the next
     * empty -> non-empty transition, so the queue must then be drained. */
    while (read(w->fds[0], buf, sizeof(buf)) > 0)
        ;
    w->on_ready(w);
}

int kafka_queue_watch_start(kafka_queue_watch *w, uv_loop_t *loop, rd_kafka_queue_t *q,
                            kafka_queue_ready_cb on_ready, char *errbuf, size_t errlen) {
    if (pipe2(w->fds, O_NONBLOCK | O_CLOEXEC) < 0) {
        snprintf(errbuf, errlen, "pipe: %s", strerror(errno));
        return CD_ERR_IO;
    }
    w->queue = q;
    w->on_ready = on_ready;
    int r = uv_poll_init(loop, &w->poll, w->fds[0]);
    if (r == 0) r = uv_poll_start(&w->poll, UV_READABLE, kafka_queue_on_poll);
    if (r < 0) {
        snprintf(errbuf, errlen, "uv_poll: %s", uv_strerror(r));
        close(w->fds[0]);
        close(w->fds[1]);
        return r;
    }
    rd_kafka_queue_io_event_enable(q, w->fds[1], "1", 1);
    /* Events queued before the pipe was attached would never signal. */
    char one = '1';
    ssize_t n = write(w->fds[1], &one, 1);
    (void)n;
    return 0;
}

static void kafka_queue_on_close(uv_handle_t *h) {
    kafka_queue_watch *w = container_of((uv_poll_t *)h, kafka_queue_watch, poll);
    close(w->fds[0]);
    close(w->fds[1]);
    if (w->on_closed) w->on_closed(w);
}

void kafka_queue_watch_close(kafka_queue_watch *w, void (*on_closed)(kafka_queue_watch *w)) {
    if (w->queue) rd_kafka_queue_io_event_enable(w->queue, -1, NULL, 0);
    w->on_closed = on_closed;
    uv_close((uv_handle_t *)&w->poll, kafka_queue_on_close);
}

int kafka_conf_apply(rd_kafka_conf_t *conf, const json_t *props, char *errbuf, size_t errlen) {
    const char *key;
    json_t *v;
    char err[512];
    if (!props) return 0;
    json_object_foreach((json_t *)props, key, v) {
        if (rd_kafka_conf_set(conf, key, json_string_value(v), err, sizeof(err)) !=
            RD_KAFKA_CONF_OK) {
            snprintf(errbuf, errlen, "kafka property %s: %s", key, err);
            return CD_ERR_INVALID;
        }
    }
    return 0;
}

void kafka_conf_force(rd_kafka_conf_t *conf, const json_t *props, const char *name,
                      const char *value, const char *why) {
    const char *user = json_string_value(json_object_get(props, name));
    if (user && strcmp(user, value) != 0 && why)
        LOG_WARN("kafka property %s=%s overridden to %s: %s", name, user, value, why);
    char err[256];
    rd_kafka_conf_set(conf, name, value, err, sizeof(err));
}

static void kafka_log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf) {
    /* syslog levels: 0-3 error, 4 warning, 5-6 info, 7 debug. */
    cd_log_level l = level <= 3   ? CD_LOG_ERROR
                     : level == 4 ? CD_LOG_WARN
                     : level <= 6 ? CD_LOG_INFO
                                  : CD_LOG_DEBUG;
    log_msg(l, "kafka", "%s: %s: %s", rd_kafka_name(rk), fac, buf);
}

void kafka_conf_set_logger(rd_kafka_conf_t *conf) {
    rd_kafka_conf_set_log_cb(conf, kafka_log_cb);
}

void kafka_describe_listener(const json_t *props, char *out, size_t outlen) {
    const char *bs = json_string_value(json_object_get(props, "bootstrap.servers"));
    const char *proto = json_string_value(json_object_get(props, "security.protocol"));
    const char *mech = json_string_value(json_object_get(props, "sasl.mechanisms"));
    if (!mech) mech = json_string_value(json_object_get(props, "sasl.mechanism"));
    snprintf(out, outlen, "%s (%s%s%s)", bs ? bs : "(no bootstrap.servers)",
             proto ? proto : "PLAINTEXT", mech ? ", " : "", mech ? mech : "");
}

/* ----------------------------------------------------------------- producer */
/* Errors about the record itself, that resending it cannot fix, are
 * CD_ERR_INVALID (a source answers them 400, not 503).  A topic that does
 * not exist or that this client may not write is the deployment's problem,
 * not the record's: it may succeed once the topic or the ACL is there, so
 * it is CD_ERR_IO like everything else that may succeed later. */
static int kafka_produce_error(rd_kafka_resp_err_t err) {
    switch (err) {
    case RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE:
    case RD_KAFKA_RESP_ERR_INVALID_MSG_SIZE:
    case RD_KAFKA_RESP_ERR_RECORD_LIST_TOO_LARGE:
    case RD_KAFKA_RESP_ERR__INVALID_ARG:
    case RD_KAFKA_RESP_ERR_INVALID_RECORD:
        return CD_ERR_INVALID;
    case RD_KAFKA_RESP_ERR__QUEUE_FULL:
        return CD_ERR_BUSY;
    default:
        return CD_ERR_IO;
    }
}

typedef struct produce_req {
    cd_produce_cb cb;
    void *opaque;
    kafka_producer *p;
} produce_req;

static void kafka_producer_dr(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque) {
    produce_req *req = m->_private;
    if (!req) return;
    req->p->inflight--;
    if (m->err)
        req->cb(req->opaque, kafka_produce_error(m->err), rd_kafka_err2str(m->err), m->partition,
                -1);
    else
        req->cb(req->opaque, 0, NULL, m->partition, m->offset);
    free(req);
}

static void kafka_producer_error_cb(rd_kafka_t *rk, int err, const char *reason, void *opaque) {
    kafka_producer *p = opaque;
    log_msg(CD_LOG_ERROR, "producer", "%s: %s: %s", p->listener,
            rd_kafka_err2name((rd_kafka_resp_err_t)err), reason);
}

static void kafka_producer_ready(kafka_queue_watch *w) {
    kafka_producer *p = container_of(w, kafka_producer, watch);
    /* rd_kafka_poll serves delivery reports and errors from the main queue. */
    while (rd_kafka_poll(p->rk, 0) > 0)
        ;
}

int kafka_producer_start(kafka_producer *p, uv_loop_t *loop, const json_t *props, char *errbuf,
                         size_t errlen) {
    memset(p, 0, sizeof(*p));
    kafka_describe_listener(props, p->listener, sizeof(p->listener));
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    char err[512];
    rd_kafka_conf_set(conf, "linger.ms", "1", err, sizeof(err));
    rd_kafka_conf_set(conf, "client.id", "connectd", err, sizeof(err));
    if (kafka_conf_apply(conf, props, errbuf, errlen) < 0) {
        rd_kafka_conf_destroy(conf);
        return CD_ERR_INVALID;
    }
    kafka_conf_force(conf, props, "enable.idempotence", "true", "a 202 must mean stored once");
    kafka_conf_force(conf, props, "acks", "all", "a 202 must mean stored");
    kafka_conf_set_logger(conf);
    rd_kafka_conf_set_dr_msg_cb(conf, kafka_producer_dr);
    rd_kafka_conf_set_error_cb(conf, kafka_producer_error_cb);
    rd_kafka_conf_set_opaque(conf, p);
    p->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
    if (!p->rk) {
        snprintf(errbuf, errlen, "producer: %s", err);
        return CD_ERR_INVALID;
    }
    /* The queue handle stays ours until the watch is closed. */
    rd_kafka_queue_t *q = rd_kafka_queue_get_main(p->rk);
    int r = kafka_queue_watch_start(&p->watch, loop, q, kafka_producer_ready, errbuf, errlen);
    if (r < 0) {
        rd_kafka_queue_destroy(q);
        rd_kafka_destroy(p->rk);
        p->rk = NULL;
        return r;
    }
    uv_timer_init(loop, &p->close_timer);
    return 0;
}

int kafka_producer_send(kafka_producer *p, const char *topic, int32_t partition, const void *key,
                        size_t key_len, const void *value, size_t value_len,
                        rd_kafka_headers_t *headers, cd_produce_cb cb, void *opaque, char *errbuf,
                        size_t errlen) {
    if (p->closing) {
        if (headers) rd_kafka_headers_destroy(headers);
        snprintf(errbuf, errlen, "producer is closing");
        return CD_ERR_BUSY;
    }
    produce_req *req = malloc(sizeof(*req));
    if (!req) {
        if (headers) rd_kafka_headers_destroy(headers);
        snprintf(errbuf, errlen, "out of memory");
        return CD_ERR_NOMEM;
    }
    req->cb = cb;
    req->opaque = opaque;
    req->p = p;
    rd_kafka_resp_err_t err;
    if (headers)
        err = rd_kafka_producev(
            p->rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_PARTITION(partition),
            RD_KAFKA_V_KEY(key, key_len), RD_KAFKA_V_VALUE((void *)value, value_len),
            RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_HEADERS(headers),
            RD_KAFKA_V_OPAQUE(req), RD_KAFKA_V_END);
    else
        err = rd_kafka_producev(
            p->rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_PARTITION(partition),
            RD_KAFKA_V_KEY(key, key_len), RD_KAFKA_V_VALUE((void *)value, value_len),
            RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_OPAQUE(req), RD_KAFKA_V_END);
    if (err) {
        /* On failure the headers were not taken. */
        if (headers) rd_kafka_headers_destroy(headers);
        free(req);
        snprintf(errbuf, errlen, "%s", rd_kafka_err2str(err));
        return kafka_produce_error(err);
    }
    p->inflight++;
    return 0;
}

static void kafka_producer_finish(kafka_producer *p);

static void kafka_producer_watch_closed(kafka_queue_watch *w) {
    kafka_producer *p = container_of(w, kafka_producer, watch);
    rd_kafka_queue_destroy(w->queue);
    w->queue = NULL;
    rd_kafka_destroy(p->rk);
    p->rk = NULL;
    if (p->on_closed) p->on_closed(p);
}

static void kafka_producer_timer_closed(uv_handle_t *h) {
    kafka_producer *p = container_of((uv_timer_t *)h, kafka_producer, close_timer);
    /* Deliveries still outstanding get their reports (with an error) from
     * rd_kafka_purge + one last poll, so no callback is lost. */
    rd_kafka_purge(p->rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
    rd_kafka_flush(p->rk, 0);
    while (rd_kafka_poll(p->rk, 0) > 0)
        ;
    kafka_queue_watch_close(&p->watch, kafka_producer_watch_closed);
}

static void kafka_producer_finish(kafka_producer *p) {
    uv_timer_stop(&p->close_timer);
    uv_close((uv_handle_t *)&p->close_timer, kafka_producer_timer_closed);
}

static void kafka_producer_close_tick(uv_timer_t *t) {
    kafka_producer *p = container_of(t, kafka_producer, close_timer);
    while (rd_kafka_poll(p->rk, 0) > 0)
        ;
    if (p->inflight == 0 || uv_now(t->loop) >= p->close_deadline) kafka_producer_finish(p);
}

void kafka_producer_close(kafka_producer *p, uint64_t timeout_ms,
                          void (*on_closed)(kafka_producer *p)) {
    p->closing = 1;
    p->on_closed = on_closed;
    p->close_deadline = uv_now(p->close_timer.loop) + timeout_ms;
    uv_timer_start(&p->close_timer, kafka_producer_close_tick, 0, 20);
}
