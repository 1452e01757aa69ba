/* The hot-path JSON validator agrees with the grammar (and with jansson). */
#include <criterion/criterion.h>
#include <jansson.h>
#include <string.h>

#include "jsonscan.h"

static int valid(const char *s) {
    return json_validate(s, strlen(s), NULL, 0) == 0;
}

Test(jsonscan, accepts_valid_json) {
    const char *ok[] = {
        "{}",
        "[]",
        " {\"a\" : [1, -2.5e+3, 0, 0.1, true, false, null, \"x\"]} \n",
        "\"\"",
        "0",
        "-0",
        "1E9",
        "{\"nested\":{\"deep\":[[[{}]]]}}",
        "\"\\u00e9\\ud83d\\ude00 \\\" \\\\ \\/ \\b\\f\\n\\r\\t\"",
        "\"h\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80\"",
        "{\"eventId\":\"e-1\",\"customerId\":\"c\",\"data\":{\"status\":\"VERIFIED\"}}",
    };
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++)
        cr_assert(valid(ok[i]), "should be valid: %s", ok[i]);
}

Test(jsonscan, rejects_invalid_json_with_a_reason_and_position) {
    const char *bad[] = {
        "",
        " ",
        "{",
        "}",
        "[1,]",
        "{\"a\":1,}",
        "{\"a\" 1}",
        "{a:1}",
        "01",
        "1.",
        ".5",
        "-",
        "1e",
        "+1",
        "tru",
        "nul",
        "\"abc",
        "\"a\x01\"",
        "\"\\x\"",
        "\"\\u12\"",
        "\"\\ud800\"",
        "\"\\udc00\"",
        "\"\xc0\xaf\"",
        "\"\xed\xa0\x80\"",
        "\"\xf5\x80\x80\x80\"",
        "\"\xe2\x82\"",
        "1 2",
        "{} []",
        "[\"a\"]]",
        "NaN",
        "this is not json {",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        cr_assert_not(valid(bad[i]), "should be invalid: %s", bad[i]);
    char err[128];
    cr_assert_eq(json_validate("[1, 2,]", 7, err, sizeof(err)), -1);
    cr_assert_str_eq(err, "unexpected character at byte 6");
    cr_assert_eq(json_validate("{\"a\":1} x", 9, err, sizeof(err)), -1);
    cr_assert_str_eq(err, "trailing data after the JSON value at byte 8");
}

Test(jsonscan, nesting_is_bounded) {
    char deep[2001];
    memset(deep, '[', 1000);
    memset(deep + 1000, ']', 1000);
    deep[2000] = '\0';
    cr_assert_not(valid(deep));
    cr_assert(valid("[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]"));
}

Test(jsonscan, embedded_nul_is_outside_json) {
    cr_assert_eq(json_validate("{}\0", 3, NULL, 0), -1);
    cr_assert_eq(json_validate("\"a\0b\"", 5, NULL, 0), -1);
}

Test(jsonscan, agrees_with_jansson_on_generated_documents) {
    /* Cut a valid document at every length: each prefix is invalid for
     * both, the whole is valid for both. */
    const char *doc = "{\"a\":[1,2,{\"b\":\"c\\u00e9\"}],\"d\":-1.5e3,\"e\":null}";
    size_t n = strlen(doc);
    for (size_t i = 0; i <= n; i++) {
        json_t *j = json_loadb(doc, i, JSON_DECODE_ANY, NULL);
        int ours = json_validate(doc, i, NULL, 0) == 0;
        cr_assert_eq(ours, j != NULL, "prefix %zu: ours %d jansson %d", i, ours, j != NULL);
        json_decref(j);
    }
}
