/*
 * qkernels-simd.h - the SIMD dot kernels for quantized weights, written
 * once and compiled twice by qkernels.c: with AVX2 (maddubs + madd) and
 * with AVX-512 VNNI (vpdpbusd / vpdpwssd on 256-bit vectors).  The
 * includer defines:
 *
 *   QTARGET            the function attribute naming the instruction set
 *   QN(name)           name mangling (name_avx2, name_vnni)
 *   DOT_U8S8(a, u, s)  int32x8 a + sums of four u8 x s8 products
 *   DOT_SCALED(a, p)   int32x8 a + pairs of int16 p times int16 scales:
 *                      DOT_SCALED(a, u, s, sc) = a + madd(maddubs(u, s), sc)
 *
 * Every kernel reads each weight block once and dots it with up to four
 * tokens' activation blocks (NT, a compile-time constant in the inlined
 * copies), so a few tokens cost little more than one.
 */

#define NTMAX 4

QTARGET static inline float QN(hsum)(__m256 v)
{
	__m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
	s = _mm_add_ps(s, _mm_movehl_ps(s, s));
	s = _mm_add_ss(s, _mm_movehdup_ps(s));
	return _mm_cvtss_f32(s);
}

/* 16 bytes of nibbles -> 32 bytes: low nibbles first, then high ones. */
QTARGET static inline __m256i QN(nibbles)(const uint8_t *p)
{
	__m128i t = _mm_loadu_si128((const __m128i *)p);
	__m256i b = _mm256_set_m128i(_mm_srli_epi16(t, 4), t);
	return _mm256_and_si256(b, _mm256_set1_epi8(0x0F));
}

/* 32 bits -> 32 bytes of 0x10 where the bit is set (q5's fifth bit). */
QTARGET static inline __m256i QN(bit16)(const uint8_t *p)
{
	uint32_t v;
	memcpy(&v, p, 4);
	const __m256i shuf = _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202,
	                                       0x0101010101010101, 0x0000000000000000);
	const __m256i bits = _mm256_set1_epi64x((long long)0x8040201008040201ull);
	__m256i b = _mm256_shuffle_epi8(_mm256_set1_epi32((int)v), shuf);
	b = _mm256_cmpeq_epi8(_mm256_and_si256(b, bits), bits);
	return _mm256_and_si256(b, _mm256_set1_epi8(0x10));
}

/* signed w . signed x via |w| . (x with w's sign) */
#define DOT_S8S8(a, w, x) DOT_U8S8(a, _mm256_sign_epi8(w, w), _mm256_sign_epi8(x, w))

/* ---------------------------------------------------------------- 32-blocks */

/*
 * One kernel body per type: UNPACK sets `q` (the block's 32 weights as
 * bytes) and `dw`; DOT multiplies with the activation bytes `xv`; MIN adds
 * the min term (q4_1 / q5_1: m * s of the q8_1 block).
 */
#define QDOT32(T, XT, UNPACK, DOT, MINTERM)                                   \
QTARGET static inline __attribute__((always_inline)) void                     \
QN(dot_##T)(const void *w, const void *x, size_t xs, const int NT, int64_t nb, \
            float *out)                                                       \
{                                                                             \
	const struct llm_block_##T *wb = w;                                   \
	__m256 acc[NTMAX];                                                    \
	float mins[NTMAX] = { 0 };                                            \
	_Pragma("GCC unroll 4") for (int k = 0; k < NT; k++)                  \
		acc[k] = _mm256_setzero_ps();                                 \
	for (int64_t i = 0; i < nb; i++) {                                    \
		__m256i q;                                                    \
		UNPACK;                                                       \
		const float dw = _cvtsh_ss(wb[i].d);                          \
		_Pragma("GCC unroll 4") for (int k = 0; k < NT; k++) {        \
			const struct llm_block_##XT *xb =                     \
			        (const struct llm_block_##XT *)((const char *)x + k * xs) + i; \
			__m256i xv = _mm256_loadu_si256((const __m256i *)xb->qs); \
			__m256i p = DOT(_mm256_setzero_si256(), q, xv);       \
			acc[k] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p),       \
			        _mm256_set1_ps(dw * _cvtsh_ss(xb->d)), acc[k]); \
			MINTERM;                                              \
		}                                                             \
	}                                                                     \
	_Pragma("GCC unroll 4") for (int k = 0; k < NT; k++)                  \
		out[k] = QN(hsum)(acc[k]) + mins[k];                          \
}

