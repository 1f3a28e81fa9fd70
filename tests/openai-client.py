#!/usr/bin/env python3
"""The official openai Python client against llm-batchd (base URL in argv[1],
API key in argv[2], greedy reference text in argv[3]): completions and chat,
streaming and not, usage counts, and an error status surfacing as the
client's exception."""
import sys

import openai

base, key, want = sys.argv[1], sys.argv[2], sys.argv[3]
client = openai.OpenAI(base_url=base + "/v1", api_key=key, max_retries=0)
fails = 0


def check(name, cond):
    global fails
    print(("ok: " if cond else "FAIL: ") + name)
    fails += 0 if cond else 1


models = client.models.list()
check("models.list", [m.id for m in models.data] == ["stories260K"])

c = client.completions.create(model="stories260K", prompt="Once upon a time",
                              max_tokens=24, temperature=0)
check("completions.create text", c.choices[0].text == want)
check("completions usage", c.usage.completion_tokens == 24 and
      c.usage.total_tokens == c.usage.prompt_tokens + 24)
check("completions finish_reason", c.choices[0].finish_reason == "length")

text = "".join(ch.choices[0].text for ch in client.completions.create(
    model="stories260K", prompt="Once upon a time", max_tokens=24,
    temperature=0, stream=True) if ch.choices)
check("completions stream", text == want)

msgs = [{"role": "system", "content": "You tell stories."},
        {"role": "user", "content": "Tell me one."}]
r = client.chat.completions.create(model="stories260K", messages=msgs,
                                   max_tokens=12, temperature=0, seed=1)
whole = r.choices[0].message.content
check("chat.completions.create", r.choices[0].message.role == "assistant" and
      len(whole) > 0 and r.usage.completion_tokens == 12)

parts, usage = [], None
for ch in client.chat.completions.create(model="stories260K", messages=msgs,
                                         max_tokens=12, temperature=0, seed=1,
                                         stream=True,
                                         stream_options={"include_usage": True}):
    if ch.usage:
        usage = ch.usage
    for choice in ch.choices:
        if choice.delta.content:
            parts.append(choice.delta.content)
check("chat stream = chat reply", "".join(parts) == whole)
check("chat stream usage", usage is not None and usage.completion_tokens == 12)

r = client.chat.completions.create(model="stories260K", messages=msgs,
                                   max_tokens=5, logprobs=True, top_logprobs=3)
lp = r.choices[0].logprobs.content
check("chat logprobs", len(lp) == 5 and len(lp[0].top_logprobs) == 3 and
      all(t.logprob <= 0 for t in lp))

try:
    client.completions.create(model="stories260K", prompt="x", temperature=7)
    check("bad request raises", False)
except openai.BadRequestError as e:
    check("bad request raises BadRequestError", e.status_code == 400)

try:
    openai.OpenAI(base_url=base + "/v1", api_key="wrong",
                  max_retries=0).models.list()
    check("wrong key raises", False)
except openai.AuthenticationError:
    check("wrong key raises AuthenticationError", True)

sys.exit(1 if fails else 0)
