/*
 * sink-file — the reference sink: writes each record as one NDJSON line.
 *
 * This is the plugin to copy when you write a new sink.  It is small enough
 * to read in one sitting and does every part of the job a real sink has to
 * do: declare its options, validate them in init without I/O, attach to the
 * engine's libuv loop in start, take batches in write without ever blocking
 * the loop, report each record's outcome exactly once, and finish its work
 * asynchronously in flush and stop.
 *
 * The files of this plugin (Fluent Bit's layout):
 *   file.c       the callbacks and the descriptor (this file)
 *   file_conf.c  options -> context (init) and back (destroy)
 *   file.h       the context struct and friends
 *
 * The path of one record through this file:
 *   file_write()           renders lines into one chunk per target file,
 *                          queues the chunks, starts the files' writers
 *   file_pump()            a file's writer: open (mkdir on ENOENT), write,
 *                          fsync — one libuv request at a time
 *   file_chunk_finish()    a chunk is written (or failed)
 *   file_batch_complete()  the batch's last chunk finished: report every
 *                          record through host->record_done()
 *
 * Output is appended with O_APPEND, so several runs (and a restart that
 * re-delivers records) add to the same files; nothing is ever truncated.
 */
#include "file.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------ config map
 *
 * The engine validates a pipeline's sink object against this table before
 * init runs, fills in defaults, and prints it in `connectd plugins`.  Keep
 * README.md's options table in step with it.  The keys every sink takes
 * (plugin, name, when, retry) belong to the engine and are not listed. */
static const cd_option file_options[] = {
    {
        .name = "path",
        .type = CD_OPT_STRING,
        .required = 1,
        .description = "Output file path; ${topic} and ${partition} expand per record",
    },
    {
        .name = "fsync",
        .type = CD_OPT_ENUM,
        .default_value = "never",
        .enum_values = "never|batch",
        .description = "batch: fsync each file after each batch's write, before acknowledging",
    },
    {
        .name = "mkdirs",
        .type = CD_OPT_BOOL,
        .default_value = "true",
        .description = "Create missing parent directories when a file is first opened",
    },
    {
        .name = "file_mode",
        .type = CD_OPT_INT,
        .default_value = "420",
        .has_bounds = 1,
        .min = 0,
        .max = 511,
        .description = "Permission bits of new files, in decimal (420 = 0644), before the umask",
    },
    {0},
};

static void file_pump(file_output *f);
static void file_kick(file_ctx *ctx);
static void file_on_housekeeping(uv_timer_t *timer);

/* ---------------------------------------------------------------- buffers */

/* Makes room for `extra` more bytes.  Doubling keeps appends amortised O(1)
 * and, since buffers are reused, a steady stream stops allocating at all. */
static int file_buf_reserve(file_buf *b, size_t extra) {
    if (extra <= b->cap - b->len) return 0;
    if (extra > SIZE_MAX / 2 - b->len) return CD_ERR_NOMEM;
    size_t cap = b->cap ? b->cap : 256;
    while (cap - b->len < extra)
        cap *= 2;
    char *data = realloc(b->data, cap);
    if (data == NULL) return CD_ERR_NOMEM;
    b->data = data;
    b->cap = cap;
    return 0;
}

static int file_buf_append(file_buf *b, const void *p, size_t n) {
    if (file_buf_reserve(b, n) < 0) return CD_ERR_NOMEM;
    memcpy(b->data + b->len, p, n);
    b->len += n;
    return 0;
}

static int file_buf_puts(file_buf *b, const char *s) {
    return file_buf_append(b, s, strlen(s));
}

static void file_buf_free(file_buf *b) {
    free(b->data);
    *b = (file_buf){0};
}

/* ------------------------------------------------------------------- JSON
 *
 * A line needs very little JSON: strings, integers, null, and a value the
 * engine already validated.  A hand-written escaper over a reused buffer is
 * a few dozen lines and allocates nothing per record, which a general JSON
 * library would not give us. */

/* Returns the length (2..4) of the well-formed UTF-8 sequence at s, or 0 if
 * s does not start one.  The ranges are RFC 3629's table: they exclude
 * overlong forms, UTF-16 surrogates (ED A0..BF) and code points above
 * U+10FFFF, none of which a JSON reader accepts. */
static size_t file_utf8_len(const unsigned char *s, size_t n) {
    unsigned char lo = 0x80, hi = 0xBF; /* allowed range of the second byte */
    size_t len;
    if (s[0] >= 0xC2 && s[0] <= 0xDF) {
        len = 2;
    } else if (s[0] >= 0xE0 && s[0] <= 0xEF) {
        len = 3;
        if (s[0] == 0xE0)
            lo = 0xA0;
        else if (s[0] == 0xED)
            hi = 0x9F;
    } else if (s[0] >= 0xF0 && s[0] <= 0xF4) {
        len = 4;
        if (s[0] == 0xF0)
            lo = 0x90;
        else if (s[0] == 0xF4)
            hi = 0x8F;
    } else {
        return 0;
    }
    if (n < len || s[1] < lo || s[1] > hi) return 0;
    for (size_t k = 2; k < len; k++)
        if ((s[k] & 0xC0) != 0x80) return 0;
    return len;
}

static char *file_put_u00(char *o, unsigned char c) {
    static const char hex[] = "0123456789abcdef";
    memcpy(o, "\\u00", 4);
    o[4] = hex[c >> 4];
    o[5] = hex[c & 0xF];
    return o + 6;
}

/* Appends bytes as a JSON string.  Any byte sequence is accepted: valid
 * UTF-8 passes through, and each byte that is not part of a well-formed
 * sequence becomes \u00XX — i.e. it is read as a Latin-1 code point.  That
 * keeps every line valid JSON whatever the producer sent, and loses nothing
 * for a reader that knows the rule (README.md documents it). */
