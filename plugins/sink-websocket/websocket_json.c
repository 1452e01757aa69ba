/*
 * sink-websocket — the little JSON a push needs, over reused buffers.
 *
 * Templates render compact JSON, so inserting the sequence number is a
 * splice after the opening brace, and reading it back (from a replayed or
 * published message) is reading the digits after {"seq":.  No parser, no
 * allocation once the buffer has grown.
 */
#include "websocket.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int ws_json_space(char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

int ws_json_insert_seq(pbuf *out, const char *json, size_t len, uint64_t seq) {
    while (len && ws_json_space(*json)) {
        json++;
        len--;
    }
    while (len && ws_json_space(json[len - 1]))
        len--;
    if (len < 2 || json[0] != '{' || json[len - 1] != '}') return CD_ERR_INVALID;
    const char *rest = json + 1;
    size_t rest_len = len - 1;
    while (rest_len && ws_json_space(*rest)) {
        rest++;
        rest_len--;
    }
    char head[40];
    int n = snprintf(head, sizeof(head), "{\"seq\":%" PRIu64 "%s", seq, *rest == '}' ? "" : ",");
    out->len = 0;
    if (pbuf_append(out, head, (size_t)n) < 0) return CD_ERR_NOMEM;
    return pbuf_append(out, rest, rest_len);
}

int ws_json_seq(const char *msg, size_t len, uint64_t *seq) {
    static const char head[] = "{\"seq\":";
    size_t h = sizeof(head) - 1;
    if (len <= h || memcmp(msg, head, h) != 0) return CD_ERR_INVALID;
    uint64_t v = 0;
    size_t i = h, digits = 0;
    for (; i < len && msg[i] >= '0' && msg[i] <= '9'; i++, digits++) {
        if (v > (UINT64_MAX - 9) / 10) return CD_ERR_INVALID;
        v = v * 10 + (uint64_t)(msg[i] - '0');
    }
    if (digits == 0 || i >= len || (msg[i] != ',' && msg[i] != '}')) return CD_ERR_INVALID;
    *seq = v;
    return 0;
}

int ws_json_pointer_ok(const char *p) {
    if (p == NULL) return 0;
    if (*p != '\0' && *p != '/') return 0;
    if (strchr(p, '}') || strstr(p, ":-")) return 0;
    for (const char *t = p; *t; t++)
        if (*t == '~' && t[1] != '0' && t[1] != '1') return 0;
    return 1;
}
