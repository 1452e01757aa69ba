/*
 * Offset window: the records of one partition that were fetched but are not
 * yet done, in offset order, and the committable watermark — the offset
 * below which every record is done.  Acks may arrive in any order; the
 * watermark only moves over a contiguous done prefix, so a commit never
 * passes a record still in flight.
 *
 * Entries are addressed by a sequence number (the n-th record pushed), so
 * each sink can keep its own cursor into the window.
 */
#ifndef CONNECTD_OFFSETS_H
#define CONNECTD_OFFSETS_H

#include <stddef.h>
#include <stdint.h>

typedef struct offset_entry {
    int64_t offset;
    void *data;       /* caller's record; released through the release callback */
    uint32_t pending; /* acks still missing */
} offset_entry;

typedef struct offset_window {
    offset_entry *ring;
    size_t cap, head, count;
    uint64_t base_seq;   /* sequence number of ring[head] */
    int64_t next_commit; /* the watermark: -1 until a record was pushed */
} offset_window;

typedef void (*offset_release_fn)(void *data, void *opaque);

void offset_window_init(offset_window *w);
/* Frees the ring, calling release for every entry still held. */
void offset_window_free(offset_window *w, offset_release_fn release, void *opaque);

/* Appends a record (offsets must increase).  pending = acks it needs (at
 * least 1).  Returns its sequence number, or UINT64_MAX when out of memory,
 * pending is 0 or the offset does not increase. */
uint64_t offset_window_push(offset_window *w, int64_t offset, void *data, uint32_t pending);

/* The entry with sequence number seq, or NULL once it left the window. */
offset_entry *offset_window_get(offset_window *w, uint64_t seq);
/* One past the newest sequence number. */
static inline uint64_t offset_window_end(const offset_window *w) {
    return w->base_seq + w->count;
}

/* One ack for seq.  When that completes a prefix, entries leave the window
 * (release is called for each) and the watermark advances.  Returns the
 * number of entries released, or -1 if seq is not in the window or has no
 * pending acks left. */
int offset_window_ack(offset_window *w, uint64_t seq, offset_release_fn release, void *opaque);

/* Offset to commit (the next one to consume), or -1 when nothing was ever
 * pushed. */
static inline int64_t offset_window_watermark(const offset_window *w) {
    return w->next_commit;
}

#endif
