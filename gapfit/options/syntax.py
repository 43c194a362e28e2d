"""gap_fit's option syntax: tokenising, quoting and the gap string.

The syntax follows QUIP's ParamReader (``param_read_args``/``param_read_line``)
and ``split_string``:

* argv words are joined into one string; a word containing a space and of the
  form ``key=value`` is quoted as ``key="value"`` unless the value already starts
  with a quote or brace;
* fields are separated by spaces and commas; ``''``, ``""`` and ``{}`` group
  (nested groups must match) and only the outermost pair is removed;
* spaces around ``=`` are allowed;
* ``T``/``F``/``true``/``false`` (any case) are the logicals, a bare key is True;
* the last occurrence of a key (or of its alias) wins.

Unlike gap_fit we are strict: an unknown key, at top level or inside ``gap={}``,
is an error with a "did you mean" suggestion, and so is an invalid value.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

from ..errors import ConfigError

# --------------------------------------------------------------------------------------
# Tokenising
# --------------------------------------------------------------------------------------

_QUOTES = {"'": "'", '"': '"', "{": "}"}


def quote_value(value: str) -> str:
    """``value`` as a key=value string must carry it: in braces if it is empty or holds a
    separator, unless it is already one brace or quote group."""
    if value == "" or (any(ch in value for ch in " ,\t\n") and value[:1] + value[-1:] not in ("{}", "''", '""')):
        return "{" + value + "}"
    return value


def join_argv(argv: Sequence[str]) -> str:
    """Join command-line words into one option string, as gap_fit does."""
    parts = []
    for word in argv:
        word = " ".join(word.split("\n")).strip()  # a quoted value may span lines
        if not word:
            continue
        if " " in word:
            if "=" in word:
                key, value = word.split("=", 1)
                if value[:1] not in ("'", '"', "{"):
                    word = f'{key}="{value}"'
            elif word[:1] not in ("'", '"', "{"):
                word = f'"{word}"'
        parts.append(word)
    return " ".join(parts)


def _closing_position(text: str, start: int, quotes: Dict[str, str]) -> int:
    """Index of the delimiter closing the group opened at ``text[start]`` (nested groups match)."""
    stack = [quotes[text[start]]]
    i = start + 1
    while i < len(text):
        c = text[i]
        if c == stack[-1]:
            stack.pop()
            if not stack:
                return i
        elif c in quotes and not (quotes[c] == c and c == stack[-1]):
            stack.append(quotes[c])
        i += 1
    return -1


def split_fields(text: str, separators: str = " ,\t\n\r", quotes: Optional[Dict[str, str]] = None,
                 what: str = "option string") -> List[str]:
    """Split ``text`` into fields, stripping the outermost quote pairs (QUIP ``split_string``).

    A separator run followed by ``=`` is absorbed, so ``key = value`` is one field.
    """
    quotes = _QUOTES if quotes is None else quotes
    fields: List[str] = []
    current: List[str] = []
    in_token = False
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c in quotes:
            end = _closing_position(text, i, quotes)
            if end < 0:
                raise ConfigError(f"unbalanced {c!r} in {what}: {_excerpt(text, i)}")
            current.append(text[i + 1:end])
            in_token = True
            i = end + 1
        elif c in separators:
            j = i
            while j < n and text[j] in separators:
                j += 1
            if j < n and text[j] == "=":
                current.append("=")
                in_token = True
                i = j + 1
                while i < n and text[i] in separators:
                    i += 1
            else:
                if in_token:
                    fields.append("".join(current))
                    current = []
                in_token = False
                i = j
        else:
            if c in "}":
                raise ConfigError(f"unbalanced '}}' in {what}: {_excerpt(text, i)}")
            current.append(c)
            in_token = True
            i += 1
    if in_token:
        fields.append("".join(current))
    return fields


def _excerpt(text: str, pos: int, width: int = 40) -> str:
    lo = max(0, pos - width)
    return ("..." if lo else "") + text[lo:pos + width] + ("..." if pos + width < len(text) else "")


def key_values(text: str, what: str = "option string") -> List[Tuple[str, Optional[str]]]:
    """Parse ``text`` into ``(key, value)`` pairs; a bare key has value None."""
    pairs = []
    for f in split_fields(text, what=what):
        if "=" not in f:
            pairs.append((f, None))
            continue
        key, value = f.split("=", 1)
        if not key:
            raise ConfigError(f"malformed field {f!r} in {what}: nothing before '='")
        pairs.append((key, value))
    return pairs


def split_gap_string(value: str) -> List[str]:
    """Split the ``gap`` value into descriptor pieces on top-level ``:`` or ``;``.

    Brace groups at the top level of a piece lose one level of braces, as in gap_fit
    (``gap={{A}:{B}}`` and ``gap={A : B}`` are equivalent; ``alpha_max={{8 8}}`` becomes
    ``alpha_max={8 8}`` and ``species_Z={26}`` becomes ``species_Z=26``, so the pieces,
    and the ``<descriptor>`` strings of the model, are gap_fit's word for word), except a
    key's value with a space in it (``species_Z={14 6}``), which keeps its braces so the
    descriptor parser sees one field; gap_fit would split such a value and fail.

    Blank pieces are read as gap_fit 0.10.3 reads them (checked with its binary):
    adjacent separators count as one (``A ::B`` is two pieces), separators at the
    very start are skipped, and a blank last piece is dropped, so the trailing
    ``:`` of published templates (``{A : B : }``) is accepted; a blank piece
    anywhere else (``A : : B``, ``{ : A}``) is refused, as gap_fit refuses it.
    """
    pieces: List[str] = []
    current: List[str] = []
    i, n = 0, len(value)
    while i < n:
        c = value[i]
        if c == "{":
            end = _closing_position(value, i, {"{": "}"})
            if end < 0:
                raise ConfigError(f"unbalanced '{{' in gap: {_excerpt(value, i)}")
            inner = value[i + 1:end]
            before = "".join(current).rstrip(" ")
            current.append("{" + inner + "}" if before.endswith("=") and _keeps_braces(inner) else inner)
            i = end + 1
        elif c == "}":
            raise ConfigError(f"unbalanced '}}' in gap: {_excerpt(value, i)}")
        elif c in ":;":
            if i > 0:
                pieces.append("".join(current))
            current = []
            while i < n and value[i] in ":;":  # a run of separators is one separator
                i += 1
        else:
            current.append(c)
            i += 1
    pieces.append("".join(current))
    pieces = [p.rstrip() for p in pieces]
    if len(pieces) > 1 and not pieces[-1].strip():
        pieces.pop()
    if not any(piece.strip() for piece in pieces):
        raise ConfigError(f"gap={{{value}}} names no descriptor")
    for k, piece in enumerate(pieces, start=1):
        if not piece.strip():
            raise ConfigError(f"descriptor {k} of gap={{{value}}} is empty: remove the stray ':' or ';' "
                              f"before it (gap_fit refuses this too)")
    return pieces


def _keeps_braces(inner: str) -> bool:
    """Whether a key's brace-group value keeps its braces (gapfit's extension, see split_gap_string)."""
    if inner.startswith("{") and _closing_position(inner, 0, {"{": "}"}) == len(inner) - 1:
        return False  # doubled braces: gap_fit's way of writing a vector inside gap={...}
    return any(c in inner for c in " \t\n\r,")


def strip_comments(text: str) -> str:
    """Remove ``#`` comments (to end of line) outside quotes; gapfit's config_file extension."""
    out: List[str] = []
    depth_stack: List[str] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if depth_stack:
            if c == depth_stack[-1]:
                depth_stack.pop()
            elif c in _QUOTES and not (_QUOTES[c] == c):
                depth_stack.append(_QUOTES[c])
            out.append(c)
        elif c == "#" and (i == 0 or text[i - 1].isspace()):
            while i < n and text[i] != "\n":
                i += 1
            continue
        else:
            if c in _QUOTES:
                depth_stack.append(_QUOTES[c])
            out.append(c)
        i += 1
    return "".join(out)
