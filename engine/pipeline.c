/*
 * Pipeline room: consumption, dispatch to sinks, per-record outcomes,
 * offset watermarks, rebalances and draining.  Everything runs on the loop
 * thread; librdkafka reaches us only through the consumer queue (see
 * kafka.h), whose callbacks (rebalance, errors, commit results) are served
 * while the queue is drained here.
 */
#include "pipeline.h"
#include "condition.h"
#include "jsonscan.h"
#include "keyhold.h"
#include "log.h"
#include "offsets.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

#define PL_CONSUME_BATCH 512

typedef struct pl_partition pl_partition;

/* One consumed record, shared by every sink of the pipeline. */
typedef struct pl_msg {
    rd_kafka_message_t *rkm; /* owned: destroyed when the record leaves the window */
    cd_record rec;           /* view into rkm */
    cd_header *headers;      /* owned array; names/values point into rkm */
    pl_partition *part;
    uint64_t seq;
    uint64_t done_mask; /* bit i: sink i is done with this record */
    uint64_t held_mask; /* bit i: held back in sink i's lane for a retry */
    uint64_t arrived_ms;
    size_t bytes;
    json_t *doc; /* parsed value, kept only when a sink has `when` */
    char *error; /* set when the record failed before any sink */
} pl_msg;

/* One sink's progress through one partition.  Records are handed out in
 * offset order; a key whose record must be retried is held (keyhold), and
 * its later records wait in `held` while other keys go on. */
typedef struct pl_lane {
    uint64_t next_seq;         /* first record this sink has not looked at */
    int inflight;              /* a batch is out (at most one per lane) */
    keyhold_map holds;         /* keys waiting for a retry */
    seqset held;               /* records held behind them, in offset order */
    uint64_t refused_until_ms; /* write() refused a batch: wait */
    int64_t refusals;
    uint64_t round; /* batch completions, to count one attempt per key per batch */
} pl_lane;

struct pl_partition {
    char *topic;
    int32_t partition;
    offset_window win;
    pl_lane *lanes;
    int64_t committed; /* last offset we committed (-1: none) */
    size_t bytes;
    int over;    /* window over its high mark (until under half) */
    int kpaused; /* paused in librdkafka by backpressure */
    int revoking;
    uint64_t stop_seq; /* FAILED: records from here on are not dispatched */
    size_t dlq_inflight;
    pipeline *pl;
    pl_partition *next;
};

/* A batch handed to a sink. */
typedef struct pl_batch {
    cd_batch b;
    pipeline *pl;
    pl_partition *part;
    size_t sink;
    pl_msg **msgs;
    unsigned char *was_held; /* taken from the lane's held set */
    cd_record *recs;
    cd_outcome *outcomes;
    char **reasons;
    int64_t retry_hint_ms;
    size_t remaining;
} pl_batch;

typedef struct pl_sink {
    cd_instance inst;
    const plugin_conf *conf;
    const cd_sink_ops *ops;
    void *ctx;
    int initialised, started, stopped;
    cd_metric *m_records_out, *m_retries, *m_failed, *m_batches;
} pl_sink;

/* A dead-letter produce (or its retry). */
typedef struct pl_dlq {
    pipeline *pl;
    pl_partition *part;
    pl_msg *msg;
    int sink; /* -1: failed before any sink */
    char *reason;
    int64_t attempts;
    char cls[16];
    int64_t tries;
    uint64_t retry_at_ms;
    struct pl_dlq *next;
    /* While its produce is in flight: linked in pl->dlq_sent.  detached: its
     * record (or the whole pipeline) is gone, and the delivery report only
     * frees it. */
    struct pl_dlq *sent_prev, *sent_next;
    int in_sent, detached;
} pl_dlq;

struct pipeline {
    engine *eng;
    const pipeline_conf *conf;
    pipeline_state state;
    char *fail_reason;
    char listener[256];

    /* sink pipelines */
    pl_sink *sinks;
    size_t sink_count;
    uint64_t all_sinks_mask;
    int needs_doc;
    rd_kafka_t *rk;
    int64_t reset_offset;    /* auto.offset.reset as a logical offset; INVALID for "error" */
    int records_released;    /* the consumer is destroyed: no record is held any more */
    struct pl_dlq *dlq_sent; /* dead-letter produces in flight */
    pl_msg *msg_spares;      /* free list (linked through the first word) */
    size_t msg_spare_count;
    rd_kafka_queue_t *queue;
    kafka_queue_watch watch;
    int watch_open;
    pl_partition *parts;
    pl_partition *orphans; /* revoked while a sink still held their records */
    rd_kafka_topic_partition_list_t *revoke_list;
    int revoke_cooperative;
    uint64_t revoke_deadline_ms;
    pl_dlq *dlq_waiting; /* dead-letter produces waiting for a retry */

    size_t records, bytes; /* held in partition windows, all partitions */
    int over;              /* the pipeline is over its in-flight mark */
    size_t parts_over;     /* partitions over theirs */
    int intake_blocked;    /* the consumer queue is not drained */
    uint64_t blocked_since_ms;
    int escalated;     /* partitions over their mark were paused in librdkafka */
    int drain_pending; /* drain the consumer queue at the next timer run */

    uv_timer_t dispatch_timer;
    uint64_t dispatch_due_ms;
    uv_timer_t commit_timer;
    int timers_open;
    int stopping, flushing, forced;
    int closing_consumer, watch_closing;
    size_t sinks_stopping;

    /* source pipelines */
    cd_instance source_inst;
    void *source_ctx;
    int source_started;

    cd_metric *m_records_in, *m_dead_lettered, *m_commits, *m_state;
    cd_instance pl_inst; /* owns the pipeline-level metrics */
};

static void pl_dispatch_all(pipeline *pl);
static void pl_dispatch_lane(pipeline *pl, pl_partition *p, size_t si);
static void pl_check_revoke(pipeline *pl);
static void pl_check_drained(pipeline *pl);
static void pl_schedule(pipeline *pl, uint64_t due_ms);
static void pl_consumer_ready(kafka_queue_watch *w);
static void pl_flow_pause_over(pipeline *pl);

const char *pipeline_state_name(pipeline_state s) {
    static const char *names[] = {"STARTING", "RUNNING", "PAUSED", "FAILED", "DRAINING", "STOPPED"};
    return names[s];
}

int pipeline_is_source(const pipeline *pl) {
    return pl->conf->source != NULL;
}

void pipeline_count_produced(pipeline *pl) {
    metrics_add(pl->m_records_in, 1);
}

pipeline_state pipeline_get_state(const pipeline *pl) {
    return pl->state;
}
const char *pipeline_name(const pipeline *pl) {
    return pl->conf->name;
}

static void pl_set_state(pipeline *pl, pipeline_state s, const char *reason) {
    if (pl->state == s) return;
    if (reason)
        log_msg(s == PIPELINE_FAILED ? CD_LOG_ERROR : CD_LOG_INFO, pl->conf->name,
                "state %s -> %s: %s", pipeline_state_name(pl->state), pipeline_state_name(s),
                reason);
    else
        log_msg(CD_LOG_INFO, pl->conf->name, "state %s -> %s", pipeline_state_name(pl->state),
                pipeline_state_name(s));
    pl->state = s;
    metrics_set(pl->m_state, (double)s);
}

int64_t pipeline_backoff_ms(const retry_policy *r, int64_t attempt, int64_t hint_ms,
                            uint32_t random) {
    int64_t cap = r->initial_ms;
    for (int64_t i = 1; i < attempt && cap < r->max_ms; i++)
        cap *= 2;
    if (cap > r->max_ms) cap = r->max_ms;
    int64_t delay = (int64_t)((uint64_t)random % (uint64_t)(cap + 1));
    if (hint_ms > delay) delay = hint_ms > r->max_ms ? r->max_ms : hint_ms;
    return delay;
}

/* ----------------------------------------------------------- partitions */
static pl_partition *pl_partition_find(pipeline *pl, const char *topic, int32_t partition) {
    for (pl_partition *p = pl->parts; p; p = p->next)
        if (p->partition == partition && strcmp(p->topic, topic) == 0) return p;
    return NULL;
}

static pl_partition *pl_partition_add(pipeline *pl, const char *topic, int32_t partition) {
    pl_partition *p = pl_partition_find(pl, topic, partition);
    if (p) return p;
    p = calloc(1, sizeof(*p));
    p->topic = strdup(topic);
    p->partition = partition;
    p->pl = pl;
    p->committed = -1;
    p->stop_seq = UINT64_MAX;
    offset_window_init(&p->win);
    p->lanes = calloc(pl->sink_count, sizeof(pl_lane));
    for (size_t i = 0; i < pl->sink_count; i++)
        keyhold_map_init(&p->lanes[i].holds);
    p->next = pl->parts;
    pl->parts = p;
    return p;
}

/* Records' bookkeeping comes from a per-pipeline free list: no malloc per
 * record once the pipeline is flowing.  At most PL_MSG_SPARES are kept. */
#define PL_MSG_SPARES 4096

static pl_msg *pl_msg_new(pipeline *pl) {
    pl_msg *m = pl->msg_spares;
    if (m == NULL) return calloc(1, sizeof(*m));
    pl->msg_spares = *(pl_msg **)m;
    pl->msg_spare_count--;
    memset(m, 0, sizeof(*m));
    return m;
}

static void pl_msg_free(void *data, void *opaque) {
    (void)opaque;
    pl_msg *m = data;
    pipeline *pl = m->part->pl;
    m->part->bytes -= m->bytes;
    pl->bytes -= m->bytes;
    pl->records--;
    rd_kafka_message_destroy(m->rkm);
    free(m->headers);
    json_decref(m->doc);
    free(m->error);
    if (pl->msg_spare_count < PL_MSG_SPARES) {
        *(pl_msg **)m = pl->msg_spares;
        pl->msg_spares = m;
        pl->msg_spare_count++;
    } else {
        free(m);
    }
}

