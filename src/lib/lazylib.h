/* lazylib.h: shared libraries loaded on first use instead of at exec.
 *
 * pingvas is one binary for the server and the worker, but a `pingvas worker` uses neither
 * libmicrohttpd nor SQLite nor libpq nor hiredis, libssl only for an https:// request, and libcurl
 * (with its TLS stacks, GnuTLS through librtmp, Kerberos, LDAP) only for a request through a
 * proxy. Linked the usual way, each is
 * mapped and relocated, and its constructors run, in every process: about 5 MB of a worker's
 * peak RSS (bench row (e)). lib/lazydeps.c defines those libraries' functions that pingvas
 * calls; the first call of any of them loads the library (dlopen) and resolves them all. */
#ifndef PINGVAS_LAZYLIB_H
#define PINGVAS_LAZYLIB_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>

typedef struct lazylib {
    const char *soname;       /* what dlopen loads, e.g. "libcurl.so.4" */
    const char *package;      /* the Debian package that installs it (for the error) */
    const char *const *names; /* the functions to resolve */
    void **fns;               /* their addresses, filled on load */
    size_t n;
    atomic_int loaded;
    pthread_mutex_t mu;
} lazylib_t;

/* Function i of lib, loading lib first if needed (thread safe). A library or function that
 * cannot be loaded is an installation error: the process says which and exits with status 127,
 * as the dynamic loader does for a library missing at exec. */
void *lazylib_fn(lazylib_t *lib, size_t i);

/* 1 once lib is loaded. */
int lazylib_loaded(lazylib_t *lib);

#endif
