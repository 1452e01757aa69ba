/* Engine and pipeline files: every validation error class, exactly as printed. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"

static char dir[64];
static plugin_registry reg;

static void write_file(const char *name, const char *text) {
    char path[256];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    fputs(text, f);
    fclose(f);
}

static void setup(void) {
    snprintf(dir, sizeof(dir), "/tmp/connectd-config-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    char err[512];
    memset(&reg, 0, sizeof(reg));
    cr_assert_eq(plugin_registry_load(&reg, CONNECTD_FIXTURE_DIR "/good_sink.so", err, sizeof(err)),
                 0, "%s", err);
}

static void teardown(void) {
    plugin_registry_free(&reg);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    cr_assert_eq(system(cmd), 0);
}

/* Loads dir/connectd.json plus pipelines; returns the diagnostics. */
static engine_conf *load_all(diag *d) {
    char path[256];
    snprintf(path, sizeof(path), "%s/connectd.json", dir);
    engine_conf *conf = NULL;
    if (engine_conf_load(path, d, &conf) == 0) engine_conf_load_pipelines(conf, &reg, d);
    return conf;
}

static int has_line(const diag *d, const char *suffix) {
    for (size_t i = 0; i < d->count; i++) {
        size_t n = strlen(d->lines[i]), m = strlen(suffix);
        if (n >= m && strcmp(d->lines[i] + n - m, suffix) == 0) return 1;
    }
    return 0;
}

static void dump(const diag *d) {
    for (size_t i = 0; i < d->count; i++)
        fprintf(stderr, "  %s\n", d->lines[i]);
}

#define GOOD_PIPELINE                                                                              \
    "{\"name\":\"kyc-verified\",\"topics\":[\"kyc-verified\"],"                                    \
    "\"sinks\":[{\"plugin\":\"test-good\",\"target\":\"x\"}]}"

TestSuite(config, .init = setup, .fini = teardown);

Test(config, a_valid_setup_loads_with_defaults) {
    setenv("CD_TEST_BOOTSTRAP", "127.0.0.1:1", 1);
    write_file("connectd.json", "{\"kafka\":{\"bootstrap.servers\":\"${CD_TEST_BOOTSTRAP}\","
                                "\"socket.timeout.ms\":10000},\"log_level\":\"warn\"}");
    write_file("kyc.json", GOOD_PIPELINE);
    diag d = {0};
    engine_conf *c = load_all(&d);
    dump(&d);
    cr_assert_eq(d.count, 0);
    cr_assert_eq(c->pipeline_count, 1);
    const pipeline_conf *p = c->pipelines[0];
    cr_assert_str_eq(p->name, "kyc-verified");
    cr_assert_str_eq(p->group_id, "connectd.kyc-verified");
    cr_assert_eq(p->value_format, CD_VALUE_JSON);
    cr_assert_eq(p->tolerance, ERRORS_NONE);
    cr_assert_eq(p->batch.max_records, 500);
    cr_assert_eq(p->sinks[0].retry.max_attempts, 10);
    cr_assert_str_eq(p->sinks[0].name, "test-good");
    cr_assert_str_eq(json_string_value(json_object_get(c->kafka, "bootstrap.servers")),
                     "127.0.0.1:1");
    cr_assert_str_eq(json_string_value(json_object_get(c->kafka, "socket.timeout.ms")), "10000");
    cr_assert_eq(c->commit_interval_ms, 1000);
    engine_conf_free(c);
}

Test(config, sink_retry_overrides_inherit_the_pipeline_policy) {
    write_file("connectd.json", "{}");
    write_file("p.json", "{\"name\":\"p\",\"topics\":[\"t\"],\"retry\":{\"max_attempts\":4,"
                         "\"initial_ms\":50},\"sinks\":[{\"plugin\":\"test-good\",\"target\":\"x\","
                         "\"retry\":{\"initial_ms\":7}}]}");
    diag d = {0};
    engine_conf *c = load_all(&d);
    dump(&d);
    cr_assert_eq(d.count, 0);
    cr_assert_eq(c->pipelines[0]->sinks[0].retry.max_attempts, 4);
    cr_assert_eq(c->pipelines[0]->sinks[0].retry.initial_ms, 7);
    engine_conf_free(c);
}

Test(config, malformed_json_names_line_and_column) {
    write_file("connectd.json", "{}");
    write_file("bad.json", "{\n  \"name\": \"x\",\n  \"topics\": [\"a\",]\n}\n");
    diag d = {0};
    engine_conf *c = load_all(&d);
    cr_assert_eq(d.count, 1);
    char want[256];
    snprintf(want, sizeof(want),
             "%s/bad.json: line 3, column 18: malformed JSON: unexpected token near ']'", dir);
    cr_assert_str_eq(d.lines[0], want);
    engine_conf_free(c);
    diag_free(&d);
}

