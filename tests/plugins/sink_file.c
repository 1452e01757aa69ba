/*
 * sink-file, loaded as the engine loads it: the real build/plugins/sink-file.so
 * through the plugin registry, its options through the engine's config map,
 * and the engine's own host table — except record_done, which is replaced by
 * a recorder so each test sees every outcome the sink reports.
 *
 * Each test gets a fresh temporary directory and its own libuv loop, runs the
 * loop until the outcomes it expects have arrived, then stops the sink (the
 * stop callback must come exactly once), destroys it and checks that the loop
 * closes with no live handles.  Output lines are parsed with jansson and
 * checked field by field.
 */
#include <criterion/criterion.h>

#include <dirent.h>
#include <errno.h>
#include <ftw.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "configmap.h"
#include "engine.h"
#include "log.h"
#include "metrics.h"
#include "plugin.h"

#define SINK_FILE_SO CONNECTD_BUILD_PLUGIN_DIR "/sink-file.so"

#define TEST_PIPELINE "test-pipeline"
#define TEST_SINK     "file-out"

/* The largest batch a test hands over. */
#define TB_MAX        16
#define TB_REASON_MAX 512

#define tb_container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

/* A batch as the test engine owns it: the cd_batch the sink sees, its
 * records, and what the recorder learned about each of them. */
typedef struct test_batch {
    cd_batch batch;
    cd_record records[TB_MAX];
    /* When set, the recorder counts this file's complete lines each time a
     * record of the batch is reported, to prove the line was there first. */
    const char *watch_path;

    int calls[TB_MAX];
    cd_outcome outcome[TB_MAX];
    char reason[TB_MAX][TB_REASON_MAX];
    size_t lines_seen[TB_MAX];
    unsigned long seq[TB_MAX]; /* fx.events at the report */
    size_t done;
} test_batch;

/* What one test runs on.  Criterion runs each test in its own process, so
 * one static fixture per process is enough; the .fini hook only removes the
 * temporary directory a failed test may have left. */
typedef struct sink_fixture {
    char dir[64];
    uv_loop_t loop;
    engine eng;
    cd_instance inst;
    cd_host host;
    plugin_registry reg;
    const cd_plugin_desc *desc;
    cd_config *cfg;
    void *ctx;
    char errbuf[512];
    int started;
    int stopped;

    unsigned long events; /* record reports and stop callbacks, in order */
    size_t outcomes;      /* record reports, all batches */
    size_t bad_reports;   /* a second report of a record, or an index out of range */
    int stop_calls;
    int stop_status;
    unsigned long stop_seq; /* fx.events at the stop callback */
    size_t stop_open_fds;   /* descriptors into dir still open at the stop callback */
} sink_fixture;

static sink_fixture fx;

/* ------------------------------------------------------------- helpers */

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    return remove(path);
}

static void remove_tree(const char *dir) {
    if (dir[0] != '\0') nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* Reads a whole file; NULL when it does not exist.  The caller frees. */
static char *read_all(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (f == NULL) return NULL;
    char *buf = NULL;
    size_t n = 0, cap = 0;
    for (;;) {
        if (cap - n < 4096) {
            cap = cap ? cap * 2 : 8192;
            buf = realloc(buf, cap + 1);
            cr_assert_not_null(buf);
        }
        size_t got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (got == 0) break;
    }
    fclose(f);
    buf[n] = '\0';
    *len = n;
    return buf;
}

/* The number of complete ('\n'-terminated) lines in a file; 0 if absent. */
static size_t count_lines(const char *path) {
    size_t len = 0, lines = 0;
    char *buf = read_all(path, &len);
    for (size_t i = 0; buf != NULL && i < len; i++)
        lines += buf[i] == '\n';
    free(buf);
    return lines;
}

/* Parses every line of an NDJSON file into a JSON array (the caller owns
 * it).  The file must end with '\n' and every line must be one JSON object;
 * NUL is allowed because the sink writes \u0000 for a NUL byte. */
static json_t *read_lines(const char *path) {
    size_t len = 0;
    char *buf = read_all(path, &len);
    cr_assert_not_null(buf, "%s does not exist", path);
    cr_assert(len > 0 && buf[len - 1] == '\n', "%s must end with a newline", path);
    json_t *lines = json_array();
    size_t start = 0;
    for (size_t i = 0; i < len; i++) {
        if (buf[i] != '\n') continue;
        json_error_t jerr;
        json_t *obj = json_loadb(buf + start, i - start, JSON_ALLOW_NUL, &jerr);
        cr_assert_not_null(obj, "%s line %zu does not parse: %s: %.*s", path,
                           json_array_size(lines) + 1, jerr.text, (int)(i - start), buf + start);
        cr_assert(json_is_object(obj));
        json_array_append_new(lines, obj);
        start = i + 1;
    }
    free(buf);
    return lines;
}

/* Counts the open descriptors of this process whose target lies under dir. */
static size_t open_fds_under(const char *dir) {
    DIR *d = opendir("/proc/self/fd");
    cr_assert_not_null(d);
    size_t n = 0, dlen = strlen(dir);
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        char link[PATH_MAX], target[PATH_MAX];
        snprintf(link, sizeof(link), "/proc/self/fd/%s", e->d_name);
        ssize_t l = readlink(link, target, sizeof(target) - 1);
        if (l < 0) continue;
        target[l] = '\0';
        if (strncmp(target, dir, dlen) == 0 && target[dlen] == '/') n++;
    }
    closedir(d);
    return n;
}

