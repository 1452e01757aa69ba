/*
 * sink-file — the context of one configured file sink.
 *
 * This header is private to the plugin (file.c and file_conf.c include it;
 * nothing else does).  It holds the structs that carry a sink's state between
 * the engine's calls and libuv's callbacks:
 *
 *   file_ctx     one configured sink: options, open files, batches in flight
 *   file_output  one open (or opening) output file, with its FIFO of chunks
 *   file_batch   one batch handed to write(), until every record is reported
 *   file_chunk   the lines of one batch that go to one file
 *
 * How they fit together: write() renders each record of a batch into the
 * chunk of the file its path template names, queues each chunk behind the
 * chunks earlier batches left on that file, and starts the file's writer.
 * A file writes its chunks one at a time (one libuv request in flight per
 * file keeps lines in batch order).  When the last chunk of a batch is
 * written (and fsynced with fsync=batch), the batch reports every record to
 * the engine and goes away.
 *
 * If you copy this plugin: rename the prefix, keep the shape.  The context
 * struct is what init() hands back to the engine as `void *ctx`; the engine
 * passes it back, untouched, to every other callback.
 */
#ifndef CONNECTD_SINK_FILE_H
#define CONNECTD_SINK_FILE_H

#include <connectd/plugin.h>

#include <stddef.h>
#include <stdint.h>

/* Recovers the struct that embeds `ptr` as its `member` (libuv's pattern: a
 * uv_fs_t embedded in its owner, rather than a cast of req->data). */
#define file_container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

/* At most this many output files are kept open.  When a batch takes us over
 * the limit, idle files (no chunk queued, no request in flight) are closed,
 * least recently used first, as soon as the batch's call has returned.  Busy
 * files are never closed, so a single batch spanning more files than this
 * goes over it until its writes finish. */
#define FILE_MAX_OPEN 64

/* Finished chunks are kept for reuse, buffers and all, so steady traffic
 * allocates nothing per record (one small file_batch per batch is all); this
 * many at most, and only if their buffers are not huge — one unusually large
 * batch should not pin its memory forever. */
#define FILE_CHUNK_POOL_MAX   16
#define FILE_CHUNK_KEEP_BYTES ((size_t)1 << 20)

/* Room for a failure reason ("write <path>: <uv error>"); longer ones are
 * cut, which only shortens a log line and a dead-letter header. */
#define FILE_REASON_MAX 256

/* ---------------------------------------------------------------- buffers */

/* A growable byte buffer.  Owns `data` (malloc'ed; freed by file_buf_free). */
typedef struct file_buf {
    char *data;
    size_t len;
    size_t cap;
} file_buf;

/* ------------------------------------------------------------ path template */

/* `path` is parsed once, in init, into literal runs and variables, so that
 * rendering it per record is a few memcpy()s. */
typedef enum file_seg_type {
    FILE_SEG_LITERAL = 0,
    FILE_SEG_TOPIC,     /* ${topic} */
    FILE_SEG_PARTITION, /* ${partition} */
} file_seg_type;

typedef struct file_seg {
    file_seg_type type;
    const char *text; /* FILE_SEG_LITERAL: points into file_ctx.path_template */
    size_t len;
} file_seg;

/* ------------------------------------------------------------------ chunks */

typedef struct file_ctx file_ctx;
typedef struct file_output file_output;
typedef struct file_batch file_batch;

/* The lines one batch writes to one file, and which records they carry.
 * Owned by the batch (its `chunks` list) from creation until the batch has
 * reported its records; then returned to the context's pool or freed. */
typedef struct file_chunk {
    file_batch *batch;               /* the batch this chunk belongs to */
    file_output *file;               /* target file; NULL for the rejected-records chunk */
    struct file_chunk *next_in_file; /* the file's FIFO */
    struct file_chunk *next_in_batch;

    file_buf data;  /* the NDJSON lines, '\n'-terminated */
    size_t written; /* bytes of `data` already written (short writes resume here) */

    size_t *records; /* indices into batch->records, malloc'ed, grown as needed */
    size_t nrecords;
    size_t records_cap;

    /* Outcome once finished: CD_RECORD_OK, or RETRY/FATAL with `reason`. */
    cd_outcome outcome;
    char reason[FILE_REASON_MAX];
} file_chunk;

/* ----------------------------------------------------------------- batches */

/* One batch accepted by write().  Allocated by write(), owned by the
 * context's batches list, freed once its last record has been reported. */
