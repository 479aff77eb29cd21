"""Writes the embedded English corpus of the language-model datasets: data/text/pydoc_topics.txt.gz.

The source is the documentation topics every CPython ships (`pydoc_data.topics`, the text `help()` shows for
keywords and topics), under the Python Software Foundation License (data/text/SOURCE.md). A fixed copy is shipped
rather than read at run time, because the topics change between Python versions and a bundled teacher's
vocabulary must not. Typographic characters are mapped to ASCII so the character vocabulary stays small.

    python scripts/make_text_corpus.py          # rewrites the file from this interpreter's pydoc_data
"""
from __future__ import annotations

import gzip
import sys
from pathlib import Path

ASCII = {"“": '"', "”": '"', "‘": "'", "’": "'", "–": "-", "—": "--", "…": "...", "°": " degrees", "ß": "ss"}


def corpus_text() -> str:
    import pydoc_data.topics as topics
    text = "\n\n".join(topics.topics[k].strip() for k in sorted(topics.topics))
    text = "".join(ASCII.get(ch, ch) for ch in text)
    return "".join(ch for ch in text if ch == "\n" or 32 <= ord(ch) < 127)


def main() -> int:
    out = Path(__file__).resolve().parents[1] / "data" / "text" / "pydoc_topics.txt.gz"
    text = corpus_text()
    with gzip.GzipFile(out, "wb", mtime=0) as f:   # mtime 0: the same text gives the same bytes
        f.write(text.encode("ascii"))
    print(f"wrote {out} ({len(text):,} characters, {len(set(text))} distinct; "
          f"from Python {sys.version.split()[0]}'s pydoc_data.topics)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
