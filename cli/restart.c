/* The OpenMP wait-policy restart of the programs (diffuse, the test runner, the benchmarks): process-wide
 * state that the library leaves to its callers. */
#define _POSIX_C_SOURCE 200809L
#include "restart.h"

#include <stdlib.h>
#include <unistd.h>

void cli_prefer_passive_threads(char **argv) {
    if (getenv("OMP_WAIT_POLICY") || !argv || !argv[0]) return;
    if (setenv("OMP_WAIT_POLICY", "passive", 1) != 0) return;
    execv("/proc/self/exe", argv);   /* returns only on failure: carry on with the default policy */
}