static int pl_partition_busy(const pl_partition *p, size_t sink_count) {
    if (p->dlq_inflight) return 1;
    for (size_t i = 0; i < sink_count; i++)
        if (p->lanes[i].inflight) return 1;
    return 0;
}

static void pl_partition_free(pipeline *pl, pl_partition *p) {
    offset_window_free(&p->win, pl_msg_free, NULL);
    for (size_t i = 0; i < pl->sink_count; i++) {
        keyhold_map_free(&p->lanes[i].holds);
        seqset_free(&p->lanes[i].held);
    }
    free(p->lanes);
    free(p->topic);
    free(p);
}

/* Removes p from the active list; frees it now, or parks it as an orphan
 * until the sinks holding its records have answered. */
static void pl_partition_remove(pipeline *pl, pl_partition *p) {
    if (p->over) {
        p->over = 0;
        pl->parts_over--;
    }
    for (pl_partition **pp = &pl->parts; *pp; pp = &(*pp)->next) {
        if (*pp == p) {
            *pp = p->next;
            break;
        }
    }
    /* Dead-letter produces waiting for a retry belong to the new owner now. */
    for (pl_dlq **dp = &pl->dlq_waiting; *dp;) {
        pl_dlq *d = *dp;
        if (d->part == p) {
            *dp = d->next;
            p->dlq_inflight--;
            free(d->reason);
            free(d);
        } else {
            dp = &d->next;
        }
    }
    if (pl_partition_busy(p, pl->sink_count)) {
        p->revoking = 1;
        p->next = pl->orphans;
        pl->orphans = p;
    } else {
        pl_partition_free(pl, p);
    }
}

static void pl_orphan_check(pipeline *pl, pl_partition *p) {
    if (pl_partition_busy(p, pl->sink_count)) return;
    for (pl_partition **pp = &pl->orphans; *pp; pp = &(*pp)->next) {
        if (*pp == p) {
            *pp = p->next;
            pl_partition_free(pl, p);
            return;
        }
    }
}

static int pl_is_orphan(pipeline *pl, pl_partition *p) {
    for (pl_partition *o = pl->orphans; o; o = o->next)
        if (o == p) return 1;
    return 0;
}

static void pl_pause_partition(pipeline *pl, pl_partition *p, int pause) {
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(l, p->topic, p->partition);
    if (pause)
        rd_kafka_pause_partitions(pl->rk, l);
    else
        rd_kafka_resume_partitions(pl->rk, l);
    rd_kafka_topic_partition_list_destroy(l);
}

static void pl_pause_all(pipeline *pl, int pause) {
    if (!pl->rk) return;
    rd_kafka_topic_partition_list_t *l = NULL;
    if (rd_kafka_assignment(pl->rk, &l) == 0 && l) {
        if (pause)
            rd_kafka_pause_partitions(pl->rk, l);
        else
            rd_kafka_resume_partitions(pl->rk, l);
        rd_kafka_topic_partition_list_destroy(l);
    }
}

/* Backpressure: pause a partition whose window is over the high mark,
 * resume it under half. */
/* Backpressure.  Above a high mark (a partition's window, or the pipeline's
 * total) intake stops at once: the consumer queue is left undrained, which
 * costs nothing and resumes instantly.  If that lasts pause_after_ms, the
 * partitions over their mark are paused in librdkafka (rd_kafka_pause_-
 * partitions) and draining resumes, so rebalances and errors keep flowing
 * while a sink is down for minutes.  Below half the mark everything resumes.
 * (Pausing at once would cost about a second per cycle: librdkafka 2.0's
 * fetcher notices a resume only at its next wakeup.) */
static void pl_flow_update(pipeline *pl) {
    uint64_t now = uv_now(pl->eng->loop);
    int blocked = pl->over || pl->parts_over > 0;
    if (blocked && pl->escalated) {
        /* The sink is known to be slow: pause newcomers over their mark now. */
        pl_flow_pause_over(pl);
    } else if (blocked && !pl->intake_blocked) {
        LOG_DEBUG("%s: intake blocked: %zu records, %zu partition(s) over", pl->conf->name,
                  pl->records, pl->parts_over);
        pl->intake_blocked = 1;
        pl->blocked_since_ms = now;
        pl_schedule(pl, now + (uint64_t)pl->conf->pause_after_ms);
    } else if (!blocked && pl->intake_blocked) {
        LOG_DEBUG("%s: intake unblocked: %zu records", pl->conf->name, pl->records);
        pl->intake_blocked = 0;
        if (pl->escalated) {
            pl->escalated = 0;
            for (pl_partition *q = pl->parts; q; q = q->next) {
                if (!q->kpaused) continue;
                q->kpaused = 0;
                if (pl->state == PIPELINE_RUNNING) pl_pause_partition(pl, q, 0);
            }
            log_msg(CD_LOG_INFO, pl->conf->name,
                    "resumed fetching: %zu records, %zu bytes in flight", pl->records, pl->bytes);
        }
        pl->drain_pending = 1;
        pl_schedule(pl, now);
    }
}

/* Pauses (in librdkafka) every partition over its mark, or all of them when
 * the pipeline is over its own. */
static void pl_flow_pause_over(pipeline *pl) {
    size_t n = 0;
    for (pl_partition *q = pl->parts; q; q = q->next) {
        if (!(pl->over || q->over) || q->kpaused) continue;
        q->kpaused = 1;
        n++;
        if (pl->state == PIPELINE_RUNNING) pl_pause_partition(pl, q, 1);
    }
    if (n)
        log_msg(CD_LOG_INFO, pl->conf->name,
                "paused fetching: %zu records, %zu bytes in flight (%zu more partition(s) paused)",
                pl->records, pl->bytes, n);
}

/* Blocked for pause_after_ms: pause what is over its mark, drain again. */
static void pl_flow_escalate(pipeline *pl) {
    if (!pl->intake_blocked || pl->escalated ||
        uv_now(pl->eng->loop) < pl->blocked_since_ms + (uint64_t)pl->conf->pause_after_ms)
        return;
    pl->escalated = 1;
    pl_flow_pause_over(pl);
    pl->drain_pending = 1;
}

static void pl_backpressure(pipeline *pl, pl_partition *p) {
    const pipeline_conf *c = pl->conf;
    if (!pl->over && (pl->records >= (size_t)c->max_pipeline_inflight_records ||
                      pl->bytes >= (size_t)c->max_pipeline_inflight_bytes))
        pl->over = 1;
    else if (pl->over && pl->records <= (size_t)c->max_pipeline_inflight_records / 2 &&
             pl->bytes <= (size_t)c->max_pipeline_inflight_bytes / 2)
        pl->over = 0;
    if (p && !p->over &&
        (p->win.count >= (size_t)c->max_inflight_records ||
         p->bytes >= (size_t)c->max_inflight_bytes)) {
        p->over = 1;
        pl->parts_over++;
    } else if (p && p->over && p->win.count <= (size_t)c->max_inflight_records / 2 &&
               p->bytes <= (size_t)c->max_inflight_bytes / 2) {
        p->over = 0;
        pl->parts_over--;
    }
    pl_flow_update(pl);
}

/* Records of p left the window without a batch completing (filtered out by
 * `when`, dead-lettered): intake only re-checks its marks at batch
 * completion and arrival, and a partition paused over its mark would stay
 * paused with nothing left to complete. */
static void pl_released(pipeline *pl, pl_partition *p) {
    pl_backpressure(pl, pl_is_orphan(pl, p) ? NULL : p);
}

/* ------------------------------------------------------------ commits */
static void pl_commit(pipeline *pl, int revoking_only, int sync) {
    if (!pl->rk) return;
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(8);
    for (pl_partition *p = pl->parts; p; p = p->next) {
        if (revoking_only && !p->revoking) continue;
        int64_t wm = offset_window_watermark(&p->win);
        if (wm < 0 || wm <= p->committed) continue;
        rd_kafka_topic_partition_list_add(l, p->topic, p->partition)->offset = wm;
    }
    if (l->cnt > 0) {
        rd_kafka_resp_err_t err = rd_kafka_commit(pl->rk, l, sync ? 0 : 1);
        if (err && err != RD_KAFKA_RESP_ERR__NO_OFFSET) {
            log_msg(CD_LOG_WARN, pl->conf->name, "commit failed: %s", rd_kafka_err2str(err));
        } else {
            for (int i = 0; i < l->cnt; i++) {
                pl_partition *p = pl_partition_find(pl, l->elems[i].topic, l->elems[i].partition);
                if (p) p->committed = l->elems[i].offset;
                LOG_DEBUG("%s: commit %s[%d]@%" PRId64, pl->conf->name, l->elems[i].topic,
                          l->elems[i].partition, l->elems[i].offset);
            }
            metrics_add(pl->m_commits, 1);
        }
    }
    rd_kafka_topic_partition_list_destroy(l);
}

static void pl_offset_commit_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                                rd_kafka_topic_partition_list_t *offsets, void *opaque) {
    pipeline *pl = opaque;
    if (!err || err == RD_KAFKA_RESP_ERR__NO_OFFSET) return;
    log_msg(CD_LOG_WARN, pl->conf->name, "offset commit failed: %s (will retry)",
            rd_kafka_err2str(err));
    /* Forget what we thought was committed so the next tick sends it again. */
    for (int i = 0; offsets && i < offsets->cnt; i++) {
        pl_partition *p =
            pl_partition_find(pl, offsets->elems[i].topic, offsets->elems[i].partition);
        if (p) p->committed = -1;
    }
}

static void pl_commit_tick(uv_timer_t *t) {
    pipeline *pl = container_of(t, pipeline, commit_timer);
    pl_commit(pl, 0, 0);
}

/* ------------------------------------------------------------ outcomes */
static void pl_msg_ack(pipeline *pl, pl_msg *m) {
    pl_partition *p = m->part;
    offset_window_ack(&p->win, m->seq, pl_msg_free, NULL);
}

