/* plugins/common: the growable buffer of buf.h. */
#include "buf.h"

#include <connectd/plugin.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int pbuf_reserve(pbuf *b, size_t n) {
    if (n < b->cap - b->len) return 0; /* n bytes and the NUL fit */
    if (n > SIZE_MAX / 2 - b->len) return CD_ERR_NOMEM;
    size_t cap = b->cap ? b->cap : 256;
    while (cap - b->len <= n)
        cap *= 2;
    char *d = realloc(b->data, cap);
    if (d == NULL) return CD_ERR_NOMEM;
    b->data = d;
    b->cap = cap;
    return 0;
}

int pbuf_append(pbuf *b, const void *p, size_t n) {
    if (pbuf_reserve(b, n) < 0) return CD_ERR_NOMEM;
    if (n) memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
    return 0;
}

int pbuf_puts(pbuf *b, const char *s) {
    return pbuf_append(b, s, strlen(s));
}

int pbuf_json_string(pbuf *out, const char *s, size_t n) {
    static const char hex[] = "0123456789abcdef";
    if (pbuf_reserve(out, n * 6 + 2) < 0) return CD_ERR_NOMEM;
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

void pbuf_free(pbuf *b) {
    free(b->data);
    *b = (pbuf){0};
}
