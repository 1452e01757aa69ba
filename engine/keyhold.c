/* Key holds room; see keyhold.h. */
#include "keyhold.h"

#include <stdlib.h>
#include <string.h>

static uint64_t keyhold_hash(const void *key, size_t len) {
    /* FNV-1a; the null key hashes apart from the empty key. */
    uint64_t h = key ? 1469598103934665603ULL : 7809847782465536322ULL;
    const unsigned char *p = key;
    for (size_t i = 0; i < len; i++) {
        h ^= p[i];
        h *= 1099511628211ULL;
    }
    return h;
}

void keyhold_map_init(keyhold_map *m) {
    memset(m, 0, sizeof(*m));
}

void keyhold_map_free(keyhold_map *m) {
    for (size_t i = 0; i < m->nbuckets; i++) {
        keyhold *h = m->buckets[i];
        while (h) {
            keyhold *next = h->next;
            free(h->last_error);
            free(h);
            h = next;
        }
    }
    free(m->buckets);
    memset(m, 0, sizeof(*m));
}

static int keyhold_match(const keyhold *h, uint64_t hash, const void *key, size_t len) {
    return h->hash == hash && h->null_key == (key == NULL) && h->key_len == len &&
           (len == 0 || memcmp(h->key, key, len) == 0);
}

keyhold *keyhold_find(keyhold_map *m, const void *key, size_t len) {
    if (!m->count) return NULL;
    if (!key) len = 0;
    uint64_t hash = keyhold_hash(key, len);
    for (keyhold *h = m->buckets[hash % m->nbuckets]; h; h = h->next)
        if (keyhold_match(h, hash, key, len)) return h;
    return NULL;
}

static int keyhold_grow(keyhold_map *m) {
    size_t n = m->nbuckets ? m->nbuckets * 2 : 64;
    keyhold **b = calloc(n, sizeof(*b));
    if (!b) return -1;
    for (size_t i = 0; i < m->nbuckets; i++) {
        keyhold *h = m->buckets[i];
        while (h) {
            keyhold *next = h->next;
            h->next = b[h->hash % n];
            b[h->hash % n] = h;
            h = next;
        }
    }
    free(m->buckets);
    m->buckets = b;
    m->nbuckets = n;
    return 0;
}

keyhold *keyhold_get(keyhold_map *m, const void *key, size_t len) {
    keyhold *h = keyhold_find(m, key, len);
    if (h) return h;
    if (!key) len = 0;
    if ((m->count + 1 > m->nbuckets) && keyhold_grow(m) < 0) return NULL;
    h = calloc(1, sizeof(*h) + len);
    if (!h) return NULL;
    h->hash = keyhold_hash(key, len);
    h->key_len = len;
    h->null_key = key == NULL;
    if (len) memcpy(h->key, key, len);
    h->next = m->buckets[h->hash % m->nbuckets];
    m->buckets[h->hash % m->nbuckets] = h;
    m->count++;
    return h;
}

void keyhold_remove(keyhold_map *m, keyhold *h) {
    for (keyhold **p = &m->buckets[h->hash % m->nbuckets]; *p; p = &(*p)->next) {
        if (*p == h) {
            *p = h->next;
            m->count--;
            free(h->last_error);
            free(h);
            return;
        }
    }
}

int seqset_insert(seqset *s, uint64_t seq) {
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 64;
        uint64_t *v = realloc(s->v, cap * sizeof(*v));
        if (!v) return -1;
        s->v = v;
        s->cap = cap;
    }
    size_t lo = 0, hi = s->n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (s->v[mid] < seq)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo < s->n && s->v[lo] == seq) return 0;
    memmove(s->v + lo + 1, s->v + lo, (s->n - lo) * sizeof(*s->v));
    s->v[lo] = seq;
    s->n++;
    return 0;
}

void seqset_remove_at(seqset *s, size_t i) {
    memmove(s->v + i, s->v + i + 1, (s->n - i - 1) * sizeof(*s->v));
    s->n--;
}

void seqset_free(seqset *s) {
    free(s->v);
    memset(s, 0, sizeof(*s));
}