#define NOMIN (void)0
#define WITHMIN mins[k] += _cvtsh_ss(wb[i].m) * _cvtsh_ss(xb->s)

QDOT32(q4_0, q8_0, q = _mm256_sub_epi8(QN(nibbles)(wb[i].qs), _mm256_set1_epi8(8)),
       DOT_S8S8, NOMIN)
QDOT32(q4_1, q8_1, q = QN(nibbles)(wb[i].qs), DOT_U8S8, WITHMIN)
QDOT32(q5_0, q8_0, q = _mm256_sub_epi8(_mm256_or_si256(QN(nibbles)(wb[i].qs),
                                                       QN(bit16)(wb[i].qh)),
                                       _mm256_set1_epi8(16)),
       DOT_S8S8, NOMIN)
QDOT32(q5_1, q8_1, q = _mm256_or_si256(QN(nibbles)(wb[i].qs), QN(bit16)(wb[i].qh)),
       DOT_U8S8, WITHMIN)
QDOT32(q8_0, q8_0, q = _mm256_loadu_si256((const __m256i *)wb[i].qs), DOT_S8S8, NOMIN)

/* ---------------------------------------------------------------- k-quants */

/*
 * A super-block unpacked (see quant.c's kgroups): u[c] the 32 unsigned
 * quants of chunk c (elements 32c..32c+31), sc[c] the int16 scales of its
 * two groups of 16 (eight lanes each, as maddubs leaves them), off the
 * per-group offset coefficients that multiply the activation's bsums, d
 * the factor of the scales and doff that of the offsets.
 */
struct QN(kblock) {
	__m256i u[8];
	__m256i sc[8];
	__m256i off;
	float d, doff;
};

QTARGET static inline void QN(kscales)(struct QN(kblock) *b, const int16_t *g,
                                        const int16_t *off)
{
	for (int c = 0; c < 8; c++)
		b->sc[c] = _mm256_set_m128i(_mm_set1_epi16(g[2 * c + 1]),
		                            _mm_set1_epi16(g[2 * c]));
	b->off = _mm256_loadu_si256((const __m256i *)off);
}

QTARGET static inline void QN(kunpack_q2_k)(const struct llm_block_q2_k *w,
                                            struct QN(kblock) *b)
{
	int16_t g[16], off[16];
	const __m256i m3 = _mm256_set1_epi8(3);
	for (int j = 0; j < 16; j++) {
		g[j] = w->scales[j] & 0xF;
		off[j] = w->scales[j] >> 4;
	}
	for (int h = 0; h < 2; h++) {
		__m256i q = _mm256_loadu_si256((const __m256i *)(w->qs + 32 * h));
		b->u[4 * h + 0] = _mm256_and_si256(q, m3);
		b->u[4 * h + 1] = _mm256_and_si256(_mm256_srli_epi16(q, 2), m3);
		b->u[4 * h + 2] = _mm256_and_si256(_mm256_srli_epi16(q, 4), m3);
		b->u[4 * h + 3] = _mm256_and_si256(_mm256_srli_epi16(q, 6), m3);
	}
	QN(kscales)(b, g, off);
	b->d = _cvtsh_ss(w->d);
	b->doff = _cvtsh_ss(w->dmin);
}