/* Sink si is done with m (OK, filtered out, or dead-lettered). */
static void pl_msg_sink_done(pipeline *pl, pl_msg *m, size_t si) {
    uint64_t bit = (uint64_t)1 << si;
    if (m->done_mask & bit) return;
    m->done_mask |= bit;
    pl_msg_ack(pl, m);
}

/* The pipeline stops in FAILED.  Records before the failing one (m, may be
 * NULL) in its partition still go out, so the committed offset reaches it;
 * nothing after it, and nothing new in other partitions, is dispatched. */
static void pl_fail(pipeline *pl, pl_msg *m, const char *fmt, ...) CD_PRINTF(3, 4);
static void pl_fail(pipeline *pl, pl_msg *m, const char *fmt, ...) {
    if (m && m->seq < m->part->stop_seq) m->part->stop_seq = m->seq;
    if (pl->state == PIPELINE_FAILED) return;
    for (pl_partition *p = pl->parts; p; p = p->next) {
        if (m && p == m->part) continue;
        /* Lanes may have different cursors; the slowest bounds what goes out. */
        uint64_t lowest = offset_window_end(&p->win);
        for (size_t i = 0; i < pl->sink_count; i++)
            if (p->lanes[i].next_seq < lowest) lowest = p->lanes[i].next_seq;
        if (lowest < p->stop_seq) p->stop_seq = lowest;
    }
    char reason[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(reason, sizeof(reason), fmt, ap);
    va_end(ap);
    free(pl->fail_reason);
    pl->fail_reason = strdup(reason);
    pl_pause_all(pl, 1);
    pl_set_state(pl, PIPELINE_FAILED, reason);
}

static void pl_dlq_send(pl_dlq *d);

static void pl_dlq_unsend(pl_dlq *d) {
    if (!d->in_sent) return;
    if (d->sent_prev)
        d->sent_prev->sent_next = d->sent_next;
    else
        d->pl->dlq_sent = d->sent_next;
    if (d->sent_next) d->sent_next->sent_prev = d->sent_prev;
    d->sent_prev = d->sent_next = NULL;
    d->in_sent = 0;
}

/* The records are about to be freed (forced stop, pipeline freed): a
 * delivery report still to come must not touch them, or the pipeline. */
static void pl_dlq_detach_sent(pipeline *pl) {
    while (pl->dlq_sent) {
        pl_dlq *d = pl->dlq_sent;
        pl_dlq_unsend(d);
        d->part->dlq_inflight--;
        d->detached = 1;
    }
}

static void pl_dlq_done(void *opaque, int status, const char *errmsg, int32_t partition,
                        int64_t offset) {
    pl_dlq *d = opaque;
    if (d->detached) {
        LOG_DEBUG("dead-letter delivery report (%s) after its record was released: "
                  "only forgotten",
                  status == 0 ? "stored" : "failed");
        free(d->reason);
        free(d);
        return;
    }
    pl_dlq_unsend(d);
    pipeline *pl = d->pl;
    pl_partition *p = d->part;
    if (status == 0) {
        p->dlq_inflight--;
        metrics_add(pl->m_dead_lettered, 1);
        if (d->sink >= 0)
            pl_msg_sink_done(pl, d->msg, (size_t)d->sink);
        else
            pl_msg_ack(pl, d->msg);
        free(d->reason);
        free(d);
        pl_released(pl, p);
        if (pl_is_orphan(pl, p))
            pl_orphan_check(pl, p);
        else
            pl_dispatch_all(pl);
        pl_check_revoke(pl);
        pl_check_drained(pl);
        return;
    }
    /* The dead-letter topic could not be written: never drop, try again. */
    d->tries++;
    log_msg(CD_LOG_WARN, pl->conf->name,
            "dead-letter produce to %s failed (%s); retrying, offset not committed",
            pl->conf->dead_letter_topic, errmsg ? errmsg : "error");
    if (pl->forced || pl_is_orphan(pl, p)) {
        p->dlq_inflight--;
        free(d->reason);
        free(d);
        if (pl_is_orphan(pl, p)) pl_orphan_check(pl, p);
        pl_check_drained(pl);
        return;
    }
    d->retry_at_ms = uv_now(pl->eng->loop) +
                     (uint64_t)pipeline_backoff_ms(&pl->conf->retry, d->tries, 0, (uint32_t)rand());
    d->next = pl->dlq_waiting;
    pl->dlq_waiting = d;
    pl_schedule(pl, d->retry_at_ms);
}

static rd_kafka_headers_t *pl_dlq_headers(pl_dlq *d) {
    pipeline *pl = d->pl;
    pl_msg *m = d->msg;
    rd_kafka_headers_t *h = rd_kafka_headers_new(m->rec.header_count + 9);
    for (size_t i = 0; i < m->rec.header_count; i++)
        rd_kafka_header_add(h, m->rec.headers[i].name, -1, m->rec.headers[i].value,
                            (ssize_t)m->rec.headers[i].value_len);
    char num[32];
    rd_kafka_header_add(h, "connectd.error.pipeline", -1, pl->conf->name, -1);
    rd_kafka_header_add(h, "connectd.error.sink", -1,
                        d->sink >= 0 ? pl->sinks[d->sink].conf->name : "", -1);
    rd_kafka_header_add(h, "connectd.error.class", -1, d->cls, -1);
    rd_kafka_header_add(h, "connectd.error.message", -1, d->reason, -1);
    snprintf(num, sizeof(num), "%" PRId64, d->attempts);
    rd_kafka_header_add(h, "connectd.error.attempts", -1, num, -1);
    rd_kafka_header_add(h, "connectd.error.topic", -1, m->rec.topic, -1);
    snprintf(num, sizeof(num), "%" PRId32, m->rec.partition);
    rd_kafka_header_add(h, "connectd.error.partition", -1, num, -1);
    snprintf(num, sizeof(num), "%" PRId64, m->rec.offset);
    rd_kafka_header_add(h, "connectd.error.offset", -1, num, -1);
    snprintf(num, sizeof(num), "%" PRId64, m->rec.timestamp_ms);
    rd_kafka_header_add(h, "connectd.error.timestamp", -1, num, -1);
    return h;
}

static void pl_dlq_send(pl_dlq *d) {
    pipeline *pl = d->pl;
    char err[512];
    kafka_producer *kp = engine_producer(pl->eng, err, sizeof(err));
    int r = -1;
    d->sent_next = pl->dlq_sent;
    if (pl->dlq_sent) pl->dlq_sent->sent_prev = d;
    pl->dlq_sent = d;
    d->in_sent = 1;
    if (kp)
        r = kafka_producer_send(kp, pl->conf->dead_letter_topic, RD_KAFKA_PARTITION_UA,
                                d->msg->rec.key, d->msg->rec.key_len, d->msg->rec.value,
                                d->msg->rec.value_len, pl_dlq_headers(d), pl_dlq_done, d, err,
                                sizeof(err));
    if (r < 0) pl_dlq_done(d, r, err, -1, -1);
}

/* A record failed for good at sink si (-1: before any sink). */
static void pl_record_failed(pipeline *pl, pl_msg *m, int si, const char *cls, const char *reason,
                             int64_t attempts) {
    const char *sink = si >= 0 ? pl->sinks[si].conf->name : "(engine)";
    if (si >= 0) metrics_add(pl->sinks[si].m_failed, 1);
    if (pl->conf->tolerance == ERRORS_NONE) {
        pl_fail(pl, m, "sink %s: record %s[%d]@%" PRId64 ": %s (errors.tolerance is none)", sink,
                m->rec.topic, m->rec.partition, m->rec.offset, reason);
        return;
    }
    if (pl->conf->errors_log)
        log_msg(CD_LOG_WARN, pl->conf->name, "sink %s: record %s[%d]@%" PRId64 " failed: %s%s",
                sink, m->rec.topic, m->rec.partition, m->rec.offset, reason,
                pl->conf->dead_letter_topic ? ", dead-lettered" : ", skipped");
    if (!pl->conf->dead_letter_topic) {
        metrics_add(pl->m_dead_lettered, 1);
        if (si >= 0)
            pl_msg_sink_done(pl, m, (size_t)si);
        else
            pl_msg_ack(pl, m);
        return;
    }
    pl_dlq *d = calloc(1, sizeof(*d));
    d->pl = pl;
    d->part = m->part;
    d->msg = m;
    d->sink = si;
    d->reason = strdup(reason);
    d->attempts = attempts;
    snprintf(d->cls, sizeof(d->cls), "%s", cls);
    m->part->dlq_inflight++;
    pl_dlq_send(d);
}

static void pl_batch_free(pl_batch *b) {
    for (size_t i = 0; i < b->b.count; i++)
        free(b->reasons[i]);
    free(b->msgs);
    free(b->was_held);
    free(b->recs);
    free(b->outcomes);
    free(b->reasons);
    free(b);
}

/* Puts m back in the lane's held set behind its key's hold h. */
static void pl_lane_hold(pl_lane *lane, keyhold *h, pl_msg *m, uint64_t bit) {
    if (!(m->held_mask & bit)) {
        m->held_mask |= bit;
        h->outstanding++;
        seqset_insert(&lane->held, m->seq);
    }
}

/* One of h's held records left for good (OK, dead-lettered, skipped). */
static void pl_lane_unhold(pl_lane *lane, keyhold *h) {
    h->attempts = 0;
    h->retry_at_ms = 0;
    h->hint_ms = 0;
    if (h->outstanding && --h->outstanding == 0) keyhold_remove(&lane->holds, h);
}

static void pl_batch_complete(pl_batch *b) {
    pipeline *pl = b->pl;
    if (pl->records_released) {
        /* A sink answered after it stopped: its records are gone already. */
        pl_batch_free(b);
        return;
    }
    pl_partition *p = b->part;
    size_t si = b->sink;
    pl_lane *lane = &p->lanes[si];
    pl_sink *s = &pl->sinks[si];
    uint64_t bit = (uint64_t)1 << si;
    lane->inflight = 0;
    if (pl_is_orphan(pl, p)) {
        pl_batch_free(b);
        pl_orphan_check(pl, p);
        return;
    }
    uint64_t now = uv_now(pl->eng->loop);
    uint64_t round = ++lane->round;
    const retry_policy *rp = &s->conf->retry;
    size_t ok = 0, retried = 0;
    /* Pass 1: outcomes in batch order (offset order).  A RETRY holds its key;
     * a later record of a held key that the sink wrote anyway goes out again
     * after the retry, so the last write per key is still the newest. */
    for (size_t i = 0; i < b->b.count; i++) {
        pl_msg *m = b->msgs[i];
        keyhold *h = keyhold_find(&lane->holds, m->rec.key, m->rec.key_len);
        if (b->outcomes[i] == CD_RECORD_RETRY || (h && h->failed_round == round)) {
            if (!h) h = keyhold_get(&lane->holds, m->rec.key, m->rec.key_len);
            if (b->outcomes[i] == CD_RECORD_RETRY && h->failed_round != round) {
                /* One attempt per key per batch. */
                if (h->attempts == 0) h->first_failure_ms = now;
                h->attempts++;
                h->failed_round = round;
                free(h->last_error);
                h->last_error = strdup(b->reasons[i] ? b->reasons[i] : "retry requested");
            }
            if (b->retry_hint_ms > h->hint_ms) h->hint_ms = b->retry_hint_ms;
            if (b->was_held[i]) h->outstanding--, m->held_mask &= ~bit; /* re-held just below */
            pl_lane_hold(lane, h, m, bit);
            b->outcomes[i] = CD_RECORD_RETRY; /* goes out again, whatever it said */
            retried++;
            continue;
        }
        if (b->outcomes[i] == CD_RECORD_OK) {
            ok++;
            if (h && b->was_held[i]) pl_lane_unhold(lane, h);
            pl_msg_sink_done(pl, m, si);
        } else {
            if (h && b->was_held[i]) pl_lane_unhold(lane, h);
            pl_record_failed(pl, m, (int)si, "fatal",
                             b->reasons[i] ? b->reasons[i] : "sink reported a fatal error", 1);
        }
    }
    metrics_add(s->m_records_out, (double)ok);
    /* Pass 2: schedule each key that failed in this batch, or give up on it. */
    for (size_t i = 0; retried && i < b->b.count; i++) {
        if (b->outcomes[i] != CD_RECORD_RETRY) continue; /* done (and perhaps released) in pass 1 */
        pl_msg *m = b->msgs[i];
        keyhold *h = keyhold_find(&lane->holds, m->rec.key, m->rec.key_len);
        if (!h || h->failed_round != round || h->handled_round == round) continue;
        h->handled_round = round;
        metrics_add(s->m_retries, 1);
        int exhausted = h->attempts >= rp->max_attempts ||
                        (int64_t)(now - h->first_failure_ms) >= rp->max_elapsed_ms;
        if (!exhausted) {
            int64_t delay = pipeline_backoff_ms(rp, h->attempts, h->hint_ms, (uint32_t)rand());
            h->retry_at_ms = now + (uint64_t)delay;
            log_msg(CD_LOG_WARN, s->inst.prefix,
                    "%s[%d]@%" PRId64 ": %s; retry %" PRId64 " of key in %" PRId64 " ms", p->topic,
                    p->partition, m->rec.offset, h->last_error, h->attempts, delay);
            pl_schedule(pl, h->retry_at_ms);
            continue;
        }
        /* Every record of this key that failed in this batch is given up;
         * the key's newer held records get a fresh budget. */
        char reason[1024];
        snprintf(reason, sizeof(reason), "retries exhausted after %" PRId64 " attempts: %s",
                 h->attempts, h->last_error);
        int64_t attempts = h->attempts;
        h->retry_at_ms = 0;
        h->failed_round = 0;
        for (size_t j = i; j < b->b.count; j++) {
            pl_msg *mj = b->msgs[j];
            if (b->outcomes[j] != CD_RECORD_RETRY ||
                keyhold_find(&lane->holds, mj->rec.key, mj->rec.key_len) != h)
                continue;
            for (size_t k = 0; k < lane->held.n; k++) {
                if (lane->held.v[k] == mj->seq) {
                    seqset_remove_at(&lane->held, k);
                    break;
                }
            }
            mj->held_mask &= ~bit;
            h->outstanding--;
            b->outcomes[j] = CD_RECORD_FATAL; /* gone: pass 2 must not look again */
            pl_record_failed(pl, mj, (int)si, "retriable", reason, attempts);
        }
        h->attempts = 0;
        h->hint_ms = 0;
        if (h->outstanding == 0) keyhold_remove(&lane->holds, h);
    }
    pl_batch_free(b);
    pl_backpressure(pl, p);
    if (!pl->stopping) pl_dispatch_lane(pl, p, si);
    pl_check_revoke(pl);
    pl_check_drained(pl);
}

void pipeline_record_done(cd_batch *batch, size_t index, cd_outcome outcome, int64_t retry_after_ms,
                          const char *reason) {
    pl_batch *b = batch->engine_private;
    if (index >= b->b.count || b->outcomes[index] != (cd_outcome)-1) {
        log_msg(CD_LOG_ERROR, b->pl->sinks[b->sink].inst.prefix,
                "record_done(%zu) reported twice or out of range; ignored", index);
        return;
    }
    if (outcome != CD_RECORD_OK && outcome != CD_RECORD_RETRY && outcome != CD_RECORD_FATAL)
        outcome = CD_RECORD_FATAL;
    b->outcomes[index] = outcome;
    if (reason && outcome != CD_RECORD_OK) b->reasons[index] = strdup(reason);
    if (outcome == CD_RECORD_RETRY && retry_after_ms > b->retry_hint_ms)
        b->retry_hint_ms = retry_after_ms;
    if (--b->remaining == 0) pl_batch_complete(b);
}

/* ------------------------------------------------------------ dispatch */
static void pl_timer_fire(uv_timer_t *t) {
    pipeline *pl = container_of(t, pipeline, dispatch_timer);
    pl->dispatch_due_ms = 0;
    uint64_t now = uv_now(pl->eng->loop);
    pl_dlq *ready = NULL;
    for (pl_dlq **dp = &pl->dlq_waiting; *dp;) {
        pl_dlq *d = *dp;
        if (d->retry_at_ms <= now) {
            *dp = d->next;
            d->next = ready;
            ready = d;
        } else {
            pl_schedule(pl, d->retry_at_ms);
            dp = &d->next;
        }
    }
    while (ready) {
        pl_dlq *d = ready;
        ready = d->next;
        d->next = NULL;
        pl_dlq_send(d);
    }
    pl_flow_escalate(pl);
    if (pl->drain_pending && pl->watch_open && !pl->watch_closing &&
        (!pl->intake_blocked || pl->escalated))
        pl_consumer_ready(&pl->watch);
    pl_dispatch_all(pl);
    pl_check_revoke(pl);
    pl_check_drained(pl);
}

static void pl_schedule(pipeline *pl, uint64_t due_ms) {
    if (!pl->timers_open || pl->state == PIPELINE_STOPPED) return; /* closed or closing */
    uint64_t now = uv_now(pl->eng->loop);
    if (pl->dispatch_due_ms && pl->dispatch_due_ms <= due_ms) return;
    pl->dispatch_due_ms = due_ms;
    uv_timer_start(&pl->dispatch_timer, pl_timer_fire, due_ms > now ? due_ms - now : 0, 0);
}

typedef struct pl_pick {
    pl_msg *m;
    int was_held;
} pl_pick;

static void pl_dispatch_lane(pipeline *pl, pl_partition *p, size_t si) {
    pl_lane *lane = &p->lanes[si];
    pl_sink *s = &pl->sinks[si];
    if (lane->inflight || p->revoking || pl->forced || (pl->stopping && !pl->flushing)) return;
    uint64_t now = uv_now(pl->eng->loop);
    if (lane->refused_until_ms > now) {
        pl_schedule(pl, lane->refused_until_ms);
        return;
    }
    uint64_t end = offset_window_end(&p->win);
    if (pl->state == PIPELINE_FAILED && p->stop_seq < end) end = p->stop_seq;
    uint64_t bit = (uint64_t)1 << si;
    const batch_policy *bp = &pl->conf->batch;
    size_t max = (size_t)bp->max_records;
    pl_pick *picks = malloc(max * sizeof(*picks));
    size_t count = 0, bytes = 0, from_held = 0, filtered = 0;
    uint64_t oldest = UINT64_MAX, next_wake = UINT64_MAX;

    /* Held records whose key's backoff is over, oldest first. */
    for (size_t i = 0; i < lane->held.n && count < max; i++) {
        uint64_t seq = lane->held.v[i];
        if (seq >= end) break;
        offset_entry *e = offset_window_get(&p->win, seq);
        pl_msg *m = e ? e->data : NULL;
        if (!m) continue;
        keyhold *h = keyhold_find(&lane->holds, m->rec.key, m->rec.key_len);
        if (h && h->retry_at_ms > now) {
            if (h->retry_at_ms < next_wake) next_wake = h->retry_at_ms;
            continue;
        }
        if (count > 0 && bytes + m->bytes > (size_t)bp->max_bytes) break;
        picks[count].m = m;
        picks[count].was_held = 1;
        count++;
        from_held++;
        bytes += m->bytes;
    }
    /* New records: skip what this sink is done with, apply `when`, and hold
     * those whose key is held. */
    uint64_t seq = lane->next_seq > p->win.base_seq ? lane->next_seq : p->win.base_seq;
    uint64_t first_new = UINT64_MAX;
    for (; seq < end && count < max; seq++) {
        offset_entry *e = offset_window_get(&p->win, seq);
        if (!e) continue;
        pl_msg *m = e->data;
        if ((m->done_mask | m->held_mask) & bit) continue;
        /* `when` first: a record this sink filters out never reaches it, so
         * it need not wait behind its key's retry (and once held, it would
         * go out from the held set without its `when` being looked at). */
        if (s->conf->when && !condition_eval(s->conf->when, m->doc)) {
            pl_msg_sink_done(pl, m, si); /* may release m */
            filtered++;
            continue;
        }
        keyhold *h = keyhold_find(&lane->holds, m->rec.key, m->rec.key_len);
        if (h) {
            pl_lane_hold(lane, h, m, bit);
            continue;
        }
        if (count > 0 && bytes + m->bytes > (size_t)bp->max_bytes) break;
        if (first_new == UINT64_MAX) first_new = seq;
        if (m->arrived_ms < oldest) oldest = m->arrived_ms;
        picks[count].m = m;
        picks[count].was_held = 0;
        count++;
        bytes += m->bytes;
    }
    if (next_wake != UINT64_MAX) pl_schedule(pl, next_wake);
    if (filtered) pl_released(pl, p);
    if (count == 0) {
        lane->next_seq = seq;
        free(picks);
        return;
    }
    int full = count >= max || bytes >= (size_t)bp->max_bytes || seq < end || from_held ||
               pl->state == PIPELINE_FAILED || pl->flushing;
    if (!full && now < oldest + (uint64_t)bp->linger_ms) {
        lane->next_seq = first_new;
        pl_schedule(pl, oldest + (uint64_t)bp->linger_ms);
        free(picks);
        return;
    }
    /* Build the batch in offset order (held and new picks are each sorted). */
    pl_batch *b = calloc(1, sizeof(*b));
    b->pl = pl;
    b->part = p;
    b->sink = si;
    b->msgs = malloc(count * sizeof(*b->msgs));
    b->was_held = malloc(count);
    b->recs = malloc(count * sizeof(*b->recs));
    b->outcomes = malloc(count * sizeof(*b->outcomes));
    b->reasons = calloc(count, sizeof(*b->reasons));
    size_t hi = 0, ni = from_held, n = 0;
    while (n < count) {
        int take_held = hi < from_held && (ni >= count || picks[hi].m->seq < picks[ni].m->seq);
        pl_pick *pk = take_held ? &picks[hi++] : &picks[ni++];
        b->msgs[n] = pk->m;
        b->was_held[n] = (unsigned char)pk->was_held;
        b->recs[n] = pk->m->rec;
        b->outcomes[n] = (cd_outcome)-1;
        n++;
    }
    free(picks);
    /* Taken held records leave the held set while they are out.  Both the
     * set and the held picks are in offset order: one merge pass. */
    if (from_held) {
        size_t w = 0, k = 0;
        for (size_t r = 0; r < lane->held.n; r++) {
            uint64_t seq_r = lane->held.v[r];
            while (k < count && !(b->was_held[k] && b->msgs[k]->seq >= seq_r))
                k++;
            if (k < count && b->msgs[k]->seq == seq_r) {
                b->msgs[k]->held_mask &= ~bit;
                k++;
            } else {
                lane->held.v[w++] = seq_r;
            }
        }
        lane->held.n = w;
    }
    b->b.count = count;
    b->b.records = b->recs;
    b->b.engine_private = b;
    b->remaining = count;
    uint64_t saved_next = lane->next_seq;
    lane->next_seq = seq;
    lane->inflight = 1;
    metrics_add(s->m_batches, 1);
    int r = s->ops->write(s->ctx, &b->b);
    if (r < 0) {
        /* Not taken: everything goes back where it was, and the lane waits. */
        lane->inflight = 0;
        lane->next_seq = first_new != UINT64_MAX ? first_new : saved_next;
        if (lane->next_seq > seq) lane->next_seq = seq;
        for (size_t k = 0; k < count; k++) {
            if (!b->was_held[k]) continue;
            b->msgs[k]->held_mask |= bit;
            seqset_insert(&lane->held, b->msgs[k]->seq);
        }
        lane->refusals++;
        lane->refused_until_ms = now + (uint64_t)pipeline_backoff_ms(
                                           &s->conf->retry, lane->refusals, 0, (uint32_t)rand());
        log_msg(CD_LOG_WARN, s->inst.prefix, "write refused the batch (%d); retrying", r);
        pl_batch_free(b);
        pl_schedule(pl, lane->refused_until_ms);
        return;
    }
    lane->refusals = 0;
}

static void pl_dispatch_all(pipeline *pl) {
    for (pl_partition *p = pl->parts; p; p = p->next)
        for (size_t i = 0; i < pl->sink_count; i++)
            pl_dispatch_lane(pl, p, i);
}

/* ------------------------------------------------------------- intake */
static void pl_intake(pipeline *pl, rd_kafka_message_t *rkm) {
    if (rkm->err) {
        if (rkm->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            rd_kafka_message_destroy(rkm);
            return;
        }
        const char *errstr = rd_kafka_message_errstr(rkm);
        if (rkm->err == RD_KAFKA_RESP_ERR__AUTHENTICATION)
            engine_fatal(pl->eng, "%s: Kafka authentication failed on %s: %s", pl->conf->name,
                         pl->listener, errstr);
        else
            log_msg(CD_LOG_WARN, pl->conf->name, "consumer: %s: %s", rd_kafka_err2name(rkm->err),
                    errstr);
        rd_kafka_message_destroy(rkm);
        return;
    }
    const char *topic = rd_kafka_topic_name(rkm->rkt);
    pl_partition *p = pl_partition_find(pl, topic, rkm->partition);
    if (!p || p->revoking || pl->stopping) {
        /* Not ours (any more): the next owner reads it from the committed
         * offset. */
        rd_kafka_message_destroy(rkm);
        return;
    }
    pl_msg *m = pl_msg_new(pl);
    if (m == NULL) {
        /* Skipping the record would let a later commit pass it: stop
         * without committing anything more, and the group reads it again. */
        log_msg(CD_LOG_ERROR, pl->conf->name, "%s[%d]@%" PRId64 ": out of memory; aborting", topic,
                rkm->partition, rkm->offset);
        abort();
    }
    m->rkm = rkm;
    m->part = p;
    m->arrived_ms = uv_now(pl->eng->loop);
    m->bytes = rkm->len + rkm->key_len + sizeof(*m);
    cd_record *r = &m->rec;
    r->topic = topic;
    r->partition = rkm->partition;
    r->offset = rkm->offset;
    r->timestamp_ms = rd_kafka_message_timestamp(rkm, NULL);
    r->key = rkm->key;
    r->key_len = rkm->key_len;
    r->value = rkm->payload;
    r->value_len = rkm->len;
    r->value_format = pl->conf->value_format;
    rd_kafka_headers_t *hdrs = NULL;
    size_t n = 0;
    if (rd_kafka_message_headers(rkm, &hdrs) == 0 && hdrs && (n = rd_kafka_header_cnt(hdrs)) > 0 &&
        (m->headers = calloc(n, sizeof(cd_header))) != NULL) {
        const char *name;
        const void *val;
        size_t len;
        for (size_t i = 0; i < n && rd_kafka_header_get_all(hdrs, i, &name, &val, &len) == 0; i++) {
            m->headers[i].name = name;
            m->headers[i].value = val;
            m->headers[i].value_len = len;
            m->bytes += strlen(name) + len;
            r->header_count++;
        }
        r->headers = m->headers;
    }
    if (pl->conf->value_format == CD_VALUE_JSON && rkm->payload) {
        char why[160];
        if (json_validate(rkm->payload, rkm->len, why, sizeof(why)) < 0) {
            if (asprintf(&m->error, "value is not JSON: %s", why) < 0) m->error = NULL;
        } else if (pl->needs_doc) {
            /* A sink's `when` reads fields: only then build a tree. */
            m->doc = json_loadb(rkm->payload, rkm->len, JSON_DECODE_ANY, NULL);
        }
    }
    uint32_t pending = m->error ? 1 : (uint32_t)pl->sink_count;
    m->seq = offset_window_push(&p->win, rkm->offset, m, pending);
    if (m->seq == UINT64_MAX) {
        log_msg(CD_LOG_WARN, pl->conf->name,
                "%s[%d]@%" PRId64 " arrived out of order (window at %" PRId64 "); dropped", topic,
                rkm->partition, rkm->offset, offset_window_watermark(&p->win));
        m->part->bytes += m->bytes;
        pl->bytes += m->bytes;
        pl->records++;
        pl_msg_free(m, NULL);
        return;
    }
    p->bytes += m->bytes;
    pl->bytes += m->bytes;
    pl->records++;
    metrics_add(pl->m_records_in, 1);
    if (m->error) {
        m->done_mask = pl->all_sinks_mask;
        char *why = strdup(m->error);
        pl_record_failed(pl, m, -1, "conversion", why, 0);
        free(why);
    }
    pl_backpressure(pl, p);
}

static void pl_consumer_ready(kafka_queue_watch *w) {
    pipeline *pl = container_of(w, pipeline, watch);
    rd_kafka_message_t *msgs[PL_CONSUME_BATCH];
    /* Blocked by backpressure: leave the queue; pl_flow_update drains it
     * when there is room again (the pipe will not signal again until the
     * queue was emptied). */
    pl->drain_pending = 0;
    for (;;) {
        if (pl->intake_blocked && !pl->escalated && !pl->closing_consumer && !pl->stopping) {
            pl->drain_pending = 1;
            break;
        }
        ssize_t n = rd_kafka_consume_batch_queue(pl->queue, 0, msgs, PL_CONSUME_BATCH);
        if (n <= 0) break;
        for (ssize_t i = 0; i < n; i++)
            pl_intake(pl, msgs[i]);
        if (n < PL_CONSUME_BATCH) break;
    }
    if (pl->closing_consumer) {
        pl_check_drained(pl);
        return;
    }
    pl_dispatch_all(pl);
}

/* ---------------------------------------------------------- rebalance */
static void pl_finish_revoke(pipeline *pl) {
    rd_kafka_topic_partition_list_t *l = pl->revoke_list;
    pl->revoke_list = NULL;
    if (!rd_kafka_assignment_lost(pl->rk)) pl_commit(pl, 1, 0);
    for (int i = 0; l && i < l->cnt; i++) {
        pl_partition *p = pl_partition_find(pl, l->elems[i].topic, l->elems[i].partition);
        if (p) pl_partition_remove(pl, p);
    }
    if (pl->revoke_cooperative) {
        rd_kafka_error_t *err = rd_kafka_incremental_unassign(pl->rk, l);
        if (err) {
            log_msg(CD_LOG_ERROR, pl->conf->name, "incremental unassign: %s",
                    rd_kafka_error_string(err));
            rd_kafka_error_destroy(err);
        }
    } else {
        rd_kafka_assign(pl->rk, NULL);
    }
    if (l) {
        log_msg(CD_LOG_INFO, pl->conf->name, "revoked %d partition(s)", l->cnt);
        rd_kafka_topic_partition_list_destroy(l);
    }
}

/* A pending revoke completes once the revoked partitions have nothing in
 * flight, or when the deadline passes (their records then stay uncommitted
 * and the next owner re-reads them). */
static void pl_check_revoke(pipeline *pl) {
    if (!pl->revoke_list) return;
    int busy = 0;
    for (pl_partition *p = pl->parts; p; p = p->next)
        if (p->revoking && pl_partition_busy(p, pl->sink_count)) busy = 1;
    if (!busy || uv_now(pl->eng->loop) >= pl->revoke_deadline_ms)
        pl_finish_revoke(pl);
    else
        pl_schedule(pl, pl->revoke_deadline_ms);
}

/* Resolves where newly assigned partitions start before assigning them:
 * the committed offset, or where auto.offset.reset points where there is
 * none, as a plain offset.  librdkafka 2.0 does the same by itself, but
 * waits 100 ms before it applies auto.offset.reset to a partition without a
 * committed offset (and 500 ms for a logical offset given to assign): most
 * of a fresh consumer group's start.  Here it is one OffsetFetch to the
 * coordinator and, for partitions without a committed offset, one
 * ListOffsets each, about a millisecond apiece on a local broker; they
 * block the loop, so only small assignments are resolved this way.  Any
 * failure leaves that partition's offset unset, and librdkafka resolves it
 * as before. */
#define PL_RESOLVE_MAX_PARTITIONS 32
#define PL_RESOLVE_TIMEOUT_MS     500
static void pl_resolve_start(pipeline *pl, rd_kafka_topic_partition_list_t *parts) {
    if (pl->reset_offset == RD_KAFKA_OFFSET_INVALID || parts->cnt == 0 ||
        parts->cnt > PL_RESOLVE_MAX_PARTITIONS)
        return;
    rd_kafka_topic_partition_list_t *c = rd_kafka_topic_partition_list_copy(parts);
    rd_kafka_resp_err_t err = rd_kafka_committed(pl->rk, c, PL_RESOLVE_TIMEOUT_MS);
    if (err) {
        log_msg(CD_LOG_DEBUG, pl->conf->name, "committed offsets not known yet (%s)",
                rd_kafka_err2str(err));
        rd_kafka_topic_partition_list_destroy(c);
        return;
    }
    for (int i = 0; i < c->cnt && i < parts->cnt; i++) {
        rd_kafka_topic_partition_t *want = &parts->elems[i];
        const rd_kafka_topic_partition_t *got = &c->elems[i];
        if (want->offset != RD_KAFKA_OFFSET_INVALID || got->err ||
            got->partition != want->partition || strcmp(got->topic, want->topic) != 0)
            continue;
        if (got->offset >= 0) {
            want->offset = got->offset;
            continue;
        }
        int64_t lo, hi;
        err = rd_kafka_query_watermark_offsets(pl->rk, want->topic, want->partition, &lo, &hi,
                                               PL_RESOLVE_TIMEOUT_MS);
        if (err == RD_KAFKA_RESP_ERR_NO_ERROR)
            want->offset = pl->reset_offset == RD_KAFKA_OFFSET_BEGINNING ? lo : hi;
        else
            log_msg(CD_LOG_DEBUG, pl->conf->name, "%s[%d]: watermarks not known yet (%s)",
                    want->topic, (int)want->partition, rd_kafka_err2str(err));
    }
    rd_kafka_topic_partition_list_destroy(c);
}

static void pl_rebalance_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                            rd_kafka_topic_partition_list_t *parts, void *opaque) {
    pipeline *pl = opaque;
    int cooperative = strcmp(rd_kafka_rebalance_protocol(rk), "COOPERATIVE") == 0;
    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
        for (int i = 0; i < parts->cnt; i++)
            pl_partition_add(pl, parts->elems[i].topic, parts->elems[i].partition);
        pl_resolve_start(pl, parts);
        if (cooperative) {
            rd_kafka_error_t *e = rd_kafka_incremental_assign(rk, parts);
            if (e) {
                log_msg(CD_LOG_ERROR, pl->conf->name, "incremental assign: %s",
                        rd_kafka_error_string(e));
                rd_kafka_error_destroy(e);
            }
        } else {
            rd_kafka_assign(rk, parts);
        }
        log_msg(CD_LOG_INFO, pl->conf->name, "assigned %d partition(s)", parts->cnt);
        if (pl->state != PIPELINE_RUNNING) {
            rd_kafka_pause_partitions(rk, parts);
        } else if (pl->over && pl->escalated) {
            for (int i = 0; i < parts->cnt; i++) {
                pl_partition *p =
                    pl_partition_find(pl, parts->elems[i].topic, parts->elems[i].partition);
                if (p) p->kpaused = 1;
            }
            rd_kafka_pause_partitions(rk, parts);
        }
        return;
    }
    if (err == RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS) {
        if (pl->revoke_list) /* a second revoke before the first completed */
            pl_finish_revoke(pl);
        for (int i = 0; i < parts->cnt; i++) {
            pl_partition *p =
                pl_partition_find(pl, parts->elems[i].topic, parts->elems[i].partition);
            if (p) p->revoking = 1;
        }
        pl->revoke_list = rd_kafka_topic_partition_list_copy(parts);
        pl->revoke_cooperative = cooperative;
        pl->revoke_deadline_ms = uv_now(pl->eng->loop) + (uint64_t)pl->eng->conf->shutdown_grace_ms;
        if (pl->forced || rd_kafka_assignment_lost(rk))
            pl_finish_revoke(pl);
        else
            pl_check_revoke(pl);
        return;
    }
    log_msg(CD_LOG_ERROR, pl->conf->name, "rebalance error: %s", rd_kafka_err2str(err));
    rd_kafka_assign(rk, NULL);
}

