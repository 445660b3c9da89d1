"""The `text_model_group` of a text model: its name without backend, author and noise parts.

A heuristic copied from upstream: size, version, quantisation, variant and date parts are
stripped from the model name, so that e.g. `koboldcpp/Org/Model-7B-v1.2-GGUF` groups as `Model`.
"""

from __future__ import annotations

import re
from typing import Final

# Name prefixes of the duplicate text entries generated per backend; not records of their own.
TEXT_BACKEND_PREFIXES: Final = ("aphrodite/", "koboldcpp/")


_I = re.IGNORECASE
_LEADING_VERSION: Final = re.compile(r"^\d+\.\d+(?:\.\d+)?[_\-]")

# Parts stripped from a model name, in this order; from each group the first pattern that
# matches anywhere removes its first match (size, version, quantisation, variant, date).
_NAME_NOISE: Final[tuple[tuple[re.Pattern[str], ...], ...]] = tuple(
    tuple(re.compile(pattern, flags) for pattern in patterns)
    for flags, patterns in (
        (
            _I,
            (
                r"(?<![a-zA-Z])\d+\.?\d*[BMK]\d*(?![a-zA-Z])",
                r"(?<![a-zA-Z])\d+x\d+[BMK](?![a-zA-Z])",
            ),
        ),
        (
            _I,
            (
                r"(?<![a-zA-Z0-9])[vV]\d+(?:\.\d+)+(?![a-zA-Z0-9])",
                r"(?<![a-zA-Z0-9])[vV]\d+(?![a-zA-Z0-9.])",
            ),
        ),
        (
            _I,
            (
                r"\bQ[2-8]_K(?:_[SMLH])?\b",
                r"\bQ[2-8]_[01]\b",
                r"\bQ[2-8]\b",
                r"\b(?:GGUF|GGML|GPTQ|AWQ|EXL2)\b",
                r"\b(?:fp16|fp32|int8|int4)\b",
            ),
        ),
        (
            _I,
            (
                r"\b(?:Instruct|Chat|Code|Base|Uncensored|Finetune|FT)\b",
                r"\b(?:Thinking|Reasoning)\b",
                r"\b(?:turbo|preview|latest)\b",
            ),
        ),
        (
            0,
            (
                r"(?<![a-zA-Z0-9])\d{2}-\d{4}(?![a-zA-Z0-9])",
                r"(?<![a-zA-Z0-9])\d{4}-\d{2}(?![a-zA-Z0-9])",
                r"(?<![a-zA-Z0-9])\d{4}(?![a-zA-Z0-9])",
            ),
        ),
    )
)
_NAME_SEPARATORS: Final = ("-", "_", " ", ".")


def _remove_first_hit(text: str, patterns: tuple[re.Pattern[str], ...]) -> str:
    for pattern in patterns:
        hit = pattern.search(text)
        if hit:
            return text[: hit.start()] + text[hit.end() :]
    return text


def _tidy_separators(text: str) -> str:
    for separator in _NAME_SEPARATORS:
        doubled = separator * 2
        while doubled in text:
            text = text.replace(doubled, separator)
    return text.strip("".join(_NAME_SEPARATORS))


def base_model_name(model_name: str) -> str:
    """A model name without leading version, size, version, quantisation, variant and date."""
    rest = _LEADING_VERSION.sub("", model_name, count=1)
    for patterns in _NAME_NOISE:
        rest = _remove_first_hit(rest, patterns)
    return _tidy_separators(rest) or model_name


def text_model_group(name: str) -> str:
    """The group of a text model: its base name, without backend and author prefixes."""
    for prefix in TEXT_BACKEND_PREFIXES:
        if name.startswith(prefix):
            name = name[len(prefix) :]
            break
    return base_model_name(name.split("/", 1)[-1])
