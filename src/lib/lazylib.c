/* lazylib.c: contract in lazylib.h. */
#include "lib/lazylib.h"

#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>

/* Loads lib and resolves every name. 0, or -1 with a message on stderr. */
static int load(lazylib_t *lib)
{
    void *h = dlopen(lib->soname, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        fprintf(stderr, "pingvas: cannot load %s (%s): install the Debian package %s\n",
                lib->soname, dlerror(), lib->package);
        return -1;
    }
    for (size_t i = 0; i < lib->n; i++) {
        lib->fns[i] = dlsym(h, lib->names[i]);
        if (!lib->fns[i]) {
            fprintf(stderr, "pingvas: %s has no function %s: install the Debian 12 package %s\n",
                    lib->soname, lib->names[i], lib->package);
            return -1;
        }
    }
    return 0; /* h stays open for the life of the process */
}

void *lazylib_fn(lazylib_t *lib, size_t i)
{
    if (!atomic_load_explicit(&lib->loaded, memory_order_acquire)) {
        pthread_mutex_lock(&lib->mu);
        if (!atomic_load_explicit(&lib->loaded, memory_order_relaxed)) {
            if (load(lib) != 0)
                exit(127);
            atomic_store_explicit(&lib->loaded, 1, memory_order_release);
        }
        pthread_mutex_unlock(&lib->mu);
    }
    return lib->fns[i];
}

int lazylib_loaded(lazylib_t *lib)
{
    return atomic_load_explicit(&lib->loaded, memory_order_acquire);
}