QTARGET static inline void QN(kunpack_q3_k)(const struct llm_block_q3_k *w,
                                            struct QN(kblock) *b)
{
	int8_t sc[16];
	int16_t g[16], off[16];
	const __m256i m3 = _mm256_set1_epi8(3), m4 = _mm256_set1_epi8(4);
	llm_q3k_scales(w->scales, sc);
	for (int j = 0; j < 16; j++) {
		g[j] = sc[j];
		off[j] = (int16_t)(sc[j] * 4);
	}
	__m256i hm = _mm256_loadu_si256((const __m256i *)w->hmask);
	for (int h = 0; h < 2; h++) {
		__m256i q = _mm256_loadu_si256((const __m256i *)(w->qs + 32 * h));
		for (int s = 0; s < 4; s++) {
			int bit = 4 * h + s;
			__m256i lo = _mm256_and_si256(_mm256_srli_epi16(q, 2 * s), m3);
			__m256i hi = _mm256_and_si256(bit >= 2 ? _mm256_srli_epi16(hm, bit - 2)
			                                       : _mm256_slli_epi16(hm, 2 - bit), m4);
			b->u[bit] = _mm256_or_si256(lo, hi);
		}
	}
	QN(kscales)(b, g, off);
	b->d = b->doff = _cvtsh_ss(w->d);
}

QTARGET static inline void QN(kscales_q45)(const uint8_t *scales, int16_t *g, int16_t *off)
{
	for (int j = 0; j < 8; j++) {
		uint8_t sc, m;
		llm_q4k_scale_min(j, scales, &sc, &m);
		g[2 * j] = g[2 * j + 1] = sc;
		off[2 * j] = off[2 * j + 1] = m;
	}
}

QTARGET static inline void QN(kunpack_q4_k)(const struct llm_block_q4_k *w,
                                            struct QN(kblock) *b)
{
	int16_t g[16], off[16];
	const __m256i mf = _mm256_set1_epi8(0x0F);
	QN(kscales_q45)(w->scales, g, off);
	for (int j = 0; j < 4; j++) {
		__m256i q = _mm256_loadu_si256((const __m256i *)(w->qs + 32 * j));
		b->u[2 * j] = _mm256_and_si256(q, mf);
		b->u[2 * j + 1] = _mm256_and_si256(_mm256_srli_epi16(q, 4), mf);
	}
	QN(kscales)(b, g, off);
	b->d = _cvtsh_ss(w->d);
	b->doff = _cvtsh_ss(w->dmin);
}

QTARGET static inline void QN(kunpack_q5_k)(const struct llm_block_q5_k *w,
                                            struct QN(kblock) *b)
{
	int16_t g[16], off[16];
	const __m256i mf = _mm256_set1_epi8(0x0F), m16 = _mm256_set1_epi8(0x10);
	QN(kscales_q45)(w->scales, g, off);
	__m256i hv = _mm256_loadu_si256((const __m256i *)w->qh);
	for (int j = 0; j < 4; j++) {
		__m256i q = _mm256_loadu_si256((const __m256i *)(w->qs + 32 * j));
		/* bit 2j to bit 4, bit 2j+1 to bit 4 */
		__m256i h0 = 2 * j <= 4 ? _mm256_slli_epi16(hv, 4 - 2 * j)
		                        : _mm256_srli_epi16(hv, 2 * j - 4);
		__m256i h1 = 2 * j + 1 <= 4 ? _mm256_slli_epi16(hv, 3 - 2 * j)
		                            : _mm256_srli_epi16(hv, 2 * j - 3);
		b->u[2 * j] = _mm256_or_si256(_mm256_and_si256(q, mf),
		                              _mm256_and_si256(h0, m16));
		b->u[2 * j + 1] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(q, 4), mf),
		                                  _mm256_and_si256(h1, m16));
	}
	QN(kscales)(b, g, off);
	b->d = _cvtsh_ss(w->d);
	b->doff = _cvtsh_ss(w->dmin);
}

