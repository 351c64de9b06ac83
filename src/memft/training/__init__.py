"""Training an adapter until every record is certified.

  loop.py      train(): the loop, read top to bottom
  status.py    StatusBook: each record's latest statistics, its goal and bar, and whether they are fresh
  batches.py   which records a step trains: epochs, the active set, replay, the check budget
  step.py      the loss of one step (objective, forgetting, preservation) and the optimizer's groups and rate
  fit.py       fit(): records + base -> a trained, evaluated adapter (what write, append and research runs share)
  rollback.py  the progress schedule's rollback after a collapse of the certified share
  preserve.py  the preservation term that keeps the base's predictions on unrelated text
  sizing.py    rank, layers and budget from the record set
  forecast.py  will this run certify within its budget? (steps needed, advice)

Core layer (training): may import errors, config, memft.prompts, memft.model, memft.certify and memft.objectives.
"""
