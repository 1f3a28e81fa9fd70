/*
 * cli.h - one option table per program, giving both getopt_long parsing and
 * the --help text (as git's OPT_* tables keep help beside the option).
 *
 *   static const struct llm_opt opts[] = {
 *       { 'm', "model",  "FILE", "model to load (GGUF)" },
 *       { 'n', "n-predict", "N", "tokens to generate (default: 128)" },
 *       { OPT_JSON, "json", NULL, "print JSON" },
 *       { 0 }
 *   };
 *   struct llm_cli cli = { "llm-x", "[OPTION]... FILE", "Does x.", opts };
 *   while ((c = llm_cli_next(&cli, argc, argv, &arg)) != -1) switch (c) ...
 *
 * --help and --version are added and handled by llm_cli_next (prints to
 * stdout, exits 0); an unknown option or a missing argument prints a usage
 * line to stderr and exits 2.  Options whose short code is >= 256 have no
 * short form.  A help text starting with "\n" begins a new section whose
 * title is the rest of its first line.
 */
#ifndef LLMKIT_CLI_H
#define LLMKIT_CLI_H

#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

struct llm_opt {
	int code;             /* short option char, or >= 256 for long-only */
	const char *name;     /* long name, without "--" */
	const char *arg;      /* argument name, NULL: takes none */
	const char *help;
};

struct llm_cli {
	const char *prog;
	const char *usage;    /* after the program name */
	const char *summary;  /* one paragraph shown by --help */
	const struct llm_opt *opts;
	const char *epilog;   /* shown after the options (examples), may be NULL */
};

/* Like getopt_long: the next option code, -1 at the end (optind then
 * indexes the operands).  *arg gets the option's argument or NULL. */
int llm_cli_next(const struct llm_cli *cli, int argc, char **argv, const char **arg);
void llm_cli_help(const struct llm_cli *cli, FILE *f);
/* Print "prog: message" to stderr and exit with status 2 (bad usage). */
void llm_cli_usage_error(const struct llm_cli *cli, const char *fmt, ...)
	__attribute__((format(printf, 2, 3), noreturn));
/*
 * --device, the same in every program that computes: "cpu", "cuda" or
 * "cuda:N".  llm_cli_device checks a value (0, or LLM_EINVAL with a
 * message) and stores it in *device for llm_ctx_params.device.
 */
#define LLM_CLI_DEVICE_ARG "DEV"
#define LLM_CLI_DEVICE_HELP "compute on cpu, cuda or cuda:N (GPU N) (default: cpu)"
int llm_cli_device(const char *arg, const char **device);

/* Print "prog: <llm_errmsg()>" to stderr. */
void llm_cli_report(const char *prog);
/* Close stdout, reporting a failed write (full disk, closed pipe); returns
 * the exit status to use: status unchanged, or 1 if stdout failed. */
int llm_cli_finish(const char *prog, int status);

#ifdef __cplusplus
}
#endif
#endif
