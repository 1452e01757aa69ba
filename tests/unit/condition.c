/* `when` conditions on sinks. */
#include <criterion/criterion.h>

#include "condition.h"

static json_t *doc;

static void setup(void) {
    doc = json_loads(
        "{\"customerId\":\"c1\",\"data\":{\"status\":\"REJECTED\",\"riskLevel\":\"HIGH\","
        "\"score\":71,\"a/b\":1,\"list\":[\"x\",\"y\"]}}",
        0, NULL);
}
static void teardown(void) {
    json_decref(doc);
}

static int eval(const char *cond) {
    json_t *c = json_loads(cond, 0, NULL);
    cr_assert_not_null(c, "%s", cond);
    diag d = {0};
    cr_assert_eq(condition_check(c, "f", "when", &d), 0, "%s", d.count ? d.lines[0] : "");
    int r = condition_eval(c, doc);
    json_decref(c);
    return r;
}

Test(condition, operators, .init = setup, .fini = teardown) {
    cr_assert(eval("{\"path\":\"/data/riskLevel\",\"eq\":\"HIGH\"}"));
    cr_assert_not(eval("{\"path\":\"/data/riskLevel\",\"eq\":\"LOW\"}"));
    cr_assert(eval("{\"path\":\"/data/status\",\"ne\":\"VERIFIED\"}"));
    cr_assert(eval("{\"path\":\"/data/status\",\"in\":[\"REJECTED\",\"FAILED\"]}"));
    cr_assert(eval("{\"path\":\"/data/missing\",\"exists\":false}"));
    cr_assert(eval("{\"path\":\"/data/score\",\"gte\":70}"));
    cr_assert_not(eval("{\"path\":\"/data/score\",\"lt\":70}"));
    cr_assert(eval("{\"path\":\"/data/a~1b\",\"eq\":1}"));
    cr_assert(eval("{\"path\":\"/data/list/1\",\"eq\":\"y\"}"));
}

Test(condition, combinators, .init = setup, .fini = teardown) {
    /* The compliance alert: not verified, or risk HIGH. */
    cr_assert(eval("{\"any\":[{\"path\":\"/data/status\",\"ne\":\"VERIFIED\"},"
                   "{\"path\":\"/data/riskLevel\",\"eq\":\"HIGH\"}]}"));
    cr_assert_not(eval("{\"all\":[{\"path\":\"/data/status\",\"eq\":\"VERIFIED\"},"
                       "{\"path\":\"/data/riskLevel\",\"eq\":\"HIGH\"}]}"));
    cr_assert(eval("{\"not\":{\"path\":\"/customerId\",\"eq\":\"c2\"}}"));
}

Test(condition, bad_conditions_are_reported_with_path) {
    const char *bad[][2] = {
        {"{\"path\":\"data\",\"eq\":1}",
         "f: when.path: expected a JSON pointer string such as \"/data/status\""},
        {"{\"path\":\"/x\",\"like\":1}",
         "f: when.like: unknown operator (use eq, ne, in, exists, gt, gte, lt, lte)"},
        {"{\"path\":\"/x\"}", "f: when: expected exactly one operator beside \"path\""},
        {"{\"any\":[]}", "f: when.any: expected a non-empty array of conditions, alone"},
        {"{\"all\":[{\"path\":\"/x\",\"gt\":\"1\"}]}", "f: when.all[0].gt: expected a number"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        json_t *c = json_loads(bad[i][0], 0, NULL);
        diag d = {0};
        cr_assert_eq(condition_check(c, "f", "when", &d), 1, "%s", bad[i][0]);
        cr_assert_str_eq(d.lines[0], bad[i][1]);
        diag_free(&d);
        json_decref(c);
    }
}

Test(condition, non_json_document_matches_nothing_positive) {
    json_t *c = json_loads("{\"path\":\"/a\",\"eq\":1}", 0, NULL);
    cr_assert_not(condition_eval(c, NULL));
    json_decref(c);
}
