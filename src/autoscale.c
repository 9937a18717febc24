#include <stdio.h>

#include "cmd.h"

int cmd_autoscale(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "pingvas autoscale: not built yet\n");
    return 2;
}
