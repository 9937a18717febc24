/* validate.h: parsing and validation of the create body (DESIGN section 3). */
#ifndef PINGVAS_VALIDATE_H
#define PINGVAS_VALIDATE_H

#include <stddef.h>

#include "core/apierr.h"
#include "core/job.h"

#define CREATE_BODY_MAX (64 * 1024)

typedef struct validate_config {
    const char *const *models; /* allowed model names, NULL-terminated; NULL = {"sd15"} */
    const char *default_model; /* "sd15" when NULL */
} validate_config_t;

/* Parses a JSON create body of len bytes (may contain NULs: they are rejected) into out.
 * Returns 0, or -1 with e filled (400 invalid_json, 422 invalid_argument with field, 413 when
 * len > CREATE_BODY_MAX). seed absent or null: out->seed = -1 (the server picks one).
 * On success out owns its strings (job_params_clear). On error out is cleared. */
int validate_create_body(const char *body, size_t len, const validate_config_t *cfg,
                         job_params_t *out, api_error_t *e);

/* 1 if s is a valid user name: 1..USER_NAME_MAX bytes of [A-Za-z0-9_.-]. */
int validate_user_name(const char *s);

#endif
