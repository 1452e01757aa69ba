/*
 * sink-sns — the context of one configured SNS sink, and the pure pieces
 * (form encoding, XML answers, request planning, the outcome of a
 * PublishBatch entry) that sns_proto.c implements and tests/plugins/sns.c
 * tests directly.  A whole request's error answer is classified by
 * plugins/common/aws_error.h.
 *
 * Private to the plugin.  The structs:
 *   sns_ctx    one configured sink: options, compiled templates, the HTTP
 *              pool and batches in flight (plugins/common/inflight.h)
 *   sns_batch  one batch handed to write(), until every record is reported
 *   sns_rec    one record: its encoded request parameters, order identity,
 *              dedupe key and state
 *   sns_req    one HTTP request in flight (Publish, or PublishBatch of up
 *              to 10 entries)
 *
 * Order: records are numbered into rounds by their order identity (the
 * Kafka key; on a FIFO topic the message group id): the n-th record of a
 * key goes in round n.  Rounds go one after another, so a later record of a
 * key is published only once the earlier one is answered; a key answered
 * RETRY has its later records answered RETRY unsent.
 */
#ifndef CONNECTD_SINK_SNS_H
#define CONNECTD_SINK_SNS_H

#include <connectd/plugin.h>
#include "buf.h"

#include <stddef.h>
#include <stdint.h>

#include "aws_error.h"
#include "inflight.h"

/* SNS limits: a message (body + attributes) and a PublishBatch's total
 * payload are at most 256 KiB; a PublishBatch holds at most 10 entries. */
#define SNS_MAX_MESSAGE_BYTES ((size_t)262144)
#define SNS_BATCH_MAX_ENTRIES 10
#define SNS_BATCH_MAX_BYTES   ((size_t)262144)

/* Buffers: pbuf (plugins/common/buf.h). */

/* ------------------------------------------------------------ form (query)
 * application/x-www-form-urlencoded as AWS's query protocol wants it: every
 * byte but RFC 3986's unreserved ones (A-Z a-z 0-9 - . _ ~) as %XX. */
int sns_form_encode(pbuf *out, const char *s, size_t n);
/* Appends "&" (unless out is empty), prefix, name, "=", the encoded value. */
int sns_form_param(pbuf *out, const char *prefix, const char *name, const char *value, size_t vlen);
/* Standard base64 (with padding) of n bytes. */
int sns_base64(pbuf *out, const void *p, size_t n);

/* ------------------------------------------------------------ XML answers */
typedef enum sns_xml_kind {
    SNS_XML_UNKNOWN = 0,
    SNS_XML_PUBLISH, /* PublishResponse */
    SNS_XML_BATCH,   /* PublishBatchResponse */
    SNS_XML_ERROR,   /* ErrorResponse: read by aws_error_classify_xml */
} sns_xml_kind;

typedef struct sns_entry_result {
    char id[96];
    int ok; /* under Successful */
    char message_id[128];
    char code[128];
    char message[512];
    int sender_fault;
} sns_entry_result;

/* Up to this many entries are kept; more are counted in extra_entries. */
#define SNS_XML_MAX_ENTRIES 16

typedef struct sns_response {
    sns_xml_kind kind;
    char message_id[128]; /* Publish */
    sns_entry_result entries[SNS_XML_MAX_ENTRIES];
    size_t nentries;
    size_t extra_entries;
} sns_response;

/* Parses an SNS answer with expat.  Returns 0, or negative with err
 * ("XML: line 1: not well-formed (invalid token)") for a body that is not
 * XML; *out holds what was read either way. */
int sns_xml_parse(const char *body, size_t len, sns_response *out, char *err, size_t errlen);

/* --------------------------------------------------------- classification
 * One failed PublishBatch entry: its code's outcome (aws_error.h), and
 * SenderFault false (SNS's side failed) is retried too. */
cd_outcome sns_classify_entry(const sns_entry_result *e, aws_error *out);

/* -------------------------------------------------------------- planning
 * How many of the next entries (sizes[0..n), message + attributes bytes)
 * go into one PublishBatch: at most max_entries and max_bytes in total, at
 * least one. */