QTARGET static inline void QN(kunpack_q6_k)(const struct llm_block_q6_k *w,
                                            struct QN(kblock) *b)
{
	int16_t g[16], off[16];
	const __m256i mf = _mm256_set1_epi8(0x0F), m30 = _mm256_set1_epi8(0x30);
	for (int j = 0; j < 16; j++) {
		g[j] = w->scales[j];
		off[j] = (int16_t)(w->scales[j] * 32);
	}
	for (int h = 0; h < 2; h++) {
		__m256i l0 = _mm256_loadu_si256((const __m256i *)(w->ql + 64 * h));
		__m256i l1 = _mm256_loadu_si256((const __m256i *)(w->ql + 64 * h + 32));
		__m256i qh = _mm256_loadu_si256((const __m256i *)(w->qh + 32 * h));
		b->u[4 * h + 0] = _mm256_or_si256(_mm256_and_si256(l0, mf),
		        _mm256_and_si256(_mm256_slli_epi16(qh, 4), m30));
		b->u[4 * h + 1] = _mm256_or_si256(_mm256_and_si256(l1, mf),
		        _mm256_and_si256(_mm256_slli_epi16(qh, 2), m30));
		b->u[4 * h + 2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), mf),
		        _mm256_and_si256(qh, m30));
		b->u[4 * h + 3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), mf),
		        _mm256_and_si256(_mm256_srli_epi16(qh, 2), m30));
	}
	QN(kscales)(b, g, off);
	b->d = b->doff = _cvtsh_ss(w->d);
}

#define QDOTK(T)                                                              \
QTARGET static inline __attribute__((always_inline)) void                     \
QN(dot_##T)(const void *w, const void *x, size_t xs, const int NT, int64_t nb, \
            float *out)                                                       \
{                                                                             \
	const struct llm_block_##T *wb = w;                                   \
	__m256 acc[NTMAX];                                                    \
	struct QN(kblock) b;                                                  \
	_Pragma("GCC unroll 4") for (int k = 0; k < NT; k++)                  \
		acc[k] = _mm256_setzero_ps();                                 \
	for (int64_t i = 0; i < nb; i++) {                                    \
		QN(kunpack_##T)(&wb[i], &b);                                  \
		_Pragma("GCC unroll 4") for (int k = 0; k < NT; k++) {        \
			const struct llm_block_q8_k *xb =                     \
			        (const struct llm_block_q8_k *)((const char *)x + k * xs) + i; \
			__m256i is = _mm256_setzero_si256();                  \
			_Pragma("GCC unroll 8") for (int c = 0; c < 8; c++)   \
				is = DOT_SCALED(is, b.u[c], _mm256_loadu_si256( \
				        (const __m256i *)(xb->qs + 32 * c)), b.sc[c]); \
			__m256i io = _mm256_madd_epi16(_mm256_loadu_si256(     \
			        (const __m256i *)xb->bsums), b.off);          \
			acc[k] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(is),      \
			        _mm256_set1_ps(b.d * xb->d), acc[k]);         \
			acc[k] = _mm256_fnmadd_ps(_mm256_cvtepi32_ps(io),     \
			        _mm256_set1_ps(b.doff * xb->d), acc[k]);      \
		}                                                             \
	}                                                                     \
	_Pragma("GCC unroll 4") for (int k = 0; k < NT; k++)                  \
		out[k] = QN(hsum)(acc[k]);                                    \
}

QDOTK(q2_k)
QDOTK(q3_k)
QDOTK(q4_k)
QDOTK(q5_k)
QDOTK(q6_k)

/*
 * q4_k against one token (decoding): everything in registers.  The twelve
 * scale bytes hold eight 6-bit scales and eight 6-bit mins; as 32-bit
 * words a, b, c (bytes 0-3, 4-7, 8-11):
 *
 *   scales 0-3 = a & 0x3f...   scales 4-7 = (c & 0x0f...) | (a >> 6 & 0x03...) << 4
 *   mins 0-3   = b & 0x3f...   mins 4-7   = (c >> 4 & 0x0f...) | (b >> 6 & 0x03...) << 4
 *
 * Chunk c (elements 32c..32c+31) takes scale c; the mins multiply the
 * activation's sums over 16 (bsums), each min covering two of them.
 */
