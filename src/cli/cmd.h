/* cmd.h: commands implemented outside main.c. Each returns the process exit status. */
#ifndef PINGVAS_CMD_H
#define PINGVAS_CMD_H

int cmd_loadtest(int argc, char **argv);
int cmd_autoscale(int argc, char **argv);
int cmd_simulate(int argc, char **argv);

#endif