/* Counts the entries (files and directories, recursively) under dir. */
static size_t tree_count;
static int count_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    if (ftw->level > 0) tree_count++;
    return 0;
}
static size_t entries_under(const char *dir) {
    tree_count = 0;
    cr_assert_eq(nftw(dir, count_entry, 16, FTW_PHYS), 0);
    return tree_count;
}

/* dir + "/" + rel into out. */
static void fx_path(char *out, size_t outlen, const char *rel) {
    int n = snprintf(out, outlen, "%s/%s", fx.dir, rel);
    cr_assert(n > 0 && (size_t)n < outlen);
}

/* The value of the sink's sample of `name` in the engine's Prometheus text
 * (labelled with our pipeline and sink), or -1 when there is none. */
static double fx_metric(const char *name) {
    char *text = metrics_render(&fx.eng.metrics);
    cr_assert_not_null(text);
    char sample[256];
    snprintf(sample, sizeof(sample), "\n%s{pipeline=\"%s\",sink=\"%s\"} ", name, TEST_PIPELINE,
             TEST_SINK);
    const char *at = strstr(text, sample);
    double v = at ? strtod(at + strlen(sample), NULL) : -1;
    free(text);
    return v;
}

/* ----------------------------------------------------------- test host */

/* The test's record_done: checks the report is the record's first, keeps
 * the outcome and reason, and counts the watched file's lines. */
static void test_record_done(cd_batch *batch, size_t index, cd_outcome outcome,
                             int64_t retry_after_ms, const char *reason) {
    test_batch *tb = tb_container_of(batch, test_batch, batch);
    if (index >= batch->count || tb->calls[index]++ > 0) {
        fx.bad_reports++;
        return;
    }
    tb->outcome[index] = outcome;
    snprintf(tb->reason[index], sizeof(tb->reason[index]), "%s", reason ? reason : "");
    if (tb->watch_path != NULL) tb->lines_seen[index] = count_lines(tb->watch_path);
    tb->seq[index] = ++fx.events;
    tb->done++;
    fx.outcomes++;
}

static void test_on_stop(void *opaque, int status) {
    sink_fixture *f = opaque;
    f->stop_calls++;
    f->stop_status = status;
    f->stop_seq = ++f->events;
    f->stop_open_fds = open_fds_under(f->dir);
}

static void fx_remove_dir(void) {
    remove_tree(fx.dir);
    fx.dir[0] = '\0';
}

/* Per test: a temporary directory, a loop, an engine with nothing but the
 * loop and an empty metrics registry, the loaded plugin, an instance, and
 * the engine's host table with our recorder in place of record_done. */
static void fx_setup(void) {
    memset(&fx, 0, sizeof(fx));
    log_set_level(CD_LOG_WARN);
    snprintf(fx.dir, sizeof(fx.dir), "/tmp/connectd-sink-file-XXXXXX");
    cr_assert_not_null(mkdtemp(fx.dir), "mkdtemp: %s", strerror(errno));

    cr_assert_eq(uv_loop_init(&fx.loop), 0);
    fx.eng.loop = &fx.loop;

    char err[512];
    cr_assert_eq(plugin_registry_load(&fx.reg, SINK_FILE_SO, err, sizeof(err)), 0, "%s: %s",
                 SINK_FILE_SO, err);
    const plugin *p = plugin_find(&fx.reg, "file");
    cr_assert_not_null(p);
    cr_assert_eq(p->desc->kind, CD_PLUGIN_SINK);
    fx.desc = p->desc;

    instance_init(&fx.inst, &fx.eng, NULL, TEST_PIPELINE, TEST_SINK);
    fx.host = engine_host;
    fx.host.record_done = test_record_done;
}

TestSuite(sink_file, .init = fx_setup, .fini = fx_remove_dir, .timeout = 60);

/* Validates the sink object (a pipeline file's sinks[0]; stolen) with the
 * engine's config map, then runs the plugin's init.  Returns init's result;
 * errbuf is in fx.errbuf. */
static int fx_init(json_t *sink) {
    static const char *const engine_keys[] = {"plugin", "name", "when", "retry", NULL};
    cr_assert_not_null(sink);
    diag d = {0};
    int nerr =
        configmap_apply(fx.desc->options, sink, engine_keys, "test.json", "sinks[0]", &d, &fx.cfg);
    cr_assert_eq(nerr, 0, "%s", d.count ? d.lines[0] : "?");
    diag_free(&d);
    json_decref(sink);
    fx.errbuf[0] = '\0';
    return fx.desc->sink->init(&fx.host, &fx.inst, fx.cfg, &fx.ctx, fx.errbuf, sizeof(fx.errbuf));
}

