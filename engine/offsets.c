/* Offset window room; see offsets.h. */
#include "offsets.h"

#include <stdlib.h>
#include <string.h>

void offset_window_init(offset_window *w) {
    memset(w, 0, sizeof(*w));
    w->next_commit = -1;
}

void offset_window_free(offset_window *w, offset_release_fn release, void *opaque) {
    for (size_t i = 0; i < w->count; i++) {
        offset_entry *e = &w->ring[(w->head + i) % w->cap];
        if (release) release(e->data, opaque);
    }
    free(w->ring);
    w->ring = NULL;
    w->cap = w->count = w->head = 0;
}

static int offset_window_grow(offset_window *w) {
    size_t cap = w->cap ? w->cap * 2 : 64;
    offset_entry *ring = malloc(cap * sizeof(*ring));
    if (!ring) return -1;
    for (size_t i = 0; i < w->count; i++)
        ring[i] = w->ring[(w->head + i) % w->cap];
    free(w->ring);
    w->ring = ring;
    w->cap = cap;
    w->head = 0;
    return 0;
}

static int offset_window_pop_done(offset_window *w, offset_release_fn release, void *opaque) {
    int released = 0;
    while (w->count && w->ring[w->head].pending == 0) {
        offset_entry *e = &w->ring[w->head];
        w->next_commit = e->offset + 1;
        void *data = e->data;
        w->head = (w->head + 1) % w->cap;
        w->count--;
        w->base_seq++;
        released++;
        if (release) release(data, opaque);
    }
    if (w->count) w->next_commit = w->ring[w->head].offset;
    return released;
}

uint64_t offset_window_push(offset_window *w, int64_t offset, void *data, uint32_t pending) {
    if (pending == 0) return UINT64_MAX;
    if (w->count) {
        if (offset <= w->ring[(w->head + w->count - 1) % w->cap].offset) return UINT64_MAX;
    } else if (w->next_commit >= 0 && offset < w->next_commit) {
        return UINT64_MAX;
    }
    if (w->count == w->cap && offset_window_grow(w) < 0) return UINT64_MAX;
    uint64_t seq = w->base_seq + w->count;
    offset_entry *e = &w->ring[(w->head + w->count) % w->cap];
    e->offset = offset;
    e->data = data;
    e->pending = pending;
    w->count++;
    if (w->count == 1) w->next_commit = offset;
    return seq;
}

offset_entry *offset_window_get(offset_window *w, uint64_t seq) {
    if (seq < w->base_seq || seq >= w->base_seq + w->count) return NULL;
    return &w->ring[(w->head + (seq - w->base_seq)) % w->cap];
}

int offset_window_ack(offset_window *w, uint64_t seq, offset_release_fn release, void *opaque) {
    offset_entry *e = offset_window_get(w, seq);
    if (!e || e->pending == 0) return -1;
    if (--e->pending > 0 || seq != w->base_seq) return 0;
    return offset_window_pop_done(w, release, opaque);
}
