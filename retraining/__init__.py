"""The closed loop: periodic, gated retraining on new labels, and drift detection.

Entry points: :func:`tweetpulse.retraining.run.retrain_once` (one gated run),
:func:`tweetpulse.retraining.scheduler.run_scheduler` (`tweetpulse retrain --every/--on-drift`) and
:class:`tweetpulse.retraining.drift.DriftMonitor`. The labels it learns from come from the labeled
topic (read by :mod:`tweetpulse.labeled`), which the processors' optional weak-label step
(:mod:`tweetpulse.processors.weak_labels`) and human feedback fill. What a model was trained on is
:mod:`tweetpulse.training.lineage`; end offsets are :mod:`tweetpulse.offsets`.
"""
