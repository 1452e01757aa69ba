/*
 * sink-dynamodb's AttributeValue mapping (plugins/sink-dynamodb/
 * dynamodb_attr.c), compiled in directly: it is a pure function of the
 * rendered JSON text and the `types` option, so it is tested without an
 * engine or a server.  The integration tests (tests/integration/
 * test_sink_dynamodb.py) cover the plugin itself against moto.
 */
#include <criterion/criterion.h>

#include "../../plugins/sink-dynamodb/dynamodb_attr.c"

static char *map(const char *json, const char *types_json, const char *extra) {
    ddb_types t = {0};
    char err[256];
    cr_assert_eq(ddb_types_parse(types_json, &t, err, sizeof(err)), 0, "%s", err);
    pbuf out = {0};
    int rc = ddb_attr_map(json, strlen(json), &t, extra, &out, NULL, NULL, err, sizeof(err));
    ddb_types_free(&t);
    if (rc < 0) {
        pbuf_free(&out);
        return strdup(err);
    }
    return out.data;
}

#define EXPECT_MAP(json, types, extra, want)                                                       \
    do {                                                                                           \
        char *got_ = map(json, types, extra);                                                      \
        cr_assert_str_eq(got_, want);                                                              \
        free(got_);                                                                                \
    } while (0)

Test(dynamodb_attr, scalars_map_to_s_n_bool_null) {
    EXPECT_MAP("{\"s\":\"x\",\"n\":42,\"t\":true,\"f\":false,\"z\":null}", NULL, NULL,
               "{\"s\":{\"S\":\"x\"},\"n\":{\"N\":\"42\"},\"t\":{\"BOOL\":true},"
               "\"f\":{\"BOOL\":false},\"z\":{\"NULL\":true}}");
}

Test(dynamodb_attr, numbers_keep_their_exact_text) {
    EXPECT_MAP("{\"a\":12.50,\"b\":123456789012345678901234567890,\"c\":-1.5e-7,\"d\":0}", NULL,
               NULL,
               "{\"a\":{\"N\":\"12.50\"},\"b\":{\"N\":\"123456789012345678901234567890\"},"
               "\"c\":{\"N\":\"-1.5e-7\"},\"d\":{\"N\":\"0\"}}");
}

Test(dynamodb_attr, nested_objects_and_arrays_become_m_and_l) {
    EXPECT_MAP("{\"o\":{\"p\":{\"q\":[1,\"two\",[true],{}]}},\"e\":[]}", NULL, NULL,
               "{\"o\":{\"M\":{\"p\":{\"M\":{\"q\":{\"L\":[{\"N\":\"1\"},{\"S\":\"two\"},"
               "{\"L\":[{\"BOOL\":true}]},{\"M\":{}}]}}}}},\"e\":{\"L\":[]}}");
}

Test(dynamodb_attr, strings_keep_their_escapes) {
    EXPECT_MAP("{\"s\":\"a\\\"b\\\\c\\u00e9\\n\"}", NULL, NULL,
               "{\"s\":{\"S\":\"a\\\"b\\\\c\\u00e9\\n\"}}");
}

Test(dynamodb_attr, type_overrides_by_path) {
    EXPECT_MAP("{\"amount\":\"12.50\",\"id\":7,\"tags\":[\"a\",\"b\"],\"ns\":[1,\"2.5\"],"
               "\"addr\":{\"zip\":\"01234\",\"n\":\"5\"},\"flag\":\"true\",\"gone\":{\"x\":1}}",
               "{\"amount\":\"N\",\"id\":\"S\",\"tags\":\"SS\",\"ns\":\"NS\",\"addr.n\":\"N\","
               "\"flag\":\"BOOL\",\"gone\":\"NULL\"}",
               NULL,
               "{\"amount\":{\"N\":\"12.50\"},\"id\":{\"S\":\"7\"},\"tags\":{\"SS\":[\"a\",\"b\"]},"
               "\"ns\":{\"NS\":[\"1\",\"2.5\"]},\"addr\":{\"M\":{\"zip\":{\"S\":\"01234\"},"
               "\"n\":{\"N\":\"5\"}}},\"flag\":{\"BOOL\":true},\"gone\":{\"NULL\":true}}");
}

Test(dynamodb_attr, list_elements_are_typed_with_brackets) {
    EXPECT_MAP("{\"l\":[\"1\",\"2\"]}", "{\"l[]\":\"N\"}", NULL,
               "{\"l\":{\"L\":[{\"N\":\"1\"},{\"N\":\"2\"}]}}");
}

Test(dynamodb_attr, extra_member_is_appended) {
    EXPECT_MAP("{\"a\":1}", NULL, "\"ttl\":{\"N\":\"99\"}",
               "{\"a\":{\"N\":\"1\"},\"ttl\":{\"N\":\"99\"}}");
    EXPECT_MAP("{}", NULL, "\"ttl\":{\"N\":\"99\"}", "{\"ttl\":{\"N\":\"99\"}}");
}

