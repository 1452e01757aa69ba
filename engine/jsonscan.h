/*
 * One-pass, allocation-free JSON validation (RFC 8259, UTF-8 checked) for
 * record values on the hot path; jansson stays for configuration and for
 * records whose fields a condition reads.
 */
#ifndef CONNECTD_JSONSCAN_H
#define CONNECTD_JSONSCAN_H

#include <stddef.h>

/* 0 when data is exactly one JSON text (whitespace around it allowed);
 * otherwise -1 with "reason at byte N" in errbuf (may be NULL). */
int json_validate(const void *data, size_t len, char *errbuf, size_t errlen);

/* Building blocks for code that walks raw JSON without a tree (the
 * template room's pointer scan): each returns the position after what it
 * skipped, or NULL when the text there is not valid. */
const char *json_skip_ws(const char *p, const char *end);
/* p is just after an opening quote; returns just after the closing one. */
const char *json_skip_string(const char *p, const char *end);
/* Skips leading whitespace and one value; returns just after the value. */
const char *json_skip_value(const char *p, const char *end);

/* The same for text already validated (json_validate passed on the whole
 * document): structure only, a vector at a time, no grammar checks.  Still
 * bounds-checked: on text that is not valid JSON they return NULL or a wrong
 * position, never read outside [p, end). */
const char *json_skip_string_valid(const char *p, const char *end);
const char *json_skip_value_valid(const char *p, const char *end);

/* Test hook: 0 (default) the fastest string scan this CPU has, 1 the
 * portable word-at-a-time one, 2 byte by byte.  Results never differ. */
void jsonscan_set_mode(int mode);

#endif
