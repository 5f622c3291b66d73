/* Shared pieces of the `diffuse` command: error reporting and the commands' entry points. Each command
 * lives in its own cli/cmd_*.c and is listed in the table in cli/diffuse.c. */
#ifndef DF_CLI_H
#define DF_CLI_H

#include "diffuse.h"

#include <stdio.h>

/* Print "diffuse: <fmt with arg>" on stderr and return 1. */
int cli_die(const char *fmt, const char *arg);
/* Print "diffuse: <df_error()>" on stderr and return 1 (0 if st is DF_OK). */
int cli_fail(df_status st);
/* Parse a whole decimal number in [lo, hi] for option `opt`; prints the error itself. */
int cli_int(const char *opt, const char *text, long lo, long hi, long *out);

int cmd_predict(int argc, char **argv);
int cmd_init(int argc, char **argv);
int cmd_info(int argc, char **argv);

#endif