/* Configures the sink with `path` (relative to the test directory) and the
 * given fsync mode, and starts it. */
static void fx_start(const char *rel_path, const char *fsync_mode) {
    char path[PATH_MAX];
    fx_path(path, sizeof(path), rel_path);
    int rc =
        fx_init(json_pack("{s:s, s:s, s:s}", "plugin", "file", "path", path, "fsync", fsync_mode));
    cr_assert_eq(rc, 0, "init: %s", fx.errbuf);
    cr_assert_not_null(fx.ctx);
    rc = fx.desc->sink->start(fx.ctx, fx.errbuf, sizeof(fx.errbuf));
    cr_assert_eq(rc, 0, "start: %s", fx.errbuf);
    fx.started = 1;
}

/* Runs the loop until `want` record reports have arrived in total. */
static void fx_run_until_outcomes(size_t want) {
    while (fx.outcomes < want && uv_run(&fx.loop, UV_RUN_ONCE) != 0)
        ;
    cr_assert_eq(fx.outcomes, want, "the loop ran dry after %zu of %zu reports", fx.outcomes, want);
}

/* Hands a batch to the sink; the batch must be taken. */
static void fx_write(test_batch *tb, size_t count) {
    cr_assert(count <= TB_MAX);
    tb->batch.count = count;
    tb->batch.records = tb->records;
    cr_assert_eq(fx.desc->sink->write(fx.ctx, &tb->batch), 0);
}

/* Stops the sink and runs the loop dry: the stop callback comes once, with
 * status 0. */
static void fx_stop(void) {
    cr_assert_eq(fx.desc->sink->stop(fx.ctx, test_on_stop, &fx), 0);
    uv_run(&fx.loop, UV_RUN_DEFAULT);
    cr_assert_eq(fx.stop_calls, 1);
    cr_assert_eq(fx.stop_status, 0);
    fx.stopped = 1;
}

/* Stops the sink if it runs, destroys it, frees what the test host owns,
 * and checks the loop closes with no live handles. */
static void fx_teardown(void) {
    if (fx.started && !fx.stopped) fx_stop();
    /* Nothing may arrive after stop completed. */
    uv_run(&fx.loop, UV_RUN_DEFAULT);
    cr_assert(fx.stop_calls <= 1, "stop callback came %d times", fx.stop_calls);
    if (fx.ctx != NULL) fx.desc->sink->destroy(fx.ctx);
    fx.ctx = NULL;
    configmap_free(fx.cfg);
    fx.cfg = NULL;
    /* instance_release unregisters the instance's metrics from the
     * registry, so it goes before the registry itself is freed. */
    instance_release(&fx.inst);
    metrics_free(&fx.eng.metrics);
    plugin_registry_free(&fx.reg);
    cr_assert_eq(uv_loop_close(&fx.loop), 0, "the loop still has live handles or requests");
    cr_assert_eq(fx.bad_reports, 0, "a record was reported twice or out of range");
    fx_remove_dir();
}

/* A record with a JSON value, no key, no headers. */
static cd_record json_record(const char *topic, int32_t partition, int64_t offset,
                             const char *value) {
    return (cd_record){
        .topic = topic,
        .partition = partition,
        .offset = offset,
        .timestamp_ms = 1000 + offset,
        .value = value,
        .value_len = strlen(value),
        .value_format = CD_VALUE_JSON,
    };
}

/* Writes one batch to the single file `rel_path`, runs the loop until every
 * record is reported, checks each was OK, and returns the file's lines. */
static json_t *write_and_read(test_batch *tb, size_t count, const char *rel_path) {
    char path[PATH_MAX];
    fx_path(path, sizeof(path), rel_path);
    size_t before = fx.outcomes;
    fx_write(tb, count);
    fx_run_until_outcomes(before + count);
    for (size_t i = 0; i < count; i++)
        cr_assert_eq(tb->outcome[i], CD_RECORD_OK, "record %zu: %s", i, tb->reason[i]);
    json_t *lines = read_lines(path);
    cr_assert_eq(json_array_size(lines), count);
    return lines;
}

static const char *str_member(const json_t *obj, const char *name) {
    const json_t *v = json_object_get(obj, name);
    cr_assert(json_is_string(v), "\"%s\" is not a string", name);
    return json_string_value(v);
}

static json_int_t int_member(const json_t *obj, const char *name) {
    const json_t *v = json_object_get(obj, name);
    cr_assert(json_is_integer(v), "\"%s\" is not an integer", name);
    return json_integer_value(v);
}

/* The string member `name` equals the bytes s[0..n) (which may hold NUL). */
static void assert_str_bytes(const json_t *obj, const char *name, const char *s, size_t n) {
    const json_t *v = json_object_get(obj, name);
    cr_assert(json_is_string(v), "\"%s\" is not a string", name);
    cr_assert_eq(json_string_length(v), n, "\"%s\" has %zu bytes, want %zu", name,
                 json_string_length(v), n);
    cr_assert(memcmp(json_string_value(v), s, n) == 0, "\"%s\" differs", name);
}

