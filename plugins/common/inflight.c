/*
 * Batches in flight and the stop protocol of the HTTP sinks (see
 * inflight.h).
 */
#include "inflight.h"

#include <stdio.h>

#define inflight_container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

void inflight_init(inflight *f, const cd_host *host, cd_instance *inst) {
    f->host = host;
    f->inst = inst;
}

int inflight_start(inflight *f, size_t max_in_flight, char *errbuf, size_t errlen) {
    f->pool = f->host->http_pool_new(f->inst, max_in_flight, errbuf, errlen);
    if (f->pool == NULL) return CD_ERR_IO;
    int rc = uv_timer_init(f->host->loop(f->inst), &f->stop_timer);
    if (rc < 0) {
        snprintf(errbuf, errlen, "uv_timer_init: %s", uv_strerror(rc));
        f->host->http_pool_free(f->pool);
        f->pool = NULL;
        return CD_ERR_IO;
    }
    f->started = 1;
    return 0;
}

int inflight_accepts(const inflight *f) {
    return f->started && !f->stopping;
}

void inflight_add(inflight *f, inflight_link *l) {
    l->prev = NULL;
    l->next = f->batches;
    if (f->batches) f->batches->prev = l;
    f->batches = l;
}

static void inflight_stop_closed(uv_handle_t *h) {
    inflight *f = inflight_container_of((uv_timer_t *)h, inflight, stop_timer);
    f->started = 0;
    cd_done_cb cb = f->stop_cb;
    void *opaque = f->stop_opaque;
    if (cb) cb(opaque, 0);
}

/* Nothing is in flight any more: free the pool (before the engine closes
 * its client) and call stop's callback from the timer's close callback. */
static void inflight_stop_finish(inflight *f) {
    if (f->pool) {
        f->host->http_pool_free(f->pool);
        f->pool = NULL;
    }
    uv_close((uv_handle_t *)&f->stop_timer, inflight_stop_closed);
}

void inflight_remove(inflight *f, inflight_link *l) {
    if (l->prev)
        l->prev->next = l->next;
    else
        f->batches = l->next;
    if (l->next) l->next->prev = l->prev;
    l->prev = l->next = NULL;
    if (f->stopping && f->batches == NULL && f->pool != NULL) inflight_stop_finish(f);
}

int inflight_stop(inflight *f, cd_done_cb cb, void *cb_opaque) {
    if (!f->started) return CD_ERR_INVALID;
    if (f->stopping) return CD_ERR_BUSY;
    f->stopping = 1;
    f->stop_cb = cb;
    f->stop_opaque = cb_opaque;
    if (f->batches == NULL) inflight_stop_finish(f);
    return 0;
}

int inflight_can_free(const inflight *f) {
    if (!f->started) return 1;
    f->host->log(f->inst, CD_LOG_ERROR, "destroy called before stop completed; leaking");
    return 0;
}
