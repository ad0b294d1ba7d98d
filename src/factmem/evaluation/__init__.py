"""Exact match as the paper defines it, computed fast without changing a single verdict.

The definition: greedy decoding from the prompt until EOS; the output, stripped and
lower-cased, equals a gold answer (or, for sets such as WebQuestions, contains it).

Output text is always `decode(generated_ids, skip_special_tokens=True,
clean_up_tokenization_spaces=False)`: the clean-up would make decoding of a prefix not a
prefix of the decoding, which the early stop below relies on.

The fast path (why it is exact):
  1. One teacher-forced forward pass over prompt + gold + EOS. If at every gold position the
     argmax is the gold token, by a margin of at least `tie_margin` over the runner-up, then
     greedy decoding would emit exactly gold + EOS, so the output is the gold itself.
  2. Every other example is decoded with `model.generate` (greedy), which stops early only
     once no continuation could change the verdict (`verdict_is_final`).
The margin guard sends near-ties to real generation, where batched and incremental
arithmetic could disagree in the last bit (fp32 only: under bf16 the two differ by more than
any useful margin, so there every example is generated). An answer longer than
`max_new_tokens` is never certified: generation would be cut off before its end.

A generated output that stopped early is a prefix of what the model would have written; its
prediction says so (`output_cut`), so error analysis does not read a cut output as the answer.

Rooms: verdicts.py (the definition), forward.py (teacher-forced passes), generation.py
(batched greedy decoding, early stop, shared prefix), exact_match.py (the two together).
"""

from factmem.evaluation.exact_match import (  # noqa: F401
    exact_match,
    exact_match_reaches,
)
from factmem.evaluation.forward import (  # noqa: F401
    TEACHER_FORCING_MIN_TOKENS,
    answer_logits,
    batched,
    eval_mode,
    mean_response_loss,
    target_logits,
    teacher_forced_batches,
    teacher_forced_certify,
    teacher_forcing_pays,
)
from factmem.evaluation.generation import (  # noqa: F401
    SHARED_PREFIX_MIN_TOKENS,
    greedy_generate,
    greedy_generate_with_stops,
    shared_prefix_length,
)
from factmem.evaluation.verdicts import (  # noqa: F401
    MatchMode,
    accuracy,
    decode,
    is_correct,
    normalize,
    verdict_is_final,
)
from factmem.records import Prediction  # noqa: F401  (made here, typed in records)