/* The member `value` equals the JSON text `want`. */
static void assert_value_json(const json_t *line, const char *want) {
    json_t *w = json_loads(want, JSON_DECODE_ANY, NULL);
    cr_assert_not_null(w, "test JSON must parse: %s", want);
    cr_assert(json_equal(json_object_get(line, "value"), w), "value differs from %s", want);
    json_decref(w);
}

/* -------------------------------------------------------------- tests */

Test(sink_file, every_record_is_acknowledged_ok_once_after_its_line_is_in_the_file) {
    char path[PATH_MAX];
    fx_path(path, sizeof(path), "out.ndjson");
    fx_start("out.ndjson", "never");

    static test_batch tb;
    static const char *const values[] = {"{\"n\":0}", "{\"n\":1}", "{\"n\":2}", "{\"n\":3}",
                                         "{\"n\":4}"};
    for (size_t i = 0; i < 5; i++)
        tb.records[i] = json_record("orders", 0, 100 + (int64_t)i, values[i]);
    tb.watch_path = path;
    fx_write(&tb, 5);
    /* Nothing is reported from inside write(): the lines are not out yet. */
    cr_assert_eq(fx.outcomes, 0);

    fx_run_until_outcomes(5);
    for (size_t i = 0; i < 5; i++) {
        cr_assert_eq(tb.calls[i], 1, "record %zu reported %d times", i, tb.calls[i]);
        cr_assert_eq(tb.outcome[i], CD_RECORD_OK, "record %zu: %s", i, tb.reason[i]);
        cr_assert_str_empty(tb.reason[i]);
        cr_assert_eq(tb.lines_seen[i], 5, "record %zu reported with %zu of 5 lines in the file", i,
                     tb.lines_seen[i]);
    }
    json_t *lines = read_lines(path);
    cr_assert_eq(json_array_size(lines), 5);
    for (size_t i = 0; i < 5; i++)
        cr_assert_eq(int_member(json_array_get(lines, i), "offset"), 100 + (json_int_t)i);
    json_decref(lines);

    fx_teardown();
    for (size_t i = 0; i < 5; i++)
        cr_assert_eq(tb.calls[i], 1, "record %zu reported again after stop", i);
}

Test(sink_file, line_has_topic_partition_offset_key_timestamp_headers_value_in_order) {
    fx_start("fmt.ndjson", "never");
    static test_batch tb;
    static const cd_header headers[] = {
        {.name = "traceparent", .value = "00-ab", .value_len = 5},
        {.name = "null-header", .value = NULL, .value_len = 0},
    };
    tb.records[0] = (cd_record){
        .topic = "kyc-verified",
        .partition = 2,
        .offset = 41,
        .timestamp_ms = 1700000000000LL,
        .key = "c-1001",
        .key_len = 6,
        .value = "{\"customerId\":\"c-1001\",\"data\":{\"status\":\"VERIFIED\"}}",
        .value_len = strlen("{\"customerId\":\"c-1001\",\"data\":{\"status\":\"VERIFIED\"}}"),
        .headers = headers,
        .header_count = 2,
        .value_format = CD_VALUE_JSON,
    };
    /* No key, no timestamp (-1), no headers. */
    tb.records[1] = (cd_record){
        .topic = "kyc-verified",
        .partition = 2,
        .offset = 9007199254740993LL,
        .timestamp_ms = -1,
        .value = "42",
        .value_len = 2,
        .value_format = CD_VALUE_JSON,
    };
    /* An empty key is a key: "" rather than null. */
    tb.records[2] = json_record("kyc-verified", 2, 43, "true");
    tb.records[2].key = "";
    tb.records[2].key_len = 0;
    tb.records[2].timestamp_ms = 0;

    json_t *lines = write_and_read(&tb, 3, "fmt.ndjson");
    static const char *const order[] = {"topic",     "partition", "offset", "key",
                                        "timestamp", "headers",   "value"};
    for (size_t l = 0; l < 3; l++) {
        const json_t *line = json_array_get(lines, l);
        cr_assert_eq(json_object_size(line), 7);
        size_t k = 0;
        const char *name;
        json_t *member;
        json_object_foreach((json_t *)line, name, member) {
            cr_assert(k < 7);
            cr_assert_str_eq(name, order[k], "line %zu member %zu", l, k);
            cr_assert_not_null(member);
            k++;
        }
    }

    const json_t *a = json_array_get(lines, 0);
    cr_assert_str_eq(str_member(a, "topic"), "kyc-verified");
    cr_assert_eq(int_member(a, "partition"), 2);
    cr_assert_eq(int_member(a, "offset"), 41);
    cr_assert_str_eq(str_member(a, "key"), "c-1001");
    cr_assert_eq(int_member(a, "timestamp"), 1700000000000LL);
    const json_t *hs = json_object_get(a, "headers");
    cr_assert(json_is_array(hs));
    cr_assert_eq(json_array_size(hs), 2);
    cr_assert_eq(json_object_size(json_array_get(hs, 0)), 2);
    cr_assert_str_eq(str_member(json_array_get(hs, 0), "name"), "traceparent");
    cr_assert_str_eq(str_member(json_array_get(hs, 0), "value"), "00-ab");
    cr_assert_eq(json_object_size(json_array_get(hs, 1)), 2);
    cr_assert_str_eq(str_member(json_array_get(hs, 1), "name"), "null-header");
    cr_assert(json_is_null(json_object_get(json_array_get(hs, 1), "value")));
    /* Embedded as JSON, not as a string holding JSON. */
    assert_value_json(a, "{\"customerId\":\"c-1001\",\"data\":{\"status\":\"VERIFIED\"}}");

    const json_t *b = json_array_get(lines, 1);
    cr_assert_eq(int_member(b, "offset"), 9007199254740993LL);
    cr_assert(json_is_null(json_object_get(b, "key")));
    cr_assert(json_is_null(json_object_get(b, "timestamp")));
    cr_assert(json_is_array(json_object_get(b, "headers")));
    cr_assert_eq(json_array_size(json_object_get(b, "headers")), 0);
    assert_value_json(b, "42");

    const json_t *c = json_array_get(lines, 2);
    cr_assert_str_eq(str_member(c, "key"), "");
    cr_assert_eq(int_member(c, "timestamp"), 0);
    assert_value_json(c, "true");

    json_decref(lines);
    fx_teardown();
}