struct file_batch {
    file_ctx *ctx;
    cd_batch *batch; /* borrowed from the engine; valid until the last record_done */
    uint64_t seq;    /* acceptance order, for flush() */
    size_t pending;  /* chunks not finished yet */
    file_chunk *chunks;
    file_batch *prev, *next; /* file_ctx.batches, oldest first */
};

/* ------------------------------------------------------------------- files */

/* What a file's one request slot is doing. */
typedef enum file_op {
    FILE_OP_NONE = 0,
    FILE_OP_OPEN,
    FILE_OP_MKDIR,
    FILE_OP_WRITE,
    FILE_OP_FSYNC,
    FILE_OP_CLOSE,
} file_op;

/* One output file.  Allocated (with its path inline) when a batch first
 * needs it and owned by the context: on its files list while in use, then by
 * the close request in flight.  Freed by the context's housekeeping (never
 * opened) or by the close callback.
 * While `op != FILE_OP_NONE` libuv owns `req`, so the struct must live on.
 * (Not called file_handle: glibc declares a struct of that name under
 * _GNU_SOURCE.) */
struct file_output {
    uv_fs_t req; /* the one request in flight: open, mkdir, write, fsync or close */
    file_ctx *ctx;
    uv_file fd; /* -1 until opened */
    file_op op;
    int torn;         /* a failed write left a partial line: start the next with '\n' */
    int mkdir_tried;  /* parent directories were created once for this open */
    size_t mkdir_pos; /* how far into path the directory walk has got */

    file_chunk *head, *tail;          /* queued chunks; head is being written */
    file_output *lru_prev, *lru_next; /* ctx->files, most recently used first */

    char *dir;   /* scratch: the directory being created; points just past path */
    char path[]; /* the rendered path, then room for `dir` (one allocation) */
};

/* A flush() waiting for the batches accepted before it. */
typedef struct file_waiter {
    cd_done_cb cb;
    void *opaque;
    uint64_t upto; /* completes when no batch with seq <= upto remains */
    struct file_waiter *next;
} file_waiter;

/* ----------------------------------------------------------------- context */

/* One configured sink.  Created by file_conf_create() (init), freed by
 * file_conf_destroy() (destroy). */
struct file_ctx {
    const cd_host *host; /* borrowed: outlives the instance */
    cd_instance *inst;   /* borrowed */
    uv_loop_t *loop;     /* borrowed, set by start */

    /* Options, as read in init. */
    char *path_template; /* owned copy of `path` */
    file_seg *segs;      /* owned, nsegs entries */
    size_t nsegs;
    int fsync_batch; /* fsync=batch */
    int mkdirs;
    int file_mode;

    cd_metric *m_bytes; /* owned by the engine; may be NULL with a minimal host */
    cd_metric *m_fsyncs;

    /* Lifecycle. */
    int started;
    int stopping;
    cd_done_cb stop_cb;
    void *stop_opaque;

    /* Deferred bookkeeping (closing idle files, completing flush and stop):
     * runs from a zero-delay timer so it never runs inside a call that the
     * engine or another callback is still in the middle of. */
    uv_timer_t housekeeping;

    /* Open files, most recently used first. */
    file_output *files_head, *files_tail;
    size_t nfiles;   /* on the list */
    size_t nclosing; /* off the list, close in flight */

    /* Batches in flight, oldest first. */
    file_batch *batches_head, *batches_tail;
    uint64_t batch_seq;

    file_waiter *waiters; /* flush() calls not yet completed */

    file_chunk *pool; /* finished chunks kept for reuse (next_in_batch links) */
    size_t npool;

    file_buf path_buf; /* scratch: the current record's rendered path */
};

/* ------------------------------------------------------- file_conf.c */

/* Reads and checks the options in `cfg` and allocates a context into *out.
 * Does no I/O.  Returns 0, or a negative CD_ERR_* with errbuf naming the
 * option and the reason (and *out untouched).  The caller owns *out and
 * frees it with file_conf_destroy(). */
int file_conf_create(const cd_host *host, cd_instance *inst, const cd_config *cfg, file_ctx **out,
                     char *errbuf, size_t errlen);

/* Frees the context itself and what file_conf_create() put in it (options,
 * parsed template, scratch buffer).  Takes ownership of ctx.  The runtime
 * state (files, chunks, batches) is released by the plugin's destroy()
 * before it calls this.  Must not be called while libuv still holds one of
 * the context's requests or its timer (i.e. only before start, or after stop
 * completed). */
void file_conf_destroy(file_ctx *ctx);

#endif /* CONNECTD_SINK_FILE_H */
