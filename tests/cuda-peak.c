/*
 * cuda-peak - the GPU's roofline numbers for scripts/bench/cuda.sh: copy
 * bandwidth (bytes read + written per second) and the cuBLAS peak of the
 * prefill product (f16 in, f32 sums), one line each.  Exit 77 without a
 * device.
 */
#include <stdio.h>

#include "llmkit/backend.h"
#include "llmkit/error.h"

int main(void)
{
	double bw, fl;

	if (llm_cuda_device_count() < 1) {
		fprintf(stderr, "cuda-peak: no CUDA device\n");
		return 77;
	}
	if (llm_cuda_membw(0, 10, &bw) || llm_cuda_gemm_peak(0, 5, &fl)) {
		fprintf(stderr, "cuda-peak: %s\n", llm_errmsg());
		return 1;
	}
	printf("membw_bytes_per_s %.6g\n", bw);
	printf("gemm_flops %.6g\n", fl);
	return 0;
}