Test(sink_file, pretty_printed_json_value_is_embedded_on_one_line) {
    char path[PATH_MAX];
    fx_path(path, sizeof(path), "pretty.ndjson");
    fx_start("pretty.ndjson", "never");
    /* CRLF and LF between tokens, an escaped \n inside a string, blank
     * lines around the text. */
    static const char pretty[] = "\n  {\n    \"a\": 1,\r\n    \"list\": [\n      true,\n"
                                 "      null,\n      \"x\\ny\"\n    ],\n"
                                 "    \"nested\": {\"k\": \"v\"}\n  }\n\n";
    static const char array[] = "  [1, 2, {\"x\": null}]  \n";
    static const char string[] = "\"just a string\"";
    static test_batch tb;
    tb.records[0] = json_record("t", 0, 0, pretty);
    tb.records[1] = json_record("t", 0, 1, array);
    tb.records[2] = json_record("t", 0, 2, string);

    json_t *lines = write_and_read(&tb, 3, "pretty.ndjson");
    assert_value_json(json_array_get(lines, 0), pretty);
    assert_value_json(json_array_get(lines, 1), array);
    assert_value_json(json_array_get(lines, 2), string);
    json_decref(lines);

    /* Three records, three lines: no raw CR or LF survived inside a line. */
    size_t len = 0;
    char *text = read_all(path, &len);
    cr_assert_not_null(text);
    cr_assert_null(memchr(text, '\r', len));
    cr_assert_eq(count_lines(path), 3);
    free(text);
    fx_teardown();
}

Test(sink_file, raw_value_is_a_string_with_control_chars_escaped_and_bad_utf8_as_u00xx) {
    char path[PATH_MAX];
    fx_path(path, sizeof(path), "raw.ndjson");
    fx_start("raw.ndjson", "never");
    /* Control characters, quote and backslash, a valid two-byte sequence
     * (é), and a byte that is never UTF-8 (0xff). */
    static const char raw[] = "ctl\x01\x1f\t\n\r\b\f\"\\ \xc3\xa9 \xff end";
    /* The README's example key: fe 00 6b. */
    static const char key[] = "\xfe\x00k";
    static const char hval[] = "\x00\xff\xc3\xa9";
    static const cd_header headers[] = {
        {.name = "bin", .value = hval, .value_len = sizeof(hval) - 1},
    };
    static test_batch tb;
    tb.records[0] = (cd_record){
        .topic = "t",
        .partition = 0,
        .offset = 1,
        .timestamp_ms = -1,
        .value = raw,
        .value_len = sizeof(raw) - 1,
        .value_format = CD_VALUE_RAW,
    };
    tb.records[1] = (cd_record){
        .topic = "t",
        .partition = 0,
        .offset = 2,
        .timestamp_ms = 5,
        .key = key,
        .key_len = sizeof(key) - 1,
        .value = "{\"not\": \"parsed\"}",
        .value_len = strlen("{\"not\": \"parsed\"}"),
        .headers = headers,
        .header_count = 1,
        .value_format = CD_VALUE_RAW,
    };

    json_t *lines = write_and_read(&tb, 2, "raw.ndjson");
    /* Decoded: each invalid byte is the Latin-1 code point of the same
     * number (0xff -> U+00FF, "\xc3\xbf" in UTF-8). */
    static const char raw_decoded[] = "ctl\x01\x1f\t\n\r\b\f\"\\ \xc3\xa9 \xc3\xbf end";
    assert_str_bytes(json_array_get(lines, 0), "value", raw_decoded, sizeof(raw_decoded) - 1);
    static const char key_decoded[] = "\xc3\xbe\x00k";
    assert_str_bytes(json_array_get(lines, 1), "key", key_decoded, sizeof(key_decoded) - 1);
    const json_t *h = json_array_get(json_object_get(json_array_get(lines, 1), "headers"), 0);
    static const char hval_decoded[] = "\x00\xc3\xbf\xc3\xa9";
    assert_str_bytes(h, "value", hval_decoded, sizeof(hval_decoded) - 1);
    /* A raw value is a string even when it happens to be JSON. */
    cr_assert_str_eq(str_member(json_array_get(lines, 1), "value"), "{\"not\": \"parsed\"}");
    json_decref(lines);

    /* And the exact spelling: short escapes where JSON has them, \u00XX for
     * the other controls and for bytes that are not UTF-8, UTF-8 as is. */
    size_t len = 0;
    char *text = read_all(path, &len);
    cr_assert_not_null(text);
    char *nl = strchr(text, '\n');
    cr_assert_not_null(nl);
    *nl = '\0';
    cr_assert_str_eq(text, "{\"topic\":\"t\",\"partition\":0,\"offset\":1,\"key\":null,"
                           "\"timestamp\":null,\"headers\":[],\"value\":"
                           "\"ctl\\u0001\\u001f\\t\\n\\r\\b\\f\\\"\\\\ \xc3\xa9 \\u00ff end\"}");
    cr_assert_not_null(strstr(nl + 1, "\"key\":\"\\u00fe\\u0000k\""), "%s", nl + 1);
    cr_assert_not_null(strstr(nl + 1, "\"value\":\"\\u0000\\u00ff\xc3\xa9\""), "%s", nl + 1);
    free(text);
    fx_teardown();
}

