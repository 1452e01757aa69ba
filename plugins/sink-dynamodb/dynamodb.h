/*
 * sink-dynamodb — the context of one configured DynamoDB sink.
 *
 * Private to the plugin.  The structs:
 *   ddb_ctx    one configured sink: options, compiled templates, the HTTP
 *              pool and batches in flight (plugins/common/inflight.h)
 *   ddb_batch  one batch handed to write(), until every record is reported
 *   ddb_rec    one record's prepared request text and its place in order
 *   ddb_req    one HTTP request in flight (a BatchWriteItem of up to 25
 *              records, or one PutItem/UpdateItem/DeleteItem)
 *
 * Order: records of a batch are split into rounds by their DynamoDB key: the
 * n-th record of a key goes in round n.  Rounds go one after another, so a
 * later record of a key is sent only once the earlier one is answered, and no
 * BatchWriteItem carries one key twice (DynamoDB refuses that).  A key whose
 * record was answered RETRY has its later records answered RETRY unsent.
 */
#ifndef CONNECTD_SINK_DYNAMODB_H
#define CONNECTD_SINK_DYNAMODB_H

#include <connectd/plugin.h>

#include <stddef.h>
#include <stdint.h>

#include "aws_error.h"
#include "dynamodb_attr.h"
#include "inflight.h"

#define DDB_BATCH_MAX_ITEMS 25
#define DDB_BATCH_MAX_BYTES ((size_t)16 * 1024 * 1024)

typedef enum ddb_op {
    DDB_OP_PUT = 0,
    DDB_OP_UPDATE,
    DDB_OP_DELETE,
} ddb_op;

typedef struct ddb_ctx ddb_ctx;
typedef struct ddb_batch ddb_batch;

/* A record's request text and key identity live in its batch's arena (one
 * buffer per batch, no allocation per record), addressed by offset. */
typedef struct ddb_rec {
    size_t body_off, body_len; /* BatchWriteItem: {"PutRequest":...}; else the whole request */
    size_t dkey_off, dkey_len; /* the key's identity (rendered key attributes) */
    uint32_t round;
    unsigned done : 1;     /* reported */
    unsigned has_dkey : 1; /* prepared (a record that failed to render has none) */
} ddb_rec;

struct ddb_batch {
    ddb_ctx *ctx;
    cd_batch *batch; /* borrowed; may be freed by the engine once remaining is 0 */
    size_t count;
    ddb_rec *recs; /* owned, count entries */
    pbuf arena;    /* every record's body and key identity */
    uint32_t round, nrounds;
    size_t requests;  /* requests of the current round in flight */
    size_t remaining; /* records not reported */
    size_t *failed;   /* records whose key was answered RETRY, nfailed entries */
    size_t nfailed;
    inflight_link link; /* in ctx->fl */
};

typedef struct ddb_req {
    ddb_batch *b;
    size_t *idx; /* owned: record indices carried */
    size_t n;
    pbuf body;
} ddb_req;

struct ddb_ctx {
    const cd_host *host;
    cd_instance *inst;

    /* Options. */
    char *table;
    char *region;
    char *url; /* endpoint, owned */
    ddb_op op;
    cd_template *t_item, *t_key, *t_update, *t_cond_values;
    char *condition;
    char *cond_names; /* compact JSON object text or NULL */
    int cond_failed_ok;
    char *ttl_attr;
    char *ttl_json; /* ttl_attr as a JSON string, quotes included (owned) */
    int64_t ttl_seconds;
    size_t max_in_flight;
    uint64_t timeout_ms;
    ddb_types types;
    char **key_attrs;     /* owned */
    size_t *key_attr_len; /* owned: strlen of each */
    size_t nkey_attrs;
    int batched; /* put without condition: BatchWriteItem */

    cd_metric *m_requests, *m_unprocessed, *m_retries;

    /* Runtime: the HTTP pool, batches in flight, stop. */
    inflight fl;

    /* Scratch, reused per record. */
    cd_buf render;
    pbuf tmp, names, values, set, dkey, ttl_member;
};

/* dynamodb_conf.c: options -> context (no I/O) and back. */
int ddb_conf_create(const cd_host *host, cd_instance *inst, const cd_config *cfg, ddb_ctx **out,
                    char *errbuf, size_t errlen);
void ddb_conf_destroy(ddb_ctx *ctx);

#endif /* CONNECTD_SINK_DYNAMODB_H */
