#include "scale/gpu.h"

#include <dlfcn.h>
#include <errno.h>
#include <stdlib.h>

#include "lib/log.h"

typedef int (*nvml_init_fn)(void);
typedef int (*nvml_count_fn)(unsigned int *);
typedef int (*nvml_shutdown_fn)(void);

int gpu_discover(int *out, int max)
{
    void *h = dlopen("libnvidia-ml.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        log_debug("event=nvml_absent msg=\"no libnvidia-ml.so.1: no GPUs\"");
        return 0;
    }
    nvml_init_fn init = (nvml_init_fn)dlsym(h, "nvmlInit_v2");
    nvml_count_fn count = (nvml_count_fn)dlsym(h, "nvmlDeviceGetCount_v2");
    nvml_shutdown_fn shut = (nvml_shutdown_fn)dlsym(h, "nvmlShutdown");
    int n = 0;
    unsigned int c = 0;
    if (init && count && init() == 0) {
        if (count(&c) == 0)
            for (unsigned int i = 0; i < c && n < max; i++)
                out[n++] = (int)i;
        if (shut)
            shut();
    }
    dlclose(h);
    log_info("event=gpus_discovered count=%d", n);
    return n;
}

int gpu_parse_list(const char *s, int *out, int max)
{
    int n = 0;
    const char *p = s;
    while (*p) {
        char *end;
        errno = 0;
        long v = strtol(p, &end, 10);
        if (end == p || errno || v < 0 || v > 1023 || n >= max)
            return -1;
        for (int i = 0; i < n; i++)
            if (out[i] == v)
                return -1; /* never two workers on one GPU */
        out[n++] = (int)v;
        if (*end == ',')
            end++;
        else if (*end != '\0')
            return -1;
        p = end;
    }
    return n;
}