Test(config, unknown_plugin_unknown_key_wrong_type_bounds_missing) {
    write_file("connectd.json", "{}");
    write_file("p.json", "{\"name\":\"p\",\"topics\":[\"t\"],\"sinks\":["
                         "{\"plugin\":\"dynamo\"},"
                         "{\"plugin\":\"test-good\",\"target\":\"x\",\"colour\":\"red\"},"
                         "{\"plugin\":\"test-good\",\"name\":\"b\",\"target\":3},"
                         "{\"plugin\":\"test-good\",\"name\":\"c\",\"target\":\"x\",\"level\":0},"
                         "{\"plugin\":\"test-good\",\"name\":\"d\"}],"
                         "\"batch\":{\"max_records\":0},\"value_format\":\"xml\",\"extra\":1}");
    diag d = {0};
    engine_conf *c = load_all(&d);
    dump(&d);
    cr_assert(has_line(&d, "p.json: sinks[0].plugin: unknown plugin \"dynamo\""));
    cr_assert(has_line(&d, "p.json: sinks[1].colour: unknown option"));
    cr_assert(has_line(&d, "p.json: sinks[2].target: expected string"));
    cr_assert(has_line(&d, "p.json: sinks[3].level: 0 is out of bounds [1, 9]"));
    cr_assert(has_line(&d, "p.json: sinks[4].target: required option missing"));
    cr_assert(has_line(&d, "p.json: batch.max_records: 0 is out of bounds [1, 100000]"));
    cr_assert(has_line(&d, "p.json: value_format: \"xml\" is not one of json|raw"));
    cr_assert(has_line(&d, "p.json: extra: unknown option"));
    cr_assert_eq(c->pipeline_count, 0);
    engine_conf_free(c);
    diag_free(&d);
}

Test(config, duplicate_pipeline_and_sink_names) {
    write_file("connectd.json", "{}");
    write_file("a.json", GOOD_PIPELINE);
    write_file("b.json", GOOD_PIPELINE);
    write_file("c.json", "{\"name\":\"c\",\"topics\":[\"t\"],\"sinks\":["
                         "{\"plugin\":\"test-good\",\"target\":\"x\"},"
                         "{\"plugin\":\"test-good\",\"target\":\"y\"}]}");
    diag d = {0};
    engine_conf *c = load_all(&d);
    dump(&d);
    char want[512];
    snprintf(want, sizeof(want),
             "b.json: name: duplicate pipeline name \"kyc-verified\" (also in %s/a.json)", dir);
    cr_assert(has_line(&d, want));
    cr_assert(
        has_line(&d, "c.json: sinks[1].name: duplicate sink name \"test-good\" (also sinks[0])"));
    cr_assert_eq(d.count, 2);
    engine_conf_free(c);
    diag_free(&d);
}

Test(config, engine_file_errors) {
    unsetenv("CD_TEST_NOPE");
    write_file("connectd.json", "{\"kafka\":{\"bootstrap.servers\":\"${CD_TEST_NOPE}\","
                                "\"no.such.property\":\"1\",\"acks\":{}},"
                                "\"log_level\":\"loud\",\"shutdown_grace_ms\":-1,\"admin\":1}");
    diag d = {0};
    engine_conf *c = load_all(&d);
    dump(&d);
    cr_assert_null(c);
    cr_assert(has_line(
        &d,
        "connectd.json: kafka.bootstrap.servers: environment variable CD_TEST_NOPE is not set"));
    cr_assert(
        has_line(&d, "connectd.json: log_level: \"loud\" is not one of error|warn|info|debug"));
    cr_assert(has_line(&d, "connectd.json: shutdown_grace_ms: -1 is out of bounds [0, 600000]"));
    cr_assert(has_line(&d, "connectd.json: admin: unknown option"));
    diag_free(&d);
}

Test(config, kafka_properties_are_checked_by_librdkafka) {
    write_file("connectd.json", "{\"kafka\":{\"no.such.property\":\"1\",\"acks\":{}}}");
    diag d = {0};
    engine_conf *c = load_all(&d);
    dump(&d);
    cr_assert_null(c);
    cr_assert(has_line(
        &d, "connectd.json: kafka.no.such.property: not accepted by librdkafka: unknown property"));
    cr_assert(has_line(&d, "connectd.json: kafka.acks: expected a string, number or bool"));
    diag_free(&d);
}

Test(config, sink_pipeline_shape_errors) {
    write_file("connectd.json", "{}");
    write_file("a.json", "{\"name\":\"a\",\"sinks\":[]}");
    write_file("b.json",
               "{\"name\":\"b bad\",\"topics\":[\"t\"],\"sinks\":[{\"plugin\":\"test-good\","
               "\"target\":\"x\",\"when\":{\"path\":\"/x\",\"like\":1}}],"
               "\"errors\":{\"tolerance\":\"none\",\"dead_letter_topic\":\"dlq\"}}");
    write_file("c.json", "{\"name\":\"c\"}");
    diag d = {0};
    engine_conf *c = load_all(&d);
    dump(&d);
    cr_assert(has_line(&d, "a.json: topics: a sink pipeline needs at least one topic"));
    cr_assert(has_line(&d, "a.json: sinks: expected a non-empty array of sinks"));
    cr_assert(has_line(&d, "b.json: name: expected letters, digits, '.', '-' or '_'"));
    cr_assert(has_line(
        &d,
        "b.json: sinks[0].when.like: unknown operator (use eq, ne, in, exists, gt, gte, lt, lte)"));
    cr_assert(has_line(
        &d, "b.json: errors.dead_letter_topic: a dead-letter topic needs \"tolerance\": \"all\""));
    cr_assert(
        has_line(&d, "c.json: a pipeline has either \"sinks\" (with \"topics\") or \"source\""));
    engine_conf_free(c);
    diag_free(&d);
}

Test(config, engine_configs_in_the_directory_are_not_pipelines) {
    write_file("connectd.json", "{}");
    write_file("connectd.aws.json", "{\"kafka\":{}}");
    write_file("p.json", GOOD_PIPELINE);
    mkdir(strcat(strcpy((char[128]){0}, dir), "/schemas"), 0755);
    diag d = {0};
    engine_conf *c = load_all(&d);
    dump(&d);
    cr_assert_eq(d.count, 0);
    cr_assert_eq(c->pipeline_count, 1);
    engine_conf_free(c);
}
