"""Training: tiny-preset pretraining, SFT and (mixed-policy) GRPO on TRL, their shared skeleton, rewards."""
