/* store_pg.c: the PostgreSQL store (issue 5). Until it lands, opening one is a clear error. */
#include "store.h"

#include <stdio.h>

store_t *store_pg_open(const char *url, char *err, size_t errlen)
{
    (void)url;
    snprintf(err, errlen,
             "DATABASE_URL: the PostgreSQL store is not available in this build yet; "
             "use sqlite:///path");
    return NULL;
}