static int file_json_string(file_buf *b, const void *data, size_t n) {
    /* Escaping can grow a byte to six (\u00XX).  Reserving for the worst
     * case of the whole input would make a 1 MiB value ask for 6 MiB, so
     * room is reserved a block at a time (plus three bytes for a UTF-8
     * sequence that straddles the block's end), then filled unchecked. */
    enum { BLOCK = 4096 };
    const unsigned char *s = data;
    size_t i = 0;
    if (file_buf_append(b, "\"", 1) < 0) return CD_ERR_NOMEM;
    while (i < n) {
        size_t step = n - i < BLOCK ? n - i : BLOCK;
        size_t stop = i + step;
        if (file_buf_reserve(b, 6 * step + 3) < 0) return CD_ERR_NOMEM;
        char *o = b->data + b->len;
        while (i < stop) {
            unsigned char c = s[i];
            if (c >= 0x80) {
                size_t k = file_utf8_len(s + i, n - i);
                if (k == 0) {
                    o = file_put_u00(o, c);
                    i++;
                } else {
                    memcpy(o, s + i, k);
                    o += k;
                    i += k;
                }
                continue;
            }
            switch (c) {
            case '"':
            case '\\':
                *o++ = '\\';
                *o++ = (char)c;
                break;
            case '\b':
                memcpy(o, "\\b", 2);
                o += 2;
                break;
            case '\f':
                memcpy(o, "\\f", 2);
                o += 2;
                break;
            case '\n':
                memcpy(o, "\\n", 2);
                o += 2;
                break;
            case '\r':
                memcpy(o, "\\r", 2);
                o += 2;
                break;
            case '\t':
                memcpy(o, "\\t", 2);
                o += 2;
                break;
            default:
                if (c < 0x20)
                    o = file_put_u00(o, c);
                else
                    *o++ = (char)c;
            }
            i++;
        }
        b->len = (size_t)(o - b->data);
    }
    return file_buf_append(b, "\"", 1);
}

