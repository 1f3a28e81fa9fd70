/* cli.c - option tables, --help and exit conventions (see cli.h). */
#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "llmkit/cli.h"
#include "llmkit/error.h"

enum { OPT_HELP = 0x10000, OPT_VERSION };

static size_t n_opts(const struct llm_opt *o)
{
	size_t n = 0;
	while (o[n].name)
		n++;
	return n;
}

void llm_cli_help(const struct llm_cli *cli, FILE *f)
{
	fprintf(f, "Usage: %s %s\n", cli->prog, cli->usage);
	if (cli->summary)
		fprintf(f, "%s\n", cli->summary);
	fprintf(f, "\nOptions:\n");
	for (const struct llm_opt *o = cli->opts; o->name; o++) {
		const char *help = o->help ? o->help : "";
		char left[64];
		if (help[0] == '\n') {
			const char *nl = strchr(help + 1, '\n');
			int len = nl ? (int)(nl - help - 1) : (int)strlen(help + 1);
			fprintf(f, "\n%.*s:\n", len, help + 1);
			help = nl ? nl + 1 : "";
		}
		if (o->code > 0 && o->code < 256)
			snprintf(left, sizeof(left), "-%c, --%s%s%s", o->code, o->name,
			         o->arg ? " " : "", o->arg ? o->arg : "");
		else
			snprintf(left, sizeof(left), "    --%s%s%s", o->name,
			         o->arg ? " " : "", o->arg ? o->arg : "");
		if (strlen(left) > 26)
			fprintf(f, "  %s\n  %-26s  %s\n", left, "", help);
		else
			fprintf(f, "  %-26s  %s\n", left, help);
	}
	fprintf(f, "  %-26s  %s\n", "-h, --help", "show this help and exit");
	fprintf(f, "  %-26s  %s\n", "    --version", "show the version and exit");
	if (cli->epilog)
		fprintf(f, "\n%s\n", cli->epilog);
}

void llm_cli_usage_error(const struct llm_cli *cli, const char *fmt, ...)
{
	va_list ap;
	fprintf(stderr, "%s: ", cli->prog);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\nTry '%s --help' for more information.\n", cli->prog);
	exit(2);
}

void llm_cli_report(const char *prog)
{
	fprintf(stderr, "%s: %s\n", prog, llm_errmsg());
}

int llm_cli_finish(const char *prog, int status)
{
	/* The fflush must come first: fclose alone can lose the error on some
	 * libcs; EPIPE from a closed reader is still a failed write. */
	if (fflush(stdout) != 0 || ferror(stdout)) {
		fprintf(stderr, "%s: write error: %s\n", prog, strerror(errno));
		fclose(stdout);
		return 1;
	}
	if (fclose(stdout) != 0) {
		fprintf(stderr, "%s: write error: %s\n", prog, strerror(errno));
		return 1;
	}
	return status;
}

int llm_cli_next(const struct llm_cli *cli, int argc, char **argv, const char **arg)
{
	/* Built on every call: tables are tiny and parsing is not hot. */
	size_t n = n_opts(cli->opts);
	struct option *lo = calloc(n + 3, sizeof(*lo));
	char shorts[512];
	size_t ns = 0;
	int c;

	LLM_ASSERT(lo);
	shorts[ns++] = ':';   /* report missing arguments as ':' */
	shorts[ns++] = 'h';
	for (size_t i = 0; i < n; i++) {
		const struct llm_opt *o = &cli->opts[i];
		lo[i].name = o->name;
		lo[i].has_arg = o->arg ? required_argument : no_argument;
		lo[i].val = o->code;
		if (o->code > 0 && o->code < 256 && ns + 3 < sizeof(shorts)) {
			shorts[ns++] = (char)o->code;
			if (o->arg)
				shorts[ns++] = ':';
		}
	}
	lo[n] = (struct option){ "help", no_argument, NULL, OPT_HELP };
	lo[n + 1] = (struct option){ "version", no_argument, NULL, OPT_VERSION };
	shorts[ns] = 0;

	opterr = 0;
	int prev = optind;
	c = getopt_long(argc, argv, shorts, lo, NULL);
	free(lo);
	*arg = optarg;
	switch (c) {
	case 'h':
	case OPT_HELP:
		llm_cli_help(cli, stdout);
		exit(llm_cli_finish(cli->prog, 0));
	case OPT_VERSION:
		printf("%s (llmkit) %s\n", cli->prog, PACKAGE_VERSION);
		exit(llm_cli_finish(cli->prog, 0));
	case '?':
		if (optopt && optopt < 256)
			llm_cli_usage_error(cli, "unknown option '-%c'", optopt);
		llm_cli_usage_error(cli, "unknown option '%s'",
		                    prev < argc ? argv[prev] : "?");
	case ':':
		if (optopt && optopt < 256)
			llm_cli_usage_error(cli, "option '-%c' needs an argument", optopt);
		llm_cli_usage_error(cli, "option '%s' needs an argument",
		                    prev < argc ? argv[prev] : "?");
	}
	return c;
}

int llm_cli_device(const char *arg, const char **device)
{
	const char *p;

	if (!strcmp(arg, "cpu") || !strcmp(arg, "cuda")) {
		*device = arg;
		return 0;
	}
	if (!strncmp(arg, "cuda:", 5) && arg[5]) {
		for (p = arg + 5; *p >= '0' && *p <= '9'; p++)
			;
		if (!*p && p - (arg + 5) <= 4) {
			*device = arg;
			return 0;
		}
	}
	return llm_error(LLM_EINVAL, "--device: '%s' is not cpu, cuda or cuda:N", arg);
}
