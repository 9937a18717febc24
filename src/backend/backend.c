/* backend.c: picks the generation backend named in the configuration. */
#include "backend/backend.h"

#include <stdio.h>
#include <string.h>

#define VALID_BACKENDS "synthetic, a1111, sdcpp"

/* Returns a new, not yet loaded backend (destroy with ops->destroy), or NULL with err set.
 * A NULL or empty name means "synthetic", the default (DESIGN section 6). */
backend_t *backend_create(const backend_config_t *cfg, char *err, size_t errlen)
{
    if (!cfg) {
        snprintf(err, errlen, "backend: no configuration");
        return NULL;
    }
    const char *name = cfg->name && cfg->name[0] ? cfg->name : "synthetic";
    if (strcmp(name, "synthetic") == 0)
        return backend_synthetic_create(cfg, err, errlen);
    if (strcmp(name, "a1111") == 0)
        return backend_a1111_create(cfg, err, errlen);
    if (strcmp(name, "sdcpp") == 0) {
        snprintf(err, errlen,
                 "backend \"%s\" is not available in this build yet (available: synthetic, a1111)",
                 name);
        return NULL;
    }
    snprintf(err, errlen, "unknown backend \"%s\" (valid: " VALID_BACKENDS ")", name);
    return NULL;
}