Test(sink_file, tombstone_value_is_null) {
    fx_start("tomb.ndjson", "never");
    static test_batch tb;
    tb.records[0] = (cd_record){
        .topic = "t",
        .partition = 0,
        .offset = 7,
        .timestamp_ms = 3,
        .key = "gone",
        .key_len = 4,
        .value_format = CD_VALUE_JSON,
    };
    tb.records[1] = tb.records[0];
    tb.records[1].offset = 8;
    tb.records[1].value_format = CD_VALUE_RAW;

    json_t *lines = write_and_read(&tb, 2, "tomb.ndjson");
    for (size_t i = 0; i < 2; i++) {
        const json_t *line = json_array_get(lines, i);
        cr_assert_not_null(json_object_get(line, "value"), "line %zu has no value member", i);
        cr_assert(json_is_null(json_object_get(line, "value")), "line %zu", i);
        cr_assert_str_eq(str_member(line, "key"), "gone");
        cr_assert_eq(int_member(line, "offset"), 7 + (json_int_t)i);
    }
    json_decref(lines);
    fx_teardown();
}

/* The offsets of one output file, in line order, each line's topic and
 * partition checked. */
static void assert_file_offsets(const char *rel, const char *topic, int partition,
                                const json_int_t *offsets, size_t n) {
    char path[PATH_MAX];
    fx_path(path, sizeof(path), rel);
    json_t *lines = read_lines(path);
    cr_assert_eq(json_array_size(lines), n, "%s has %zu lines, want %zu", rel,
                 json_array_size(lines), n);
    for (size_t i = 0; i < n; i++) {
        const json_t *line = json_array_get(lines, i);
        cr_assert_str_eq(str_member(line, "topic"), topic, "%s line %zu", rel, i);
        cr_assert_eq(int_member(line, "partition"), partition, "%s line %zu", rel, i);
        cr_assert_eq(int_member(line, "offset"), offsets[i], "%s line %zu", rel, i);
    }
    json_decref(lines);
}

Test(sink_file, path_template_splits_records_by_topic_and_partition_in_offset_order) {
    fx_start("${topic}/p${partition}.ndjson", "never");
    static test_batch tb;
    /* Interleaved as a consumer would hand them over: partitions mixed, each
     * partition's records in offset order. */
    tb.records[0] = json_record("orders", 0, 10, "{}");
    tb.records[1] = json_record("payments", 1, 5, "{}");
    tb.records[2] = json_record("orders", 1, 3, "{}");
    tb.records[3] = json_record("orders", 0, 11, "{}");
    tb.records[4] = json_record("payments", 1, 6, "{}");
    tb.records[5] = json_record("orders", 0, 12, "{}");
    tb.records[6] = json_record("orders", 1, 4, "{}");
    tb.records[7] = json_record("payments", 1, 7, "{}");
    fx_write(&tb, 8);
    fx_run_until_outcomes(8);
    for (size_t i = 0; i < 8; i++)
        cr_assert_eq(tb.outcome[i], CD_RECORD_OK, "record %zu: %s", i, tb.reason[i]);

    static const json_int_t orders0[] = {10, 11, 12};
    static const json_int_t orders1[] = {3, 4};
    static const json_int_t payments1[] = {5, 6, 7};
    assert_file_offsets("orders/p0.ndjson", "orders", 0, orders0, 3);
    assert_file_offsets("orders/p1.ndjson", "orders", 1, orders1, 2);
    assert_file_offsets("payments/p1.ndjson", "payments", 1, payments1, 3);
    /* Two directories and three files, nothing else. */
    cr_assert_eq(entries_under(fx.dir), 5);
    fx_teardown();
}

