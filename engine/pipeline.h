/*
 * Pipelines at run time.  A sink pipeline owns one Kafka consumer (its own
 * consumer group), the sink instances, and per assigned partition an offset
 * window and one lane per sink.  Records of a partition go to each sink in
 * offset order, in batches bounded by records, bytes and linger time, one
 * batch in flight per sink and partition.  The committed offset of a
 * partition is the window's watermark: never past a record some sink has not
 * acknowledged.  A source pipeline owns one source instance.
 */
#ifndef CONNECTD_PIPELINE_H
#define CONNECTD_PIPELINE_H

#include "engine.h"

typedef enum pipeline_state {
    PIPELINE_STARTING = 0,
    PIPELINE_RUNNING,
    PIPELINE_PAUSED,
    PIPELINE_FAILED,
    PIPELINE_DRAINING,
    PIPELINE_STOPPED,
} pipeline_state;

const char *pipeline_state_name(pipeline_state s);

/* Creates a pipeline for pc (borrowed: must outlive the pipeline). */
pipeline *pipeline_new(engine *e, const pipeline_conf *pc);
/* Initialises and starts the sinks (or source), then the consumer.
 * Returns 0 or negative with errbuf naming the sink and reason. */
int pipeline_start(pipeline *pl, char *errbuf, size_t errlen);
/* Drains: stops fetching, lets in-flight batches finish, commits, closes the
 * consumer, stops the plugins; then calls engine_pipeline_stopped. */
void pipeline_stop(pipeline *pl);
/* Grace period over: commit what is done and close without waiting. */
void pipeline_force_stop(pipeline *pl);
void pipeline_free(pipeline *pl);

pipeline_state pipeline_get_state(const pipeline *pl);
int pipeline_is_source(const pipeline *pl);
/* A source pipeline's record went to the producer: its records_in. */
void pipeline_count_produced(pipeline *pl);
const char *pipeline_name(const pipeline *pl);
/* Pause / resume fetching of every partition (admin API). */
void pipeline_pause(pipeline *pl);
void pipeline_resume(pipeline *pl);

/* A JSON description for the admin API: state (and reason), sinks with
 * their counters, partitions with committed offset, watermark, in-flight
 * records, lag and pause state.  Caller owns the result. */
json_t *pipeline_describe(const pipeline *pl);

/* Host table entry: a sink reports one record's outcome. */
void pipeline_record_done(cd_batch *batch, size_t index, cd_outcome outcome, int64_t retry_after_ms,
                          const char *reason);

/* Full-jitter exponential backoff for attempt n (1 = first retry), with a
 * server hint taking precedence when larger. */
int64_t pipeline_backoff_ms(const retry_policy *r, int64_t attempt, int64_t hint_ms,
                            uint32_t random);

#endif
