"""Training role: LoRA fine-tuning, merge, Optimum ONNX export, evaluation and publishing.

Needs the ``[train]`` extra (torch, transformers, peft, optimum-onnx); the evaluation and registry
commands need only the base install. Entry point for other code:
:func:`tweetpulse.training.pipeline.train_and_publish`.
"""
