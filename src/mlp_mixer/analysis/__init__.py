"""Looking at a model and what it learned: evaluation, few-shot, the layer summary, figures and pictures."""
