"""darwin-git: evolve LLM training code with git as the database.

Data flows one way: population (git) -> operators -> evaluator -> selection -> git. Each file owns one
thing, and each piece of git state has one writer (named in brackets):

  cli.py            the entry point and the one error boundary (an error becomes one line)
  commands/         one module per command group: genome, evolve, inspect, requests
  views.py          everything the terminal shows: tables, pages, summary lines
  generation.py     one generation, resumable: plan, breed, evaluate, confirm, select
  strategies/       who breeds and who survives a step: evolution (mu + lambda), greedy (1 + 1), random, climb
  novelty.py        the gate that refuses, before training, a change the search has already paid for
  memory.py         what an operator is shown: History, its author's trajectory, the digest
  brief.py          the experiment log an LLM reads of the genome it changes (lineage, noise, failures, task)
  report.py         reading the population back: leaderboard, one genome, a lineage
  review.py         requests, reviewed like pull requests [refs/darwin/requests*]
  breeding.py       children and failed proposals [notes darwin/mutation, darwin/failures]
  population.py     genome branches, the archive, the generations log and its records
                    [refs/heads/darwin/*, refs/darwin/archive/*, refs/darwin/generations]
  fitness.py        FitnessDoc: every evaluation of a commit and its summary [notes darwin/fitness]
  selection.py      tournament, survivors and noise: the pure functions strategies are made of
  patches.py        the gate every patch and merge passes before it is committed
  operators/        variation: the protocol and Context, offline.py (catalogue), llm.py, llm_tokens.py
  executors/        evaluations in parallel: local.py (this machine), ray.py (a cluster), display.py
  evaluator.py      one evaluation: staged training in a sandboxed worktree, metered and scored
  scoring.py        bits per byte on held-out text, streamed so no model sees ahead
  channel.py        the genome's only source of training tokens, metered
  corpus.py         the corpus: fetch, tokenize, split three ways
  compute.py        every evaluation's share of the machine (cgroups, affinity) and what it used
  sandbox.py        running untrusted code: jail, clean env, watchdog; every non-git process starts here
  config.py         darwin.toml: every setting, a leaf that imports nothing of the package
  assets.py         the files the package ships: template genome, hooks, GENOME.md
  git.py            every git call: plumbing, compare-and-swap ref updates, notes, typed JSON records
  errors.py         DarwinError, the one error type the user sees
"""

__version__ = "0.1.0"
