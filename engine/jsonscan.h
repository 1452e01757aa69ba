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

#endif
