#include <stdio.h>

#include "cmd.h"

int cmd_loadtest(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "pingvas loadtest: not built yet\n");
    return 2;
}
