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

int ws_buf_reserve(ws_buf *b, size_t extra) {
    if (extra < b->cap - b->len) return 0;
    if (extra > SIZE_MAX / 2 - b->len) return CD_ERR_NOMEM;
    size_t cap = b->cap ? b->cap : 256;
    while (cap - b->len <= extra)
        cap *= 2;
    char *data = realloc(b->data, cap);
    if (data == NULL) return CD_ERR_NOMEM;
    b->data = data;
    b->cap = cap;
    return 0;
}

/* Keeps data NUL-terminated. */
int ws_buf_append(ws_buf *b, const void *p, size_t n) {
    if (ws_buf_reserve(b, n) < 0) return CD_ERR_NOMEM;
    if (n) memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
    return 0;
}

void ws_buf_free(ws_buf *b) {
    free(b->data);
    *b = (ws_buf){0};
}

static int ws_json_space(char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

int ws_json_insert_seq(ws_buf *out, const char *json, size_t len, uint64_t seq) {
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
    if (ws_buf_append(out, head, (size_t)n) < 0) return CD_ERR_NOMEM;
    return ws_buf_append(out, rest, rest_len);
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

int ws_json_string(ws_buf *out, const char *s, size_t n) {
    static const char hex[] = "0123456789abcdef";
    if (ws_buf_reserve(out, n * 6 + 2) < 0) return CD_ERR_NOMEM;
    char *o = out->data + out->len;
    *o++ = '"';
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            *o++ = '\\';
            *o++ = (char)c;
        } else if (c < 0x20) {
            memcpy(o, "\\u00", 4);
            o[4] = hex[c >> 4];
            o[5] = hex[c & 0xF];
            o += 6;
        } else {
            *o++ = (char)c;
        }
    }
    *o++ = '"';
    out->len = (size_t)(o - out->data);
    out->data[out->len] = '\0';
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
