/* t_main.h: include last, after defining TESTS(X). Runs every test, prints the tally. A file
 * may define T_SETUP() and T_TEARDOWN() (run once around the tests; not counted as tests). */
#ifndef TESTS
#error "define TESTS(X) before including t_main.h"
#endif

#define T_ENTRY(fn) {#fn, fn},
static const struct {
    const char *name;
    void (*fn)(void);
} t_tests[] = {TESTS(T_ENTRY)};

int main(int argc, char **argv)
{
    int passed = 0, failed = 0;
#ifdef T_SETUP
    T_SETUP();
    if (t_failed_checks) {
        printf("setup failed: 0 passed, 1 failed\n");
        return 1;
    }
#endif
    for (size_t i = 0; i < sizeof t_tests / sizeof t_tests[0]; i++) {
        if (argc > 1 && strstr(t_tests[i].name, argv[1]) == NULL)
            continue;
        int before = t_failed_checks;
        t_tests[i].fn();
        if (t_failed_checks == before) {
            passed++;
            printf("ok   %s\n", t_tests[i].name);
        } else {
            failed++;
            printf("FAIL %s\n", t_tests[i].name);
        }
    }
#ifdef T_TEARDOWN
    T_TEARDOWN();
#endif
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