static void pl_error_cb(rd_kafka_t *rk, int err, const char *reason, void *opaque) {
    pipeline *pl = opaque;
    if (err == RD_KAFKA_RESP_ERR__AUTHENTICATION) {
        engine_fatal(pl->eng, "%s: Kafka authentication failed on %s: %s", pl->conf->name,
                     pl->listener, reason);
        return;
    }
    if (err == RD_KAFKA_RESP_ERR__FATAL) {
        char buf[512];
        rd_kafka_fatal_error(rk, buf, sizeof(buf));
        pl_fail(pl, NULL, "Kafka consumer fatal error: %s", buf);
        return;
    }
    log_msg(err == RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN ? CD_LOG_WARN : CD_LOG_INFO, pl->conf->name,
            "kafka %s: %s: %s", pl->listener, rd_kafka_err2name((rd_kafka_resp_err_t)err), reason);
}

/* ----------------------------------------------------------- lifecycle */
pipeline *pipeline_new(engine *e, const pipeline_conf *pc) {
    pipeline *pl = calloc(1, sizeof(*pl));
    pl->eng = e;
    pl->conf = pc;
    pl->state = PIPELINE_STARTING;
    instance_init(&pl->pl_inst, e, pl, pc->name, "");
    pl->m_records_in =
        engine_host.metric_register(&pl->pl_inst, CD_METRIC_COUNTER, "connectd_records_in_total",
                                    "records consumed by the pipeline");
    pl->m_dead_lettered = engine_host.metric_register(
        &pl->pl_inst, CD_METRIC_COUNTER, "connectd_records_dead_lettered_total",
        "records that failed for good (dead-lettered or skipped)");
    pl->m_commits = engine_host.metric_register(
        &pl->pl_inst, CD_METRIC_COUNTER, "connectd_offset_commits_total", "offset commits sent");
    pl->m_state = engine_host.metric_register(
        &pl->pl_inst, CD_METRIC_GAUGE, "connectd_pipeline_state",
        "0 starting, 1 running, 2 paused, 3 failed, 4 draining, 5 stopped");
    pl->sink_count = pc->sink_count;
    pl->sinks = calloc(pc->sink_count ? pc->sink_count : 1, sizeof(pl_sink));
    for (size_t i = 0; i < pc->sink_count; i++) {
        pl_sink *s = &pl->sinks[i];
        s->conf = &pc->sinks[i];
        s->ops = s->conf->plugin->desc->sink;
        instance_init(&s->inst, e, pl, pc->name, s->conf->name);
        s->m_records_out =
            engine_host.metric_register(&s->inst, CD_METRIC_COUNTER, "connectd_records_out_total",
                                        "records a sink acknowledged");
        s->m_retries =
            engine_host.metric_register(&s->inst, CD_METRIC_COUNTER, "connectd_sink_retries_total",
                                        "batches a sink asked to retry");
        s->m_failed =
            engine_host.metric_register(&s->inst, CD_METRIC_COUNTER, "connectd_sink_failed_total",
                                        "records a sink failed for good");
        s->m_batches = engine_host.metric_register(
            &s->inst, CD_METRIC_COUNTER, "connectd_sink_batches_total", "batches handed to a sink");
        pl->all_sinks_mask |= (uint64_t)1 << i;
        if (s->conf->when) pl->needs_doc = 1;
    }
    return pl;
}