size_t sns_plan_next(const size_t *sizes, size_t n, size_t max_entries, size_t max_bytes);

/* Parses a duration: "24h", "90m", "30s", "500ms", "off", or a JSON integer
 * of milliseconds (json is the option's JSON text).  Returns 0 and *ms (0:
 * off), or negative with err. */
int sns_parse_duration(const char *json, int64_t *ms, char *err, size_t errlen);

/* -------------------------------------------------------------- the sink */
typedef enum sns_attr_type {
    SNS_ATTR_STRING = 0,
    SNS_ATTR_NUMBER,
    SNS_ATTR_BINARY,
    SNS_ATTR_STRING_ARRAY,
} sns_attr_type;

typedef struct sns_attr {
    char *name; /* owned */
    sns_attr_type type;
    cd_template *value;
} sns_attr;

typedef struct sns_ctx sns_ctx;
typedef struct sns_batch sns_batch;

enum {
    SNS_REC_PENDING = 0,
    SNS_REC_CHECKING, /* EXISTS in flight */
    SNS_REC_SENT,     /* in a request */
    SNS_REC_SETTING,  /* published; SET in flight */
    SNS_REC_DONE,
};

typedef struct sns_rec {
    sns_batch *b;
    size_t frag_off, frag_len; /* encoded parameters, '&'-joined, in b->frags */
    size_t okey_off, okey_len; /* order identity in b->strs */
    size_t dkey_off, dkey_len; /* Redis dedupe key in b->strs */
    size_t size;               /* message + attributes bytes */
    uint32_t round;
    size_t dup_of; /* index + 1 of an earlier record with the same dedupe key, or 0 */
    uint8_t state;
    uint8_t outcome;  /* once DONE */
    uint8_t has_okey; /* 0: the record is its own key */
    uint8_t dedupe;   /* SET the dedupe key once published */
} sns_rec;

struct sns_batch {
    sns_ctx *ctx;
    cd_batch *batch; /* borrowed; may be freed by the engine once remaining is 0 */
    size_t count;
    sns_rec *recs; /* owned, count entries */
    pbuf frags, strs;
    uint32_t round, nrounds;
    size_t pending;   /* Redis commands and requests in flight */
    size_t remaining; /* records not reported */
    size_t *failed;   /* indices of records whose key was answered RETRY */
    size_t nfailed;
    size_t *order, *sizes; /* scratch of one round: record indices and sizes */
    inflight_link link;    /* in ctx->fl */
};

typedef struct sns_req {
    sns_batch *b;
    size_t n;
    size_t idx[SNS_BATCH_MAX_ENTRIES];
    int batched; /* PublishBatch */
} sns_req;

struct sns_ctx {
    const cd_host *host;
    cd_instance *inst;

    /* Options. */
    char *topic_arn;
    char *region;
    char *url;
    int fifo;
    cd_template *t_subject, *t_message, *t_group, *t_dedup_id, *t_dedupe_key;
    sns_attr *attrs;
    size_t nattrs;
    int64_t dedupe_window_ms; /* 0: off (always 0 on a FIFO topic) */
    char *dedupe_prefix;      /* "{prefix}{pipeline}/{sink}:" */
    int redis_error_publish;  /* on_redis_error: publish */
    size_t max_in_flight;
    uint64_t timeout_ms;
    int batched;
    char window_text[32]; /* PX argument */

    cd_metric *m_requests, *m_published, *m_suppressed, *m_redis_errors, *m_retries;

    /* Runtime: the HTTP pool, batches in flight, stop. */
    inflight fl;
    size_t redis_pending;  /* start's PING */
    uint64_t redis_log_at; /* rate limit of Redis warnings */
    uint64_t redis_log_skipped;

    /* Scratch, reused per record / request. */
    sns_response *resp; /* owned: the answer being read */
    cd_buf render;
    pbuf tmp, body;
};

/* sns_conf.c: options -> context (no I/O) and back. */
int sns_conf_create(const cd_host *host, cd_instance *inst, const cd_config *cfg, sns_ctx **out,
                    char *errbuf, size_t errlen);
void sns_conf_destroy(sns_ctx *ctx);

#endif /* CONNECTD_SINK_SNS_H */
