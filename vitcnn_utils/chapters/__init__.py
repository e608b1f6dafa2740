"""One module per book chapter: ``run(...)`` computes everything the chapter plots and reports and returns a
typed result (a dataclass) whose ``to_record()`` is what the chapter records for :mod:`vitcnn_utils.findings`."""