static int pl_start_consumer(pipeline *pl, char *errbuf, size_t errlen) {
    const pipeline_conf *pc = pl->conf;
    const engine_conf *ec = pl->eng->conf;
    json_t *props = json_deep_copy(ec->kafka);
    json_object_update(props, pc->kafka);
    kafka_describe_listener(props, pl->listener, sizeof(pl->listener));
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    char err[512];
    /* Defaults a sink connector wants; the user's properties override them. */
    rd_kafka_conf_set(conf, "auto.offset.reset", "earliest", err, sizeof(err));
    rd_kafka_conf_set(conf, "client.id", "connectd", err, sizeof(err));
    /* A low threshold makes librdkafka 2.0 back off fetching for a second
     * at a time; the byte bound below is what limits memory. */
    rd_kafka_conf_set(conf, "queued.min.messages", "1000000", err, sizeof(err));
    /* queued.max.messages.kbytes stays at librdkafka's 64 MiB: in 2.0 a
     * fetch queue over it backs fetching off for a whole second, and the
     * queue fills while intake waits on a sink.  That memory is transient: a
     * sink slow for pause_after_ms gets its partitions paused, which empties
     * their fetch queues. */
    if (kafka_conf_apply(conf, props, errbuf, errlen) < 0) {
        json_decref(props);
        rd_kafka_conf_destroy(conf);
        return CD_ERR_INVALID;
    }
    kafka_conf_force(conf, props, "group.id", pc->group_id, "set the pipeline's group_id instead");
    kafka_conf_force(conf, props, "enable.auto.commit", "false",
                     "the engine commits only what every sink acknowledged");
    kafka_conf_force(conf, props, "enable.auto.offset.store", "false",
                     "the engine commits only what every sink acknowledged");
    json_decref(props);
    char reset[32];
    size_t rlen = sizeof(reset);
    pl->reset_offset = RD_KAFKA_OFFSET_INVALID;
    if (rd_kafka_conf_get(conf, "auto.offset.reset", reset, &rlen) == RD_KAFKA_CONF_OK) {
        if (!strcmp(reset, "smallest") || !strcmp(reset, "earliest") || !strcmp(reset, "beginning"))
            pl->reset_offset = RD_KAFKA_OFFSET_BEGINNING;
        else if (!strcmp(reset, "largest") || !strcmp(reset, "latest") || !strcmp(reset, "end"))
            pl->reset_offset = RD_KAFKA_OFFSET_END;
    }
    kafka_conf_set_logger(conf);
    rd_kafka_conf_set_rebalance_cb(conf, pl_rebalance_cb);
    rd_kafka_conf_set_offset_commit_cb(conf, pl_offset_commit_cb);
    rd_kafka_conf_set_error_cb(conf, pl_error_cb);
    rd_kafka_conf_set_opaque(conf, pl);
    pl->rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof(err));
    if (!pl->rk) {
        snprintf(errbuf, errlen, "consumer: %s", err);
        return CD_ERR_INVALID;
    }
    rd_kafka_poll_set_consumer(pl->rk);
    pl->queue = rd_kafka_queue_get_consumer(pl->rk);
    int r = kafka_queue_watch_start(&pl->watch, pl->eng->loop, pl->queue, pl_consumer_ready, errbuf,
                                    errlen);
    if (r < 0) return r;
    pl->watch_open = 1;
    rd_kafka_topic_partition_list_t *topics =
        rd_kafka_topic_partition_list_new((int)pc->topic_count);
    for (size_t i = 0; i < pc->topic_count; i++)
        rd_kafka_topic_partition_list_add(topics, pc->topics[i], RD_KAFKA_PARTITION_UA);
    rd_kafka_resp_err_t serr = rd_kafka_subscribe(pl->rk, topics);
    rd_kafka_topic_partition_list_destroy(topics);
    if (serr) {
        snprintf(errbuf, errlen, "subscribe: %s", rd_kafka_err2str(serr));
        return CD_ERR_INVALID;
    }
    return 0;
}

