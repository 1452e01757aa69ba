/*
 * The lifecycle of a sink whose batches outlive write(): the engine's HTTP
 * pool, the list of batches in flight and the stop protocol.  sink-dynamodb
 * and sink-sns embed an `inflight` in their context and an `inflight_link`
 * in each of their batches.
 *
 *   start   creates the HTTP pool and the timer stop closes;
 *   write   refused (CD_ERR_BUSY) unless started and not stopping;
 *   stop    takes no new batches and lets the ones in flight be answered;
 *           once the last is removed it frees the pool (before the engine
 *           closes its HTTP client) and calls stop's callback once, from
 *           the loop (the timer's close callback), never from inside stop;
 *   destroy only after stop has called back.
 */
#ifndef CONNECTD_INFLIGHT_H
#define CONNECTD_INFLIGHT_H

#include <connectd/plugin.h>

#include <stddef.h>

typedef struct inflight_link {
    struct inflight_link *prev, *next;
} inflight_link;

typedef struct inflight {
    const cd_host *host;
    cd_instance *inst;
    cd_http_pool *pool;    /* from start until stop completes */
    uv_timer_t stop_timer; /* closed to call stop's callback from the loop */
    int started, stopping;
    cd_done_cb stop_cb;
    void *stop_opaque;
    inflight_link *batches;
} inflight;

/* Sets up f (zeroed memory) for the instance; no I/O. */
void inflight_init(inflight *f, const cd_host *host, cd_instance *inst);

/* Creates the HTTP pool (max_in_flight requests at once) and the stop
 * timer.  Returns 0, or CD_ERR_IO with errbuf (nothing is left open). */
int inflight_start(inflight *f, size_t max_in_flight, char *errbuf, size_t errlen);

/* True when write may take a batch (started and not stopping). */
int inflight_accepts(const inflight *f);

/* Enters a batch (its link) in the list. */
void inflight_add(inflight *f, inflight_link *l);

/* Takes a batch whose every record has been reported out of the list; the
 * caller frees it.  The last one out during stop completes the stop. */
void inflight_remove(inflight *f, inflight_link *l);

/* The sink's stop: CD_ERR_INVALID when not started, CD_ERR_BUSY when
 * stopping already; else 0 and cb is called once, from the loop, when
 * nothing is in flight any more. */
int inflight_stop(inflight *f, cd_done_cb cb, void *cb_opaque);

/* For destroy: false (and an error logged) while a stop has not completed:
 * the context must then be leaked rather than freed.  When true, no batch
 * is in the list (write takes none before start, stop completes only once
 * the last is out). */
int inflight_can_free(const inflight *f);

#endif /* CONNECTD_INFLIGHT_H */
