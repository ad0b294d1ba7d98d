"""TriviaQA: the question and the one answer trained on, the same from the hub and from DPR.

The hub row has the quiz's own answer (`answer.value`) beside its Wikipedia aliases; DPR's
TSV (and anserini's copy, `topics.dpr.trivia.dev.txt`) keeps only the aliases, in no useful
order: the first is as often a disambiguation page ("Rudolph (disambiguation)"), a
misspelling, a foreign name or a related article (a relative's, a street's) as the answer.
The aliases always include the quiz's answer, so it is estimated from them
(`answer_from_aliases`), by this rule:

0. A list of one alias is the answer itself.
1. Candidates: aliases with a letter or digit that are not Wikipedia titles with a
   qualifier ("X (film)"), "List of ..." pages, sub-pages ("Title/Act V") or URL-escaped
   ("%22"), and, ranked after them, the qualified titles with the qualifier cut off.
2. TriviaQA's quiz sources often write the answer in capitals ("JANE DOE", "'THE NAME'"),
   which Wikipedia titles do not: an alias in capitals (4+ letters) whose words recur in a
   mixed-case alias ("Jane Doe", "The Name Itself") is the quiz's answer.
3. Otherwise the candidate that is (in this order) not part of the question, plain ASCII,
   not a cut-off title, without a comma ("Doe, Jane"), contained word for word in the
   most aliases (the name the redirects share: "Kettleby" in "Kettleby, Northshire", "City
   of Kettleby", ...), sharing the most words with the others, first in the list.

Then both paths (`spelled`) write the answer in its tidiest spelling among the aliases
("Jane Doe", not "JANE DOE"; exact match ignores case, training does not).
A hand audit of 300 DPR dev rows against this rule is summed up in docs/experiments.md.

Some questions carry a CSV quoting layer from TriviaQA's own sources on top of the TSV's
(`"Who said ""make it so""?"`, the inner quotes doubled):
`unquote_question` removes it, on both paths.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

QUALIFIED = re.compile(r"\s*\([^()]*\)\s*$")  # "Ember (album)"
TOKEN = re.compile(r"[^\W_]+(?:['’][^\W_]+)*")  # words; "don't" is one
TIDY_WORD = re.compile(  # lower, Capitalised, a short acronym, McNab, DiCaprio
    r"[a-z\d]+|[A-Z][a-z\d]*|[A-Z\d]{1,4}|(?:Mc|Mac|Di|De|Da|Du|La|Le)[A-Z][a-z]+"
)
QUOTED = re.compile(r'"((?:[^"]|"")*)"')  # a whole CSV-quoted cell


def unquote_question(text: str) -> str:
    """The question without a leftover CSV quoting layer (`"A ""b"" c"` -> `A "b" c`)."""
    text = text.strip()
    match = QUOTED.fullmatch(text)
    return match.group(1).replace('""', '"').strip() if match else text


def answer_from_aliases(aliases: list[str], question: str = "") -> str:
    """The quiz's answer estimated from an alias list (module docstring, rules 0-3)."""
    aliases = [a.strip() for a in aliases if a.strip()]
    if len(aliases) == 1:  # the list holds the quiz's answer: this is it
        return aliases[0]
    plain = [a for a in aliases if _candidate(a)]
    cut = [c for c in (QUALIFIED.sub("", a).strip() for a in aliases if QUALIFIED.search(a))
           if _candidate(c) and c not in plain]  # fmt: skip
    candidates = plain + cut
    if not candidates:
        return next((a for a in aliases if TOKEN.search(a)), aliases[0])
    phrases = [_phrase(a) for a in aliases]
    quiet = [_phrase(a) for a in candidates if not a.isupper()]
    loud = [a for a in plain if _shouted(a) and any(_phrase(a) in q for q in quiet)]
    word_sets = [set(p.split()) for p in phrases]
    asked = _phrase(question)

    def rank(c: str) -> tuple:
        mine = _phrase(c)
        words = set(mine.split())
        contained = sum(mine in p for p in phrases)
        shared = sum(len(words & w) for a, w in zip(aliases, word_sets, strict=True) if a != c)
        shared /= max(len(words), 1)
        return (mine not in asked, c.isascii(), c in plain, "," not in c, contained, shared)

    return spelled(max(loud or candidates, key=rank), candidates)


def spelled(answer: str, aliases: list[str]) -> str:
    """`answer` in its tidiest spelling among the aliases with the same words (up to case,
    accents and punctuation): plain ASCII, not in quotes, not in capitals, words lower,
    Capitalised or short acronyms, the answer's own letters, then the most capitals
    ("JANE DOE" -> "Jane Doe", "Zürich" -> "Zurich", "Jane doe" -> "Jane Doe" when both
    are aliases)."""
    words = _phrase(answer)
    variants = [answer] + [a.strip() for a in aliases if _phrase(a) == words]

    def tidiness(v: str) -> tuple:
        words_ok = all(TIDY_WORD.fullmatch(w) for w in re.split(r"[\s\-]+", v) if w.isalpha())
        tidy = words_ok and not re.search(r"\w\w['’][A-Z]", v)  # "Night'S", not "O'Hara"
        return (v.isascii(), v == v.strip("'\"*"), not _shouted(v), tidy,
                v.casefold() == answer.casefold(), sum(ch.isupper() for ch in v))  # fmt: skip

    return max(variants, key=tidiness)


def _candidate(alias: str) -> bool:
    return (bool(TOKEN.search(alias)) and not QUALIFIED.search(alias)
            and not alias.casefold().startswith("list of ") and "%" not in alias
            and "/" not in alias)  # fmt: skip


def _shouted(alias: str) -> bool:
    """All capitals, 4+ letters: a quiz's shouted answer (or an acronym: "JWG" is left be)."""
    return alias.isupper() and sum(ch.isalpha() for ch in alias) >= 4


def _words(text: str) -> list[str]:
    """Words, case and accents folded ("Zürich" -> "zurich")."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    return TOKEN.findall("".join(ch for ch in decomposed if not unicodedata.combining(ch)))


@lru_cache(maxsize=1 << 16)
def _phrase(text: str) -> str:
    """Space-padded words, so that `in` tests whole-word containment."""
    return f" {' '.join(_words(text))} "
