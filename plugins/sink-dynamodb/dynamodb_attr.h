/*
 * sink-dynamodb — rendered JSON to DynamoDB AttributeValues.
 *
 * A pure module (no engine, no loop): it reads the compact JSON a record
 * template rendered and writes DynamoDB's wire form straight from the text,
 * so a number keeps exactly the digits it had ("1.50" stays "1.50", a
 * 30-digit integer is not rounded through a double).  jansson is used only
 * to read the `types` option.  tests/plugins/dynamodb.c compiles this file
 * into a unit test.
 *
 * Mapping: string -> S, number -> N (its text), true/false -> BOOL,
 * null -> NULL, object -> M, array -> L.  A `types` rule overrides the type
 * of the value at a dotted attribute path ("amount", "address.zip", list
 * elements as "tags[]"): S, N, BOOL, SS, NS, M, L, NULL.
 */
#ifndef CONNECTD_SINK_DYNAMODB_ATTR_H
#define CONNECTD_SINK_DYNAMODB_ATTR_H

#include <stddef.h>
#include "buf.h"

typedef enum ddb_type {
    DDB_T_AUTO = 0,
    DDB_T_S,
    DDB_T_N,
    DDB_T_BOOL,
    DDB_T_NULL,
    DDB_T_M,
    DDB_T_L,
    DDB_T_SS,
    DDB_T_NS,
} ddb_type;

typedef struct ddb_type_rule {
    char *path; /* owned */
    ddb_type type;
} ddb_type_rule;

typedef struct ddb_types {
    ddb_type_rule *rules; /* owned, n entries */
    size_t n;
} ddb_types;

/* Parses the `types` option ({"amount": "N", "tags": "SS"}).  Returns 0, or
 * negative with errbuf. */
int ddb_types_parse(const char *json, ddb_types *out, char *errbuf, size_t errlen);
void ddb_types_free(ddb_types *t);

/* Converts one JSON value (text[0..len)) to an AttributeValue appended to
 * out.  path is the dotted path of the value, for `types` (may be ""). */
int ddb_attr_value(const char *text, size_t len, const char *path, const ddb_types *types,
                   pbuf *out, char *errbuf, size_t errlen);

/* Calls cb for each member of the JSON object text[0..len): name is the raw
 * JSON string token (quotes included), value the raw value text.  A non-zero
 * return from cb stops the walk and is returned.  Returns 0, or negative
 * with errbuf when text is not an object. */
typedef int (*ddb_member_cb)(void *opaque, const char *name, size_t name_len, const char *value,
                             size_t value_len);
int ddb_json_members(const char *text, size_t len, ddb_member_cb cb, void *opaque, char *errbuf,
                     size_t errlen);

/* Converts a JSON object to an attribute map ({"name": AttributeValue, ...})
 * appended to out.  extra, when not NULL, is one more member's text
 * ("\"ttl\":{\"N\":\"1\"}") appended inside the braces.  cb, when not
 * NULL, is called with each top-level member's name token and raw value
 * text after it was converted (the key attributes are picked up in the same
 * pass); a non-zero return stops the conversion and is returned.  Returns 0,
 * -1 with errbuf, or what cb returned. */
int ddb_attr_map(const char *text, size_t len, const ddb_types *types, const char *extra, pbuf *out,
                 ddb_member_cb cb, void *opaque, char *errbuf, size_t errlen);

#endif /* CONNECTD_SINK_DYNAMODB_ATTR_H */
