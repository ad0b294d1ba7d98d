"""Questions for LAMA's relations, so LAMA facts are asked like the other QA sets.

LAMA ships cloze templates (`[X] was born in [Y] .`); the paper asks questions ("Where was
[X] born?"). These follow EntityQuestions' wording where it has the relation, and are
written in its style otherwise (T-REx relations by P-id, Google-RE's three by name). A
relation missing here falls back to its cloze template cut before `[Y]` (set
`options: {form: cloze}` to use the cloze form for every relation).
"""

QUESTIONS: dict[str, str] = {
    "P17": "Which country is [X] located in?",
    "P19": "Where was [X] born?",
    "P20": "Where did [X] die?",
    "P27": "Which country is [X] a citizen of?",
    "P30": "Which continent is [X] located in?",
    "P31": "What is [X] an instance of?",
    "P36": "What is the capital of [X]?",
    "P37": "What is the official language of [X]?",
    "P39": "What position does [X] hold?",
    "P47": "Which place shares a border with [X]?",
    "P54": "Which sports team does [X] play for?",
    "P69": "Where was [X] educated?",
    "P101": "What field does [X] work in?",
    "P102": "Which political party is [X] a member of?",
    "P103": "What is the native language of [X]?",
    "P106": "What kind of work does [X] do?",
    "P108": "Who is the employer of [X]?",
    "P127": "Who owns [X]?",
    "P131": "Where is [X] located?",
    "P136": "What type of music does [X] play?",
    "P138": "What is [X] named after?",
    "P140": "Which religion is [X] affiliated with?",
    "P159": "Where is the headquarters of [X]?",
    "P166": "Which award did [X] receive?",
    "P176": "Which company is [X] produced by?",
    "P178": "Who developed [X]?",
    "P190": "Which city is a twin city of [X]?",
    "P264": "What music label is [X] represented by?",
    "P276": "Where is [X] located?",
    "P279": "What is [X] a subclass of?",
    "P361": "What is [X] part of?",
    "P364": "What is the original language of [X]?",
    "P407": "Which language was [X] written in?",
    "P413": "What position does [X] play?",
    "P449": "Which network originally aired [X]?",
    "P463": "Which organization is [X] a member of?",
    "P495": "Which country was [X] created in?",
    "P527": "What does [X] consist of?",
    "P530": "Which country does [X] maintain diplomatic relations with?",
    "P740": "Where was [X] founded?",
    "P937": "Where did [X] work?",
    "P1001": "Which jurisdiction does [X] apply to?",
    "P1303": "Which instrument does [X] play?",
    "P1376": "What is [X] the capital of?",
    "P1412": "Which language does [X] speak?",
    "P1923": "Which event did [X] participate in?",
    # Google-RE (LAMA's data/Google_RE/*_test.jsonl), named by their predicate
    "place_of_birth": "Where was [X] born?",
    "place_of_death": "Where did [X] die?",
    "date_of_birth": "In what year was [X] born?",
}

# Google-RE ships no relations file: its cloze templates, as LAMA's run_experiments.py has them
CLOZE_TEMPLATES: dict[str, str] = {
    "place_of_birth": "[X] was born in [Y] .",
    "date_of_birth": "[X] (born [Y]).",
    "place_of_death": "[X] died in [Y] .",
}


def lama_prompt(relation: str, subject: str, template: str | None, form: str) -> str:
    """The question (or cloze prefix) asking for the object of `relation` about `subject`."""
    if form == "question" and relation in QUESTIONS:
        return QUESTIONS[relation].replace("[X]", subject)
    if not template or "[Y]" not in template:
        raise KeyError(relation)
    return template.split("[Y]")[0].replace("[X]", subject).strip()
