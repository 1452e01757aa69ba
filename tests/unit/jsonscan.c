/* The hot-path JSON validator agrees with the grammar (and with jansson). */
#include <criterion/criterion.h>
#include <jansson.h>
#include <stdint.h>
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

/* The string scan's fast paths (SSE2, SWAR) must judge every input exactly
 * as the byte-by-byte loop does: random strings dense in the bytes that
 * matter (quotes, backslashes, controls, UTF-8 lead and continuation
 * bytes), at every alignment and length around the 8- and 16-byte steps. */
Test(jsonscan, fast_string_scans_agree_with_the_byte_loop) {
    static const unsigned char alphabet[] = {'a',  'Z',  ' ',  '~',  '"',  '\\', 'n',  'u',  '0',
                                             'D',  0x01, 0x1f, 0x7f, 0x80, 0xbf, 0xc3, 0xa9, 0xe2,
                                             0x82, 0xac, 0xf0, 0x9f, 0x98, 0x80, 0xed, 0xff};
    uint64_t x = 0x9E3779B97F4A7C15ULL;
    char buf[80];
    size_t disagreements = 0, valid_seen = 0;
    for (int iter = 0; iter < 200000; iter++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        size_t len = 2 + (size_t)(x % 60);
        buf[0] = '"';
        for (size_t i = 1; i < len - 1; i++) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            /* Mostly plain letters, so runs long enough for the fast paths
             * alternate with the bytes that matter. */
            buf[i] =
                (x & 3) ? (char)('a' + (x >> 8) % 26) : (char)alphabet[(x >> 8) % sizeof(alphabet)];
        }
        buf[len - 1] = '"';
        int r[3];
        char e[3][96];
        for (int mode = 0; mode < 3; mode++) {
            e[mode][0] = '\0';
            jsonscan_set_mode(mode);
            r[mode] = json_validate(buf, len, e[mode], sizeof(e[mode]));
        }
        /* The same string as an object's key and as its value. */
        char obj[2 * sizeof(buf) + 4];
        size_t on = 0;
        obj[on++] = '{';
        memcpy(obj + on, buf, len), on += len;
        obj[on++] = ':';
        memcpy(obj + on, buf, len), on += len;
        obj[on++] = '}';
        int ro[3];
        char eo[3][96];
        for (int mode = 0; mode < 3; mode++) {
            eo[mode][0] = '\0';
            jsonscan_set_mode(mode);
            ro[mode] = json_validate(obj, on, eo[mode], sizeof(eo[mode]));
        }
        cr_assert(ro[0] == ro[2] && ro[1] == ro[2] && strcmp(eo[0], eo[2]) == 0 &&
                      strcmp(eo[1], eo[2]) == 0,
                  "modes disagree on %.*s: %d/%d/%d (%s | %s | %s)", (int)on, obj, ro[0], ro[1],
                  ro[2], eo[0], eo[1], eo[2]);
        jsonscan_set_mode(0);
        valid_seen += r[2] == 0;
        if (r[0] != r[2] || r[1] != r[2] || strcmp(e[0], e[2]) != 0 || strcmp(e[1], e[2]) != 0)
            disagreements++;
        cr_assert_eq(disagreements, 0, "modes disagree on %.*s: %d/%d/%d (%s | %s | %s)", (int)len,
                     buf, r[0], r[1], r[2], e[0], e[1], e[2]);
    }
    cr_assert_gt(valid_seen, 1000, "the generator should also make valid strings");
}
