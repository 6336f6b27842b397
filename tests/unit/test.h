/* Tiny CUnit harness shared by unit tests. A test file #includes the .c files it tests
 * (h2o style), defines its test functions, then:
 *
 *   static const fl_test_t tests[] = { {"name", fn}, ... , {NULL, NULL} };
 *   FL_TEST_MAIN("suite name", tests)
 *
 * The program prints CUnit's summary and a last line "unit NAME: N passed, M failed"
 * and exits non-zero when a test failed. */
#ifndef FL_TEST_H
#define FL_TEST_H
#include <stdio.h>
#include <CUnit/Basic.h>

typedef struct {
    const char *name;
    void (*fn)(void);
} fl_test_t;

#define FL_TEST_MAIN(suite_name, tests)                                                      \
    int main(void)                                                                           \
    {                                                                                        \
        if (CU_initialize_registry() != CUE_SUCCESS)                                         \
            return 2;                                                                        \
        CU_pSuite s = CU_add_suite(suite_name, NULL, NULL);                                  \
        for (const fl_test_t *t = (tests); t->name; t++)                                     \
            CU_add_test(s, t->name, t->fn);                                                  \
        CU_basic_set_mode(CU_BRM_VERBOSE);                                                   \
        CU_basic_run_tests();                                                                \
        unsigned run = CU_get_number_of_tests_run();                                         \
        unsigned failed = CU_get_number_of_tests_failed();                                   \
        printf("unit %s: %u passed, %u failed\n", suite_name, run - failed, failed);         \
        CU_cleanup_registry();                                                               \
        return failed ? 1 : 0;                                                               \
    }
#endif
