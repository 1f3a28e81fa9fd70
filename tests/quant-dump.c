/*
 * quant-dump - our quantizer and dequantizer as a filter, for the
 * cross-checks in scripts/quant-pycheck.py and scripts/quant-fixtures.py:
 *
 *   quant-dump q TYPE N_PER_ROW IN.f32 OUT.bin [IMATRIX.f32]
 *   quant-dump d TYPE N_PER_ROW IN.bin OUT.f32
 *
 * Raw little-endian files; rows of N_PER_ROW elements.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "llmkit/quant.h"
#include "llmkit/tensor.h"
#include "llmkit/util.h"

static void *slurp(const char *path, size_t *n)
{
	char *d;
	if (llm_read_file(path, &d, n)) {
		fprintf(stderr, "quant-dump: cannot read %s\n", path);
		exit(1);
	}
	return d;
}

static void spit(const char *path, const void *d, size_t n)
{
	FILE *f = fopen(path, "wb");
	if (!f || fwrite(d, 1, n, f) != n || fclose(f)) {
		fprintf(stderr, "quant-dump: cannot write %s\n", path);
		exit(1);
	}
}

int main(int argc, char **argv)
{
	if (argc < 6) {
		fprintf(stderr, "usage: quant-dump q|d TYPE N_PER_ROW IN OUT [IMATRIX]\n");
		return 2;
	}
	int t = llm_dtype_from_name(argv[2]);
	long npr = strtol(argv[3], NULL, 10);
	const struct llm_dtype_traits *tr = llm_dtype_traits(t);
	size_t rb = t >= 0 ? llm_row_size(t, npr) : 0;
	if (!tr || !rb || !tr->to_float || !tr->from_float) {
		fprintf(stderr, "quant-dump: bad type or row size\n");
		return 2;
	}
	size_t n;
	void *in = slurp(argv[4], &n);
	if (argv[1][0] == 'q') {
		size_t rows = n / sizeof(float) / npr;
		float *im = argc > 6 ? slurp(argv[6], &n) : NULL;
		void *out = malloc(rows * rb + 1);
		size_t got = llm_quantize(t, in, out, rows, npr, im);
		spit(argv[5], out, got);
		free(out);
		free(im);
	} else {
		size_t rows = n / rb;
		float *out = malloc(rows * npr * sizeof(float) + 1);
		for (size_t r = 0; r < rows; r++)
			tr->to_float((char *)in + r * rb, out + r * npr, npr);
		spit(argv[5], out, rows * npr * sizeof(float));
		free(out);
	}
	free(in);
	return 0;
}
