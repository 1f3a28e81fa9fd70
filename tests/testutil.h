/*
 * testutil.h - helpers shared by the Check suites: where the data lives,
 * and skipping (exit 77) when it does not.
 */
#ifndef LLMKIT_TESTUTIL_H
#define LLMKIT_TESTUTIL_H

#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

/* Path of a file under $LLMKIT_DATA (default ../shared/data); exits 77
 * (SKIP) when it is missing, so a missing data directory is never a pass. */
static inline const char *test_data(const char *rel)
{
	static char buf[4][4096];
	static int k;
	const char *dir = getenv("LLMKIT_DATA");
	char *p = buf[k++ % 4];
	snprintf(p, 4096, "%s/%s", dir && *dir ? dir : "../shared/data", rel);
	if (access(p, R_OK) != 0) {
		fprintf(stderr, "SKIP: %s not found (set LLMKIT_DATA)\n", p);
		exit(77);
	}
	return p;
}

#define STORIES260K "models/stories260K.gguf"

#ifdef CHECK_H
/* Run a suite; the number of failed checks (0: all passed). */
static inline int test_run(Suite *s)
{
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed;
}
#endif

#endif
