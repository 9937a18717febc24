/* sqlmem.c: SQLite's allocator with a cache per thread (sqlmem.h). */
#include "sqlmem.h"

#include <pthread.h>
#include <sqlite3.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Size classes: 16-byte steps up to 1 KiB (64 classes), then 256-byte steps up to 8 KiB. */
#define SMALL_MAX 1024
#define CACHED_MAX 8192
#define NCLASS (SMALL_MAX / 16 + (CACHED_MAX - SMALL_MAX) / 256)
#define BIG ((size_t)-1) /* the class of a block not cached */

/* Before each block, 16 bytes (so that the block keeps malloc's alignment): its class and its
 * usable size. */
typedef struct head {
    size_t cls;
    size_t size;
} head_t;

/* A cached block's first bytes: the next block of its class. */
typedef struct node {
    struct node *next;
} node_t;

typedef struct cache {
    node_t *free[NCLASS];
    size_t bytes;
    int keyed; /* the thread's end frees the cache (sqlmem_key set) */
} cache_t;

static _Thread_local cache_t cache;
static pthread_key_t sqlmem_key;

static size_t class_of(size_t n)
{
    if (n == 0)
        n = 1;
    if (n <= SMALL_MAX)
        return (n - 1) / 16;
    if (n <= CACHED_MAX)
        return SMALL_MAX / 16 + (n - SMALL_MAX - 1) / 256;
    return BIG;
}

static size_t class_size(size_t cls)
{
    return cls < SMALL_MAX / 16 ? (cls + 1) * 16 : SMALL_MAX + (cls - SMALL_MAX / 16 + 1) * 256;
}

static head_t *head_of(void *p)
{
    return (head_t *)((char *)p - sizeof(head_t));
}

/* The thread's end: its cached blocks back to malloc. */
static void cache_drop(void *arg)
{
    cache_t *c = arg;
    for (size_t i = 0; i < NCLASS; i++) {
        while (c->free[i]) {
            node_t *n = c->free[i];
            c->free[i] = n->next;
            free(head_of(n));
        }
    }
    c->bytes = 0;
    c->keyed = 0; /* a later free on this thread, in another destructor, keys it again */
}

static void *sm_malloc(int n)
{
    if (n < 0)
        return NULL;
    size_t cls = class_of((size_t)n);
    if (cls != BIG && cache.free[cls]) {
        node_t *b = cache.free[cls];
        cache.free[cls] = b->next;
        cache.bytes -= class_size(cls);
        return b;
    }
    size_t size = cls == BIG ? ((size_t)n + 7) & ~(size_t)7 : class_size(cls);
    head_t *h = malloc(sizeof *h + size);
    if (!h)
        return NULL;
    h->cls = cls;
    h->size = size;
    return h + 1;
}

static void sm_free(void *p)
{
    if (!p)
        return;
    head_t *h = head_of(p);
    if (h->cls == BIG || cache.bytes + h->size > SQLMEM_THREAD_CACHE) {
        free(h);
        return;
    }
    if (!cache.keyed) {
        if (pthread_setspecific(sqlmem_key, &cache) != 0) {
            free(h);
            return;
        }
        cache.keyed = 1;
    }
    node_t *b = p;
    b->next = cache.free[h->cls];
    cache.free[h->cls] = b;
    cache.bytes += h->size;
}

static int sm_size(void *p)
{
    return p ? (int)head_of(p)->size : 0;
}

static void *sm_realloc(void *p, int n)
{
    if (n < 0)
        return NULL;
    if ((size_t)n <= head_of(p)->size && class_of((size_t)n) == head_of(p)->cls)
        return p;
    void *q = sm_malloc(n);
    if (!q)
        return NULL;
    size_t keep = head_of(p)->size < (size_t)n ? head_of(p)->size : (size_t)n;
    memcpy(q, p, keep);
    sm_free(p);
    return q;
}

static int sm_roundup(int n)
{
    if (n < 0)
        return n;
    size_t cls = class_of((size_t)n);
    size_t r = cls == BIG ? ((size_t)n + 7) & ~(size_t)7 : class_size(cls);
    return r > INT32_MAX ? n : (int)r;
}

static int sm_init(void *arg)
{
    (void)arg;
    return SQLITE_OK;
}

static void sm_shutdown(void *arg)
{
    (void)arg;
}

static void setup_once(void)
{
    static const sqlite3_mem_methods methods = {
        sm_malloc, sm_free, sm_realloc, sm_size, sm_roundup, sm_init, sm_shutdown, NULL,
    };
    sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
    if (pthread_key_create(&sqlmem_key, cache_drop) == 0)
        sqlite3_config(SQLITE_CONFIG_MALLOC, &methods);
}

void sqlmem_setup(void)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, setup_once);
}

size_t sqlmem_thread_cached(void)
{
    return cache.bytes;
}
