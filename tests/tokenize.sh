#!/bin/sh
# tokenize.sh - llm-tokenize on stories260K (and GPT-2's files): expected
# ids (from the reference in scripts/gen-tokenizer-fixtures.py, which agrees
# with llama2.c's encoder), round trips, output formats, exit statuses.
# Skips (77) without the model.

: "${LLMKIT_BIN:=.}"
: "${LLMKIT_DATA:=../shared/data}"
TOK="$LLMKIT_BIN/tools/llm-tokenize"
MODEL="$LLMKIT_DATA/models/stories260K.gguf"
GPT2="$LLMKIT_DATA/tokenizers/gpt2"

if [ ! -r "$MODEL" ]; then
	echo "tokenize.sh: $MODEL not found: skipping"
	exit 77
fi

tmp=$(mktemp -d) || exit 1
trap 'rm -rf "$tmp"' EXIT
fails=0
n=0

check() {   # check NAME EXPECTED ACTUAL
	n=$((n + 1))
	if [ "$2" = "$3" ]; then
		echo "ok $n - $1"
	else
		echo "not ok $n - $1"
		printf '#   expected: %s\n' "$2"
		printf '#   got:      %s\n' "$3"
		fails=$((fails + 1))
	fi
}

status() {  # status NAME EXPECTED_STATUS COMMAND...: run, compare exit status
	name=$1 want=$2
	shift 2
	"$@" > "$tmp/out" 2> "$tmp/err"
	check "$name (exit status)" "$want" "$?"
}

# ids
check "prompt" "1 403 407 261 378" "$("$TOK" -m "$MODEL" -p 'Once upon a time')"
check "no BOS" "403 407 261 378" "$("$TOK" -m "$MODEL" --no-bos -p 'Once upon a time')"
printf 'Lily saw a big dog.\n' > "$tmp/in.txt"
check "file, newline as byte token" "1 317 394 261 370 400 428 426 13" \
	"$("$TOK" -m "$MODEL" -f "$tmp/in.txt")"
check "stdin" "1 317 394 261 370 400 428 426 13" "$("$TOK" -m "$MODEL" < "$tmp/in.txt")"
check "byte fallback" "1 280 412 431 485 410 231 187 153" \
	"$("$TOK" -m "$MODEL" -p 'café 世')"
check "special tokens only with --special" "1 1 320 417 2" \
	"$("$TOK" -m "$MODEL" --special -p '<s>Hi</s>')"
plain=$("$TOK" -m "$MODEL" -p '<s>Hi</s>')
case " $plain " in
*" 2 "*) check "without --special </s> is text" "no EOS" "EOS in: $plain" ;;
*) check "without --special </s> is text" "x" "x" ;;
esac
check "count" "5" "$("$TOK" -m "$MODEL" --count -p 'Once upon a time')"
check "json" "[1, 403, 407, 261, 378]" "$("$TOK" -m "$MODEL" --json -p 'Once upon a time')"

# pieces: id, tab, escaped bytes
"$TOK" -m "$MODEL" --pieces -p 'a
b' > "$tmp/pieces"
check "pieces" "$(printf '1\t<s>\n261\t a\n13\t\\n\n430\tb')" "$(cat "$tmp/pieces")"

# decode and round trips, invalid UTF-8 included
check "decode" "Once upon a time" "$(echo 1 403 407 261 378 | "$TOK" -m "$MODEL" --decode)"
check "decode JSON array" "Once upon a time" \
	"$("$TOK" -m "$MODEL" --decode -p '[1, 403, 407, 261, 378]')"
check "decode special (round-trips with --special)" "<s>Once</s>" \
	"$("$TOK" -m "$MODEL" --decode --special -p '1 403 2')"
check "... and back" "1 403 2" "$("$TOK" -m "$MODEL" --special --no-bos -p '<s>Once</s>')"
printf 'ok \377\376 \342\202 end\n\000x' > "$tmp/bytes"
"$TOK" -m "$MODEL" -f "$tmp/bytes" | "$TOK" -m "$MODEL" --decode > "$tmp/back"
if cmp -s "$tmp/bytes" "$tmp/back"; then r=same; else r=differs; fi
check "invalid UTF-8 round trip (SPM)" same "$r"
if [ -r "$GPT2/encoder.json" ]; then
	check "gpt2" "15496 995 1279 91 437 1659 5239 91 29 340 338" \
		"$("$TOK" --gpt2 "$GPT2" -p "Hello world <|endoftext|> it's")"
	check "gpt2 --special" "15496 995 220 50256 340 338" \
		"$("$TOK" --gpt2 "$GPT2" --special -p "Hello world <|endoftext|> it's")"
	"$TOK" --gpt2 "$GPT2" --pre llama3 -f "$tmp/bytes" |
		"$TOK" --gpt2 "$GPT2" --decode > "$tmp/back"
	if cmp -s "$tmp/bytes" "$tmp/back"; then r=same; else r=differs; fi
	check "invalid UTF-8 round trip (BPE)" same "$r"
fi

# errors
status "id out of range" 1 "$TOK" -m "$MODEL" --decode -p '1 512'
check "message names the id" "yes" "$(grep -q 'token id 512 out of range' "$tmp/err" && echo yes)"
status "not an id" 1 "$TOK" -m "$MODEL" --decode -p '1 x2'
check "message names the word" "yes" "$(grep -q "'x2' is not a token id" "$tmp/err" && echo yes)"
status "missing model" 1 "$TOK" -m "$tmp/nonexistent.gguf" -p hi
check "message names the file" "yes" "$(grep -q nonexistent.gguf "$tmp/err" && echo yes)"
status "no tokenizer in file" 1 "$TOK" -m "$tmp/in.txt" -p hi
status "bad option" 2 "$TOK" -m "$MODEL" --no-such-option
check "usage on stderr" "yes" "$(grep -q "unknown option" "$tmp/err" && echo yes)"
status "no model" 2 "$TOK" -p hi
status "two models" 2 "$TOK" -m "$MODEL" --gpt2 "$GPT2" -p hi
status "-p and -f" 2 "$TOK" -m "$MODEL" -p hi -f "$tmp/in.txt"
status "bad -t" 2 "$TOK" -m "$MODEL" -t zero -p hi
status "help" 0 "$TOK" --help
check "help on stdout" "yes" "$(grep -q -- '--decode' "$tmp/out" && echo yes)"
if [ -w /dev/full ]; then
	status "write error" 1 sh -c "'$TOK' -m '$MODEL' -p hi > /dev/full"
fi

echo "$((n - fails)) passed, $fails failed"
[ "$fails" -eq 0 ]
