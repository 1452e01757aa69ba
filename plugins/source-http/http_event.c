/*
 * source-http — the check of one event: valid (produce it, with this key
 * and eventId), 400 (and why), or 503 (no randomness for an eventId).
 *
 * The fast path (http_scan.c) goes first; what it cannot prove valid is
 * decided here by the reference, which parses the event with jansson and
 * walks the tree (http_schema.c).  The reference is the definition: its
 * order of checks is the order of the README's "What 400 checks", and every
 * error text a client sees comes from it.
 */
#include "http_schema.h"

#include <stdio.h>
#include <string.h>

static void http_verdict_fail(http_verdict *v, int status, const char *error, const char *field) {
    v->status = status;
    snprintf(v->error, sizeof(v->error), "%s", error);
    v->field = field;
}

void http_event_check_reference(const json_t *schema, const http_pointer *key, int batch,
                                const char *text, size_t len, http_id_fn gen, void *opaque,
                                http_verdict *v) {
    v->status = 0;
    v->field_null = 0;
    v->field = NULL;
    v->error[0] = '\0';
    v->fast = 0;
    v->key = NULL;
    v->keylen = 0;
    v->event_id = NULL;
    v->event_id_len = 0;
    v->assigned = 0;
    json_error_t jerr;
    json_t *doc = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    v->doc = doc;
    if (doc == NULL) {
        if (batch)
            snprintf(v->error, sizeof(v->error), "invalid JSON at column %d: %s", jerr.column,
                     jerr.text);
        else
            snprintf(v->error, sizeof(v->error), "invalid JSON at line %d, column %d: %s",
                     jerr.line, jerr.column, jerr.text);
        v->status = 400;
        v->field_null = 1;
        return;
    }
    if (!json_is_object(doc)) {
        http_verdict_fail(v, 400, "an event must be a JSON object", "");
        return;
    }

    /* The eventId: the client's, or a fresh one, before the schema sees the
     * event (so a schema may require it). */
    const json_t *idv = json_object_get(doc, "eventId");
    if (idv == NULL) {
        if (gen(opaque, v->id_buf) < 0) {
            http_verdict_fail(v, 503, "cannot generate an eventId (no randomness); send one", NULL);
            return;
        }
        json_object_set_new(doc, "eventId", json_string(v->id_buf));
        v->event_id = v->id_buf;
        v->event_id_len = strlen(v->id_buf);
        v->assigned = 1;
    } else if (!json_is_string(idv)) {
        http_verdict_fail(v, 400, "must be a string (a UUID)", "/eventId");
        return;
    } else if (json_string_length(idv) == 0 || json_string_length(idv) > HTTP_EVENT_ID_MAX) {
        http_verdict_fail(v, 400, "must be 1 to 128 bytes long (a UUID)", "/eventId");
        return;
    } else {
        v->event_id = json_string_value(idv);
        v->event_id_len = json_string_length(idv);
    }

    http_problem pr;
    if (http_schema_validate(schema, doc, &pr) < 0) {
        v->status = 400;
        snprintf(v->error, sizeof(v->error), "%s", pr.error);
        memcpy(v->field_buf, pr.field, sizeof(v->field_buf));
        v->field = v->field_buf;
        return;
    }

    /* The key: a string as is, a number as its text. */
    const json_t *k = http_pointer_get(key, doc);
    if (json_is_string(k)) {
        v->key = json_string_value(k);
        v->keylen = json_string_length(k);
    } else if (json_is_integer(k)) {
        v->keylen = (size_t)snprintf(v->num_buf, sizeof(v->num_buf), "%" JSON_INTEGER_FORMAT,
                                     json_integer_value(k));
        v->key = v->num_buf;
    } else if (json_is_real(k)) {
        v->keylen = (size_t)snprintf(v->num_buf, sizeof(v->num_buf), "%.17g", json_real_value(k));
        v->key = v->num_buf;
    }
    if (k == NULL) {
        http_verdict_fail(v, 400, "the Kafka key field is missing", key->text);
        return;
    }
    if (v->key == NULL) {
        http_verdict_fail(v, 400, "the Kafka key must be a string or a number", key->text);
        return;
    }
    if (v->keylen == 0) {
        http_verdict_fail(v, 400, "the Kafka key must not be empty", key->text);
        return;
    }
}

/* Hands the reference the eventId the fast path already assigned. */
static int http_id_again(void *opaque, char *out) {
    memcpy(out, opaque, HTTP_UUID_LEN + 1);
    return 0;
}

void http_event_check(const json_t *schema, const http_cschema *cs, const http_pointer *key,
                      int batch, const char *text, size_t len, http_id_fn gen, void *opaque,
                      http_verdict *v) {
    if (http_event_check_fast(cs, key, text, len, gen, opaque, v) == 0) return;
    if (v->assigned) {
        /* The fast path gave up after assigning an eventId: the same one,
         * rather than a second draw from the random pool. */
        char id[HTTP_UUID_LEN + 1];
        memcpy(id, v->id_buf, sizeof(id));
        http_event_check_reference(schema, key, batch, text, len, http_id_again, id, v);
        return;
    }
    http_event_check_reference(schema, key, batch, text, len, gen, opaque, v);
}

void http_verdict_release(http_verdict *v) {
    json_decref(v->doc);
    v->doc = NULL;
}
