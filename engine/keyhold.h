/*
 * Key holds: the keys of one sink lane that are waiting for a retry, and the
 * records held behind them.  While a key is held, its later records are not
 * handed to the sink (so per-key order survives retries); records of other
 * keys go on.  A record with no key is held under the null key.
 */
#ifndef CONNECTD_KEYHOLD_H
#define CONNECTD_KEYHOLD_H

#include <stddef.h>
#include <stdint.h>

typedef struct keyhold {
    struct keyhold *next; /* hash chain */
    uint64_t hash;
    size_t key_len;
    int null_key;
    int64_t attempts;          /* failed tries of the key's oldest held record */
    uint64_t first_failure_ms; /* when that record first failed */
    uint64_t retry_at_ms;      /* when its held records may go again */
    int64_t hint_ms;
    size_t outstanding;     /* held records, including those out in a retry batch */
    uint64_t failed_round;  /* lane round (batch completion) it last failed in */
    uint64_t handled_round; /* lane round whose failure was scheduled */
    char *last_error;
    char key[]; /* key_len bytes */
} keyhold;

typedef struct keyhold_map {
    keyhold **buckets;
    size_t nbuckets;
    size_t count;
} keyhold_map;

void keyhold_map_init(keyhold_map *m);
void keyhold_map_free(keyhold_map *m);
/* The hold for key (NULL key: the null key), or NULL when the key is free. */
keyhold *keyhold_find(keyhold_map *m, const void *key, size_t len);
/* The hold for key, created (attempts 0, outstanding 0) when missing. */
keyhold *keyhold_get(keyhold_map *m, const void *key, size_t len);
/* Releases a hold: the key flows freely again. */
void keyhold_remove(keyhold_map *m, keyhold *h);

/* A sorted set of sequence numbers: the records a lane holds back. */
typedef struct seqset {
    uint64_t *v;
    size_t n, cap;
} seqset;

int seqset_insert(seqset *s, uint64_t seq); /* 0, or -1 when out of memory */
void seqset_remove_at(seqset *s, size_t i);
void seqset_free(seqset *s);

#endif
