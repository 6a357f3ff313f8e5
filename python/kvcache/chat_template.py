"""Rendering a Hugging Face chat template (the Jinja text in tokenizer_config.json, chat_template.jinja or a GGUF's
tokenizer.chat_template) into the prompt string, as transformers' apply_chat_template(..., tokenize=False) does.

This module owns the Jinja environment: the same sandbox, options, filters and globals as transformers'
utils/chat_template_utils.py (_compile_jinja_template, render_jinja_template), the checks of the messages, and
turning a template's own errors into ValueErrors.
"""

from __future__ import annotations

import json
from datetime import datetime
from functools import lru_cache
from typing import Any, Mapping

import jinja2
import jinja2.exceptions
import jinja2.ext
import jinja2.nodes
import jinja2.utils
from jinja2.sandbox import ImmutableSandboxedEnvironment

# Older names for a message's reasoning; transformers copies it under "reasoning_content" and "thinking".
_REASONING_FIELDS = ("reasoning_content", "thinking", "reasoning")


def render_chat(template: str, messages: list, *, add_generation_prompt: bool = True, bos_token: str = "",
                eos_token: str = "", **extra) -> str:
    """The prompt `template` makes of `messages` (dicts with str "role" and "content"). extra: more variables the
    template reads (tools as JSON-schema dicts, documents, unk_token, enable_thinking...). A template error is a
    ValueError."""
    if not isinstance(template, str):
        raise TypeError(f"template must be a str, got {type(template).__name__}")
    chat = _alias_reasoning_fields(_check_messages(messages))
    variables = {"bos_token": bos_token, "eos_token": eos_token, "tools": None, "documents": None, **extra}
    variables = {name: _plain(value) for name, value in variables.items()}
    compiled = _compile(template)
    try:
        return compiled.render(messages=chat, add_generation_prompt=bool(add_generation_prompt), **variables)
    except jinja2.exceptions.TemplateError as e:  # raise_exception(...), an undefined name, a sandbox refusal
        raise ValueError(f"chat template error: {e}") from None


def _check_messages(messages) -> list:
    """A fresh list of plain dicts (the template never sees the caller's objects), keys whose value is None
    dropped, as transformers does (many templates print a None content as "None")."""
    if isinstance(messages, (str, bytes)) or not isinstance(messages, (list, tuple)):
        raise TypeError(f"messages must be a list of dicts, got {type(messages).__name__} {messages!r:.80}")
    if not messages:  # transformers refuses it too: no template renders anything sensible from nothing
        raise ValueError("messages is empty: a chat needs at least one message")
    chat = []
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping):
            raise TypeError(f"messages[{i}] must be a dict with 'role' and 'content', got "
                            f"{type(message).__name__} {message!r:.80}")
        for key in ("role", "content"):
            if key not in message:
                raise ValueError(f"messages[{i}] has no {key!r}: {dict(message)!r:.120}")
            if not isinstance(message[key], str):
                raise TypeError(f"messages[{i}][{key!r}] must be a str, got {type(message[key]).__name__} "
                                f"{message[key]!r:.80}")
        chat.append({key: _plain(value) for key, value in message.items() if value is not None})
    return chat


def _alias_reasoning_fields(chat: list) -> list:
    """transformers fills "reasoning_content" (what templates read) and "thinking" (gpt-oss) from older names."""
    aliased = []
    for message in chat:
        reasoning = next((message[key] for key in _REASONING_FIELDS if message.get(key) is not None), None)
        if reasoning is not None:
            message = {"thinking": reasoning, **message, "reasoning_content": reasoning}
        aliased.append(message)
    return aliased


def _plain(value: Any) -> Any:
    """Only plain JSON-like data reaches the sandbox (transformers' _plain_template_data): other objects carry
    methods it does not know are unsafe, so they become a placeholder naming their type."""
    if value is None or type(value) in (str, int, float, bool):
        return value
    if isinstance(value, str):  # subclasses (enums...) back to the base type
        return str.__str__(value)
    if isinstance(value, int):
        return int.__int__(value)
    if isinstance(value, float):
        return float.__float__(value)
    if isinstance(value, Mapping):
        return {_plain(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_plain(v) for v in value)
    item = getattr(value, "item", None)  # a numpy scalar: np.bool_(False) must stay falsy
    if callable(item) and type(value).__module__ == "numpy":
        return _plain(item())
    return f"<{type(value).__name__}>"


# ---------------------------------------------------------------------------------------------------------------------
# the environment


class _GenerationTag(jinja2.ext.Extension):
    """{% generation %}...{% endgeneration %} (transformers' AssistantTracker marks assistant text with it):
    rendered as its body, since nothing here asks for the assistant mask."""

    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(["name:endgeneration"], drop_needle=True)
        return jinja2.nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

    def _body(self, caller):
        return caller()


class _TemplateDict:
    """dict() in a template, without dict's attributes to climb out of the sandbox by."""

    def __call__(self, *args, **kwargs):
        return dict(*args, **kwargs)

    def fromkeys(self, *args, **kwargs):
        return dict.fromkeys(*args, **kwargs)


class _TemplateNamespace(jinja2.utils.Namespace):
    """namespace() refusing underscore-prefixed attributes (a way to CPython internals)."""

    def __init__(*args, **kwargs):  # Jinja's own signature trick, so that namespace(self=...) still works
        self, args = args[0], args[1:]
        attrs = dict(*args, **kwargs)
        for name in attrs:
            _TemplateNamespace._check_name(name)
        jinja2.utils.Namespace.__init__(self, attrs)

    def __setitem__(self, name, value):
        _TemplateNamespace._check_name(name)
        jinja2.utils.Namespace.__setitem__(self, name, value)

    @staticmethod
    def _check_name(name):
        if isinstance(name, str) and name.startswith("_"):
            raise jinja2.exceptions.SecurityError(
                f"chat templates cannot store underscore-prefixed attributes on a namespace, got {name!r}")


def _raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)


def _tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    # Jinja's own tojson escapes HTML characters (< becomes \u003c), which would change the prompt.
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _strftime_now(format):
    return datetime.now().strftime(format)


@lru_cache(maxsize=32)
def _compile(template: str) -> jinja2.Template:
    """The compiled template, once per template text. A syntax error is a ValueError (not cached: raised anew)."""
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[_GenerationTag, jinja2.ext.loopcontrols])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    env.globals["dict"] = _TemplateDict()
    env.globals["namespace"] = _TemplateNamespace
    try:
        return env.from_string(template)
    except jinja2.exceptions.TemplateSyntaxError as e:
        raise ValueError(f"chat template syntax error at line {e.lineno}: {e.message}") from None