Test(sink_file, batches_written_back_to_back_keep_their_order_in_one_file) {
    char path[PATH_MAX];
    fx_path(path, sizeof(path), "seq.ndjson");
    fx_start("seq.ndjson", "never");
    static test_batch tbs[3];
    static const size_t sizes[3] = {4, 1, 6};
    static const char *const values[] = {"0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10"};
    int64_t offset = 0;
    for (size_t b = 0; b < 3; b++) {
        for (size_t i = 0; i < sizes[b]; i++, offset++)
            tbs[b].records[i] = json_record("t", 0, offset, values[offset]);
        tbs[b].watch_path = path;
    }
    /* All three are taken before the loop runs once. */
    for (size_t b = 0; b < 3; b++)
        fx_write(&tbs[b], sizes[b]);
    cr_assert_eq(fx.outcomes, 0);
    fx_run_until_outcomes(11);

    size_t through = 0;
    for (size_t b = 0; b < 3; b++) {
        through += sizes[b];
        for (size_t i = 0; i < sizes[b]; i++) {
            cr_assert_eq(tbs[b].outcome[i], CD_RECORD_OK, "batch %zu record %zu", b, i);
            cr_assert(tbs[b].lines_seen[i] >= through,
                      "batch %zu record %zu reported with %zu lines in the file, want %zu", b, i,
                      tbs[b].lines_seen[i], through);
        }
    }
    json_t *lines = read_lines(path);
    cr_assert_eq(json_array_size(lines), 11);
    for (size_t i = 0; i < 11; i++) {
        const json_t *line = json_array_get(lines, i);
        cr_assert_eq(int_member(line, "offset"), (json_int_t)i, "line %zu", i);
        cr_assert_eq(json_integer_value(json_object_get(line, "value")), (json_int_t)i);
    }
    json_decref(lines);
    fx_teardown();
}

Test(sink_file, fsync_batch_acknowledges_ok_and_counts_fsyncs) {
    char path[PATH_MAX];
    fx_path(path, sizeof(path), "durable.ndjson");
    fx_start("durable.ndjson", "batch");
    /* Registered by start, at zero. */
    cr_assert_eq(fx_metric("sink_file_fsyncs_total"), 0);
    cr_assert_eq(fx_metric("sink_file_bytes_written_total"), 0);

    static test_batch tbs[2];
    tbs[0].records[0] = json_record("t", 0, 0, "{\"a\":1}");
    tbs[0].records[1] = json_record("t", 0, 1, "{\"a\":2}");
    tbs[1].records[0] = json_record("t", 0, 2, "{\"a\":3}");
    tbs[0].watch_path = tbs[1].watch_path = path;
    fx_write(&tbs[0], 2);
    fx_write(&tbs[1], 1);
    fx_run_until_outcomes(3);
    cr_assert_eq(tbs[0].outcome[0], CD_RECORD_OK, "%s", tbs[0].reason[0]);
    cr_assert_eq(tbs[0].outcome[1], CD_RECORD_OK, "%s", tbs[0].reason[1]);
    cr_assert_eq(tbs[1].outcome[0], CD_RECORD_OK, "%s", tbs[1].reason[0]);
    cr_assert(tbs[0].lines_seen[1] >= 2);
    cr_assert(tbs[1].lines_seen[0] >= 3);

    /* One fsync per batch and file; every byte of the file counted. */
    cr_assert_eq(fx_metric("sink_file_fsyncs_total"), 2);
    struct stat st;
    cr_assert_eq(stat(path, &st), 0);
    cr_assert_eq(fx_metric("sink_file_bytes_written_total"), (double)st.st_size);
    cr_assert_eq(count_lines(path), 3);
    fx_teardown();
}

Test(sink_file, unwritable_path_retries_every_record_with_a_reason_naming_the_path) {
    /* A path through a regular file can be neither opened nor created. */
    char afile[PATH_MAX], path[PATH_MAX];
    fx_path(afile, sizeof(afile), "afile");
    fx_path(path, sizeof(path), "afile/x.ndjson");
    FILE *f = fopen(afile, "w");
    cr_assert_not_null(f);
    fputs("not a directory\n", f);
    fclose(f);
    log_set_level(CD_LOG_ERROR); /* the sink warns about the failure; expected */

    fx_start("afile/x.ndjson", "never");
    static test_batch tb;
    for (size_t i = 0; i < 3; i++)
        tb.records[i] = json_record("t", 0, (int64_t)i, "{}");
    fx_write(&tb, 3);
    fx_run_until_outcomes(3);
    for (size_t i = 0; i < 3; i++) {
        cr_assert_eq(tb.calls[i], 1);
        cr_assert_eq(tb.outcome[i], CD_RECORD_RETRY, "record %zu outcome %d", i,
                     (int)tb.outcome[i]);
        cr_assert_not_null(strstr(tb.reason[i], path), "reason \"%s\" does not name %s",
                           tb.reason[i], path);
    }
    /* The file in the way is untouched. */
    size_t len = 0;
    char *text = read_all(afile, &len);
    cr_assert_not_null(text);
    cr_assert_str_eq(text, "not a directory\n");
    free(text);
    fx_teardown();
}

