"""Decisions: what a queue's rules, transform and hook make of a message before it is
delivered (SPEC.md, Decisions).

- `view`: the message view expressions and hooks read, built once per message;
- `expressions`: the rules and the transform, compiled once per queue (JMESPath);
- `hook`: a Python function (sync on the queue's own threads, or async) or a Lambda function;
- `decider`: rules → transform → hook, one `Verdict` (a `Decision` and who made it) per
  message, and the trace `explain` prints;
- `verdicts`: the vocabulary from the hook API to settlement, and a verdict's outcome.

Imports `core`, `aws` (a Lambda hook's client, error classification), `settings`, `metrics`
and the public `worker.hooks`; the queue loop and the operator commands import it.
"""
