# lib.sh - helpers the benchmark scripts share (sourced, not run).

# the load average and how many other tasks are running, for the record
load() {
	awk '{ split($4, r, "/"); printf "%s (%d running)", $1, r[1] - 1 }' /proc/loadavg \
		2>/dev/null || echo "?"
}
# column NAME of the first CSV row matching KEY=VALUE pairs (quoted fields ok)
csv_get() {
	awk -v want="$2" -v conds="$3" '
	function split_csv(line, out,    n, i, c, f, q) {
		n = 0; f = ""; q = 0
		for (i = 1; i <= length(line); i++) {
			c = substr(line, i, 1)
			if (c == "\"") q = !q
			else if (c == "," && !q) { out[++n] = f; f = "" }
			else f = f c
		}
		out[++n] = f
		return n
	}
	NR == 1 { n = split_csv($0, h); for (i = 1; i <= n; i++) col[h[i]] = i; next }
	{
		split_csv($0, v)
		nc = split(conds, cs, " ")
		for (k = 1; k <= nc; k++) {
			split(cs[k], kv, "=")
			if (v[col[kv[1]]] != kv[2]) next
		}
		print v[col[want]]
		exit
	}' "$1"
}
