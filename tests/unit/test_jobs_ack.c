/* Unit tests for the reactor side of jobs (reactor/jobs.c): how a worker's answer (spec §7.2,
 * every type 0-4 per §14 item 7) becomes an ack, a drop or a requeue. */
#include "../../lib/buf.c"
#include "../../lib/log.c"
#include "../../relay/frame.c"
#include "../../relay/spawn.c"
#include "../../reactor/ev.c"
#include "../../reactor/pool.c"
#include "../../reactor/jobs.c"
#include "test.h"

static void t_decide(const char *body, char kind, long delay, const char *headers, bool odd)
{
    fl_rjobs_answer_t a;
    const char *msg = fl_rjobs_decide(body, strlen(body), &a);
    CU_ASSERT_EQUAL(a.kind, kind);
    CU_ASSERT_EQUAL(a.delay, delay);
    CU_ASSERT_EQUAL(msg != NULL, odd);
    if (headers) {
        CU_ASSERT_PTR_NOT_NULL_FATAL(a.headers);
        CU_ASSERT_STRING_EQUAL(a.headers, headers);
    } else {
        CU_ASSERT_PTR_NULL(a.headers);
    }
    cJSON_free(a.headers);
    cJSON_free(a.message);
}

/* data.message travels to the master (logs, dead-letter reason). */
static void t_message(void)
{
    fl_rjobs_answer_t a;
    const char *b = "{\"type\":3,\"data\":{\"message\":\"boom\",\"requeue\":true}}";
    fl_rjobs_decide(b, strlen(b), &a);
    CU_ASSERT_EQUAL(a.kind, 'r');
    CU_ASSERT_PTR_NOT_NULL_FATAL(a.message);
    CU_ASSERT_STRING_EQUAL(a.message, "boom");
    cJSON_free(a.message);
    b = "{\"type\":2,\"data\":[]}";
    fl_rjobs_decide(b, strlen(b), &a);
    CU_ASSERT_PTR_NULL(a.message);
}

static void t_types(void)
{
    t_decide("{\"type\":0,\"data\":[]}", 'a', 0, NULL, false); /* SUCCESS (complete()) */
    t_decide("{\"type\":2,\"data\":[]}", 'a', 0, NULL, false); /* ACK */
    /* ERROR without requeue: acked, the message logged (spec §7.2) */
    t_decide("{\"type\":1,\"data\":{\"message\":\"x\"}}", 'a', 0, NULL, true);
    t_decide("{\"type\":1,\"data\":{\"message\":\"x\",\"requeue\":true,\"delay_seconds\":3,"
             "\"headers\":{\"a\":[\"b\"]}}}",
             'r', 3, "{\"a\":[\"b\"]}", false);
    t_decide("{\"type\":3,\"data\":{\"message\":\"x\",\"requeue\":false}}", 'd', 0, NULL, false);
    t_decide("{\"type\":3,\"data\":{\"message\":\"x\",\"requeue\":true,\"delay_seconds\":2}}", 'r',
             2, NULL, false);
    t_decide("{\"type\":4,\"data\":{\"delay_seconds\":0,\"headers\":{}}}", 'r', 0, NULL, false);
    t_decide("{\"type\":4,\"data\":{\"headers\":{\"k\":[\"1\",\"2\"]}}}", 'r', 0,
             "{\"k\":[\"1\",\"2\"]}", false);
    t_decide("{\"type\":9,\"data\":[]}", 'a', 0, NULL, true); /* unknown: ack with a warning */
    /* malformed: requeued after a back-off, never lost */
    t_decide("", 'r', MALFORMED_DELAY_S, NULL, true);
    t_decide("not json", 'r', MALFORMED_DELAY_S, NULL, true);
    t_decide("{\"data\":[]}", 'r', MALFORMED_DELAY_S, NULL, true);
    t_decide("[1,2]", 'r', MALFORMED_DELAY_S, NULL, true);
}

static const fl_test_t tests[] = {
    {"ack types 0-4, unknown, malformed", t_types},
    {"the message of a nack", t_message},
    {NULL, NULL},
};

FL_TEST_MAIN("jobs-ack", tests)