Test(dynamodb_attr, bad_overrides_and_inputs_are_errors_naming_the_path) {
    char *e = map("{\"a\":\"abc\"}", "{\"a\":\"N\"}", NULL);
    cr_assert(strstr(e, "not a number for type N at a") != NULL, "%s", e);
    free(e);
    e = map("{\"t\":[]}", "{\"t\":\"SS\"}", NULL);
    cr_assert(strstr(e, "empty set") != NULL, "%s", e);
    free(e);
    e = map("{\"t\":[1]}", "{\"t\":\"SS\"}", NULL);
    cr_assert(strstr(e, "SS element is not a string") != NULL, "%s", e);
    free(e);
    e = map("[1]", NULL, NULL);
    cr_assert(strstr(e, "must render to a JSON object") != NULL, "%s", e);
    free(e);
    ddb_types t;
    char err[128];
    cr_assert_lt(ddb_types_parse("{\"a\":\"X\"}", &t, err, sizeof(err)), 0);
    cr_assert(strstr(err, "types.a") != NULL, "%s", err);
}

typedef struct seen {
    char names[256];
    char values[256];
} seen;

static int on_member(void *opaque, const char *name, size_t nlen, const char *value, size_t vlen) {
    seen *s = opaque;
    strncat(s->names, name, nlen);
    strcat(s->names, "|");
    strncat(s->values, value, vlen);
    strcat(s->values, "|");
    return 0;
}

Test(dynamodb_attr, members_walk_gives_raw_name_and_value_text) {
    seen s = {{0}, {0}};
    char err[128];
    const char *j = "{\"a\":{\"x\":[1,\"}\"]},\"b\\\"\":\"s\",\"c\":1.0}";
    cr_assert_eq(ddb_json_members(j, strlen(j), on_member, &s, err, sizeof(err)), 0, "%s", err);
    cr_assert_str_eq(s.names, "\"a\"|\"b\\\"\"|\"c\"|");
    cr_assert_str_eq(s.values, "{\"x\":[1,\"}\"]}|\"s\"|1.0|");
}

/* ddb_attr_map reports each top-level member as it converts it (the sink
 * picks up key attributes in the same pass): the raw name token and value
 * text, nested members not reported, and a non-zero return stops it. */
Test(dynamodb_attr, map_reports_top_level_members_in_the_same_pass) {
    seen s = {{0}, {0}};
    char err[128];
    pbuf out = {0};
    const char *j = " { \"a\" : {\"x\":[1,\"}\"]}, \"b\\\"\":\"s\",\"c\":1.0 } ";
    cr_assert_eq(ddb_attr_map(j, strlen(j), NULL, NULL, &out, on_member, &s, err, sizeof(err)), 0,
                 "%s", err);
    cr_assert_str_eq(s.names, "\"a\"|\"b\\\"\"|\"c\"|");
    cr_assert_str_eq(s.values, "{\"x\":[1,\"}\"]}|\"s\"|1.0|");
    cr_assert_str_eq(out.data, "{\"a\":{\"M\":{\"x\":{\"L\":[{\"N\":\"1\"},{\"S\":\"}\"}]}}},"
                               "\"b\\\"\":{\"S\":\"s\"},\"c\":{\"N\":\"1.0\"}}");
    pbuf_free(&out);
}

static int stop_at_b(void *opaque, const char *name, size_t nlen, const char *value, size_t vlen) {
    (void)value;
    (void)vlen;
    ++*(int *)opaque;
    return nlen == 3 && name[1] == 'b' ? 7 : 0;
}

Test(dynamodb_attr, map_stops_with_what_the_member_callback_returned) {
    int calls = 0;
    char err[128];
    pbuf out = {0};
    const char *j = "{\"a\":1,\"b\":2,\"c\":3}";
    cr_assert_eq(ddb_attr_map(j, strlen(j), NULL, NULL, &out, stop_at_b, &calls, err, sizeof(err)),
                 7);
    cr_assert_eq(calls, 2);
    pbuf_free(&out);
}

/* Error paths name the dotted path of the value from the segments kept
 * while walking, with and without `types` rules. */
Test(dynamodb_attr, errors_name_the_nested_path) {
    EXPECT_MAP("{\"a\":{\"b\":[{\"c\":tru}]}}", NULL, NULL,
               "not a JSON value at a.b[].c at offset 16");
    EXPECT_MAP("{\"a\":{\"b\":[{\"c\":\"x\"}]}}", "{\"a.b[].c\":\"N\"}", NULL,
               "not a number for type N at a.b[].c at offset 19");
}

/* The string scan jumps 16 bytes at a time: an escaped quote or backslash
 * at every position of strings around that size is still inside the
 * string, and the text comes out unchanged. */
Test(dynamodb_attr, escapes_at_every_position_of_long_strings_stay_inside) {
    static const char *const escapes[] = {"\\\"", "\\\\", "\\u0022", "\\/"};
    for (size_t e = 0; e < sizeof(escapes) / sizeof(escapes[0]); e++) {
        for (size_t len = 0; len < 40; len++) {
            for (size_t at = 0; at <= len; at++) {
                char str[128] = "";
                size_t n = 0;
                for (size_t i = 0; i < len; i++) {
                    if (i == at) n += (size_t)sprintf(str + n, "%s", escapes[e]);
                    str[n++] = (char)('a' + i % 26);
                }
                if (at == len) n += (size_t)sprintf(str + n, "%s", escapes[e]);
                str[n] = '\0';
                char json[256], want[256];
                snprintf(json, sizeof(json), "{\"k\":\"%s\",\"z\":\"%s\"}", str, str);
                snprintf(want, sizeof(want), "{\"k\":{\"S\":\"%s\"},\"z\":{\"S\":\"%s\"}}", str,
                         str);
                char *got = map(json, NULL, NULL);
                cr_assert_str_eq(got, want, "escape %zu len %zu at %zu", e, len, at);
                free(got);
            }
        }
    }
}
