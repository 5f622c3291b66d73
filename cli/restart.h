/* What a program (not the library) does before any work: restart itself once with passive OpenMP waiting.
 * Linked into the diffuse command, the test runner and the benchmarks. */
#ifndef DF_CLI_RESTART_H
#define DF_CLI_RESTART_H

/* GNU OpenMP threads spin while they wait for work; on a machine whose other cores are busy that turns a
 * 1 s step into 10 s. libgomp reads OMP_WAIT_POLICY before main(), so unless the user set it this sets it
 * to "passive" and re-executes the program with the same argv. Returns only if no restart happened (the
 * user chose a policy, or exec failed: the program carries on with the default policy). Call it first in
 * main(), before any thread or file is made. */
void cli_prefer_passive_threads(char **argv);

#endif
