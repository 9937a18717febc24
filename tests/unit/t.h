/* t.h: a tiny unit-test harness. Each test file defines TESTS(X) listing its test functions:
 *
 *   static void test_something(void) { CHECK(1 + 1 == 2); }
 *   #define TESTS(X) X(test_something)
 *   #include "t_main.h"
 *
 * Failed checks print file:line and the expression; the run ends with "N passed, N failed". */
#ifndef PINGVAS_T_H
#define PINGVAS_T_H

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

static int t_failed_checks;

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);               \
            t_failed_checks++;                                                                     \
        }                                                                                          \
    } while (0)

#define CHECK_INT(a, b)                                                                            \
    do {                                                                                           \
        long long t_a_ = (long long)(a), t_b_ = (long long)(b);                                    \
        if (t_a_ != t_b_) {                                                                        \
            fprintf(stderr, "%s:%d: CHECK_INT failed: %s == %lld, expected %s == %lld\n",          \
                    __FILE__, __LINE__, #a, t_a_, #b, t_b_);                                       \
            t_failed_checks++;                                                                     \
        }                                                                                          \
    } while (0)

#define CHECK_STR(a, b)                                                                            \
    do {                                                                                           \
        const char *t_a_ = (a), *t_b_ = (b);                                                       \
        if (!t_a_ || !t_b_ || strcmp(t_a_, t_b_) != 0) {                                           \
            fprintf(stderr, "%s:%d: CHECK_STR failed: %s == \"%s\", expected \"%s\"\n", __FILE__,  \
                    __LINE__, #a, t_a_ ? t_a_ : "(null)", t_b_ ? t_b_ : "(null)");                 \
            t_failed_checks++;                                                                     \
        }                                                                                          \
    } while (0)

#define CHECK_NEAR(a, b, eps)                                                                      \
    do {                                                                                           \
        double t_a_ = (a), t_b_ = (b);                                                             \
        if (fabs(t_a_ - t_b_) > (eps)) {                                                           \
            fprintf(stderr, "%s:%d: CHECK_NEAR failed: %s == %g, expected %g\n", __FILE__,         \
                    __LINE__, #a, t_a_, t_b_);                                                     \
            t_failed_checks++;                                                                     \
        }                                                                                          \
    } while (0)

#endif
