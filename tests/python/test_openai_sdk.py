"""The official `openai` Python SDK against a running full_gateway on simulated providers.

Run by scripts/sdk-test, which starts the gateway and sets RAMPART_BASE_URL and RAMPART_KEY.
"""

import json
import os
import unittest

import openai

BASE_URL = os.environ["RAMPART_BASE_URL"]
KEY = os.environ["RAMPART_KEY"]
MESSAGES = [{"role": "user", "content": "Say hello to the SDK test"}]


def client(key=KEY):
    return openai.OpenAI(base_url=BASE_URL, api_key=key, max_retries=0, timeout=30)


class OpenAISdk(unittest.TestCase):
    def test_completion(self):
        r = client().chat.completions.create(model="gpt-4.1", messages=MESSAGES, max_tokens=8)
        self.assertEqual(r.object, "chat.completion")
        self.assertEqual(r.model, "gpt-4.1")
        self.assertTrue(r.choices[0].message.content)
        self.assertEqual(r.choices[0].message.role, "assistant")
        self.assertEqual(r.usage.completion_tokens, 8)
        self.assertEqual(r.usage.total_tokens, r.usage.prompt_tokens + r.usage.completion_tokens)

    def test_raw_headers_name_the_served_model(self):
        raw = client().chat.completions.with_raw_response.create(model="deepseek-v3.2", messages=MESSAGES)
        self.assertEqual(raw.headers["x-rampart-model"], "deepseek-v3.2")
        self.assertTrue(raw.headers["x-request-id"])

    def test_stream_without_usage(self):
        stream = client().chat.completions.create(
            model="claude-sonnet-4.5", messages=MESSAGES, max_tokens=6, stream=True
        )
        chunks = list(stream)
        self.assertTrue(chunks)
        self.assertTrue(all(c.usage is None for c in chunks), "usage only when asked")
        self.assertTrue(all(len(c.choices) == 1 for c in chunks))
        text = "".join(c.choices[0].delta.content or "" for c in chunks)
        self.assertEqual(len(text.split()), 6)
        self.assertIn(chunks[-1].choices[0].finish_reason, ("stop", "length"))

    def test_stream_with_usage(self):
        stream = client().chat.completions.create(
            model="gemini-2.5-flash",
            messages=MESSAGES,
            max_tokens=4,
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = list(stream)
        last = chunks[-1]
        self.assertEqual(last.choices, [])
        self.assertEqual(last.usage.completion_tokens, 4)
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        self.assertEqual(len(text.split()), 4)

    def test_models_list(self):
        ids = [m.id for m in client().models.list()]
        self.assertEqual(ids, ["deepseek-v3.2", "gemini-2.5-flash", "gpt-4.1", "claude-sonnet-4.5"])

    def test_bad_request_is_typed(self):
        with self.assertRaises(openai.BadRequestError) as ctx:
            client().chat.completions.create(model="gpt-4.1", messages=MESSAGES, max_tokens="many")
        self.assertEqual(ctx.exception.status_code, 400)
        self.assertEqual(ctx.exception.body["param"], "max_tokens")

    def test_unknown_model_is_typed(self):
        with self.assertRaises(openai.NotFoundError) as ctx:
            client().chat.completions.create(model="gpt-9-ultra", messages=MESSAGES)
        self.assertEqual(ctx.exception.code, "model_not_found")
        self.assertIn("gpt-4.1", ctx.exception.message)

    def test_bad_key_is_typed(self):
        with self.assertRaises(openai.AuthenticationError) as ctx:
            client("sk-not-a-real-key").chat.completions.create(model="gpt-4.1", messages=MESSAGES)
        self.assertEqual(ctx.exception.status_code, 401)
        self.assertNotIn("sk-not-a-real-key", str(ctx.exception))



# A model the gateway serves through a provider speaking Anthropic's native Messages API (the
# simulated provider with `mock = { api = "anthropic" }`); these tests run when the runner names it.
ANTHROPIC_MODEL = os.environ.get("RAMPART_ANTHROPIC_MODEL")


@unittest.skipUnless(ANTHROPIC_MODEL, "set RAMPART_ANTHROPIC_MODEL to a model served natively by Anthropic")
class AnthropicServedModel(unittest.TestCase):
    def test_completion(self):
        raw = client().chat.completions.with_raw_response.create(
            model=ANTHROPIC_MODEL,
            messages=[{"role": "system", "content": "Be brief."}] + MESSAGES,
            max_tokens=6,
        )
        r = raw.parse()
        self.assertEqual(raw.headers["x-rampart-model"], ANTHROPIC_MODEL)
        self.assertEqual(r.object, "chat.completion")
        self.assertTrue(r.id.startswith("msg_"), "answered through the Messages API")
        self.assertEqual(r.choices[0].message.role, "assistant")
        self.assertEqual(len(r.choices[0].message.content.split()), 6)
        self.assertEqual(r.choices[0].finish_reason, "length")
        self.assertEqual(r.usage.completion_tokens, 6)
        self.assertEqual(r.usage.total_tokens, r.usage.prompt_tokens + 6)
        self.assertEqual(r.usage.prompt_tokens_details.cached_tokens, 0)

    def test_stream_with_usage(self):
        stream = client().chat.completions.create(
            model=ANTHROPIC_MODEL,
            messages=MESSAGES,
            max_tokens=5,
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = list(stream)
        self.assertTrue(all(c.object == "chat.completion.chunk" for c in chunks))
        self.assertEqual(chunks[0].choices[0].delta.role, "assistant")
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        self.assertEqual(len(text.split()), 5)
        finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
        self.assertEqual(finishes, ["length"])
        self.assertEqual(chunks[-1].choices, [])
        self.assertEqual(chunks[-1].usage.completion_tokens, 5)

    def test_stream_without_usage(self):
        stream = client().chat.completions.create(model=ANTHROPIC_MODEL, messages=MESSAGES, max_tokens=3, stream=True)
        chunks = list(stream)
        self.assertTrue(all(c.usage is None for c in chunks))
        self.assertEqual(len("".join(c.choices[0].delta.content or "" for c in chunks).split()), 3)

    def test_streamed_tool_call_reassembles(self):
        tools = [{"type": "function", "function": {
            "name": "lookup", "description": "Look something up",
            "parameters": {"type": "object", "properties": {"text": {"type": "string"}}}}}]
        stream = client().chat.completions.create(
            model=ANTHROPIC_MODEL, messages=MESSAGES, max_tokens=4, stream=True,
            tools=tools, tool_choice="required",
        )
        calls = {}
        finish = None
        for c in stream:
            if not c.choices:
                continue
            finish = c.choices[0].finish_reason or finish
            for tc in c.choices[0].delta.tool_calls or []:
                call = calls.setdefault(tc.index, {"id": None, "name": None, "args": ""})
                if tc.id:
                    call["id"], call["name"] = tc.id, tc.function.name
                call["args"] += tc.function.arguments or ""
        self.assertEqual(finish, "tool_calls")
        self.assertEqual(calls[0]["name"], "lookup")
        self.assertEqual(len(json.loads(calls[0]["args"])["text"].split()), 4)
        # The answer to the call goes back as a tool message.
        r = client().chat.completions.create(
            model=ANTHROPIC_MODEL, max_tokens=2, tools=tools, tool_choice="none",
            messages=MESSAGES + [
                {"role": "assistant", "content": None, "tool_calls": [{"id": calls[0]["id"], "type": "function",
                    "function": {"name": "lookup", "arguments": calls[0]["args"]}}]},
                {"role": "tool", "tool_call_id": calls[0]["id"], "content": "found it"},
            ],
        )
        self.assertEqual(r.choices[0].finish_reason, "length")


if __name__ == "__main__":
    unittest.main(verbosity=2)
