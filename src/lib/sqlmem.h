/* sqlmem.h: SQLite's process-wide memory settings, made once before its first use.
 *
 * Debian's libsqlite3 is built with SQLITE_OMIT_LOOKASIDE, so every small allocation of a
 * statement (its cursors, its records, each 1 KiB chunk of a savepoint's statement journal) is a
 * malloc and a free. A create batch on the writer thread makes thousands of them of a few sizes,
 * far more than the 7 blocks a size glibc's per-thread cache keeps, so most of them took
 * glibc's arena path (bench/RESULTS.md, issue 12). SQLite's allocator is therefore given a cache
 * of its own per thread: freed blocks of up to 8 KiB are kept, by size class, in the freeing
 * thread's cache (at most SQLMEM_THREAD_CACHE bytes a thread) and handed out again by the next
 * allocation of that class on the thread; larger blocks, and blocks past the cap, go to malloc
 * and free. A thread's cache is freed when the thread ends. */
#ifndef PINGVAS_SQLMEM_H
#define PINGVAS_SQLMEM_H

#include <stddef.h>

/* The most a thread's cache keeps, in bytes of its blocks. */
#define SQLMEM_THREAD_CACHE (512 * 1024)

/* Configures SQLite, once per process (thread safe; later calls do nothing): no memory statistics
 * (pingvas reads none; kept, every allocation of every connection takes one global mutex, which
 * the read connections of concurrent GETs queue on), and the per-thread cache above. Must run
 * before SQLite's first use; if SQLite was already in use, SQLite refuses the settings
 * (SQLITE_MISUSE) and keeps its own, which is harmless. */
void sqlmem_setup(void);

/* Bytes held in the calling thread's cache now (for tests). */
size_t sqlmem_thread_cached(void);

#endif