QTARGET static inline __attribute__((always_inline)) void
QN(dot1_q4_k)(const void *w, const void *x, size_t xs, const int NT, int64_t nb,
              float *out)
{
	(void)xs;
	(void)NT;
	const struct llm_block_q4_k *wb = w;
	const struct llm_block_q8_k *xb = x;
	const __m256i mf = _mm256_set1_epi8(0x0F);
	__m256 acc = _mm256_setzero_ps();
	for (int64_t i = 0; i < nb; i++) {
		uint32_t a, b, c;
		memcpy(&a, wb[i].scales, 4);
		memcpy(&b, wb[i].scales + 4, 4);
		memcpy(&c, wb[i].scales + 8, 4);
		const uint32_t k3f = 0x3f3f3f3fu, k0f = 0x0f0f0f0fu, k03 = 0x03030303u;
		uint64_t sc = (uint64_t)(a & k3f) |
		              (uint64_t)((c & k0f) | ((a >> 6 & k03) << 4)) << 32;
		uint64_t mn = (uint64_t)(b & k3f) |
		              (uint64_t)((c >> 4 & k0f) | ((b >> 6 & k03) << 4)) << 32;
		/* scales as eight int16 in both lanes; mins doubled, as sixteen */
		__m128i sc16 = _mm_cvtepu8_epi16(_mm_cvtsi64_si128((long long)sc));
		__m256i scv = _mm256_set_m128i(sc16, sc16);
		__m128i m8 = _mm_cvtsi64_si128((long long)mn);
		__m256i mv = _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(m8, m8));
		__m256i is = _mm256_setzero_si256();
		_Pragma("GCC unroll 4") for (int j = 0; j < 4; j++) {
			__m256i q = _mm256_loadu_si256((const __m256i *)(wb[i].qs + 32 * j));
			__m256i lo = _mm256_and_si256(q, mf);
			__m256i hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), mf);
			/* int16 scale 2j and 2j+1 broadcast */
			__m256i s0 = _mm256_shuffle_epi8(scv, _mm256_set1_epi16(
			        (short)((4 * j + 1) << 8 | 4 * j)));
			__m256i s1 = _mm256_shuffle_epi8(scv, _mm256_set1_epi16(
			        (short)((4 * j + 3) << 8 | (4 * j + 2))));
			is = DOT_SCALED(is, lo, _mm256_loadu_si256(
			        (const __m256i *)(xb[i].qs + 64 * j)), s0);
			is = DOT_SCALED(is, hi, _mm256_loadu_si256(
			        (const __m256i *)(xb[i].qs + 64 * j + 32)), s1);
		}
		__m256i io = _mm256_madd_epi16(_mm256_loadu_si256(
		        (const __m256i *)xb[i].bsums), mv);
		const float xd = xb[i].d;
		acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(is),
		                      _mm256_set1_ps(_cvtsh_ss(wb[i].d) * xd), acc);
		acc = _mm256_fnmadd_ps(_mm256_cvtepi32_ps(io),
		                       _mm256_set1_ps(_cvtsh_ss(wb[i].dmin) * xd), acc);
	}
	out[0] = QN(hsum)(acc);
}

/* ---------------------------------------------------------------- rows */

