/* Key holds and the held-record set behind per-key ordered retries. */
#include <criterion/criterion.h>

#include "keyhold.h"
#include "pipeline.h"

Test(keyhold, keys_are_held_by_bytes_and_the_null_key_is_its_own) {
    keyhold_map m;
    keyhold_map_init(&m);
    cr_assert_null(keyhold_find(&m, "a", 1));
    keyhold *a = keyhold_get(&m, "a", 1);
    keyhold *empty = keyhold_get(&m, "", 0);
    keyhold *null_key = keyhold_get(&m, NULL, 0);
    cr_assert(a != empty && empty != null_key && a != null_key);
    cr_assert_eq(keyhold_find(&m, "a", 1), a);
    cr_assert_eq(keyhold_find(&m, NULL, 0), null_key);
    cr_assert_eq(keyhold_find(&m, "", 0), empty);
    cr_assert_null(keyhold_find(&m, "ab", 2));
    keyhold_remove(&m, a);
    cr_assert_null(keyhold_find(&m, "a", 1));
    cr_assert_eq(m.count, 2);
    keyhold_map_free(&m);
}

Test(keyhold, map_grows_and_keeps_every_key) {
    keyhold_map m;
    keyhold_map_init(&m);
    char key[16];
    for (int i = 0; i < 5000; i++) {
        int n = snprintf(key, sizeof(key), "cust-%d", i);
        keyhold_get(&m, key, (size_t)n)->attempts = i;
    }
    cr_assert_eq(m.count, 5000);
    for (int i = 0; i < 5000; i++) {
        int n = snprintf(key, sizeof(key), "cust-%d", i);
        keyhold *h = keyhold_find(&m, key, (size_t)n);
        cr_assert_not_null(h);
        cr_assert_eq(h->attempts, i);
    }
    keyhold_map_free(&m);
}

Test(keyhold, seqset_stays_sorted_without_duplicates) {
    seqset s = {0};
    uint64_t in[] = {50, 10, 30, 10, 70, 20, 60, 40, 30};
    for (size_t i = 0; i < sizeof(in) / sizeof(in[0]); i++)
        seqset_insert(&s, in[i]);
    uint64_t want[] = {10, 20, 30, 40, 50, 60, 70};
    cr_assert_eq(s.n, 7);
    for (size_t i = 0; i < 7; i++)
        cr_assert_eq(s.v[i], want[i]);
    seqset_remove_at(&s, 0);
    seqset_remove_at(&s, 5);
    cr_assert_eq(s.n, 5);
    cr_assert_eq(s.v[0], 20);
    cr_assert_eq(s.v[4], 60);
    seqset_free(&s);
}

Test(backoff, full_jitter_stays_under_the_exponential_cap) {
    retry_policy r = {
        .initial_ms = 100, .max_ms = 1000, .max_attempts = 10, .max_elapsed_ms = 60000};
    for (uint32_t rnd = 0; rnd < 5000; rnd += 7) {
        cr_assert_leq(pipeline_backoff_ms(&r, 1, 0, rnd), 100);
        cr_assert_leq(pipeline_backoff_ms(&r, 3, 0, rnd), 400);
        cr_assert_leq(pipeline_backoff_ms(&r, 30, 0, rnd), 1000);
    }
    /* Jitter really spreads: not every draw is the cap or zero. */
    int distinct = 0;
    int64_t last = -1;
    for (uint32_t rnd = 0; rnd < 50; rnd++) {
        int64_t d = pipeline_backoff_ms(&r, 4, 0, rnd * 2654435761u);
        distinct += d != last;
        last = d;
    }
    cr_assert_gt(distinct, 10);
}

Test(backoff, server_hint_wins_when_larger_but_not_past_max) {
    retry_policy r = {
        .initial_ms = 100, .max_ms = 5000, .max_attempts = 10, .max_elapsed_ms = 60000};
    cr_assert_eq(pipeline_backoff_ms(&r, 1, 1500, 3), 1500);
    cr_assert_eq(pipeline_backoff_ms(&r, 1, 9000, 3), 5000);
}
