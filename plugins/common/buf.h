/*
 * plugins/common: a growable byte buffer, reused across records (the
 * steady state allocates nothing).  Always NUL-terminated once anything was
 * appended; {0} is an empty buffer.  sink-dynamodb, sink-sns and
 * sink-websocket build request bodies and messages in it.
 */
#ifndef CONNECTD_PLUGIN_COMMON_BUF_H
#define CONNECTD_PLUGIN_COMMON_BUF_H

#include <stddef.h>

typedef struct pbuf {
    char *data;
    size_t len;
    size_t cap;
} pbuf;

/* Room for n more bytes and the NUL.  0, or CD_ERR_NOMEM. */
int pbuf_reserve(pbuf *b, size_t n);
/* Appends n bytes (p may be NULL when n is 0).  0, or CD_ERR_NOMEM. */
int pbuf_append(pbuf *b, const void *p, size_t n);
int pbuf_puts(pbuf *b, const char *s);
/* Appends s[0..n) as a JSON string, quotes included: '"', '\\' and control
 * characters escaped, every other byte as it is.  0, or CD_ERR_NOMEM. */
int pbuf_json_string(pbuf *b, const char *s, size_t n);
void pbuf_free(pbuf *b);

#endif