static int file_json_is_space(char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* Appends a value the engine validated as one JSON text (value_format json):
 * RFC 8259 and well-formed UTF-8 (engine/jsonscan.c checks both), possibly
 * pretty-printed.  In valid JSON a raw CR or LF can only be whitespace
 * between tokens (inside strings they must be escaped), so turning each into
 * a space keeps the text's meaning and our line one line.  The copy is one
 * memcpy; memchr finds the rare line breaks a vector at a time. */
static int file_json_embed(file_buf *b, const char *text, size_t n) {
    const char *s = text;
    while (n > 0 && file_json_is_space(s[0])) {
        s++;
        n--;
    }
    while (n > 0 && file_json_is_space(s[n - 1]))
        n--;
    /* Empty is not JSON, so the engine should never hand it to us; if it
     * does, null keeps the line parseable instead of corrupting the file. */
    if (n == 0) return file_buf_puts(b, "null");
    if (file_buf_reserve(b, n + 1) < 0) return CD_ERR_NOMEM;
    char *o = b->data + b->len;
    memcpy(o, s, n);
    for (char *p = o, *end = o + n; (p = memchr(p, '\n', (size_t)(end - p))) != NULL; p++)
        *p = ' ';
    for (char *p = o, *end = o + n; (p = memchr(p, '\r', (size_t)(end - p))) != NULL; p++)
        *p = ' ';
    b->len += n;
    return 0;
}

static int file_json_int(file_buf *b, int64_t v) {
    /* Two digits per division (offsets and timestamps have 10-13). */
    static const char pairs[] = "00010203040506070809101112131415161718192021222324"
                                "25262728293031323334353637383940414243444546474849"
                                "50515253545556575859606162636465666768697071727374"
                                "75767778798081828384858687888990919293949596979899";
    char tmp[24], *p = tmp + sizeof(tmp);
    uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    while (u >= 100) {
        unsigned d = (unsigned)(u % 100) * 2;
        u /= 100;
        *--p = pairs[d + 1];
        *--p = pairs[d];
    }
    if (u >= 10) {
        unsigned d = (unsigned)u * 2;
        *--p = pairs[d + 1];
        *--p = pairs[d];
    } else {
        *--p = (char)('0' + u);
    }
    if (v < 0) *--p = '-';
    return file_buf_append(b, p, (size_t)(tmp + sizeof(tmp) - p));
}

/* Appends one record as one line:
 *   {"topic":..,"partition":..,"offset":..,"key":..,"timestamp":..,
 *    "headers":[{"name":..,"value":..},..],"value":..}\n
 * On failure (out of memory) the buffer may hold part of the line: the
 * caller cuts it back to where it was. */
static int file_render_record(file_buf *b, const cd_record *r) {
    if (file_buf_puts(b, "{\"topic\":") < 0 ||
        file_json_string(b, r->topic, strlen(r->topic)) < 0 ||
        file_buf_puts(b, ",\"partition\":") < 0 || file_json_int(b, r->partition) < 0 ||
        file_buf_puts(b, ",\"offset\":") < 0 || file_json_int(b, r->offset) < 0 ||
        file_buf_puts(b, ",\"key\":") < 0)
        return CD_ERR_NOMEM;

    int rc = r->key ? file_json_string(b, r->key, r->key_len) : file_buf_puts(b, "null");
    if (rc < 0 || file_buf_puts(b, ",\"timestamp\":") < 0) return CD_ERR_NOMEM;
    /* Kafka uses -1 for "no timestamp"; any negative value means the same. */
    rc = r->timestamp_ms >= 0 ? file_json_int(b, r->timestamp_ms) : file_buf_puts(b, "null");
    if (rc < 0 || file_buf_puts(b, ",\"headers\":[") < 0) return CD_ERR_NOMEM;

    for (size_t h = 0; h < r->header_count; h++) {
        const cd_header *hd = &r->headers[h];
        if (file_buf_puts(b, h ? ",{\"name\":" : "{\"name\":") < 0 ||
            file_json_string(b, hd->name, strlen(hd->name)) < 0 ||
            file_buf_puts(b, ",\"value\":") < 0)
            return CD_ERR_NOMEM;
        rc = hd->value ? file_json_string(b, hd->value, hd->value_len) : file_buf_puts(b, "null");
        if (rc < 0 || file_buf_puts(b, "}") < 0) return CD_ERR_NOMEM;
    }

    if (file_buf_puts(b, "],\"value\":") < 0) return CD_ERR_NOMEM;
    if (r->value == NULL) /* a tombstone */
        rc = file_buf_puts(b, "null");
    else if (r->value_format == CD_VALUE_JSON)
        rc = file_json_embed(b, r->value, r->value_len);
    else
        rc = file_json_string(b, r->value, r->value_len);
    if (rc < 0 || file_buf_puts(b, "}\n") < 0) return CD_ERR_NOMEM;
    return 0;
}

/* ------------------------------------------------------------------ paths */

/* Renders the record's path into ctx->path_buf (NUL-terminated).  Returns 0,
 * CD_ERR_NOMEM, or CD_ERR_INVALID when the topic cannot be part of a path.
 * Kafka's topic names ([a-zA-Z0-9._-], never "." or "..") are always fine;
 * the check keeps a record from anywhere else from escaping the directory
 * the template names. */
static int file_render_path(file_ctx *ctx, const cd_record *r) {
    file_buf *b = &ctx->path_buf;
    b->len = 0;
    for (size_t i = 0; i < ctx->nsegs; i++) {
        const file_seg *seg = &ctx->segs[i];
        int rc = 0;
        switch (seg->type) {
        case FILE_SEG_LITERAL:
            rc = file_buf_append(b, seg->text, seg->len);
            break;
        case FILE_SEG_TOPIC:
            if (r->topic[0] == '\0' || strcmp(r->topic, ".") == 0 || strcmp(r->topic, "..") == 0 ||
                strchr(r->topic, '/') != NULL)
                return CD_ERR_INVALID;
            rc = file_buf_puts(b, r->topic);
            break;
        case FILE_SEG_PARTITION:
            rc = file_json_int(b, r->partition);
            break;
        }
        if (rc < 0) return rc;
    }
    return file_buf_append(b, "", 1) < 0 ? CD_ERR_NOMEM : 0;
}

/* ----------------------------------------------------------------- metrics */

/* A test host may offer no metrics: metric_register may be absent or return
 * NULL, and the sink works the same without them. */
static void file_metric_add(file_ctx *ctx, cd_metric *m, double v) {
    if (m != NULL && ctx->host->metric_add != NULL) ctx->host->metric_add(m, v);
}

/* ------------------------------------------------------------------ chunks */

/* Takes a chunk from the pool (keeping its buffers' capacity) or allocates
 * one.  The caller owns the result until it is linked into a batch. */
static file_chunk *file_chunk_get(file_ctx *ctx) {
    file_chunk *c = ctx->pool;
    if (c != NULL) {
        ctx->pool = c->next_in_batch;
        ctx->npool--;
    } else {
        c = calloc(1, sizeof(*c));
        if (c == NULL) return NULL;
    }
    c->batch = NULL;
    c->file = NULL;
    c->next_in_file = NULL;
    c->next_in_batch = NULL;
    c->data.len = 0;
    c->written = 0;
    c->nrecords = 0;
    c->outcome = CD_RECORD_OK;
    c->reason[0] = '\0';
    return c;
}

static void file_chunk_free(file_chunk *c) {
    file_buf_free(&c->data);
    free(c->records);
    free(c);
}

/* Takes ownership of c: keeps it for reuse, or frees it. */
static void file_chunk_put(file_ctx *ctx, file_chunk *c) {
    if (ctx->npool >= FILE_CHUNK_POOL_MAX || c->data.cap > FILE_CHUNK_KEEP_BYTES ||
        c->records_cap * sizeof(size_t) > FILE_CHUNK_KEEP_BYTES) {
        file_chunk_free(c);
        return;
    }
    c->next_in_batch = ctx->pool;
    ctx->pool = c;
    ctx->npool++;
}

static int file_chunk_add_record(file_chunk *c, size_t index) {
    if (c->nrecords == c->records_cap) {
        size_t cap = c->records_cap ? c->records_cap * 2 : 16;
        size_t *records = realloc(c->records, cap * sizeof(*records));
        if (records == NULL) return CD_ERR_NOMEM;
        c->records = records;
        c->records_cap = cap;
    }
    c->records[c->nrecords++] = index;
    return 0;
}

/* ----------------------------------------------------------------- batches */

/* Every chunk of the batch has finished: tell the engine about every record,
 * exactly once each, then recycle the chunks.
 *
 * record_done() may call back into us (the engine can hand us the next batch
 * from inside it), so our own bookkeeping is settled before the first call:
 * the batch is off the list and freed, and only the chunks, which nobody
 * else can reach, are read while reporting. */
static void file_batch_complete(file_batch *fb) {
    file_ctx *ctx = fb->ctx;
    cd_batch *batch = fb->batch;
    file_chunk *chunks = fb->chunks;

    if (fb->prev != NULL)
        fb->prev->next = fb->next;
    else
        ctx->batches_head = fb->next;
    if (fb->next != NULL)
        fb->next->prev = fb->prev;
    else
        ctx->batches_tail = fb->prev;
    free(fb);

    for (file_chunk *c = chunks; c != NULL; c = c->next_in_batch) {
        const char *reason = c->outcome == CD_RECORD_OK ? NULL : c->reason;
        for (size_t k = 0; k < c->nrecords; k++)
            ctx->host->record_done(batch, c->records[k], c->outcome, 0, reason);
    }
    /* The engine may have freed `batch` with its last record: from here on
     * it is not touched. */
    while (chunks != NULL) {
        file_chunk *next = chunks->next_in_batch;
        file_chunk_put(ctx, chunks);
        chunks = next;
    }
    /* A flush or stop may have been waiting for this batch. */
    file_kick(ctx);
}

/* Drops one reference (a pending chunk, or write()'s own hold). */
static void file_batch_release(file_batch *fb) {
    if (--fb->pending == 0) file_batch_complete(fb);
}

/* Records the chunk's outcome and releases its batch.  The chunk must be off
 * its file's queue already. */
static void file_chunk_finish(file_chunk *c, cd_outcome outcome, const char *reason) {
    c->outcome = outcome;
    if (reason != NULL) snprintf(c->reason, sizeof(c->reason), "%s", reason);
    file_batch_release(c->batch);
}

/* ------------------------------------------------------------------- files
 *
 * Each file has one uv_fs_t, embedded in its handle, and uses it for one
 * request at a time.  That single slot is what keeps a file's lines in order:
 * chunk N+1 cannot start before chunk N's write (and fsync) came back.  The
 * callbacks recover the handle from the request with file_container_of(). */

/* Finds the open handle for path, or creates one (not yet opened: the first
 * file_pump() opens it).  Either way it becomes the most recently used.  The
 * context owns the handle; the caller only borrows it.  Returns NULL when
 * out of memory. */
static file_output *file_lookup(file_ctx *ctx, const char *path) {
    file_output *f = ctx->files_head;
    /* Consecutive records usually go to the same file: the list's head is
     * the last one used, so most lookups stop at the first comparison. */
    while (f != NULL && strcmp(f->path, path) != 0)
        f = f->lru_next;

    if (f == NULL) {
        size_t len = strlen(path);
        /* One allocation: the handle, its path, and room for `dir`. */
        f = calloc(1, sizeof(*f) + 2 * (len + 1));
        if (f == NULL) return NULL;
        f->ctx = ctx;
        f->fd = -1;
        memcpy(f->path, path, len + 1);
        f->dir = f->path + len + 1;
        ctx->nfiles++;
    } else if (f == ctx->files_head) {
        return f;
    } else {
        /* Unlink, to be pushed back at the front below. */
        f->lru_prev->lru_next = f->lru_next;
        if (f->lru_next != NULL)
            f->lru_next->lru_prev = f->lru_prev;
        else
            ctx->files_tail = f->lru_prev;
    }
    f->lru_prev = NULL;
    f->lru_next = ctx->files_head;
    if (ctx->files_head != NULL)
        ctx->files_head->lru_prev = f;
    else
        ctx->files_tail = f;
    ctx->files_head = f;
    return f;
}

/* Takes f off the list of files (it is about to be closed or freed). */
static void file_unlist(file_output *f) {
    file_ctx *ctx = f->ctx;
    if (f->lru_prev != NULL)
        f->lru_prev->lru_next = f->lru_next;
    else
        ctx->files_head = f->lru_next;
    if (f->lru_next != NULL)
        f->lru_next->lru_prev = f->lru_prev;
    else
        ctx->files_tail = f->lru_prev;
    f->lru_prev = f->lru_next = NULL;
    ctx->nfiles--;
}

static int file_is_idle(const file_output *f) {
    return f->op == FILE_OP_NONE && f->head == NULL;
}

/* The head chunk is done: take it off the queue, release its batch, and
 * move the file on to the next chunk.  The batch goes first so records are
 * acknowledged as early as possible; if that re-enters write() for this same
 * file, write() starts the next chunk itself and our file_pump() below finds
 * the request slot busy and does nothing. */
static void file_head_done(file_output *f, cd_outcome outcome, const char *reason) {
    file_chunk *c = f->head;
    f->head = c->next_in_file;
    if (f->head == NULL) f->tail = NULL;
    c->next_in_file = NULL;
    file_chunk_finish(c, outcome, reason);
    if (file_is_idle(f))
        file_kick(f->ctx); /* maybe close it: over the limit, or stopping */
    else
        file_pump(f);
}

/* Fails every chunk queued on f (the file could not be opened).  The queue
 * is detached first, so a write() re-entering from record_done() starts a
 * fresh queue, which retries the open. */
static void file_fail_queue(file_output *f, const char *reason) {
    file_ctx *ctx = f->ctx;
    ctx->host->log(ctx->inst, CD_LOG_WARN, "%s (records will be retried)", reason);
    file_chunk *c = f->head;
    f->head = f->tail = NULL;
    while (c != NULL) {
        /* `next` belongs to another batch (a batch has one chunk per file)
         * that cannot complete before `next` finishes, so it stays valid. */
        file_chunk *next = c->next_in_file;
        c->next_in_file = NULL;
        file_chunk_finish(c, CD_RECORD_RETRY, reason);
        c = next;
    }
    /* The handle stays listed with fd -1: housekeeping frees it if nothing
     * else comes for this path, or the next batch tries the open again. */
    file_kick(ctx);
}

static void file_after_open(file_output *f, ssize_t result);
static void file_after_mkdir(file_output *f, ssize_t result);
static void file_after_write(file_output *f, ssize_t result);
static void file_after_fsync(file_output *f, ssize_t result);

/* One callback for every request of a handle: find the handle, take the
 * result, release libuv's side of the request (uv_fs_req_cleanup) — and only
 * then act, so the slot is free for the next request. */
static void file_on_fs(uv_fs_t *req) {
    file_output *f = file_container_of(req, file_output, req);
    ssize_t result = req->result;
    file_op op = f->op;
    uv_fs_req_cleanup(req);
    f->op = FILE_OP_NONE;
    switch (op) {
    case FILE_OP_OPEN:
        file_after_open(f, result);
        break;
    case FILE_OP_MKDIR:
        file_after_mkdir(f, result);
        break;
    case FILE_OP_WRITE:
        file_after_write(f, result);
        break;
    case FILE_OP_FSYNC:
        file_after_fsync(f, result);
        break;
    default:
        break; /* close has its own callback: it frees the handle */
    }
}

/* The last callback of a handle's life: the memory goes here, never before
 * libuv is done with the embedded request. */
static void file_on_close(uv_fs_t *req) {
    file_output *f = file_container_of(req, file_output, req);
    file_ctx *ctx = f->ctx;
    if (req->result < 0)
        ctx->host->log(ctx->inst, CD_LOG_WARN, "close %s: %s", f->path,
                       uv_strerror((int)req->result));
    uv_fs_req_cleanup(req);
    free(f);
    ctx->nclosing--;
    file_kick(ctx); /* stop may be waiting for the last close */
}

/* Starting a request can fail synchronously (libuv returns an error and then
 * never calls the callback); each starter below hands such an error to the
 * same after-function the callback would have, so there is one error path. */

static void file_open(file_output *f) {
    file_ctx *ctx = f->ctx;
    f->op = FILE_OP_OPEN;
    /* O_APPEND: every write lands at the end, even with another writer or
     * after a restart.  libuv adds O_CLOEXEC itself. */
    int rc =
        uv_fs_open(ctx->loop, &f->req, f->path, UV_FS_O_WRONLY | UV_FS_O_CREAT | UV_FS_O_APPEND,
                   ctx->file_mode, file_on_fs);
    if (rc < 0) {
        f->op = FILE_OP_NONE;
        file_after_open(f, rc);
    }
}

/* Creates the next missing parent directory of f->path, top down, like
 * `mkdir -p`: one asynchronous uv_fs_mkdir per path component.  An existing
 * directory answers EEXIST, which is fine.  When no component is left, the
 * open is tried again. */
static void file_mkdir_next(file_output *f) {
    file_ctx *ctx = f->ctx;
    size_t n = strlen(f->path);
    size_t i = f->mkdir_pos;
    while (i < n && f->path[i] == '/') /* the root, or "a//b" */
        i++;
    const char *slash = memchr(f->path + i, '/', n - i);
    if (slash == NULL) {
        file_open(f);
        return;
    }
    size_t end = (size_t)(slash - f->path);
    memcpy(f->dir, f->path, end);
    f->dir[end] = '\0';
    f->mkdir_pos = end + 1;
    f->op = FILE_OP_MKDIR;
    /* 0777 and the umask decide, as for mkdir(1). */
    int rc = uv_fs_mkdir(ctx->loop, &f->req, f->dir, 0777, file_on_fs);
    if (rc < 0) {
        f->op = FILE_OP_NONE;
        file_after_mkdir(f, rc);
    }
}

static void file_write_head(file_output *f) {
    file_ctx *ctx = f->ctx;
    file_chunk *c = f->head;
    /* After a failed write the file may end in half a line.  Starting the
     * next write with a newline confines the damage to that one line. */
    static char newline[] = "\n";
    uv_buf_t bufs[2];
    unsigned int nbufs = 0;
    if (f->torn) bufs[nbufs++] = uv_buf_init(newline, 1);
    size_t left = c->data.len - c->written;
    /* uv_buf_t's length is an unsigned int; a bigger chunk simply goes out
     * as several writes (the short-write loop handles it). */
    if (left > (size_t)1 << 30) left = (size_t)1 << 30;
    bufs[nbufs++] = uv_buf_init(c->data.data + c->written, (unsigned int)left);

    f->op = FILE_OP_WRITE;
    int rc = uv_fs_write(ctx->loop, &f->req, f->fd, bufs, nbufs, -1, file_on_fs);
    if (rc < 0) {
        f->op = FILE_OP_NONE;
        file_after_write(f, rc);
    }
}

static void file_fsync(file_output *f) {
    f->op = FILE_OP_FSYNC;
    int rc = uv_fs_fsync(f->ctx->loop, &f->req, f->fd, file_on_fs);
    if (rc < 0) {
        f->op = FILE_OP_NONE;
        file_after_fsync(f, rc);
    }
}

/* Moves a file forward: opens it if needed, else writes the head chunk.
 * Does nothing while a request is in flight (its callback comes back here)
 * or when nothing is queued. */
static void file_pump(file_output *f) {
    if (f->op != FILE_OP_NONE || f->head == NULL) return;
    if (f->fd < 0)
        file_open(f);
    else
        file_write_head(f);
}

static void file_after_open(file_output *f, ssize_t result) {
    file_ctx *ctx = f->ctx;
    if (result >= 0) {
        f->fd = (uv_file)result;
        ctx->host->log(ctx->inst, CD_LOG_DEBUG, "opened %s", f->path);
        file_pump(f);
        return;
    }
    /* A missing parent directory: create the chain once, then try again.
     * Trying the open first means a steady stream never pays for mkdir. */
    if (result == UV_ENOENT && ctx->mkdirs && !f->mkdir_tried) {
        f->mkdir_tried = 1;
        f->mkdir_pos = 0;
        file_mkdir_next(f);
        return;
    }
    /* Let a later batch try mkdir again (the directory may be removed and
     * recreated while we run). */
    f->mkdir_tried = 0;
    char reason[FILE_REASON_MAX];
    snprintf(reason, sizeof(reason), "open %s: %s", f->path, uv_strerror((int)result));
    file_fail_queue(f, reason);
}

static void file_after_mkdir(file_output *f, ssize_t result) {
    if (result == 0 || result == UV_EEXIST) {
        file_mkdir_next(f);
        return;
    }
    f->mkdir_tried = 0;
    char reason[FILE_REASON_MAX];
    snprintf(reason, sizeof(reason), "mkdir %s: %s", f->dir, uv_strerror((int)result));
    file_fail_queue(f, reason);
}

static void file_after_write(file_output *f, ssize_t result) {
    file_ctx *ctx = f->ctx;
    file_chunk *c = f->head;
    /* write(2) on a regular file returns 0 only for 0 bytes asked; treat it
     * as an error rather than loop forever. */
    if (result == 0) result = UV_EIO;
    if (result < 0) {
        if (c->written > 0) f->torn = 1;
        char reason[FILE_REASON_MAX];
        snprintf(reason, sizeof(reason), "write %s: %s", f->path, uv_strerror((int)result));
        ctx->host->log(ctx->inst, CD_LOG_WARN, "%s (records will be retried)", reason);
        file_head_done(f, CD_RECORD_RETRY, reason);
        return;
    }

    file_metric_add(ctx, ctx->m_bytes, (double)result);
    if (f->torn) { /* the separator went out first */
        f->torn = 0;
        result--;
    }
    c->written += (size_t)result;
    /* A short write is legal (a signal, a full disk about to be reported,
     * a chunk over 1 GiB): go on from where it stopped. */
    if (c->written < c->data.len) {
        file_write_head(f);
        return;
    }
    if (ctx->fsync_batch) {
        file_fsync(f);
        return;
    }
    file_head_done(f, CD_RECORD_OK, NULL);
}

static void file_after_fsync(file_output *f, ssize_t result) {
    file_ctx *ctx = f->ctx;
    if (result < 0) {
        /* The bytes are in the file but maybe not on disk: retrying may
         * duplicate lines, which at-least-once allows; acknowledging could
         * lose them, which it does not. */
        char reason[FILE_REASON_MAX];
        snprintf(reason, sizeof(reason), "fsync %s: %s", f->path, uv_strerror((int)result));
        ctx->host->log(ctx->inst, CD_LOG_WARN, "%s (records will be retried)", reason);
        file_head_done(f, CD_RECORD_RETRY, reason);
        return;
    }
    file_metric_add(ctx, ctx->m_fsyncs, 1);
    file_head_done(f, CD_RECORD_OK, NULL);
}

/* Closes an idle file (asynchronously) or, if it never opened, frees it. */
static void file_retire(file_output *f) {
    file_ctx *ctx = f->ctx;
    file_unlist(f);
    if (f->fd < 0) {
        free(f);
        return;
    }
    ctx->nclosing++;
    f->op = FILE_OP_CLOSE;
    int rc = uv_fs_close(ctx->loop, &f->req, f->fd, file_on_close);
    if (rc < 0) {
        /* Nothing to wait for: account and free as the callback would. */
        ctx->host->log(ctx->inst, CD_LOG_WARN, "close %s: %s", f->path, uv_strerror(rc));
        ctx->nclosing--;
        free(f);
    }
}

/* ------------------------------------------------------------ housekeeping
 *
 * Closing idle files, completing flush() and completing stop() all free or
 * call out, so they run from a zero-delay timer: on a fresh stack, after
 * whatever engine call or libuv callback asked for them has returned.  That
 * way no function ever finds the file or batch it is working on freed under
 * it. */

/* Asks for a housekeeping pass on the next loop iteration.  Cheap and
 * idempotent: restarting a pending zero-delay timer just keeps it pending. */
static void file_kick(file_ctx *ctx) {
    if (ctx->started && !uv_is_closing((uv_handle_t *)&ctx->housekeeping))
        uv_timer_start(&ctx->housekeeping, file_on_housekeeping, 0, 0);
}

/* Completes the flush() calls whose batches have all been reported.  Batches
 * complete out of order (their files are independent), so "done up to seq N"
 * means: no batch with seq <= N is left on the list.  With force, completes
 * all of them (stop is finishing and nothing is left in flight). */
static void file_waiters_run(file_ctx *ctx, int force) {
    uint64_t oldest = ctx->batches_head ? ctx->batches_head->seq : UINT64_MAX;
    file_waiter *ready = NULL, **tail = &ready;
    file_waiter **pp = &ctx->waiters;
    while (*pp != NULL) {
        file_waiter *w = *pp;
        if (force || w->upto < oldest) {
            *pp = w->next;
            w->next = NULL;
            *tail = w;
            tail = &w->next;
        } else {
            pp = &w->next;
        }
    }
    /* Call out only after the list is consistent: a callback may flush
     * again. */
    while (ready != NULL) {
        file_waiter *w = ready;
        ready = w->next;
        cd_done_cb cb = w->cb;
        void *opaque = w->opaque;
        free(w);
        cb(opaque, 0);
    }
}

/* The timer's close callback: the context's last libuv resource is gone, so
 * stop is complete.  destroy() may be called from inside stop_cb. */
static void file_on_housekeeping_closed(uv_handle_t *handle) {
    file_ctx *ctx = file_container_of(handle, file_ctx, housekeeping);
    file_waiters_run(ctx, 1);
    cd_done_cb cb = ctx->stop_cb;
    void *opaque = ctx->stop_opaque;
    ctx->stop_cb = NULL;
    ctx->started = 0;
    ctx->host->log(ctx->inst, CD_LOG_DEBUG, "stopped");
    cb(opaque, 0);
}

static void file_on_housekeeping(uv_timer_t *timer) {
    file_ctx *ctx = file_container_of(timer, file_ctx, housekeeping);

    file_waiters_run(ctx, 0);

    /* Walk from the least recently used end.  Idle handles that never
     * opened (their open failed, or their batch was rolled back) are always
     * freed; idle open files are closed while we are over the limit, and
     * all of them once stopping.  A torn file is kept open while we run: its
     * handle is what remembers to start the next write with a newline. */
    file_output *f = ctx->files_tail;
    while (f != NULL) {
        file_output *prev = f->lru_prev;
        if (file_is_idle(f) &&
            (f->fd < 0 || ctx->stopping || (ctx->nfiles > FILE_MAX_OPEN && !f->torn)))
            file_retire(f);
        f = prev;
    }

    /* stop() completes when every batch has been reported, every file is
     * closed, and finally the timer itself is closed. */
    if (ctx->stopping && ctx->batches_head == NULL && ctx->nfiles == 0 && ctx->nclosing == 0)
        uv_close((uv_handle_t *)&ctx->housekeeping, file_on_housekeeping_closed);
}

/* -------------------------------------------------------------- callbacks
 *
 * The six functions the engine calls, in lifecycle order. */

/* init: validate the options and allocate the context.  No I/O here:
 * `connectd validate` runs init on every pipeline without starting anything,
 * and a reload validates the new configuration while the old one is still
 * running. */
static int file_init(const cd_host *host, cd_instance *inst, const cd_config *cfg, void **out,
                     char *errbuf, size_t errlen) {
    /* The engine checks our ABI version; we check its host table, so an
     * engine from another major version is refused by name, not by crash. */
    if (CD_ABI_MAJOR(host->abi_version) != CD_ABI_VERSION_MAJOR) {
        snprintf(errbuf, errlen, "sink-file built for host ABI %u, engine has %u",
                 (unsigned)CD_ABI_VERSION_MAJOR, (unsigned)CD_ABI_MAJOR(host->abi_version));
        return CD_ERR_UNSUPPORTED;
    }

    file_ctx *ctx = NULL;
    int rc = file_conf_create(host, inst, cfg, &ctx, errbuf, errlen);
    if (rc < 0) return rc;
    *out = ctx;
    return 0;
}

/* start: attach to the loop and register metrics.  Nothing is opened yet:
 * files open on first use, since their names depend on the records. */
static int file_start(void *opaque, char *errbuf, size_t errlen) {
    file_ctx *ctx = opaque;
    ctx->loop = ctx->host->loop(ctx->inst);
    if (ctx->loop == NULL) {
        snprintf(errbuf, errlen, "no event loop");
        return CD_ERR_INVALID;
    }
    int rc = uv_timer_init(ctx->loop, &ctx->housekeeping);
    if (rc < 0) {
        snprintf(errbuf, errlen, "uv_timer_init: %s", uv_strerror(rc));
        return CD_ERR_IO;
    }
    /* Metrics are registered here rather than in init, so that validating
     * a configuration (which runs init only) leaves no series behind. */
    const cd_host *host = ctx->host;
    if (host->metric_register != NULL) {
        ctx->m_bytes =
            host->metric_register(ctx->inst, CD_METRIC_COUNTER, "sink_file_bytes_written_total",
                                  "Bytes written to output files");
        ctx->m_fsyncs =
            host->metric_register(ctx->inst, CD_METRIC_COUNTER, "sink_file_fsyncs_total",
                                  "fsync calls completed on output files");
    }
    ctx->started = 1;
    ctx->host->log(ctx->inst, CD_LOG_INFO, "writing to %s (fsync=%s, mkdirs=%s)",
                   ctx->path_template, ctx->fsync_batch ? "batch" : "never",
                   ctx->mkdirs ? "true" : "false");
    return 0;
}

/* Undoes what write() queued before it ran out of memory.  Nothing has been
 * started or reported yet, and each chunk is its file's queue tail (write()
 * appends to tails only), so unqueueing restores the exact previous state. */
static void file_write_rollback(file_ctx *ctx, file_batch *fb) {
    file_chunk *c = fb->chunks;
    while (c != NULL) {
        file_chunk *next = c->next_in_batch;
        file_output *f = c->file;
        if (f != NULL) {
            file_chunk *prev = NULL;
            for (file_chunk *q = f->head; q != c; q = q->next_in_file)
                prev = q;
            f->tail = prev;
            if (prev != NULL)
                prev->next_in_file = NULL;
            else
                f->head = NULL;
        }
        file_chunk_put(ctx, c);
        c = next;
    }
    free(fb);
    file_kick(ctx); /* frees handles created for this batch alone */
}

/* write: take a batch.  Renders every record now (the batch's memory is the
 * engine's, and rendering is cheap), queues the lines per file, starts the
 * files, and returns; records are reported later from libuv callbacks.
 *
 * It works in two phases.  Phase 1 only allocates and renders; if memory
 * runs out it is undone and the batch refused (the engine retries it whole),
 * with no record reported.  Phase 2 cannot fail: the batch is accepted and
 * every record will be reported exactly once. */
static int file_write(void *opaque, cd_batch *batch) {
    file_ctx *ctx = opaque;
    if (!ctx->started || ctx->stopping) return CD_ERR_BUSY;

    file_batch *fb = calloc(1, sizeof(*fb));
    if (fb == NULL) return CD_ERR_NOMEM;
    fb->ctx = ctx;
    fb->batch = batch;

    /* Records whose path cannot be rendered share one chunk that goes to no
     * file and reports FATAL: retrying would fail the same way forever, so
     * the engine should dead-letter them instead. */
    file_chunk *rejected = NULL;

    /* Phase 1: render. */
    for (size_t i = 0; i < batch->count; i++) {
        const cd_record *r = &batch->records[i];
        file_chunk *c;
        int rc = file_render_path(ctx, r);
        if (rc == CD_ERR_INVALID) {
            if (rejected == NULL) {
                rejected = file_chunk_get(ctx);
                if (rejected == NULL) goto nomem;
                rejected->batch = fb;
                rejected->outcome = CD_RECORD_FATAL;
                snprintf(rejected->reason, sizeof(rejected->reason),
                         "path: topic name cannot be used in a file name "
                         "(empty, \".\", \"..\" or containing '/')");
                rejected->next_in_batch = fb->chunks;
                fb->chunks = rejected;
            }
            c = rejected;
        } else if (rc < 0) {
            goto nomem;
        } else {
            file_output *f = file_lookup(ctx, ctx->path_buf.data);
            if (f == NULL) goto nomem;
            /* A batch has one chunk per file.  If this batch already made
             * one for f it is f's tail: nothing else queued since. */
            c = f->tail;
            if (c == NULL || c->batch != fb) {
                c = file_chunk_get(ctx);
                if (c == NULL) goto nomem;
                c->batch = fb;
                c->file = f;
                if (f->tail != NULL)
                    f->tail->next_in_file = c;
                else
                    f->head = c;
                f->tail = c;
                c->next_in_batch = fb->chunks;
                fb->chunks = c;
                fb->pending++;
            }
            size_t mark = c->data.len;
            if (file_render_record(&c->data, r) < 0) {
                c->data.len = mark;
                goto nomem;
            }
        }
        if (file_chunk_add_record(c, i) < 0) goto nomem;
    }

    /* Phase 2: accept.  write() holds one reference on the batch while it
     * starts the files: a start that fails synchronously finishes chunks
     * right here, and the batch must not complete (and be freed) while we
     * are still walking its chunks. */
    fb->seq = ++ctx->batch_seq;
    fb->prev = ctx->batches_tail;
    if (ctx->batches_tail != NULL)
        ctx->batches_tail->next = fb;
    else
        ctx->batches_head = fb;
    ctx->batches_tail = fb;

    fb->pending++;
    for (file_chunk *c = fb->chunks; c != NULL; c = c->next_in_batch)
        if (c->file != NULL) file_pump(c->file);
    if (ctx->nfiles > FILE_MAX_OPEN) file_kick(ctx);
    file_batch_release(fb); /* reports now if nothing went to a file */
    return 0;

nomem:
    ctx->host->log(ctx->inst, CD_LOG_WARN, "out of memory rendering a batch of %zu records",
                   batch->count);
    file_write_rollback(ctx, fb);
    return CD_ERR_NOMEM;
}

static int file_waiter_add(file_ctx *ctx, cd_done_cb cb, void *opaque) {
    file_waiter *w = calloc(1, sizeof(*w));
    if (w == NULL) return CD_ERR_NOMEM;
    w->cb = cb;
    w->opaque = opaque;
    w->upto = ctx->batch_seq;
    w->next = ctx->waiters;
    ctx->waiters = w;
    return 0;
}

/* flush: calls cb once every batch accepted before this call has been
 * written (and fsynced with fsync=batch) and reported.  Later batches do not
 * delay it.  cb always runs from the loop, never from inside flush(). */
static int file_flush(void *opaque, cd_done_cb cb, void *cb_opaque) {
    file_ctx *ctx = opaque;
    if (!ctx->started || ctx->stopping) return CD_ERR_BUSY;
    int rc = file_waiter_add(ctx, cb, cb_opaque);
    if (rc < 0) return rc;
    file_kick(ctx);
    return 0;
}

/* stop: refuse new batches, let the accepted ones finish and be reported,
 * close every file, then call cb exactly once (from the timer's close
 * callback, see file_on_housekeeping_closed). */
static int file_stop(void *opaque, cd_done_cb cb, void *cb_opaque) {
    file_ctx *ctx = opaque;
    if (!ctx->started) return CD_ERR_INVALID;
    if (ctx->stopping) return CD_ERR_BUSY;
    ctx->stopping = 1;
    ctx->stop_cb = cb;
    ctx->stop_opaque = cb_opaque;
    file_kick(ctx);
    return 0;
}

/* destroy: free everything.  The engine calls it after stop completed or
 * after a failed init/start, so libuv holds nothing of ours by now. */
static void file_destroy(void *opaque) {
    file_ctx *ctx = opaque;
    if (ctx == NULL) return;
    if (ctx->started) {
        /* Freeing now would leave libuv with pointers into freed memory;
         * leaking is the lesser harm, and the log says who broke the rule. */
        ctx->host->log(ctx->inst, CD_LOG_ERROR, "destroy called before stop completed; leaking");
        return;
    }
    /* After a completed stop these lists are empty; the loops are for the
     * failed-start path and for clarity about who owns what. */
    while (ctx->files_head != NULL) {
        file_output *f = ctx->files_head;
        file_unlist(f);
        free(f);
    }
    while (ctx->waiters != NULL) {
        file_waiter *w = ctx->waiters;
        ctx->waiters = w->next;
        free(w);
    }
    while (ctx->pool != NULL) {
        file_chunk *c = ctx->pool;
        ctx->pool = c->next_in_batch;
        file_chunk_free(c);
    }
    file_conf_destroy(ctx);
}

/* ------------------------------------------------------------- descriptor
 *
 * What the engine finds when it loads the .so: CD_PLUGIN_DEFINE exports
 * connectd_plugin_entry(), which returns this.  abi_version and struct_size
 * come first so the engine can refuse a plugin built against another ABI
 * before it reads anything else. */
static const cd_sink_ops file_sink_ops = {
    .init = file_init,
    .start = file_start,
    .write = file_write,
    .flush = file_flush,
    .stop = file_stop,
    .destroy = file_destroy,
};

static const cd_plugin_desc file_plugin_desc = {
    .abi_version = CD_ABI_VERSION,
    .struct_size = sizeof(cd_plugin_desc),
    .name = "file",
    .version = "1.0.0",
    .description = "Appends each record as one NDJSON line to files named by a path template",
    .kind = CD_PLUGIN_SINK,
    .options = file_options,
    .sink = &file_sink_ops,
};

CD_PLUGIN_DEFINE(&file_plugin_desc)
