/*
 * Kafka room: librdkafka wired onto the libuv loop.  A librdkafka queue
 * signals "not empty any more" by writing a byte into a non-blocking pipe
 * (rd_kafka_queue_io_event_enable); a uv_poll on the pipe's read end wakes
 * the loop, which then drains the queue completely.  Nothing here blocks the
 * loop.  Also the engine's shared producer (idempotent, acks=all) used by
 * sources and dead-letter topics.
 */
#ifndef CONNECTD_KAFKA_H
#define CONNECTD_KAFKA_H

#include <connectd/plugin.h>
#include <jansson.h>
#include <librdkafka/rdkafka.h>
#include <uv.h>

typedef struct kafka_queue_watch kafka_queue_watch;
typedef void (*kafka_queue_ready_cb)(kafka_queue_watch *w);

struct kafka_queue_watch {
    uv_poll_t poll;
    int fds[2];
    rd_kafka_queue_t *queue; /* borrowed */
    kafka_queue_ready_cb on_ready;
    void (*on_closed)(kafka_queue_watch *w);
};

/* Starts watching q; on_ready runs on the loop whenever q may hold events
 * (and once right away, in case it already does).  Returns 0 or negative
 * with errbuf. */
int kafka_queue_watch_start(kafka_queue_watch *w, uv_loop_t *loop, rd_kafka_queue_t *q,
                            kafka_queue_ready_cb on_ready, char *errbuf, size_t errlen);
/* Stops watching; on_closed (may be NULL) runs once the poll handle closed. */
void kafka_queue_watch_close(kafka_queue_watch *w, void (*on_closed)(kafka_queue_watch *w));

/* Applies string properties from `props` (may be NULL) to conf.  Returns 0
 * or -1 with errbuf naming the property. */
int kafka_conf_apply(rd_kafka_conf_t *conf, const json_t *props, char *errbuf, size_t errlen);
/* Sets a property, overriding (and warning about) a value the user set in
 * props that would break the engine's guarantees. */
void kafka_conf_force(rd_kafka_conf_t *conf, const json_t *props, const char *name,
                      const char *value, const char *why);
/* Routes librdkafka's logs into the engine log with a prefix. */
void kafka_conf_set_logger(rd_kafka_conf_t *conf);
/* A one-line description of where and how a client connects, e.g.
 * "127.0.0.1:29093 (SASL_SSL, SCRAM-SHA-512)" for error messages. */
void kafka_describe_listener(const json_t *props, char *out, size_t outlen);

/* ----------------------------------------------------------------- producer */
typedef struct kafka_producer {
    rd_kafka_t *rk;
    kafka_queue_watch watch;
    uint64_t inflight;
    int closing;
    uv_timer_t close_timer;
    uint64_t close_deadline;
    void (*on_closed)(struct kafka_producer *p);
    char listener[256];
} kafka_producer;

/* Creates the producer (enable.idempotence=true, acks=all, linger.ms=1
 * unless set).  Returns 0 or negative with errbuf. */
int kafka_producer_start(kafka_producer *p, uv_loop_t *loop, const json_t *props, char *errbuf,
                         size_t errlen);
/* Produces one record; copies key, value and headers.  Returns 0 and calls
 * cb exactly once with the delivery report, or negative (CD_ERR_BUSY when the
 * queue is full) with errbuf, never calling cb. */
int kafka_producer_send(kafka_producer *p, const char *topic, int32_t partition, const void *key,
                        size_t key_len, const void *value, size_t value_len,
                        rd_kafka_headers_t *headers /* takes ownership, also on error */,
                        cd_produce_cb cb, void *opaque, char *errbuf, size_t errlen);
/* Waits (on the loop) for outstanding deliveries, at most timeout_ms, then
 * destroys the client and calls on_closed. */
void kafka_producer_close(kafka_producer *p, uint64_t timeout_ms,
                          void (*on_closed)(kafka_producer *p));

#endif