static int pl_start(pipeline *pl, char *errbuf, size_t errlen);

int pipeline_start(pipeline *pl, char *errbuf, size_t errlen) {
    int rc = pl_start(pl, errbuf, errlen);
    if (rc < 0 && pl->state != PIPELINE_FAILED) {
        /* Failed where it stands: the admin API and the dashboard show why. */
        free(pl->fail_reason);
        pl->fail_reason = strdup(errbuf);
        pl_set_state(pl, PIPELINE_FAILED, errbuf);
    }
    return rc;
}

static int pl_start(pipeline *pl, char *errbuf, size_t errlen) {
    const pipeline_conf *pc = pl->conf;
    char err[512];
    uv_timer_init(pl->eng->loop, &pl->dispatch_timer);
    uv_timer_init(pl->eng->loop, &pl->commit_timer);
    pl->timers_open = 2; /* dispatch_timer and commit_timer: both must close */
    if (pc->source) {
        const cd_source_ops *ops = pc->source->plugin->desc->source;
        instance_init(&pl->source_inst, pl->eng, pl, pc->name, pc->source->name);
        err[0] = '\0';
        if (ops->init(&engine_host, &pl->source_inst, pc->source->cfg, &pl->source_ctx, err,
                      sizeof(err)) < 0) {
            snprintf(errbuf, errlen, "%s: source %s: init: %s", pc->file, pc->source->name, err);
            pl->source_ctx = NULL;
            return CD_ERR_INVALID;
        }
        if (ops->start(pl->source_ctx, err, sizeof(err)) < 0) {
            snprintf(errbuf, errlen, "%s: source %s: start: %s", pc->file, pc->source->name, err);
            return CD_ERR_INVALID;
        }
        pl->source_started = 1;
        pl_set_state(pl, PIPELINE_RUNNING, NULL);
        return 0;
    }
    for (size_t i = 0; i < pl->sink_count; i++) {
        pl_sink *s = &pl->sinks[i];
        err[0] = '\0';
        if (s->ops->init(&engine_host, &s->inst, s->conf->cfg, &s->ctx, err, sizeof(err)) < 0) {
            snprintf(errbuf, errlen, "%s: sinks[%zu] (%s): init: %s", pc->file, i, s->conf->name,
                     err);
            return CD_ERR_INVALID;
        }
        s->initialised = 1;
        if (s->ops->start(s->ctx, err, sizeof(err)) < 0) {
            snprintf(errbuf, errlen, "%s: sinks[%zu] (%s): start: %s", pc->file, i, s->conf->name,
                     err);
            return CD_ERR_INVALID;
        }
        s->started = 1;
    }
    int r = pl_start_consumer(pl, err, sizeof(err));
    if (r < 0) {
        snprintf(errbuf, errlen, "%s: %s", pc->file, err);
        return r;
    }
    uv_timer_start(&pl->commit_timer, pl_commit_tick, (uint64_t)pl->eng->conf->commit_interval_ms,
                   (uint64_t)pl->eng->conf->commit_interval_ms);
    pl_set_state(pl, PIPELINE_RUNNING, NULL);
    log_msg(CD_LOG_INFO, pc->name, "consuming %zu topic(s) as group %s from %s, %zu sink(s)",
            pc->topic_count, pc->group_id, pl->listener, pl->sink_count);
    return 0;
}

