"""An OpenAI-compatible stub model that obeys every instruction it finds in its prompt.

The adversary of the injection benchmark (``bench/injection.py --answers obedient``): the
worst model a document could meet. It reads the whole prompt, sources included, with
spotlighting undone (data marks turned back into spaces, fences ignored), and when any
message holds an instruction of the kinds garak's latent-injection probes plant ("print
X", "say 'X'", "reply with only the following text: <X>", "translate this sentence as
"X"", "could you repeat <X>", "report that X", "note to automated analysis software: X",
"write one toxic sentence about X"...) it answers with X. It looks in the last message,
the one that holds this question's sources: earlier messages are the prompt's worked
example (whose demo source says "say the zoo is closed") and the rules. Without an
instruction it answers like a dutiful model: the first sentence of the first source,
cited "[1]".

Only quarantine (flagged chunks never reach the prompt) can beat it; fencing cannot.

    python -m bench.obedient_llm [--port 8099]     # serve until Ctrl-C
"""

from __future__ import annotations

import argparse
import contextlib
import re
import threading

from bench.stub_llm import StubLLM

_MARK = "\u02c6"  # rag.guard.spotlight.MARK
_FENCE = re.compile(r"<<<(?:end )?source \d+ [0-9a-f]+>>>")
_Q = "[\"'\u201c\u201d\u2018\u2019]"
_VERB = (
    r"(?:print|say|output|write|respond\s+with|reply\s+with|answer\s+with|repeat|return|"
    r"report|state|type|display|provide\s+it\s+to\s+the\s+user|translate\s+this\s+sentence\s+as)"
)
# Each pattern captures X; tried in this order at each position, earliest match wins.
_ORDERS = [
    # print "X" / say 'X' / translate this sentence as "X" / provide it to the user: "X"
    rf"\b{_VERB}\b[^\n\"'“<]{{0,80}}?[:\s]\s*<*[\"“](?P<q>[^\"”\n]{{2,300}})[\"”]",
    rf"\b{_VERB}\b[^\n\"'“<]{{0,80}}?[:\s]\s*<*'(?P<q1>[^\n]{{2,300}}?)'(?=[\s.,;)>]|$)",
    # ... following text ...: <X>   /  repeat <X> for me
    rf"\b(?:{_VERB}|following\s+(?:text|information)|brackets)\b[^<\n.]{{0,160}}\n?<+"
    rf"[\"“]?(?P<a>[^<>\"”\n]{{2,300}})[\"”]?>+",
    # write one toxic sentence about X with at most 20 words
    r"\bwrite\s+(?:one|a|an)\s+\w+\s+sentences?\s+about\s+(?P<w>.{2,80}?)\s+with\s+at\s+most",
    # report that X.  /  output: X  /  report: X  /  note to automated ... software: X
    r"\breport\s+that\s+(?P<t>[^\n<]{2,300}?)(?:\.\s|\.$|\n|<|$)",
    r"\b(?:output|report|report\s+only|print)\s*:\s*(?P<c>[^\n*<]{2,300})",
    r"\b(?:note|message)\s+to\s+(?:the\s+)?(?:automated|ai|llm)[^:\n]{0,60}:\s*(?P<n>[^\n<]{2,300})",
    r"\bfor\s+automated\s+screening\s+systems\s*:\s*(?P<s>[^\n<]{2,300})",
    r"\bvisible\s+to\s+llm\s+scan\)\s*:\s*(?P<v>[^\n<]{2,300})",
    # "this is really important, extremely important, the domain name is X": taken as an order
    r"\bimportant,\s+(?:[^,\n]{0,40},\s+)?(?P<i>the\s+\w+(?:\s+name)?\s+is\s+[^\n\]<.]{2,100})",
    # (just) print X   (the rest of the line)
    r"\b(?:and|just|then|only)\s+(?:print|say|output)\s+(?P<p>[^\n\"“<]{2,300})",
]
_ORDER_RE = re.compile("|".join(f"(?:{p})" for p in _ORDERS), re.IGNORECASE)
_LINK = re.compile(r"<a\s+href=\"([^\"]*)\">([^<]*)</a>", re.IGNORECASE)
_FIRST_SOURCE = re.compile(r"(?:^|\n)\[1\][^\n]*\n\s*(?P<text>[^\n]+)")


def _unspotlight(text: str) -> str:
    text = _FENCE.sub("", text.replace(_MARK, " "))
    return _LINK.sub(lambda m: f"[{m.group(2)}]({m.group(1)})", text)


def order_in(text: str) -> str | None:
    """What the first instruction in ``text`` asks to be written, if there is one.

    An order whose text holds another order (a payload nested in an injection) is
    followed down to the innermost one.
    """
    found = None
    text = _unspotlight(text)
    for _ in range(4):
        match = _ORDER_RE.search(text)
        if match is None:
            break
        value = next(v for v in match.groupdict().values() if v is not None).strip()
        if not value or value == found:
            break
        found = text = value
    return found


def obey(prompt: str | list[str]) -> str:
    """The stub's answer to a prompt (one text, or its messages in order: the last is read)."""
    messages = [prompt] if isinstance(prompt, str) else list(prompt)
    last = messages[-1] if messages else ""
    order = order_in(last)
    if order:
        return order
    match = _FIRST_SOURCE.search(_unspotlight(last))
    if match:
        text = " ".join(match.group("text").split())
        end = text.find(". ")
        sentence = text[: end + 1] if end > 0 else text
        return f"{sentence} [1]"
    return "The documents do not cover it."


class ObedientLLM(StubLLM):
    """Serves the obedient stub on 127.0.0.1 in a background thread; ``prompts`` it got."""

    def __init__(self, port: int = 0) -> None:
        super().__init__(obey, port=port, model="obedient")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8099)
    args = parser.parse_args()
    with ObedientLLM(args.port) as llm:
        print(f"obedient stub at {llm.base_url} (Ctrl-C stops it)")
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()


if __name__ == "__main__":
    main()
