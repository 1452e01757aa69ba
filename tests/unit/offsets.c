/* The offset window: commits move only over a contiguous prefix of done records. */
#include <criterion/criterion.h>

#include "offsets.h"

static int released;
static void count_release(void *data, void *opaque) {
    released++;
}

Test(offsets, empty_window_has_no_watermark) {
    offset_window w;
    offset_window_init(&w);
    cr_assert_eq(offset_window_watermark(&w), -1);
    offset_window_free(&w, NULL, NULL);
}

Test(offsets, out_of_order_acks_commit_only_the_contiguous_prefix) {
    offset_window w;
    offset_window_init(&w);
    released = 0;
    uint64_t s[5];
    for (int i = 0; i < 5; i++)
        s[i] = offset_window_push(&w, 10 + i, NULL, 1);
    cr_assert_eq(offset_window_watermark(&w), 10);
    cr_assert_eq(offset_window_ack(&w, s[2], count_release, NULL), 0);
    cr_assert_eq(offset_window_ack(&w, s[3], count_release, NULL), 0);
    cr_assert_eq(offset_window_watermark(&w), 10, "12 and 13 done, 10 not: stay at 10");
    cr_assert_eq(offset_window_ack(&w, s[0], count_release, NULL), 1);
    cr_assert_eq(offset_window_watermark(&w), 11);
    cr_assert_eq(offset_window_ack(&w, s[1], count_release, NULL), 3);
    cr_assert_eq(offset_window_watermark(&w), 14);
    cr_assert_eq(offset_window_ack(&w, s[4], count_release, NULL), 1);
    cr_assert_eq(offset_window_watermark(&w), 15, "all done: commit the next offset");
    cr_assert_eq(released, 5);
    offset_window_free(&w, NULL, NULL);
}

Test(offsets, a_record_needs_every_sink_ack) {
    offset_window w;
    offset_window_init(&w);
    uint64_t a = offset_window_push(&w, 0, NULL, 3);
    offset_window_ack(&w, a, NULL, NULL);
    offset_window_ack(&w, a, NULL, NULL);
    cr_assert_eq(offset_window_watermark(&w), 0);
    offset_window_ack(&w, a, NULL, NULL);
    cr_assert_eq(offset_window_watermark(&w), 1);
    cr_assert_eq(offset_window_ack(&w, a, NULL, NULL), -1, "an extra ack is refused");
    offset_window_free(&w, NULL, NULL);
}

Test(offsets, gaps_in_offsets_commit_past_the_gap) {
    offset_window w;
    offset_window_init(&w);
    uint64_t a = offset_window_push(&w, 100, NULL, 1);
    uint64_t b = offset_window_push(&w, 105, NULL, 1); /* compacted away: 101..104 */
    offset_window_ack(&w, a, NULL, NULL);
    cr_assert_eq(offset_window_watermark(&w), 105, "next record to consume is 105");
    offset_window_ack(&w, b, NULL, NULL);
    cr_assert_eq(offset_window_watermark(&w), 106);
    offset_window_free(&w, NULL, NULL);
}

Test(offsets, refuses_non_increasing_offsets_and_zero_pending) {
    offset_window w;
    offset_window_init(&w);
    offset_window_push(&w, 5, NULL, 1);
    cr_assert_eq(offset_window_push(&w, 5, NULL, 1), UINT64_MAX);
    cr_assert_eq(offset_window_push(&w, 4, NULL, 1), UINT64_MAX);
    cr_assert_eq(offset_window_push(&w, 6, NULL, 0), UINT64_MAX);
    offset_window_free(&w, NULL, NULL);
}

Test(offsets, grows_and_wraps_keeping_order) {
    offset_window w;
    offset_window_init(&w);
    released = 0;
    uint64_t next_ack = 0;
    /* Push 1000, ack in lagging bursts so the ring wraps around repeatedly. */
    for (int64_t off = 0; off < 1000; off++) {
        offset_window_push(&w, off, NULL, 1);
        if (off % 7 == 6) {
            for (int k = 0; k < 5; k++)
                offset_window_ack(&w, next_ack++, count_release, NULL);
        }
    }
    cr_assert_eq(offset_window_watermark(&w), (int64_t)next_ack);
    while (next_ack < 1000)
        offset_window_ack(&w, next_ack++, count_release, NULL);
    cr_assert_eq(offset_window_watermark(&w), 1000);
    cr_assert_eq(released, 1000);
    cr_assert_null(offset_window_get(&w, 3));
    offset_window_free(&w, NULL, NULL);
}

Test(offsets, free_releases_what_is_still_held) {
    offset_window w;
    offset_window_init(&w);
    released = 0;
    offset_window_push(&w, 1, NULL, 1);
    offset_window_push(&w, 2, NULL, 2);
    offset_window_free(&w, count_release, NULL);
    cr_assert_eq(released, 2);
}