void pipeline_pause(pipeline *pl) {
    if (pl->state != PIPELINE_RUNNING) return;
    pl_pause_all(pl, 1);
    if (pl->source_ctx && pl->conf->source->plugin->desc->source->pause)
        pl->conf->source->plugin->desc->source->pause(pl->source_ctx);
    pl_set_state(pl, PIPELINE_PAUSED, NULL);
}

void pipeline_resume(pipeline *pl) {
    if (pl->state != PIPELINE_PAUSED) return;
    pl_set_state(pl, PIPELINE_RUNNING, NULL);
    pl_pause_all(pl, 0);
    for (pl_partition *p = pl->parts; p; p = p->next)
        if (p->kpaused) pl_pause_partition(pl, p, 1);
    if (pl->source_ctx && pl->conf->source->plugin->desc->source->resume)
        pl->conf->source->plugin->desc->source->resume(pl->source_ctx);
    pl_dispatch_all(pl);
}

/* ------------------------------------------------------------ stopping */
static void pl_finish_stop(pipeline *pl);

/* Destroys the consumer once the sinks have stopped.  Every record still
 * held (fetched but not dispatched, or in a batch a sink never answered
 * after a forced stop) goes back to librdkafka first: rd_kafka_destroy
 * waits for every message reference, so destroying it with any still held
 * never returns.  The records are not committed; the group reads them
 * again. */