#define QROWS1(T, BS, DOT1)                                                       \
QTARGET static void QN(qrows_##T)(const void *w, size_t row_bytes, int64_t n_in, \
                                  int64_t r0, int64_t r1, const void *xq,     \
                                  size_t xs, int n_tok, float *y, int64_t ldy) \
{                                                                             \
	int64_t nb = n_in / (BS);                                             \
	float out[NTMAX];                                                     \
	for (int64_t r = r0; r < r1; r++) {                                   \
		const char *wr = (const char *)w + r * row_bytes;             \
		for (int t = 0; t < n_tok; t += NTMAX) {                      \
			const char *xt = (const char *)xq + t * xs;           \
			int nt = n_tok - t < NTMAX ? n_tok - t : NTMAX;       \
			switch (nt) {                                         \
			case 1: DOT1(wr, xt, xs, 1, nb, out); break;          \
			case 2: QN(dot_##T)(wr, xt, xs, 2, nb, out); break;   \
			case 3: QN(dot_##T)(wr, xt, xs, 3, nb, out); break;   \
			default: QN(dot_##T)(wr, xt, xs, 4, nb, out); break;  \
			}                                                     \
			for (int k = 0; k < nt; k++)                          \
				y[(t + k) * ldy + r] = out[k];                \
		}                                                             \
	}                                                                     \
}

#define QROWS(T, BS) QROWS1(T, BS, QN(dot_##T))

QROWS(q4_0, 32)
QROWS(q4_1, 32)
QROWS(q5_0, 32)
QROWS(q5_1, 32)
QROWS(q8_0, 32)
QROWS(q2_k, 256)
QROWS(q3_k, 256)
QROWS1(q4_k, 256, QN(dot1_q4_k))
QROWS(q5_k, 256)
QROWS(q6_k, 256)

/* ---------------------------------------------------------------- activations */

/* roundf (half away from zero), exactly: trunc, then step out when the
 * remainder (exact) reaches one half. */
QTARGET static inline __m256 QN(roundf8)(__m256 v)
{
	__m256 t = _mm256_round_ps(v, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
	__m256 r = _mm256_sub_ps(v, t);
	__m256 sgn = _mm256_and_ps(v, _mm256_set1_ps(-0.0f));
	__m256 one = _mm256_or_ps(_mm256_set1_ps(1.0f), sgn);
	__m256 big = _mm256_cmp_ps(_mm256_andnot_ps(_mm256_set1_ps(-0.0f), r),
	                           _mm256_set1_ps(0.5f), _CMP_GE_OQ);
	return _mm256_add_ps(t, _mm256_and_ps(big, one));
}

/* 32 int32 in four vectors -> 32 int8 in order */
QTARGET static inline __m256i QN(pack32)(__m256i a, __m256i b, __m256i c, __m256i d)
{
	__m256i ab = _mm256_packs_epi32(a, b), cd = _mm256_packs_epi32(c, d);
	__m256i v = _mm256_packs_epi16(ab, cd);
	return _mm256_permutevar8x32_epi32(v, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

QTARGET static inline float QN(amax32)(const float *x, __m256 *v)
{
	const __m256 sign = _mm256_set1_ps(-0.0f);
	__m256 m = _mm256_setzero_ps();
	for (int j = 0; j < 4; j++) {
		v[j] = _mm256_loadu_ps(x + 8 * j);
		m = _mm256_max_ps(m, _mm256_andnot_ps(sign, v[j]));
	}
	__m128 h = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
	h = _mm_max_ps(h, _mm_movehl_ps(h, h));
	h = _mm_max_ss(h, _mm_movehdup_ps(h));
	return _mm_cvtss_f32(h);
}

/* q8_0 / q8_1 as the reference computes them (amax / 127, roundf) */
QTARGET static inline __m256i QN(q8_32)(const float *x, float *dout)
{
	__m256 v[4];
	__m256i q[4];
	const float d = QN(amax32)(x, v) / 127;
	const float id = d ? 1.0f / d : 0.0f;
	for (int j = 0; j < 4; j++)
		q[j] = _mm256_cvttps_epi32(QN(roundf8)(_mm256_mul_ps(v[j], _mm256_set1_ps(id))));
	*dout = d;
	return QN(pack32)(q[0], q[1], q[2], q[3]);
}

QTARGET static void QN(quantize_q8_0)(const float *x, void *dst, int64_t n)
{
	struct llm_block_q8_0 *y = dst;
	for (int64_t i = 0; i < n / 32; i++) {
		float d;
		__m256i q = QN(q8_32)(x + 32 * i, &d);
		y[i].d = _cvtss_sh(d, 0);
		_mm256_storeu_si256((__m256i *)y[i].qs, q);
	}
}

QTARGET static void QN(quantize_q8_1)(const float *x, void *dst, int64_t n)
{
	struct llm_block_q8_1 *y = dst;
	for (int64_t i = 0; i < n / 32; i++) {
		float d;
		__m256i q = QN(q8_32)(x + 32 * i, &d);
		y[i].d = _cvtss_sh(d, 0);
		_mm256_storeu_si256((__m256i *)y[i].qs, q);
		__m256i s16 = _mm256_maddubs_epi16(_mm256_set1_epi8(1), q);
		__m256i s32 = _mm256_madd_epi16(s16, _mm256_set1_epi16(1));
		__m128i s = _mm_add_epi32(_mm256_castsi256_si128(s32),
		                          _mm256_extracti128_si256(s32, 1));
		s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
		s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
		y[i].s = _cvtss_sh(_mm_cvtsi128_si32(s) * d, 0);
	}
}

/* q8_k: scale from the signed extreme (-127 / max), round to nearest
 * even (the magic-number rounding of the reference), group sums. */
QTARGET static void QN(quantize_q8_k)(const float *x, void *dst, int64_t n)
{
	struct llm_block_q8_k *y = dst;
	const __m256 sign = _mm256_set1_ps(-0.0f);
	for (int64_t i = 0; i < n / 256; i++, x += 256) {
		__m256 m = _mm256_setzero_ps();
		for (int j = 0; j < 256; j += 8)
			m = _mm256_max_ps(m, _mm256_andnot_ps(sign, _mm256_loadu_ps(x + j)));
		__m128 h = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
		h = _mm_max_ps(h, _mm_movehl_ps(h, h));
		h = _mm_max_ss(h, _mm_movehdup_ps(h));
		float amax = _mm_cvtss_f32(h), max = 0;
		if (!amax) {
			memset(&y[i], 0, sizeof(y[i]));
			continue;
		}
		for (int j = 0; j < 256; j++)     /* the first element of that magnitude */
			if (fabsf(x[j]) == amax) {
				max = x[j];
				break;
			}
		const float iscale = -127.f / max;
		const __m256 is = _mm256_set1_ps(iscale);
		for (int j = 0; j < 256; j += 32) {
			__m256i q[4];
			for (int k = 0; k < 4; k++)
				q[k] = _mm256_min_epi32(_mm256_cvtps_epi32(_mm256_mul_ps(is,
				        _mm256_loadu_ps(x + j + 8 * k))), _mm256_set1_epi32(127));
			__m256i v = QN(pack32)(q[0], q[1], q[2], q[3]);
			_mm256_storeu_si256((__m256i *)(y[i].qs + j), v);
			/* sums of each 16: maddubs by ones gives pairs, then madd */
			__m256i s16 = _mm256_maddubs_epi16(_mm256_set1_epi8(1), v);
			__m256i s32 = _mm256_madd_epi16(s16, _mm256_set1_epi16(1));
			/* lanes 0..3 sum bytes 0..15, 4..7 bytes 16..31 */
			__m128i lo = _mm256_castsi256_si128(s32), hi = _mm256_extracti128_si256(s32, 1);
			lo = _mm_hadd_epi32(lo, hi);
			lo = _mm_hadd_epi32(lo, lo);
			y[i].bsums[j / 16] = (int16_t)_mm_extract_epi32(lo, 0);
			y[i].bsums[j / 16 + 1] = (int16_t)_mm_extract_epi32(lo, 1);
		}
		y[i].d = 1 / iscale;
	}
}

#undef NTMAX
#undef DOT_S8S8
#undef QDOT32
#undef QDOTK
#undef QROWS
#undef NOMIN
#undef WITHMIN
