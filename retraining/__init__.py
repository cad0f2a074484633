"""The closed loop: periodic, gated retraining on new labels, weak labels and drift detection.

Entry points: :func:`tweetpulse.retraining.run.retrain_once` (one gated run),
:func:`tweetpulse.retraining.scheduler.run_scheduler` (`tweetpulse retrain --every/--on-drift`),
:class:`tweetpulse.processors.weak_labels.WeakLabeler` (the processors' optional weak-label step) and
:class:`tweetpulse.retraining.drift.DriftMonitor`.
"""