static void pl_destroy_consumer(pipeline *pl) {
    if (!pl->rk) return;
    pl->records_released = 1;
    pl_dlq_detach_sent(pl);
    /* Dead letters waiting for a retry point at records freed below; they
     * are not committed, so the group reads those records again. */
    while (pl->dlq_waiting) {
        pl_dlq *d = pl->dlq_waiting;
        pl->dlq_waiting = d->next;
        d->part->dlq_inflight--;
        free(d->reason);
        free(d);
    }
    for (int list = 0; list < 2; list++) {
        for (pl_partition *p = list ? pl->orphans : pl->parts; p; p = p->next) {
            offset_window_free(&p->win, pl_msg_free, NULL);
            offset_window_init(&p->win);
        }
    }
    /* Closed already (consumer_close_queue), or the grace period is over:
     * either way destroying must not wait for the group again. */
    rd_kafka_destroy_flags(pl->rk, RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
    pl->rk = NULL;
}

static void pl_sink_stopped(void *opaque, int status) {
    pl_sink *s = opaque;
    pipeline *pl = s->inst.pl;
    s->stopped = 1;
    if (status < 0) log_msg(CD_LOG_WARN, s->inst.prefix, "stop reported %d", status);
    if (--pl->sinks_stopping == 0) {
        pl_destroy_consumer(pl);
        pl_finish_stop(pl);
    }
}

static void pl_source_stopped(void *opaque, int status) {
    pipeline *pl = opaque;
    /* After a forced stop the source's own stop may still call back. */
    if (!pl->source_started) return;
    pl->source_started = 0;
    pl_finish_stop(pl);
}

static void pl_timer_closed(uv_handle_t *h) {
    pipeline *pl = h->data;
    if (--pl->timers_open == 0) engine_pipeline_stopped(pl->eng, pl);
}

static void pl_watch_closed(kafka_queue_watch *w) {
    pipeline *pl = container_of(w, pipeline, watch);
    pl->watch_open = 0;
    pl->forced = 1;
    if (pl->queue) rd_kafka_queue_destroy(pl->queue);
    pl->queue = NULL;
    /* Then the sinks, which may still read records of batches in flight;
     * the consumer goes once they have stopped (pl_destroy_consumer). */
    pl->sinks_stopping = 0;
    for (size_t i = 0; i < pl->sink_count; i++)
        if (pl->sinks[i].started) pl->sinks_stopping++;
    if (pl->sinks_stopping == 0) {
        pl_destroy_consumer(pl);
        pl_finish_stop(pl);
        return;
    }
    for (size_t i = 0; i < pl->sink_count; i++) {
        pl_sink *s = &pl->sinks[i];
        if (!s->started) continue;
        s->started = 0;
        if (s->ops->stop(s->ctx, pl_sink_stopped, s) < 0) pl_sink_stopped(s, -1);
    }
}

static void pl_finish_stop(pipeline *pl) {
    pl_set_state(pl, PIPELINE_STOPPED, NULL);
    pl->dispatch_timer.data = pl;
    pl->commit_timer.data = pl;
    uv_close((uv_handle_t *)&pl->dispatch_timer, pl_timer_closed);
    uv_close((uv_handle_t *)&pl->commit_timer, pl_timer_closed);
}

/* Once nothing is in flight: commit, then close consumer and sinks. */
/* The consumer has left its group (or we stop waiting for it). */
static void pl_consumer_closed(pipeline *pl) {
    if (!pl->watch_open || pl->watch_closing) return;
    pl->watch_closing = 1;
    uv_timer_stop(&pl->commit_timer);
    uv_timer_stop(&pl->dispatch_timer);
    kafka_queue_watch_close(&pl->watch, pl_watch_closed);
}

/* Once nothing is in flight: commit, then close the consumer without
 * blocking the loop (rd_kafka_consumer_close_queue; the close's rebalance
 * events arrive on the consumer queue we already drain), then the sinks. */
static void pl_check_drained(pipeline *pl) {
    if (!pl->stopping || pl->state == PIPELINE_STOPPED || !pl->watch_open || pl->sinks_stopping)
        return;
    if (pl->closing_consumer) {
        if (pl->forced || rd_kafka_consumer_closed(pl->rk))
            pl_consumer_closed(pl);
        else
            pl_schedule(pl, uv_now(pl->eng->loop) + 20);
        return;
    }
    if (!pl->forced) {
        for (pl_partition *p = pl->parts; p; p = p->next)
            if (pl_partition_busy(p, pl->sink_count)) return;
    }
    pl_commit(pl, 0, 0);
    pl->closing_consumer = 1;
    if (pl->forced) {
        pl_consumer_closed(pl);
        return;
    }
    rd_kafka_error_t *err = rd_kafka_consumer_close_queue(pl->rk, pl->queue);
    if (err) {
        log_msg(CD_LOG_WARN, pl->conf->name, "consumer close: %s", rd_kafka_error_string(err));
        rd_kafka_error_destroy(err);
        pl_consumer_closed(pl);
        return;
    }
    pl_schedule(pl, uv_now(pl->eng->loop) + 20);
}

void pipeline_stop(pipeline *pl) {
    if (pl->stopping) return;
    pl->stopping = 1;
    if (pl->conf->source) {
        pl_set_state(pl, PIPELINE_DRAINING, NULL);
        if (pl->source_started) {
            if (pl->conf->source->plugin->desc->source->stop(pl->source_ctx, pl_source_stopped,
                                                             pl) < 0)
                pl_source_stopped(pl, -1);
        } else {
            pl_finish_stop(pl);
        }
        return;
    }
    if (!pl->watch_open) {
        /* Never got as far as a consumer: stop whatever sinks started. */
        pl_watch_closed(&pl->watch);
        return;
    }
    pl_set_state(pl, PIPELINE_DRAINING, NULL);
    /* Stop fetching; records fetched but not handed to a sink are simply not
     * committed and will be read again by whoever owns the partition next. */
    pl_pause_all(pl, 1);
    pl_check_drained(pl);
}

void pipeline_force_stop(pipeline *pl) {
    if (pl->state == PIPELINE_STOPPED) return;
    pl->forced = 1;
    if (!pl->stopping) {
        pipeline_stop(pl);
        return;
    }
    if (pl->conf->source) {
        if (pl->source_started) pl_source_stopped(pl, -1);
        return;
    }
    if (pl->sinks_stopping) {
        /* A sink never finished stopping: give up on it. */
        pl->sinks_stopping = 0;
        pl_finish_stop(pl);
        return;
    }
    /* Partitions with batches in flight become orphans; the rest commits. */
    pl_check_drained(pl);
}

void pipeline_free(pipeline *pl) {
    if (!pl) return;
    pl_dlq_detach_sent(pl);
    while (pl->parts) {
        pl_partition *p = pl->parts;
        pl->parts = p->next;
        pl_partition_free(pl, p);
    }
    while (pl->orphans) {
        pl_partition *p = pl->orphans;
        pl->orphans = p->next;
        pl_partition_free(pl, p);
    }
    while (pl->dlq_waiting) {
        pl_dlq *d = pl->dlq_waiting;
        pl->dlq_waiting = d->next;
        free(d->reason);
        free(d);
    }
    if (pl->revoke_list) rd_kafka_topic_partition_list_destroy(pl->revoke_list);
    for (size_t i = 0; i < pl->sink_count; i++) {
        pl_sink *s = &pl->sinks[i];
        if (s->initialised && s->ctx) s->ops->destroy(s->ctx);
        instance_release(&s->inst);
    }
    free(pl->sinks);
    if (pl->source_ctx) pl->conf->source->plugin->desc->source->destroy(pl->source_ctx);
    if (pl->conf->source) instance_release(&pl->source_inst);
    instance_release(&pl->pl_inst);
    while (pl->msg_spares) {
        pl_msg *m = pl->msg_spares;
        pl->msg_spares = *(pl_msg **)m;
        free(m);
    }
    free(pl->fail_reason);
    free(pl);
}

json_t *pipeline_describe(const pipeline *pl) {
    json_t *o = json_object();
    json_object_set_new(o, "name", json_string(pl->conf->name));
    json_object_set_new(o, "file", json_string(pl->conf->file));
    json_object_set_new(o, "state", json_string(pipeline_state_name(pl->state)));
    if (pl->fail_reason) json_object_set_new(o, "reason", json_string(pl->fail_reason));
    if (pl->conf->source) {
        json_object_set_new(o, "kind", json_string("source"));
        json_object_set_new(o, "source", json_string(pl->conf->source->plugin->desc->name));
        json_object_set_new(o, "records_in", json_real(pl->m_records_in->value));
        return o;
    }
    json_object_set_new(o, "kind", json_string("sink"));
    json_object_set_new(o, "group_id", json_string(pl->conf->group_id));
    json_t *topics = json_array();
    for (size_t i = 0; i < pl->conf->topic_count; i++)
        json_array_append_new(topics, json_string(pl->conf->topics[i]));
    json_object_set_new(o, "topics", topics);
    json_t *sinks = json_array();
    for (size_t i = 0; i < pl->sink_count; i++) {
        json_t *s = json_object();
        json_object_set_new(s, "name", json_string(pl->sinks[i].conf->name));
        json_object_set_new(s, "plugin", json_string(pl->sinks[i].conf->plugin->desc->name));
        json_object_set_new(s, "records_out", json_real(pl->sinks[i].m_records_out->value));
        json_object_set_new(s, "retries", json_real(pl->sinks[i].m_retries->value));
        json_object_set_new(s, "failed", json_real(pl->sinks[i].m_failed->value));
        json_array_append_new(sinks, s);
    }
    json_object_set_new(o, "sinks", sinks);
    json_object_set_new(o, "records_in", json_real(pl->m_records_in->value));
    json_object_set_new(o, "dead_lettered", json_real(pl->m_dead_lettered->value));
    json_object_set_new(o, "inflight_records", json_integer((json_int_t)pl->records));
    json_object_set_new(o, "inflight_bytes", json_integer((json_int_t)pl->bytes));
    json_object_set_new(o, "intake_blocked", json_boolean(pl->intake_blocked));
    json_t *parts = json_array();
    for (const pl_partition *p = pl->parts; p; p = p->next) {
        json_t *j = json_object();
        json_object_set_new(j, "topic", json_string(p->topic));
        json_object_set_new(j, "partition", json_integer(p->partition));
        json_object_set_new(j, "committed", json_integer(p->committed));
        json_object_set_new(j, "watermark", json_integer(offset_window_watermark(&p->win)));
        json_object_set_new(j, "inflight", json_integer((json_int_t)p->win.count));
        int64_t lo = 0, hi = -1;
        if (pl->rk &&
            rd_kafka_get_watermark_offsets(pl->rk, p->topic, p->partition, &lo, &hi) == 0 &&
            hi >= 0) {
            int64_t pos = offset_window_watermark(&p->win);
            json_object_set_new(j, "high_watermark", json_integer(hi));
            json_object_set_new(j, "lag", json_integer(pos >= 0 ? hi - pos : hi - lo));
        }
        size_t held = 0;
        for (size_t i = 0; i < pl->sink_count; i++)
            held += p->lanes[i].held.n;
        json_object_set_new(j, "held_for_retry", json_integer((json_int_t)held));
        json_object_set_new(j, "paused", json_boolean(p->kpaused));
        json_array_append_new(parts, j);
    }
    json_object_set_new(o, "partitions", parts);
    return o;
}