Test(sink_file, init_rejects_an_unknown_template_variable_naming_path) {
    char path[PATH_MAX];
    fx_path(path, sizeof(path), "out/${topic}-${nope}.ndjson");
    /* The config map has no opinion on templates: the plugin must refuse. */
    int rc = fx_init(json_pack("{s:s, s:s}", "plugin", "file", "path", path));
    cr_assert_eq(rc, CD_ERR_INVALID, "init returned %d", rc);
    cr_assert_null(fx.ctx);
    cr_assert(strncmp(fx.errbuf, "path: ", 6) == 0, "errbuf: %s", fx.errbuf);
    cr_assert_not_null(strstr(fx.errbuf, "${nope}"), "errbuf: %s", fx.errbuf);
    cr_assert_eq(entries_under(fx.dir), 0);
    fx_teardown();
}

Test(sink_file, init_creates_nothing_on_disk) {
    char path[PATH_MAX];
    fx_path(path, sizeof(path), "sub/dir/${topic}/p${partition}.ndjson");
    int rc = fx_init(json_pack("{s:s, s:s, s:s, s:b}", "plugin", "file", "path", path, "fsync",
                               "batch", "mkdirs", 1));
    cr_assert_eq(rc, 0, "init: %s", fx.errbuf);
    cr_assert_not_null(fx.ctx);
    /* Validation runs init alone: no file, no directory, no metric. */
    cr_assert_eq(entries_under(fx.dir), 0);
    cr_assert_null(fx.eng.metrics.head);
    fx_teardown();
}

Test(sink_file, stop_with_a_batch_in_flight_finishes_it_then_calls_back_once) {
    char path[PATH_MAX];
    fx_path(path, sizeof(path), "stop.ndjson");
    fx_start("stop.ndjson", "batch");
    static test_batch tb, late;
    for (size_t i = 0; i < 4; i++)
        tb.records[i] = json_record("t", 0, (int64_t)i, "{}");
    tb.watch_path = path;
    fx_write(&tb, 4);
    cr_assert_eq(fx.desc->sink->stop(fx.ctx, test_on_stop, &fx), 0);
    /* Neither the batch nor the stop completes from inside the calls. */
    cr_assert_eq(fx.outcomes, 0);
    cr_assert_eq(fx.stop_calls, 0);
    /* A stopping sink takes no more batches (and so reports none of them). */
    late.records[0] = json_record("t", 0, 4, "{}");
    late.batch.count = 1;
    late.batch.records = late.records;
    cr_assert_lt(fx.desc->sink->write(fx.ctx, &late.batch), 0);

    uv_run(&fx.loop, UV_RUN_DEFAULT);
    cr_assert_eq(fx.stop_calls, 1);
    cr_assert_eq(fx.stop_status, 0);
    fx.stopped = 1;
    for (size_t i = 0; i < 4; i++) {
        cr_assert_eq(tb.outcome[i], CD_RECORD_OK, "record %zu: %s", i, tb.reason[i]);
        cr_assert_eq(tb.lines_seen[i], 4);
        cr_assert_lt(tb.seq[i], fx.stop_seq, "record %zu reported after the stop callback", i);
    }
    cr_assert_eq(late.calls[0], 0);
    /* Stop closed every file before it called back. */
    cr_assert_eq(fx.stop_open_fds, 0);
    cr_assert_eq(count_lines(path), 4);
    fx_teardown();
    cr_assert_eq(fx.stop_calls, 1);
}

/* Integers are written two digits at a time: every digit count, both sides
 * of each power of ten, and the extremes come out as the same number. */
Test(sink_file, partitions_offsets_and_timestamps_keep_every_digit) {
    fx_start("ints.ndjson", "never");
    static test_batch tb;
    static const int64_t offsets[] = {0,
                                      1,
                                      9,
                                      10,
                                      11,
                                      99,
                                      100,
                                      101,
                                      999,
                                      1000,
                                      12345,
                                      99999,
                                      100000,
                                      9007199254740993LL,
                                      INT64_MAX - 1,
                                      INT64_MAX};
    size_t n = sizeof(offsets) / sizeof(offsets[0]);
    cr_assert_leq(n, TB_MAX);
    for (size_t i = 0; i < n; i++) {
        /* json_record's timestamp is 1000 + offset: set both afterwards,
         * so INT64_MAX does not overflow. */
        tb.records[i] = json_record("ints", (int32_t)(i * 7), 0, "1");
        tb.records[i].offset = offsets[i];
        tb.records[i].timestamp_ms = offsets[i];
    }
    json_t *lines = write_and_read(&tb, n, "ints.ndjson");
    for (size_t i = 0; i < n; i++) {
        const json_t *l = json_array_get(lines, i);
        cr_assert_eq(int_member(l, "offset"), offsets[i], "offset %zu", i);
        cr_assert_eq(int_member(l, "timestamp"), offsets[i], "timestamp %zu", i);
        cr_assert_eq(int_member(l, "partition"), (int64_t)(i * 7), "partition %zu", i);
    }
    json_decref(lines);
    fx_teardown();
}
