"""The bad-input sweep of issue 16: several hundred bad or edge-case inputs, each built by the sweep itself
in a temp folder, run through medclipsvd's real command line, and judged by checks that do not trust what
medclipsvd says about itself.

Run it from the repository root (it is not collected by pytest)::

    python -m tools.sweep                      # every case; summary table on stdout, JSON report under /tmp
    python -m tools.sweep --list               # the cases: id, class, expected outcome, why
    python -m tools.sweep --only adapters,csv  # some input classes
    python -m tools.sweep --jobs 2 --report /tmp/sweep.json

How a case is judged (``core.judge``):

* the **outcome** of the run is classified from its exit status and output alone: ``error`` (exit 1/2,
  exactly one ``error:`` line, not the "unexpected ..." fallback, naming what the case says it must name),
  ``unclear`` (any other non-zero exit without a traceback), ``warning`` (exit 0 with a ``warning:`` line
  about the problem), ``accepted`` (exit 0), ``traceback`` (the word Traceback, or an exit status other than
  0/1/2/130), ``hang`` (time limit, memory limit, or the fork budget exceeded);
* the outcome is compared with the case's **expected** outcomes (a set: ``error``, ``warning``,
  ``accepted``); an exit 0 where only an error is acceptable is **silently wrong**, and so is an accepted
  run whose result check fails (NaN probabilities, 100 % on one class, a second `label` column used ...);
* independent of the outcome: **code execution** (every payload tries to create its own marker file; the
  marker must be absent afterwards), **outside reads** (an audit hook records every file the in-process run
  opens; none may lie in the case's ``outside/`` folder or the other forbidden paths; no secret string may
  appear in the output) and **side effects** (files that must survive byte for byte, post-conditions such
  as "failed before training", writes by a payload).
"""
