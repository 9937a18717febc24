/* test_sqlmem.c: SQLite on the per-thread cache of lib/sqlmem.c: rows of every size class and
 * past them, strings that grow by realloc, the cache's cap, and a thread's cache given back when
 * the thread ends (the sanitizer build's leak check sees any block left behind). */
#include "t.h"

#include <pthread.h>
#include <sqlite3.h>
#include <stdlib.h>

#include "lib/sqlmem.h"

static int one_int(void *arg, int ncol, char **vals, char **names)
{
    (void)names;
    if (ncol == 1 && vals[0])
        *(long long *)arg = atoll(vals[0]);
    return 0;
}

static long long query_int(sqlite3 *db, const char *sql)
{
    long long v = -1;
    char *err = NULL;
    if (sqlite3_exec(db, sql, one_int, &v, &err) != SQLITE_OK) {
        fprintf(stderr, "%s: %s\n", sql, err ? err : "?");
        t_failed_checks++;
    }
    sqlite3_free(err);
    return v;
}

/* Rows of 1 byte to 20 KB (every class, and blocks too large to cache), their sums, and a string
 * grown to 2 MB by realloc (group_concat), checked against what SQLite must answer. */
static void work(void)
{
    sqlite3 *db = NULL;
    CHECK_INT(sqlite3_open(":memory:", &db), SQLITE_OK);
    CHECK_INT(sqlite3_exec(db,
                           "CREATE TABLE t(n INTEGER, b BLOB);"
                           " WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c"
                           " WHERE i < 2000) INSERT INTO t SELECT i, zeroblob((i * 37) % 20000 + 1)"
                           " FROM c;",
                           NULL, NULL, NULL),
              SQLITE_OK);
    long long want = 0;
    for (long long i = 1; i <= 2000; i++)
        want += (i * 37) % 20000 + 1;
    CHECK_INT(query_int(db, "SELECT SUM(LENGTH(b)) FROM t"), want);
    CHECK_INT(query_int(db, "SELECT LENGTH(group_concat(hex(b), '')) FROM t WHERE n <= 100"),
              2 * query_int(db, "SELECT SUM(LENGTH(b)) FROM t WHERE n <= 100"));
    CHECK_INT(query_int(db, "SELECT COUNT(*) FROM (SELECT b FROM t ORDER BY hex(b) DESC, n)"),
              2000);
    char *s = sqlite3_mprintf("%s-%d-%s", "pingvas", 42, "sqlmem");
    CHECK_STR(s, "pingvas-42-sqlmem");
    sqlite3_free(s);
    CHECK_INT(sqlite3_close(db), SQLITE_OK);
}

static void test_sqlite_works_on_the_cache(void)
{
    sqlmem_setup();
    sqlmem_setup(); /* a second call changes nothing */
    work();
    CHECK(sqlmem_thread_cached() > 0);
    CHECK(sqlmem_thread_cached() <= SQLMEM_THREAD_CACHE);
    work(); /* the second round runs on cached blocks */
    CHECK(sqlmem_thread_cached() <= SQLMEM_THREAD_CACHE);
}

static void *thread_work(void *arg)
{
    work();
    *(size_t *)arg = sqlmem_thread_cached();
    return NULL;
}

/* Threads that end with blocks in their cache give them back (the leak check of the sanitizer
 * build fails the test otherwise). */
static void test_thread_cache_freed_at_exit(void)
{
    sqlmem_setup();
    for (int i = 0; i < 4; i++) {
        pthread_t t;
        size_t cached = 0;
        CHECK_INT(pthread_create(&t, NULL, thread_work, &cached), 0);
        CHECK_INT(pthread_join(t, NULL), 0);
        CHECK(cached > 0 && cached <= SQLMEM_THREAD_CACHE);
    }
}

#define TESTS(X) X(test_sqlite_works_on_the_cache) X(test_thread_cache_freed_at_exit)
#include "t_main.h"
